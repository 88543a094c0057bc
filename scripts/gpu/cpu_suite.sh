#!/usr/bin/env bash
# One call on the GPU machine's 16-core CPU: kiln next to onnxruntime at 1, 4 and 16 intra-op
# threads on the large float32 models (bench/cpu_scaling.py, batch 1 and 8), the two CNNs of
# bench/conv_bench.py, and ../shared's models (bench/cpu_bench.py). Results under $OUT.
# Prepare here with scripts/gpu/stage.sh and carry build-carry.
#
#   OUT=... bash scripts/gpu/cpu_suite.sh     (PARTS="scaling conv shared idle" to narrow)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/cpu}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[cpu ${SECONDS}s] $*"; }
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
PARTS=${PARTS:-"scaling conv shared idle"}
THREADS=${THREADS:-"1 4 16"}
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket|NUMA node\(s\)|L2|L3" | tee "$OUT/lscpu.txt"
grep -o -w -E "avx512_vnni|amx_int8|amx_bf16|avx512_bf16" /proc/cpuinfo | sort | uniq -c | tee -a "$OUT/lscpu.txt"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__)" | tee -a "$OUT/lscpu.txt"
for part in $PARTS; do
    case $part in
    scaling)
        log "export the float32 models"
        python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions fp32 --no-check --models ${SCALING_MODELS:-bert gpt2 vit resnet50} > "$OUT/export.log" 2>&1 || tail -5 "$OUT/export.log"
        log "cpu_scaling"
        timeout ${SCALING_TIMEOUT:-300} python3 bench/cpu_scaling.py --models /tmp/gpu_models --threads $THREADS \
            --batches ${BATCHES:-1 8} --target-s ${TARGET_S:-1.0} --out "$OUT/cpu_scaling" > "$OUT/cpu_scaling.log" 2>&1
        log "cpu_scaling rc=$?"; tail -4 "$OUT/cpu_scaling.md" ;;
    conv)
        log "conv_bench (whole CNNs)"
        timeout ${CONV_TIMEOUT:-100} python3 bench/conv_bench.py --models-only --threads $THREADS --torch-python python3 \
            --rounds 8 --out "$OUT/conv_cpu16.md" --json "$OUT/conv_cpu16.json" > "$OUT/conv.log" 2>&1
        log "conv rc=$?"; tail -8 "$OUT/conv_cpu16.md" ;;
    shared)
        log "cpu_bench (../shared models)"
        mkdir -p "$OUT/shared"; timeout ${SHARED_TIMEOUT:-60} python3 bench/cpu_bench.py --threads $THREADS --runs 50 --out "$OUT/shared" > "$OUT/shared.log" 2>&1
        log "shared rc=$?"; tail -8 "$OUT/shared.log" ;;
    idle)
        log "idle workers test at this core count"
        timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_threads_idle.py > "$OUT/idle.log" 2>&1
        log "idle rc=$?: $(tail -1 "$OUT/idle.log")" ;;
    esac
done
log "done"
