"""Shared fixtures: a small seeded model as a PyTorch checkpoint and as ONNX, plus sample images."""

from __future__ import annotations

from pathlib import Path

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
    try:
        from edge_affect.export.onnx_export import export_onnx

        export_onnx(model, meta, onnx_path, sample=sample)
    except ImportError:  # export step not available: plain TorchScript export + metadata
        _export_plain(model, meta, onnx_path, s)
    return {"pt": Path(ckpt), "onnx": onnx_path, "dir": d}


def _export_plain(model, meta, path: Path, s: int) -> None:
    import onnx
    import torch

    class Tuple(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            o = self.m(x)
            return o["va"], o["expr"], o["au"]

    axes = {"image": {0: "N"}, "va": {0: "N"}, "expr": {0: "N"}, "au": {0: "N"}}
    torch.onnx.export(
        Tuple(model),
        (torch.zeros(2, 3, s, s),),
        str(path),
        input_names=["image"],
        output_names=["va", "expr", "au"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    m = onnx.load(str(path))
    m.metadata_props.add(key="edge_affect", value=meta.to_json())
    onnx.save(m, str(path))
