"""benchmarks/bench_align_views.py: expression averaged over views of one alignment, under landmark noise."""

from __future__ import annotations

import json
from pathlib import Path

import bench_align_views as bench
import numpy as np


def test_views_are_shifted_or_mirrored_crops() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    m = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # the frame shrunk onto a 48-px crop
    one = bench.view_crops(frame, m, 48, bench.SCHEMES["1"], antialias=False)
    two = bench.view_crops(frame, m, 48, bench.SCHEMES["2"], antialias=False)
    mirror = bench.view_crops(frame, m, 48, "mirror", antialias=False)
    assert one.shape == (1, 48, 48, 3) and two.shape == (2, 48, 48, 3)
    assert not np.array_equal(two[0], two[1])  # ±¼ px apart: other pixels
    np.testing.assert_array_equal(mirror[1], mirror[0][:, ::-1])
    np.testing.assert_array_equal(mirror[0], one[0])


def test_runs_on_faces_and_refuses_bad_paths(tmp_path: Path, capsys, ferplus_like) -> None:
    faces = tmp_path / "faces.npz"
    ferplus_like(faces, 6)
    out = tmp_path / "views.json"
    args = ["--faces", str(faces), "--faces-limit", "6", "--face-px", "120", "--draws", "2", "--json", str(out)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())["sizes"][0]
    assert res["faces_measured"] >= 1
    for name, r in res["schemes"].items():
        assert 0.0 <= r["expression_agreement"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert r["model_runs_per_face"] == {"1": 1, "2": 2, "4": 4, "mirror": 2}[name]
    assert bench.main(["--faces", str(tmp_path / "none.npz")]) == 2
    assert "none.npz: no such file" in capsys.readouterr().err
    assert bench.main(["--faces", str(faces), "--faces-offset", "1.0"]) == 2
    assert "--faces-offset 1.0, expected a fraction in [0, 1)" in capsys.readouterr().err
    assert bench.main(["--faces", str(faces), "--faces-rest", "--faces-offset", "0.5"]) == 2
    assert "--faces-rest with --faces-offset 0.5, expected one of them" in capsys.readouterr().err
    kept = out.read_bytes()
    assert bench.main(["--faces", str(out), "--json", str(out)]) == 2  # never writes over its input
    assert out.read_bytes() == kept
    err = capsys.readouterr().err.strip()
    assert "bench_align_views: error:" in err and "\n" not in err


def test_rest_faces_are_the_ones_no_offset_set_takes() -> None:
    from bench_align import MEASURED_OFFSETS, face_indices, rest_indices

    used = set(np.concatenate([face_indices(3579, 600, o) for o in MEASURED_OFFSETS]).tolist())
    rest = rest_indices(3579, 600)
    assert len(rest) == 600 and len(set(rest.tolist())) == 600 and not set(rest.tolist()) & used
    assert len(rest_indices(3579, 5000)) == 3579 - len(
        set(np.concatenate([face_indices(3579, 5000, o) for o in MEASURED_OFFSETS]).tolist())
    )
    assert bench.SCHEMES["2"] == [(0.25, 0.25), (-0.25, -0.25)]  # the runtime's views
