"""Deployment targets: Dockerfiles, export recipes, and the runtime's install path / Python 3.10 compatibility.

No Docker engine, Jetson or TensorRT runs on CI machines, so this checks what can be checked: the files'
install steps name real paths and extras, the Jetson install is replayed in a fresh virtual environment,
and everything the runtime imports is free of Python ≥ 3.11-only syntax and APIs.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edge_affect.config import ExportProfile, load_export_profile

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _pip_targets(args: str) -> list[str]:
    """The package specs of every ``pip install`` in a RUN line."""
    lex = shlex.shlex(args, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands: list[list[str]] = [[]]
    for tok in lex:
        if tok in ("&&", ";", "||", "|"):
            commands.append([])
        else:
            commands[-1].append(tok)
    specs = []
    for words in commands:
        if "pip" in words and "install" in words:
            specs += [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    return specs


@pytest.mark.parametrize(
    "name,base",
    [
        ("Dockerfile.jetson", "nvcr.io/nvidia/l4t-jetpack:r36.4.0"),
        ("Dockerfile.desktop", "nvcr.io/nvidia/tensorrt:25.01-py3"),
        ("Dockerfile.train", "nvcr.io/nvidia/pytorch:25.01-py3"),
    ],
)
def test_dockerfile_paths_and_extras_are_real(name: str, base: str) -> None:
    ins = _instructions(DOCKER / name)
    assert ins[0] == ("FROM", base), "base image tag must be pinned"
    for op, args in ins:
        if op == "COPY":
            *srcs, _dst = args.split()
            for src in srcs:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist in the repository"
        if op == "RUN":
            for spec in _pip_targets(args):
                m = re.fullmatch(r"\"?\.(?:\[([a-z0-9,_-]+)\])?\"?", spec)
                assert m, f"{name}: installs {spec!r}, expected only the package itself ('.[extras]')"
                for extra in (m.group(1) or "").split(","):
                    assert not extra or extra in EXTRAS, f"{name}: extra {extra!r} is not in pyproject"


def test_jetson_image_installs_exactly_the_runtime() -> None:
    """No torch on the Jetson; cuda-python stays on the CUDA 12 line that JetPack 6 (CUDA 12.6) needs."""
    specs = [s for op, a in _instructions(DOCKER / "Dockerfile.jetson") if op == "RUN" for s in _pip_targets(a)]
    assert specs == [".[cuda12]"]
    deps = PYPROJECT["project"]["dependencies"] + EXTRAS["cuda12"]
    names = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower() for d in deps}
    assert names == {"numpy", "opencv-python-headless", "onnxruntime", "rich", "tomli", "cuda-python"}
    assert "<13" in EXTRAS["cuda12"][0]
    assert not any("torch" in d for d in deps)


@pytest.mark.parametrize("recipe", sorted((ROOT / "export").glob("*.toml")), ids=lambda p: p.name)
def test_export_recipes_load(recipe: Path) -> None:
    prof = load_export_profile(recipe)
    assert prof.target == recipe.stem
    if prof.target.startswith("jetson"):
        assert prof.build_engine_here is False and prof.tensorrt == "10.3"


@pytest.mark.parametrize(
    "text,match",
    [
        ('target = "x"\nbatchsize = [1, 1, 4]\n', "did you mean 'batch'"),
        ('target = "x"\nbatch = [4, 1, 1]\n', r"1 <= min <= opt <= max"),
        ('target = "x"\nprecisions = ["int4"]\n', "precisions"),
        ('target = "x"\ndla_core = 0\nversion_compatible = true\n', "version-compatible"),
        ('target = "x"\ndla_core = 3\n', "dla_core 3"),
        ('target = "x"\ncuda_graph = true\nbatch = [1, 2, 4]\n', "fixed batch"),
        ('target = "x"\nbatch = [1, 1\n', "not valid toml"),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_export_profile(p)
    assert "bad.toml" in str(e.value)
    assert ExportProfile().target == "generic"


# Names whose use needs Python ≥ 3.11 (module attribute or import).
PY311_ONLY = {
    ("tomllib", None),
    ("typing", "Self"),
    ("typing", "LiteralString"),
    ("typing", "Never"),
    ("typing", "assert_never"),
    ("typing", "reveal_type"),
    ("enum", "StrEnum"),
    ("datetime", "UTC"),
    ("hashlib", "file_digest"),
    ("asyncio", "TaskGroup"),
    ("asyncio", "timeout"),
    ("builtins", "ExceptionGroup"),
}


def _runtime_modules() -> list[Path]:
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "import edge_affect.runtime, edge_affect.runtime.cli\n"
        "import edge_affect.runtime as r\n"
        "[getattr(r, n) for n in getattr(r, '__all__', [])]\n"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        "if n.startswith('edge_affect') and getattr(m, '__file__', None))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [Path(p) for p in json.loads(out.stdout.strip().splitlines()[-1])]


def test_runtime_imports_have_no_python311_only_apis() -> None:
    files = _runtime_modules()
    assert any(f.name == "preprocess.py" for f in files)
    problems = []
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f), feature_version=(3, 10))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if (a.name, None) in PY311_ONLY:
                        problems.append(f"{f.name}:{node.lineno} imports {a.name}")
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if (node.module, a.name) in PY311_ONLY or (node.module, None) in PY311_ONLY:
                        problems.append(f"{f.name}:{node.lineno} from {node.module} import {a.name}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in PY311_ONLY:
                    problems.append(f"{f.name}:{node.lineno} uses {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Name) and node.id in ("ExceptionGroup", "BaseExceptionGroup"):
                problems.append(f"{f.name}:{node.lineno} uses {node.id}")
            elif isinstance(node, ast.TryStar):
                problems.append(f"{f.name}:{node.lineno} uses except*")
    assert problems == []


def test_ruff_py310_over_the_runtime() -> None:
    files = [str(f) for f in _runtime_modules()]
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--target-version", "py310", "--select", "E9,F,UP,B", *files],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_jetson_install_replayed_in_fresh_venv(tmp_path: Path) -> None:
    """Install exactly what Dockerfile.jetson installs into a new venv, then predict there without torch."""
    import venv

    import numpy as np
    import torch

    from edge_affect.export.onnx_export import export_onnx
    from edge_affect.models import create_model
    from edge_affect.models.checkpoint import model_meta

    torch.manual_seed(0)
    model = create_model("tiny").eval()
    meta = model_meta(model)
    s = meta.preprocess.input_size
    sample = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)
    onnx_path = export_onnx(model, meta, tmp_path / "model.onnx", sample=sample)
    face = (np.random.default_rng(1).random((90, 70, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "face.npy", face)
    with torch.no_grad():
        ref = model(torch.from_numpy(_prep(face, meta)))

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    (spec,) = [s for op, a in _instructions(DOCKER / "Dockerfile.jetson") if op == "RUN" for s in _pip_targets(a)]
    res = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", spec.replace(".", str(ROOT), 1)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    code = (
        "import sys, json, numpy as np\n"
        "sys.modules['torch'] = None  # the Jetson image has no torch\n"
        "from edge_affect.runtime import load\n"
        f"face = np.load({str(tmp_path / 'face.npy')!r})\n"
        f"with load({str(onnx_path)!r}) as p:\n"
        "    r = p.predict([face])[0]\n"
        "import importlib.util as u\n"
        "print(json.dumps({'r': r, 'torch': u.find_spec('torch') is not None, 'cuda': u.find_spec('cuda') is not None}))\n"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["cuda"] is True  # runtime deps + cuda-python, nothing of training
    r = got["r"]
    assert r["status"] == "ok"
    assert r["valence"] == pytest.approx(float(ref["va"][0, 0]), abs=1e-4)
    assert r["arousal"] == pytest.approx(float(ref["va"][0, 1]), abs=1e-4)
    probs = torch.softmax(ref["expr"][0], -1).numpy()
    assert r["expression_probs"][r["expression"]] == pytest.approx(float(probs.max()), abs=1e-4)


def _prep(face, meta):
    from edge_affect.runtime.preprocess import prepare_batch

    return prepare_batch([face], meta.preprocess)
