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
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        import_face_set(tr, va, tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "test.npz", "train.npz"]  # no temp folder left


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
    # a failure in the second split leaves nothing behind (no half-written dataset, no temp folder)
    good = _npz(tmp_path / "good.npz", 7, 0)
    with pytest.raises(ValueError, match="label 9"):
        import_face_set(good, tmp_path / "badlabel.npz", tmp_path / "o4")
    assert not (tmp_path / "o4").exists() and not list(tmp_path.glob(".o4.*"))
    np.savez(tmp_path / "badid.npz", images=np.zeros((1, 8, 8), np.uint8), labels=np.array([0]), ids=np.array(["a/b"]))
    with pytest.raises(ValueError, match="id 'a/b' is not"):
        import_face_set(tmp_path / "badid.npz", good, tmp_path / "o5")


def _ferplus_npz(path: Path) -> Path:
    """Six faces with FER+ vote columns (neutral, happiness, surprise, sadness, anger, disgust, fear,
    contempt, unknown, NF)."""
    votes = np.array(
        [
            [6, 4, 0, 0, 0, 0, 0, 0, 0, 0],  # Neutral 0.6 / Happiness 0.4
            [0, 0, 0, 0, 2, 5, 0, 3, 0, 0],  # Disgust majority, contempt → Other
            [0, 0, 0, 0, 0, 0, 0, 0, 7, 3],  # unknown majority: left out
            [5, 0, 0, 0, 0, 0, 0, 5, 0, 0],  # tie neutral/contempt → neutral (FER+ column order)
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 9],  # not a face: left out
            [0, 0, 3, 0, 0, 0, 6, 0, 1, 0],  # Fear 6/9, Surprise 3/9 (the unknown vote is dropped)
        ],
        dtype=np.uint8,
    )
    rng = np.random.default_rng(0)
    np.savez(
        path,
        images=rng.integers(0, 256, (6, 48, 48), dtype=np.uint8),
        votes=votes,
        ids=np.array([f"fer{k:07d}" for k in range(6)]),
    )
    return path


def test_ferplus_votes_become_soft_targets_through_reader_and_cache(tmp_path: Path) -> None:
    from edge_affect.data.cache import build_cache
    from edge_affect.schema import Preprocess

    src = _ferplus_npz(tmp_path / "fp.npz")
    s = import_face_set(src, src, tmp_path / "ds", weak=True)
    assert s["splits"]["train"]["rows"] == 4 and s["splits"]["train"]["dropped_unknown_or_nf"] == 2
    ann = load_split(tmp_path / "ds", "train")
    assert ann.expr.tolist() == [0, 2, 0, 3]  # majority labels in ABAW order
    expected = np.zeros((4, 8))
    expected[0, [0, 4]] = [0.6, 0.4]
    expected[1, [1, 2, 7]] = [0.2, 0.5, 0.3]
    expected[2, [0, 7]] = [0.5, 0.5]
    expected[3, [3, 6]] = [6 / 9, 3 / 9]
    np.testing.assert_allclose(ann.expr_soft, expected, atol=1e-6)
    # weak VA is the expectation over the class prototypes: a 0.6/0.4 Neutral/Happiness face lies between
    _, va_n = weak_targets(np.array([0]))
    _, va_h = weak_targets(np.array([4]))
    np.testing.assert_allclose(ann.va[0], 0.6 * va_n[0] + 0.4 * va_h[0], atol=1e-5)
    cache = build_cache(
        ann, tmp_path / "ds" / "cropped_aligned", Preprocess(input_size=48, color="gray"), tmp_path / "c"
    )
    np.testing.assert_allclose(cache.expr_soft, expected, atol=1e-6)


