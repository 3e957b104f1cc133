"""Packed cache: contents equal the shared preprocess, reuse by fingerprint, rebuilds, corrupt images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_affect.data.abaw import load_split, read_annotations
from edge_affect.data.cache import INDEX_FILE, PackedCache, build_cache
from edge_affect.runtime.preprocess import decode_image, resize_face
from edge_affect.schema import Preprocess

PP = Preprocess(input_size=32)


def test_build_matches_shared_preprocess(synth_root: Path, tmp_path: Path) -> None:
    ann = load_split(synth_root, "train")
    cache = build_cache(ann, synth_root / "cropped_aligned", PP, tmp_path / "c", workers=0)
    assert len(cache) == len(ann) and cache.images.shape == (len(ann), 32, 32, 3)
    assert cache.images.dtype == np.uint8 and isinstance(cache.images, np.memmap)
    for i in (0, 7, len(ann) - 1):
        ref = resize_face(decode_image(synth_root / "cropped_aligned" / ann.paths[i]), PP)
        np.testing.assert_array_equal(cache.images[i], ref)
    np.testing.assert_array_equal(cache.va, ann.va)
    np.testing.assert_array_equal(cache.expr, ann.expr)
    np.testing.assert_array_equal(cache.au, ann.au)
    np.testing.assert_array_equal(cache.rows, np.arange(len(ann)))
    assert cache.paths == ann.paths and cache.preprocess == PP
    leftovers = [p.name for p in (tmp_path / "c").iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == [], "no temp files may remain"
    reopened = PackedCache.open(tmp_path / "c")
    assert reopened.fingerprint == cache.fingerprint and len(reopened) == len(cache)


def test_reuse_and_rebuild(synth_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    shutil.copy(synth_root / "validation_set_annotations.txt", src / "validation_set_annotations.txt")
    images = synth_root / "cropped_aligned"
    out = tmp_path / "c"
    ann = read_annotations(src / "validation_set_annotations.txt")
    first = build_cache(ann, images, PP, out, workers=0)
    stamp = (out / "images.npy").stat().st_mtime_ns

    again = build_cache(read_annotations(src / "validation_set_annotations.txt"), images, PP, out, workers=0)
    assert again.fingerprint == first.fingerprint
    assert (out / "images.npy").stat().st_mtime_ns == stamp, "a valid cache must be reused, not rewritten"

    # Changed labels in the annotation file -> new fingerprint -> rebuilt with the new labels.
    lines = (src / "validation_set_annotations.txt").read_text().splitlines()
    cols = lines[1].split(",")
    cols[3] = "6" if cols[3] != "6" else "5"
    lines[1] = ",".join(cols)
    (src / "validation_set_annotations.txt").write_text("\n".join(lines) + "\n")
    changed = build_cache(read_annotations(src / "validation_set_annotations.txt"), images, PP, out, workers=0)
    assert changed.fingerprint != first.fingerprint
    assert changed.expr[0] == int(cols[3])

    # Different preprocessing -> rebuilt at the new size.
    bigger = build_cache(
        read_annotations(src / "validation_set_annotations.txt"), images, Preprocess(input_size=40), out, workers=0
    )
    assert bigger.images.shape[1:] == (40, 40, 3) and bigger.fingerprint != changed.fingerprint

    # A damaged index is rebuilt, not trusted.
    (out / INDEX_FILE).write_text("{not json")
    rebuilt = build_cache(read_annotations(src / "validation_set_annotations.txt"), images, PP, out, workers=0)
    assert rebuilt.fingerprint == changed.fingerprint and rebuilt.images.shape[1] == 32


def test_workers_match_in_process(synth_root: Path, tmp_path: Path) -> None:
    ann = load_split(synth_root, "val")
    a = build_cache(ann, synth_root / "cropped_aligned", PP, tmp_path / "a", workers=0)
    b = build_cache(ann, synth_root / "cropped_aligned", PP, tmp_path / "b", workers=2, chunk=16)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))


def test_corrupt_image(synth_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "img"
    shutil.copytree(synth_root / "cropped_aligned", images)
    ann = load_split(synth_root, "val", images=images)
    bad = images / ann.paths[5]
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match=rf"{bad}.*cannot be decoded"):
        build_cache(ann, images, PP, tmp_path / "c", workers=0)
    assert not (tmp_path / "c" / INDEX_FILE).exists()
    assert [p.name for p in (tmp_path / "c").iterdir() if p.name != ".lock"] == [], (
        "a failed build leaves nothing behind"
    )
    with pytest.raises(ValueError, match=rf"{bad}"):
        build_cache(ann, images, PP, tmp_path / "c2", workers=2, chunk=8)

    cache = build_cache(ann, images, PP, tmp_path / "c", workers=0, skip_bad=True)
    assert len(cache) == len(ann) - 1
    assert cache.skipped[0]["row"] == 5 and cache.skipped[0]["path"] == ann.paths[5]
    assert cache.skipped[0]["line"] == int(ann.lines[5]) and str(bad) in cache.skipped[0]["error"]
    assert ann.paths[5] not in cache.paths
    np.testing.assert_array_equal(cache.rows, np.delete(np.arange(len(ann)), 5))
    np.testing.assert_array_equal(cache.expr, np.delete(ann.expr, 5))
    ref = resize_face(decode_image(images / ann.paths[6]), PP)
    np.testing.assert_array_equal(cache.images[5], ref)


def _build_in_child(args: tuple[str, str, str]) -> str:
    root, out, split = args
    ann = load_split(root, split)
    return build_cache(ann, Path(root) / "cropped_aligned", PP, out, workers=0).fingerprint


def test_concurrent_builds_share_one_cache(synth_root: Path, tmp_path: Path) -> None:
    """DDP ranks building the same cache at once: one builds under the lock, the other reuses it."""
    from edge_affect.data._mp import pool_context

    out = tmp_path / "shared"
    with pool_context().Pool(2) as pool:
        fps = pool.map(_build_in_child, [(str(synth_root), str(out), "train")] * 2)
    assert fps[0] == fps[1]
    cache = PackedCache.open(out)
    assert cache.fingerprint == fps[0] and len(cache) == len(load_split(synth_root, "train"))
