"""The TensorRT-shaped INT8 model of an export, step by step (``export_all`` with ``--int8``): ModelOpt PTQ
(``int8.quantize_int8``), then with ``--int8-fallback K`` the K nodes that cost the most kept in FP16
(``sensitivity.rank_nodes`` on the calibration frames, then PTQ again), or with ``--int8-max-drop POINTS`` as
many of that ranking's nodes as it takes to bring top-1 disagreement with FP32 on the gate frames within the
budget (``fallback_for_budget``), then with ``--qat`` the Q/DQ graph fine-tuned (``qat.qat_int8``) and kept only
when closer to the checkpoint than PTQ (``qat_keep``). Every choice here is made on the calibration frames,
except the budget's stopping point, which is measured where the budget is defined: on the gate frames (the
report says so)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SENSITIVITY_ROWS = 12  # ranked nodes kept in the report


def build_int8(
    req: Any,
    model: Any,
    meta: Any,
    fp32_path: Path,
    int8_path: Path,
    calib: np.ndarray,
    calib_info: dict[str, Any],
    timings: dict[str, float],
    gate: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    """Write ``int8_path`` for ``req`` (an ``ExportRequest``); returns (fallback record, QAT record, the PTQ graph
    kept aside for the before/after figures or None), records empty when the step did not run. ``gate``: the
    held-back frames ``req.int8_max_drop`` is measured on."""
    import onnx

    from edge_affect.export.onnx_export import run_torch
    from edge_affect.export.tensorrt_int8.ptq import quantize_int8
    from edge_affect.export.tensorrt_int8.qat import round_sig
    from edge_affect.export.tensorrt_int8.sensitivity import distance_to

    package_keep = package_fp16_nodes(meta)  # what the model's package keeps in FP16, under every choice below

    def quantize(exclude: list[str]) -> None:
        quantize_int8(
            fp32_path,
            int8_path,
            calib,
            None,
            calib_info=calib_info,
            exclude=[*package_keep, *(e for e in exclude if e not in package_keep)],
            calibration_method=req.int8_calib_method or "max",
            keep_stem=not req.int8_quantize_stem,
        )

    t = time.perf_counter()
    quantize(list(req.int8_exclude))
    timings["int8_quantize"] = time.perf_counter() - t
    # the checkpoint's outputs on the calibration frames: what the fallback and the QAT keep are measured against
    budget = getattr(req, "int8_max_drop", None)
    ref = run_torch(model, calib) if req.int8_fallback or req.qat is not None or budget is not None else {}
    fallback: dict[str, Any] = {}
    if budget is not None:
        if gate is None or len(gate) == 0:
            raise ValueError("--int8-max-drop: no gate frames to measure the drop on, expected held-back frames")
        t = time.perf_counter()
        fallback = fallback_for_budget(budget, quantize, list(req.int8_exclude), int8_path, fp32_path, calib, ref, gate)
        timings["int8_budget"] = time.perf_counter() - t
    elif req.int8_fallback:
        from edge_affect.export.tensorrt_int8.sensitivity import rank_nodes

        t = time.perf_counter()
        rows = rank_nodes(onnx.load(str(int8_path)), calib, ref)
        chosen = [r["node"] for r in rows if r["gain"] > 0][: req.int8_fallback]
        if chosen:
            quantize([*req.int8_exclude, *chosen])
        after = distance_to(int8_path, calib, ref)
        share = {r["node"]: r["mac_share"] for r in rows}
        fallback = {
            "k": int(req.int8_fallback),
            "frames": int(len(calib)),
            "kept_fp16": chosen,
            "kept_fp16_mac_share": round(sum(share[n] for n in chosen), 4),
            "distance_before": round_sig(rows[0]["base_distance"]) if rows else None,
            "distance_after": round_sig(after),
            "ranking": ranking_record(rows),
        }
        timings["int8_fallback"] = time.perf_counter() - t
    qat: dict[str, Any] = {}
    ptq_path = None
    if req.qat is not None:  # the PTQ graph itself fine-tuned (kept aside: figures beside the gates)
        from edge_affect.export.tensorrt_int8.qat import qat_int8

        t = time.perf_counter()
        ptq_path = int8_path.parent / ".qat" / "model.int8.ptq.onnx"
        ptq_path.parent.mkdir()
        shutil.copyfile(int8_path, ptq_path)
        qat = qat_int8(model, meta, int8_path, fp32_path, req.qat)
        timings["qat"] = time.perf_counter() - t
        t = time.perf_counter()
        qat["calibration_frames"] = qat_keep(req.qat.keep, calib, ref, ptq_path, int8_path)
        timings["qat_keep"] = time.perf_counter() - t
    return fallback, qat, ptq_path


def package_fp16_nodes(meta: Any) -> list[str]:
    """Node names a packaged model asks its TensorRT-shaped INT8 model to keep in FP16 (``package
    --int8-keep-fp16``, ``extra["int8_keep_fp16"]``); empty for other checkpoints."""
    from edge_affect.export.package import INT8_KEEP_FP16

    nodes = meta.extra.get(INT8_KEEP_FP16) or []
    if not isinstance(nodes, list) or not all(isinstance(n, str) and n for n in nodes):
        raise ValueError(f"checkpoint metadata {INT8_KEEP_FP16}={nodes!r:.80}: expected a list of ONNX node names")
    return list(nodes)


def package_fp16_record(meta: Any, fp32_path: Path) -> dict[str, Any]:
    """The report's record of the nodes the package keeps in FP16 and their share of the multiply-accumulates."""
    import onnx

    from edge_affect.export.package import INT8_KEEP_FP16, check_graph_nodes
    from edge_affect.export.precision import mac_share, node_macs

    nodes = package_fp16_nodes(meta)
    if not nodes:
        return {}
    # named for what they are (the package's list), not as an --int8-exclude the user never gave
    check_graph_nodes(fp32_path, nodes, f"the package's {INT8_KEEP_FP16}")
    return {"kept_fp16": nodes, "kept_fp16_mac_share": mac_share(node_macs(onnx.load(str(fp32_path))), nodes)}


