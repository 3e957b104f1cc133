"""Post-training INT8 agreement with FP32 on unseen synthetic faces, per backbone and training seed.

    python benchmarks/bench_int8_backbones.py --models tiny,tiny_silu,edge,edge_resnet --seeds 0,1 \\
        --seeds-for edge=0 --seeds-for edge_resnet=0 --json benchmarks/results/int8_backbones.json

For each model and seed, with the CLI a user has: ``data synth`` (training set, seed 0), ``train`` (its
``--config``, default ``configs/synth-tiny.toml``, with ``--model`` and ``--seed``), ``calib build`` (512 frames
from the model's own training split), ``export --int8 --int8-target cpu --calib`` (PTQ only: no QAT, no
fallback). Then FP32, the TensorRT-shaped Q/DQ model (run on ONNX Runtime, FP16 upcast, each node as written: see
``onnx_export.run_onnx``; also through ONNX Runtime's fused integer kernels, the column "fused", for comparison) and
the CPU INT8 model and NNCF's plain INT8 of the same FP32 model on the same calibration frames (the other CPU route)
are run on every frame of a synthetic set of another seed (default 1,500 faces, seed 7) that no step saw; the table
gives top-1 expression agreement with FP32, the share of faces FP32 itself barely decides (its two most probable
expressions within ``export.compare.NEAR_TIE_GAP`` = 0.05 of each other: "ties") and agreement on the other faces ("dec"),
and, as a yardstick, FP32's agreement with itself when N(0, 1/255) pixel noise is added to every face ("px 1/255":
how far a camera's noise alone moves the same model). Steps
whose outputs exist under ``--work`` are reused, so an interrupted run resumes. Wall-clock training time is printed
for orientation only. ``--latency`` then times every listed model's FP32 and CPU INT8 ONNX side by side.

On real faces (FER+, issue 22's comparison of ``edge`` backbones), train on an imported dataset whose validation
split is held out of FER+ train (``edge-affect data import runs/ferplus-hold --train .../ferplus_train.npz
--hold-out 3000 --weak-targets``: the split that decides), calibrate on its training split and judge on FER+
valid (which then chooses nothing), from the last epoch of a fixed schedule (``best.pt`` is not used with
``--train-data``: a training run's validation split may be the judged set):

    python benchmarks/bench_int8_backbones.py --models edge,edge_resnet --seeds 0 --epochs 1 \\
        --train-data runs/ferplus-hold --test-data ../shared/data/ferplus/ferplus_valid.npz \\
        --config configs/ferplus-edge-short.toml --cache-dir runs/cache-ferplus-hold-112 \\
        --work runs/bench_int8_backbones_ferplus --json benchmarks/results/int8_backbones_ferplus.json

Rows then also give expression accuracy of FP32 and of each INT8 model (FER+: majority label, faces whose
majority is unknown / not-a-face left out). Every row gives the training run's own validation metrics at the
judged checkpoint (``val_expr_acc``, ``val_p``).
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
    """A synthetic set of ``n`` faces of ``seed`` in ``out``: made once, reused only when its ``synth.json`` agrees."""
    if not out.exists():
        _run([*EA, "data", "synth", str(out), "--n", str(n), "--seed", str(seed)])
    made = json.loads((out / "synth.json").read_text()) if (out / "synth.json").is_file() else {}
    if (made.get("n"), made.get("seed")) != (n, seed):
        raise SystemExit(
            f"bench_int8_backbones: {out} holds n={made.get('n')} seed={made.get('seed')} (synth.json), asked for "
            f"n={n} seed={seed}: give another --work or the set's own --n-train/--n-test"
        )
    return out


def _split_sizes(root: Path) -> dict:
    """Faces per split of a synthetic set as written (``synth.json``): what the rows were trained and judged on."""
    made = json.loads((root / "synth.json").read_text())
    return {k: made[k] for k in ("n", "seed", "train", "val", "videos")}


def _test_frames(root: Path, pp, synthetic: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames and expression labels (-1: none) to judge on: both splits of a synthetic set, else ``root`` as given."""
    from edge_affect.export.compare import load_eval_set

    if synthetic:
        return np.concatenate([load_eval_set(root, pp, split).x for split in ("train", "val")]), None
    ev = load_eval_set(root, pp)
    return ev.x, (ev.labels.expr if ev.labels is not None else None)


