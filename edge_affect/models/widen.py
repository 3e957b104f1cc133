"""Grow a trained model into a wider one without changing what it computes (Net2WiderNet, Chen et al. 2016).

A ResNet-family task-token model (BasicBlocks, per-stage ``backbone_kwargs.channels``) is widened stage by
stage: each new channel of a stage is a copy of one of the old channels (its filter and BatchNorm statistics),
and every layer that reads the stage splits the old channel's input weights among the copies. The shares are
drawn at random around 1/k (they still sum to 1), so the widened model computes the same function in eval and
training mode (BatchNorm batch statistics of a copy equal its source's) while the copies receive different
gradients and can drift apart. Everything outside the widened stages (stem, transformer, heads) is taken as is.

Used by training's ``init_widen`` (a wider student starts from a trained narrower model instead of from
scratch) and checked by ``tests/models/test_widen.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch

_BLOCK_KEY = re.compile(r"^backbone\.layer(\d+)\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.0|downsample\.1)\.(\w+)$")
_BLOCK_PARTS = ("conv1", "bn1", "conv2", "bn2", "downsample.0", "downsample.1")
_BN_VECTORS = ("weight", "bias", "running_mean", "running_var")


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(cfg))  # tuples and lists alike, as a checkpoint stores them
    out["backbone_kwargs"] = {k: v for k, v in (cfg.get("backbone_kwargs") or {}).items() if k != "channels"}
    out.pop("pretrained", None)
    return out


def check_widenable(old_cfg: dict[str, Any], new_cfg: dict[str, Any], where: str) -> tuple[list[int], list[int]]:
    """``(old_channels, new_channels)`` of two model configs that differ only in wider ResNet stage widths;
    a one-line ``ValueError`` naming ``where`` otherwise."""
    old_ch = (old_cfg.get("backbone_kwargs") or {}).get("channels")
    new_ch = (new_cfg.get("backbone_kwargs") or {}).get("channels")
    if not str(new_cfg.get("backbone", "")).startswith("resnet") or old_ch is None or new_ch is None:
        raise ValueError(
            f"{where}: widening needs ResNet backbones with backbone_kwargs channels on both sides, got "
            f"{old_cfg.get('backbone')!r} channels {old_ch!r} -> {new_cfg.get('backbone')!r} channels {new_ch!r}"
        )
    if len(old_ch) != len(new_ch) or any(n < o for o, n in zip(old_ch, new_ch, strict=True)):
        raise ValueError(
            f"{where}: channels {list(old_ch)} cannot grow into {list(new_ch)}, expected as many stages, none narrower"
        )
    a, b = _comparable(old_cfg), _comparable(new_cfg)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if diff:
        raise ValueError(
            f"{where}: the checkpoint's model config differs in {diff[:4]} (e.g. {diff[0]} {a.get(diff[0])!r} vs "
            f"{b.get(diff[0])!r}), expected the same config except wider backbone channels"
        )
    return list(old_ch), list(new_ch)


class _Map:
    """New channel j reads old channel ``src[j]``; a layer reading the stage scales that input by ``share[j]``."""

    def __init__(self, old: int, new: int, gen: torch.Generator, noise: float) -> None:
        extra = new - old
        if extra <= old:
            picks = torch.randperm(old, generator=gen)[:extra]
        else:
            picks = torch.randint(old, (extra,), generator=gen)
        self.src = torch.cat([torch.arange(old), picks])
        dup = self.src.bincount(minlength=old)[self.src] > 1
        w = torch.ones(new, dtype=torch.float64)
        w[dup] += noise * (2 * torch.rand(new, generator=gen, dtype=torch.float64) - 1)[dup]
        total = torch.zeros(old, dtype=torch.float64).index_add_(0, self.src, w)
        self.share = (w / total[self.src]).float()
        self.identity = extra == 0


def _take(t: torch.Tensor, out: _Map | None, inp: _Map | None) -> torch.Tensor:
    if out is not None and not out.identity:
        t = t.index_select(0, out.src)
    if inp is not None and not inp.identity:
        shape = [1] * t.dim()
        shape[1] = -1
        t = t.index_select(1, inp.src) * inp.share.view(shape).to(t.dtype)
    return t


def widen_state_dict(
    old_sd: dict[str, torch.Tensor],
    old_cfg: dict[str, Any],
    new_cfg: dict[str, Any],
    new_keys: dict[str, torch.Size],
    *,
    seed: int = 0,
    noise: float = 0.2,
    where: str = "init_widen",
) -> dict[str, torch.Tensor]:
    """The state dict of the wider model (``new_cfg``, whose parameter names and shapes are ``new_keys``) that
    computes what ``old_sd`` (``old_cfg``) computes. ``noise`` spreads the input shares of copied channels
    (0 = equal shares: exact too, but copies then never drift apart)."""
    old_ch, new_ch = check_widenable(old_cfg, new_cfg, where)
    gen = torch.Generator().manual_seed(seed)
    # stage i (1-based) carries old_ch[i-1] -> new_ch[i-1] channels on its residual stream; stage 0 is the stem
    stream: dict[int, _Map] = {
        i + 1: _Map(o, n, gen, noise) for i, (o, n) in enumerate(zip(old_ch, new_ch, strict=True))
    }
    inner: dict[tuple[int, int], _Map] = {}
    out_sd: dict[str, torch.Tensor] = {}
    stages = sorted({int(m.group(1)) for k in new_keys if (m := _BLOCK_KEY.match(k))})
    last = max(stages) if stages else 0
    for key, shape in new_keys.items():
        if key not in old_sd:
            raise ValueError(f"{where}: the checkpoint lacks {key!r}, expected every weight of a narrower same model")
        t = old_sd[key]
        m = _BLOCK_KEY.match(key)
        if m:
            stage, block, part, leaf = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            if stage not in stream or part not in _BLOCK_PARTS:
                raise ValueError(f"{where}: {key!r} is not part of a widenable BasicBlock stage")
            mid = inner.setdefault((stage, block), _Map(old_ch[stage - 1], new_ch[stage - 1], gen, noise))
            src_in = stream.get(stage - 1) if block == 0 else stream[stage]
            out_map = mid if part in ("conv1", "bn1") else stream[stage]
            in_map = {"conv1": src_in, "conv2": mid, "downsample.0": stream.get(stage - 1)}.get(part)
            if leaf == "num_batches_tracked":
                new = t.clone()
            elif part.startswith("conv") or part == "downsample.0":
                new = _take(t, out_map, in_map)
            elif leaf in _BN_VECTORS:
                new = _take(t, out_map, None)
            else:
                raise ValueError(f"{where}: {key!r}: unexpected tensor in a BasicBlock")
        elif key == "proj.0.weight" and last in stream:
            new = _take(t, None, stream[last])
        else:
            new = t.clone()
        if tuple(new.shape) != tuple(shape):
            raise ValueError(
                f"{where}: {key!r} grows to {tuple(new.shape)}, expected {tuple(shape)} (not a ResNet BasicBlock "
                "model whose only change is wider stages)"
            )
        out_sd[key] = new.contiguous()
    return out_sd
