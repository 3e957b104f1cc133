"""``edge-affect package``: a training checkpoint → a shippable model folder (the default model's layout).

Writes, atomically (a temporary folder moved into place), ``model.safetensors`` (weights, no pickle, full
metadata in the header), ``model.onnx`` (FP32, exported from exactly those weights and checked against
PyTorch) and ``model.json`` (sizes, hashes, parameters, MACs, input, where and how long it trained, and
optional evaluation results). ``edge_affect.default`` reads this layout.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ALIGN_VIEWS, atomic_write_text, is_align_views, sha256_file
from edge_affect.config import check_evaluation
from edge_affect.default import DEFAULT_FILES
from edge_affect.fsutil import make_temp_dir, replace_dir
from edge_affect.schema import EXPRESSIONS

log = logging.getLogger(__name__)

#: Checkpoint ``extra`` keys kept in the shipped metadata (the rest is training bookkeeping).
KEEP_EXTRA = ("align_template", "align_views", "epoch", "val", "train_config")
#: ``extra`` key of a packaged model: ONNX node names its TensorRT-shaped INT8 model keeps in FP16
INT8_KEEP_FP16 = "int8_keep_fp16"


def check_graph_nodes(onnx_path: Path, names: list[str], option: str) -> None:
    """Refuse (one line) a name in ``names`` that is not a node of the ONNX graph at ``onnx_path``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    known = {n.name for n in graph.node}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(
            f"{option} {missing[0]!r}: not a node of {onnx_path.name} (node names look like "
            f"{next(iter(sorted(known)), '?')!r}; the export report's sensitivity ranking lists them)"
        )


def training_record(checkpoint: Path) -> dict[str, Any]:
    """Where and how long the run that wrote ``checkpoint`` trained, from ``metrics.jsonl`` beside it."""
    path = checkpoint.parent / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}:{i}: not a JSON line") from None
    if not rows:
        return {}
    secs = sum(float(r.get("epoch_seconds", 0.0)) for r in rows)
    return {
        "epochs": len(rows),
        "train_seconds": round(secs, 1),
        "images_per_s_mean": round(sum(float(r.get("images_per_s", 0.0)) for r in rows) / len(rows), 1),
        "device": rows[-1].get("device", ""),
        "world_size": rows[-1].get("world_size", 1),
        "history": [{"epoch": r.get("epoch"), "val": r.get("val")} for r in rows],
    }


def training_stages(checkpoint: Path, train_config: dict[str, Any] | None, depth: int = 0) -> dict[str, Any]:
    """``training_record`` of ``checkpoint`` plus its config and, when it was fine-tuned (``init_from``), the
    record of the checkpoint it started from (when that is still on disk), recursively."""
    rec: dict[str, Any] = {**training_record(checkpoint), "config": train_config}
    parent = (train_config or {}).get("init_from")
    if parent and depth < 8:
        p = Path(parent)
        entry: dict[str, Any] = {"checkpoint": str(p)}
        if p.is_file():
            from edge_affect.models import read_checkpoint

            meta_d, _, _ = read_checkpoint(p)
            entry.update(sha256=sha256_file(p), epoch=meta_d.get("extra", {}).get("epoch"))
            entry.update(training_stages(p, meta_d.get("extra", {}).get("train_config"), depth + 1))
        rec["init_from"] = entry
    return rec


def evaluation_from_bench(d: dict[str, Any], where: str = "evaluation") -> dict[str, Any]:
    """The compact evaluation stored in ``model.json`` from ``benchmarks/bench_peer_fer.py``'s JSON (one entry
    per model name: n, accuracy, macro-F1, per-class F1); any other JSON object is stored unchanged. Not an
    object, or holding a NaN/inf anywhere: a one-line ``ValueError`` naming ``where``."""
    d = check_evaluation(d, where)
    if "models" not in d:
        return d
    out: dict[str, Any] = {"data": d.get("data", {}), "machine": d.get("machine", {})}
    for m in d["models"]:
        try:
            mt = m["metrics"]
            out[m["name"]] = {
                "n": mt["n"],
                "accuracy": mt["accuracy"],
                "macro_f1": mt["macro_f1"],
                "per_class_f1": {c: v["f1"] for c, v in mt["per_class"].items()},
                "runtime": m.get("runtime", ""),
            }
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: model entry {m.get('name', '?')!r} lacks {e}") from None
    return out


def expression_prior(ann) -> np.ndarray:
    """Mean training expression target of ``Annotations`` (soft distributions when present, else the
    hard-label frequencies) over its labelled rows: 8 probabilities."""
    from edge_affect.schema import NUM_EXPR

    lab = ann.expr >= 0
    if not lab.any():
        raise ValueError(f"{ann.source}: no labelled expressions to estimate the class prior from")
    if ann.expr_soft is not None:
        prior = np.asarray(ann.expr_soft, dtype=np.float64)[lab].mean(0)
    else:
        prior = np.bincount(ann.expr[lab], minlength=NUM_EXPR) / lab.sum()
    return prior / prior.sum()


