"""Which backend loads a file: suffix (or content) → backend, used by ``load``, the CLI and error messages.

The artifacts themselves (file names, precisions, targets) are in the one format table, :mod:`edge_affect.formats`;
this is the loader side only: which backend opens a ``.onnx``, an engine or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Loader:
    """A backend and the files it opens."""

    backend: str
    suffixes: tuple[str, ...]
    description: str
    requires: str


LOADERS: tuple[Loader, ...] = (
    Loader("onnxruntime", (".onnx",), "ONNX model (FP32, FP16-typed or INT8 Q/DQ)", "onnxruntime"),
    Loader(
        "tensorrt",
        (".engine", ".plan", ".trt"),
        "serialized TensorRT engine + <engine>.json sidecar",
        "tensorrt + cuda-python",
    ),
    Loader("torch", (".pt", ".pth", ".ckpt", ".safetensors"), "PyTorch checkpoint (reference)", "torch"),
)
BACKENDS: tuple[str, ...] = tuple(f.backend for f in LOADERS)
BACKEND_ALIASES: dict[str, str] = {
    "ort": "onnxruntime",
    "onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "trt": "tensorrt",
    "tensorrt": "tensorrt",
    "torch": "torch",
    "pytorch": "torch",
}


def normalize_backend(name: str) -> str:
    """``"ort"`` → ``"onnxruntime"`` etc.; ``"auto"`` stays; anything else is a ``ValueError``."""
    if name == "auto":
        return name
    try:
        return BACKEND_ALIASES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected auto, {', '.join(BACKENDS)}") from None


def loader_for_backend(backend: str) -> Loader:
    """The loader entry of ``backend`` (one of :data:`BACKENDS`)."""
    return next(f for f in LOADERS if f.backend == backend)


def detect_backend(path: str | Path) -> str:
    """The backend that runs ``path``: by suffix, else by content (sidecar, zip header, ONNX protobuf)."""
    p = Path(path)
    suffix = p.suffix.lower()
    for f in LOADERS:
        if suffix in f.suffixes:
            return f.backend
    if p.with_name(p.name + ".json").is_file():
        return "tensorrt"
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise FileNotFoundError(f"artifact {p}: cannot be read: {e.strerror}") from None
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version), varint: how every ONNX file starts
        return "onnxruntime"
    known = ", ".join(s for f in LOADERS for s in f.suffixes)
    raise ValueError(f"artifact {p}: unknown format (expected one of {known})")
