#!/usr/bin/env bash
# Train issue 22's synthetic-face models on a CUDA GPU, for the CPU side to export and judge.
#
# Runs on a lent GPU machine whose own python3 holds torch, timm, onnx, onnxruntime and OpenCV (the device
# tool's image); the project is used from its source tree (PYTHONPATH), nothing is built there. Prepare on
# the CPU machine, inside an ignored work dir W:
#   edge-affect data synth W/data-train --n 3000 --seed 0          # the very faces the CPU runs train on
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --implementation cp -d W/wheels pydantic pytest-timeout     # what the image lacks
# then on the device (carry W):  bash scripts/device/train_synth_cuda.sh W "tiny:0:synth-tiny:6 ..."
# Each spec is model:seed:config:epochs; runs (and their logs, <run>.log) land in W/cuda/<model>-s<seed>-e<epochs>
# and, without last.pt and the packed caches, in $OUT/cuda_runs.tgz. Back on the CPU, put each run's folder
# where benchmarks/bench_int8_backbones.py keeps its training runs (the `train` folder of one_run's work folder),
# with W's data sets beside them: the benchmark finds the runs trained, and exports and judges them.
set -uo pipefail
W=${1:?usage: train_synth_cuda.sh WORKDIR "model:seed:config:epochs ..."}
SPECS=${2:-"tiny:0:synth-tiny:6 tiny:1:synth-tiny:6 edge:0:synth-edge:6"}
OUT=${OUT:-$W/out}
mkdir -p "$OUT" "$W/cuda"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
[ -d "$W/wheels" ] && python3 -m pip install -q --no-index --find-links "$W/wheels" pydantic pytest-timeout
nvidia-smi -L
python3 -c "import torch, timm, onnxruntime, cv2; print('torch', torch.__version__, '| timm', timm.__version__,
'| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| cv2', cv2.__version__, '|',
torch.cuda.get_device_name())" | tee "$OUT/env.txt"
# the gpu-marked tests the image can run (TensorRT and onnxruntime-gpu ones skip with their reason)
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/data/test_loader.py tests/runtime/test_pipeline.py \
  tests/runtime/test_tensorrt.py 2>&1 | tail -15 | tee "$OUT/pytest_gpu.txt"
for spec in $SPECS; do
  IFS=: read -r model seed config epochs <<<"$spec"
  run=$W/cuda/$model-s$seed-e$epochs
  t0=$(date +%s)
  python3 -m edge_affect.cli train --data "$W/data-train" --config "configs/$config.toml" --model "$model" \
    --seed "$seed" --epochs "$epochs" --device cuda --out "$run" >"$run.log" 2>&1
  echo "$model seed $seed, $epochs epochs: exit $? in $(($(date +%s) - t0)) s" | tee -a "$OUT/train_times.txt"
  tail -2 "$run.log"
  # after every run, so that a run cut off by the time limit still brings the finished ones back
  tar czf "$OUT/cuda_runs.tgz" -C "$W" --exclude=cache --exclude=last.pt --exclude=.train.lock cuda
done
