"""The training loop, readable top to bottom (nanoGPT style).

Data: images decoded once into a packed uint8 memory-mapped cache, batches copied (pinned, non-blocking)
to the device and augmented there, so JPEG decoding never starves a GPU. AMP (bf16 on CUDA),
channels_last, AdamW with linear warmup + cosine decay, optional EMA, gradient clipping, uncertainty-
weighted multi-task loss. The same command runs under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPU).
Per epoch: a JSON-lines metrics file, a PNG plot, ``last.pt`` and ``best.pt`` (best validation P), all
written atomically. ``resume=True`` continues from ``last.pt`` exactly (same data order and RNG).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from edge_affect.config import TrainConfig
from edge_affect.losses import MultiTaskLoss
from edge_affect.metrics import mtl_score, tune_au_thresholds
from edge_affect.models import create_model, save_checkpoint
from edge_affect.models.checkpoint import read_checkpoint
from edge_affect.schema import TASKS
from edge_affect.train import distributed as dist_utils

log = logging.getLogger(__name__)


def get_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float) -> float:
    """Linear warmup to ``base_lr``, then cosine decay to ``base_lr * min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Ema:
    """Exponential moving average of the model's weights (float tensors only)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1 - self.decay)
            else:
                self.shadow[k].copy_(v)


@torch.no_grad()
def predict_cache(model, cache, pp, device: torch.device, batch_size: int = 256, amp: bool = True, info=None):
    """Run ``model`` over every row of a packed cache; returns numpy ``va``, ``expr`` probs, ``au`` probs.

    Under DDP each rank predicts a shard and the results are gathered in the original order.
    """
    from edge_affect.data.augment import to_input
    from edge_affect.data.loader import PackedLoader

    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    loader = PackedLoader(cache, batch_size, shuffle=False, rank=rank, world_size=world, drop_last=False, device=device)
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {"va": [], "expr": [], "au": [], "index": []}
    for batch in loader:
        x = to_input(batch["image"], pp)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            out = model(x)
        outs["va"].append(out["va"].float())
        outs["expr"].append(torch.softmax(out["expr"].float(), -1))
        outs["au"].append(torch.sigmoid(out["au"].float()))
        outs["index"].append(batch["index"].to(device))
    res = {k: torch.cat(v) for k, v in outs.items()}
    if info is not None and info.enabled:
        res = {k: dist_utils.all_gather_cat(v, info) for k, v in res.items()}
    order = torch.argsort(res["index"].cpu())
    index = res["index"].cpu()[order]
    # Shards may repeat a few rows to stay equal-length; keep the first of each.
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return {k: v.cpu()[order][keep].numpy() for k, v in res.items() if k != "index"}


def init_weights(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Start ``model`` from the weights of ``checkpoint`` (same architecture), e.g. to fine-tune a trained model.

    Only weights are taken (no optimizer state, task weights or schedule); mismatches are one-line errors."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"init_from: checkpoint {path} does not exist")
    _, sd, _ = read_checkpoint(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    shape = sorted(k for k in own.keys() & sd.keys() if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or shape:
        what = f"lacks {missing[:3]}" if missing else f"has other shapes for {shape[:3]}"
        raise ValueError(f"init_from: {path} {what} (a different model config?)")
    model.load_state_dict({k: sd[k] for k in own}, strict=True)
    log.info("initialised the model from %s", path)


def score_predictions(pred: dict[str, np.ndarray], cache, au_thresholds=None) -> dict[str, float]:
    """ABAW P score of predictions against the cache's labels (AU threshold 0.5 unless given)."""
    th = np.full(pred["au"].shape[1], 0.5) if au_thresholds is None else np.asarray(au_thresholds)
    return mtl_score(
        pred["va"], cache.va, pred["expr"].argmax(1), cache.expr, (pred["au"] >= th).astype(np.int64), cache.au
    )


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_affect.artifact import atomic_write_bytes

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for t in TASKS:
        ax[0].plot(ep, [h["train_loss"][t] for h in history], label=f"{t} loss")
    ax[0].plot(ep, [h["train_total"] for h in history], "k--", label="total")
    ax[0].set_title("training losses")
    ax[0].set_xlabel("epoch")
    ax[0].legend(fontsize=8)
    for key in ("p", "va", "expr", "au"):
        ax[1].plot(ep, [h["val"].get(key, float("nan")) for h in history], marker="o", label=key)
    ax[1].set_title("validation (P = VA + EXPR + AU)")
    ax[1].set_xlabel("epoch")
    ax[1].legend(fontsize=8)
    for t in TASKS:
        ax[2].plot(ep, [h["task_weights"][t] for h in history], marker="o", label=f"w_{t} = exp(-s_{t})")
    ax[2].set_title("learned task weights")
    ax[2].set_xlabel("epoch")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def train(
    cfg: TrainConfig,
    data_root: str | Path,
    out_dir: str | Path,
    images: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train per ``cfg`` on the ABAW-layout dataset at ``data_root``; returns the path of ``best.pt``."""
    from edge_affect.artifact import atomic_write_text
    from edge_affect.data.abaw import load_split
    from edge_affect.data.augment import GpuAugment, to_input
    from edge_affect.data.cache import build_cache
    from edge_affect.data.fer import dataset_align_template
    from edge_affect.data.loader import PackedLoader

    align_template = dataset_align_template(data_root)  # crop framing of an imported face set, for the runtime
    info = dist_utils.setup(device)
    out = Path(out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    _seed_all(cfg.seed + info.rank)

    model = create_model(cfg.model, **cfg.model_overrides)
    pp = model.preprocess
    cache_root = Path(cache_dir) if cache_dir else out / "cache"

    # Decode every image once (rank 0), everyone else waits and memory-maps the result.
    caches = {}
    for split in ("train", "val"):
        if info.is_main:
            ann = load_split(data_root, split, images=images, skip_bad=cfg.skip_bad_rows)
            if ann.bad_rows:
                log.warning("%s: skipped %d bad rows", ann.source, len(ann.bad_rows))
            caches[split] = build_cache(ann, ann.images_root, pp, cache_root / split)
        dist_utils.barrier(info)
        if not info.is_main:  # the cache rank 0 just built: same fingerprint, so it is only opened
            ann = load_split(data_root, split, images=images, skip_bad=cfg.skip_bad_rows, check_images=False)
            caches[split] = build_cache(ann, ann.images_root, pp, cache_root / split)
    train_cache, val_cache = caches["train"], caches["val"]
    if len(train_cache) < cfg.batch_size * info.world_size:
        raise ValueError(
            f"training set has {len(train_cache)} rows, fewer than one batch ({cfg.batch_size} × {info.world_size} ranks)"
        )

    if cfg.init_from:
        init_weights(model, cfg.init_from)
    model.to(info.device)
    if cfg.channels_last and info.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = MultiTaskLoss(cfg.loss).to(info.device)
    groups = model.param_groups(cfg.lr, cfg.weight_decay, cfg.backbone_lr_scale)
    groups.append({"params": [criterion.log_vars], "lr": cfg.lr, "lr_scale": 1.0, "weight_decay": 0.0})
    fused = info.device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=fused)
    ema = Ema(model, cfg.ema) if cfg.ema > 0 else None

    loader = PackedLoader(
        train_cache,
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        drop_last=True,
        device=info.device,
    )
    steps_per_epoch = len(loader) if cfg.max_steps_per_epoch <= 0 else min(len(loader), cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    augment = GpuAugment(pp, **cfg.augment_params) if cfg.augment else None

    start_epoch, step, best_p, history = 0, 0, -math.inf, []
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist")
        _, sd, state = read_checkpoint(last_path)
        if state.get("config") != cfg.to_dict():
            raise ValueError(f"--resume: {last_path} was trained with a different config; start a new --out")
        model.load_state_dict(state["raw_state_dict"] if "raw_state_dict" in state else sd)
        optimizer.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state["criterion"])
        if ema is not None and "ema" in state:
            ema.shadow = {k: v.to(info.device) for k, v in state["ema"].items()}
        start_epoch, step, best_p = state["epoch"] + 1, state["step"], state["best_p"]
        history = json.loads(state["history"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at epoch %d (step %d)", last_path, start_epoch, step)

    ddp_model = DDP(model) if info.enabled else model
    metrics_path = out / "metrics.jsonl"

    end_epoch = min(cfg.epochs, cfg.stop_after_epochs) if cfg.stop_after_epochs > 0 else cfg.epochs
    for epoch in range(start_epoch, end_epoch):
        model.train()
        criterion.train()
        loader.set_epoch(epoch)
        sums = {t: 0.0 for t in TASKS}
        total_sum, n_batches, n_images = 0.0, 0, 0
        t0 = time.perf_counter()
        bar = None
        if progress and info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                leave=False,
                dynamic_ncols=True,
                disable=None,
            )
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch:
                break
            lr = get_lr(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            with torch.no_grad():
                x = augment(batch["image"]) if augment is not None else to_input(batch["image"], pp)
                if cfg.channels_last and x.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(info.device, cfg.amp):
                out_t = ddp_model(x)
            total, losses, _ = criterion({k: v.float() for k, v in out_t.items()}, batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            n_batches += 1
            n_images += x.shape[0] * info.world_size
            total_sum += float(total.detach())
            for t in TASKS:
                sums[t] += float(losses[t].detach())
            if bar is not None:
                rate = n_images / max(1e-9, time.perf_counter() - t0)
                bar.set_postfix(loss=f"{total_sum / n_batches:.3f}", img_s=f"{rate:.0f}", lr=f"{lr:.2e}")
                bar.update(1)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        train_loss = {t: sums[t] / max(1, n_batches) for t in TASKS}

        # Validation with the weights we would ship (EMA when enabled).
        eval_model = model
        if ema is not None:
            eval_model = copy.deepcopy(model)
            eval_model.load_state_dict(ema.shadow)
        pred = predict_cache(eval_model, val_cache, pp, info.device, max(64, cfg.batch_size), cfg.amp, info)
        val = score_predictions(pred, val_cache)
        au_th, _ = tune_au_thresholds(pred["au"], val_cache.au)
        val_tuned = score_predictions(pred, val_cache, au_th)
        weights = criterion.weights()
        record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": get_lr(step - 1, total_steps, warmup_steps, cfg.lr, cfg.min_lr_ratio),
            "train_loss": train_loss,
            "train_total": total_sum / max(1, n_batches),
            "task_weights": weights,
            "log_vars": [float(s) for s in criterion.log_vars.detach().cpu()],
            "val": val,
            "val_au_tuned": val_tuned["au"],
            "images_per_s": n_images / max(1e-9, elapsed),
            "epoch_seconds": elapsed,
            "device": str(info.device),
            "world_size": info.world_size,
        }
        history.append(record)
        log.info(
            "epoch %d: loss %.4f | val P %.4f (VA %.3f EXPR %.3f AU %.3f) | weights %s | %.0f img/s",
            epoch + 1,
            record["train_total"],
            val["p"],
            val["va"],
            val["expr"],
            val["au"],
            {k: round(v, 3) for k, v in weights.items()},
            record["images_per_s"],
        )
        if info.is_main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            ship_sd = ema.shadow if ema is not None else None
            extra = {"val": val, "epoch": epoch + 1, "train_config": cfg.to_dict(), "data_root": str(data_root)}
            if align_template is not None:
                extra["align_template"] = align_template
            state = {
                "config": cfg.to_dict(),
                "optimizer": optimizer.state_dict(),
                "criterion": criterion.state_dict(),
                "epoch": epoch,
                "step": step,
                "best_p": max(best_p, val["p"]),
                "history": json.dumps(history),
                "torch_rng": torch.get_rng_state(),
                "raw_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            }
            if ema is not None:
                state["ema"] = {k: v.detach().cpu() for k, v in ema.shadow.items()}
            save_checkpoint(
                last_path, model, au_thresholds=list(au_th), extra=extra, train_state=state, state_dict=ship_sd
            )
            if val["p"] > best_p:
                save_checkpoint(best_path, model, au_thresholds=list(au_th), extra=extra, state_dict=ship_sd)
                atomic_write_text(out / "best.json", json.dumps(record, indent=2))
            _plot(history, out / "metrics.png")
        best_p = max(best_p, val["p"])
        dist_utils.barrier(info)

    dist_utils.cleanup(info)
    return best_path
