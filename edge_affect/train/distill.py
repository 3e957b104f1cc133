"""Knowledge distillation in stages: a teacher's soft predictions outlive its run, and a student trains on a mix.

Stage 1 (``teacher_predictions`` / ``edge-affect distill teach``): a trained checkpoint predicts the expression
distribution of every face of a dataset split and of its mirror image, written as a small ``.npz`` (float16)
with a ``.json`` of provenance (checkpoint, model, data, its own accuracy on the validation split, time, machine).
Those files are committed, so the teacher's compute reaches later stages without the teacher.

Stage 2 (``mix_dataset`` / ``edge-affect distill mix``): a new dataset root whose soft expression targets are
``(1 - weight) · votes + weight · teacher``, the teacher being the mean over the given teacher files of each
one's mean over a face and its mirror image (a flip-averaged teacher fits both orientations the augmentation
shows the student; expressions are mirror-symmetric). The validation split (what selects checkpoints and is
scored against the majority votes) and the images are the source's; a training face's hard label becomes the
most likely class of its mixed distribution (used for counts only, the loss reads the distribution): images are linked, not copied; weak VA/AU targets, where the source has them, are
derived again from the mixed distribution. Training is then the usual ``edge-affect train`` on the new root.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import atomic_write_bytes, atomic_write_text, sha256_file
from edge_affect.data.abaw import (
    IMAGES_DIR,
    SPLIT_FILES,
    load_split,
    soft_expr_file,
    split_file,
    write_annotations,
    write_soft_expr,
)
from edge_affect.fsutil import make_temp_dir, replace_dir
from edge_affect.schema import EXPRESSIONS

log = logging.getLogger(__name__)

#: Format tag of a teacher file (``.npz``), checked when one is read.
TEACHER_FORMAT = "edge-affect-teacher/1"


def provenance_path(out: str | Path) -> Path:
    """The provenance ``.json`` written beside a teacher file ``out`` (``.npz``)."""
    return Path(out).with_suffix(".json")


def _predict(model: Any, images: np.ndarray, batch: int, device: Any) -> np.ndarray:
    """Expression probabilities (N×8 float32) of a uint8 N×S×S×3 array, in batches."""
    import torch

    from edge_affect.data.augment import to_input

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = to_input(torch.from_numpy(np.array(images[i : i + batch])).to(device), model.preprocess)
            out.append(torch.softmax(model(x)["expr"].float(), -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(EXPRESSIONS)), np.float32)


def _split_probs(model: Any, data_root: Path, split: str, cache_dir: Path, batch: int, device: Any) -> dict[str, Any]:
    from edge_affect.data.cache import build_cache

    ann = load_split(data_root, split)
    cache = build_cache(ann, ann.images_root, model.preprocess, cache_dir / split)
    images = np.asarray(cache.images)
    probs = _predict(model, images, batch, device)
    mirror = _predict(model, images[:, :, ::-1], batch, device)
    rows = np.asarray(cache.rows)
    full = np.full((len(ann), len(EXPRESSIONS)), np.nan, np.float32)
    full_m = full.copy()
    full[rows], full_m[rows] = probs, mirror
    return {"ann": ann, "probs": full, "mirror": full_m}


def _majority_accuracy(probs: np.ndarray, ann: Any) -> float | None:
    """Accuracy against the majority label (the FER+ convention) where a label exists."""
    from edge_affect.metrics import expr_accuracy

    finite = np.isfinite(probs).all(1)
    return expr_accuracy(probs[finite].argmax(1), ann.expr[finite])


def teacher_predictions(
    ckpt: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    cache_dir: str | Path | None = None,
    batch: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write ``out`` (``.npz``: image paths, expression probabilities of each training face and of its mirror
    image, float16) and ``out`` with ``.json`` (provenance, and the teacher's majority accuracy on the
    validation split alone and flip-averaged). Returns the provenance."""
    import tempfile

    import torch

    from edge_affect.models import load_checkpoint

    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"{out}: expected a .npz file name for the teacher's predictions")
    data_root = Path(data_root)
    t0 = time.perf_counter()
    dev = torch.device(device)
    model, meta = load_checkpoint(ckpt, map_location=dev)
    with tempfile.TemporaryDirectory(prefix="edge-affect-teach-", dir=cache_dir) as tmp:
        train = _split_probs(model, data_root, "train", Path(tmp), batch, dev)
        val = None
        if split_file(data_root, "val").is_file():
            val = _split_probs(model, data_root, "val", Path(tmp), batch, dev)
    seconds = time.perf_counter() - t0
    ann = train["ann"]
    train_file = split_file(data_root, "train")
    info: dict[str, Any] = {
        "format": TEACHER_FORMAT,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": meta.checkpoint_sha256,
        "model": meta.model_name,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "data": str(train_file),
        "data_sha256": sha256_file(train_file),
        "data_source": _import_sources(data_root),
        "faces": len(ann),
        "expressions": list(EXPRESSIONS),
        "mirror": "each face flipped left-right (the image's columns reversed)",
        "seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device}",
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if val is not None:
        both = (val["probs"] + val["mirror"]) / 2
        info["val_accuracy"] = _majority_accuracy(val["probs"], val["ann"])
        info["val_accuracy_flip_averaged"] = _majority_accuracy(both, val["ann"])
        info["val_note"] = "majority-vote accuracy on the validation split (the selection split, not unseen data)"
    info["train_accuracy"] = _majority_accuracy(train["probs"], ann)
    import io

    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        format=np.array(TEACHER_FORMAT),
        paths=np.array(ann.paths),
        expr=train["probs"].astype(np.float16),
        expr_mirror=train["mirror"].astype(np.float16),
    )
    atomic_write_bytes(out, buf.getvalue())
    atomic_write_text(provenance_path(out), json.dumps(info, indent=1) + "\n")
    return info


