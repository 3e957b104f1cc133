"""ONNX Runtime CPU: FP32 vs ONNX Runtime-native INT8 (``model.int8.cpu.onnx``), side by side in one run.

    python benchmarks/bench_cpu_int8.py runs/export/x/model.onnx runs/export/x/model.int8.cpu.onnx \\
        --data ../shared/data/ferplus/ferplus_valid.npz --json benchmarks/results/default_model_cpu_int8.json

ms per face at each batch size (default 1 and 32) and thread count (default 1 and 2), median of interleaved
rounds: every model runs once per round in turn, so a machine whose load changes during the run slows all of
them alike and the ratios stay fair. Ratios are FP32 time / INT8 time (> 1: INT8 is faster). More INT8
files may follow the first (recipe variants), each gets its own columns. With ``--data`` (an ``.npz`` with
``images`` and either ``labels`` or FER+ ``votes``): expression top-1 agreement with FP32 and accuracy
(FER+: majority label, faces whose majority is unknown / not-a-face left out). The optimized graph's integer
kernels (QLinearConv, QLinearMatMul, QGemm, MatMulInteger, ...) are listed per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def latencies(
    paths: list[Path], x: np.ndarray, batches: list[int], threads: list[int], rounds: int, iters: int
) -> list[dict]:
    """Median ms/face per (model, batch, threads); models interleaved round by round."""
    from edge_affect.schema import INPUT_NAME

    rows = []
    for t in threads:
        sessions = [_session(p, t) for p in paths]
        for b in batches:
            xb = np.ascontiguousarray(x[:b])
            if len(xb) < b:  # fewer frames than the batch: repeat them
                xb = np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))
            for s in sessions:  # warm-up (allocations, kernel selection)
                for _ in range(3):
                    s.run(None, {INPUT_NAME: xb})
            times: list[list[float]] = [[] for _ in paths]
            for _ in range(rounds):
                for i, s in enumerate(sessions):
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        s.run(None, {INPUT_NAME: xb})
                    times[i].append((time.perf_counter() - t0) * 1000 / iters / b)
            for p, ts in zip(paths, times, strict=True):
                rows.append(
                    {
                        "model": p.name if p.name not in {q.name for q in paths if q != p} else str(p),
                        "path": str(p),
                        "batch": b,
                        "threads": t,
                        "ms_per_face": statistics.median(ts),
                        "ms_per_face_min": min(ts),
                    }
                )
    return rows


def load_labelled(path: Path, pp) -> tuple[np.ndarray, np.ndarray | None]:
    """Preprocessed inputs and expression labels (-1 where none) of an ``.npz``."""
    from edge_affect.runtime.preprocess import prepare_batch

    d = np.load(path, allow_pickle=False)
    if "images" not in d.files:
        raise SystemExit(f"{path}: has no 'images' array")
    x = prepare_batch(list(d["images"]), pp)
    y = None
    if "votes" in d.files:
        from edge_affect.data.fer import ferplus_labels

        y = ferplus_labels(d["votes"], where=f"{path}: votes")[1]
    elif "labels" in d.files:
        y = d["labels"].astype(np.int64)
    return x, y


def predict_expr(path: Path, x: np.ndarray) -> np.ndarray:
    from edge_affect.schema import INPUT_NAME

    s = _session(path, 0)
    return np.concatenate([s.run(["expr"], {INPUT_NAME: x[i : i + 256]})[0] for i in range(0, len(x), 256)]).argmax(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32", type=Path, help="FP32 ONNX (model.onnx)")
    ap.add_argument("int8", type=Path, nargs="+", help="CPU INT8 ONNX (model.int8.cpu.onnx), more to compare")
    ap.add_argument("--data", type=Path, default=None, help=".npz with images + labels or FER+ votes")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median taken)")
    ap.add_argument("--iters", type=int, default=20, help="calls per model per round")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edge_affect.export.onnx_export import read_onnx_meta

    paths = [args.fp32, *args.int8]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"{p} does not exist")
    pp = read_onnx_meta(args.fp32).preprocess
    x_eval, y = load_labelled(args.data, pp) if args.data else (None, None)
    if x_eval is None:
        rng = np.random.default_rng(0)
        x_eval = rng.standard_normal((max(args.batches), 3, pp.input_size, pp.input_size)).astype(np.float32)
    x_time = x_eval[: max(args.batches)]

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    rows = latencies(paths, x_time, args.batches, args.threads, args.rounds, args.iters)
    res: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "loadavg_before": list(load),
            "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
        },
        "onnxruntime": __import__("onnxruntime").__version__,
        "rounds": args.rounds,
        "iters": args.iters,
        "latency": rows,
        "models": {},
    }
    base = {(r["batch"], r["threads"]): r["ms_per_face"] for r in rows if r["path"] == str(args.fp32)}
    for r in rows:
        r["speedup_vs_fp32"] = base[(r["batch"], r["threads"])] / r["ms_per_face"]

    from edge_affect.export.cpu_int8 import integer_kernels
    from edge_affect.metrics import expr_accuracy

    ref = predict_expr(args.fp32, x_eval) if args.data else None
    for p in paths:
        m: dict = {"kernels": integer_kernels(p)}  # ops of ONNX Runtime's optimized CPU graph
        if ref is not None:
            got = predict_expr(p, x_eval)
            m["n"] = int(len(got))
            m["expr_top1_agreement"] = float((got == ref).mean())
            m["flipped"] = int((got != ref).sum())
            acc = expr_accuracy(got, y) if y is not None else None
            if acc is not None:
                m["accuracy"] = acc
                m["labelled"] = int((y >= 0).sum())
        res["models"][str(p)] = m
    if args.data is not None:
        res["data"] = str(args.data)
    acc0 = res["models"][str(args.fp32)].get("accuracy")

    names = {str(p): (p.name if sum(q.name == p.name for q in paths) == 1 else str(p)) for p in paths}
    print(f"ONNX Runtime {res['onnxruntime']} CPU, {res['machine']['cores']} cores, load {load[0]:.1f} (1-min)")
    print(f"{'model':<40} {'batch':>5} {'thr':>3} {'ms/face':>9} {'×FP32':>6}")
    for r in rows:
        print(
            f"{names[r['path']]:<40} {r['batch']:>5} {r['threads']:>3} {r['ms_per_face']:>9.3f} {r['speedup_vs_fp32']:>6.2f}"
        )
    print()
    print(f"{'model':<40} {'agree':>7} {'flipped':>7} {'acc':>7} {'Δacc pt':>8}  kernels")
    for p in paths:
        m = res["models"][str(p)]
        agree = f"{m['expr_top1_agreement']:.4f}" if "expr_top1_agreement" in m else "-"
        flipped = str(m.get("flipped", "-"))
        acc = f"{m['accuracy']:.4f}" if "accuracy" in m else "-"
        dacc = f"{100 * (m['accuracy'] - acc0):+.2f}" if "accuracy" in m and acc0 is not None else "-"
        kern = ", ".join(f"{k} {v}" for k, v in m["kernels"].items())
        print(f"{names[str(p)]:<40} {agree:>7} {flipped:>7} {acc:>7} {dacc:>8}  {kern}")
    if args.json:
        from edge_affect.artifact import atomic_write_text

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")  # a kill leaves the old file or the new
        print(f"results in {args.json}")
    else:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