def adjust_expression_logits(model, prior: np.ndarray, tau: float) -> None:
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): ``expr_head.bias -= tau · log(prior)``, in place.
    Shifts decisions toward rare classes; ``tau = 0`` changes nothing."""
    import torch

    if not (np.isfinite(tau) and 0.0 <= tau <= 2.0):
        raise ValueError(f"expression logit adjustment tau {tau!r} must lie in [0, 2]")
    logp = np.log(np.clip(np.asarray(prior, dtype=np.float64), 1e-12, None))
    with torch.no_grad():
        model.expr_head.bias -= torch.as_tensor(tau * logp, dtype=model.expr_head.bias.dtype)


def package_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    evaluation: dict[str, Any] | None = None,
    description: str = "",
    test_time_flip: bool | None = None,
    expr_logit_adjust: float = 0.0,
    int8_keep_fp16: list[str] | None = None,
    align_views: int | None = None,
) -> dict[str, Any]:
    """Package ``checkpoint`` into ``out`` (must not exist or be empty); returns the ``model.json`` dict.

    ``data``: the training dataset root; an ``import.json`` there with an ``align_template`` (see
    ``edge-affect data import``) sets the runtime's crop framing. ``evaluation`` is stored as is.
    ``test_time_flip``: switch mirror averaging on/off in the shipped model (None keeps the checkpoint's).
    ``int8_keep_fp16``: node names of the packaged ONNX graph that ``export --int8`` keeps in FP16 in the
    TensorRT-shaped INT8 model of this package (recorded as ``extra["int8_keep_fp16"]``; checked here against the
    graph, so a name that is not one of its nodes is refused).
    ``expr_logit_adjust``: tau of a logit adjustment against the training prior of ``data`` (needs ``data``),
    baked into the expression head (see ``benchmarks/bench_rare_classes.py`` for its measured effect).
    ``align_views``: how many views of each face's alignment the runtime averages for this model by default
    (``extra["align_views"]``, 1, 2 or 4; None keeps the checkpoint's, else 1)."""
    import torch

    from edge_affect.data.fer import dataset_align_template
    from edge_affect.export.onnx_export import export_onnx_detailed
    from edge_affect.models import count_macs, count_params, load_checkpoint, save_safetensors

    checkpoint, out = Path(checkpoint), Path(out)
    if align_views is not None and not is_align_views(align_views):
        raise ValueError(f"--align-views {align_views!r}: expected one of {list(ALIGN_VIEWS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder, expected a new output folder")
    model, meta = load_checkpoint(checkpoint)
    if test_time_flip is not None:
        model.config.test_time_flip = bool(test_time_flip)
    extra = {k: meta.extra[k] for k in KEEP_EXTRA if k in meta.extra}
    if data is not None:
        tpl = dataset_align_template(data)
        if tpl is None:
            raise ValueError(f"{data}: no align_template in import.json (re-run edge-affect data import)")
        extra["align_template"] = tpl
    if expr_logit_adjust:
        if data is None:
            raise ValueError("--expr-logit-adjust needs --data (the training set whose class prior it removes)")
        from edge_affect.data.abaw import load_split

        ann = load_split(data, "train", check_images=False)
        prior = expression_prior(ann)
        absent = [EXPRESSIONS[i] for i in np.flatnonzero(prior <= 0)]
        if absent:  # log(0): the adjustment would make such a class the answer for every face
            raise ValueError(
                f"--expr-logit-adjust {expr_logit_adjust:g}: {ann.source} has no training faces of "
                f"{', '.join(absent)}, expected a training set with every expression class (or no --expr-logit-adjust)"
            )
        adjust_expression_logits(model, prior, expr_logit_adjust)
        extra["expr_logit_adjust"] = {"tau": float(expr_logit_adjust), "prior": [round(float(x), 6) for x in prior]}
    if align_views is not None:
        extra["align_views"] = int(align_views)
    extra["source_checkpoint_sha256"] = meta.checkpoint_sha256
    if int8_keep_fp16:
        extra[INT8_KEEP_FP16] = [str(n) for n in dict.fromkeys(int8_keep_fp16)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)  # named after this process: the next run removes it if a kill leaves it
    try:
        st = tmp / DEFAULT_FILES["safetensors"]
        save_safetensors(st, model, au_thresholds=meta.au_thresholds, extra=extra)
        shipped, st_meta = load_checkpoint(st)  # the ONNX comes from exactly the shipped weights
        onnx_path = tmp / DEFAULT_FILES["onnx"]
        res = export_onnx_detailed(shipped, st_meta, onnx_path)
        if int8_keep_fp16:
            check_graph_nodes(onnx_path, extra[INT8_KEEP_FP16], "--int8-keep-fp16")
        params, macs = count_params(shipped), count_macs(shipped)
        card = {
            "name": out.name,
            "description": description,
            "model": st_meta.model_name,
            "model_config": st_meta.model_config,  # as shipped: --test-time-flip is recorded as applied
            "parameters": params,
            "macs": macs,
            "input": {"size": st_meta.preprocess.input_size, "color": st_meta.preprocess.color},
            "test_time_flip": bool(st_meta.model_config.get("test_time_flip", False)),
            "align_template": extra.get("align_template"),
            "align_views": extra.get("align_views", 1),
            "expr_logit_adjust": extra.get("expr_logit_adjust"),
            INT8_KEEP_FP16: extra.get(INT8_KEEP_FP16, []),
            "au_thresholds": list(st_meta.au_thresholds),
            "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in (st, onnx_path)},
            "onnx": {"exporter": res.exporter, "max_abs_diff_vs_torch": res.max_abs_diff},
            "source_checkpoint": {"sha256": meta.checkpoint_sha256, "epoch": meta.extra.get("epoch")},
            "training": training_stages(checkpoint, meta.extra.get("train_config")),
            "packaged_with": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "machine": platform.machine(),
            },
            "evaluation": evaluation or {},
        }
        atomic_write_text(tmp / DEFAULT_FILES["card"], json.dumps(card, indent=1) + "\n")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # something appeared meanwhile
            raise ValueError(f"--out {out}: was filled while packaging, expected a new output folder")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("packaged %s → %s (%.1f M parameters)", checkpoint, out, card["parameters"] / 1e6)
    return card