def test_soft_sidecar_errors_name_file_and_line(tmp_path: Path) -> None:
    src = _ferplus_npz(tmp_path / "fp.npz")
    import_face_set(src, src, tmp_path / "ds")
    side = tmp_path / "ds" / "training_set_annotations.expr_soft.txt"
    lines = side.read_text().splitlines()
    side.write_text("\n".join([lines[0], lines[1].replace("0.600000", "0.700000"), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"expr_soft.txt:2: .* summing to 1"):
        load_split(tmp_path / "ds", "train")
    swapped = lines[2].split(",")
    swapped[1:] = ["0", "0", "0", "0", "1", "0", "0", "0"]  # most likely Happiness, hard label Disgust
    side.write_text("\n".join([lines[0], lines[1], ",".join(swapped), *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match=r"expr_soft.txt:3: most likely class Happiness .* Disgust"):
        load_split(tmp_path / "ds", "train")


def test_ferplus_majority_is_the_one_votes_to_label_helper(tmp_path: Path) -> None:
    """The loader every FER+ reader shares (demo, parity, benchmarks, import): unknown/NF-majority faces are
    dropped and counted, the rest get their ABAW majority class; bad files are one-line errors."""
    from edge_affect.data.fer import ferplus_labels, ferplus_majority

    votes = np.zeros((4, 10), np.uint8)
    votes[0, 1] = 10  # happiness → 4
    votes[1, 8] = 10  # unknown: dropped
    votes[2, 7], votes[2, 0] = 6, 4  # contempt → Other (7)
    votes[3, 3], votes[3, 4] = 5, 5  # sadness/anger tie: the first FER+ column wins → Sadness (5)
    images = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((4, 48, 48), np.uint8)
    np.savez(tmp_path / "fp.npz", images=images, votes=votes)
    imgs, labels, dropped = ferplus_majority(tmp_path / "fp.npz")
    assert labels.tolist() == [4, 7, 5] and dropped == 1 and imgs[:, 0, 0].tolist() == [0, 2, 3]
    assert ferplus_labels(votes)[1].tolist() == [4, -1, 7, 5]  # every row, -1 where dropped
    np.savez(tmp_path / "lab.npz", images=images, labels=np.zeros(4, np.int8))
    with pytest.raises(ValueError, match=r"--ferplus x: expected arrays 'images' and 'votes'"):
        ferplus_majority(tmp_path / "lab.npz", where="--ferplus x")
    with pytest.raises(FileNotFoundError, match="no such file"):
        ferplus_majority(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        ferplus_majority(tmp_path / "junk.npz")


def test_hold_out_draws_the_validation_split_from_the_training_set(tmp_path: Path) -> None:
    """``--hold-out N``: N training faces (seeded) become the validation split and leave the training split."""
    from edge_affect.cli import main

    tr = _npz(tmp_path / "train.npz", 30, 0)
    s = import_face_set(tr, None, tmp_path / "ds", hold_out=8, hold_out_seed=3)
    assert s["splits"]["train"]["rows"] == 22 and s["splits"]["val"]["rows"] == 8
    assert s["splits"]["val"]["hold_out"] == {"faces": 8, "seed": 3, "split": "held out"}
    train, val = load_split(tmp_path / "ds", "train"), load_split(tmp_path / "ds", "val")
    from edge_affect.runtime.preprocess import decode_image

    with np.load(tr) as z:
        pixels = {z["images"][k].tobytes() for k in range(30)}
    faces = lambda root, ann: {  # noqa: E731
        decode_image(root / "cropped_aligned" / p)[:, :, 0].tobytes() for p in ann.paths
    }
    held = faces(tmp_path / "ds", val)
    assert faces(tmp_path / "ds", train) | held == pixels and not faces(tmp_path / "ds", train) & held
    # the same seed draws the same faces; another seed others
    import_face_set(tr, None, tmp_path / "ds2", hold_out=8, hold_out_seed=3)
    assert faces(tmp_path / "ds2", load_split(tmp_path / "ds2", "val")) == held
    import_face_set(tr, None, tmp_path / "ds3", hold_out=8, hold_out_seed=4)
    assert faces(tmp_path / "ds3", load_split(tmp_path / "ds3", "val")) != held
    with pytest.raises(ValueError, match=r"--hold-out 30 must be between 1 and 29 \(the set has 30 faces\)"):
        import_face_set(tr, None, tmp_path / "o1", hold_out=30)
    with pytest.raises(ValueError, match="one of the two"):
        import_face_set(tr, tr, tmp_path / "o2", hold_out=3)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert main(["data", "import", str(tmp_path / "cli"), "--train", str(tr), "--hold-out", "5"]) == 0
    assert load_split(tmp_path / "cli", "val").expr.shape == (5,)
