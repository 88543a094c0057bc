#!/usr/bin/env bash
# The benchmarks of the CPU, int8, concurrency and training work on the GPU machine (16 cores,
# H100), each next to its peer in the same call; results under $OUT. Prepare here with
# scripts/gpu/stage.sh and carry build-carry.
#
#   OUT=... PARTS="scaling profile concurrent" bash scripts/gpu/final_suite.sh
#   OUT=... PARTS="int8 train_cpu train_cuda" bash scripts/gpu/final_suite.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/final}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[final ${SECONDS}s] $*"; }
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
THREADS=${THREADS:-"1 4 16"}
for part in ${PARTS:-scaling profile concurrent int8 train_cpu train_cuda}; do
    case $part in
    scaling)
        [ -f /tmp/gpu_models/manifest.json ] || python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions fp32 \
            --no-check --models bert gpt2 vit resnet50 > "$OUT/export.log" 2>&1
        log "cpu_scaling"
        timeout ${SCALING_TIMEOUT:-260} python3 bench/cpu_scaling.py --models /tmp/gpu_models --threads $THREADS \
            --batches ${BATCHES:-1 8} --target-s ${TARGET_S:-0.8} --out "$OUT/cpu_scaling" > "$OUT/cpu_scaling.log" 2>&1
        log "cpu_scaling rc=$?"; cut -d'|' -f2-8 "$OUT/cpu_scaling.md" | head -30 ;;
    profile)
        for g in ${PROFILE_GRAPHS:-bert resnet50}; do
            timeout 60 python3 bench/op_profile.py --models /tmp/gpu_models --graph $g --threads 1 16 --runs 8 --top 8 \
                > "$OUT/prof_$g.txt" 2>&1; cat "$OUT/prof_$g.txt"
        done ;;
    concurrent)
        log "concurrent runs"
        timeout 120 python3 bench/concurrent_runs.py --reps 2 --seconds 1.5 > "$OUT/concurrent.txt" 2>&1
        log "concurrent rc=$?"; tail -12 "$OUT/concurrent.txt" ;;
    int8)
        log "int8"
        timeout 200 python3 bench/int8_bench.py --torch-python python3 --threads "${INT8_THREADS:-1,4,16}" --runs 40 \
            > "$OUT/int8.txt" 2>&1
        log "int8 rc=$?"; tail -14 "$OUT/int8.txt" ;;
    train_cpu)
        log "training, CPU, 16 threads"
        timeout 200 python3 bench/train_bench.py --threads 16 --out "$OUT/train_cpu" > "$OUT/train_cpu.txt" 2>&1
        log "train_cpu rc=$?"; tail -16 "$OUT/train_cpu.txt" ;;
    train_cuda)
        log "training, --device cuda"
        timeout 200 python3 bench/train_bench.py --threads 16 --device cuda --out "$OUT/train_cuda" > "$OUT/train_cuda.txt" 2>&1
        log "train_cuda rc=$?"; tail -16 "$OUT/train_cuda.txt" ;;
    esac
done
log done
