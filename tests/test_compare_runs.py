"""scripts/compare_runs.py: validation curves of training runs side by side, read from real runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real run of the training loop: the tiny model, 3 short epochs on a small synthetic set."""
    from edge_affect.config import TrainConfig
    from edge_affect.data.synth import synth_dataset
    from edge_affect.train.loop import train

    root = tmp_path_factory.mktemp("synth")
    synth_dataset(root, 96, seed=0, size=64, workers=0)
    cfg = TrainConfig(
        model="tiny", epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.0, augment=False, seed=0, max_steps_per_epoch=2
    )
    out = tmp_path_factory.mktemp("run")
    train(cfg, root, out, progress=False)
    return out


def test_table_plot_and_json_match_the_run(run, tmp_path, capsys):
    cr = _script()
    png, js = tmp_path / "c.png", tmp_path / "c.json"
    assert cr.main([f"{run}=first", str(run), "--metric", "p", "--png", str(png), "--json", str(js)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(js.read_text())["runs"]
    assert [r["label"] for r in rows] == ["first", run.name]
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    values = [rec["val"]["p"] for rec in recs]
    assert len(values) == 3
    for r in rows:
        assert r["epochs"] == 3 and r["best"] == max(values) and r["last"] == values[-1]
        assert r["best_epoch"] == recs[values.index(max(values))]["epoch"]
        assert r["curve"] == [[rec["epoch"], rec["val"]["p"]] for rec in recs]
    assert "first" in capsys.readouterr().out


def test_bad_runs_are_refused_in_one_line(run, tmp_path, capsys):
    cr = _script()
    assert cr.main([str(tmp_path / "missing")]) == 2
    assert "missing/metrics.jsonl: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (bad / "metrics.jsonl").write_text(lines[0] + "\n{not json\n")
    assert cr.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad/metrics.jsonl:2: expected an epoch record" in err and "\n" not in err
    assert cr.main([str(run), "--metric", "no_such_metric"]) == 2
    assert "val.no_such_metric" in capsys.readouterr().err
