"""One-line errors: option ranges checked at parse time, file-system errors, malformed configs, Ctrl-C and
internal errors — every command exits non-zero with exactly one ``edge-affect: error: ...`` line."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_affect import cliutil
from edge_affect.cli import build_parser, main


def _parse_error(argv: list[str]) -> str:
    """stderr of a parse that must fail with exit code 2 (asserted)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    return err.getvalue()


# ------------------------------------------------------------------------------------ option ranges


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["run", "--source", "x", "--max-faces", "-1"], "--max-faces -1: too small, expected an integer ≥ 1"),
        (["run", "--source", "x", "--max-faces", "0"], "--max-faces 0: too small, expected an integer ≥ 1"),
        (["run", "--source", "x", "--max-frames", "0"], "--max-frames 0: too small, expected an integer ≥ 1"),
        (["run", "--source", "x", "--max-frames", "2.5"], "--max-frames 2.5: not an integer, expected an integer ≥ 1"),
        (
            ["run", "--source", "x", "--score-threshold", "nan"],
            "--score-threshold nan: not finite, expected a number in [0, 1]",
        ),
        (
            ["run", "--source", "x", "--score-threshold", "1.5"],
            "--score-threshold 1.5: too large, expected a number in [0, 1]",
        ),
        (["run", "--source", "x", "--alpha", "0"], "--alpha 0: too small, expected a number in (0, 1]"),
        (["run", "--source", "x", "--alpha", "inf"], "--alpha inf: not finite, expected a number in (0, 1]"),
        (
            ["bench", "--batch", "0"],
            "--batch 0: 0 is out of range, expected comma-separated integers in [1, 1024], e.g. 1,8,32",
        ),
        (
            ["bench", "--batch", "1,100000"],
            "--batch 1,100000: 100000 is out of range, expected comma-separated integers in [1, 1024], e.g. 1,8,32",
        ),
        (["bench", "--iters", "0"], "--iters 0: too small, expected an integer in [1, 100000]"),
        (["train", "--data", "d", "--epochs", "0"], "--epochs 0: too small, expected an integer in [1, 100000]"),
        (
            ["train", "--data", "d", "--batch-size", "0"],
            "--batch-size 0: too small, expected an integer in [1, 65536]",
        ),
        (["train", "--data", "d", "--lr", "nan"], "--lr nan: not finite, expected a number in (0, 1]"),
        (["train", "--data", "d", "--lr", "0"], "--lr 0: too small, expected a number in (0, 1]"),
        (["train", "--data", "d", "--seed", "-1"], "--seed -1: too small, expected an integer in [0, 4294967295]"),
        (["data", "synth", "o", "--n", "0"], "--n 0: too small, expected an integer in [2, 10000000]"),
        (["data", "synth", "o", "--n", "1"], "--n 1: too small, expected an integer in [2, 10000000]"),
        (["data", "synth", "o", "--n", "x"], "--n x: not an integer, expected an integer in [2, 10000000]"),
        (["data", "synth", "o", "--n", "9", "--size", "8"], "--size 8: too small, expected an integer in [16, 1024]"),
        (
            ["data", "synth", "o", "--n", "9", "--val-fraction", "1"],
            "--val-fraction 1: too large, expected a number in (0, 1)",
        ),
        (
            ["data", "synth", "o", "--n", "9", "--missing-fraction", "-0.1"],
            "--missing-fraction -0.1: too small, expected a number in [0, 1)",
        ),
        (
            ["data", "synth", "o", "--n", "9", "--video-len", "0"],
            "--video-len 0: too small, expected an integer in [1, 100000]",
        ),
        (
            ["data", "synth", "o", "--n", "9", "--workers", "-1"],
            "--workers -1: too small, expected an integer in [0, 256]",
        ),
        (["run", "--source", "x", "--max-faces", ""], "--max-faces '': not an integer, expected an integer ≥ 1"),
    ],
)
def test_numeric_options_are_range_checked_at_parse_time(argv: list[str], line: str) -> None:
    assert _parse_error(argv) == f"edge-affect: error: {line}\n"


def test_argparse_own_errors_are_one_line_too() -> None:
    assert _parse_error(["run", "--source", "x", "--backend", "nope"]) == (
        "edge-affect: error: --backend: invalid choice: 'nope' (choose from 'auto', 'onnxruntime', 'tensorrt', 'torch')\n"
    )
    assert _parse_error(["run"]) == "edge-affect: error: the following arguments are required: --source\n"
    assert _parse_error(["no-such-command"]).count("\n") == 1


