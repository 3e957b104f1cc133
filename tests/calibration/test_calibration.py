"""Calibration sets: building from each source kind, manifest verification, the shipped default set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.calibration import (
    MANIFEST,
    default_calibration_dir,
    load_calibration,
    manifest_labels,
    read_manifest,
    verify_calibration,
)
from edge_affect.calibration.build import build_calibration, sample_indices
from edge_affect.schema import Preprocess

PP = Preprocess(input_size=32, color="rgb")


def _npz(tmp_path: Path, n: int = 70, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path / "faces.npz"
    labels = np.repeat(np.arange(7), n // 7).astype(np.int8)
    np.savez(
        p,
        images=rng.integers(0, 255, (len(labels), size, size), dtype=np.uint8),
        labels=labels,
        ids=np.array([f"img{i}" for i in range(len(labels))]),
    )
    return p


def test_build_from_npz_stratified_and_load(tmp_path):
    out = build_calibration(_npz(tmp_path), tmp_path / "cal", 35, seed=1, provenance="made up")
    m = verify_calibration(out, min_frames=35)
    assert m["count"] == 35 and m["preprocess"]["frame_size"] == [24, 24] and m["preprocess"]["color"] == "gray"
    assert m["source"]["kind"] == "npz" and m["provenance"] == "made up" and len(m["source"]["sha256"]) == 64
    assert np.bincount(manifest_labels(m), minlength=7).tolist() == [5] * 7  # stratified: equal share per class
    x = load_calibration(out, PP, min_frames=35)
    assert x.shape == (35, 3, 32, 32) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0  # mean/std 0.5 -> [-1, 1]
    # the same seed gives the same frames
    again = build_calibration(_npz(tmp_path), tmp_path / "cal2", 35, seed=1)
    assert [f["sha256"] for f in read_manifest(again)["files"]] == [f["sha256"] for f in m["files"]]


def test_sample_indices_rare_class_gives_back():
    labels = np.array([0] * 100 + [1] * 3 + [2] * 100)
    idx = sample_indices(labels, 30, seed=0)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    counts = np.bincount(labels[idx], minlength=3)
    assert counts[1] == 3 and counts.sum() == 30


def test_build_from_image_folder_and_video(tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 40, 3), 40 * i, np.uint8))
    out = build_calibration(folder, tmp_path / "from_folder", 5, size=32)
    m = read_manifest(out)
    assert m["source"]["kind"] == "image_folder" and m["preprocess"]["frame_size"] == [32, 32]
    assert load_calibration(out, PP, min_frames=5).shape == (5, 3, 32, 32)

    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        w.write(np.full((48, 64, 3), (i * 8, 100, 200 - i * 5), np.uint8))
    w.release()
    out = build_calibration(video, tmp_path / "from_video", 6)
    m = read_manifest(out)
    assert m["count"] == 6 and m["source"]["kind"] == "video" and m["preprocess"]["color"] == "rgb"
    ids = [f["source_id"] for f in m["files"]]
    assert ids[0] == "clip.avi#0" and ids[-1] == "clip.avi#29"  # evenly spaced over the whole clip

    crops = build_calibration(video, tmp_path / "with_faces", 3, face_cropper=lambda frame: frame[8:40, 16:48])
    assert read_manifest(crops)["preprocess"]["frame_size"] == [32, 32]


def test_build_from_abaw_root(tmp_path):
    from edge_affect.data.synth import synth_dataset

    root = tmp_path / "abaw"
    synth_dataset(root, 40, seed=0, size=48, workers=0)
    out = build_calibration(root, tmp_path / "cal", 16, split="train")
    m = read_manifest(out)
    assert m["source"]["kind"] == "abaw" and m["count"] == 16 and m["preprocess"]["frame_size"] == [48, 48]


def test_tampered_hash_too_few_empty_and_mismatched(tmp_path):
    out = build_calibration(_npz(tmp_path), tmp_path / "cal", 14)
    with pytest.raises(ValueError, match="has 14 frames, expected at least 32"):
        load_calibration(out, PP)
    first = out / "00000.png"
    data = bytearray(first.read_bytes())
    data[-20] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"00000\.png: sha256 differs"):
        load_calibration(out, PP, min_frames=1)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_calibration(empty, PP)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_calibration(tmp_path / "nope", PP)
    (empty / "x.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"has no {MANIFEST}"):
        load_calibration(empty, PP)


def test_mismatched_frame_and_unlisted_file(tmp_path):
    import cv2

    from edge_affect.artifact import sha256_file

    out = build_calibration(_npz(tmp_path), tmp_path / "cal", 7)
    cv2.imwrite(str(out / "00003.png"), np.zeros((10, 12), np.uint8))  # wrong size, but hash "fixed" in the manifest
    m = json.loads((out / MANIFEST).read_text())
    m["files"][3]["sha256"] = sha256_file(out / "00003.png")
    (out / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"00003\.png: 12×10, manifest says 24×24"):
        load_calibration(out, PP, min_frames=1)
    (out / "stray.png").write_bytes((out / "00000.png").read_bytes())
    with pytest.raises(ValueError, match="not in manifest.json"):
        verify_calibration(out, min_frames=1)


def test_corrupt_manifest_and_existing_output(tmp_path):
    out = build_calibration(_npz(tmp_path), tmp_path / "cal", 7)
    with pytest.raises(ValueError, match="exists and is not empty"):
        build_calibration(_npz(tmp_path), out, 7)
    build_calibration(_npz(tmp_path), out, 14, overwrite=True)
    assert read_manifest(out)["count"] == 14
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cal")]  # no temp folders left
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(out)
    with pytest.raises(FileNotFoundError):
        build_calibration(tmp_path / "missing.npz", tmp_path / "x", 4)


def test_default_set_ships_512_verified_fer_faces():
    d = default_calibration_dir()
    m = verify_calibration(d, min_frames=512)
    assert m["count"] == 512 and m["preprocess"]["frame_size"] == [48, 48] and m["preprocess"]["color"] == "gray"
    assert "FER2013" in m["provenance"] and "91f4f6e6c1f45f2acc89f3d8dae486ea3f99c17c" in m["provenance"]
    counts = np.bincount(manifest_labels(m), minlength=8)
    assert counts[:7].min() >= 73 and counts[7] == 0
    x = load_calibration(d, Preprocess(input_size=48, color="gray"), limit=8)
    assert x.shape == (8, 3, 48, 48)
    repo_link = Path(__file__).resolve().parents[2] / "calibration" / "default"
    if repo_link.exists():
        assert (repo_link / MANIFEST).read_bytes() == (d / MANIFEST).read_bytes()


def test_cli_calib_build_and_verify(tmp_path, capsys):
    from edge_affect.cli import main

    src = _npz(tmp_path)
    assert main(["calib", "build", str(src), "--out", str(tmp_path / "c"), "--n", "7", "--provenance", "test"]) == 0
    m = read_manifest(tmp_path / "c")
    assert (
        m["command"] == f"edge-affect calib build {src} --out {tmp_path / 'c'} --n 7 --seed 0"
        and m["provenance"] == "test"
    )
    assert main(["calib", "verify", str(tmp_path / "c")]) == 0
    assert "OK, 7 frames" in capsys.readouterr().out


def test_video_with_runtime_face_detector(tmp_path):
    from edge_affect.calibration.build import yunet_face_cropper

    clip = Path(__file__).resolve().parents[2] / "edge_affect" / "assets" / "samples" / "astronaut_clip.mp4"
    if not clip.is_file():
        pytest.skip(f"needs the sample clip {clip}")
    try:
        cropper = yunet_face_cropper(64)
    except (FileNotFoundError, ValueError, ImportError) as e:
        pytest.skip(f"needs the runtime's YuNet detector: {e}")
    out = build_calibration(clip, tmp_path / "faces", 3, face_cropper=cropper)
    m = read_manifest(out)
    assert m["count"] == 3 and m["preprocess"]["frame_size"] == [64, 64]
    assert m["preprocess"]["face_cropper"] == "yunet_align_64"
