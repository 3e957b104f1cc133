"""QAT route of the INT8 export (``--int8 --qat``): NNCF fine-tune on the tiny model, then ModelOpt PTQ; the
result is TensorRT-shaped and the report records the fine-tune. Skipped without NNCF (the ``qat`` extra)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="INT8 export needs nvidia-modelopt (the export extra)")
pytest.importorskip("nncf", reason="QAT needs NNCF (the qat extra)")


def test_qat_export_tiny(trained_ckpt, calib_dir, synth_root, tmp_path):
    import onnx

    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.qat import QatSettings
    from edge_affect.export.qdq_check import assert_trt_qdq

    out = tmp_path / "qat"
    qat = QatSettings(synth_root, steps=30, batch_size=16)
    rep = export_all(ExportRequest(trained_ckpt, out, int8=True, calib=calib_dir, qat=qat))
    model = onnx.load(str(out / "model.int8.onnx"))
    assert_trt_qdq(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "qat" in json.dumps(meta)  # the fine-tune record travels in the INT8 model's metadata
    assert not (out / ".qat").exists() and "model.qat.fp32.onnx" not in {p.name for p in out.iterdir()}

    d = json.loads((out / "export_report.json").read_text())
    q = d["qat"]
    assert q["steps"] == 30 and q["split"] == "train" and q["rows"] > 0
    fl = q["loss_fixed_batches"]
    assert fl["frames"] > 0 and fl["before"] > 0 and fl["after"] > 0
    assert "QAT" in (out / "export_report.md").read_text()
    # the gates judge held-out frames, none of them a calibration frame
    assert d["gate_frames"]["count"] > 0
    int8 = [c for c in rep.comparisons if c.artifact == "model.int8.onnx"]
    assert int8 and int8[0].n == d["gate_frames"]["count"]
    assert rep.calibration_figures  # the calibration-frame figures stay beside, not instead


def test_qat_needs_int8(trained_ckpt, synth_root, tmp_path):
    from edge_affect.export.pipeline import ExportRequest, export_all
    from edge_affect.export.qat import QatSettings

    with pytest.raises(ValueError, match="qat"):
        export_all(ExportRequest(trained_ckpt, tmp_path / "x", qat=QatSettings(synth_root, steps=1)))
