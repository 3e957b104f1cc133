"""Distillation in stages (issue 19 item 2): a teacher's predictions as a file with provenance, a dataset whose
soft targets mix them with the votes, and a student trained on it; refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.config import TrainConfig
from edge_affect.data.abaw import load_split
from edge_affect.train.distill import mix_dataset, read_teacher, teacher_predictions
from edge_affect.train.loop import train


@pytest.fixture(scope="module")
def ferlike(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FER+-shaped dataset (48-px faces, vote distributions, weak targets) imported through the CLI path."""
    from edge_affect.data.fer import import_face_set

    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("fer")

    def npz(name: str, n: int) -> Path:
        votes = rng.multinomial(10, [0.5, 0.1, 0.02, 0.05, 0.2, 0.05, 0.05, 0.03, 0, 0], size=n)
        images = rng.integers(0, 255, (n, 48, 48), dtype=np.uint8)
        for k, v in enumerate(votes):  # a faint class cue so a model can learn something
            images[k, 20:28, 8 + 3 * int(np.argmax(v[:8])) :][:, :4] = 250
        path = d / f"{name}.npz"
        np.savez(path, images=images, votes=votes, ids=np.array([f"f{k}" for k in range(n)]))
        return path

    root = d / "ds"
    import_face_set(npz("train", 192), npz("valid", 64), root, weak=True)
    return root


@pytest.fixture(scope="module")
def teacher(ferlike: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("teacher")
    cfg = TrainConfig(model="tiny", epochs=1, batch_size=32, max_steps_per_epoch=4, seed=1, select_on="expr_acc")
    best = train(cfg, ferlike, run / "run", progress=False)
    out = run / "teacher.npz"
    return out, teacher_predictions(best, ferlike, out, batch=64)


def test_teacher_file_and_provenance(ferlike: Path, teacher: tuple[Path, dict]) -> None:
    path, info = teacher
    prov = json.loads(path.with_suffix(".json").read_text())
    assert prov == info and prov["faces"] == 192 and prov["model"] == "tiny"
    assert len(prov["checkpoint_sha256"]) == 64 and len(prov["data_sha256"]) == 64
    assert 0 <= prov["val_accuracy"] <= 1 and 0 <= prov["val_accuracy_flip_averaged"] <= 1
    with np.load(path) as z:
        assert z["expr"].dtype == np.float16 and z["expr"].shape == z["expr_mirror"].shape == (192, 8)
        np.testing.assert_allclose(z["expr"].astype(np.float32).sum(1), 1.0, atol=2e-2)
        assert not np.array_equal(z["expr"], z["expr_mirror"]), "mirror images are predicted on their own"
    ann = load_split(ferlike, "train")
    got = read_teacher(path, ann.paths[::-1])  # any order of the dataset's paths
    with np.load(path) as z:
        mean = (z["expr"].astype(np.float32) + z["expr_mirror"].astype(np.float32))[::-1] / 2
    np.testing.assert_allclose(got, mean / mean.sum(1, keepdims=True), atol=1e-6)


def test_mixed_dataset_targets_and_student(ferlike: Path, teacher: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = teacher
    out = tmp_path / "kd"
    info = mix_dataset(ferlike, [path], 0.5, out)
    src, mixed = load_split(ferlike, "train"), load_split(out, "train")
    t = read_teacher(path, src.paths)
    np.testing.assert_allclose(mixed.expr_soft, 0.5 * src.expr_soft + 0.5 * t, atol=1e-5)
    assert np.array_equal(mixed.expr, mixed.expr_soft.argmax(1)), "a training label is its distribution's top class"
    assert not np.allclose(mixed.va, src.va), "weak VA follows the mixed distribution"
    assert (out / "cropped_aligned").is_symlink() and info["weight"] == 0.5
    val_src, val_new = load_split(ferlike, "val"), load_split(out, "val")
    np.testing.assert_array_equal(val_src.expr_soft, val_new.expr_soft)
    cfg = TrainConfig(model="tiny", epochs=1, batch_size=32, max_steps_per_epoch=2, seed=2)
    assert train(cfg, out, tmp_path / "student", progress=False).is_file()


def test_refusals(ferlike: Path, teacher: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = teacher
    with pytest.raises(ValueError, match=r"weight 1.5: expected a value in \[0, 1\]"):
        mix_dataset(ferlike, [path], 1.5, tmp_path / "a")
    with pytest.raises(ValueError, match="inside the source dataset"):
        mix_dataset(ferlike, [path], 0.5, ferlike / "kd")
    bogus = tmp_path / "b.npz"
    np.savez(bogus, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a teacher file"):
        mix_dataset(ferlike, [bogus], 0.5, tmp_path / "c")
    with pytest.raises(ValueError, match="no prediction for 1 faces"):
        read_teacher(path, [*load_split(ferlike, "train").paths, "elsewhere/x.png"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_consistency_term_trains_and_is_recorded(ferlike: Path, tmp_path: Path) -> None:
    """``consistency`` > 0: each face is seen twice (the second re-aligned from noisy landmarks), the KL between
    the two expression distributions joins the loss and is written per epoch; without landmark noise it is
    refused in one line."""
    import torch

    from edge_affect.config import AugmentParams
    from edge_affect.losses import consistency_kl

    z = torch.randn(4, 8)
    assert float(consistency_kl(z, z)) == pytest.approx(0.0, abs=1e-7) and float(consistency_kl(z, -z)) > 0
    params = AugmentParams(landmark_jitter=0.015)
    cfg = TrainConfig(
        model="tiny", epochs=1, batch_size=32, max_steps_per_epoch=2, seed=4, consistency=1.0, augment_params=params
    )
    train(cfg, ferlike, tmp_path / "run", progress=False)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["train_consistency"] > 0 and np.isfinite(rec["train_total"])
    with pytest.raises(ValueError, match="consistency 1.0 needs augment = true and augment_params.landmark_jitter"):
        TrainConfig(model="tiny", consistency=1.0)
    # pixel noise alone also makes the two views differ (sensor noise, issue 22)
    cfg = TrainConfig(
        model="tiny",
        epochs=1,
        batch_size=32,
        max_steps_per_epoch=2,
        seed=4,
        consistency=1.0,
        augment_params=AugmentParams(noise=0.03),
    )
    train(cfg, ferlike, tmp_path / "run-noise", progress=False)
    rec = json.loads((tmp_path / "run-noise" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["train_consistency"] > 0 and np.isfinite(rec["train_total"])
