"""The import contracts (``.importlinter``: layers, the runtime below training, no cycles) hold, and they would
catch a cycle: ``lint-imports`` is what scripts/test.sh (and so CI) runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def lint_available() -> None:
    if not LINT.is_file():
        pytest.skip("needs import-linter (the dev extra: pip install -e '.[dev]')")


def test_contracts_hold(lint_available):
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "3 kept, 0 broken" in r.stdout


def test_a_cycle_breaks_the_contracts(lint_available, tmp_path):
    """A copy of the package where the ground floor reaches up (schema → artifact, the cycle issue 21 removed)."""
    shutil.copytree(ROOT / "edge_affect", tmp_path / "edge_affect", ignore=shutil.ignore_patterns("assets", "*.pyc"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    schema = tmp_path / "edge_affect" / "schema.py"
    schema.write_text(schema.read_text() + "\n\ndef _up() -> None:\n    from edge_affect import artifact  # noqa\n")
    r = _lint(tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})  # the copy, not the clone
    assert r.returncode != 0
    assert "edge_affect.schema is not allowed to import edge_affect.artifact" in r.stdout
    assert "1 kept, 2 broken" in r.stdout  # layers and acyclic broken, the runtime contract still kept
