"""Frame sources for the ``run`` command: image, folder, video file, ``cam:N``, ``rtsp://…``, ``gst:<pipeline>``.

Every source yields :class:`Frame` objects; a frame that cannot be read carries ``error`` instead of
pixels, so one bad frame never stops a long stream. Streams that stop delivering end cleanly with
``end_reason`` set. :class:`PrefetchSource` (``open_source(..., prefetch=N)``) reads and decodes ahead
in a thread, so capture overlaps detection and inference.
"""

from __future__ import annotations

import logging
import queue
import threading
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
        from edge_affect.runtime import preprocess

        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h > preprocess.MAX_IMAGE_PIXELS:  # refused before a frame is decoded into memory
            self.close()
            raise ValueError(
                f"source {spec!r}: frames of {w}×{h} = {w * h / 1e6:.1f} megapixels exceed the limit of "
                f"{preprocess.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (MAX_IMAGE_PIXELS)"
            )
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


class _End:
    """End of the reader thread's frames; carries the exception that stopped it, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class PrefetchSource(FrameSource):
    """Reads another source ahead in a background thread through a bounded queue of ``depth`` frames.

    Frames come out in capture order. Files and image folders never lose a frame: the reader waits
    while the queue is full. Live sources (``cam:N``, streams) cannot wait, so when the consumer falls
    behind the oldest queued frame is dropped for the newest and counted in ``dropped`` (the frame
    indices then skip). ``read_seconds`` is the time the reader spent capturing and decoding.
    """

    def __init__(self, source: FrameSource, depth: int = 4, *, drop: bool | None = None) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth {depth}: expected ≥ 1 frame")
        # Not FrameSource.__init__: counts and the end reason are the wrapped source's.
        self.spec = source.spec
        self.source = source
        self.kind = source.kind
        self.total = source.total
        self.fps = source.fps
        self.depth = depth
        self.drop = source.is_stream if drop is None else drop
        self.dropped = 0
        self.read_seconds = 0.0
        self._queue: queue.Queue[Frame | _End] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def end_reason(self) -> str:  # type: ignore[override]
        return self.source.end_reason

    @property
    def frames_read(self) -> int:  # type: ignore[override]
        return self.source.frames_read

    @property
    def bad_frames(self) -> int:  # type: ignore[override]
        return self.source.bad_frames

    def _put(self, item: Frame | _End) -> bool:
        """Queue ``item``; a live source drops the oldest frame when full. False once closed."""
        dropping = self.drop and isinstance(item, Frame)
        while not self._stop.is_set():
            try:
                if dropping:
                    self._queue.put_nowait(item)
                else:
                    self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                if dropping:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _read(self) -> None:
        end = _End()
        try:
            frames = iter(self.source)
            while not self._stop.is_set():
                t0 = time.perf_counter()
                frame = next(frames, None)
                self.read_seconds += time.perf_counter() - t0
                if frame is None or not self._put(frame):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            end = _End(e)
        finally:
            self._put(end)

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise RuntimeError(f"source {self.spec!r}: a prefetching source can be iterated once")
        self._thread = threading.Thread(target=self._read, name=f"prefetch {self.spec}", daemon=True)
        self._thread.start()
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the reader (it finishes the frame it is reading), then close the source."""
        self._stop.set()
        if self._thread is not None:
            deadline = time.monotonic() + timeout_s
            while self._thread.is_alive() and time.monotonic() < deadline:
                try:
                    self._queue.get(timeout=0.05)  # unblock a reader waiting on a full queue
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
            if self._thread.is_alive():  # a capture call that does not return: closing under it could crash
                log.warning("source %r: reader still blocked after %.0f s; leaving it open", self.spec, timeout_s)
                return
        self.source.close()


def open_source(spec: str, *, max_failures: int = 30, prefetch: int = 0) -> FrameSource:
    """Open ``spec``: an image or folder path, a video file, ``cam:N``, a stream URL or ``gst:<pipeline>``.

    ``prefetch`` > 0 reads that many frames ahead in a thread (:class:`PrefetchSource`).
    """
    if prefetch < 0:
        raise ValueError(f"prefetch {prefetch}: expected ≥ 0 frames")
    src = _open_source(spec, max_failures)
    return PrefetchSource(src, prefetch) if prefetch > 0 else src


def _open_source(spec: str, max_failures: int) -> FrameSource:
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
