"""What an INT8 model keeps in higher precision, read from the written graph: its compute ops (Conv, MatMul, Gemm)
whose activation input is not a dequantized int8 tensor, why each was kept (the stem, ``--int8-exclude``, the
package's list, ``--int8-fallback`` / ``--int8-max-drop``, or the quantizer's own placement) and their share of
the model's multiply-accumulates. The export report lists it for every INT8 model it writes.

TensorRT runs the float compute ops of ``model.int8.onnx`` in FP16; ONNX Runtime runs those of
``model.int8.cpu.onnx`` in FP32.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: Ops whose arithmetic INT8 speeds up (what "kept in higher precision" and the MAC share count).
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")

#: Ops that pass int8 values through unchanged in ONNX Runtime's QDQ fusion (a DequantizeLinear before them
#: still feeds the compute op that follows in int8).
PASS_THROUGH = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Relu", "Clip")

#: Why a compute op is in float, when no option of the export asked for it.
BY_QUANTIZER = "placed by the quantizer"
#: Names shown per reason in the Markdown report (all of them in export_report.json).
MARKDOWN_NODES = 12


def node_macs(model: Any) -> dict[str, int]:
    """Multiply-accumulates per Conv/MatMul/Gemm node of ``model`` for one frame (batch dimensions counted as 1),
    from ONNX shape inference: what keeping a node in higher precision gives up of INT8's arithmetic. Where
    inference leaves a compute node's non-batch dimension unknown (a shape computed in the graph, e.g. the pads
    of a reflect-padded blur), the shapes come from one ONNX Runtime run of a zero frame instead, so no node is
    counted from a guessed size."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(model)
    g = m.graph
    values = [*g.value_info, *g.input, *g.output]
    dims = {v.name: list(v.type.tensor_type.shape.dim) for v in values}
    compute = [n for n in g.node if n.op_type in COMPUTE_OPS and len(n.input) >= 2]
    unknown = any(
        t not in dims or any(d.dim_value <= 0 for d in dims[t][1:]) for n in compute for t in (n.input[0], n.output[0])
    )
    if unknown:
        weights = {t.name for t in g.initializer}
        needed = {t for n in compute for t in (*n.input[:2], n.output[0]) if t not in weights}
        types = {v.name: v.type.tensor_type.elem_type for v in values}
        shapes = _run_shapes(model, {t: types.get(t) or onnx.TensorProto.FLOAT for t in sorted(needed)})
    else:
        shapes = {k: [d.dim_value if d.dim_value > 0 else 1 for d in v] for k, v in dims.items()}
    shapes.update({t.name: list(numpy_helper.to_array(t).shape) for t in g.initializer})
    macs: dict[str, int] = {}
    for n in compute:
        a, b, o = shapes.get(n.input[0]), shapes.get(n.input[1]), shapes.get(n.output[0])
        if not (a and b and o):
            continue
        if n.op_type == "Conv":
            k = int(np.prod(b[1:]))  # input channels per group × kernel
        else:
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            k = a[-2] if trans_a else a[-1]
        macs[n.name] = int(np.prod(o)) * int(k)
    return macs


def _run_shapes(model: Any, tensors: dict[str, int]) -> dict[str, list[int]]:
    """The shapes ``tensors`` (name → ONNX element type) take in one ONNX Runtime run of ``model`` on zero input,
    each symbolic input dimension 1 (nothing optimised away: every named tensor is made a graph output)."""
    import onnx

    from edge_affect.export.onnx_export import ort_session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, e, None) for t, e in tensors.items() if t not in have)
    sess = ort_session(m.SerializeToString(), optimize=False)
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}
    feed = {
        i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], dtype.get(i.type, np.float32))
        for i in sess.get_inputs()
    }
    names = [o.name for o in sess.get_outputs()]
    return {k: list(v.shape) for k, v in zip(names, sess.run(names, feed), strict=True) if k in tensors}


def mac_share(macs: dict[str, int], nodes: Iterable[str]) -> float:
    """The share of ``macs`` (per node, ``node_macs``) that ``nodes`` carry, rounded to 4 decimals; 0 for none."""
    total = sum(macs.values())
    return round(sum(macs.get(n, 0) for n in set(nodes)) / total, 4) if total else 0.0


def float_compute_nodes(model: Any, look_through: bool = True) -> list[str]:
    """Conv/MatMul/Gemm nodes of a QDQ model whose activation input is not dequantized (``look_through``: also
    through pass-through ops such as MaxPool or Reshape): they run in float."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def dequantized(tensor: str) -> bool:
        for _ in range(8 if look_through else 1):
            n = producer.get(tensor)
            if n is None:
                return False
            if n.op_type == "DequantizeLinear":
                return True
            if n.op_type not in PASS_THROUGH:
                return False
            tensor = n.input[0]
        return False

    return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and not dequantized(n.input[0])]


def kept_in_float(
    int8_model: Any, macs: dict[str, int], reasons: dict[str, str], quantizer: str = ""
) -> dict[str, Any]:
    """The report's record of what ``int8_model`` computes in float: per reason, the nodes and their MAC share.

    ``macs``: ``node_macs`` of the FP32 graph it was quantized from. ``reasons``: node name or op type → why it
    was asked for (the first that names a node wins); any other float compute op was ``BY_QUANTIZER``
    (``quantizer`` names it, e.g. ``nvidia-modelopt onnx ptq``).
    """
    ops = {n.name: n.op_type for n in int8_model.graph.node if n.op_type in COMPUTE_OPS}
    kept = float_compute_nodes(int8_model)
    by_reason: dict[str, list[str]] = {}
    for n in kept:
        why = reasons.get(n) or reasons.get(ops[n]) or (f"{BY_QUANTIZER} ({quantizer})" if quantizer else BY_QUANTIZER)
        by_reason.setdefault(why, []).append(n)
    return {
        "compute_ops": len(ops),
        "kept": len(kept),
        "mac_share": mac_share(macs, kept),
        "by_reason": [{"why": w, "nodes": ns, "mac_share": mac_share(macs, ns)} for w, ns in by_reason.items()],
    }


def precision_markdown(artifacts: dict[str, dict[str, Any]]) -> list[str]:
    """The export report's section on what each INT8 model keeps in higher precision (``kept_in_float`` records
    under ``artifacts[name]["kept_in_float"]``); no lines when no artifact has one."""
    rows = [(name, a["kept_in_float"]) for name, a in artifacts.items() if a.get("kept_in_float")]
    if not rows:
        return []
    lines = [
        "## Kept in higher precision in the INT8 models",
        "",
        "Compute ops (Conv, MatMul, Gemm) whose input is not an int8 tensor, read from each written graph: TensorRT "
        "runs them in FP16 in the TensorRT-shaped model, ONNX Runtime in FP32 in the CPU model.",
        "",
        "| file | compute ops in float | share of the multiply-accumulates |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {r['kept']} of {r['compute_ops']} | {r['mac_share']:.1%} |" for name, r in rows]
    lines.append("")
    for name, r in rows:
        for g in r["by_reason"]:
            shown = ", ".join(f"`{n}`" for n in g["nodes"][:MARKDOWN_NODES])
            more = len(g["nodes"]) - MARKDOWN_NODES
            lines.append(
                f"- {name}, {g['why']}: {len(g['nodes'])} ({g['mac_share']:.1%} of the MACs): {shown}"
                + (f" and {more} more (export_report.json)" if more > 0 else "")
            )
    lines.append("")
    return lines
