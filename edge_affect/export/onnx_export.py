"""PyTorch → FP32 ONNX (opset 17, dynamic batch), metadata embedding, and the ORT-vs-PyTorch check.

Two torch exporters are kept: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) and the
TorchScript-based one (``dynamo=False``). ``exporter="auto"`` tries them in ``AUTO_ORDER`` and keeps the first
whose graph passes ``onnx.checker`` and matches PyTorch in ONNX Runtime; the one used is recorded in the
metadata (``extra["exporter"]``).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ArtifactMeta
from edge_affect.export.formats import EXPORTERS, OPSET
from edge_affect.fsutil import temp_dir_beside
from edge_affect.schema import INPUT_NAME, METADATA_KEY, OUTPUT_DIMS, OUTPUT_NAMES

log = logging.getLogger(__name__)

#: Order tried by ``exporter="auto"``: TorchScript first (measured faster and exact on our models; the
#: dynamo exporter has had correctness regressions), dynamo as the fallback.
AUTO_ORDER: tuple[str, ...] = ("torchscript", "dynamo")
#: Max abs difference allowed between ONNX Runtime FP32 and PyTorch right after export (see parity.Gates).
DEFAULT_ATOL = 1e-4


@dataclass
class ExportResult:
    """What ``export_onnx_detailed`` did: the file, the exporter used, timings and the check's numbers."""

    path: Path
    exporter: str
    seconds: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    attempts: dict[str, str] = field(default_factory=dict)  # exporter -> "ok" or the failure


def _tuple_outputs(model: Any) -> Any:
    """Wrap a model whose forward returns a dict into one returning a tuple in ``OUTPUT_NAMES`` order."""
    import torch

    class TupleOutputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(x)
            return tuple(out[k] for k in OUTPUT_NAMES)

    return TupleOutputs(model).eval()


def set_onnx_meta(model_proto: Any, meta: ArtifactMeta) -> None:
    """Store ``meta.to_json()`` under ``schema.METADATA_KEY`` in ``metadata_props`` (replacing any old value)."""
    keep = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    for p in keep:
        model_proto.metadata_props.add(key=p.key, value=p.value)
    model_proto.metadata_props.add(key=METADATA_KEY, value=meta.to_json())


def read_onnx_meta(model_or_path: Any) -> ArtifactMeta:
    """Read the ``ArtifactMeta`` embedded in an ONNX model (path or ``ModelProto``), checked for types and ranges.

    A file that is not an ONNX model, lacks the entry, or holds it twice is a one-line ``ValueError``.
    """
    import onnx
    from google.protobuf.message import DecodeError

    where = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "ONNX model"
    if isinstance(model_or_path, (str, Path)):
        p = Path(model_or_path)
        if not p.exists():
            raise FileNotFoundError(f"ONNX file {p} does not exist")
        if not p.is_file():
            raise ValueError(f"ONNX file {p} is a folder, expected a .onnx file")
        try:
            model_or_path = onnx.load(str(p), load_external_data=False)
        except (DecodeError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{where}: not a readable ONNX model ({first})") from None
    values = [prop.value for prop in model_or_path.metadata_props if prop.key == METADATA_KEY]
    if len(values) > 1:
        raise ValueError(f"{where}: {len(values)} {METADATA_KEY!r} entries in metadata_props, expected one")
    if values:
        return ArtifactMeta.from_json(values[0], where=where)
    raise ValueError(f"{where}: no {METADATA_KEY!r} entry in metadata_props (not exported by edge-affect?)")


def _export_once(model: Any, x: Any, path: Path, opset: int, exporter: str) -> None:
    import torch

    from edge_affect.models.task_token import folded_gray_stems

    wrapped = _tuple_outputs(model)
    kw: dict[str, Any] = dict(
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        opset_version=opset,
    )
    with warnings.catch_warnings(), torch.no_grad(), folded_gray_stems(model):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {INPUT_NAME: {0: "N"}, **{k: {0: "N"} for k in OUTPUT_NAMES}}
            torch.onnx.export(wrapped, (x,), str(path), dynamo=False, dynamic_axes=axes, do_constant_folding=True, **kw)
        elif exporter == "dynamo":
            batch = torch.export.Dim("N", min=1, max=4096)
            prog = torch.onnx.export(
                wrapped,
                (x,),
                dynamo=True,
                dynamic_shapes={"x": {0: batch}},
                optimize=True,
                verbose=False,
                **kw,
            )
            prog.save(str(path))
        else:
            raise ValueError(f"exporter {exporter!r} is not one of {EXPORTERS} or 'auto'")


def _fix_graph(path: Path, meta: ArtifactMeta, opset: int) -> None:
    """Name the batch dim ``N`` everywhere, check opset, embed metadata, run the checker; rewrites ``path``."""
    import onnx

    m = onnx.load(str(path))
    default = [o for o in m.opset_import if o.domain in ("", "ai.onnx")]
    if not default or default[0].version != opset:
        got = default[0].version if default else None
        if got is not None and got != opset:
            m = onnx.version_converter.convert_version(m, opset)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    s = meta.preprocess.input_size
    in_dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][1:]
    if [i.name for i in m.graph.input] != [INPUT_NAME] or in_dims != [3, s, s]:
        raise RuntimeError(
            f"{path}: exported input is {[i.name for i in m.graph.input]} {in_dims}, expected image [N,3,{s},{s}]"
        )
    if [o.name for o in m.graph.output] != list(OUTPUT_NAMES):
        raise RuntimeError(
            f"{path}: exported outputs are {[o.name for o in m.graph.output]}, expected {list(OUTPUT_NAMES)}"
        )
    m.producer_name = "edge-affect"
    set_onnx_meta(m, meta)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def ort_session(path: str | Path | bytes, threads: int = 0, optimize: bool = True) -> Any:
    """A CPU ONNX Runtime session for ``path`` (or serialized model bytes), all graph optimisations on, or none
    (``optimize=False``: every node runs as written, see ``run_onnx``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    src = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def upcast_fp16(model: Any) -> Any:
    """Copy of ``model`` with every FP16 tensor, cast and constant turned into FP32 (Q/DQ kept as they are).

    Why: CPU parity of a TensorRT-shaped INT8 artifact evaluates its quantization with FP32 elsewhere (run node
    by node, see ``run_onnx``); the FP16 part is gated by the FP16 artifact. Run node by node, the typed graph
    and this upcast agree (tiny model: 97.2 vs 97.3 % top-1 agreement with FP32 on 1,500 frames).
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    for t in m.graph.initializer:
        if t.data_type == f16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for n in m.graph.node:
        for a in n.attribute:
            if a.name in ("to", "output_dtype") and a.type == onnx.AttributeProto.INT and a.i == f16:
                a.i = f32
            elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == f16:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == f16:
            vi.type.tensor_type.elem_type = f32
    return m


