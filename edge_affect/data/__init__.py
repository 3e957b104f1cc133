"""Data: ABAW annotation reader, synthetic faces, packed uint8 cache, loader and GPU augmentation.

The reader, synthesizer, checker and cache need only numpy + OpenCV; ``PackedLoader``,
``GpuAugment`` and ``to_input`` need torch and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from edge_affect.data.abaw import Annotations, load_split, read_annotations, split_file, write_annotations
from edge_affect.data.cache import PackedCache, build_cache
from edge_affect.data.check import check_dataset
from edge_affect.data.synth import synth_dataset

_LAZY = {
    "PackedLoader": "edge_affect.data.loader",
    "GpuAugment": "edge_affect.data.augment",
    "to_input": "edge_affect.data.augment",
}

__all__ = [
    "Annotations",
    "GpuAugment",
    "PackedCache",
    "PackedLoader",
    "build_cache",
    "check_dataset",
    "load_split",
    "read_annotations",
    "split_file",
    "synth_dataset",
    "to_input",
    "write_annotations",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_affect.data' has no attribute {name!r}")
