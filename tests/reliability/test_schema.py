"""One validated schema (edge_affect.validation, pydantic v2) for every settings section: the training config,
its loss and augmentation sections, export profiles, evaluation files, the face pipeline and Triton. Each bad
value is one line naming the file (or object), the key and what was expected; unknown keys list the allowed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_affect.config import (
    MAX_BATCH,
    AugmentParams,
    ExportProfile,
    LossConfig,
    TrainConfig,
    check_evaluation,
    load_export_profile,
)
from edge_affect.runtime.settings import PipelineSettings, check_pipeline_settings

TRAIN = [
    ({"epohcs": 3}, "c.toml: unknown key 'epohcs'; did you mean 'epochs'? expected one of: model, model_overrides, "),
    ({"epochs": 0}, "c.toml: epochs 0: out of range, expected an integer ≥ 1"),
    ({"epochs": True}, "c.toml: epochs must be int, got bool True"),
    ({"lr": float("nan")}, "c.toml: lr nan: not finite, expected a number > 0"),
    ({"min_lr_ratio": 1.5}, "c.toml: min_lr_ratio 1.5: out of range, expected a number in [0, 1]"),
    ({"seed": -1}, "c.toml: seed -1: out of range, expected an integer in [0, 4294967295]"),
    ({"select_on": "f1"}, "c.toml: select_on 'f1': not a known value, expected 'p' or 'expr_acc'"),
    ({"init_from_partial": "yes"}, "c.toml: init_from_partial must be bool, got str 'yes'"),
]
LOSS = [
    ({"label_smoothing": 5.0}, "c.toml.loss: label_smoothing 5.0: out of range, expected a number in [0, 1)"),
    ({"label_smoothing": float("nan")}, "c.toml.loss: label_smoothing nan: not finite, expected a number in [0, 1)"),
    ({"va_mse": -1}, "c.toml.loss: va_mse -1: out of range, expected a number ≥ 0"),
    ({"weighting": "magic"}, "c.toml.loss: weighting 'magic': not a known value, expected 'uncertainty' or 'fixed'"),
    (
        {"fixed_weights": {"va": 1, "valence": 2}},
        "c.toml.loss: fixed_weights: unknown task 'valence', expected keys among va, expr, au",
    ),
    ({"fixed_weights": {"au": -0.5}}, "c.toml.loss: fixed_weights['au'] -0.5: out of range, expected a number ≥ 0"),
    (
        {"expr_class_weights": [1.0] * 7},
        "c.toml.loss: expr_class_weights: 7 weights, expected 8, one per expression (Neutral, Anger, Disgust, Fear, "
        "Happiness, Sadness, Surprise, Other)",
    ),
    (
        {"expr_class_weights": [1.0] * 7 + [float("nan")]},
        "c.toml.loss: expr_class_weights[7] nan: not finite, expected a number ≥ 0",
    ),
    ({"expr_class_weights": [0.0] * 8}, "c.toml.loss: expr_class_weights: all weights are 0, expected at least one "),
    ({"au_pos_weight": [1.0] * 11}, "c.toml.loss: au_pos_weight: 11 weights, expected 12, one per AU (AU1, "),
    ({"au_pos_weight": [0.0] * 12}, "c.toml.loss: au_pos_weight[0] 0.0: out of range, expected a number > 0"),
    ({"surprise": 1}, "c.toml.loss: unknown key 'surprise'; expected one of: weighting, fixed_weights, va_mse, "),
]
AUGMENT = [
    ({"flipp": True}, "c.toml.augment_params: unknown key 'flipp'; did you mean 'flip'? expected one of: scale, "),
    ({"gray_prob": 2}, "c.toml.augment_params: gray_prob 2: out of range, expected a number in [0, 1]"),
    ({"brightness": 1.0}, "c.toml.augment_params: brightness 1.0: out of range, expected a number in [0, 1)"),
    ({"noise": 0.5}, "c.toml.augment_params: noise 0.5: out of range, expected a number in [0, 0.25]"),
    ({"scale": [0.9, 0.5]}, "c.toml: augment_params: scale [0.9, 0.5]: low above high, expected [low, high]"),
    ({"scale": [0.9]}, "c.toml.augment_params: scale must be tuple[float, float] | None, got list [0.9]"),
    ({"flip": 1}, "c.toml.augment_params: flip must be bool | None, got int 1"),
]


@pytest.mark.parametrize(("d", "start"), TRAIN, ids=[next(iter(d)) for d, _ in TRAIN])
def test_train_section(d: dict, start: str) -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict(d, "c.toml")
    assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(("d", "start"), LOSS, ids=[f"{next(iter(d))}-{i}" for i, (d, _) in enumerate(LOSS)])
def test_loss_section(d: dict, start: str) -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({"loss": d}, "c.toml")
    assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(("d", "start"), AUGMENT, ids=[f"{next(iter(d))}-{i}" for i, (d, _) in enumerate(AUGMENT)])
def test_augment_section(d: dict, start: str) -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({"augment_params": d}, "c.toml")
    assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)


def test_good_sections_round_trip_and_assignments_are_checked() -> None:
    d = {
        "epochs": 3,
        "lr": 1,  # an integer is a number
        "loss": {"expr_class_weights": [1, 2, 1, 1, 1, 1, 1, 1], "au_pos_weight": [2.0] * 12, "label_smoothing": 0.1},
        "augment_params": {"scale": [0.9, 1.0], "flip": False},
    }
    cfg = TrainConfig.from_dict(d, "c.toml")
    assert cfg.lr == 1.0 and isinstance(cfg.loss, LossConfig) and isinstance(cfg.augment_params, AugmentParams)
    assert cfg.augment_params.kwargs() == {"scale": (0.9, 1.0), "flip": False}  # only the keys given
    out = cfg.to_dict()
    assert out["augment_params"] == {"scale": [0.9, 1.0], "flip": False}
    assert TrainConfig.from_dict(json.loads(json.dumps(out))) == cfg  # what checkpoints store reads back
    with pytest.raises(ValueError, match=r"^TrainConfig: batch_size 0: out of range, expected an integer ≥ 1$"):
        cfg.batch_size = 0  # the CLI's overrides go through the schema too
    assert cfg.batch_size == 64


def test_augment_params_reach_gpu_augment() -> None:
    """A config's gray_prob = 1 makes every augmented face gray (equal channels, to 1e-6); the default does not."""
    torch = pytest.importorskip("torch", reason="GpuAugment needs PyTorch")
    from edge_affect.data.augment import GpuAugment
    from edge_affect.models import create_model

    pp = create_model("tiny").preprocess
    torch.manual_seed(0)
    x = torch.randint(0, 255, (2, pp.input_size, pp.input_size, 3), dtype=torch.uint8)
    for params, gray in (({"gray_prob": 1.0, "brightness": 0.0, "contrast": 0.0}, True), ({"gray_prob": 0.0}, False)):
        cfg = TrainConfig.from_dict({"augment_params": params}, "c.toml")
        y = GpuAugment(pp, **cfg.augment_params.kwargs())(x)
        assert (float((y[:, 0] - y[:, 1]).abs().max()) < 1e-6) is gray


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ('target = "x"\nbatchsize = [1, 1, 4]\n', "unknown key 'batchsize'; did you mean 'batch'? expected one of: "),
        ('target = "x"\nbatch = [1, 1, 1000000000]\n', f"batch[2] 1000000000: out of range, expected an integer in [1, {MAX_BATCH}]"),
        ('target = "x"\nworkspace_mib = 8\n', "workspace_mib 8: out of range, expected an integer ≥ 16"),
        ('target = "x"\ndla_core = 3\n', "dla_core 3: out of range, expected 0 or 1 (Jetson Orin has two DLAs)"),
        ('target = "x"\nprecisions = ["int4"]\n', "precisions[0] 'int4': not a known value, expected 'fp32', 'fp16' or"),
        ('target = "x"\ntriton = "yes"\n', "triton must be bool, got str 'yes'"),
    ],
)
def test_export_profile_section(tmp_path: Path, text: str, start: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        load_export_profile(p)
    assert str(e.value).startswith(f"{p}: {start}"), str(e.value)
    assert ExportProfile(batch=(1, 4, 4)).batch == (1, 4, 4)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("3", "e.json: a JSON int, expected an object of evaluation results"),
        ("[1, 2]", "e.json: a JSON list, expected an object of evaluation results"),
        ("NaN", "e.json: a JSON float, expected an object of evaluation results"),
        ('{"fer": {"accuracy": NaN}}', "e.json: ['fer']['accuracy'] nan: not finite, expected finite numbers"),
        ('{"runs": [1, Infinity]}', "e.json: ['runs'][1] inf: not finite, expected finite numbers"),
    ],
)
def test_evaluation_file(content: str, line: str) -> None:
    with pytest.raises(ValueError) as e:
        check_evaluation(json.loads(content), "e.json")
    assert str(e.value) == line
    assert check_evaluation({"fer": {"accuracy": 0.8, "n": 10}}) == {"fer": {"accuracy": 0.8, "n": 10}}


