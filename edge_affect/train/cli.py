"""CLI for ``train`` and ``eval`` (torch is imported only when they run)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edge_affect.cliutil import float_range, int_range, seed_int
from edge_affect.data.abaw import SPLIT_FILES
from edge_affect.iopaths import declare
from edge_affect.models.registry import list_models


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a task-token transformer on an ABAW-layout dataset")
    p.add_argument("--data", required=True, help="dataset root (training_set_annotations.txt, ...)")
    p.add_argument("--images", help="image folder (default: DATA/cropped_aligned)")
    p.add_argument("--config", help="TrainConfig as JSON or TOML")
    p.add_argument("--model", help="registered model name (see --list-models)")
    p.add_argument("--list-models", action=_ListModels, help="print the registered model names and exit")
    p.add_argument("--epochs", type=int_range(1, 100_000), help="epochs of the LR schedule (≥ 1)")
    p.add_argument("--batch-size", type=int_range(1, 65_536), help="images per step and rank (≥ 1)")
    p.add_argument("--lr", type=float_range(0.0, 1.0, lo_open=True), help="peak learning rate, in (0, 1]")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train (default: auto)")
    p.add_argument("--cache-dir", help="where the packed image cache lives (default: OUT/cache)")
    p.add_argument("--seed", type=seed_int, help="random seed (default: the config's)")
    p.add_argument("--init-from", help="start from this checkpoint's weights (fine-tuning; same model config)")
    p.add_argument(
        "--init-widen",
        action="store_true",
        help="grow --init-from, a narrower ResNet-family model of the same config, into this model's wider "
        "channels, computing the same function (Net2WiderNet)",
    )
    p.set_defaults(func=_train)
    declare(p, reads=("data", "images", "config", "init_from"), folders=("out", "cache_dir"), plain=("model",))

    e = sub.add_parser("eval", help="evaluate a checkpoint on an ABAW split (P = VA + EXPR + AU)")
    e.add_argument("ckpt", help="checkpoint written by edge-affect train (best.pt)")
    e.add_argument("--data", required=True, help="dataset root (ABAW layout: *_set_annotations.txt)")
    e.add_argument("--images", help="image folder (default: DATA/cropped_aligned)")
    e.add_argument("--split", choices=["train", "val"], default="val", help="split to evaluate (default: val)")
    e.add_argument("--json", help="write the metrics as JSON here")
    e.add_argument("--submission", help="write an ABAW-format submission file here")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run (default: auto)")
    e.set_defaults(func=_eval)
    declare(e, reads=("ckpt", "data", "images"), writes=("json", "submission"), extra_reads=_annotation_files)


class _ListModels(argparse.Action):
    """``--list-models``: print the registered model names and exit (before required options are checked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print("\n".join(list_models()))
        parser.exit(0)


def _annotation_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The dataset's annotation files (read by eval; never written over)."""
    if args.data is None:
        return []
    return [("annotation file", Path(args.data) / n) for names in SPLIT_FILES.values() for n in names]


def _train(args: argparse.Namespace) -> int:
    from edge_affect.config import TrainConfig, load_config_file
    from edge_affect.train.loop import check_train_config, train

    where = args.config or "config"
    d = load_config_file(args.config) if args.config else {}  # bad bytes or syntax: one-line ValueError
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a JSON {type(d).__name__}, expected an object of settings (a TOML table)")
    cfg = TrainConfig.from_dict(d, where=where)  # every value's type is checked there (ValueError)
    for flag, key in (
        ("model", "model"),
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("init_from", "init_from"),
    ):
        if getattr(args, flag) is not None:
            setattr(cfg, key, getattr(args, flag))
    if args.init_widen:
        cfg.init_widen = True
    check_train_config(cfg, where)
    logging.getLogger("edge_affect").setLevel(logging.INFO)
    best = train(
        cfg,
        args.data,
        args.out,
        images=args.images,
        resume=args.resume,
        device=None if args.device == "auto" else args.device,
        cache_dir=args.cache_dir,
    )
    if best.is_file():
        from rich.console import Console

        summary = json.loads((Path(args.out) / "best.json").read_text())
        v = summary["val"]
        chosen = f"; selected on val {cfg.select_on} {v[cfg.select_on]:.4f}" if cfg.select_on != "p" else ""
        Console().print(
            f"best epoch {summary['epoch']}: val P {v['p']:.4f} (VA {v['va']:.3f}, EXPR {v['expr']:.3f}, "
            f"AU {v['au']:.3f}){chosen} -> {best}"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from edge_affect.artifact import atomic_write_text
    from edge_affect.train.evaluate import evaluate_checkpoint, write_submission

    metrics, pred, ann = evaluate_checkpoint(
        args.ckpt, args.data, args.split, images=args.images, device=None if args.device == "auto" else args.device
    )
    t = Table(title=f"{args.ckpt} on {args.split} ({metrics['rows']} frames)")
    for col in ("metric", "value"):
        t.add_column(col)
    for k in ("valence", "arousal", "va", "expr", "au", "p", "au_at_0.5", "p_at_0.5"):
        t.add_row(k, f"{metrics[k]:.4f}")
    Console().print(t)
    if args.json:
        atomic_write_text(args.json, json.dumps(metrics, indent=2))
    if args.submission:
        write_submission(args.submission, ann.paths, pred, metrics["au_thresholds"])
    return 0
