"""Masked per-task losses and the uncertainty weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_affect.config import LossConfig
from edge_affect.losses import MultiTaskLoss, masked_ccc
from edge_affect.metrics import ccc


def _batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = {
        "va": torch.tanh(torch.randn(n, 2, generator=g)),
        "expr": torch.randn(n, 8, generator=g),
        "au": torch.randn(n, 12, generator=g),
    }
    batch = {
        "va": torch.rand(n, 2, generator=g) * 2 - 1,
        "expr": torch.randint(0, 8, (n,), generator=g),
        "au": torch.randint(0, 2, (n, 12), generator=g).float(),
    }
    return out, batch


def test_masked_ccc_equals_numpy_ccc_on_labelled_rows() -> None:
    p, t = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    mask = torch.arange(50) % 3 != 0
    assert float(masked_ccc(p, t, mask, eps=0)) == pytest.approx(ccc(p[mask].numpy(), t[mask].numpy()), abs=1e-9)
    assert float(masked_ccc(p, t, torch.zeros(50, dtype=torch.bool))) == 0.0


def test_missing_labels_do_not_contribute() -> None:
    out, batch = _batch()
    loss = MultiTaskLoss()
    base = loss.task_losses(out, batch)
    # Corrupt predictions only on rows whose labels we mark missing: losses must not move.
    out2 = {k: v.clone() for k, v in out.items()}
    b2 = {k: v.clone() for k, v in batch.items()}
    b2["va"][:4], b2["expr"][:4], b2["au"][:4] = -5.0, -1, -1.0
    out2["va"][:4], out2["expr"][:4], out2["au"][:4] = -0.9, 50.0, -50.0
    sub = {k: v[4:] for k, v in out.items()}
    ref = loss.task_losses(sub, {k: v[4:] for k, v in batch.items()})
    got = loss.task_losses(out2, b2)
    for t in ("va", "expr", "au"):
        assert float(got[t]) == pytest.approx(float(ref[t]), abs=1e-6), t
    assert float(base["expr"]) > 0


def test_sample_missing_one_task_still_trains_the_others() -> None:
    out, batch = _batch()
    for v in out.values():
        v.requires_grad_(True)
    batch["expr"][:] = -1  # no expression labels at all
    total, losses, _ = MultiTaskLoss()(out, batch)
    total.backward()
    assert float(losses["expr"].detach()) == 0.0
    assert out["expr"].grad.abs().sum() == 0
    assert out["au"].grad.abs().sum() > 0 and out["va"].grad.abs().sum() > 0


def test_uncertainty_formula_and_fixed_ablation() -> None:
    out, batch = _batch()
    mt = MultiTaskLoss()
    with torch.no_grad():
        mt.log_vars.copy_(torch.tensor([0.5, -0.2, 1.0]))
    total, losses, weights = mt(out, batch)
    s = [0.5, -0.2, 1.0]
    expect = sum(np.exp(-si) * float(losses[t]) + si for si, t in zip(s, ("va", "expr", "au"), strict=True))
    assert float(total.detach()) == pytest.approx(expect, rel=1e-5)
    assert weights["expr"] == pytest.approx(np.exp(0.2), rel=1e-6)
    fixed = MultiTaskLoss(LossConfig(weighting="fixed", fixed_weights={"va": 2.0, "expr": 1.0, "au": 0.5}))
    total_f, lf, wf = fixed(out, batch)
    assert float(total_f) == pytest.approx(2 * float(lf["va"]) + float(lf["expr"]) + 0.5 * float(lf["au"]), rel=1e-6)
    assert not fixed.log_vars.requires_grad and wf == {"va": 2.0, "expr": 1.0, "au": 0.5}


def test_optional_terms_change_the_loss() -> None:
    out, batch = _batch()
    plain = MultiTaskLoss().task_losses(out, batch)
    opts = MultiTaskLoss(LossConfig(va_mse=1.0, expr_class_weights=[1, 1, 5, 1, 1, 1, 1, 1], au_pos_weight=[3.0] * 12))
    got = opts.task_losses(out, batch)
    mse = float(((out["va"] - batch["va"]) ** 2).mean())
    assert float(got["va"]) == pytest.approx(float(plain["va"]) + mse, rel=1e-5)
    assert float(got["au"]) > float(plain["au"])
    with pytest.raises(ValueError, match="weighting"):
        LossConfig(weighting="magic")
