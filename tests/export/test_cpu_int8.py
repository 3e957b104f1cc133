"""The CPU INT8 model (``model.int8.cpu.onnx``, ONNX Runtime static quantization): structure (int8/uint8 Q/DQ
around Conv/MatMul/Gemm, no FP16), ONNX Runtime's integer kernels in the optimized graph, its own gates on the
held-out frames, and ``--precision int8`` picking it on the CPU provider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_affect.export.formats import FORMATS, REPORT_JSON
from edge_affect.runtime.backends.onnxruntime_runner import CPU_INT8_ONNX


def test_cpu_int8_is_written_with_its_own_gates(cpu_export):
    from edge_affect.export.onnx_export import read_onnx_meta

    out, rep = cpu_export
    assert (out / CPU_INT8_ONNX).is_file() and not (out / FORMATS["onnx-int8"].filename).exists()
    assert rep.artifacts[CPU_INT8_ONNX]["precision"] == "int8"
    meta = read_onnx_meta(out / CPU_INT8_ONNX)
    assert meta.precision == "int8" and meta.extra["int8_target"] == "cpu"
    assert meta.extra["quantize"]["quant_format"] == "qdq" and meta.extra["quantize"]["per_channel"] is True
    # calibrated on the calibration side of the split only; gated on the held-out side
    assert meta.extra["calibration"]["frames"] == rep.calibration["frames"] < rep.calibration["frames_in_set"]
    by = {c.artifact: c for c in rep.comparisons}
    c = by[CPU_INT8_ONNX]
    assert c.backend == "onnxruntime-cpu" and c.n == rep.gate_frames["count"]
    assert {g.name for g in c.gates} >= {"expr_top1_agreement", "au_decision_agreement", "va_ccc_min"}
    assert c.stats["expr_top1_flipped"] == pytest.approx(round((1 - c.stats["expr_top1_agreement"]) * c.n))
    beside = {x.artifact: x for x in rep.calibration_figures}
    assert beside[CPU_INT8_ONNX].n == rep.calibration["frames"]
    d = json.loads((out / REPORT_JSON).read_text())
    assert [x["artifact"] for x in d["calibration_figures"]] == [CPU_INT8_ONNX]


def test_cpu_int8_structure(cpu_export):
    from edge_affect.export.cpu_int8 import check_cpu_int8, has_float16

    out, _ = cpu_export
    path = out / CPU_INT8_ONNX
    assert check_cpu_int8(path) == [] and not has_float16(path)
    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in g.initializer)
    assert {vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output)} == {onnx.TensorProto.FLOAT}
    from edge_affect.export.onnx_export import read_onnx_meta

    recipe = read_onnx_meta(path).extra["quantize"]
    assert recipe["reduce_range"] is True and recipe["quantize_stem"] is True  # 7-bit weights (u8s8 saturation)
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    bias = {n.name for n in qdq if n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT32}
    assert all(n.op_type == "DequantizeLinear" for n in qdq if n.name in bias)  # int32 biases, dequantized only
    zp_types = {inits[n.input[2]].data_type for n in qdq if n.name not in bias and n.input[2:] and n.input[2] in inits}
    assert qdq and zp_types <= {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    assert onnx.TensorProto.INT8 in zp_types  # weights: symmetric int8
    producer = {o: n for n in g.node for o in n.output}
    weighted = [n for n in g.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert {n.op_type for n in weighted} >= {"Conv", "MatMul", "Gemm"}
    for n in weighted:  # int8/uint8 Q/DQ on both inputs of every Conv/MatMul/Gemm
        for i in (0, 1):
            assert producer[n.input[i]].op_type == "DequantizeLinear", (n.name, i)
        w = producer[n.input[1]].input[0]
        if w in inits and n.op_type == "Conv":
            scale = inits[producer[n.input[1]].input[1]]
            assert inits[w].data_type == onnx.TensorProto.INT8 and int(np.prod(scale.dims)) == inits[w].dims[0]


def test_report_lists_what_the_cpu_model_keeps_in_float(cpu_export):
    """The CPU INT8 model's record is read from its graph (ONNX Runtime's default recipe quantizes every compute
    op, the stem included) and reaches the Markdown report."""
    from edge_affect.export.precision import float_compute_nodes, mac_share, node_macs

    out, rep = cpu_export
    r = rep.artifacts["model.int8.cpu.onnx"]["kept_in_float"]
    floats = float_compute_nodes(onnx.load(str(out / "model.int8.cpu.onnx")))
    macs = node_macs(onnx.load(str(out / "model.onnx")))
    assert r["kept"] == len(floats) and r["compute_ops"] == len(macs) > 20
    assert r["mac_share"] == mac_share(macs, floats) < 0.05
    assert f"| model.int8.cpu.onnx | {r['kept']} of {r['compute_ops']} |" in (out / "export_report.md").read_text()


def test_onnx_runtime_fuses_integer_kernels(cpu_export):
    from edge_affect.export.cpu_int8 import integer_kernels
    from edge_affect.runtime.predictor import load

    out, _ = cpu_export
    ops = integer_kernels(out / CPU_INT8_ONNX)
    assert ops.get("QLinearConv", 0) >= 1, ops
    assert ops.get("QLinearMatMul", 0) + ops.get("QGemm", 0) + ops.get("MatMulIntegerToFloat", 0) >= 1, ops
    assert "Conv" not in ops and "FusedConv" not in ops, ops  # no convolution left in float
    with load(out / CPU_INT8_ONNX, providers="cpu") as p:  # the runtime loads and runs it
        x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
        recs = p.predict(x)
    assert len(recs) == 2 and p.meta.precision == "int8"


def test_cpu_int8_check_rejects_the_tensorrt_shaped_model(exported):
    from edge_affect.export.cpu_int8 import check_cpu_int8

    out, _ = exported
    problems = check_cpu_int8(out / FORMATS["onnx-int8"].filename)
    assert any("FLOAT16" in p for p in problems)


def test_precision_int8_picks_the_cpu_model_on_cpu(cpu_export, tmp_path):
    from edge_affect.runtime.backends.onnxruntime_runner import select_precision

    out, _ = cpu_export
    assert select_precision(out, "int8", "cpu") == out / CPU_INT8_ONNX
    assert select_precision(out / "model.onnx", "int8", "cpu") == out / CPU_INT8_ONNX
    assert select_precision(out, "fp32", "cpu") == out / "model.onnx"
    (tmp_path / "model.onnx").write_bytes((out / "model.onnx").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"has no model\.int8\.cpu\.onnx; write it with: .*--int8-target cpu"):
        select_precision(tmp_path, "int8", "cpu")
    with pytest.raises(ValueError, match="precision 'int4'"):
        select_precision(out, "int4", "cpu")


def test_bench_cli_precision_int8_runs_the_cpu_model(cpu_export, tmp_path):
    from edge_affect.cli import main

    out, _ = cpu_export
    js = tmp_path / "bench.json"
    rc = main(["bench", str(out), "--precision", "int8", "--providers", "cpu", "--batch", "2", "--iters", "1"])
    assert rc == 0
    rc = main(
        ["bench", str(out / "model.onnx"), "--precision", "int8", "--providers", "cpu"]
        + ["--batch", "1", "--iters", "1", "--json", str(js)]
    )
    assert rc == 0
    assert Path(json.loads(js.read_text())["artifact"]["artifact"]).name == CPU_INT8_ONNX


def test_quantize_stem_false_keeps_the_stem_fp32(cpu_export):
    """``quantize_stem = False``: the convolution(s) reading the image join ``exclude`` (kept FP32, allowed by the
    layout check); other excludes stay."""
    from edge_affect.export.cpu_int8 import CpuInt8Recipe, effective_recipe
    from edge_affect.export.onnx_export import stem_nodes

    out, _ = cpu_export
    model = onnx.load(str(out / "model.onnx"))
    stems = stem_nodes(model)
    assert len(stems) == 1 and stems[0] == next(n.name for n in model.graph.node if n.op_type == "Conv")
    assert effective_recipe(CpuInt8Recipe(), model) == CpuInt8Recipe()  # the default quantizes it
    kept = effective_recipe(CpuInt8Recipe(quantize_stem=False, exclude=("/x/MatMul",)), model)
    assert kept.exclude == ("/x/MatMul", stems[0])


def test_recipe_is_validated():
    from edge_affect.export.cpu_int8 import CpuInt8Recipe

    with pytest.raises(ValueError, match="quant_format 'qint4'"):
        CpuInt8Recipe(quant_format="qint4")
    assert CpuInt8Recipe().to_dict()["activations"] == "uint8"


def test_cpu_profile_writes_only_the_cpu_int8(trained_ckpt, calib_dir, tmp_path, monkeypatch):
    """``--profile export/cpu.toml``: model.int8.cpu.onnx, never the TensorRT-shaped model (quantizers stubbed)."""
    import edge_affect.export.pipeline as pipeline
    from edge_affect.cli import main

    seen: dict[str, object] = {}

    def fake_export_all(req):
        seen["req"] = req
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "export_all", fake_export_all)
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit):
        main(["export", str(trained_ckpt), "--out", str(tmp_path / "o"), "--profile", str(root / "export/cpu.toml")])
    req = seen["req"]
    assert req.int8_cpu and not req.int8 and not req.engine and not req.fp16
    with pytest.raises(SystemExit):
        main(["export", str(trained_ckpt), "--out", str(tmp_path / "o"), "--int8-target", "cpu"])
    assert seen["req"].int8_cpu and not seen["req"].int8
    import edge_affect.export.tensorrt_build as tb

    monkeypatch.setattr(tb, "tensorrt_unavailable_reason", lambda: "")  # a machine with TensorRT: --int8 is that one
    with pytest.raises(SystemExit):
        main(["export", str(trained_ckpt), "--out", str(tmp_path / "o"), "--int8"])
    assert seen["req"].int8 and not seen["req"].int8_cpu


def test_int8_without_tensorrt_also_writes_the_cpu_model(trained_ckpt, tmp_path, monkeypatch, capsys):
    """The first hour on a CPU-only machine: ``--int8`` also writes the CPU INT8 model and says which is which;
    a recipe (``--profile``) decides for itself."""
    import edge_affect.export.pipeline as pipeline
    import edge_affect.export.tensorrt_build as tb
    from edge_affect.cli import main

    seen: dict[str, object] = {}

    def fake_export_all(req):
        seen["req"] = req
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "export_all", fake_export_all)
    monkeypatch.setattr(tb, "tensorrt_unavailable_reason", lambda: "TensorRT is not installed")
    out = ["export", str(trained_ckpt), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main([*out, "--int8"])
    assert seen["req"].int8 and seen["req"].int8_cpu
    said = capsys.readouterr().out
    assert f"no TensorRT here (TensorRT is not installed): writing {CPU_INT8_ONNX} too" in said
    assert f"{FORMATS['onnx-int8'].filename} is for TensorRT / Jetson" in said
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit):
        main([*out, "--profile", str(root / "export/jetson-orin.toml")])
    assert seen["req"].int8 and not seen["req"].int8_cpu  # the Jetson recipe: its model only


def test_int8_flags_add_up(trained_ckpt, tmp_path, monkeypatch):
    """``--int8`` (the TensorRT-shaped model) and ``--int8-target cpu`` add up: both models, and ``--qat`` (which
    fine-tunes model.int8.onnx) is accepted beside them; the CPU recipe plus ``--int8`` writes both too."""
    import edge_affect.export.pipeline as pipeline
    from edge_affect.cli import main

    seen: dict[str, object] = {}

    def fake_export_all(req):
        seen["req"] = req
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "export_all", fake_export_all)
    out = ["export", str(trained_ckpt), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main([*out, "--int8", "--int8-target", "cpu"])
    assert seen["req"].int8 and seen["req"].int8_cpu and seen["req"].qat is None
    with pytest.raises(SystemExit):
        main([*out, "--int8", "--int8-target", "cpu", "--qat", "--data", str(tmp_path / "abaw")])
    req = seen["req"]
    assert req.int8 and req.int8_cpu and req.qat is not None and req.qat.data == tmp_path / "abaw"
    assert req.qat.keep == "closer"  # the default: QAT ships only when closer to the checkpoint than PTQ
    with pytest.raises(SystemExit):
        main([*out, "--int8", "--qat", "--data", str(tmp_path / "abaw"), "--qat-keep", "always"])
    assert seen["req"].qat.keep == "always"
    with pytest.raises(SystemExit):
        main([*out, "--int8-target", "tensorrt", "--int8-target", "cpu"])
    assert seen["req"].int8 and seen["req"].int8_cpu
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit):
        main([*out, "--int8", "--profile", str(root / "export/cpu.toml")])
    assert seen["req"].int8 and seen["req"].int8_cpu and not seen["req"].engine
    seen.clear()
    # --qat fine-tunes model.int8.onnx: without --int8 (or --int8-target tensorrt) it is refused before exporting
    assert main([*out, "--int8-target", "cpu", "--qat", "--data", str(tmp_path / "abaw")]) == 2
    assert "req" not in seen
