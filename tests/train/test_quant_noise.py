"""Pseudo-quantization noise (``quant_noise``): the size and place of the noise, training only, and the loop's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from edge_affect.config import TrainConfig
from edge_affect.models import create_model, load_checkpoint
from edge_affect.models.checkpoint import read_checkpoint
from edge_affect.train.quant_noise import INT8_MAX, add_quant_noise


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _inputs_of(conv: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("strength", [1.0, 3.0])
def test_noise_is_the_int8_rounding_size_on_every_conv_but_the_stem(strength: float) -> None:
    torch.manual_seed(0)
    net = _Net()
    stem, relu, pw = net.backbone
    add_quant_noise(net, strength)
    stem_in, pw_in = _inputs_of(stem), _inputs_of(pw)  # registered after the noise: they see what the conv sees
    clean: list[torch.Tensor] = []
    relu.register_forward_hook(lambda m, args, out: clean.append(out.detach().clone()))
    x = torch.randn(2, 3, 16, 16)
    net.train()
    net(x)
    assert torch.equal(stem_in[0], x)  # the stem reads the image untouched
    delta = pw_in[0] - clean[0]
    half_width = strength * float(clean[0].abs().max()) / INT8_MAX / 2
    assert float(delta.abs().max()) <= half_width * (1 + 1e-5)
    assert float(delta.abs().max()) > 0.8 * half_width  # uniform over the whole width (4,096 draws)
    assert abs(float(delta.mean())) < 0.1 * half_width
    net.eval()  # evaluation and export see the plain network
    net(x)
    assert torch.equal(pw_in[1], clean[1])


def test_tiny_and_edge_get_noise_on_every_backbone_conv_but_the_stem() -> None:
    for name in ("tiny", "edge"):
        model = create_model(name)
        convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
        handles = add_quant_noise(model, 1.0)
        assert len(handles) == len(convs) - 1 > 0, name
        for h in handles:
            h.remove()


def test_bad_strength_or_model_is_refused() -> None:
    with pytest.raises(ValueError, match=r"quant_noise 0\.0: expected a strength > 0"):
        add_quant_noise(_Net(), 0.0)
    with pytest.raises(ValueError, match="Linear has 0 backbone convolution"):
        add_quant_noise(nn.Linear(2, 2), 1.0)
    with pytest.raises(ValueError, match=r"quant_noise 9: out of range, expected a number in \[0, 8\]"):
        TrainConfig.from_dict({"quant_noise": 9})


def test_training_with_quant_noise_changes_the_weights_not_the_saved_model(tmp_path: Path) -> None:
    """The loop wires it in (same seed, different weights) and the checkpoint is a plain model: loaded, it runs
    without the noise (two eval forwards agree exactly)."""
    from edge_affect.data.synth import synth_dataset
    from edge_affect.train.loop import train

    root = tmp_path / "ds"
    synth_dataset(root, n=200, seed=3, size=64, val_fraction=0.25)
    runs = {}
    for q in (0.0, 2.0):
        cfg = TrainConfig(model="tiny", epochs=1, batch_size=32, max_steps_per_epoch=3, seed=5, quant_noise=q)
        train(cfg, root, tmp_path / f"q{q}", progress=False)
        runs[q] = load_checkpoint(tmp_path / f"q{q}" / "last.pt")[0]
    a, b = (dict(runs[q].state_dict()) for q in (0.0, 2.0))
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    model = runs[2.0].eval()
    assert not any(m._forward_pre_hooks for m in model.modules())
    x = torch.rand(2, 3, model.preprocess.input_size, model.preprocess.input_size)
    with torch.no_grad():
        assert torch.equal(model(x)["expr"], model(x)["expr"])
    assert read_checkpoint(tmp_path / "q2.0" / "last.pt")[2]["config"]["quant_noise"] == 2.0
