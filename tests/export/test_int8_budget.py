"""Calibration from the model's own data (``export.calib_source``), the INT8 accuracy budget, and the new
backbones' INT8 export."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_export_calibrates_on_the_checkpoints_training_data(trained_ckpt, synth_root, tmp_path):
    """No ``--calib``: the frames come from the training split of the data the checkpoint was trained on, stay
    in the export folder, and the report says where they came from."""
    from edge_affect.calibration import read_manifest
    from edge_affect.data.abaw import load_split
    from edge_affect.export.pipeline import ExportRequest, export_all

    out = tmp_path / "exp"
    rep = export_all(ExportRequest(trained_ckpt, out, int8_cpu=True))
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
    assert not list(tmp_path.glob(".exp.*"))  # no scratch folder left


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
