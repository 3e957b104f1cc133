"""``edge-affect eval``: metrics of a checkpoint on an ABAW split, and an ABAW-format submission file."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_affect.artifact import atomic_write_text

#: The temporary cache folder of one ``eval`` (in the system temp folder, named after its process), so the
#: next ``eval`` can remove what a killed one left (a packed cache of a whole split can be gigabytes).
_EVAL_TEMP = re.compile(r"^edge-affect-eval-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def evaluate_checkpoint(
    ckpt: str | Path,
    data_root: str | Path,
    split: str = "val",
    images: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 256,
) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    """Return ``(metrics, predictions, annotations)``; metrics use the checkpoint's AU thresholds
    (``au_thresholds`` as stored, tuned on validation during training) and also report 0.5."""
    from edge_affect.data.abaw import load_split
    from edge_affect.data.cache import build_cache
    from edge_affect.models import load_checkpoint
    from edge_affect.train.loop import predict_cache, score_predictions

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, meta = load_checkpoint(ckpt, map_location=dev)
    ann = load_split(data_root, split, images=images)
    from edge_affect.fsutil import clean_stale

    clean_stale(tempfile.gettempdir(), _EVAL_TEMP)
    tmp = tempfile.mkdtemp(prefix=f"edge-affect-eval-{os.getpid()}-")
    try:
        cache = build_cache(ann, ann.images_root, model.preprocess, Path(cache_dir or tmp) / split)
        pred = predict_cache(model, cache, model.preprocess, dev, batch_size)
        at_half = score_predictions(pred, cache)
        tuned = score_predictions(pred, cache, meta.au_thresholds)
        del cache  # its memory map, before the folder goes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics = {
        **tuned,
        "au_at_0.5": at_half["au"],
        "p_at_0.5": at_half["p"],
        "au_thresholds": list(meta.au_thresholds),
        "rows": len(ann),
        "labelled": ann.counts(),
        "split": split,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": meta.checkpoint_sha256,
    }
    return metrics, pred, ann


def write_submission(path: str | Path, paths: list[str], pred: dict[str, np.ndarray], au_thresholds) -> Path:
    """ABAW MTL submission: header ``image,valence,arousal,expression,aus``; AUs as 12 binary values."""
    th = np.asarray(au_thresholds, dtype=np.float64)
    aus = (pred["au"] >= th).astype(int)
    expr = pred["expr"].argmax(1)
    lines = ["image,valence,arousal,expression,aus"]
    for i, p in enumerate(paths):
        v, a = (float(x) for x in pred["va"][i])
        lines.append(f"{p},{v:.6f},{a:.6f},{int(expr[i])}," + ",".join(str(int(b)) for b in aus[i]))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


__all__ = ["evaluate_checkpoint", "write_submission"]
