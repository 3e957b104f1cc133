"""Export-side CLI options are range-checked at parse time, and build-engine never writes over its ONNX."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_affect.cli import main


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["export", "--int8", "--gate-holdout", "1.5"], "--gate-holdout 1.5: too large, expected a number in (0, 1)"),
        (["export", "--int8", "--parity-frames", "0"], "--parity-frames 0: too small, expected an integer ≥ 1"),
        (["export", "--workspace", "8"], "--workspace 8: too small, expected an integer ≥ 16"),
        (["export", "--dla", "2"], "--dla 2: too large, expected an integer in [0, 1]"),
        (["calib", "build", "x", "--n", "0"], "--n 0: too small, expected an integer in [1, 100000]"),
        (["package", "c.pt", "--out", "o", "--expr-logit-adjust", "nan"], "--expr-logit-adjust nan: not finite"),
        (["parity", "d", "--limit", "-1"], "--limit -1: too small, expected an integer ≥ 1"),
    ],
)
def test_export_options_are_range_checked(argv: list[str], line: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and line in err[0], err


def test_build_engine_refuses_to_write_over_its_onnx(tmp_path: Path, capsys) -> None:
    onnx = tmp_path / "model.int8.onnx"
    onnx.write_bytes(b"not really onnx, but it must survive")
    before = hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert main(["build-engine", str(onnx), "--out", str(onnx)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "never writes over its inputs" in err[0], err
    assert hashlib.sha256(onnx.read_bytes()).hexdigest() == before