@settings(max_examples=150, deadline=None)
@given(
    lo=st.integers(-1000, 1000),
    width=st.one_of(st.none(), st.integers(0, 1000)),
    text=st.one_of(st.integers(-(10**6), 10**6).map(str), st.text(max_size=12)),
)
def test_int_range_accepts_exactly_the_range(lo: int, width: int | None, text: str) -> None:
    hi = None if width is None else lo + width
    parse = cliutil.int_range(lo, hi)
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    ok = value is not None and value >= lo and (hi is None or value <= hi)
    if ok:
        assert parse(text) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            parse(text)
        msg = str(e.value)
        assert "\n" not in msg and ", expected an integer" in msg


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    lo_open=st.booleans(),
    hi_open=st.booleans(),
)
def test_float_range_accepts_exactly_finite_values_in_range(value: float, lo_open: bool, hi_open: bool) -> None:
    parse = cliutil.float_range(0.0, 1.0, lo_open=lo_open, hi_open=hi_open)
    v = float(value)
    ok = math.isfinite(v) and (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)
    if ok:
        assert parse(repr(v)) == v
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=", expected a number in"):
            parse(repr(v))


@settings(max_examples=60, deadline=None)
@given(
    option=st.sampled_from(
        [
            ("run", "--source", "x", "--max-faces"),
            ("run", "--source", "x", "--score-threshold"),
            ("train", "--data", "d", "--epochs"),
            ("data", "synth", "o", "--n"),
            ("bench", "--batch"),
        ]
    ),
    text=st.text(max_size=16).filter(lambda s: not s.startswith("-") or s[1:2].isdigit()),
)
def test_any_option_string_parses_or_fails_with_one_line(option: tuple[str, ...], text: str) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args([*option, text])
    except SystemExit as e:
        assert e.code == 2
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"edge-affect: error: {option[-1]}"), lines
        return
    value = getattr(args, option[-1].lstrip("-").replace("-", "_"))
    if option[-1] == "--score-threshold":
        assert 0.0 <= value <= 1.0
    elif option[-1] == "--batch":
        assert value and all(1 <= b <= 1024 for b in value)
    else:
        assert isinstance(value, int) and value >= 1


# ----------------------------------------------------------------------------- file-system errors


@pytest.mark.slow  # 10-26 s each: the default run stays under ~5 min on 2 cores
def test_file_system_errors_are_one_line_naming_the_path(
    tmp_path: Path, small_synth: Path, rel: SimpleNamespace
) -> None:
    """Real commands into a path under a regular file, a folder where a file is expected, and /sys (which no
    one may write, root included): exit 2, exactly one line, no traceback."""
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    a_dir = tmp_path / "folder"
    a_dir.mkdir()
    cases = [
        (
            ["data", "synth", str(a_file / "sub" / "out"), "--n", "4"],
            f"{a_file / 'sub'}: not a directory, expected a folder at every level of the path",
        ),
        (
            ["data", "check", str(small_synth), "--json", str(a_dir)],
            f"--json {a_dir}: is a folder, expected a file path",
        ),
        (
            ["data", "check", str(small_synth), "--json", str(a_file / "r.json")],
            f"--json {a_file / 'r.json'}: {a_file} is a file, expected a folder there",
        ),
        (
            ["run", "--source", str(rel.ASTRONAUT), "--out", str(a_dir)],
            f"--out {a_dir}: is a folder, expected a file path",
        ),
    ]
    for argv, line in cases:
        r = rel.cli(*argv)
        assert (r.returncode, r.stderr) == (2, f"edge-affect: error: {line}\n"), argv
    r = rel.cli("data", "synth", "/sys/edge-affect-test", "--n", "4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("edge-affect: error: /sys/edge-affect-test: ") and ", expected " in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder"] and not any(a_dir.iterdir())


def test_train_into_a_path_under_a_file_is_one_line(tmp_path: Path, small_synth: Path, rel: SimpleNamespace) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    r = rel.cli("train", "--data", str(small_synth), "--out", str(a_file / "run"), "--epochs", "1")
    assert (r.returncode, r.stderr) == (
        2,
        f"edge-affect: error: {a_file / 'run'}: not a directory, expected a folder at every level of the path\n",
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EROFS, "read-only file system, expected a writable file system"),
        (errno.ENOSPC, "no space left on device, expected free space on the device"),
        (errno.EISDIR, "is a directory, expected a file, not a folder"),
        (errno.EEXIST, "file exists, expected a path that does not exist yet"),
    ],
)
def test_disk_errors_become_one_line_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: int, expected: str
) -> None:
    """A read-only or full disk met at the very end (the rename into place) of ``data synth``."""
    import edge_affect.data.synth as synth

    def fail(tmp: Path, out: Path) -> None:
        raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr(synth, "replace_dir", fail)
    out = tmp_path / "ds"
    assert main(["data", "synth", str(out), "--n", "4", "--workers", "0"]) == 2
    assert capsys.readouterr().err == f"edge-affect: error: {out}: {expected}\n"
    assert list(tmp_path.iterdir()) == []  # the temp folder went too


