"""Import FER2013-style ``.npz`` face sets into the ABAW dataset layout, so ``edge-affect train`` trains on them.

Two kinds of face set are recognised by their arrays:

* **hard labels** (FER2013): ``images`` N×H×W uint8, ``labels`` in ABAW expression order, ``ids``;
* **crowd votes** (FER+): ``images`` and ``votes`` N×10 (neutral, happiness, surprise, sadness, anger,
  disgust, fear, contempt, unknown, NF). The expression target becomes the vote *distribution* over the
  8 ABAW classes (contempt → Other; unknown/NF votes dropped), written to the soft-label sidecar
  (``edge_affect.data.abaw.SOFT_EXPR_SUFFIX``); the annotation file's hard ``expression`` column holds
  the majority class, so every ABAW reader and metric keeps working. Faces whose most-voted column is
  unknown or NF are left out and counted in ``import.json``.

FER2013 has expression labels only. By default valence/arousal and AUs are written as missing (−5 / −1),
so only the expression head learns from these rows. ``weak_targets=True`` instead writes *weak*
labels derived from the expression alone — the prototype AUs of each expression (the same table the
synthetic faces use) and the valence/arousal those AUs imply — and records that in ``import.json``:
they are assumptions about a class, not measurements of a face.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

from edge_affect.artifact import atomic_write_text
from edge_affect.data.abaw import IMAGES_DIR, SPLIT_FILES, soft_expr_file, write_annotations, write_soft_expr
from edge_affect.data.synth import PROTOTYPES, va_from_intensity
from edge_affect.fsutil import make_temp_dir, replace_dir, same_path
from edge_affect.schema import AUS, MISSING_AU, MISSING_EXPR, MISSING_VA, NUM_AU, NUM_EXPR

log = logging.getLogger(__name__)


#: FER+ vote columns in the order of ``votes``, and the ABAW expression each emotion column maps to.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_TO_ABAW: tuple[int, ...] = (0, 4, 6, 5, 1, 2, 3, 7)  # neutral…contempt → ABAW ids (contempt → Other)


def _prototypes() -> np.ndarray:
    """8×12 prototype AU activations per expression (the table the synthetic faces use)."""
    protos = np.zeros((NUM_EXPR, NUM_AU), dtype=np.float64)
    for e, (required, _) in PROTOTYPES.items():
        for name in required:
            protos[e, AUS.index(name)] = 0.8
    return protos


def weak_targets(expr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-expression prototype AUs (N×12, 0/1) and the valence/arousal they imply (N×2)."""
    return weak_targets_soft(np.eye(NUM_EXPR)[np.asarray(expr, dtype=np.int64)])