def run_onnx(
    path: str | Path | Any, x: np.ndarray, batch: int = 64, emulate_fp16_in_fp32: bool = False
) -> dict[str, np.ndarray]:
    """Run an ONNX model (a file, or a loaded ``ModelProto``) on CPU over ``x`` in chunks; returns float32 outputs
    by name.

    ``emulate_fp16_in_fp32``: run ``upcast_fp16`` of the model instead, node by node (CPU parity of Q/DQ INT8
    graphs): every Q/DQ pair rounds to int8 and back and every layer computes in FP32, which is the graph's
    definition (int8 products summed exactly, scales applied in float). With its graph optimisations on, ONNX
    Runtime replaces Q/DQ pairs and their consumers by its own integer kernels (QLinearConv, QLinearMatMul, ...),
    whose requantization differs from that definition; on this project's ``tiny`` model (AVX2 CPU, 1,500 frames)
    the difference grew layer by layer (0.1 % of a tensor's spread at the first convolution, 3-8 % in the
    transformer) and top-1 agreement with FP32 was 91.1 % fused against 97.3 % node by node. Neither is TensorRT;
    an engine built on a GPU is the final check (``parity`` on the engine).
    """
    import onnx

    if isinstance(path, onnx.ModelProto):
        src: str | bytes = (upcast_fp16(path) if emulate_fp16_in_fp32 else path).SerializeToString()
    elif emulate_fp16_in_fp32:
        src = upcast_fp16(onnx.load(str(path))).SerializeToString()
    else:
        src = str(path)
    sess = ort_session(src, optimize=not emulate_fp16_in_fp32)
    outs: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    for i in range(0, len(x), batch):
        res = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(x[i : i + batch], dtype=np.float32)})
        for k, v in zip(OUTPUT_NAMES, res, strict=True):
            outs[k].append(np.asarray(v, dtype=np.float32))
    return {k: np.concatenate(v) for k, v in outs.items()}


def run_torch(model: Any, x: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Run a PyTorch model (eval, FP32, CPU) over ``x`` in chunks; returns numpy outputs by name."""
    import torch

    model = model.eval()
    outs: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            res = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)))
            for k in OUTPUT_NAMES:
                outs[k].append(res[k].detach().float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def max_abs_diffs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-output max abs difference (inf for shape mismatch, NaN anywhere counts as inf)."""
    out = {}
    for k in OUTPUT_NAMES:
        if a[k].shape != b[k].shape:
            out[k] = float("inf")
            continue
        d = np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))
        out[k] = float("inf") if not np.isfinite(d).all() else float(d.max(initial=0.0))
    return out


