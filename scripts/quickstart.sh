#!/usr/bin/env bash
# The main job: set up, then synthesise an ABAW-layout dataset, train the tiny model, evaluate it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/quickstart}
EA=.venv/bin/edge-affect
$EA data synth "$OUT/data" --n 3000 --seed 0
$EA train --data "$OUT/data" --model tiny --epochs 6 --out "$OUT/train"
$EA eval "$OUT/train/best.pt" --data "$OUT/data" --json "$OUT/eval.json" --submission "$OUT/submission.csv"
