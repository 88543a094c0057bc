#!/usr/bin/env bash
# One GPU-machine call on its 16-core CPU: why kiln's 4-thread batch-8 CNN runs trail ORT more
# than its 1- and 16-thread runs do.
#   1. the CPU's topology (lscpu, SMT siblings);
#   2. K independent one-thread copies of a model at once (bench/cpu_models/concurrent_copies.py): what
#      the machine itself loses with more cores busy, for kiln and ORT alike;
#   3. the stride-2 3x3 convolutions at 1 and 4 threads down each kiln path (the lane tiles, the
#      direct tiles, the product over im2col panels) next to ORT, and the path each one took.
# Prepare with scripts/gpu/stage.sh (KILN_STAGE_CPU_ONLY=1 will do); carry build-carry.
#
#   bash bench/cpu_models/threads4_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/threads4
mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[threads4 ${SECONDS}s] $*"; }
{ lscpu; for c in /sys/devices/system/cpu/cpu[0-9]*; do
    echo "$(basename "$c") siblings $(cat "$c/topology/thread_siblings_list") core $(cat "$c/topology/core_id")"
  done; } > "$OUT/lscpu.txt" 2>&1
grep -E "Model name|Thread|Core|Socket|MHz|L2|L3" "$OUT/lscpu.txt"
python3 bench/cpu_models/export.py --out /tmp/cpu_models --models squeezenet > "$OUT/export.log" 2>&1
python3 bench/gpu_models/export.py --out /tmp/gpu_models --models resnet50 --precisions fp32 --no-check \
    --device cpu >> "$OUT/export.log" 2>&1
log "exported"
for spec in ${COPY_TARGETS:-r50_3x3_28_128_b8:1 /tmp/gpu_models/resnet50.fp32.onnx:8 /tmp/cpu_models/squeezenet.onnx:8}; do
    timeout 200 python3 bench/cpu_models/concurrent_copies.py "${spec%%:*}" --batch "${spec##*:}" \
        --copies ${COPIES:-1 4 16} --seconds ${COPY_S:-3} --json "$OUT/concurrent.jsonl"
done 2>&1 | tee "$OUT/concurrent.txt"
log "copies done"
for c in ${CASES:-r50_3x3s2_56_128_b8 r50_3x3s2_28_256_b8 r50_3x3_56_64_b8}; do
    for t in ${THREADS_LIST:-1 4}; do
        python3 -c "import sys; sys.path[:0] = ['bench', 'python']; import conv_bench
open('/tmp/$c.onnx', 'wb').write(conv_bench.conv_model(conv_bench.CASES['$c'])[0])"
        KILN_DEBUG_PARTITION=1 "$KILN_BIN" bench "/tmp/$c.onnx" --threads "$t" --runs 1 2>&1 \
            | grep kiln-partition | sort -u | cut -c1-160
        timeout 90 python3 bench/variants_ab.py "$c" --threads "$t" --rounds 2 --seconds 0.4 \
            --variant main=- --variant nolanes=-,KILN_NO_CONV_LANES=1 \
            --variant im2col=-,KILN_NO_CONV_DIRECT=1,KILN_NO_CONV_LANES=1 --variant ort=ort \
            --json "$OUT/paths.jsonl"
    done
done 2>&1 | tee "$OUT/paths.txt"
log "paths done"
