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
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from edge_affect.config import TrainConfig
from edge_affect.fsutil import TEMP_NAME
from edge_affect.losses import MultiTaskLoss, consistency_kl
from edge_affect.metrics import expr_accuracy, mtl_score, tune_au_thresholds
from edge_affect.models import create_model, save_checkpoint
from edge_affect.models.checkpoint import read_checkpoint
from edge_affect.models.widen import widen_state_dict
from edge_affect.schema import MISSING_AU, MISSING_VA, TASKS
from edge_affect.train import distributed as dist_utils
from edge_affect.train.quant_noise import add_quant_noise

log = logging.getLogger(__name__)


def get_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float) -> float:
    """Linear warmup to ``base_lr``, then cosine decay to ``base_lr * min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo's flags).

    Without them PyTorch emulates bf16 and it is slower than fp32, so training stays fp32 there."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train_precision(device: torch.device, amp: bool) -> str:
    """``"bf16"`` (autocast) or ``"fp32"``: bf16 on CUDA, and on CPUs with native bf16, when ``amp``."""
    if not amp:
        return "fp32"
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
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
def predict_cache(
    model,
    cache,
    pp,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
    info=None,
    channels_last: bool | None = None,
):
    """Run ``model`` over every row of a packed cache; returns numpy ``va``, ``expr`` probs, ``au`` probs.

    ``channels_last``: feed NHWC-strided inputs (training passes the choice it made for the model, which
    honours ``TrainConfig.channels_last``); None: on CUDA or under bf16. Under DDP each rank predicts a
    shard and the results are gathered in the original order.
    """
    if channels_last is None:
        channels_last = device.type == "cuda" or precision == "bf16"
    from edge_affect.data.augment import to_input
    from edge_affect.data.loader import PackedLoader

    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    loader = PackedLoader(cache, batch_size, shuffle=False, rank=rank, world_size=world, drop_last=False, device=device)
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {"va": [], "expr": [], "au": [], "index": []}
    for batch in loader:
        x = to_input(batch["image"], pp)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, precision):
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


def init_weights(model: torch.nn.Module, checkpoint: str | Path, *, partial: bool = False, widen: bool = False) -> None:
    """Start ``model`` from the weights of ``checkpoint`` (same architecture), e.g. to fine-tune a trained model.

    Only weights are taken (no optimizer state, task weights or schedule). A checkpoint that lacks some of the
    model's weights, holds weights the model has no place for (a deeper model: layers would be dropped) or
    other shapes is refused in one line, unless ``partial``: then the weights that match are taken and the
    rest is reported. ``widen``: the checkpoint is a narrower model of the same config (ResNet stage widths)
    and is grown into ``model`` computing the same function (:func:`edge_affect.models.widen.widen_state_dict`)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"init_from: checkpoint {path} does not exist")
    meta, sd, _ = read_checkpoint(path)
    own = model.state_dict()
    if widen:
        if partial:
            raise ValueError("init_widen and init_from_partial exclude each other, expected at most one of them true")
        sd = widen_state_dict(
            sd,
            meta.get("model_config") or {},
            model.config.to_dict(),
            {k: v.shape for k, v in own.items()},
            where=f"init_widen {path}",
        )
        log.info("init_widen: grew %s (%s) into this model's channels", path, meta.get("model_name"))
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shape = sorted(k for k in own.keys() & sd.keys() if tuple(own[k].shape) != tuple(sd[k].shape))
    bad = [k for k, v in sd.items() if k in own and v.dtype.is_floating_point and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"init_from: {path} has non-finite weights ({bad[:3]}), expected a checkpoint of finite weights"
        )
    if (missing or extra or shape) and not partial:
        what = (
            f"lacks {len(missing)} of the model's weights ({missing[:3]})"
            if missing
            else f"has other shapes for {shape[:3]}"
            if shape
            else f"holds {len(extra)} weights the model has no place for ({extra[:3]}: a deeper or other model)"
        )
        raise ValueError(
            f"init_from: {path} {what}, expected a checkpoint of the same model config "
            "(init_from_partial = true takes only the weights that match)"
        )
    take = {k: sd[k] for k in own if k in sd and k not in shape}
    model.load_state_dict({**own, **take}, strict=True)
    if missing or extra or shape:
        log.warning(
            "init_from %s: took %d of %d weights; %d left at their initial values, %d of other shapes and %d "
            "without a place in the model dropped (init_from_partial)",
            path,
            len(take),
            len(own),
            len(missing),
            len(shape),
            len(extra),
        )
    log.info("initialised the model from %s", path)


