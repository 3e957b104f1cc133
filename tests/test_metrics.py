"""Metrics against sklearn and a float64 reference CCC, with missing labels ignored."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from edge_affect.metrics import au_f1, ccc, expr_f1, mtl_score, tune_au_thresholds


def _ccc64(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_ccc_matches_float64_reference_and_ignores_missing() -> None:
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, 500)
    p = 0.7 * t + 0.1 + rng.normal(0, 0.2, 500)
    assert ccc(p, t) == pytest.approx(_ccc64(p, t), abs=1e-12)
    t_missing = t.copy()
    t_missing[:50] = -5
    assert ccc(p, t_missing) == pytest.approx(_ccc64(p[50:], t[50:]), abs=1e-12)
    assert ccc(t, t) == pytest.approx(1.0, abs=1e-12)
    tc = t - t.mean()
    assert ccc(-tc, tc) == pytest.approx(-1.0, abs=1e-12)  # mean-centred: perfect discordance
    assert ccc(np.float32(t), t) == pytest.approx(1.0, abs=1e-6)


def test_expr_f1_matches_sklearn_macro_over_8_classes() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(-1, 8, 1000)
    p = np.where(rng.random(1000) < 0.6, t.clip(0), rng.integers(0, 8, 1000))
    keep = t != -1
    ref = f1_score(t[keep], p[keep], labels=list(range(8)), average="macro", zero_division=0)
    assert expr_f1(p, t) == pytest.approx(ref, abs=1e-12)


def test_au_f1_matches_sklearn_per_column_with_missing_rows() -> None:
    rng = np.random.default_rng(2)
    t = rng.integers(0, 2, (400, 12))
    t[rng.random(400) < 0.2] = -1
    p = np.where(rng.random((400, 12)) < 0.7, t.clip(0), 1 - t.clip(0))
    keep = t[:, 0] != -1
    ref = np.mean([f1_score(t[keep, j], p[keep, j], zero_division=0) for j in range(12)])
    assert au_f1(p, t) == pytest.approx(ref, abs=1e-12)


def test_mtl_score_is_sum_and_perfect_prediction_scores_3() -> None:
    rng = np.random.default_rng(3)
    va = rng.uniform(-1, 1, (200, 2))
    ex = np.tile(np.arange(8), 25)
    au = rng.integers(0, 2, (200, 12))
    s = mtl_score(va, va, ex, ex, au, au)
    assert s["p"] == pytest.approx(3.0, abs=1e-9)
    s2 = mtl_score(va * 0.5, va, (ex + 1) % 8, ex, 1 - au, au)
    assert s2["p"] == pytest.approx(s2["va"] + s2["expr"] + s2["au"], abs=1e-12)
    assert s2["expr"] == 0.0 and s2["au"] == 0.0


def test_threshold_tuning_finds_the_separating_threshold() -> None:
    rng = np.random.default_rng(4)
    t = rng.integers(0, 2, (300, 12))
    prob = np.where(t == 1, rng.uniform(0.25, 0.35, t.shape), rng.uniform(0.0, 0.15, t.shape))
    th, f1 = tune_au_thresholds(prob, t)
    assert np.all((th >= 0.15) & (th <= 0.25))  # any grid point in the gap separates perfectly
    assert f1 == pytest.approx(np.ones(12))
    assert au_f1((prob >= th).astype(int), t) == pytest.approx(1.0)
    assert au_f1((prob >= 0.5).astype(int), t) == 0.0
