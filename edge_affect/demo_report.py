"""The demo's report: the summary it records, the tables it prints, ``demo_summary.md`` and its plots (the run is
:mod:`edge_affect.demo`). Every figure says whether it was measured in this run or recorded in ``model.json``."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.formats import FORMATS, TARGET_DESCRIPTIONS, format_of

#: FER+ mosaic: faces per expression (one row each), tile size in pixels.
FERPLUS_PER_CLASS, FERPLUS_TILE = 6, 96
#: Latency: warm-up calls, then up to this many timed calls (at least LATENCY_MIN_CALLS, within LATENCY_BUDGET_S).
LATENCY_WARMUP, LATENCY_CALLS, LATENCY_MIN_CALLS, LATENCY_BUDGET_S = 10, 300, 30, 2.0
#: How demo_summary.md marks where a figure comes from.
MEASURED = "measured now"
RECORDED = "recorded (model.json, not measured in this run)"


def _target_of(artifact: str) -> str:
    """What an export artifact is for (the format table's target), '' for a name it does not hold."""
    fmt = format_of(artifact)
    return TARGET_DESCRIPTIONS[fmt.target] if fmt is not None else ""


def _fmt_latency(lat: dict[str, Any] | None) -> str:
    return f"{lat['median_ms']:.2f} (IQR {lat['q25_ms']:.2f}–{lat['q75_ms']:.2f})" if lat else "-"


def _top_aus(rec: dict, k: int = 3) -> str:
    if rec.get("status") != "ok":
        return "-"
    active = [a for a, on in rec["au_active"].items() if on]
    ranked = sorted(active, key=lambda a: -rec["au_probs"][a])[:k]
    return " ".join(ranked) or "none"


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_photo(results: dict[str, dict], path: Path) -> None:
    """Expression probabilities of the astronaut's face for each artifact, side by side."""
    plt = _pyplot()

    from edge_affect.schema import EXPRESSIONS

    names = [n for n, r in results.items() if r["photo"] and r["photo"][0].get("status") == "ok"]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(8, 3.2))
    w = 0.8 / len(names)
    x = np.arange(len(EXPRESSIONS))
    for j, n in enumerate(names):
        p = results[n]["photo"][0]["expression_probs"]
        ax.bar(x + j * w - 0.4 + w / 2, [p[e] for e in EXPRESSIONS], w, label=n)
    ax.set_xticks(x, EXPRESSIONS, rotation=20)
    ax.set_ylabel("probability")
    ax.set_title("astronaut.png: expression probabilities per artifact")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_clip(rows: list[dict], path: Path) -> None:
    """Valence, arousal and the top expression probability over the clip (smoothed track)."""
    plt = _pyplot()

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    f = [r["frame"] for r in ok]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(f, [r["valence"] for r in ok], label="valence")
    ax.plot(f, [r["arousal"] for r in ok], label="arousal")
    ax.plot(f, [r["expression_probs"]["Happiness"] for r in ok], "--", label="P(Happiness)")
    ax.set_xlabel("frame")
    ax.set_ylim(-1, 1)
    ax.set_title("astronaut_clip.mp4 (FP32 ONNX, EMA-smoothed track)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_bench(bench: dict[str, dict], path: Path) -> None:
    plt = _pyplot()

    names = list(bench)
    if not names:
        return
    stages = ["detect", "align", "predict"]
    fig, ax = plt.subplots(figsize=(7, 3))
    x = np.arange(len(stages))
    w = 0.8 / len(names)
    for j, n in enumerate(names):
        rows = {(r["stage"], r["batch"]): r for r in bench[n]["rows"]}
        ax.bar(x + j * w - 0.4 + w / 2, [rows[(s, 1)]["p50_ms"] for s in stages], w, label=n)
    ax.set_xticks(x, [f"{s} (batch 1)" for s in stages])
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(f"runtime stages on {bench[names[0]]['machine']['cpu']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _eval_dataset(ev: dict) -> str:
    """Which set the card's accuracies are on (the file name of ``evaluation.data.path``)."""
    path = (ev.get("data") or {}).get("path")
    return Path(path).stem if path else "evaluation set"


def _summary(out, ckpt, card, report, results, clip_rows, clip_s, latency, mosaic_hits, export_s, why_not) -> dict:
    rows = []
    for label, r in results.items():
        face = r["photo"][0] if r["photo"] else {"status": "no result"}
        hits, found = mosaic_hits(r["mosaic"])
        rows.append(
            {
                "artifact": label,
                "backend": f"{r['backend']} ({r['device']})",
                "status": face.get("status"),
                "expression": face.get("expression"),
                "score": face.get("expression_score"),
                "valence": face.get("valence"),
                "arousal": face.get("arousal"),
                "top_aus": _top_aus(face),
                "mosaic_faces": found,
                "mosaic_match": hits,
                "latency_b1": latency.get(label),
            }
        )
    ok_clip = [r for r in clip_rows if r["status"] == "ok"]
    return {
        "checkpoint": str(ckpt),
        "model_card": {k: card.get(k) for k in ("model", "parameters", "macs", "input", "evaluation")} if card else {},
        "export": {
            "seconds": round(export_s, 1),
            "passed": report.passed,
            "gates": [
                {
                    "artifact": c.artifact,
                    "for": _target_of(c.artifact),
                    "backend": c.backend,
                    "gate": g.name,
                    "value": g.value,
                    "threshold": g.threshold,
                    "op": g.op,
                    "passed": g.passed,
                }
                for c in report.comparisons
                for g in c.gates
            ],
            "artifacts": report.artifacts,
            "engines": "built" if not why_not else f"skipped: {why_not}",
        },
        "photo": rows,
        "clip": {
            "frames": len({r["frame"] for r in clip_rows}),
            "faces": len(ok_clip),
            "seconds": round(clip_s, 2),
            "expressions": sorted({r["expression"] for r in ok_clip}),
        },
        "python": platform.python_version(),
    }


def _print_tables(con: Any, s: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="astronaut.png through each artifact (+ FER mosaic: label matches / faces found)")
    for col in (
        "artifact",
        "backend",
        "expression",
        "score",
        "valence",
        "arousal",
        "active AUs (top 3)",
        "mosaic",
        "ms/face b1 median (IQR)",
    ):
        t.add_column(col)
    for r in s["photo"]:
        ok = r["status"] == "ok"
        t.add_row(
            r["artifact"],
            r["backend"],
            r["expression"] if ok else r["status"],
            f"{r['score']:.3f}" if ok else "-",
            f"{r['valence']:+.3f}" if ok else "-",
            f"{r['arousal']:+.3f}" if ok else "-",
            r["top_aus"],
            f"{r['mosaic_match']}/{r['mosaic_faces']}",
            _fmt_latency(r["latency_b1"]),
        )
    con.print(t)
    g = Table(
        title=f"parity gates vs PyTorch FP32 (frames: export/export_report.md) — {'PASS' if s['export']['passed'] else 'FAIL'}"
    )
    for col in ("artifact", "for", "gate", "value", "threshold", "result"):
        g.add_column(col)
    for x in s["export"]["gates"]:
        g.add_row(
            x["artifact"],
            x.get("for", ""),
            x["gate"],
            f"{x['value']:.6g}",
            f"{x['op']} {x['threshold']:g}",
            "pass" if x["passed"] else "FAIL",
        )
    con.print(g)
    c = s["clip"]
    con.print(f"clip: {c['faces']} faces in {c['frames']} frames, {c['seconds']:.2f} s; expressions {c['expressions']}")
    fp = s.get("ferplus")
    if fp:
        con.print(
            f"FER+ valid, FP32 ONNX: majority-label accuracy {fp['accuracy']:.1%} on {fp['faces']} faces; "
            f"mosaic {fp['mosaic_match']}/{fp['mosaic_faces']} → {escape(fp['mosaic'])}"
        )
    con.print(f"TensorRT engines: {escape(s['export']['engines'])}")


def _markdown(s: dict) -> str:
    """demo_summary.md: one page; every figure is marked measured now or recorded (model.json)."""
    mc = s["model_card"]
    ev = mc.get("evaluation") or {}
    lines = [
        "# edge-affect demo",
        "",
        f"Figures marked *{MEASURED}* come from this run; figures marked *{RECORDED}* are copied from the",
        "model's card data and were not re-measured here.",
        "",
        f"- model: `{s['checkpoint']}`",
    ]
    if mc:
        lines.append(
            f"- {mc['model']}: {mc['parameters'] / 1e6:.2f} M parameters, {mc['macs'] / 1e6:.0f} M MACs, "
            f"{mc['input']['size']}×{mc['input']['size']} {mc['input']['color']} (details: MODEL_CARD.md)"
        )
    for k, v in ev.items():
        if isinstance(v, dict) and "accuracy" in v:
            f1 = f", macro-F1 {v['macro_f1']:.3f}" if "macro_f1" in v else ""
            lines.append(f"- {_eval_dataset(ev)}, {k}: accuracy {v['accuracy']:.2%}{f1} — *{RECORDED}*")
    fp = s.get("ferplus")
    if fp:
        lines.append(
            f"- FER+ validation (`{Path(fp['data']).name}`), FP32 ONNX through the runtime: majority-label accuracy "
            f"{fp['accuracy']:.2%} on {fp['faces']} faces ({fp['skipped_unknown_or_nf']} unknown/not-a-face "
            f"skipped; the split that selected the shipped default model, not unseen faces) — *{MEASURED}*"
        )
    lines += [
        f"- export: {s['export']['seconds']:.0f} s, parity {'PASS' if s['export']['passed'] else 'FAIL'}; "
        f"TensorRT engines {s['export']['engines']} — *{MEASURED}*",
        f"- total: {s.get('seconds_total', 0):.0f} s on {s.get('machine', {}).get('cpu', '?')} (Python {s['python']})"
        f" — *{MEASURED}*",
        "",
        f"## astronaut.png through every artifact (*{MEASURED}*)",
        "",
        "| artifact | backend | expression | score | valence | arousal | active AUs (top 3) | FER mosaic: label matches / faces | predict ms/face, batch 1: median (IQR) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["photo"]:
        ok = r["status"] == "ok"
        lines.append(
            f"| {r['artifact']} | {r['backend']} | {r['expression'] if ok else r['status']} | "
            f"{r['score']:.3f} | {r['valence']:+.3f} | {r['arousal']:+.3f} | {r['top_aus']} | "
            f"{r['mosaic_match']} / {r['mosaic_faces']} | "
            + (f"{_fmt_latency(r['latency_b1'])} |" if r["latency_b1"] else "not timed |")
            if ok
            else f"| {r['artifact']} | {r['backend']} | {r['status']} | - | - | - | - | - | - |"
        )
    calls = sorted({r["latency_b1"]["calls"] for r in s["photo"] if r["latency_b1"]}) or [0]
    n_calls = str(calls[0]) if len(calls) == 1 else f"{calls[0]}–{calls[-1]}"
    lines += [
        "",
        f"Latency: `predict` on the astronaut's face crop, {LATENCY_WARMUP} warm-up calls, then {n_calls} timed "
        f"calls per artifact (at most {LATENCY_CALLS}; {LATENCY_BUDGET_S:g} s once {LATENCY_MIN_CALLS} are in); "
        "median and interquartile range in ms. The PyTorch reference and",
        "the FP16 ONNX (FP16 is for GPUs; on a CPU it measures casts) are not timed. The INT8 Q/DQ graph",
        f"(`{FORMATS['onnx-int8'].filename}`) is built for TensorRT (INT8 kernels); ONNX Runtime on a CPU runs it",
        "slower than FP32, so its CPU latency is not its edge latency. The CPU INT8 model",
        f"(`{FORMATS['onnx-int8-cpu'].filename}`, written where TensorRT is absent) is the INT8 for CPUs.",
        "",
        "The FER mosaic holds 16 faces from `calibration/default` (FER2013 training split, so seen in training):",
        "it shows the outputs on real expressions, it is not an accuracy measurement (see MODEL_CARD.md).",
        "",
        "![expression probabilities](plots/astronaut_expression_probs.png)",
        "",
        "Overlays: `overlays/astronaut.*.png`, `overlays/fer_mosaic.*.png`, `overlays/astronaut_clip.mp4`. The dial",
        "beside each face plots valence (x, left = negative, right = positive) against arousal (y, up = aroused).",
        "",
    ]
    if fp:
        lines += [
            f"## FER+ validation faces (*{MEASURED}*)",
            "",
            f"{fp['mosaic_match']} of {fp['mosaic_faces']} mosaic faces predicted as their FER+ majority label "
            f"({FERPLUS_PER_CLASS} random faces per expression, one row each; green: same, red: differs). FER+'s",
            "validation split: not trained on, but the shipped default model was selected on it, so this is not an",
            "unseen-data figure (see MODEL_CARD.md).",
            "Per expression:",
            "",
            "| expression | faces | accuracy |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['n']} | {v['accuracy']:.1%} |" for k, v in fp["per_class"].items()]
        lines += ["", "![FER+ mosaic](overlays/ferplus_mosaic.png)", ""]
    lines += [
        f"## Clip (*{MEASURED}*)",
        "",
        f"{s['clip']['faces']} faces in {s['clip']['frames']} frames ({s['clip']['seconds']:.2f} s), FP32 ONNX, EMA-smoothed.",
        "",
        "![clip](plots/clip_va.png)",
        "",
        f"## Parity gates (vs PyTorch FP32 on the frames export_report.md names; *{MEASURED}*)",
        "",
        "| artifact | for | gate | value | threshold | result |",
        "|---|---|---|---|---|---|",
    ]
    for x in s["export"]["gates"]:
        lines.append(
            f"| {x['artifact']} | {x.get('for', '')} | {x['gate']} | {x['value']:.6g} | {x['op']} {x['threshold']:g} "
            f"| {'pass' if x['passed'] else 'FAIL'} |"
        )
    lines += [
        "",
        "Full report: `export/export_report.md`.",
        "",
        f"## Runtime stages (*{MEASURED}*, p50 of `--iters` calls; `bench.json`)",
        "",
        "![latency](plots/bench_latency.png)",
        "",
    ]
    return "\n".join(lines)
