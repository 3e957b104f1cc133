"""Nothing lost: no command writes over its inputs or over what it did not create; what it may replace it
replaces whole (export folders, calibration sets), and training never duplicates or clobbers a run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_affect.cli import main
from edge_affect.fsutil import check_not_inputs, same_path


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


# ------------------------------------------------------------------------------ run / bench / eval


def test_run_refuses_outputs_that_name_the_source(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photo.png"
    shutil.copy(rel.ASTRONAUT, src)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(src)
    os.link(src, tmp_path / "hard.png")
    digest = rel.sha256(src)
    spellings = [
        str(src),
        str(tmp_path / "sub" / ".." / "photo.png"),
        str(tmp_path / "link.png"),
        str(tmp_path / "hard.png"),
        os.path.relpath(src),
    ]
    for option in ("--out", "--overlay"):
        for spelt in spellings:
            assert main(["run", "--source", str(src), option, spelt]) == 2
            assert _err(capsys) == (
                f"edge-affect: error: {option} {spelt}: is the file given as --source {src}, expected a new path "
                "(edge-affect never writes over its inputs)\n"
            )
    # the source given through a link, the output as the real file
    assert main(["run", "--source", str(tmp_path / "link.png"), "--overlay", str(src)]) == 2
    assert "is the file given as --source" in _err(capsys)
    assert rel.sha256(src) == digest


def test_run_refuses_writing_over_the_model_or_one_output_twice(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_affect.default import default_model

    model = default_model("onnx")
    digest = rel.sha256(model)
    assert main(["run", "--source", str(rel.ASTRONAUT), "--out", str(model)]) == 2  # the default artifact
    assert _err(capsys) == (
        f"edge-affect: error: --out {model}: is the file given as ARTIFACT {model}, expected a new path "
        "(edge-affect never writes over its inputs)\n"
    )
    both = tmp_path / "x.png"
    assert main(["run", "--source", str(rel.ASTRONAUT), "--out", str(both), "--overlay", str(both)]) == 2
    assert _err(capsys) == (
        f"edge-affect: error: --out {both}: is also given as --overlay {both}, expected two different paths\n"
    )
    # an overlay folder that is the source folder would write frame PNGs over the source images
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(rel.ASTRONAUT, folder / "a.png")
    assert main(["run", "--source", str(folder), "--overlay", str(folder)]) == 2
    assert "is the folder given as --source" in _err(capsys)
    assert main(["bench", "--source", str(rel.ASTRONAUT), "--json", str(rel.ASTRONAUT)]) == 2
    assert "--json" in _err(capsys)
    assert rel.sha256(model) == digest and sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_eval_and_check_refuse_outputs_over_their_inputs(
    tmp_path: Path, small_synth: Path, tiny_ckpts: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tiny_ckpts[0]
    ann = small_synth / "training_set_annotations.txt"
    before = (ann.read_bytes(), ckpt.read_bytes())
    assert main(["eval", str(ckpt), "--data", str(small_synth), "--json", str(ckpt)]) == 2
    assert _err(capsys).startswith(f"edge-affect: error: --json {ckpt}: is the file given as CKPT {ckpt}")
    assert main(["eval", str(ckpt), "--data", str(small_synth), "--submission", str(ann)]) == 2
    assert _err(capsys).startswith(f"edge-affect: error: --submission {ann}: is the file given as annotation file")
    assert main(["data", "check", str(small_synth), "--json", str(ann)]) == 2
    assert _err(capsys).startswith(f"edge-affect: error: --json {ann}: is the file given as annotation file")
    assert (ann.read_bytes(), ckpt.read_bytes()) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hops=st.lists(st.sampled_from([".", "a/..", "a/b/../..", "la/.."]), max_size=4), via_link=st.booleans())
def test_an_input_is_recognised_however_it_is_spelt(tmp_path: Path, hops: list[str], via_link: bool) -> None:
    """Any spelling of the same file (``.``, ``x/..``, symlinked folders, a symlink to the file) is refused."""
    (tmp_path / "a" / "b").mkdir(parents=True, exist_ok=True)
    if not (tmp_path / "la").exists():
        (tmp_path / "la").symlink_to(tmp_path / "a")
    target = tmp_path / "f.bin"
    target.write_bytes(b"data")
    if not (tmp_path / "lf").exists():
        (tmp_path / "lf").symlink_to(target)
    spelt = os.path.join(str(tmp_path), *hops, "lf" if via_link else "f.bin")
    assert same_path(spelt, target)
    with pytest.raises(ValueError, match="expected a new path"):
        check_not_inputs({"--out": spelt}, {"--source": target})
    check_not_inputs({"--out": tmp_path / "other.bin"}, {"--source": target})  # a different file is fine


# ------------------------------------------------------------------------------------ data synth


def test_data_synth_refuses_an_existing_dataset(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    assert main(["data", "synth", str(root), "--n", "6", "--size", "16", "--workers", "0"]) == 0
    capsys.readouterr()
    before = rel.tree_digest(root)
    assert main(["data", "synth", str(root), "--n", "8", "--seed", "1", "--workers", "0"]) == 2
    assert _err(capsys) == (
        f"edge-affect: error: {root}: exists and is not an empty folder, expected a new dataset root "
        "(data synth never writes over an existing dataset)\n"
    )
    assert rel.tree_digest(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folder left either


# --------------------------------------------------------------------------------------- calib build


def test_calib_force_replaces_only_calibration_sets(
    tmp_path: Path, small_synth: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("years of work")
    argv = ["calib", "build", str(small_synth), "--n", "8", "--size", "32"]
    assert main([*argv, "--out", str(notes), "--force"]) == 2
    assert _err(capsys) == (
        f"edge-affect: error: --out {notes}: is not a calibration set (no manifest.json of format "
        "edge-affect-calibration/1), expected a calibration set or a new folder (--force replaces only "
        "calibration sets)\n"
    )
    assert (notes / "thesis.txt").read_text() == "years of work"
    # a real calibration set is replaced whole by --force
    cal = tmp_path / "cal"
    assert main([*argv, "--out", str(cal)]) == 0
    (cal / "stray.png").write_bytes(b"x")  # not in the new set: must not survive the replacement
    assert main([*argv, "--out", str(cal), "--seed", "3"]) == 2  # no --force: refused
    assert "exists and is not empty" in _err(capsys)
    assert main([*argv, "--out", str(cal), "--seed", "3", "--force"]) == 0
    m = json.loads((cal / "manifest.json").read_text())
    assert m["sampling"]["seed"] == 3 and sorted(p.name for p in cal.iterdir()) == sorted(
        ["manifest.json", *(f["name"] for f in m["files"])]
    )
    # the source itself (or a folder holding it) is never the output
    assert main(["calib", "build", str(cal), "--out", str(cal), "--n", "4", "--force"]) == 2
    assert "is the folder given as SRC" in _err(capsys)
    assert main(["calib", "build", str(cal), "--out", str(tmp_path), "--n", "4", "--force"]) == 2
    assert f"SRC {cal}: lies inside --out {tmp_path}, which the command writes" in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal", "notes"]  # no temp folders left


# ---------------------------------------------------------------------------------------------- train


def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--model", "tiny", "--epochs", "1", *extra]


def test_train_refuses_an_existing_run_without_resume(
    tmp_path: Path, small_synth: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"the best model of a week-long run")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = rel.tree_digest(run)
    assert main(_train_argv(small_synth, run)) == 2
    assert _err(capsys) == (
        f"edge-affect: error: --out {run}: already holds a training run (best.pt, metrics.jsonl), "
        "expected --resume to continue it or a new --out\n"
    )
    assert rel.tree_digest(run) == before
    assert main(_train_argv(small_synth, small_synth)) == 2  # the dataset root is not an output folder
    assert _err(capsys).startswith(f"edge-affect: error: --out {small_synth}: is the folder given as --data")
    assert main(_train_argv(small_synth, tmp_path / "new", "--cache-dir", str(small_synth))) == 2
    assert _err(capsys).startswith(f"edge-affect: error: --cache-dir {small_synth}: is the folder given as --data")
    assert not (tmp_path / "new" / "last.pt").exists()


def test_resume_after_a_kill_between_metrics_and_last_pt_has_no_duplicate_epochs(
    tmp_path: Path, small_synth: Path, monkeypatch: pytest.MonkeyPatch, rel: SimpleNamespace
) -> None:
    """The epoch's metrics line is written, then the process dies before ``last.pt``: the resumed run
    re-does that epoch, and ``metrics.jsonl`` ends with one line per epoch, equal to last.pt's history."""
    import edge_affect.train.loop as loop
    from edge_affect.config import TrainConfig
    from edge_affect.models.checkpoint import read_checkpoint

    cfg = TrainConfig(model="tiny", epochs=2, batch_size=8, max_steps_per_epoch=2, augment=False, seed=0)
    out = tmp_path / "run"
    real_save = loop.save_checkpoint
    calls = {"last": 0}

    class Killed(Exception):
        pass

    def save_then_die(path, *a, **k):
        if Path(path).name == "last.pt":
            calls["last"] += 1
            if calls["last"] == 2:  # epoch 2: metrics line written, last.pt not
                raise Killed
        return real_save(path, *a, **k)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        loop.train(cfg, small_synth, out, progress=False)
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    with pytest.raises(ValueError, match="already holds a training run"):
        loop.train(cfg, small_synth, out, progress=False)  # not without resume
    # what a kill inside the save leaves (the temp name atomic writes use, the writer's PID gone)
    (out / f".last.pt.tmp-{rel.dead_pid()}-k3j4h5g6").write_bytes(b"half a checkpoint")
    loop.train(cfg, small_synth, out, resume=True, progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    _, _, state = read_checkpoint(out / "last.pt")
    assert lines == json.loads(state["history"])
    assert (out / "best.pt").is_file() and not list(out.glob(".*.tmp-*"))


# --------------------------------------------------------------------------------------------- cache


def test_cache_refuses_a_folder_it_did_not_write(tmp_path: Path, small_synth: Path, rel: SimpleNamespace) -> None:
    from edge_affect.data.abaw import load_split
    from edge_affect.data.cache import build_cache
    from edge_affect.schema import Preprocess

    theirs = tmp_path / "mine"
    theirs.mkdir()
    (theirs / "images.npy").write_bytes(b"someone's own array")
    ann = load_split(small_synth, "val")
    with pytest.raises(ValueError, match="holds images.npy that no edge-affect cache build wrote"):
        build_cache(ann, ann.images_root, Preprocess(input_size=32), theirs, workers=0)
    assert (theirs / "images.npy").read_bytes() == b"someone's own array"
    assert sorted(p.name for p in theirs.iterdir()) == ["images.npy"]


# -------------------------------------------------------------------------------------------- export


def test_export_replaces_an_earlier_export_whole(
    tmp_path: Path, tiny_ckpts: tuple[Path, Path], calib_set: Path, rel: SimpleNamespace
) -> None:
    """Model A with FP16, then model B FP32-only into the same folder: no file of A survives (run would
    otherwise pick A's FP16), the timing cache is kept, and the report names B."""
    pytest.importorskip("onnxruntime", reason="export checks parity with ONNX Runtime (the export extra)")
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.export.pipeline import ExportRequest, export_all

    a, b = tiny_ckpts
    out = tmp_path / "exp"
    export_all(ExportRequest(a, out, fp16=True, calib=calib_set))
    assert (out / "model.fp16.onnx").is_file()
    (out / "trt.timing.cache").write_bytes(b"timings")
    (out / "parity_report.json").write_text("{}")
    (out / f".model.onnx.tmp-{rel.dead_pid()}-abc123").write_bytes(b"half")  # a killed atomic write's leftover
    export_all(ExportRequest(b, out, calib=calib_set))  # not refused as a folder export did not write
    names = sorted(p.name for p in out.iterdir())
    assert names == ["export_report.json", "export_report.md", "model.onnx", "trt.timing.cache"]
    assert read_onnx_meta(out / "model.onnx").checkpoint_sha256 == rel.sha256(b)
    assert json.loads((out / "export_report.json").read_text())["checkpoint_sha256"] == rel.sha256(b)
    assert (out / "trt.timing.cache").read_bytes() == b"timings"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temp or old folder left


def test_export_refuses_folders_it_did_not_write(
    tmp_path: Path, tiny_ckpts: tuple[Path, Path], calib_set: Path, rel: SimpleNamespace
) -> None:
    from edge_affect.export.pipeline import ExportRequest, export_all

    ckpt = tiny_ckpts[0]
    run = tmp_path / "run"  # a training run: its checkpoint is inside
    run.mkdir()
    shutil.copy(ckpt, run / "best.pt")
    (run / "metrics.jsonl").write_text("{}\n")
    pkg = tmp_path / "pkg"  # a packaged model (the default model's layout)
    pkg.mkdir()
    for name in ("model.onnx", "model.json", "model.safetensors"):
        (pkg / name).write_bytes(name.encode())
    digests = {p: rel.tree_digest(p) for p in (run, pkg)}
    with pytest.raises(ValueError, match=r"is or holds the checkpoint"):
        export_all(ExportRequest(run / "best.pt", run, calib=calib_set))
    with pytest.raises(ValueError, match=r"holds 'best.pt', which edge-affect export did not write"):
        export_all(ExportRequest(ckpt, run, calib=calib_set))
    with pytest.raises(ValueError, match=r"holds 'model.json', which edge-affect export did not write"):
        export_all(ExportRequest(ckpt, pkg, calib=calib_set))
    with pytest.raises(ValueError, match=r"is or holds the --calib"):
        export_all(ExportRequest(ckpt, calib_set.parent, calib=calib_set))
    with pytest.raises(ValueError, match=r"parity_frames 0: out of range"):
        export_all(ExportRequest(ckpt, tmp_path / "new", calib=calib_set, parity_frames=0))
    with pytest.raises(ValueError, match=r"--timing-cache .*: is the file given as checkpoint"):
        export_all(ExportRequest(ckpt, tmp_path / "new", calib=calib_set, timing_cache=ckpt))
    assert {p: rel.tree_digest(p) for p in (run, pkg)} == digests
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "run"]


