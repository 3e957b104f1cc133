"""``edge-affect data synth|check`` handlers: exit codes, JSON report, bad rows reported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from edge_affect.data.check import check_dataset
from edge_affect.data.cli import add_commands


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-affect")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    assert (
        _run(
            [
                "data",
                "synth",
                str(root),
                "--n",
                "60",
                "--seed",
                "1",
                "--size",
                "32",
                "--video-len",
                "10",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert "60 faces" in capsys.readouterr().out
    report_path = tmp_path / "report.json"
    assert _run(["data", "check", str(root), "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "Happiness" in out and "AU26" in out and "OK" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    tr, va = report["splits"]["train"], report["splits"]["val"]
    assert tr["rows"] + va["rows"] == 60 and tr["videos"] + va["videos"] == 6
    assert tr["tasks"]["va"]["missing"] + va["tasks"]["va"]["missing"] == 9  # round(0.15 * 60)
    assert sum(tr["expr_counts"].values()) == tr["tasks"]["expr"]["labelled"]


def test_check_reports_bad_rows(tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "cropped_aligned").symlink_to(synth_root / "cropped_aligned")
    lines = (synth_root / "training_set_annotations.txt").read_text().splitlines()
    lines[3] = lines[3].replace(".jpg,", ".jpg,7,", 1)  # one column too many
    lines[5] = lines[5].split(",")[0].replace(".jpg", "_gone.jpg") + "," + ",".join(lines[5].split(",")[1:])
    (root / "training_set_annotations.txt").write_text("\n".join(lines) + "\n")
    report = check_dataset(root)
    assert report["ok"] is False
    bad = report["splits"]["train"]["bad_rows"]
    assert len(bad) == 2
    assert bad[0].startswith(f"{root / 'training_set_annotations.txt'}:4: 17 columns, expected 16")
    assert ":6: image " in bad[1] and "not found" in bad[1]
    assert any("no val annotation file" in p for p in report["problems"])
    assert _run(["data", "check", str(root)]) == 1
    assert "bad row" in capsys.readouterr().out


def test_check_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_dataset(tmp_path / "nope")
    assert _run(["data"]) == 2
