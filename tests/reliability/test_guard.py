"""The one input/output guard (``edge_affect.iopaths``): every command declares its paths, and every output
option of every command is refused over, inside or around its inputs, and over existing files without
--force. The declarations are read from the real parser, so a new path option that skips them fails here."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_affect.cli import build_parser, main
from edge_affect.fsutil import OVERLAY_MARKER
from edge_affect.iopaths import guard, path_like, spec_of, walk

COMMANDS = dict(walk(build_parser()))
CLIPS = Path("/work/shared/data/video")


def _namespace(parser: argparse.ArgumentParser, **values: object) -> argparse.Namespace:
    """What ``parse_args`` gives with every option at its default, then ``values``."""
    ns = argparse.Namespace(**{a.dest: a.default for a in parser._actions}, **parser._defaults)
    for k, v in values.items():
        setattr(ns, k, v)
    return ns


def _outputs(name: str) -> list[str]:
    spec = spec_of(COMMANDS[name])
    return [*spec.writes, *spec.either, *spec.folders, *spec.updates] if spec else []


def _pairs(kind: str) -> list[tuple[str, str, str]]:
    out = []
    for name in COMMANDS:
        spec = spec_of(COMMANDS[name])
        if spec is None:
            continue
        for o in _outputs(name):
            if kind == "read":
                out += [(name, o, r) for r in spec.reads]
            elif kind == "write" and o in (*spec.writes, *spec.either):
                out.append((name, o, ""))
    return out


def test_every_command_declares_every_path_option() -> None:
    """Each command has a spec; each option that takes a path or a free string is in it; a ``Path`` option
    is never declared 'not a path'."""
    assert len(COMMANDS) >= 14
    for name, parser in COMMANDS.items():
        spec = spec_of(parser)
        assert spec is not None, f"{name}: declares no inputs/outputs (edge_affect.iopaths.declare)"
        for a in parser._actions:
            if path_like(a):
                assert a.dest in spec.declared(), f"{name}: option {a.dest!r} is not declared to the guard"
            if a.type is Path:
                assert a.dest not in spec.plain, f"{name}: {a.dest!r} is a Path, declared as not a path"
        assert _outputs(name) or spec.reads, f"{name}: declares nothing"


@pytest.mark.parametrize(("command", "out", "inp"), _pairs("read"))
def test_every_output_is_refused_over_or_inside_every_input(
    tmp_path: Path, command: str, out: str, inp: str
) -> None:
    parser = COMMANDS[command]
    spec = spec_of(parser)
    src = tmp_path / "in.bin"
    src.write_bytes(b"input")
    folder = tmp_path / "indir"
    folder.mkdir()
    is_list = isinstance(parser.get_default(inp), list)
    wrap = (lambda v: [v]) if is_list else (lambda v: v)
    same = str(src) if out not in spec.folders else str(folder)
    value = str(folder) if out in spec.folders else str(src)
    with pytest.raises(ValueError, match="expected a new path"):  # the input itself
        guard(_namespace(parser, **{inp: wrap(value), out: same}))
    inside = folder / ("sub" if out in spec.folders else "o.json")
    with pytest.raises(ValueError, match="lies inside the folder given as"):  # inside an input folder
        guard(_namespace(parser, **{inp: wrap(str(folder)), out: str(inside)}))
    if out in (*spec.folders, *spec.either):  # an output folder holding an input
        held = tmp_path / "o" / "held.bin"
        held.parent.mkdir()
        held.write_bytes(b"x")
        with pytest.raises(ValueError, match="expected an input outside the output folder"):
            guard(_namespace(parser, **{inp: wrap(str(held)), out: str(tmp_path / "o")}))
    assert src.read_bytes() == b"input" and list(folder.iterdir()) == []
    new = tmp_path / ("new" if out in spec.folders else "new.json")
    guard(_namespace(parser, **{inp: wrap(str(src)), out: str(new)}))  # a new path is fine


@pytest.mark.parametrize(("command", "out", "_"), _pairs("write"))
def test_every_output_file_needs_force_to_replace_a_file(tmp_path: Path, command: str, out: str, _: str) -> None:
    parser = COMMANDS[command]
    f = tmp_path / "earlier.json"
    f.write_text("an earlier result")
    with pytest.raises(ValueError, match=r"exists, expected a new path \(--force replaces it\)"):
        guard(_namespace(parser, **{out: str(f)}))
    guard(_namespace(parser, **{out: str(f), "force": True}))
    with pytest.raises(ValueError, match="folder .* does not exist"):
        guard(_namespace(parser, **{out: str(tmp_path / "missing" / "x.json")}))


def test_bench_pipeline_json_never_replaces_the_video(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really a video")
    assert main(["bench", "--pipeline", str(video), "--json", str(video)]) == 2
    assert capsys.readouterr().err == (
        f"edge-affect: error: --json {video}: is the file given as --pipeline {video}, expected a new path "
        "(edge-affect never writes over its inputs)\n"
    )
    assert video.read_bytes() == b"not really a video"


def test_run_never_writes_into_the_source_folder(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(rel.ASTRONAUT, src / "a.png")
    before = rel.tree_digest(src)
    for option, target in (("--out", src / "b.jpg"), ("--overlay", src / "o"), ("--overlay", src / "o.png")):
        assert main(["run", "--source", str(src), option, str(target)]) == 2
        assert capsys.readouterr().err == (
            f"edge-affect: error: {option} {target}: lies inside the folder given as --source {src}, expected a "
            "path outside it (edge-affect never writes into its inputs)\n"
        )
    assert rel.tree_digest(src) == before


def test_overlay_folder_names_stay_distinct_and_replace_only_an_earlier_overlay(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    cv2 = pytest.importorskip("cv2", reason="overlays need OpenCV")
    src = tmp_path / "src"
    src.mkdir()
    img = cv2.imread(str(rel.ASTRONAUT))
    small = cv2.resize(img, (128, 128))
    cv2.imwrite(str(src / "a.png"), small)
    cv2.imwrite(str(src / "a.jpg"), small)
    ovl = tmp_path / "ovl"
    argv = ["run", "--source", str(src), "--overlay", str(ovl), "--no-progress"]
    assert main(argv) == 0
    names = sorted(p.name for p in ovl.iterdir())
    assert names == sorted([OVERLAY_MARKER, "a.jpg_000000.png", "a.png_000000.png"])  # a.jpg / a.png: two files
    assert main(argv) == 2  # an earlier overlay: only with --force
    assert capsys.readouterr().err.endswith(
        f"--overlay {ovl}: holds an earlier overlay, expected a new or empty folder (--force replaces it)\n"
    )
    (ovl / "stray.png").write_bytes(b"x")  # not written by this run: gone after a replacement
    assert main([*argv, "--force"]) == 0
    assert sorted(p.name for p in ovl.iterdir()) == names
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "holiday.png").write_bytes(b"photo")
    assert main(["run", "--source", str(src), "--overlay", str(mine), "--force"]) == 2  # not an overlay: never
    assert "exists and holds other files, expected a new or empty folder" in capsys.readouterr().err
    assert (mine / "holiday.png").read_bytes() == b"photo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "ovl", "src"]  # no temp folder left


def _start(rel: SimpleNamespace, argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_affect.cli", *argv],
        cwd=rel.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.skipif(not (CLIPS / "noface_face.mov").is_file(), reason="needs the real clips in /work/shared/data/video")
def test_run_outputs_are_staged_kill_keeps_the_earlier_result_ctrl_c_exits_130(
    tmp_path: Path, rel: SimpleNamespace
) -> None:
    out = tmp_path / "preds.jsonl"
    out.write_text("earlier\n")
    argv = ["run", "--source", str(CLIPS / "noface_face.mov"), "--out", str(out), "--force", "--no-progress"]

    def staged(pid: int) -> bool:  # this process has written records to its hidden sibling
        return any(p.stat().st_size > 0 for p in tmp_path.glob(f".preds.jsonl.tmp-{pid}-*/preds.jsonl"))

    proc = _start(rel, argv, tmp_path.parent / f"{tmp_path.name}.log")
    rel.wait_for(lambda: staged(proc.pid), proc)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert out.read_text() == "earlier\n"  # a kill leaves the earlier result whole
    log = tmp_path.parent / f"{tmp_path.name}.int.log"
    proc = _start(rel, argv, log)
    rel.wait_for(lambda: staged(proc.pid), proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=600) == 130
    err = log.read_text().splitlines()
    assert err[-1] == "edge-affect: interrupted"  # after the summary, which says so
    assert any(" frames (" in ln and "; interrupted" in ln for ln in err[:-1])
    lines = out.read_text().splitlines()
    assert lines and lines[0].startswith("{")  # what was processed, in place of the earlier result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]  # the killed run's temp: cleaned


def test_errors_on_a_staged_file_name_the_output_not_the_temp_path() -> None:
    import errno

    from edge_affect.cliutil import describe_os_error

    e = OSError(errno.ENOSPC, "No space left on device", "/data/.preds.jsonl.tmp-123-ab_c9/preds.jsonl")
    assert describe_os_error(e) == "/data/preds.jsonl: no space left on device, expected free space on the device"
