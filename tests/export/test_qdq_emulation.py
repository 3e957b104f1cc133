"""CPU parity runs a TensorRT-shaped Q/DQ graph node by node (``run_onnx(..., emulate_fp16_in_fp32=True)``): each
Q/DQ pair rounds to int8 and back and the convolution sums in float, the graph's own definition, not ONNX Runtime's
fused integer kernels. Pinned to numpy's arithmetic on activations at the top of their int8 range and weights of
one sign per channel (the largest sums a layer can make)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edge_affect.export.onnx_export import run_onnx
from edge_affect.schema import INPUT_NAME

S, C_OUT = 8, 8  # an 8×8 kernel over the whole 3×8×8 image: one output pixel per channel


def _qdq_conv_model(w: np.ndarray, a_scale: float, w_scale: np.ndarray):
    """image → Q/DQ (per tensor) → Conv (weights Q/DQ per output channel) → expr; va and au read the same sum."""
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(a_scale, np.float32), "a_s"),
        numpy_helper.from_array(np.array(0, np.int8), "a_zp"),
        numpy_helper.from_array(w_scale.astype(np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(C_OUT, np.int8), "w_zp"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "va_idx"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", [INPUT_NAME, "a_s", "a_zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_zp"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "w_s", "w_zp"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "w_s", "w_zp"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
        helper.make_node("Flatten", ["y"], ["expr"]),
        helper.make_node("Gather", ["expr", "va_idx"], ["va"], axis=1),
        helper.make_node("Identity", ["expr"], ["au"]),
    ]
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("va", "expr", "au")]
    graph = helper.make_graph(
        nodes, "qdq_conv", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, 3, S, S])], out, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fake_quant(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    return np.clip(np.round(x / scale), -128, 127) * scale


def test_qdq_graph_runs_node_by_node_like_int32_sums() -> None:
    rng = np.random.default_rng(0)
    # activations at the top of their range (ReLU6 outputs clipped at 6) and weights of one sign per channel
    x = rng.uniform(5.5, 6.0, (4, 3, S, S)).astype(np.float32)
    w = (rng.uniform(0.5, 1.0, (C_OUT, 3, S, S)) * rng.choice([-1.0, 1.0], (C_OUT, 1, 1, 1))).astype(np.float32)
    a_scale = 6.0 / 127
    w_scale = np.abs(w).reshape(C_OUT, -1).max(1) / 127
    model = _qdq_conv_model(w, a_scale, w_scale)

    got = run_onnx(model, x, emulate_fp16_in_fp32=True)["expr"]

    xq = _fake_quant(x.astype(np.float64), a_scale)
    wq = _fake_quant(w.astype(np.float64), w_scale[:, None, None, None])
    want = np.einsum("nchw,ochw->no", xq, wq)
    assert got.shape == (4, C_OUT)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
