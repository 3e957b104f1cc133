"""TensorRT runner (TensorRT 10.3+ and 11.x) with cuda-python buffers, a stream and optional CUDA graphs.

Everything is allocated once in ``activate()``: pinned host and device buffers sized for the largest
profile shape, and one stream. ``infer`` sets input shapes within the optimisation profile, copies in,
runs ``execute_async_v3`` and copies out. With ``cuda_graph=True`` the copy-in / execute / copy-out
sequence for one batch shape is captured once and replayed.

Before deserialising, the engine's JSON sidecar (``<engine>.json``) is compared with the running
TensorRT version and GPU: an engine from another version or GPU is refused in one line naming both.
"""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime.backends.base import BaseRunner, TensorSpec

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError(
            "TensorRT is not installed: pip install 'edge-affect[trt]' (on Jetson it comes with JetPack)"
        ) from None
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` on old 12.x wheels)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise RuntimeError(
                "cuda-python is not installed: pip install 'cuda-python>=12.6,<13' (JetPack 6)"
            ) from None
    return cudart


def _cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; a CUDA error becomes a one-line ``RuntimeError``."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        _, msg = cudart.cudaGetErrorString(err)
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise RuntimeError(f"CUDA error in {what}: {text} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _version3(v: str) -> str:
    return ".".join(str(v).split(".")[:3])


def _cc_str(cc: Any) -> str:
    if isinstance(cc, list | tuple):
        return ".".join(str(int(x)) for x in cc[:2])
    return str(cc).replace("sm_", "").replace("sm", "")


def current_gpu(device: int = 0) -> dict[str, str]:
    """Name and compute capability ("8.7") of CUDA device ``device`` via cuda-python."""
    cudart = import_cudart()
    props = _cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}"}


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The engine's ``<engine>.json`` sidecar (build facts + edge-affect metadata)."""
    p = Path(engine_path)
    side = p.with_name(p.name + ".json")
    if not side.is_file():
        raise FileNotFoundError(
            f"engine {p} has no sidecar {side.name} (it records TensorRT version, GPU and metadata)"
        )
    if side.stat().st_size > MAX_SIDECAR_BYTES:
        raise ValueError(f"engine sidecar {side}: larger than {MAX_SIDECAR_BYTES // 2**20} MiB (not a sidecar)")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as e:
        raise ValueError(f"engine sidecar {side}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"engine sidecar {side}: expected a JSON object, got {type(data).__name__}")
    try:
        return normalize_sidecar(data)
    except ValueError as e:
        raise ValueError(f"{side}: {e}") from None


#: Largest sidecar read (they are a few KiB).
MAX_SIDECAR_BYTES = 16 * 2**20


def normalize_sidecar(data: dict[str, Any]) -> dict[str, Any]:
    """Check that a sidecar has the keys the builder (``export/tensorrt_build.py``) writes, with their types.

    ``metadata`` an object, versions and GPU name strings, ``compute_capability`` "X.Y" (or [X, Y]),
    ``batch_range`` [min, opt, max] integers with 1 <= min <= opt <= max, ``version_compatible`` a bool.
    """
    missing = [
        k for k in ("metadata", "tensorrt_version", "gpu_name", "compute_capability", "batch_range") if k not in data
    ]
    if missing:
        raise ValueError(f"engine sidecar lacks {missing} (not written by edge-affect build-engine/export?)")
    if not isinstance(data["metadata"], dict):
        raise ValueError(f"engine sidecar metadata must be an object, got {type(data['metadata']).__name__}")
    for k in ("tensorrt_version", "gpu_name"):
        if not isinstance(data[k], str) or not data[k]:
            raise ValueError(f"engine sidecar {k} must be a non-empty string, got {data[k]!r:.60}")
    cc = data["compute_capability"]
    cc_ok = (isinstance(cc, str) and len(cc.split(".")) == 2 and all(x.isdigit() for x in cc.split("."))) or (
        isinstance(cc, (list, tuple))
        and len(cc) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in cc)
    )
    if not cc_ok:
        raise ValueError(f'engine sidecar compute_capability must be like "8.7", got {cc!r:.60}')
    br = data["batch_range"]
    if (
        not isinstance(br, (list, tuple))
        or len(br) != 3
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in br)
        or not 1 <= br[0] <= br[1] <= br[2]
    ):
        raise ValueError(
            f"engine sidecar batch_range must be [min, opt, max] with 1 <= min <= opt <= max, got {br!r:.60}"
        )
    dla = data.get("dla_core")
    if dla is not None and (isinstance(dla, bool) or not isinstance(dla, int) or dla < 0):
        raise ValueError(f"engine sidecar dla_core must be null or a DLA core number >= 0, got {dla!r:.60}")
    if not isinstance(data.get("gpu_fallback", True), bool):
        raise ValueError(f"engine sidecar gpu_fallback must be true or false, got {data['gpu_fallback']!r:.60}")
    if not isinstance(data.get("version_compatible", False), bool):
        raise ValueError(
            f"engine sidecar version_compatible must be true or false, got {data['version_compatible']!r:.60}"
        )
    return dict(data)


def runtime_settings(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The ``IRuntime`` attributes an engine needs before it is deserialised, from its sidecar: ``DLA_core`` for
    an engine built for a DLA core (without it TensorRT loads it onto core 0), ``engine_host_code_allowed`` for a
    version-compatible plan (it embeds its own lean runtime)."""
    out: dict[str, Any] = {}
    if sidecar.get("dla_core") is not None:
        out["DLA_core"] = int(sidecar["dla_core"])
    if sidecar.get("version_compatible"):
        out["engine_host_code_allowed"] = True
    return out


def check_engine_compat(
    sidecar: dict[str, Any], running: dict[str, str], where: str, *, allow_device_mismatch: bool = False
) -> None:
    """Refuse an engine built by another TensorRT version or on another GPU, naming both (one line).

    ``running`` has ``tensorrt_version``, ``gpu_name`` and ``compute_capability``. TensorRT engines are
    tied to the exact TensorRT release and GPU model they were built with.
    """
    built_v, run_v = str(sidecar.get("tensorrt_version", "?")), str(running["tensorrt_version"])
    built_gpu, run_gpu = str(sidecar.get("gpu_name", "?")), running["gpu_name"]
    built_cc, run_cc = _cc_str(sidecar.get("compute_capability", "?")), _cc_str(running["compute_capability"])
    built = f"TensorRT {built_v} on {built_gpu} (sm {built_cc})"
    here = f"TensorRT {run_v} on {run_gpu} (sm {run_cc})"
    if sidecar.get("version_compatible"):
        # Version-compatible plans run on the same or a later TensorRT of the same major version.
        def key(v: str) -> tuple[int, ...]:
            return tuple(int(x) for x in _version3(v).split(".") if x.isdigit())

        if key(built_v)[:1] != key(run_v)[:1] or key(run_v) < key(built_v):
            raise ValueError(f"{where}: version-compatible engine built with {built} cannot run on {here}: rebuild it")
    elif _version3(built_v) != _version3(run_v):
        raise ValueError(f"{where}: engine built with {built}, but this is {here}: rebuild the engine here")
    if built_cc != run_cc or built_gpu != run_gpu:
        msg = f"{where}: engine built for {built}, but this is {here}: rebuild the engine on this GPU"
        if built_cc != run_cc or not allow_device_mismatch:
            raise ValueError(msg)
        log.warning(msg)


class TensorRTRunner(BaseRunner):
    """Runs a serialized TensorRT engine; named tensors, one profile, buffers allocated once."""

    backend = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        cuda_graph: bool = False,
        device: int = 0,
        profile: int = 0,
        check_sidecar: bool = True,
        allow_device_mismatch: bool = False,
    ) -> None:
        super().__init__(str(engine_path))
        self.path = Path(engine_path)
        self.use_cuda_graph = cuda_graph
        self._device_index = device
        self._profile = profile
        self._check = check_sidecar
        self._allow_mismatch = allow_device_mismatch
        self.sidecar: dict[str, Any] = {}
        self._bufs: dict[str, dict[str, Any]] = {}
        self._graph: Any = None
        self._graph_exec: Any = None
        self._graph_shapes: dict[str, tuple[int, ...]] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.profile_range: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def _activate(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"engine {self.path} does not exist")
        trt = import_tensorrt()
        cudart = self._cudart = import_cudart()
        _cuda_check(cudart, cudart.cudaSetDevice(self._device_index), "cudaSetDevice")
        gpu = current_gpu(self._device_index)
        if self._check:
            self.sidecar = read_sidecar(self.path)
            check_engine_compat(
                self.sidecar,
                {"tensorrt_version": trt.__version__, **gpu},
                str(self.path),
                allow_device_mismatch=self._allow_mismatch,
            )
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._trt_runtime = trt.Runtime(self._trt_logger)
        for name, value in runtime_settings(self.sidecar).items():
            setattr(self._trt_runtime, name, value)
        self.engine = self._trt_runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{self.path}: TensorRT could not deserialize the engine (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = _cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.device = gpu["gpu_name"]
        if self.sidecar.get("dla_core") is not None:
            self.device += f" DLA core {int(self.sidecar['dla_core'])}"
        if self._profile and self.engine.num_optimization_profiles > self._profile:
            self.context.set_optimization_profile_async(self._profile, int(self.stream))

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        in_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        out_names = [n for n in names if n not in in_names]
        max_shapes: dict[str, tuple[int, ...]] = {}
        for n in in_names:
            shape = tuple(self.engine.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                lo, opt, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(n, self._profile))
                self.profile_range[n] = (lo, opt, hi)
                max_shapes[n] = hi
                self.context.set_input_shape(n, hi)
            else:
                self.profile_range[n] = (shape, shape, shape)
                max_shapes[n] = shape
            self.inputs[n] = TensorSpec(
                n, tuple(int(d) for d in shape), np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            )
        for n in out_names:
            max_shapes[n] = tuple(self.context.get_tensor_shape(n))
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(n))
            self.outputs[n] = TensorSpec(n, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))))
        batch_max = {self.profile_range[n][2][0] for n in in_names if self.profile_range[n][2]}
        self.max_batch = min(batch_max) if batch_max else None

        for n in names:
            spec = self.inputs.get(n) or self.outputs[n]
            nbytes = max(int(np.prod(max_shapes[n])) * spec.dtype.itemsize, 1)
            host_ptr = _cuda_check(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            dev_ptr = _cuda_check(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            raw = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
            host = np.frombuffer(raw, dtype=spec.dtype)
            self._bufs[n] = {"host_ptr": host_ptr, "dev_ptr": dev_ptr, "host": host, "nbytes": nbytes}
            if not self.context.set_tensor_address(n, int(dev_ptr)):
                raise RuntimeError(f"{self.path}: set_tensor_address failed for tensor {n!r}")
        self._shapes = {n: max_shapes[n] for n in in_names}
        log.debug("%s: TensorRT %s on %s, profile %s", self.path, trt.__version__, self.device, self.profile_range)

    def _deactivate(self) -> None:
        cudart = self._cudart
        self._drop_graph()
        for b in self._bufs.values():
            cudart.cudaFreeHost(b["host_ptr"])
            cudart.cudaFree(b["dev_ptr"])
        self._bufs = {}
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None

    def _drop_graph(self) -> None:
        if self._graph_exec is not None:
            self._cudart.cudaGraphExecDestroy(self._graph_exec)
        if self._graph is not None:
            self._cudart.cudaGraphDestroy(self._graph)
        self._graph = self._graph_exec = self._graph_shapes = None

    # -- inference -------------------------------------------------------------------------------
    def _set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for n, shape in shapes.items():
            lo, _, hi = self.profile_range[n]
            if len(shape) != len(hi) or any(s < a or s > b for s, a, b in zip(shape, lo, hi, strict=True)):
                raise ValueError(f"{self.path}: input {n!r} shape {shape} is outside the engine profile {lo}..{hi}")
            if self._shapes.get(n) != shape:
                if not self.context.set_input_shape(n, shape):
                    raise ValueError(f"{self.path}: TensorRT rejected shape {shape} for input {n!r}")
                self._shapes[n] = shape

    def _enqueue(self, out_shapes: dict[str, tuple[int, ...]]) -> None:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n in self.inputs:
            b = self._bufs[n]
            nbytes = int(np.prod(self._shapes[n])) * self.inputs[n].dtype.itemsize
            _cuda_check(
                cudart, cudart.cudaMemcpyAsync(b["dev_ptr"], b["host_ptr"], nbytes, h2d, self.stream), "H2D copy"
            )
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.path}: execute_async_v3 failed (see the TensorRT log)")
        for n, shape in out_shapes.items():
            b = self._bufs[n]
            nbytes = int(np.prod(shape)) * self.outputs[n].dtype.itemsize
            _cuda_check(
                cudart, cudart.cudaMemcpyAsync(b["host_ptr"], b["dev_ptr"], nbytes, d2h, self.stream), "D2H copy"
            )

    def _capture(self, out_shapes: dict[str, tuple[int, ...]]) -> None:
        """Capture copy-in → execute → copy-out for the current shapes as one CUDA graph."""
        cudart = self._cudart
        self._drop_graph()
        # One plain run after a shape change lets TensorRT finish its shape-dependent setup outside capture.
        self._enqueue(out_shapes)
        _cuda_check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _cuda_check(cudart, cudart.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        try:
            self._enqueue(out_shapes)
        finally:
            graph = _cuda_check(cudart, cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        self._graph = graph
        self._graph_exec = _cuda_check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._graph_shapes = dict(self._shapes)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        arrays = {n: np.ascontiguousarray(feed[n], dtype=self.inputs[n].dtype) for n in self.inputs}
        self._set_shapes({n: tuple(a.shape) for n, a in arrays.items()})
        for n, a in arrays.items():
            self._bufs[n]["host"][: a.size] = a.reshape(-1)
        out_shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
        if self.use_cuda_graph:
            if self._graph_shapes != self._shapes:
                try:
                    self._capture(out_shapes)
                except RuntimeError as e:
                    log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.path, e)
                    self._drop_graph()
                    self.use_cuda_graph = False
            if self._graph_exec is not None:
                _cuda_check(cudart, cudart.cudaGraphLaunch(self._graph_exec, self.stream), "cudaGraphLaunch")
            else:
                self._enqueue(out_shapes)
        else:
            self._enqueue(out_shapes)
        _cuda_check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        out: dict[str, np.ndarray] = {}
        for n, shape in out_shapes.items():
            size = int(np.prod(shape))
            out[n] = self._bufs[n]["host"][:size].reshape(shape).copy()
        return out


def build_engine_from_onnx(
    onnx_path: str | Path,
    engine_path: str | Path,
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
) -> Path:
    """Build an FP32 engine from a small ONNX (used for the YuNet detector) plus its sidecar.

    ``profile`` gives (min, opt, max) shapes per dynamic input.
    The edge-affect model's engines come from the export step; this covers helper networks that ship
    as ONNX inside the package, so detection runs on the GPU where only TensorRT is installed.
    """
    from edge_affect.artifact import atomic_write_bytes, atomic_write_text, sha256_file

    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {errs}")
    config = builder.create_builder_config()
    if profile:
        prof = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            prof.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(prof)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log)")
    out = Path(engine_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, bytes(serialized))
    side = {
        "tensorrt_version": trt.__version__,
        **current_gpu(),
        "precision": "fp32",
        "batch_range": [1, 1, 1],
        "profile": {k: [list(x) for x in v] for k, v in (profile or {}).items()},
        "onnx_sha256": sha256_file(onnx_path),
        "metadata": {},
    }
    atomic_write_text(out.with_name(out.name + ".json"), json.dumps(side, indent=2, sort_keys=True))
    return out
