"""The TensorRT engine builder and its runtime side on Jetson/DLA, checked without a GPU (issue 21, item 7):
a DLA build needs a static batch; ``gpu_fallback = false`` reaches the builder; the engine's DLA core reaches
``IRuntime.DLA_core`` before deserialising; a rejected timing cache is reported and not written back; the
``trt`` extra keeps cuda-python on the 12.x line, and a too-new cuda-python is named in the unavailable reason.

TensorRT is not installable here: where a TensorRT object is needed, the fakes of tests/runtime/test_tensorrt_fake.py
(written against the documented API) stand in, and the real build/run is in the ``tensorrt``-marked tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_affect.export.tensorrt_build import (
    CUDA_ERROR_INSUFFICIENT_DRIVER,
    BatchRange,
    EngineOptions,
    attach_timing_cache,
    builder_settings,
    check_dla,
    cuda_error_reason,
    trt_run,
)
from edge_affect.runtime.backends import tensorrt_runner as tr
from edge_affect.runtime.backends.tensorrt_runner import normalize_sidecar, runtime_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ONNX = ROOT / "edge_affect" / "assets" / "models" / "default" / "model.onnx"


def _fakes():
    """tests/runtime/test_tensorrt_fake.py as a module (its fake tensorrt/cudart follow the documented API)."""
    path = ROOT / "tests" / "runtime" / "test_tensorrt_fake.py"
    spec = importlib.util.spec_from_file_location("_tensorrt_fakes", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_tensorrt_fakes", mod)
    spec.loader.exec_module(mod)
    return mod


# -- 1. DLA needs static shapes ------------------------------------------------------------------------------------
def test_dla_build_refuses_a_dynamic_batch():
    with pytest.raises(ValueError, match=r"DLA core 0: batch range 1:8:32 is dynamic.*--batch 8:8:8"):
        EngineOptions(BatchRange(1, 8, 32), dla_core=0)
    with pytest.raises(ValueError, match=r"DLA core 1: batch range 1:1:4"):
        check_dla(BatchRange(1, 1, 4), 1)
    with pytest.raises(ValueError, match="dla_core -1"):
        check_dla(BatchRange(1, 1, 1), -1)
    EngineOptions(BatchRange(2, 2, 2), dla_core=1)  # static: accepted
    EngineOptions(BatchRange(1, 8, 32))  # GPU: any range


def test_build_engine_cli_refuses_dla_with_a_dynamic_profile(tmp_path, capsys):
    """Refused in one line before anything is built, also where TensorRT is missing (so a Jetson recipe is
    caught on the machine that writes it)."""
    from edge_affect.cli import main

    out = tmp_path / "m.engine"
    args = ["build-engine", str(DEFAULT_ONNX), "--out", str(out), "--timing-cache", str(tmp_path / "c")]
    assert main([*args, "--dla", "0", "--batch", "1:4:8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-affect: error: DLA core 0: batch range 1:4:8 is dynamic") and err.count("\n") == 1
    prof = tmp_path / "dla.toml"
    prof.write_text('target = "jetson-orin-dla"\nprecisions = ["int8"]\nbatch = [1, 1, 4]\ndla_core = 0\n')
    assert main([*args, "--profile", str(prof)]) == 2
    assert "DLA core 0: batch range 1:1:4 is dynamic" in capsys.readouterr().err
    assert not out.exists()


def test_export_refuses_dla_engines_with_a_dynamic_batch(tmp_path):
    from edge_affect.export.pipeline import ExportRequest, export_all

    req = ExportRequest(DEFAULT_ONNX.with_name("model.safetensors"), tmp_path / "o", engine=True, dla_core=0)
    with pytest.raises(ValueError, match="DLA core 0: batch range 1:8:32 is dynamic"):
        export_all(req)
    assert not (tmp_path / "o").exists()


def test_shipped_dla_recipe_is_static():
    from edge_affect.config import load_export_profile

    prof = load_export_profile(ROOT / "export" / "jetson-orin-dla.toml")
    check_dla(BatchRange(*prof.batch), prof.dla_core)


# -- 2. gpu_fallback = false is honoured --------------------------------------------------------------------------
def test_gpu_fallback_reaches_the_builder():
    base = BatchRange(1, 1, 1)
    assert builder_settings(EngineOptions(base, dla_core=1))["flags"] == ["GPU_FALLBACK"]
    s = builder_settings(EngineOptions(base, dla_core=1, gpu_fallback=False))
    assert s["flags"] == [] and s["DLA_core"] == 1 and s["default_device_type"] == "DLA"
    s = builder_settings(EngineOptions(base, version_compatible=True, workspace_mib=512))
    assert s == {"flags": ["VERSION_COMPATIBLE"], "workspace_bytes": 512 << 20}  # GPU: no DLA keys


def test_profile_gpu_fallback_false_reaches_the_request(tmp_path, monkeypatch):
    import edge_affect.export.pipeline as pipeline
    from edge_affect.cli import main

    seen = {}

    def capture(req):
        seen["req"] = req
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "export_all", capture)
    prof = tmp_path / "dla.toml"
    prof.write_text(
        'target = "jetson-orin-dla"\nprecisions = ["fp16"]\nbatch = [1, 1, 1]\ndla_core = 1\n'
        "gpu_fallback = false\nbuild_engine_here = true\n"
    )
    ckpt = DEFAULT_ONNX.with_name("model.safetensors")
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), "--out", str(tmp_path / "o"), "--profile", str(prof)])
    assert seen["req"].dla_core == 1 and seen["req"].gpu_fallback is False
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), "--out", str(tmp_path / "o"), "--dla", "0", "--batch", "1:1:1", "--engine"])
    assert seen["req"].gpu_fallback is True
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), "--out", str(tmp_path / "o"), "--dla", "0", "--no-gpu-fallback"])
    assert seen["req"].gpu_fallback is False


# -- 3. the sidecar's DLA core reaches the runtime ----------------------------------------------------------------
def test_sidecar_to_runtime_settings():
    assert runtime_settings({"dla_core": 1}) == {"DLA_core": 1}
    assert runtime_settings({"dla_core": None, "version_compatible": True}) == {"engine_host_code_allowed": True}
    assert runtime_settings({}) == {}
    side = {
        "metadata": {},
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "batch_range": [1, 1, 1],
    }
    assert normalize_sidecar({**side, "dla_core": 1})["dla_core"] == 1
    for bad in (-1, "1", True):
        with pytest.raises(ValueError, match="dla_core must be null or a DLA core number"):
            normalize_sidecar({**side, "dla_core": bad})
    with pytest.raises(ValueError, match="gpu_fallback must be true or false"):
        normalize_sidecar({**side, "gpu_fallback": "no"})


@pytest.fixture()
def fake_dla_engine(monkeypatch, tmp_path):
    """A fake engine whose sidecar says DLA core 1; the fake IRuntime records its DLA_core at deserialisation."""
    f = _fakes()
    cudart = f.FakeCudart()
    trt = f.make_fake_trt(cudart)
    seen: list[int | None] = []
    base = trt.Runtime

    class Runtime(base):
        DLA_core = None  # TensorRT's default: core 0 (the attribute is unset until assigned)

        def deserialize_cuda_engine(self, data):
            seen.append(self.DLA_core)
            return super().deserialize_cuda_engine(data)

    trt.Runtime = Runtime
    monkeypatch.setattr(tr, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tr, "import_cudart", lambda: cudart)
    eng = tmp_path / "model.int8.engine"
    eng.write_bytes(b"FAKE-ENGINE")
    side = {
        "tensorrt_version": trt.__version__,
        "gpu_name": "Fake GPU",
        "compute_capability": "8.7",
        "batch_range": [1, 8, 16],
        "metadata": {},
        "dla_core": 1,
    }
    eng.with_name(eng.name + ".json").write_text(json.dumps(side))
    return eng, seen, f


def test_runner_loads_a_dla_engine_onto_its_core(fake_dla_engine):
    eng, seen, _ = fake_dla_engine
    with tr.TensorRTRunner(eng) as r:
        assert seen == [1]  # set before deserialize_cuda_engine, not after
        assert r.device == "Fake GPU DLA core 1"


def test_parity_runs_engines_through_the_runtime_runner(fake_dla_engine):
    """``trt_run`` (export's parity of engines) loads through ``TensorRTRunner``: same core, same outputs."""
    eng, seen, f = fake_dla_engine
    x = np.random.default_rng(0).standard_normal((20, 3, f.S, f.S)).astype(np.float32)
    got = trt_run(eng, x)  # 20 frames > max batch 16: two chunks
    want = f.fake_outputs(x)
    assert seen == [1]
    for k in ("va", "expr", "au"):
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6)


