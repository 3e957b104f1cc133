"""Dataclass configs. Unknown keys fail with a close-match suggestion instead of being ignored, and values
whose type does not match the field (a list where an object is expected, ``"8"`` for an integer) fail with
the key, the value and the expected type in one line."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union

T = TypeVar("T")


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a JSON/TOML ``value`` fits the annotation ``tp`` (ints count as floats, lists as tuples)."""
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        kt, vt = args or (Any, Any)
        return all(_type_ok(k, kt) and _type_ok(v, vt) for k, v in value.items())
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (tp, dict))
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("NoneType", "None") if not isinstance(tp, type) else tp.__name__


def check_types(cls: type, d: dict[str, Any], where: str) -> None:
    """Every value in ``d`` fits the type of ``cls``'s field of that name (``ValueError`` naming key and type)."""
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        tp = hints.get(key, Any)
        if not _type_ok(value, tp):
            text = repr(value)
            text = text if len(text) <= 60 else text[:57] + "..."
            raise ValueError(f"{where}: {key} must be {_type_name(tp)}, got {type(value).__name__} {text}")


def _check_keys(cls: type, d: dict[str, Any], where: str) -> None:
    known = [f.name for f in fields(cls)]
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {known}"
            raise ValueError(f"{where}: unknown key {key!r}{hint}")


def from_dict(cls: type[T], d: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``d``, rejecting unknown keys (with a suggestion)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    _check_keys(cls, d, where)
    check_types(cls, d, where)
    kw = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            if isinstance(v, list) and "tuple" in str(f.type):
                v = tuple(v)
            kw[f.name] = v
    return cls(**kw)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a ``TaskTokenTransformer`` (stored in checkpoints)."""

    backbone: str = "resnet18"
    pretrained: str | None = None  # local weights file for the backbone (hubs are unreachable)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = 112
    color: str = "rgb"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    dim: int = 128
    heads: int = 8
    mlp_ratio: float = 4.0
    encoder_layers: int = 1
    decoder_layers: int = 2
    token_mode: str = "task"  # "task": 3 tokens; "label": one token per output (2 + 1 + 12)
    dropout: float = 0.1
    drop_path: float = 0.0
    # Inference averages the outputs of the face and its mirror image (2× the MACs; part of the exported
    # graph, so every backend does the same). Training is unaffected; can be switched on after training.
    test_time_flip: bool = False

    def __post_init__(self) -> None:
        if self.token_mode not in ("task", "label"):
            raise ValueError(f"token_mode {self.token_mode!r} is not 'task' or 'label'")
        for name in ("dim", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} {value!r} must be an integer >= 1")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.color not in ("rgb", "gray"):
            raise ValueError(f"color {self.color!r} is not 'rgb' or 'gray'")
        self.mean = tuple(float(x) for x in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in self.std)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


@dataclass
class LossConfig:
    """Per-task losses and how they are combined (see ``edge_affect.losses``)."""

    weighting: str = "uncertainty"  # or "fixed"
    fixed_weights: dict[str, float] = field(default_factory=lambda: {"va": 1.0, "expr": 1.0, "au": 1.0})
    va_mse: float = 0.0  # weight of an extra MSE term added to 1 - CCC
    expr_class_weights: list[float] | None = None
    au_pos_weight: list[float] | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.weighting not in ("uncertainty", "fixed"):
            raise ValueError(f"loss weighting {self.weighting!r} is not 'uncertainty' or 'fixed'")


@dataclass
class TrainConfig:
    """Optimisation and data settings for ``edge-affect train``."""

    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.0  # EMA decay; 0 disables
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere
    channels_last: bool = True
    seed: int = 0
    augment: bool = True
    # GpuAugment keyword overrides (scale, max_shift, max_rotate_deg, flip, brightness, contrast, gray_prob,
    # erase_prob, erase_area)
    augment_params: dict[str, Any] = field(default_factory=dict)
    max_steps_per_epoch: int = 0  # 0 = full epoch
    stop_after_epochs: int = 0  # > 0: stop after this many epochs, keeping the LR schedule of `epochs`
    init_from: str | None = None  # checkpoint whose weights start the model (fine-tuning a trained model)
    init_from_partial: bool = False  # take only the init_from weights that match (else a partial match is refused)
    loss: LossConfig = field(default_factory=LossConfig)
    skip_bad_rows: bool = False
    # validation score that chooses best.pt: "p" (ABAW P = VA + EXPR + AU) or "expr_acc" (expression top-1
    # accuracy against the hard/majority label, e.g. FER+ majority accuracy)
    select_on: str = "p"

    def __post_init__(self) -> None:
        if self.select_on not in ("p", "expr_acc"):
            raise ValueError(f"select_on {self.select_on!r} is not 'p' or 'expr_acc'")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping of config keys, got {type(d).__name__}")
        d = dict(d)
        loss = d.pop("loss", {})
        cfg = from_dict(cls, d, where)
        cfg.loss = loss if isinstance(loss, LossConfig) else from_dict(LossConfig, loss, f"{where}.loss")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict, with a clear error for bad files."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:  # a binary file (a checkpoint, an image) passed by mistake
        raise ValueError(f"{p}: not UTF-8 text (byte {e.start}), expected a JSON or TOML file") from None
    try:
        if p.suffix == ".toml":
            try:
                import tomllib  # Python >= 3.11
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'}: {e}") from None


@dataclass
class ExportProfile:
    """A per-target export recipe (``export/<target>.toml``), consumed by ``edge-affect export --profile``.

    ``build_engine_here = False`` means engines must be built on the device itself (TensorRT engines are
    specific to the GPU and TensorRT version): export writes the ONNX artifacts and says so.
    """

    target: str = "generic"
    description: str = ""
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    batch: tuple[int, int, int] = (1, 1, 8)
    workspace_mib: int = 1024
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    build_engine_here: bool = True
    cuda_graph: bool = False
    tensorrt: str = ""  # the TensorRT version the target ships, for the record
    triton: bool = False

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in ("fp32", "fp16", "int8")]
        if bad or not self.precisions:
            raise ValueError(
                f"{self.target}: precisions {self.precisions} must be a non-empty subset of fp32, fp16, int8"
            )
        b = tuple(int(x) for x in self.batch)
        if len(b) != 3 or not (1 <= b[0] <= b[1] <= b[2]):
            raise ValueError(
                f"{self.target}: batch {list(self.batch)} must be [min, opt, max] with 1 <= min <= opt <= max"
            )
        self.batch = b  # type: ignore[assignment]
        if self.workspace_mib < 16:
            raise ValueError(f"{self.target}: workspace_mib {self.workspace_mib} is too small (>= 16)")
        if self.dla_core is not None:
            if self.dla_core not in (0, 1):
                raise ValueError(f"{self.target}: dla_core {self.dla_core} must be 0 or 1 (Jetson Orin has two DLAs)")
            if "int8" not in self.precisions and "fp16" not in self.precisions:
                raise ValueError(f"{self.target}: DLA runs only FP16 or INT8; add one of them to precisions")
            if self.version_compatible:
                raise ValueError(f"{self.target}: version-compatible engines cannot target the DLA")
        if self.cuda_graph and self.batch[0] != self.batch[2]:
            raise ValueError(f"{self.target}: cuda_graph needs a fixed batch (min = max), got {list(self.batch)}")


def load_export_profile(path: str | Path) -> ExportProfile:
    """Read an ``export/<target>.toml`` recipe; unknown keys or impossible combinations are errors."""
    d = load_config_file(path)
    try:
        return from_dict(ExportProfile, d, where=str(path))
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
