"""Frame sources read ahead in a thread: order kept, files never drop frames, live sources drop with a count."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_affect.runtime.sources import Frame, FrameSource, PrefetchSource, open_source


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames (mp4v, 160×120), frame k filled with gray level 5k so order can be read back."""
    import cv2

    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (160, 120))
    for k in range(40):
        w.write(np.full((120, 160, 3), 5 * k, np.uint8))
    w.release()
    return path


class FakeCamera(FrameSource):
    """A live source delivering ``n`` frames every ``period_s`` whether or not anyone reads them."""

    kind = "stream"

    def __init__(self, n: int, period_s: float = 0.002, fail_at: int | None = None) -> None:
        super().__init__("cam:fake")
        self.n, self.period_s, self.fail_at = n, period_s, fail_at
        self.closed = False

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n):
            if i == self.fail_at:
                raise RuntimeError("camera unplugged")
            time.sleep(self.period_s)
            self.frames_read += 1
            yield Frame(self.spec, i, time.time(), np.full((4, 4, 3), i % 256, np.uint8))
        self.end_reason = "camera stopped"

    def close(self) -> None:
        self.closed = True


def test_video_prefetch_keeps_every_frame_in_order(video: Path) -> None:
    with open_source(str(video)) as plain:
        want = [int(f.image.mean()) for f in plain]
    src = open_source(str(video), prefetch=3)
    assert isinstance(src, PrefetchSource) and not src.drop and src.total == 40
    got = []
    for f in src:
        time.sleep(0.003)  # a consumer slower than decoding: a file waits, it never drops
        got.append((f.index, int(f.image.mean())))
    src.close()
    assert [i for i, _ in got] == list(range(40))
    assert [v for _, v in got] == want
    assert src.dropped == 0 and src.frames_read == 40 and src.end_reason == "end of video"
    assert src.read_seconds > 0


def test_live_source_drops_oldest_frames_with_a_count() -> None:
    cam = FakeCamera(200, period_s=0.0002)
    src = PrefetchSource(cam, depth=2)
    assert src.drop and src.is_stream
    seen = []
    for f in src:
        seen.append(f.index)
        time.sleep(0.004)  # 8× slower than the camera
    src.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen), "frames come out in capture order"
    assert src.dropped > 0 and len(seen) + src.dropped == 200
    assert seen[-1] == 199, "the newest frame is kept"
    assert src.end_reason == "camera stopped" and cam.closed


def test_reader_errors_reach_the_consumer() -> None:
    src = PrefetchSource(FakeCamera(10, fail_at=4), depth=2, drop=False)
    with pytest.raises(RuntimeError, match="camera unplugged"):
        for _ in src:
            pass
    src.close()


def test_close_mid_stream_stops_the_reader() -> None:
    cam = FakeCamera(10_000, period_s=0.001)
    src = PrefetchSource(cam, depth=4)
    for f in src:
        if f.index >= 3:
            break
    src.close()
    assert cam.closed
    assert not any(t.name.startswith("prefetch cam:fake") for t in threading.enumerate())


def test_prefetch_argument_is_checked(video: Path) -> None:
    with pytest.raises(ValueError, match="prefetch -1"):
        open_source(str(video), prefetch=-1)


def test_video_with_frames_over_the_pixel_limit_is_refused_before_decoding(
    video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container's frame size is checked against MAX_IMAGE_PIXELS when the video opens (here the limit
    is lowered below 160×120 rather than writing a 50-megapixel video): one line naming the source."""
    from edge_affect.runtime import preprocess

    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 160 * 120 - 1)
    with pytest.raises(ValueError) as e:
        open_source(str(video))
    assert str(e.value) == (
        f"source {str(video)!r}: frames of 160×120 = 0.0 megapixels exceed the limit of 0 megapixels (MAX_IMAGE_PIXELS)"
    )
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 160 * 120)
    with open_source(str(video)) as src:
        assert sum(1 for _ in src) == 40
