#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite on CPU, plus the Python 3.10 lint of the runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check edge_affect tests benchmarks
.venv/bin/python -m pytest -q "$@"
