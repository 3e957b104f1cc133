"""Install routes as a new user takes them: the wheel carries only what the torch-free runtime runs, the Jetson
image's install lines resolve to no OpenCV and no torch, and a fresh virtual environment built from those lines
runs the README's Python example (``load(default_model()).predict``) without torch.

The resolution and the fresh environment need PyPI (or the configured index); where it cannot be reached they
skip and say so. Nothing here needs a GPU, Docker or a Jetson.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from edge_affect.default import DEFAULT_FILES

ROOT = Path(__file__).resolve().parents[1]
JETSON_REQUIREMENTS = ROOT / "requirements" / "jetson.txt"
#: What must never land in the Jetson image (its OpenCV is JetPack's, with GStreamer; the runtime has no torch).
FORBIDDEN = re.compile(r"^(opencv(-contrib)?-python(-headless)?|torch|torchvision|nvidia-modelopt|tensorrt.*)$")
#: The Jetson target: JetPack 6 = Ubuntu 22.04 (glibc 2.35), aarch64, CPython 3.10.
JETSON_PYTHON = "3.10"
JETSON_PLATFORMS = [f"manylinux_2_{m}_aarch64" for m in range(35, 16, -1)] + ["manylinux2014_aarch64"]
NETWORK_ERRORS = ("Could not fetch URL", "Max retries exceeded", "NewConnectionError", "Temporary failure in name")


def _index_unreachable(stderr: str) -> bool:
    return any(m in stderr for m in NETWORK_ERRORS)


def _copy_sources(dst: Path) -> Path:
    """What docker/Dockerfile.{jetson,desktop} copy into their wheel stage, in a fresh folder."""
    dst.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, dst / name)
    shutil.copytree(ROOT / "edge_affect", dst / "edge_affect", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The package's wheel, built the way the Docker images build it (``pip wheel --no-deps``)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(tmp / "src")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 and _index_unreachable(r.stderr):
        pytest.skip(
            f"building the wheel needs setuptools from the package index, which is unreachable: {r.stderr[-300:]}"
        )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("edge_affect-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_carries_the_runtime_model_not_the_training_weights(wheel: Path) -> None:
    """The runtime wheel has the default model's ONNX and card, YuNet and the samples, and not the 14 MB
    safetensors weights (export/training need torch; they stay in the clone); SPDX licence metadata."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    default = "edge_affect/assets/models/default/"
    assert {default + DEFAULT_FILES["onnx"], default + DEFAULT_FILES["card"]} <= names
    assert default + DEFAULT_FILES["safetensors"] not in names
    assert any(n.startswith("edge_affect/assets/yunet/") and n.endswith(".onnx") for n in names)
    assert "License-Expression: Apache-2.0" in meta and any(n.endswith("licenses/LICENSE") for n in names)
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any(re.match(r"(opencv|torch)", r) for r in base), base


def test_jetson_install_resolves_without_opencv_or_torch(tmp_path: Path) -> None:
    """Replays the Jetson image's dependency line (``pip install -r requirements/jetson.txt``) for linux-aarch64 /
    CPython 3.10 as a dry run against the index: no ``opencv-python*``, no torch, numpy 1.x. (The package itself
    goes in with ``--no-deps``: tests/test_deploy.py checks that line.)"""
    report = tmp_path / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
    ]
    cmd += [a for p in JETSON_PLATFORMS for a in ("--platform", p)]
    cmd += ["--python-version", JETSON_PYTHON, "--implementation", "cp", "--only-binary=:all:"]
    cmd += ["-r", str(JETSON_REQUIREMENTS)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and _index_unreachable(r.stderr):
        pytest.skip(f"the package index is unreachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    installs = {
        i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
    }
    assert not [n for n in installs if FORBIDDEN.match(n)], installs
    assert {"numpy", "onnxruntime", "rich", "cuda-python"} <= set(installs)
    assert installs["numpy"].startswith("1.") and installs["cuda-python"].startswith("12.")


RUNTIME_CHECK = """
import json, sys
import importlib.util as u
from edge_affect import default_model
from edge_affect.runtime import load
import numpy as np
face = np.full((64, 64, 3), 128, np.uint8)
try:
    with load(default_model()) as p:
        p.predict([face])
    err = None
except ImportError as e:
    err = str(e)
import edge_affect
print(json.dumps({"error": err, "torch": u.find_spec("torch") is not None, "cv2": u.find_spec("cv2") is not None,
                  "model": default_model().name, "package": edge_affect.__file__}))
"""


def _readme_python_example() -> str:
    """The README's torch-free Python example (the python block that calls ``default_model``)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (block,) = [b for b in blocks if "default_model" in b and "edge_affect.runtime" in b]
    return block


@pytest.mark.slow
def test_fresh_runtime_venv_runs_the_readme_example(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv with exactly the Jetson image's install lines (requirements/jetson.txt, then the wheel with
    --no-deps): no torch, no OpenCV, and the runtime says which extra brings cv2; then OpenCV from PyPI (the
    stand-in for JetPack's) and the README's Python example runs as written from the clone."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = str(env / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--quiet"]
    for args in (["-r", str(JETSON_REQUIREMENTS)], ["--no-deps", str(wheel)]):
        r = subprocess.run(pip + args, capture_output=True, text=True)
        if r.returncode != 0 and _index_unreachable(r.stderr):
            pytest.skip(f"the package index is unreachable: {r.stderr.strip().splitlines()[-1]}")
        assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([py, "-c", RUNTIME_CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["cv2"] is False and got["model"] == "model.onnx"
    assert str(env) in got["package"]  # the installed wheel, not the clone
    assert "pip install 'edge-affect[opencv]'" in got["error"] and "JetPack" in got["error"]

    r = subprocess.run(pip + ["opencv-python-headless>=4.8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # from the clone root as the README says, but importing the installed wheel (-I: the cwd is not on sys.path)
    r = subprocess.run([py, "-I", "-c", _readme_python_example()], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip(), "the README example prints its result"
    r = subprocess.run([py, "-c", RUNTIME_CHECK], capture_output=True, text=True, cwd=tmp_path)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["error"] is None and got["torch"] is False
