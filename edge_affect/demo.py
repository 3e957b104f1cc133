"""``edge-affect demo``: the whole pipeline on the shipped default model, offline, in a few minutes on a CPU.

1. export the default model (``model.safetensors``) to FP32 / FP16 / INT8 ONNX with ``calibration/default``
   and the parity gates; TensorRT engines too when TensorRT and a GPU are present (says why not otherwise);
2. run every artifact through the runtime (YuNet detection → alignment → affect model) on the shipped
   samples: the astronaut photo, a 30-frame clip, and a mosaic of 16 real FER2013 faces from the
   calibration set (training-split faces, so a look at the outputs, not an accuracy claim);
3. latency of each artifact (median and interquartile range of many calls after a warm-up) and a short
   per-stage benchmark of the runtime;
4. where the FER+ validation set is on this machine (``../shared/data/ferplus/ferplus_valid.npz`` or
   ``--eval-data``): the FP32 model's majority-label accuracy on it and a mosaic of its faces, each with its
   FER+ majority label and the prediction (green: same, red: differs);
5. writes predictions (JSON Lines), overlays, plots and ``demo_summary.md`` (one page; every figure says
   whether it was measured in this run or recorded in ``model.json``), and prints a table.

Needs the ``export`` extra (torch for the PyTorch reference, ModelOpt for INT8).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import atomic_write_text
from edge_affect.cliutil import hidden_alias, positive_int
from edge_affect.demo_report import (
    FERPLUS_PER_CLASS,
    FERPLUS_TILE,
    LATENCY_BUDGET_S,
    LATENCY_CALLS,
    LATENCY_MIN_CALLS,
    LATENCY_WARMUP,
    _eval_dataset,
    _markdown,
    _plot_bench,
    _plot_clip,
    _plot_photo,
    _print_tables,
    _summary,
)
from edge_affect.demo_report import MEASURED as MEASURED  # public names, kept here too
from edge_affect.demo_report import RECORDED as RECORDED
from edge_affect.formats import FORMATS
from edge_affect.iopaths import declare

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "samples"
PHOTO = SAMPLES_DIR / "astronaut.png"
CLIP = SAMPLES_DIR / "astronaut_clip.mp4"
MARKER = "demo_summary.md"
#: Mosaic of calibration faces: tiles of this size (YuNet needs more than FER2013's 48 px), 4 × 4.
TILE, GRID = 160, 4
#: FER+ validation faces (votes of ten annotators), where this machine has them: repository/../shared/data.
FERPLUS_VALID = Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus" / "ferplus_valid.npz"


def add_commands(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "demo",
        help="default model → ONNX/FP16/INT8 (+ TensorRT) → runtime on sample photos and a clip → summary",
        description="Runs offline. Writes OUT/export (artifacts + parity report), OUT/predictions.jsonl, "
        "OUT/overlays/, OUT/plots/, OUT/bench.json and OUT/demo_summary.md.",
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    d.add_argument("--checkpoint", type=Path, default=None, help="model to demo (default: the shipped default model)")
    d.add_argument("--no-engine", action="store_true", help="do not build TensorRT engines even if possible")
    iters = d.add_argument(
        "--iters",
        dest="bench_iters",
        type=positive_int,
        default=20,
        help="timed calls per stage in the per-stage benchmark (default 20)",
    )
    eval_data = d.add_argument(
        "--eval-data",
        dest="ferplus",
        type=Path,
        default=None,
        help=f"FER+ validation .npz (images + votes) for the accuracy figure and mosaic (default: {FERPLUS_VALID} "
        "where it exists)",
    )
    hidden_alias(d, "--bench-iters", iters)  # the old spellings, kept for one release
    hidden_alias(d, "--ferplus", eval_data)
    d.set_defaults(func=_demo)
    declare(d, reads=("checkpoint", "ferplus"), folders=("out",))


def check_inputs_outside(out: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse (``ValueError``), before anything is removed, an ``--out`` that is or holds an input: a rerun
    replaces a previous demo's folder whole, and an input inside it would go with it."""
    from edge_affect.fsutil import check_not_inputs, is_within

    check_not_inputs({"--out": out}, inputs)
    for opt, path in inputs.items():
        if path is not None and is_within(path, out):
            raise ValueError(
                f"{opt} {path}: lies inside --out {out}, which the demo replaces; expected an input outside "
                "the output folder (edge-affect never writes over its inputs)"
            )


