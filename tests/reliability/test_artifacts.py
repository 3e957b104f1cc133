"""Artifacts read from disk are checked, never trusted (issue 12, part B): metadata types and ranges (JSON,
ONNX metadata_props, engine sidecars, safetensors headers), checkpoints that are unsafe pickles, zip bombs,
unregistered models, non-allow-listed backbone settings or huge models, and configs with wrong types. Every
refusal is one line naming the file and what was expected."""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_affect.artifact import ArtifactMeta, check_align_template
from edge_affect.runtime import load
from edge_affect.schema import AUS, EXPRESSIONS, METADATA_KEY, Preprocess

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ONNX = ROOT / "edge_affect" / "assets" / "models" / "default" / "model.onnx"
DEFAULT_ST = ROOT / "edge_affect" / "assets" / "models" / "default" / "model.safetensors"
S = 16
#: ArcFace's 5-point template (112 px) as fractions: a real, upright face layout.
ARCFACE = [[0.3419, 0.4616], [0.6565, 0.4598], [0.5003, 0.6405], [0.3710, 0.8247], [0.6315, 0.8232]]


def _meta_dict(**changes: Any) -> dict[str, Any]:
    d = json.loads(ArtifactMeta(preprocess=Preprocess(input_size=S), model_name="tiny").to_json())
    for key, value in changes.items():
        target, _, leaf = key.rpartition(".")
        node = d
        for part in filter(None, target.split(".")):
            node = node[part]
        node[leaf] = value
    return d


def _refused(text_or_dict: Any, match: str, where: str = "model.onnx") -> str:
    text = text_or_dict if isinstance(text_or_dict, str) else json.dumps(text_or_dict)
    with pytest.raises(ValueError, match=match) as e:
        ArtifactMeta.from_json(text, where)
    msg = str(e.value)
    assert msg.startswith(where) and "\n" not in msg, msg
    return msg


# -- metadata: one checker behind ONNX, engines, checkpoints ----------------------------------------
def test_valid_metadata_round_trips_and_shipped_model_passes() -> None:
    meta = ArtifactMeta.from_json(json.dumps(_meta_dict(**{"extra": {"align_template": ARCFACE}})))
    assert meta.labels.expressions == list(EXPRESSIONS) and meta.extra["align_template"] == ARCFACE
    assert ArtifactMeta.from_json(meta.to_json()).to_dict() == meta.to_dict()
    onnx = pytest.importorskip("onnx", reason="reading the shipped ONNX metadata needs the onnx package")
    m = onnx.load(str(DEFAULT_ONNX), load_external_data=False)
    text = next(p.value for p in m.metadata_props if p.key == METADATA_KEY)
    shipped = ArtifactMeta.from_json(text, str(DEFAULT_ONNX))
    assert shipped.extra["align_template"] is not None


@pytest.mark.parametrize(
    "text,match",
    [
        ("[1, 2, 3]", "edge-affect metadata must be a JSON object, got list"),
        ('"just a string"', "must be a JSON object, got str"),
        ("{not json", "edge-affect metadata is not valid JSON"),
        ("[" * 100_000, "edge-affect metadata is not valid JSON"),
    ],
)
def test_metadata_that_is_not_an_object(text: str, match: str) -> None:
    _refused(text, match)


