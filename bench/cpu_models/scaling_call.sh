#!/usr/bin/env bash
# One GPU-machine call for the CPU figures at 1, 4 and 16 threads (its 16-core Sapphire Rapids):
#   1. A/B of two kiln builds at 16 threads (bench/kiln_ab.py), when build-carry/ab holds
#      libkiln_a.so (before) and libkiln_b.so (after), built here with the same dependencies;
#   2. bench/cpu_models/run.py over the CNNs at 1/4/16 threads, batch 1 and 8 (the staged build);
#   3. per-node profiles at 16 threads (bench/cpu_models/profile16.sh, SPECS).
# Prepare with scripts/gpu/stage.sh; carry build-carry. Results under $OUT/scaling.
#
#   bash bench/cpu_models/scaling_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/scaling
mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[scaling ${SECONDS}s] $*"; }
python3 bench/cpu_models/export.py --out /tmp/cpu_models --models squeezenet densenet121 mobilenetv3 \
    > "$OUT/export.log" 2>&1
python3 bench/gpu_models/export.py --out /tmp/gpu_models --models resnet50 --precisions fp32 --no-check \
    --device cpu >> "$OUT/export.log" 2>&1
log "exported"
if [ -f build-carry/ab/libkiln_a.so ] && [ -f build-carry/ab/libkiln_b.so ]; then
    for spec in ${AB_SPECS:-resnet50.fp32.onnx:1 resnet50.fp32.onnx:8 squeezenet.onnx:8}; do
        m=${spec%%:*}; b=${spec##*:}
        path=/tmp/cpu_models/$m; [ -f "$path" ] || path=/tmp/gpu_models/$m
        timeout 120 python3 bench/kiln_ab.py "$path" --a "$PWD/build-carry/ab/libkiln_a.so" \
            --b "$PWD/build-carry/ab/libkiln_b.so" --batch "$b" --threads 16 --rounds 3 2>&1 | tail -1
    done | tee "$OUT/ab16.txt"
    log "A/B done"
fi
timeout ${RUN_S:-300} python3 bench/cpu_models/run.py --threads ${THREADS_LIST:-1 4 16} --batches 1 8 \
    --gpu-models /tmp/gpu_models --cpu-models /tmp/cpu_models --torch-python python3 --target-s 0.15 \
    --min-runs 3 --only ${MODELS:-squeezenet densenet121 resnet50 mobilenetv3} --out "$OUT/cpu_models" \
    > "$OUT/run.log" 2>&1
log "run.py rc=$?"
grep -E "threads: geometric" "$OUT/cpu_models.md"
OUT=$OUT THREADS=16 SPECS="${SPECS:-squeezenet.onnx:8 densenet121.onnx:8 resnet50.fp32.onnx:8}" \
    timeout ${PROFILE_S:-150} bash bench/cpu_models/profile16.sh | grep -E "^==|^kiln:|^ort:"
log "profiles done"
