#!/usr/bin/env bash
# The tensor-core decode kernel's tile configurations (KILN_DECODE_MMA_CFG) and split rule
# (KILN_DECODE_WAVE_EFF) side by side on the sweep's decode rows and decode_extra.csv, forced onto
# the tensor-core kernel (so the multi-head rows show it against the CUDA-core one), fp16, with
# cuDNN and FlashAttention-2 timed in the same call. Every timed shape is also checked
# (bench_sweep poisons the output and compares one call).
#
#   bash bench/attention/decode_cfg.sh   # on the GPU machine, carry ["build-carry"]
#
# Results under $OUT: decode_cfg.tgz (jsonl per configuration) and a table on stdout
# (bench/attention/decode_cfg_table.py).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/decode_cfg}
CFGS=${CFGS:-"0 1 2 3"}
EFFS=${EFFS:-"0.85 0.97"}
W=$(mktemp -d)
mkdir -p "$OUT"
SECONDS=0
log() { echo "[decode_cfg ${SECONDS}s] $*"; }
# shellcheck source=/dev/null
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
BIN=/tmp/kiln-attn/attn
mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
grep -E "^#|^id,|,(decode|spec)," bench/attention/sweep_shapes.csv > "$W/sweep.csv"
cp bench/attention/decode_extra.csv "$W/extra.csv"
# name=settings: the CUDA-core kernel and tensor-core configuration 0 as main has them (a second
# kernel combines the splits, 85 % wave rule), then each with the last CTA combining
RUNS=${RUNS:-"simtK=KILN_DECODE_KERNEL=simt,KILN_DECODE_COMBINE=kernel simt=KILN_DECODE_KERNEL=simt
 mma0K_e0.85=KILN_DECODE_KERNEL=mma,KILN_DECODE_MMA_CFG=0,KILN_DECODE_COMBINE=kernel"}
for c in $CFGS; do for e in $EFFS; do
    RUNS="$RUNS mma${c}_e$e=KILN_DECODE_KERNEL=mma,KILN_DECODE_MMA_CFG=$c,KILN_DECODE_WAVE_EFF=$e"
done; done
for set in sweep extra; do
    for r in $RUNS; do
        name=${r%%=*}
        # shellcheck disable=SC2046
        env $(echo "${r#*=}" | tr , ' ') timeout 60 "$BIN/bench_sweep" --shapes "$W/$set.csv" --dtype fp16 \
            --json "$W/${set}_$name.jsonl" > "$W/${set}_$name.log" 2>&1 || log "$set $name rc=$?"
        grep -E "^# " "$W/${set}_$name.log" | sed "s/^/  $set $name: /"
    done
    log "$set kiln done"
    PYTHONUNBUFFERED=1 timeout 80 python3 bench/attention/sweep_peers.py --shapes "$W/$set.csv" --dtype fp16 \
        --json "$W/${set}_peers.jsonl" --budget-s 45 > "$W/${set}_peers.log" 2>&1 || log "peers $set rc=$?"
    log "$set peers done"
done
python3 bench/attention/decode_cfg_table.py "$W" | tee "$W/table.txt"
tar czf "$OUT/decode_cfg.tgz" -C "$W" .
log "done"
