"""edge-affect: multi-task face affect (valence/arousal, expressions, action units) from training to edge engines."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def default_model(fmt: str = "onnx") -> Path:
    """Path of the shipped default model: ``onnx`` (default; the torch-free runtime runs it), ``safetensors``
    (weights for export/training, in a clone only) or ``card``; see ``edge_affect.default``."""
    from edge_affect.default import default_model as _default_model

    return _default_model(fmt)


__all__ = ["__version__", "default_model"]
