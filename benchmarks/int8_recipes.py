"""Training recipes side by side for post-training INT8: ``bench_int8_backbones.py`` results of several recipes,
gathered into one table, one JSON and one plot.

    python benchmarks/int8_recipes.py plain='runs/b22s/base_*_t*.json' noise='runs/b22n/noise_*_t*.json' \\
        stable='runs/b22c/stable_*_t*.json' --select-seed 11 \\
        --json benchmarks/results/int8_recipes.json --png docs/img/int8_recipes.png

Each argument is ``LABEL=GLOB``: the JSON files ``bench_int8_backbones.py --json`` wrote for one recipe (its
``--config``), any models, seeds and test seeds (``--test-seed``: each file records its own). The table gives, per
recipe, model and training seed, TensorRT-shaped and CPU INT8 top-1 expression agreement with FP32 on each test
set, the share of near ties, FP32's agreement with itself under N(0, 1/255) pixel noise (the yardstick: how far a
camera's noise alone moves the same model) and the run's own validation expression accuracy, then each recipe's
mean per model and test set. ``--select-seed`` names the test set that chose among the recipes (it is labelled so
in the table and JSON; the others are judged). The plot puts INT8 agreement against the yardstick on the judged
faces, or with ``--x val_acc`` against each run's own validation expression accuracy (how much of the set it
learned). Reads only; the PNG and JSON are written whole or not at all.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The columns kept from each bench row.
KEYS = (
    "model",
    "seed",
    "agree_qdq",
    "agree_cpu_int8",
    "agree_cpu_int8_nncf",
    "near_tie_share",
    "agree_fp32_pixel_noise",
    "val_expr_acc",
)


class RecipeError(ValueError):
    """An argument or results file that cannot be read (the message names it)."""


def read_recipe(label: str, pattern: str) -> list[dict]:
    """Every row of every bench JSON matching ``pattern``, tagged with ``label``, its test seed and its config."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise RecipeError(f"{label}={pattern}: no file matches (expected bench_int8_backbones.py --json outputs)")
    rows = []
    for f in files:
        try:
            d = json.loads(Path(f).read_text())
            for r in d["rows"]:
                rows.append(
                    {
                        "recipe": label,
                        "config": d["config"],
                        "test_seed": int(d["test_seed"]),
                        **{k: r.get(k) for k in KEYS},
                    }
                )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RecipeError(f"{f}: expected a bench_int8_backbones.py --json file ({type(e).__name__}: {e})") from None
    return rows


