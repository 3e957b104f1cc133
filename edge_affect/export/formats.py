"""One table of export formats: file names, precisions and Triton platforms (exporter, CLI and reports read it)."""

from __future__ import annotations

from dataclasses import dataclass

#: ONNX opset every exported graph uses (opset 17 has ``LayerNormalization``, which keeps LN in FP32 safely).
OPSET = 17
#: ``metadata_props`` key / sidecar key holding the exporter name ("dynamo" or "torchscript").
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class Format:
    """One exported artifact kind."""

    key: str  # "onnx", "onnx-fp16", "onnx-int8", "engine-fp16", "engine-int8"
    filename: str
    precision: str  # fp32 | fp16 | int8
    backend: str  # onnxruntime | tensorrt
    triton_platform: str


FORMATS: dict[str, Format] = {
    f.key: f
    for f in (
        Format("onnx", "model.onnx", "fp32", "onnxruntime", "onnxruntime_onnx"),
        Format("onnx-fp16", "model.fp16.onnx", "fp16", "onnxruntime", "onnxruntime_onnx"),
        Format("onnx-int8", "model.int8.onnx", "int8", "onnxruntime", "onnxruntime_onnx"),
        Format("engine-fp16", "model.fp16.engine", "fp16", "tensorrt", "tensorrt_plan"),
        Format("engine-int8", "model.int8.engine", "int8", "tensorrt", "tensorrt_plan"),
    )
}

#: Which typed ONNX an engine is built from.
ENGINE_SOURCE: dict[str, str] = {"engine-fp16": "onnx-fp16", "engine-int8": "onnx-int8"}

REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"


def onnx_format_for(precision: str) -> Format:
    """The ONNX format for ``precision`` (fp32, fp16 or int8)."""
    for f in FORMATS.values():
        if f.backend == "onnxruntime" and f.precision == precision:
            return f
    raise ValueError(f"precision {precision!r} is not one of fp32, fp16, int8")