@pytest.mark.parametrize(
    ("kw", "line"),
    [
        ({"max_faces": 0}, "FacePipeline: max_faces 0: out of range, expected an integer ≥ 1"),
        ({"max_faces": -1}, "FacePipeline: max_faces -1: out of range, expected an integer ≥ 1"),
        ({"detect_every": 2.5}, "FacePipeline: detect_every must be int, got float 2.5"),
        ({"roi_size": 10**6}, "FacePipeline: roi_size 1000000: out of range, expected an integer in [32, 4096]"),
        ({"det_size": 16}, "FacePipeline: det_size 16: out of range, expected an integer in [32, 4096]"),
        ({"alpha": 0}, "FacePipeline: alpha 0: out of range, expected a number in (0, 1]"),
        ({"pickup": "always"}, "FacePipeline: pickup 'always': not a known value, expected 'motion' or 'none'"),
        ({"fps": float("inf")}, "FacePipeline: fps inf: not finite, expected a number > 0"),
    ],
)
def test_face_pipeline_settings(kw: dict, line: str) -> None:
    with pytest.raises(ValueError) as e:
        check_pipeline_settings(SimpleNamespace(**kw))
    assert str(e.value) == line
    check_pipeline_settings(SimpleNamespace(**{k: v.default for k, v in PipelineSettings.model_fields.items()}))


