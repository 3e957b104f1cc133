"""Frame sources for the ``run`` command: image, folder, video file, ``cam:N``, ``rtsp://…``, ``gst:<pipeline>``.

Every source yields :class:`Frame` objects; a frame that cannot be read carries ``error`` instead of
pixels, so one bad frame never stops a long stream. Streams that stop delivering end cleanly with
``end_reason`` set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime.preprocess import decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass
class Frame:
    """One frame: RGB uint8 pixels or an ``error`` saying why there are none."""

    source: str
    index: int
    timestamp: float | None
    image: np.ndarray | None
    error: str | None = None


class FrameSource:
    """Iterable of frames; ``total`` (or ``None`` for live streams), ``fps``, ``kind``, ``end_reason``."""

    kind = "frames"

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.total: int | None = None
        self.fps: float | None = None
        self.end_reason = "end of input"
        self.frames_read = 0
        self.bad_frames = 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_stream(self) -> bool:
        return self.kind == "stream"


class ImageSource(FrameSource):
    """One image file or every image in a folder (sorted by name); each is its own source, frame 0."""

    kind = "images"

    def __init__(self, spec: str, files: list[Path]) -> None:
        super().__init__(spec)
        self.files = files
        self.total = len(files)

    def __iter__(self) -> Iterator[Frame]:
        for f in self.files:
            try:
                img = decode_image(f)
                self.frames_read += 1
                yield Frame(str(f), 0, None, img)
            except (ValueError, FileNotFoundError) as e:
                self.bad_frames += 1
                yield Frame(str(f), 0, None, None, str(e))


class VideoSource(FrameSource):
    """A video file or live capture through ``cv2.VideoCapture``."""

    def __init__(
        self, spec: str, target: Any, api: int | None, *, live: bool, max_failures: int = 30, retry_wait_s: float = 0.05
    ) -> None:
        import cv2

        super().__init__(spec)
        self.kind = "stream" if live else "video"
        self.max_failures = max_failures
        self.retry_wait_s = retry_wait_s
        self.cap = cv2.VideoCapture(target, api) if api is not None else cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise ValueError(f"source {spec!r}: cannot be opened as a video or stream")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = count if (count > 0 and not live) else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        index = 0
        failures = 0
        while self.cap is not None:
            ok, bgr = self.cap.read()
            if ok and bgr is not None and bgr.size:
                failures = 0
                ts_ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
                ts = ts_ms / 1000.0 if ts_ms and ts_ms > 0 else (index / self.fps if self.fps else None)
                if self.kind == "stream":
                    ts = time.time()
                img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 and bgr.shape[2] == 3 else bgr
                self.frames_read += 1
                yield Frame(self.spec, index, ts, img)
                index += 1
                continue
            # A file ends when its frames are used up; before that a failed read is a bad frame.
            if self.kind == "video" and (self.total is None or index >= self.total):
                self.end_reason = "end of video"
                break
            failures += 1
            self.bad_frames += 1
            if failures > self.max_failures:
                self.end_reason = (
                    f"stream stopped delivering frames ({failures - 1} failed reads in a row)"
                    if self.kind == "stream"
                    else f"video unreadable after frame {index} ({failures - 1} bad frames in a row)"
                )
                break
            if self.kind == "video":
                yield Frame(
                    self.spec, index, index / self.fps if self.fps else None, None, "frame could not be decoded"
                )
                index += 1
            else:
                time.sleep(self.retry_wait_s)
        self.close()


def open_source(spec: str, *, max_failures: int = 30) -> FrameSource:
    """Open ``spec``: an image or folder path, a video file, ``cam:N``, a stream URL or ``gst:<pipeline>``."""
    import cv2

    spec = str(spec)
    if spec.startswith("cam:"):
        try:
            idx = int(spec[4:])
        except ValueError:
            raise ValueError(f"source {spec!r}: expected cam:N with a camera number, e.g. cam:0") from None
        return VideoSource(spec, idx, None, live=True, max_failures=max_failures)
    if spec.startswith("gst:"):
        pipeline = spec[4:].strip().strip('"').strip("'")
        if not pipeline:
            raise ValueError('source gst: needs a pipeline, e.g. gst:"v4l2src ! videoconvert ! appsink"')
        info = cv2.getBuildInformation()
        line = next((ln for ln in info.splitlines() if "GStreamer" in ln), "")
        if "YES" not in line:
            raise ValueError(
                "this OpenCV build has no GStreamer support (PyPI wheels lack it; use the system OpenCV, e.g. JetPack's)"
            )
        return VideoSource(spec, pipeline, cv2.CAP_GSTREAMER, live=True, max_failures=max_failures)
    if spec.lower().startswith(STREAM_PREFIXES):
        return VideoSource(spec, spec, cv2.CAP_FFMPEG, live=True, max_failures=max_failures)
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"source folder {p} has no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSource(spec, files)
    if not p.exists():
        raise FileNotFoundError(f"source {p} does not exist")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(spec, [p])
    return VideoSource(spec, str(p), None, live=False, max_failures=max_failures)
