"""Torch-free runtime: load any edge-affect artifact and predict affect for faces in crops or frames.

Needs numpy + OpenCV + ONNX Runtime (or TensorRT + cuda-python); never torch (only the optional
``torch`` backend imports it, when asked). Names are resolved lazily so ``import edge_affect.runtime``
stays cheap::

    from edge_affect.runtime import load
    with load("model.onnx") as p:
        p.predict(face_crops)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "edge_affect.runtime.predictor",
    "Predictor": "edge_affect.runtime.predictor",
    "FacePipeline": "edge_affect.runtime.faces",
    "YuNetDetector": "edge_affect.runtime.faces",
    "IoUTracker": "edge_affect.runtime.faces",
    "EMASmoother": "edge_affect.runtime.faces",
    "Detection": "edge_affect.runtime.faces",
    "align_face": "edge_affect.runtime.faces",
    "yunet_runner": "edge_affect.runtime.faces",
    "RECORD_FIELDS": "edge_affect.runtime.faces",
    "open_source": "edge_affect.runtime.sources",
    "Frame": "edge_affect.runtime.sources",
    "OnnxRuntimeRunner": "edge_affect.runtime.backends.onnxruntime_runner",
    "TensorRTRunner": "edge_affect.runtime.backends.tensorrt_runner",
    "TorchRunner": "edge_affect.runtime.backends.torch_runner",
    "FORMATS": "edge_affect.runtime.formats",
    "detect_backend": "edge_affect.runtime.formats",
    "prepare_batch": "edge_affect.runtime.preprocess",
    "decode_image": "edge_affect.runtime.preprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'edge_affect.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
