"""Export of a briefly trained tiny model: the three ONNX variants, metadata, parity gates, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_affect.export.formats import FORMATS, REPORT_JSON, REPORT_MD
from edge_affect.export.onnx_export import read_onnx_meta
from edge_affect.schema import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(src / n, dst / n)
    return dst


def _perturb(path: Path, scale: float = 0.5) -> None:
    """Add noise to the largest float initializer (a deliberately broken artifact)."""
    m = onnx.load(str(path))
    inits = [t for t in m.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    t = max(inits, key=lambda t: int(np.prod(t.dims)))
    a = numpy_helper.to_array(t)
    noisy = (a + scale * np.random.default_rng(0).standard_normal(a.shape)).astype(a.dtype)
    t.CopyFrom(numpy_helper.from_array(noisy, t.name))
    onnx.save(m, str(path))


def test_export_writes_every_variant(exported):
    out, rep = exported
    for key in ("onnx", "onnx-fp16", "onnx-int8"):
        assert (out / FORMATS[key].filename).is_file()
        assert FORMATS[key].filename in rep.artifacts
    assert (out / REPORT_JSON).is_file() and (out / REPORT_MD).is_file()
    d = json.loads((out / REPORT_JSON).read_text())
    assert d["exporter"] in ("torchscript", "dynamo") and d["exporter_attempts"][d["exporter"]] == "ok"
    assert {"onnx_torch_export", "fp16_convert", "int8_quantize", "parity"} <= set(d["timings_s"])
    assert d["checkpoint_sha256"] == rep.checkpoint_sha256 and len(d["comparisons"]) == 3
    assert "| model.int8.onnx |" in (out / REPORT_MD).read_text()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # temp folders gone
    from edge_affect.export.tensorrt_build import tensorrt_unavailable_reason

    assert rep.engines_skipped == tensorrt_unavailable_reason()


def test_fp32_graph_contract(exported, trained_ckpt):
    out, _ = exported
    m = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in m.graph.input] == [INPUT_NAME] and [o.name for o in m.graph.output] == list(OUTPUT_NAMES)
    dims = [
        [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in list(m.graph.input) + list(m.graph.output)
    ]
    assert dims == [["N", 3, 64, 64], ["N", 2], ["N", 8], ["N", 12]]
    assert "LayerNormalization" in {n.op_type for n in m.graph.node}


def test_metadata_round_trip(exported, trained_ckpt):
    from edge_affect.artifact import sha256_file
    from edge_affect.models import load_checkpoint

    out, _ = exported
    _, ck = load_checkpoint(trained_ckpt)
    for key, precision in (("onnx", "fp32"), ("onnx-fp16", "fp16"), ("onnx-int8", "int8")):
        meta = read_onnx_meta(out / FORMATS[key].filename)
        assert meta.precision == precision
        assert meta.checkpoint_sha256 == sha256_file(trained_ckpt) == ck.checkpoint_sha256
        assert meta.preprocess == ck.preprocess and meta.labels == ck.labels
        assert meta.au_thresholds == ck.au_thresholds and meta.model_config == ck.model_config
        assert meta.model_name == "tiny" and meta.extra["exporter"] in ("torchscript", "dynamo")
        m = onnx.load(str(out / FORMATS[key].filename))
        raw = {p.key: p.value for p in m.metadata_props}[METADATA_KEY]
        assert json.loads(raw)["outputs"] == {"va": ["N", 2], "expr": ["N", 8], "au": ["N", 12]}
    # 50 calibration frames, a quarter of them held out for the gates (tests/export/test_gates.py)
    assert read_onnx_meta(out / "model.int8.onnx").extra["calibration"]["frames"] == 50 - 50 // 4


def test_fp16_and_int8_typing(exported):
    from edge_affect.export.fp16 import check_fp16_layout
    from edge_affect.export.tensorrt_int8.qdq_check import check_trt_qdq

    out, _ = exported
    assert check_fp16_layout(out / "model.fp16.onnx") == []
    assert check_trt_qdq(out / "model.int8.onnx") == []
    q = onnx.load(str(out / "model.int8.onnx"))
    elem = {vi.type.tensor_type.elem_type for vi in list(q.graph.input) + list(q.graph.output)}
    assert elem == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in q.graph.initializer)  # FP16 elsewhere


def test_report_lists_what_int8_keeps_in_float(exported):
    """The TensorRT-shaped model's float compute ops are read from its graph: the stem (FP16 unless
    --int8-quantize-stem) named as such, every other one as placed by ModelOpt; reasons cover each node once, the
    MAC shares add up, and both reports carry it. A reason may name an op type."""
    from edge_affect.export.onnx_export import stem_nodes
    from edge_affect.export.precision import float_compute_nodes, kept_in_float, mac_share, node_macs

    out, rep = exported
    fp32 = onnx.load(str(out / "model.onnx"))
    int8 = onnx.load(str(out / "model.int8.onnx"))
    macs = node_macs(fp32)
    floats = float_compute_nodes(int8)
    r = rep.artifacts["model.int8.onnx"]["kept_in_float"]
    assert r["kept"] == len(floats) > 1 and r["compute_ops"] == len(macs)
    by = {g["why"]: g["nodes"] for g in r["by_reason"]}
    assert by.pop("the stem (FP16 unless --int8-quantize-stem)") == stem_nodes(fp32)
    assert list(by) == ["placed by the quantizer (nvidia-modelopt onnx ptq)"]
    assert sorted([*stem_nodes(fp32), *by[next(iter(by))]]) == sorted(floats)
    assert r["mac_share"] == mac_share(macs, floats) and 0 < r["mac_share"] < 0.5
    assert json.loads((out / REPORT_JSON).read_text())["artifacts"]["model.int8.onnx"]["kept_in_float"] == r
    md = (out / REPORT_MD).read_text()
    assert "## Kept in higher precision in the INT8 models" in md and f"| model.int8.onnx | {r['kept']} of " in md
    matmuls = [n.name for n in int8.graph.node if n.op_type == "MatMul" and n.name in floats]
    again = kept_in_float(int8, macs, {"MatMul": "asked"})
    assert {g["why"]: g["nodes"] for g in again["by_reason"]}.get("asked", []) == matmuls


def test_parity_gates_on_export(exported):
    _, rep = exported
    by = {c.artifact: c for c in rep.comparisons}
    assert by["model.onnx"].passed and by["model.fp16.onnx"].passed
    assert all(g.value <= 1e-4 for g in by["model.onnx"].gates)
    int8 = by["model.int8.onnx"]
    # the tiny test model's INT8 agreement is measured, not promised (its 0.2 M-parameter backbone is fragile)
    assert {g.name for g in int8.gates} >= {"expr_top1_agreement", "au_decision_agreement", "va_ccc_min"}
    assert 0.0 <= int8.stats["expr_top1_agreement"] <= 1.0 and np.isfinite(int8.stats["va_ccc_min"])


def test_parity_command_passes_and_broken_artifacts_fail(exported, calib_dir, tmp_path):
    from edge_affect.cli import main
    from edge_affect.parity import run_parity

    out, _ = exported
    good = _copy(out, tmp_path / "good", ("model.onnx", "model.fp16.onnx", REPORT_JSON))
    assert main(["parity", str(good), "--data", str(calib_dir)]) == 0
    assert json.loads((good / "parity_report.json").read_text())["passed"] is True

    bad32 = _copy(out, tmp_path / "bad32", ("model.onnx", REPORT_JSON))
    _perturb(bad32 / "model.onnx")
    rep = run_parity(bad32, data=calib_dir)
    assert not rep.passed and not rep.comparisons[0].gates[0].passed
    assert main(["parity", str(bad32), "--data", str(calib_dir)]) == 1

    bad16 = _copy(out, tmp_path / "bad16", ("model.onnx", "model.fp16.onnx", REPORT_JSON))
    _perturb(bad16 / "model.fp16.onnx", scale=0.2)
    rep = run_parity(bad16, data=calib_dir)
    by = {c.artifact: c for c in rep.comparisons}
    assert by["model.onnx"].passed and not by["model.fp16.onnx"].passed


def test_export_check_rejects_mismatch(trained_ckpt, tmp_path, monkeypatch):
    """A graph that differs from PyTorch after export must fail the export (and leave nothing behind)."""
    from edge_affect.export import onnx_export
    from edge_affect.models import load_checkpoint

    model, meta = load_checkpoint(trained_ckpt)
    real_fix = onnx_export._fix_graph

    def fix_then_break(path, meta_, opset):
        real_fix(path, meta_, opset)
        _perturb(Path(path))

    monkeypatch.setattr(onnx_export, "_fix_graph", fix_then_break)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    with pytest.raises(RuntimeError, match="failed with every exporter.*differs from PyTorch"):
        onnx_export.export_onnx(model, meta, tmp_path / "m.onnx", exporter="torchscript", sample=x)
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_library_call(trained_ckpt, tmp_path):
    from edge_affect.export.onnx_export import export_onnx, run_onnx, run_torch
    from edge_affect.models import load_checkpoint

    model, meta = load_checkpoint(trained_ckpt)
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    p = export_onnx(model, meta, tmp_path / "m.onnx", exporter="torchscript", sample=x)
    got, ref = run_onnx(p, x), run_torch(model, x)
    assert max(float(np.abs(got[k] - ref[k]).max()) for k in OUTPUT_NAMES) <= 1e-4
    assert read_onnx_meta(p).extra["exporter"] == "torchscript"
    with pytest.raises(ValueError, match="exporter 'onnx2' is not one of"):
        export_onnx(model, meta, tmp_path / "n.onnx", exporter="onnx2", sample=x)
    with pytest.raises(ValueError, match=r"expected \(N, 3, 64, 64\)"):
        export_onnx(model, meta, tmp_path / "n.onnx", sample=x[:, :, :32])


def test_triton_repository(exported):
    out, rep = exported
    cfg = (out / "triton" / "tiny" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in cfg and "max_batch_size: 32" in cfg
    assert 'name: "image" data_type: TYPE_FP32 dims: [ 3, 64, 64 ]' in cfg and "dims: [ 12 ]" in cfg
    assert "preferred_batch_size: [ 8, 32 ]" in cfg
    assert (out / "triton" / "tiny" / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()


def test_bad_inputs_give_clear_errors_and_leave_nothing(trained_ckpt, calib_dir, tmp_path, monkeypatch):
    from edge_affect.export import pipeline
    from edge_affect.export.pipeline import ExportRequest, export_all

    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_all(ExportRequest(tmp_path / "missing.pt", tmp_path / "o1"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="corrupt.pt"):
        export_all(ExportRequest(corrupt, tmp_path / "o2"))
    empty = tmp_path / "empty_calib"
    empty.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        export_all(ExportRequest(trained_ckpt, tmp_path / "o3", int8=True, calib=empty))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        export_all(ExportRequest(trained_ckpt, a_file / "sub", calib=calib_dir))

    def boom(*a, **k):
        raise RuntimeError("fp16 conversion exploded")

    import edge_affect.export.fp16 as fp16

    monkeypatch.setattr(fp16, "convert_fp16", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        export_all(ExportRequest(trained_ckpt, tmp_path / "o4", fp16=True, calib=calib_dir))
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["corrupt.pt", "empty_calib", "file.txt"], leftovers
    assert pipeline.CHECK_FRAMES > 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output(trained_ckpt, calib_dir, tmp_path):
    from edge_affect.export.pipeline import ExportRequest, export_all

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            export_all(ExportRequest(trained_ckpt, ro / "out", calib=calib_dir))
    finally:
        ro.chmod(0o700)


def test_int8_without_modelopt_names_the_extra(monkeypatch, exported, calib_dir, tmp_path):
    import sys

    from edge_affect.export.tensorrt_int8.ptq import quantize_int8

    out, _ = exported
    for name in [m for m in sys.modules if m == "modelopt" or m.startswith("modelopt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "modelopt", None)
    with pytest.raises(RuntimeError, match=r"pip install 'edge-affect\[export\]'"):
        quantize_int8(out / "model.onnx", tmp_path / "q.onnx", np.zeros((2, 3, 64, 64), np.float32))


def test_batch_range():
    from edge_affect.export.tensorrt_build import BatchRange

    assert str(BatchRange.parse("1:4:16")) == "1:4:16"
    for bad in ("4:2:8", "0:1:2", "1:2", "a:b:c"):
        with pytest.raises(ValueError, match="batch range"):
            BatchRange.parse(bad)


def _trt_reason() -> str:
    from edge_affect.export.tensorrt_build import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_trt_reason()), reason=f"needs TensorRT and a CUDA GPU: {_trt_reason()}")
def test_engines_build_and_match(exported, tmp_path, calib_dir):
    from edge_affect.export.tensorrt_build import BatchRange, EngineOptions, build_engine
    from edge_affect.parity import run_parity

    out, _ = exported
    d = _copy(out, tmp_path / "eng", ("model.onnx", "model.fp16.onnx", "model.int8.onnx", REPORT_JSON))
    opts = EngineOptions(batch=BatchRange(1, 4, 16), timing_cache=tmp_path / "t.cache")
    for src, dst in (("model.fp16.onnx", "model.fp16.engine"), ("model.int8.onnx", "model.int8.engine")):
        build_engine(d / src, d / dst, opts, read_onnx_meta(d / src))
        side = json.loads((d / f"{dst}.json").read_text())
        assert side["precision"] in ("fp16", "int8") and side["batch_range"] == [1, 4, 16]
        assert side["compute_capability"] and side["tensorrt_version"]
    assert (tmp_path / "t.cache").is_file()
    rep = run_parity(d, data=calib_dir)
    by = {c.artifact: c for c in rep.comparisons}
    assert by["model.fp16.engine"].passed


def test_int8_cpu_parity_upcasts_fp16(exported, calib_dir):
    """The INT8 artifact keeps FP16 + Q/DQ; CPU parity runs its FP32-upcast twin node by node (not ONNX Runtime's
    fused integer kernels)."""
    from edge_affect.calibration import load_calibration
    from edge_affect.export.onnx_export import run_onnx, upcast_fp16

    out, rep = exported
    m = onnx.load(str(out / "model.int8.onnx"))
    up = upcast_fp16(m)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in up.graph.initializer)
    assert sum(n.op_type == "QuantizeLinear" for n in up.graph.node) == sum(
        n.op_type == "QuantizeLinear" for n in m.graph.node
    )
    x = load_calibration(calib_dir, read_onnx_meta(out / "model.onnx").preprocess, limit=4)
    got = run_onnx(out / "model.int8.onnx", x, emulate_fp16_in_fp32=True)
    assert all(np.isfinite(got[k]).all() and got[k].shape[0] == 4 for k in OUTPUT_NAMES)
    assert {c.backend for c in rep.comparisons if c.precision == "int8"} == {"onnxruntime-cpu, fp16 upcast, unfused Q/DQ"}


def test_int8_calibration_method_is_validated(exported, tmp_path):
    import numpy as np

    from edge_affect.export.tensorrt_int8.ptq import quantize_int8

    out, _ = exported
    with pytest.raises(ValueError, match="calibration method 'bogus', expected 'max' or 'entropy'"):
        quantize_int8(
            out / "model.onnx", tmp_path / "x.onnx", np.zeros((2, 3, 64, 64), np.float32), calibration_method="bogus"
        )
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("name", ["edge_gray48_slim", "edge_gray48_slim_aa"])
def test_node_macs_are_the_models_own_count(tmp_path, name: str) -> None:
    """The per-node multiply-accumulates the INT8 report shares are taken from sum to the model's own count
    (``count_macs``), for the default layout (attention reshapes that shape inference leaves symbolic) and the
    anti-aliased one (blur pads computed in the graph): no node is counted from a guessed size."""
    import torch

    from edge_affect.export.onnx_export import export_onnx
    from edge_affect.export.precision import node_macs
    from edge_affect.models import count_macs, create_model
    from edge_affect.models.checkpoint import model_meta

    torch.manual_seed(0)
    model = create_model(name).eval()
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, model_meta(model), path, sample=np.random.default_rng(0).random((2, 3, 48, 48), np.float32))
    macs = node_macs(onnx.load(str(path)))
    assert min(macs.values()) > 0
    assert sum(macs.values()) == pytest.approx(count_macs(model), rel=1e-3)
