#!/usr/bin/env bash
# The tensor-core decode kernel's stream-K share-out (issue 13) in ONE device call, under 420 s:
#   1. correctness, in parallel (the CPU oracle is the slow part): test_attention's decode cases
#      with the default rule, with KILN_DECODE_STREAMK=0 (splits) and with every case forced onto
#      the tensor-core kernel with stream-K; compute-sanitizer memcheck over the quick decode
#      cases with stream-K; the FP8 kernel tests and their memcheck (the shared-epilogue refactor);
#      the ONNX-level attention tests through the runtime
#   2. then timing, alone on the GPU: decode_env_ab.sh on the sweep's 31 decode and speculative
#      rows and on decode_extra.csv's 21 model layouts, split against stream-K (and stream-K on
#      the tensor cores for every row), cuDNN in the same call
#
#   bash scripts/gpu/stage.sh                    # on the build machine
#   bash bench/attention/decode_streamk.sh       # on the GPU machine, carry the build-carry tarballs
#
# Results under $OUT: *.log, sweep/ and extra/ (decode_env_ab.sh's files), summary.txt.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/decode_streamk}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[streamk ${SECONDS}s] $*"; }
# shellcheck source=/dev/null
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
BIN=/tmp/kiln-attn/attn
mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader

MC=(true)
command -v compute-sanitizer >/dev/null && MC=(compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9)
run_bg() { # name, then the command
    local name=$1
    shift
    ("$@" > "$OUT/$name.log" 2>&1; echo "rc=$?" >> "$OUT/$name.log") &
}
run_bg test_rule timeout 200 "$BIN/test_attention" --filter decode
run_bg test_split env KILN_DECODE_STREAMK=0 timeout 200 "$BIN/test_attention" --filter decode
run_bg test_mma_streamk env KILN_DECODE_STREAMK=1 KILN_DECODE_KERNEL=mma timeout 200 "$BIN/test_attention" --filter decode
run_bg memcheck_decode env KILN_DECODE_STREAMK=1 timeout 200 "${MC[@]}" "$BIN/test_attention" --quick --filter decode
run_bg test_fp8 timeout 120 "$BIN/test_attention_fp8"
run_bg memcheck_fp8 timeout 200 "${MC[@]}" "$BIN/test_attention_fp8" --quick
run_bg pytest env PYTHONUNBUFFERED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/gpu/test_cuda_attention_ops.py tests/gpu/test_cuda_attention_onnx.py tests/gpu/test_cuda_attention_fp8.py
wait
for f in test_rule test_split test_mma_streamk memcheck_decode test_fp8 memcheck_fp8 pytest; do
    echo "$f: $(grep -E '^# [0-9]+ cases|ERROR SUMMARY|passed|failed' "$OUT/$f.log" | tail -n 1) $(tail -n 1 "$OUT/$f.log")"
    grep -E "^FAIL|^FAILED|^ERROR" "$OUT/$f.log" | head -5
done | tee "$OUT/checks.txt"
log "checks done"

VALUES="0 1 KILN_DECODE_STREAMK=1,KILN_DECODE_KERNEL=mma"
OUT="$OUT/sweep" IDS=$(seq -s, 0 30) VAR=KILN_DECODE_STREAMK VALUES="$VALUES" \
    bash bench/attention/decode_env_ab.sh > "$OUT/ab_sweep.log" 2>&1
log "sweep A/B done"
OUT="$OUT/extra" SHAPES=bench/attention/decode_extra.csv IDS=$(seq -s, 0 20) VAR=KILN_DECODE_STREAMK \
    VALUES="$VALUES" bash bench/attention/decode_env_ab.sh > "$OUT/ab_extra.log" 2>&1
log "extra A/B done"
{
    echo "== stream-K decode on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
    cat "$OUT/checks.txt"
    echo "-- sweep decode/spec rows (us; x cuDNN)"
    cat "$OUT/sweep/table.txt"
    echo "-- model layouts off the sweep (decode_extra.csv)"
    cat "$OUT/extra/table.txt"
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
log "done"