def _accuracy(out: dict[str, np.ndarray], y: np.ndarray | None) -> float | None:
    from edge_affect.metrics import expr_accuracy

    return expr_accuracy(out["expr"].argmax(1), y) if y is not None else None


#: How the Q/DQ column was measured; rows measured otherwise (before the unfused evaluation) are measured again.
QDQ_EVAL = "unfused"


def _qdq_fused(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The Q/DQ model upcast to FP32 through ONNX Runtime with all graph optimisations (its fused int8 kernels)."""
    import onnx

    from edge_affect.export.onnx_export import run_onnx, upcast_fp16

    return run_onnx(upcast_fp16(onnx.load(str(path))), x)  # a ModelProto, not emulated: optimised as given


def _agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray], where: np.ndarray | None = None) -> float:
    same = a["expr"].argmax(1) == b["expr"].argmax(1)
    return float(np.mean(same if where is None else same[where]))


def _nncf_int8(fp32: Path, dst: Path, calib_dir: Path, pp) -> None:
    """NNCF's plain post-training INT8 of ``fp32`` on the calibration side of the split ``export`` makes."""
    from edge_affect.export.gates import export_split
    from edge_affect.export.nncf_int8 import quantize_cpu_nncf

    quantize_cpu_nncf(fp32, dst, export_split(calib_dir, pp).calib)


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it (as the documented commands give it), else as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _last_epoch(run: Path) -> dict:
    """The last row of the training run's ``metrics.jsonl`` (empty when it has none yet)."""
    log = run / "metrics.jsonl"
    lines = [line for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _trained(run: Path, epochs: int) -> bool:
    """Whether the training run in ``run`` completed its ``epochs`` (its metrics log reached the last one)."""
    return _last_epoch(run).get("epoch") == epochs and (run / "best.pt").is_file()


def _own_validation(run: Path, ckpt: Path) -> dict:
    """The training run's validation expression accuracy and P at ``ckpt``'s epoch (best.json or the last row)."""
    val = json.loads((run / "best.json").read_text())["val"] if ckpt.name == "best.pt" else _last_epoch(run)["val"]
    return {"val_expr_acc": val.get("expr_acc"), "val_p": val.get("p")}


def _layout(net) -> str:
    """The backbone's activations and whether it has squeeze-excitation, read from the built modules."""
    from torch import nn

    acts = sorted({type(m).__name__ for m in net.backbone.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))})
    se = any("SqueezeExcite" in type(m).__name__ for m in net.backbone.modules())
    return "/".join(acts) + (", SE" if se else ", no SE")


def one_run(model: str, seed: int, args: argparse.Namespace, train_root: Path, test_root: Path) -> dict:
    synthetic = args.train_data is None
    from edge_affect.export.compare import onnx_cpu_runner
    from edge_affect.models.checkpoint import load_checkpoint
    from edge_affect.models.registry import get_config
    from edge_affect.models.task_token import count_macs, count_params

    work = args.work / f"{model}-{get_config(model).backbone}-s{seed}"
    # synthetic: best.pt is chosen on the training set's own validation split (another seed is judged);
    # otherwise the last epoch, since the training run's validation split may be the judged set
    ckpt = work / "train" / ("best.pt" if synthetic else "last.pt")
    train_s = None  # None: the run was found trained (here earlier, or on another machine), not timed now
    if not _trained(work / "train", args.epochs):
        t0 = time.perf_counter()
        extra = ["--cache-dir", str(args.cache_dir)] if args.cache_dir else []
        if (work / "train" / "last.pt").is_file():
            extra.append("--resume")  # an interrupted run continues where it stopped
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
                *extra,
            ]
        )
        train_s = round(time.perf_counter() - t0, 1)
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
    x, y = _test_frames(test_root, meta.preprocess, synthetic)
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
    # the yardstick: FP32 against itself on the same faces under N(0, 1/255) pixel noise (fixed seed), as parity gives it
    from edge_affect.export.compare import sensor_noise

    _, fp32 = onnx_cpu_runner(export / "model.onnx", "fp32")
    outs["pixel_noise"] = fp32(x + sensor_noise(x.shape, meta.preprocess))
    report = json.loads((export / "export_report.json").read_text())
    from edge_affect.export.compare import near_ties

    decided = ~near_ties(outs["model.onnx"]["expr"])
    row = {
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
        "agree_fp32_pixel_noise": _agreement(outs["model.onnx"], outs["pixel_noise"]),
        # how many faces FP32 itself barely decides, and agreement on the others (INT8 noise flips near ties)
        "near_tie_share": float(1 - decided.mean()),
        "agree_qdq_decided": _agreement(outs["model.onnx"], outs["model.int8.onnx"], decided),
        "agree_cpu_int8_decided": _agreement(outs["model.onnx"], outs["model.int8.cpu.onnx"], decided),
        "train_s": train_s,
        "calibration": report.get("calibration"),
        "checkpoint": ckpt.name,
        **_own_validation(work / "train", ckpt),
    }
    if y is not None:  # accuracy on the judged frames' labels: FP32 and each INT8 model
        row["labelled"] = int((y >= 0).sum())
        for key, name in (
            ("acc_fp32", "model.onnx"),
            ("acc_qdq", "model.int8.onnx"),
            ("acc_cpu_int8", "model.int8.cpu.onnx"),
            ("acc_cpu_int8_nncf", nncf_path.name),
        ):
            row[key] = _accuracy(outs[name], y)
    return row


