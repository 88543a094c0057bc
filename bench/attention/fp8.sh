#!/usr/bin/env bash
# FP8 (e4m3) attention forward (issue 13, item 4) in ONE device call, under 240 s:
#   1. the kernel tests (test_attention_fp8: float64 oracle on the dequantised inputs, poisoned
#      output and guard zone, head sizes 48..256, causal, GQA, S != T, every tile variant: on an
#      H100 also the wgmma ones, wgmma_wg*, which run on compute capability 9.0 only)
#   2. the ONNX-level tests: tests/gpu/test_cuda_attention_fp8.py (the node on CUDA) and
#      tests/test_attention_fp8.py (the CPU reference path and the error cases)
#   3. compute-sanitizer memcheck over the kernel tests' small cases (--quick)
#   4. bench_fp8: accuracy vs float32 on unquantised inputs (normal, outliers) and TFLOP/s at
#      S = 1k..16k, H = 64/128/256, causal and not, next to kiln's fp16 kernels (column wgmma: the
#      fastest wgmma variant; each one is listed after the table)
# The binaries come from bench/attention/build_sweep.sh (run by scripts/gpu/stage.sh on the build
# machine, packed in build-carry/attn.tar.xz): the GPU machine needs no compiler.
#
#   bash scripts/gpu/stage.sh                 # on the build machine
#   bash bench/attention/fp8.sh               # on the GPU machine, carry ["build-carry"]
#
# Results under $OUT: test_fp8.log, pytest.log, memcheck.log, bench_fp8.csv, bench_fp8.jsonl,
# summary.txt (the table printed last).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/fp8}
BUDGET_S=${BUDGET_S:-230}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[fp8 ${SECONDS}s] $*"; }
left() { echo $((BUDGET_S - SECONDS)); }
# shellcheck source=/dev/null
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
BIN=/tmp/kiln-attn/attn
mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
for b in test_attention_fp8 bench_fp8; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b: run scripts/gpu/stage.sh (bench/attention/build_sweep.sh) first"; exit 1; }
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader

timeout 60 "$BIN/test_attention_fp8" > "$OUT/test_fp8.log" 2>&1
rc_test=$?
log "test_attention_fp8 rc=$rc_test: $(tail -n 1 "$OUT/test_fp8.log")"
grep -E "^FAIL" "$OUT/test_fp8.log" | head -8

PYTHONUNBUFFERED=1 timeout 90 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/gpu/test_cuda_attention_fp8.py tests/test_attention_fp8.py > "$OUT/pytest.log" 2>&1
rc_py=$?
log "pytest rc=$rc_py: $(grep -E "passed|failed|error" "$OUT/pytest.log" | tail -n 1)"
grep -E "^FAILED|^SKIPPED|^ERROR" "$OUT/pytest.log" | head -6

if command -v compute-sanitizer >/dev/null; then
    timeout 60 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        "$BIN/test_attention_fp8" --quick > "$OUT/memcheck.log" 2>&1
    rc_mc=$?
    log "memcheck rc=$rc_mc: $(grep 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -n 1)"
else
    rc_mc=-1
    log "memcheck skipped: no compute-sanitizer"
fi

quick=""
[ "$(left)" -lt 90 ] && quick="--quick"
bt=$(( $(left) - 10 ))
[ $bt -gt 120 ] && bt=120
timeout "$bt" "$BIN/bench_fp8" $quick --json "$OUT/bench_fp8.jsonl" > "$OUT/bench_fp8.csv" 2> "$OUT/bench_fp8.err"
rc_bench=$?
log "bench_fp8 $quick rc=$rc_bench"

{
    echo "== FP8 attention on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
    echo "tests: kernel rc=$rc_test ($(tail -n 1 "$OUT/test_fp8.log")), pytest rc=$rc_py," \
         "memcheck rc=$rc_mc, bench rc=$rc_bench"
    echo "-- accuracy vs float32 on unquantised inputs (B=1 S=1024 N=2; output rms in the last column)"
    awk -F, '$1 == "acc" && $2 != "B" { printf "H=%-3s causal=%s %-8s fp8 rmse %.2e max %.2e (P unscaled %.2e, f16mma %.2e, wgmma %.2e max %.2e) | fp16 rmse %.2e max %.2e | ref rms %.2e\n", $5, $6, $7, $8, $9, $13, $15, $17, $18, $10, $11, $12 }' "$OUT/bench_fp8.csv"
    echo "-- TFLOP/s (FA3 grid: B*S = 16k, N*H = 2048; fp8 includes the V transpose)"
    printf "%-4s %-6s %6s %8s %8s %8s %8s %8s %7s\n" H causal S fp8_v0 fp8_v1 f16mma wgmma fp16 best/16
    awk -F, '$1 == "perf" && $2 != "B" { printf "%-4s %-6s %6s %8.1f %8.1f %8.1f %8.1f %8.1f %7.2f\n", $5, $6, $3, $7, $8, $11, $12, $9, $10 }' "$OUT/bench_fp8.csv"
    echo "-- each wgmma variant (TFLOP/s)"
    grep '^perf,[0-9]' "$OUT/bench_fp8.csv" | awk -F'"' '{ split($1, f, ","); printf "H=%-3s causal=%s S=%-5s %s\n", f[5], f[6], f[3], $6 }'
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
log "done"
