"""Dynamic batching of face crops: crops from requests that arrive together go through one model call.

As Triton's dynamic batcher: the first waiting request opens a batch, which closes when ``max_batch`` faces
are in it or ``max_wait_ms`` has passed since it opened, whichever is first; one thread runs the model on it
and hands each request its own records. Given ``pending`` (requests in progress anywhere in the server), a batch
that already holds every one of them runs at once: a lone client never pays the wait. :class:`BatchedPredictor` puts the batcher behind the
``Predictor.predict`` contract, so a :class:`~edge_affect.runtime.pipeline.FacePipeline` uses it unchanged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge_affect.runtime.predictor import Predictor, check_views
from edge_affect.runtime.preprocess import as_face_list

log = logging.getLogger(__name__)


class _Job:
    """One caller's crops, waiting for their records."""

    __slots__ = ("faces", "views", "done", "records", "error", "timings", "queued_at")

    def __init__(self, faces: list[Any], views: int = 1) -> None:
        self.faces = faces
        self.views = views
        self.done = threading.Event()
        self.records: list[dict[str, Any]] | None = None
        self.error: BaseException | None = None
        self.timings: dict[str, float] = {}
        self.queued_at = time.perf_counter()


class DynamicBatcher:
    """Runs ``predictor.predict`` on batches formed from concurrent :meth:`predict` calls (thread-safe)."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        pending: Callable[[], int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: expected ≥ 1 face")
        if not 0 <= max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms {max_wait_ms}: expected 0..1000 ms")
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.pending = pending
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        #: Batches run, by the number of requests in them and by the number of faces.
        self.batch_requests: Counter[int] = Counter()
        self.batch_faces: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._loop, name="predict batcher", daemon=True)
        self._closed = False
        self._thread.start()

    def predict(self, faces: Any, timings: dict[str, float] | None = None, views: int = 1) -> list[dict[str, Any]]:
        """Records for ``faces`` (as ``Predictor.predict``, ``views`` crops per face), computed in a batch with
        other callers' faces (callers with another number of views share the wait, not the model call).

        ``timings`` receives ``batch_wait`` (queued until its batch ran) and the batch's ``preprocess``,
        ``infer`` and ``post`` seconds."""
        items = as_face_list(faces, "predict")
        check_views(views, len(items))
        if self._closed:
            raise RuntimeError("the predict batcher is closed")
        job = _Job(items, views)
        self._queue.put(job)
        job.done.wait()
        if timings is not None:
            for k, v in job.timings.items():
                timings[k] = timings.get(k, 0.0) + v
        if job.error is not None or job.records is None:
            raise job.error or RuntimeError("the predict batcher stopped before this request ran")
        return job.records

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, n = [first], len(first.faces)
        deadline = time.perf_counter() + self.max_wait_s
        while n < self.max_batch:
            left = deadline - time.perf_counter()
            if self.pending is not None and self.pending() <= len(jobs):
                left = 0.0  # nobody else is on the way: take what is queued and go
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            jobs.append(job)
            n += len(job.faces)
        return jobs

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            for views in dict.fromkeys(j.views for j in jobs):  # one model call per number of views
                self._run([j for j in jobs if j.views == views])

    def _run(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        faces = [f for j in jobs for f in j.faces]
        views = jobs[0].views
        timings: dict[str, float] = {}
        try:
            records = self.predictor.predict(faces, timings=timings, views=views)
        except Exception as e:  # noqa: BLE001 - one caller's bad crops must not fail the others: run them alone
            if len(jobs) > 1:
                for j in jobs:
                    self._run([j])
                return
            jobs[0].error = e
            jobs[0].done.set()
            return
        with self._lock:
            self.batch_requests[len(jobs)] += 1
            self.batch_faces[len(faces)] += 1
        at = 0
        for j in jobs:
            j.timings = {"batch_wait": start - j.queued_at, **timings}
            n = len(j.faces) // views
            j.records = records[at : at + n]
            at += n
            j.done.set()

    def stats(self) -> dict[str, dict[int, int]]:
        """Batches run so far, by requests per batch and by faces per batch."""
        with self._lock:
            return {"requests": dict(self.batch_requests), "faces": dict(self.batch_faces)}

    def close(self) -> None:
        """Finish queued work and stop the batching thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=10)


class BatchedPredictor:
    """A ``Predictor`` whose ``predict`` goes through a :class:`DynamicBatcher`; everything else is the wrapped one's."""

    def __init__(self, predictor: Predictor, batcher: DynamicBatcher) -> None:
        self._predictor = predictor
        self.batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def predict(self, faces: Any, timings: dict[str, float] | None = None, views: int = 1) -> list[dict[str, Any]]:
        return self.batcher.predict(faces, timings, views)
