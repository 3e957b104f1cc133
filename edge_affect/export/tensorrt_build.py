"""TensorRT engines from typed ONNX (FP16 / INT8 Q/DQ), built strongly typed; one path for TensorRT 10.x and 11.x.

Precision lives in the ONNX graph (TensorRT 11 removed the FP16/INT8 builder flags), so the build only sets
the strongly typed network flag (required on 10.x, ignored on 11.x), one optimisation profile over the batch
range, a workspace limit and a timing cache reused across builds. ``tensorrt`` and ``cuda-python`` are
imported lazily: without them (or without a GPU) ``tensorrt_unavailable_reason`` says why and callers skip.
This is the one builder of the affect model's engines; the runtime only loads them (``TensorRTRunner``, which
``trt_run`` uses too). A DLA build needs a static batch and records its core, which the runtime applies.
Each engine gets a JSON sidecar (``model.fp16.engine.json``) with the TensorRT version, GPU, compute
capability, precision, batch range, ONNX sha256 and the artifact metadata.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ArtifactMeta, atomic_write_bytes, atomic_write_text, sha256_file
from edge_affect.config import MAX_BATCH
from edge_affect.runtime.backends.tensorrt_runner import TensorRTRunner, current_gpu, import_cudart, normalize_sidecar
from edge_affect.schema import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"  # model.fp16.engine -> model.fp16.engine.json


@dataclass
class BatchRange:
    """Optimisation-profile batch sizes ``min <= opt <= max``."""

    min: int = 1
    opt: int = 8
    max: int = 32

    @classmethod
    def parse(cls, text: str) -> BatchRange:
        """Parse ``MIN:OPT:MAX`` (e.g. ``1:8:32``)."""
        parts = text.split(":")
        try:
            lo, opt, hi = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"batch range {text!r}: expected MIN:OPT:MAX integers, e.g. 1:8:32") from None
        if not 1 <= lo <= opt <= hi <= MAX_BATCH:
            raise ValueError(f"batch range {text!r}: expected 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}")
        return cls(lo, opt, hi)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass
class EngineOptions:
    """Builder settings beyond precision (which the typed ONNX carries); checked when made."""

    batch: BatchRange
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    version_compatible: bool = False
    dla_core: int | None = None  # Jetson DLA core the engine is built for (the runtime loads it onto that core)
    gpu_fallback: bool = True  # DLA: layers DLA cannot run go to the GPU; False: such a network fails to build

    def __post_init__(self) -> None:
        check_dla(self.batch, self.dla_core)


def check_dla(batch: BatchRange, dla_core: int | None) -> None:
    """DLA runs static shapes only: a DLA build needs one batch size (MIN = OPT = MAX). With a dynamic profile
    TensorRT places the network on the GPU (with GPU fallback, silently), so such a build is refused."""
    if dla_core is None:
        return
    if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < 0:
        raise ValueError(f"dla_core {dla_core!r}: expected a DLA core number >= 0 (Jetson Orin: 0 or 1)")
    if not batch.min == batch.opt == batch.max:
        raise ValueError(
            f"DLA core {dla_core}: batch range {batch} is dynamic, but DLA runs static shapes only (TensorRT would "
            f"put the whole network on the GPU); give one batch size, e.g. --batch {batch.opt}:{batch.opt}:{batch.opt}"
        )


def builder_settings(opts: EngineOptions) -> dict[str, Any]:
    """What ``build_engine`` sets on the ``IBuilderConfig`` beyond the profile and the timing cache, by TensorRT
    name: ``flags`` (``BuilderFlag`` members), and for DLA ``default_device_type`` and ``DLA_core``."""
    flags = ["VERSION_COMPATIBLE"] if opts.version_compatible else []
    out: dict[str, Any] = {"flags": flags, "workspace_bytes": int(opts.workspace_mib) << 20}
    if opts.dla_core is not None:
        out |= {"default_device_type": "DLA", "DLA_core": int(opts.dla_core)}
        if opts.gpu_fallback:
            flags.append("GPU_FALLBACK")
    return out


def attach_timing_cache(config: Any, path: Path) -> tuple[Any, bool]:
    """Load ``path`` (if it exists) as ``config``'s timing cache; returns the cache in use and whether to write it
    back after the build. A cache TensorRT cannot read, or rejects (made on another GPU or TensorRT version:
    ``set_timing_cache`` returns False), is reported and left as it is on disk; the build starts a fresh one."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, True
    if not blob:
        raise RuntimeError("TensorRT could not create an empty timing cache")
    why = "cannot be read" if cache is None else "was made on another GPU or TensorRT version and was rejected"
    log.warning(
        "timing cache %s %s: this build times every layer afresh and leaves the file as it is (give each device "
        "its own --timing-cache or $EDGE_AFFECT_TRT_CACHE)",
        path,
        why,
    )
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise RuntimeError("TensorRT could not create an empty timing cache")
    return fresh, False


#: ``cudaErrorInsufficientDriver``: the CUDA runtime (cuda-python's) is newer than the installed driver.
CUDA_ERROR_INSUFFICIENT_DRIVER = 35


