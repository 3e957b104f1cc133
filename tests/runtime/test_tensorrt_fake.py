"""TensorRTRunner's control flow on CPU: fake ``tensorrt`` and ``cudart`` modules that follow the documented API.

"Device" memory is host memory, copies are ``memmove``, the engine computes outputs with numpy, and a
CUDA graph records the copies/launches made during capture and replays them. This checks what can be
checked without a GPU: buffers sized from the profile, named tensors, ``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3`` order, graph capture and replay, profile limits, and that
the sidecar check happens before deserialisation. The real thing runs in ``test_tensorrt.py``.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_affect.artifact import ArtifactMeta
from edge_affect.runtime.backends import tensorrt_runner as tr
from edge_affect.runtime.predictor import load
from edge_affect.schema import Preprocess

S = 32
OUT_DIMS = {"va": 2, "expr": 8, "au": 12}


class FakeCudart:
    """Just enough of ``cuda.bindings.runtime``: every call returns ``(err, *values)``."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1, cudaStreamCaptureModeGlobal=0)

    def __init__(self) -> None:
        self.mem: dict[int, ctypes.Array] = {}
        self.capture: list | None = None
        self.launches = 0
        self.freed = 0

    def _alloc(self, n: int) -> tuple[int, int]:
        buf = (ctypes.c_byte * n)()
        self.mem[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMallocHost = cudaMalloc = _alloc

    def cudaFree(self, p: int) -> tuple[int]:
        self.mem.pop(int(p))
        self.freed += 1
        return (0,)

    cudaFreeHost = cudaFree

    def cudaGetErrorString(self, err: int) -> tuple[int, bytes]:
        return 0, b"fake error"

    def cudaSetDevice(self, i: int) -> tuple[int]:
        return (0,)

    def cudaGetDeviceProperties(self, i: int) -> tuple[int, SimpleNamespace]:
        return 0, SimpleNamespace(name=b"Fake GPU", major=8, minor=7)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaStreamDestroy(self, s: int) -> tuple[int]:
        return (0,)

    def cudaStreamSynchronize(self, s: int) -> tuple[int]:
        return (0,)

    def run(self, op) -> None:
        if self.capture is not None:
            self.capture.append(op)
        else:
            op()

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        assert int(dst) in self.mem and int(src) in self.mem, "copy to/from unallocated memory"
        self.run(lambda: ctypes.memmove(int(dst), int(src), n))
        return (0,)

    def cudaStreamBeginCapture(self, s: int, mode: int) -> tuple[int]:
        self.capture = []
        return (0,)

    def cudaStreamEndCapture(self, s: int) -> tuple[int, list]:
        ops, self.capture = self.capture, None
        return 0, ops

    def cudaGraphInstantiate(self, g: list, flags: int) -> tuple[int, list]:
        return 0, list(g)

    def cudaGraphLaunch(self, g: list, s: int) -> tuple[int]:
        self.launches += 1
        for op in g:
            op()
        return (0,)

    def cudaGraphDestroy(self, g: list) -> tuple[int]:
        return (0,)

    cudaGraphExecDestroy = cudaGraphDestroy


class FakeContext:
    def __init__(self, cudart: FakeCudart) -> None:
        self.cudart = cudart
        self.shape = (16, 3, S, S)
        self.addr: dict[str, int] = {}
        self.executions = 0
        self.compute = fake_outputs

    def set_input_shape(self, name: str, shape) -> bool:
        assert name == "image"
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shape if name == "image" else (self.shape[0], OUT_DIMS[name])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert ptr in self.cudart.mem
        self.addr[name] = ptr
        return True

    def set_optimization_profile_async(self, i: int, s: int) -> bool:
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int)
        shape = self.shape

        def op() -> None:
            self.executions += 1
            n = int(np.prod(shape))
            x = np.frombuffer((ctypes.c_float * n).from_address(self.addr["image"]), np.float32).reshape(shape)
            for name, outs in self.compute(x).items():
                dst = np.frombuffer((ctypes.c_float * outs.size).from_address(self.addr[name]), np.float32)
                dst[:] = outs.reshape(-1)

        self.cudart.run(op)
        return True


