"""Face pipeline on a real photo: YuNet box and landmarks, alignment, tracking, smoothing, no-face frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.runtime import load
from edge_affect.runtime.faces import (
    ARCFACE_TEMPLATE_112,
    RECORD_FIELDS,
    EMASmoother,
    FacePipeline,
    IoUTracker,
    YuNetDetector,
    align_face,
    similarity_transform,
)

#: Reference (OpenCV's cv.FaceDetectorYN, same weights): box x 178.2, y 62.9, w 89.9, h 113.3;
#: eyes (200.1, 101.8) and (247.1, 102.6). Tolerances: box edges 3 px, landmarks 2 px.
BOX_TOL_PX = 3.0
EYE_TOL_PX = 2.0


def test_astronaut_face_box_and_eyes(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    dets = detector.detect(astronaut)
    assert len(dets) == 1
    d = dets[0]
    x, y, w, h = d.box
    assert abs(x - 178.2) < BOX_TOL_PX and abs(y - 62.9) < BOX_TOL_PX
    assert abs(x + w - 268.1) < BOX_TOL_PX and abs(y + h - 176.2) < BOX_TOL_PX
    np.testing.assert_allclose(d.landmarks[0], [200.1, 101.8], atol=EYE_TOL_PX)
    np.testing.assert_allclose(d.landmarks[1], [247.1, 102.6], atol=EYE_TOL_PX)
    assert 0.9 < d.score <= 1.0


def test_detection_scales_with_frame_size(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    """A 2× upscaled frame (1024², detected at 640²) gives the same face in original-frame pixels."""
    import cv2

    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    dets = detector.detect(big)
    assert len(dets) == 1
    np.testing.assert_allclose(dets[0].landmarks[:2] / 2, [[200.1, 101.8], [247.1, 102.6]], atol=2 * EYE_TOL_PX)


def test_alignment_puts_eyes_on_the_template(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    d = detector.detect(astronaut)[0]
    crop = align_face(astronaut, d.landmarks, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    m = similarity_transform(d.landmarks, ARCFACE_TEMPLATE_112)
    mapped = d.landmarks @ m[:, :2].T + m[:, 2]
    # A least-squares fit of 5 points: eyes land within 4 px of the template, the eye line within 4°.
    np.testing.assert_allclose(mapped[:2], ARCFACE_TEMPLATE_112[:2], atol=4.0)
    dx, dy = mapped[1] - mapped[0]
    assert abs(np.degrees(np.arctan2(dy, dx))) < 4.0
    # Closed-form check: the 5 template points are the exact image of their own similarity.
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]) * 1.7
    src = ARCFACE_TEMPLATE_112 @ rot.T + [5.0, -3.0]
    np.testing.assert_allclose(similarity_transform(src, ARCFACE_TEMPLATE_112)[:, :2] @ rot, np.eye(2), atol=1e-9)
    # Scaled template for a 64-px model: same geometry.
    crop64 = align_face(astronaut, d.landmarks, 64)
    assert crop64.shape == (64, 64, 3)


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def test_no_face_in_blank_frame(detector: YuNetDetector) -> None:
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []


def test_pipeline_records(artifacts: dict[str, Path], astronaut: np.ndarray) -> None:
    with load(artifacts["onnx"]) as p:
        pipe = FacePipeline(p)
        recs = pipe.process(astronaut)
        assert len(recs) == 1 and recs[0]["status"] == "ok" and recs[0]["track"] == 0
        json.dumps(recs, allow_nan=False)
        assert set(recs[0]) == set(RECORD_FIELDS) - {"source", "frame", "timestamp"}
        assert [r["status"] for r in pipe.process(np.zeros((100, 100, 3), np.uint8))] == ["no_face"]
        assert [r["status"] for r in pipe.process(None, error="frame could not be decoded")] == ["bad_frame"]
        assert [r["status"] for r in pipe.process(np.zeros((1, 0, 3), np.uint8))] == ["bad_frame"]
        # Gray, RGBA and 16-bit frames go through the same path.
        gray = astronaut.mean(2).astype(np.uint8)
        rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], 2)
        for frame in (gray, rgba, astronaut.astype(np.uint16) * 257):
            pipe.reset()  # unrelated stills: without it a faceless frame defers detection up to N frames
            out = pipe.process(frame)
            assert len(out) == 1 and out[0]["status"] == "ok"
        pipe.close()


def test_two_faces_and_tracks(artifacts: dict[str, Path], astronaut: np.ndarray) -> None:
    """Two copies side by side → two tracks whose ids persist as the frame shifts."""
    frame = np.concatenate([astronaut[:300], astronaut[:300]], axis=1)  # 300×1024, faces ~512 px apart
    with load(artifacts["onnx"]) as p:
        pipe = FacePipeline(p)
        first = pipe.process(frame)
        assert len(first) == 2
        ids = {round(r["box"][0] / 100): r["track"] for r in first}
        shifted = np.roll(frame, 6, axis=1)
        second = pipe.process(shifted)
        assert {round((r["box"][0] - 6) / 100): r["track"] for r in second} == ids
        pipe.close()


def test_tracker_and_smoother_units() -> None:
    t = IoUTracker(iou_threshold=0.3, max_missed=1)
    a, b = np.array([0, 0, 10, 10.0]), np.array([50, 50, 10, 10.0])
    assert t.update([a, b]) == [0, 1]
    assert t.update([b + 1, a + 1]) == [1, 0]
    assert t.update([]) == []
    assert t.update([]) == [] and not t.tracks  # both tracks expired
    assert t.update([a]) == [2]  # ids are never reused

    s = EMASmoother(alpha=0.5)
    rec = {
        "status": "ok",
        "valence": 1.0,
        "arousal": 0.0,
        "expression_probs": {"A": 0.9, "B": 0.1},
        "au_probs": {"AU1": 0.6},
        "expression": "A",
        "expression_score": 0.9,
        "au_active": {"AU1": True},
    }
    s.apply(0, dict(rec))
    out = s.apply(0, {**rec, "valence": 0.0, "expression_probs": {"A": 0.1, "B": 0.9}, "au_probs": {"AU1": 0.2}})
    assert out["valence"] == pytest.approx(0.5)
    assert out["expression_probs"] == pytest.approx({"A": 0.5, "B": 0.5})
    assert out["au_probs"]["AU1"] == pytest.approx(0.4) and out["au_active"]["AU1"] is False
    with pytest.raises(ValueError, match="alpha"):
        EMASmoother(alpha=0.0)
