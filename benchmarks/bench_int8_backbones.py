"""Post-training INT8 agreement with FP32 on unseen synthetic faces, per backbone and training seed.

    python benchmarks/bench_int8_backbones.py --models tiny,tiny_silu,edge,edge_resnet --seeds 0,1 \\
        --seeds-for edge=0 --seeds-for edge_resnet=0 --json benchmarks/results/int8_backbones.json

For each model and seed, with the CLI a user has: ``data synth`` (training set, seed 0), ``train`` (its
``--config``, default ``configs/synth-tiny.toml``, with ``--model`` and ``--seed``), ``calib build`` (512 frames
from the model's own training split), ``export --int8 --int8-target cpu --calib`` (PTQ only: no QAT, no
fallback). Then FP32, the TensorRT-shaped Q/DQ model (run on ONNX Runtime, FP16 upcast, each node as written: see
``onnx_export.run_onnx``; also through ONNX Runtime's fused integer kernels, the column "fused", for comparison) and
the CPU INT8 model
and NNCF's plain INT8 of the same FP32 model on the same calibration frames (the other CPU route) are run on
every frame of a synthetic set of another seed (default 1,500 faces, seed 7) that no step saw;
the table gives top-1 expression agreement with FP32. Steps whose outputs exist under ``--work`` are reused,
so an interrupted run resumes. Wall-clock training time is printed for orientation only.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EA = [sys.executable, "-m", "edge_affect.cli"]


def _run(args: list[str], ok: tuple[int, ...] = (0,)) -> None:
    print("+", " ".join(args[2:] if args[:2] == EA[:2] else args), flush=True)
    rc = subprocess.run(args, cwd=ROOT).returncode
    if rc not in ok:
        raise SystemExit(f"bench_int8_backbones: {' '.join(args)} exited {rc}")


def _synth(out: Path, n: int, seed: int) -> Path:
    if not out.exists():
        _run([*EA, "data", "synth", str(out), "--n", str(n), "--seed", str(seed)])
    return out


def _test_frames(root: Path, pp) -> np.ndarray:
    from edge_affect.export.compare import load_eval_set

    return np.concatenate([load_eval_set(root, pp, split).x for split in ("train", "val")])


#: How the Q/DQ column was measured; rows measured otherwise (before the unfused evaluation) are measured again.
QDQ_EVAL = "unfused"


def _qdq_fused(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The Q/DQ model upcast to FP32 through ONNX Runtime with all graph optimisations (its fused int8 kernels)."""
    import onnx

    from edge_affect.export.onnx_export import run_onnx, upcast_fp16

    return run_onnx(upcast_fp16(onnx.load(str(path))), x)  # a ModelProto, not emulated: optimised as given


def _agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.mean(a["expr"].argmax(1) == b["expr"].argmax(1)))


def _nncf_int8(fp32: Path, dst: Path, calib_dir: Path, pp) -> None:
    """NNCF's plain post-training INT8 of ``fp32`` on the calibration side of the split ``export`` makes."""
    from edge_affect.export.gates import export_split
    from edge_affect.export.nncf_int8 import quantize_cpu_nncf

    quantize_cpu_nncf(fp32, dst, export_split(calib_dir, pp).calib)


def _layout(net) -> str:
    """The backbone's activations and whether it has squeeze-excitation, read from the built modules."""
    from torch import nn

    acts = sorted({type(m).__name__ for m in net.backbone.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))})
    se = any("SqueezeExcite" in type(m).__name__ for m in net.backbone.modules())
    return "/".join(acts) + (", SE" if se else ", no SE")


