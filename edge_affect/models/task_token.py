"""The task-token transformer of arXiv 2208.03506 (ABAW4 multi-task): timm backbone → image tokens →
token decoder with learned task tokens → VA / expression / AU heads.

Each decoder layer (pre-norm): self-attention among the task tokens, cross-attention from the tokens to
the image tokens, then an MLP. ``forward`` has no data-dependent Python control flow so it exports to
ONNX (opset 17, ``LayerNormalization``) and builds in TensorRT.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from edge_affect.config import ModelConfig
from edge_affect.models.backbone_kwargs import check_backbone_kwargs
from edge_affect.schema import NUM_AU, NUM_EXPR, NUM_VA, Preprocess

log = logging.getLogger(__name__)


class Attention(nn.Module):
    """Multi-head attention written with plain matmuls (exports cleanly, FP16-friendly softmax)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, lq, d = x.shape
        lk = context.shape[1]
        h = self.heads
        q = self.q(x).reshape(n, lq, h, d // h).transpose(1, 2)
        kv = self.kv(context).reshape(n, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(n, lq, d)
        return self.proj(out)


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention over the image tokens."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y)
        return x + self.mlp(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention among task tokens, cross-attention tokens → image tokens, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads, dropout)
        self.norm2, self.norm_ctx, self.cross_attn = (
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
            Attention(dim, heads, dropout),
        )
        self.norm3, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio, dropout)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        y = self.norm1(tokens)
        tokens = tokens + self.self_attn(y, y)
        tokens = tokens + self.cross_attn(self.norm2(tokens), self.norm_ctx(image))
        return tokens + self.mlp(self.norm3(tokens))


class PerTokenLinear(nn.Module):
    """``k`` tokens → ``k`` scalars, each token with its own 1-unit head (label-token mode)."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, dim) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(k))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens * self.weight).sum(-1) + self.bias


def _build_backbone(cfg: ModelConfig) -> nn.Module:
    """The timm feature extractor ``cfg`` describes; only allow-listed ``backbone_kwargs`` reach timm."""
    import timm

    check_backbone_kwargs(cfg.backbone_kwargs, f"backbone {cfg.backbone!r}")
    kwargs = dict(cfg.backbone_kwargs)
    stage = int(kwargs.pop("feature_index", -1))
    if not kwargs.pop("squeeze_excite", True):
        # timm's EfficientNet builder calls se_layer(channels, rd_ratio=...) where a block asks for SE;
        # nn.Identity takes and ignores those arguments, so the block keeps its convolutions and loses the SE
        kwargs["se_layer"] = nn.Identity
    anti_alias = kwargs.pop("anti_alias", False)
    if anti_alias:
        # Zhang 2019, "Making convolutional networks shift-invariant again": each stride-2 step becomes its
        # stride-1 version followed by a fixed 3×3 binomial blur subsampled by 2 (timm's aa_layer: in a ResNet the
        # stem's max-pool and each first block's conv1, in EfficientNet/MobileNet blocks the stride-2 depthwise
        # convolutions); a ResNet's 1×1 shortcuts are made to average-pool first below
        from timm.layers import BlurPool2d

        kwargs["aa_layer"] = BlurPool2d
    if cfg.drop_path > 0:
        kwargs["drop_path_rate"] = cfg.drop_path
    if cfg.pretrained:
        path = Path(cfg.pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained backbone weights {path} do not exist (hubs are not used)")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        backbone = timm.create_model(
            cfg.backbone, pretrained=bool(cfg.pretrained), features_only=True, out_indices=(stage,), **kwargs
        )
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(f"backbone {cfg.backbone!r} is not a timm model name") from None
        raise
    except IndexError:
        raise ValueError(
            f"backbone {cfg.backbone!r} has no feature stage {stage} (backbone_kwargs feature_index)"
        ) from None
    except TypeError as e:
        raise ValueError(f"backbone {cfg.backbone!r} does not take backbone_kwargs {sorted(kwargs)}: {e}") from None
    if anti_alias:
        _pool_shortcuts(backbone)
    # Some feature wrappers (EfficientNetFeatures, MobileNetV3Features) keep the stages after the one we
    # read; drop them so no parameter goes unused (DDP requires it, and checkpoints stay lean).
    last = backbone.feature_info.module_name()[-1]
    blocks = getattr(backbone, "blocks", None)
    if last.startswith("blocks.") and isinstance(blocks, nn.Sequential):
        backbone.blocks = blocks[: int(last.split(".")[1]) + 1]
    return backbone


class PooledShortcut(nn.Sequential):
    """A ResNet shortcut (1×1 convolution, BatchNorm) that averages 2×2 pixels before its convolution, which runs
    at stride 1, instead of reading every other pixel at stride 2: the anti-aliased shortcut. Its children are
    the plain shortcut's, under the same names, so a plain ResNet's weights load into it as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False))


