"""FP32 ONNX + calibration frames → an INT8 model for CPUs (``model.int8.cpu.onnx``), with ONNX Runtime's own
static quantizer (``onnxruntime.quantization.quantize_static``).

The TensorRT-shaped ``model.int8.onnx`` (signed symmetric Q/DQ, FP16 elsewhere) is slower than FP32 on ONNX
Runtime's CPU provider: its FP16 islands are emulated and its Q/DQ pairs are not fused. This graph is made for
the CPU provider instead: QDQ format, per-channel symmetric int8 weights, uint8 activations (what the x86
u8s8 VNNI / AVX512 kernels take), FP32 everywhere else, so ONNX Runtime's graph optimizer fuses each
DQ → Conv/MatMul/Gemm → Q group into QLinearConv / QLinearMatMul / QGemm (``integer_kernels`` lists them).
The recipe and what was measured for its alternatives are in ``CpuInt8Recipe`` and the README.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ArtifactMeta, atomic_write_bytes
from edge_affect.export.capture import CAPTURE_LOG, capture_output
from edge_affect.export.onnx_export import read_onnx_meta, set_onnx_meta, stem_nodes
from edge_affect.formats import FORMATS, INT8_TARGET_CPU
from edge_affect.fsutil import temp_dir_beside
from edge_affect.schema import INPUT_NAME

log = logging.getLogger(__name__)

CPU_INT8_ONNX = FORMATS["onnx-int8-cpu"].filename

__all__ = [
    "CPU_INT8_ONNX",
    "INTEGER_KERNELS",
    "CpuInt8Recipe",
    "assert_cpu_int8",
    "check_cpu_int8",
    "has_float16",
    "integer_kernels",
    "quantize_cpu_int8",
]

#: Ops of ONNX Runtime's optimized CPU graph that compute in integers.
INTEGER_KERNELS = (
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "MatMulInteger",
    "ConvInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QAttention",
)
#: Ops whose constant weight input (index 1) the recipe quantizes per channel.
_WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
_Q, _DQ = "QuantizeLinear", "DequantizeLinear"
_QUANT_TYPES = ("int8", "uint8")


@dataclass(frozen=True)
class CpuInt8Recipe:
    """How ``quantize_static`` is called. The defaults are the measured best on this project's models (docs/export.md,
    ``benchmarks/bench_cpu_int8.py``): every op ONNX Runtime can quantize (Add included, so residual adds run as
    QLinearAdd and activations stay int between blocks), QDQ format, asymmetric uint8 activations with
    symmetric per-channel int8 weights, MinMax calibration, 7-bit weights (``reduce_range``: ONNX Runtime's u8s8
    kernels sum pairs of products in int16, which saturates on the convolution reading the image: on the default
    model full-range weights took expression agreement with FP32 to 0.63, 7-bit weights keep 0.98 at the same
    speed; keeping that stem in FP32 instead, ``quantize_stem = False``, keeps 0.99 but no speed-up)."""

    quant_format: str = "qdq"  # "qdq" | "qoperator"
    activations: str = "uint8"  # "uint8" | "int8"
    weights: str = "int8"  # "int8" | "uint8"
    per_channel: bool = True
    activation_symmetric: bool = False
    reduce_range: bool = True  # 7-bit weights: u8s8 int16 pair sums saturate without it (see above)
    op_types: tuple[str, ...] = ()  # () = every op type ONNX Runtime quantizes
    exclude: tuple[str, ...] = ()  # node names kept FP32
    quantize_stem: bool = True  # False: the convolution(s) reading the image stay FP32 (onnx_export.stem_nodes)
    calibrate_method: str = "minmax"  # "minmax" | "entropy" | "percentile"
    extra: dict[str, Any] = field(default_factory=dict)  # more quantize_static extra_options

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("quant_format", self.quant_format, ("qdq", "qoperator")),
            ("activations", self.activations, _QUANT_TYPES),
            ("weights", self.weights, _QUANT_TYPES),
            ("calibrate_method", self.calibrate_method, ("minmax", "entropy", "percentile")),
        ):
            if value not in allowed:
                raise ValueError(f"CPU INT8 {name} {value!r}, expected one of {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_types"], d["exclude"] = list(self.op_types), list(self.exclude)
        return d


class _Reader:
    """``CalibrationDataReader`` over preprocessed frames, in batches (the class is built lazily: it needs ORT)."""

    def __new__(cls, x: np.ndarray, batch: int = 32) -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.i = 0

            def get_next(self) -> dict[str, np.ndarray] | None:
                if self.i >= len(x):
                    return None
                feed = {INPUT_NAME: x[self.i : self.i + batch]}
                self.i += batch
                return feed

            def rewind(self) -> None:
                self.i = 0

        return Reader()


def _quantize_args(recipe: CpuInt8Recipe) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    return {
        "quant_format": QuantFormat.QDQ if recipe.quant_format == "qdq" else QuantFormat.QOperator,
        "activation_type": qtype[recipe.activations],
        "weight_type": qtype[recipe.weights],
        "per_channel": recipe.per_channel,
        "reduce_range": recipe.reduce_range,
        "op_types_to_quantize": list(recipe.op_types) or None,
        "nodes_to_exclude": list(recipe.exclude) or None,
        "calibrate_method": method[recipe.calibrate_method],
        "extra_options": {
            "ActivationSymmetric": recipe.activation_symmetric,
            "WeightSymmetric": True,
            **recipe.extra,
        },
    }


def effective_recipe(recipe: CpuInt8Recipe, model: Any) -> CpuInt8Recipe:
    """``recipe`` as applied to ``model``: with ``quantize_stem = False`` its stem convolution(s) join ``exclude``."""
    if recipe.quantize_stem:
        return recipe
    stems = [n for n in stem_nodes(model) if n not in recipe.exclude]
    return replace(recipe, exclude=(*recipe.exclude, *stems))


def quantize_cpu_int8(
    src: str | Path,
    dst: str | Path,
    calib: np.ndarray,
    meta: ArtifactMeta | None = None,
    calib_info: dict[str, Any] | None = None,
    recipe: CpuInt8Recipe | None = None,
) -> Path:
    """Quantize FP32 ONNX ``src`` with ``calib`` (float32 N×3×S×S, preprocessed) into ``dst`` for ONNX Runtime
    CPU; checked with ``check_cpu_int8`` and carrying ``meta`` with precision ``int8``, target ``cpu``.

    ONNX Runtime's quantizer runs in a child Python process: NVIDIA ModelOpt patches ``onnxruntime.quantization``
    process-wide when it quantizes (its calibrators replace ORT's), after which ``quantize_static`` in the same
    process fails or calibrates differently; a fresh interpreter is the same on every call.
    """
    import onnx

    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "CPU INT8 export needs onnxruntime with onnxruntime.quantization (pip install onnxruntime)"
        ) from None
    recipe = recipe or CpuInt8Recipe()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX file {src} does not exist")
    recipe = effective_recipe(recipe, onnx.load(str(src), load_external_data=False))
    meta = meta or read_onnx_meta(src)
    s = meta.preprocess.input_size
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    if calib.ndim != 4 or calib.shape[1:] != (3, s, s) or len(calib) == 0:
        raise ValueError(f"calibration array has shape {calib.shape}, expected (N, 3, {s}, {s})")
    step = f"CPU INT8 (ONNX Runtime quantize_static, {recipe.quant_format}, {recipe.calibrate_method}, {len(calib)} frames)"
    with temp_dir_beside(dst) as tmp:
        out, frames, job = Path(tmp) / "int8.onnx", Path(tmp) / "calib.npy", Path(tmp) / "recipe.json"
        np.save(frames, calib)
        job.write_text(json.dumps(recipe.to_dict()), encoding="utf-8")
        pkg_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")]))}
        env[PARENT_ENV] = str(os.getpid())  # the child dies with this process (die_with_parent)
        cmd = [sys.executable, "-m", "edge_affect.export.cpu_int8", str(src), str(out), str(frames), str(job)]
        with capture_output(dst.parent / CAPTURE_LOG, step) as cap:  # the child's output goes to quantize.log
            rc = subprocess.run(cmd, env=env, check=False).returncode
        log.info(cap.summary())
        if rc != 0 or not out.is_file():
            raise RuntimeError(f"ONNX Runtime quantization of {src} failed (exit {rc}); see {dst.parent / CAPTURE_LOG}")
        model = onnx.load(str(out))
    m = ArtifactMeta.from_dict(meta.to_dict())
    m.precision = "int8"
    m.extra = {
        **m.extra,
        "int8_target": INT8_TARGET_CPU,
        "quantizer": "onnxruntime.quantization quantize_static",
        "quantize": recipe.to_dict(),
        "calibration": {**(calib_info or {}), "frames": int(len(calib))},
    }
    set_onnx_meta(model, m)
    onnx.checker.check_model(model)
    assert_cpu_int8(model, allow_float=recipe.exclude)
    atomic_write_bytes(dst, model.SerializeToString())
    return dst


def _elem_types(model: Any) -> dict[str, int]:
    """Element type of every typed tensor name: initializers, constants, inputs, outputs, value_info."""
    g = model.graph
    out = {t.name: int(t.data_type) for t in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            out.setdefault(vi.name, int(vi.type.tensor_type.elem_type))
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = int(a.t.data_type)
    return out


def has_float16(model_or_path: Any) -> bool:
    """Whether any tensor, constant or cast of the graph is FP16 (the TensorRT-shaped INT8 model has them)."""
    import onnx

    from edge_affect.export.tensorrt_int8.qdq_check import _attr, _load

    model = _load(model_or_path)
    fp16 = onnx.TensorProto.FLOAT16
    return fp16 in _elem_types(model).values() or any(
        n.op_type == "Cast" and int(_attr(n, "to", 0)) == fp16 for n in model.graph.node
    )


def check_cpu_int8(model_or_path: Any, allow_float: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Problems that keep a graph from being this project's CPU INT8 model (empty list = OK).

    Requires: Q/DQ present, every Q/DQ int8 or uint8 (biases: int32 constants); no FP16 tensor, cast or constant anywhere; float32 graph
    inputs and outputs; every Conv/MatMul/Gemm with a constant weight fed by a DequantizeLinear of an int8
    initializer (per channel where the weight has more than one output channel) and its activation input by
    a DequantizeLinear too (nodes named in ``allow_float`` may stay FP32).
    """
    import onnx

    from edge_affect.export.tensorrt_int8.qdq_check import _attr, _load

    model = _load(model_or_path)
    g = model.graph
    types = _elem_types(model)
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    fp16, int_types = onnx.TensorProto.FLOAT16, (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    problems: list[str] = []
    qdq = [n for n in g.node if n.op_type in (_Q, _DQ)]
    if not qdq:
        problems.append("graph has no QuantizeLinear/DequantizeLinear nodes")
    for n in qdq:
        zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
        q_tensor = n.output[0] if n.op_type == _Q else n.input[0]
        t = types.get(zp) if zp else types.get(q_tensor, onnx.TensorProto.UINT8)
        if n.op_type == _DQ and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT32:
            continue  # a bias: int32 at scale x_scale·w_scale, added inside the integer kernel
        if t not in int_types:
            problems.append(
                f"{n.op_type} {n.name or n.output[0]!r}: quantized type {onnx.TensorProto.DataType.Name(t or 0)}, "
                "expected INT8 or UINT8"
            )
    for name, t in types.items():
        if t == fp16:
            problems.append(f"tensor {name!r} is FLOAT16 (the CPU INT8 model has no FP16 islands)")
    for n in g.node:
        if n.op_type == "Cast" and int(_attr(n, "to", 0)) == fp16:
            problems.append(f"Cast {n.name or n.output[0]!r} casts to FLOAT16")
    for vi in list(g.input) + list(g.output):
        if vi.name not in inits and vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"graph input/output {vi.name!r} is not float32")
    for n in g.node:
        if n.op_type not in _WEIGHT_OPS or n.name in allow_float or len(n.input) < 2:
            continue
        label = f"{n.op_type} {n.name or n.output[0]!r}"
        w_src = producer.get(n.input[1])
        if n.input[1] in inits:
            problems.append(f"{label}: weight {n.input[1]!r} is a float initializer (not quantized)")
            continue
        if w_src is None or w_src.op_type != _DQ:
            continue  # an activation × activation MatMul (attention): checked through its inputs below
        x_src = producer.get(n.input[0])
        if x_src is None or x_src.op_type != _DQ:
            problems.append(f"{label}: activation input {n.input[0]!r} is not dequantized from int8/uint8")
        raw = w_src.input[0]
        if raw not in inits:
            continue  # weight quantized on the fly (Q → DQ); its types were checked above
        w = inits[raw]
        if w.data_type != onnx.TensorProto.INT8:
            problems.append(
                f"{label}: weight {raw!r} is {onnx.TensorProto.DataType.Name(w.data_type)}, expected INT8 (symmetric)"
            )
        scale = inits.get(w_src.input[1])
        axis = int(_attr(w_src, "axis", 1))
        dims = list(w.dims)
        channels = dims[axis] if dims and -len(dims) <= axis < len(dims) else 1
        if scale is not None and channels > 1 and int(np.prod(scale.dims)) == 1:
            problems.append(f"{label}: weight {raw!r} is quantized per tensor, expected per channel")
    return problems


def assert_cpu_int8(model_or_path: Any, allow_float: tuple[str, ...] | list[str] = ()) -> None:
    """Raise ``RuntimeError`` listing what ``check_cpu_int8`` finds."""
    problems = check_cpu_int8(model_or_path, allow_float)
    if problems:
        where = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "CPU INT8 model"
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RuntimeError(f"{where}: not a CPU INT8 graph: {'; '.join(problems[:3])}{more}")


def integer_kernels(path: str | Path, threads: int = 1) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime's CPU provider actually runs (its optimized model, written to a
    temporary file), restricted to ``INTEGER_KERNELS`` plus float Conv/MatMul/Gemm left over."""
    import onnx

    from edge_affect.runtime.backends.onnxruntime_runner import import_onnxruntime

    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix=".ort-opt-") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        ops: dict[str, int] = {}
        for n in onnx.load(so.optimized_model_filepath).graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
    keep = (*INTEGER_KERNELS, "Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm")
    return {k: ops[k] for k in keep if k in ops}


#: Environment variable naming the export process a quantizer child must not outlive.
PARENT_ENV = "EDGE_AFFECT_PARENT_PID"


def die_with_parent(parent: int) -> None:
    """Make this (child) process die when ``parent`` does, a ``kill -9`` included: Linux ``PR_SET_PDEATHSIG``
    (the kernel sends SIGKILL), and an exit right away if ``parent`` is already gone (the race before it)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
    if os.getppid() != parent:
        os._exit(1)


