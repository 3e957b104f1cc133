"""TensorRT backend. Sidecar checks run everywhere; engine tests need TensorRT + a CUDA GPU (marked, skipped here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_affect.runtime import load
from edge_affect.runtime.backends.tensorrt_runner import check_engine_compat, read_sidecar

RUNNING = {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7"}


def test_engine_from_other_tensorrt_version_names_both() -> None:
    side = {
        **RUNNING,
        "tensorrt_version": "11.0.0.12",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
    }
    with pytest.raises(ValueError) as e:
        check_engine_compat(side, RUNNING, "m.engine")
    msg = str(e.value)
    assert "\n" not in msg
    assert (
        "TensorRT 11.0.0.12 on NVIDIA H100 80GB HBM3 (sm 9.0)" in msg and "TensorRT 10.3.0.30 on Orin (sm 8.7)" in msg
    )


def test_engine_from_other_gpu_names_both(caplog: pytest.LogCaptureFixture) -> None:
    side = {
        **RUNNING,
        "tensorrt_version": "10.3.0.26",
        "gpu_name": "NVIDIA GeForce RTX 4090",
        "compute_capability": [8, 9],
    }
    with pytest.raises(ValueError, match=r"NVIDIA GeForce RTX 4090 \(sm 8.9\).*Orin \(sm 8.7\)"):
        check_engine_compat(side, RUNNING, "m.engine")
    same_cc = {**RUNNING, "gpu_name": "Jetson AGX Orin"}
    with pytest.raises(ValueError, match="rebuild the engine on this GPU"):
        check_engine_compat(same_cc, RUNNING, "m.engine")
    with caplog.at_level(logging.WARNING):
        check_engine_compat(same_cc, RUNNING, "m.engine", allow_device_mismatch=True)
    assert "Jetson AGX Orin" in caplog.text
    check_engine_compat(dict(RUNNING), RUNNING, "m.engine")  # same build: fine (build number ignored)


def test_engine_without_sidecar(tmp_path: Path) -> None:
    eng = tmp_path / "model.fp16.engine"
    eng.write_bytes(b"not an engine")
    with pytest.raises(FileNotFoundError, match="has no sidecar model.fp16.engine.json"):
        read_sidecar(eng)
    with pytest.raises(FileNotFoundError, match="has no sidecar"):
        load(eng)


def test_engine_where_tensorrt_is_missing(tmp_path: Path) -> None:
    pytest.importorskip("edge_affect.artifact")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    except ImportError:
        pass
    from edge_affect.artifact import ArtifactMeta
    from edge_affect.schema import Preprocess

    eng = tmp_path / "model.fp16.engine"
    eng.write_bytes(b"x")
    meta = ArtifactMeta(preprocess=Preprocess(input_size=64), precision="fp16").to_dict()
    (tmp_path / "model.fp16.engine.json").write_text(
        json.dumps(
            {**RUNNING, "precision": "fp16", "batch_range": [1, 8, 32], "onnx_sha256": "0" * 64, "metadata": meta}
        )
    )
    with pytest.raises(RuntimeError, match=r"TensorRT is not installed: pip install 'edge-affect\[trt\]'"):
        load(eng)


# -- needs TensorRT and a GPU ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trt_engine(artifacts: dict[str, Path]) -> Path:
    """An FP32 engine for the tiny model (batch 1..16), built here, with a sidecar like the export step's."""
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'edge-affect[trt]') and a CUDA GPU")
    from edge_affect.artifact import sha256_file
    from edge_affect.runtime.backends.tensorrt_runner import build_engine_from_onnx

    onnx_path = artifacts["onnx"]
    with load(onnx_path, providers="cpu") as p:
        meta, s = p.meta, p.input_size
    eng = artifacts["dir"] / "model.fp32.engine"
    build_engine_from_onnx(onnx_path, eng, profile={"image": ((1, 3, s, s), (8, 3, s, s), (16, 3, s, s))})
    side_path = eng.with_name(eng.name + ".json")
    side = json.loads(side_path.read_text())
    side.update({"batch_range": [1, 8, 16], "onnx_sha256": sha256_file(onnx_path), "metadata": meta.to_dict()})
    side_path.write_text(json.dumps(side))
    return eng


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_matches_onnxruntime(trt_engine: Path, artifacts: dict[str, Path], cuda_graph: bool) -> None:
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (70, 60, 3), dtype=np.uint8) for _ in range(20)]  # > max batch 16: chunked
    with load(trt_engine, cuda_graph=cuda_graph) as t, load(artifacts["onnx"], providers="cpu") as o:
        assert t.backend == "tensorrt" and t.max_batch == 16
        t.warmup()
        for _ in range(2):  # graph replay after capture
            a, b = t.predict(faces), o.predict(faces)
    for ra, rb in zip(a, b, strict=True):
        assert ra["status"] == "ok"
        assert abs(ra["valence"] - rb["valence"]) < 1e-3
        np.testing.assert_allclose(list(ra["au_probs"].values()), list(rb["au_probs"].values()), atol=1e-3)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_refuses_other_version_before_deserializing(trt_engine: Path, tmp_path: Path) -> None:
    eng = tmp_path / trt_engine.name
    eng.write_bytes(b"corrupt bytes: must never reach deserialize_cuda_engine")
    side = json.loads(trt_engine.with_name(trt_engine.name + ".json").read_text())
    side["tensorrt_version"] = "9.9.9.9"
    eng.with_name(eng.name + ".json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"engine built with TensorRT 9\.9\.9\.9 on .*, but this is TensorRT "):
        load(eng)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_yunet_on_tensorrt_matches_onnxruntime(
    astronaut: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT and a CUDA GPU")
    monkeypatch.setenv("EDGE_AFFECT_CACHE", str(tmp_path))
    from edge_affect.runtime.faces import YuNetDetector, yunet_runner

    d_trt, d_ort = YuNetDetector(yunet_runner("tensorrt")), YuNetDetector(yunet_runner("onnxruntime", "cpu"))
    a, b = d_trt.detect(astronaut), d_ort.detect(astronaut)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].landmarks, b[0].landmarks, atol=0.5)
