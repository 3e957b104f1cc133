"""End-to-end learnability of the synthetic data: synth → cache → PackedLoader → tiny CNN (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the train extra)")

from edge_affect.data import PackedLoader, build_cache, load_split, synth_dataset, to_input  # noqa: E402
from edge_affect.schema import Preprocess  # noqa: E402


@pytest.mark.slow
def test_tiny_cnn_learns_synthetic_faces(tmp_path: Path) -> None:
    """~40 s on 2 cores: 150 steps of a 4-conv net reach far above chance on held-out videos."""
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(0)
    size = 48
    synth_dataset(tmp_path / "ds", 1500, seed=0, size=size, workers=0)
    pp = Preprocess(input_size=size)
    images = tmp_path / "ds" / "cropped_aligned"
    tr = build_cache(load_split(tmp_path / "ds", "train"), images, pp, tmp_path / "ctr", workers=0)
    va = build_cache(load_split(tmp_path / "ds", "val"), images, pp, tmp_path / "cva", workers=0)

    def block(i: int, o: int) -> torch.nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU())

    net = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.Flatten(), nn.Linear(64 * 9, 22))
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    loader = PackedLoader(tr, 64, seed=0)
    for epoch in range(8):
        loader.set_epoch(epoch)
        net.train()
        for b in loader:
            out = net(to_input(b["image"], pp))
            vm, em, am = b["va"][:, 0] != -5, b["expr"] >= 0, b["au"][:, 0] >= 0
            loss = (
                F.mse_loss(out[vm, :2].tanh(), b["va"][vm])
                + F.cross_entropy(out[em, 2:10], b["expr"][em])
                + F.binary_cross_entropy_with_logits(out[am, 10:], b["au"][am])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        out = net(to_input(torch.from_numpy(np.array(va.images)), pp)).numpy()
    em = va.expr >= 0
    acc = float((out[em, 2:10].argmax(1) == va.expr[em]).mean())
    am = va.au[:, 0] >= 0
    pred, true = out[am, 10:] > 0, va.au[am] == 1
    f1 = float(
        np.mean([2 * (pred[:, j] & true[:, j]).sum() / max(1, pred[:, j].sum() + true[:, j].sum()) for j in range(12)])
    )
    vm = va.va[:, 0] != -5
    pv, tv = np.tanh(out[vm, :2]), va.va[vm]
    ccc = [
        2
        * np.cov(pv[:, j], tv[:, j], bias=True)[0, 1]
        / (pv[:, j].var() + tv[:, j].var() + (pv[:, j].mean() - tv[:, j].mean()) ** 2)
        for j in range(2)
    ]
    # Chance: expression accuracy ~0.16, AU F1 ~0.3 at best for constant guesses, CCC 0. Measured: 0.60 / 0.65 / 0.78, 0.69.
    assert acc > 0.4, acc
    assert f1 > 0.45, f1
    assert ccc[0] > 0.5 and ccc[1] > 0.4, ccc
