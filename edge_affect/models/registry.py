"""Named model configs (configs as data) and the ``create_model`` factory."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import fields

from edge_affect.config import ModelConfig

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


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
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown model option {key!r}{hint}")
        setattr(cfg, key, value)
    cfg.__post_init__()
    return cfg


def create_model(name: str, **overrides):
    """Build a ``TaskTokenTransformer`` from a registered config name plus overrides."""
    from edge_affect.models.task_token import TaskTokenTransformer

    return TaskTokenTransformer(get_config(name, **overrides), model_name=name)


@register_model
def tiny() -> ModelConfig:
    """For tests: ~0.2 M parameters, 64×64 input, trains on a CPU in seconds."""
    return ModelConfig(
        backbone="test_efficientnet",
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
def edge() -> ModelConfig:
    """Edge config: EfficientNet-B0 stages up to stride 16 at 112×112 (7×7 = 49 image tokens), 1.6 M parameters.

    Chosen over ConvNeXt-atto for the edge: BatchNorm folds into the convolutions (ONNX Runtime on a 2-core
    CPU: 3.3× PyTorch eager at batch 1, 2.7× at batch 32, vs 2.3× / 1.2× for ConvNeXt-atto, whose
    channels-last LayerNorms become transposes) and BN convnets quantize to INT8 more gracefully."""
    return ModelConfig(
        backbone="efficientnet_b0",
        backbone_kwargs={"feature_index": -2},
        input_size=112,
        dim=128,
        heads=8,
        mlp_ratio=4.0,
        encoder_layers=1,
        decoder_layers=2,
        dropout=0.1,
    )


@register_model
def edge_gray48() -> ModelConfig:
    """Edge config for 48×48 grayscale crops (FER2013-style), the shipped default model's layout:
    ResNet-18 stages 1-3 (stride 16 → 3×3 = 9 image tokens), 3.5 M parameters, 69 M MACs.

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
