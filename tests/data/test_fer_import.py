"""Importing an expression-labelled .npz face set (FER2013 layout) into the ABAW dataset layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_affect.data.abaw import load_split
from edge_affect.data.fer import import_face_set, weak_targets
from edge_affect.schema import AUS, EXPRESSIONS


def _npz(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    np.savez(
        path,
        images=rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
        labels=labels.astype(np.int8),
        ids=np.array([f"Training_{k // 2}" for k in range(n)]),
    )  # ids repeat, as in FER2013
    return path


def test_import_writes_a_readable_abaw_root(tmp_path: Path) -> None:
    tr, va = _npz(tmp_path / "train.npz", 21, 0), _npz(tmp_path / "test.npz", 14, 1)
    s = import_face_set(tr, va, tmp_path / "ds")
    assert s["splits"]["train"]["rows"] == 21 and s["splits"]["val"]["class_counts"] == [2] * 7 + [0]
    ann = load_split(tmp_path / "ds", "train")
    assert ann.n_expr == 21 and ann.n_va == 0 and ann.n_au == 0  # only expressions are labelled
    from edge_affect.runtime.preprocess import decode_image

    img = decode_image(tmp_path / "ds" / "cropped_aligned" / ann.paths[3])
    with np.load(tr) as z:
        np.testing.assert_array_equal(img[:, :, 0], z["images"][3])  # lossless PNG
    with pytest.raises(ValueError, match="already holds a dataset"):
        import_face_set(tr, va, tmp_path / "ds")


def test_weak_targets_follow_the_prototypes(tmp_path: Path) -> None:
    au, va = weak_targets(np.array([0, 4, 5, 6]))
    on = {EXPRESSIONS[e]: [AUS[j] for j in np.flatnonzero(au[i])] for i, e in enumerate([0, 4, 5, 6])}
    assert on == {
        "Neutral": [],
        "Happiness": ["AU6", "AU12"],
        "Sadness": ["AU1", "AU4", "AU15"],
        "Surprise": ["AU1", "AU2", "AU25", "AU26"],
    }
    assert va[1, 0] > 0.5 and va[2, 0] < -0.3 and va[3, 1] > 0.5  # happy +V, sad −V, surprise +A
    tr, vl = _npz(tmp_path / "a.npz", 14, 0), _npz(tmp_path / "b.npz", 7, 1)
    import_face_set(tr, vl, tmp_path / "w", weak=True)
    ann = load_split(tmp_path / "w", "val")
    assert ann.n_va == 7 and ann.n_au == 7


def test_bad_sets_are_clear_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="lacks array 'labels'"):
        import_face_set(tmp_path / "nolabels.npz", tmp_path / "nolabels.npz", tmp_path / "o1")
    np.savez(tmp_path / "badlabel.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 9]))
    with pytest.raises(ValueError, match="label 9 at index 1 is outside 0..7"):
        import_face_set(tmp_path / "badlabel.npz", tmp_path / "badlabel.npz", tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        import_face_set(tmp_path / "missing.npz", tmp_path / "missing.npz", tmp_path / "o3")
