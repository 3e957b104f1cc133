"""FP32 ONNX → FP16 ONNX (FP16 compute, FP32 I/O; LayerNorm, Softmax and reductions kept in FP32).

Uses NVIDIA ModelOpt AutoCast (``pip install 'edge-affect[export]'``), which also keeps nodes whose values
or initializers overflow FP16 in FP32; ``onnxconverter-common`` is the fallback when ModelOpt is absent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_affect.artifact import ArtifactMeta
from edge_affect.export.onnx_export import read_onnx_meta, set_onnx_meta

log = logging.getLogger(__name__)

#: Op types that stay FP32 (overflow or precision-sensitive accumulations).
KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceL2",
    "ReduceLogSumExp",
    "GlobalAveragePool",
)
INSTALL_HINT = "install the export extra: pip install 'edge-affect[export]' (brings nvidia-modelopt[onnx])"


def _convert_modelopt(src: Path, log_path: Path) -> Any:
    from modelopt.onnx.autocast import convert_to_mixed_precision

    from edge_affect.export.capture import capture_output

    with capture_output(log_path, "FP16 (ModelOpt AutoCast)") as cap:  # its log lines go to quantize.log
        model = convert_to_mixed_precision(
            str(src), low_precision_type="fp16", keep_io_types=True, op_types_to_exclude=list(KEEP_FP32_OPS)
        )
    log.info(cap.summary())
    return model


def _convert_onnxconverter(src: Path) -> Any:
    import onnx
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(
        onnx.load(str(src)), keep_io_types=True, op_block_list=list(KEEP_FP32_OPS), disable_shape_infer=False
    )


def convert_fp16(src: str | Path, dst: str | Path, meta: ArtifactMeta | None = None) -> tuple[Path, str]:
    """Write the FP16 version of FP32 ONNX ``src`` to ``dst``; return ``(dst, converter_name)``."""
    import onnx

    from edge_affect.artifact import atomic_write_bytes

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX file {src} does not exist")
    meta = meta or read_onnx_meta(src)
    from edge_affect.export.capture import CAPTURE_LOG

    try:
        import modelopt.onnx.autocast  # noqa: F401 - imported outside the captured step

        model, used = _convert_modelopt(src, dst.parent / CAPTURE_LOG), "modelopt.autocast"
    except ImportError:
        try:
            model, used = _convert_onnxconverter(src), "onnxconverter_common.float16"
        except ImportError:
            raise RuntimeError(f"FP16 conversion needs NVIDIA ModelOpt: {INSTALL_HINT}") from None
        log.warning("ModelOpt not installed: FP16 via onnxconverter-common (no overflow analysis)")
    m = ArtifactMeta.from_dict(meta.to_dict())
    m.precision = "fp16"
    m.extra = {**m.extra, "fp16_converter": used, "fp32_ops": list(KEEP_FP32_OPS)}
    set_onnx_meta(model, m)
    onnx.checker.check_model(model)
    problems = check_fp16_layout(model)
    if problems:
        raise RuntimeError(f"{dst}: FP16 conversion produced an unexpected graph: {'; '.join(problems[:3])}")
    atomic_write_bytes(dst, model.SerializeToString())
    return dst, used


def check_fp16_layout(model_or_path: Any) -> list[str]:
    """Problems with an FP16 graph: non-FP32 I/O, no FP16 compute, or FP32-kept ops running in FP16."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    problems = []
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"graph I/O {vi.name!r} is not float32")
    if not any(t == onnx.TensorProto.FLOAT16 for t in types.values()):
        problems.append("no FP16 tensor in the graph")
    for n in g.node:
        if n.op_type in KEEP_FP32_OPS and n.input and types.get(n.input[0]) == onnx.TensorProto.FLOAT16:
            problems.append(f"{n.op_type} {n.name!r} runs in FP16 (expected FP32)")
    return problems