def means(rows: list[dict]) -> list[dict]:
    """Per recipe, model and test seed: the mean of each agreement over the training seeds present."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["model"], r["test_seed"]), []).append(r)
    out = []
    for (recipe, model, test_seed), rs in groups.items():
        out.append(
            {
                "recipe": recipe,
                "model": model,
                "test_seed": test_seed,
                "seeds": sorted(r["seed"] for r in rs),
                **{
                    k: round(statistics.fmean(r[k] for r in rs), 4)
                    for k in KEYS[2:]
                    if all(isinstance(r.get(k), (int, float)) for r in rs)
                },
            }
        )
    return out


def _f(v: object, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def table(rows: list[dict], avg: list[dict], select_seed: int | None) -> str:
    role = {select_seed: "chooses"}
    head = (
        f"{'recipe':8s} {'model':6s} {'seed':>5s} {'faces':>14s} {'Q/DQ':>6s} {'CPU':>6s} {'NNCF':>6s} {'ties':>5s} "
        f"{'px1/255':>7s} {'val acc':>7s}"
    )
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["model"], r["seed"], r["test_seed"], r["recipe"])):
        faces = f"seed {r['test_seed']} ({role.get(r['test_seed'], 'judged')})"
        lines.append(
            f"{r['recipe']:8s} {r['model']:6s} {r['seed']:5d} {faces:>14s} {_f(r['agree_qdq']):>6s} "
            f"{_f(r['agree_cpu_int8']):>6s} {_f(r['agree_cpu_int8_nncf']):>6s} {_f(r['near_tie_share'], '.2f'):>5s} "
            f"{_f(r['agree_fp32_pixel_noise']):>7s} {_f(r['val_expr_acc']):>7s}"
        )
    lines.append("")
    lines.append("means over training seeds:")
    for m in sorted(avg, key=lambda m: (m["model"], m["test_seed"], m["recipe"])):
        faces = f"seed {m['test_seed']} ({role.get(m['test_seed'], 'judged')})"
        seeds = ",".join(map(str, m["seeds"]))
        lines.append(
            f"{m['recipe']:8s} {m['model']:6s} {seeds:>5s} {faces:>14s} {_f(m.get('agree_qdq')):>6s} "
            f"{_f(m.get('agree_cpu_int8')):>6s} {_f(m.get('agree_cpu_int8_nncf')):>6s} "
            f"{_f(m.get('near_tie_share'), '.2f'):>5s} {_f(m.get('agree_fp32_pixel_noise')):>7s} "
            f"{_f(m.get('val_expr_acc')):>7s}"
        )
    return "\n".join(lines)


#: What the plot's x axis can show: the row's key and the axis label.
X_AXES = {
    "yardstick": ("agree_fp32_pixel_noise", "FP32 with itself under N(0, 1/255) pixel noise"),
    "val_acc": ("val_expr_acc", "own validation expression accuracy (best.pt)"),
}


def plot(rows: list[dict], path: Path, select_seed: int | None, x: str = "yardstick") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_affect.artifact import atomic_write_figure

    xkey, xlabel = X_AXES[x]
    judged = [
        r for r in rows if r["test_seed"] != select_seed and all(isinstance(r[k], float) for k in ("agree_qdq", xkey))
    ]
    if not judged:
        raise RecipeError(f"no judged row has both INT8 agreement and {xkey} to plot")
    fig, ax = plt.subplots(figsize=(6.5, 5))
    recipes = list(dict.fromkeys(r["recipe"] for r in judged))
    markers = {m: k for m, k in zip(sorted({r["model"] for r in judged}), "os^Dv", strict=False)}
    for i, recipe in enumerate(recipes):
        for model, marker in markers.items():
            rs = [r for r in judged if r["recipe"] == recipe and r["model"] == model]
            if rs:
                ax.scatter(
                    [r[xkey] for r in rs],
                    [r["agree_qdq"] for r in rs],
                    color=f"C{i}",
                    marker=marker,
                    label=f"{model}, {recipe}",
                )
    if x == "yardstick":
        lo = min(min(r[xkey], r["agree_qdq"]) for r in judged) - 0.01
        ax.plot([lo, 1], [lo, 1], color="grey", lw=0.8, ls=":", label="INT8 flips = pixel-noise flips")
    ax.axhline(0.97, color="red", lw=0.8, ls="--", label="97 % (issue 22)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("TensorRT-shaped INT8 with FP32")
    seeds = sorted({r["test_seed"] for r in judged})
    ax.set_title(f"top-1 expression agreement, synthetic faces of seed {', '.join(map(str, seeds))}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="+", help="LABEL=GLOB of bench_int8_backbones.py JSON files, one per recipe")
    ap.add_argument("--select-seed", type=int, help="the test seed whose faces chose among the recipes")
    ap.add_argument("--png", type=Path, help="write the plot (judged faces) here")
    ap.add_argument("--json", type=Path, help="write the rows and means here")
    ap.add_argument("--x", choices=sorted(X_AXES), default="yardstick", help="the plot's x axis (default: yardstick)")
    args = ap.parse_args(argv)
    rows: list[dict] = []
    try:
        for spec in args.recipes:
            label, sep, pattern = spec.partition("=")
            if not sep or not label or not pattern:
                raise RecipeError(f"{spec!r}: expected LABEL=GLOB")
            rows += read_recipe(label, pattern)
        avg = means(rows)
        print(table(rows, avg, args.select_seed))
        if args.png:
            plot(rows, args.png, args.select_seed, args.x)
            print(f"plot in {args.png}")
    except RecipeError as e:
        print(f"int8_recipes: {e}", file=sys.stderr)
        return 2
    if args.json:
        from edge_affect.artifact import atomic_write_bytes

        doc = {"select_seed": args.select_seed, "rows": rows, "means": avg}
        atomic_write_bytes(args.json, (json.dumps(doc, indent=1) + "\n").encode())
        print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
