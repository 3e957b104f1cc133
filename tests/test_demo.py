"""``edge-affect demo`` end to end on the shipped default model (the README's main job), offline, on a CPU.

One run (~1 min on 2 cores) feeds every test here. Where the FER2013 public test is present, the demo's
INT8 Q/DQ model is also scored through the runtime: within 1 point of FP32 accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("modelopt", reason="the demo exports INT8 with NVIDIA ModelOpt (the export extra)")
pytestmark = pytest.mark.slow  # one demo run, 1–2 min on 2 cores

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "run"
    r = subprocess.run(
        [sys.executable, "-m", "edge_affect.cli", "demo", "--out", str(out), "--bench-iters", "3"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return out, r


def test_demo_writes_every_output(demo) -> None:
    out, r = demo
    assert r.returncode == 0, r.stderr[-3000:]
    for rel in (
        "demo_summary.md",
        "summary.json",
        "predictions.jsonl",
        "bench.json",
        "export/export_report.md",
        "export/model.onnx",
        "export/model.fp16.onnx",
        "export/model.int8.onnx",
        "overlays/astronaut_clip.mp4",
        "overlays/astronaut.onnx_int8_qdq.png",
        "overlays/fer_mosaic.onnx_fp32.png",
        "plots/astronaut_expression_probs.png",
        "plots/clip_va.png",
        "plots/bench_latency.png",
    ):
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    assert "TensorRT engines" in r.stdout  # built, or why not
    md = (out / "demo_summary.md").read_text()
    assert "incomplete" not in md and "![clip](plots/clip_va.png)" in md


def test_demo_summary_says_where_each_figure_comes_from(demo) -> None:
    """Accuracies copied from model.json are marked as recorded, not measured; this run's figures as measured;
    latency is a median with its interquartile range over enough calls; FER+ faces where the data is here."""
    from edge_affect.demo import FERPLUS_VALID, LATENCY_MIN_CALLS, MEASURED, RECORDED

    out, r = demo
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "demo_summary.md").read_text()
    bullets = [line for line in md.splitlines() if line.startswith("- ")]
    assert any("accuracy" in b and RECORDED in b for b in bullets)
    assert all(MEASURED in b or RECORDED in b for b in bullets if "accuracy" in b), bullets
    assert all(MEASURED in b for b in bullets if b.startswith(("- export:", "- total:"))), bullets
    s = json.loads((out / "summary.json").read_text())
    lat = {x["artifact"]: x["latency_b1"] for x in s["photo"]}
    assert lat["pytorch fp32"] is None and lat["onnx fp16"] is None
    for name in ("onnx fp32", "onnx int8 q/dq"):
        x = lat[name]
        assert x["calls"] >= LATENCY_MIN_CALLS and 0 < x["q25_ms"] <= x["median_ms"] <= x["q75_ms"], (name, x)
        assert f"{x['median_ms']:.2f} (IQR {x['q25_ms']:.2f}–{x['q75_ms']:.2f})" in md
    if FERPLUS_VALID.is_file():
        fp = s["ferplus"]
        assert (out / "overlays" / "ferplus_mosaic.png").stat().st_size > 10_000
        assert fp["faces"] > 3000 and 0.4 < fp["accuracy"] <= 1 and fp["mosaic_faces"] >= 8 * 4
        assert f"{fp['accuracy']:.2%}" in md


def test_demo_predictions_agree_across_artifacts(demo) -> None:
    """The astronaut's face through PyTorch FP32, ONNX FP32/FP16 and INT8 Q/DQ: same expression; VA within 0.05
    (INT8) and 1e-3 (FP32/FP16) of PyTorch; the parity gates passed; 30/30 clip frames have a face."""
    out, r = demo
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    rows = {x["artifact"]: x for x in s["photo"]}
    assert set(rows) >= {"pytorch fp32", "onnx fp32", "onnx fp16", "onnx int8 q/dq"}
    ref = rows["pytorch fp32"]
    assert ref["status"] == "ok"
    for name, tol in (("onnx fp32", 1e-3), ("onnx fp16", 1e-2), ("onnx int8 q/dq", 0.05)):
        x = rows[name]
        assert x["expression"] == ref["expression"], name
        assert abs(x["valence"] - ref["valence"]) <= tol and abs(x["arousal"] - ref["arousal"]) <= tol, name
    assert s["export"]["passed"] and s["clip"] == {**s["clip"], "frames": 30, "faces": 30}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) >= 4 + 30 and all(json.loads(line)["artifact"] for line in lines)


def test_demo_int8_accuracy_within_half_a_point_of_fp32(demo, ferplus_valid, runtime_accuracy) -> None:
    """The INT8 model the demo exports (calibrated on FER2013 *training* faces) on the 3,553 FER+ valid faces:
    within 0.5 point of FP32 (measured for v3: 83.25 % vs 83.51 %; v2: 83.31 % vs 83.20 %)."""
    out, r = demo
    assert r.returncode == 0
    images, labels = ferplus_valid
    acc32, _ = runtime_accuracy(out / "export" / "model.onnx", images, labels)
    acc8, _ = runtime_accuracy(out / "export" / "model.int8.onnx", images, labels)
    assert acc32 - acc8 <= 0.005, f"INT8 {acc8:.4f} vs FP32 {acc32:.4f}"
    assert np.isfinite(acc8)
