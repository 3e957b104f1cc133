"""CPU INT8 routes side by side on the same frames: ONNX Runtime ``quantize_static`` (today's route) against NNCF
(plain PTQ, and ``quantize_with_accuracy_control`` under ``--max-drop`` points).

    python benchmarks/bench_int8_nncf.py --data ../shared/data/ferplus/ferplus_valid.npz \\
        --json benchmarks/results/int8_nncf.json

Default: the shipped default model (``model.onnx``) and the shipped calibration set, split exactly as
``edge-affect export`` splits it (the calibration side sets the scales, the held-out gate side measures the
budget). Each INT8 model is judged on ``--data`` (FER+ test faces: top-1 agreement with FP32 and accuracy), and
timed against FP32 with ``bench_cpu_int8.latencies`` (median of interleaved rounds, batch 32, one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    from bench_cpu_int8 import latencies, load_labelled, predict_expr

    from edge_affect.artifact import atomic_write_text
    from edge_affect.calibration import default_calibration_dir
    from edge_affect.default import default_model
    from edge_affect.export.cpu_int8 import quantize_cpu_int8
    from edge_affect.export.gates import export_split
    from edge_affect.export.nncf_int8 import quantize_cpu_nncf
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.export.precision import node_macs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", type=Path, default=None, help="FP32 ONNX (default: the shipped default model)")
    ap.add_argument("--calib", type=Path, default=None, help="calibration set (default: the shipped one)")
    ap.add_argument("--data", type=Path, default=None, help=".npz with images + labels or FER+ votes")
    ap.add_argument("--max-drop", type=float, nargs="*", default=[0.5], help="budgets (points) to try")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_int8_nncf")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "int8_nncf.json")
    args = ap.parse_args()
    import onnx

    fp32 = args.fp32 or default_model("onnx")
    calib_dir = args.calib or default_calibration_dir()
    pp = read_onnx_meta(fp32).preprocess
    frames = export_split(calib_dir, pp)
    calib, gate = frames.calib, frames.gate.x
    args.out.mkdir(parents=True, exist_ok=True)
    macs = node_macs(onnx.load(str(fp32)))
    models: dict[str, Path] = {}
    info: dict[str, dict] = {}
    t = time.perf_counter()
    models["ort quantize_static"] = quantize_cpu_int8(fp32, args.out / "ort.int8.cpu.onnx", calib)
    info["ort quantize_static"] = {"seconds": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    models["nncf quantize"] = args.out / "nncf.int8.cpu.onnx"
    info["nncf quantize"] = quantize_cpu_nncf(fp32, models["nncf quantize"], calib, gate, macs=macs)
    info["nncf quantize"]["seconds"] = round(time.perf_counter() - t, 1)
    for budget in args.max_drop:
        name = f"nncf accuracy control {budget:g} pt"
        t = time.perf_counter()
        try:
            info[name] = quantize_cpu_nncf(
                fp32, args.out / f"nncf-{budget:g}.int8.cpu.onnx", calib, gate, budget, macs=macs
            )
            models[name] = args.out / f"nncf-{budget:g}.int8.cpu.onnx"
        except ValueError as e:
            info[name] = {"error": str(e)}
        info[name]["seconds"] = round(time.perf_counter() - t, 1)
    ref_gate = predict_expr(fp32, gate)
    for name, p in models.items():
        info[name]["gate_agreement"] = float(np.mean(predict_expr(p, gate) == ref_gate))
    if args.data:
        x, y = load_labelled(args.data, pp)
        ref = predict_expr(fp32, x)
        known = y >= 0 if y is not None else None
        if y is not None:
            info["fp32"] = {"accuracy": float(np.mean(ref[known] == y[known]))}
        for name, p in models.items():
            pred = predict_expr(p, x)
            info[name]["data_agreement"] = float(np.mean(pred == ref))
            if y is not None:
                info[name]["data_accuracy"] = float(np.mean(pred[known] == y[known]))
        x_time = x[:32]
    else:
        x_time = gate[:32]
    rows = latencies([fp32, *models.values()], x_time, [32], [1], args.rounds, args.iters)
    by_path = {r["path"]: r["ms_per_face"] for r in rows}
    for name, p in models.items():
        info[name]["ms_per_face_b32_t1"] = by_path[str(p)]
        info[name]["speedup_vs_fp32"] = by_path[str(fp32)] / by_path[str(p)]
    res = {
        "fp32": str(fp32),
        "calibration": str(calib_dir),
        "calibration_frames": int(len(calib)),
        "gate_frames": int(len(gate)),
        "data": str(args.data) if args.data else None,
        "fp32_ms_per_face_b32_t1": by_path[str(fp32)],
        "loadavg": list(os.getloadavg()),
        "routes": info,
    }
    atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
    print(f"{'route':32s} {'gate agree':>10s} {'data agree':>10s} {'data acc':>8s} {'x FP32':>7s} {'FP32 ops':>8s}")
    for name, d in info.items():
        if name == "fp32":
            continue
        print(
            f"{name:32s} {d.get('gate_agreement', float('nan')):10.4f} {d.get('data_agreement', float('nan')):10.4f} "
            f"{d.get('data_accuracy', float('nan')):8.4f} {d.get('speedup_vs_fp32', float('nan')):7.2f} "
            f"{len(d.get('kept_float', [])):8d}" + (f"  {d['error']}" if "error" in d else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
