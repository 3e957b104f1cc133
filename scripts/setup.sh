#!/usr/bin/env bash
# Create .venv (once) and install edge-affect with the training, export, dev, qat and serve extras.
# torch/torchvision are pinned (requirements/torch.txt) and passed as constraints so that no other
# package can move them; re-run only when pyproject.toml or the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.edge-affect-installed
want="$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements/torch.txt
  .venv/bin/python -m pip install -q -c requirements/torch.txt -e ".[train,export,dev,qat,serve]"
  # onnxruntime and onnxruntime-gpu (from ModelOpt) share one module folder: make sure it imports.
  if ! .venv/bin/python -c "import onnxruntime; onnxruntime.InferenceSession" 2>/dev/null; then
    gpu=$(.venv/bin/python -m pip show onnxruntime-gpu 2>/dev/null | awk '/^Version:/{print $2}')
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu==${gpu}"
  fi
  .venv/bin/python -c "import onnxruntime, torch, timm, onnx; print('onnxruntime', onnxruntime.__version__, '| torch', torch.__version__, '| onnx', onnx.__version__)"
  echo "$want" > "$stamp"
fi
