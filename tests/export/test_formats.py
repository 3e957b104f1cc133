"""The one artifact-format table (``edge_affect.formats``): its facts, and that no other module names the files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edge_affect
from edge_affect.formats import (
    ENGINE_SOURCE,
    FORMATS,
    PRECISIONS,
    TARGETS,
    export_folder_names,
    format_of,
    onnx_format_for,
    onnx_format_for_provider,
)

PACKAGE = Path(edge_affect.__file__).parent


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in ``path`` that is not a docstring (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


@pytest.mark.parametrize("key", ["onnx-fp16", "onnx-int8", "onnx-int8-cpu"])
def test_file_name_lives_in_one_module(key):
    name = FORMATS[key].filename
    holders = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if any(name in text for _, text in _string_constants(p))
    )
    assert holders == ["formats.py"], f"{name} is spelled out in {holders}; read it from edge_affect.formats"


def test_table_facts():
    assert len({f.filename for f in FORMATS.values()}) == len(FORMATS)
    for f in FORMATS.values():
        assert f.precision in PRECISIONS and f.target in TARGETS and f.gate in PRECISIONS
        assert f.backend in ("onnxruntime", "tensorrt")
        assert format_of(f.filename) is f
    assert ENGINE_SOURCE == {"engine-fp16": "onnx-fp16", "engine-int8": "onnx-int8"}
    # one ONNX per precision and target; INT8 has two targets, both judged by the INT8 gate
    assert onnx_format_for("int8").key == "onnx-int8" and onnx_format_for("int8", "cpu").key == "onnx-int8-cpu"
    assert onnx_format_for("fp16", "cpu").key == "onnx-fp16"  # no CPU-specific FP16: the one there is
    assert onnx_format_for_provider("int8", on_cpu=True).target == "cpu"
    assert onnx_format_for_provider("int8", on_cpu=False).target == "tensorrt"
    assert onnx_format_for_provider("fp32", on_cpu=True).key == "onnx"
    with pytest.raises(ValueError, match="precision 'int4'"):
        onnx_format_for("int4")
    with pytest.raises(ValueError, match="target 'dsp'"):
        onnx_format_for("int8", "dsp")
    assert format_of("weights.bin") is None
    assert {"model.int8.engine.json", "export_report.json"} <= export_folder_names()


def test_runtime_and_export_read_the_table():
    from edge_affect.export.cpu_int8 import CPU_INT8_ONNX
    from edge_affect.export.pipeline import export_folder_names as export_names
    from edge_affect.runtime.backends.onnxruntime_runner import CPU_INT8_ONNX as RUNTIME_CPU_INT8
    from edge_affect.runtime.backends.onnxruntime_runner import EXPORT_ONNX

    assert EXPORT_ONNX == {p: onnx_format_for(p).filename for p in PRECISIONS}
    assert CPU_INT8_ONNX == RUNTIME_CPU_INT8 == FORMATS["onnx-int8-cpu"].filename
    assert export_folder_names() <= export_names()  # a re-export into the folder is not refused as foreign
