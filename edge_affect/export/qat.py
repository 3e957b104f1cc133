"""Quantization-aware fine-tune with NNCF before the INT8 export (``edge-affect export --int8 --qat --data ROOT``).

Route: ``nncf.quantize`` puts TensorRT-shaped fake quantizers into a copy of the model (symmetric 8-bit
activations, forced signed; per-channel symmetric narrow-range weights; the stem convolution left float, as
``int8.quantize_int8`` keeps it FP16; SmoothQuant off so the float weights stay the model's own), initialised on
the calibration frames. The copy is trained a few hundred steps with the project's ``MultiTaskLoss`` plus a
distillation term towards the checkpoint's FP32 outputs on the training split of ROOT (packed cache +
``PackedLoader``, as ``train.loop``), then its fine-tuned float weights
go back into the plain model. The export continues as usual: FP32 ONNX, then ModelOpt PTQ sets the scales, on
weights that have learned to live with int8 rounding. Runs on CPU; NNCF lives in the ``qat`` extra.
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

INSTALL_HINT = 'pip install -e ".[export,qat]" (NNCF)'


@dataclass
class QatSettings:
    """What the QAT fine-tune does (``ExportRequest.qat``)."""

    data: Path  # ABAW-layout dataset root: its ``split`` trains
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    split: str = "train"
    seed: int = 0
    eval_batches: int = 4  # fixed batches of the split on which loss before/after is measured
    # weight of the distillation term (the checkpoint's own FP32 outputs as soft targets): the gates judge
    # INT8 against the checkpoint, so the fine-tune learns int8 rounding without drifting from it; 0: labels only
    distill: float = 100.0  # tiny, 200 unseen frames: expr agreement 0.93 PTQ, 0.95 here, 0.88 at 1, 0.865 at 0


def distill_loss(student: dict[str, Any], teacher: dict[str, Any]) -> Any:
    """Student vs the FP32 checkpoint's outputs: KL on expression, BCE on AU probabilities, MSE on VA."""
    import torch.nn.functional as F

    s_log, t_log = F.log_softmax(student["expr"], -1), F.log_softmax(teacher["expr"], -1)
    kl = F.kl_div(s_log, t_log, reduction="batchmean", log_target=True)
    au = F.binary_cross_entropy_with_logits(student["au"], teacher["au"].sigmoid())
    return kl + au + F.mse_loss(student["va"], teacher["va"])


def require_nncf() -> Any:
    """Import ``nncf`` or raise a one-line ``RuntimeError`` naming the extra."""
    try:
        import nncf
        import nncf.torch  # noqa: F401
    except ImportError:
        raise RuntimeError(f"--qat needs NNCF: {INSTALL_HINT}") from None
    return nncf


def _stem_scope(model: Any) -> list[str]:
    """NNCF node name of the first Conv2d (the stem reading the image), ignored like ``int8.stem_nodes``."""
    import torch

    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            return [f"{name.replace('.', '/')}/conv2d/0"]
    return []


def quantize_sim(model: Any, calib: np.ndarray, keep_stem: bool = True) -> Any:
    """A copy of ``model`` with NNCF fake quantizers shaped like TensorRT's INT8 (see the module docstring)."""
    import torch

    nncf = require_nncf()
    from nncf.common.quantization.structs import QuantizationScheme as Scheme
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        QuantizationParameters,
    )
    from nncf.torch.quantization.layers import SymmetricQuantizer

    x = torch.from_numpy(np.ascontiguousarray(calib, dtype=np.float32))
    adv = AdvancedQuantizationParameters(
        # NNCF's HW spaces cannot force activation signedness; it is set on the quantizers below
        activations_quantization_params=QuantizationParameters(num_bits=8, mode=Scheme.SYMMETRIC, per_channel=False),
        weights_quantization_params=QuantizationParameters(
            num_bits=8, mode=Scheme.SYMMETRIC, per_channel=True, signedness_to_force=True, narrow_range=True
        ),
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1),
        disable_bias_correction=True,  # the biases stay the model's: only training moves them
    )
    ignored = nncf.IgnoredScope(names=_stem_scope(model), validate=False) if keep_stem else None
    q = nncf.quantize(
        copy.deepcopy(model).eval(),
        nncf.Dataset([x[i : i + 1] for i in range(len(x))]),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(x),
        ignored_scope=ignored,
        advanced_parameters=adv,
    )
    for m in q.modules():  # TensorRT: signed int8 everywhere, amax = scale
        if isinstance(m, SymmetricQuantizer) and not m.signed:
            m.signed = True
    return q


def _loss_config(meta: Any) -> Any:
    from edge_affect.config import TrainConfig

    tc = (meta.extra or {}).get("train_config")
    return TrainConfig.from_dict(dict(tc)).loss if isinstance(tc, dict) else None


