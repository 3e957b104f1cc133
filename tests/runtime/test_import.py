"""The runtime imports and runs with numpy + OpenCV + ONNX Runtime only: torch is blocked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = """
import sys
for name in ("torch", "torchvision", "timm", "tensorrt"):
    sys.modules[name] = None  # any import of these now raises ImportError
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED + code], cwd=ROOT, capture_output=True, text=True)


def test_runtime_imports_without_torch() -> None:
    r = _run(
        "import edge_affect.runtime as rt\n"
        "from edge_affect.runtime import load, FacePipeline, YuNetDetector, open_source\n"
        "from edge_affect.runtime import cli, bench, overlay, sources, faces, predictor, formats\n"
        "from edge_affect.runtime.backends import onnxruntime_runner, tensorrt_runner, torch_runner\n"
        "assert sys.version_info >= (3, 10)\n"
        "print('ok')\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_predict_and_pipeline_without_torch(artifacts: dict[str, Path]) -> None:
    code = (
        "import json, numpy as np\n"
        "from edge_affect.runtime import load, FacePipeline\n"
        "from edge_affect.runtime.preprocess import decode_image\n"
        f"p = load({str(artifacts['onnx'])!r})\n"
        "recs = FacePipeline(p).process(decode_image('edge_affect/assets/samples/astronaut.png'))\n"
        "print(json.dumps([r['status'] for r in recs]))\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'tensorrt'))))\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[0]) == ["ok"]
    assert json.loads(lines[1]) == ["tensorrt", "torch"]  # only our blocking placeholders


def test_torch_backend_without_torch_is_one_line(artifacts: dict[str, Path]) -> None:
    r = _run(
        "from edge_affect.runtime import load\n"
        "try:\n"
        f"    load({str(artifacts['pt'])!r})\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "the torch backend needs PyTorch: pip install 'edge-affect[train]'"


@pytest.mark.parametrize("name", ["onnxruntime", "numpy", "cv2"])
def test_runtime_dependencies_are_declared(name: str) -> None:
    """numpy and ONNX Runtime are base dependencies; OpenCV is the `opencv` extra (a Jetson keeps JetPack's)."""
    text = (ROOT / "pyproject.toml").read_text()
    pkg = {"onnxruntime": "onnxruntime", "numpy": "numpy", "cv2": "opencv-python-headless"}[name]
    deps = text.split("opencv = [" if name == "cv2" else "dependencies = [", 1)[1].split("]", 1)[0]
    assert f'"{pkg}' in deps
