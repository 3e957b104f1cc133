"""Settings checked by one schema library (pydantic v2), with every error as one line.

``Settings`` is the base of every validated settings object (training and loss configs, augmentation,
export profiles, evaluation files, the face pipeline, Triton): unknown keys are refused, values must have
the field's type (``"8"`` is not an integer, ``true`` not a number), numbers must be finite and in range.
``validate(cls, data, where)`` turns pydantic's error list into the house's one line:
``<file>: <key> <value>: <problem>, expected <what would work>`` (nested sections as ``<file>.loss``), and
unknown keys name the allowed ones. Torch-free and below the runtime, which checks its settings here too.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """A validated settings object: unknown keys refused, types strict, numbers finite, assignments checked."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise ValueError(one_line(type(self), e, {name: value}, type(self).__name__)) from None

    @classmethod
    def check(cls: type[S], data: Any, where: str = "config") -> S:
        """``cls`` built from ``data`` (a mapping), or a one-line ``ValueError`` naming ``where`` and the key."""
        return validate(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples as lists)."""
        return self.model_dump(mode="json")


def type_name(tp: Any) -> str:
    """How a field's type reads in a message: ``int``, ``list[float] | None``, ``tuple[int, int, int]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a table of settings"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _constraints(tp: Any, rest: tuple[Any, ...]) -> tuple[str, list[Any], str | None]:
    """(base type name, bound constraints, message words) of the value at ``rest`` inside a field of type ``tp``."""
    meta: list[Any] = []
    expected: str | None = None
    while True:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            for m in args[1:]:
                meta.extend(getattr(m, "metadata", None) or [m])
                extra = getattr(m, "json_schema_extra", None)
                if isinstance(extra, dict) and extra.get("expected"):
                    expected = str(extra["expected"])
            tp = args[0]
        elif origin is Union or origin is types.UnionType:
            tp = next(a for a in args if a is not type(None))
        elif rest and origin in (list, tuple, dict):
            tp, rest = (args[rest[0]] if origin is tuple and len(args) > rest[0] else args[-1]), rest[1:]
            meta, expected = [], None
        else:
            return getattr(tp, "__name__", str(tp)), meta, expected


def _range_text(meta: list[Any], kind: str) -> str:
    """``an integer ≥ 1``, ``a number in [0, 1)``, … from a field's ``Field(ge=…, lt=…)`` constraints."""
    lo = hi = None
    lo_open = hi_open = False
    for m in meta:
        for attr, is_lo, is_open in (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True)):
            v = getattr(m, attr, None)
            if v is not None:
                if is_lo:
                    lo, lo_open = v, is_open
                else:
                    hi, hi_open = v, is_open
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{_number(lo)}, {_number(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '≥'} {_number(lo)}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '≤'} {_number(hi)}"
    return kind


def _walk(cls: type[BaseModel], loc: tuple[Any, ...], data: Any) -> tuple[list[str], str, Any, tuple[Any, ...], Any]:
    """Split ``loc`` into (section path, field name, field info, the rest of the loc, the field's value)."""
    sections: list[str] = []
    model: type[BaseModel] = cls
    i = 0
    while i < len(loc):
        name = loc[i]
        info = model.model_fields.get(name) if isinstance(name, str) else None
        value = data.get(name) if isinstance(data, dict) else None
        if info is None:
            return sections, str(name), None, loc[i + 1 :], value
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and i + 1 < len(loc) and isinstance(value, dict):
            sections.append(name)
            model, data, i = ann, value, i + 1
            continue
        return sections, name, info, loc[i + 1 :], value
    return sections, "", None, (), data


def _allowed(cls: type[BaseModel], sections: list[str]) -> list[str]:
    model = cls
    for s in sections:
        model = model.model_fields[s].annotation  # type: ignore[assignment]
    return list(model.model_fields)


def _item(rest: tuple[Any, ...]) -> str:
    return "".join(f"[{r!r}]" if isinstance(r, str) else f"[{r}]" for r in rest if r != "[key]")


def one_line(cls: type[BaseModel], e: ValidationError, data: Any, where: str) -> str:
    """The first of pydantic's errors for ``data`` as the house's one line."""
    err = e.errors(include_url=False)[0]
    kind, loc = err["type"], tuple(err["loc"])
    sections, key, info, rest, value = _walk(cls, loc, data)
    place = ".".join([where, *sections])
    if kind == "extra_forbidden":
        allowed = _allowed(cls, sections)
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{place}: unknown key {key!r}; {hint}expected one of: {', '.join(allowed)}"
    if kind == "model_type" or (kind == "dict_type" and not key):
        got = f"{type(err['input']).__name__} {_shown(err['input'])}"
        return f"{place}: {key} must be a table of settings, got {got}" if key else f"{place}: expected a mapping, got {got}"
    if info is None:  # a model-level check (model_validator)
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{place}: {msg}"
    ann = info.annotation
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        base, meta, expected = _constraints(ann, rest)
        if not rest:
            meta = [*info.metadata, *meta]
            extra = info.json_schema_extra
            expected = expected or (str(extra["expected"]) if isinstance(extra, dict) and extra.get("expected") else None)
        number = "an integer" if base == "int" else "a number"
        problem = "not finite" if kind == "finite_number" else "out of range"
        return f"{place}: {key}{_item(rest)} {_shown(err['input'])}: {problem}, expected {expected or _range_text(meta, number)}"
    if kind == "literal_error":
        return f"{place}: {key}{_item(rest)} {_shown(err['input'])}: not a known value, expected {err['ctx']['expected']}"
    if kind == "value_error":  # a field validator's own words
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{place}: {key}{_item(rest)}: {msg}"
    return f"{place}: {key} must be {type_name(ann)}, got {type(value).__name__} {_shown(value)}"


def validate(cls: type[S], data: Any, where: str = "config") -> S:
    """``cls.model_validate(data)`` with pydantic's errors as one ``ValueError`` line (see the module docstring)."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ValueError(one_line(cls, e, data, where)) from None