def side_by_side_latency(per_model: dict[str, list[int]], args: argparse.Namespace, test_root: Path) -> dict:
    """ms per face of each listed model's FP32 and CPU INT8 ONNX (first listed seed), all timed in one run with
    ``bench_cpu_int8.latencies`` (one thread, batch 1 and 32, rounds interleaved so load hits every model alike)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_cpu_int8 import latencies

    from edge_affect.models.registry import get_config

    paths, names = [], []
    for model, seeds in per_model.items():
        export = args.work / f"{model}-{get_config(model).backbone}-s{seeds[0]}" / "export"
        for f in ("model.onnx", "model.int8.cpu.onnx"):
            paths.append(export / f)
            names.append(f"{model}/{f}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"bench_int8_backbones: --latency needs {missing[0]} (run without --latency first)")
    from edge_affect.export.onnx_export import read_onnx_meta

    # the listed models take the same input (the edge family: 112 px RGB); timed on frames of the judged set
    x, _ = _test_frames(test_root, read_onnx_meta(paths[0]).preprocess, args.train_data is None)
    name_of = {str(p): n for p, n in zip(paths, names, strict=True)}
    print(f"\n{'model':40s} {'batch':>5s} {'ms/face':>8s}")
    out: dict[str, dict[str, float]] = {}
    for r in latencies(paths, x[:32], [1, 32], [1], rounds=9, iters=10):
        print(f"{name_of[r['path']]:40s} {r['batch']:5d} {r['ms_per_face']:8.3f}")
        out.setdefault(name_of[r["path"]], {})[f"b{r['batch']}_ms_per_face"] = round(r["ms_per_face"], 4)
    return {"threads": 1, "rounds": 9, "models": out}


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
    ap.add_argument(
        "--train-data",
        type=Path,
        help="an imported dataset to train and calibrate on (default: a synthetic set of --n-train faces, seed 0); "
        "the last epoch's checkpoint is judged",
    )
    ap.add_argument(
        "--test-data",
        type=Path,
        help="frames to judge on: an .npz (images + labels or FER+ votes) or an ABAW root's val split "
        "(default: --n-test synthetic faces of --test-seed)",
    )
    ap.add_argument("--cache-dir", type=Path, help="packed image cache for training (edge-affect train --cache-dir)")
    ap.add_argument(
        "--latency",
        action="store_true",
        help="also time every listed model's FP32 and CPU INT8 ONNX side by side in one run (ONNX Runtime, one "
        "thread, batch 1 and 32, interleaved rounds; ms per face)",
    )
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_int8_backbones")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "int8_backbones.json")
    args = ap.parse_args()
    from edge_affect.artifact import atomic_write_text

    per_model = {m: [int(s) for s in args.seeds.split(",")] for m in args.models.split(",")}
    for spec in args.seeds_for:
        m, _, seeds = spec.partition("=")
        per_model[m] = [int(s) for s in seeds.split(",")]
    if (args.train_data is None) != (args.test_data is None):
        raise SystemExit("bench_int8_backbones: give --train-data and --test-data together (or neither: synthetic)")
    for given in (args.train_data, args.test_data):
        if given is not None and not given.exists():
            raise SystemExit(f"bench_int8_backbones: {given} does not exist")
    train_root = args.train_data or _synth(args.work / "data-train", args.n_train, 0)
    test_root = args.test_data or _synth(args.work / f"data-test-s{args.test_seed}", args.n_test, args.test_seed)
    sets = (
        {"train_set": _split_sizes(train_root), "test_set": _split_sizes(test_root)} if args.train_data is None else {}
    )
    before = json.loads(args.json.read_text()) if args.json.is_file() else {}
    rows = before.get("rows", [])
    from edge_affect.models.registry import get_config

    def key(r: dict) -> tuple:
        return (r["model"], r["backbone"], r["seed"], r["epochs"])

    # a listed row measured otherwise (older Q/DQ evaluation, no near-tie figures) is measured again from its kept
    # export and replaces the old one; rows of models not listed stay as they are
    done = {key(r) for r in rows if r.get("qdq_eval") == QDQ_EVAL and "agree_fp32_pixel_noise" in r}
    # seed by seed, models interleaved: an interrupted run still holds old and new backbones side by side
    for seed in sorted({s for seeds in per_model.values() for s in seeds}):
        for model in [m for m, seeds in per_model.items() if seed in seeds]:
            k = (model, get_config(model).backbone, seed, args.epochs)
            if k in done:
                continue
            rows = [r for r in rows if key(r) != k] + [one_run(model, seed, args, train_root, test_root)]
            result = {
                "rows": rows,
                "machine": platform.processor() or platform.machine(),
                **(
                    {
                        "n_train": args.n_train,
                        "n_test": args.n_test,
                        "test_seed": args.test_seed,
                        **sets,
                    }
                    if args.train_data is None
                    else {"train_data": str(args.train_data), "test_data": str(args.test_data)}
                ),
                "calib_n": args.calib_n,
                "config": _shown(args.config),
                # the last side-by-side timing (--latency) stays until --latency runs again
                **({"latency": before["latency"]} if "latency" in before else {}),
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
            r = rows[-1]
            print(
                f"{r['model']:10s} seed {r['seed']}: Q/DQ {r['agree_qdq']:.3f}  CPU INT8 {r['agree_cpu_int8']:.3f}",
                flush=True,
            )
    if args.latency:
        result = json.loads(args.json.read_text())
        result["latency"] = side_by_side_latency(per_model, args, test_root)
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    print(
        f"\n{'model':11s} {'backbone':24s} {'layout':13s} {'seed':>4s} {'params M':>8s} {'MACs M':>6s} {'Q/DQ':>6s} "
        f"{'fused':>6s} {'CPU INT8':>8s} {'NNCF':>6s} {'ties':>5s} {'Q/DQ dec':>8s} {'CPU dec':>7s} {'px 1/255':>8s}"
    )
    for r in rows:
        acc = (
            ""
            if r.get("acc_fp32") is None
            else f"  accuracy FP32 {r['acc_fp32']:.3f} Q/DQ {r['acc_qdq']:.3f} CPU INT8 {r['acc_cpu_int8']:.3f}"
        )
        nan = float("nan")
        print(
            f"{r['model']:11s} {r['backbone']:24s} {r.get('layout', '?'):13s} {r['seed']:4d} {r['params_m']:8.3f} "
            f"{r['macs_m']:6.1f} {r['agree_qdq']:6.3f} {r['agree_qdq_fused']:6.3f} {r['agree_cpu_int8']:8.3f} "
            f"{r.get('agree_cpu_int8_nncf', nan):6.3f} {r.get('near_tie_share', nan):5.2f} "
            f"{r.get('agree_qdq_decided', nan):8.3f} {r.get('agree_cpu_int8_decided', nan):7.3f} "
            f"{r.get('agree_fp32_pixel_noise', nan):8.3f}{acc}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