@pytest.mark.parametrize(
    "changes,match",
    [
        (
            {"labels.expressions": list(reversed(EXPRESSIONS))},
            r"expression labels \[.*\] differ from this edge-affect's",
        ),
        ({"labels.expressions": list(EXPRESSIONS[:7])}, "expression labels .* differ"),
        ({"labels.expressions": "Neutral,Anger"}, "expression labels must be a list of names"),
        ({"labels.aus": [*AUS[1:], AUS[0]]}, r"AU labels \[.*\] differ from this edge-affect's"),
        ({"labels.va": ["arousal", "valence"]}, "VA labels .* differ"),
        ({"labels": ["Neutral"]}, "labels must be an object, got"),
        ({"au_thresholds": [float("nan")] + [0.5] * 11}, "au_thresholds must be finite"),
        ({"au_thresholds": [1.5] + [0.5] * 11}, r"au_thresholds must be finite probabilities in \[0, 1\]"),
        ({"au_thresholds": [-0.1] + [0.5] * 11}, r"probabilities in \[0, 1\]"),
        ({"au_thresholds": ["0.5"] * 12}, "au_thresholds must be a list of 12 numbers"),
        ({"au_thresholds": [True] * 12}, "au_thresholds must be a list of 12 numbers"),
        ({"au_thresholds": [0.5] * 11}, "au_thresholds must be a list of 12 numbers"),
        ({"au_thresholds": 0.5}, "au_thresholds must be a list of 12 numbers, got 0.5"),
        ({"preprocess": [S, "rgb"]}, "preprocess must be an object"),
        ({"preprocess.input_size": 0}, r"input_size 0 must be an integer in \[16, 1024\]"),
        ({"preprocess.input_size": 100_000}, r"input_size 100000 must be an integer in \[16, 1024\]"),
        ({"preprocess.input_size": "64"}, "input_size '64' must be an integer"),
        ({"preprocess.input_size": 64.5}, "input_size 64.5 must be an integer"),
        ({"preprocess.input_size": True}, "input_size True must be an integer"),
        ({"preprocess.mean": [0.5, float("nan"), 0.5]}, "preprocess mean must be finite"),
        ({"preprocess.std": [0.5, 0.0, 0.5]}, r"preprocess std \[0.5, 0.0, 0.5\] must be > 0"),
        ({"preprocess.std": [0.5, -1.0, 0.5]}, r"preprocess std \[0.5, -1.0, 0.5\] must be > 0"),
        ({"preprocess.std": [0.5, float("inf"), 0.5]}, "preprocess std must be finite"),
        ({"preprocess.std": 0.5}, "preprocess std must be a list of 3 numbers"),
        ({"preprocess.interpolation": "lanczos9"}, "preprocess interpolation 'lanczos9' is not one of"),
        ({"preprocess.color": "cmyk"}, r"preprocess color 'cmyk' is not one of \['rgb', 'gray'\]"),
        ({"preprocess.gamma": 2.2}, "unknown preprocess keys"),
        ({"precision": "fp64"}, r"precision 'fp64' is not one of \['fp32', 'fp16', 'int8'\]"),
        ({"model_config": [1, 2]}, "model_config must be an object"),
        ({"extra": "x"}, "extra must be an object"),
        ({"model_name": 5}, "model_name must be a string"),
        ({"schema_version": "1"}, "schema_version '1', this edge-affect reads 1"),
        ({"schema_version": 2}, "schema_version 2"),
    ],
)
def test_metadata_types_and_ranges(changes: dict[str, Any], match: str) -> None:
    _refused(_meta_dict(**changes), match)


def test_metadata_missing_keys() -> None:
    d = _meta_dict()
    del d["au_thresholds"]
    _refused(d, "metadata lacks key 'au_thresholds'")


