"""Training runs side by side: one validation metric per epoch from each run's ``metrics.jsonl``, as a table, a plot
and JSON.

    python scripts/compare_runs.py runs/ferplus-kd6=6a runs/ferplus-kd6-nokd=6b \\
        --png docs/img/kd6_training.png --json benchmarks/results/kd6_training.json

Each argument is a run folder written by ``edge-affect train`` (``RUN`` or ``RUN=label``). The metric is a key of
the epoch records' ``val`` (default ``expr_acc``, the FER+ majority accuracy the FER+ configs select on). The table
gives, per run, the epochs recorded, the best epoch and value, the last value and the median epoch time. Reads
only; the PNG and JSON are written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class RunError(ValueError):
    """A run folder or metrics line that cannot be read (the message names it)."""


def read_run(run: Path, metric: str) -> list[dict]:
    """The epochs of ``run`` as ``{"epoch", "value", "seconds"}``, in the file's order (the training loop rewrites the
    file from its checkpoint on resume, so each epoch appears once)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise RunError(f"{path}: no such file (expected a run folder written by edge-affect train)")
    epochs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            epochs.append(
                {"epoch": int(rec["epoch"]), "value": float(rec["val"][metric]), "seconds": rec.get("epoch_seconds")}
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RunError(
                f"{path}:{n}: expected an epoch record with val.{metric} ({type(e).__name__}: {e})"
            ) from None
    if not epochs:
        raise RunError(f"{path}: no epoch records")
    return epochs


def summarise(label: str, run: Path, epochs: list[dict]) -> dict:
    best = max(epochs, key=lambda r: r["value"])
    secs = [r["seconds"] for r in epochs if isinstance(r["seconds"], (int, float))]
    return {
        "label": label,
        "run": str(run),
        "epochs": len(epochs),
        "best_epoch": best["epoch"],
        "best": best["value"],
        "last": epochs[-1]["value"],
        "median_epoch_s": round(statistics.median(secs), 1) if secs else None,
        "curve": [[r["epoch"], r["value"]] for r in epochs],
    }


def plot(rows: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_affect.artifact import atomic_write_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        ax.plot(
            [e for e, _ in r["curve"]],
            [v for _, v in r["curve"]],
            label=f"{r['label']} (best {r['best']:.4f} at {r['best_epoch']})",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders, RUN or RUN=label")
    ap.add_argument("--metric", default="expr_acc", help="key of each epoch record's val (default expr_acc)")
    ap.add_argument("--png", type=Path, help="write the curves here")
    ap.add_argument("--json", type=Path, help="write the table and curves here")
    args = ap.parse_args(argv)
    rows = []
    try:
        for spec in args.runs:
            run, _, label = spec.partition("=")
            rows.append(summarise(label or Path(run).name, Path(run), read_run(Path(run), args.metric)))
    except RunError as e:
        print(f"compare_runs: {e}", file=sys.stderr)
        return 2
    print(f"{'run':24s} {'epochs':>6s} {'best epoch':>10s} {'best':>8s} {'last':>8s} {'median s/epoch':>14s}")
    for r in rows:
        secs = "-" if r["median_epoch_s"] is None else f"{r['median_epoch_s']:.1f}"
        print(f"{r['label']:24s} {r['epochs']:6d} {r['best_epoch']:10d} {r['best']:8.4f} {r['last']:8.4f} {secs:>14s}")
    if args.png:
        plot(rows, args.metric, args.png)
        print(f"plot in {args.png}")
    if args.json:
        from edge_affect.artifact import atomic_write_bytes

        atomic_write_bytes(args.json, (json.dumps({"metric": args.metric, "runs": rows}, indent=1) + "\n").encode())
        print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
