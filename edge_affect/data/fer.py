"""Import FER2013-style ``.npz`` face sets (``images`` N×H×W uint8, ``labels`` in ABAW expression order,
``ids``) into the ABAW dataset layout, so the project's own ``edge-affect train`` trains on them.

FER2013 has expression labels only. By default valence/arousal and AUs are written as missing (−5 / −1),
so only the expression head learns from these rows. ``weak_targets=True`` instead writes *weak*
labels derived from the expression alone — the prototype AUs of each expression (the same table the
synthetic faces use) and the valence/arousal those AUs imply — and records that in ``import.json``:
they are assumptions about a class, not measurements of a face.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edge_affect.artifact import atomic_write_text
from edge_affect.data.abaw import IMAGES_DIR, SPLIT_FILES, write_annotations
from edge_affect.data.synth import PROTOTYPES, va_from_intensity
from edge_affect.schema import AUS, MISSING_AU, MISSING_VA, NUM_AU, NUM_EXPR

log = logging.getLogger(__name__)


def weak_targets(expr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-expression prototype AUs (N×12, 0/1) and the valence/arousal they imply (N×2)."""
    protos = np.zeros((NUM_EXPR, NUM_AU), dtype=np.float64)
    for e, (required, _) in PROTOTYPES.items():
        for name in required:
            protos[e, AUS.index(name)] = 0.8
    au = (protos[expr] > 0.5).astype(np.int8)
    va = va_from_intensity(protos[expr]).astype(np.float32)
    return au, va


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"face set {path} does not exist")
    try:
        z = np.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    with z:
        missing = [k for k in ("images", "labels") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: lacks array {missing[0]!r} (expected 'images' and 'labels')")
        images, labels = np.asarray(z["images"]), np.asarray(z["labels"]).astype(np.int64)
        ids = [str(i) for i in z["ids"]] if "ids" in z.files else [f"{k:06d}" for k in range(len(images))]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels) or len(ids) != len(labels):
        raise ValueError(
            f"{path}: images {images.shape} {images.dtype}, labels {labels.shape}: expected N×H×W(×3) uint8 and N labels"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_EXPR))
    if len(bad):
        raise ValueError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{NUM_EXPR - 1}")
    return images, labels, ids


def dataset_align_template(root: str | Path) -> list[list[float]] | None:
    """The ``align_template`` an imported face set recorded in ``root/import.json`` (None if absent)."""
    p = Path(root) / "import.json"
    if not p.is_file():
        return None
    try:
        tpl = json.loads(p.read_text(encoding="utf-8")).get("align_template")
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: not readable JSON ({e})") from None
    if tpl is None:
        return None
    arr = np.asarray(tpl, dtype=np.float64)
    if arr.shape != (5, 2) or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{p}: align_template {tpl!r} is not 5×2 fractions of the crop")
    return arr.tolist()


def _align_template(out: Path, images: np.ndarray, n: int = 1000) -> tuple[list[list[float]] | None, int]:
    """Measure the crops' framing on up to ``n`` of ``images`` (see ``measure_align_template``)."""
    from edge_affect.runtime.faces import measure_align_template

    step = max(1, len(images) // n)
    try:
        tpl, found = measure_align_template(images[::step][:n])
    except ValueError as e:
        log.warning("no align template for %s: %s", out, e)
        return None, 0
    return np.round(tpl, 4).tolist(), found


def import_face_set(train_npz: str | Path, val_npz: str | Path, out: str | Path, *, weak: bool = False) -> dict:
    """Write ``out/{training,validation}_set_annotations.txt`` and ``out/cropped_aligned/<split>/<id>.png``."""
    import cv2

    out = Path(out)
    if (out / SPLIT_FILES["train"][0]).exists():
        raise ValueError(f"{out} already holds a dataset; choose an empty folder")
    summary: dict = {"weak_targets": weak, "splits": {}}
    for split, src in (("train", Path(train_npz)), ("val", Path(val_npz))):
        images, labels, ids = _read_npz(src)
        folder = out / IMAGES_DIR / f"{src.stem}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, (img, name) in enumerate(zip(images, ids, strict=True)):
            rel = f"{src.stem}/{k:05d}_{name}.png"  # ids repeat in FER2013: the row number keeps paths unique
            ok, buf = cv2.imencode(".png", img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError(f"cannot encode {rel} as PNG")
            (out / IMAGES_DIR / rel).write_bytes(buf.tobytes())
            paths.append(rel)
        if weak:
            au, va = weak_targets(labels)
        else:
            au = np.full((len(labels), NUM_AU), MISSING_AU, dtype=np.int8)
            va = np.full((len(labels), 2), MISSING_VA, dtype=np.float32)
        write_annotations(out / SPLIT_FILES[split][0], paths, va, labels, au)
        summary["splits"][split] = {
            "source": str(src),
            "rows": len(paths),
            "class_counts": np.bincount(labels, minlength=NUM_EXPR).tolist(),
        }
        log.info("%s: %d faces from %s", split, len(paths), src)
        if split == "train":  # the crops' framing, for the runtime's alignment
            summary["align_template"], summary["align_template_faces"] = _align_template(out, images)
    summary["note"] = "expression labels are the dataset's own; " + (
        "valence/arousal and AUs are WEAK targets derived from the expression class"
        if weak
        else "valence/arousal and AUs are missing (-5/-1)"
    )
    atomic_write_text(out / "import.json", json.dumps(summary, indent=2))
    return summary
