"""Averaging views of one alignment: ``align.view_offsets`` / ``align_views`` / ``crop_views``,
``Predictor.predict(views=...)`` and ``FacePipeline(views=...)``."""

from __future__ import annotations

import numpy as np
import pytest

from edge_affect.artifact import ArtifactMeta, align_views
from edge_affect.runtime.align import align_face, crop_views, view_offsets
from edge_affect.runtime.align import align_views as view_crops

LANDMARKS = np.array([[80.0, 90.0], [130.0, 90.0], [105.0, 118.0], [86.0, 142.0], [124.0, 142.0]])


def test_view_offsets_are_quarter_pixel_moves() -> None:
    assert view_offsets(1) == [(0.0, 0.0)]
    assert view_offsets(2) == [(0.25, 0.25), (-0.25, -0.25)]
    assert sorted(view_offsets(4)) == [(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)]
    for bad in (0, 3, 8, True, 2.0):
        with pytest.raises(ValueError, match=r"expected one of \[1, 2, 4\]"):
            view_offsets(bad)  # type: ignore[arg-type]


def test_views_of_a_frame_are_moved_crops_of_the_same_alignment(astronaut: np.ndarray) -> None:
    one = view_crops(astronaut, LANDMARKS, 48, views=1)
    np.testing.assert_array_equal(one[0], align_face(astronaut, LANDMARKS, 48))
    two = view_crops(astronaut, LANDMARKS, 48, views=2)
    assert two.shape == (2, 48, 48, 3) and two.dtype == np.uint8
    assert not np.array_equal(two[0], two[1])
    # a quarter pixel each way: each view stays close to the plain crop
    for v in two:
        assert np.abs(v.astype(int) - one[0].astype(int)).mean() < 8


def test_crop_views_keep_the_crop_shape_and_refuse_non_crops() -> None:
    gray = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(crop_views(gray, 1)[0, ..., 0], gray)
    v = crop_views(gray, 2)
    assert v.shape == (2, 48, 48, 1)
    # moved by +1/4 px: inside the crop each pixel lies between its own and its upper-left neighbour's values
    inner = v[0, 1:, 1:, 0].astype(int)
    lo = np.minimum.reduce([gray[1:, 1:], gray[:-1, :-1], gray[1:, :-1], gray[:-1, 1:]]).astype(int)
    hi = np.maximum.reduce([gray[1:, 1:], gray[:-1, :-1], gray[1:, :-1], gray[:-1, 1:]]).astype(int)
    assert ((inner >= lo - 1) & (inner <= hi + 1)).all()
    assert crop_views(np.zeros((48, 48, 3), np.uint8), 4).shape == (4, 48, 48, 3)
    with pytest.raises(ValueError, match="a 40×48 crop, expected a square"):
        crop_views(np.zeros((48, 40), np.uint8), 2)
    with pytest.raises(ValueError, match=r"expected one of \[1, 2, 4\]"):
        crop_views(gray, 3)


def test_predict_averages_each_faces_views(default_predictor) -> None:
    p = default_predictor
    faces = np.random.default_rng(1).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    crops = np.concatenate([crop_views(f, 2) for f in faces])
    each = p.predict(crops)
    avg = p.predict(crops, views=2)
    assert len(avg) == 3
    for i, r in enumerate(avg):
        a, b = each[2 * i], each[2 * i + 1]
        for k in ("valence", "arousal"):
            assert r[k] == pytest.approx((a[k] + b[k]) / 2, abs=1e-6)
        for k in ("expression_probs", "au_probs"):
            for name in r[k]:
                assert r[k][name] == pytest.approx((a[k][name] + b[k][name]) / 2, abs=1e-6)
        assert r["expression"] == max(r["expression_probs"], key=r["expression_probs"].get)
        assert r["au_active"] == {n: r["au_probs"][n] >= t for n, t in zip(p.aus, p.au_thresholds, strict=True)}


def test_predict_views_one_record_per_face_for_bad_input(default_predictor) -> None:
    p = default_predictor
    crops = list(np.concatenate([crop_views(np.full((48, 48), 90, np.uint8), 2) for _ in range(3)]))
    crops[3] = np.zeros((0, 0), np.uint8)  # the second face's second view
    recs = p.predict(crops, views=2)
    assert [r["status"] for r in recs] == ["ok", "bad_input", "ok"]
    assert "face 3" in recs[1]["error"]
    assert recs[0]["expression_probs"] == recs[2]["expression_probs"]
    with pytest.raises(ValueError, match="views 2 for 3 crops, expected a whole number of views per face"):
        p.predict(crops[:3], views=2)
    with pytest.raises(ValueError, match="views 0 for"):
        p.predict(crops, views=0)


def test_postprocess_views_marks_a_face_with_one_nonfinite_view(default_predictor) -> None:
    p = default_predictor
    rng = np.random.default_rng(2)
    out = {"va": rng.standard_normal((4, 2)), "expr": rng.standard_normal((4, 8)), "au": rng.standard_normal((4, 12))}
    out["expr"][3, 1] = np.nan  # face 1, view 1
    recs = p.postprocess(out, views=2)
    assert [r["status"] for r in recs] == ["ok", "nonfinite_output"]
    assert recs[1]["error"] == "network output expr has NaN/Inf"
    with pytest.raises(ValueError, match="4 rows do not divide into runs of 3 views"):
        p.postprocess(out, views=3)


def test_pipeline_views_setting(default_predictor, detector, astronaut: np.ndarray) -> None:
    from edge_affect.runtime.pipeline import FacePipeline

    one = FacePipeline(default_predictor, detector, track=False)
    assert one.views == 1 and one.settings()["views"] == 1  # the shipped model names no align_views
    two = FacePipeline(default_predictor, detector, track=False, views=2)
    assert two.settings()["views"] == 2
    r1, r2 = one.process(astronaut)[0], two.process(astronaut)[0]
    assert r1["status"] == r2["status"] == "ok" and r1["box"] == r2["box"]
    crops = view_crops(astronaut, np.asarray(r2["landmarks"]), 48, one.template, one.antialias, 2)
    want = default_predictor.predict(crops, views=2)[0]
    # the record's landmarks are rounded to 0.01 px: the crops made from them differ by that much
    assert r2["expression_probs"] == pytest.approx(want["expression_probs"], abs=5e-5)
    for bad, msg in ((3, r"FacePipeline: views 3: expected one of \[1, 2, 4\]"), (True, "views"), (0, "views")):
        with pytest.raises(ValueError, match=msg):
            FacePipeline(default_predictor, detector, views=bad)


def test_metadata_align_views_is_checked() -> None:
    from edge_affect.artifact import Preprocess

    ok = ArtifactMeta(preprocess=Preprocess(input_size=48), extra={"align_views": 2})
    assert align_views(ok.extra) == 2 and align_views({}) == 1
    for bad in (3, True, "2", 2.0):
        with pytest.raises(ValueError, match=r"align_views must be one of \[1, 2, 4\]"):
            ArtifactMeta(preprocess=Preprocess(input_size=48), extra={"align_views": bad})


def test_bench_pipeline_compares_with_one_view_as_the_reference() -> None:
    from edge_affect.runtime.bench import pipeline_policies

    pols = pipeline_policies(views=2)
    ref, *others = pols.values()
    assert ref["views"] == 1 and all(p["views"] == 2 for p in others)
    assert list(pols)[-1].endswith(", 2 views")
    assert all(p["views"] is None for p in list(pipeline_policies().values())[1:])  # the model's own
