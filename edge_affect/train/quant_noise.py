"""Pseudo-quantization noise in training: each backbone convolution's input gets the noise per-tensor INT8 adds.

Post-training INT8 rounds every convolution input to a grid of step ``max|x| / 127`` (symmetric, one scale per
tensor: TensorRT's activations). On EfficientNet-Lite0 that rounding of the first, full-resolution activations
costs most of the INT8 agreement (``benchmarks/probe_int8_activations.py``) and acts like noise. Training with
additive noise of that size, U(-strength·Δ/2, strength·Δ/2) with Δ = max|x| / 127 of the batch, asks the network
to keep its decisions under it (pseudo-quantization noise: Baskin et al. 2018, "NICE"; Défossez et al. 2021,
"DiffQ"). Nothing else changes: no quantizers, no scales learned, no change to the exported graph, which is
still quantized after training (PTQ). Only in training mode: ``eval()`` and export see the plain network.
"""

from __future__ import annotations

import torch
from torch import nn

#: Largest code of symmetric signed INT8 (TensorRT's activation range is [-127, 127] times the scale).
INT8_MAX = 127.0


def _noise_hook(strength: float):
    def hook(module: nn.Module, args: tuple) -> tuple | None:
        if not module.training:
            return None
        x = args[0]
        step = x.detach().abs().amax().float() / INT8_MAX
        noise = (torch.rand_like(x, dtype=torch.float32) - 0.5) * (step * strength)
        return (x + noise.to(x.dtype), *args[1:])

    return hook


def add_quant_noise(model: nn.Module, strength: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Add the noise to the input of every ``nn.Conv2d`` of ``model.backbone`` but the first (the stem, which reads
    the image and which the TensorRT-shaped export keeps in FP16). Returns the hook handles (``.remove()`` undoes
    it); ``strength`` 1.0 is the rounding noise itself. A model without ``backbone`` convolutions is an error."""
    if not strength > 0:
        raise ValueError(f"quant_noise {strength!r}: expected a strength > 0 (1.0 = per-tensor INT8 rounding)")
    backbone = getattr(model, "backbone", None)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)] if backbone is not None else []
    if len(convs) < 2:
        raise ValueError(
            f"quant_noise: {type(model).__name__} has {len(convs)} backbone convolution(s), expected a stem and more"
        )
    return [m.register_forward_pre_hook(_noise_hook(strength)) for m in convs[1:]]
