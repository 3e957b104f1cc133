"""Export: PyTorch → FP32 ONNX (opset 17) → FP16 / INT8 ONNX → TensorRT engines, Triton repository, by route:

- ``onnx_export`` (FP32 ONNX and its metadata), ``fp16`` (ModelOpt AutoCast);
- ``tensorrt_int8/`` the TensorRT INT8 route (PTQ, sensitivity fallback, QAT on the Q/DQ graph, Q/DQ checks);
- ``cpu_int8`` the CPU INT8 route (ONNX Runtime's integer kernels);
- ``tensorrt_build`` the one TensorRT engine builder (the runtime only loads engines);
- ``compare`` / ``gates`` / ``parity``: the gates, over the runtime's runners where engines run;
- ``folder`` the export folder as one transaction; ``pipeline.export_all(ExportRequest)`` what ``export`` runs;
- ``triton``, ``package``; the artifact names come from the format table, ``edge_affect.formats``.

Heavy dependencies (torch, onnx, modelopt, tensorrt) are imported lazily.
"""

from __future__ import annotations

from edge_affect.export.formats import FORMATS, OPSET
from edge_affect.export.onnx_export import export_onnx, read_onnx_meta
from edge_affect.export.tensorrt_int8.qdq_check import assert_trt_qdq, check_trt_qdq

__all__ = ["FORMATS", "OPSET", "assert_trt_qdq", "check_trt_qdq", "export_onnx", "read_onnx_meta"]
