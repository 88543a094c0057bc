#!/usr/bin/env bash
# One call on the GPU machine: build kiln's CUDA attention for sm_90a, run the correctness tests
# (and compute-sanitizer on a small set), then the benchmark next to the PyTorch peers
# (../shared/bench/sdpa_peers.py), printing a short table last. Run from anywhere:
#
#   bench/attention/gpu_run.sh                 # full run; results under $OUT (default out/attention)
#   BUILD_ONLY=1 bench/attention/gpu_run.sh    # compile only (any machine with nvcc)
#
# Environment:
#   OUT            where logs, JSON and the markdown table go
#   KILN_PREBUILT  directory holding test_attention and bench_attention built elsewhere (skips
#                  the build when they run here)
#   PEERS          path of sdpa_peers.py (default: ../shared/bench, shared/bench, build-gpu/peers)
#   BUDGET_S       seconds the benchmark part may run until (default 420, counted from the start);
#                  passes are cut or skipped rather than letting the run hit its limit unreported
#   SMOKE_FILTER   run these test cases alone first (60 s); if they hang, exclude them after
#   SKIP_SANITIZER=1  skip compute-sanitizer;  SWEEP_ONLY=1  variant sweep in every pass, no unfused
#   KILN_ENABLE_SM90_ATTENTION=1 and the other KILN_* switches of attention_dispatch.h apply
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/attention}
BUILD=${KILN_BUILD_DIR:-$ROOT/build-gpu}
BUDGET_S=${BUDGET_S:-420}
mkdir -p "$OUT" "$BUILD/obj"
SECONDS=0
log() { echo "[gpu_run ${SECONDS}s] $*"; }

NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
CUDA_HOME=${CUDA_HOME:-$(cd "$(dirname "$(command -v "$NVCC")")/.." && pwd)}
ARCH="-gencode=arch=compute_90a,code=sm_90a"
NVFLAGS="-std=c++17 -O3 -lineinfo $ARCH -Iinclude -Isrc -Xptxas -v"

