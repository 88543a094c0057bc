#!/usr/bin/env bash
# Where the CNNs that lose to onnxruntime on the 16-core CPU spend their time: per-node profiles
# (bench/node_profile.py: kiln and ORT side by side, by op type and node) of ResNet-50, SqueezeNet
# 1.1 and DenseNet-121 at THREADS threads, batch 1 (ResNet-50 also at batch 8), or the
# model:batch pairs in SPECS. On the GPU machine, after `source scripts/gpu/env.sh`; results
# under $OUT/profile16.
#
#   THREADS=16 bash bench/cpu_models/profile16.sh
#   SPECS="squeezenet.onnx:8 densenet121.onnx:8" bash bench/cpu_models/profile16.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/profile16
THREADS=${THREADS:-16}
mkdir -p "$OUT"
[ -f /tmp/cpu_models/squeezenet.onnx ] || python3 bench/cpu_models/export.py --out /tmp/cpu_models \
    --models squeezenet densenet121 mobilenetv3 > "$OUT/export.log" 2>&1
[ -f /tmp/gpu_models/resnet50.fp32.onnx ] || python3 bench/gpu_models/export.py --out /tmp/gpu_models \
    --models resnet50 --precisions fp32 --no-check --device cpu >> "$OUT/export.log" 2>&1
for spec in ${SPECS:-squeezenet.onnx:1 densenet121.onnx:1 resnet50.fp32.onnx:1 resnet50.fp32.onnx:8}; do
    m=${spec%%:*}; b=${spec##*:}
    path=/tmp/cpu_models/$m; [ -f "$path" ] || path=/tmp/gpu_models/$m
    timeout 90 python3 bench/node_profile.py "$path" --batch "$b" --threads "$THREADS" --runs 10 \
        > "$OUT/${m%.onnx}_b${b}_t${THREADS}.txt" 2>&1
    echo "== $m b$b t$THREADS"; head -2 "$OUT/${m%.onnx}_b${b}_t${THREADS}.txt" | cut -c1-200
done
