"""benchmarks/int8_recipes.py: bench_int8_backbones results of several recipes read, averaged, plotted; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import int8_recipes as recipes
import pytest


def _bench(path: Path, config: str, test_seed: int, rows: list[tuple]) -> None:
    """A file as ``bench_int8_backbones.py --json`` writes it (the keys this script reads, and some it does not)."""
    out = []
    for model, seed, qdq, px in rows:
        out.append(
            {
                "model": model,
                "seed": seed,
                "agree_qdq": qdq,
                "agree_cpu_int8": qdq - 0.01,
                "agree_cpu_int8_nncf": qdq + 0.005,
                "near_tie_share": 0.5,
                "agree_fp32_pixel_noise": px,
                "val_expr_acc": 0.3,
                "macs_m": 76.4,
            }
        )
    path.write_text(json.dumps({"rows": out, "config": config, "test_seed": test_seed, "n_test": 1500}))


def test_recipes_are_read_averaged_and_plotted(tmp_path: Path, capsys) -> None:
    _bench(tmp_path / "a_t11.json", "configs/a.toml", 11, [("edge", 0, 0.92, 0.95), ("edge", 1, 0.94, 0.96)])
    _bench(tmp_path / "a_t7.json", "configs/a.toml", 7, [("edge", 0, 0.93, 0.94)])
    _bench(tmp_path / "b_t7.json", "configs/b.toml", 7, [("edge", 0, 0.97, 0.975), ("tiny", 0, 0.98, 0.99)])
    png, js = tmp_path / "r.png", tmp_path / "r.json"
    argv = [f"a={tmp_path}/a_*.json", f"b={tmp_path}/b_*.json", "--select-seed", "11", "--png", str(png)]
    assert recipes.main([*argv, "--json", str(js)]) == 0
    doc = json.loads(js.read_text())
    assert doc["select_seed"] == 11 and len(doc["rows"]) == 5
    mean = {(m["recipe"], m["model"], m["test_seed"]): m for m in doc["means"]}
    assert mean[("a", "edge", 11)]["agree_qdq"] == pytest.approx(0.93) and mean[("a", "edge", 11)]["seeds"] == [0, 1]
    assert mean[("b", "tiny", 7)]["agree_fp32_pixel_noise"] == pytest.approx(0.99)
    out = capsys.readouterr().out
    assert "seed 11 (chooses)" in out and "seed 7 (judged)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # against how much each run learned instead of the yardstick: a different figure from the same rows
    png2 = tmp_path / "v.png"
    assert recipes.main([*argv[:-1], str(png2), "--x", "val_acc"]) == 0
    assert png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png2.read_bytes() != png.read_bytes()


def test_refusals_are_one_line_and_write_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.json").write_text('{"rows": [{"model": "edge"}]}')
    js = tmp_path / "r.json"
    for argv, needle in (
        ([f"a={tmp_path}/none_*.json"], "no file matches"),
        ([f"{tmp_path}/a.json"], "expected LABEL=GLOB"),
        ([f"a={tmp_path}/bad.json"], "bad.json: expected a bench_int8_backbones.py --json file"),
    ):
        assert recipes.main([*argv, "--json", str(js)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("int8_recipes: ") and needle in err and "\n" not in err, err
    assert not js.exists()
