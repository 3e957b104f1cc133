"""``/metrics`` in the Prometheus text exposition format (0.0.4), written by hand: counters the server keeps.

Requests by route and status; ``/v1/predict`` stage seconds and the batches formed (histograms by requests
and faces per batch); per stream: frames, frames/s, stage seconds, dropped frames (where: ``source`` = a live
source read ahead faster than the pipeline ran, ``events``/``preview`` = a slow client's queue) and queue depths.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

#: Upper bounds of the batch-size histogram buckets (requests or faces per model call).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Stages of a ``/v1/predict`` request (``decode`` the body; ``batch_wait`` queued for its batch).
PREDICT_STAGES = ("decode", "detect", "align", "batch_wait", "preprocess", "infer", "post")


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: Any) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}" if kv else ""


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class Exposition:
    """Lines of one exposition; each metric family's HELP and TYPE once, before its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: Any) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def histogram(self, name: str, counts: dict[int, int], buckets: tuple[int, ...], **labels: Any) -> None:
        """A histogram from exact value → count."""
        for le in buckets:
            self.sample(f"{name}_bucket", sum(c for v, c in counts.items() if v <= le), **labels, le=le)
        self.sample(f"{name}_bucket", sum(counts.values()), **labels, le="+Inf")
        self.sample(f"{name}_sum", sum(v * c for v, c in counts.items()), **labels)
        self.sample(f"{name}_count", sum(counts.values()), **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class ServerCounters:
    """What the request handlers count (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.predict_seconds: dict[str, float] = dict.fromkeys(PREDICT_STAGES, 0.0)
        self.predict_count = 0
        self.predict_faces = 0
        self.in_flight = 0

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1

    def predicted(self, timings: dict[str, float], faces: int) -> None:
        with self._lock:
            self.predict_count += 1
            self.predict_faces += faces
            for k in PREDICT_STAGES:
                self.predict_seconds[k] += timings.get(k, 0.0)


def render(
    counters: ServerCounters, uptime_s: float, batches: dict[str, dict[int, int]] | None, streams: list[Any]
) -> str:
    """The whole exposition: server counters, batches (``None`` when batching is off) and every stream."""
    ex = Exposition()
    ex.family("edge_affect_uptime_seconds", "gauge", "Seconds since the server started.")
    ex.sample("edge_affect_uptime_seconds", round(uptime_s, 3))
    with counters._lock:
        requests = dict(counters.requests)
        seconds = dict(counters.predict_seconds)
        n_pred, n_faces, in_flight = counters.predict_count, counters.predict_faces, counters.in_flight
    ex.family("edge_affect_http_requests_total", "counter", "HTTP requests answered, by method, route and status.")
    for (method, route, status), n in sorted(requests.items()):
        ex.sample("edge_affect_http_requests_total", n, method=method, route=route, status=status)
    ex.family("edge_affect_predict_in_flight", "gauge", "/v1/predict requests being processed now.")
    ex.sample("edge_affect_predict_in_flight", in_flight)
    ex.family("edge_affect_predict_faces_total", "counter", "Faces returned by /v1/predict.")
    ex.sample("edge_affect_predict_faces_total", n_faces)
    ex.family("edge_affect_predict_stage_seconds", "summary", "Seconds per /v1/predict stage, summed over requests.")
    for k in PREDICT_STAGES:
        ex.sample("edge_affect_predict_stage_seconds_sum", round(seconds[k], 6), stage=k)
        ex.sample("edge_affect_predict_stage_seconds_count", n_pred, stage=k)
    if batches is not None:
        ex.family("edge_affect_predict_batch_requests", "histogram", "Requests per batched model call.")
        ex.histogram("edge_affect_predict_batch_requests", batches["requests"], BATCH_BUCKETS)
        ex.family("edge_affect_predict_batch_faces", "histogram", "Faces per batched model call.")
        ex.histogram("edge_affect_predict_batch_faces", batches["faces"], BATCH_BUCKETS)
    ex.family("edge_affect_streams", "gauge", "Streams by state.")
    states = Counter(s.state for s in streams)
    for state in ("running", "ended", "failed", "stopped"):
        ex.sample("edge_affect_streams", states.get(state, 0), state=state)
    rows = [(s, s.counters()) for s in streams]
    per_stream = (
        ("edge_affect_stream_frames_total", "counter", "Frames processed.", lambda c: c["frames"]),
        ("edge_affect_stream_faces_total", "counter", "Faces found.", lambda c: c["faces"]),
        ("edge_affect_stream_fps", "gauge", "Frames per second over the last 30 frames.", lambda c: round(c["fps"], 3)),
        ("edge_affect_stream_clients", "gauge", "Connected event (SSE) clients.", lambda c: c["event_clients"]),
        ("edge_affect_stream_preview_clients", "gauge", "Connected MJPEG clients.", lambda c: c["preview_clients"]),
    )
    for name, kind, help_text, get in per_stream:
        ex.family(name, kind, help_text)
        for s, c in rows:
            ex.sample(name, get(c), stream=s.id)
    ex.family("edge_affect_stream_dropped_frames_total", "counter", "Frames dropped: source = pipeline behind a live "
              "source; events/preview = a slow client's queue was full.")
    for s, c in rows:
        for where in ("source", "events", "preview"):
            ex.sample("edge_affect_stream_dropped_frames_total", c[f"dropped_{where}"], stream=s.id, where=where)
    ex.family("edge_affect_stream_queue_depth", "gauge", "Items waiting: source = frames read ahead, events = "
              "the fullest client queue.")
    for s, c in rows:
        ex.sample("edge_affect_stream_queue_depth", c["source_queue"], stream=s.id, queue="source")
        ex.sample("edge_affect_stream_queue_depth", c["event_queue_max"], stream=s.id, queue="events")
    ex.family("edge_affect_stream_stage_seconds", "summary", "Seconds per pipeline stage, summed over frames.")
    for s, _c in rows:
        for k, v in list(s.times.total.items()):
            ex.sample("edge_affect_stream_stage_seconds_sum", round(v, 6), stream=s.id, stage=k)
            ex.sample("edge_affect_stream_stage_seconds_count", s.times.frames, stream=s.id, stage=k)
    return ex.text()
