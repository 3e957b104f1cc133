"""Parity gates judge frames the INT8 scales never saw: a seeded split of the calibration set by file (or
``--eval-data``), disjoint by pixels, recorded in the report; an INT8 model that flips predictions on them fails."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_affect.export.formats import REPORT_JSON, REPORT_MD
from edge_affect.runtime.backends.onnxruntime_runner import CPU_INT8_ONNX


def _pixel_sha(folder: Path, names: list[str]) -> set[str]:
    from edge_affect.runtime.preprocess import decode_image

    return {hashlib.sha256(np.ascontiguousarray(decode_image(folder / n)).tobytes()).hexdigest() for n in names}


def _roll_expr_head(path: Path) -> None:
    """Tamper the INT8 graph: roll the output channels of the quantized weight (and its per-channel scales) of
    the layer that produces the expression logits, so class c gets class c+1's weights: predictions flip."""
    m = onnx.load(str(path))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    todo, seen = ["expr"], set()
    while todo:
        name = todo.pop(0)
        n = producer.get(name)
        if n is None or name in seen:
            continue
        seen.add(name)
        w_dq = producer.get(n.input[1]) if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1 else None
        if w_dq is not None and w_dq.op_type == "DequantizeLinear" and w_dq.input[0] in inits:
            break
        todo += list(n.input)
    else:
        raise AssertionError("no quantized Gemm/MatMul found above the expr output")
    w = inits[w_dq.input[0]]
    trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
    axis = 0 if (n.op_type == "Gemm" and trans_b) else 1
    w.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(w), 1, axis=axis), w.name))
    s = inits[w_dq.input[1]]
    if int(np.prod(s.dims)) > 1:
        s.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(s), 1), s.name))
    onnx.save(m, str(path))


def test_split_is_deterministic_stratified_and_bounded():
    from edge_affect.export.gates import split_files

    files = [{"name": f"{i:03d}.png", "sha256": f"{i:064x}", "label": i % 4} for i in range(80)]
    calib, gate = split_files(files, 0.25, 0)
    assert len(gate) == 20 and len(calib) == 60 and not set(calib) & set(gate)
    assert sorted(calib + gate) == list(range(80))
    assert [sum(files[i]["label"] == c for i in gate) for c in range(4)] == [5, 5, 5, 5]  # every class its share
    shuffled = files[::-1]  # the listing order does not matter, only the files and the seed
    assert sorted(shuffled[i]["name"] for i in split_files(shuffled, 0.25, 0)[1]) == sorted(
        files[i]["name"] for i in gate
    )
    assert split_files(files, 0.25, 1)[1] != gate
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="expected a fraction between 0 and 1"):
            split_files(files, bad, 0)
    with pytest.raises(ValueError, match="leaves 1 to calibrate and 0 to gate"):
        split_files(files[:1], 0.25, 0)


def test_gate_frames_are_disjoint_from_calibration_and_recorded(exported, calib_dir):
    from edge_affect.calibration import read_manifest
    from edge_affect.export.onnx_export import read_onnx_meta

    out, rep = exported
    g = rep.gate_frames
    names = [f["name"] for f in read_manifest(calib_dir)["files"]]
    gate_names = g["files"]
    calib_names = [n for n in names if n not in set(gate_names)]
    assert g["source"] == "held-out calibration frames" and g["seed"] == 0 and g["holdout"] == 0.25
    assert g["count"] == len(gate_names) == len(names) // 4 and g["duplicates_dropped"] == 0
    assert rep.calibration["frames"] == len(calib_names) == g["calibration_frames"]
    assert rep.calibration["frames_in_set"] == len(names)
    # disjoint by the pixels themselves, not only by name
    assert not _pixel_sha(calib_dir, gate_names) & _pixel_sha(calib_dir, calib_names)
    # the INT8 scales came from the calibration side only
    assert read_onnx_meta(out / "model.int8.onnx").extra["calibration"]["frames"] == len(calib_names)
    # every gate judged the held-out frames; the calibration frames' figures sit beside, not gating
    assert {c.n for c in rep.comparisons if not c.skipped} == {len(gate_names)}
    assert [c.n for c in rep.calibration_figures] == [len(calib_names)]
    int8 = next(c for c in rep.comparisons if c.artifact == "model.int8.onnx")
    flipped = int8.stats["expr_top1_flipped"]
    assert flipped == round((1 - int8.stats["expr_top1_agreement"]) * len(gate_names))
    d = json.loads((out / REPORT_JSON).read_text())
    assert d["gate_frames"]["count"] == len(gate_names) and d["gate_frames"]["files"] == gate_names
    md = (out / REPORT_MD).read_text()
    assert f"{len(gate_names)} frames, none of them a calibration frame" in md
    assert f"model.int8.onnx {int(flipped)} of {len(gate_names)}" in md
    assert "shown beside, not gating" in md


