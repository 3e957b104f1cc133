"""Label schema, missing-label codes, tensor names and preprocessing: one source for every part.

Training, export, calibration and the runtime all read these names from here (and artifacts carry a
copy in their metadata), so they cannot drift apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: ABAW expression order (index = class id in the annotation files).
EXPRESSIONS: tuple[str, ...] = (
    "Neutral",
    "Anger",
    "Disgust",
    "Fear",
    "Happiness",
    "Sadness",
    "Surprise",
    "Other",
)
#: The 12 ABAW action units, in annotation-column order.
AUS: tuple[str, ...] = (
    "AU1",
    "AU2",
    "AU4",
    "AU6",
    "AU7",
    "AU10",
    "AU12",
    "AU15",
    "AU23",
    "AU24",
    "AU25",
    "AU26",
)
VA_NAMES: tuple[str, ...] = ("valence", "arousal")

NUM_VA = len(VA_NAMES)
NUM_EXPR = len(EXPRESSIONS)
NUM_AU = len(AUS)

#: ABAW missing-label codes.
MISSING_VA = -5.0
MISSING_EXPR = -1
MISSING_AU = -1

#: Tensor names shared by the model's forward dict, ONNX graphs and engines.
INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, ...] = ("va", "expr", "au")
OUTPUT_DIMS: dict[str, int] = {"va": NUM_VA, "expr": NUM_EXPR, "au": NUM_AU}
TASKS: tuple[str, ...] = OUTPUT_NAMES

#: Key under which artifacts (checkpoint, ONNX metadata_props, engine sidecar) store the metadata.
METADATA_KEY = "edge_affect"
SCHEMA_VERSION = 1

COLOR_MODES = ("rgb", "gray")
#: Network input sizes (pixels, square) an artifact may declare.
INPUT_SIZE_RANGE: tuple[int, int] = (16, 1024)
#: Interpolations ``runtime.preprocess.resize_face`` knows.
INTERPOLATIONS: tuple[str, ...] = ("area", "linear", "cubic", "nearest")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(value: Any, n: int, what: str) -> list[float]:
    """``value`` as ``n`` finite floats, or a ``ValueError`` saying what it is instead."""
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(_is_number(x) for x in value):
        raise ValueError(f"{what} must be a list of {n} numbers, got {_short(value)}")
    out = [float(x) for x in value]
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{what} must be finite, got {out}")
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_preprocess(pp: Any) -> None:
    """Types and ranges of a ``Preprocess`` (``ValueError`` naming the field)."""
    size = pp.input_size
    lo, hi = INPUT_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, int) or not lo <= size <= hi:
        raise ValueError(f"preprocess input_size {_short(size)} must be an integer in [{lo}, {hi}]")
    if pp.color not in COLOR_MODES:
        raise ValueError(f"preprocess color {_short(pp.color)} is not one of {list(COLOR_MODES)}")
    if pp.interpolation not in INTERPOLATIONS:
        raise ValueError(f"preprocess interpolation {_short(pp.interpolation)} is not one of {list(INTERPOLATIONS)}")
    _numbers(pp.mean, 3, "preprocess mean")
    std = _numbers(pp.std, 3, "preprocess std")
    if min(std) <= 0:
        raise ValueError(f"preprocess std {std} must be > 0")


@dataclass(frozen=True)
class Preprocess:
    """Exactly what turns a face crop (uint8) into the network input.

    ``x = (resize(crop, size) / 255 - mean) / std``, NCHW float32. In ``gray`` mode the crop is
    converted to one luminance channel and replicated to 3 channels, so RGB backbones still apply.
    """

    input_size: int = 112
    color: str = "rgb"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "area"

    def __post_init__(self) -> None:
        # The checks (types, ranges, known interpolations), however the object is made.
        check_preprocess(self)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocess keys {sorted(unknown)}; expected {sorted(known)}")
        kw = dict(d)
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        return cls(**kw)


@dataclass
class LabelSchema:
    """The label names an artifact was trained with; checked against ours when it is loaded."""

    expressions: list[str] = field(default_factory=lambda: list(EXPRESSIONS))
    aus: list[str] = field(default_factory=lambda: list(AUS))
    va: list[str] = field(default_factory=lambda: list(VA_NAMES))

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSchema:
        return cls(
            expressions=list(d.get("expressions", EXPRESSIONS)),
            aus=list(d.get("aus", AUS)),
            va=list(d.get("va", VA_NAMES)),
        )


def dumps(obj: Any) -> str:
    """Stable JSON used inside artifacts (sorted keys, no NaN)."""
    return json.dumps(obj, sort_keys=True, allow_nan=False)
