"""Interrupted work leaves the old state or the new one, and the next run cleans up what a kill left:
real ``kill -9`` (and Ctrl-C) on running commands, plus the recovery rules for PID-named leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_affect.fsutil import clean_stale_siblings, make_temp_dir, pid_alive, replace_dir


def _start(rel: SimpleNamespace, argv: list[str], log: Path) -> subprocess.Popen:
    """``argv`` as a process of its own, stderr to ``log`` (stdout, a progress bar, is dropped).

    SIGINT is reset to its default in the child, as for a command typed at a terminal: a test runner
    started in the background (``cmd &``) has SIGINT ignored, the child would inherit that, and Python then
    never turns Ctrl-C into KeyboardInterrupt."""
    return subprocess.Popen(
        argv,
        cwd=rel.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_kill_9_during_data_synth_then_next_run_cleans_up(tmp_path: Path, rel: SimpleNamespace) -> None:
    from edge_affect.data.synth import synth_dataset

    out = tmp_path / "ds"
    out.mkdir()  # the old state: an empty folder
    argv = [sys.executable, "-m", "edge_affect.cli", "data", "synth", str(out), "--n", "50000", "--size", "32"]
    proc = _start(rel, [*argv, "--workers", "0"], tmp_path.parent / f"{tmp_path.name}.log")

    def rendering() -> bool:
        return any(p.suffix == ".jpg" for t in tmp_path.glob(".ds.tmp-*") for p in t.rglob("*.jpg"))

    rel.wait_for(rendering, proc)
    _kill9(proc)
    assert out.is_dir() and not any(out.iterdir())  # old state: nothing half-written in the dataset root
    (left,) = tmp_path.glob(".ds.tmp-*")
    assert left.name.startswith(f".ds.tmp-{proc.pid}-") and not pid_alive(proc.pid)
    synth_dataset(out, 6, size=16, workers=0)  # the next run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert {"training_set_annotations.txt", "validation_set_annotations.txt", "synth.json"} <= {
        p.name for p in out.iterdir()
    }


_CACHE_SCRIPT = """
import sys, time
from edge_affect.data.abaw import load_split
from edge_affect.data.cache import build_cache
from edge_affect.schema import Preprocess

ann = load_split(sys.argv[1], "train")

def progress(done, total):
    print("decoded", done, file=sys.stderr, flush=True)
    time.sleep(3600)  # killed here, mid-build, with the full-size temp file on disk

build_cache(ann, ann.images_root, Preprocess(input_size=32), sys.argv[2], workers=0, progress=progress, chunk=8,
            force=True)
