#!/usr/bin/env bash
# Train-to-deploy walkthrough, offline on a CPU: set up, then the whole pipeline on synthetic ABAW-layout faces —
# synthesise → train (tiny) → evaluate → calibration frames → export FP32/FP16/INT8 ONNX + parity gates
# → run the torch-free runtime on a real photo and a short clip → benchmark it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/synth_pipeline}
EA=.venv/bin/edge-affect
SAMPLES=edge_affect/assets/samples
$EA data synth "$OUT/data" --n 3000 --seed 0
$EA data check "$OUT/data" --json "$OUT/data_check.json"
$EA train --data "$OUT/data" --config configs/synth-tiny.toml --out "$OUT/train"
$EA eval "$OUT/train/best.pt" --data "$OUT/data" --json "$OUT/eval.json" --submission "$OUT/submission.csv"
$EA calib build "$OUT/data" --out "$OUT/calib" --n 512 --force
# Exit 1 means a parity gate failed: the artifacts and export_report.md stay for inspection.
$EA export "$OUT/train/best.pt" --out "$OUT/export" --fp16 --int8 --calib "$OUT/calib" --engine --triton \
  || echo "edge-affect export: a parity gate failed (see $OUT/export/export_report.md); continuing"
$EA run "$OUT/export/model.onnx" --source "$SAMPLES/astronaut.png" --out "$OUT/astronaut.jsonl" --overlay "$OUT/astronaut_overlay.png"
$EA run "$OUT/export/model.onnx" --source "$SAMPLES/astronaut_clip.mp4" --out "$OUT/clip.jsonl" --overlay "$OUT/clip_overlay.mp4"
$EA bench "$OUT/export/model.onnx" --batch 1,8,32 --source "$SAMPLES/astronaut.png" --json "$OUT/bench.json"
echo "done: results in $OUT (eval.json, export/export_report.md, astronaut.jsonl, clip.jsonl, bench.json)"