def check_select_on(select_on: str, cache, where: str = "config") -> None:
    """Refuse a ``select_on`` score the validation split cannot compute (it would freeze best.pt at epoch 1)."""
    has = {
        "va": bool((np.asarray(cache.va) != MISSING_VA).any()),
        "expr": bool((np.asarray(cache.expr) >= 0).any()),
        "au": bool((np.asarray(cache.au) != MISSING_AU).any()),
    }
    if select_on == "expr_acc" and not has["expr"]:
        raise ValueError(
            f"{where}: select_on 'expr_acc': the validation split ({len(cache)} rows) has no expression labels, "
            "expected a select_on it can score ('p')"
        )
    if select_on == "p" and not any(has.values()):
        raise ValueError(
            f"{where}: select_on 'p': the validation split ({len(cache)} rows) has no VA, expression or AU labels, "
            "expected a labelled validation split"
        )


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or ±inf."""
    return [k for k, v in tensors.items() if v.dtype.is_floating_point and not bool(torch.isfinite(v).all())]


def _diverged(what: str, epoch: int, step: int, last_path: Path) -> ValueError:
    """The one-line error that stops a diverging run (nothing of it is saved)."""
    kept = f"{last_path} (the last good epoch) is kept" if last_path.is_file() else "no checkpoint was written"
    return ValueError(
        f"training diverged: {what} at epoch {epoch} (step {step}); {kept}, expected finite values "
        "(lower lr, keep grad_clip, check the loss weights)"
    )


def score_predictions(pred: dict[str, np.ndarray], cache, au_thresholds=None) -> dict[str, float]:
    """ABAW P score of predictions against the cache's labels (AU threshold 0.5 unless given), plus
    ``expr_acc``: top-1 accuracy against the hard expression label (the majority vote for FER+)."""
    th = np.full(pred["au"].shape[1], 0.5) if au_thresholds is None else np.asarray(au_thresholds)
    top1 = pred["expr"].argmax(1)
    scores = mtl_score(pred["va"], cache.va, top1, cache.expr, (pred["au"] >= th).astype(np.int64), cache.au)
    acc = expr_accuracy(top1, cache.expr)
    scores["expr_acc"] = acc if acc is not None else 0.0
    return scores


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_affect.artifact import atomic_write_figure

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
    atomic_write_figure(path, fig)


#: Files that make a folder a training run: ``train`` without ``resume`` refuses such a folder.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "best.json")
RUN_LOCK = ".train.lock"
#: ``artifact.atomic_write_*`` temp files of a run's outputs (``.last.pt.<random>.tmp``): removed under the lock.
#: Files of a run that atomic writes replace (their temp siblings are ``fsutil.TEMP_NAME``).
_RUN_FILES = frozenset({"last.pt", "best.pt", "best.json", "metrics.png", "metrics.jsonl"})


def check_train_config(cfg: TrainConfig, where: str = "config") -> None:
    """Re-check every value of ``cfg`` against the schema (``TrainConfig``: types, ranges, sections); a wrong
    one is a one-line ``ValueError`` naming ``where`` and the key."""
    TrainConfig.from_dict(cfg.model_dump(), where)


def _same_config(stored: Any, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's stored config is ``cfg`` (read through today's schema: keys added since take
    their defaults, so an older run still resumes)."""
    try:
        return TrainConfig.from_dict(stored, "last.pt config").to_dict() == cfg.to_dict()
    except ValueError:
        return False


