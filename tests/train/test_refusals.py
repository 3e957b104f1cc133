"""Training refuses garbage: a diverging run stops with one line and keeps the last good checkpoint, best.pt
never holds non-finite weights, a select_on the validation data cannot score is refused before training, and
init_from refuses a partial match unless asked (tiny model, a small synthetic set, one or two steps)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from edge_affect.config import LossConfig, TrainConfig
from edge_affect.models import create_model, load_checkpoint, save_checkpoint
from edge_affect.train.loop import init_weights, train

BASE = dict(model="tiny", batch_size=8, warmup_epochs=0.0, augment=False, seed=0, max_steps_per_epoch=1)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_affect.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("refuse") / "ds"
    synth_dataset(root, 40, seed=0, size=32, val_fraction=0.3, workers=0)
    return root


def test_a_diverging_run_stops_with_one_line_and_writes_no_checkpoint(small_root: Path, tmp_path: Path) -> None:
    """lr = 1e6 without clipping: the second step's loss is NaN; nothing is saved, the error says so."""
    cfg = TrainConfig(epochs=2, lr=1e6, grad_clip=0.0, **{**BASE, "max_steps_per_epoch": 3})
    with pytest.raises(ValueError) as e:
        train(cfg, small_root, tmp_path / "run", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("training diverged: the loss is ")
    assert "no checkpoint was written, expected finite values" in msg
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "last.pt").exists()


def test_non_finite_weights_keep_the_last_good_checkpoint(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights that turn NaN in epoch 2 (a fault injected after the optimizer step) stop the run before any
    save: best.pt and last.pt stay those of epoch 1, byte for byte, and their weights are finite."""
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self: torch.optim.Optimizer, *a: object, **k: object) -> object:
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's only step
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    run = tmp_path / "run"
    cfg = TrainConfig(epochs=2, lr=1e-3, **BASE)
    with pytest.raises(ValueError) as e:
        train(cfg, small_root, run, progress=False)
    assert str(e.value).startswith("training diverged: non-finite weights ([")
    assert f"]) at epoch 2 (step 2); {run / 'last.pt'} (the last good epoch) is kept, expected finite" in str(e.value)
    model, info = load_checkpoint(run / "last.pt")
    assert info.extra["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.dtype.is_floating_point)
    best, _ = load_checkpoint(run / "best.pt")
    assert all(bool(torch.isfinite(v).all()) for v in best.state_dict().values() if v.dtype.is_floating_point)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_nan_class_weight_is_refused_before_training(small_root: Path, tmp_path: Path) -> None:
    """The schema refuses it in the config file; train() re-checks a config built around the schema
    (``model_construct``) before anything is written."""
    weights = [float("nan")] + [1.0] * 7
    with pytest.raises(ValueError, match=r"^config.loss: expr_class_weights\[0\] nan: not finite, expected a number"):
        TrainConfig.from_dict({**BASE, "epochs": 1, "loss": {"expr_class_weights": weights}})
    fields = {**TrainConfig(epochs=1, **BASE).__dict__, "loss": LossConfig.model_construct(expr_class_weights=weights)}
    with pytest.raises(ValueError, match=r"^config.loss: expr_class_weights\[0\] nan: not finite"):
        train(TrainConfig.model_construct(**fields), small_root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def _without_expression_labels(src: Path, dst: Path) -> Path:
    """A copy of the dataset whose validation rows have no expression label (column 4 = -1)."""
    import shutil

    shutil.copytree(src, dst)
    ann = dst / "validation_set_annotations.txt"
    lines = ann.read_text().splitlines()
    rows = [lines[0]] + [",".join([*(c := ln.split(","))[:3], "-1", *c[4:]]) for ln in lines[1:]]
    ann.write_text("\n".join(rows) + "\n")
    return dst


def test_select_on_a_score_validation_cannot_compute_is_refused_at_start(small_root: Path, tmp_path: Path) -> None:
    root = _without_expression_labels(small_root, tmp_path / "noexpr")
    cfg = TrainConfig(epochs=1, select_on="expr_acc", **BASE)
    with pytest.raises(ValueError) as e:
        train(cfg, root, tmp_path / "run", progress=False)
    assert str(e.value) == (
        "config: select_on 'expr_acc': the validation split (20 rows) has no expression labels, expected a "
        "select_on it can score ('p')"
    )
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_init_from_refuses_a_partial_match_unless_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    deeper = save_checkpoint(tmp_path / "deeper.pt", create_model("tiny", decoder_layers=3))
    model = create_model("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as e:
        init_weights(model, deeper)
    msg = str(e.value)
    assert msg.startswith(f"init_from: {deeper} holds ") and "weights the model has no place for" in msg
    assert msg.endswith("(init_from_partial = true takes only the weights that match)")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched when refused
    with caplog.at_level(logging.WARNING, logger="edge_affect.train.loop"):
        init_weights(model, deeper, partial=True)
    assert "init_from_partial" in caplog.text
    src, _ = load_checkpoint(deeper)
    src_sd = src.state_dict()
    taken = [k for k in model.state_dict() if k in src_sd and src_sd[k].shape == model.state_dict()[k].shape]
    assert taken and all(torch.equal(model.state_dict()[k], src_sd[k]) for k in taken)
    shallower = save_checkpoint(tmp_path / "shallow.pt", create_model("tiny", decoder_layers=1))
    with pytest.raises(ValueError, match=r"lacks \d+ of the model's weights"):
        init_weights(create_model("tiny"), shallower)


def test_init_from_refuses_non_finite_weights(tmp_path: Path) -> None:
    m = create_model("tiny")
    with torch.no_grad():
        next(iter(m.parameters())).fill_(float("inf"))
    bad = save_checkpoint(tmp_path / "inf.pt", m)
    with pytest.raises(ValueError, match="has non-finite weights .* expected a checkpoint of finite weights"):
        init_weights(create_model("tiny"), bad)


def test_init_widen_grows_a_checkpoint_or_refuses_in_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    narrow = create_model("edge_gray48_slim").eval()
    ckpt = save_checkpoint(tmp_path / "slim.pt", narrow)
    wide = create_model("edge_gray48_mid")
    init_weights(wide, ckpt, widen=True)
    x = torch.rand(3, 1, 48, 48).expand(3, 3, 48, 48).contiguous()
    with torch.no_grad():
        assert torch.allclose(narrow(x)["expr"], wide.eval()(x)["expr"], atol=2e-5)
    narrower = create_model("edge_gray48_slim", backbone_kwargs={"feature_index": 3, "channels": [16, 64, 128, 256]})
    before = {k: v.clone() for k, v in narrower.state_dict().items()}
    with pytest.raises(ValueError, match=rf"^init_widen {ckpt}: channels \[32, 64, 128, 256\] cannot grow into \[16, "):
        init_weights(narrower, ckpt, widen=True)
    assert all(torch.equal(before[k], v) for k, v in narrower.state_dict().items())  # untouched when refused
    with pytest.raises(ValueError, match="init_widen = true needs init_from"):
        TrainConfig(**BASE, init_widen=True)
