#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the test suite on CPU without the `slow` tests (what CI runs).
# Extra arguments go to pytest: `-m slow` for the slow tests only, `-m ""` for everything, `-k NAME`, a path,
# `-n 0` for one process. By default one worker per core (pytest-xdist), each test file on one worker (its module
# fixtures built once), one math thread per worker (OMP_NUM_THREADS, unless set) so workers do not oversubscribe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check edge_affect tests benchmarks
.venv/bin/lint-imports  # layers, runtime below training, no import cycles (.importlinter)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python -m pytest -q -m "not slow" -n auto --dist loadfile "$@"
