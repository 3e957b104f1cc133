"""Metadata tells the truth: each packaged variant is reloaded (model.json, safetensors, ONNX) and its behaviour
checked against what its metadata says; --expr-logit-adjust refuses classes the training prior lacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnx", reason="packaging exports ONNX (the export extra)")

from edge_affect.cli import main  # noqa: E402
from edge_affect.export.onnx_export import read_onnx_meta, run_onnx  # noqa: E402
from edge_affect.export.package import package_model  # noqa: E402
from edge_affect.models import load_checkpoint  # noqa: E402

TPL = [[0.31, 0.38], [0.69, 0.38], [0.5, 0.59], [0.35, 0.75], [0.65, 0.75]]


@pytest.fixture(scope="module")
def data(small_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic training annotations and an import.json crop framing (what package --data reads)."""
    d = tmp_path_factory.mktemp("pkgdata") / "data"
    d.mkdir()
    shutil.copy(small_synth / "training_set_annotations.txt", d / "training_set_annotations.txt")
    (d / "import.json").write_text(json.dumps({"align_template": TPL}))
    return d


def _recorded(folder: Path) -> dict[str, object]:
    """What each file of a packaged folder says about mirror averaging and the logit adjustment."""
    card = json.loads((folder / "model.json").read_text())
    _, st = load_checkpoint(folder / "model.safetensors")
    onnx = read_onnx_meta(folder / "model.onnx")
    return {
        "card_flip": card["test_time_flip"],
        "card_config_flip": card["model_config"]["test_time_flip"],
        "st_flip": st.model_config["test_time_flip"],
        "onnx_flip": onnx.model_config["test_time_flip"],
        "card_tau": (card["expr_logit_adjust"] or {}).get("tau"),
        "st_tau": (st.extra.get("expr_logit_adjust") or {}).get("tau"),
    }


def test_each_packaged_variant_behaves_as_its_metadata_says(
    tiny_ckpts: tuple[Path, Path], data: Path, tmp_path: Path
) -> None:
    ckpt = tiny_ckpts[0]
    variants = {"plain": {"test_time_flip": False}, "both": {"test_time_flip": True, "expr_logit_adjust": 0.5}}
    for name, kw in variants.items():
        package_model(ckpt, tmp_path / name, data=data, **kw)
    rec = {name: _recorded(tmp_path / name) for name in variants}
    for name, kw in variants.items():
        flip, tau = kw["test_time_flip"], kw.get("expr_logit_adjust")
        assert rec[name] == {
            "card_flip": flip,
            "card_config_flip": flip,
            "st_flip": flip,
            "onnx_flip": flip,
            "card_tau": tau,
            "st_tau": tau,
        }, name
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    mirror = np.ascontiguousarray(x[..., ::-1])
    plain, plain_m = run_onnx(tmp_path / "plain" / "model.onnx", x), run_onnx(tmp_path / "plain" / "model.onnx", mirror)
    both = run_onnx(tmp_path / "both" / "model.onnx", x)
    assert np.abs(plain["va"] - plain_m["va"]).max() > 1e-3  # the mirror matters, so the checks below can fail
    for k in ("va", "au"):  # mirror averaging, as recorded: the mean of the face and its mirror image
        np.testing.assert_allclose(both[k], (plain[k] + plain_m[k]) / 2, atol=1e-4)
    card = json.loads((tmp_path / "both" / "model.json").read_text())
    shift = -card["expr_logit_adjust"]["tau"] * np.log(np.asarray(card["expr_logit_adjust"]["prior"]))
    # expression logits: the mirror average, moved by exactly -tau·log(prior) (the recorded tau and prior)
    np.testing.assert_allclose(both["expr"], (plain["expr"] + plain_m["expr"]) / 2 + shift, atol=1e-4)


def test_expr_logit_adjust_refuses_classes_the_prior_lacks(
    tiny_ckpts: tuple[Path, Path], data: Path, tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "nofear"
    shutil.copytree(data, d)
    ann = d / "training_set_annotations.txt"
    lines = ann.read_text().splitlines()
    # every Fear (3) row loses its expression label: the prior has no Fear at all
    rows = [lines[0]] + [
        ",".join([*(c := ln.split(","))[:3], "-1" if c[3] == "3" else c[3], *c[4:]]) for ln in lines[1:]
    ]
    assert any(ln.split(",")[3] == "3" for ln in lines[1:])
    ann.write_text("\n".join(rows) + "\n")
    out = tmp_path / "pkg"
    argv = ["package", str(tiny_ckpts[0]), "--out", str(out), "--data", str(d), "--expr-logit-adjust", "0.5"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"edge-affect: error: --expr-logit-adjust 0.5: {ann} has no training faces of Fear, expected a training "
        "set with every expression class (or no --expr-logit-adjust)\n"
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["nofear"]
