"""Calibration from the model's own data (``export.calib_source``), the INT8 accuracy budget, and the new
backbones' INT8 export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.export.calib_source import (
    SAMPLED_DIR,
    SOURCE_FLAG,
    SOURCE_SHIPPED,
    SOURCE_TRAINING,
    choose_calibration,
)
from edge_affect.export.formats import REPORT_JSON
from edge_affect.models import load_checkpoint, save_checkpoint


def _with_data_root(ckpt: Path, root: str | None, dst: Path) -> Path:
    """A copy of ``ckpt`` (same weights) that records ``root`` as its training data (None: nothing recorded)."""
    model, meta = load_checkpoint(ckpt)
    extra = {k: v for k, v in meta.extra.items() if k != "data_root"}
    if root is not None:
        extra["data_root"] = root
    return save_checkpoint(dst, model, au_thresholds=meta.au_thresholds, extra=extra)


def test_export_calibrates_on_the_checkpoints_training_data(cpu_export, synth_root):
    """No ``--calib`` (``cpu_export``): the frames come from the training split of the data the checkpoint was
    trained on, stay in the export folder, and the report says where they came from."""
    from edge_affect.calibration import read_manifest
    from edge_affect.data.abaw import load_split

    out, rep = cpu_export
    assert rep.calibration["source"] == SOURCE_TRAINING
    assert Path(rep.calibration["data_root"]) == synth_root and rep.calibration["split"] == "train"
    assert Path(rep.calibration["dir"]) == (out / SAMPLED_DIR).resolve()
    m = read_manifest(out / SAMPLED_DIR)
    train_files = set(load_split(synth_root, "train").paths)
    ids = [f["source_id"] for f in m["files"]]
    assert len(ids) == rep.calibration["frames_in_set"] > 100  # every train frame of the 240-face set (≤ 512)
    assert set(ids) <= train_files and m["source"]["split"] == "train"
    saved = json.loads((out / REPORT_JSON).read_text())
    assert saved["calibration"]["source"] == SOURCE_TRAINING
    assert saved["gate_frames"]["dir"] == str((out / SAMPLED_DIR).resolve())  # parity re-reads its gate frames
    assert f"{SOURCE_TRAINING} {synth_root}" in (out / "export_report.md").read_text()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no scratch folder left


def test_calib_flag_and_shipped_model_keep_their_frames(trained_ckpt, calib_dir, tmp_path):
    from edge_affect.calibration import default_calibration_dir
    from edge_affect.default import default_model

    _, meta = load_checkpoint(trained_ckpt)
    s = choose_calibration(calib_dir, trained_ckpt, meta, tmp_path / "o", int8=True)
    assert (s.dir, s.source) == (calib_dir, SOURCE_FLAG)
    shipped = default_model("safetensors")
    _, dmeta = load_checkpoint(shipped)
    s = choose_calibration(None, shipped, dmeta, tmp_path / "o", int8=True)
    assert (s.dir, s.source) == (default_calibration_dir(), SOURCE_SHIPPED)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("root", ["/no/such/abaw-root", None])
def test_int8_of_a_checkpoint_without_its_data_is_refused_naming_calib(trained_ckpt, tmp_path, capsys, root):
    from edge_affect.cli import main

    ckpt = _with_data_root(trained_ckpt, root, tmp_path / "m.pt")
    out = tmp_path / "exp"
    assert main(["export", str(ckpt), "--out", str(out), "--int8-target", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-affect: error: ") and "pass --calib FOLDER" in err[0], err
    assert (root or "does not record its training data") in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_fp32_export_without_the_training_data_uses_the_shipped_frames(trained_ckpt, tmp_path):
    from edge_affect.calibration import default_calibration_dir

    _, meta = load_checkpoint(trained_ckpt)
    meta.extra["data_root"] = "/no/such/abaw-root"
    s = choose_calibration(None, trained_ckpt, meta, tmp_path / "o", int8=False)
    assert s.dir == default_calibration_dir() and "shipped" in s.source and s.scratch is None


@pytest.mark.slow  # 52 s idle: the slowest test of the suite (run with `scripts/test.sh -m slow`)
def test_int8_max_drop_budget_is_met_and_reported(trained_ckpt, calib_dir, tmp_path):
    """``--int8 --int8-target cpu --int8-max-drop 0``, one export, both INT8 models: NNCF returns ops to FP32 until
    the CPU model's top-1 expression agrees with FP32 on every gate frame, and the sensitivity ranking's nodes go
    to FP16 until the TensorRT-shaped one does; both re-measured here on the recorded gate frames (0
    disagreements, no tolerance; the Q/DQ graph with its FP16 parts upcast, as the parity runs it), and the
    report lists what each kept in higher precision with its MAC share."""
    from edge_affect.cli import main
    from edge_affect.export.gates import recorded_gate_set
    from edge_affect.export.nncf_int8 import top1
    from edge_affect.export.onnx_export import read_onnx_meta, run_onnx
    from edge_affect.runtime.backends.onnxruntime_runner import CPU_INT8_ONNX

    pytest.importorskip("nncf", reason="--int8-max-drop needs NNCF (the export extra)")
    import onnxruntime as ort

    out = tmp_path / "exp"
    argv = ["export", str(trained_ckpt), "--out", str(out), "--calib", str(calib_dir), "--int8", "--int8-target", "cpu"]
    assert main([*argv, "--int8-max-drop", "0"]) in (0, 1)  # 1: a gate other than top-1 agreement failed
    rep = json.loads((out / REPORT_JSON).read_text())
    b = rep["int8_budget"]
    assert b["max_drop_points"] == 0 and b["drop_points"] == 0 and b["gate_frames"] == rep["gate_frames"]["count"]
    share = b["kept_float_mac_share"]
    assert 0 <= share <= 1 and (share > 0) == bool(b["kept_float"])
    meta = read_onnx_meta(out / CPU_INT8_ONNX)
    assert meta.precision == "int8" and meta.extra["quantizer"].startswith("nncf ")
    gate = recorded_gate_set(rep, meta.preprocess)
    fp32 = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(out / CPU_INT8_ONNX), providers=["CPUExecutionProvider"])
    assert int((top1(fp32, gate.x) != top1(int8, gate.x)).sum()) == 0
    md = (out / "export_report.md").read_text()
    assert "## INT8 accuracy budget" in md and f"kept in FP32: {len(b['kept_float'])} compute ops" in md
    f = rep["int8_fallback"]  # the TensorRT-shaped model's budget
    assert f["max_drop_points"] == 0 and f["drop_points"] == 0 and f["gate_frames"] == rep["gate_frames"]["count"]
    assert (f["drop_points_before"] > 0) == bool(f["kept_fp16"])  # nodes go to FP16 only when PTQ misses
    assert 0 <= f["kept_fp16_mac_share"] <= 1 and "int8_budget" in rep["timings_s"]
    ref = run_onnx(out / "model.onnx", gate.x)["expr"].argmax(1)
    qdq = run_onnx(out / "model.int8.onnx", gate.x, emulate_fp16_in_fp32=True)["expr"].argmax(1)
    assert int((ref != qdq).sum()) == 0
    assert "- INT8 budget (--int8-max-drop 0): top-1 disagreement" in md


@pytest.fixture(scope="module")
def fresh_tiny(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A freshly initialised ``tiny`` (seed 0) as FP32 ONNX, with 64 calibration and 256 gate frames of noise."""
    import torch

    from edge_affect.export.onnx_export import export_onnx
    from edge_affect.models import create_model
    from edge_affect.models.checkpoint import model_meta

    torch.manual_seed(0)
    model = create_model("tiny").eval()
    fp32 = export_onnx(model, model_meta(model), tmp_path_factory.mktemp("fresh-tiny") / "model.onnx")
    rng = np.random.default_rng(0)
    calib, gate = (rng.normal(0, 1, (n, 3, 64, 64)).astype(np.float32) for n in (64, 256))
    return fp32, calib, gate


