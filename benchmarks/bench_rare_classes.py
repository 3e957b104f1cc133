"""The rare expressions (FER+: Disgust 0.7 %, Other/contempt 0.6 %, Fear 2.3 % of majority labels): the
effect of a post-hoc logit adjustment, measured on the validation split.

A model trained on a long-tailed label distribution learns the training prior into its logits; subtracting
``tau · log prior`` from the expression logits (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021) trades a little accuracy on the frequent classes for recall on the rare ones. ``tau = 0`` is the
model as trained, ``tau = 1`` the balanced-error optimum. The prior is the mean training target (the FER+
vote distribution when the dataset has soft targets, else the hard-label frequencies). ``edge-affect package
--expr-logit-adjust TAU`` bakes the chosen ``tau`` into the expression head's bias, so every export and
backend carries it.

    python benchmarks/bench_rare_classes.py runs/ferplus-edge/best.pt --data runs/ferplus \\
        --json benchmarks/results/rare_classes.json --png docs/img/rare_classes.png

Prints a table (accuracy, macro-F1, per-class F1 and recall per ``tau``) and writes JSON and a PNG. Only the
validation split is used (it also selected the checkpoint): these are not unseen-data figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_peer_fer import NO_MPL, _pyplot, evaluate_predictions  # noqa: E402

from edge_affect.schema import EXPRESSIONS  # noqa: E402

PROG = "bench_rare_classes"


def training_prior(data_root: str | Path) -> np.ndarray:
    """Mean training expression target (8 probabilities) of an ABAW-layout dataset root."""
    from edge_affect.data.abaw import load_split
    from edge_affect.export.package import expression_prior

    return expression_prior(load_split(data_root, "train", check_images=False))


def scores(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and recall over the 8 classes (the peer benchmark's own scoring)."""
    res = evaluate_predictions(pred, target, k=len(EXPRESSIONS))
    return {
        "accuracy": res["accuracy"],
        "macro_f1": res["macro_f1"],
        "per_class_f1": {n: v["f1"] for n, v in res["per_class"].items()},
        "per_class_recall": {n: v["recall"] for n, v in res["per_class"].items()},
    }


def sweep(probs: np.ndarray, target: np.ndarray, prior: np.ndarray, taus: list[float]) -> list[dict[str, Any]]:
    logp = np.log(np.clip(probs, 1e-12, None))
    logprior = np.log(np.clip(prior, 1e-12, None))
    return [{"tau": t, **scores((logp - t * logprior).argmax(1), target)} for t in taus]


def write_png(rows: list[dict[str, Any]], path: str | Path) -> str:
    """Accuracy and macro-F1 against tau, and per-class F1 against tau (two panels)."""
    plt = _pyplot()
    if plt is None:
        return NO_MPL
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    tt = [r["tau"] for r in rows]
    ax[0].plot(tt, [100 * r["accuracy"] for r in rows], marker="o", label="accuracy (%)")
    ax[0].set_xlabel("tau")
    ax[0].set_ylabel("majority accuracy (%)")
    ax2 = ax[0].twinx()
    ax2.plot(tt, [r["macro_f1"] for r in rows], marker="s", color="tab:orange", label="macro-F1")
    ax2.set_ylabel("macro-F1")
    ax[0].set_title("accuracy vs macro-F1")
    for n in EXPRESSIONS:
        ax[1].plot(tt, [r["per_class_f1"][n] for r in rows], marker="o", label=n)
    ax[1].set_xlabel("tau")
    ax[1].set_ylabel("F1")
    ax[1].set_title("per-class F1")
    ax[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"PNG in {path}"


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n", 1)[0])
    ap.add_argument("checkpoint", help="training checkpoint (.pt) or packaged .safetensors")
    ap.add_argument("--data", required=True, help="ABAW-layout dataset root (train prior, val split)")
    ap.add_argument("--taus", default="0,0.25,0.5,0.75,1.0", help="comma-separated adjustment strengths")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from edge_affect.cliutil import describe_os_error
    from edge_affect.fsutil import check_not_inputs

    try:
        taus = [float(t) for t in args.taus.split(",")]
    except ValueError:
        ap.error(f"--taus {args.taus!r}: expected comma-separated numbers")
    try:  # one line (exit 2) for a missing or unreadable input, and before any work for an output over one
        check_not_inputs(
            {"--json": args.json, "--png": args.png},
            {"CHECKPOINT": args.checkpoint, "--data": args.data},
            input_folders=("--data",),
        )
        from edge_affect.train.evaluate import evaluate_checkpoint

        _, pred, ann = evaluate_checkpoint(args.checkpoint, args.data, "val")
        prior = training_prior(args.data)
    except OSError as e:
        return _error(describe_os_error(e))
    except ValueError as e:
        return _error(str(e))
    keep = ann.expr >= 0
    rows = sweep(pred["expr"][keep], ann.expr[keep], prior, taus)
    con = Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=f"logit adjustment on {Path(args.data).name} validation ({int(keep.sum())} faces)")
    for col in ("tau", "accuracy", "macro-F1", *(f"F1 {n[:4]}" for n in EXPRESSIONS)):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{r['tau']:.2f}",
            f"{100 * r['accuracy']:.2f} %",
            f"{r['macro_f1']:.4f}",
            *(f"{r['per_class_f1'][n]:.3f}" for n in EXPRESSIONS),
        )
    con.print(t)
    con.print("prior: " + ", ".join(f"{n} {p:.4f}" for n, p in zip(EXPRESSIONS, prior, strict=True)))
    out = {"checkpoint": str(args.checkpoint), "data": str(args.data), "prior": prior.tolist(), "sweep": rows}
    try:
        if args.json:
            from edge_affect.artifact import atomic_write_text

            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(out, indent=2))
            con.print(f"JSON in {args.json}")
        if args.png:
            con.print(write_png(rows, args.png))
    except OSError as e:
        return _error(describe_os_error(e))
    except ValueError as e:  # e.g. a --png suffix matplotlib cannot write
        return _error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
