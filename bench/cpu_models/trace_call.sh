#!/usr/bin/env bash
# One GPU-machine call on its 16-core CPU: where 16 threads lose time. The cost of one
# parallel-for (bench/fork_cost.c), then bench/pool_trace_report.py on ResNet-50 (batch 1 and 8)
# and SqueezeNet at 16 threads, each node's work set against one thread's; then, if
# build-carry/ab/libkiln_*.so exist (CPU builds made here with the same dependencies as the staged
# one), those builds side by side on ResNet-50 at 16 and 1 threads (bench/variants_ab.py).
# Prepare with scripts/gpu/stage.sh; carry build-carry. Results under $OUT/trace.
#
#   bash bench/cpu_models/trace_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/trace
mkdir -p "$OUT"
source scripts/gpu/env.sh
SECONDS=0
python3 -c "import kiln._lib as l; print(\"kiln._native:\", l.load_native())" 2>&1 | tee "$OUT/native.txt"
build-carry/fork_cost 1 4 16 > "$OUT/fork_cost.txt" 2>&1
tail -4 "$OUT/fork_cost.txt"
python3 bench/gpu_models/export.py --out /tmp/gpu_models --models resnet50 --precisions fp32 --no-check \
    --device cpu > "$OUT/export.log" 2>&1
python3 bench/cpu_models/export.py --out /tmp/cpu_models --models squeezenet >> "$OUT/export.log" 2>&1
echo "[trace ${SECONDS}s] exported"
for spec in ${SPECS:-resnet50.fp32:1:15 squeezenet:1:30 resnet50.fp32:8:4 squeezenet:8:10}; do
    IFS=: read -r m b r <<< "$spec"
    p=/tmp/cpu_models/$m.onnx; [ -f "$p" ] || p=/tmp/gpu_models/$m.onnx
    timeout 60 python3 bench/pool_trace_report.py "$p" --threads 16 --batch "$b" --runs "$r" \
        --compare-threads 1 --top 25 > "$OUT/trace_${m}_b$b.md" 2>&1
    head -3 "$OUT/trace_${m}_b$b.md"
done
echo "[trace ${SECONDS}s] traces"
V=""
for lib in build-carry/ab/libkiln_*.so; do
    [ -f "$lib" ] || continue
    n=${lib##*/libkiln_}; V="$V --variant ${n%.so}=$lib"
done
if [ -n "$V" ]; then
    for t in 16 1; do
        timeout 50 python3 bench/variants_ab.py /tmp/gpu_models/resnet50.fp32.onnx --batch 1 --threads $t \
            --rounds 2 --seconds 0.6 $V --json "$OUT/ab.jsonl"
    done 2>&1 | tee "$OUT/ab.txt"
fi
echo "[trace ${SECONDS}s] done"