def fake_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake network computes: per-image channel means, spread over the outputs."""
    m = x.mean(axis=(2, 3))  # N×3
    return {"va": np.tanh(m[:, :2]), "expr": np.tile(m, (1, 3))[:, :8], "au": np.tile(m, (1, 4))}


class FakeEngine:
    names = ("image", "va", "expr", "au")
    num_io_tensors = 4
    num_optimization_profiles = 1

    def __init__(self, cudart: FakeCudart) -> None:
        self.context = FakeContext(cudart)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "IN" if name == "image" else "OUT"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, S, S) if name == "image" else (-1, OUT_DIMS[name])

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [(1, 3, S, S), (8, 3, S, S), (16, 3, S, S)]

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def create_execution_context(self) -> FakeContext:
        return self.context


def make_fake_trt(cudart: FakeCudart) -> SimpleNamespace:
    trt = SimpleNamespace(__version__="10.3.0.30", deserialized=0, engines=[])
    trt.TensorIOMode = SimpleNamespace(INPUT="IN", OUTPUT="OUT")
    trt.nptype = lambda dt: np.float32

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            trt.deserialized += 1
            if data != b"FAKE-ENGINE":
                return None
            trt.engines.append(FakeEngine(cudart))
            return trt.engines[-1]

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    cudart = FakeCudart()
    trt = make_fake_trt(cudart)
    monkeypatch.setattr(tr, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tr, "import_cudart", lambda: cudart)
    eng = tmp_path / "model.fp16.engine"
    eng.write_bytes(b"FAKE-ENGINE")
    meta = ArtifactMeta(preprocess=Preprocess(input_size=S), precision="fp16", model_name="fake")
    side = {
        "tensorrt_version": "10.3.0.30",
        "gpu_name": "Fake GPU",
        "compute_capability": "8.7",
        "precision": "fp16",
        "batch_range": [1, 8, 16],
        "onnx_sha256": "0" * 64,
        "metadata": meta.to_dict(),
    }
    eng.with_name(eng.name + ".json").write_text(json.dumps(side))
    return SimpleNamespace(cudart=cudart, trt=trt, engine=eng, side=side)


def _faces(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (S, S, 3), dtype=np.uint8) for _ in range(n)]


def _expected(p, faces) -> dict[str, np.ndarray]:
    x, _ = p.preprocess(faces)
    return fake_outputs(x)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_fake_engine_runs_through_predict(fake: SimpleNamespace, cuda_graph: bool) -> None:
    with load(fake.engine, cuda_graph=cuda_graph) as p:
        assert p.backend == "tensorrt" and p.device == "Fake GPU" and p.max_batch == 16
        runner = p.runner
        # Buffers sized for the profile's max batch (16): input 16×3×32×32 float32.
        assert runner._bufs["image"]["nbytes"] == 16 * 3 * S * S * 4 and runner._bufs["au"]["nbytes"] == 16 * 12 * 4
        for n in (5, 5, 20, 1):  # 20 > max batch 16: the predictor splits it into 16 + 4
            faces = _faces(n)
            recs = p.predict(faces)
            exp = _expected(p, faces)
            got_va = np.array([[r["valence"], r["arousal"]] for r in recs])
            np.testing.assert_allclose(got_va, np.clip(exp["va"], -1, 1), atol=1e-6)
            got_au = np.array([list(r["au_probs"].values()) for r in recs])
            np.testing.assert_allclose(got_au, 1 / (1 + np.exp(-exp["au"])), atol=1e-6)
        if cuda_graph:
            # Graphs captured for shapes 5, 16, 4, 1 (one plain run each before capture); replays on repeats.
            assert fake.cudart.launches == 5
        else:
            assert fake.cudart.launches == 0
    assert fake.cudart.freed == 8 and not fake.cudart.mem  # host + device buffer per tensor, all freed


def test_shape_outside_profile(fake: SimpleNamespace) -> None:
    with load(fake.engine) as p:
        with pytest.raises(ValueError, match=r"shape \(17, 3, 32, 32\) is outside the engine profile"):
            p.runner.infer({"image": np.zeros((17, 3, S, S), np.float32)})
        with pytest.raises(ValueError, match="outside the engine profile"):
            p.runner.infer({"image": np.zeros((1, 3, S + 1, S), np.float32)})


def test_sidecar_checked_before_deserializing(fake: SimpleNamespace) -> None:
    side_path = fake.engine.with_name(fake.engine.name + ".json")
    for key, value, text in [
        (
            "tensorrt_version",
            "10.7.0.23",
            "engine built with TensorRT 10.7.0.23 on Fake GPU (sm 8.7), but this is TensorRT 10.3.0.30 on Fake GPU (sm 8.7)",
        ),
        (
            "gpu_name",
            "NVIDIA A100-SXM4-80GB",
            "engine built for TensorRT 10.3.0.30 on NVIDIA A100-SXM4-80GB (sm 8.7), but this is TensorRT 10.3.0.30 on Fake GPU (sm 8.7)",
        ),
        ("compute_capability", "8.0", "(sm 8.0), but this is TensorRT 10.3.0.30 on Fake GPU (sm 8.7)"),
    ]:
        side_path.write_text(json.dumps({**fake.side, key: value}))
        with pytest.raises(ValueError) as e:
            load(fake.engine)
        assert text in str(e.value) and "\n" not in str(e.value)
    assert fake.trt.deserialized == 0


def test_corrupt_engine_and_metadata_mismatch(fake: SimpleNamespace) -> None:
    fake.engine.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="could not deserialize the engine"):
        load(fake.engine)
    fake.engine.write_bytes(b"FAKE-ENGINE")
    side_path = fake.engine.with_name(fake.engine.name + ".json")
    meta = {**fake.side["metadata"], "preprocess": {**fake.side["metadata"]["preprocess"], "input_size": 64}}
    side_path.write_text(json.dumps({**fake.side, "metadata": meta}))
    with pytest.raises(ValueError, match=r"metadata says input 3×64×64 but the network's 'image' is \[3, 32, 32\]"):
        load(fake.engine)
    assert fake.cudart.freed == 8  # the runner is released when the Predictor refuses it


def test_nan_from_engine_is_a_status(fake: SimpleNamespace) -> None:
    def nan_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
        out = fake_outputs(x)
        out["expr"][0, 0] = np.nan
        return out

    with load(fake.engine) as p:
        p.runner.context.compute = nan_outputs
        recs = p.predict(_faces(3))
    assert [r["status"] for r in recs] == ["nonfinite_output", "ok", "ok"]


def test_sidecar_missing_keys_is_a_clear_error(fake: SimpleNamespace) -> None:
    side = {k: v for k, v in fake.side.items() if k not in ("gpu_name", "batch_range")}
    fake.engine.with_name(fake.engine.name + ".json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"engine sidecar lacks \['gpu_name', 'batch_range'\]"):
        load(fake.engine)


def test_version_compatible_engines() -> None:
    running = {"tensorrt_version": "10.7.0.23", "gpu_name": "Fake GPU", "compute_capability": "8.7"}
    side = {**running, "tensorrt_version": "10.3.0.30", "version_compatible": True}
    tr.check_engine_compat(side, running, "m.engine")  # older build, same major: fine
    with pytest.raises(ValueError, match="version-compatible engine built with TensorRT 10.3.0.30"):
        tr.check_engine_compat(side, {**running, "tensorrt_version": "11.0.0.1"}, "m.engine")
    with pytest.raises(ValueError, match="cannot run on TensorRT 10.1.0"):
        tr.check_engine_compat(side, {**running, "tensorrt_version": "10.1.0"}, "m.engine")
