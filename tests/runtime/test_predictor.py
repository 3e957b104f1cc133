"""Predictor: ORT-vs-PyTorch parity through predict, input kinds, bad input, metadata checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.artifact import ArtifactMeta
from edge_affect.runtime import load
from edge_affect.runtime.backends.base import BaseRunner, TensorSpec
from edge_affect.runtime.predictor import Predictor
from edge_affect.schema import AUS, EXPRESSIONS, Preprocess

#: FP32 ONNX Runtime vs eager PyTorch, after softmax/sigmoid/tanh (all values in [-1, 1]).
PARITY_ATOL = 1e-4


def _faces(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(48, 40), (64, 64), (100, 90), (31, 57)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(n)]


def _flat(rec: dict) -> np.ndarray:
    return np.array([rec["valence"], rec["arousal"], *rec["expression_probs"].values(), *rec["au_probs"].values()])


def test_ort_matches_torch_through_predict(artifacts: dict[str, Path]) -> None:
    faces = _faces(9)
    with load(artifacts["onnx"]) as ort_p, load(artifacts["pt"]) as pt_p:
        assert ort_p.backend == "onnxruntime" and ort_p.device == "CPUExecutionProvider"
        assert pt_p.backend == "torch"
        a, b = ort_p.predict(faces), pt_p.predict(faces)
    assert len(a) == len(b) == 9
    for ra, rb in zip(a, b, strict=True):
        assert ra["status"] == rb["status"] == "ok"
        np.testing.assert_allclose(_flat(ra), _flat(rb), atol=PARITY_ATOL, rtol=0)
        assert (
            ra["expression"] == rb["expression"] or abs(ra["expression_score"] - rb["expression_score"]) < PARITY_ATOL
        )


def test_record_schema_and_json(artifacts: dict[str, Path]) -> None:
    with load(artifacts["onnx"]) as p:
        rec = p.predict(_faces(1)[0])[0]
    json.dumps(rec, allow_nan=False)
    assert set(rec) == {
        "status",
        "error",
        "valence",
        "arousal",
        "expression",
        "expression_score",
        "expression_probs",
        "au_probs",
        "au_active",
    }
    assert -1 <= rec["valence"] <= 1 and -1 <= rec["arousal"] <= 1
    assert list(rec["expression_probs"]) == list(EXPRESSIONS)
    assert abs(sum(rec["expression_probs"].values()) - 1) < 1e-5
    assert rec["expression"] == max(rec["expression_probs"], key=rec["expression_probs"].get)
    assert list(rec["au_probs"]) == list(AUS)
    assert all(0 <= v <= 1 for v in rec["au_probs"].values())
    assert rec["au_active"] == {k: v >= 0.5 for k, v in rec["au_probs"].items()}


def test_input_kinds_agree(artifacts: dict[str, Path]) -> None:
    """Gray, RGBA, 16-bit, list, N×H×W×3 batch and any size all work; RGBA/16-bit match their 8-bit RGB."""
    rgb = _faces(1)[0]
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 7, np.uint8)], axis=2)
    rgb16 = rgb.astype(np.uint16) * 257
    gray = rgb[:, :, 0]
    with load(artifacts["onnx"]) as p:
        base = p.predict(rgb)[0]
        for other in (rgba, rgb16, rgb.astype(np.float32) / 255.0):
            np.testing.assert_allclose(_flat(p.predict(other)[0]), _flat(base), atol=1e-6)
        assert p.predict(gray)[0]["status"] == "ok"
        assert p.predict(gray[:, :, None])[0]["status"] == "ok"
        batch = np.stack([rgb, rgb, rgb])
        out = p.predict(batch)
        assert len(out) == 3 and all(r["status"] == "ok" for r in out)
        big = p.predict([np.zeros((640, 480, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)])
        assert [r["status"] for r in big] == ["ok", "ok"]
        # More faces than one call takes are chunked transparently.
        many = p.predict([rgb] * 70)
        assert len(many) == 70
        np.testing.assert_allclose(_flat(many[-1]), _flat(base), atol=1e-5)


def test_bad_faces_get_a_status_not_an_exception(artifacts: dict[str, Path]) -> None:
    good = _faces(1)[0]
    bad = [np.zeros((0, 10, 3), np.uint8), np.zeros((5, 5, 7), np.uint8), np.zeros((8, 8), np.int32), "nope"]
    with load(artifacts["onnx"]) as p:
        out = p.predict([good, *bad, good])
        assert [r["status"] for r in out] == ["ok", "bad_input", "bad_input", "bad_input", "bad_input", "ok"]
        assert "too small" in out[1]["error"] and "face 1" in out[1]["error"]
        assert out[1]["valence"] is None
        json.dumps(out, allow_nan=False)
        with pytest.raises(ValueError, match="no faces given"):
            p.predict([])


class _NaNRunner(BaseRunner):
    """Fake engine output: NaN in row 1, Inf in row 2."""

    backend = "fake"

    def __init__(self, size: int) -> None:
        super().__init__("fake")
        self.inputs = {"image": TensorSpec("image", ("N", 3, size, size), np.dtype(np.float32))}
        self.outputs = {
            k: TensorSpec(k, ("N", d), np.dtype(np.float32)) for k, d in (("va", 2), ("expr", 8), ("au", 12))
        }

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed):
        n = feed["image"].shape[0]
        out = {
            "va": np.zeros((n, 2), np.float32),
            "expr": np.zeros((n, 8), np.float32),
            "au": np.zeros((n, 12), np.float32),
        }
        out["va"][1, 0] = np.nan
        out["au"][2, 3] = np.inf
        return out


def test_nan_inf_outputs_become_per_face_status() -> None:
    meta = ArtifactMeta(preprocess=Preprocess(input_size=32))
    p = Predictor(_NaNRunner(32).activate(), meta)
    out = p.predict([np.zeros((32, 32, 3), np.uint8)] * 4)
    assert [r["status"] for r in out] == ["ok", "nonfinite_output", "nonfinite_output", "ok"]
    assert "va" in out[1]["error"] and "au" in out[2]["error"]
    json.dumps(out, allow_nan=False)


def _rewrite_meta(src: Path, dst: Path, **changes) -> Path:
    onnx = pytest.importorskip("onnx", reason="rewriting ONNX metadata needs the onnx package")
    m = onnx.load(str(src))
    prop = next(p for p in m.metadata_props if p.key == "edge_affect")
    d = json.loads(prop.value)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    if changes.get("drop_all"):
        del m.metadata_props[:]
    else:
        prop.value = json.dumps(d)
    onnx.save(m, str(dst))
    return dst


def test_metadata_that_does_not_match_tensors(artifacts: dict[str, Path], tmp_path: Path) -> None:
    meta = json.loads(json.dumps(ArtifactMeta(preprocess=Preprocess(input_size=112)).to_dict()))
    bad = _rewrite_meta(artifacts["onnx"], tmp_path / "wrong_size.onnx", preprocess=meta["preprocess"])
    with pytest.raises(ValueError, match=r"metadata says input 3×112×112 but the network's 'image' is \[3, 64, 64\]"):
        load(bad)
    labels = {"expressions": list(EXPRESSIONS[:7]), "aus": list(AUS), "va": ["valence", "arousal"]}
    bad2 = _rewrite_meta(artifacts["onnx"], tmp_path / "wrong_labels.onnx", labels=labels)
    with pytest.raises(ValueError, match="expression labels .* differ from this edge-affect's"):
        load(bad2)
    none = _rewrite_meta(artifacts["onnx"], tmp_path / "no_meta.onnx", drop_all=True)
    with pytest.raises(ValueError, match="no edge-affect metadata"):
        load(none)


def test_artifact_errors_are_one_line(artifacts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not really onnx")
    with pytest.raises(ValueError, match="ONNX Runtime cannot load it") as e:
        load(garbage)
    assert "\n" not in str(e.value)
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="unknown format"):
        load(unknown)
    with pytest.raises(ValueError, match="backend 'tensorrt' runs .engine"):
        load(artifacts["onnx"], backend="tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        load(artifacts["onnx"], backend="openvino")
    with pytest.raises(ValueError, match="provider 'rocm' is not in this onnxruntime build"):
        load(artifacts["onnx"], providers=["rocm"])


def test_backend_detected_from_content(artifacts: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(artifacts["onnx"].read_bytes())
    with load(renamed) as p:
        assert p.backend == "onnxruntime"
        assert p.meta.model_name == "tiny"
