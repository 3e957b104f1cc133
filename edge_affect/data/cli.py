"""``edge-affect data``: ``synth`` (write a synthetic ABAW-layout dataset), ``check`` (health report) and ``import``
(an .npz face set into the ABAW layout)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_affect.cliutil import float_range, int_range, seed_int
from edge_affect.data.abaw import SPLIT_FILES
from edge_affect.iopaths import declare


def add_commands(subparsers: Any) -> None:
    """Register the ``data`` command and its subcommands on the top-level ``subparsers``."""
    data = subparsers.add_parser("data", help="synthesize, check or import (FER2013 / FER+ .npz) ABAW-layout datasets")
    data.set_defaults(func=lambda args: _no_subcommand(data))
    sub = data.add_subparsers(dest="data_command", metavar="{synth,check,import}")

    p = sub.add_parser("synth", help="write a synthetic ABAW-layout dataset of procedural faces")
    p.add_argument("out", type=Path, help="output dataset root")
    p.add_argument("--n", type=int_range(2, 10_000_000), required=True, help="number of faces (≥ 2)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int_range(16, 1024), default=112, help="image side in pixels, 16..1024 (default 112)")
    p.add_argument(
        "--val-fraction",
        type=float_range(0.0, 1.0, lo_open=True, hi_open=True),
        default=0.2,
        help="share of videos in the validation split, in (0, 1)",
    )
    p.add_argument(
        "--missing-fraction",
        type=float_range(0.0, 1.0, hi_open=True),
        default=0.15,
        help="share of each task's labels set missing, in [0, 1)",
    )
    p.add_argument("--video-len", type=int_range(1, 100_000), default=50, help="frames per video folder")
    p.add_argument(
        "--workers", type=int_range(0, 256), default=None, help="render processes (default: automatic; 0 = none)"
    )
    p.set_defaults(func=cmd_synth)
    declare(p, folders=("out",))

    c = sub.add_parser("check", help="count labels, class balance and bad rows of an ABAW-layout dataset")
    c.add_argument("root", type=Path, help="dataset root holding the annotation files")
    c.add_argument("--images", type=Path, default=None, help="image folder (default ROOT/cropped_aligned)")
    c.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    c.set_defaults(func=cmd_check)
    declare(c, reads=("root", "images"), writes=("json",), extra_reads=_annotation_files)

    i = sub.add_parser(
        "import",
        help="import an .npz face set into the ABAW layout: FER2013-style (images, labels, ids) or FER+ (images, "
        "votes: the vote distribution becomes a soft target)",
    )
    i.add_argument("out", type=Path, help="output dataset root")
    i.add_argument("--train", type=Path, required=True, help=".npz of the training split (labels or FER+ votes)")
    val = i.add_mutually_exclusive_group(required=True)
    val.add_argument("--val", type=Path, help=".npz of the validation split (labels or FER+ votes)")
    val.add_argument(
        "--hold-out",
        type=int_range(1, 10_000_000),
        metavar="N",
        help="instead of --val: N faces of --train, drawn at random (--hold-out-seed), become the validation split",
    )
    i.add_argument("--hold-out-seed", type=seed_int, default=0, help="seed of the --hold-out draw (default: 0)")
    i.add_argument(
        "--weak-targets",
        action="store_true",
        help="write valence/arousal and AUs derived from the expression class (weak labels) instead of missing",
    )
    i.set_defaults(func=cmd_import)
    declare(i, reads=("train", "val"), folders=("out",))


def cmd_import(args: argparse.Namespace) -> int:
    from edge_affect.data.fer import import_face_set

    s = import_face_set(
        args.train, args.val, args.out, weak=args.weak_targets, hold_out=args.hold_out, hold_out_seed=args.hold_out_seed
    )
    rows = ", ".join(f"{k} {v['rows']}" for k, v in s["splits"].items())
    print(f"{args.out}: {rows} faces; {s['note']}")
    return 0


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_synth(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    from rich.table import Table

    from edge_affect.data.synth import synth_dataset

    con = Console()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=con,
        transient=True,
    ) as bar:
        task = bar.add_task("rendering faces", total=args.n)
        summary = synth_dataset(
            args.out,
            args.n,
            seed=args.seed,
            size=args.size,
            val_fraction=args.val_fraction,
            missing_fraction=args.missing_fraction,
            video_len=args.video_len,
            workers=args.workers,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    t = Table(title=f"synthetic dataset {summary['root']}")
    t.add_column("split")
    t.add_column("faces", justify="right")
    t.add_column("videos", justify="right")
    t.add_column("annotations")
    for split in ("train", "val"):
        t.add_row(split, str(summary[split]), str(summary["videos"][split]), summary["files"][split])
    con.print(t)
    con.print(
        f"{summary['n']} faces of {summary['size']}×{summary['size']} in {summary['seconds']:.1f} s (seed {summary['seed']})"
    )
    return 0


def _annotation_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The dataset's annotation files: inputs an output must never name."""
    if args.root is None:
        return []
    return [("annotation file", Path(args.root) / n) for names in SPLIT_FILES.values() for n in names]


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edge_affect.artifact import atomic_write_text
    from edge_affect.data.check import check_dataset, print_report

    con = Console()
    with con.status(f"reading {args.root}"):
        report = check_dataset(args.root, images=args.images)
    print_report(report, console=con)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report, indent=2))
        con.print(f"report written to {args.json}")
    return 0 if report["ok"] else 1
