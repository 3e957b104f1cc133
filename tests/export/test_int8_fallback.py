"""INT8 sensitivity and FP16 fallback (``export --int8 --int8-fallback K``), and ``--int8-exclude`` names: exact,
and checked against the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="INT8 export needs nvidia-modelopt (the export extra)")

SIBLING = "/inner/encoder.0/attn/MatMul"  # the tiny model also has ".../attn/MatMul_1"


def test_quantizers_bypassed_give_the_float_graph(exported):
    """With every quantized node wired past its Q/DQ pairs, the INT8 graph computes the FP32 model's outputs up to
    its FP16-stored parameters: max abs difference ≤ 1e-2 (measured 3.7e-4)."""
    import onnx

    from edge_affect.calibration import load_calibration
    from edge_affect.export.onnx_export import read_onnx_meta, run_onnx, upcast_fp16
    from edge_affect.export.precision import node_macs
    from edge_affect.export.tensorrt_int8.sensitivity import quantized_inputs, without_quantizers

    out, rep = exported
    m = onnx.load(str(out / "model.int8.onnx"))
    nodes = quantized_inputs(m)
    ops = {n.name: n.op_type for n in m.graph.node}
    assert {"Conv", "MatMul"} <= {ops[n] for n in nodes} and SIBLING in nodes and SIBLING + "_1" in nodes
    x = load_calibration(rep.calibration["dir"], read_onnx_meta(m).preprocess)[:16]
    ref = run_onnx(out / "model.onnx", x)
    float_graph = out.parent / "float.onnx"
    float_graph.write_bytes(upcast_fp16(without_quantizers(m, list(nodes))).SerializeToString())
    got = run_onnx(float_graph, x)
    diff = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    assert diff <= 1e-2, diff
    # multiply-accumulates per node, from shape inference: the Q/DQ graph counts what the FP32 graph counts
    macs = node_macs(m)
    assert macs == node_macs(onnx.load(str(out / "model.onnx"))) and len(macs) > 20 and min(macs.values()) > 0
    with pytest.raises(ValueError, match="no quantized node named 'nope'"):
        without_quantizers(m, ["nope"])


@pytest.mark.slow  # 10-26 s each: the default run stays under ~5 min on 2 cores
def test_export_with_fallback(trained_ckpt, calib_dir, tmp_path, exported):
    """K = 2: the two nodes ranked first on the calibration frames end up reading float tensors, the metadata and
    the report name them, and the report carries the ranking (sorted, shares removed ≤ 100 %)."""
    import onnx

    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.tensorrt_int8.sensitivity import quantized_inputs

    out = tmp_path / "fb"
    rep = export_all(ExportRequest(trained_ckpt, out, int8=True, calib=calib_dir, int8_fallback=2))
    fb = rep.int8_fallback
    rank = fb["ranking"]
    assert fb["k"] == 2 and fb["frames"] == rep.calibration["frames"] and len(rank) == 12
    assert [r["distance"] for r in rank] == sorted(r["distance"] for r in rank)
    assert all(r["gain"] <= 1 and 0 <= r["mac_share"] <= 1 for r in rank)
    share = sum(r["mac_share"] for r in rank if r["node"] in fb["kept_fp16"])
    assert fb["kept_fp16_mac_share"] == pytest.approx(share, abs=2e-4)  # tolerance: 4-decimal rounding, 2 rows
    assert fb["kept_fp16"] == [r["node"] for r in rank if r["gain"] > 0][:2] and len(fb["kept_fp16"]) == 2
    m = onnx.load(str(out / "model.int8.onnx"))
    left = quantized_inputs(m)
    # those two read float tensors; the rest of what the plain INT8 graph of the same checkpoint quantizes stays
    # INT8, but for a few neighbours (at most as many as the kept nodes) that ModelOpt, placing its Q/DQ again
    # without them, leaves float too (seen: the residual Add and the LayerNorm after a kept attention projection,
    # none beside a kept convolution). Not a fixed count:
    # which nodes rank first depends on the trained weights, which vary with the thread count.
    plain = quantized_inputs(onnx.load(str(exported[0] / "model.int8.onnx")))
    kept = set(fb["kept_fp16"])
    assert kept <= set(plain) and not kept & set(left) and set(left) <= set(plain)
    assert len(plain) - len(left) <= 2 * len(kept) and len(plain) >= 50
    meta = json.loads(next(p.value for p in m.metadata_props if p.key == "edge_affect"))
    assert set(fb["kept_fp16"]) <= set(meta["extra"]["excluded"])
    md = (out / "export_report.md").read_text()
    assert "## INT8 sensitivity" in md and fb["kept_fp16"][0] in md
    assert json.loads((out / "export_report.json").read_text())["int8_fallback"]["kept_fp16"] == fb["kept_fp16"]


def test_int8_exclude_is_exact_and_checked(exported, calib_dir, tmp_path):
    """A node name keeps that node only (ModelOpt reads names as prefix regexes); a name or op type the graph
    lacks is refused with one line naming it."""
    import onnx

    from edge_affect.calibration import load_calibration
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.export.tensorrt_int8.ptq import quantize_int8
    from edge_affect.export.tensorrt_int8.sensitivity import quantized_inputs

    out, _ = exported
    fp32 = out / "model.onnx"
    calib = load_calibration(calib_dir, read_onnx_meta(fp32).preprocess)[:32]
    dst = tmp_path / "m.int8.onnx"
    quantize_int8(fp32, dst, calib, exclude=[SIBLING])
    left = quantized_inputs(onnx.load(str(dst)))
    assert SIBLING not in left and SIBLING + "_1" in left
    for bad, kind in (("/inner/nope/Conv", "node"), ("Matmul", "op type")):
        with pytest.raises(ValueError, match=f"--int8-exclude '{bad}': no {kind} of that name"):
            quantize_int8(fp32, tmp_path / "x.onnx", calib, exclude=[bad])
    assert not (tmp_path / "x.onnx").exists()


def test_package_records_fp16_nodes_checked_against_its_graph(trained_ckpt, tmp_path):
    """``package --int8-keep-fp16 NODE``: the node is recorded in the metadata and model.json; a name that is not
    a node of the packaged graph is refused in one line and nothing is written; bad metadata is refused."""
    from types import SimpleNamespace

    from edge_affect.cli import main
    from edge_affect.export.package import package_model
    from edge_affect.export.tensorrt_int8.steps import package_fp16_nodes
    from edge_affect.models import load_checkpoint

    with pytest.raises(ValueError, match=r"--int8-keep-fp16 '/inner/nope/Add': not a node of model.onnx"):
        package_model(trained_ckpt, tmp_path / "bad", int8_keep_fp16=["/inner/nope/Add"])
    assert not (tmp_path / "bad").exists()
    pkg = tmp_path / "pkg"
    assert main(["package", str(trained_ckpt), "--out", str(pkg), "--int8-keep-fp16", SIBLING]) == 0
    assert json.loads((pkg / "model.json").read_text())["int8_keep_fp16"] == [SIBLING]
    _, meta = load_checkpoint(pkg / "model.safetensors")
    assert package_fp16_nodes(meta) == [SIBLING] and package_fp16_nodes(load_checkpoint(trained_ckpt)[1]) == []
    with pytest.raises(ValueError, match="expected a list of ONNX node names"):
        package_fp16_nodes(SimpleNamespace(extra={"int8_keep_fp16": "/inner/a/Add"}))


@pytest.mark.slow  # ~30-80 s: package + export --int8
def test_package_keeps_its_fp16_nodes_through_export(trained_ckpt, calib_dir, tmp_path):
    """``export --int8`` of a package with ``int8_keep_fp16`` keeps those nodes in FP16 in the TensorRT-shaped
    model (they read float tensors, the rest stays INT8) and the report names them with their MAC share."""
    import onnx

    from edge_affect.cli import main
    from edge_affect.export.tensorrt_int8.sensitivity import quantized_inputs

    pkg = tmp_path / "pkg"
    assert main(["package", str(trained_ckpt), "--out", str(pkg), "--int8-keep-fp16", SIBLING]) == 0
    out = tmp_path / "x"
    assert main(["export", str(pkg / "model.safetensors"), "--out", str(out), "--int8", "--int8-target", "tensorrt",
                 "--calib", str(calib_dir)]) in (0, 1)  # fmt: skip
    left = quantized_inputs(onnx.load(str(out / "model.int8.onnx")))
    assert SIBLING not in left and SIBLING + "_1" in left and len(left) >= 50
    rep = json.loads((out / "export_report.json").read_text())
    assert (
        rep["int8_package_fp16"]["kept_fp16"] == [SIBLING]
        and 0 <= rep["int8_package_fp16"]["kept_fp16_mac_share"] < 0.1
    )
    assert f"`{SIBLING}`" in (out / "export_report.md").read_text()