# ---------------------------------------------------------------------------------------------- demo


def test_demo_refuses_an_input_inside_the_folder_it_replaces(
    tmp_path: Path, rel: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    """A previous demo's folder is replaced whole: a --checkpoint or --ferplus inside it is refused, with one
    line and before anything is removed (it used to be deleted with the folder)."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo_summary.md").write_text("# edge-affect demo\n")  # a previous demo: replaced by a rerun
    ckpt, fer = out / "model.safetensors", out / "ferplus_valid.npz"
    ckpt.write_bytes(b"weights")
    fer.write_bytes(b"votes")
    before = rel.tree_digest(out)
    assert main(["demo", "--out", str(out), "--checkpoint", str(ckpt)]) == 2
    assert _err(capsys) == (
        f"edge-affect: error: --checkpoint {ckpt}: lies inside --out {out}, which the command writes; expected an "
        "input outside the output folder (edge-affect never writes over its inputs)\n"
    )
    outside = tmp_path / "model.safetensors"
    outside.write_bytes(b"weights")
    assert main(["demo", "--out", str(out / "sub" / ".."), "--checkpoint", str(outside), "--ferplus", str(fer)]) == 2
    assert "error: --ferplus " in _err(capsys)
    assert main(["demo", "--out", str(outside), "--checkpoint", str(outside)]) == 2
    assert "is the file given as --checkpoint" in _err(capsys)
    assert rel.tree_digest(out) == before and outside.read_bytes() == b"weights"
    with pytest.raises(SystemExit) as e:  # a usage error: argparse exits
        main(["demo", "--out", str(tmp_path / "new"), "--bench-iters", "0"])
    assert e.value.code == 2
    assert "--bench-iters 0: too small, expected an integer ≥ 1" in _err(capsys)


def test_atomic_write_removes_temp_files_of_killed_writers_only(tmp_path: Path, rel: SimpleNamespace) -> None:
    """A temp file a killed writer left (``.<name>.tmp-<pid>-…``, PID gone) is removed by the next write of
    that file; a live writer's temp file and other files are left alone."""
    import os

    from edge_affect.artifact import atomic_write_text

    dead = tmp_path / f".report.json.tmp-{rel.dead_pid()}-abc123"
    live = tmp_path / f".report.json.tmp-{os.getpid()}-def456"
    other = tmp_path / f".other.json.tmp-{rel.dead_pid()}-abc123"
    for p in (dead, live, other):
        p.write_text("partial")
    atomic_write_text(tmp_path / "report.json", "{}\n")
    assert (tmp_path / "report.json").read_text() == "{}\n"
    assert not dead.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "report.json"])


def test_scratch_folders_beside_an_output_are_removed_after_use_and_after_a_kill(
    tmp_path: Path, rel: SimpleNamespace
) -> None:
    """Export steps (ONNX export, TensorRT-shaped and CPU INT8) work in ``.<name>.tmp-<pid>-…`` beside their
    output: gone after use (also when the step fails), and one a killed process left is removed next time."""
    import os

    from edge_affect.fsutil import temp_dir_beside

    out = tmp_path / "model.int8.onnx"
    stale = tmp_path / f".model.int8.onnx.tmp-{rel.dead_pid()}-abc"
    live = tmp_path / f".model.int8.onnx.tmp-{os.getpid()}-xyz"
    stale.mkdir()
    live.mkdir()
    (stale / "int8.onnx").write_bytes(b"partial")
    with temp_dir_beside(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".model.int8.onnx.tmp-{os.getpid()}-")
        (tmp / "x").write_text("work")
        assert not stale.exists() and live.exists()
    assert not tmp.exists()
    with pytest.raises(RuntimeError), temp_dir_beside(out) as tmp2:
        raise RuntimeError("step failed")
    assert not tmp2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