def one_run(model: str, seed: int, args: argparse.Namespace, train_root: Path, test_root: Path) -> dict:
    from edge_affect.export.compare import onnx_cpu_runner
    from edge_affect.models.checkpoint import load_checkpoint
    from edge_affect.models.registry import get_config
    from edge_affect.models.task_token import count_macs, count_params

    work = args.work / f"{model}-{get_config(model).backbone}-s{seed}"
    ckpt = work / "train" / "best.pt"
    t0 = time.perf_counter()
    if not ckpt.is_file():
        _run(
            [
                *EA,
                "train",
                "--data",
                str(train_root),
                "--config",
                str(args.config),
                "--model",
                model,
                "--seed",
                str(seed),
                "--epochs",
                str(args.epochs),
                "--out",
                str(work / "train"),
            ]
        )
    train_s = time.perf_counter() - t0
    calib = work / "calib"
    if not (calib / "manifest.json").is_file():
        _run(
            [
                *EA,
                "calib",
                "build",
                str(train_root),
                "--split",
                "train",
                "--n",
                str(args.calib_n),
                "--out",
                str(calib),
                "--force",
            ]
        )
    export = work / "export"
    if not (export / "model.int8.cpu.onnx").is_file():
        # exit 1: a parity gate failed; the artifacts stay, and this benchmark judges them on its own frames
        _run(
            [*EA, "export", str(ckpt), "--out", str(export), "--int8", "--int8-target", "cpu", "--calib", str(calib)],
            ok=(0, 1),
        )
    net, meta = load_checkpoint(ckpt)
    nncf_path = work / "nncf.int8.cpu.onnx"
    if not nncf_path.is_file():  # the other CPU route, on the same calibration side of the same split
        _nncf_int8(export / "model.onnx", nncf_path, calib, meta.preprocess)
    x = _test_frames(test_root, meta.preprocess)
    outs = {}
    for path, precision in (
        (export / "model.onnx", "fp32"),
        (export / "model.int8.onnx", "int8"),
        (export / "model.int8.cpu.onnx", "int8"),
        (nncf_path, "int8"),
    ):
        _, runner = onnx_cpu_runner(path, precision)
        outs[path.name] = runner(x)
    outs["fused"] = _qdq_fused(export / "model.int8.onnx", x)
    report = json.loads((export / "export_report.json").read_text())
    return {
        "model": model,
        "backbone": net.config.backbone,
        "layout": _layout(net),
        "seed": seed,
        "epochs": args.epochs,
        "params_m": round(count_params(net) / 1e6, 3),
        "macs_m": round(count_macs(net) / 1e6, 1),
        "frames": int(len(x)),
        "agree_qdq": _agreement(outs["model.onnx"], outs["model.int8.onnx"]),
        "qdq_eval": QDQ_EVAL,
        "agree_qdq_fused": _agreement(outs["model.onnx"], outs["fused"]),
        "agree_cpu_int8": _agreement(outs["model.onnx"], outs["model.int8.cpu.onnx"]),
        "agree_cpu_int8_nncf": _agreement(outs["model.onnx"], outs[nncf_path.name]),
        "train_s": round(train_s, 1),
        "calibration": report.get("calibration"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,tiny_silu,edge,edge_silu", help="registered model names")
    ap.add_argument("--seeds", default="0,1", help="training seeds (every model)")
    ap.add_argument(
        "--seeds-for",
        action="append",
        default=[],
        metavar="MODEL=S,S",
        help="training seeds for one model (e.g. edge=0), overriding --seeds",
    )
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synth-tiny.toml")
    ap.add_argument("--n-train", type=int, default=3000, help="synthetic training faces (seed 0)")
    ap.add_argument("--n-test", type=int, default=1500, help="unseen synthetic faces")
    ap.add_argument("--test-seed", type=int, default=7)
    ap.add_argument("--calib-n", type=int, default=512)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_int8_backbones")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "int8_backbones.json")
    args = ap.parse_args()
    from edge_affect.artifact import atomic_write_text

    per_model = {m: [int(s) for s in args.seeds.split(",")] for m in args.models.split(",")}
    for spec in args.seeds_for:
        m, _, seeds = spec.partition("=")
        per_model[m] = [int(s) for s in seeds.split(",")]
    train_root = _synth(args.work / "data-train", args.n_train, 0)
    test_root = _synth(args.work / f"data-test-s{args.test_seed}", args.n_test, args.test_seed)
    rows = json.loads(args.json.read_text())["rows"] if args.json.is_file() else []
    from edge_affect.models.registry import get_config

    rows = [r for r in rows if r.get("qdq_eval") == QDQ_EVAL]  # older rows: measured again below
    done = {(r["model"], r["backbone"], r["seed"], r["epochs"]) for r in rows}
    # seed by seed, models interleaved: an interrupted run still holds old and new backbones side by side
    for seed in sorted({s for seeds in per_model.values() for s in seeds}):
        for model in [m for m, seeds in per_model.items() if seed in seeds]:
            if (model, get_config(model).backbone, seed, args.epochs) in done:
                continue
            rows.append(one_run(model, seed, args, train_root, test_root))
            result = {
                "rows": rows,
                "machine": platform.processor() or platform.machine(),
                "n_train": args.n_train,
                "n_test": args.n_test,
                "test_seed": args.test_seed,
                "calib_n": args.calib_n,
                "config": str(args.config.relative_to(ROOT)),
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
            r = rows[-1]
            print(
                f"{r['model']:10s} seed {r['seed']}: Q/DQ {r['agree_qdq']:.3f}  CPU INT8 {r['agree_cpu_int8']:.3f}",
                flush=True,
            )
    print(
        f"\n{'model':10s} {'backbone':28s} {'layout':14s} {'seed':>4s} {'params M':>8s} {'MACs M':>7s} {'Q/DQ':>6s} {'fused':>6s} {'CPU INT8':>8s} {'NNCF':>6s}"
    )
    for r in rows:
        print(
            f"{r['model']:10s} {r['backbone']:28s} {r.get('layout', '?'):14s} {r['seed']:4d} {r['params_m']:8.3f} {r['macs_m']:7.1f} "
            f"{r['agree_qdq']:6.3f} {r['agree_qdq_fused']:6.3f} {r['agree_cpu_int8']:8.3f} {r.get('agree_cpu_int8_nncf', float('nan')):6.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
