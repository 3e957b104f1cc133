"""``edge-affect package``: a training checkpoint → a shippable model folder (the default model's layout).

Writes, atomically (a temporary folder moved into place), ``model.safetensors`` (weights, no pickle, full
metadata in the header), ``model.onnx`` (FP32, exported from exactly those weights and checked against
PyTorch) and ``model.json`` (sizes, hashes, parameters, MACs, input, where and how long it trained, and
optional evaluation results). ``edge_affect.default`` reads this layout.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edge_affect.artifact import atomic_write_text, sha256_file
from edge_affect.default import DEFAULT_FILES

log = logging.getLogger(__name__)

#: Checkpoint ``extra`` keys kept in the shipped metadata (the rest is training bookkeeping).
KEEP_EXTRA = ("align_template", "epoch", "val", "train_config")


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
    per model name: n, accuracy, macro-F1, per-class F1); any other dict is stored unchanged."""
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


def package_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    evaluation: dict[str, Any] | None = None,
    description: str = "",
    test_time_flip: bool | None = None,
) -> dict[str, Any]:
    """Package ``checkpoint`` into ``out`` (must not exist or be empty); returns the ``model.json`` dict.

    ``data``: the training dataset root; an ``import.json`` there with an ``align_template`` (see
    ``edge-affect data import``) sets the runtime's crop framing. ``evaluation`` is stored as is.
    ``test_time_flip``: switch mirror averaging on/off in the shipped model (None keeps the checkpoint's)."""
    import torch

    from edge_affect.data.fer import dataset_align_template
    from edge_affect.export.onnx_export import export_onnx_detailed
    from edge_affect.models import count_macs, count_params, load_checkpoint, save_safetensors

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new output folder")
    model, meta = load_checkpoint(checkpoint)
    if test_time_flip is not None:
        model.config.test_time_flip = bool(test_time_flip)
    extra = {k: meta.extra[k] for k in KEEP_EXTRA if k in meta.extra}
    if data is not None:
        tpl = dataset_align_template(data)
        if tpl is None:
            raise ValueError(f"{data}: no align_template in import.json (re-run edge-affect data import)")
        extra["align_template"] = tpl
    extra["source_checkpoint_sha256"] = meta.checkpoint_sha256
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=str(out.parent)))
    try:
        st = tmp / DEFAULT_FILES["safetensors"]
        save_safetensors(st, model, au_thresholds=meta.au_thresholds, extra=extra)
        shipped, st_meta = load_checkpoint(st)  # the ONNX comes from exactly the shipped weights
        onnx_path = tmp / DEFAULT_FILES["onnx"]
        res = export_onnx_detailed(shipped, st_meta, onnx_path)
        params, macs = count_params(shipped), count_macs(shipped)
        card = {
            "name": out.name,
            "description": description,
            "model": meta.model_name,
            "model_config": meta.model_config,
            "parameters": params,
            "macs": macs,
            "input": {"size": meta.preprocess.input_size, "color": meta.preprocess.color},
            "align_template": extra.get("align_template"),
            "au_thresholds": list(meta.au_thresholds),
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
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(out, 0o777 & ~umask)  # mkdtemp made it 0700
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("packaged %s → %s (%.1f M parameters)", checkpoint, out, card["parameters"] / 1e6)
    return card
