"""``edge-affect parity``: every artifact of an export folder compared with its PyTorch checkpoint, on the frames
the export was gated on (or ``--data``), by the gates of :mod:`edge_affect.export.compare`."""

from __future__ import annotations

import json
from pathlib import Path

from edge_affect.export.compare import (
    Comparison,
    Gates,
    ParityReport,
    compare_artifact,
    load_eval_set,
    onnx_cpu_runner,
    sensor_noise_yardstick,
)
from edge_affect.export.gates import recorded_gate_set
from edge_affect.export.onnx_export import read_onnx_meta, run_torch
from edge_affect.export.tensorrt_build import tensorrt_unavailable_reason, trt_run
from edge_affect.formats import FORMATS, REPORT_JSON
from edge_affect.models import load_checkpoint

__all__ = ["run_parity"]


def run_parity(
    export_dir: str | Path,
    data: str | Path | None = None,
    split: str = "val",
    checkpoint: str | Path | None = None,
    gates: Gates | None = None,
    limit: int | None = None,
    engines: bool = True,
) -> ParityReport:
    """Compare every artifact in ``export_dir`` (ONNX via ONNX Runtime; engines where TensorRT runs) with the
    PyTorch checkpoint on ``data`` (default: the shipped calibration frames)."""
    gates = gates if gates is not None else Gates()
    d = Path(export_dir)
    fp32 = d / FORMATS["onnx"].filename
    if not fp32.is_file():
        raise FileNotFoundError(f"export folder {d} has no {FORMATS['onnx'].filename}")
    meta = read_onnx_meta(fp32)
    rep_path = d / REPORT_JSON
    try:
        export_rep = json.loads(rep_path.read_text(encoding="utf-8")) if rep_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{rep_path}: not valid JSON: {e}") from None
    if checkpoint is None:
        checkpoint = export_rep.get("checkpoint")
        if not checkpoint:
            raise FileNotFoundError(f"{d} has no {REPORT_JSON} naming the checkpoint; pass --checkpoint")
    gate_ev = None
    if data is None:  # the frames the export was gated on (held out from calibration), when still there
        gate_ev = recorded_gate_set(export_rep, meta.preprocess, limit)
    if data is None and gate_ev is None:  # an older export: the frames it was checked on
        calib = export_rep.get("calibration", {}).get("dir")
        data = calib if calib and Path(calib).is_dir() else None
    model, cmeta = load_checkpoint(checkpoint)
    if meta.checkpoint_sha256 and cmeta.checkpoint_sha256 != meta.checkpoint_sha256:
        raise ValueError(
            f"checkpoint {checkpoint} (sha256 {cmeta.checkpoint_sha256[:12]}) is not the one {fp32} was exported from ({meta.checkpoint_sha256[:12]})"
        )
    ev = gate_ev or load_eval_set(data, meta.preprocess, split, limit)
    ref = run_torch(model, ev.x)
    comps: list[Comparison] = []
    for fmt in FORMATS.values():
        p = d / fmt.filename
        if not p.is_file():
            continue
        if fmt.backend == "onnxruntime":
            backend, runner = onnx_cpu_runner(p, fmt.precision)
            comps.append(compare_artifact(fmt.filename, fmt.gate, backend, runner, ref, ev, meta.au_thresholds, gates))
        elif engines:
            why = tensorrt_unavailable_reason()
            if why:
                comps.append(Comparison(fmt.filename, fmt.gate, "tensorrt", 0, skipped=why))
                continue
            comps.append(
                compare_artifact(
                    fmt.filename,
                    fmt.gate,
                    "tensorrt",
                    lambda x, p=p: trt_run(p, x),
                    ref,
                    ev,
                    meta.au_thresholds,
                    gates,
                )
            )
    yardstick = None
    if any(c.precision == "int8" and not c.skipped for c in comps):  # INT8 flips read against a camera's noise
        yardstick = sensor_noise_yardstick(lambda z: run_torch(model, z), ref, ev.x, meta.preprocess)
    return ParityReport(str(d), ev.description, gates, comps, yardstick)
