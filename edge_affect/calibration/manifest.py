"""Calibration frame sets: ``manifest.json`` (format, provenance, per-file sha256) and the verified loader.

A set is a folder of PNG face crops plus ``manifest.json``::

    {"format": "edge-affect-calibration/1", "name": "default", "count": 512,
     "source": {"kind": "npz", "path": "...", "sha256": "...", ...},
     "preprocess": {"stage": "face_crop", "frame_size": [48, 48], "color": "gray",
                    "implementation": "edge_affect.runtime.preprocess"},
     "files": [{"name": "00000.png", "sha256": "...", "label": 4, "source_id": "..."}, ...],
     "sampling": {...}, "command": "edge-affect calib build ...", "created": "...", "provenance": "..."}

Frames are stored as face crops (uint8), not as network tensors: ``load_calibration`` applies the model's
own ``Preprocess`` (resize to its input size, colour mode, mean/std) with the shared runtime implementation,
so one set serves every model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import sha256_file
from edge_affect.runtime.preprocess import decode_image, prepare_batch
from edge_affect.schema import Preprocess

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "edge-affect-calibration/1"
STAGE_FACE_CROP = "face_crop"
#: Fewest frames ``load_calibration`` accepts by default (INT8 ranges from fewer are unreliable).
MIN_FRAMES = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Parse and structurally validate ``folder/manifest.json``."""
    d = Path(folder)
    if not d.exists():
        raise FileNotFoundError(f"calibration folder {d} does not exist")
    if not d.is_dir():
        raise ValueError(f"calibration path {d} is not a folder")
    mpath = d / MANIFEST
    if not mpath.is_file():
        if not any(d.iterdir()):
            raise ValueError(
                f"calibration folder {d} is empty (expected PNG frames and {MANIFEST}; build one with "
                "'edge-affect calib build')"
            )
        raise FileNotFoundError(f"calibration folder {d} has no {MANIFEST} (build it with 'edge-affect calib build')")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{mpath}: not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise ValueError(f"{mpath}: format {got!r}, expected {FORMAT!r}")
    for key in ("count", "files", "preprocess", "source"):
        if key not in m:
            raise ValueError(f"{mpath}: lacks key {key!r}")
    files = m["files"]
    if not isinstance(files, list) or any(
        not isinstance(f, dict) or "name" not in f or "sha256" not in f for f in files
    ):
        raise ValueError(f"{mpath}: 'files' must be a list of {{'name', 'sha256', ...}} entries")
    if int(m["count"]) != len(files):
        raise ValueError(f"{mpath}: count {m['count']} but {len(files)} files listed")
    names = [f["name"] for f in files]
    bad = [n for n in names if Path(n).name != n or not n.lower().endswith(IMAGE_SUFFIXES)]
    if bad:
        raise ValueError(f"{mpath}: file entry {bad[0]!r} is not a plain image file name in the folder")
    if len(set(names)) != len(names):
        raise ValueError(f"{mpath}: duplicate file names listed")
    stage = m["preprocess"].get("stage") if isinstance(m["preprocess"], dict) else None
    if stage != STAGE_FACE_CROP:
        raise ValueError(f"{mpath}: preprocess stage {stage!r}, this edge-affect reads {STAGE_FACE_CROP!r} frames")
    return m


def verify_calibration(folder: str | Path, min_frames: int = MIN_FRAMES, check_hashes: bool = True) -> dict[str, Any]:
    """Check manifest, count and every file's sha256; return the manifest. Errors name the bad file."""
    d = Path(folder)
    m = read_manifest(d)
    files = m["files"]
    if len(files) < min_frames:
        raise ValueError(f"calibration set {d} has {len(files)} frames, expected at least {min_frames}")
    listed = {f["name"] for f in files}
    extra = sorted(p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed)
    if extra:
        raise ValueError(f"calibration set {d}: {len(extra)} image(s) not in {MANIFEST}, e.g. {extra[0]!r}")
    for f in files:
        p = d / f["name"]
        if not p.is_file():
            raise FileNotFoundError(f"calibration frame {p} listed in {MANIFEST} is missing")
        if check_hashes and sha256_file(p) != f["sha256"]:
            raise ValueError(f"calibration frame {p}: sha256 differs from {MANIFEST} (modified or corrupt)")
    return m


def check_compatible(manifest: dict[str, Any], pp: Preprocess, where: str = "calibration set") -> None:
    """Raise if frames made as ``manifest['preprocess']`` cannot feed a model preprocessed by ``pp``."""
    mp = manifest["preprocess"]
    size = mp.get("frame_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 2 for v in size)):
        raise ValueError(f"{where}: preprocess.frame_size {size!r}, expected [height, width]")
    color = mp.get("color")
    if color not in ("rgb", "gray"):
        raise ValueError(f"{where}: preprocess.color {color!r}, expected 'rgb' or 'gray'")
    if color == "gray" and pp.color == "rgb":
        log.info("%s: grayscale frames calibrate an RGB model (channels are replicated)", where)
    if max(size) * 4 < pp.input_size:
        raise ValueError(
            f"{where}: frames are {size[1]}×{size[0]}, too small for a {pp.input_size}×{pp.input_size} model "
            "(more than 4× upscaling); rebuild the set from larger crops"
        )


def load_frames(folder: str | Path, manifest: dict[str, Any], limit: int | None = None) -> list[np.ndarray]:
    """Decode the listed frames (RGB uint8), checking each against the manifest's frame size."""
    d = Path(folder)
    h, w = manifest["preprocess"]["frame_size"]
    out = []
    for f in manifest["files"][:limit]:
        p = d / f["name"]
        img = decode_image(p)
        if img.shape[:2] != (h, w):
            raise ValueError(f"calibration frame {p}: {img.shape[1]}×{img.shape[0]}, manifest says {w}×{h}")
        out.append(img)
    return out


def load_calibration(
    folder: str | Path,
    pp: Preprocess,
    *,
    min_frames: int = MIN_FRAMES,
    limit: int | None = None,
) -> np.ndarray:
    """Verify the set at ``folder`` and return its frames as network input (float32 N×3×S×S for ``pp``).

    Checks the manifest, the number of frames (>= ``min_frames``), each file's sha256 and size, and that the
    frames suit ``pp``; ``limit`` keeps only the first frames (after verifying all of them).
    """
    d = Path(folder)
    m = verify_calibration(d, min_frames=min_frames)
    check_compatible(m, pp, where=str(d))
    frames = load_frames(d, m, limit)
    return prepare_batch(frames, pp)


def manifest_labels(manifest: dict[str, Any]) -> np.ndarray | None:
    """Expression labels stored per frame (int64, -1 where unknown), or None when the set has none."""
    labels = [f.get("label") for f in manifest["files"]]
    if all(v is None for v in labels):
        return None
    return np.asarray([-1 if v is None else int(v) for v in labels], dtype=np.int64)