def check_out_dir(
    out: Path,
    *,
    resume: bool,
    data_root: str | Path,
    images: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> None:
    """Refuse an ``out`` that is a file, an input, or (without ``resume``) a folder holding another run."""
    from edge_affect.fsutil import check_not_inputs

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, expected a folder for the run")
    inputs = {"--data": data_root, "--images": images}
    check_not_inputs({"--out": out, "--cache-dir": cache_dir}, inputs, input_folders=list(inputs))
    if resume and not (out / "last.pt").is_file():
        raise FileNotFoundError(
            f"--resume: {out / 'last.pt'} does not exist, expected the last.pt of the run to continue"
        )
    if not resume:
        held = [n for n in RUN_FILES if (out / n).exists()]
        if held:
            raise ValueError(
                f"--out {out}: already holds a training run ({', '.join(held)}), "
                "expected --resume to continue it or a new --out"
            )


@contextlib.contextmanager
def _run_lock(out: Path, is_main: bool) -> Iterator[None]:
    """One ``train`` per folder (``flock`` on ``OUT/.train.lock``, rank 0 only); the holder may then remove
    the temp files a killed run left there. No lock where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    if not is_main or fcntl is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RUN_LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise ValueError(
                f"--out {out}: another edge-affect train (pid {holder}) is writing into it, expected a different --out"
            ) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            for p in out.iterdir():
                m = TEMP_NAME.match(p.name)
                if m and m.group("name") in _RUN_FILES:
                    log.warning("removing %s, left behind by an interrupted run", p)
                    p.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
    """Train per ``cfg`` on the ABAW-layout dataset at ``data_root``; returns the path of ``best.pt``.

    ``out_dir`` must not hold another run unless ``resume`` (then it continues ``last.pt`` exactly)."""
    check_train_config(cfg)
    out = Path(out_dir)
    check_out_dir(out, resume=resume, data_root=data_root, images=images, cache_dir=cache_dir)
    with _run_lock(out, int(os.environ.get("RANK", "0")) == 0):
        return _train(cfg, data_root, out, images, resume, device, cache_dir, progress)


def _train(
    cfg: TrainConfig,
    data_root: str | Path,
    out_dir: Path,
    images: str | Path | None,
    resume: bool,
    device: str | None,
    cache_dir: str | Path | None,
    progress: bool,
) -> Path:
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

    check_select_on(cfg.select_on, val_cache)
    if cfg.init_from:
        init_weights(model, cfg.init_from, partial=cfg.init_from_partial, widen=cfg.init_widen)
    if cfg.quant_noise > 0:
        add_quant_noise(model, cfg.quant_noise)
    model.to(info.device)
    precision = train_precision(info.device, cfg.amp)
    channels_last = cfg.channels_last and (info.device.type == "cuda" or precision == "bf16")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info(
        "training on %s in %s%s (select best.pt on validation %s)",
        info.device,
        precision,
        " + channels_last" if channels_last else "",
        cfg.select_on,
    )
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
    augment = GpuAugment(pp, **cfg.augment_params.kwargs()) if cfg.augment else None

    start_epoch, step, best_p, history = 0, 0, -math.inf, []
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist")
        _, sd, state = read_checkpoint(last_path)
        if not _same_config(state.get("config"), cfg):
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
    if resume and info.is_main:
        # a kill between the metrics line and last.pt left lines for epochs last.pt does not hold: the
        # checkpoint's history is the truth, so the file restarts from it (no duplicate epochs)
        atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))

    end_epoch = min(cfg.epochs, cfg.stop_after_epochs) if cfg.stop_after_epochs > 0 else cfg.epochs
    for epoch in range(start_epoch, end_epoch):
        model.train()
        criterion.train()
        loader.set_epoch(epoch)
        sums = {t: 0.0 for t in TASKS}
        total_sum, n_batches, n_images, cons_sum = 0.0, 0, 0, 0.0
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
                if cfg.consistency > 0:  # two views per face, differing by landmark and/or pixel noise only
                    x = torch.cat(augment.pair(batch["image"]))
                else:
                    x = augment(batch["image"]) if augment is not None else to_input(batch["image"], pp)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(info.device, precision):
                out_t = ddp_model(x)
            out_t = {k: v.float() for k, v in out_t.items()}
            if cfg.consistency > 0:
                n = x.shape[0] // 2
                cons = consistency_kl(out_t["expr"][:n], out_t["expr"][n:])
                out_t = {k: v[:n] for k, v in out_t.items()}
            total, losses, _ = criterion(out_t, batch)
            if cfg.consistency > 0:
                total = total + cfg.consistency * cons
                cons_sum += float(cons.detach())
            finite = torch.isfinite(total.detach()).float()
            if info.enabled:  # every rank stops together
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            if not bool(finite):
                if bar is not None:
                    bar.close()
                parts = ", ".join(f"{t} {float(losses[t].detach()):g}" for t in TASKS)
                raise _diverged(f"the loss is {float(total.detach())} ({parts})", epoch + 1, step, last_path)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            n_batches += 1
            n_images += batch["image"].shape[0] * info.world_size
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
        pred = predict_cache(
            eval_model, val_cache, pp, info.device, max(64, cfg.batch_size), precision, info, channels_last
        )
        val = score_predictions(pred, val_cache)
        au_th, _ = tune_au_thresholds(pred["au"], val_cache.au)
        val_tuned = score_predictions(pred, val_cache, au_th)
        if not math.isfinite(val[cfg.select_on]):
            raise _diverged(f"validation {cfg.select_on} is {val[cfg.select_on]}", epoch + 1, step, last_path)
        bad = _non_finite(model.state_dict()) + _non_finite(ema.shadow if ema is not None else {})
        bad += _non_finite({"log_vars": criterion.log_vars.detach()})
        if bad:
            raise _diverged(f"non-finite weights ({bad[:3]})", epoch + 1, step, last_path)
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
            **({"train_consistency": cons_sum / max(1, n_batches)} if cfg.consistency > 0 else {}),
            "images_per_s": n_images / max(1e-9, elapsed),
            "epoch_seconds": elapsed,
            "device": str(info.device),
            "precision": precision,
            "channels_last": channels_last,
            "world_size": info.world_size,
        }
        history.append(record)
        log.info(
            "epoch %d: loss %.4f | val P %.4f (VA %.3f EXPR %.3f AU %.3f) expr acc %.4f | weights %s | %.0f img/s",
            epoch + 1,
            record["train_total"],
            val["p"],
            val["va"],
            val["expr"],
            val["au"],
            val["expr_acc"],
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
                "best_p": max(best_p, val[cfg.select_on]),
                "history": json.dumps(history),
                "torch_rng": torch.get_rng_state(),
                "raw_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            }
            if ema is not None:
                state["ema"] = {k: v.detach().cpu() for k, v in ema.shadow.items()}
            # best.pt before last.pt: last.pt records the new best score, so a kill between the two
            # must not leave a last.pt that claims a best.pt which was never written.
            if val[cfg.select_on] > best_p:
                save_checkpoint(best_path, model, au_thresholds=list(au_th), extra=extra, state_dict=ship_sd)
                atomic_write_text(out / "best.json", json.dumps(record, indent=2))
            save_checkpoint(
                last_path, model, au_thresholds=list(au_th), extra=extra, train_state=state, state_dict=ship_sd
            )
            _plot(history, out / "metrics.png")
        best_p = max(best_p, val[cfg.select_on])
        dist_utils.barrier(info)

    dist_utils.cleanup(info)
    return best_path
