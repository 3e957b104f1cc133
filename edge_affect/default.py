"""The shipped default model: where its files are (torch-free, so the runtime can use it).

``edge_affect/assets/models/default/`` holds

* ``model.safetensors`` — the weights (no pickle) with the full metadata (model config, preprocessing,
  label schema, AU thresholds, align template) in the header; the source of truth for ``export``;
* ``model.onnx`` — the same weights exported to FP32 ONNX, for the torch-free runtime (``run``/``bench``
  on a Jetson need no torch); its metadata names the safetensors' sha256;
* ``model.json`` — the card data: sizes, hashes, how and where it was trained, measured accuracy.

``MODEL_CARD.md`` at the repository root describes it for people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "models" / "default"
#: File of each format in ``DEFAULT_MODEL_DIR``.
DEFAULT_FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "card": "model.json"}
#: INT8 activation calibration for the default model (MODEL_CARD.md): with "entropy" INT8 stays within 1 point
#: of FP32 accuracy on FER2013 (64.00 % vs 64.92 %); "max" loses 2 points (62.91 %).
DEFAULT_MODEL_CALIB_METHOD = "entropy"


def default_model(fmt: str = "safetensors") -> Path:
    """Path of the shipped default model in ``fmt``: ``safetensors`` (weights + config, for ``export``),
    ``onnx`` (FP32, for the torch-free runtime) or ``card`` (``model.json``).

    Raises ``FileNotFoundError`` naming the file when the install lacks it."""
    if fmt not in DEFAULT_FILES:
        raise ValueError(f"default model format {fmt!r}: expected one of {', '.join(DEFAULT_FILES)}")
    path = DEFAULT_MODEL_DIR / DEFAULT_FILES[fmt]
    if not path.is_file():
        raise FileNotFoundError(f"default model file {path} is missing (reinstall edge-affect)")
    return path


def default_model_card() -> dict[str, Any]:
    """``model.json`` of the default model as a dict."""
    path = default_model("card")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


__all__ = ["DEFAULT_FILES", "DEFAULT_MODEL_CALIB_METHOD", "DEFAULT_MODEL_DIR", "default_model", "default_model_card"]
