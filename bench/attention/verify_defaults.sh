#!/usr/bin/env bash
# One GPU call that checks and times kiln's attention DEFAULT path (no variant sweep): the full
# correctness suite, then each benchmark pass (fp16 Q,K,V / Q+KV / QKV, causal, bf16) with the
# PyTorch peers (flash = FlashAttention-2, cuDNN) right after it, then the summary table.
#   KILN_PREBUILT=build-carry PEERS=build-carry/peers/sdpa_peers.py bash bench/attention/verify_defaults.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${KILN_PREBUILT:-$ROOT/build-gpu}
PEERS=${PEERS:-$ROOT/../shared/bench/sdpa_peers.py}
OUT=${OUT:-$ROOT/out/attention}
mkdir -p "$OUT"
SECONDS=0
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
if [ -z "${SKIP_TESTS:-}" ]; then # SKIP_TESTS=1 when the same call ran the suite already
    timeout ${TESTS_TIMEOUT:-150} "$B/test_attention" > "$OUT/tests.log" 2>&1
    echo "[${SECONDS}s] tests rc=$?: $(tail -1 "$OUT/tests.log")"
fi
# FULL=1: the issue's whole table, kiln's unfused path on the three fp16 formats and PyTorch's
# memory-efficient backend as well (about twice as long).
BACKENDS=flash,cudnn
UNF=()
if [ -n "${FULL:-}" ]; then BACKENDS=flash,efficient,cudnn; UNF=(--unfused); fi
pass() { # name, args common to kiln and the peers (kiln's own extra args in KARGS)
    local name=$1; shift
    timeout 120 "$B/bench_attention" "$@" "${KARGS[@]}" --json "$OUT/kiln_$name.json" > "$OUT/kiln_$name.log" 2>&1 ||
        echo "kiln $name rc=$?"
    PYTHONUNBUFFERED=1 timeout 120 python3 "$PEERS" "$@" --backends $BACKENDS --json "$OUT/peers_$name.json" \
        > "$OUT/peers_$name.log" 2>&1 || echo "peers $name rc=$?"
    echo "[${SECONDS}s] $name done"
}
KARGS=("${UNF[@]}")
pass fp16_qkv_sep --format qkv_sep
pass fp16_kv_packed --format kv_packed
pass fp16_qkv_packed --format qkv_packed
KARGS=()
pass fp16_qkv_sep_causal --format qkv_sep --causal
pass bf16_qkv_sep --format qkv_sep --dtype bf16
python3 "$ROOT/bench/attention/report.py" "$OUT" > "$OUT/summary.txt" 2>&1
tar czf "$OUT/attention_results.tgz" -C "$OUT" --exclude attention_results.tgz . 2>/dev/null
cat "$OUT/summary.txt"
