"""Parity of exported artifacts with the PyTorch FP32 model. The code lives in the export package
(:mod:`edge_affect.export.compare`: gates, comparisons, evaluation sets, reports; :mod:`edge_affect.export.parity`:
the ``parity`` command over an export folder); this module keeps the public names importable from here."""

from __future__ import annotations

from edge_affect.export.compare import (
    INT8_CPU_BACKEND,
    Comparison,
    EvalSet,
    GateResult,
    Gates,
    Labels,
    ParityReport,
    Runner,
    ccc,
    compare_artifact,
    compare_outputs,
    comparisons_markdown,
    load_eval_set,
    onnx_cpu_runner,
    sigmoid,
    softmax,
    task_scores,
)
from edge_affect.export.parity import run_parity

__all__ = [
    "INT8_CPU_BACKEND",
    "Comparison",
    "EvalSet",
    "GateResult",
    "Gates",
    "Labels",
    "ParityReport",
    "Runner",
    "ccc",
    "compare_artifact",
    "compare_outputs",
    "comparisons_markdown",
    "load_eval_set",
    "onnx_cpu_runner",
    "run_parity",
    "sigmoid",
    "softmax",
    "task_scores",
]
