"""The ``backbone_kwargs`` a model config may pass to ``timm.create_model``, and their check: torch-free, so the
config registry checks a config before anything is built, and the backbone builder checks what reaches timm."""

from __future__ import annotations

from typing import Any

#: Activations a config may name: the quantization-friendly ReLU family and SiLU (timm's names).
ACTIVATIONS = ("relu", "relu6", "silu")

#: ``backbone_kwargs`` a config may pass to ``timm.create_model`` (what the registered configs use), each
#: with its check; anything else (``pretrained_cfg_overlay``, ``file``, paths, ...) is refused.
BACKBONE_KWARGS: dict[str, str] = {
    "feature_index": "an integer in [-8, 8] (the backbone stage whose features become image tokens)",
    "channels": "a list of 1 to 8 integers in [1, 2048] (per-stage widths, ResNets)",
    "act_layer": "one of " + ", ".join(repr(a) for a in ACTIVATIONS) + " (EfficientNet/MobileNet activations)",
    "squeeze_excite": "true or false (false: EfficientNet blocks without squeeze-excitation)",
    "anti_alias": "true or false (true: a fixed blur before every stride-2 step, timm's aa_layer; ResNet shortcuts average-pool)",
}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_backbone_kwargs(kwargs: Any, where: str = "model config") -> None:
    """``backbone_kwargs`` hold only allow-listed keys (:data:`BACKBONE_KWARGS`) with valid values."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: backbone_kwargs must be an object, got {type(kwargs).__name__}")
    unknown = sorted(str(k) for k in kwargs if k not in BACKBONE_KWARGS)
    if unknown:
        raise ValueError(f"{where}: backbone_kwargs {unknown} are not allowed (allowed: {', '.join(BACKBONE_KWARGS)})")
    fi = kwargs.get("feature_index", -1)
    if not _is_int(fi) or not -8 <= fi <= 8:
        raise ValueError(
            f"{where}: backbone_kwargs feature_index {fi!r:.40} must be {BACKBONE_KWARGS['feature_index']}"
        )
    if "channels" in kwargs:
        ch = kwargs["channels"]
        if (
            not isinstance(ch, (list, tuple))
            or not 1 <= len(ch) <= 8
            or not all(_is_int(c) and 1 <= c <= 2048 for c in ch)
        ):
            raise ValueError(f"{where}: backbone_kwargs channels {ch!r:.60} must be {BACKBONE_KWARGS['channels']}")
    if "act_layer" in kwargs and kwargs["act_layer"] not in ACTIVATIONS:
        raise ValueError(
            f"{where}: backbone_kwargs act_layer {kwargs['act_layer']!r:.40} must be {BACKBONE_KWARGS['act_layer']}"
        )
    for flag in ("squeeze_excite", "anti_alias"):
        if flag in kwargs and not isinstance(kwargs[flag], bool):
            raise ValueError(f"{where}: backbone_kwargs {flag} {kwargs[flag]!r:.40} must be {BACKBONE_KWARGS[flag]}")
