"""Parity gates on controlled outputs: each gate passes on small errors and fails on a deliberate break."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_affect.parity import Comparison, GateResult, Gates, Labels, ParityReport, compare_outputs, load_eval_set

AU_THR = [0.5] * 12


def _ref(n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    expr = rng.standard_normal((n, 8)) * 3
    return {
        "va": np.tanh(rng.standard_normal((n, 2))).astype(np.float32),
        "expr": expr.astype(np.float32),
        "au": (rng.standard_normal((n, 12)) * 4).astype(np.float32),
    }


def _noisy(ref: dict[str, np.ndarray], eps: float, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + eps * rng.standard_normal(v.shape)).astype(np.float32) for k, v in ref.items()}


def _gates(results: list[GateResult]) -> dict[str, bool]:
    return {g.name: g.passed for g in results}


def test_thresholds_live_in_one_dataclass():
    g = Gates()
    assert (g.fp32_max_abs, g.fp16_max_abs) == (1e-4, 1e-2)
    assert (g.int8_expr_agreement, g.int8_au_agreement, g.int8_va_ccc, g.int8_p_drop) == (0.97, 0.97, 0.98, 0.02)


def test_fp32_gate():
    ref = _ref()
    ok, _ = compare_outputs(ref, _noisy(ref, 1e-6), "fp32", AU_THR)
    assert all(_gates(ok).values()) and len(ok) == 3
    bad, _ = compare_outputs(ref, _noisy(ref, 1e-3), "fp32", AU_THR)
    assert not any(_gates(bad).values())
    nan = {k: v.copy() for k, v in ref.items()}
    nan["au"][0, 0] = np.nan
    res, _ = compare_outputs(ref, nan, "fp32", AU_THR)
    assert _gates(res) == {"max_abs_va": True, "max_abs_expr": True, "max_abs_au": False}


def test_fp16_gate_is_on_probabilities():
    ref = _ref()
    got = _noisy(ref, 1e-3)
    res, stats = compare_outputs(ref, got, "fp16", AU_THR)
    assert all(_gates(res).values()) and stats["max_abs_prob_expr"] < 1e-2
    got["expr"][:, 0] += 0.5  # shifts softmax probabilities by more than 1e-2
    res, _ = compare_outputs(ref, got, "fp16", AU_THR)
    assert _gates(res) == {"max_abs_prob_va": True, "max_abs_prob_expr": False, "max_abs_prob_au": True}


def test_int8_gates_pass_on_small_noise_and_fail_each_break():
    ref = _ref()
    res, stats = compare_outputs(ref, _noisy(ref, 0.02), "int8", AU_THR)
    assert all(_gates(res).values()), stats

    flips = {k: v.copy() for k, v in ref.items()}
    idx = np.arange(0, 400, 20)  # 5 % of the rows get another top-1 class
    flips["expr"][idx] = np.roll(flips["expr"][idx], 1, axis=1)
    assert not _gates(compare_outputs(ref, flips, "int8", AU_THR)[0])["expr_top1_agreement"]

    aus = {k: v.copy() for k, v in ref.items()}
    aus["au"][:, :1] *= -1  # one AU of 12 inverted: 1/12 of decisions differ
    assert not _gates(compare_outputs(ref, aus, "int8", AU_THR)[0])["au_decision_agreement"]

    va = {k: v.copy() for k, v in ref.items()}
    va["va"][:, 1] = va["va"][:, 1] * 0.5 + 0.3  # biased and compressed arousal
    res, stats = compare_outputs(ref, va, "int8", AU_THR)
    assert not _gates(res)["va_ccc_min"] and stats["va_ccc_min"] < 0.98


def test_flips_are_counted_apart_on_near_ties():
    """Frames whose two most probable reference expressions lie within NEAR_TIE_GAP are near ties: the stats count
    them, and count apart the flips on the frames the reference decides."""
    from edge_affect.export.compare import NEAR_TIE_GAP, near_ties

    ref = _ref()
    ref["expr"][:100] = 0.0
    ref["expr"][:100, :2] = [1.0, 1.0 - NEAR_TIE_GAP]  # top-two probabilities within NEAR_TIE_GAP / 2: near ties
    ties = near_ties(ref["expr"])
    assert ties[:100].all() and (~ties[100:]).sum() >= 250  # the random rows (logits at scale 3): 276 of 300 decided
    got = {k: v.copy() for k, v in ref.items()}
    got["expr"][:10, 1] += 0.1  # 10 near ties flip
    decided = np.flatnonzero(~ties)[:3]
    got["expr"][decided] = np.roll(got["expr"][decided], 1, axis=1)  # 3 decided frames flip
    _, stats = compare_outputs(ref, got, "int8", AU_THR)
    assert stats["expr_top1_flipped"] == 13 and stats["expr_top1_flipped_decided"] == 3
    assert stats["expr_near_ties"] == ties.sum()


def test_sensor_noise_is_one_grey_level_in_input_units_and_the_yardstick_counts_own_flips():
    """``sensor_noise``: N(0, σ) on the [0, 1] image, ÷ std per channel, one field for the three channels of a gray
    model's input, the same every call; ``sensor_noise_yardstick`` counts the reference's own top-1 flips under it,
    and the report puts that count beside the INT8 flips."""
    from edge_affect.export.compare import (
        Comparison,
        flips_markdown,
        sensor_noise,
        sensor_noise_yardstick,
    )
    from edge_affect.schema import Preprocess

    rgb = Preprocess(input_size=32, mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.1))
    a = sensor_noise((64, 3, 32, 32), rgb)
    got = a.std(axis=(0, 2, 3)) * 255
    assert a.dtype == np.float32 and np.allclose(got, [2, 4, 10], rtol=0.03), got
    assert np.array_equal(a, sensor_noise((64, 3, 32, 32), rgb))
    assert abs(np.corrcoef(a[:, 0].ravel(), a[:, 1].ravel())[0, 1]) < 0.02  # channels independent
    g = sensor_noise((8, 3, 16, 16), Preprocess(input_size=16, color="gray"))
    assert np.array_equal(g[:, 0], g[:, 1]) and np.array_equal(g[:, 0], g[:, 2])

    ref = _ref()
    x = np.zeros((len(ref["expr"]), 3, 16, 16), np.float32)
    pp = Preprocess(input_size=16)

    def run(z):  # a model whose first expression logit moves with the mean of its input
        out = {k: v.copy() for k, v in ref.items()}
        out["expr"][:, 0] += 3000 * z.mean(axis=(1, 2, 3))
        return out

    yard = sensor_noise_yardstick(run, ref, x, pp)
    flipped = (run(x + sensor_noise(x.shape, pp))["expr"].argmax(1) != ref["expr"].argmax(1)).sum()
    assert yard["n"] == len(x) and yard["expr_top1_flipped"] == flipped > 0
    assert yard["expr_top1_agreement"] == pytest.approx(1 - flipped / len(x))
    _, stats = compare_outputs(ref, _noisy(ref, 0.01), "int8", AU_THR)
    c = Comparison("model.int8.onnx", "int8", "onnxruntime-cpu", len(x), [], stats)
    text = "\n".join(flips_markdown([c], yardstick=yard))
    assert f"PyTorch FP32 itself flips {flipped} of these {len(x)} gate frames when N(0, 1/255) pixel noise" in text
    assert "itself flips" not in "\n".join(flips_markdown([c]))


def test_int8_p_score_drop_with_labels():
    ref = _ref()
    labels = Labels(
        va=ref["va"].astype(np.float64) + 0.05,
        expr=ref["expr"].argmax(1),
        au=(ref["au"] > 0).astype(np.int64),
    )
    labels.va[:10] = -5.0  # missing labels are masked
    labels.expr[:10] = -1
    res, stats = compare_outputs(ref, _noisy(ref, 0.01), "int8", AU_THR, labels)
    assert _gates(res)["p_drop"] and abs(stats["p_drop"]) <= 0.02 and stats["ref_p"] > 2.5
    worse = {k: v.copy() for k, v in ref.items()}
    worse["expr"][::10] = np.roll(worse["expr"][::10], 3, axis=1)  # 10 % wrong: F1 drops ~0.1
    res, stats = compare_outputs(ref, worse, "int8", AU_THR, labels)
    assert not _gates(res)["p_drop"] and stats["p_drop"] > 0.02
    # only expression labels (FER-style): the gate covers the labelled component
    res, _ = compare_outputs(ref, worse, "int8", AU_THR, Labels(expr=labels.expr))
    assert "p_drop(expr)" in _gates(res) and not _gates(res)["p_drop(expr)"]


def test_bad_precision_and_shape():
    ref = _ref(10)
    with pytest.raises(ValueError, match="precision 'int4'"):
        compare_outputs(ref, ref, "int4", AU_THR)
    with pytest.raises(ValueError, match="output 'va': shape"):
        compare_outputs(ref, {**ref, "va": ref["va"][:5]}, "fp32", AU_THR)


def test_report_objects_save_json_and_markdown(tmp_path):
    ref = _ref(50)
    res, stats = compare_outputs(ref, _noisy(ref, 1e-3), "fp32", AU_THR)
    c = Comparison("model.onnx", "fp32", "onnxruntime-cpu", 50, res, stats)
    skipped = Comparison("model.fp16.engine", "fp16", "tensorrt", 0, skipped="TensorRT is not installed")
    rep = ParityReport(str(tmp_path), "test data", Gates(), [c, skipped])
    assert not rep.passed  # 1e-3 noise fails the FP32 gate; the skipped engine does not count
    j, m = rep.save(tmp_path)
    d = json.loads(j.read_text())
    assert d["passed"] is False and d["gates"]["fp32_max_abs"] == 1e-4
    assert d["comparisons"][1]["skipped"] == "TensorRT is not installed"
    assert "**FAIL**" in m.read_text() and "skipped: TensorRT is not installed" in m.read_text()


def test_load_eval_set_sources(tmp_path):
    from edge_affect.calibration.build import build_calibration
    from edge_affect.schema import Preprocess

    pp = Preprocess(input_size=32)
    rng = np.random.default_rng(0)
    npz = tmp_path / "e.npz"
    np.savez(npz, images=rng.integers(0, 255, (12, 20, 20), dtype=np.uint8), labels=np.arange(12) % 7)
    ev = load_eval_set(npz, pp)
    assert ev.x.shape == (12, 3, 32, 32) and ev.labels.expr.tolist() == (np.arange(12) % 7).tolist()
    cal = build_calibration(npz, tmp_path / "cal", 7)
    ev = load_eval_set(cal, pp, limit=5)
    assert ev.x.shape == (5, 3, 32, 32) and len(ev.labels.expr) == 5
    default = load_eval_set(None, pp, limit=4)
    assert default.x.shape == (4, 3, 32, 32) and "calibration set" in default.description
    with pytest.raises(FileNotFoundError):
        load_eval_set(tmp_path / "none", pp)
