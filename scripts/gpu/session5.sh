#!/usr/bin/env bash
# The device calls of session 5, one PARTS list per call (results under $OUT, a short table last):
#   gputests  every tests/gpu file (each CUDA kernel against the CPU provider, specialisation,
#             CUDA training, decode attention, device I/O, graphs, models)
#   train     bench/train_bench.py --device cuda (device-resident training next to PyTorch)
#   gpumodels bench/gpu_models (kiln default / graph / decode columns next to eager and compile)
#   sweep     bench/attention/sweep.sh (issue 13's shape sweep next to cuDNN and FA2)
#   memcheck  scripts/gpu/memcheck_all.sh over every GPU test
#   cpu       bench/cpu_models/run.py at 1/4/16 threads (the 16-core CPU), op profiles
#   bf16      AMX / AVX512-BF16 tests and bench/bf16_accuracy.py; fork cost
# Prepare here with scripts/gpu/stage.sh; carry build-carry.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/s5}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[s5 ${SECONDS}s] $*"; }
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SUMMARY=()
MC_PID=
if [ -n "${PAR_MEMCHECK:-}" ]; then
    # memcheck is correctness only: it runs beside the tests, and is waited for before any timing.
    # Seen 2026-12-06 on an H100 with SHARDS=6 beside the GPU tests: the sanitized processes ran
    # out of device memory (cudaMalloc under memcheck) and the host out of threads (the test run
    # aborted, "Resource temporarily unavailable"), so none of it was a usable result. Prefer
    # PARTS=memcheck on its own with SHARDS=3.
    log "memcheck in the background"
    ( OUT="$OUT/memcheck" SHARDS=${SHARDS:-6} MC_TIMEOUT=${MC_TIMEOUT:-240} bash scripts/gpu/memcheck_all.sh \
        > "$OUT/memcheck_summary.txt" 2>&1 ) &
    MC_PID=$!
fi
wait_memcheck() {
    [ -n "$MC_PID" ] || return 0
    log "waiting for memcheck"; wait $MC_PID; MC_PID=
    tail -14 "$OUT/memcheck_summary.txt"
}
for part in ${PARTS:-gputests}; do
    case $part in
    gputests)
        log "gpu tests"
        timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -rfE -p no:cacheprovider --maxfail=60 tests/gpu \
            tests/test_train_device.py > "$OUT/gpu_tests.log" 2>&1
        rc=$?
        grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests.log" | cut -c1-160 | head -40
        SUMMARY+=("gpu tests rc=$rc: $(tail -1 "$OUT/gpu_tests.log")")
        for f in tests/gpu/test_cuda_specialize.py tests/gpu/test_train_cuda.py; do
            timeout 60 python3 -m pytest -q -s -p no:cacheprovider $f -k "specialis or end_to_end or e2e" 2>&1 \
                | grep -iE "opened in|ms|specialis" | head -8
        done ;;
    train)
        wait_memcheck
        log "train_bench --device cuda"
        timeout ${TRAIN_TIMEOUT:-150} python3 bench/train_bench.py --threads 16 --device cuda --out "$OUT/train_cuda" \
            > "$OUT/train_cuda.txt" 2>&1
        rc=$?; grep -E "^(mlp|cnn|bert) " "$OUT/train_cuda.txt"; grep -i "parameters" "$OUT/train_cuda.txt" | tail -2
        SUMMARY+=("train cuda rc=$rc") ;;
    gpumodels)
        wait_memcheck
        log "gpu_models export"
        python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions ${GM_PRECISIONS:-fp16 fp32} --no-check > "$OUT/gm_export.log" 2>&1
        log "gpu_models run"
        timeout ${GM_TIMEOUT:-420} python3 bench/gpu_models/run.py --models /tmp/gpu_models --out "$OUT/gpu_models" \
            --budget ${GM_BUDGET:-360} --target-s 0.25 --compile-timeout ${GM_COMPILE_TIMEOUT:-80} ${GM_ARGS:-} > "$OUT/gpu_models.log" 2>&1
        rc=$?; tail -4 "$OUT/gpu_models.log"
        grep -E "^\| |Geometric" "$OUT/gpu_models/results.md" 2>/dev/null | cut -d'|' -f2-13 | head -24
        SUMMARY+=("gpu_models rc=$rc") ;;
    sweep)
        wait_memcheck
        log "attention sweep"
        OUT="$OUT/sweep" BUDGET_S=${SWEEP_BUDGET:-300} bash bench/attention/sweep.sh > "$OUT/sweep.log" 2>&1
        rc=$?; tail -40 "$OUT/sweep.log"; SUMMARY+=("sweep rc=$rc") ;;
    memcheck)
        log "memcheck"
        OUT="$OUT/memcheck" SHARDS=${SHARDS:-8} MC_TIMEOUT=${MC_TIMEOUT:-300} bash scripts/gpu/memcheck_all.sh 2>&1 | tail -14
        SUMMARY+=("memcheck: see above") ;;
    cpu)
        wait_memcheck
        log "cpu models export"
        python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions fp32 --no-check \
            --models bert gpt2 vit resnet50 > "$OUT/cpu_export.log" 2>&1
        python3 bench/cpu_models/export.py --out /tmp/cpu_models >> "$OUT/cpu_export.log" 2>&1
        grep -E "not exported" "$OUT/cpu_export.log"
        log "cpu models run"
        timeout ${CPU_TIMEOUT:-400} python3 bench/cpu_models/run.py --threads ${THREADS:-1 4 16} --batches 1 8 \
            --gpu-models /tmp/gpu_models --cpu-models /tmp/cpu_models --int8-models /tmp/int8_models \
            --torch-python python3 --target-s ${TARGET_S:-0.3} --min-runs 3 --out "$OUT/cpu_models" > "$OUT/cpu_models.log" 2>&1
        rc=$?; grep -E "threads: geometric|error" "$OUT/cpu_models.md" | head -12
        SUMMARY+=("cpu models rc=$rc") ;;
    profile)
        wait_memcheck
        for g in gpt2_prefill resnet50; do
            timeout 70 python3 bench/op_profile.py --models /tmp/gpu_models --graph $g --batch ${PROF_BATCH:-8} \
                --threads 1 16 --runs 3 --top 10 --nodes 12 > "$OUT/prof_$g.txt" 2>&1; head -14 "$OUT/prof_$g.txt"
        done ;;
    bf16)
        wait_memcheck
        log "bf16 / AMX"
        grep -o -w -E "amx_bf16|amx_tile|avx512_bf16" /proc/cpuinfo | sort | uniq -c
        KILN_BUILD_DIR=$KILN_STAGE/kiln timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_bf16_mode.py \
            > "$OUT/bf16_tests.log" 2>&1
        SUMMARY+=("bf16 tests rc=$?: $(tail -1 "$OUT/bf16_tests.log")")
        [ -x build-carry/fork_cost ] && build-carry/fork_cost 1 2 4 8 16 > "$OUT/fork_cost.txt" 2>&1 && cat "$OUT/fork_cost.txt"
        timeout ${BF16_TIMEOUT:-150} python3 bench/bf16_accuracy.py --threads 1 16 --models-dir /tmp/gpu_models --shared "$KILN_MODELS" --budget 1.0 \
            --out "$OUT/bf16_accuracy.md" > "$OUT/bf16_accuracy.log" 2>&1
        SUMMARY+=("bf16 accuracy rc=$?"); tail -20 "$OUT/bf16_accuracy.md" 2>/dev/null ;;
    esac
done
wait_memcheck
log "done"
printf '%s\n' "${SUMMARY[@]}"
