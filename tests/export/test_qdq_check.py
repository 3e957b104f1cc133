"""The TensorRT Q/DQ structural check on hand-made good and bad graphs (pure onnx, no quantizer needed)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_affect.export.tensorrt_int8.qdq_check import assert_trt_qdq, check_trt_qdq


def _graph(
    *,
    zp_type: int = TensorProto.INT8,
    zp_value: int = 0,
    weight_per_channel: bool = True,
    with_zero_point: bool = True,
    quantized_input: bool = False,
    quantized_output: bool = False,
) -> onnx.ModelProto:
    """image -> Q/DQ -> Conv(weight: Q/DQ per channel) -> Relu -> out, all configurable to break one rule."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    np_zp = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}[zp_type]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(0.05, dtype=np.float32), "a_scale"),
        numpy_helper.from_array(np.array(zp_value, dtype=np_zp), "a_zp"),
    ]
    if weight_per_channel:
        inits += [
            numpy_helper.from_array(np.abs(w).reshape(4, -1).max(1).astype(np.float32) / 127, "w_scale"),
            numpy_helper.from_array(np.zeros(4, dtype=np_zp), "w_zp"),
        ]
    else:
        inits += [
            numpy_helper.from_array(np.array(np.abs(w).max() / 127, dtype=np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, dtype=np_zp), "w_zp"),
        ]
    zp = ["a_zp"] if with_zero_point else []
    nodes = []
    inputs = []
    if quantized_input:
        inputs.append(helper.make_tensor_value_info("image", TensorProto.INT8, [1, 3, 8, 8]))
        nodes.append(helper.make_node("DequantizeLinear", ["image", "a_scale", *zp], ["x_dq"], name="dq_in"))
    else:
        inputs.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8]))
        nodes += [
            helper.make_node("QuantizeLinear", ["image", "a_scale", *zp], ["x_q"], name="q_in"),
            helper.make_node("DequantizeLinear", ["x_q", "a_scale", *zp], ["x_dq"], name="dq_in"),
        ]
    nodes += [
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zp"], ["w_q"], name="q_w", axis=0),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="dq_w", axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
    ]
    if quantized_output:
        nodes.append(helper.make_node("QuantizeLinear", ["r", "a_scale", "a_zp"], ["out"], name="q_out"))
        out_t = zp_type
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["out"], name="id"))
        out_t = TensorProto.FLOAT
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", out_t, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def test_good_graph_passes_and_runs():
    m = _graph()
    onnx.checker.check_model(m, full_check=True)
    assert check_trt_qdq(m) == []
    assert_trt_qdq(m)
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": np.ones((1, 3, 8, 8), np.float32)})[0]
    assert out.shape == (1, 4, 8, 8) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"zp_value": 3}, "is not 0"),
        ({"zp_type": TensorProto.UINT8}, "expected INT8"),
        ({"weight_per_channel": False}, "per tensor"),
        ({"with_zero_point": False}, "no zero point"),
        ({"quantized_input": True}, "graph input 'image' is quantized"),
        ({"quantized_output": True}, "graph output 'out' is quantized"),
    ],
)
def test_bad_graphs_rejected(kwargs, expected):
    m = _graph(**kwargs)
    problems = check_trt_qdq(m)
    assert any(expected in p for p in problems), problems
    with pytest.raises(RuntimeError, match="not a TensorRT-compatible Q/DQ graph"):
        assert_trt_qdq(m)


def test_unquantized_graph_rejected(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Relu", ["image"], ["out"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
    )
    p = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(g), p)
    assert check_trt_qdq(p) == [
        "graph has no QuantizeLinear/DequantizeLinear nodes (not an explicitly quantized model)"
    ]
    with pytest.raises(FileNotFoundError):
        check_trt_qdq(tmp_path / "missing.onnx")
