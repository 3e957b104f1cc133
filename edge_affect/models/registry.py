"""Named model configs (configs as data), the ``create_model`` factory, and the checks every config passes
before a model is built from it (registered backbone, allow-listed ``backbone_kwargs``, sane sizes, at most
:data:`MAX_MODEL_PARAMS` parameters counted on the ``meta`` device, so nothing is allocated first)."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from edge_affect.config import ModelConfig, check_types
from edge_affect.models.backbone_kwargs import BACKBONE_KWARGS as BACKBONE_KWARGS  # public name, kept here too
from edge_affect.models.backbone_kwargs import check_backbone_kwargs

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}

#: Largest model a config (a checkpoint's, or a training config's overrides) may describe.
MAX_MODEL_PARAMS = 100_000_000
#: Inclusive ranges of the integer fields, checked before anything is built.
INT_RANGES: dict[str, tuple[int, int]] = {
    "input_size": (16, 1024),
    "dim": (8, 2048),
    "heads": (1, 64),
    "encoder_layers": (0, 32),
    "decoder_layers": (1, 32),
}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)



def registered_backbones() -> list[str]:
    """The timm backbones the registered configs use: the only ones a config may name."""
    return sorted({fn().backbone for fn in _REGISTRY.values()})


def check_model_config(cfg: ModelConfig, where: str = "model config") -> None:
    """Types and ranges of ``cfg``, its backbone and ``backbone_kwargs``: one-line ``ValueError`` naming the field.

    Cheap (nothing is built); :func:`check_model_size` bounds the parameter count.
    """
    check_types(ModelConfig, {f.name: getattr(cfg, f.name) for f in fields(ModelConfig)}, where)
    if cfg.backbone not in registered_backbones():
        raise ValueError(
            f"{where}: backbone {cfg.backbone!r:.60} is not one a registered model uses "
            f"({', '.join(registered_backbones())}); register a model config to use another"
        )
    check_backbone_kwargs(cfg.backbone_kwargs, where)
    for name, (lo, hi) in INT_RANGES.items():
        value = getattr(cfg, name)
        if not lo <= value <= hi:
            raise ValueError(f"{where}: {name} {value} is outside [{lo}, {hi}]")
    if not 0 < cfg.mlp_ratio <= 16:
        raise ValueError(f"{where}: mlp_ratio {cfg.mlp_ratio} is outside (0, 16]")
    for name in ("dropout", "drop_path"):
        value = getattr(cfg, name)
        if not 0 <= value < 1:
            raise ValueError(f"{where}: {name} {value} is outside [0, 1)")
    values = [*cfg.mean, *cfg.std]
    if not all(math.isfinite(v) for v in values) or min(cfg.std) <= 0:
        raise ValueError(f"{where}: mean/std must be finite with std > 0, got {list(cfg.mean)}/{list(cfg.std)}")


def check_model_size(cfg: ModelConfig, where: str = "model config", limit: int = MAX_MODEL_PARAMS) -> int:
    """Count ``cfg``'s parameters on the ``meta`` device (no memory is allocated); refuse more than ``limit``."""
    import torch

    from edge_affect.models.task_token import TaskTokenTransformer

    with torch.device("meta"):
        model = TaskTokenTransformer(dataclasses.replace(cfg, pretrained=None))
    n = sum(p.numel() for p in model.parameters())
    if n > limit:
        raise ValueError(
            f"{where}: the model has {n / 1e6:.1f} M parameters, above the limit of {limit / 1e6:.0f} M "
            "(MAX_MODEL_PARAMS)"
        )
    return n


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a function returning a ``ModelConfig`` under its own name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides) -> ModelConfig:
    """The named config with ``overrides`` applied; unknown names/keys fail with a suggestion."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (known: {', '.join(list_models())})")
    cfg = _REGISTRY[name]()
    known = {f.name for f in fields(ModelConfig)}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown model option {key!r}{hint}")
    where = f"model {name!r}" + (f" with overrides {sorted(overrides)}" if overrides else "")
    check_types(ModelConfig, overrides, where)
    for key, value in overrides.items():
        setattr(cfg, key, tuple(value) if isinstance(getattr(cfg, key), tuple) else value)
    try:
        cfg.__post_init__()
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    check_model_config(cfg, where)
    return cfg


def create_model(name: str, **overrides):
    """Build a ``TaskTokenTransformer`` from a registered config name plus overrides (checked, size-bounded)."""
    from edge_affect.models.task_token import TaskTokenTransformer

    cfg = get_config(name, **overrides)
    check_model_size(cfg, f"model {name!r}")
    return TaskTokenTransformer(cfg, model_name=name)


def _edge_layout(backbone: str) -> ModelConfig:
    """The ``edge`` family: 112×112 input, stride-16 features (7×7 tokens), width 128, 1 encoder + 2 decoder layers."""
    return ModelConfig(
        backbone=backbone,
        backbone_kwargs={"feature_index": -2},
        input_size=112,
        dim=128,
        heads=8,
        mlp_ratio=4.0,
        encoder_layers=1,
        decoder_layers=2,
        dropout=0.1,
    )


def _tiny_layout(backbone: str) -> ModelConfig:
    """The ``tiny`` family: 64×64 input, stride-16 features, width 64, 1 encoder + 2 decoder layers."""
    return ModelConfig(
        backbone=backbone,
        backbone_kwargs={"feature_index": -2},
        input_size=64,
        dim=64,
        heads=4,
        mlp_ratio=2.0,
        encoder_layers=1,
        decoder_layers=2,
        dropout=0.0,
    )


@register_model
def tiny_silu() -> ModelConfig:
    """Opt-in, ``tiny`` before it moved to ReLU6: timm's ``test_efficientnet`` as built (SiLU, squeeze-excitation).

    Post-training INT8 keeps only 0.89-0.93 top-1 agreement with FP32 (per-tensor rounding of SiLU activations in
    the depthwise blocks); QAT plus ``--int8-fallback`` reaches 0.97-0.98 on most seeds."""
    return _tiny_layout("test_efficientnet")


@register_model
def tiny() -> ModelConfig:
    """For tests and quick starts: 0.19 M parameters, 10 M MACs, 64×64 input, trains on a CPU in seconds.

    ``tiny_silu``'s layout (timm's ``test_efficientnet`` up to stride 16, 4×4 = 16 image tokens) with ReLU6 in
    place of SiLU and no squeeze-excitation, the EfficientNet-Lite recipe ``edge`` follows too. It learns the
    synthetic set as fast as ``tiny_silu``; the ReLU candidates tried before it did not in the quickstart's 6
    epochs (timm's ``test_resnet``: expression accuracy 0.10; MobileNetV4-conv-small 0.35: 0.16; a 16/32/64-channel
    ResNet-18: 0.07). Post-training INT8 after 6 epochs (docs/export.md, two seeds): TensorRT-shaped 0.973 / 0.985
    top-1 agreement with FP32 (``tiny_silu`` 0.951 / 0.966), CPU INT8 0.972 / 0.969 (``tiny_silu`` 0.971 /
    0.963)."""
    cfg = _tiny_layout("test_efficientnet")
    cfg.backbone_kwargs = {**cfg.backbone_kwargs, "act_layer": "relu6", "squeeze_excite": False}
    return cfg


@register_model
def edge() -> ModelConfig:
    """Edge config: EfficientNet-Lite0 stages up to stride 16 at 112×112 (7×7 = 49 image tokens), 1.45 M
    parameters, 76 M MACs (``edge_silu``, the EfficientNet-B0 layout it replaces: 1.6 M, 77 M).

    Lite0 is B0 with ReLU6 in place of SiLU and no squeeze-excitation: the same cost and BatchNorm folding,
    but activations that post-training INT8 rounds well (``edge_silu`` kept 0.85 top-1 agreement with FP32)."""
    return _edge_layout("efficientnet_lite0")


@register_model
def edge_resnet() -> ModelConfig:
    """Candidate for ``edge`` (issue 22): the ``edge`` layout (112×112, stride 16, 7×7 tokens) on ResNet-18 stages 1-3
    at 24/48/96 channels, the default model's family (ReLU, dense 3×3, no SE): 1.16 M parameters, 98 M MACs.

    Post-training INT8 after 6 epochs on synthetic faces (seed 0, 1,500 unseen faces, docs/export.md): 0.979
    top-1 agreement with FP32 TensorRT-shaped, 0.980 CPU INT8, where Lite0 ``edge`` keeps 0.929 / 0.943; but it
    learned the synthetic set less in those 6 epochs (validation P 0.54 vs 0.84). On FER+ (one epoch from scratch,
    docs/export.md) the same: 0.985 / 0.984 INT8 agreement against Lite0's 0.966 / 0.965, ~4× Lite0's training
    speed per image on a CPU, but 41.9 % held-out accuracy against 52.3 %. Trained for the same time as Lite0's
    epoch (2 epochs): 52.4 % held-out, 50.9 % FER+ valid (Lite0 49.9 %), INT8 0.968 / 0.972 (Lite0 0.966 / 0.965),
    0.2 point short of the 97 % the rule set before the run asked of its TensorRT-shaped model, so it did not
    replace ``edge``. Synthetic
    faces, seed 1: 0.962 / 0.943 (a model that learned little: most faces near ties, docs/export.md); with seed 2
    it did not learn the synthetic set in 6 epochs."""
    cfg = _edge_layout("resnet18")
    cfg.backbone_kwargs = {"feature_index": 3, "channels": [24, 48, 96, 256]}
    return cfg


@register_model
def edge_mnv4() -> ModelConfig:
    """Candidate for ``edge`` (issue 22): the ``edge`` layout (112×112, stride 16, 7×7 tokens) on MobileNetV4-conv-small
    stages 1-3 (timm ``mobilenetv4_conv_small``: ReLU, fused and universal inverted bottlenecks, no SE): 1.07 M
    parameters, 48 M MACs, ~3× Lite0's training speed on a CPU. Post-training INT8 after 6 epochs on synthetic faces
    (docs/export.md): 0.975 / 0.975 (seed 0) but 0.926 / 0.944 (seed 1; 0.969 / 0.976 with seed 2), TensorRT-shaped
    / CPU, so it was not tried as ``edge`` on FER+."""
    cfg = _edge_layout("mobilenetv4_conv_small")
    cfg.backbone_kwargs = {"feature_index": 3}
    return cfg


@register_model
def edge_silu() -> ModelConfig:
    """Opt-in, ``edge`` before v3: EfficientNet-B0 stages up to stride 16 at 112×112 (7×7 = 49 image tokens), 1.6 M parameters.

    Chosen over ConvNeXt-atto for the edge: BatchNorm folds into the convolutions (ONNX Runtime on a 2-core
    CPU: 3.3× PyTorch eager at batch 1, 2.7× at batch 32, vs 2.3× / 1.2× for ConvNeXt-atto, whose
    channels-last LayerNorms become transposes) and BN convnets quantize to INT8 more gracefully. Its SiLU/squeeze-excitation blocks do not: post-training INT8 kept
    0.85 top-1 agreement with FP32, 0.96 with QAT and 20 % of its MACs in FP16."""
    return _edge_layout("efficientnet_b0")


@register_model
def edge_gray48() -> ModelConfig:
    """Edge config for 48×48 grayscale crops (FER2013-style), v1 of the shipped default model:
    ResNet-18 stages 1-3 (stride 16 → 3×3 = 9 image tokens), 3.5 M parameters, 65 M MACs (69 M before its stem
    read one channel: ``GrayStemConv2d``).

    Dense 3×3 convolutions train ~1.6× faster per MAC than depthwise EfficientNet blocks on a CPU and
    quantize to INT8 with little loss."""
    return ModelConfig(
        backbone="resnet18",
        backbone_kwargs={"feature_index": 3},
        input_size=48,
        color="gray",
        dim=128,
        heads=8,
        mlp_ratio=4.0,
        encoder_layers=1,
        decoder_layers=2,
        dropout=0.1,
    )


@register_model
def edge_gray48_slim() -> ModelConfig:
    """The shipped default model's layout since v2 (FER+): ``edge_gray48`` at half the convolution width,
    ResNet-18 stages 1-3 with 32/64/128 channels (3×3 = 9 image tokens), 1.5 M parameters, 22 M MACs (26 M
    before its stem read one channel).

    Chosen by measurement against the ``fer`` peer (ONNX Runtime FP32, one thread, same run, 2-core EPYC):
    ``edge_gray48`` ran at 2.9× the peer's time per face at batch 64 and 5.1× at batch 1, this one at
    1.2× and 2.0×; bf16 CPU training (2 threads, batch 128) runs at 1,077 img/s vs edge_gray48's 582
    (``benchmarks/results/bench_train.json``)."""
    cfg = edge_gray48()
    cfg.backbone_kwargs = {"feature_index": 3, "channels": [32, 64, 128, 256]}
    return cfg


@register_model
def edge_gray48_slim_aa() -> ModelConfig:
    """``edge_gray48_slim`` anti-aliased (issue 19 item 3): every subsampling of its ResNet stages low-passes first
    (``backbone_kwargs`` ``anti_alias``: BlurPool after the stem's max-pool and each first block's conv1, average
    pooling before each 1×1 shortcut; Zhang 2019), so that a sub-pixel move of the aligned crop, what a detector's
    landmark noise does, moves the features less. The weights have ``edge_gray48_slim``'s shapes (v3's load as
    they are); the two stride-2 3×3 convolutions run at stride 1, 26 M MACs against 22 M."""
    cfg = edge_gray48_slim()
    cfg.backbone_kwargs = {**cfg.backbone_kwargs, "anti_alias": True}
    return cfg


@register_model
def edge_gray48_mid() -> ModelConfig:
    """The width step after v3 (issue 19): ``edge_gray48`` at three quarters of the convolution width,
    ResNet-18 stages 1-3 with 48/96/192 channels (3×3 = 9 image tokens), 2.3 M parameters, 40 M MACs.

    Chosen against the ``fer`` peer's per-face time (ONNX Runtime FP32, one thread, same run,
    ``benchmarks/bench_peer_fer.py``; the bar: ≤ 4× at batch 1, ≤ 3× at batch 64) among untrained candidates on
    the 2-core AVX2 EPYC while a training run shared it (load 2.7): this one 3.85× / 2.38×; ``edge_gray48``
    5.74× / 3.26× (over), ``edge_gray48_slim`` with test-time flip 4.64× / 2.70×, 40/80/160 channels 3.96× /
    1.59×, ``edge_gray48_slim`` 3.00× / 1.45×. Measured again on the idle machine before the student trained
    (two runs of 15 rounds): this one 4.5-5.4× / 1.6-1.9×, over the batch-1 bar, so v3 kept
    ``edge_gray48_slim`` (2.9-3.6× / 1.0-1.4×) and took its capacity from the teachers. Since its stem reads one
    channel (``GrayStemConv2d``, 2026-12-02), idle, one run with the peer and v3, untrained weights: 3.07× / 2.21×,
    inside the bar (``benchmarks/results/default_model_width_latency.json``). From scratch it needs ~5 h of fp32
    epochs on the 2-core CPU (over a 2.5 h stage), so ``configs/ferplus-v3w.toml`` grows v3 into it
    (``init_widen``: v3's function to start from) and trains 36 epochs (2.6 h at the median epoch); its CPU INT8
    runs 1.68× its FP32 at batch 32 on the AVX2 CPU (v3: 1.46×, same window, ``benchmarks/results/width_cpu_int8/``).
    Not shipped: that run reached 83.62 % on FER+ valid (v3 83.51 %; the rule asked 84.01 %) and kept fewer
    expressions under 1-px landmark noise than v3 (the config's result note)."""
    cfg = edge_gray48()
    cfg.backbone_kwargs = {"feature_index": 3, "channels": [48, 96, 192, 256]}
    return cfg


@register_model
def paper() -> ModelConfig:
    """Paper scale: ResNet-50 at 256×256 → 8×8 = 64 image tokens, 1 encoder + 2 decoder layers,
    one token per label (the authors' ABAW3 AU transformer layout), width 256, 8 heads, MLP ×4."""
    return ModelConfig(
        backbone="resnet50",
        input_size=256,
        dim=256,
        heads=8,
        mlp_ratio=4.0,
        encoder_layers=1,
        decoder_layers=2,
        token_mode="label",
        dropout=0.1,
        drop_path=0.0,
    )