"""


def test_kill_9_during_cache_build_then_next_build_removes_the_temp_file(
    tmp_path: Path, small_synth: Path, rel: SimpleNamespace
) -> None:
    from edge_affect.data.abaw import load_split
    from edge_affect.data.cache import PackedCache, build_cache
    from edge_affect.schema import Preprocess

    ann = load_split(small_synth, "train")
    pp = Preprocess(input_size=32)
    cache = tmp_path / "cache"
    build_cache(ann, ann.images_root, pp, cache, workers=0)
    log = tmp_path / "build.log"
    proc = _start(rel, [sys.executable, "-c", _CACHE_SCRIPT, str(small_synth), str(cache)], log)
    temp = cache / f".images.npy.{proc.pid}.tmp.npy"
    rel.wait_for(lambda: temp.is_file() and "decoded" in log.read_text(), proc)
    _kill9(proc)
    assert temp.stat().st_size >= len(ann) * 32 * 32 * 3  # the full-size temp file a kill leaves behind
    live = cache / f".images.npy.{os.getppid()}.tmp.npy"  # another, live process's build: never touched
    live.write_bytes(b"in progress")
    fresh = build_cache(ann, ann.images_root, pp, cache, workers=0)  # the next build
    assert not temp.exists() and live.read_bytes() == b"in progress"
    assert len(fresh) == len(ann) and len(PackedCache.open(cache)) == len(ann)
    live.unlink()
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "images.npy", "index.json", "labels.npz"]


@pytest.mark.slow  # 10-26 s each: the default run stays under ~5 min on 2 cores
def test_kill_9_during_export_keeps_the_old_export_and_next_export_cleans_up(
    tmp_path: Path, tiny_ckpts: tuple[Path, Path], calib_set: Path, rel: SimpleNamespace
) -> None:
    pytest.importorskip("onnxruntime", reason="export checks parity with ONNX Runtime (the export extra)")
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.export.pipeline import ExportRequest, export_all

    a, b = tiny_ckpts
    out = tmp_path / "exp"
    export_all(ExportRequest(a, out, calib=calib_set))  # the old state
    before = rel.tree_digest(out)
    argv = [sys.executable, "-m", "edge_affect.cli", "export", str(b), "--out", str(out), "--calib", str(calib_set)]
    proc = _start(rel, [*argv, "--fp16", "--int8"], tmp_path.parent / f"{tmp_path.name}.log")
    # killed once the new FP32 model exists in the temp folder (FP16, INT8, parity and the report still to come)
    rel.wait_for(lambda: any(tmp_path.glob(".exp.tmp-*/model.onnx")), proc)
    _kill9(proc)
    assert rel.tree_digest(out) == before  # the old export, untouched
    (left,) = tmp_path.glob(".exp.tmp-*")
    assert left.name.startswith(f".exp.tmp-{proc.pid}-")
    export_all(ExportRequest(b, out, calib=calib_set))  # the next export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    assert read_onnx_meta(out / "model.onnx").checkpoint_sha256 == rel.sha256(b)


def test_ctrl_c_during_data_synth_is_one_line_and_leaves_nothing(tmp_path: Path, rel: SimpleNamespace) -> None:
    out = tmp_path / "ds"
    log = tmp_path.parent / f"{tmp_path.name}.log"
    argv = [sys.executable, "-m", "edge_affect.cli", "data", "synth", str(out), "--n", "50000", "--size", "32"]
    proc = _start(rel, [*argv, "--workers", "0"], log)
    rel.wait_for(lambda: any(p for t in tmp_path.glob(".ds.tmp-*") for p in t.rglob("*.jpg")), proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=600) == 130
    assert log.read_text() == "edge-affect: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_dead_processes_go_live_ones_stay(tmp_path: Path, rel: SimpleNamespace) -> None:
    out = tmp_path / "exp"
    dead, live = rel.dead_pid(), os.getppid()
    (tmp_path / f".exp.tmp-{dead}-abc123").mkdir()
    (tmp_path / f".exp.tmp-{live}-def456").mkdir()
    (tmp_path / f".other.tmp-{dead}-abc123").mkdir()  # another output's: not ours to judge here
    (tmp_path / ".exp.tmp-notapid").mkdir()  # not our pattern
    tmp = make_temp_dir(out)
    assert tmp.name.startswith(f".exp.tmp-{os.getpid()}-") and oct(tmp.stat().st_mode & 0o777) != "0o700"
    assert sorted(p.name for p in tmp_path.iterdir() if p != tmp) == sorted(
        [f".exp.tmp-{live}-def456", f".other.tmp-{dead}-abc123", ".exp.tmp-notapid"]
    )


def test_a_kill_between_the_two_renames_of_a_replacement_restores_the_old_folder(
    tmp_path: Path, rel: SimpleNamespace
) -> None:
    """Where the kernel cannot swap folders atomically, ``out`` is renamed aside first; a kill right then
    leaves no ``out`` and a ``.old-`` folder of a dead process: the next run puts the old state back."""
    out = tmp_path / "cal"
    dead = rel.dead_pid()
    old = tmp_path / f".cal.old-{dead}-x1y2z3"
    old.mkdir()
    (old / "manifest.json").write_text("old")
    (tmp_path / f".cal.tmp-{dead}-a1b2c3").mkdir()  # the new set, half-written or complete: discarded
    clean_stale_siblings(out)
    assert (out / "manifest.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["cal"]


def test_replace_dir_swaps_whole_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.onnx").write_text("other model")
    new = make_temp_dir(out)
    (new / "model.onnx").write_text("this model")
    replace_dir(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"] and not new.exists()
    new = make_temp_dir(tmp_path / "fresh")
    replace_dir(new, tmp_path / "fresh")
    assert (tmp_path / "fresh").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid()) and pid_alive(os.getppid())
    assert not pid_alive(0) and not pid_alive(-1)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)


def test_eval_removes_the_cache_folder_a_killed_eval_left_in_the_temp_folder(
    tmp_path: Path,
    small_synth: Path,
    tiny_ckpts: tuple[Path, Path],
    rel: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tempfile

    from edge_affect.train.evaluate import evaluate_checkpoint

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"edge-affect-eval-{rel.dead_pid()}-k2j3h4"
    (dead / "val").mkdir(parents=True)
    (dead / "val" / "images.npy").write_bytes(b"a whole split, packed")
    live = tmp_path / f"edge-affect-eval-{os.getppid()}-a1b2c3"
    live.mkdir()
    metrics, _, _ = evaluate_checkpoint(tiny_ckpts[0], small_synth, "val", device="cpu")
    assert metrics["rows"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]  # the dead one and its own are gone
