"""Quantization-aware fine-tune of the INT8 export (``edge-affect export --int8 --qat --data ROOT``).

Route: the ModelOpt PTQ graph is the model that trains. ``int8.quantize_int8`` writes the TensorRT-shaped Q/DQ
graph as before (signed int8, zero point 0, per-channel weights, FP16 elsewhere, stem FP16, the
``--int8-exclude`` choices); ``qdq_torch.QdqGraph`` runs that very graph in PyTorch with straight-through fake
quantizers at ModelOpt's places, BatchNorm already folded. Its float initializers (weights, biases, LayerNorm
parameters, embeddings) and, by default, the log-scales of its activation quantizers (LSQ) train a few hundred
steps on the training split of ROOT (packed cache + ``PackedLoader``, as ``train.loop``) against the checkpoint's
own FP32 outputs (distillation: the gates judge INT8 against the checkpoint); the weight scales follow the weights
(per-channel ``amax / 127`` of the FP32 master weights, as ModelOpt sets them). The trained values go back into
the same graph: every node, dtype and zero point stays ModelOpt's, so ``model.int8.onnx`` is as TensorRT-shaped
as the PTQ one (``qdq_check``), and the quantizers the weights learned to live with are the ones that ship.
Runs on CPU; needs only what the ``export`` extra installs.

The earlier route (NNCF fake quantizers on a copy of the PyTorch model, weights carried back, then ModelOpt
recalibrated) trained against quantizers other than the ones that shipped. Side by side on the same ``tiny``
checkpoints, calibration and 200 gate frames, expression agreement seeds 0 / 1: PTQ 0.940 / 0.935, NNCF QAT
0.965 / 0.945, this route 0.970 / 0.965 (docs/export.md, ``--qat``: setup, and the caveat that those gate frames
also chose between the routes).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class QatSettings:
    """What the QAT fine-tune does (``ExportRequest.qat``)."""

    data: Path  # ABAW-layout dataset root: its ``split`` trains
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4  # AdamW on the graph's float initializers (cosine to 0)
    # AdamW on the activation quantizers' log-scales (LSQ); 0: keep ModelOpt's calibrated scales
    scale_lr: float = 1e-2
    split: str = "train"
    seed: int = 0
    eval_batches: int = 4  # fixed batches of the split on which loss before/after is measured
    # weight of the distillation term (the checkpoint's own FP32 outputs as soft targets): the gates judge INT8
    # against the checkpoint
    distill: float = 100.0
    # weight of the task loss on ROOT's labels (MultiTaskLoss); 0 by default: labels pull the INT8 model away
    # from the checkpoint (measured with the earlier route: more flips)
    labels: float = 0.0
    # which INT8 graph ships: "closer" keeps the fine-tuned graph only when it is closer to the checkpoint than the
    # PTQ graph on the calibration frames (frames QAT never trains on and the gates never judge), else PTQ ships;
    # "always" ships the fine-tuned graph
    keep: str = "closer"


def distill_loss(student: dict[str, Any], teacher: dict[str, Any]) -> Any:
    """Student vs the FP32 checkpoint's outputs, 0 where they match: KL on expression, binary KL on each AU
    probability (the BCE against the teacher's probabilities less the teacher's own entropy, the same gradient),
    MSE on VA."""
    import torch.nn.functional as F

    s_log, t_log = F.log_softmax(student["expr"], -1), F.log_softmax(teacher["expr"], -1)
    kl = F.kl_div(s_log, t_log, reduction="batchmean", log_target=True)
    t_au = teacher["au"].sigmoid()
    au = F.binary_cross_entropy_with_logits(student["au"], t_au) - F.binary_cross_entropy_with_logits(
        teacher["au"], t_au
    )
    return kl + au + F.mse_loss(student["va"], teacher["va"])


def distance_np(student: dict[str, np.ndarray], teacher: dict[str, np.ndarray]) -> float:
    """``distill_loss`` in numpy, averaged over the frames: how far an artifact's outputs are from the checkpoint's."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    s_log, t_log = log_softmax(student["expr"].astype(np.float64)), log_softmax(teacher["expr"].astype(np.float64))
    kl = float((np.exp(t_log) * (t_log - s_log)).sum(-1).mean())
    p = 1.0 / (1.0 + np.exp(-teacher["au"].astype(np.float64)))
    q = np.clip(1.0 / (1.0 + np.exp(-student["au"].astype(np.float64))), 1e-12, 1 - 1e-12)
    pc = np.clip(p, 1e-12, 1 - 1e-12)
    au = float((p * np.log(pc / q) + (1 - p) * np.log((1 - pc) / (1 - q))).mean())
    va = float(((student["va"].astype(np.float64) - teacher["va"]) ** 2).mean())
    return kl + au + va