def verify_against_torch(
    model: Any, onnx_path: str | Path, x: np.ndarray, atol: float = DEFAULT_ATOL
) -> dict[str, float]:
    """Compare ONNX Runtime (CPU) with PyTorch on ``x``; raise ``RuntimeError`` if any output differs by > ``atol``."""
    ref = run_torch(model, x)
    got = run_onnx(onnx_path, x)
    for k in OUTPUT_NAMES:
        if got[k].shape != (len(x), OUTPUT_DIMS[k]):
            raise RuntimeError(
                f"{onnx_path}: output {k!r} has shape {got[k].shape}, expected ({len(x)}, {OUTPUT_DIMS[k]})"
            )
    diffs = max_abs_diffs(ref, got)
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    if bad:
        raise RuntimeError(f"{onnx_path}: ONNX Runtime differs from PyTorch by {bad} (max abs, allowed {atol:g})")
    return diffs


def default_sample(meta: ArtifactMeta, n: int = 16) -> np.ndarray:
    """Real frames for export checks: the first ``n`` default calibration frames, preprocessed for ``meta``."""
    from edge_affect.calibration import default_calibration_dir, load_calibration

    return load_calibration(default_calibration_dir(), meta.preprocess, limit=n, min_frames=1)


def export_onnx_detailed(
    model: Any,
    meta: ArtifactMeta,
    out_path: str | Path,
    opset: int = OPSET,
    exporter: str = "auto",
    sample: np.ndarray | None = None,
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """Export ``model`` to FP32 ONNX at ``out_path`` and check it against PyTorch; see ``export_onnx``."""
    import torch

    if exporter != "auto" and exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r} is not one of auto, {', '.join(EXPORTERS)}")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    model = model.eval()
    s = meta.preprocess.input_size
    if sample is None:
        try:
            sample = default_sample(meta)
        except (FileNotFoundError, ValueError) as e:
            log.warning("default calibration frames unavailable (%s); checking export on random inputs", e)
            sample = np.random.default_rng(0).standard_normal((8, 3, s, s)).astype(np.float32)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 4 or sample.shape[1:] != (3, s, s):
        raise ValueError(f"check inputs have shape {sample.shape}, expected (N, 3, {s}, {s})")
    order = AUTO_ORDER if exporter == "auto" else (exporter,)
    trace_x = torch.from_numpy(sample[:2].copy()) if len(sample) >= 2 else torch.from_numpy(np.repeat(sample, 2, 0))
    result_attempts: dict[str, str] = {}
    with temp_dir_beside(out) as tmp:
        for name in order:
            tmp_path = Path(tmp) / f"{name}.onnx"
            m = replace(meta, precision="fp32", extra={**meta.extra, "exporter": name, "opset": opset})
            t0 = time.perf_counter()
            try:
                _export_once(model, trace_x, tmp_path, opset, name)
                t1 = time.perf_counter()
                _fix_graph(tmp_path, m, opset)
                t2 = time.perf_counter()
                diffs = verify_against_torch(model, tmp_path, sample, atol)
                diffs_b1 = verify_against_torch(model, tmp_path, sample[:1], atol)  # dynamic batch really works
                t3 = time.perf_counter()
            except Exception as e:  # noqa: BLE001 - any exporter failure means: try the next one
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                result_attempts[name] = msg
                log.warning("exporter %s failed: %s", name, msg)
                continue
            result_attempts[name] = "ok"
            tmp_path.replace(out)
            diffs = {k: max(diffs[k], diffs_b1[k]) for k in diffs}
            log.info("exported %s with %s exporter in %.1fs; ORT vs PyTorch max abs %s", out, name, t3 - t0, diffs)
            return ExportResult(
                path=out,
                exporter=name,
                seconds={"torch_export": t1 - t0, "check": t2 - t1, "verify": t3 - t2},
                max_abs_diff=diffs,
                attempts=result_attempts,
            )
    raise RuntimeError(f"ONNX export to {out} failed with every exporter: {result_attempts}")


def export_onnx(
    model: Any,
    meta: ArtifactMeta,
    out_path: str | Path,
    opset: int = OPSET,
    exporter: str = "auto",
    sample: np.ndarray | None = None,
) -> Path:
    """Export ``model`` to FP32 ONNX (opset 17, dynamic batch, input ``image``, outputs va/expr/au).

    The graph carries ``meta.to_json()`` in ``metadata_props[edge_affect]``, passes ``onnx.checker``, and
    matches PyTorch in ONNX Runtime within 1e-4 on ``sample`` (default: real calibration frames). The file
    appears atomically; on failure nothing is left at ``out_path``.
    """
    return export_onnx_detailed(model, meta, out_path, opset=opset, exporter=exporter, sample=sample).path


def stem_nodes(model: Any) -> list[str]:
    """Names of the Conv nodes that read the graph input directly (through Cast/Identity at most, or the sum of
    its channels a grayscale model's stem reads, ``models.task_token.GrayStemConv2d``)."""
    feeds = {i.name for i in model.graph.input}
    found = []
    for node in model.graph.node:  # topological order: pass-through nodes extend the input's names
        if node.op_type in ("Cast", "Identity", "ReduceSum") and set(node.input) & feeds:
            feeds |= set(node.output)
        elif node.op_type == "Conv" and node.input and node.input[0] in feeds:
            found.append(node.name)
    return found
