"""ONNX Runtime runner: CPU, CUDA or TensorRT execution provider, chosen explicitly and reported."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.formats import FORMATS, INT8_TARGET_CPU, PRECISIONS, onnx_format_for, onnx_format_for_provider
from edge_affect.runtime.backends.base import BaseRunner, TensorSpec

log = logging.getLogger(__name__)

#: Short names accepted in ``providers`` (CLI ``--providers``) → ONNX Runtime provider names.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}

ProviderArg = str | tuple[str, dict[str, Any]]

#: The ONNX files of an export folder per precision, from the one format table (``edge_affect.formats``).
#: INT8 has two: TensorRT-shaped Q/DQ (here) and ONNX Runtime CPU-native (``CPU_INT8_ONNX``).
EXPORT_ONNX: dict[str, str] = {p: onnx_format_for(p).filename for p in PRECISIONS}
CPU_INT8_ONNX = FORMATS["onnx-int8-cpu"].filename


def select_precision(artifact: str | Path, precision: str, providers: Sequence[ProviderArg] | str | None) -> Path:
    """The export-folder file that runs ``precision`` on ``providers``: ``artifact`` is an export folder or a
    file in one. INT8 on the CPU provider is the CPU-native INT8 model (integer kernels); INT8 on CUDA/TensorRT
    is the TensorRT-shaped Q/DQ model (``edge_affect.formats``). A missing file is a ``FileNotFoundError`` saying
    how to make it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}, expected one of {', '.join(PRECISIONS)}")
    p = Path(artifact)
    folder = p if p.is_dir() else p.parent
    first = resolve_providers(providers)[0]
    on_cpu = (first if isinstance(first, str) else first[0]) == "CPUExecutionProvider"
    fmt = onnx_format_for_provider(precision, on_cpu)
    chosen = folder / fmt.filename
    if not chosen.is_file():
        how = fmt.how + (" (or --profile export/cpu.toml)" if fmt.target == INT8_TARGET_CPU else "")
        where = "the CPU provider" if on_cpu else "CUDA/TensorRT"
        raise FileNotFoundError(
            f"--precision {precision} on {where}: {folder} has no {fmt.filename}; write it with: {how}"
        )
    return chosen


def import_onnxruntime() -> Any:
    """Import onnxruntime or fail with the install hint."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("ONNX Runtime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    return ort


def cuda_device_present() -> bool:
    """Whether a CUDA driver with at least one device is usable here (no CUDA toolkit needed)."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
        except AttributeError:
            return False
    return False


def resolve_providers(providers: Sequence[ProviderArg] | str | None) -> list[ProviderArg]:
    """Turn short names / ``"auto"`` / ``None`` into an explicit ONNX Runtime provider list.

    ``None``/``"auto"``: CUDA then CPU when a CUDA build and a CUDA device are both present, else CPU
    only (the TensorRT provider builds engines on first run, so it is used only when asked for).
    A requested provider this ONNX Runtime build lacks is a ``ValueError`` naming what it has.
    """
    ort = import_onnxruntime()
    available = list(ort.get_available_providers())
    if providers is not None and not isinstance(providers, (str, list, tuple)):
        raise ValueError(f"providers {providers!r:.60} must be a name, a comma-separated string or a list of names")
    if providers is None or providers == "auto" or list(providers) == ["auto"]:
        if "CUDAExecutionProvider" in available and cuda_device_present():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p]
    out: list[ProviderArg] = []
    for p in providers:
        ok = isinstance(p, str) or (
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict)
        )
        if not ok:
            raise ValueError(f"provider {p!r:.60} must be a name or a (name, options dict) pair")
        name, opts = p if isinstance(p, tuple) else (p, None)
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ValueError(
                f"ONNX Runtime provider {name!r} is not in this onnxruntime build (available: {', '.join(available)})"
            )
        out.append((full, opts) if opts else full)
    names = [p[0] if isinstance(p, tuple) else p for p in out]
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")  # for nodes the accelerator provider does not take
    return out


class OnnxRuntimeRunner(BaseRunner):
    """Runs an ONNX file (or bytes) in an ``onnxruntime.InferenceSession`` with explicit providers."""

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | Path | bytes,
        providers: Sequence[ProviderArg] | str | None = None,
        *,
        intra_op_threads: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or (str(model) if not isinstance(model, bytes) else "onnx-bytes"))
        self._model = model
        self._requested = resolve_providers(providers)
        self._threads = intra_op_threads
        self.session: Any = None
        #: The providers the session actually uses, best first (``device`` is the first of them).
        self.providers: list[str] = []
        self.custom_metadata: dict[str, str] = {}

    def _activate(self) -> None:
        ort = import_onnxruntime()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        threads = self._threads if self._threads is not None else int(os.environ.get("EDGE_AFFECT_ORT_THREADS", 0))
        so.intra_op_num_threads = threads  # 0 = ONNX Runtime's default (physical cores)
        model = self._model if isinstance(self._model, bytes) else str(self._model)
        try:
            self.session = ort.InferenceSession(model, sess_options=so, providers=self._requested)
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.name}: ONNX Runtime cannot load it: {first}") from None
        self.providers = list(self.session.get_providers())
        self.device = self.providers[0]
        wanted = self._requested[0] if isinstance(self._requested[0], str) else self._requested[0][0]
        if wanted != self.device:
            log.warning("%s: asked for %s, ONNX Runtime runs it on %s", self.name, wanted, self.device)
        self.custom_metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        # A type without a numpy counterpart (string, sequence, map) becomes ``object``: callers that need
        # float tensors refuse it by name instead of feeding it wrongly converted data.
        self.inputs = {
            i.name: TensorSpec(
                i.name, tuple(d if d is not None else -1 for d in i.shape), np.dtype(_ORT_TYPES.get(i.type, object))
            )
            for i in self.session.get_inputs()
        }
        self.outputs = {
            o.name: TensorSpec(
                o.name, tuple(d if d is not None else -1 for d in o.shape), np.dtype(_ORT_TYPES.get(o.type, object))
            )
            for o in self.session.get_outputs()
        }
        self._output_names = list(self.outputs)
        if not self.inputs or not self.outputs:
            raise ValueError(f"{self.name}: the ONNX graph has no inputs or no outputs")
        first_in = next(iter(self.inputs.values()))
        self.max_batch = first_in.static_dim(0)
        log.debug("%s: ONNX Runtime on %s", self.name, self.device)

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: np.asarray(feed[k]).astype(spec.dtype, copy=False) for k, spec in self.inputs.items()}
        outs = self.session.run(self._output_names, inputs)
        return dict(zip(self._output_names, outs, strict=True))
