"""Streams: one source → one ``FacePipeline`` in its own thread → events and overlay frames for any number of clients.

The pipeline thread never waits for a client: it hands each event to every subscriber's bounded queue on the
server's event loop (``call_soon_threadsafe``), where a full queue drops its oldest item and counts it. Recent
events are kept (``HISTORY`` per stream) so a client can replay a stream from its first frame (SSE
``Last-Event-ID`` or ``?from=0``). Which sources a client may start is decided here: cameras, RTSP/RTMP and
files inside ``--allow-files`` (symlinks resolved); ``gst:`` pipelines (which can read and write any path) only
from the command line or with ``--allow-gst``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime import require_cv2
from edge_affect.runtime.overlay import draw
from edge_affect.runtime.pipeline import RECORD_FIELDS, FacePipeline
from edge_affect.runtime.predictor import Predictor
from edge_affect.runtime.sources import FrameSource, open_source

log = logging.getLogger(__name__)

#: Events kept per stream for replay (a 30 fps stream: the last ~8.5 s; ~1-2 KB each).
HISTORY = 256
#: Items a client's queue holds before the oldest is dropped (events; previews keep only the newest frame).
EVENT_QUEUE = 64
PREVIEW_QUEUE = 1
#: Longest side of preview frames (larger frames are scaled down before JPEG encoding).
PREVIEW_MAX_SIDE = 960
PREVIEW_JPEG_QUALITY = 80
#: Frames a stream reads ahead of the pipeline (a live source drops the oldest when the pipeline falls behind).
PREFETCH = 4
#: Live source prefixes a client may start (other URL schemes would let a client make the server fetch them).
LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://")
#: Stages reported per frame, in pipeline order (``read`` = capture and decode of the frame by the source).
STAGES = ("read", "detect", "track", "align", "preprocess", "infer", "post", "preview")
#: Face fields of an event (a ``run`` record without the frame's source/index/timestamp, which the event carries).
FACE_FIELDS = tuple(k for k in RECORD_FIELDS if k not in ("source", "frame", "timestamp"))


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line message (sent as ``{"error": ...}``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _EndMarker:
    """Last item of a subscription: the stream ended (its state and reason are on the stream)."""


END = _EndMarker()


class Subscriber:
    """One client's bounded queue on the event loop; a full queue drops its oldest item (counted)."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.dropped = 0

    def push(self, item: Any) -> None:
        """Called on the event loop only."""
        if self.queue.full():  # the oldest goes, whatever comes (the end marker always gets in)
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class StageTimes:
    """Seconds per stage summed over frames (for Prometheus ``_sum``/``_count``) and the last frame's.

    Stages are what the pipeline reports (``STAGES`` first, then any other it adds, e.g. ``motion``)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.last: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.frames = 0

    def add(self, timings: dict[str, float]) -> None:
        self.frames += 1
        for k in self.total.keys() | timings.keys():
            v = timings.get(k, 0.0)
            self.total[k] = self.total.get(k, 0.0) + v
            self.last[k] = v


class Stream:
    """One source processed by its own pipeline thread; events and preview frames go to subscribers."""

    def __init__(
        self, sid: str, spec: str, source: FrameSource, pipeline: FacePipeline, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.id = sid
        self.spec = spec
        self.source = source
        self.pipeline = pipeline
        self.loop = loop
        self.kind = source.kind
        self.state = "running"
        self.end_reason: str | None = None
        self.created = time.time()
        self.frames = 0
        self.faces = 0
        self.times = StageTimes()
        self.dropped_events = 0  # by clients that have left
        self.dropped_previews = 0
        self._recent: deque[float] = deque(maxlen=30)
        self._history: deque[tuple[int, str]] = deque(maxlen=HISTORY)
        self._events: set[Subscriber] = set()
        self._previews: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.last_jpeg: bytes | None = None
        self._last_frame: tuple[np.ndarray, list[dict[str, Any]]] | None = None
        self._thread = threading.Thread(target=self._run, name=f"stream {sid}", daemon=True)

    # -- the pipeline thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _publish(self, subs: set[Subscriber], item: Any) -> None:
        for sub in list(subs):
            try:
                self.loop.call_soon_threadsafe(sub.push, item)
            except RuntimeError:  # the loop is closed: the server is gone
                return

    def _run(self) -> None:
        last_source = None
        read_before = 0.0
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                if frame.source != last_source:
                    self.pipeline.reset()
                    last_source = frame.source
                timings: dict[str, float] = {}
                read_now = getattr(self.source, "read_seconds", 0.0)
                timings["read"], read_before = read_now - read_before, read_now
                records = self.pipeline.process(frame.image, timings, error=frame.error)
                self._emit(frame, records, timings)
            else:
                self.end_reason = self.source.end_reason
        except Exception as e:  # noqa: BLE001 - a failing source ends its stream, never the server
            log.warning("stream %s (%s) failed: %s", self.id, self.spec, e)
            self.state, self.end_reason = "failed", f"{type(e).__name__}: {e}"
        finally:
            self.source.close()
            self.pipeline.close()
            if self.state == "running":
                self.state = "stopped" if self._stop.is_set() else "ended"
                self.end_reason = self.end_reason or ("stopped" if self._stop.is_set() else self.source.end_reason)
            with self._lock:
                self._publish(self._events | self._previews, END)
            log.info("stream %s (%s) %s: %s after %d frames", self.id, self.spec, self.state, self.end_reason, self.frames)

    def _emit(self, frame: Any, records: list[dict[str, Any]], timings: dict[str, float]) -> None:
        now = time.perf_counter()
        self._recent.append(now)
        faces = [{k: r.get(k) for k in FACE_FIELDS} for r in records if r.get("box") is not None]
        status = "ok" if faces else records[0]["status"] if records else "no_face"
        if frame.image is not None:
            self._last_frame = (frame.image, records)
        if self._previews and frame.image is not None:
            t0 = time.perf_counter()
            jpeg = self._encode_preview(frame.image, records)
            timings["preview"] = time.perf_counter() - t0
            self.last_jpeg = jpeg
            with self._lock:
                self._publish(self._previews, jpeg)
        self.times.add(timings)
        seq = self.frames
        self.frames += 1
        self.faces += len(faces)
        event = {
            "stream": self.id,
            "seq": seq,
            "frame": frame.index,
            "source": frame.source,
            "timestamp": frame.timestamp,
            "status": status,
            "error": records[0].get("error") if status == "bad_frame" else None,
            "faces": faces,
            "fps": round(self.fps, 2),
            "latency_ms": {k: round(v * 1000.0, 3) for k, v in timings.items()},
        }
        text = json.dumps(event, allow_nan=False)
        with self._lock:
            self._history.append((seq, text))
            self._publish(self._events, (seq, text))

    def _encode_preview(self, rgb: np.ndarray, records: list[dict[str, Any]]) -> bytes:
        cv2 = require_cv2()
        bgr = draw(rgb, records)
        h, w = bgr.shape[:2]
        if max(h, w) > PREVIEW_MAX_SIDE:
            s = PREVIEW_MAX_SIDE / max(h, w)
            bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
        return buf.tobytes() if ok else b""

    # -- clients (event loop) --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def fps(self) -> float:
        """Frames per second over the last 30 processed frames."""
        r = self._recent
        return (len(r) - 1) / (r[-1] - r[0]) if len(r) > 1 and r[-1] > r[0] else 0.0

    def subscribe_events(self, after: int | None) -> tuple[Subscriber, list[tuple[int, str]]]:
        """A live subscription, and the kept events with ``seq > after`` to send first (none if ``after`` is None)."""
        sub = Subscriber(EVENT_QUEUE)
        with self._lock:
            replay = [e for e in self._history if after is not None and e[0] > after]
            if self.running:
                self._events.add(sub)
            else:
                sub.push(END)
        return sub, replay

    def subscribe_preview(self) -> Subscriber:
        sub = Subscriber(PREVIEW_QUEUE)
        last = self._last_frame
        if last is not None and not self._previews:  # nobody watched: the last frame was not encoded
            self.last_jpeg = self._encode_preview(*last)
        with self._lock:
            if self.last_jpeg:
                sub.push(self.last_jpeg)
            if self.running:
                self._previews.add(sub)
            else:
                sub.push(END)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            if sub in self._events:
                self._events.discard(sub)
                self.dropped_events += sub.dropped
            elif sub in self._previews:
                self._previews.discard(sub)
                self.dropped_previews += sub.dropped

    def counters(self) -> dict[str, Any]:
        """Numbers for ``/metrics`` and the stream listing."""
        with self._lock:
            ev, pv = list(self._events), list(self._previews)
        return {
            "frames": self.frames,
            "faces": self.faces,
            "fps": self.fps,
            "dropped_source": int(getattr(self.source, "dropped", 0)),
            "dropped_events": self.dropped_events + sum(s.dropped for s in ev),
            "dropped_preview": self.dropped_previews + sum(s.dropped for s in pv),
            "event_clients": len(ev),
            "preview_clients": len(pv),
            "event_queue_max": max((s.queue.qsize() for s in ev), default=0),
            "source_queue": source_queue_depth(self.source),
        }

    def describe(self) -> dict[str, Any]:
        c = self.counters()
        return {
            "id": self.id,
            "source": self.spec,
            "kind": self.kind,
            "state": self.state,
            "end_reason": self.end_reason,
            "created": self.created,
            "frames": c["frames"],
            "faces": c["faces"],
            "fps": round(c["fps"], 2),
            "dropped": {"source": c["dropped_source"], "events": c["dropped_events"], "preview": c["dropped_preview"]},
            "latency_ms": {k: round(v * 1000.0, 3) for k, v in self.times.last.items()},
        }

    def stop(self) -> None:
        """Ask the pipeline thread to stop after its current frame (returns at once)."""
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def source_queue_depth(source: FrameSource) -> int:
    """Frames read ahead and waiting for the pipeline (0 for a source without a prefetch queue)."""
    q = getattr(source, "_queue", None)
    return q.qsize() if q is not None else 0


class StreamManager:
    """Starts, lists and stops streams; decides which sources a client may open."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        allow_files: str | Path | None = None,
        allow_gst: bool = False,
        max_streams: int = 4,
        keep_ended: int = 16,
        pipeline_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.predictor = predictor
        self.allow_files = Path(allow_files).resolve(strict=True) if allow_files else None
        if self.allow_files is not None and not self.allow_files.is_dir():
            raise ValueError(f"--allow-files {allow_files}: not a folder")
        self.allow_gst = allow_gst
        self.max_streams = max_streams
        self.keep_ended = keep_ended
        self.pipeline_kwargs = pipeline_kwargs or {}
        self.streams: dict[str, Stream] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def resolve(self, spec: Any, *, trusted: bool = False) -> str:
        """The source ``spec`` as ``open_source`` takes it, or an :class:`ApiError` saying why it is refused.

        ``trusted`` (``--source`` on the command line): any spec the runtime opens."""
        if not isinstance(spec, str) or not spec.strip():
            raise ApiError(400, f"source {spec!r}: expected a string: cam:N, rtsp://…, gst:\"…\" or a file name")
        spec = spec.strip()
        if trusted:
            return spec
        low = spec.lower()
        if spec.startswith("cam:"):
            if not spec[4:].isdigit():
                raise ApiError(400, f"source {spec!r}: expected cam:N with a camera number, e.g. cam:0")
            return spec
        if low.startswith(LIVE_PREFIXES):
            return spec
        if spec.startswith("gst:"):
            if not self.allow_gst:
                raise ApiError(403, "gst: sources can read and write any path; start serve with --allow-gst to allow them")
            return spec
        if "://" in spec:
            raise ApiError(400, f"source {spec!r}: unknown scheme (expected cam:N, {', '.join(LIVE_PREFIXES)}… or gst:)")
        if self.allow_files is None:
            raise ApiError(403, f"source {spec!r}: file sources are off; start serve with --allow-files DIR")
        root = self.allow_files
        path = Path(spec)
        try:  # inside or not is decided first, so nothing is said about paths outside
            real = (path if path.is_absolute() else root / path).resolve()
        except (OSError, RuntimeError):
            raise ApiError(400, f"source {spec!r}: not a usable path") from None
        if real != root and root not in real.parents:
            raise ApiError(403, f"source {spec!r}: outside --allow-files {root}")
        if not real.exists():
            raise ApiError(404, f"source {spec!r}: no such file inside --allow-files {root}")
        return str(real)

    def start(self, spec: Any, loop: asyncio.AbstractEventLoop, *, trusted: bool = False) -> Stream:
        """Open ``spec`` and start its stream (blocking: opening a camera or RTSP stream can take seconds)."""
        target = self.resolve(spec, trusted=trusted)
        with self._lock:
            if sum(s.running for s in self.streams.values()) >= self.max_streams:
                raise ApiError(429, f"{self.max_streams} streams are running (--max-streams); stop one first")
        try:
            source = open_source(target, prefetch=PREFETCH)
        except FileNotFoundError as e:
            raise ApiError(404, str(e)) from None
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        try:
            kwargs = dict(self.pipeline_kwargs)
            if source.kind == "images":  # still images are not smoothed (as ``run``)
                kwargs["smooth"] = False
            pipe = FacePipeline(self.predictor, **kwargs)
        except BaseException:
            source.close()
            raise
        sid = f"s{next(self._counter)}-{secrets.token_hex(3)}"
        stream = Stream(sid, str(spec), source, pipe, loop)
        with self._lock:
            self._prune()
            self.streams[sid] = stream
        stream.start()
        log.info("stream %s started: %s (%s)", sid, spec, source.kind)
        return stream

    def _prune(self) -> None:
        ended = [s for s in self.streams.values() if not s.running]
        for s in ended[: max(0, len(ended) - self.keep_ended + 1)]:
            del self.streams[s.id]

    def get(self, sid: str) -> Stream:
        with self._lock:
            stream = self.streams.get(sid)
        if stream is None:
            raise ApiError(404, f"stream {sid!r}: no such stream")
        return stream

    def list(self) -> list[Stream]:
        with self._lock:
            return list(self.streams.values())

    def delete(self, sid: str) -> Stream:
        """Stop a stream and forget it."""
        stream = self.get(sid)
        stream.stop()
        with self._lock:
            self.streams.pop(sid, None)
        return stream

    def stop_all(self) -> None:
        """Ask every stream to stop (returns at once)."""
        for s in self.list():
            s.stop()

    def join_all(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        for s in self.list():
            if not s.join(max(0.0, deadline - time.monotonic())):
                log.warning("stream %s: its source did not stop within %.0f s", s.id, timeout_s)
