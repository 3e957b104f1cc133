"""benchmarks/bench_ensemble.py: accuracy of models alone, flip-averaged and averaged, on FER+-style votes."""

from __future__ import annotations

import json
from pathlib import Path

import bench_ensemble as bench
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

MODEL = ROOT / "edge_affect" / "assets" / "models" / "default" / "model.onnx"
CALIB = ROOT / "edge_affect" / "assets" / "calibration" / "default"


def _ferplus_like(path: Path, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Shipped FER2013 calibration crops with ten FER+ votes on their label's column; two more faces whose votes
    say 'unknown' (left out by the benchmark)."""
    from edge_affect.calibration.manifest import load_frames, read_manifest
    from edge_affect.data.fer import FERPLUS_COLUMNS, FERPLUS_TO_ABAW

    m = read_manifest(CALIB)
    frames = load_frames(CALIB, m, n + 2)
    images = np.stack([f if f.ndim == 2 else f[..., 0] for f in frames]).astype(np.uint8)
    labels = np.array([int(f["label"]) for f in m["files"][: n + 2]])
    votes = np.zeros((n + 2, len(FERPLUS_COLUMNS)), np.uint8)
    for i, y in enumerate(labels):
        votes[i, FERPLUS_TO_ABAW.index(y) if i < n else FERPLUS_COLUMNS.index("unknown")] = 10
    np.savez(path, images=images, votes=votes)
    return images[:n], labels[:n]


def test_accuracy_alone_and_averaged(tmp_path: Path, runtime_accuracy) -> None:
    data = tmp_path / "faces.npz"
    images, labels = _ferplus_like(data)
    out = tmp_path / "ens.json"
    assert bench.main([str(MODEL), str(MODEL), "--data", str(data), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["faces"] == len(labels) and res["dropped"] == 2
    rows = res["rows"]
    assert [len(r["models"]) for r in rows] == [1, 1, 2]
    want, _ = runtime_accuracy(MODEL, images, labels)  # the runtime on the same crops, independently
    assert rows[0]["accuracy"] == pytest.approx(want) and 0.0 < want < 1.0
    # a model averaged with itself is the model; its flip average differs from it on some faces or none
    assert rows[2]["accuracy"] == rows[0]["accuracy"] == rows[1]["accuracy"]
    assert rows[2]["accuracy_flip_averaged"] == rows[0]["accuracy_flip_averaged"]
    model = bench.Ours(MODEL, "default")
    flipped = bench.expression_probs(model, images, flip=True)
    alone = bench.expression_probs(model, images)
    model.close()
    want_f = float((((alone + flipped) / 2).argmax(1) == labels).mean())
    assert rows[0]["accuracy_flip_averaged"] == pytest.approx(want_f)


def test_a_missing_model_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "faces.npz"
    _ferplus_like(data, 4)
    with pytest.raises(SystemExit) as err:
        bench.main([str(MODEL), str(tmp_path / "nope.onnx"), "--data", str(data)])
    assert str(err.value) == f"{tmp_path / 'nope.onnx'} does not exist"


def test_bad_data_and_json_over_an_input_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    data = tmp_path / "faces.npz"
    _ferplus_like(data, 4)
    before = data.read_bytes()
    with pytest.raises(SystemExit) as err:  # --json naming the data: refused before any work
        bench.main([str(MODEL), "--data", str(data), "--json", str(data)])
    assert "\n" not in str(err.value) and "--json" in str(err.value) and data.read_bytes() == before
    bad = tmp_path / "not.npz"
    bad.write_text("not an npz")
    with pytest.raises(SystemExit) as err:
        bench.main([str(MODEL), "--data", str(bad)])
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
