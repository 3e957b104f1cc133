#!/usr/bin/env bash
# The main job, offline on a CPU: set up .venv, then `edge-affect demo` — the shipped default model (trained on
# FER+, the FER2013 faces with ten annotators' votes; MODEL_CARD.md) → FP32/FP16/INT8 ONNX with parity gates
# (+ TensorRT engines where TensorRT and a GPU exist, else the CPU INT8 model) → the torch-free runtime on real
# photos and a clip → results table, overlays, plots, summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edge-affect demo --out "${OUT:-runs/demo}"
