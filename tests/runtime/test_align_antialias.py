"""The anti-aliased face alignment (``align_face(..., antialias=True)``; not yet the runtime's default): same geometry as
the plain bilinear warp, and a crop that sub-pixel landmark noise moves less on a real photo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_affect.runtime.align import ARCFACE_TEMPLATE_112, align_face, similarity_transform, warp_scale

SAMPLES = Path(__file__).resolve().parents[2] / "edge_affect" / "assets" / "samples"
#: YuNet's landmarks on the shipped astronaut photo (NASA, public domain), rounded: a real face 113 px high.
ASTRONAUT_LM = np.array([[200.1, 101.8], [247.1, 102.6], [220.4, 124.5], [198.6, 142.8], [239.7, 143.6]])


def _face(centre: tuple[float, float], half_eye_dist: float, angle: float) -> np.ndarray:
    """Five landmarks of a face at ``centre``, eyes ``2·half_eye_dist`` apart, turned by ``angle`` rad."""
    base = np.array([[-1.0, -0.6], [1.0, -0.6], [0.0, 0.0], [-0.8, 0.7], [0.8, 0.7]]) * half_eye_dist
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return base @ rot.T + np.asarray(centre)


@pytest.mark.parametrize("half_eye_dist", [30.0, 80.0, 150.0, 300.0])
def test_antialias_keeps_the_plain_warps_geometry(half_eye_dist):
    """On a linear ramp every low-pass filter is the identity, so the two warps must agree to rounding: this
    fails if the patch's cell centres, padding or matrix were off by even a fraction of a cell."""
    yy, xx = np.mgrid[0:2400, 0:2400].astype(np.float32)
    ramp = np.dstack([xx + 2 * yy, 3 * xx - yy]).astype(np.float32)
    lm = _face((1203.3, 1187.6), half_eye_dist, 0.2)
    m = similarity_transform(lm, ARCFACE_TEMPLATE_112 * 48 / 112)
    assert warp_scale(m) < 0.5  # every case shrinks, the largest by ~14x
    plain = align_face(ramp, lm, 48, antialias=False)
    smooth = align_face(ramp, lm, 48, antialias=True)
    assert smooth.shape == plain.shape == (48, 48, 2)
    # warpAffine places its samples to 1/32 px, so each warp may be off by 1/64 px per axis: in frame px that is
    # 1/64 for the plain warp and k/64 on the patch of k-px cells; the ramps rise by at most 3 + 2 per px of x + y.
    # (A cell centre misplaced by half a cell would cost 2.5·k: 35 grey levels at k = 14.)
    k = max(1, int(1.0 / (2.0 * warp_scale(m))))
    assert np.abs(smooth - plain).max() <= (k + 1) * 5 / 64


def test_a_warp_that_does_not_shrink_is_the_plain_warp():
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    lm = _face((80.0, 60.0), 6.0, 0.1)  # a 20-px face enlarged to 48 px
    assert warp_scale(similarity_transform(lm, ARCFACE_TEMPLATE_112 * 48 / 112)) > 1
    assert np.array_equal(align_face(img, lm, 48, antialias=True), align_face(img, lm, 48))


def test_a_face_cut_by_the_frame_edge_aligns_like_the_plain_warp_on_smooth_content():
    """Half the footprint lies outside the frame: both warps replicate the frame's edge there."""
    yy, xx = np.mgrid[0:400, 0:600]
    img = np.dstack([128 + 100 * np.sin(xx / 90.0) * np.cos(yy / 70.0)] * 3).astype(np.uint8)
    for centre in [(10.0, 200.0), (590.0, 5.0), (300.0, 398.0)]:
        lm = _face(centre, 60.0, -0.3)
        smooth = align_face(img, lm, 48, antialias=True)
        assert smooth.dtype == np.uint8 and smooth.shape == (48, 48, 3)
        assert np.abs(smooth.astype(int) - align_face(img, lm, 48, antialias=False)).mean() < 2.0