def _pool_shortcuts(backbone: nn.Module) -> None:
    """Make each stride-2 1×1 shortcut of ``backbone`` (timm ResNet ``downsample``) a :class:`PooledShortcut`."""
    for block in backbone.modules():
        down = getattr(block, "downsample", None)
        if isinstance(down, nn.Sequential) and len(down) == 2 and isinstance(down[0], nn.Conv2d):
            if tuple(down[0].stride) == (2, 2) and tuple(down[0].kernel_size) == (1, 1):
                down[0].stride = (1, 1)
                down.__class__ = PooledShortcut


class GrayStemConv2d(nn.Conv2d):
    """The stem convolution of a grayscale model: its input's three channels are one luma plane replicated
    (``runtime.preprocess`` and the data loaders make them so, normalised alike), so it convolves their sum with
    the kernel averaged over the input channels, which is exactly the three-channel convolution on such input at a
    third of the multiply-accumulates. Same parameters and state-dict keys as the ``nn.Conv2d`` it replaces; the
    exported graph reads one channel (``ReduceSum`` → a 1-channel ``Conv``, see ``folded_gray_stems``): for the
    default model 22.1 M instead of 25.7 M multiply-accumulates, its FP32 ONNX 1.12× and its CPU INT8 1.11× faster
    (one thread, idle AVX2 CPU, ``benchmarks/results/default_model_gray_stem_*.json``). A sum, not a mean, because
    opset 17's ``ReduceMean`` has no axes input for the dynamo exporter to convert to."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded = self._parameters.get("folded")  # the averaged kernel, only inside ``folded_gray_stems``
        weight = folded if folded is not None else self.weight.mean(1, keepdim=True)
        return self._conv_forward(x.sum(1, keepdim=True), weight, self.bias)


@contextmanager
def folded_gray_stems(model: nn.Module) -> Iterator[None]:
    """While exporting: each ``GrayStemConv2d`` of ``model`` convolves with its averaged kernel held as a
    parameter, so the exporter writes it as a weight (and folds the BatchNorm after it) instead of a per-call mean."""
    stems = [m for m in model.modules() if isinstance(m, GrayStemConv2d)]
    try:
        for m in stems:
            m.register_parameter("folded", nn.Parameter(m.weight.detach().mean(1, keepdim=True), requires_grad=False))
        yield
    finally:
        for m in stems:
            m._parameters.pop("folded", None)


def fold_gray_stem(backbone: nn.Module) -> bool:
    """Make the first convolution of ``backbone`` a ``GrayStemConv2d`` when it is a plain one reading the 3-channel
    image; returns whether it did (a backbone whose first layer is anything else keeps its 3-channel stem)."""
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if type(first) is not nn.Conv2d or first.in_channels != 3 or first.groups != 1:
        return False
    first.__class__ = GrayStemConv2d
    return True


class TaskTokenTransformer(nn.Module):
    """Multi-task affect model. ``forward(x) -> {"va": N×2 (tanh), "expr": N×8 logits, "au": N×12 logits}``."""

    def __init__(self, config: ModelConfig, model_name: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.model_name = model_name
        c = config
        self.backbone = _build_backbone(c)
        if c.color == "gray" and len(set(c.mean)) == 1 and len(set(c.std)) == 1:
            if not fold_gray_stem(self.backbone):
                log.debug(
                    "backbone %r: first layer is not a plain 3-channel convolution, stem left as it is", c.backbone
                )
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            fmap = self.backbone(torch.zeros(1, 3, c.input_size, c.input_size))[-1]
            self.backbone.train(was_training)
        _, ch, fh, fw = fmap.shape
        self.grid = (int(fh), int(fw))
        self.proj = nn.Sequential(nn.Linear(ch, c.dim), nn.LayerNorm(c.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, fh * fw, c.dim) * 0.02)
        self.encoder = nn.ModuleList(
            EncoderLayer(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.encoder_layers)
        )
        self.num_tokens = 3 if c.token_mode == "task" else NUM_VA + 1 + NUM_AU
        self.task_tokens = nn.Parameter(torch.randn(1, self.num_tokens, c.dim) * 0.02)
        self.decoder = nn.ModuleList(
            DecoderLayer(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.decoder_layers)
        )
        self.norm = nn.LayerNorm(c.dim)
        if c.token_mode == "task":
            self.va_head: nn.Module = nn.Linear(c.dim, NUM_VA)
            self.au_head: nn.Module = nn.Linear(c.dim, NUM_AU)
        else:
            self.va_head = PerTokenLinear(NUM_VA, c.dim)
            self.au_head = PerTokenLinear(NUM_AU, c.dim)
        self.expr_head = nn.Linear(c.dim, NUM_EXPR)
        # column order of the mirror image (a Gather in ONNX/TensorRT); not saved in checkpoints
        self.register_buffer("flip_index", torch.arange(c.input_size - 1, -1, -1), persistent=False)

    @property
    def preprocess(self) -> Preprocess:
        c = self.config
        return Preprocess(input_size=c.input_size, color=c.color, mean=tuple(c.mean), std=tuple(c.std))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image → image tokens (N × H'W' × dim) after the token encoder."""
        fmap = self.backbone(x)[-1]
        tokens = self.proj(fmap.flatten(2).transpose(1, 2)) + self.pos_embed
        for layer in self.encoder:
            tokens = layer(tokens)
        return tokens

    def forward_head(self, image_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image tokens → task tokens → the three task outputs."""
        tokens = self.task_tokens.expand(image_tokens.shape[0], -1, -1)
        for layer in self.decoder:
            tokens = layer(tokens, image_tokens)
        tokens = self.norm(tokens)
        if self.config.token_mode == "task":
            va_t, expr_t, au_t = tokens[:, 0], tokens[:, 1], tokens[:, 2]
        else:
            va_t, expr_t, au_t = tokens[:, :NUM_VA], tokens[:, NUM_VA], tokens[:, NUM_VA + 1 :]
        return {"va": torch.tanh(self.va_head(va_t)), "expr": self.expr_head(expr_t), "au": self.au_head(au_t)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.config.test_time_flip and not self.training:
            n = x.shape[0]
            both = torch.cat([x, torch.index_select(x, 3, self.flip_index)])
            out = self.forward_head(self.forward_features(both))
            return {k: (v[:n] + v[n:]) * 0.5 for k, v in out.items()}
        return self.forward_head(self.forward_features(x))

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list[dict]:
        """AdamW groups: no decay on norms/biases/embeddings; optional lower LR for the backbone."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_backbone = name.startswith("backbone.")
            no_decay = p.ndim <= 1 or name.endswith(("pos_embed", "task_tokens"))
            groups.setdefault((is_backbone, no_decay), []).append(p)
        return [
            {
                "params": ps,
                "lr": lr * (backbone_lr_scale if bb else 1.0),
                "lr_scale": backbone_lr_scale if bb else 1.0,
                "weight_decay": 0.0 if nd else weight_decay,
            }
            for (bb, nd), ps in groups.items()
        ]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: TaskTokenTransformer) -> int:
    """Multiply-accumulates for one face, counted with torch's FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    s = model.config.input_size
    was = model.training
    model.eval()
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, s, s))
    model.train(was)
    return int(fc.get_total_flops() // 2)


__all__ = ["TaskTokenTransformer", "count_params", "count_macs"]
