"""Export step timings and ONNX Runtime CPU latency, FP32 vs FP16 vs INT8 (a table, then JSON).

    python benchmarks/bench_export.py --model edge              # untrained, seeded weights (speed only)
    python benchmarks/bench_export.py --checkpoint runs/x/best.pt --batches 1 32 --json out.json

The typed FP16 / Q/DQ INT8 graphs target TensorRT; on a CPU they are expected to be slower than FP32
(ONNX Runtime emulates them): the numbers show their numerics cost, not their GPU speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def latency_ms(path: Path, x: np.ndarray, threads: int, warmup: int, runs: int) -> dict[str, float]:
    from edge_affect.export.onnx_export import ort_session
    from edge_affect.schema import INPUT_NAME

    sess = ort_session(path, threads=threads)
    for _ in range(warmup):
        sess.run(None, {INPUT_NAME: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {INPUT_NAME: x})
        times.append((time.perf_counter() - t) * 1000)
    med = statistics.median(times)
    return {"median_ms": med, "p90_ms": float(np.percentile(times, 90)), "per_face_ms": med / len(x)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="registered model name (used when no --checkpoint)")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="export folder (default: a temp folder)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = all cores)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--parity-frames", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import torch

    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.models import count_params, create_model, save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            model = create_model(args.model)
            ckpt = save_checkpoint(Path(tmp) / f"{args.model}.pt", model)
        out = args.out or Path(tmp) / "export"
        t = time.perf_counter()
        rep = export_all(ExportRequest(ckpt, out, fp16=True, int8=True, parity_frames=args.parity_frames))
        total = time.perf_counter() - t
        from edge_affect.models import load_checkpoint

        model, meta = load_checkpoint(ckpt)
        s = meta.preprocess.input_size
        rng = np.random.default_rng(0)
        lat: dict[str, dict[str, dict[str, float]]] = {}
        for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
            lat[name] = {}
            for b in args.batches:
                x = rng.standard_normal((b, 3, s, s)).astype(np.float32)
                lat[name][str(b)] = latency_ms(out / name, x, args.threads, args.warmup, args.runs)
        result = {
            "model": meta.model_name,
            "params": count_params(model),
            "input_size": s,
            "exporter": rep.exporter,
            "export_total_s": round(total, 2),
            "timings_s": rep.timings_s,
            "sizes_kib": {k: round(v["size_bytes"] / 1024, 1) for k, v in rep.artifacts.items()},
            "parity": {c.artifact: {**{g.name: g.value for g in c.gates}, "passed": c.passed} for c in rep.comparisons},
            "ort_cpu_latency": lat,
            "threads": args.threads,
            "versions": rep.versions,
        }

    from rich.console import Console
    from rich.table import Table

    con = Console()
    t1 = Table("step", "seconds", title=f"export steps: {result['model']} ({result['params']:,} params, {s}×{s})")
    for k, v in result["timings_s"].items():
        t1.add_row(k, f"{v:.2f}")
    con.print(t1)
    t2 = Table("artifact", "KiB", *[f"batch {b} ms (per face)" for b in args.batches], title="ONNX Runtime CPU latency")
    for name, per_b in lat.items():
        t2.add_row(
            name,
            f"{result['sizes_kib'].get(name, 0):.0f}",
            *[f"{per_b[str(b)]['median_ms']:.2f} ({per_b[str(b)]['per_face_ms']:.2f})" for b in args.batches],
        )
    con.print(t2)
    text = json.dumps(result, indent=1, default=float)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
