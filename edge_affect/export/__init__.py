"""Export: PyTorch → FP32 ONNX (opset 17) → FP16 / INT8 Q/DQ ONNX → TensorRT engines, Triton repository.

Library entry points (heavy dependencies — torch, onnx, modelopt, tensorrt — are imported lazily):

- ``onnx_export.export_onnx(model, meta, out_path, opset=17, exporter="auto") -> Path``
- ``onnx_export.read_onnx_meta(path) -> ArtifactMeta``
- ``fp16.convert_fp16(src, dst)``, ``int8.quantize_int8(src, dst, calib)``
- ``qdq_check.check_trt_qdq(model_or_path) -> list[str]`` / ``assert_trt_qdq``
- ``tensorrt_build.build_engine(onnx, engine, EngineOptions, meta)``
- ``pipeline.export_all(ExportRequest) -> ExportReport`` (what ``edge-affect export`` runs)
"""

from __future__ import annotations

from edge_affect.export.formats import FORMATS, OPSET
from edge_affect.export.onnx_export import export_onnx, read_onnx_meta
from edge_affect.export.qdq_check import assert_trt_qdq, check_trt_qdq

__all__ = ["FORMATS", "OPSET", "assert_trt_qdq", "check_trt_qdq", "export_onnx", "read_onnx_meta"]