def test_parity_reruns_on_the_recorded_gate_frames(exported, tmp_path):
    from edge_affect.parity import run_parity

    out, rep = exported
    d = tmp_path / "copy"
    d.mkdir()
    for n in ("model.onnx", REPORT_JSON):
        shutil.copyfile(out / n, d / n)
    pr = run_parity(d)
    assert "held-out frames" in pr.data and pr.comparisons[0].n == rep.gate_frames["count"]


def test_eval_data_gates_and_calibration_overlap_is_dropped(trained_ckpt, calib_dir, tmp_path):
    """``--eval-data`` replaces the held-out part (all calibration frames calibrate); frames whose pixels are a
    calibration frame's are left out of the gates and counted."""
    from edge_affect.calibration import load_calibration, read_manifest
    from edge_affect.export.gates import SOURCE_EVAL_DATA, select_gate_frames
    from edge_affect.models import load_checkpoint
    from edge_affect.runtime.preprocess import decode_image

    _, meta = load_checkpoint(trained_ckpt)
    m = read_manifest(calib_dir)
    x = load_calibration(calib_dir, meta.preprocess)
    imgs = [decode_image(calib_dir / f["name"]) for f in m["files"][:6]]
    rng = np.random.default_rng(0)
    new = [rng.integers(0, 255, imgs[0].shape, dtype=np.uint8) for _ in range(4)]
    npz = tmp_path / "eval.npz"
    np.savez(npz, images=np.stack(imgs + new), labels=np.array([0] * 10))
    fr = select_gate_frames(calib_dir, m, x, meta.preprocess, eval_data=npz)
    assert fr.info["source"] == SOURCE_EVAL_DATA and len(fr.calib) == len(m["files"])
    assert fr.info["duplicates_dropped"] == 6 and fr.info["count"] == 4 and len(fr.gate.x) == 4
    assert fr.gate.labels is not None and len(fr.gate.labels.expr) == 4
    np.savez(tmp_path / "all_seen.npz", images=np.stack(imgs))
    with pytest.raises(ValueError, match="no gate frames left"):
        select_gate_frames(calib_dir, m, x, meta.preprocess, eval_data=tmp_path / "all_seen.npz")


def test_int8_that_flips_held_out_predictions_fails_the_gate(trained_ckpt, calib_dir, cpu_export, tmp_path, monkeypatch):
    """A real export whose INT8 model is tampered (expression head's int8 weights rolled by one class) right
    after quantization: the gate on the held-out frames fails, the flips are counted, and ``parity`` agrees.
    The quantizer's output is the one ``quantize_cpu_int8`` wrote for the same checkpoint in ``cpu_export``
    (calibrated on its training frames; copied, then tampered), so the quantizer does not run a second time."""
    import edge_affect.export.cpu_int8 as cpu_int8
    from edge_affect.cli import main
    from edge_affect.export.pipeline import ExportRequest, export_all

    quantized = cpu_export[0] / CPU_INT8_ONNX

    def tampered(src, dst, *a, **kw):
        shutil.copyfile(quantized, dst)
        _roll_expr_head(Path(dst))
        return Path(dst)

    monkeypatch.setattr(cpu_int8, "quantize_cpu_int8", tampered)
    out = tmp_path / "bad"
    rep = export_all(ExportRequest(trained_ckpt, out, int8_cpu=True, calib=calib_dir))
    assert not rep.passed
    c = next(c for c in rep.comparisons if c.artifact == CPU_INT8_ONNX)
    gate = next(g for g in c.gates if g.name == "expr_top1_agreement")
    assert not gate.passed and gate.value < 0.97
    assert c.n == rep.gate_frames["count"] and c.stats["expr_top1_flipped"] >= 1
    # the report tells flips of frames FP32 barely decides (near ties) from the others
    assert 0 <= c.stats["expr_top1_flipped_decided"] <= c.stats["expr_top1_flipped"]
    assert 0 <= c.stats["expr_near_ties"] <= c.n
    assert "near ties for FP32" in (out / REPORT_MD).read_text()
    # beside them: the FP32 model's own flips on the same frames under one grey level of pixel noise
    yard = rep.noise_yardstick
    assert yard["n"] == c.n and 0 <= yard["expr_top1_flipped"] <= c.n and yard["sigma"] == pytest.approx(1 / 255)
    assert f"PyTorch FP32 itself flips {yard['expr_top1_flipped']} of these {c.n}" in (out / REPORT_MD).read_text()
    assert json.loads((out / "export_report.json").read_text())["noise_yardstick"] == yard
    assert next(x for x in rep.comparisons if x.artifact == "model.onnx").passed
    assert main(["parity", str(out)]) == 1  # re-judged on the recorded held-out frames
    d = json.loads((out / "parity_report.json").read_text())
    assert "held-out" in d["data"] and not d["passed"]
    assert d["noise_yardstick"] == yard  # the same frames, noise and model: the same count
    assert "near ties for FP32" in (out / "parity_report.md").read_text()  # parity tells them apart too
