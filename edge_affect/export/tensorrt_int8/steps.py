"""The TensorRT-shaped INT8 model of an export, step by step (``export_all`` with ``--int8``): ModelOpt PTQ
(``int8.quantize_int8``), then with ``--int8-fallback K`` the K nodes that cost the most kept in FP16
(``sensitivity.rank_nodes`` on the calibration frames, then PTQ again), then with ``--qat`` the Q/DQ graph
fine-tuned (``qat.qat_int8``) and kept only when closer to the checkpoint than PTQ (``qat_keep``). Every choice
here is made on the calibration frames; the gate frames are judged later, in ``pipeline``."""

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
) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    """Write ``int8_path`` for ``req`` (an ``ExportRequest``); returns (fallback record, QAT record, the PTQ graph
    kept aside for the before/after figures or None), records empty when the step did not run."""
    import onnx

    from edge_affect.export.onnx_export import run_torch
    from edge_affect.export.tensorrt_int8.ptq import quantize_int8
    from edge_affect.export.tensorrt_int8.qat import round_sig
    from edge_affect.export.tensorrt_int8.sensitivity import distance_to

    def quantize(exclude: list[str]) -> None:
        quantize_int8(
            fp32_path,
            int8_path,
            calib,
            None,
            calib_info=calib_info,
            exclude=exclude,
            calibration_method=req.int8_calib_method or "max",
            keep_stem=not req.int8_quantize_stem,
        )

    t = time.perf_counter()
    quantize(list(req.int8_exclude))
    timings["int8_quantize"] = time.perf_counter() - t
    # the checkpoint's outputs on the calibration frames: what the fallback and the QAT keep are measured against
    ref = run_torch(model, calib) if req.int8_fallback or req.qat is not None else {}
    fallback: dict[str, Any] = {}
    if req.int8_fallback:
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
            "ranking": [
                {
                    "node": r["node"],
                    "op": r["op"],
                    "distance": round_sig(r["distance"]),
                    "gain": round(r["gain"], 4),
                    "mac_share": round(r["mac_share"], 4),
                }
                for r in rows[:SENSITIVITY_ROWS]
            ],
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


def int8_markdown(fallback: dict[str, Any], qat: dict[str, Any]) -> list[str]:
    """The export report's lines on the INT8 fallback and QAT steps."""
    lines = []
    if fallback:
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