def test_face_pipeline_refuses_bad_settings_when_built(rel: SimpleNamespace) -> None:
    """The real FacePipeline checks in __post_init__, before it builds a face finder."""
    from edge_affect.default import default_model
    from edge_affect.runtime.pipeline import FacePipeline
    from edge_affect.runtime.predictor import load

    with load(default_model("onnx")) as predictor:
        for kw, start in (({"max_faces": 0}, "FacePipeline: max_faces 0"), ({"detect_every": 2.5}, "FacePipeline: detect_every")):
            with pytest.raises(ValueError) as e:
                FacePipeline(predictor, **kw)
            assert str(e.value).startswith(start)


def test_triton_settings() -> None:
    pytest.importorskip("onnx", reason="the export package needs the export extra")
    from edge_affect.export.tensorrt_build import BatchRange
    from edge_affect.export.triton import TritonSettings

    with pytest.raises(ValueError) as e:
        TritonSettings.check({"max_batch": 10**9, "preferred": [8]}, "Triton")
    assert str(e.value) == f"Triton: max_batch 1000000000: out of range, expected an integer in [1, {MAX_BATCH}]"
    with pytest.raises(ValueError, match="^Triton: preferred batch 64 exceeds max_batch 32, expected sizes ≤ it$"):
        TritonSettings.check({"max_batch": 32, "preferred": [8, 64]}, "Triton")
    with pytest.raises(ValueError, match=rf"expected 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}"):
        BatchRange.parse("1:8:1000000000")  # export --batch is refused before any work
    assert TritonSettings.check({"max_batch": 32, "preferred": [8, 32]}).max_batch == 32