def _prepare_out(out: Path) -> None:
    """OUT must be new, empty, or a previous demo's folder (which is replaced)."""
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file; expected a folder")
        if any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise ValueError(f"--out {out} is not empty and holds no previous demo ({MARKER}); choose another")
            shutil.rmtree(out)
    for sub in ("overlays", "plots"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # Marks the folder as a demo's from the start, so a rerun after an interruption may replace it.
    atomic_write_text(out / MARKER, "# edge-affect demo (incomplete: interrupted or failed)\n")


def _mosaic(out: Path) -> tuple[Path, list[str]]:
    """A 4×4 mosaic of calibration faces (two per expression class present, upscaled), and their labels."""
    import cv2

    from edge_affect.calibration import default_calibration_dir, manifest_labels, read_manifest
    from edge_affect.schema import EXPRESSIONS

    cdir = default_calibration_dir()
    manifest = read_manifest(cdir)
    labels = manifest_labels(manifest)
    files = [f["name"] for f in manifest["files"]]
    n = min(GRID * GRID, len(files))
    if labels is None:
        picks = list(range(n))
    else:  # round-robin over the classes present, so every expression shows up
        by_class = [np.flatnonzero(labels == c).tolist() for c in sorted(set(labels.tolist()) - {-1})]
        picks = [idx[r] for r in range(n) for idx in by_class if r < len(idx)][:n]
    canvas = np.zeros((GRID * TILE, GRID * TILE, 3), np.uint8)
    names = []
    for k, i in enumerate(picks):
        img = cv2.imread(str(cdir / files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"calibration frame {cdir / files[i]} cannot be decoded")
        r, c = divmod(k, GRID)
        canvas[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = cv2.resize(
            img, (TILE, TILE), interpolation=cv2.INTER_CUBIC
        )
        names.append(EXPRESSIONS[int(labels[i])] if labels is not None and labels[i] >= 0 else "?")
    path = out / "overlays" / "fer_mosaic_input.png"
    if not cv2.imwrite(str(path), canvas):
        raise RuntimeError(f"cannot write {path}")
    return path, names


def _tile_of(rec: dict) -> int | None:
    """Mosaic tile (row-major) holding the centre of a detected face."""
    if rec.get("box") is None:
        return None
    x, y, w, h = rec["box"]
    r, c = int((y + h / 2) // TILE), int((x + w / 2) // TILE)
    return r * GRID + c if 0 <= r < GRID and 0 <= c < GRID else None


def _annotate_mosaic(mosaic: Path, rows: list[dict], truth: list[str], path: Path) -> None:
    """The mosaic with, under each face, the prediction and the dataset label (green: same, red: differs)."""
    import cv2

    img = cv2.imread(str(mosaic), cv2.IMREAD_COLOR)
    bar = 34
    canvas = np.full((GRID * (TILE + bar), GRID * TILE, 3), 255, np.uint8)
    for k in range(GRID * GRID):
        r, c = divmod(k, GRID)
        canvas[r * (TILE + bar) : r * (TILE + bar) + TILE, c * TILE : (c + 1) * TILE] = img[
            r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE
        ]
    preds = {_tile_of(x): x for x in rows if x.get("status") == "ok"}
    for k, label in enumerate(truth):
        r, c = divmod(k, GRID)
        y0, x0 = r * (TILE + bar) + TILE, c * TILE + 4
        rec = preds.get(k)
        text = f"{rec['expression']} {rec['expression_score']:.2f}" if rec else "no face found"
        col = (0, 140, 0) if rec and rec["expression"] == label else (0, 0, 200)
        cv2.putText(canvas, text, (x0, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1, cv2.LINE_AA)
        cv2.putText(
            canvas, f"label: {label}", (x0, y0 + 29), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1, cv2.LINE_AA
        )
    if not cv2.imwrite(str(path), canvas):
        raise RuntimeError(f"cannot write {path}")


def _run_source(predictor: Any, source: str, overlay: Path | None, smooth: bool = False) -> tuple[list[dict], float]:
    """Every frame of ``source`` through detect → align → predict (→ track/smooth); records + seconds."""
    from edge_affect.runtime.faces import FacePipeline, output_record
    from edge_affect.runtime.overlay import OverlayWriter, draw
    from edge_affect.runtime.sources import open_source

    src = open_source(source)
    pipe = FacePipeline(predictor, smooth=smooth)
    writer = OverlayWriter(overlay, fps=src.fps, single_frame=src.kind == "images") if overlay else None
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        for frame in src:
            recs = pipe.process(frame.image, error=frame.error)
            rows += [output_record(frame, rec) for rec in recs]
            if writer is not None and frame.image is not None:
                writer.write(draw(frame.image, recs), frame.source, frame.index)
    finally:
        src.close()
        pipe.close()
        if writer is not None:
            writer.close()
    return rows, time.perf_counter() - t0


def measure_latency(fn: Any, calls: int = LATENCY_CALLS, budget_s: float = LATENCY_BUDGET_S) -> dict[str, Any]:
    """Median and interquartile range (ms) of ``fn()`` after ``LATENCY_WARMUP`` calls: up to ``calls`` timed
    calls, stopping early after ``budget_s`` once ``LATENCY_MIN_CALLS`` are in (slow artifacts)."""
    for _ in range(LATENCY_WARMUP):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < calls and (len(times) < LATENCY_MIN_CALLS or time.perf_counter() < t_end):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    q25, med, q75 = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(med), "q25_ms": float(q25), "q75_ms": float(q75), "calls": len(times)}


def ferplus_eval(artifact: Path, npz: Path, out_png: Path, seed: int = 0) -> dict[str, Any]:
    """FER+ faces through ``artifact`` (crops, no detection: they are face crops already): majority-label
    accuracy over the faces whose most-voted column is an emotion, and a mosaic of ``FERPLUS_PER_CLASS``
    random faces per expression with their majority label and the prediction (green: same, red: differs)."""
    import cv2

    from edge_affect.data.fer import ferplus_majority  # numpy only
    from edge_affect.runtime.predictor import load
    from edge_affect.schema import EXPRESSIONS

    images, truth, dropped = ferplus_majority(npz, where=f"--ferplus {npz}")
    pred: list[int] = []
    with load(artifact) as p:
        for i in range(0, len(images), 256):
            pred += [EXPRESSIONS.index(r["expression"]) for r in p.predict(list(images[i : i + 256]))]
    pred_a = np.asarray(pred)
    rng = np.random.default_rng(seed)
    rows = [c for c in range(len(EXPRESSIONS)) if (truth == c).any()]
    t, bar = FERPLUS_TILE, 30
    canvas = np.full((len(rows) * (t + bar), FERPLUS_PER_CLASS * t, 3), 255, np.uint8)
    shown = hits = 0
    for r, c in enumerate(rows):
        idx = np.flatnonzero(truth == c)
        pick = np.sort(rng.choice(idx, size=min(FERPLUS_PER_CLASS, len(idx)), replace=False))
        for k, i in enumerate(pick):
            face = cv2.resize(images[i], (t, t), interpolation=cv2.INTER_CUBIC)
            y0, x0 = r * (t + bar), k * t
            canvas[y0 : y0 + t, x0 : x0 + t] = face[:, :, None] if face.ndim == 2 else face[:, :, ::-1]
            ok = pred_a[i] == c
            shown, hits = shown + 1, hits + int(ok)
            col = (0, 140, 0) if ok else (0, 0, 200)
            font = cv2.FONT_HERSHEY_SIMPLEX
            cv2.putText(canvas, EXPRESSIONS[pred_a[i]][:12], (x0 + 3, y0 + t + 12), font, 0.36, col, 1, cv2.LINE_AA)
            cv2.putText(canvas, f"FER+ {EXPRESSIONS[c]}"[:16], (x0 + 3, y0 + t + 25), font, 0.3, (90, 90, 90), 1)
    if not cv2.imwrite(str(out_png), canvas):
        raise RuntimeError(f"cannot write {out_png}")
    per_class = {
        EXPRESSIONS[c]: {"n": int((truth == c).sum()), "accuracy": float((pred_a[truth == c] == c).mean())}
        for c in rows
    }
    return {
        "data": str(npz),
        "faces": int(len(truth)),
        "skipped_unknown_or_nf": dropped,
        "accuracy": float((pred_a == truth).mean()),
        "per_class": per_class,
        "mosaic": str(out_png),
        "mosaic_faces": shown,
        "mosaic_match": hits,
    }


def run_demo(
    out: Path,
    checkpoint: Path | None = None,
    engines: bool = True,
    bench_iters: int = 20,
    ferplus: Path | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary dict (also written as ``summary.json``).

    ``ferplus``: FER+ validation .npz for the accuracy figure and mosaic (default ``FERPLUS_VALID`` where it
    exists; skipped otherwise)."""
    from rich.console import Console
    from rich.markup import escape

    from edge_affect.default import default_model
    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.tensorrt_build import tensorrt_unavailable_reason
    from edge_affect.runtime.bench import bench_stages, machine_info
    from edge_affect.runtime.predictor import load

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    t_all = time.perf_counter()
    out = Path(out)
    ckpt = Path(checkpoint) if checkpoint is not None else default_model("safetensors")
    fer_opt = "--ferplus" if ferplus is not None else "FER+ default"
    if ferplus is None and FERPLUS_VALID.is_file():
        ferplus = FERPLUS_VALID
    check_inputs_outside(out, {"--checkpoint" if checkpoint is not None else "default model": ckpt, fer_opt: ferplus})
    _prepare_out(out)
    card: dict[str, Any] = {}
    if checkpoint is None:
        from edge_affect.default import default_model_card

        card = default_model_card()
    con.rule(f"edge-affect demo · {ckpt.name}")
    if card:
        ev = card.get("evaluation", {})
        accs = ", ".join(
            f"{ev[k]['accuracy']:.1%} {k.replace('_', ' ')}" for k in ("onnx_fp32", "onnx_int8_qdq") if k in ev
        )
        con.print(
            f"default model: {card['model']} ({card['parameters'] / 1e6:.2f} M parameters, "
            f"{card['macs'] / 1e6:.0f} M MACs, {card['input']['size']}×{card['input']['size']} {card['input']['color']})"
            + (f"; recorded in model.json: {_eval_dataset(ev)} accuracy {accs}" if accs else "")
        )

    # 1. export
    no_trt = tensorrt_unavailable_reason()
    why_not = "disabled with --no-engine" if not engines else no_trt
    con.print(f"[bold]1/4 export[/] FP32 / FP16 / INT8 ONNX{' + TensorRT engines' if not why_not else ''} …")
    t = time.perf_counter()
    # INT8 calibration: the default model's own choice (entropy) for it, "max" for any other checkpoint; without
    # TensorRT also the CPU INT8 model (as `export --int8` does), the INT8 that runs fast on this machine
    req = ExportRequest(ckpt, out / "export", fp16=True, int8=True, int8_cpu=bool(no_trt), engine=not why_not)
    report = export_all(req)
    export_s = time.perf_counter() - t
    if why_not:
        con.print(f"[yellow]TensorRT engines not built: {escape(why_not)}[/]")

    # 2. runtime on the samples, every artifact
    con.print("[bold]2/4 runtime[/] on astronaut.png, the FER mosaic and astronaut_clip.mp4 …")
    mosaic, mosaic_truth = _mosaic(out)
    artifacts: list[tuple[str, Path]] = [("pytorch fp32", ckpt)]
    for key, label in (
        ("onnx", "onnx fp32"),
        ("onnx-fp16", "onnx fp16"),
        ("onnx-int8", "onnx int8 q/dq"),
        ("onnx-int8-cpu", "onnx int8 cpu"),
        ("engine-fp16", "tensorrt fp16"),
        ("engine-int8", "tensorrt int8"),
    ):
        name = FORMATS[key].filename
        if (out / "export" / name).is_file():
            artifacts.append((label, out / "export" / name))
    results: dict[str, dict] = {}
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as jf:
        for label, path in artifacts:
            with load(path) as p:
                tag = label.replace(" ", "_").replace("/", "")
                photo, photo_s = _run_source(p, str(PHOTO), out / "overlays" / f"astronaut.{tag}.png")
                mos, _ = _run_source(p, str(mosaic), None)
                _annotate_mosaic(mosaic, mos, mosaic_truth, out / "overlays" / f"fer_mosaic.{tag}.png")
                results[label] = {
                    "artifact": str(path),
                    "backend": p.backend,
                    "device": p.device,
                    "photo": photo,
                    "photo_s": photo_s,
                    "mosaic": mos,
                }
                for r in photo + mos:
                    jf.write(json.dumps({"artifact": label, **r}) + "\n")
    with load(out / "export" / FORMATS["onnx"].filename) as p:
        clip_rows, clip_s = _run_source(p, str(CLIP), out / "overlays" / "astronaut_clip.mp4", smooth=True)
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as jf:
        for r in clip_rows:
            jf.write(json.dumps({"artifact": "onnx fp32 (clip, smoothed)", **r}) + "\n")

    # mosaic agreement with the labels (tiles are in row-major order; match faces to tiles by box centre)
    def mosaic_hits(rows: list[dict]) -> tuple[int, int]:
        hits = found = 0
        for r in rows:
            tile = _tile_of(r) if r.get("status") == "ok" else None
            if tile is not None and tile < len(mosaic_truth):
                found += 1
                hits += r["expression"] == mosaic_truth[tile]
        return hits, found

    # 3. latency (median + IQR of many calls after a warm-up) and the per-stage benchmark
    con.print("[bold]3/4 bench[/] latency per artifact, per-stage benchmark …")
    bench: dict[str, dict] = {}
    latency: dict[str, dict] = {}
    crop = _photo_face(results)
    for label, path in artifacts:
        if label.startswith("pytorch") or label == "onnx fp16":
            continue  # fp16 ONNX is for GPUs; on a CPU it only measures casts
        with load(path) as p:
            latency[label] = measure_latency(lambda p=p: p.predict([crop]))
            bench[label] = bench_stages(p, PHOTO, (1,), bench_iters)  # batch 1: the plot; latency above
    atomic_write_text(out / "bench.json", json.dumps({"latency_b1": latency, "stages": bench}, indent=1))
    fer_plus = None
    if ferplus is not None:
        con.print(f"FER+ faces ({escape(str(ferplus))}) through the FP32 ONNX …")
        fer_plus = ferplus_eval(
            out / "export" / FORMATS["onnx"].filename, Path(ferplus), out / "overlays" / "ferplus_mosaic.png"
        )

    # 4. plots + summary
    con.print("[bold]4/4 summary[/] …")
    _plot_photo(results, out / "plots" / "astronaut_expression_probs.png")
    _plot_clip(clip_rows, out / "plots" / "clip_va.png")
    _plot_bench(bench, out / "plots" / "bench_latency.png")
    summary = _summary(out, ckpt, card, report, results, clip_rows, clip_s, latency, mosaic_hits, export_s, why_not)
    summary["ferplus"] = fer_plus
    summary["seconds_total"] = round(time.perf_counter() - t_all, 1)
    summary["machine"] = machine_info()
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    atomic_write_text(out / MARKER, _markdown(summary))
    _print_tables(con, summary)
    con.print(
        f"done in {summary['seconds_total']:.0f} s → {out}/{MARKER} (predictions.jsonl, overlays/, plots/, "
        f"export/export_report.md, bench.json)"
    )
    return summary


def _photo_face(results: dict[str, dict]) -> np.ndarray:
    """The astronaut's detected face (its box): the crop the latency figures time."""
    from edge_affect.runtime.preprocess import decode_image

    rec = next((r["photo"][0] for r in results.values() if r["photo"] and r["photo"][0].get("box")), None)
    rgb = decode_image(PHOTO)
    if rec is None:  # no face found: time the whole photo (the latency of predict does not depend on content)
        return rgb
    x, y, w, h = (int(round(v)) for v in rec["box"])
    return rgb[max(0, y) : y + h, max(0, x) : x + w]


def _demo(args: argparse.Namespace) -> int:
    if args.ferplus is not None and not args.ferplus.is_file():
        raise FileNotFoundError(f"--eval-data {args.ferplus}: no such file, expected FER+ ferplus_valid.npz")
    run_demo(args.out, args.checkpoint, engines=not args.no_engine, bench_iters=args.bench_iters, ferplus=args.ferplus)
    return 0
