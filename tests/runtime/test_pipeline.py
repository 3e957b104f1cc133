"""The face pipeline shared by threads, its settings on the command line, the pipeline benchmark, GPU paths."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_affect.runtime.bench import compare_to_reference, match_faces
from edge_affect.runtime.cli import main
from edge_affect.runtime.clips import moving_face_clip
from edge_affect.runtime.detect import YuNetDetector
from edge_affect.runtime.pipeline import FacePipeline
from edge_affect.runtime.track import iou_xywh


@pytest.fixture(scope="module")
def two_scenes(astronaut: np.ndarray) -> list[np.ndarray]:
    """640×480 frames with the astronaut's head at the left and at the right: faces ~350 px apart."""
    left = np.full((480, 640, 3), 60, np.uint8)
    right = left.copy()
    left[40:300, 20:280] = astronaut[0:260, 95:355]
    right[180:440, 360:620] = astronaut[0:260, 95:355]
    return [left, right]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipeline_clip") / "one_face.mp4"
    moving_face_clip(path, 24)
    return path


@pytest.mark.parametrize("track", [True, False])
def test_shared_pipeline_never_returns_another_threads_faces(
    default_predictor: Any, two_scenes: list[np.ndarray], track: bool
) -> None:
    """Issue 12: threads sharing one FacePipeline (tracking: serialised; without: in parallel) each get
    the face of their own frame, every call."""
    det = YuNetDetector()
    pipe = FacePipeline(default_predictor, det, track=track)
    expected = [det.detect(img, max_side=pipe.det_size)[0].box for img in two_scenes]
    assert iou_xywh(expected[0], expected[1])[0, 0] == 0.0
    errors: list[str] = []
    start = threading.Barrier(4)

    def work(k: int) -> None:
        start.wait()
        for i in range(12):
            recs = pipe.process(two_scenes[k % 2])
            boxes = [r["box"] for r in recs if r["box"] is not None]
            if len(boxes) != 1 or iou_xywh(np.asarray(boxes[0]), expected[k % 2])[0, 0] < 0.7:
                errors.append(f"thread {k} call {i}: {boxes} (own face {expected[k % 2].round()})")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    pipe.close()
    assert not errors, errors[:3]


def test_detector_shared_by_threads(two_scenes: list[np.ndarray]) -> None:
    """YuNetDetector keeps no per-call state: concurrent calls on different frames give each its own face."""
    det = YuNetDetector()
    want = [det.detect(img, max_side=320)[0].landmarks for img in two_scenes]
    bad: list[int] = []

    def work(k: int) -> None:
        for _ in range(15):
            got = det.detect(two_scenes[k % 2], max_side=320)
            if len(got) != 1 or not np.allclose(got[0].landmarks, want[k % 2], atol=1e-3):
                bad.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    det.close()
    assert not bad


def test_compare_to_reference_counts() -> None:
    box = np.array([100.0, 100.0, 60.0, 60.0])
    other = np.array([400.0, 100.0, 60.0, 60.0])
    ref = [[(box, "happy")], [(box, "happy"), (other, "sad")], [(box, "happy")], []]
    new = [[(box, "happy")], [(box + 2, "happy")], [(box, "sad")], []]
    out = compare_to_reference(ref, new, [True, False, False, True])
    assert out["frames_compared"] == 3 and out["same_faces"] == pytest.approx(2 / 3)
    assert out["disagreeing_frames"] == [1]
    assert out["expr_pairs_tracked"] == 2 and out["expr_agreement_tracked"] == pytest.approx(0.5)
    assert match_faces([box, other], [other + 1, box]) == [(0, 1), (1, 0)]


