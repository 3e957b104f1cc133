"""Structural check that an INT8 Q/DQ ONNX graph is what TensorRT's strongly typed build accepts.

TensorRT takes only symmetric signed INT8 Q/DQ: zero point present and 0, int8 (not uint8) everywhere;
weights quantized per output channel, activations per tensor; the graph's own inputs and outputs stay
float. This runs without TensorRT (pure ``onnx``), so CI can reject a bad quantizer output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_Q = "QuantizeLinear"
_DQ = "DequantizeLinear"
_WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_PASS_THROUGH = {"Identity", "Transpose", "Reshape", "Cast", "Unsqueeze", "Squeeze"}


def _load(model_or_path: Any) -> Any:
    import onnx

    if isinstance(model_or_path, (str, Path)):
        p = Path(model_or_path)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX file {p} does not exist")
        return onnx.load(str(p))
    return model_or_path


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _elem_type(graph: Any, name: str) -> int | None:
    for t in graph.initializer:
        if t.name == name:
            return int(t.data_type)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return int(a.t.data_type)
    return None


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def check_trt_qdq(model_or_path: Any) -> list[str]:
    """Return the problems that keep this Q/DQ graph from a TensorRT INT8 build (empty list = OK).

    Rejects: a Q/DQ without zero point or with a non-zero one; a non-int8 (e.g. uint8) zero point or
    quantized tensor; weights (initializers reaching Conv/Gemm/MatMul weight inputs through Q/DQ) quantized
    per tensor; quantized graph inputs or outputs; a graph with no Q/DQ at all.
    """
    import onnx

    model = _load(model_or_path)
    g = model.graph
    consts = _constants(g)
    producer = {o: n for n in g.node for o in n.output}
    problems: list[str] = []
    qdq = [n for n in g.node if n.op_type in (_Q, _DQ)]
    if not qdq:
        return ["graph has no QuantizeLinear/DequantizeLinear nodes (not an explicitly quantized model)"]
    for n in qdq:
        label = f"{n.op_type} {n.name or n.output[0]!r}"
        if len(n.input) < 3 or not n.input[2]:
            out_dtype = _attr(n, "output_dtype", 0)
            if n.op_type == _Q and out_dtype != onnx.TensorProto.INT8:
                problems.append(f"{label} has no zero point (ONNX then quantizes to uint8); expected int8 zero point 0")
            elif n.op_type == _DQ and _elem_type(g, n.input[0]) not in (None, onnx.TensorProto.INT8):
                problems.append(f"{label} dequantizes a non-int8 tensor")
            continue
        zp_name = n.input[2]
        dtype = _elem_type(g, zp_name)
        if dtype is None:
            problems.append(f"{label}: zero point {zp_name!r} is not a constant")
            continue
        if dtype != onnx.TensorProto.INT8:
            problems.append(
                f"{label}: zero point type {onnx.TensorProto.DataType.Name(dtype)}, expected INT8 (signed, symmetric)"
            )
        zp = consts[zp_name]
        if np.any(zp != 0):
            problems.append(f"{label}: zero point {zp.ravel()[:4].tolist()} is not 0 (TensorRT needs symmetric)")
    # weights: initializer -> Q -> DQ -> (pass-through)* -> Conv/Gemm/MatMul weight input, or initializer -> DQ -> ...
    for n in g.node:
        if n.op_type not in _WEIGHT_OPS:
            continue
        w_in = n.input[_WEIGHT_OPS[n.op_type]] if len(n.input) > 1 else ""
        src = producer.get(w_in)
        while src is not None and src.op_type in _PASS_THROUGH:
            src = producer.get(src.input[0])
        if src is None or src.op_type != _DQ:
            continue
        dq = src
        q = producer.get(dq.input[0])
        raw_name = q.input[0] if q is not None and q.op_type == _Q else dq.input[0]
        if raw_name not in consts:
            continue  # activation x activation MatMul: per-tensor is right
        weight = consts[raw_name]
        scale = consts.get(dq.input[1])
        if scale is None:
            problems.append(f"weight {raw_name!r} of {n.op_type} {n.name!r}: scale is not a constant")
            continue
        axis = int(_attr(dq, "axis", 1))
        channels = weight.shape[axis] if weight.ndim > 0 and -weight.ndim <= axis < weight.ndim else 1
        if scale.size == 1 and channels > 1:
            problems.append(
                f"weight {raw_name!r} of {n.op_type} {n.name!r} is quantized per tensor; expected per channel "
                f"({channels} scales on axis {axis})"
            )
    for vi in g.input:
        if vi.name in consts:
            continue
        if vi.type.tensor_type.elem_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            problems.append(
                f"graph input {vi.name!r} is quantized ({onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}); expected float"
            )
    for vi in g.output:
        p = producer.get(vi.name)
        if vi.type.tensor_type.elem_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) or (
            p is not None and p.op_type == _Q
        ):
            problems.append(f"graph output {vi.name!r} is quantized; expected float")
    return problems


def assert_trt_qdq(model_or_path: Any) -> None:
    """Raise ``RuntimeError`` listing the problems ``check_trt_qdq`` finds."""
    problems = check_trt_qdq(model_or_path)
    if problems:
        where = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "INT8 model"
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RuntimeError(f"{where}: not a TensorRT-compatible Q/DQ graph: {'; '.join(problems[:3])}{more}")
