"""Which nodes of an INT8 Q/DQ graph cost the most accuracy (``edge-affect export --int8 --int8-fallback K``).

Each node that reads a Q/DQ pair is tried alone in FP16: its inputs are wired past their Q/DQ pairs (what ModelOpt's
``nodes_to_exclude`` does to a node), the graph runs on the calibration frames under ONNX Runtime (FP16 parts
upcast, as the CPU parity runs it), and its distance to the checkpoint's outputs is measured with
``qat.distance_np`` (KL on expression, binary KL on AUs, MSE on VA). The ranking lists the nodes by how much
closer each one alone brings the graph; ``--int8-fallback K`` re-quantizes with the K first kept in FP16 (TensorRT
then runs them in FP16, at their FP16 speed). Only calibration frames are used: the gates' frames never choose.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# nodes that read a quantized tensor only for its shape: keeping them FP16 changes nothing
_SHAPE_OPS = frozenset({"Shape", "Size"})


def quantized_inputs(model: Any) -> dict[str, list[tuple[int, str]]]:
    """Node name → [(input index, the float tensor in front of its Q/DQ pair)] for every named node that reads the
    output of a QuantizeLinear → DequantizeLinear pair (shape-only readers left out)."""
    prod = {o: n for n in model.graph.node for o in n.output}
    found: dict[str, list[tuple[int, str]]] = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type in _SHAPE_OPS or not n.name:
            continue
        pairs = []
        for i, x in enumerate(n.input):
            dq = prod.get(x)
            q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                pairs.append((i, q.input[0]))
        if pairs:
            found[n.name] = pairs
    return found


def without_quantizers(model: Any, nodes: list[str]) -> Any:
    """A copy of ``model`` whose ``nodes`` read the float tensors in front of their Q/DQ pairs (others unchanged)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    pairs = quantized_inputs(m)
    missing = [n for n in nodes if n not in pairs]
    if missing:
        raise ValueError(f"INT8 graph: no quantized node named {missing[0]!r}")
    wanted = set(nodes)
    for n in m.graph.node:
        if n.name in wanted:
            for i, src in pairs[n.name]:
                n.input[i] = src
    return m


def rank_nodes(model: Any, calib: np.ndarray, ref: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Every quantized node of ``model`` (an INT8 Q/DQ ``ModelProto``), tried alone in FP16 on ``calib`` against
    ``ref`` (the checkpoint's outputs on ``calib``): a list of {node, op, distance, gain} with ``gain`` the share of
    the INT8 graph's distance that keeping the node in FP16 removes, best first."""
    from rich.progress import track

    from edge_affect.export.onnx_export import ort_session, upcast_fp16
    from edge_affect.export.qat import distance_np
    from edge_affect.schema import INPUT_NAME, OUTPUT_NAMES

    x = np.ascontiguousarray(calib, dtype=np.float32)

    def distance(m: Any) -> float:
        sess = ort_session(upcast_fp16(m).SerializeToString())
        outs = [sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i : i + 64]}) for i in range(0, len(x), 64)]
        got = {k: np.concatenate([o[j] for o in outs]).astype(np.float32) for j, k in enumerate(OUTPUT_NAMES)}
        return distance_np(got, ref)

    base = distance(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    rows = []
    for name in track(list(quantized_inputs(model)), description="INT8 sensitivity", transient=True):
        d = distance(without_quantizers(model, [name]))
        rows.append({"node": name, "op": ops[name], "distance": d, "gain": (base - d) / base if base > 0 else 0.0})
    rows.sort(key=lambda r: r["distance"])
    log.info("INT8 sensitivity: %d quantized nodes on %d calibration frames, distance %.4g", len(rows), len(x), base)
    return [{"base_distance": base, **r} for r in rows]