def _cuda_python_version() -> str:
    for dist in ("cuda-python", "cuda-bindings"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"


def cuda_error_reason(err: int, cuda_python: str) -> str:
    """Why ``cudaGetDeviceCount`` failed, in one line; a driver older than cuda-python's CUDA names the fix
    (cuda-python 13.x needs a 580+ driver; JetPack 6 and CUDA 12 drivers need cuda-python 12.x)."""
    if err == CUDA_ERROR_INSUFFICIENT_DRIVER:
        need = "a 580+ NVIDIA driver (CUDA 13)" if cuda_python.split(".")[0] == "13" else "a newer NVIDIA driver"
        return (
            f"cuda-python {cuda_python} needs {need} than this one: install the CUDA 12 line "
            "(pip install 'cuda-python>=12.6,<13', the `cuda12` extra; what JetPack 6 runs)"
        )
    return f"no CUDA GPU visible (CUDA error {err})"


def tensorrt_unavailable_reason() -> str:
    """Empty when TensorRT, cuda-python and a CUDA GPU are usable; else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'edge-affect[trt]' on a machine with NVIDIA's package index)"
    try:
        cudart = import_cudart()
    except RuntimeError:
        return "cuda-python is not installed (pip install 'edge-affect[trt]')"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as e:  # noqa: BLE001 - a missing driver surfaces as various errors
        return f"no CUDA driver ({type(e).__name__}: {e})"
    if int(err) != 0:
        return cuda_error_reason(int(err), _cuda_python_version())
    if count < 1:
        return "no CUDA GPU visible"
    return ""


def gpu_info() -> dict[str, Any]:
    """Name and compute capability of GPU 0 (the runtime's reading, so sidecars and checks agree)."""
    return current_gpu(0)


def _trt_logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: str | Path, engine_path: str | Path, opts: EngineOptions, meta: ArtifactMeta) -> Path:
    """Build a strongly typed engine from typed ONNX ``onnx_path``; write it and its sidecar atomically."""
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} does not exist")
    t0 = time.perf_counter()
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:  # required on 10.x; accepted and ignored on 11.x
        flags |= 1 << int(strongly)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    settings = builder_settings(opts)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_bytes"])
    s = meta.preprocess.input_size
    profile = builder.create_optimization_profile()
    b = opts.batch
    profile.set_shape(INPUT_NAME, (b.min, 3, s, s), (b.opt, 3, s, s), (b.max, 3, s, s))
    config.add_optimization_profile(profile)
    cache, write_cache = None, False
    if opts.timing_cache is not None:
        cache, write_cache = attach_timing_cache(config, opts.timing_cache)
    for flag in settings["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if "DLA_core" in settings:
        config.default_device_type = getattr(trt.DeviceType, settings["default_device_type"])
        config.DLA_core = settings["DLA_core"]
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if write_cache and opts.timing_cache is not None:
        atomic_write_bytes(opts.timing_cache, bytes(cache.serialize()))
    sidecar = {
        "metadata": meta.to_dict(),
        "tensorrt_version": trt.__version__,
        **gpu_info(),
        "precision": meta.precision,
        "batch_range": [b.min, b.opt, b.max],
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path),
        "strongly_typed": True,
        "version_compatible": opts.version_compatible,
        "dla_core": opts.dla_core,
        "gpu_fallback": opts.gpu_fallback,
        "workspace_mib": opts.workspace_mib,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    normalize_sidecar(sidecar)  # the runtime's own check of the keys it reads: one contract
    atomic_write_text(Path(str(engine_path) + SIDECAR_SUFFIX), json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    log.info("built %s in %.1fs", engine_path, time.perf_counter() - t0)
    return engine_path


def trt_run(engine_path: str | Path, x: np.ndarray, batch: int | None = None) -> dict[str, np.ndarray]:
    """Run an engine over ``x`` (float32 N×3×S×S) in chunks within its profile; outputs by name (float32).

    Through the runtime's :class:`TensorRTRunner`: parity judges an engine loaded exactly as deployment loads it
    (sidecar checks, DLA core, version-compatible plans)."""
    outs: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    with TensorRTRunner(engine_path) as runner:
        top = runner.max_batch or len(x) or 1
        step = max(1, min(batch or top, top))
        for i in range(0, len(x), step):
            y = runner.infer({INPUT_NAME: np.ascontiguousarray(x[i : i + step], dtype=np.float32)})
            for k in OUTPUT_NAMES:
                outs[k].append(y[k].astype(np.float32))
    return {k: np.concatenate(v) for k, v in outs.items()}


def read_meta_ort(onnx_path: str | Path) -> ArtifactMeta:
    """The ``ArtifactMeta`` of an ONNX file via ONNX Runtime (no ``onnx`` package needed on the device)."""
    import onnxruntime as ort

    p = Path(onnx_path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file {p} does not exist")
    try:
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ValueError(f"{p}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    meta = sess.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ValueError(f"{p}: no {METADATA_KEY!r} metadata (not exported by edge-affect export?)")
    return ArtifactMeta.from_json(meta[METADATA_KEY], where=str(p))


def default_timing_cache(out_dir: Path) -> Path:
    """Timing cache shared by builds: ``$EDGE_AFFECT_TRT_CACHE`` or ``out_dir/trt.timing.cache``."""
    env = os.environ.get("EDGE_AFFECT_TRT_CACHE")
    return Path(env) if env else out_dir / "trt.timing.cache"
