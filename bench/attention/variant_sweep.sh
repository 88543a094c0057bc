#!/usr/bin/env bash
# One GPU call for a tile sweep: the new tiles' tests alone first (SMOKE, a --filter), the full
# correctness suite (every variant, every default), the five benchmark passes with --variants on
# the rows of ROWS plus the peers, compute-sanitizer on the SANITIZE filter if time is left, the
# variant table last.
#   KILN_PREBUILT=build-carry PEERS=build-carry/peers/sdpa_peers.py bash bench/attention/variant_sweep.sh
# Defaults: the rows with head sizes 40..160 (every row where a TMA tile exists).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${KILN_PREBUILT:-$ROOT/build-gpu}
PEERS=${PEERS:-$ROOT/build-carry/peers/sdpa_peers.py}
OUT=${OUT:-$ROOT/out/attention}
BUDGET_S=${BUDGET_S:-280}
mkdir -p "$OUT"
SECONDS=0
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
# A new kernel alone first: a hang then costs 40 s, not the call.
SMOKE=${SMOKE:-persist}
SANITIZE=${SANITIZE:-persist}
ONLY=${ONLY:-tma_} # the variants timed next to the default
timeout ${SMOKE_TIMEOUT:-60} "$B/test_attention" --filter "$SMOKE" > "$OUT/smoke.log" 2>&1
SM=$?
echo "[${SECONDS}s] smoke ($SMOKE) rc=$SM: $(grep -E '^FAIL' "$OUT/smoke.log" | head -5) $(tail -1 "$OUT/smoke.log")"
EX=()
[ $SM = 124 ] && EX=(--exclude "$SMOKE")
timeout ${TESTS_TIMEOUT:-150} "$B/test_attention" "${EX[@]}" > "$OUT/tests.log" 2>&1
echo "[${SECONDS}s] tests rc=$?: $(grep -E '^FAIL' "$OUT/tests.log" | head -10) $(tail -1 "$OUT/tests.log")"
ROWS=${ROWS:-"128,128,12,64 64,128,12,64 128,384,12,64 64,384,12,64 128,512,12,64 64,512,12,64 1,4096,8,40 4,4096,8,40 1,16384,8,40 1,4096,8,80 4,4096,8,80 1,16384,8,80 1,4096,8,160 4,4096,8,160 1,16384,8,160 4,2048,32,128 4,4096,32,128 8,2048,32,128 8,4096,32,128"}
CFG="--configs $ROWS"
pass() { # name, args common to kiln and the peers
    local name=$1; shift
    local left=$((BUDGET_S - SECONDS - 30))
    if [ $left -lt 20 ]; then echo "skip $name (budget)"; return; fi
    timeout $((left < 60 ? left : 60)) "$B/bench_attention" "$@" $CFG --variants --only "$ONLY" --json "$OUT/kiln_$name.json" > "$OUT/kiln_$name.log" 2>&1 || echo "kiln $name rc=$?"
    PYTHONUNBUFFERED=1 timeout 45 python3 "$PEERS" "$@" $CFG --backends flash,cudnn --json "$OUT/peers_$name.json" \
        > "$OUT/peers_$name.log" 2>&1 || echo "peers $name rc=$?"
    echo "[${SECONDS}s] $name done"
}
pass fp16_qkv_sep --format qkv_sep
pass fp16_kv_packed --format kv_packed
pass fp16_qkv_packed --format qkv_packed
pass fp16_qkv_sep_causal --format qkv_sep --causal
pass bf16_qkv_sep --format qkv_sep --dtype bf16
left=$((BUDGET_S - SECONDS - 5))
if [ -z "${SKIP_SANITIZER:-}" ] && [ $left -gt 15 ]; then
    timeout $left compute-sanitizer --tool memcheck --error-exitcode 9 "$B/test_attention" --filter "$SANITIZE" > "$OUT/sanitizer.log" 2>&1
    echo "[${SECONDS}s] sanitizer rc=$?: $(tail -2 "$OUT/sanitizer.log" | tr '\n' ' ')"
else
    echo "sanitizer skipped (budget)"
fi
python3 "$ROOT/bench/attention/variant_table.py" "$OUT" > "$OUT/variants.txt" 2>&1
tar czf "$OUT/attention_results.tgz" -C "$OUT" --exclude attention_results.tgz . 2>/dev/null
cat "$OUT/variants.txt"