@pytest.mark.parametrize(
    "template,match",
    [
        (ARCFACE[:4], "align_template must be 5×2 numbers"),
        ([[0.3, 0.4, 0.1]] * 5, "align_template must be 5×2 numbers"),
        ([["0.3", "0.4"]] * 5, "align_template must be 5×2 numbers"),
        ([[float("nan"), 0.4], *ARCFACE[1:]], r"finite fractions of the crop in \[0, 1\]"),
        ([[1.5, 0.4], *ARCFACE[1:]], r"finite fractions of the crop in \[0, 1\]"),
        ([ARCFACE[0], ARCFACE[0], *ARCFACE[2:]], "points 0 and 1 coincide"),
        ([[0.1, 0.5], [0.3, 0.5], [0.5, 0.5], [0.7, 0.5], [0.9, 0.5]], "not an upright face"),  # collinear
        ([[x, 1 - y] for x, y in ARCFACE], "not an upright face"),  # upside down
        ([ARCFACE[1], ARCFACE[0], ARCFACE[2], ARCFACE[4], ARCFACE[3]], "not an upright face"),  # mirrored
        ([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.4, 0.8], [0.41, 0.8]], "points 3 and 4 coincide"),
        ([[0.40, 0.49], [0.60, 0.49], [0.5, 0.50], [0.40, 0.52], [0.60, 0.52]], "degenerate: eyes-mouth triangle"),
    ],
)
def test_degenerate_align_templates_are_refused(template: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_align_template(template)
    _refused(_meta_dict(extra={"align_template": template}), match)


def test_programmatic_meta_is_checked_too() -> None:
    with pytest.raises(ValueError, match="au_thresholds must be finite"):
        ArtifactMeta(preprocess=Preprocess(input_size=S), au_thresholds=[float("nan")] * 12)
    with pytest.raises(ValueError, match="expression labels"):
        from edge_affect.schema import LabelSchema

        ArtifactMeta(preprocess=Preprocess(input_size=S), labels=LabelSchema(expressions=list(EXPRESSIONS[::-1])))
    m = ArtifactMeta(preprocess=Preprocess(input_size=S), au_thresholds=np.full(12, 0.25, np.float32))
    assert m.au_thresholds == [0.25] * 12 and all(type(t) is float for t in m.au_thresholds)


def test_interpolations_match_the_runtime() -> None:
    from edge_affect.artifact import INTERPOLATIONS
    from edge_affect.runtime.preprocess import _INTERP

    assert set(INTERPOLATIONS) == set(_INTERP)


# -- ONNX: a tiny graph built with onnx.helper, run by the real ONNX Runtime ------------------------
def _onnx_model(meta_text: str | None, *, input_type: str = "float", size: int = S, dup: bool = False) -> bytes:
    pytest.importorskip("onnx", reason="building test ONNX graphs needs the onnx package")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    elem = {"float": TensorProto.FLOAT, "uint8": TensorProto.UINT8}[input_type]
    nodes = []
    src = "image"
    if input_type != "float":
        nodes.append(helper.make_node("Cast", ["image"], ["imagef"], to=TensorProto.FLOAT))
        src = "imagef"
    nodes.append(helper.make_node("Flatten", [src], ["flat"], axis=1))
    inits = []
    for name, width in (("va", 2), ("expr", 8), ("au", 12)):
        w = numpy_helper.from_array(
            rng.standard_normal((3 * size * size, width)).astype(np.float32) * 0.01, f"w_{name}"
        )
        inits.append(w)
        out = f"{name}_lin" if name == "va" else name
        nodes.append(helper.make_node("MatMul", ["flat", f"w_{name}"], [out]))
    nodes.append(helper.make_node("Tanh", ["va_lin"], ["va"]))
    graph = helper.make_graph(
        nodes,
        "fake",
        [helper.make_tensor_value_info("image", elem, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", w])
            for n, w in (("va", 2), ("expr", 8), ("au", 12))
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta_text is not None:
        for _ in range(2 if dup else 1):
            p = model.metadata_props.add()
            p.key, p.value = METADATA_KEY, meta_text
    return model.SerializeToString()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    f = tmp_path / name
    f.write_bytes(data)
    return f


def test_onnx_with_valid_metadata_runs(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime")
    f = _write(tmp_path, "ok.onnx", _onnx_model(json.dumps(_meta_dict())))
    with load(f) as p:
        recs = p.predict(np.zeros((3, 20, 20, 3), np.uint8))
    assert [r["status"] for r in recs] == ["ok"] * 3


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"labels.expressions": list(reversed(EXPRESSIONS))}, "expression labels"),
        ({"au_thresholds": [2.0] * 12}, r"au_thresholds must be finite probabilities in \[0, 1\]"),
        ({"extra": {"align_template": [[0.5, 0.5]] * 5}}, "align_template points 0 and 1 coincide"),
        ({"preprocess.std": [1.0, 0.0, 1.0]}, r"preprocess std \[1.0, 0.0, 1.0\] must be > 0"),
    ],
)
def test_load_and_read_onnx_meta_refuse_bad_onnx_metadata(tmp_path: Path, changes: dict, match: str) -> None:
    pytest.importorskip("onnxruntime", reason="loading ONNX needs onnxruntime")
    f = _write(tmp_path, "bad.onnx", _onnx_model(json.dumps(_meta_dict(**changes))))
    with pytest.raises(ValueError, match=match) as e:
        load(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)
    from edge_affect.export.onnx_export import read_onnx_meta

    with pytest.raises(ValueError, match=match):
        read_onnx_meta(f)


def test_onnx_metadata_that_is_a_list_or_duplicated(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="loading ONNX needs onnxruntime")
    from edge_affect.export.onnx_export import read_onnx_meta

    f = _write(tmp_path, "list.onnx", _onnx_model("[]"))
    with pytest.raises(ValueError, match="metadata must be a JSON object, got list"):
        load(f)
    f2 = _write(tmp_path, "dup.onnx", _onnx_model(json.dumps(_meta_dict()), dup=True))
    with pytest.raises(ValueError, match="2 'edge_affect' entries in metadata_props, expected one"):
        read_onnx_meta(f2)
    junk = _write(tmp_path, "junk.onnx", b"\x08\x07" + os.urandom(64))
    with pytest.raises(ValueError, match="not a readable ONNX model") as e:
        read_onnx_meta(junk)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="is a folder"):
        read_onnx_meta(tmp_path)


