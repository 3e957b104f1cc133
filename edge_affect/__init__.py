"""edge-affect: multi-task face affect (valence/arousal, expressions, action units) from training to edge engines."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
