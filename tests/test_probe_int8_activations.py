"""benchmarks/probe_int8_activations.py: activation Q/DQ pairs switched off or given per-channel scales, on a real
ONNX graph run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the probe edits ONNX graphs (the export extra)")
ort = pytest.importorskip("onnxruntime", reason="the probe runs ONNX Runtime (the export extra)")

import probe_int8_activations as probe  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _qdq_model() -> onnx.ModelProto:
    """x (1×2×1×2) → Q/DQ (one scale, 1.0) → Relu → y: channel 0 spans ±100, channel 1 only ±1."""
    nodes = [
        helper.make_node("QuantizeLinear", ["/inner/backbone/blocks.0/a", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        helper.make_node("Relu", ["dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("/inner/backbone/blocks.0/a", TensorProto.FLOAT, [1, 2, 1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 2])],
        [numpy_helper.from_array(np.array(100 / 127, np.float32), "s"), numpy_helper.from_array(np.int8(0), "z")],
    )
    graph.value_info.append(helper.make_tensor_value_info("q", TensorProto.INT8, [1, 2, 1, 2]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"/inner/backbone/blocks.0/a": x})[0]


def test_groups_off_and_per_channel_scales() -> None:
    assert probe.group_of("/inner/backbone/bn1/act/Clip_output_0") == "stem"
    assert probe.group_of("/inner/backbone/blocks.3/blocks.3.1/conv_pw/Conv_output_0") == "stage3"
    assert probe.group_of("/inner/encoder/layers.0/MatMul_output_0") == "head"
    model = _qdq_model()
    x = np.array([[[[100.0, 37.3]], [[0.3, 0.9]]]], np.float32)
    name = "/inner/backbone/blocks.0/a"
    assert len(probe.activation_quantizers(model)) == 1
    as_is = _run(model, x)  # one scale of 100/127 for both channels: channel 1 rounds to 0 or 0.79
    assert set(np.round(as_is[0, 1, 0] / (100 / 127), 3)) <= {0.0, 1.0}
    assert np.array_equal(_run(probe.edited(model, {name}), x), x)  # off: the float tensor goes through
    maxima = {name: np.array([100.0, 1.0], np.float32), f"{name}#rank": 4}
    per = _run(probe.edited(model, set(), maxima), x)
    assert np.abs(per - x).max() <= 0.5 * 100 / 127 + 1e-6 and np.abs(per[0, 1] - x[0, 1]).max() <= 0.5 / 127 + 1e-6
    assert model.graph.node[0].op_type == "QuantizeLinear"  # the input model is not changed
