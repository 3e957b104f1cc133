"""Dataset health report: label counts per task, class balance, AU rates, VA ranges and bad rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.data.abaw import IMAGES_DIR, SPLIT_FILES, Annotations, load_split
from edge_affect.schema import AUS, EXPRESSIONS

log = logging.getLogger(__name__)


def summarize(ann: Annotations) -> dict[str, Any]:
    """Counts and distributions of one split (JSON-serialisable)."""
    n = len(ann)
    va = ann.va[ann.va_mask]
    va_stats: dict[str, Any] = {}
    for j, name in enumerate(("valence", "arousal")):
        col = va[:, j]
        va_stats[name] = (
            {"min": float(col.min()), "max": float(col.max()), "mean": float(col.mean()), "std": float(col.std())}
            if len(col)
            else None
        )
    return {
        "file": str(ann.source),
        "variant": ann.variant,
        "rows": n,
        "videos": len(ann.videos()),
        "tasks": {
            task: {"labelled": k, "missing": n - k}
            for task, k in (("va", ann.n_va), ("expr", ann.n_expr), ("au", ann.n_au))
        },
        "all_three": int((ann.va_mask & ann.expr_mask & ann.au_mask).sum()),
        "none": int((~ann.va_mask & ~ann.expr_mask & ~ann.au_mask).sum()),
        "expr_counts": ann.expr_counts(),
        "au_positive_rate": ann.au_positive_rates(),
        "va": va_stats,
        "bad_rows": [f"{ann.source}:{line}: {reason}" for line, reason in ann.bad_rows],
    }


def check_dataset(root: str | Path, images: str | Path | None = None) -> dict[str, Any]:
    """Read both splits of an ABAW-layout root in skip-bad mode and report on them.

    Missing files and bad rows are reported, not raised (``ok`` is False then); only a missing
    ``root`` raises ``FileNotFoundError``.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"dataset root {r} does not exist or is not a folder")
    images_root = Path(images) if images is not None else r / IMAGES_DIR
    report: dict[str, Any] = {"root": str(r), "images": str(images_root), "splits": {}, "problems": []}
    check_images = images_root.is_dir()
    if not check_images:
        report["problems"].append(f"image folder {images_root} does not exist: image files were not checked")
    anns: dict[str, Annotations] = {}
    for split in SPLIT_FILES:
        try:
            ann = load_split(r, split, images=images_root, skip_bad=True, check_images=check_images)
        except (FileNotFoundError, ValueError) as e:
            report["problems"].append(str(e))
            continue
        anns[split] = ann
        report["splits"][split] = summarize(ann)
        if ann.bad_rows:
            report["problems"].append(f"{ann.source}: {len(ann.bad_rows)} bad rows (listed under bad_rows)")
        if len(ann) == 0:
            report["problems"].append(f"{ann.source}: no usable rows")
    if "train" in anns and "val" in anns:
        shared = sorted(set(anns["train"].videos()) & set(anns["val"].videos()))
        report["shared_videos"] = shared
        if shared:
            report["problems"].append(
                f"{len(shared)} videos appear in both train and val (e.g. {shared[0]!r}): leakage"
            )
    report["ok"] = not report["problems"]
    return report


def print_report(report: dict[str, Any], console: Any = None, max_bad: int = 20) -> None:
    """Render ``check_dataset``'s report as rich tables (used by ``edge-affect data check``)."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    splits = report["splits"]
    names = list(splits)
    t = Table(title=f"dataset {report['root']}")
    t.add_column("")
    for s in names:
        t.add_column(s, justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("rows", [str(splits[s]["rows"]) for s in names]),
        ("videos", [str(splits[s]["videos"]) for s in names]),
    ]
    for task in ("va", "expr", "au"):
        rows.append(
            (
                f"{task} labelled / missing",
                [f"{splits[s]['tasks'][task]['labelled']} / {splits[s]['tasks'][task]['missing']}" for s in names],
            )
        )
    rows.append(("all three tasks", [str(splits[s]["all_three"]) for s in names]))
    rows.append(("bad rows", [str(len(splits[s]["bad_rows"])) for s in names]))
    for key in ("valence", "arousal"):
        cells = []
        for s in names:
            st = splits[s]["va"][key]
            cells.append(
                "-" if st is None else f"[{st['min']:.2f}, {st['max']:.2f}] μ={st['mean']:.2f} σ={st['std']:.2f}"
            )
        rows.append((key, cells))
    for label, cells in rows:
        t.add_row(label, *cells)
    con.print(t)

    e = Table(title="expressions (labelled frames)")
    e.add_column("class")
    for s in names:
        e.add_column(s, justify="right")
    for name in EXPRESSIONS:
        cells = []
        for s in names:
            c = splits[s]["expr_counts"][name]
            tot = max(1, splits[s]["tasks"]["expr"]["labelled"])
            cells.append(f"{c} ({100 * c / tot:.1f}%)")
        e.add_row(name, *cells)
    con.print(e)

    a = Table(title="AU positive rate (AU-labelled frames)")
    a.add_column("AU")
    for s in names:
        a.add_column(s, justify="right")
    for name in AUS:
        a.add_row(name, *[_pct(splits[s]["au_positive_rate"][name]) for s in names])
    con.print(a)

    for s in names:
        bad = splits[s]["bad_rows"]
        for line in bad[:max_bad]:
            con.print(f"[red]bad row[/red] {line}", markup=True, highlight=False)
        if len(bad) > max_bad:
            con.print(f"... and {len(bad) - max_bad} more bad rows in {s}")
    for p in report["problems"]:
        con.print(f"[yellow]problem[/yellow]: {p}", highlight=False)
    con.print("[green]OK[/green]" if report["ok"] else "[red]problems found[/red]")


def _pct(x: float) -> str:
    return "-" if x is None or np.isnan(x) else f"{100 * x:.1f}%"
