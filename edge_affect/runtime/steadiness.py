"""How steady a video's results are: label changes between consecutive frames, agreement with a centred
majority of raw labels, landmark jitter, smoothing replayed over recorded per-frame records, and the expression
under landmark noise.

Used by ``bench --pipeline``, ``benchmarks/bench_pipeline.py`` and the tests, so every figure about
flicker is computed one way. Labels are per frame for one face (the first track seen), ``None`` where
the frame has no face."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_affect.runtime.align import align_views
from edge_affect.runtime.track import EMASmoother

#: Window of the centred majority the smoothed labels are compared with (frames, odd).
MAJORITY_WINDOW = 11


def label_changes(labels: Sequence[str | None]) -> float | None:
    """Fraction of consecutive frame pairs, both with a label, whose labels differ (``None``: no such pair)."""
    pairs = [labels[i] != labels[i - 1] for i in range(1, len(labels)) if labels[i] and labels[i - 1]]
    return float(np.mean(pairs)) if pairs else None


def centred_majority(labels: Sequence[str | None], window: int = MAJORITY_WINDOW) -> list[str | None]:
    """Per frame, the most frequent label in the ``window`` frames centred on it (ties: the earliest seen)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"majority window {window}: expected an odd number ≥ 1")
    half = window // 2
    out: list[str | None] = []
    for i, own in enumerate(labels):
        near = [x for x in labels[max(0, i - half) : i + half + 1] if x]
        out.append(Counter(near).most_common(1)[0][0] if own and near else None)
    return out


def agreement(a: Sequence[str | None], b: Sequence[str | None]) -> float | None:
    """Fraction of frames labelled in both where ``a`` and ``b`` agree."""
    both = [x == y for x, y in zip(a, b, strict=False) if x and y]
    return float(np.mean(both)) if both else None


def first_face_labels(frames: Sequence[Sequence[dict[str, Any]]]) -> list[str | None]:
    """Per frame, the expression of the lowest track id present (the face followed longest), else ``None``."""
    out: list[str | None] = []
    for recs in frames:
        ok = [r for r in recs if r.get("status") == "ok" and r.get("track") is not None]
        out.append(min(ok, key=lambda r: r["track"])["expression"] if ok else None)
    return out


def replay_smoothing(frames: Sequence[Sequence[dict[str, Any]]], smoother: EMASmoother) -> list[list[dict[str, Any]]]:
    """The records ``FacePipeline(smooth=True)`` would have reported, from records of a ``smooth=False`` run
    (smoothing is a function of each track's sequence of records)."""
    smoother.reset()
    out = []
    for recs in frames:
        # Track ids are never reused, so keeping every track's state matches the pipeline's.
        out.append([smoother.apply(r["track"], copy.deepcopy(r)) if r.get("track") is not None else r for r in recs])
    return out


def landmark_jitter(frames: Sequence[Sequence[dict[str, Any]]]) -> float | None:
    """Median frame-to-frame movement of the first face's landmarks (mean over the 5 points, px)."""
    moves = []
    prev: tuple[int, np.ndarray] | None = None
    for recs in frames:
        ok = [r for r in recs if r.get("landmarks") is not None and r.get("track") is not None]
        if not ok:
            prev = None
            continue
        r = min(ok, key=lambda r: r["track"])
        lm = np.asarray(r["landmarks"], dtype=np.float64)
        if prev is not None and prev[0] == r["track"]:
            moves.append(float(np.linalg.norm(lm - prev[1], axis=1).mean()))
        prev = (r["track"], lm)
    return float(np.median(moves)) if moves else None


def aligned_prediction(
    predictor: Any,
    rgb: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray | None,
    antialias: bool = False,
    views: int = 1,
) -> dict[str, Any]:
    """The record ``predictor`` gives the face with these 5 ``landmarks``, aligned as the runtime aligns it for
    the model (``template``, ``antialias``, ``views``: see :func:`expression_under_noise`)."""
    crops = align_views(rgb, landmarks, predictor.input_size, template, antialias, views)
    return predictor.predict(crops, views=views)[0]


def expression_under_noise(
    predictor: Any,
    rgb: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray | None,
    sigmas: Sequence[float],
    draws: int,
    rng: np.random.Generator,
    antialias: bool = False,
    views: int = 1,
    ref: dict[str, Any] | None = None,
) -> dict[float, float]:
    """Per σ (px), the share of ``draws`` alignments of the face with its 5 ``landmarks`` moved by N(0, σ) whose
    expression matches the one without noise (``template``: the model's alignment template, 112-px units;
    ``antialias``: the warp the runtime uses for the model, ``edge_affect.artifact.align_antialias``; ``views``:
    how many views of each alignment the runtime averages, ``edge_affect.artifact.align_views``; ``ref``: the
    record without noise, :func:`aligned_prediction`, when the caller already has it)."""
    size = predictor.input_size
    if ref is None:
        ref = aligned_prediction(predictor, rgb, landmarks, template, antialias, views)
    out = {}
    for s in sigmas:
        crops = [
            align_views(rgb, landmarks + rng.normal(0, s, np.shape(landmarks)), size, template, antialias, views)
            for _ in range(draws)
        ]
        recs = predictor.predict(np.concatenate(crops), views=views)
        out[float(s)] = float(np.mean([r["expression"] == ref["expression"] for r in recs]))
    return out


def face_in_frame(gray: np.ndarray, face_px: float) -> np.ndarray:
    """A square grey face crop (e.g. a 48×48 FER face) upscaled (bicubic) to ``face_px`` and centred in an RGB frame
    twice its size, padded with the crop's mean grey: a face with context, as a detector sees one in a frame, at
    the size the faces of a wide or multi-person shot have (``expression_under_noise`` on many real faces)."""
    import cv2

    side = max(8, round(face_px))
    face = cv2.resize(np.asarray(gray, np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
    frame = np.full((2 * side, 2 * side), int(face.mean()), np.uint8)
    frame[side // 2 : side // 2 + side, side // 2 : side // 2 + side] = face
    return np.repeat(frame[..., None], 3, axis=2)
