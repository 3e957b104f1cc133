#!/usr/bin/env bash
# The shipped default model, from scratch, on a CPU: FER+ import → training → rare-class check → package →
# peer comparison on FER+ valid and on FER2013's original labels → INT8 export and its accuracy on FER+ valid
# faces (not the calibration frames, which come from the training split).
#
#   bash scripts/default_model.sh            # everything (training: ~65 min on a 2-core AVX512-BF16 CPU)
#   STAGE=after-train bash scripts/default_model.sh   # package + measurements of an existing run
#
# Needs the FER+ and FER2013 .npz files in ../shared/data (see their READMEs) and the peer for the comparison
# (requirements/peer.txt). Writes under runs/ (ignored) and, for the shipped files, into
# edge_affect/assets/models/default, benchmarks/results and docs/img.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/ferplus-edge}
TAU=${TAU:-0}
py=.venv/bin/python
ea=.venv/bin/edge-affect

if [ "${STAGE:-all}" = all ]; then
  [ -d runs/ferplus ] || $ea data import runs/ferplus --train "$DATA/ferplus/ferplus_train.npz" \
    --val "$DATA/ferplus/ferplus_valid.npz" --weak-targets
  $ea train --data runs/ferplus --config configs/ferplus-edge.toml --out "$RUN" --cache-dir runs/cache-ferplus
fi

# Rare classes: the effect of a logit adjustment on FER+ valid (chooses TAU; valid also chose the checkpoint)
$py benchmarks/bench_rare_classes.py "$RUN/best.pt" --data runs/ferplus \
  --json benchmarks/results/rare_classes.json --png docs/img/rare_classes.png

PKG=runs/default-model
rm -rf "$PKG"
$ea package "$RUN/best.pt" --out "$PKG" --data runs/ferplus --expr-logit-adjust "$TAU" \
  --description "FER+ (ten-annotator votes) task-token transformer, edge_gray48_slim, trained from scratch on a 2-core CPU"

# FER+ valid (majority vote, 8 classes) and FER2013 public test (original labels), peer in the same run
$py benchmarks/bench_peer_fer.py --ours "$PKG/model.onnx" --ours-name onnx_fp32 --data "$DATA/ferplus/ferplus_valid.npz" \
  --json benchmarks/results/default_model_eval.json --png docs/img/default_model_eval.png \
  --confusion-png docs/img/default_model_confusion.png
$py benchmarks/bench_peer_fer.py --ours "$PKG/model.onnx" --ours-name onnx_fp32 \
  --data "$DATA/fer2013/fer2013_publictest.npz" --json benchmarks/results/default_model_eval_fer2013.json \
  --latency-rounds 0

# INT8 as users get it, judged on FER+ valid faces (the calibration frames are FER2013 training faces)
rm -rf runs/default-int8
$ea export "$PKG/model.safetensors" --int8 --out runs/default-int8
$py benchmarks/bench_peer_fer.py --no-peer --ours "$PKG/model.onnx" --ours-name onnx_fp32 \
  --ours runs/default-int8/model.int8.onnx --ours-name onnx_int8 --data "$DATA/ferplus/ferplus_valid.npz" \
  --json benchmarks/results/default_model_int8.json --latency-rounds 0
echo "packaged into $PKG; to ship it, empty edge_affect/assets/models/default (package never writes into a"
echo "folder it did not create) and run:"
echo "  $ea package $RUN/best.pt --out edge_affect/assets/models/default --data runs/ferplus --expr-logit-adjust $TAU --evaluation benchmarks/results/default_model_eval.json"
