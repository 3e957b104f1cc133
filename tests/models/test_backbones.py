"""The registered trainable backbones are quantization-friendly (ReLU-family, no squeeze-excitation); the SiLU
EfficientNets stay available under ``*_silu`` names at the same cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_affect.models import count_macs, count_params, create_model, get_config

#: Activation modules post-training INT8 rounds well: piecewise linear, so a per-tensor range loses nothing
#: in the flat part (ReLU6 is ReLU with a clip).
FRIENDLY = (nn.ReLU, nn.ReLU6, nn.Identity)
#: Smooth gates whose per-tensor rounding cost `tiny_silu`/`edge_silu` 8-15 points of INT8 agreement.
UNFRIENDLY = (nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.GELU)


def _activations(module: nn.Module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if isinstance(m, FRIENDLY + UNFRIENDLY)} - {"Identity"}


def _has_se(module: nn.Module) -> bool:
    return any("SqueezeExcite" in type(m).__name__ or type(m).__name__ == "SEModule" for m in module.modules())


@pytest.mark.parametrize("name,acts", [("tiny", {"ReLU6"}), ("edge", {"ReLU6"})])
def test_registered_backbones_are_relu_family_and_se_free(name: str, acts: set[str]) -> None:
    with torch.device("meta"):
        m = create_model(name)
    assert _activations(m.backbone) == acts
    assert not _has_se(m.backbone)


@pytest.mark.parametrize("name", ["tiny_silu", "edge_silu"])
def test_silu_configs_stay_available(name: str) -> None:
    with torch.device("meta"):
        m = create_model(name)
    assert "SiLU" in _activations(m.backbone) and _has_se(m.backbone)


@pytest.mark.parametrize(
    "new,old,params,macs",
    [("tiny", "tiny_silu", (0.95, 1.0), (0.99, 1.0)), ("edge", "edge_silu", (0.85, 1.0), (0.99, 1.0))],
)
def test_new_backbones_cost_about_the_same(new: str, old: str, params: tuple, macs: tuple) -> None:
    """Parameters and MACs as ratios to the SiLU layout, within the stated bounds (``tiny``: 0.191 M / 9.99 M vs
    0.194 M / 10.0 M, the SE layers gone; ``edge``: 1.45 M / 76.4 M vs 1.60 M / 76.6 M); the same image
    tokens at the same input size."""
    a, b = create_model(new), create_model(old)
    assert params[0] <= count_params(a) / count_params(b) <= params[1]
    assert macs[0] <= count_macs(a) / count_macs(b) <= macs[1]
    assert a.config.input_size == b.config.input_size
    assert a.pos_embed.shape == b.pos_embed.shape  # image tokens


def test_silu_names_are_the_old_layouts() -> None:
    assert get_config("tiny_silu").backbone == get_config("tiny").backbone == "test_efficientnet"
    assert get_config("tiny_silu").backbone_kwargs == {"feature_index": -2}
    assert get_config("edge_silu").backbone == "efficientnet_b0"
