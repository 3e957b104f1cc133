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

from edge_affect.export.precision import node_macs

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


def without_quantizers(model: Any, nodes: list[str], pairs: dict[str, list[tuple[int, str]]] | None = None) -> Any:
    """A copy of ``model`` whose ``nodes`` read the float tensors in front of their Q/DQ pairs (others unchanged);
    ``pairs``: ``quantized_inputs(model)`` when the caller has it already."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    pairs = quantized_inputs(m) if pairs is None else pairs
    missing = [n for n in nodes if n not in pairs]
    if missing:
        raise ValueError(f"INT8 graph: no quantized node named {missing[0]!r}")
    wanted = set(nodes)
    for n in m.graph.node:
        if n.name in wanted:
            for i, src in pairs[n.name]:
                n.input[i] = src
    return m


def distance_to(model: Any, calib: np.ndarray, ref: dict[str, np.ndarray]) -> float:
    """``qat.distance_np`` of an INT8 Q/DQ graph (a file or a ``ModelProto``) on ``calib`` from ``ref``, the
    checkpoint's outputs there; run as the CPU parity runs it (FP16 parts upcast)."""
    from edge_affect.export.onnx_export import run_onnx
    from edge_affect.export.tensorrt_int8.qat import distance_np

    return distance_np(run_onnx(model, calib, emulate_fp16_in_fp32=True), ref)


def rank_nodes(model: Any, calib: np.ndarray, ref: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Every quantized node of ``model`` (an INT8 Q/DQ ``ModelProto``), tried alone in FP16 on ``calib`` against
    ``ref`` (the checkpoint's outputs on ``calib``): a list of {node, op, distance, gain, mac_share} with ``gain`` the
    share of the INT8 graph's distance that keeping the node in FP16 removes and ``mac_share`` its share of the
    model's multiply-accumulates (``node_macs``), best first."""
    from rich.progress import track

    base = distance_to(model, calib, ref)
    ops = {n.name: n.op_type for n in model.graph.node}
    macs = node_macs(model)
    total = sum(macs.values()) or 1
    pairs = quantized_inputs(model)
    rows = []
    for name in track(list(pairs), description="INT8 sensitivity", transient=True):
        d = distance_to(without_quantizers(model, [name], pairs), calib, ref)
        gain = (base - d) / base if base > 0 else 0.0
        rows.append(
            {"node": name, "op": ops[name], "distance": d, "gain": gain, "mac_share": macs.get(name, 0) / total}
        )
    rows.sort(key=lambda r: r["distance"])
    log.info(
        "INT8 sensitivity: %d quantized nodes on %d calibration frames, distance %.4g", len(rows), len(calib), base
    )
    return [{"base_distance": base, **r} for r in rows]