# -- 4. timing cache results are checked --------------------------------------------------------------------------
class _Config:
    """``IBuilderConfig``'s timing-cache calls as documented: ``create_timing_cache`` returns None for bytes it
    cannot read; ``set_timing_cache(cache, ignore_mismatch=False)`` returns False for another device's cache."""

    def __init__(self, readable: bool = True, same_device: bool = True) -> None:
        self.readable, self.same_device, self.attached = readable, same_device, None

    def create_timing_cache(self, blob: bytes):
        if blob and not self.readable:
            return None
        return {"blob": bytes(blob)}

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache["blob"] and not self.same_device and not ignore_mismatch:
            return False
        self.attached = cache
        return True


def test_timing_cache_kept_when_accepted(tmp_path):
    p = tmp_path / "trt.timing.cache"
    cfg = _Config()
    cache, write_back = attach_timing_cache(cfg, p)  # no file yet: a fresh cache, written after the build
    assert cache == {"blob": b""} and write_back and cfg.attached is cache
    p.write_bytes(b"CACHE-OF-THIS-GPU")
    cache, write_back = attach_timing_cache(cfg, p)
    assert cache["blob"] == b"CACHE-OF-THIS-GPU" and write_back


@pytest.mark.parametrize(
    ("cfg", "why"),
    [(_Config(same_device=False), "another GPU or TensorRT version"), (_Config(readable=False), "cannot be read")],
)
def test_rejected_timing_cache_is_reported_and_not_written_back(tmp_path, caplog, cfg, why):
    p = tmp_path / "trt.timing.cache"
    p.write_bytes(b"CACHE-OF-ANOTHER-GPU")
    cache, write_back = attach_timing_cache(cfg, p)
    assert cache == {"blob": b""} and cfg.attached is cache and not write_back  # built with a fresh cache
    assert why in caplog.text and str(p) in caplog.text
    assert p.read_bytes() == b"CACHE-OF-ANOTHER-GPU"


# -- 5. cuda-python stays on the line the driver runs -------------------------------------------------------------
def test_trt_extra_bounds_cuda_python():
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("trt", "cuda12"):
        req = next(Requirement(r) for r in extras[extra] if Requirement(r).name == "cuda-python")
        assert "12.6.0" in req.specifier and "12.9.1" in req.specifier, extra
        assert "13.0.0" not in req.specifier, f"[{extra}] lets cuda-python 13 (needs a 580+ driver) in"


def test_unavailable_reason_names_a_too_new_cuda_python():
    msg = cuda_error_reason(CUDA_ERROR_INSUFFICIENT_DRIVER, "13.0.2")
    assert "cuda-python 13.0.2 needs a 580+ NVIDIA driver" in msg and "cuda-python>=12.6,<13" in msg
    assert "newer NVIDIA driver" in cuda_error_reason(CUDA_ERROR_INSUFFICIENT_DRIVER, "12.9.0")
    assert cuda_error_reason(100, "12.6.0") == "no CUDA GPU visible (CUDA error 100)"
