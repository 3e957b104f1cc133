"""``edge-affect run`` and ``edge-affect bench``: the runtime's commands (thin: parse, call the library, print).

``add_commands(subparsers)`` is called by ``edge_affect.cli``; ``python -m edge_affect.runtime.cli`` runs
these two commands on their own with the same one-line error contract.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge_affect.cliutil import EXIT_INTERRUPTED, float_range, int_list, int_range, positive_int, probability
from edge_affect.formats import FORMATS
from edge_affect.fsutil import OVERLAY_MARKER, Staged, check_replaceable_folder
from edge_affect.iopaths import declare
from edge_affect.runtime.track import LABEL_MARGIN, SMOOTH_ALPHA

#: Largest batch ``bench`` accepts (a batch of 1024 112-px faces is ~150 MB of input; more is a typo).
MAX_BENCH_BATCH = 1024


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "artifact",
        nargs="?",
        default=None,
        metavar="ARTIFACT",
        help="model: .onnx, .engine (+ .json sidecar) or .pt/.safetensors checkpoint (default: the shipped default model's ONNX)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "onnxruntime", "tensorrt", "torch"],
        help="runtime backend (default: from the artifact)",
    )
    p.add_argument(
        "--providers",
        default=None,
        help="ONNX Runtime providers, comma-separated: cpu, cuda, tensorrt (default: cuda if usable, else cpu)",
    )
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay a captured CUDA graph per batch shape")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "int8"],
        default="auto",
        help="pick this precision's ONNX from the export folder ARTIFACT is (or is in): int8 on the CPU provider "
        f"is {FORMATS['onnx-int8-cpu'].filename} (ONNX Runtime integer kernels), on CUDA/TensorRT "
        f"{FORMATS['onnx-int8'].filename} (default: ARTIFACT as given; fp32 for a folder)",
    )
    p.add_argument("--device", default=None, help="torch backend device (cpu, cuda:0)")


def add_commands(subparsers: Any) -> None:
    """Register ``run`` and ``bench`` on an argparse subparsers object."""
    run = subparsers.add_parser(
        "run",
        help="detect faces and predict affect on images, videos, cameras or streams",
        description="Detect, align and predict affect for every face; write JSON Lines.",
    )
    _add_backend_args(run)
    run.add_argument(
        "--source", required=True, help='image, folder, video file, cam:N, rtsp://…, or gst:"<GStreamer pipeline>"'
    )
    run.add_argument("--out", default=None, help="JSON Lines output (default: stdout)")
    run.add_argument("--overlay", default=None, help="draw results into out.mp4, out.png (single image) or a folder")
    run.add_argument(
        "--smooth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="videos and streams: smooth predictions per track over time, with hysteresis on the reported "
        "expression (it changes only when another class leads by --label-margin); about 2 frames of lag "
        "(default on; --no-smooth reports each frame's own prediction, the behaviour before; still images "
        "are never smoothed)",
    )
    run.add_argument(
        "--alpha",
        type=float_range(0.0, 1.0, lo_open=True),
        default=SMOOTH_ALPHA,
        help=f"smoothing: EMA weight of the newest frame (default {SMOOTH_ALPHA})",
    )
    run.add_argument(
        "--label-margin",
        type=float_range(0.0, 1.0, hi_open=True),
        default=LABEL_MARGIN,
        help=f"smoothing: lead in smoothed probability another expression needs to replace the reported one "
        f"(default {LABEL_MARGIN}; 0 = the smoothed arg-max)",
    )
    run.add_argument(
        "--max-faces", type=positive_int, default=None, help="keep at most this many faces per frame (best first)"
    )
    run.add_argument(
        "--score-threshold", type=probability, default=0.6, help="face detector score threshold (default 0.6)"
    )
    run.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    from edge_affect.runtime.pipeline import add_pipeline_arguments

    add_pipeline_arguments(run)
    run.add_argument(
        "--prefetch",
        type=int_range(0, 256),
        default=4,
        metavar="N",
        help="frames read and decoded ahead in a thread (default 4; 0 = off); a camera or stream drops the "
        "oldest, counted, when processing falls behind, a file never drops",
    )
    run.set_defaults(func=cmd_run)
    declare(
        run,
        reads=("artifact", "source"),
        writes=("out",),
        either=("overlay",),
        plain=("providers", "device"),
        extra_reads=_model_inputs,
    )

    bench = subparsers.add_parser(
        "bench",
        help="latency and throughput per stage (decode … post)",
        description="Per-stage p50/p90/p99 latency and throughput, as a table and JSON.",
    )
    _add_backend_args(bench)
    bench.add_argument(
        "--batch",
        type=int_list(1, MAX_BENCH_BATCH),
        default="1,8,32",
        help=f"batch sizes, comma-separated, each 1..{MAX_BENCH_BATCH} (default 1,8,32)",
    )
    bench.add_argument("--iters", type=int_range(1, 100_000), default=50, help="timed calls per stage (default 50)")
    bench.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON here")
    bench.add_argument("--source", default=None, metavar="IMG", help="photo with a face (default: bundled astronaut)")
    bench.add_argument(
        "--pipeline",
        default=None,
        metavar="VIDEO",
        help="instead, the whole face pipeline on VIDEO end to end (frames/s, ms per stage, faces found): "
        "the old policy (detect every frame at 640) and the settings below, side by side",
    )
    add_pipeline_arguments(bench)
    bench.add_argument(
        "--rounds", type=int_range(1, 100), default=3, help="--pipeline: interleaved timed rounds (default 3)"
    )
    bench.add_argument(
        "--prefetch", type=int_range(0, 256), default=4, metavar="N", help="--pipeline: frames decoded ahead"
    )
    bench.set_defaults(func=cmd_bench)
    declare(
        bench,
        reads=("artifact", "source", "pipeline"),
        writes=("json",),
        plain=("providers", "device"),
        extra_reads=_model_inputs,
    )


def _model_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The model files read besides ARTIFACT as given: the default model, an engine's sidecar."""
    artifact = args.artifact
    if not artifact:
        from edge_affect.default import default_model

        return [("ARTIFACT", str(default_model("onnx")))]
    if str(artifact).endswith(".engine"):
        return [("ARTIFACT's sidecar", f"{artifact}.json")]
    return []


