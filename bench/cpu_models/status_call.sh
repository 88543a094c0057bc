#!/usr/bin/env bash
# One GPU-machine call for the broad CPU benchmark on its 16-core Sapphire Rapids: every model
# family of bench/cpu_models/run.py (../shared/models, the exported CNNs, LSTM and audio front end,
# the int8 models, BERT-base, GPT-2 prefill, ViT-B/16 and ResNet-50 in float32) at THREADS_LIST
# threads, batch 1 and 8, kiln and onnxruntime each in their own processes. run.py writes its table
# after every row, so a call cut short keeps the rows it finished.
# Prepare with KILN_STAGE_CPU_ONLY=1 KILN_BUILD_DIR=build-cpu bash scripts/gpu/stage.sh; carry
# build-carry/kiln.tar.xz. Results under $OUT/status.
#
#   THREADS_LIST="1 16" bash bench/cpu_models/status_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/status
mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[status ${SECONDS}s] $*"; }
lscpu > "$OUT/lscpu.txt" 2>&1; grep -m1 "Model name" "$OUT/lscpu.txt"
python3 bench/cpu_models/export.py --out /tmp/cpu_models > "$OUT/export.log" 2>&1
python3 bench/gpu_models/export.py --out /tmp/gpu_models --models ${LARGE:-bert gpt2 vit resnet50} \
    --precisions fp32 --no-check --device cpu >> "$OUT/export.log" 2>&1
log "exported"
timeout ${RUN_S:-480} python3 bench/cpu_models/run.py --threads ${THREADS_LIST:-1 16} --batches 1 8 \
    --gpu-models /tmp/gpu_models --cpu-models /tmp/cpu_models --int8-models /tmp/int8_models \
    --torch-python python3 --target-s ${TARGET_S:-0.1} --min-runs 3 --row-timeout 60 \
    ${ONLY:+--only $ONLY} --out "$OUT/cpu_models" > "$OUT/run.log" 2>&1
log "run.py rc=$?"
grep -E "threads: geometric" "$OUT/cpu_models.md"
