"""``edge-affect export`` as a user sees it: third-party output (ModelOpt, ONNX Runtime's calibrators) goes to
``quantize.log`` in the export folder; the console gets a screenful, each warning once; ``--out`` defaults to
one folder per checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_affect.calibration import read_manifest
from edge_affect.export.tensorrt_build import tensorrt_unavailable_reason
from edge_affect.formats import FORMATS

pytest.importorskip("modelopt", reason="INT8 export needs NVIDIA ModelOpt (the export extra)")
if not tensorrt_unavailable_reason():
    pytest.skip("the console of a machine without TensorRT (here TensorRT runs)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
#: The issue's budget for the console output of an export (it was 1,057 lines with 512 calibration frames).
MAX_LINES = 60


@pytest.mark.slow  # 10-26 s each: the default run stays under ~5 min on 2 cores
def test_export_output_fits_on_a_screen(trained_ckpt: Path, calib_dir: Path, tmp_path: Path) -> None:
    """Entropy calibration prints a line and a progress bar per frame: all of it lands in
    quantize.log; the console has ≤ 60 lines, no ModelOpt line twice, and names the default folder."""
    cmd = [sys.executable, "-m", "edge_affect.cli", "export", str(trained_ckpt), "--fp16", "--int8"]
    cmd += ["--calib", str(calib_dir), "--int8-calib-method", "entropy"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: a parity gate failed (entropy on a 12-step model)
    console = (r.stdout + r.stderr).splitlines()
    assert len(console) <= MAX_LINES, "\n".join(console)
    assert not any("Collecting tensor data" in line or "it/s]" in line for line in console), "\n".join(console)
    modelopt = [line for line in console if "modelopt" in line.lower() and "quantize.log" not in line]
    assert modelopt == [], modelopt  # ModelOpt's own lines (and their root-logger echo) are in the log only
    (out,) = (tmp_path / "runs" / "export").iterdir()  # the default --out: runs/export/<name>-<sha256[:8]>
    assert out.name.endswith(f"-{_sha8(trained_ckpt)}") and f"artifacts in runs/export/{out.name}/" in r.stdout
    files = {FORMATS[k].filename for k in ("onnx", "onnx-fp16", "onnx-int8", "onnx-int8-cpu")} | {"quantize.log"}
    assert files <= {p.name for p in out.iterdir()}  # no TensorRT here: the CPU INT8 model too
    for key, target in (("onnx-int8", "TensorRT / CUDA GPUs"), ("onnx-int8-cpu", "ONNX Runtime on CPUs")):
        line = next(x for x in console if f"/{FORMATS[key].filename}  " in x)  # "<path>  <size> KiB  (<what>)"
        assert target in line, line  # each file says which target it is for
    log = (out / "quantize.log").read_text()
    assert "===== FP16 (ModelOpt AutoCast)" in log
    (frames,) = re.findall(r"===== INT8 PTQ \(ModelOpt, entropy calibration, (\d+) frames\)", log)
    assert 0 < int(frames) <= read_manifest(calib_dir)["count"]
    assert log.count("Collecting tensor data and making histogram") == int(frames)  # one per calibration frame


def _sha8(p: Path) -> str:
    from edge_affect.artifact import sha256_file

    return sha256_file(p)[:8]
