"""Torch-free runtime: load any edge-affect artifact and predict affect for faces in crops or frames.

Needs numpy + OpenCV + ONNX Runtime (or TensorRT + cuda-python); never torch (only the optional ``torch``
backend imports it, when asked). OpenCV comes from the ``opencv`` extra or from the platform (JetPack's, with
GStreamer, on a Jetson); ``require_cv2`` imports it or names the extra. Names are resolved lazily so
``import edge_affect.runtime`` stays cheap::

    from edge_affect.runtime import load
    with load("model.onnx") as p:
        p.predict(face_crops)
"""

from __future__ import annotations

import importlib
from typing import Any

#: What to install when OpenCV is missing. The base install leaves it out so that a Jetson keeps JetPack's
#: OpenCV (built with GStreamer for CSI/RTSP cameras), which a PyPI OpenCV would shadow.
CV2_HINT = (
    "OpenCV (cv2) is not installed: pip install 'edge-affect[opencv]' "
    "(on a Jetson use JetPack's OpenCV, which has GStreamer: docker/Dockerfile.jetson)"
)


class MissingDependencyError(ImportError, RuntimeError):
    """An optional dependency is absent; the message names what to install. An ``ImportError`` for callers
    that catch that, and a ``RuntimeError`` so the CLI prints the message as its one-line error."""


def require_cv2() -> Any:
    """``import cv2``, or a ``MissingDependencyError`` naming the ``opencv`` extra (and JetPack's OpenCV)."""
    try:
        import cv2
    except ModuleNotFoundError as e:
        if e.name != "cv2":
            raise
        raise MissingDependencyError(CV2_HINT, name="cv2") from None
    return cv2


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
    "FORMATS": "edge_affect.formats",  # the one artifact table
    "LOADERS": "edge_affect.runtime.formats",
    "detect_backend": "edge_affect.runtime.formats",
    "prepare_batch": "edge_affect.runtime.preprocess",
    "decode_image": "edge_affect.runtime.preprocess",
}

__all__ = sorted([*_EXPORTS, "CV2_HINT", "MissingDependencyError", "require_cv2"])


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'edge_affect.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
