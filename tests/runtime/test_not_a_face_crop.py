"""``predict()`` takes face crops: a whole photo (not square, or photo-sized) is still predicted as given,
but warns once and points to FacePipeline (issue 21, "the first hour")."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_affect.default import default_model
from edge_affect.runtime.predictor import NOT_A_CROP_HINT, load, not_a_face_crop
from edge_affect.runtime.preprocess import decode_image

pytest.importorskip("cv2", reason="the runtime's preprocessing needs OpenCV (the opencv extra)")


def test_shape_rule():
    assert not_a_face_crop((112, 112, 3)) == ""
    assert not_a_face_crop((48, 48)) == ""
    assert not_a_face_crop(()) == "" and not_a_face_crop((5,)) == "" and not_a_face_crop((0, 7, 3)) == ""  # bad_input
    assert not_a_face_crop((113, 90, 3)) == ""  # a detector's face box, 1:1.26: may be a crop
    assert not_a_face_crop((479, 479, 3)) == ""
    assert "640×480 px image has the size of a photo or frame" in not_a_face_crop((480, 640, 3))  # VGA, 4:3
    assert "600×400 px image is not square" in not_a_face_crop((400, 600, 3))  # 3:2
    assert "not square" in not_a_face_crop((1920, 1080, 3))  # portrait 9:16


def test_whole_photo_warns_once_and_points_to_face_pipeline(caplog):
    from importlib.resources import files

    photo = decode_image(files("edge_affect") / "assets" / "samples" / "astronaut.png")  # ships in the wheel
    assert photo.shape == (512, 512, 3)  # square: caught by its size
    crop = np.full((112, 112, 3), 128, np.uint8)
    with load(default_model("onnx"), providers="cpu") as p, caplog.at_level(logging.WARNING):
        assert len(p.predict([crop, crop])) == 2 and not caplog.records  # crops: silent
        rec = p.predict(photo)
        assert len(rec) == 1 and rec[0]["status"] == "ok"  # still predicted, as given
        p.predict(photo)
    warned = [r.getMessage() for r in caplog.records if NOT_A_CROP_HINT in r.getMessage()]
    assert len(warned) == 1 and "FacePipeline" in warned[0] and "has the size of a photo or frame" in warned[0]