build() {
    local t0=$SECONDS pids=() objs=() f o
    ${CC:-gcc} -std=c11 -O2 -Wall -Iinclude -I"$CUDA_HOME/include" -c src/cuda/cuda_provider.c \
        -o "$BUILD/obj/cuda_provider.o" || return 1
    for f in src/cuda/attention/gpu/*.cu tests/gpu/test_attention.cu bench/attention/bench_attention.cu; do
        o="$BUILD/obj/$(basename "$f" .cu).o"
        objs+=("$o")
        "$NVCC" $NVFLAGS -c "$f" -o "$o" > "$BUILD/obj/$(basename "$f" .cu).ptxas.txt" 2>&1 &
        pids+=($!)
    done
    local ok=1 p
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
    if [ $ok = 0 ]; then
        grep -h -B2 -A5 "error" "$BUILD"/obj/*.ptxas.txt | head -60
        return 1
    fi
    local lib=("$BUILD/obj/cuda_provider.o")
    for o in "${objs[@]}"; do
        case "$o" in */test_attention.o|*/bench_attention.o) ;; *) lib+=("$o") ;; esac
    done
    "$NVCC" $ARCH -o "$BUILD/test_attention" "$BUILD/obj/test_attention.o" "${lib[@]}" -lcublas || return 1
    "$NVCC" $ARCH -o "$BUILD/bench_attention" "$BUILD/obj/bench_attention.o" "${lib[@]}" -lcublas || return 1
    cat "$BUILD"/obj/*.ptxas.txt | grep -E "spill|Used" | paste - - | sed 's/ptxas info    ://g' > "$BUILD/resources.txt"
    log "built in $((SECONDS - t0)) s"
}

if [ -n "${BUILD_ONLY:-}" ]; then
    build
    exit $?
fi

# cuBLAS from PyTorch's wheel when the toolkit's is not on the loader path.
for d in "$CUDA_HOME/lib64" /usr/local/cuda/lib64 $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null | sed 's|$|/cu13/lib|'); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

BIN=$BUILD
if [ -n "${KILN_PREBUILT:-}" ] && "$KILN_PREBUILT/test_attention" --filter __none__ > /dev/null 2>&1; then
    BIN=$KILN_PREBUILT
    log "using prebuilt binaries in $BIN"
else
    [ -n "${KILN_PREBUILT:-}" ] && log "prebuilt binaries do not run here; building"
    build 2>&1 | tee "$OUT/build.log" || { log "BUILD FAILED"; exit 1; }
    cp "$BUILD/resources.txt" "$OUT/" 2>/dev/null
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
    --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

TEST_ARGS=()
if [ -n "${SMOKE_FILTER:-}" ]; then
    # A new kernel first, alone and briefly: a hang (e.g. an mbarrier never completing) then costs
    # 60 s and the full run goes on without those cases instead of losing the whole call.
    log "smoke tests: $SMOKE_FILTER"
    timeout 60 "$BIN/test_attention" --filter "$SMOKE_FILTER" > "$OUT/smoke.log" 2>&1
    SMOKE_RC=$?
    grep -E "^FAIL|^# " "$OUT/smoke.log" | head -20
    log "smoke rc=$SMOKE_RC"
    [ $SMOKE_RC = 124 ] || [ $SMOKE_RC -gt 1 ] && TEST_ARGS=(--exclude "$SMOKE_FILTER")
fi
log "correctness tests ${TEST_ARGS[*]:-}"
# Tests force each kernel kind themselves; the default path stays the mma.sync kernel here.
timeout 240 env -u KILN_ENABLE_SM90_ATTENTION "$BIN/test_attention" "${TEST_ARGS[@]}" > "$OUT/test.log" 2>&1
TEST_RC=$?
grep -E "^FAIL|^# " "$OUT/test.log" | head -40
# Instruction check of the sm90 kernels (the build machine may lack cuobjdump): HGMMA = wgmma,
# UTMALDG = TMA loads, SYNCS = mbarrier operations (the TMA variant's pipeline).
if command -v cuobjdump > /dev/null; then
    cuobjdump -sass "$BIN/test_attention" 2>/dev/null | grep -oE "HGMMA|UTMALDG|SYNCS[.A-Z]*|USETMAXREG" | sort | uniq -c \
        > "$OUT/sass_counts.txt"
    log "sass: $(tr -s ' \n' ' ' < "$OUT/sass_counts.txt")"
fi
if [ -n "${SKIP_SANITIZER:-}" ]; then
    SAN_RC=skipped
elif command -v compute-sanitizer > /dev/null; then
    log "compute-sanitizer memcheck (quick set)"
    timeout 150 env -u KILN_ENABLE_SM90_ATTENTION compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/test_attention" --quick \
        > "$OUT/sanitizer.log" 2>&1
    SAN_RC=$?
    tail -3 "$OUT/sanitizer.log"
else
    SAN_RC=na
fi

PEERS=${PEERS:-}
for c in "$ROOT/../shared/bench/sdpa_peers.py" "$ROOT/shared/bench/sdpa_peers.py" "$BUILD/peers/sdpa_peers.py"; do
    [ -z "$PEERS" ] && [ -f "$c" ] && PEERS=$c
done

# Each pass: kiln then the peers on the same inputs' shapes, back to back.
run_pass() { # name, kiln args..., -- , peer args...
    local name=$1; shift
    local kargs=() pargs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do kargs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    pargs=("$@")
    # Timeouts shrink with what is left, so the summary prints before the caller's limit.
    local left=$((BUDGET_S - SECONDS))
    if [ $left -lt 40 ]; then log "skip $name (budget)"; return; fi
    log "bench $name"
    timeout $((left - 20 < 200 ? left - 20 : 200)) "$BIN/bench_attention" "${kargs[@]}" --json "$OUT/kiln_$name.json" \
        > "$OUT/kiln_$name.log" 2>&1 || log "kiln bench $name failed (rc $?)"
    left=$((BUDGET_S - SECONDS))
    if [ -n "$PEERS" ] && [ $left -gt 25 ]; then
        PYTHONUNBUFFERED=1 timeout $((left - 5 < 150 ? left - 5 : 150)) python3 "$PEERS" "${pargs[@]}" \
            --backends flash,cudnn --json "$OUT/peers_$name.json" > "$OUT/peers_$name.log" 2>&1 \
            || log "peers $name failed (rc $?)"
    fi
}
if [ -n "${SWEEP_ONLY:-}" ]; then
    # Variant sweep without the unfused column, every pass (bf16 included) sweeping the tiles, so
    # a default can be chosen per head size and format from one call; EXTRA_ARGS (e.g.
    # "--configs ...") narrows the rows.
    run_pass fp16_qkv_sep --format qkv_sep --variants ${EXTRA_ARGS:-} -- --format qkv_sep ${EXTRA_ARGS:-}
    run_pass fp16_qkv_sep_causal --format qkv_sep --causal --variants ${EXTRA_ARGS:-} -- --format qkv_sep --causal ${EXTRA_ARGS:-}
    run_pass bf16_qkv_sep --format qkv_sep --dtype bf16 --variants ${EXTRA_ARGS:-} -- --format qkv_sep --dtype bf16 ${EXTRA_ARGS:-}
    run_pass fp16_kv_packed --format kv_packed --variants ${EXTRA_ARGS:-} -- --format kv_packed ${EXTRA_ARGS:-}
    run_pass fp16_qkv_packed --format qkv_packed --variants ${EXTRA_ARGS:-} -- --format qkv_packed ${EXTRA_ARGS:-}
else
run_pass fp16_qkv_sep --format qkv_sep --unfused --variants -- --format qkv_sep
run_pass fp16_kv_packed --format kv_packed --unfused --variants -- --format kv_packed
run_pass fp16_qkv_packed --format qkv_packed --unfused --variants -- --format qkv_packed
run_pass fp16_qkv_sep_causal --format qkv_sep --causal --variants -- --format qkv_sep --causal
run_pass bf16_qkv_sep --format qkv_sep --dtype bf16 -- --format qkv_sep --dtype bf16
fi

log "tests rc=$TEST_RC sanitizer rc=$SAN_RC peers=${PEERS:-none}"
python3 "$ROOT/bench/attention/report.py" "$OUT" > "$OUT/summary.txt" 2>&1
# The device tool returns only a few files: everything also goes into one archive.
tar czf "$OUT/attention_results.tgz" -C "$OUT" --exclude attention_results.tgz . 2>/dev/null
cat "$OUT/summary.txt"
