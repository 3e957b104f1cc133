"""``serve.batcher``: crops of concurrent callers through one model call, each caller's records its own."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_affect.runtime.align import crop_views
from edge_affect.serve.batcher import BatchedPredictor, DynamicBatcher


@pytest.fixture(scope="module")
def predictor():
    from edge_affect.default import default_model
    from edge_affect.runtime import load

    with load(default_model("onnx")) as p:
        yield p


def test_callers_with_one_and_two_views_get_their_own_records(predictor) -> None:
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (48, 48, 1), dtype=np.uint8) for _ in range(6)]
    calls = [(faces[:3], 1), (faces[3:], 2), (faces[1:2], 2), (faces[4:], 1)]
    want = [
        predictor.predict(np.concatenate([crop_views(f, v) for f in fs]) if v > 1 else list(fs), views=v)
        for fs, v in calls
    ]
    batcher = DynamicBatcher(predictor, max_batch=64, max_wait_ms=50.0)
    model = BatchedPredictor(predictor, batcher)
    got: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def call(i: int) -> None:
        fs, v = calls[i]
        crops = np.concatenate([crop_views(f, v) for f in fs]) if v > 1 else list(fs)
        start.wait()
        got[i] = model.predict(crops, views=v)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        batcher.close()
    for g, w, (fs, _) in zip(got, want, calls, strict=True):
        assert g is not None and len(g) == len(fs)
        for a, b in zip(g, w, strict=True):
            assert a["expression"] == b["expression"]
            assert a["expression_probs"] == pytest.approx(b["expression_probs"], abs=1e-5)
    other = DynamicBatcher(predictor)
    try:
        with pytest.raises(ValueError, match="views 2 for 3 crops"):
            other.predict(faces[:3], views=2)
    finally:
        other.close()