def ranking_record(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first ``SENSITIVITY_ROWS`` rows of ``sensitivity.rank_nodes``, rounded for the report."""
    from edge_affect.export.tensorrt_int8.qat import round_sig

    return [
        {
            "node": r["node"],
            "op": r["op"],
            "distance": round_sig(r["distance"]),
            "gain": round(r["gain"], 4),
            "mac_share": round(r["mac_share"], 4),
        }
        for r in rows[:SENSITIVITY_ROWS]
    ]


def _drop_points(graph: Any, gate: np.ndarray, ref_top1: np.ndarray) -> float:
    """Top-1 expression disagreement (points) of a Q/DQ graph with ``ref_top1`` on ``gate``, run as the parity runs
    it (FP16 parts upcast)."""
    from edge_affect.export.onnx_export import run_onnx

    return 100.0 * float(np.mean(run_onnx(graph, gate, emulate_fp16_in_fp32=True)["expr"].argmax(1) != ref_top1))


def fallback_for_budget(
    max_drop: float,
    quantize: Any,
    exclude: list[str],
    int8_path: Path,
    fp32_path: Path,
    calib: np.ndarray,
    ref: dict[str, np.ndarray],
    gate: np.ndarray,
    max_nodes: int | None = None,
) -> dict[str, Any]:
    """The sensitivity fallback driven by a budget: keep in FP16 the fewest of the ranked nodes (ranking on the
    calibration frames against ``ref``, the checkpoint there) that bring top-1 disagreement with the FP32 model on
    ``gate`` within ``max_drop`` points; ``quantize(exclude)`` re-writes ``int8_path`` with nodes left out.

    The search runs on the PTQ graph with each candidate's Q/DQ pairs bypassed (what ModelOpt's exclusion does to
    a node), then the graph is quantized again with them excluded and re-measured; when re-calibration moved it
    back over the budget, the next node joins. Candidates go in ranking order: first the nodes whose FP16 alone
    lowers the calibration distance, then the others (a node that does not help alone can tip a gate frame
    together with the ones before it). A budget not met with every ranked node (at most ``max_nodes``) in FP16 is
    a one-line ``ValueError``. Returns the record the report shows."""
    import onnx

    from edge_affect.export.onnx_export import run_onnx
    from edge_affect.export.tensorrt_int8.qat import round_sig
    from edge_affect.export.tensorrt_int8.sensitivity import quantized_inputs, rank_nodes, without_quantizers

    ref_top1 = run_onnx(fp32_path, gate)["expr"].argmax(1)
    ptq = onnx.load(str(int8_path))
    before = drop = _drop_points(ptq, gate, ref_top1)
    rows: list[dict[str, Any]] = []
    chosen: list[str] = []
    if drop > max_drop + 1e-9 and max_nodes != 0:
        rows = rank_nodes(ptq, calib, ref)
        candidates = [r["node"] for r in rows][:max_nodes]  # by distance: the helpful ones (gain > 0) first
        pairs = quantized_inputs(ptq)
        k = 0
        while drop > max_drop + 1e-9 and k < len(candidates):  # on the PTQ graph: no re-calibration per try
            k += 1
            drop = _drop_points(without_quantizers(ptq, candidates[:k], pairs), gate, ref_top1)
        while k:  # the real thing: quantized again with them excluded
            chosen = candidates[:k]
            quantize([*exclude, *chosen])
            drop = _drop_points(onnx.load(str(int8_path)), gate, ref_top1)
            if drop <= max_drop + 1e-9 or k == len(candidates):
                break
            k += 1
    share = {r["node"]: r["mac_share"] for r in rows}
    record = {
        "max_drop_points": float(max_drop),
        "gate_frames": int(len(gate)),
        "drop_points_before": round(before, 3),
        "drop_points": round(drop, 3),
        "frames": int(len(calib)),
        "kept_fp16": chosen,
        "kept_fp16_mac_share": round(sum(share[n] for n in chosen), 4),
        "ranking": ranking_record(rows),
    }
    if rows:
        record["distance_before"] = round_sig(rows[0]["base_distance"])
    if drop > max_drop + 1e-9:
        limit = "" if max_nodes is None else f", at most {max_nodes} allowed"
        raise ValueError(
            f"--int8-max-drop {max_drop:g}: unreachable for the TensorRT INT8 model, it still disagrees with FP32 on "
            f"{drop:.2f} points of the {len(gate)} gate frames with {len(chosen)} nodes kept in FP16 "
            f"({100 * record['kept_fp16_mac_share']:.0f} % of MACs{limit}); expected a larger budget, or ship FP16"
        )
    log.info(
        "INT8 budget %.3g points: %.2f → %.2f points on %d gate frames, %d nodes in FP16 (%.1f %% of MACs)",
        max_drop,
        before,
        drop,
        len(gate),
        len(chosen),
        100 * record["kept_fp16_mac_share"],
    )
    return record


def qat_keep(
    keep: str, calib: np.ndarray, ref: dict[str, np.ndarray], ptq_path: Path, qat_path: Path
) -> dict[str, Any]:
    """PTQ and QAT graphs side by side on the calibration frames (QAT never trained on them, the gates never judge
    them): their distance to ``ref``, the checkpoint's outputs there. With ``keep="closer"`` the PTQ graph replaces
    the fine-tuned one unless the fine-tuned one is closer. Returns the record for the report."""
    from edge_affect.export.tensorrt_int8.qat import round_sig
    from edge_affect.export.tensorrt_int8.sensitivity import distance_to

    d_ptq, d_qat = distance_to(ptq_path, calib, ref), distance_to(qat_path, calib, ref)
    kept = keep == "always" or d_qat < d_ptq
    if not kept:
        shutil.copyfile(ptq_path, qat_path)
        log.warning(
            "QAT: not closer to the checkpoint than PTQ on the %d calibration frames (%.4g vs %.4g): PTQ ships",
            len(calib),
            d_qat,
            d_ptq,
        )
    return {
        "n": int(len(calib)),
        "distance_ptq": round_sig(d_ptq),
        "distance_qat": round_sig(d_qat),
        "keep": keep,
        "qat_kept": kept,
    }


def int8_markdown(fallback: dict[str, Any], qat: dict[str, Any], package: dict[str, Any] | None = None) -> list[str]:
    """The export report's lines on the nodes the package keeps in FP16, the INT8 fallback and QAT steps."""
    lines = []
    if package:
        kept = ", ".join(f"`{n}`" for n in package["kept_fp16"])
        lines.append(
            f"- kept in FP16 in the TensorRT-shaped INT8 model as the model's package asks (`int8_keep_fp16` in its "
            f"metadata, `package --int8-keep-fp16`): {kept} ({package['kept_fp16_mac_share']:.1%} of the "
            f"multiply-accumulates)"
        )
    if fallback and "max_drop_points" in fallback:
        kept = ", ".join(f"`{n}`" for n in fallback["kept_fp16"]) or "none (PTQ met it)"
        lines.append(
            f"- INT8 budget (--int8-max-drop {fallback['max_drop_points']:g}): top-1 disagreement with FP32 on the "
            f"{fallback['gate_frames']} gate frames {fallback['drop_points_before']:.2f} → "
            f"{fallback['drop_points']:.2f} points; kept in FP16 (ranked on the calibration frames, the count chosen "
            f"on the gate frames, so the expression gate above is not an independent check): {kept} "
            f"({fallback['kept_fp16_mac_share']:.1%} of the model's multiply-accumulates, run in FP16 by TensorRT)"
        )
    elif fallback:
        kept = ", ".join(f"`{n}`" for n in fallback["kept_fp16"]) or "none (no node brought it closer)"
        lines.append(
            f"- INT8 fallback (--int8-fallback {fallback['k']}): kept in FP16, chosen on the {fallback['frames']} "
            f"calibration frames: {kept} ({fallback['kept_fp16_mac_share']:.1%} of the model's multiply-accumulates, "
            f"which TensorRT then runs in FP16); distance to the checkpoint on those frames "
            f"{fallback['distance_before']} → {fallback['distance_after']} (ranking below)"
        )
    if qat:
        fl, dist = qat.get("loss_fixed_batches", {}), qat.get("distill_fixed_batches", {})
        lines.append(
            f"- INT8 after QAT (the PTQ graph fine-tuned in place): {qat.get('steps', 0)} steps on "
            f"{qat.get('data', '')} {qat.get('split', '')}; on {fl.get('frames', 0)} fixed frames, distance to the "
            f"FP32 checkpoint {dist.get('before')} → {dist.get('after')}, task loss {fl.get('before')} → "
            f"{fl.get('after')}; gates compare it with the checkpoint"
        )
        c = qat.get("calibration_frames")
        if c:
            lines.append(
                f"- QAT {'kept' if c.get('qat_kept') else 'NOT kept, PTQ ships'} (keep={c.get('keep')}): distance "
                f"to the checkpoint on the {c.get('n')} calibration frames (not trained on, not gating) PTQ "
                f"{c.get('distance_ptq')}, QAT {c.get('distance_qat')}"
            )
        b = qat.get("ptq_on_gate_frames")
        if b:
            lines.append(
                f"- PTQ alone on the same {b.get('n')} gate frames (before QAT; recorded, not gating): expression "
                f"agreement {b.get('expr_top1_agreement')} ({b.get('expr_top1_flipped')} flipped), AU "
                f"{b.get('au_decision_agreement')}, VA CCC {b.get('va_ccc_min')}"
            )
    return lines


def sensitivity_markdown(fallback: dict[str, Any]) -> list[str]:
    """The ranking table: each node alone in FP16, its distance to the checkpoint and the share it removes."""
    if not fallback.get("ranking"):
        return []
    lines = [
        f"## INT8 sensitivity (each node alone in FP16, on the {fallback['frames']} calibration frames; "
        f"INT8 distance {fallback['distance_before']})",
        "",
        "| node | op | distance | share removed | share of MACs |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['node']}` | {r['op']} | {r['distance']} | {r['gain']:.1%} | {r['mac_share']:.1%} |"
        for r in fallback["ranking"]
    ]
    return [*lines, ""]
