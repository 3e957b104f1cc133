"""Fixtures for the reliability suite: a small synthetic dataset, untrained ``tiny`` checkpoints (two seeds),
a calibration set, and ``rel``: helpers to run the CLI as a real process, hash files, find dead PIDs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "edge_affect" / "assets" / "samples" / "astronaut.png"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path → sha256 of every file under ``folder`` (the state a command must not change)."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``edge-affect ARGS`` as a real process (what a user sees: exit code, exact stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "edge_affect.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 900) -> None:
    """Poll ``cond`` until true; fail with the process's output when it exits first (the timeout is a hang
    guard for a busy machine, not a speed claim)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"process exited ({proc.returncode}) before the expected state: {out[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the expected state never came")
        time.sleep(0.05)


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 synthetic faces of 64×64 (8 videos; 60 train / 20 val)."""
    from edge_affect.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("rel-synth") / "ds"
    synth_dataset(root, 80, seed=0, size=64, video_len=10, workers=0)
    return root


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different untrained ``tiny`` checkpoints (seeds 0 and 1)."""
    torch = pytest.importorskip("torch", reason="checkpoints need PyTorch (the train extra)")
    from edge_affect.models import create_model, save_checkpoint

    d = tmp_path_factory.mktemp("rel-ckpt")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(save_checkpoint(d / f"tiny{seed}.pt", create_model("tiny").eval()))
    return out[0], out[1]


@pytest.fixture(scope="session")
def calib_set(small_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame calibration set from the synthetic train split."""
    from edge_affect.calibration.build import build_calibration

    return build_calibration(small_synth, tmp_path_factory.mktemp("rel-calib") / "c", 40, seed=0)


@pytest.fixture(scope="session")
def rel() -> SimpleNamespace:
    """The suite's helpers (a fixture, so test modules need no package-relative imports)."""
    return SimpleNamespace(
        ROOT=ROOT,
        ASTRONAUT=ASTRONAUT,
        sha256=sha256,
        tree_digest=tree_digest,
        cli=cli,
        wait_for=wait_for,
        dead_pid=dead_pid,
    )


def _peak_rss_growth_kib(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(growth of this process's peak RSS in KiB while ``fn`` runs, what ``fn`` returned or raised). Resets the
    kernel's peak counter (``/proc/self/clear_refs``) first, so earlier peaks do not hide growth."""
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")
    except OSError:
        pytest.skip("measuring peak memory needs Linux /proc/self/clear_refs")

    def field(key: str) -> int:
        line = next(ln for ln in status.read_text().splitlines() if ln.startswith(key + ":"))
        return int(line.split()[1])

    before = field("VmRSS")
    try:
        result: Any = fn()
    except Exception as e:  # noqa: BLE001 - the caller inspects it
        result = e
    return field("VmHWM") - before, result


@pytest.fixture
def peak_rss_growth_kib() -> Callable[[Callable[[], Any]], tuple[int, Any]]:
    return _peak_rss_growth_kib
