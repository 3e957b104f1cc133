"""Issue 20: landmarks that hold still, re-detection that agrees with whole-frame detection, still faces at the
frame edge tracked, labels that do not blink; on real clips (``../shared/data/video``, skipped where absent) and
on a generated clip with what real footage has (:func:`edge_affect.runtime.clips.webcam_clip`).

The filter, hold, edge and smoothing settings were set before ``webcam_clip`` was written and before these
assertions; the real clips were used while developing (they are the only real footage here), so their figures
are development figures, not unseen ones. Measured here (default model): single_face.mp4 and
noface_face.mov: same faces as every-frame detection 100 %, expression agreement on tracked frames 100 % and
98.4 % (one frame of 63), landmark jitter 0.60 / 0.37 px → 0.00 px (still faces held), reported label changes
1.4 % (the clip's one real change), 98.6 % agreement with the centred 11-frame majority of raw labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_affect.runtime.bench import compare_to_reference
from edge_affect.runtime.clips import webcam_clip
from edge_affect.runtime.detect import YuNetDetector
from edge_affect.runtime.pipeline import DEFAULT_DETECT_EVERY, FacePipeline
from edge_affect.runtime.sources import open_source
from edge_affect.runtime.steadiness import (
    agreement,
    centred_majority,
    first_face_labels,
    label_changes,
    landmark_jitter,
    replay_smoothing,
)
from edge_affect.runtime.track import EMASmoother, OneEuroFilter

VIDEO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "video"


def _frames(path: Path) -> list[np.ndarray]:
    with open_source(str(path), prefetch=2) as src:
        return [f.image for f in src if f.image is not None]


def _records(pipe: FacePipeline, frames: list[np.ndarray]) -> tuple[list[list[dict[str, Any]]], list[bool]]:
    out, full = [], []
    for f in frames:
        before = pipe.stats["full"]
        out.append([r for r in pipe.process(f) if r["box"] is not None])
        full.append(pipe.stats["full"] > before)
    return out, full


def _faces(recs: list[list[dict[str, Any]]]) -> list:
    return [[(np.asarray(r["box"]), r["expression"]) for r in fr] for fr in recs]


# -- the parts ----------------------------------------------------------------------------------------------
def test_one_euro_filter_stills_jitter_and_follows_motion() -> None:
    """A still point with 1-px noise: the filtered jitter is under a third of the raw one. A point moving at
    5 face heights per second: the filter lags it by under 5 % of the face height after 10 frames."""
    rng = np.random.default_rng(0)
    f = OneEuroFilter()
    raw = 100 + rng.normal(0, 1.0, (120, 2))
    out = np.array([f(x, i / 30.0, scale=100.0) for i, x in enumerate(raw)])
    assert np.abs(np.diff(out[20:], axis=0)).mean() < np.abs(np.diff(raw[20:], axis=0)).mean() / 3
    f = OneEuroFilter()
    speed = 5 * 100 / 30.0  # px per frame
    out = [f(np.array([i * speed]), i / 30.0, scale=100.0)[0] for i in range(40)]
    assert abs(out[-1] - 39 * speed) < 0.05 * 100


def test_hysteresis_keeps_the_label_until_another_clearly_leads() -> None:
    """Two classes trading a few points of probability every frame: the label stays; a clear change moves it
    within 3 frames. ``margin=0`` (the smoothed arg-max) blinks on the same input."""

    def rec(p_happy: float) -> dict[str, Any]:
        probs = {"Neutral": 1 - p_happy, "Happiness": p_happy}
        return {
            "status": "ok",
            "valence": 0.0,
            "arousal": 0.0,
            "expression_probs": probs,
            "expression": max(probs, key=probs.get),
            "expression_score": max(probs.values()),
            "au_probs": {"AU1": 0.2},
            "au_active": {"AU1": False},
        }

    seq = [0.47, 0.53] * 10 + [0.9] * 6
    sm = EMASmoother(au_thresholds=[0.5])
    steady = [sm.apply(0, rec(p))["expression"] for p in seq]
    assert set(steady[:20]) == {steady[0]}
    assert "Happiness" in steady[20:23] and steady[-1] == "Happiness"
    sm0 = EMASmoother(au_thresholds=[0.5], margin=0.0)
    blink = [sm0.apply(0, rec(p))["expression"] for p in [0.4, 0.62] * 10]
    assert label_changes(blink) > 0.5


def test_a_still_face_is_held_and_a_moved_one_refound(
    default_predictor: Any, detector: YuNetDetector, astronaut: np.ndarray
) -> None:
    """The same frame again: the face is held (no region detection), its landmarks unchanged to the bit.
    The frame shifted by 6 px: the face is re-found in its region and its landmarks follow."""
    import cv2

    frame = np.full((480, 640, 3), 100, np.uint8)
    frame[100:400, 150:450] = cv2.resize(astronaut[0:300, 75:375], (300, 300), interpolation=cv2.INTER_AREA)
    pipe = FacePipeline(default_predictor, detector, smooth=False)
    first = pipe.process(frame)[0]
    again = [pipe.process(frame)[0] for _ in range(3)]
    assert pipe.stats["held"] == 3 and pipe.stats["regions"] == 0 and pipe.stats["full"] == 1
    assert all(r["landmarks"] == again[0]["landmarks"] for r in again)
    shifted = np.roll(frame, 6, axis=1)
    moved = pipe.process(shifted)[0]
    assert pipe.stats["regions"] == 1
    dx = np.mean([m[0] - a[0] for m, a in zip(moved["landmarks"], first["landmarks"], strict=True)])
    assert 1.0 < dx <= 6.5  # the One Euro filter follows part of the step on its first frame


# -- clips --------------------------------------------------------------------------------------------------
def _judge(frames: list[np.ndarray], predictor: Any, detector: YuNetDetector) -> dict[str, Any]:
    ref_raw, _ = _records(
        FacePipeline(predictor, detector, detect_every=1, filter_landmarks=False, hold=False, smooth=False), frames
    )
    new, full = _records(FacePipeline(predictor, detector, smooth=False), frames)
    cmp = compare_to_reference(_faces(ref_raw), _faces(new), full)
    shown = first_face_labels(replay_smoothing(new, EMASmoother(au_thresholds=list(predictor.meta.au_thresholds))))
    return {
        "cmp": cmp,
        "full": sum(full),
        "changes_raw": label_changes(first_face_labels(ref_raw)),
        "changes": label_changes(shown),
        "majority": agreement(shown, centred_majority(first_face_labels(ref_raw))),
        "jitter_raw": landmark_jitter(ref_raw),
        "jitter": landmark_jitter(new),
    }


def test_webcam_like_clip(tmp_path: Path, default_predictor: Any, detector: YuNetDetector) -> None:
    """Compression, blur, noise, exposure swing, hair cut by the top edge, a camera cut: same faces as
    every-frame detection on ≥ 99 % of frames, expression on ≥ 98 % of tracked faces, whole-frame detections
    only as scheduled (plus the cut), steadier landmarks and labels."""
    path = tmp_path / "webcam.mp4"
    webcam_clip(path, 150)
    r = _judge(_frames(path), default_predictor, detector)
    assert r["cmp"]["same_faces"] >= 0.99, r["cmp"]["disagreeing_frames"]
    assert r["cmp"]["expr_pairs_tracked"] >= 100 and r["cmp"]["expr_agreement_tracked"] >= 0.98, r
    assert r["full"] <= 150 // DEFAULT_DETECT_EVERY + 3, r
    assert r["jitter"] <= 0.5 * r["jitter_raw"], r
    assert r["changes"] <= 0.02 and r["majority"] >= 0.95, r


@pytest.mark.parametrize("name", ["single_face.mp4", "noface_face.mov"])
def test_real_clip(name: str, default_predictor: Any, detector: YuNetDetector) -> None:
    """Real footage: the same faces as every-frame detection on ≥ 99 % of frames, expression on ≥ 98 % of
    tracked faces, reported labels changing on ≤ 2 % of frames and matching the centred 11-frame majority of
    raw labels on ≥ 95 %, landmarks steadier than raw detection."""
    path = VIDEO / name
    if not path.is_file():
        pytest.skip(f"needs the real clip {path} (../shared/data/video beside the checkout)")
    r = _judge(_frames(path), default_predictor, detector)
    assert r["cmp"]["same_faces"] >= 0.99, r["cmp"]["disagreeing_frames"]
    assert r["cmp"]["expr_agreement_tracked"] >= 0.98, r
    assert r["changes"] <= 0.02 and r["majority"] >= 0.95, r
    assert r["jitter"] <= 0.5 * r["jitter_raw"], r


@pytest.mark.parametrize("name", ["single_face.mp4", "noface_face.mov"])
def test_shipped_model_under_landmark_noise(name: str, default_predictor: Any, detector: YuNetDetector) -> None:
    """Issue 19's alignment check: the 5 detected landmarks moved by N(0, 1 px) before alignment, 8 draws on every
    3rd frame; the share of draws whose expression is unchanged. The shipped v3 model: 99.0 % on both clips
    (v2: 99.5 % and 100 %; 97.9 % and 96.9 % on every 6th frame: a few borderline faces decide it; the issue
    measured 95.6 % on a clip with smaller faces, against its 98 % bar for v3). Asserted: no worse than 95 %."""
    from edge_affect.artifact import align_antialias
    from edge_affect.runtime.align import model_template
    from edge_affect.runtime.steadiness import expression_under_noise

    path = VIDEO / name
    if not path.is_file():
        pytest.skip(f"needs the real clip {path} (../shared/data/video beside the checkout)")
    template = model_template(default_predictor.meta.extra)
    aa = align_antialias(default_predictor.meta.extra)  # the warp the runtime uses for this model
    rng = np.random.default_rng(0)
    agree = []
    for frame in _frames(path)[::3]:
        found = detector.detect(frame)
        if found:
            lm = found[0].landmarks.astype(np.float64)
            agree.append(expression_under_noise(default_predictor, frame, lm, template, [1.0], 8, rng, aa)[1.0])
    assert len(agree) >= 20 and np.mean(agree) >= 0.95, (len(agree), np.mean(agree))


FERPLUS_VALID = VIDEO.parent / "ferplus" / "ferplus_valid.npz"


def test_shipped_model_under_landmark_noise_on_many_faces(default_predictor: Any, detector: YuNetDetector) -> None:
    """Issue 19's alignment check on many real people: 64 FER+ valid faces (evenly spaced: every expression, many
    near-ties), each 60 px high in a frame (the size of faces in a multi-person shot; YuNet finds 49), its 5
    detected landmarks moved by N(0, 1 px), 8 draws each; the share of draws whose expression is unchanged.
    The shipped v3 model (trained for it: landmark jitter and alignment consistency): 95.9 % here; 94.4 % on
    517 faces at 60 px and 96.6 % on 579 at 120 px (``benchmarks/bench_landmark_noise.py --faces``), below the
    issue's 95 % / 98 % clip bars in the large samples. v2 scored 91.6 % here (93.8 % / 95.8 %). These are FER+
    valid faces, the split that chose v3's checkpoint (not for this agreement, which chose nothing), so not an
    unseen-data figure; the floor, set after v3 was measured, is a regression guard. Asserted: no worse than
    93 %, so a model that follows the landmarks as closely as v2 did fails here."""
    from edge_affect.artifact import align_antialias
    from edge_affect.data.fer import ferplus_majority
    from edge_affect.runtime.align import model_template
    from edge_affect.runtime.steadiness import expression_under_noise, face_in_frame

    if not FERPLUS_VALID.is_file():
        pytest.skip(f"needs {FERPLUS_VALID} (../shared/data/ferplus beside the checkout)")
    images, _, _ = ferplus_majority(FERPLUS_VALID)
    template = model_template(default_predictor.meta.extra)
    aa = align_antialias(default_predictor.meta.extra)  # the warp the runtime uses for this model
    rng = np.random.default_rng(0)
    agree = []
    for i in np.linspace(0, len(images) - 1, 64).round().astype(int):
        frame = face_in_frame(images[i], 60)
        found = detector.detect(frame, max_side=max(frame.shape[:2]))
        if found:
            lm = found[0].landmarks.astype(np.float64)
            agree.append(expression_under_noise(default_predictor, frame, lm, template, [1.0], 8, rng, aa)[1.0])
    assert len(agree) >= 40 and np.mean(agree) >= 0.93, (len(agree), np.mean(agree))
