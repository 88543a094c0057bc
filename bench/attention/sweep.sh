#!/usr/bin/env bash
# The attention sweep (issue 13) in ONE device call: the decode kernel's correctness tests, then
# per dtype kiln's harness (checked against a float32 reference, then timed) and the PyTorch SDPA
# peers (cuDNN, FlashAttention-2) on the same shapes, then the joined table and plot.
#
#   bash bench/attention/sweep.sh        # on the GPU machine, carry ["build-carry"]
#
# Needs build-carry/kiln.tar.xz (scripts/gpu/stage.sh: cuBLAS and the loader path) and
# build-carry/attn.tar.xz (bench/attention/build_sweep.sh: bench_sweep, test_attention); builds
# the latter itself only where nvcc and a CUDA build exist. Results under $OUT (the device call's folder; default out/sweep): kiln_<dt>.jsonl,
# peers_<dt>.jsonl, logs, summary.txt, sweep.png. BUDGET_S (default 330) bounds the whole run:
# later parts are cut short rather than the call hitting its limit unreported.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/sweep}
BUDGET_S=${BUDGET_S:-330}
SHAPES=${SHAPES:-$ROOT/bench/attention/sweep_shapes.csv}
BIN=${SWEEP_BIN:-/tmp/kiln-attn/attn}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[sweep ${SECONDS}s] $*"; }
left() { echo $((BUDGET_S - SECONDS)); }

if [ -n "${KILN_LIBRARY:-}" ]; then
    :  # already set up by the caller (scripts/gpu/env.sh)
elif [ -f build-carry/kiln.tar.xz ]; then
    # shellcheck source=/dev/null
    source scripts/gpu/env.sh
else
    log "no build-carry/kiln.tar.xz: run scripts/gpu/stage.sh first"
fi
if [ ! -f build-carry/attn.tar.xz ] && command -v nvcc >/dev/null; then
    log "building the sweep binaries"
    bash bench/attention/build_sweep.sh > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
fi
if [ -z "${SWEEP_BIN:-}" ] && [ -f build-carry/attn.tar.xz ]; then
    mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
fi
[ -x "$BIN/bench_sweep" ] || { log "missing $BIN/bench_sweep (bench/attention/build_sweep.sh)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# 1. Correctness of the kernel paths the sweep exercises (decode cases and a quick general set).
log "test_attention --filter decode"
timeout 120 "$BIN/test_attention" --filter decode > "$OUT/test_decode.log" 2>&1
TEST_RC=$?
grep -E "^FAIL|^# " "$OUT/test_decode.log" | head -30
log "test_attention rc=$TEST_RC"

# 2. Per dtype: kiln (checked, then timed), then the peers on the same shapes.
for dt in fp16 bf16; do
    l=$(left)
    if [ "$l" -lt 40 ]; then log "skip $dt (budget)"; continue; fi
    log "kiln $dt"
    timeout $((l - 30 < 150 ? l - 30 : 150)) "$BIN/bench_sweep" --shapes "$SHAPES" --dtype $dt \
        --json "$OUT/kiln_$dt.jsonl" > "$OUT/kiln_$dt.log" 2>&1 || log "kiln $dt rc=$?"
    grep -E "^#|FAIL|error" "$OUT/kiln_$dt.log" | head -20
    l=$(left)
    if [ "$l" -lt 25 ]; then log "skip peers $dt (budget)"; continue; fi
    # Peers get what is left of this dtype's share; sweep_peers.py skips shapes past its budget.
    share=$([ $dt = fp16 ] && echo $(((l - 20) / 2)) || echo $((l - 20)))
    [ "$share" -gt 150 ] && share=150
    log "peers $dt (${share}s)"
    PYTHONUNBUFFERED=1 timeout $((share + 15)) python3 bench/attention/sweep_peers.py --shapes "$SHAPES" \
        --dtype $dt --json "$OUT/peers_$dt.jsonl" --budget-s "$share" > "$OUT/peers_$dt.log" 2>&1 \
        || log "peers $dt rc=$?"
    head -1 "$OUT/peers_$dt.log"
done

# 3. Table and plot.
log "report"
python3 bench/attention/sweep_report.py "$OUT" --shapes "$SHAPES" --plot "$OUT/sweep.png" > "$OUT/summary.txt" 2>&1
tar czf "$OUT/sweep_results.tgz" -C "$OUT" --exclude sweep_results.tgz . 2>/dev/null
cat "$OUT/summary.txt"
log "done (tests rc=$TEST_RC)"
