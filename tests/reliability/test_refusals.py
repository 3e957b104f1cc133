"""The rest of issue 24's list, each refused in one line or handled: data import keeps train and val pixels
apart when their files share a name, options the CPU INT8 model would ignore, QAT on the gate frames, a
non-UTF-8 sidecar names its file, and the CPU quantizer child dies with the export process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_affect.cli import main


def _npz(path: Path, n: int, seed: int) -> Path:
    """A tiny FER2013-layout set: distinct random 16×16 gray faces with labels and ids."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        images=rng.integers(0, 256, (n, 16, 16), dtype=np.uint8),
        labels=np.arange(n) % 7,
        ids=np.array([f"f{i}" for i in range(n)]),
    )
    return path


def test_import_keeps_train_and_val_apart_when_their_files_share_a_name(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2", reason="import writes PNGs with OpenCV")
    from edge_affect.data.abaw import load_split

    tr, va = _npz(tmp_path / "a" / "data.npz", 12, 0), _npz(tmp_path / "b" / "data.npz", 12, 1)
    out = tmp_path / "ds"
    assert main(["data", "import", str(out), "--train", str(tr), "--val", str(va)]) == 0
    for split, src in (("train", tr), ("val", va)):
        ann = load_split(out, split)
        images = np.load(src)["images"]
        for i, p in enumerate(ann.paths):  # every row points at its own split's pixels
            assert np.array_equal(cv2.imread(str(out / "cropped_aligned" / p), cv2.IMREAD_GRAYSCALE), images[i]), p
    assert sorted(p.name for p in (out / "cropped_aligned").iterdir()) == ["data-train", "data-val"]


def test_one_file_as_both_splits_is_said_and_kept_apart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edge_affect.data.fer import import_face_set

    tr = _npz(tmp_path / "set.npz", 6, 0)
    import_face_set(tr, tr, tmp_path / "ds")
    assert "is both the training and the validation set" in caplog.text
    assert sorted(p.name for p in (tmp_path / "ds" / "cropped_aligned").iterdir()) == ["set-train", "set-val"]


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (["--int8-exclude", "MatMul"], "int8_exclude"),
        (["--int8-calib-method", "entropy"], "int8_calib_method"),
        (["--int8-quantize-stem"], "int8_quantize_stem"),
    ],
)
def test_options_the_cpu_int8_model_ignores_are_refused(
    tiny_ckpts: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], name: str
) -> None:
    pytest.importorskip("onnx", reason="export needs the export extra")
    out = tmp_path / "exp"
    assert main(["export", str(tiny_ckpts[0]), "--out", str(out), "--int8-target", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edge-affect: error: {name}: applies to model.int8.onnx only (the CPU INT8 model ")
    assert err.endswith("expected int8 (--int8 or --int8-target tensorrt) with it\n") and err.count("\n") == 1
    assert not out.exists()


def test_qat_refuses_to_train_on_the_gate_frames(
    tiny_ckpts: tuple[Path, Path], small_synth: Path, calib_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """calib_set was sampled from small_synth's train split, so its held-out gate frames are QAT training frames;
    the same holds for --eval-data ROOT --eval-split train."""
    pytest.importorskip("onnx", reason="export needs the export extra")
    base = ["export", str(tiny_ckpts[0]), "--int8", "--qat", "--data", str(small_synth), "--calib", str(calib_set)]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == (
        f"edge-affect: error: --qat: trains on the train split of --data {small_synth}, from which calibration set "
        f"{calib_set} was sampled, so its held-out gate frames are training frames; expected a calibration set "
        "from another split, or --eval-data from another split\n"
    )
    argv = [*base, "--eval-data", str(small_synth), "--eval-split", "train", "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    assert "the split --eval-data" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_non_utf8_sidecar_error_names_the_file(small_synth: Path, tmp_path: Path) -> None:
    import shutil

    from edge_affect.data.abaw import load_split, read_soft_expr, soft_expr_file

    root = tmp_path / "ds"
    shutil.copytree(small_synth, root)
    ann = load_split(root, "train", check_images=False)
    side = soft_expr_file(root / "training_set_annotations.txt")
    side.write_bytes(b"image,Neutral\n\xff\xfe broken\n")
    with pytest.raises(ValueError) as e:
        read_soft_expr(side, ann)
    assert str(e.value) == f"{side}: not UTF-8 text (byte 14), expected a UTF-8 CSV file"
    (root / "validation_set_annotations.txt").write_bytes(b"image,valence\n\xc3\x28\n")
    with pytest.raises(ValueError, match=r"validation_set_annotations.txt: not UTF-8 text \(byte 14\)"):
        load_split(root, "val", check_images=False)


def test_a_quantizer_child_dies_with_its_export_process(tmp_path: Path, rel: SimpleNamespace) -> None:
    """``die_with_parent`` (what the CPU INT8 quantizer child calls first): kill -9 of the parent takes the child."""
    pidfile = tmp_path / "child.pid"
    child = (
        "import os, sys, time; from edge_affect.export.cpu_int8 import die_with_parent; "
        f"die_with_parent(int(sys.argv[1])); open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    parent = (
        "import os, subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())]); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=rel.ROOT)
    rel.wait_for(lambda: pidfile.is_file() and pidfile.read_text().isdigit(), proc)
    pid = int(pidfile.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60  # a hang guard, not a speed claim
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    break  # dead, waiting for its reaper
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the child outlived its parent")