def test_error_on_a_temp_file_names_the_users_file() -> None:
    e = OSError(errno.ENOSPC, "No space left on device", "/data/run/.metrics.json.tmp-4242-k2j4h5g1")
    assert (
        cliutil.describe_os_error(e)
        == "/data/run/metrics.json: no space left on device, expected free space on the device"
    )
    e = PermissionError(errno.EACCES, "Permission denied", "/data/.export.tmp-4242-ab12cd_3")
    assert cliutil.describe_os_error(e) == "/data/export: permission denied, expected a path you may read and write"
    assert cliutil.describe_os_error(FileNotFoundError("calibration folder x does not exist")) == (
        "calibration folder x does not exist"
    )


# ------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("c.json", "[1, 2]", "{p}: a JSON list, expected an object of settings (a TOML table)"),
        ("c.json", '"tiny"', "{p}: a JSON str, expected an object of settings (a TOML table)"),
        ("c.json", '{"loss": [1]}', "{p}: loss must be a table of settings, got list [1]"),
        ("c.json", '{"epochs": "5"}', r"{p}: epochs .*'5'"),
        ("c.json", '{"epochs": 0}', "{p}: epochs 0: out of range, expected an integer ≥ 1"),
        ("c.json", '{"lr": -1}', "{p}: lr -1: out of range, expected a number > 0"),
        ("c.json", '{"ema": 1.0}', "{p}: ema 1.0: out of range, expected a decay in [0, 1) (0 disables EMA)"),
        ("c.json", '{"amp": "yes"}', r"{p}: amp .*'yes'"),
        ("c.json", '{"augment_params": [1]}', r"{p}: augment_params .*\[1\]"),
        ("c.toml", "epochs = 1.5", r"{p}: epochs .*1\.5"),
        ("c.json", '{"init_widen": true}', r"{p}: .*init_widen = true needs init_from"),
        (
            "c.json",
            "{",
            "{p}: not valid json: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
    ],
)
def test_malformed_train_configs_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, line: str
) -> None:
    p = tmp_path / name
    p.write_text(text)
    assert main(["train", "--data", str(tmp_path / "nodata"), "--config", str(p), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    if ".*" in line:  # a type error: config.py words it; the contract is one line naming the file and key
        assert re.fullmatch(f"edge-affect: error: {line.format(p=re.escape(str(p)))}[^\n]*\n", err), err
    else:
        assert err == f"edge-affect: error: {line.format(p=p)}\n"
    assert not (tmp_path / "r").exists()


def test_init_widen_without_init_from_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    assert main(["train", "--data", str(tmp_path / "d"), "--init-widen", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-affect: error: ") and err.count("\n") == 1, err
    assert "init_widen = true needs init_from (the narrower checkpoint to grow)" in err
    assert not (tmp_path / "r").exists()


def test_a_binary_config_is_one_line(tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    data.mkdir()
    assert main(["train", "--data", str(data), "--config", str(rel.ASTRONAUT), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (
        f"edge-affect: error: {rel.ASTRONAUT}: not UTF-8 text (byte 0), expected a JSON or TOML file\n"
    )


def test_train_epochs_zero_in_a_config_does_not_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "c.toml"
    p.write_text('model = "tiny"\nepochs = 0\n')
    (tmp_path / "d").mkdir()
    assert main(["train", "--data", str(tmp_path / "d"), "--config", str(p), "--out", str(tmp_path / "r")]) == 2
    assert "epochs 0: out of range" in capsys.readouterr().err


# ------------------------------------------------------------------- interrupts and internal errors


def test_keyboard_interrupt_is_one_line_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge_affect.data.synth as synth

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_dataset", interrupted)
    assert main(["data", "synth", str(tmp_path / "ds"), "--n", "4"]) == 130
    assert capsys.readouterr().err == "edge-affect: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_internal_errors_are_one_line_and_show_the_traceback_with_v(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge_affect.data.synth as synth

    def bug(*a, **k):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(synth, "_write_dataset", bug)
    assert main(["data", "synth", str(tmp_path / "ds"), "--n", "4"]) == cliutil.EXIT_INTERNAL
    assert capsys.readouterr().err == (
        "edge-affect: error: internal error in 'data': TypeError: unsupported operand "
        "(a bug: rerun with -v for the traceback and report it)\n"
    )
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["-v", "data", "synth", str(tmp_path / "ds2"), "--n", "4"])
    # user errors re-raise with -v too (the traceback is what -v is for)
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        main(["-v", "data", "synth", str(tmp_path / "full"), "--n", "4"])


def test_messages_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    cliutil.one_line("first\nsecond")
    cliutil.one_line("\n\nbad\x07value")
    assert capsys.readouterr().err == "edge-affect: error: first\nedge-affect: error: bad\\x07value\n"


def test_runtime_stand_alone_entry_keeps_the_contract(rel: SimpleNamespace) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge_affect.runtime.cli", "run", "--source", str(rel.ASTRONAUT), "--max-faces", "-2"],
        cwd=rel.ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard, not a speed claim
    )
    assert (r.returncode, r.stderr) == (2, "edge-affect: error: --max-faces -2: too small, expected an integer ≥ 1\n")
    assert r.stdout == ""