def weak_targets_soft(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WEAK AU (N×12, 0/1) and VA (N×2) targets as the expected value of the class prototypes under the
    expression distribution ``dist`` (N×8): VA = Σ_k p_k · VA(prototype_k); an AU is on when its expected
    prototype activation Σ_k p_k · [AU in prototype_k] is at least 0.5. Assumptions about classes, not
    measurements of a face."""
    protos = _prototypes()
    dist = np.asarray(dist, dtype=np.float64)
    au = (dist @ (protos > 0.5).astype(np.float64) >= 0.5).astype(np.int8)
    va = (dist @ va_from_intensity(protos)).astype(np.float32)
    return au, va


def votes_to_distribution(votes: np.ndarray, where: str = "votes") -> tuple[np.ndarray, np.ndarray]:
    """FER+ vote counts (N×10) → (ABAW-ordered 8-class distribution N×8 float32, keep mask N).

    ``keep`` is False where the most-voted column is unknown or NF (ties go to the emotion, the first
    column in the FER+ order) or where no emotion received a vote."""
    v = np.asarray(votes)
    if v.ndim != 2 or v.shape[1] != len(FERPLUS_COLUMNS):
        raise ValueError(f"{where}: shape {v.shape}, expected N×{len(FERPLUS_COLUMNS)} vote counts")
    if not np.issubdtype(v.dtype, np.integer) or (v < 0).any():
        raise ValueError(f"{where}: votes must be non-negative integer counts, got {v.dtype}")
    emo = v[:, :8].astype(np.float64)
    total = emo.sum(1)
    keep = (np.argmax(v, axis=1) < 8) & (total > 0)
    dist = np.zeros((len(v), NUM_EXPR), dtype=np.float64)
    dist[:, list(FERPLUS_TO_ABAW)] = emo / np.maximum(total, 1)[:, None]
    return dist.astype(np.float32), keep


def majority_label(dist: np.ndarray) -> np.ndarray:
    """ABAW majority class of ABAW-ordered distributions, ties broken in the FER+ column order."""
    dist = np.asarray(dist)
    in_ferplus_order = dist[:, list(FERPLUS_TO_ABAW)]
    return np.asarray(FERPLUS_TO_ABAW, dtype=np.int64)[np.argmax(in_ferplus_order, axis=1)]


def ferplus_labels(votes: np.ndarray, where: str = "votes") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FER+ vote counts (N×10) → (distribution N×8, majority label N, keep mask N), all N rows.

    The label is ``MISSING_EXPR`` (−1) where ``keep`` is False (most-voted column unknown or NF, or no
    emotion vote): the one place the votes → distribution → majority sequence lives."""
    dist, keep = votes_to_distribution(votes, where=where)
    labels = np.where(keep, majority_label(dist), MISSING_EXPR).astype(np.int64)
    return dist, labels, keep


def ferplus_majority(path: str | Path, where: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(images, majority labels, faces dropped) of a FER+ ``.npz`` (``images`` + ``votes``): only the faces
    whose most-voted column is an emotion, each with its ABAW majority class.

    ``where`` names the file in error messages (default: its path); a missing or unreadable file, missing
    arrays or bad votes raise ``OSError``/``ValueError`` with one line."""
    path = Path(path)
    where = where or str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file, expected a FER+ .npz (images + votes)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: not a readable .npz ({e})") from None
    if not hasattr(z, "files"):  # a .npy: one bare array
        raise ValueError(f"{where}: a single array, expected an .npz with arrays 'images' and 'votes' (FER+)")
    with z:
        if "images" not in z.files or "votes" not in z.files:
            raise ValueError(f"{where}: expected arrays 'images' and 'votes' (FER+), got {z.files}")
        try:
            images, votes = np.asarray(z["images"]), np.asarray(z["votes"])
        except ValueError as e:  # object arrays need pickles, which are refused
            raise ValueError(f"{where}: unreadable array ({e}); expected plain numeric arrays") from None
    if len(images) != len(votes):
        raise ValueError(f"{where}: {len(images)} images but {len(votes)} vote rows, expected one per face")
    _, labels, keep = ferplus_labels(votes, where=f"{where}: votes")
    return images[keep], labels[keep], int((~keep).sum())


_ID_OK = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _read_npz(path: Path) -> dict:
    """``{"images", "labels", "ids", "dist" (None for hard labels), "dropped"}`` of one face set."""
    if not path.is_file():
        raise FileNotFoundError(f"face set {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    with z:
        kind = "votes" if "votes" in z.files else "labels"
        missing = [k for k in ("images", kind) if k not in z.files]
        if missing:
            raise ValueError(f"{path}: lacks array {missing[0]!r} (expected 'images' and 'labels' or FER+ 'votes')")
        try:
            images = np.asarray(z["images"])
            target = np.asarray(z[kind])
            ids = [str(i) for i in z["ids"]] if "ids" in z.files else [f"{k:06d}" for k in range(len(images))]
        except ValueError as e:  # object arrays need pickles, which are refused
            raise ValueError(f"{path}: unreadable array ({e}); expected plain numeric/string arrays") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(target) or len(ids) != len(target):
        raise ValueError(
            f"{path}: images {images.shape} {images.dtype}, {kind} {target.shape}: "
            f"expected N×H×W(×3) uint8 and N {kind}"
        )
    bad_id = next((i for i in ids if not _ID_OK.match(i)), None)
    if bad_id is not None:
        raise ValueError(f"{path}: id {bad_id!r} is not 1-64 letters, digits, '_', '.' or '-'")
    dist = None
    dropped = 0
    if kind == "votes":
        dist, labels, keep = ferplus_labels(target, where=f"{path}: votes")
        dropped = int((~keep).sum())
        images, dist, labels = images[keep], dist[keep], labels[keep]
        ids = [i for i, k in zip(ids, keep, strict=True) if k]
    else:
        if not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"{path}: labels are {target.dtype}, expected integer class ids")
        labels = target.astype(np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= NUM_EXPR))
        if len(bad):
            raise ValueError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{NUM_EXPR - 1}")
    if len(labels) == 0:
        raise ValueError(f"{path}: no faces left to import")
    return {"images": images, "labels": labels, "ids": ids, "dist": dist, "dropped": dropped}


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
    from edge_affect.artifact import check_align_template

    try:
        return check_align_template(tpl)  # the same check every artifact's metadata passes
    except (ValueError, TypeError) as e:
        raise ValueError(f"{p}: {e}") from None


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


def _hold_out(face_set: dict, n: int, seed: int, where: str) -> tuple[dict, dict]:
    """Split one face set into (the rest, ``n`` faces drawn at random with ``seed``), both in file order."""
    total = len(face_set["labels"])
    if not 0 < n < total:
        raise ValueError(f"{where}: --hold-out {n} must be between 1 and {total - 1} (the set has {total} faces)")
    held = np.zeros(total, dtype=bool)
    held[np.random.default_rng(seed).choice(total, size=n, replace=False)] = True

    def part(mask: np.ndarray) -> dict:
        dist = face_set["dist"]
        return {
            "images": face_set["images"][mask],
            "labels": face_set["labels"][mask],
            "ids": [i for i, k in zip(face_set["ids"], mask, strict=True) if k],
            "dist": None if dist is None else dist[mask],
            "dropped": 0,
        }

    rest = part(~held)
    rest["dropped"] = face_set["dropped"]
    return rest, part(held)


def import_face_set(
    train_npz: str | Path,
    val_npz: str | Path | None,
    out: str | Path,
    *,
    weak: bool = False,
    hold_out: int | None = None,
    hold_out_seed: int = 0,
) -> dict:
    """Write ``out/{training,validation}_set_annotations.txt``, ``out/cropped_aligned/<set>/<row>_<id>.png``,
    for FER+ vote sets the soft-label sidecars, and ``out/import.json``.

    With ``hold_out`` (and no ``val_npz``) the validation split is that many faces of ``train_npz``, drawn at
    random with ``hold_out_seed`` and left out of the training split: for choosing checkpoints or settings on
    faces of the training distribution while a published validation set stays unseen for the figures reported.

    ``out`` must not exist or be an empty folder. Everything is written to a hidden temp folder beside it
    and renamed into place at the end, so a failed or killed import leaves no half-written dataset (a
    later import removes what a kill left behind)."""
    import cv2

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new dataset root")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"parent folder {parent} of {out} does not exist")
    if (val_npz is None) == (hold_out is None):
        raise ValueError(
            "give a validation set (--val) or a number of training faces to hold out (--hold-out), one of the two"
        )
    if val_npz is None:
        sources = {"train": Path(train_npz), "val": Path(train_npz)}
        rest, held = _hold_out(_read_npz(sources["train"]), hold_out, hold_out_seed, str(train_npz))
        face_sets = {"train": rest, "val": held}
    else:
        sources = {"train": Path(train_npz), "val": Path(val_npz)}
        face_sets = {split: _read_npz(src) for split, src in sources.items()}  # bad files: one line, nothing written
        if same_path(train_npz, val_npz):  # allowed (a smoke test), but validation then scores training faces
            log.warning("%s is both the training and the validation set: validation scores are not held-out", val_npz)
    # one image folder per split, named after its file; two files of one name (a/data.npz, b/data.npz) get
    # <stem>-train and <stem>-val, so no validation image lands on a training row's path
    clash = sources["train"].stem == sources["val"].stem
    tmp = make_temp_dir(out)  # named after this process; what killed imports left is removed first
    summary: dict = {"weak_targets": weak, "splits": {}}
    try:
        for split, src in sources.items():
            face_set = face_sets[split]
            images, labels, ids, dist = face_set["images"], face_set["labels"], face_set["ids"], face_set["dist"]
            sub = f"{src.stem}-{split}" if clash else src.stem
            folder = tmp / IMAGES_DIR / sub
            folder.mkdir(parents=True, exist_ok=True)
            paths = []
            for k, (img, name) in enumerate(zip(images, ids, strict=True)):
                rel = f"{sub}/{k:05d}_{name}.png"  # ids repeat in FER2013: the row number keeps paths unique
                ok, buf = cv2.imencode(".png", img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise RuntimeError(f"cannot encode {rel} as PNG")
                (tmp / IMAGES_DIR / rel).write_bytes(buf.tobytes())
                paths.append(rel)
            if weak:
                au, va = weak_targets(labels) if dist is None else weak_targets_soft(dist)
            else:
                au = np.full((len(labels), NUM_AU), MISSING_AU, dtype=np.int8)
                va = np.full((len(labels), 2), MISSING_VA, dtype=np.float32)
            ann_path = tmp / SPLIT_FILES[split][0]
            write_annotations(ann_path, paths, va, labels, au)
            info = {
                "source": str(src),
                "rows": len(paths),
                "class_counts": np.bincount(labels, minlength=NUM_EXPR).tolist(),
            }
            if hold_out is not None:
                info["hold_out"] = {
                    "faces": hold_out,
                    "seed": hold_out_seed,
                    "split": "held out" if split == "val" else "the rest",
                }
            if dist is not None:
                write_soft_expr(soft_expr_file(ann_path), paths, dist)
                info["targets"] = "FER+ vote distribution (soft) + majority label"
                info["dropped_unknown_or_nf"] = face_set["dropped"]
            summary["splits"][split] = info
            log.info("%s: %d faces from %s", split, len(paths), src)
            if split == "train":  # the crops' framing, for the runtime's alignment
                summary["align_template"], summary["align_template_faces"] = _align_template(out, images)
        soft = any("targets" in v for v in summary["splits"].values())
        summary["note"] = (
            "expression targets are the FER+ vote distributions; "
            if soft
            else "expression labels are the dataset's own; "
        ) + (
            "valence/arousal and AUs are WEAK targets derived from the expression "
            + ("distribution" if soft else "class")
            if weak
            else "valence/arousal and AUs are missing (-5/-1)"
        )
        atomic_write_text(tmp / "import.json", json.dumps(summary, indent=2))
        replace_dir(tmp, out)  # out is absent or empty (checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
