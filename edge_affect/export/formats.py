"""Export constants (opset, exporters) and the artifact table, which lives in :mod:`edge_affect.formats`."""

from __future__ import annotations

from edge_affect.formats import (
    ENGINE_SOURCE,
    FORMATS,
    REPORT_JSON,
    REPORT_MD,
    TRITON_FILES,
    Format,
    format_of,
    onnx_format_for,
)

#: ONNX opset every exported graph uses (opset 17 has ``LayerNormalization``, which keeps LN in FP32 safely).
OPSET = 17
#: ``metadata_props`` key / sidecar key holding the exporter name ("dynamo" or "torchscript").
EXPORTERS = ("dynamo", "torchscript")

__all__ = [
    "ENGINE_SOURCE",
    "EXPORTERS",
    "FORMATS",
    "OPSET",
    "REPORT_JSON",
    "REPORT_MD",
    "TRITON_FILES",
    "Format",
    "format_of",
    "onnx_format_for",
]