def _resolve_artifact(args: argparse.Namespace) -> None:
    """No ARTIFACT: the shipped default model (its FP32 ONNX, so no torch is needed)."""
    if not args.artifact:
        from edge_affect.default import default_model

        args.artifact = str(default_model("onnx"))
        _console().print(f"[dim]no artifact given: using the default model {args.artifact}[/]")
    precision = getattr(args, "precision", "auto")
    if precision == "auto" and Path(args.artifact).is_dir():
        precision = "fp32"
    if precision != "auto":
        from edge_affect.runtime.backends.onnxruntime_runner import select_precision

        if args.backend not in ("auto", "onnxruntime"):
            raise ValueError(f"--precision {precision} picks an export folder's ONNX; it runs on --backend onnxruntime")
        chosen = str(select_precision(args.artifact, precision, args.providers))
        if chosen != args.artifact:
            _console().print(f"[dim]--precision {precision}: using {chosen}[/]")
        args.artifact = chosen


def _load(args: argparse.Namespace) -> Any:
    from edge_affect.runtime.predictor import load

    _resolve_artifact(args)
    return load(
        args.artifact, backend=args.backend, providers=args.providers, cuda_graph=args.cuda_graph, device=args.device
    )


def _parse_batches(text: str) -> list[int]:
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batch {text!r}: expected comma-separated integers, e.g. 1,8,32") from None
    if not out or min(out) < 1:
        raise ValueError(f"--batch {text!r}: batch sizes must be ≥ 1")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edge_affect.runtime.faces import FacePipeline, YuNetDetector, output_record, yunet_runner
    from edge_affect.runtime.overlay import OverlayWriter, draw
    from edge_affect.runtime.sources import open_source

    con = _console()
    if args.alpha <= 0 or args.alpha > 1:
        raise ValueError(f"--alpha {args.alpha}: expected a value in (0, 1]")
    out_path = Path(args.out) if args.out else None
    if args.overlay and not Path(args.overlay).suffix:
        check_replaceable_folder(
            "--overlay", args.overlay, marker=OVERLAY_MARKER, force=bool(args.force), what="overlay"
        )
    source = open_source(args.source, prefetch=args.prefetch)
    try:
        predictor = _load(args)
    except BaseException:
        source.close()
        raise
    smooth = args.smooth and source.kind != "images"
    providers = getattr(predictor.runner, "providers", None) or None
    detector = YuNetDetector(yunet_runner(predictor.backend, providers), score_threshold=args.score_threshold)
    from edge_affect.runtime.pipeline import pipeline_settings

    pipe = FacePipeline(
        predictor,
        detector,
        smooth=smooth,
        alpha=args.alpha,
        label_margin=args.label_margin,
        max_faces=args.max_faces,
        fps=float(source.fps) if source.fps and source.fps > 0 else 30.0,
        **pipeline_settings(args),
    )
    # files go to hidden siblings renamed into place at the end (a kill keeps the earlier result); a FIFO or
    # device (/dev/stdout) stays streamed
    staged: list[Staged] = []
    overlay = None
    out = sys.stdout
    try:
        if args.overlay:
            folder = not Path(args.overlay).suffix
            staged.append(Staged(args.overlay, folder=folder))
            overlay = OverlayWriter(
                args.overlay,
                fps=source.fps,
                single_frame=source.kind == "images" and source.total == 1,
                write_to=staged[-1].path,
            )
            if folder:
                (staged[-1].path / OVERLAY_MARKER).write_text("written by edge-affect run\n", encoding="utf-8")
        if out_path is not None:
            if out_path.exists() and not out_path.is_file():
                out = open(out_path, "w", encoding="utf-8")
            else:
                staged.append(Staged(out_path))
                out = open(staged[-1].path, "w", encoding="utf-8")
    except BaseException:
        for st_out in staged:
            st_out.discard()
        source.close()
        pipe.close()
        predictor.close()
        raise
    n_frames = n_faces = n_noface = n_bad = 0
    t_start = time.perf_counter()
    finished = False
    last_source = None
    reason = None
    con.print(
        f"[dim]{predictor.backend} on {predictor.device} · detector on {detector.runner.device} · source {source.kind}[/]"
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=con,
        disable=args.no_progress or source.is_stream,
        transient=True,
    )
    try:
        with progress:
            task = progress.add_task("frames", total=source.total)
            for frame in source:
                if frame.source != last_source:
                    pipe.reset()
                    last_source = frame.source
                records = pipe.process(frame.image, error=frame.error)
                for rec in records:
                    out.write(json.dumps(output_record(frame, rec), allow_nan=False) + "\n")
                    status = rec["status"]
                    n_faces += status not in ("no_face", "bad_frame")
                    n_noface += status == "no_face"
                    n_bad += status == "bad_frame"
                if overlay is not None and frame.image is not None:
                    overlay.write(draw(frame.image, records), frame.source, frame.index)
                n_frames += 1
                progress.advance(task)
                if source.is_stream and n_frames % 100 == 0:
                    out.flush()
                if args.max_frames is not None and n_frames >= args.max_frames:
                    reason = f"stopped after --max-frames {args.max_frames}"
                    break
        finished = True
    except KeyboardInterrupt:
        reason = "interrupted"
        finished = True
    finally:
        source.close()
        if overlay is not None:
            overlay.close()
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
        pipe.close()
        predictor.close()
        for st_out in staged:  # an error keeps the earlier result; a finished or interrupted run replaces it
            st_out.commit() if finished else st_out.discard()
    dt = time.perf_counter() - t_start
    reason = reason or source.end_reason
    fps = n_frames / dt if dt > 0 else 0.0
    con.print(
        f"{n_frames} frames ({n_bad} unreadable, {n_noface} without a face"
        + (f", {source.dropped} dropped: processing fell behind" if getattr(source, "dropped", 0) else "")
        + f"), {n_faces} faces in {dt:.1f} s "
        f"({fps:.1f} frames/s); {reason}"
        + (f"; predictions in {out_path}" if out_path else "")
        + (f"; overlay in {args.overlay}" if overlay is not None else "")
    )
    st = pipe.stats
    if source.kind != "images" and st["frames"] > st["full"] > 0:  # say how the faces were found
        con.print(
            f"face finding: {st['full']} whole-frame detections ({st['full_at_edge'] + st['motion_at_edge']} for "
            f"a face moving across the frame edge, {st['full_after_loss']} after a face was lost), "
            f"{st['held']} still faces held, {st['regions']} region re-detections, "
            f"{st['picked_up']} new faces picked up in {st['motion']} changed regions"
        )
    if reason == "interrupted":
        print("edge-affect: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.pipeline:
        return _bench_pipeline(args)
    from rich.table import Table

    from edge_affect.artifact import atomic_write_text
    from edge_affect.runtime.bench import bench_stages

    batches = args.batch if isinstance(args.batch, list) else _parse_batches(args.batch)
    if args.views is not None:
        raise ValueError(
            f"--views {args.views}: applies to --pipeline VIDEO (faces found and aligned in frames); the stage "
            "timings time one crop per face"
        )
    if args.iters < 1:
        raise ValueError(f"--iters {args.iters}: expected ≥ 1")
    if args.source is not None and not Path(args.source).is_file():
        raise FileNotFoundError(f"--source {args.source} does not exist")
    predictor = _load(args)
    try:
        res = bench_stages(predictor, args.source, batches, args.iters)
    finally:
        predictor.close()
    con = _console(stderr=False)
    a = res["artifact"]
    table = Table(title=f"{Path(a['artifact']).name} · {a['backend']} on {a['device']} · {res['machine']['cpu']}")
    for col in ("stage", "batch", "p50 ms", "p90 ms", "p99 ms", "items/s"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for r in res["rows"]:
        table.add_row(
            r["stage"],
            str(r["batch"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['items_per_s']:.1f}",
        )
    con.print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2))
        con.print(f"results in {args.json}")
    return 0


def _bench_pipeline(args: argparse.Namespace) -> int:
    """``bench --pipeline VIDEO``: old vs new face-finding policy on one video, as a table and JSON."""
    from edge_affect.artifact import atomic_write_text
    from edge_affect.runtime.bench import (
        PIPELINE_COLUMNS,
        bench_pipeline,
        format_table,
        pipeline_policies,
        pipeline_rows,
    )

    if not Path(args.pipeline).is_file():
        raise FileNotFoundError(f"--pipeline {args.pipeline} does not exist, expected a video file")
    policies = pipeline_policies(args.det_size, args.detect_every, args.track_policy, args.pickup, args.views)
    predictor = _load(args)
    try:
        res = bench_pipeline(predictor, args.pipeline, policies, rounds=args.rounds, prefetch=args.prefetch)
    finally:
        predictor.close()
    a, m = res["artifact"], res["machine"]
    # A plain table: 13 columns do not fit a rich table in 80 columns, and it stays greppable in logs.
    print(f"{Path(args.pipeline).name} · {a['backend']} on {a['device']} · {m['cpu']}, {m['cpu_count']} cores")
    print(format_table(PIPELINE_COLUMNS, pipeline_rows(res)), flush=True)
    con = _console(stderr=False)
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2, default=float))
        con.print(f"results in {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m edge_affect.runtime.cli``) with the house error contract."""
    import logging

    from edge_affect.cliutil import OneLineParser, run_command

    parser = OneLineParser(prog="edge-affect")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
