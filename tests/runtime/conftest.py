"""Shared fixtures: a small seeded model as a PyTorch checkpoint and as ONNX, plus sample images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

ASSETS = Path(__file__).resolve().parents[2] / "edge_affect" / "assets"
ASTRONAUT_PNG = ASSETS / "samples" / "astronaut.png"
CLIP_MP4 = ASSETS / "samples" / "astronaut_clip.mp4"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """``skimage.data.astronaut()`` (512×512 RGB), or the bundled PNG export of it."""
    try:
        from skimage import data

        return data.astronaut()
    except ImportError:
        from edge_affect.runtime.preprocess import decode_image

        return decode_image(ASTRONAUT_PNG)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ``tiny`` model (seed 0): ``model.pt`` checkpoint and ``model.onnx`` with embedded metadata."""
    torch = pytest.importorskip("torch", reason="making test artifacts needs PyTorch (the train extra)")
    from edge_affect.models import create_model, save_checkpoint
    from edge_affect.models.checkpoint import model_meta

    d = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    ckpt = save_checkpoint(d / "model.pt", model)
    meta = model_meta(model)
    s = meta.preprocess.input_size
    sample = np.random.default_rng(0).standard_normal((4, 3, s, s)).astype(np.float32)
    onnx_path = d / "model.onnx"
    from edge_affect.export.onnx_export import export_onnx

    export_onnx(model, meta, onnx_path, sample=sample)
    return {"pt": Path(ckpt), "onnx": onnx_path, "dir": d}


@pytest.fixture(scope="module")
def detector() -> Any:
    """YuNet on ONNX Runtime (CPU), one per test module."""
    from edge_affect.runtime.detect import YuNetDetector

    d = YuNetDetector()
    yield d
    d.close()


@pytest.fixture(scope="module")
def default_predictor() -> Any:
    """The shipped default model's ONNX, loaded once per test module."""
    from edge_affect.default import default_model
    from edge_affect.runtime import load

    with load(default_model("onnx")) as p:
        yield p