def _quantize_in_this_process(src: Path, dst: Path, calib: np.ndarray, recipe: CpuInt8Recipe) -> None:
    """The child process's work: ONNX Runtime's pre-processing, then ``quantize_static`` (see ``quantize_cpu_int8``)."""
    from onnxruntime.quantization import quant_pre_process, quantize_static

    # ONNX Runtime logs a shape-inference warning per integer tensor through the root logger
    logging.getLogger().setLevel(logging.ERROR)
    pre = dst.with_name("pre.onnx")
    # symbolic shape inference + ONNX optimizations first, as ONNX Runtime recommends before quantizing
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    quantize_static(str(pre), str(dst), _Reader(calib), **_quantize_args(recipe))


if __name__ == "__main__":  # python -m edge_affect.export.cpu_int8 SRC DST CALIB.npy RECIPE.json (quantize_cpu_int8)
    if os.environ.get(PARENT_ENV, "").isdigit():
        die_with_parent(int(os.environ[PARENT_ENV]))
    _src, _dst, _calib, _recipe = sys.argv[1:5]
    _r = json.loads(Path(_recipe).read_text(encoding="utf-8"))
    _r["op_types"], _r["exclude"] = tuple(_r["op_types"]), tuple(_r["exclude"])
    _quantize_in_this_process(Path(_src), Path(_dst), np.load(_calib), CpuInt8Recipe(**_r))
