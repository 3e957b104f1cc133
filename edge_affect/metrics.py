"""ABAW multi-task metrics (numpy only, so the runtime and parity checks can use them without torch).

All functions ignore missing labels: VA rows equal to −5, expression −1, AU rows containing −1.
"""

from __future__ import annotations

import numpy as np

from edge_affect.schema import MISSING_AU, MISSING_EXPR, MISSING_VA, NUM_AU, NUM_EXPR


def ccc(pred: np.ndarray, target: np.ndarray) -> float:
    """Concordance correlation 2·cov / (var_p + var_t + (mean_p − mean_t)²), population moments, float64.

    Rows where ``target`` is the missing code (−5) are dropped. Returns 0.0 when undefined (≤1 row or
    both constant and equal means give 0/0).
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"ccc: pred has {p.size} values, target {t.size}")
    keep = t != MISSING_VA
    p, t = p[keep], t[keep]
    if p.size < 2:
        return 0.0
    mp, mt = p.mean(), t.mean()
    cov = np.mean((p - mp) * (t - mt))
    denom = p.var() + t.var() + (mp - mt) ** 2
    return float(2.0 * cov / denom) if denom > 0 else 0.0


def _f1_binary(pred: np.ndarray, target: np.ndarray) -> float:
    tp = np.sum((pred == 1) & (target == 1))
    fp = np.sum((pred == 1) & (target == 0))
    fn = np.sum((pred == 0) & (target == 1))
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def expr_f1(pred_labels: np.ndarray, target: np.ndarray, num_classes: int = NUM_EXPR) -> float:
    """Macro-F1 over all ``num_classes`` classes on rows with target ≠ −1 (a class absent from both
    prediction and target scores 0, as in sklearn's ``zero_division=0`` with fixed ``labels``)."""
    p = np.asarray(pred_labels).astype(np.int64).ravel()
    t = np.asarray(target).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"expr_f1: pred has {p.size} values, target {t.size}")
    keep = t != MISSING_EXPR
    p, t = p[keep], t[keep]
    if t.size == 0:
        return 0.0
    return float(np.mean([_f1_binary((p == c).astype(int), (t == c).astype(int)) for c in range(num_classes)]))


def expr_accuracy(pred_labels: np.ndarray, target: np.ndarray) -> float | None:
    """Top-1 accuracy on rows with a label (target ≥ 0; FER+: the majority vote); None when no row has one."""
    p = np.asarray(pred_labels).astype(np.int64).ravel()
    t = np.asarray(target).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"expr_accuracy: pred has {p.size} values, target {t.size}")
    keep = t >= 0
    return float((p[keep] == t[keep]).mean()) if keep.any() else None


def au_f1_per_au(pred_binary: np.ndarray, target: np.ndarray) -> np.ndarray:
    """F1 of each AU column on the rows where that AU's target ≠ −1."""
    p = np.asarray(pred_binary).astype(np.int64)
    t = np.asarray(target).astype(np.int64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"au_f1: pred shape {p.shape} and target shape {t.shape} must match (N×{NUM_AU})")
    out = np.zeros(p.shape[1])
    for j in range(p.shape[1]):
        keep = t[:, j] != MISSING_AU
        out[j] = _f1_binary(p[keep, j], t[keep, j])
    return out


def au_f1(pred_binary: np.ndarray, target: np.ndarray) -> float:
    """Mean of the per-AU binary F1 scores, ignoring −1 targets."""
    return float(au_f1_per_au(pred_binary, target).mean())


def mtl_score(
    va_pred: np.ndarray,
    va_target: np.ndarray,
    expr_pred: np.ndarray,
    expr_target: np.ndarray,
    au_pred: np.ndarray,
    au_target: np.ndarray,
) -> dict[str, float]:
    """ABAW MTL performance: ``va`` = mean CCC(V, A), ``expr`` = macro-F1, ``au`` = mean F1, ``p`` = sum.

    ``expr_pred`` are class ids (N) and ``au_pred`` binary decisions (N×12).
    """
    va_pred = np.asarray(va_pred, dtype=np.float64)
    va_target = np.asarray(va_target, dtype=np.float64)
    v = ccc(va_pred[:, 0], va_target[:, 0])
    a = ccc(va_pred[:, 1], va_target[:, 1])
    e = expr_f1(expr_pred, expr_target)
    u = au_f1(au_pred, au_target)
    return {"valence": v, "arousal": a, "va": (v + a) / 2, "expr": e, "au": u, "p": (v + a) / 2 + e + u}


def tune_au_thresholds(
    au_prob: np.ndarray, au_target: np.ndarray, grid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-AU decision threshold maximising that AU's F1 on a validation split.

    Returns ``(thresholds[12], f1[12])``; an AU with no labelled positives keeps 0.5.
    """
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else np.asarray(grid)
    prob = np.asarray(au_prob, dtype=np.float64)
    t = np.asarray(au_target).astype(np.int64)
    th = np.full(prob.shape[1], 0.5)
    best = np.zeros(prob.shape[1])
    for j in range(prob.shape[1]):
        keep = t[:, j] != MISSING_AU
        if not np.any(t[keep, j] == 1):
            best[j] = _f1_binary((prob[keep, j] >= 0.5).astype(int), t[keep, j])
            continue
        scores = [_f1_binary((prob[keep, j] >= g).astype(int), t[keep, j]) for g in grid]
        k = int(np.argmax(scores))
        th[j], best[j] = float(grid[k]), scores[k]
    return th, best