def round_sig(v: float, digits: int = 4) -> float:
    """``v`` to ``digits`` significant digits (a distance to FP32 can be 1e-5 on a barely trained model)."""
    return float(f"{v:.{digits}g}")


def _loss_config(meta: Any) -> Any:
    from edge_affect.config import TrainConfig

    tc = (meta.extra or {}).get("train_config")
    return TrainConfig.from_dict(dict(tc)).loss if isinstance(tc, dict) else None


def check_settings(s: QatSettings) -> None:
    """Range checks of the settings (run before anything is exported)."""
    for name, v, lo in (
        ("qat_steps", s.steps, 1),
        ("qat_batch", s.batch_size, 1),
        ("qat_eval_batches", s.eval_batches, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} {v!r}: out of range, expected an integer ≥ {lo}")
    for name, v in (
        ("qat_lr", s.lr),
        ("qat_scale_lr", s.scale_lr),
        ("qat_distill", s.distill),
        ("qat_labels", s.labels),
    ):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} {v!r}: out of range, expected a number ≥ 0")
    if not s.lr > 0:
        raise ValueError(f"qat_lr {s.lr!r}: out of range, expected a number > 0")
    if s.keep not in ("closer", "always"):
        raise ValueError(f"qat_keep {s.keep!r}: expected 'closer' or 'always'")
    if not (s.distill > 0 or s.labels > 0):
        raise ValueError("qat: distill and labels are both 0, expected a loss to train on")


def check_not_gate_frames(
    s: QatSettings, eval_data: str | Path | None, eval_split: str, calib_dir: Path, manifest: dict[str, Any]
) -> None:
    """Refuse a fine-tune whose training frames (split ``s.split`` of ``s.data``) are the frames the parity gates
    judge: ``eval_data`` that is the same dataset root and split, or, without it, gate frames held out of a
    calibration set sampled from that split (``manifest['source']``)."""
    from edge_affect.fsutil import same_path

    if eval_data is not None:
        if Path(eval_data).is_dir() and same_path(eval_data, s.data) and eval_split == s.split:
            raise ValueError(
                f"--qat: trains on the {s.split} split of --data {s.data}, the split --eval-data {eval_data} "
                f"--eval-split {eval_split} gives the gates, expected gate frames the fine-tune never sees "
                "(another --eval-split or dataset)"
            )
        return
    src = manifest.get("source") or {}
    if src.get("kind") == "abaw" and src.get("path") and same_path(src["path"], s.data) and src.get("split") == s.split:
        raise ValueError(
            f"--qat: trains on the {s.split} split of --data {s.data}, from which calibration set {calib_dir} "
            "was sampled, so its held-out gate frames are training frames; expected a calibration set from another "
            "split, or --eval-data from another split"
        )


