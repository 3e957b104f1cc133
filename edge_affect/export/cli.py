"""CLI: ``edge-affect export``, ``package``, ``build-engine``, ``parity`` (thin: parse, call, print); ``calib`` is
``edge_affect.calibration.cli``.

Imports nothing heavy at module level, so the base (runtime-only) install still builds the parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_affect.artifact import ALIGN_VIEWS
from edge_affect.cliutil import float_range, hidden_alias, int_range
from edge_affect.export.capture import CAPTURE_LOG
from edge_affect.export.gates import DEFAULT_HOLDOUT
from edge_affect.formats import FORMATS, TARGET_DESCRIPTIONS
from edge_affect.iopaths import declare

#: Artifact file names by format key (help texts name the files the table names).
_FILE = {k: f.filename for k, f in FORMATS.items()}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the export, package, build-engine and parity subcommands."""
    p = sub.add_parser(
        "export",
        help="checkpoint → ONNX (FP32, FP16, INT8), TensorRT engines, Triton repo",
        description="Writes the artifacts and export_report.{json,md}; exits 1 when a parity gate fails "
        "(artifacts stay for inspection), 2 on errors (nothing is left behind).",
    )
    p.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        default=None,
        help="checkpoint (.pt or safetensors) written by edge-affect train (default: the shipped default model)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="target recipe (export/<target>.toml): precisions, batch range, workspace, DLA, version compatibility",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder: new, empty or an earlier export folder, which is replaced whole (default: "
        "runs/export/<model>-<sha256 prefix>, one folder per checkpoint)",
    )
    p.add_argument(
        "--fp16",
        action="store_true",
        help=f"also write {_FILE['onnx-fp16']} (FP16 inside, FP32 I/O; for TensorRT/GPUs)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help=f"also write {_FILE['onnx-int8']} (explicit Q/DQ from calibration frames, for TensorRT; = --int8-target "
        f"tensorrt); where TensorRT is not installed also {_FILE['onnx-int8-cpu']} (the CPU INT8 model)",
    )
    p.add_argument(
        "--calib",
        type=Path,
        default=None,
        help="calibration set folder (default: 512 frames sampled from the checkpoint's training data, kept in "
        "OUT/calibration; the shipped calibration/default for the shipped model; INT8 of a checkpoint whose "
        "training data is not here needs --calib)",
    )
    p.add_argument(
        "--engine", action="store_true", help="build TensorRT engines from the typed ONNX (needs TensorRT + GPU)"
    )
    p.add_argument("--batch", default="1:8:32", help="engine/Triton batch range MIN:OPT:MAX (default 1:8:32)")
    p.add_argument(
        "--workspace", type=int_range(16), default=1024, metavar="MIB", help="TensorRT workspace limit in MiB"
    )
    p.add_argument("--timing-cache", type=Path, default=None, help="TensorRT timing cache file (reused across builds)")
    p.add_argument("--version-compatible", action="store_true", help="build version-compatible engines")
    p.add_argument(
        "--dla",
        type=int_range(0, 1),
        default=None,
        metavar="CORE",
        help="Jetson: build for DLA core CORE (needs one batch size, e.g. --batch 1:1:1; GPU fallback unless "
        "--no-gpu-fallback)",
    )
    p.add_argument(
        "--no-gpu-fallback",
        dest="gpu_fallback",
        action="store_false",
        help="with --dla: fail the build when a layer cannot run on DLA instead of running it on the GPU",
    )
    p.add_argument("--triton", action="store_true", help="write a Triton model repository under OUT/triton/")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto", help="torch ONNX exporter")
    p.add_argument(
        "--int8-exclude",
        action="append",
        default=[],
        metavar="OP_OR_NODE",
        help="op type (e.g. MatMul) or node name to keep in FP16 in the INT8 model (repeatable)",
    )
    p.add_argument(
        "--int8-fallback",
        type=int_range(0, 10_000),
        default=0,
        metavar="K",
        help="also keep in FP16 the K quantized nodes that cost the INT8 model most, each tried alone in FP16 on "
        "the calibration frames (the report ranks them); default 0",
    )
    p.add_argument(
        "--int8-max-drop",
        type=float_range(0, 100),
        default=None,
        metavar="POINTS",
        help="every INT8 model: at most POINTS %% of the gate frames may change their top expression vs FP32; the "
        "CPU model through NNCF's accuracy-controlled quantization (the costliest ops back to FP32), the TensorRT "
        "model through the sensitivity ranking (the fewest nodes in FP16; replaces --int8-fallback K); the report "
        "lists what was kept and its share of MACs; a budget that cannot be met is an error",
    )
    p.add_argument(
        "--int8-calib-method",
        choices=("max", "entropy"),
        default=None,
        help="activation range calibration for INT8 (ModelOpt): max (default) or entropy",
    )
    p.add_argument(
        "--int8-quantize-stem",
        action="store_true",
        help="quantize the stem convolution that reads the image too (default: it stays FP16; quantizing it "
        "cost the default model 3 points of FER+ accuracy)",
    )
    p.add_argument(
        "--int8-target",
        action="append",
        choices=("tensorrt", "cpu"),
        default=None,
        help=f"INT8 model(s) to write (repeatable; adds to --int8): tensorrt = {_FILE['onnx-int8']} (what --int8 "
        f"writes), cpu = {_FILE['onnx-int8-cpu']} (ONNX Runtime integer kernels, no FP16; run/bench --precision int8)",
    )
    p.add_argument(
        "--eval-data",
        type=Path,
        default=None,
        metavar="DIR_OR_NPZ",
        help="frames the parity gates judge: calibration folder, .npz or ABAW root (default: a seeded "
        "--gate-holdout share of the calibration set, held out from calibration)",
    )
    p.add_argument("--eval-split", default="val", help="ABAW split when --eval-data is a dataset root")
    p.add_argument(
        "--gate-holdout",
        type=float_range(0, 1, lo_open=True, hi_open=True),
        default=DEFAULT_HOLDOUT,
        metavar="FRACTION",
        help=f"share of the calibration set held out for the gates when no --eval-data (default {DEFAULT_HOLDOUT:g})",
    )
    p.add_argument(
        "--parity-frames", type=int_range(1), default=None, help="gate frames used for the parity gates (default all)"
    )
    p.add_argument(
        "--qat",
        action="store_true",
        help="after the INT8 PTQ, fine-tune that Q/DQ graph (weights, activation scales) on --data's training split "
        "towards the checkpoint's outputs",
    )
    p.add_argument("--data", type=Path, default=None, help="ABAW dataset root the --qat fine-tune trains on")
    p.add_argument("--qat-steps", type=int_range(1, 1_000_000), default=300, help="QAT steps (default 300)")
    p.add_argument("--qat-batch", type=int_range(1, 4096), default=32, help="QAT batch size (default 32)")
    p.add_argument(
        "--qat-keep",
        choices=("closer", "always"),
        default="closer",
        help="closer (default): ship the fine-tuned INT8 graph only if it is closer to the checkpoint than PTQ on the "
        "calibration frames, else PTQ; always: ship the fine-tuned graph",
    )
    p.set_defaults(func=_export)
    declare(
        p,
        reads=("checkpoint", "profile", "calib", "eval_data", "data"),
        folders=("out",),
        updates=("timing_cache",),
        plain=("batch", "int8_exclude", "eval_split"),
    )

    k = sub.add_parser(
        "package",
        help="checkpoint → shippable model folder (model.safetensors + model.onnx + model.json)",
        description="The default model's layout: safetensors weights with metadata, FP32 ONNX from the same "
        "weights, and model.json (sizes, hashes, training record, evaluation).",
    )
    k.add_argument("checkpoint", type=Path, help="checkpoint written by edge-affect train (best.pt)")
    k.add_argument("--out", type=Path, required=True, help="new output folder")
    k.add_argument("--data", type=Path, default=None, help="training dataset root (its import.json align_template)")
    k.add_argument("--evaluation", type=Path, default=None, help="JSON of evaluation results to embed in model.json")
    k.add_argument("--description", default="", help="one line for model.json")
    k.add_argument(
        "--test-time-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each face with its mirror image at inference (in the graph; 2× MACs)",
    )
    k.add_argument(
        "--align-views",
        type=int,
        choices=ALIGN_VIEWS,
        default=None,
        help="views of each face's alignment the runtime averages for this model by default (N model runs per "
        "face; recorded in the metadata; run/serve --views overrides it; default: the checkpoint's, else 1)",
    )
    k.add_argument(
        "--expr-logit-adjust",
        type=float_range(0, 2),
        default=0.0,
        metavar="TAU",
        help="subtract TAU·log(training class prior) from the expression logits (rare classes; needs --data; "
        "measure it with benchmarks/bench_rare_classes.py; default 0 = off)",
    )
    k.add_argument(
        "--int8-keep-fp16",
        action="append",
        default=[],
        metavar="NODE",
        help="node of the packaged ONNX graph that export --int8 keeps in FP16 in this model's TensorRT-shaped "
        "INT8 model (repeatable; recorded in the metadata; names: an export report's sensitivity ranking)",
    )
    k.set_defaults(func=_package)
    declare(k, reads=("checkpoint", "data", "evaluation"), folders=("out",), plain=("description", "int8_keep_fp16"))

    e = sub.add_parser(
        "build-engine",
        help="build a TensorRT engine from a typed ONNX on this device (runtime install + TensorRT)",
        description="Engines are specific to the GPU and TensorRT version: build them on the device they run on.",
    )
    e.add_argument(
        "onnx", type=Path, help=f"{_FILE['onnx-fp16']} or {_FILE['onnx-int8']} written by edge-affect export"
    )
    e.add_argument("--out", type=Path, default=None, help="engine path (default: ONNX path with .engine)")
    e.add_argument("--profile", type=Path, default=None, help="target recipe (export/<target>.toml)")
    e.add_argument("--batch", default=None, help="batch range MIN:OPT:MAX (default: the profile's, else 1:8:32)")
    e.add_argument(
        "--workspace", type=int_range(16), default=None, metavar="MIB", help="TensorRT workspace limit in MiB"
    )
    e.add_argument("--timing-cache", type=Path, default=None, help="timing cache file (default: beside the ONNX)")
    e.add_argument(
        "--version-compatible", action="store_true", help="build a version-compatible engine (later TensorRT 10.x)"
    )
    e.add_argument("--dla", type=int_range(0, 1), default=None, metavar="CORE", help="Jetson: build for DLA core CORE")
    e.add_argument(
        "--no-gpu-fallback",
        dest="gpu_fallback",
        action="store_false",
        help="with --dla: fail when a layer cannot run on DLA (default: the profile's gpu_fallback, else fall back)",
    )
    e.set_defaults(func=_build_engine)
    declare(
        e,
        reads=("onnx", "profile"),
        writes=("out",),
        updates=("timing_cache",),
        plain=("batch",),
        extra_writes=_engine_files,
    )

    q = sub.add_parser(
        "parity", help="compare an export folder's artifacts with the PyTorch model; exit 1 if a gate fails"
    )
    q.add_argument("dir", type=Path, help="export folder (with model.onnx and export_report.json)")
    renamed = {}  # old spelling → the action it now names (hidden aliases, kept for one release)
    renamed["--data"] = q.add_argument(
        "--eval-data",
        dest="data",
        type=Path,
        default=None,
        metavar="PATH",
        help="frames to judge: calibration folder, ABAW root or .npz (default: the export's recorded gate frames)",
    )
    renamed["--split"] = q.add_argument(
        "--eval-split",
        dest="split",
        default="val",
        metavar="SPLIT",
        help="ABAW split when --eval-data is a dataset root",
    )
    q.add_argument(
        "--checkpoint", type=Path, default=None, help="PyTorch checkpoint (default: the one in export_report.json)"
    )
    renamed["--limit"] = q.add_argument(
        "--parity-frames",
        dest="limit",
        type=int_range(1),
        default=None,
        metavar="N",
        help="judge only the first N frames",
    )
    renamed["--no-engines"] = q.add_argument(
        "--no-engine", dest="no_engines", action="store_true", help="skip TensorRT engines"
    )
    for old, action in renamed.items():
        hidden_alias(q, old, action)
    q.set_defaults(func=_parity)
    declare(q, reads=("dir", "data", "checkpoint"), plain=("split",))


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(*header)
    for r in rows:
        t.add_row(*r)
    Console(width=None if sys.stdout.isatty() else 160).print(t)


def _gate_rows(comparisons: list) -> list[tuple[str, ...]]:
    rows = []
    for c in comparisons:
        if c.skipped:
            rows.append((c.artifact, c.backend, "-", "-", "-", f"skipped: {c.skipped}"))
        for g in c.gates:
            rows.append(
                (
                    c.artifact,
                    c.backend,
                    g.name,
                    f"{g.value:.6g}",
                    f"{g.op} {g.threshold:g}",
                    "pass" if g.passed else "FAIL",
                )
            )
    return rows


def _apply_profile(args: argparse.Namespace) -> str | None:
    """Fold an export recipe into ``args``; returns the on-device build hint when engines can't be built here."""
    if args.profile is None:
        return None
    from edge_affect.config import load_export_profile

    prof = load_export_profile(args.profile)
    if args.engine and not prof.build_engine_here:
        raise ValueError(
            f"{args.profile}: target {prof.target!r} builds engines on the device (build_engine_here = false); drop --engine"
        )
    args.fp16 = args.fp16 or "fp16" in prof.precisions
    args.batch = ":".join(str(b) for b in prof.batch)
    args.triton = args.triton or prof.triton
    if prof.target == CPU_TARGET:  # ONNX Runtime on CPU: the CPU-native INT8 model, no engines
        if "int8" in prof.precisions:
            args.int8_target = sorted({*(args.int8_target or []), "cpu"})
        return None
    args.int8 = args.int8 or "int8" in prof.precisions
    args.workspace = prof.workspace_mib
    args.version_compatible = args.version_compatible or prof.version_compatible
    args.dla = prof.dla_core if args.dla is None else args.dla
    args.gpu_fallback = args.gpu_fallback and prof.gpu_fallback
    args.engine = args.engine or prof.build_engine_here
    if prof.build_engine_here:
        return None
    flags = f"--profile {args.profile}"
    files = [FORMATS[k].filename for k, on in (("onnx-fp16", args.fp16), ("onnx-int8", args.int8)) if on]
    cmds = "; ".join(f"edge-affect build-engine {f} {flags}" for f in files)
    return (
        f"target {prof.target!r} (TensorRT {prof.tensorrt or '?'}): engines must be built on the device itself. "
        f"Copy {args.out}/ there and run: {cmds}"
    )


#: ``target`` of an export recipe for ONNX Runtime on CPU (``export/cpu.toml``): its INT8 is the CPU INT8 model.
CPU_TARGET = "cpu"

#: Parent of the default export folders (``--out`` not given).
DEFAULT_EXPORT_ROOT = Path("runs") / "export"


def default_export_dir(checkpoint: Path, default: bool = False) -> Path:
    """``runs/export/<name>-<sha256[:8]>``: one folder per checkpoint, so exporting it again replaces its own
    artifacts and never lands on another model's. ``<name>`` is ``default`` for the shipped model, else the
    checkpoint's file name (with its folder's for the generic ``best``/``last``/``model``)."""
    from edge_affect.artifact import sha256_file

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    name = checkpoint.stem
    if default:
        name = "default"
    elif name in ("best", "last", "model") and checkpoint.resolve().parent.name:
        name = f"{checkpoint.resolve().parent.name}-{name}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return DEFAULT_EXPORT_ROOT / f"{name}-{sha256_file(checkpoint)[:8]}"


def _cpu_int8_too(args: argparse.Namespace, targets: set[str]) -> set[str]:
    """``--int8`` without a recipe on a machine without TensorRT: also the CPU INT8 model, the one that runs fast
    here (the TensorRT-shaped one runs several times slower than FP32 on CPUs)."""
    if "tensorrt" not in targets or "cpu" in targets or args.profile is not None:
        return set()
    from edge_affect.export.tensorrt_build import tensorrt_unavailable_reason

    why = tensorrt_unavailable_reason()
    if not why:
        return set()
    print(
        f"no TensorRT here ({why}): writing {_FILE['onnx-int8-cpu']} too, the INT8 model for this CPU "
        f"(run/bench --precision int8 pick it); {_FILE['onnx-int8']} is for TensorRT / Jetson"
    )
    return {"cpu"}


def _export(args: argparse.Namespace) -> int:
    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.tensorrt_build import BatchRange

    default = args.checkpoint is None
    if default:
        from edge_affect.default import default_model

        args.checkpoint = default_model("safetensors")
    if args.out is None:
        args.out = default_export_dir(args.checkpoint, default=default)
    device_hint = _apply_profile(args)
    if default:
        print(f"no checkpoint given: exporting the default model {args.checkpoint} to {args.out}")
    # the flags add up: --int8 is the TensorRT-shaped model, each --int8-target adds its model
    targets = {*(args.int8_target or []), *(["tensorrt"] if args.int8 else [])}
    targets |= _cpu_int8_too(args, targets)
    qat = None
    if args.qat:
        from edge_affect.export.tensorrt_int8.qat import QatSettings

        if args.data is None or "tensorrt" not in targets:
            raise ValueError("--qat: expected --int8 and --data ROOT (the dataset the fine-tune trains on)")
        qat = QatSettings(args.data, steps=args.qat_steps, batch_size=args.qat_batch, keep=args.qat_keep)
    req = ExportRequest(
        checkpoint=args.checkpoint,
        out=args.out,
        fp16=args.fp16,
        int8="tensorrt" in targets,
        int8_cpu="cpu" in targets,
        eval_data=args.eval_data,
        eval_split=args.eval_split,
        gate_holdout=args.gate_holdout,
        calib=args.calib,
        engine=args.engine,
        batch=BatchRange.parse(args.batch),
        triton=args.triton,
        exporter=args.exporter,
        workspace_mib=args.workspace,
        version_compatible=args.version_compatible,
        dla_core=args.dla,
        gpu_fallback=args.gpu_fallback,
        timing_cache=args.timing_cache,
        parity_frames=args.parity_frames,
        int8_exclude=args.int8_exclude,
        int8_fallback=args.int8_fallback,
        int8_max_drop=args.int8_max_drop,
        int8_calib_method=args.int8_calib_method,
        int8_quantize_stem=args.int8_quantize_stem,
        qat=qat,
    )
    rep = export_all(req)
    _print_table(_gate_rows(rep.comparisons), ("artifact", "backend", "gate", "value", "threshold", "result"))
    g = rep.gate_frames
    print(f"gates judged {g.get('count', 0)} frames ({g.get('source', '')}), none used for calibration")
    for name, a in rep.artifacts.items():
        target = TARGET_DESCRIPTIONS.get(a.get("target", ""), "")
        print(f"{args.out / name}  {a['size_bytes'] / 1024:.1f} KiB  ({a['precision']}; for {target})")
    if rep.engines_skipped:
        print(f"TensorRT engines skipped: {rep.engines_skipped}")
    if device_hint:
        print(device_hint)
    print(f"exporter: {rep.exporter}; report: {args.out / 'export_report.md'}; {'PASS' if rep.passed else 'FAIL'}")
    if (args.out / CAPTURE_LOG).is_file():
        print(f"ModelOpt / ONNX Runtime output: {args.out / CAPTURE_LOG}")
    print(f"artifacts in {args.out}/")
    return 0 if rep.passed else 1


def _package(args: argparse.Namespace) -> int:
    from edge_affect.config import load_config_file
    from edge_affect.export.package import evaluation_from_bench, package_model

    evaluation = None
    if args.evaluation:
        evaluation = evaluation_from_bench(load_config_file(args.evaluation), str(args.evaluation))
    card = package_model(
        args.checkpoint,
        args.out,
        data=args.data,
        evaluation=evaluation,
        description=args.description,
        test_time_flip=args.test_time_flip,
        expr_logit_adjust=args.expr_logit_adjust,
        int8_keep_fp16=args.int8_keep_fp16,
        align_views=args.align_views,
    )
    for name, f in card["files"].items():
        print(f"{args.out / name}  {f['bytes'] / 2**20:.1f} MiB  sha256 {f['sha256'][:16]}…")
    print(
        f"{card['model']}: {card['parameters'] / 1e6:.2f} M parameters, {card['macs'] / 1e6:.1f} M MACs, "
        f"{card['input']['size']}×{card['input']['size']} {card['input']['color']}; card {args.out / 'model.json'}"
    )
    return 0


def _engine_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The engine (``--out``, default beside the ONNX) and its JSON sidecar: both written by build-engine."""
    if args.onnx is None:
        return []
    engine = args.out or Path(args.onnx).with_suffix(".engine")
    files = [] if args.out else [("--out", engine)]
    return [*files, ("--out's sidecar", Path(f"{engine}.json"))]


def _build_engine(args: argparse.Namespace) -> int:
    from edge_affect.export.tensorrt_build import (
        BatchRange,
        EngineOptions,
        build_engine,
        read_meta_ort,
        tensorrt_unavailable_reason,
    )

    batch, workspace, dla, vc, fallback = "1:8:32", 1024, args.dla, args.version_compatible, args.gpu_fallback
    if args.profile is not None:
        from edge_affect.config import load_export_profile

        prof = load_export_profile(args.profile)
        batch, workspace = ":".join(str(b) for b in prof.batch), prof.workspace_mib
        dla = prof.dla_core if dla is None else dla
        vc = vc or prof.version_compatible
        fallback = fallback and prof.gpu_fallback
    batch = args.batch or batch
    workspace = args.workspace or workspace
    from edge_affect.fsutil import check_not_inputs

    engine = args.out or args.onnx.with_suffix(".engine")
    cache = args.timing_cache or args.onnx.parent / "trt.timing.cache"
    check_not_inputs({"--out": engine, "--timing-cache": cache}, {"ONNX": args.onnx})  # never over the input
    meta = read_meta_ort(args.onnx)
    opts = EngineOptions(BatchRange.parse(batch), workspace, cache, vc, dla, gpu_fallback=fallback)  # checked here
    why = tensorrt_unavailable_reason()
    if why:
        raise RuntimeError(f"cannot build an engine here: {why}")
    build_engine(args.onnx, engine, opts, meta)
    print(f"{engine} (+ {engine.name}.json sidecar), batch {batch}, precision {meta.precision}")
    return 0


def _parity(args: argparse.Namespace) -> int:
    from edge_affect.export.parity import run_parity

    rep = run_parity(
        args.dir,
        data=args.data,
        split=args.split,
        checkpoint=args.checkpoint,
        limit=args.limit,
        engines=not args.no_engines,
    )
    j, _ = rep.save(args.dir)
    _print_table(_gate_rows(rep.comparisons), ("artifact", "backend", "gate", "value", "threshold", "result"))
    print(f"data: {rep.data}; report: {j}; {'PASS' if rep.passed else 'FAIL'}")
    return 0 if rep.passed else 1
