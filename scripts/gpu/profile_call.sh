#!/usr/bin/env bash
# One device call that profiles where kiln's CPU time goes at 1 and 16 threads (op types and the
# slowest nodes, next to onnxruntime) and times training with --device cuda; results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions fp32 --no-check \
    --models bert gpt2 vit resnet50 > "$OUT/export.log" 2>&1 || tail -5 "$OUT/export.log"
echo "[${SECONDS}s] exported"
for spec in "resnet50 1" "resnet50 8" "gpt2 8" "gpt2 1" "vit 1"; do
    set -- $spec
    timeout 90 python3 bench/op_profile.py --models /tmp/gpu_models --graph $1 --batch $2 --threads 1 16 \
        --runs 4 --top 10 --nodes 30 > "$OUT/prof_$1_b$2.txt" 2>&1
    echo "[${SECONDS}s] $1 b$2 rc=$?"
done
timeout 200 python3 bench/train_bench.py --threads 16 --device cuda --out "$OUT/train_cuda" > "$OUT/train_cuda.txt" 2>&1
echo "[${SECONDS}s] train_cuda rc=$?"; tail -14 "$OUT/train_cuda.txt"
for f in "$OUT"/prof_*.txt; do head -14 "$f" | cut -c1-100; done