def qat_int8(model: Any, meta: Any, int8_path: Path, fp32_path: Path, s: QatSettings) -> dict[str, Any]:
    """Fine-tune the Q/DQ graph at ``int8_path`` (ModelOpt's PTQ of ``fp32_path``) in place, see the module
    docstring; returns the record for the report (also stored in the graph's metadata). ``model`` (the
    checkpoint, the teacher) is left untouched."""
    import onnx
    import torch
    from onnx import numpy_helper

    from edge_affect.artifact import atomic_write_bytes
    from edge_affect.data.abaw import load_split
    from edge_affect.data.augment import to_input
    from edge_affect.data.cache import build_cache
    from edge_affect.data.loader import PackedLoader
    from edge_affect.export.onnx_export import read_onnx_meta, set_onnx_meta
    from edge_affect.export.tensorrt_int8.qdq_check import assert_trt_qdq
    from edge_affect.export.tensorrt_int8.qdq_torch import QdqGraph
    from edge_affect.losses import MultiTaskLoss

    check_settings(s)
    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    pp = meta.preprocess
    src = onnx.load(str(int8_path))
    int8_meta = read_onnx_meta(src)
    master = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32_path)).graph.initializer}
    g = QdqGraph(src, learn_act_scales=s.scale_lr > 0, master=master)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    criterion = MultiTaskLoss(_loss_config(meta))
    criterion.log_vars.requires_grad_(False)  # the checkpoint's balance of tasks is kept
    with tempfile.TemporaryDirectory(prefix=".qat-cache-") as tmp:
        ann = load_split(s.data, s.split)
        cache = build_cache(ann, ann.images_root, pp, Path(tmp) / s.split, workers=0)
        if len(cache) < s.batch_size:
            raise ValueError(f"--qat: {s.data} {s.split} has {len(cache)} rows, fewer than one batch ({s.batch_size})")
        loader = PackedLoader(cache, s.batch_size, shuffle=True, seed=s.seed, drop_last=True)
        fixed = PackedLoader(cache, s.batch_size, shuffle=False, drop_last=True)
        eval_batches = [b for _, b in zip(range(s.eval_batches), fixed, strict=False)]

        def loss(
            out: dict[str, Any], ref: dict[str, Any], batch: dict[str, Any], task_loss: bool = True
        ) -> tuple[Any, Any, Any]:
            """(weighted total, task loss, distillation); ``task_loss=False`` skips the MultiTaskLoss when its
            weight is 0 (the total is the same: it would add 0 × task) and returns None for it."""
            dist = distill_loss(out, ref)
            if not (task_loss or s.labels):
                return s.distill * dist, None, dist
            task = criterion(out, batch)[0]
            return s.labels * task + s.distill * dist, task, dist

        @torch.no_grad()
        def fixed_loss() -> tuple[float, float]:  # (task loss, distance to the FP32 checkpoint)
            task, dist = [], []
            for b in eval_batches:
                x = to_input(b["image"], pp)
                _, t, d = loss(g(x), teacher(x), b)
                task.append(float(t))
                dist.append(float(d))
            return (float(np.mean(task)), float(np.mean(dist))) if task else (float("nan"), float("nan"))

        before = fixed_loss()
        groups = [{"params": g.weights(), "lr": s.lr}]
        if s.scale_lr > 0:
            groups.append({"params": g.act_scales(), "lr": s.scale_lr})
        params = [p for grp in groups for p in grp["params"]]
        opt = torch.optim.AdamW(groups, lr=s.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.steps)
        losses: list[float] = []
        step, epoch = 0, 0
        while step < s.steps:
            loader.set_epoch(epoch)
            for batch in loader:
                if step >= s.steps:
                    break
                x = to_input(batch["image"], pp)
                with torch.no_grad():
                    ref = teacher(x)
                total = loss(g(x), ref, batch, task_loss=False)[0]  # the task loss only where labels weigh
                opt.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(float(total.detach()))
                step += 1
            epoch += 1
        after = fixed_loss()
        rows, n_eval = len(cache), len(eval_batches) * s.batch_size
    out = g.write_back()
    k = max(1, min(10, len(losses) // 5))
    info = {
        "tool": "edge_affect.export.tensorrt_int8.qdq_torch (PyTorch on the ModelOpt Q/DQ graph)",
        "route": "ModelOpt PTQ graph fine-tuned in place: weights, biases and activation scales; "
        "weight scales per-channel amax/127; nodes, dtypes and zero points unchanged",
        "data": str(s.data),
        "split": s.split,
        "rows": int(rows),
        "steps": int(step),
        "batch_size": s.batch_size,
        "lr": s.lr,
        "scale_lr": s.scale_lr,
        "distill": s.distill,
        "labels": s.labels,
        "seed": s.seed,
        "quantizers": f"{sum(1 for v in g.quant.values() if v[0] == 'weight')} weight (per channel), "
        f"{len(g.log_scales)} activation (per tensor) Q/DQ pairs of the PTQ graph",
        "act_scale_change_max": round(g.act_scale_change(), 4),
        "loss_fixed_batches": {"frames": int(n_eval), "before": round_sig(before[0]), "after": round_sig(after[0])},
        "distill_fixed_batches": {"before": round_sig(before[1]), "after": round_sig(after[1])},
        "train_loss_first": round(float(np.mean(losses[:k])), 5),
        "train_loss_last": round(float(np.mean(losses[-k:])), 5),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    int8_meta.extra = {**int8_meta.extra, "qat": info}
    set_onnx_meta(out, int8_meta)
    onnx.checker.check_model(out)
    assert_trt_qdq(out)
    atomic_write_bytes(int8_path, out.SerializeToString())
    log.info(
        "QAT: %d steps; on the fixed batches, task loss %.4f → %.4f, distance to FP32 %.4f → %.4f",
        step,
        before[0],
        after[0],
        before[1],
        after[1],
    )
    return info
