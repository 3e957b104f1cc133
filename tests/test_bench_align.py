"""benchmarks/bench_align.py: the plain and the anti-aliased warp side by side, on a clip and on FER+-style faces."""

from __future__ import annotations

import json
from pathlib import Path

import bench_align as bench
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "edge_affect" / "assets" / "samples" / "astronaut_clip.mp4"


def test_both_warps_on_a_clip_and_on_faces(tmp_path: Path, ferplus_like) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / CLIP.name).write_bytes(CLIP.read_bytes())
    faces = tmp_path / "faces.npz"
    ferplus_like(faces, 8)
    out = tmp_path / "align.json"
    args = ["--videos", str(videos), "--faces", str(faces), "--faces-limit", "8", "--face-px", "120"]
    assert bench.main([*args, "--draws", "4", "--every", "8", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    clip = res["clips"][CLIP.name]
    assert clip["faces"] >= 3 and clip["face_height_px"] > 60  # 88 px: the warp shrinks it ~2x
    # The clip's face (a real photo) shrinks onto the crop: the low-pass keeps landmark noise from moving it as much.
    assert clip["antialiased"]["crop_rms"] < clip["plain"]["crop_rms"]
    faces_res = res["face_sets"]["faces.npz @120px"]
    assert faces_res["faces"] + faces_res["not_found"] == 8
    for warp in ("plain", "antialiased"):
        assert 0 <= faces_res[warp]["accuracy"] <= 1 and 0 <= faces_res[warp]["agree"] <= 1
    assert set(res["align_ms"]) and all(v["plain"] > 0 and v["antialiased"] > 0 for v in res["align_ms"].values())
    assert isinstance(res["rule"]["keep_antialias"], bool)


def test_rule_needs_every_part() -> None:
    def entry(acc_plain: float, acc_aa: float, l1_plain: float = 0.01, l1_aa: float = 0.005) -> dict:
        return {
            "plain": {"accuracy": acc_plain, "agree": 0.95, "prob_l1": l1_plain},
            "antialiased": {"accuracy": acc_aa, "agree": 0.95, "prob_l1": l1_aa},
        }

    ok = {"clips": {"a.mp4": entry(0, 0)}, "face_sets": {"f @60px": entry(0.850, 0.846)}}
    assert bench.rule_verdict(ok)["keep_antialias"] is True
    assert bench.rule_verdict(ok, 0.003)["keep_antialias"] is False  # 0.4 point lower, over a 0.3-point margin
    worse_clip = {"clips": {"a.mp4": entry(0, 0, 0.01, 0.02)}, "face_sets": ok["face_sets"]}
    assert bench.rule_verdict(worse_clip)["clips_steadier"] is False
    assert bench.rule_verdict({"clips": ok["clips"], "face_sets": {}})["keep_antialias"] is False  # not measured


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--faces-offset", "1.5"], "--faces-offset 1.5"),
        (["--b-artifact", "missing.onnx"], "missing.onnx: no such file"),
        (["--faces", "{faces}", "--json", "{faces}"], "never writes over its inputs"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / CLIP.name).write_bytes(CLIP.read_bytes())
    faces = tmp_path / "faces.npz"
    faces.write_bytes(b"kept")
    extra = [a.replace("{faces}", str(faces)) for a in extra]
    assert bench.main(["--videos", str(videos), *extra]) == 2
    assert faces.read_bytes() == b"kept"
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