def test_unreachable_budget_is_one_line_and_writes_nothing(fresh_tiny, tmp_path):
    """A freshly initialised ``tiny`` has near-tied expression logits, so int8 rounding flips many top-1
    predictions; with no op allowed back in FP32 a zero budget cannot be met."""
    from edge_affect.export.nncf_int8 import quantize_cpu_nncf

    pytest.importorskip("nncf", reason="--int8-max-drop needs NNCF (the export extra)")
    fp32, calib, gate = fresh_tiny
    dst = tmp_path / "int8.onnx"
    with pytest.raises(ValueError, match=r"^--int8-max-drop 0: unreachable, .* points of the 256 gate frames") as e:
        quantize_cpu_nncf(fp32, dst, calib, gate, 0.0, max_groups=0)
    assert "\n" not in str(e.value) and not dst.exists()


def test_max_drop_is_checked(trained_ckpt, tmp_path, capsys):
    from edge_affect.cli import main
    from edge_affect.export.pipeline import ExportRequest, export_all

    with pytest.raises(SystemExit) as e:
        main(["export", str(trained_ckpt), "--out", str(tmp_path / "o"), "--int8-max-drop", "150"])
    assert e.value.code == 2
    assert "--int8-max-drop 150: too large, expected a number in [0, 100]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="int8_max_drop: budgets the INT8 models, expected int8 or int8_cpu"):
        export_all(ExportRequest(trained_ckpt, tmp_path / "o", int8_max_drop=1.0))
    with pytest.raises(ValueError, match="int8_max_drop chooses that count for model.int8.onnx; expected one of them"):
        export_all(ExportRequest(trained_ckpt, tmp_path / "o", int8=True, int8_fallback=2, int8_max_drop=1.0))
    assert not (tmp_path / "o").exists()


def test_tensorrt_budget_unreachable_is_one_line(fresh_tiny, tmp_path):
    """A freshly initialised ``tiny`` has near-tied expression logits, so PTQ flips many top-1 predictions; with
    no node allowed in FP16 a zero budget cannot be met: one line naming the budget and the measured drop."""
    from edge_affect.export.tensorrt_int8.ptq import quantize_int8
    from edge_affect.export.tensorrt_int8.steps import fallback_for_budget

    fp32, calib, gate = fresh_tiny
    int8 = tmp_path / "model.int8.onnx"

    def quantize(exclude):
        quantize_int8(fp32, int8, calib, None, exclude=exclude)

    quantize([])
    with pytest.raises(
        ValueError,
        match=r"^--int8-max-drop 0: unreachable for the TensorRT INT8 model, .* points of "
        r"the 256 gate frames with 0 nodes .* at most 0 allowed\); expected a larger budget",
    ) as e:
        fallback_for_budget(0.0, quantize, [], int8, fp32, calib, {}, gate, max_nodes=0)
    assert "\n" not in str(e.value)