def _import_sources(data_root: Path) -> dict[str, str] | None:
    """Where ``edge-affect data import`` took the dataset's splits from (its ``import.json``), if it says."""
    try:
        info = json.loads((data_root / "import.json").read_text(encoding="utf-8"))
        return {k: str(v["source"]) for k, v in info.get("splits", {}).items() if "source" in v} or None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def read_teacher(path: str | Path, paths: list[str]) -> np.ndarray:
    """A teacher file's flip-averaged probabilities (N×8 float32) in the order of ``paths`` (a split's image
    paths); one-line ``ValueError`` when it is not a teacher file or does not cover every path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"]) if "format" in z else None
            if fmt != TEACHER_FORMAT:
                raise ValueError(f"{path}: not a teacher file (format {fmt!r}, expected {TEACHER_FORMAT!r})")
            own = [str(p) for p in z["paths"]]
            probs = (z["expr"].astype(np.float32) + z["expr_mirror"].astype(np.float32)) / 2
    except (OSError, KeyError, EOFError) as e:
        raise ValueError(f"{path}: unreadable teacher file ({type(e).__name__}: {e})") from None
    if probs.shape != (len(own), len(EXPRESSIONS)):
        raise ValueError(f"{path}: predictions {probs.shape}, expected ({len(own)}, {len(EXPRESSIONS)})")
    where = {p: i for i, p in enumerate(own)}
    missing = [p for p in paths if p not in where]
    if missing:
        raise ValueError(f"{path}: no prediction for {len(missing)} faces of the dataset (first: {missing[0]})")
    out = probs[[where[p] for p in paths]]
    bad = ~np.isfinite(out).all(1)
    if bad.any():
        raise ValueError(f"{path}: no usable prediction for {paths[int(np.argmax(bad))]} (unreadable when taught)")
    return out / out.sum(1, keepdims=True)


def mix_dataset(data_root: str | Path, teachers: list[str | Path], weight: float, out: str | Path) -> dict[str, Any]:
    """Write the dataset root ``out``: ``data_root``'s splits with the training split's soft expression targets
    mixed with the teachers' (see the module docstring); the validation split and the images are the source's.
    ``out`` must not exist or be an empty folder; it appears whole or not at all."""
    from edge_affect.data.fer import weak_targets_soft

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight {weight}: expected a value in [0, 1]")
    if not teachers:
        raise ValueError("no teacher file given: expected at least one --teacher")
    data_root, out = Path(data_root), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new dataset root")
    if out.resolve().is_relative_to(data_root.resolve()):
        raise ValueError(f"{out} lies inside the source dataset {data_root}; choose a folder outside it")
    ann = load_split(data_root, "train")
    if ann.expr_soft is None:
        votes = np.eye(len(EXPRESSIONS), dtype=np.float32)[np.clip(ann.expr, 0, None)]
        votes[ann.expr < 0] = np.nan
    else:
        votes = ann.expr_soft
    teacher = np.mean([read_teacher(t, ann.paths) for t in teachers], axis=0)
    mixed = np.where(np.isfinite(votes), (1 - weight) * np.nan_to_num(votes) + weight * teacher, teacher)
    import_json = data_root / "import.json"
    weak = import_json.is_file() and bool(json.loads(import_json.read_text(encoding="utf-8")).get("weak_targets"))
    tmp = make_temp_dir(out)
    try:
        train_file = tmp / SPLIT_FILES["train"][0]
        if weak:
            au, va = weak_targets_soft(mixed)
        else:
            au, va = ann.au, ann.va
        # the sidecar's rule: a hard label is a most likely class of its distribution (validation keeps the votes')
        hard = np.where(ann.expr >= 0, mixed.argmax(1), ann.expr)
        write_annotations(train_file, ann.paths, va, hard, au)
        write_soft_expr(soft_expr_file(train_file), ann.paths, mixed)
        val_file = split_file(data_root, "val")
        if val_file.is_file():
            for src in (val_file, soft_expr_file(val_file)):
                if src.is_file():
                    atomic_write_bytes(tmp / src.name, src.read_bytes())
        # the images are the source's: a relative link from out/ (where it will live) to them
        os.symlink(os.path.relpath((data_root / IMAGES_DIR).resolve(), os.path.abspath(out)), tmp / IMAGES_DIR)
        info = {
            "source": str(data_root),
            "source_sha256": sha256_file(split_file(data_root, "train")),
            "teachers": [{"file": str(t), "sha256": sha256_file(t)} for t in teachers],
            "weight": weight,
            "targets": f"(1 - {weight}) · source soft targets + {weight} · mean flip-averaged teacher",
            "weak_targets": weak,
            "faces": len(ann),
            "agreement_teacher_votes": float((teacher.argmax(1) == np.nan_to_num(votes).argmax(1)).mean()),
            "hard_labels_changed": int((hard != ann.expr).sum()),
        }
        atomic_write_text(tmp / "import.json", json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
