#!/usr/bin/env bash
# One GPU-machine call on its 16-core CPU: how a convolution's work is handed to 16 threads.
# bench/variants_ab.py times the staged build under several settings (VARIANTS) next to
# onnxruntime, each in processes of its own, on single Conv nodes (CASES, THREADS threads, 16
# unless set; the 3x3 ones also at 1 thread as the scaling reference) and on whole CNNs (MODELS,
# "model:batch" or "model:batch:threads").
# Prepare with scripts/gpu/stage.sh; carry build-carry. Results under $OUT/sched.
#
#   VARIANTS="base=- ort=ort" bash bench/cpu_models/sched_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/sched
mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[sched ${SECONDS}s] $*"; }
VARIANTS=${VARIANTS:-"base=- ort=ort"}
MODEL_VARIANTS=${MODEL_VARIANTS:-$VARIANTS}
vargs() { for v in $1; do printf -- "--variant %s " "$v"; done; }
CASES=${CASES:-"r50_3x3_56_64_b1 r50_3x3_28_128_b1 r50_3x3_14_256_b1 r50_3x3_7_512_b1 r50_3x3_56_64_b8
    r50_3x3_28_128_b8 r50_3x3_14_256_b8 r50_3x3_7_512_b8 r50_3x3s2_28_256_b8 r50_3x3s2_14_512_b1
    sq_fire_expand3x3_13_64to256_b8 sq_fire_expand3x3_27_32to128_b8 r50_stem7x7s2_b8
    r50_stem7x7s2_b1 sq_stem3x3s2_224_b1 sq_classifier_13_512to1000_b1"}
if [ -n "${ONE_THREAD-r50_3x3_56_64_b1 r50_3x3_14_256_b1 r50_3x3_7_512_b1 r50_stem7x7s2_b1 sq_stem3x3s2_224_b1}" ]; then
    for c in ${ONE_THREAD-r50_3x3_56_64_b1 r50_3x3_14_256_b1 r50_3x3_7_512_b1 r50_stem7x7s2_b1 sq_stem3x3s2_224_b1}; do
        timeout 60 python3 bench/variants_ab.py "$c" --threads 1 --rounds 1 --seconds 0.3 \
            --variant base=- --variant ort=ort --json "$OUT/sched.jsonl"
    done 2>&1 | tee "$OUT/one_thread.txt"
    log "one-thread reference done"
fi
for c in $CASES; do
    timeout 60 python3 bench/variants_ab.py "$c" --threads "${THREADS:-16}" --rounds ${ROUNDS:-2} --seconds 0.3 \
        $(vargs "$VARIANTS") --json "$OUT/sched.jsonl"
done 2>&1 | tee "$OUT/convs.txt"
log "conv cases done"
if [ -n "${MODELS-resnet50.fp32.onnx:1 resnet50.fp32.onnx:8 squeezenet.onnx:1 squeezenet.onnx:8 densenet121.onnx:8}" ]; then
    python3 bench/cpu_models/export.py --out /tmp/cpu_models --models ${EXPORT:-squeezenet densenet121} \
        > "$OUT/export.log" 2>&1
    python3 bench/gpu_models/export.py --out /tmp/gpu_models --models resnet50 --precisions fp32 \
        --no-check --device cpu >> "$OUT/export.log" 2>&1
    log "exported"
    for spec in ${MODELS-resnet50.fp32.onnx:1 resnet50.fp32.onnx:8 squeezenet.onnx:1 squeezenet.onnx:8 densenet121.onnx:8}; do
        IFS=: read -r m b t <<< "$spec"
        path=/tmp/cpu_models/$m; [ -f "$path" ] || path=/tmp/gpu_models/$m
        timeout 120 python3 bench/variants_ab.py "$path" --batch "$b" --threads "${t:-${THREADS:-16}}" \
            --rounds ${ROUNDS:-2} \
            --seconds 0.6 $(vargs "$MODEL_VARIANTS") --json "$OUT/sched.jsonl"
    done 2>&1 | tee "$OUT/models.txt"
    log "models done"
fi
