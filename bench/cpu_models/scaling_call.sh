#!/usr/bin/env bash
# One GPU-machine call for the CPU figures at 1, 4 and 16 threads (its 16-core Sapphire Rapids):
#   1. A/B of kiln builds (bench/kiln_ab.py) named in AB, from build-carry/ab/libkiln_X.so
#      (built here with the same dependencies as the staged build);
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
# AB: "A B model batch threads" rows, ';'-separated; A and B name build-carry/ab/libkiln_A.so
AB=${AB:-"a b resnet50.fp32.onnx 1 16;a b resnet50.fp32.onnx 8 16;a b squeezenet.onnx 8 16"}
if [ -d build-carry/ab ]; then
    IFS=';' read -ra rows <<< "$AB"
    for row in "${rows[@]}"; do
        read -r A B m b t <<< "$row"
        path=/tmp/cpu_models/$m; [ -f "$path" ] || path=/tmp/gpu_models/$m
        echo -n "$A->$B: "
        timeout 120 python3 bench/kiln_ab.py "$path" --a "$PWD/build-carry/ab/libkiln_$A.so" \
            --b "$PWD/build-carry/ab/libkiln_$B.so" --batch "$b" --threads "$t" --rounds 3 2>&1 | tail -1
    done | tee "$OUT/ab.txt"
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
