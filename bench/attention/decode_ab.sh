#!/usr/bin/env bash
# The two split-KV decode kernels side by side (issue 13), in ONE device call: the kernel tests
# with each forced (KILN_DECODE_KERNEL=simt|mma), compute-sanitizer memcheck over the
# tensor-core kernel's tests, then the sweep's decode/spec rows and bench/attention/decode_extra.csv
# (real models' head layouts, off the sweep) timed with each kernel next to cuDNN and
# FlashAttention-2, in fp16 and bf16.
#
#   bash bench/attention/decode_ab.sh      # on the GPU machine, carry ["build-carry"]
#
# Results under $OUT: <set>/<kernel>/summary.txt (sweep_report.py's table), the jsonl files and
# logs, packed as decode_ab.tgz (a device call returns at most 8 files).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/decode_ab}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[decode_ab ${SECONDS}s] $*"; }
left() { echo $((BUDGET_S - SECONDS)); }
# shellcheck source=/dev/null
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
BIN=/tmp/kiln-attn/attn
mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader

for k in simt mma; do
    KILN_DECODE_KERNEL=$k timeout 100 "$BIN/test_attention" --filter decode > "$OUT/test_$k.log" 2>&1
    log "test_attention --filter decode, kernel $k: rc=$? $(grep -cE '^FAIL' "$OUT/test_$k.log") FAIL lines"
    grep -E "^FAIL|^# " "$OUT/test_$k.log" | head -8
done
KILN_DECODE_KERNEL=mma timeout ${MC_TIMEOUT:-120} compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    "$BIN/test_attention" --filter decode > "$OUT/memcheck_mma.log" 2>&1
log "memcheck (mma) rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_mma.log" | tail -1)"

grep -E "^#|^id,|,(decode|spec)," bench/attention/sweep_shapes.csv > "$OUT/sweep_decode.csv"
cp bench/attention/decode_extra.csv "$OUT/extra.csv"
# fp16 first (both shape sets), then bf16, so a short budget still gives one whole dtype.
for dt in fp16 bf16; do
    for set in sweep_decode extra; do
        shapes="$OUT/$set.csv"
        for k in simt mma; do
            mkdir -p "$OUT/$set/$k"
            [ "$(left)" -lt 50 ] && { log "skip $set $dt $k (budget)"; continue; }
            KILN_DECODE_KERNEL=$k timeout 90 "$BIN/bench_sweep" --shapes "$shapes" --dtype $dt \
                --json "$OUT/$set/$k/kiln_$dt.jsonl" > "$OUT/$set/$k/kiln_$dt.log" 2>&1 || log "$set $dt $k rc=$?"
        done
        [ "$(left)" -lt 40 ] && { log "skip peers $set $dt (budget)"; continue; }
        PYTHONUNBUFFERED=1 timeout 80 python3 bench/attention/sweep_peers.py --shapes "$shapes" --dtype $dt \
            --json "$OUT/$set/peers_$dt.jsonl" --budget-s 50 > "$OUT/$set/peers_$dt.log" 2>&1 || log "peers $set $dt rc=$?"
        for k in simt mma; do cp "$OUT/$set/peers_$dt.jsonl" "$OUT/$set/$k/" 2>/dev/null; done
        log "$set $dt done"
    done
done
for set in sweep_decode extra; do
    for k in simt mma; do
        python3 bench/attention/sweep_report.py "$OUT/$set/$k" --shapes "$OUT/$set.csv" > "$OUT/$set/$k/summary.txt" 2>&1
        echo "== $set, kernel $k"
        grep -E "^# " "$OUT/$set/$k/summary.txt"
    done
done
tar czf "$OUT/decode_ab.tgz" -C "$OUT" --exclude decode_ab.tgz . 2>/dev/null
log "done"