def test_a_crop_entirely_outside_the_frame_is_the_border_fill():
    img = np.full((100, 100, 3), 77, np.uint8)
    crop = align_face(img, _face((5000.0, 5000.0), 40.0, 0.0), 48, antialias=True)
    assert crop.shape == (48, 48, 3) and (crop == 77).all()


def test_landmark_noise_moves_the_antialiased_crop_less_on_a_real_photo():
    """The astronaut's face (113 px) shrinks to 48 px: under the same N(0, 1 px) landmark noise the plain warp's
    crop changes by ~1.6x what the anti-aliased one does (measured 14.6 against 9.0 grey levels RMS)."""
    img = cv2.cvtColor(cv2.imread(str(SAMPLES / "astronaut.png")), cv2.COLOR_BGR2RGB)
    noise = np.random.default_rng(0).normal(0.0, 1.0, (32, 5, 2))
    change = {}
    for antialias in (False, True):
        ref = align_face(img, ASTRONAUT_LM, 48, antialias=antialias).astype(np.float64)
        change[antialias] = np.mean(
            [np.sqrt(np.mean((align_face(img, ASTRONAUT_LM + n, 48, antialias=antialias) - ref) ** 2)) for n in noise]
        )
    assert change[True] < 0.75 * change[False], change


def test_the_model_decides_the_warp(default_predictor) -> None:
    """``align_antialias``: a model trained with blur augmentation gets the anti-aliased warp, others the plain
    one; an explicit ``align_antialias`` in the metadata wins; a non-boolean one is refused when loading."""
    from edge_affect.artifact import ArtifactMeta, align_antialias

    blur = {"augment": True, "augment_params": {"blur": 0.5}}
    assert align_antialias({}) is False
    assert align_antialias({"train_config": blur}) is True
    assert align_antialias({"train_config": {**blur, "augment": False}}) is False
    assert align_antialias({"train_config": {"augment": True, "augment_params": {"blur": 0.0}}}) is False
    part = {"augment": True, "augment_params": {"blur": 0.5, "blur_prob": 0.5}}  # a share of the faces blurred
    assert align_antialias({"train_config": part}) is True
    never = {"augment": True, "augment_params": {"blur": 0.5, "blur_prob": 0}}  # blur asked on no face
    assert align_antialias({"train_config": never}) is False
    assert align_antialias({"train_config": {"augment": True, "augment_params": {"landmark_jitter": 0.01}}}) is False
    assert align_antialias({"train_config": blur, "align_antialias": False}) is False
    assert align_antialias({"align_antialias": True}) is True
    with pytest.raises(ValueError, match="align_antialias must be true or false"):
        ArtifactMeta(**{**default_predictor.meta.__dict__, "extra": {"align_antialias": "yes"}})


@pytest.mark.parametrize("antialias", [False, True])
def test_the_pipeline_aligns_with_the_models_warp(antialias: bool, default_predictor, detector, monkeypatch) -> None:
    """A still photo through ``FacePipeline`` gives what the model predicts on the crop of the warp its metadata
    names, and not what it predicts on the other warp's crop."""
    from edge_affect.runtime.pipeline import FacePipeline

    img = cv2.cvtColor(cv2.imread(str(SAMPLES / "astronaut.png")), cv2.COLOR_BGR2RGB)
    monkeypatch.setitem(default_predictor.meta.extra, "align_antialias", antialias)
    pipe = FacePipeline(default_predictor, detector, track=False)
    assert pipe.antialias is antialias
    (rec,) = pipe.process(img)
    lm = detector.detect(img)[0].landmarks
    want, other = (
        default_predictor.predict(align_face(img, lm, default_predictor.input_size, pipe.template, aa))[0]
        for aa in (antialias, not antialias)
    )
    got, want, other = (
        np.array([r["expression_probs"][e] for e in default_predictor.expressions]) for r in (rec, want, other)
    )
    # A confident smile: the two crops move its probabilities by ~1e-4, the pipeline matches its own warp far closer.
    assert np.abs(want - other).max() > 2e-5
    assert np.abs(got - want).max() < 0.1 * np.abs(want - other).max()
