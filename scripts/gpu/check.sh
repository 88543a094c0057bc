#!/usr/bin/env bash
# One call on the GPU machine: the CUDA provider's tests (every kernel against the CPU provider,
# whole models, device-resident values, graph capture), compute-sanitizer memcheck over the
# differential tests, then (unless SKIP_BENCH=1) the model benchmark. Prints a short table last;
# logs under $OUT. Prepare here with scripts/gpu/stage.sh and carry build-carry.
#
#   OUT=... bash scripts/gpu/check.sh            (TESTS="tests/gpu/test_cuda_norm.py ..." to narrow)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/gpu}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[check ${SECONDS}s] $*"; }
source scripts/gpu/env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
ldd "$KILN_STAGE/kiln/libkiln_cuda.so" | grep -E "not found|cublas|cudnn|cudart" | tee "$OUT/ldd.txt"
export PYTHONUNBUFFERED=1

TESTS=${TESTS:-$(ls tests/gpu/test_cuda_*.py tests/gpu/test_gpu_models.py | grep -v test_cuda_ops.py)}
log "pytest $TESTS"
timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -rfEs -p no:cacheprovider -x --maxfail=40 $TESTS \
    --junitxml="$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
TRC=$?
grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests.log" | head -40
TSUM=$(tail -1 "$OUT/gpu_tests.log")
log "tests rc=$TRC: $TSUM"

SRC=skipped
if [ -z "${SKIP_SANITIZER:-}" ]; then
    log "compute-sanitizer memcheck over the differential tests"
    timeout ${SAN_TIMEOUT:-240} compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        --target-processes all python3 -m pytest -q -p no:cacheprovider ${SAN_TESTS:-tests/gpu/test_cuda_elementwise.py tests/gpu/test_cuda_norm.py tests/gpu/test_cuda_data.py} \
        > "$OUT/memcheck.log" 2>&1
    SRC=$?
    grep -E "ERROR SUMMARY|Invalid|out of bounds" "$OUT/memcheck.log" | sort | uniq -c | head -10
fi

BRC=skipped
if [ -z "${SKIP_BENCH:-}" ] && [ -f bench/gpu_models/run.py ]; then
    log "bench/gpu_models"
    mkdir -p "$OUT/models"
    timeout ${BENCH_TIMEOUT:-360} bash -c "python3 bench/gpu_models/export.py --out /tmp/gpu_models \
        ${BENCH_MODELS:+--models $BENCH_MODELS} --precisions fp16 && \
        python3 bench/gpu_models/run.py --models /tmp/gpu_models --out $OUT/bench ${BENCH_ARGS:-}" > "$OUT/bench.log" 2>&1
    BRC=$?
    tail -30 "$OUT/bench.log"
fi

echo
echo "| part | result |"
echo "|---|---|"
echo "| device | $(head -1 "$OUT/gpu.txt") |"
echo "| tests/gpu (rc $TRC) | $TSUM |"
echo "| compute-sanitizer memcheck (rc $SRC) | $(grep 'ERROR SUMMARY' "$OUT/memcheck.log" 2>/dev/null | tail -1) |"
echo "| bench/gpu_models (rc $BRC) | $(grep -i 'geomean' "$OUT/bench.log" 2>/dev/null | tail -2 | tr '\n' ' ') |"
echo "| seconds | $SECONDS |"