def qat_finetune(model: Any, meta: Any, calib: np.ndarray, s: QatSettings) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` under NNCF quantization simulation; returns (a float copy with the fine-tuned
    weights, a record for the report: steps, loss before/after on fixed batches, first/last training loss)."""
    import torch

    from edge_affect.data.abaw import load_split
    from edge_affect.data.augment import to_input
    from edge_affect.data.cache import build_cache
    from edge_affect.data.loader import PackedLoader
    from edge_affect.losses import MultiTaskLoss

    nncf = require_nncf()
    for name, v, lo in (("qat_steps", s.steps, 1), ("qat_batch", s.batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} {v!r}: out of range, expected an integer ≥ {lo}")
    if not s.lr > 0:
        raise ValueError(f"qat_lr {s.lr!r}: out of range, expected a number > 0")
    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    pp = meta.preprocess
    with tempfile.TemporaryDirectory(prefix=".qat-cache-") as tmp:
        ann = load_split(s.data, s.split)
        cache = build_cache(ann, ann.images_root, pp, Path(tmp) / s.split, workers=0)
        if len(cache) < s.batch_size:
            raise ValueError(f"--qat: {s.data} {s.split} has {len(cache)} rows, fewer than one batch ({s.batch_size})")
        loader = PackedLoader(cache, s.batch_size, shuffle=True, seed=s.seed, drop_last=True)
        fixed = PackedLoader(cache, s.batch_size, shuffle=False, drop_last=True)
        eval_batches = [b for _, b in zip(range(s.eval_batches), fixed, strict=False)]

        q = quantize_sim(model, calib, keep_stem=True)
        criterion = MultiTaskLoss(_loss_config(meta))
        criterion.log_vars.requires_grad_(False)  # the checkpoint's balance of tasks is kept

        teacher = copy.deepcopy(model).eval().requires_grad_(False)

        @torch.no_grad()
        def fixed_loss() -> tuple[float, float]:  # (task loss, distance to the FP32 checkpoint)
            q.eval()
            task, dist = [], []
            for b in eval_batches:
                x = to_input(b["image"], pp)
                out = q(x)
                task.append(float(criterion(out, b)[0]))
                dist.append(float(distill_loss(out, teacher(x))))
            return float(np.mean(task)), float(np.mean(dist))

        before = fixed_loss()
        params = [p for n, p in q.named_parameters() if "__nncf" not in n]
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.steps)
        losses: list[float] = []
        step, epoch = 0, 0
        while step < s.steps:
            loader.set_epoch(epoch)
            q.train()
            for batch in loader:
                if step >= s.steps:
                    break
                x = to_input(batch["image"], pp)
                out = q(x)
                total, _, _ = criterion(out, batch)
                if s.distill > 0:
                    with torch.no_grad():
                        ref = teacher(x)
                    total = total + s.distill * distill_loss(out, ref)
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
    # back to the plain model: the fine-tuned float weights, without NNCF's hooks and quantizers
    own = model.state_dict()
    sd = q.state_dict()
    missing = sorted(set(own) - set(sd))
    if missing:
        raise RuntimeError(f"QAT: NNCF's model lacks {missing[:3]}, cannot carry its weights back")
    plain = copy.deepcopy(model)
    plain.load_state_dict({k: sd[k].detach().clone() for k in own}, strict=True)
    plain.eval()
    k = max(1, min(10, len(losses) // 5))
    info = {
        "tool": "nncf " + nncf.__version__,
        "route": "NNCF fake-quant fine-tune, weights carried to the float model, then ModelOpt PTQ",
        "data": str(s.data),
        "split": s.split,
        "rows": int(rows),
        "steps": int(step),
        "batch_size": s.batch_size,
        "lr": s.lr,
        "distill": s.distill,
        "quantizers": "symmetric signed int8 activations (per tensor), per-channel symmetric narrow-range "
        "int8 weights, stem float",
        "loss_fixed_batches": {"frames": int(n_eval), "before": round(before[0], 5), "after": round(after[0], 5)},
        "distill_fixed_batches": {"before": round(before[1], 5), "after": round(after[1], 5)},
        "train_loss_first": round(float(np.mean(losses[:k])), 5),
        "train_loss_last": round(float(np.mean(losses[-k:])), 5),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("QAT: %d steps, fixed-batch loss %.4f → %.4f, distance to FP32 %.4f → %.4f", step, *before, *after)
    return plain, info


def qat_onnx(
    model: Any, meta: Any, calib: np.ndarray, s: QatSettings, folder: Path, exporter: str = "auto"
) -> tuple[Path, dict[str, Any]]:
    """QAT fine-tune, then the fine-tuned model as FP32 ONNX in ``folder`` (the source of the INT8 PTQ; the
    record goes into its metadata, hence into model.int8.onnx's). ``model`` itself is left untouched."""
    from edge_affect.artifact import ArtifactMeta
    from edge_affect.export.formats import OPSET
    from edge_affect.export.onnx_export import export_onnx_detailed

    plain, info = qat_finetune(model, meta, calib, s)
    m = ArtifactMeta.from_dict(meta.to_dict())
    m.extra = {**m.extra, "qat": info}
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "model.qat.fp32.onnx"
    export_onnx_detailed(plain, m, dst, opset=OPSET, exporter=exporter, sample=calib[:32])
    return dst, info
