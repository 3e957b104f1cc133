"""ABAW annotation reader: good files, every kind of bad row, skip_bad, masking, variants, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_affect.data.abaw import (
    PER_FRAME_COLUMNS,
    Annotations,
    load_split,
    read_annotations,
    write_annotations,
)
from edge_affect.schema import MISSING_AU, MISSING_EXPR, MISSING_VA, NUM_AU

HEADER = ",".join(PER_FRAME_COLUMNS)
AU0 = ",".join(["0"] * NUM_AU)
GOOD_ROWS = [
    "v1/00001.jpg,0.25,-0.5,4,1,0,0,1,0,0,1,0,0,0,1,0",
    "v1/00002.jpg,-5,-5,-1,0,0,0,0,0,0,0,0,0,0,0,0",  # VA and expression missing
    "v1/00003.jpg,1,-1,0,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1",  # AUs missing
    "v2/00001.jpg,0.0,0.0,7,0,1,-1,0,0,0,0,0,0,0,0,0",  # one AU -1: the whole AU row is masked
]


def write(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "ann.txt") -> Path:
    p = tmp_path / name
    p.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return p


def test_good_file(tmp_path: Path) -> None:
    ann = read_annotations(write(tmp_path, GOOD_ROWS))
    assert len(ann) == 4 and ann.paths[0] == "v1/00001.jpg" and ann.variant == "per_frame"
    assert ann.va.dtype == np.float32 and ann.va.shape == (4, 2)
    assert ann.expr.dtype == np.int64 and ann.au.dtype == np.int8 and ann.au.shape == (4, NUM_AU)
    np.testing.assert_allclose(ann.va[0], [0.25, -0.5], atol=1e-7)
    np.testing.assert_array_equal(ann.expr, [4, MISSING_EXPR, 0, 7])
    np.testing.assert_array_equal(ann.au[0], [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(ann.lines, [2, 3, 4, 5])
    assert ann.bad_rows == []


def test_missing_label_masking(tmp_path: Path) -> None:
    ann = read_annotations(write(tmp_path, GOOD_ROWS))
    np.testing.assert_array_equal(ann.va_mask, [True, False, True, True])
    np.testing.assert_array_equal(ann.va[1], [MISSING_VA, MISSING_VA])
    np.testing.assert_array_equal(ann.expr_mask, [True, False, True, True])
    np.testing.assert_array_equal(ann.au_mask, [True, True, False, False])
    assert (ann.au[3] == MISSING_AU).all(), "a partial -1 AU row must be masked entirely"
    assert ann.counts() == {"rows": 4, "va": 3, "expr": 3, "au": 2, "bad_rows": 0}
    assert ann.expr_counts()["Happiness"] == 1 and sum(ann.expr_counts().values()) == 3
    rates = ann.au_positive_rates()
    assert rates["AU1"] == pytest.approx(0.5) and rates["AU2"] == pytest.approx(0.0)


BAD_ROWS = [
    ("v1/9.jpg,0.1,0.1,4," + ",".join(["0"] * 11), "15 columns, expected 16"),
    ("v1/9.jpg,abc,0.1,4," + AU0, "valence 'abc' is not a number"),
    ("v1/9.jpg,0.1,nan,4," + AU0, "arousal 'nan' is not finite"),
    ("v1/9.jpg,1.5,0.1,4," + AU0, "valence 1.5 out of range, expected a value in [-1, 1]"),
    ("v1/9.jpg,0.2,-1.01,4," + AU0, "arousal -1.01 out of range"),
    ("v1/9.jpg,-5,0.3,4," + AU0, "valence -5 and arousal 0.3, expected both -5"),
    ("v1/9.jpg,0.1,0.1,8," + AU0, "expression 8 out of range, expected -1 (missing) or 0..7"),
    ("v1/9.jpg,0.1,0.1,-2," + AU0, "expression -2 out of range"),
    ("v1/9.jpg,0.1,0.1,2.5," + AU0, "expression '2.5' is not an integer"),
    ("v1/9.jpg,0.1,0.1,2,2," + ",".join(["0"] * 11), "AU1 2, expected -1 (missing), 0 or 1"),
    ("v1/9.jpg,0.1,0.1,2,0,0,0,0,0,0,0,0,0,0,0,x", "AU26 'x', expected -1, 0 or 1"),
    ("v1/9.jpg,0.1,0.1,2,0,0,0,0,0,0,0,0,0,0,0,0.5", "AU26 '0.5', expected -1, 0 or 1"),
    (",0.1,0.1,2," + AU0, "empty image path"),
    ("/abs/9.jpg,0.1,0.1,2," + AU0, "leaves the image folder"),
    ("v1/00001.jpg,0.1,0.1,2," + AU0, "image 'v1/00001.jpg' repeats line 2"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS, ids=[m.split(",")[0][:30] for _, m in BAD_ROWS])
def test_bad_row_names_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    p = write(tmp_path, [GOOD_ROWS[0], row, GOOD_ROWS[1]])
    with pytest.raises(ValueError) as err:
        read_annotations(p)
    text = str(err.value)
    assert text.startswith(f"{p}:3: "), text
    assert message in text


@pytest.mark.parametrize("row,message", BAD_ROWS[:3])
def test_skip_bad_counts_rows(tmp_path: Path, row: str, message: str) -> None:
    rows = [GOOD_ROWS[0], row, GOOD_ROWS[1], row.replace("v1/9", "v1/10"), GOOD_ROWS[2]]
    ann = read_annotations(write(tmp_path, rows), skip_bad=True)
    assert len(ann) == 3
    assert [line for line, _ in ann.bad_rows] == [3, 5]
    assert message in ann.bad_rows[0][1]
    np.testing.assert_array_equal(ann.lines, [2, 4, 6])
    assert ann.counts()["bad_rows"] == 2


def test_wrong_header_always_raises(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD_ROWS, header="image,valence,arousal,expr," + ",".join(f"AU{i}" for i in range(12)))
    for skip in (False, True):
        with pytest.raises(ValueError, match=rf"^{p}:1: header .* expected 'image,valence"):
            read_annotations(p, skip_bad=skip)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r":1: empty file"):
        read_annotations(empty)


def test_missing_image_when_checked(tmp_path: Path) -> None:
    images = tmp_path / "img"
    (images / "v1").mkdir(parents=True)
    (images / "v1" / "00001.jpg").write_bytes(b"x")
    p = write(tmp_path, GOOD_ROWS[:2])
    with pytest.raises(ValueError, match=rf"^{p}:3: image 'v1/00002.jpg' not found in {images}"):
        read_annotations(p, images_root=images, check_images=True)
    ann = read_annotations(p, images_root=images, check_images=True, skip_bad=True)
    assert ann.paths == ["v1/00001.jpg"] and ann.bad_rows[0][0] == 3
    assert len(read_annotations(p, images_root=images, check_images=False)) == 2


def test_submission_style_variant(tmp_path: Path) -> None:
    rows = [
        "v1/00001.jpg,0.25,-0.5,4,1 0 0 1 0 0 1 0 0 0 1 0",
        "v1/00002.jpg,-5,-5,-1,-1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1",
    ]
    ann = read_annotations(write(tmp_path, rows, header="image,valence,arousal,expression,aus"))
    assert ann.variant == "submission"
    np.testing.assert_array_equal(ann.au[0], [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0])
    assert not ann.au_mask[1] and not ann.va_mask[1]
    bad = write(tmp_path, ["v1/00001.jpg,0.1,0.1,4,1 0 0"], header="image,valence,arousal,expression,aus", name="b.txt")
    with pytest.raises(ValueError, match=r":2: 3 AU values, expected 12"):
        read_annotations(bad)


def test_abaw3_file_names_and_header_whitespace(tmp_path: Path) -> None:
    """ABAW3 MTL files: same per-frame columns, named train_set.txt / validation_set.txt."""
    header = " " + HEADER.replace(",", ", ").replace("image", "Image") + "\r"
    write(tmp_path, GOOD_ROWS[:2], header=header, name="train_set.txt")
    write(tmp_path, GOOD_ROWS[2:], header=HEADER, name="validation_set.txt")
    tr = load_split(tmp_path, "train", check_images=False)
    va = load_split(tmp_path, "val", check_images=False)
    assert tr.source.name == "train_set.txt" and len(tr) == 2 and len(va) == 2


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset root .* does not exist"):
        load_split(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no train annotation file in .*training_set_annotations.txt"):
        load_split(tmp_path)
    write(tmp_path, GOOD_ROWS, name="training_set_annotations.txt")
    with pytest.raises(FileNotFoundError, match="image folder .*cropped_aligned does not exist .*images="):
        load_split(tmp_path)
    with pytest.raises(ValueError, match="split 'test'"):
        load_split(tmp_path, "test")
    other = tmp_path / "faces"
    for p in ("v1/00001.jpg", "v1/00002.jpg", "v1/00003.jpg", "v2/00001.jpg"):
        (other / p).parent.mkdir(parents=True, exist_ok=True)
        (other / p).write_bytes(b"x")
    ann = load_split(tmp_path, "train", images=other)
    assert len(ann) == 4 and ann.images_root == other


def test_write_read_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 50
    va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    va[::7] = MISSING_VA
    expr = rng.integers(-1, 8, n)
    au = rng.integers(0, 2, (n, NUM_AU)).astype(np.int8)
    au[::5] = MISSING_AU
    paths = [f"vid{i // 10}/{i:05d}.jpg" for i in range(n)]
    p = write_annotations(tmp_path / "rt.txt", paths, va, expr, au)
    ann = read_annotations(p)
    assert ann.paths == paths
    np.testing.assert_allclose(ann.va, va, atol=1e-6)
    np.testing.assert_array_equal(ann.expr, expr)
    np.testing.assert_array_equal(ann.au, au)
    sub = ann.subset([3, 1])
    assert isinstance(sub, Annotations) and sub.paths == [paths[3], paths[1]]
    np.testing.assert_array_equal(sub.lines, [5, 3])
