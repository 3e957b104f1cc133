"""QAT route of the INT8 export (``--int8 --qat``): the ModelOpt PTQ graph of the tiny model, run in PyTorch by
``qdq_torch.QdqGraph``, fine-tuned in place; the result stays TensorRT-shaped and the report records the fine-tune
and PTQ's figures on the same gate frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="INT8 export needs nvidia-modelopt (the export extra)")


@pytest.fixture(scope="module")
def qat_export(trained_ckpt, calib_dir, synth_root, tmp_path_factory):
    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.qat import QatSettings

    out = tmp_path_factory.mktemp("qat") / "qat"
    qat = QatSettings(synth_root, steps=30, batch_size=16)
    return out, export_all(ExportRequest(trained_ckpt, out, int8=True, calib=calib_dir, qat=qat))


def test_qdq_graph_runs_the_int8_graph(exported):
    """Untrained, the PyTorch graph computes what ONNX Runtime computes (graph optimisations off: its fused int8
    kernels sum in another order) and writes back the very same initializers."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    from edge_affect.calibration import load_calibration
    from edge_affect.export.onnx_export import read_onnx_meta, upcast_fp16
    from edge_affect.export.qdq_torch import QdqGraph

    out, rep = exported
    src = onnx.load(str(out / "model.int8.onnx"))
    master = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out / "model.onnx")).graph.initializer}
    g = QdqGraph(src, learn_act_scales=True, master=master)
    x = load_calibration(rep.calibration["dir"], read_onnx_meta(src).preprocess)[:16]
    with torch.no_grad():
        got = {k: v.numpy() for k, v in g(torch.from_numpy(x)).items()}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(upcast_fp16(src).SerializeToString(), so, providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}), strict=True))
    # a float difference in the last bit can land a value on the other side of an int8 rounding step, which then
    # spreads through the frame: most frames agree to 1e-4, none by more than 0.1
    diff = np.max([np.abs(got[k] - v).reshape(len(x), -1).max(1) for k, v in ref.items()], axis=0)
    assert (diff <= 1e-4).mean() >= 0.75 and diff.max() < 0.1, diff
    back = {t.name: numpy_helper.to_array(t) for t in g.write_back().graph.initializer}
    for t in src.graph.initializer:
        assert np.array_equal(back[t.name], numpy_helper.to_array(t)), t.name  # scales reproduced exactly


def test_qat_export_tiny(qat_export):
    import onnx

    from edge_affect.export.qdq_check import assert_trt_qdq

    out, rep = qat_export
    model = onnx.load(str(out / "model.int8.onnx"))
    assert_trt_qdq(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "qat" in json.dumps(meta)  # the fine-tune record travels in the INT8 model's metadata
    assert not (out / ".qat").exists() and not any("qat" in p.name or "ptq" in p.name for p in out.iterdir())

    d = json.loads((out / "export_report.json").read_text())
    q = d["qat"]
    assert q["steps"] == 30 and q["split"] == "train" and q["rows"] > 0
    fl, dist = q["loss_fixed_batches"], q["distill_fixed_batches"]
    assert fl["frames"] > 0 and fl["before"] > 0 and fl["after"] > 0
    # tolerance: 30 steps on a 12-step model must not move the INT8 graph away from the checkpoint by more than
    # 25 % of its distance before (measured: it comes closer)
    assert dist["after"] <= 1.25 * dist["before"]
    assert 0 < q["act_scale_change_max"] < 1.0  # the activation scales trained, within a factor of 2
    md = (out / "export_report.md").read_text()
    assert "QAT" in md and "PTQ alone on the same" in md
    # the gates judge held-out frames, none of them a calibration frame; PTQ's figures on the same frames beside
    assert d["gate_frames"]["count"] > 0
    int8 = [c for c in rep.comparisons if c.artifact == "model.int8.onnx"]
    assert int8 and int8[0].n == d["gate_frames"]["count"] == q["ptq_on_gate_frames"]["n"]
    # tolerance: QAT's expression agreement at most 5 points under PTQ's on the same frames (64-frame set, 16 gate
    # frames: one flip is 6 points; measured equal or better)
    qat_agree = next(g.value for g in int8[0].gates if g.name == "expr_top1_agreement")
    assert qat_agree >= q["ptq_on_gate_frames"]["expr_top1_agreement"] - 0.0625
    assert rep.calibration_figures  # the calibration-frame figures stay beside, not instead


def test_qat_keeps_the_graph(qat_export, exported):
    """Same nodes, same dtypes, same zero points as the PTQ graph: only float values changed."""
    import onnx
    from onnx import numpy_helper

    a = onnx.load(str(qat_export[0] / "model.int8.onnx"))
    b = onnx.load(str(exported[0] / "model.int8.onnx"))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    ta = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    tb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype for k in ta)
    zps = {n.input[2] for n in a.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    assert zps and all(np.array_equal(ta[z], tb[z]) for z in zps)


def test_qat_needs_int8(trained_ckpt, synth_root, tmp_path):
    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.qat import QatSettings

    with pytest.raises(ValueError, match="qat"):
        export_all(ExportRequest(trained_ckpt, tmp_path / "x", qat=QatSettings(synth_root, steps=1)))


def test_qat_settings_checked(trained_ckpt, calib_dir, synth_root, tmp_path):
    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.qat import QatSettings

    with pytest.raises(ValueError, match="qat_lr"):
        export_all(
            ExportRequest(trained_ckpt, tmp_path / "x", int8=True, calib=calib_dir, qat=QatSettings(synth_root, lr=0))
        )
