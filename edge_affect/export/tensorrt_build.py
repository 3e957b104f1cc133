"""TensorRT engines from typed ONNX (FP16 / INT8 Q/DQ), built strongly typed; one path for TensorRT 10.x and 11.x.

Precision lives in the ONNX graph (TensorRT 11 removed the FP16/INT8 builder flags), so the build only sets
the strongly typed network flag (required on 10.x, ignored on 11.x), one optimisation profile over the batch
range, a workspace limit and a timing cache reused across builds. ``tensorrt`` and ``cuda-python`` are
imported lazily: without them (or without a GPU) ``tensorrt_unavailable_reason`` says why and callers skip.
Each engine gets a JSON sidecar (``model.fp16.engine.json``) with the TensorRT version, GPU, compute
capability, precision, batch range, ONNX sha256 and the artifact metadata.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ArtifactMeta, atomic_write_bytes, atomic_write_text, sha256_file
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
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch range {text!r}: expected 1 <= MIN <= OPT <= MAX")
        return cls(lo, opt, hi)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass
class EngineOptions:
    """Builder settings beyond precision (which the typed ONNX carries)."""

    batch: BatchRange
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    version_compatible: bool = False
    dla_core: int | None = None  # Jetson DLA core; layers DLA cannot run fall back to the GPU


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # cuda-python 12.x before cuda.bindings
    return cudart


def _check(ret: Any, what: str) -> Any:
    err = ret[0] if isinstance(ret, tuple) else ret
    if int(err) != 0:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    return ret[1] if isinstance(ret, tuple) and len(ret) == 2 else (ret[1:] if isinstance(ret, tuple) else None)


def tensorrt_unavailable_reason() -> str:
    """Empty when TensorRT, cuda-python and a CUDA GPU are usable; else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'edge-affect[trt]' on a machine with NVIDIA's package index)"
    try:
        cudart = _cudart()
    except ImportError:
        return "cuda-python is not installed (pip install 'edge-affect[trt]')"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as e:  # noqa: BLE001 - a missing driver surfaces as various errors
        return f"no CUDA driver ({type(e).__name__}: {e})"
    if int(err) != 0 or count < 1:
        return "no CUDA GPU visible"
    return ""


def gpu_info() -> dict[str, Any]:
    """Name and compute capability of GPU 0 via cuda-python."""
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}"}


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
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    s = meta.preprocess.input_size
    profile = builder.create_optimization_profile()
    b = opts.batch
    profile.set_shape(INPUT_NAME, (b.min, 3, s, s), (b.opt, 3, s, s), (b.max, 3, s, s))
    config.add_optimization_profile(profile)
    cache = None
    if opts.timing_cache is not None:
        blob = opts.timing_cache.read_bytes() if opts.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if cache is not None and opts.timing_cache is not None:
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
        "workspace_mib": opts.workspace_mib,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    from edge_affect.runtime.backends.tensorrt_runner import normalize_sidecar

    normalize_sidecar(sidecar)  # the runtime's own check of the keys it reads: one contract
    atomic_write_text(Path(str(engine_path) + SIDECAR_SUFFIX), json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    log.info("built %s in %.1fs", engine_path, time.perf_counter() - t0)
    return engine_path


def trt_run(engine_path: str | Path, x: np.ndarray, batch: int | None = None) -> dict[str, np.ndarray]:
    """Run an engine over ``x`` (float32 N×3×S×S) in chunks within its profile; outputs by name (float32)."""
    import tensorrt as trt

    cudart = _cudart()
    engine_path = Path(engine_path)
    side = Path(str(engine_path) + SIDECAR_SUFFIX)
    max_b = json.loads(side.read_text())["batch_range"][2] if side.is_file() else 1
    batch = min(batch or max_b, max_b)
    runtime = trt.Runtime(_trt_logger(trt))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT cannot deserialize {engine_path} (other TensorRT version or GPU?)")
    ctx = engine.create_execution_context()
    stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
    outs: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    ptrs: list[int] = []
    try:
        for i in range(0, len(x), batch):
            xb = np.ascontiguousarray(x[i : i + batch], dtype=np.float32)
            ctx.set_input_shape(INPUT_NAME, xb.shape)
            host: dict[str, np.ndarray] = {}
            for j in range(engine.num_io_tensors):
                name = engine.get_tensor_name(j)
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    arr = xb
                else:
                    dtype = trt.nptype(engine.get_tensor_dtype(name))
                    arr = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype)
                    host[name] = arr
                ptr = _check(cudart.cudaMalloc(arr.nbytes), "cudaMalloc")
                ptrs.append(ptr)
                ctx.set_tensor_address(name, int(ptr))
                if arr is xb:
                    _check(
                        cudart.cudaMemcpyAsync(
                            ptr, xb.ctypes.data, xb.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
                        ),
                        "copy in",
                    )
            if not ctx.execute_async_v3(stream):
                raise RuntimeError(f"TensorRT execution of {engine_path} failed")
            for name, arr in host.items():
                _check(
                    cudart.cudaMemcpyAsync(
                        arr.ctypes.data,
                        ctx.get_tensor_address(name),
                        arr.nbytes,
                        cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                        stream,
                    ),
                    "copy out",
                )
            _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
            for name in OUTPUT_NAMES:
                outs[name].append(host[name].astype(np.float32))
            for p in ptrs:
                cudart.cudaFree(p)
            ptrs.clear()
    finally:
        for p in ptrs:
            cudart.cudaFree(p)
        cudart.cudaStreamDestroy(stream)
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
