"""Deployment targets: Dockerfiles, export recipes, and the runtime's install path / Python 3.10 compatibility.

No Docker engine, Jetson or TensorRT runs on CI machines, so this checks what can be checked: the files'
install steps name real paths and extras, the Jetson image installs the runtime without OpenCV or torch
(tests/test_install.py resolves and replays it), and everything the runtime imports is free of Python ≥ 3.11-only syntax and APIs.
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


def pip_installs(args: str) -> list[list[str]]:
    """The arguments of every ``pip install`` in a RUN line (one list per command)."""
    lex = shlex.shlex(args, posix=True, punctuation_chars="&;|")
    lex.whitespace_split = True
    commands: list[list[str]] = [[]]
    for tok in lex:
        if tok in ("&&", ";", "||", "|"):
            commands.append([])
        else:
            commands[-1].append(tok)
    return [words[words.index("install") + 1 :] for words in commands if "pip" in words and "install" in words]


def dockerfile_pip_installs(name: str) -> list[list[str]]:
    return [words for op, a in _instructions(DOCKER / name) if op == "RUN" for words in pip_installs(a)]


#: How the images name the package: the source folder (``.``) or the wheel their first stage built.
PACKAGE_SPEC = re.compile(
    r"(?:\.|\$\(ls /wheels/edge_affect-\*\.whl\)|/wheels/edge_affect-\*\.whl)(?:\[([a-z0-9,_-]+)\])?"
)


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
    froms = [a.split()[0] for op, a in ins if op == "FROM"]
    assert ins[0][0] == "FROM" and set(froms) == {base}, "every stage on the same pinned base image"
    for op, args in ins:
        if op == "COPY" and not args.startswith("--from"):
            *srcs, _dst = args.split()
            for src in srcs:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist in the repository"
    installs = dockerfile_pip_installs(name)
    assert installs, f"{name}: installs nothing"
    for words in installs:
        for prev, w in zip([""] + words, words, strict=False):
            if prev == "-r":
                assert (ROOT / w).is_file(), f"{name}: -r {w} does not exist"
            elif not w.startswith("-"):
                m = PACKAGE_SPEC.fullmatch(w)
                assert m, f"{name}: installs {w!r}, expected only the package itself (source or wheel, [extras])"
                for extra in (m.group(1) or "").split(","):
                    assert not extra or extra in EXTRAS, f"{name}: extra {extra!r} is not in pyproject"


def req_name(line: str) -> str:
    """The distribution name of a requirement line, lower case."""
    return re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()


def requirement_lines(path: Path) -> list[str]:
    return [x.split("#")[0].strip() for x in path.read_text().splitlines() if x.split("#")[0].strip()]


def test_jetson_image_installs_exactly_the_runtime_without_opencv() -> None:
    """The Jetson image: requirements/jetson.txt and the serve extra's pure-Python pair, then the wheel with
    --no-deps (nothing else can come in).
    Those requirements are the base dependencies + the cuda12 extra, with numpy < 2 (JetPack's cv2 is built
    against numpy 1.x); no OpenCV (JetPack's, with GStreamer, must not be shadowed) and no torch."""
    assert dockerfile_pip_installs("Dockerfile.jetson") == [
        ["-r", "requirements/jetson.txt"],
        ["-r", "requirements/jetson-serve.txt"],
        ["--no-deps", "/wheels/edge_affect-*.whl"],
    ]
    serve = requirement_lines(ROOT / "requirements" / "jetson-serve.txt")
    assert [r.replace(" ", "") for r in serve] == [r.replace(" ", "") for r in EXTRAS["serve"]]
    reqs = requirement_lines(ROOT / "requirements" / "jetson.txt")
    names = {req_name(r) for r in reqs}
    base = {req_name(d) for d in PYPROJECT["project"]["dependencies"] + EXTRAS["cuda12"]}
    assert names == base == {"numpy", "onnxruntime", "pydantic", "rich", "tomli", "cuda-python"}
    assert not any("opencv" in r or "torch" in r for r in PYPROJECT["project"]["dependencies"] + reqs)
    assert EXTRAS["opencv"] == ["opencv-python-headless>=4.8"] and "edge-affect[opencv]" in EXTRAS["train"]
    (numpy,) = [r for r in reqs if req_name(r) == "numpy"]
    (cuda,) = [r for r in reqs if req_name(r) == "cuda-python"]
    assert "<2" in numpy and cuda.replace(" ", "") == EXTRAS["cuda12"][0].replace(" ", "")


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
