"""Calibration frame sets: building them from image/video/ABAW/npz sources, manifests, verified loading.

The default set ships inside the package (``edge_affect/assets/calibration/default``, so a non-editable
install has it); the top-level ``calibration/default`` of the repository is a symlink to it.
"""

from __future__ import annotations

from pathlib import Path

from edge_affect.calibration.manifest import (
    MANIFEST,
    MIN_FRAMES,
    check_compatible,
    load_calibration,
    manifest_labels,
    read_manifest,
    verify_calibration,
)

DEFAULT_NAME = "default"


def default_calibration_dir() -> Path:
    """The shipped calibration set (512 FER2013 faces): package assets first, then the repo's ``calibration/``."""
    pkg = Path(__file__).resolve().parent.parent / "assets" / "calibration" / DEFAULT_NAME
    if (pkg / MANIFEST).is_file():
        return pkg
    repo = Path(__file__).resolve().parents[2] / "calibration" / DEFAULT_NAME
    if (repo / MANIFEST).is_file():
        return repo
    raise FileNotFoundError(f"default calibration set not found at {pkg} or {repo} (reinstall edge-affect)")


def build_calibration(*args, **kwargs) -> Path:
    """See ``edge_affect.calibration.build.build_calibration`` (imported lazily: it pulls OpenCV)."""
    from edge_affect.calibration.build import build_calibration as _build

    return _build(*args, **kwargs)


__all__ = [
    "DEFAULT_NAME",
    "MANIFEST",
    "MIN_FRAMES",
    "build_calibration",
    "check_compatible",
    "default_calibration_dir",
    "load_calibration",
    "manifest_labels",
    "read_manifest",
    "verify_calibration",
]
