"""Configs: the training config, its loss and augmentation sections and export profiles are validated
settings (``edge_affect.validation``, pydantic v2): unknown keys fail naming the allowed ones (with a
close-match suggestion), values of the wrong type (``"8"`` for an integer, a list where a table is expected),
out of range or not finite fail with the file, the key and what was expected, in one line. ``ModelConfig``
stays a dataclass (checkpoints and the model registry build it) with the same kind of check."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from edge_affect.schema import AUS, EXPRESSIONS, NUM_AU, NUM_EXPR, TASKS
from edge_affect.validation import Settings, validate

T = TypeVar("T")

#: Largest batch an engine profile or a Triton model accepts (4096 faces of 112 px are ~600 MB of input).
MAX_BATCH = 4096


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
    """Build dataclass or ``Settings`` ``cls`` from ``d``, rejecting unknown keys (with a suggestion)."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return validate(cls, d, where)  # type: ignore[return-value]
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


# ------------------------------------------------------------------ validated settings (pydantic, one-line errors)

_Int = StrictInt
_Num = StrictFloat


def _ranged(tp: Any, expected: str | None = None, **bounds: float) -> Any:
    """``tp`` with ``Field`` bounds (``ge``, ``gt``, ``le``, ``lt``) and, optionally, the words of the message."""
    return Annotated[tp, Field(json_schema_extra={"expected": expected} if expected else None, **bounds)]