def test_onnx_whose_tensors_contradict_the_metadata(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="loading ONNX needs onnxruntime")
    u8 = _write(tmp_path, "u8.onnx", _onnx_model(json.dumps(_meta_dict()), input_type="uint8"))
    with pytest.raises(ValueError, match="input 'image' is uint8, expected a float tensor"):
        load(u8)  # it would have truncated the normalised floats to integers: silently wrong
    big = _write(tmp_path, "size.onnx", _onnx_model(json.dumps(_meta_dict()), size=24))
    with pytest.raises(ValueError, match=r"metadata says input 3×16×16 but the network's 'image' is \[3, 24, 24\]"):
        load(big)


def test_load_refuses_folders_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder; expected a model file"):
        load(tmp_path)
    f = _write(tmp_path, "notes.txt", b"hello")
    with pytest.raises(ValueError, match="unknown format"):
        load(f)
    pytest.importorskip("onnxruntime", reason="loading ONNX needs onnxruntime")
    ok = _write(tmp_path, "ok.onnx", _onnx_model(json.dumps(_meta_dict())))
    with pytest.raises(ValueError, match="max_batch 0 must be an integer >= 1"):
        load(ok, max_batch=0)
    with pytest.raises(ValueError, match="providers 5 must be a name"):
        load(ok, providers=5)
    with pytest.raises(ValueError, match="provider None must be a name"):
        load(ok, providers=[None])


# -- engine sidecars (no TensorRT needed: they are refused before it is imported) -------------------
def _sidecar(**changes: Any) -> dict[str, Any]:
    side = {
        "metadata": _meta_dict(),
        "tensorrt_version": "10.3.0.30",
        "gpu_name": "Fake GPU",
        "compute_capability": "8.7",
        "precision": "fp32",
        "batch_range": [1, 8, 16],
    }
    side.update(changes)
    return side


@pytest.mark.parametrize(
    "side,match",
    [
        ([1, 2], "expected a JSON object, got list"),
        (_sidecar(batch_range=[8, 1, 16]), r"batch_range must be \[min, opt, max\] with 1 <= min <= opt <= max"),
        (_sidecar(batch_range=[0, 1, 1]), "batch_range must be"),
        (_sidecar(batch_range="1:8:16"), "batch_range must be"),
        (_sidecar(compute_capability="sm87x"), "compute_capability must be like"),
        (_sidecar(tensorrt_version=10), "tensorrt_version must be a non-empty string"),
        (_sidecar(metadata=[]), "metadata must be an object, got list"),
        (_sidecar(version_compatible="yes"), "version_compatible must be true or false"),
        (_sidecar(metadata=_meta_dict(au_thresholds=[7] * 12)), r"probabilities in \[0, 1\]"),
        (_sidecar(metadata=_meta_dict(**{"labels.aus": list(AUS[::-1])})), "AU labels"),
    ],
)
def test_engine_sidecars_are_checked(tmp_path: Path, side: Any, match: str) -> None:
    eng = _write(tmp_path, "model.engine", b"FAKE-ENGINE")
    (tmp_path / "model.engine.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=match) as e:
        load(eng)
    assert "model.engine.json" in str(e.value) and "\n" not in str(e.value)


# -- checkpoints -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch", reason="checkpoints need PyTorch (the train extra)")
    from edge_affect.models import create_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("rel-art") / "tiny.pt", create_model("tiny").eval())


