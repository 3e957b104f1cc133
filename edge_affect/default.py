"""The shipped default model: where its files are (torch-free, so the runtime can use it).

``edge_affect/assets/models/default/`` holds

* ``model.onnx`` — FP32 ONNX, what ``default_model()`` returns: the torch-free runtime runs it with the base
  install (ONNX Runtime) or TensorRT, so ``load(default_model())`` works without torch (``run``/``bench`` on a
  Jetson); its metadata names the safetensors' sha256;
* ``model.safetensors`` — the weights (no pickle) with the full metadata (model config, preprocessing, label
  schema, AU thresholds, align template) in the header; the source of truth for ``export`` (which needs torch).
  It lives in the clone only: wheels, and so runtime-only installs and the Jetson image, leave it out
  (``MANIFEST.in``, ``pyproject.toml``); an editable install (``scripts/setup.sh``) finds it in place;
* ``model.json`` — the card data: sizes, hashes, how and where it was trained, measured accuracy.

``MODEL_CARD.md`` at the repository root describes it for people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "models" / "default"
#: File of each format in ``DEFAULT_MODEL_DIR``.
DEFAULT_FILES = {"onnx": "model.onnx", "safetensors": "model.safetensors", "card": "model.json"}


def default_model(fmt: str = "onnx") -> Path:
    """Path of the shipped default model in ``fmt``: ``onnx`` (FP32, the default: what the torch-free runtime
    runs, so ``load(default_model())`` needs no torch), ``safetensors`` (weights + config, for ``export`` and
    fine-tuning; needs torch, in a clone only) or ``card`` (``model.json``).

    Raises ``FileNotFoundError`` naming the file, and for ``safetensors`` where to get it, when the install
    lacks it."""
    if fmt not in DEFAULT_FILES:
        raise ValueError(f"default model format {fmt!r}: expected one of {', '.join(DEFAULT_FILES)}")
    path = DEFAULT_MODEL_DIR / DEFAULT_FILES[fmt]
    if not path.is_file():
        if fmt == "safetensors":
            raise FileNotFoundError(
                f"the default model's weights {path.name} are not in this install (wheels carry only model.onnx "
                "for the torch-free runtime); export and training use them from a clone: "
                "pip install -e '.[train,export]' (scripts/setup.sh)"
            )
        raise FileNotFoundError(f"default model file {path} is missing (reinstall edge-affect)")
    return path


def default_model_card() -> dict[str, Any]:
    """``model.json`` of the default model as a dict."""
    path = default_model("card")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


__all__ = ["DEFAULT_FILES", "DEFAULT_MODEL_DIR", "default_model", "default_model_card"]
