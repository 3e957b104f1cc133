"""``run`` / ``bench`` commands: a video round trip, image folders with bad files, JSONL schema, streams, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_affect.runtime.cli import main
from edge_affect.runtime.faces import RECORD_FIELDS
from edge_affect.runtime.sources import VideoSource, open_source

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_affect.runtime.cli", *args], cwd=ROOT, capture_output=True, text=True
    )


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_schema(rec: dict) -> None:
    assert list(rec) == list(RECORD_FIELDS)
    if rec["status"] == "ok":
        assert len(rec["box"]) == 4 and len(rec["landmarks"]) == 5 and 0 < rec["det_score"] <= 1
        assert -1 <= rec["valence"] <= 1 and -1 <= rec["arousal"] <= 1
        assert rec["expression"] in rec["expression_probs"] and len(rec["expression_probs"]) == 8
        assert len(rec["au_probs"]) == 12 and set(rec["au_active"]) == set(rec["au_probs"])
    else:
        assert rec["valence"] is None and rec["expression_probs"] is None


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """12 frames at 8 fps (mp4v) of the astronaut, shifting 3 px per frame."""
    import cv2

    path = tmp_path_factory.mktemp("clip") / "astro.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (384, 320))
    bgr = np.ascontiguousarray(astronaut[:, :, ::-1])
    for i in range(12):
        w.write(np.ascontiguousarray(bgr[20 + i : 340 + i, 40 + 3 * i : 424 + 3 * i]))
    w.release()
    return path


def test_video_round_trip(artifacts: dict[str, Path], clip: Path, tmp_path: Path) -> None:
    out, overlay = tmp_path / "preds.jsonl", tmp_path / "overlay.mp4"
    r = _cli(
        "run", str(artifacts["onnx"]), "--source", str(clip), "--out", str(out), "--overlay", str(overlay), "--smooth"
    )
    assert r.returncode == 0, r.stderr
    assert "12 frames (0 unreadable, 0 without a face), 12 faces" in r.stderr
    recs = _jsonl(out)
    assert [x["frame"] for x in recs] == list(range(12))
    assert {x["status"] for x in recs} == {"ok"} and {x["track"] for x in recs} == {0}
    ts = [x["timestamp"] for x in recs]
    assert ts[0] == pytest.approx(0.0) and ts[-1] == pytest.approx(11 / 8, abs=0.01)
    for x in recs:
        _check_schema(x)
    # The face moves left by 3 px per frame in the clip (the window moves right).
    assert recs[-1]["box"][0] - recs[0]["box"][0] == pytest.approx(-33, abs=3)
    import cv2

    cap = cv2.VideoCapture(str(overlay))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 384
    cap.release()


def test_smoothing_changes_predictions_only_on_video(artifacts: dict[str, Path], clip: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "raw.jsonl", tmp_path / "smooth.jsonl"
    assert main(["run", str(artifacts["onnx"]), "--source", str(clip), "--out", str(a), "--no-progress"]) == 0
    assert (
        main(
            [
                "run",
                str(artifacts["onnx"]),
                "--source",
                str(clip),
                "--out",
                str(b),
                "--smooth",
                "--alpha",
                "0.3",
                "--no-progress",
            ]
        )
        == 0
    )
    raw, smooth = _jsonl(a), _jsonl(b)
    assert raw[0]["valence"] == pytest.approx(smooth[0]["valence"], abs=1e-9)  # first frame: nothing to average
    v_raw = np.array([x["valence"] for x in raw])
    v_smooth = np.array([x["valence"] for x in smooth])
    assert np.abs(np.diff(v_smooth)).sum() <= np.abs(np.diff(v_raw)).sum() + 1e-9


def test_folder_with_bad_images(artifacts: dict[str, Path], astronaut: np.ndarray, tmp_path: Path) -> None:
    """Corrupt, empty, no-face, gray, RGBA and 16-bit files: each gets a status line; the run goes on."""
    import cv2

    src = tmp_path / "imgs"
    src.mkdir()
    bgr = astronaut[:, :, ::-1]
    cv2.imwrite(str(src / "a_rgb.jpg"), bgr)
    cv2.imwrite(str(src / "b_gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / "c_rgba.png"), np.concatenate([bgr, np.full((512, 512, 1), 255, np.uint8)], 2))
    cv2.imwrite(str(src / "d_16bit.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "e_blank.png"), np.full((200, 300, 3), 90, np.uint8))
    (src / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (src / "g_empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("ignored")
    out, ovl = tmp_path / "p.jsonl", tmp_path / "ovl"
    r = _cli("run", str(artifacts["onnx"]), "--source", str(src), "--out", str(out), "--overlay", str(ovl), "--smooth")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    recs = _jsonl(out)
    status = {Path(x["source"]).name: x["status"] for x in recs}
    assert status == {
        "a_rgb.jpg": "ok",
        "b_gray.png": "ok",
        "c_rgba.png": "ok",
        "d_16bit.png": "ok",
        "e_blank.png": "no_face",
        "f_corrupt.jpg": "bad_frame",
        "g_empty.png": "bad_frame",
    }
    bad = next(x for x in recs if x["source"].endswith("f_corrupt.jpg"))
    assert "cannot be decoded" in bad["error"]
    for x in recs:
        _check_schema(x)
    assert "7 frames (2 unreadable, 1 without a face), 4 faces" in r.stderr
    assert len(list(ovl.glob("*.png"))) == 5  # every decodable frame is drawn


def test_single_image_to_stdout_and_png_overlay(artifacts: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "o.png"
    r = _cli(
        "run", str(artifacts["onnx"]), "--source", "edge_affect/assets/samples/astronaut.png", "--overlay", str(png)
    )
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 1 and recs[0]["status"] == "ok" and recs[0]["timestamp"] is None
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{onnx}", "--source", "missing.png"], "source missing.png does not exist"),
        (
            ["run", "missing.onnx", "--source", "edge_affect/assets/samples/astronaut.png"],
            "artifact missing.onnx does not exist",
        ),
        (["run", "{onnx}", "--source", 'gst:"videotestsrc ! appsink"'], "no GStreamer support"),
        (["run", "{onnx}", "--source", "cam:x"], "expected cam:N"),
        (["run", "{onnx}", "--source", "{clip}", "--overlay", "{tmp}/o.png"], "one image needs a single-image source"),
        (["run", "{onnx}", "--source", "{clip}", "--backend", "tensorrt"], "backend 'tensorrt' runs"),
        (["bench", "{onnx}", "--batch", "1,x"], "expected comma-separated integers"),
        (["bench", "{onnx}", "--views", "2"], "--views 2: applies to --pipeline VIDEO"),
        (["run", "{onnx}", "--source", "{clip}", "--views", "3"], "invalid choice: 3"),
    ],
)
def test_user_errors_are_one_line(
    artifacts: dict[str, Path], clip: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [a.format(onnx=artifacts["onnx"], clip=clip, tmp=tmp_path) for a in args]
    r = _cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-affect: error: ") and message in last


class _FakeCap:
    """Stands in for cv2.VideoCapture: ``frames`` entries are images or ``None`` for a failed read."""

    def __init__(self, frames: list) -> None:
        self.frames = list(frames)

    def read(self):
        if not self.frames:
            return False, None
        f = self.frames.pop(0)
        return (f is not None), f

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def _source(kind: str, frames: list, total: int | None, clip: Path) -> VideoSource:
    src = open_source(str(clip))
    src.cap.release()
    src.cap, src.kind, src.total, src.max_failures, src.retry_wait_s = _FakeCap(frames), kind, total, 3, 0.0
    return src


def test_stream_that_drops_ends_cleanly(clip: Path) -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    src = _source("stream", [img, img, None, img] + [None] * 10, None, clip)
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.error is None for f in frames)
    assert src.end_reason.startswith("stream stopped delivering frames")


def test_video_goes_on_past_bad_frames(clip: Path) -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    src = _source("video", [img, None, None, img, img], 5, clip)
    frames = list(src)
    assert [(f.index, f.error is None) for f in frames] == [(0, True), (1, False), (2, False), (3, True), (4, True)]
    assert src.bad_frames == 2 and src.end_reason == "end of video"


def test_bench_json(artifacts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", str(artifacts["onnx"]), "--batch", "1,4", "--iters", "3", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    stages = {(r["stage"], r["batch"]) for r in res["rows"]}
    for st in ("decode", "detect", "align"):
        assert (st, 1) in stages
    for b in (1, 4):
        for st in ("preprocess", "infer", "post", "predict"):
            assert (st, b) in stages
    row = res["rows"][0]
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["items_per_s"] > 0
    assert res["machine"]["cpu_count"] >= 1 and res["artifact"]["backend"] == "onnxruntime"