def _payload(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _save(tmp_path: Path, name: str, payload: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    return _write(tmp_path, name, buf.getvalue())


def _with_meta(tiny_pt: Path, tmp_path: Path, name: str = "crafted.pt", **changes: Any) -> Path:
    p = _payload(tiny_pt)
    meta = copy.deepcopy(p["meta"])
    for key, value in changes.items():
        target, _, leaf = key.rpartition(".")
        node = meta
        for part in filter(None, target.split(".")):
            node = node[part]
        node[leaf] = value
    p["meta"] = meta
    return _save(tmp_path, name, p)


class _Payload:
    """A pickle that runs ``touch MARKER`` when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_checkpoints_are_refused_without_unsafe_advice(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="checkpoints need PyTorch (the train extra)")
    from edge_affect.models import load_checkpoint

    marker = tmp_path / "PWNED"
    evil = _save(tmp_path, "evil.pt", {"format": "edge-affect-checkpoint/1", "meta": {}, "x": _Payload(marker)})
    with pytest.raises(ValueError) as e:
        load_checkpoint(evil)
    msg = str(e.value)
    assert msg == f"checkpoint {evil}: not a safe checkpoint (it calls posix.system); refused without running any of it"
    assert "weights_only" not in msg and "\n" not in msg
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a safe checkpoint"):
        load(evil)  # the runtime's torch backend goes through the same loader


def test_compressed_zip_checkpoints_are_refused(tiny_pt: Path, tmp_path: Path) -> None:
    """torch.load inflates deflated entries: a few KB of zeros could become GBs."""
    from edge_affect.models import load_checkpoint

    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(tiny_pt) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(ValueError, match=r"compressed zip entries \(.*\); torch.save writes none"):
        load_checkpoint(packed)


def test_checkpoint_file_errors(tiny_pt: Path, tmp_path: Path) -> None:
    from edge_affect.models import load_checkpoint

    with pytest.raises(ValueError, match="is a folder, expected a .pt or .safetensors file"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    cut = _write(tmp_path, "cut.pt", tiny_pt.read_bytes()[:3000])
    with pytest.raises(ValueError, match="not a readable torch zip") as e:
        load_checkpoint(cut)
    assert "\n" not in str(e.value)
    p = _payload(tiny_pt)
    for name, payload, match in (
        ("list.pt", [1, 2], "format 'list', expected"),
        ("sd.pt", {**p, "state_dict": [1, 2]}, "'state_dict' must map parameter names to tensors"),
        ("meta.pt", {**p, "meta": [1]}, "'meta' must be an object"),
        ("ts.pt", {**p, "train_state": 3}, "'train_state' must be an object"),
    ):
        with pytest.raises(ValueError, match=match):
            load_checkpoint(_save(tmp_path, name, payload))


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"model_name": "custom"}, r"model 'custom' is not a registered model \(edge, edge_gray48"),
        (
            {"model_config.backbone": "vit_giant_patch14_224"},
            "backbone 'vit_giant_patch14_224' is not one a registered",
        ),
        (
            {"model_config.backbone_kwargs": {"feature_index": -2, "pretrained_cfg_overlay": {"file": "/etc/passwd"}}},
            r"backbone_kwargs \['pretrained_cfg_overlay'\] are not allowed \(allowed: feature_index, channels, act_layer, "
            r"squeeze_excite, anti_alias\)",
        ),
        ({"model_config.backbone_kwargs": {"checkpoint_path": "/tmp/x.pth"}}, r"\['checkpoint_path'\] are not allowed"),
        ({"model_config.backbone_kwargs": {"feature_index": "2"}}, "feature_index '2' must be an integer in"),
        ({"model_config.backbone_kwargs": {"channels": [10**6] * 4}}, r"channels .* must be a list of 1 to 8 integers"),
        ({"model_config.backbone_kwargs": {"act_layer": "gelu"}}, "act_layer 'gelu' must be one of 'relu', 'relu6'"),
        ({"model_config.backbone_kwargs": {"squeeze_excite": 0}}, "squeeze_excite 0 must be true or false"),
        ({"model_config.backbone_kwargs": {"anti_alias": "yes"}}, "anti_alias 'yes' must be true or false"),
        ({"model_config.backbone_kwargs": [1]}, "backbone_kwargs must be dict"),
        ({"model_config.dim": "64"}, "model_config: dim must be int, got str '64'"),
        ({"model_config.heads": 0}, "heads 0 must be an integer >= 1"),
        ({"model_config.decoder_layers": 10_000}, r"decoder_layers 10000 is outside \[1, 32\]"),
        ({"model_config.mlp_ratio": 1e9}, r"mlp_ratio 1000000000.0 is outside \(0, 16\]"),
        ({"model_config.dropout": float("nan")}, r"dropout nan is outside \[0, 1\)"),
        ({"model_config.input_size": 96}, r"metadata preprocess .* differs from its model config's"),
        ({"model_config.color": "gray"}, "differs from its model config's"),
        ({"model_config.surprise": 1}, "unknown key 'surprise'"),
        ({"model_config": []}, "model_config must be an object"),
    ],
)
def test_checkpoints_build_only_registered_allow_listed_models(tiny_pt: Path, tmp_path: Path, changes, match) -> None:
    from edge_affect.models import load_checkpoint

    f = _with_meta(tiny_pt, tmp_path, **changes)
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint(f)
    assert str(e.value).startswith(f"checkpoint {f}") and "\n" not in str(e.value)


HUGE = {"dim": 2048, "heads": 16, "mlp_ratio": 16.0, "encoder_layers": 32, "decoder_layers": 32}


def test_small_checkpoint_describing_a_huge_model_fails_fast(
    tiny_pt: Path, tmp_path: Path, peak_rss_growth_kib
) -> None:
    """~1 MB on disk, ~10 G parameters described: refused from a meta-device count, peak RSS barely moves."""
    from edge_affect.models import load_checkpoint

    f = _with_meta(tiny_pt, tmp_path, **{f"model_config.{k}": v for k, v in HUGE.items()})
    assert f.stat().st_size < 2_000_000
    growth, err = peak_rss_growth_kib(lambda: load_checkpoint(f))
    assert isinstance(err, ValueError), err
    assert str(err).startswith(f"checkpoint {f} model_config: the model has ")
    assert "M parameters, above the limit of 100 M (MAX_MODEL_PARAMS)" in str(err)
    assert growth < 100 * 1024  # < 100 MiB; the model itself would need ~40 GB


def test_training_configs_are_bounded_the_same_way() -> None:
    pytest.importorskip("torch", reason="models need PyTorch (the train extra)")
    from edge_affect.models import create_model, get_config, list_models
    from edge_affect.models.registry import check_model_config, check_model_size

    with pytest.raises(ValueError, match="above the limit of 100 M"):
        create_model("tiny", **HUGE)
    with pytest.raises(ValueError, match=r"backbone_kwargs \['pretrained_cfg_overlay'\] are not allowed"):
        get_config("tiny", backbone_kwargs={"pretrained_cfg_overlay": {"file": "/x"}})
    with pytest.raises(ValueError, match="model 'tiny' with overrides \\['dim'\\]: dim must be int, got str"):
        get_config("tiny", dim="64")
    with pytest.raises(ValueError, match="heads 0 must be an integer >= 1"):
        get_config("tiny", heads=0)
    for name in list_models():  # every registered config passes its own checks (edge_gray48_slim included)
        cfg = get_config(name)
        check_model_config(cfg, name)
        assert 0 < check_model_size(cfg, name) < 100_000_000


def test_torch_backend_device_names(tiny_pt: Path) -> None:
    with pytest.raises(ValueError, match="torch device 'gpu0' is not a device name"):
        load(tiny_pt, device="gpu0")


def test_checkpoint_weights_that_do_not_fit(tiny_pt: Path, tmp_path: Path) -> None:
    from edge_affect.models import load_checkpoint

    p = _payload(tiny_pt)
    name = next(k for k, v in p["state_dict"].items() if v.ndim == 2)
    p["state_dict"][name] = p["state_dict"][name][:, :1].clone()
    with pytest.raises(ValueError, match=rf"weights do not match its config \(size mismatch for {name}") as e:
        load_checkpoint(_save(tmp_path, "shape.pt", p))
    assert "\n" not in str(e.value)


def test_safetensors_headers_are_checked(tiny_pt: Path, tmp_path: Path) -> None:
    pytest.importorskip("safetensors", reason="safetensors checkpoints need the safetensors package")
    from safetensors.torch import save as st_save

    from edge_affect.models import load_checkpoint

    p = _payload(tiny_pt)
    tensors = {k: v.contiguous() for k, v in p["state_dict"].items()}
    good = _write(tmp_path, "ok.safetensors", st_save(tensors, metadata={METADATA_KEY: json.dumps(p["meta"])}))
    load_checkpoint(good)
    cases = {
        "nojson": ("{not json", "'edge_affect' metadata is not valid JSON"),
        "list": ("[1]", "metadata must be a JSON object, got list"),
        "labels": (json.dumps({**p["meta"], "labels": {**p["meta"]["labels"], "aus": list(AUS[::-1])}}), "AU labels"),
        "kwargs": (
            json.dumps(
                {**p["meta"], "model_config": {**p["meta"]["model_config"], "backbone_kwargs": {"file": "/etc/x"}}}
            ),
            r"backbone_kwargs \['file'\] are not allowed",
        ),
    }
    for name, (text, match) in cases.items():
        f = _write(tmp_path, f"{name}.safetensors", st_save(tensors, metadata={METADATA_KEY: text}))
        with pytest.raises(ValueError, match=match) as e:
            load_checkpoint(f)
        assert str(e.value).startswith(f"checkpoint {f}") and "\n" not in str(e.value), name
    garbage = _write(tmp_path, "garbage.safetensors", b"\x10\0\0\0\0\0\0\0{" + b"\xff" * 40)
    with pytest.raises(ValueError, match="unreadable safetensors file"):
        load_checkpoint(garbage)


def test_shipped_default_model_still_loads() -> None:
    pytest.importorskip("torch", reason="checkpoints need PyTorch (the train extra)")
    if not DEFAULT_ST.is_file():
        pytest.skip(f"{DEFAULT_ST} is not in this checkout (wheels do not carry it)")
    from edge_affect.models import load_checkpoint

    model, meta = load_checkpoint(DEFAULT_ST)
    assert meta.model_name == model.model_name and meta.extra["align_template"] is not None


# -- configs: types checked like the metadata ------------------------------------------------------
@pytest.mark.parametrize(
    "d,match",
    [
        ([{"epochs": 3}], "config.toml: expected a mapping of config keys, got list"),
        ({"epochs": "8"}, "config.toml: epochs must be int, got str '8'"),
        ({"epochs": 6.0}, "epochs must be int, got float 6.0"),
        ({"lr": "fast"}, "lr must be float, got str"),
        ({"amp": "yes"}, "amp must be bool, got str"),
        ({"model_overrides": ["dim", 64]}, r"model_overrides must be dict\[str, Any\], got list"),
        ({"augment_params": 3}, "config.toml: augment_params must be a table of settings, got int 3"),
        ({"loss": [1]}, r"config.toml: loss must be a table of settings, got list \[1\]"),
        ({"loss": {"fixed_weights": {"va": "1"}}}, r"fixed_weights must be dict\[str, float\]"),
        ({"loss": {"expr_class_weights": [1, "x"]}}, r"expr_class_weights must be list\[float\] \| None"),
        ({"init_from": 3}, r"init_from must be str \| None, got int 3"),
    ],
)
def test_config_types(d: Any, match: str) -> None:
    from edge_affect.config import TrainConfig

    with pytest.raises(ValueError, match=match) as e:
        TrainConfig.from_dict(d, "config.toml")
    assert "\n" not in str(e.value)


def test_config_files_in_the_repo_pass() -> None:
    from edge_affect.config import TrainConfig, load_config_file, load_export_profile

    for f in sorted((ROOT / "configs").glob("*.toml")):
        TrainConfig.from_dict(load_config_file(f), str(f))
    for f in sorted((ROOT / "export").glob("*.toml")):
        load_export_profile(f)
    with pytest.raises(ValueError, match=r"batch must be tuple\[int, int, int\], got list \[1, 8\]"):
        from edge_affect.config import ExportProfile, from_dict

        from_dict(ExportProfile, {"batch": [1, 8]}, "profile.toml")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_binary_config_file_is_one_line_naming_the_file(tmp_path: Path, suffix: str) -> None:
    """An export profile, training config or evaluation file that is not text (a checkpoint passed by
    mistake): one line naming the file, not a UnicodeDecodeError without it."""
    from edge_affect.config import load_config_file, load_export_profile

    f = tmp_path / f"profile{suffix}"
    f.write_bytes(b"\x80\x04\x95PK\x03\x04\xff\xfe" * 8)
    for read in (load_config_file, load_export_profile):
        with pytest.raises(ValueError) as e:
            read(f)
        msg = str(e.value)
        assert msg == f"{f}: not UTF-8 text (byte 0), expected a JSON or TOML file", msg