def test_run_with_face_settings(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.jsonl"
    argv = ["run", "--source", str(clip), "--out", str(out), "--no-progress"]
    assert main([*argv, "--det-size", "256", "--detect-every", "3", "--prefetch", "2"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(24)), "one face per frame, in frame order"
    assert {r["track"] for r in recs} == {0} and all(r["status"] == "ok" for r in recs)
    # The summary says how the faces were found: frames 0, 3, ..., 21 detected whole, 16 regions between.
    text = " ".join(capsys.readouterr().err.split())
    assert (
        "face finding: 8 whole-frame detections (0 for a face moving across the frame edge, 0 after a face was "
        "lost), 0 still faces held, 16 region re-detections, 0 new faces picked up in 0 changed regions"
    ) in text


@pytest.mark.parametrize(
    "flag, value, msg",
    [("--detect-every", "0", "--detect-every 0: too small"), ("--det-size", "8", "--det-size 8: too small")],
)
def test_face_settings_are_range_checked(
    clip: Path, capsys: pytest.CaptureFixture, flag: str, value: str, msg: str
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", "--source", str(clip), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-affect: error:") and msg in err and "\n" not in err


def test_help_states_the_smallest_face(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "finds faces from 26 px tall on 640×480" in text and "--pickup {motion,none}" in text


def test_bench_pipeline_command(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    js = tmp_path / "bench.json"
    assert main(["bench", "--pipeline", str(clip), "--rounds", "1", "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    names = [p["policy"] for p in res["policies"]]
    assert names == [
        "old: every frame @640",
        "@640, detect every 10, roi, no pickup",
        "every frame @640, filtered, smoothed",
        "new: @640, detect every 10, roi, pickup motion",
    ]
    for p in res["policies"]:
        assert p["frames"] == 24 and p["fps"] > 0 and p["faces"] == 24 and p["dropped"] == 0
        assert {"decode", "detect", "align", "predict"} <= set(p["stage_ms"])
        assert p["agreement"]["same_faces"] == p["agreement"]["same_faces_all"] == 1.0
    # frames 0, 10, 20; the moving face never touches the frame edge, and the motion around it is its own
    assert res["policies"][-1]["pipeline_stats"]["full"] == 3
    assert res["policies"][-1]["pipeline_stats"]["picked_up"] == 0
    assert "frames/s" in capsys.readouterr().out


# -- GPU: detection on the model's device (run where a GPU is; skipped here) --------------------------------
def _cuda_ort() -> None:
    ort = pytest.importorskip("onnxruntime")
    from edge_affect.runtime.backends.onnxruntime_runner import cuda_device_present

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not cuda_device_present():
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU")


@pytest.mark.gpu
def test_cuda_model_runs_yunet_on_cuda_too(clip: Path) -> None:
    _cuda_ort()
    from edge_affect.default import default_model
    from edge_affect.runtime import load
    from edge_affect.runtime.sources import open_source

    with load(default_model("onnx"), providers="cuda") as gpu, load(default_model("onnx"), providers="cpu") as cpu:
        pg, pc = FacePipeline(gpu), FacePipeline(cpu)
        assert pg.detector.runner.device == "CUDAExecutionProvider"
        with open_source(str(clip), prefetch=2) as src:
            for f in src:
                a, b = pg.process(f.image), pc.process(f.image)
                np.testing.assert_allclose(a[0]["landmarks"], b[0]["landmarks"], atol=0.5)
                assert a[0]["expression"] == b[0]["expression"]
        pg.close()
        pc.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_yunet_engine_serves_frames_and_region_batches(
    two_scenes: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached YuNet engine (built by the runtime's builder) takes the 320-px frame input and a batch
    of 128-px regions, and matches ONNX Runtime on the CPU."""
    pytest.importorskip("tensorrt", reason="needs TensorRT and a CUDA GPU")
    monkeypatch.setenv("EDGE_AFFECT_CACHE", str(tmp_path))
    from edge_affect.runtime.detect import yunet_runner

    d_trt, d_ort = YuNetDetector(yunet_runner("tensorrt")), YuNetDetector(yunet_runner("onnxruntime", "cpu"))
    for img in two_scenes:
        a, b = d_trt.detect(img, max_side=320), d_ort.detect(img, max_side=320)
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a[0].landmarks, b[0].landmarks, atol=0.5)
    frame = np.concatenate([two_scenes[0][:, :320], two_scenes[1][:, 320:]], axis=1)  # both faces
    faces = d_ort.detect(frame, max_side=320)
    centers = [f.box[:2] + f.box[2:] / 2 for f in faces]
    sides = [2 * float(f.box[3]) for f in faces]
    ra, rb = d_trt.detect_regions(frame, centers, sides), d_ort.detect_regions(frame, centers, sides)
    for x, y in zip(ra, rb, strict=True):
        np.testing.assert_allclose(x[0].landmarks, y[0].landmarks, atol=0.5)
    d_trt.close()
    d_ort.close()
