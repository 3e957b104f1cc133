"""Session fixtures: a briefly trained ``tiny`` model on a small synthetic ABAW set, a calibration set drawn
from it, and one full export (FP32 + FP16 + INT8 ONNX, Triton; engines skipped without TensorRT)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from edge_affect.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("synth")
    synth_dataset(root, 240, seed=0, size=64, workers=0)
    return root


@pytest.fixture(scope="session")
def trained_ckpt(synth_root, tmp_path_factory) -> Path:
    """The tiny model trained 12 steps on the synthetic set (a real checkpoint from the real loop)."""
    from edge_affect.config import TrainConfig
    from edge_affect.train.loop import train

    cfg = TrainConfig(
        model="tiny", epochs=1, batch_size=16, lr=3e-3, warmup_epochs=0.0, augment=False, seed=0, max_steps_per_epoch=12
    )
    return train(cfg, synth_root, tmp_path_factory.mktemp("train"), progress=False)


@pytest.fixture(scope="session")
def calib_dir(synth_root, tmp_path_factory) -> Path:
    from edge_affect.calibration.build import build_calibration

    return build_calibration(synth_root, tmp_path_factory.mktemp("calib") / "synth", 64, split="val", seed=0)


@pytest.fixture(scope="session")
def exported(trained_ckpt, calib_dir, tmp_path_factory):
    """(export folder, ExportReport) of the full export of the trained tiny model."""
    from edge_affect.export.pipeline import ExportRequest, export_all

    out = tmp_path_factory.mktemp("export") / "tiny"
    rep = export_all(ExportRequest(trained_ckpt, out, fp16=True, int8=True, calib=calib_dir, engine=True, triton=True))
    return out, rep


@pytest.fixture(scope="session")
def cpu_export(trained_ckpt, tmp_path_factory):
    """(folder, report) of the tiny model exported with the CPU INT8 target only (no ModelOpt needed) and no
    ``--calib``: its calibration frames are sampled from the checkpoint's own training data (``calib_source``)."""
    from edge_affect.export.pipeline import ExportRequest, export_all

    out = tmp_path_factory.mktemp("cpu-int8") / "tiny"
    return out, export_all(ExportRequest(trained_ckpt, out, int8_cpu=True))
