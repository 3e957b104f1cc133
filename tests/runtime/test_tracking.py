"""Detect every N frames, track in between: same faces and predictions as detecting every frame.

Generated 640×480 clips (``edge_affect.runtime.clips``, written with cv2.VideoWriter and decoded as
video) go through the shipped default model twice: the old policy (full detection every frame at 640)
and the new defaults (whole-frame detection at 640 every N = 10 frames; in between, faces re-found in
regions at the whole-frame scale or held where still, new faces picked up where the image changed outside every
track and its body, and a whole-frame detection while a face moves across the frame edge or motion along the
edge could bring one in). Both run without smoothing: face finding is judged on each frame's own predictions.

Measured here (150-frame clips, default model edge_gray48_slim): same faces as the old policy on 100 %
of the frames with a face ≥ 48 px, partly visible and being picked up included (one face: 150 frames;
entering and leaving: 131; a person walking, head and torso: 150, no motion region searched; crossing:
150; unseen: 150); every new face picked up on the frame the old policy first found it; expression
top-1 agreement on tracked frames 100 %. The settings and rules were chosen on the first four clips (the
crossing clip, made to check them, showed the edge-motion case at 98.7 %); ``unseen_clip`` was written
after they were fixed and measured once, at 100 %. (The previous defaults, 384 px every 5th frame without
motion pickup: 93.1 % on the entering/leaving clip, faces picked up 1–3 frames late.)
Issue 20 (regions at the whole-frame scale, still faces held, the edge rules revised) was developed against
these clips too: the enter/leave, crossing and unseen clips showed region re-detection keeping faces 13-15 %
outside the frame that the whole frame drops, which set the edge rules, so none of them is unseen any more;
``webcam_clip`` (tests/runtime/test_steady_video.py) was written after those rules were fixed.
Asserted: ≥ 99 %, pickup ≤ 1 frame, ≥ 98 %.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_affect.runtime.bench import compare_to_reference, match_faces
from edge_affect.runtime.clips import (
    crossing_clip,
    enter_leave_clip,
    moving_face_clip,
    unseen_clip,
    walking_person_clip,
)
from edge_affect.runtime.detect import Detection, YuNetDetector, min_face_px
from edge_affect.runtime.pipeline import DEFAULT_DET_SIZE, DEFAULT_DETECT_EVERY, FacePipeline
from edge_affect.runtime.sources import open_source
from edge_affect.runtime.track import IoUTracker

SAME_FACES_MIN = 0.99
EXPR_AGREEMENT_MIN = 0.98
MIN_FACE_PX = 48.0


def _decode(path: Path) -> list[np.ndarray]:
    with open_source(str(path), prefetch=4) as src:
        frames = [f.image for f in src]
    assert all(f is not None for f in frames)
    return frames  # type: ignore[return-value]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[np.ndarray], list]]:
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for name, make in (
        ("moving", moving_face_clip),
        ("enter_leave", enter_leave_clip),
        ("walking", walking_person_clip),
        ("crossing", crossing_clip),
        ("unseen", unseen_clip),
    ):
        path = d / f"{name}.mp4"
        truth = make(path, 150)
        out[name] = (_decode(path), truth)
    return out


def _run(pipe: FacePipeline, frames: list[np.ndarray]) -> tuple[list, list[bool], list[list[int]]]:
    faces, full, tracks = [], [], []
    for f in frames:
        before = pipe.stats["full"]
        recs = [r for r in pipe.process(f) if r["box"] is not None]
        full.append(pipe.stats["full"] > before)
        faces.append([(np.asarray(r["box"]), r["expression"]) for r in recs])
        tracks.append([r["track"] for r in recs])
    return faces, full, tracks


@pytest.mark.parametrize("name", ["moving", "enter_leave", "walking", "crossing", "unseen"])
def test_new_policy_reports_the_faces_of_every_frame_detection(
    name: str, clips: dict, default_predictor: Any, detector: YuNetDetector
) -> None:
    frames, truth = clips[name]
    # Face finding is judged on each frame's own predictions (smoothing over time is judged elsewhere).
    old = FacePipeline(default_predictor, detector, det_size=640, detect_every=1, smooth=False)
    new = FacePipeline(default_predictor, detector, smooth=False)
    assert new.detect_every == DEFAULT_DETECT_EVERY > 1 and new.track_policy == "roi"
    ref, _, _ = _run(old, frames)
    got, full, tracks = _run(new, frames)
    cmp = compare_to_reference(
        ref, got, full, truth, frame_size=(640, 480), min_face=MIN_FACE_PX, pickup=DEFAULT_DETECT_EVERY
    )
    # Every frame with a face ≥ 48 px, partly visible or just appearing included.
    assert cmp["frames_compared_all"] >= 130
    assert cmp["same_faces_all"] >= SAME_FACES_MIN, cmp
    assert cmp["same_faces"] >= SAME_FACES_MIN, cmp["disagreeing_frames"]
    # Every face is picked up at most a frame after detecting every frame first finds it (motion pickup).
    assert cmp["pickup_frames"] and all(d is not None and d <= 1 for d in cmp["pickup_frames"].values())
    # Predictions on tracked (not fully detected) frames match those from fresh detections.
    assert cmp["expr_pairs_tracked"] >= 80
    assert cmp["expr_agreement_tracked"] >= EXPR_AGREEMENT_MIN
    # Faces moving across the frame edge, and motion along the edge wide enough to hold a face, are detected
    # whole-frame: on the clips where faces keep sliding in and out that is 53 (enter_leave), 58 (crossing) and
    # 78 (unseen) of 150 frames (51, 56 and 81 under the earlier rule that sent every face touching the edge to
    # whole-frame detection); still faces are held (21, 45 and 88 face-frames), the others tracked in regions.
    at_edge = name in ("enter_leave", "crossing", "unseen")
    assert sum(full) <= (0.6 * len(frames) if at_edge else len(frames) / DEFAULT_DETECT_EVERY + 2)
    if name == "walking":  # the body moves with the face: its motion is expected, not a new face to look for
        assert new.stats["motion"] == 0 and new.stats["picked_up"] == 0
    ids = {t for ts in tracks for t in ts}
    assert len(ids) == (1 if name in ("moving", "walking") else 3), "each face keeps one track id through the clip"


def test_region_detection_maps_back_to_full_frame(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    """A region around the face (even one reaching past the frame edge) gives the face in frame pixels."""
    full = detector.detect(astronaut)[0]
    c = full.box[:2] + full.box[2:] / 2
    side = 2 * float(full.box[3])
    (inner,), (edge,), outside = detector.detect_regions(
        astronaut, [c, c + [0, -30], np.array([-500.0, -500.0])], [side, side, side], 128
    )
    assert outside == []
    # The region shows the 113-px face at 64 px: landmarks agree to within 5 % of the face height.
    tol = 0.05 * float(full.box[3])
    for d in (inner, edge):
        np.testing.assert_allclose(d.landmarks, full.landmarks, atol=tol)
        np.testing.assert_allclose(d.box, full.box, atol=tol)


def test_smaller_detector_input_finds_the_same_face(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    """At 320 px the 512² photo's face comes back in full-frame pixels, its landmarks within 5 % of the
    face height of the full-size result (YuNet places them a little differently on a 71-px face)."""
    a, b = detector.detect(astronaut), detector.detect(astronaut, max_side=320)
    assert len(a) == len(b) == 1
    tol = 0.05 * float(a[0].box[3])
    np.testing.assert_allclose(b[0].landmarks, a[0].landmarks, atol=tol)
    np.testing.assert_allclose(b[0].box, a[0].box, atol=tol)


def test_smallest_face_found_at_the_default_size(detector: YuNetDetector, tmp_path: Path) -> None:
    """The README/--help figure: on 640×480 at the default detector size every face from
    ``min_face_px`` (26 px at 640) up is found, at 4 positions each (decoded from video)."""
    from edge_affect.runtime.clips import ClipFace, render_clip

    smallest = min_face_px(640, DEFAULT_DET_SIZE)
    assert smallest == pytest.approx(26.0)
    sizes = [np.ceil(smallest), 48.0]
    seq = [(h, 120.0 + 110 * k, 120.0 + 70 * k) for h in sizes for k in range(4)]
    path = tmp_path / "small_faces.mp4"
    truth = render_clip(path, [ClipFace(lambda i: (seq[i][1], seq[i][2], seq[i][0]))], len(seq), seed=3)
    for (h, _, _), img, gt in zip(seq, _decode(path), truth, strict=True):
        dets = detector.detect(img, max_side=DEFAULT_DET_SIZE)
        assert match_faces([gt[0][1]], [d.box for d in dets], iou=0.4), f"{h:.0f}-px face missed"


def test_face_leaving_is_dropped_on_the_same_frame(
    default_predictor: Any, detector: YuNetDetector, astronaut: np.ndarray
) -> None:
    pipe = FacePipeline(default_predictor, detector, detect_every=10)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:300, :300] = astronaut[:300, 80:380]
    assert pipe.process(frame)[0]["status"] == "ok"
    assert pipe.process(frame)[0]["track"] == 0  # tracked
    assert [r["status"] for r in pipe.process(np.zeros_like(frame))] == ["no_face"]
    assert pipe.stats["full_after_loss"] == 1


@pytest.mark.parametrize("pickup", ["motion", "none"])
def test_new_face_picked_up_within_n_frames(
    default_predictor: Any, detector: YuNetDetector, astronaut: np.ndarray, pickup: str
) -> None:
    """A face that cuts in is reported on that frame with motion pickup, else within N frames."""
    n = 4
    pipe = FacePipeline(default_predictor, detector, detect_every=n, pickup=pickup)
    blank = np.full((480, 640, 3), 90, np.uint8)
    face = blank.copy()
    face[100:400, 200:500] = astronaut[:300, 80:380]
    delays = []
    for start in range(n):  # the face cuts in at every phase of the detection schedule
        pipe.reset()
        frames = [blank] * (start + 1) + [face] * n
        first = next(i for i, f in enumerate(frames) if pipe.process(f)[0]["status"] == "ok")
        delays.append(first - (start + 1))
    assert max(delays) < n
    if pickup == "motion":
        assert delays == [0] * n
    else:
        assert max(delays) > 0


def test_second_face_picked_up_in_its_region_while_the_first_is_tracked(
    default_predictor: Any, detector: YuNetDetector, astronaut: np.ndarray
) -> None:
    """Face A is tracked; face B cuts in elsewhere: B is found on that frame by detecting only the changed
    region (no whole-frame detection), gets a new track id, and A keeps its own."""
    pipe = FacePipeline(default_predictor, detector, detect_every=30)
    base = np.full((480, 640, 3), 90, np.uint8)
    head = cv2_resize(astronaut[0:260, 95:355], 130)
    base[20:150, 20:150] = head
    both = base.copy()
    both[300:430, 480:610] = head
    assert [r["track"] for r in pipe.process(base)] == [0]
    assert [r["track"] for r in pipe.process(base)] == [0]
    recs = pipe.process(both)
    assert sorted(r["track"] for r in recs) == [0, 1] and all(r["status"] == "ok" for r in recs)
    b = next(r for r in recs if r["track"] == 1)["box"]
    assert 470 <= b[0] <= 560 and 290 <= b[1] <= 400, b
    assert pipe.stats["full"] == 1 and pipe.stats["motion"] == 1 and pipe.stats["picked_up"] == 1
    # --max-faces 1: the picked-up face does not make a second one
    one = FacePipeline(default_predictor, detector, detect_every=30, max_faces=1)
    for f in (base, base, both, both):
        assert [r["track"] for r in one.process(f)] == [0]
    assert sorted(r["track"] for r in pipe.process(both)) == [0, 1]


def test_a_change_of_the_whole_frame_is_not_taken_for_a_new_face(
    default_predictor: Any, detector: YuNetDetector, astronaut: np.ndarray
) -> None:
    """Auto-exposure (every pixel +40 levels): the tracked face is re-found in its region, no region is
    searched and no whole-frame detection is brought forward."""
    pipe = FacePipeline(default_predictor, detector, detect_every=30)
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[20:150, 20:150] = cv2_resize(astronaut[0:260, 95:355], 130)
    brighter = np.clip(frame.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    for f in (frame, frame, brighter, brighter):
        assert [r["track"] for r in pipe.process(f)] == [0]
    assert pipe.stats["full"] == 1 and pipe.stats["global_change"] == 1 and pipe.stats["motion"] == 0


def cv2_resize(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


def test_region_detection_at_the_frame_scale_matches_the_whole_frame(
    detector: YuNetDetector, astronaut: np.ndarray
) -> None:
    """``detect_rect`` returns frame pixels: a rectangle around the face at scale 1 gives the whole-image
    result within 8 % of the face height (measured: 6.7 px on the 113-px face, 6 %; YuNet's box depends
    a little on the context the crop leaves it)."""
    (full,) = detector.detect(astronaut)
    x, y, w, h = (float(v) for v in full.box)
    (part,) = detector.detect_rect(astronaut, (int(x - w), int(y - h / 2), int(x + 2 * w), int(y + 1.5 * h)))
    tol = 0.08 * h
    np.testing.assert_allclose(part.box, full.box, atol=tol)
    np.testing.assert_allclose(part.landmarks, full.landmarks, atol=tol)
    assert detector.detect_rect(astronaut, (600, 600, 700, 700)) == []


def test_tracker_follows_fast_boxes_by_velocity() -> None:
    """40-px boxes moving 30 px per frame overlap by IoU 0.14: matched through the velocity estimate."""
    t = IoUTracker(iou_threshold=0.3)
    box = np.array([0.0, 0.0, 40.0, 40.0])
    assert t.update([box]) == [0]
    t.advance({0: Detection(box + [30, 0, 0, 0], np.zeros((5, 2), np.float32), 0.9)})
    for k in range(2, 6):
        assert t.update([box + [30 * k, 0, 0, 0]]) == [0]
    np.testing.assert_allclose(t.predicted_box(0), box + [180, 0, 0, 0], atol=1e-6)


def test_settings_are_checked(default_predictor: Any, detector: YuNetDetector) -> None:
    for kw, msg in (
        ({"det_size": 16}, "det_size"),
        ({"detect_every": 0}, "detect_every"),
        ({"track_policy": "kalman"}, "track_policy"),
        ({"roi_size": 8}, "roi_size"),
        ({"pickup": "optical-flow"}, "pickup"),
    ):
        with pytest.raises(ValueError, match=msg):
            FacePipeline(default_predictor, detector, **kw)
