"""``edge-affect package``: checkpoint → model.safetensors + model.onnx + model.json (the default model's layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="packaging exports ONNX (the export extra)")

from edge_affect.artifact import sha256_file  # noqa: E402
from edge_affect.export.package import package_model  # noqa: E402


def test_package_writes_consistent_files(trained_ckpt: Path, tmp_path: Path) -> None:
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.models import load_checkpoint
    from edge_affect.runtime.predictor import load

    tpl = [[0.31, 0.38], [0.69, 0.38], [0.5, 0.59], [0.35, 0.75], [0.65, 0.75]]
    data = tmp_path / "data"
    data.mkdir()
    (data / "import.json").write_text(json.dumps({"align_template": tpl}))
    out = tmp_path / "pkg"
    card = package_model(trained_ckpt, out, data=data, evaluation={"note": "none"})
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "model.safetensors"]
    assert json.loads((out / "model.json").read_text()) == card
    for name, f in card["files"].items():
        assert f["bytes"] == (out / name).stat().st_size and f["sha256"] == sha256_file(out / name)
    # safetensors: 8-byte little-endian header length, then a JSON header — no pickle anywhere
    raw = (out / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert "__metadata__" in header and b"\x80\x04" not in raw[:16]
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta.extra["align_template"] == tpl and card["align_template"] == tpl
    assert meta.extra["source_checkpoint_sha256"] == sha256_file(trained_ckpt)
    onnx_meta = read_onnx_meta(out / "model.onnx")
    assert onnx_meta.checkpoint_sha256 == card["files"]["model.safetensors"]["sha256"]
    assert card["parameters"] == sum(p.numel() for p in model.parameters()) and card["macs"] > 0
    assert card["training"]["epochs"] == 1 and card["evaluation"] == {"note": "none"}
    # the runtime uses the template: same crop framing from ONNX and from the checkpoint
    faces = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    with load(out / "model.onnx") as a, load(out / "model.safetensors") as b:
        assert a.meta.extra["align_template"] == tpl
        pa, pb = a.predict(faces), b.predict(faces)
    assert max(abs(x["valence"] - y["valence"]) for x, y in zip(pa, pb, strict=True)) <= 1e-4


def test_package_refuses_a_used_folder(trained_ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        package_model(trained_ckpt, tmp_path)
    assert (tmp_path / "x.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="no align_template in import.json"):
        package_model(trained_ckpt, tmp_path / "new", data=tmp_path)
    assert not (tmp_path / "new").exists()


def test_expression_logit_adjustment_moves_rare_classes_by_the_prior(
    trained_ckpt: Path, synth_root: Path, tmp_path: Path
) -> None:
    """``--expr-logit-adjust TAU``: expression logits shift by exactly −TAU·log(training prior) in the shipped
    ONNX (VA/AU untouched), the prior and TAU are recorded, and it needs the dataset."""
    from edge_affect.data.abaw import load_split
    from edge_affect.export.onnx_export import run_onnx
    from edge_affect.export.package import expression_prior

    data = tmp_path / "data"  # the synthetic training annotations plus an import.json with a crop framing
    data.mkdir()
    (data / "training_set_annotations.txt").symlink_to(synth_root / "training_set_annotations.txt")
    tpl = [[0.31, 0.38], [0.69, 0.38], [0.5, 0.59], [0.35, 0.75], [0.65, 0.75]]
    (data / "import.json").write_text(json.dumps({"align_template": tpl}))
    prior = expression_prior(load_split(data, "train", check_images=False))
    assert prior.shape == (8,) and abs(prior.sum() - 1) < 1e-9 and (prior > 0).all()
    plain = package_model(trained_ckpt, tmp_path / "plain", data=data)
    adj = package_model(trained_ckpt, tmp_path / "adj", data=data, expr_logit_adjust=0.5)
    assert plain["expr_logit_adjust"] is None
    assert adj["expr_logit_adjust"]["tau"] == 0.5
    np.testing.assert_allclose(adj["expr_logit_adjust"]["prior"], prior, atol=1e-6)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    a, b = run_onnx(tmp_path / "plain" / "model.onnx", x), run_onnx(tmp_path / "adj" / "model.onnx", x)
    np.testing.assert_allclose(b["expr"] - a["expr"], np.broadcast_to(-0.5 * np.log(prior), (4, 8)), atol=1e-4)
    np.testing.assert_allclose(b["va"], a["va"], atol=1e-6)
    with pytest.raises(ValueError, match="needs --data"):
        package_model(trained_ckpt, tmp_path / "nodata", expr_logit_adjust=0.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\]"):
        package_model(trained_ckpt, tmp_path / "big", data=data, expr_logit_adjust=5.0)


def test_package_records_align_views_for_the_runtime(trained_ckpt: Path, tmp_path: Path) -> None:
    from edge_affect.runtime.detect import YuNetDetector
    from edge_affect.runtime.pipeline import FacePipeline
    from edge_affect.runtime.predictor import load

    card = package_model(trained_ckpt, tmp_path / "pkg", align_views=2)
    assert card["align_views"] == 2
    det = YuNetDetector()
    try:
        with load(tmp_path / "pkg" / "model.onnx") as p:
            assert p.meta.extra["align_views"] == 2
            assert FacePipeline(p, det, track=False).views == 2  # the model's own default
            assert FacePipeline(p, det, track=False, views=1).views == 1  # a setting overrides it
    finally:
        det.close()
    again = package_model(tmp_path / "pkg" / "model.safetensors", tmp_path / "again")
    assert again["align_views"] == 2  # re-packaging keeps it
    assert package_model(trained_ckpt, tmp_path / "plain")["align_views"] == 1
    with pytest.raises(ValueError, match=r"--align-views 3: expected one of \[1, 2, 4\]"):
        package_model(trained_ckpt, tmp_path / "bad", align_views=3)
    assert not (tmp_path / "bad").exists()
