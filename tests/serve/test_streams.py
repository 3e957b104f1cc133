"""Streams in-process (real source, real pipeline, a real event loop): a client that never reads gets a bounded
queue whose overflow is dropped and counted, while the pipeline runs at its own pace; replay from a frame."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edge_affect.default import default_model
from edge_affect.runtime.predictor import load
from edge_affect.serve.streams import EVENT_QUEUE, HISTORY, ApiError, StreamManager

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def predictor() -> Any:
    with load(default_model()) as p:
        yield p


def test_stuck_subscriber_drops_and_counts(predictor: Any, clip_maker: Any, tmp_path: Path) -> None:
    clip_maker(tmp_path / "c.mp4", frames=150, size=(160, 120))
    manager = StreamManager(predictor, allow_files=tmp_path)

    async def scenario() -> tuple[Any, Any, list, list, list]:
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(None, manager.start, "c.mp4", loop)
        # never read; the pipeline thread is already running, so the frames it published before this subscription
        # come back as the replay (Last-Event-ID: -1) and the live queue starts right after them
        stuck, early = stream.subscribe_events(-1)
        assert await loop.run_in_executor(None, stream.join, 120.0), "the stream did not end within 120 s"
        # every call_soon_threadsafe hand-off of the pipeline thread was queued before the join's own result: done now
        late, replay = stream.subscribe_events(99)  # Last-Event-ID: 99 → events 100.. from the kept history
        return stream, stuck, early, replay, [late.queue.get_nowait()]

    stream, stuck, early, replay, late_items = asyncio.run(scenario())
    assert stream.state == "ended" and stream.frames == 150
    assert [seq for seq, _ in early] == list(range(len(early)))
    assert len(early) < 150 - EVENT_QUEUE, f"{len(early)} frames ran before the subscription: nothing left to drop"
    # the stuck client's queue: full (EVENT_QUEUE items, the last one the end marker), the rest dropped and counted
    items = []
    while not stuck.queue.empty():
        items.append(stuck.queue.get_nowait())
    assert len(items) == EVENT_QUEUE and not isinstance(items[-1], tuple)
    frames = [i for i in items if isinstance(i, tuple)]
    assert [seq for seq, _ in frames] == list(range(150 - len(frames), 150))  # the newest frames, in order
    # every frame after the replay was either kept or dropped and counted: none lost between replay and live
    assert stuck.dropped == 150 - len(early) - len(frames) > 0
    assert [seq for seq, _ in replay] == list(range(100, 150)) and HISTORY >= 150
    assert not isinstance(late_items[0], tuple)  # an ended stream: a late subscriber gets the end at once
    stream.unsubscribe(stuck)
    assert stream.counters()["dropped_events"] == stuck.dropped


def test_sources_outside_allow_files_are_refused(predictor: Any, tmp_path: Path) -> None:
    inside = tmp_path / "in"
    inside.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (inside / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    m = StreamManager(predictor, allow_files=inside)
    for spec, status in (("../secret.mp4", 403), ("link.mp4", 403), (str(tmp_path / "secret.mp4"), 403),
                         ("nothing.mp4", 404), ("udp://0.0.0.0:5000", 400), ("gst:videotestsrc ! appsink", 403)):
        with pytest.raises(ApiError) as e:
            m.resolve(spec)
        assert e.value.status == status, (spec, e.value.message)
    assert m.resolve("cam:0") == "cam:0" and m.resolve("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert StreamManager(predictor, allow_gst=True).resolve("gst:videotestsrc ! appsink").startswith("gst:")
    with pytest.raises(ApiError, match="--allow-files"):
        StreamManager(predictor).resolve("video.mp4")  # no --allow-files: no files at all
