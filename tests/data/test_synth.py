"""Synthetic dataset: determinism, ABAW layout, label consistency and a learnability signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.data.abaw import Annotations, load_split
from edge_affect.data.synth import Identity, render_face, sample_labels, synth_dataset, va_from_intensity
from edge_affect.runtime.preprocess import decode_image
from edge_affect.schema import AUS, EXPRESSIONS, MISSING_AU, MISSING_EXPR, MISSING_VA

N_SYNTH, SYNTH_SIZE = 240, 48  # the session fixture synth_root (conftest.py); checked below
AU = {name: i for i, name in enumerate(AUS)}
EX = {name: i for i, name in enumerate(EXPRESSIONS)}


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_split_by_video(synth_root: Path) -> None:
    meta = json.loads((synth_root / "synth.json").read_text())
    assert (meta["n"], meta["size"], meta["seed"], meta["video_len"]) == (N_SYNTH, SYNTH_SIZE, 7, 30)
    tr = load_split(synth_root, "train")  # checks every image exists
    va = load_split(synth_root, "val")
    assert len(tr) + len(va) == N_SYNTH
    assert not set(tr.videos()) & set(va.videos()), "train and val must not share a video"
    assert len(va.videos()) == 2 and len(tr.videos()) == 6  # 8 videos of 30, val_fraction 0.2 -> round(1.6) = 2
    img = decode_image(synth_root / "cropped_aligned" / tr.paths[0])
    assert img.shape == (SYNTH_SIZE, SYNTH_SIZE, 3) and img.dtype == np.uint8
    assert 30 < img.mean() < 225 and img.std() > 10, "a face, not a blank image"
    assert all(p.split("/")[1].endswith(".jpg") and len(p.split("/")[1]) == 9 for p in tr.paths)


def test_missing_fraction_exact(synth_root: Path) -> None:
    tr, va = load_split(synth_root, "train"), load_split(synth_root, "val")
    k = round(0.15 * N_SYNTH)
    assert (~tr.va_mask).sum() + (~va.va_mask).sum() == k
    assert (~tr.expr_mask).sum() + (~va.expr_mask).sum() == k
    assert (~tr.au_mask).sum() + (~va.au_mask).sum() == k
    missing = np.concatenate([tr.va[~tr.va_mask].ravel(), va.va[~va.va_mask].ravel()])
    assert (missing == MISSING_VA).all()
    assert (tr.expr[~tr.expr_mask] == MISSING_EXPR).all() and (tr.au[~tr.au_mask] == MISSING_AU).all()


def test_deterministic_per_seed_and_worker_count(tmp_path: Path, synth_root: Path) -> None:
    a = tmp_path / "a"
    synth_dataset(a, N_SYNTH, seed=7, size=SYNTH_SIZE, video_len=30, workers=2)
    assert _tree_digest(a) == _tree_digest(synth_root), "same seed must give identical files (any worker count)"
    b = tmp_path / "b"
    synth_dataset(b, 40, seed=8, size=SYNTH_SIZE, video_len=30, workers=0)
    c = tmp_path / "c"
    synth_dataset(c, 40, seed=9, size=SYNTH_SIZE, video_len=30, workers=0)
    assert _tree_digest(b) != _tree_digest(c)


def test_label_prototypes_and_va() -> None:
    lab = sample_labels(4000, seed=0)
    expr, au, va = lab["expr"], lab["au"], lab["va"]
    assert np.array_equal(au, (lab["intensity"] > 0.5).astype(np.int8))
    assert va.min() >= -1 and va.max() <= 1

    def rate(e: str, a: str) -> float:
        return float(au[expr == EX[e], AU[a]].mean())

    for e, aus in {
        "Happiness": ("AU6", "AU12"),
        "Surprise": ("AU1", "AU2", "AU25", "AU26"),
        "Sadness": ("AU1", "AU4", "AU15"),
        "Anger": ("AU4", "AU7", "AU23", "AU24"),
        "Disgust": ("AU10",),
        "Fear": ("AU1", "AU2", "AU4", "AU25"),
    }.items():
        for a in aus:
            assert rate(e, a) >= 0.85, (e, a, rate(e, a))
    assert rate("Happiness", "AU15") <= 0.1 and rate("Sadness", "AU12") <= 0.1
    assert au[expr == EX["Neutral"]].mean() <= 0.06
    mean_va = {e: va[expr == EX[e]].mean(0) for e in EXPRESSIONS}
    assert mean_va["Happiness"][0] > 0.4
    assert mean_va["Anger"][0] < -0.4 and mean_va["Anger"][1] > 0.3
    assert mean_va["Sadness"][0] < -0.4 and mean_va["Sadness"][1] < 0.0
    assert mean_va["Surprise"][1] > 0.5
    assert abs(mean_va["Neutral"][0]) < 0.1
    # VA is the documented function of the intensities plus N(0, 0.05) noise (clipped).
    resid = va - va_from_intensity(lab["intensity"])
    assert float(np.abs(resid).max()) < 0.3 and 0.03 < float(resid.std()) < 0.06


def test_geometry_follows_aus() -> None:
    """One AU at a time changes its own face region; the same rng/identity otherwise gives the same image."""
    ident = Identity.sample(0, 3)

    def face(**aus: float) -> np.ndarray:
        x = np.zeros(len(AUS))
        for k, v in aus.items():
            x[AU[k]] = v
        return render_face(x, ident, np.random.default_rng(5), 112).astype(np.float32)

    base = face()
    assert np.array_equal(base, face()), "rendering must be deterministic"
    upper, lower = slice(16, 64), slice(68, 112)  # brows/eyes vs nose/mouth/jaw rows of the 112 px image
    for a in AUS:
        d = np.abs(face(**{a: 1.0}) - base).mean(axis=(1, 2))  # mean change per image row
        region = upper if a in ("AU1", "AU2", "AU4", "AU6", "AU7") else lower
        assert d[region].mean() > 0.5, (a, d[region].mean())
        assert d[region].sum() >= 0.8 * d.sum(), (a, d[region].sum() / d.sum())


def test_validation() -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        synth_dataset("/nonexistent", 10, val_fraction=1.0)
    with pytest.raises(ValueError, match="n=1"):
        synth_dataset("/nonexistent", 1)


def test_pixels_predict_labels(synth_root: Path) -> None:
    """Learnability signal: ridge regression on 24×24 gray pixels predicts AU intensities on held-out videos."""
    import cv2

    lab = sample_labels(N_SYNTH, seed=7)  # the unmasked labels behind synth_root (same seed, same n)
    tr, va = load_split(synth_root, "train"), load_split(synth_root, "val")
    idx = {f"synth_{i // 30:04d}/{i % 30 + 1:05d}.jpg": i for i in range(N_SYNTH)}

    def feats(ann: Annotations) -> tuple[np.ndarray, np.ndarray]:
        x = [
            cv2.resize(decode_image(synth_root / "cropped_aligned" / p), (24, 24), interpolation=cv2.INTER_AREA)
            .mean(2)
            .ravel()
            for p in ann.paths
        ]
        return np.asarray(x, np.float64) / 255.0, lab["intensity"][[idx[p] for p in ann.paths]]

    xtr, ytr = feats(tr)
    xva, yva = feats(va)
    mu = xtr.mean(0)
    xtr, xva = xtr - mu, xva - mu
    w = np.linalg.solve(xtr.T @ xtr + 3.0 * np.eye(xtr.shape[1]), xtr.T @ (ytr - ytr.mean(0)))
    pred = xva @ w + ytr.mean(0)
    r = [np.corrcoef(pred[:, j], yva[:, j])[0, 1] for j in range(len(AUS))]
    assert np.nanmean(r) > 0.3, dict(zip(AUS, np.round(r, 2), strict=True))
