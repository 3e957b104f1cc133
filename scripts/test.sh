#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the test suite on CPU without the `slow` tests (what CI runs).
# Extra arguments go to pytest: `-m slow` for the slow tests only, `-m ""` for everything, `-k NAME`, a path...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check edge_affect tests benchmarks
.venv/bin/lint-imports  # layers, runtime below training, no import cycles (.importlinter)
.venv/bin/python -m pytest -q -m "not slow" "$@"
