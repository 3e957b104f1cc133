"""The crop-framing template measured from real FER2013 faces (YuNet landmarks), and its import.json plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_affect.calibration import default_calibration_dir, read_manifest
from edge_affect.data.fer import dataset_align_template
from edge_affect.runtime.faces import ARCFACE_TEMPLATE_112, measure_align_template
from edge_affect.runtime.preprocess import decode_image


def _fer_faces(n: int) -> list[np.ndarray]:
    d = default_calibration_dir()
    files = [f["name"] for f in read_manifest(d)["files"]][:n]
    return [decode_image(d / f)[:, :, 0] for f in files]


def test_fer_template_is_symmetric_and_frames_more_forehead_than_arcface() -> None:
    faces = _fer_faces(120)
    tpl, found = measure_align_template(faces)
    assert found >= 108, f"YuNet found only {found}/120 FER faces"  # 98 % on the 1000-face import sample
    assert tpl.shape == (5, 2)
    # symmetric: eyes and mouth corners mirror about x = 0.5, nose on the axis
    assert abs(tpl[0, 0] + tpl[1, 0] - 1) < 1e-9 and abs(tpl[3, 0] + tpl[4, 0] - 1) < 1e-9 and tpl[2, 0] == 0.5
    assert tpl[0, 1] == tpl[1, 1] and tpl[3, 1] == tpl[4, 1]
    # FER2013 crops: eyes near y 0.38 (ArcFace 0.46), mouth near 0.75 (ArcFace 0.82); tolerance 0.04
    assert abs(tpl[0, 1] - 0.38) < 0.04 and abs(tpl[3, 1] - 0.75) < 0.04
    assert tpl[0, 1] < ARCFACE_TEMPLATE_112[0, 1] / 112 - 0.05


def test_too_few_faces_is_a_clear_error() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (20, 48, 48), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"found faces in only \d+ crops \(need ≥ 50\)"):
        measure_align_template(list(noise))


def test_dataset_template_roundtrip_and_bad_values(tmp_path: Path) -> None:
    assert dataset_align_template(tmp_path) is None  # no import.json: the runtime's default template
    tpl = [[0.31, 0.38], [0.69, 0.38], [0.5, 0.59], [0.35, 0.75], [0.65, 0.75]]
    (tmp_path / "import.json").write_text(json.dumps({"align_template": tpl}))
    assert dataset_align_template(tmp_path) == tpl
    (tmp_path / "import.json").write_text(json.dumps({"align_template": tpl[:4]}))
    with pytest.raises(ValueError, match="align_template must be 5×2 numbers"):
        dataset_align_template(tmp_path)
    (tmp_path / "import.json").write_text("{not json")
    with pytest.raises(ValueError, match="import.json: not readable JSON"):
        dataset_align_template(tmp_path)


def test_model_template_is_the_metadata_template_in_112_px_units() -> None:
    from edge_affect.runtime.align import model_template

    frac = (ARCFACE_TEMPLATE_112 / 112.0).tolist()
    np.testing.assert_allclose(model_template({"align_template": frac}), ARCFACE_TEMPLATE_112)
    assert model_template({}) is None  # no template recorded: align_face's ArcFace default