class LossConfig(Settings):
    """Per-task losses and how they are combined (see ``edge_affect.losses``)."""

    weighting: Literal["uncertainty", "fixed"] = "uncertainty"
    fixed_weights: dict[StrictStr, _ranged(_Num, ge=0)] = Field(
        default_factory=lambda: {"va": 1.0, "expr": 1.0, "au": 1.0}
    )
    va_mse: _ranged(_Num, ge=0) = 0.0  # weight of an extra MSE term added to 1 - CCC
    expr_class_weights: list[_ranged(_Num, ge=0)] | None = None
    au_pos_weight: list[_ranged(_Num, gt=0)] | None = None
    label_smoothing: _ranged(_Num, ge=0, lt=1) = 0.0

    @field_validator("fixed_weights")
    @classmethod
    def _tasks(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}, expected keys among {', '.join(TASKS)}")
        return v

    @field_validator("expr_class_weights")
    @classmethod
    def _one_per_class(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and len(v) != NUM_EXPR:
            raise ValueError(f"{len(v)} weights, expected {NUM_EXPR}, one per expression ({', '.join(EXPRESSIONS)})")
        if v is not None and not any(w > 0 for w in v):
            raise ValueError("all weights are 0, expected at least one class with a positive weight")
        return v

    @field_validator("au_pos_weight")
    @classmethod
    def _one_per_au(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and len(v) != NUM_AU:
            raise ValueError(f"{len(v)} weights, expected {NUM_AU}, one per AU ({', '.join(AUS)})")
        return v


class AugmentParams(Settings):
    """``GpuAugment`` keyword overrides (``augment_params``); a key left out keeps GpuAugment's default."""

    scale: tuple[_ranged(_Num, gt=0, le=4), _ranged(_Num, gt=0, le=4)] | None = None
    max_shift: _ranged(_Num, ge=0, le=1) | None = None
    max_rotate_deg: _ranged(_Num, ge=0, le=180) | None = None
    flip: StrictBool | None = None
    brightness: _ranged(_Num, ge=0, lt=1) | None = None
    contrast: _ranged(_Num, ge=0, lt=1) | None = None
    gray_prob: _ranged(_Num, ge=0, le=1) | None = None
    erase_prob: _ranged(_Num, ge=0, le=1) | None = None
    erase_area: tuple[_ranged(_Num, gt=0, le=1), _ranged(_Num, gt=0, le=1)] | None = None
    landmark_jitter: _ranged(_Num, ge=0, le=0.1) | None = None
    blur: _ranged(_Num, ge=0, le=1) | None = None
    blur_prob: _ranged(_Num, ge=0, le=1) | None = None
    noise: _ranged(_Num, ge=0, le=0.25) | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AugmentParams:
        for name in ("scale", "erase_area"):
            pair = getattr(self, name)
            if pair is not None and pair[0] > pair[1]:
                raise ValueError(f"{name} {list(pair)}: low above high, expected [low, high] with low ≤ high")
        return self

    def kwargs(self) -> dict[str, Any]:
        """The keys that were given, for ``GpuAugment(pp, **kwargs)``."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TrainConfig(Settings):
    """Optimisation and data settings for ``edge-affect train`` (types and ranges checked when built or set)."""

    model: StrictStr = "tiny"
    model_overrides: dict[StrictStr, Any] = Field(default_factory=dict)
    epochs: _ranged(_Int, ge=1) = 10
    batch_size: _ranged(_Int, ge=1) = 64
    lr: _ranged(_Num, gt=0) = 1e-3
    backbone_lr_scale: _ranged(_Num, ge=0) = 1.0
    weight_decay: _ranged(_Num, ge=0) = 0.05
    warmup_epochs: _ranged(_Num, ge=0) = 1.0
    min_lr_ratio: _ranged(_Num, ge=0, le=1) = 0.01
    grad_clip: _ranged(_Num, ge=0) = 1.0
    ema: _ranged(_Num, "a decay in [0, 1) (0 disables EMA)", ge=0, lt=1) = 0.0  # EMA decay; 0 disables
    amp: StrictBool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere
    channels_last: StrictBool = True
    seed: _ranged(_Int, ge=0, le=2**32 - 1) = 0
    augment: StrictBool = True
    augment_params: AugmentParams = Field(default_factory=AugmentParams)
    max_steps_per_epoch: _ranged(_Int, ge=0) = 0  # 0 = full epoch
    stop_after_epochs: _ranged(_Int, ge=0) = 0  # > 0: stop after this many epochs, keeping the LR schedule of `epochs`
    init_from: StrictStr | None = None  # checkpoint whose weights start the model (fine-tuning a trained model)
    init_from_partial: StrictBool = False  # take only the init_from weights that match (else a partial match is refused)
    # grow init_from (a narrower ResNet-family model of the same config) into this model's wider backbone
    # channels, computing the same function (Net2WiderNet: edge_affect/models/widen.py)
    init_widen: StrictBool = False
    loss: LossConfig = Field(default_factory=LossConfig)
    # weight of the consistency term (stability training, Zheng et al. 2016): each face is also seen re-aligned
    # from landmarks moved by the detector's noise (augment_params.landmark_jitter) and/or with another pixel-noise
    # field (augment_params.noise), and the KL divergence between the two expression distributions is added to
    # the loss; 0 = off
    consistency: _ranged(_Num, ge=0, le=100) = 0.0
    # pseudo-quantization noise (edge_affect/train/quant_noise.py): in training, each backbone convolution's input
    # but the stem's gets uniform noise of this many per-tensor INT8 steps (max|x| / 127); 0 = off. The exported
    # graph is unchanged and still quantized after training.
    quant_noise: _ranged(_Num, ge=0, le=8) = 0.0
    skip_bad_rows: StrictBool = False
    # validation score that chooses best.pt: "p" (ABAW P = VA + EXPR + AU) or "expr_acc" (expression top-1
    # accuracy against the hard/majority label, e.g. FER+ majority accuracy)
    select_on: Literal["p", "expr_acc"] = "p"

    @model_validator(mode="after")
    def _consistency_needs_jitter(self) -> TrainConfig:
        params = self.augment_params
        if self.consistency > 0 and not (self.augment and max(params.landmark_jitter or 0, params.noise or 0) > 0):
            raise ValueError(
                f"consistency {self.consistency} needs augment = true and augment_params.landmark_jitter > 0 or "
                "augment_params.noise > 0 (the two views differ by landmark and pixel noise only)"
            )
        return self

    @model_validator(mode="after")
    def _widen_needs_init(self) -> TrainConfig:
        if self.init_widen and (not self.init_from or self.init_from_partial):
            raise ValueError(
                "init_widen = true needs init_from (the narrower checkpoint to grow) and init_from_partial = false"
            )
        return self

    @field_serializer("augment_params")
    def _given_only(self, v: AugmentParams) -> dict[str, Any]:
        return {k: list(x) if isinstance(x, tuple) else x for k, x in v.kwargs().items()}

    @classmethod
    def from_dict(cls, d: Any, where: str = "config") -> TrainConfig:
        """Build from a config file's data; a wrong key, type or value is a one-line ``ValueError``."""
        return validate(cls, d, where)


#: An evaluation file (``package --evaluation``): results by name, JSON values, every number finite.
_EVALUATION = TypeAdapter(dict[StrictStr, JsonValue], config=ConfigDict(allow_inf_nan=False))
_JSON_TYPES = {"dict", "list", "str", "int", "float", "bool"}


def check_evaluation(d: Any, where: str = "evaluation") -> dict[str, Any]:
    """``d`` when it is an evaluation file's content (a JSON object whose numbers are all finite), else a
    one-line ``ValueError`` naming the file and the bad entry (a number, a list or NaN were stored as is)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a JSON {type(d).__name__}, expected an object of evaluation results")
    try:
        return _EVALUATION.validate_python(d)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        path = "".join(f"[{p!r}]" for p in err["loc"] if p not in _JSON_TYPES)
        problem = "not finite" if err["type"] == "finite_number" else "not a JSON value"
        raise ValueError(f"{where}: {path} {err['input']!r}: {problem}, expected finite numbers") from None


# ------------------------------------------------------------------------------------------- config files


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


_Batch = _ranged(_Int, ge=1, le=MAX_BATCH)


class ExportProfile(Settings):
    """A per-target export recipe (``export/<target>.toml``), consumed by ``edge-affect export --profile``.

    ``build_engine_here = False`` means engines must be built on the device itself (TensorRT engines are
    specific to the GPU and TensorRT version): export writes the ONNX artifacts and says so.
    """

    target: StrictStr = "generic"
    description: StrictStr = ""
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: ["fp32", "fp16", "int8"])
    batch: tuple[_Batch, _Batch, _Batch] = (1, 1, 8)
    workspace_mib: _ranged(_Int, ge=16) = 1024
    dla_core: _ranged(_Int, "0 or 1 (Jetson Orin has two DLAs)", ge=0, le=1) | None = None
    gpu_fallback: StrictBool = True
    version_compatible: StrictBool = False
    build_engine_here: StrictBool = True
    cuda_graph: StrictBool = False
    tensorrt: StrictStr = ""  # the TensorRT version the target ships, for the record
    triton: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self) -> ExportProfile:
        if not self.precisions:
            raise ValueError("precisions []: empty, expected a non-empty subset of fp32, fp16, int8")
        b = self.batch
        if not (1 <= b[0] <= b[1] <= b[2]):
            raise ValueError(f"batch {list(b)}: expected [min, opt, max] with 1 <= min <= opt <= max")
        if self.dla_core is not None:
            if "int8" not in self.precisions and "fp16" not in self.precisions:
                raise ValueError("DLA runs only FP16 or INT8; add one of them to precisions")
            if self.version_compatible:
                raise ValueError("version-compatible engines cannot target the DLA, expected one of the two")
        if self.cuda_graph and b[0] != b[2]:
            raise ValueError(f"cuda_graph needs a fixed batch (min = max), got {list(b)}")
        return self


def load_export_profile(path: str | Path) -> ExportProfile:
    """Read an ``export/<target>.toml`` recipe; unknown keys or impossible combinations are errors."""
    return validate(ExportProfile, load_config_file(path), where=str(path))
