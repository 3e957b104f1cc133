#!/usr/bin/env bash
# Create .venv (once) and install edge-affect with the training, export and dev extras.
# torch/torchvision are pinned (installs must not drift); see docs in README "Installing".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.edge-affect-installed
want="$(sha256sum pyproject.toml requirements/*.txt 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements/torch.txt
  .venv/bin/python -m pip install -q -e ".[train,export,dev]"
  echo "$want" > "$stamp"
fi
