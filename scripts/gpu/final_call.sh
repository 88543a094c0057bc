#!/usr/bin/env bash
# The session's last device call (2026-12-06): the Hopper kernels' bias with a compile-time flag
# (kernel tests, memcheck, GPU attention tests, the sweep's prefill/cross rows next to cuDNN),
# BERT and GPT-2 prefill through bench/gpu_models/run.py, then CPU_MODELS on the 16-core CPU at
# 1 and 16 threads next to onnxruntime. Results under $OUT; a short table last.
#
#   CPU_MODELS="resnet50 squeezenet" bash scripts/gpu/final_call.sh   # carry ["build-carry"]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/final_call}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[final ${SECONDS}s] $*"; }
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
BIN=/tmp/kiln-attn/attn
mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 "$BIN/test_attention" --filter bias=1 > "$OUT/test_bias.log" 2>&1
log "test_attention bias=1: rc=$? $(tail -1 "$OUT/test_bias.log")"
grep -E "^FAIL" "$OUT/test_bias.log" | head -5
timeout 60 "$BIN/test_attention" --filter sm90 --filter bias=0 --filter H=64 > "$OUT/test_sm90.log" 2>&1
log "test_attention sm90 bias=0 H=64: rc=$? $(tail -1 "$OUT/test_sm90.log")"
grep -E "^FAIL" "$OUT/test_sm90.log" | head -5
timeout 60 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 "$BIN/test_attention" \
    --filter bias=1 --filter sm90 --filter H=64 > "$OUT/memcheck_bias.log" 2>&1
log "memcheck sm90 bias H=64: rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_bias.log" | tail -1)"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cuda_attention_onnx.py \
    tests/gpu/test_cuda_attention_ops.py > "$OUT/pytest_attention.log" 2>&1
log "GPU attention tests: rc=$? $(tail -1 "$OUT/pytest_attention.log")"
grep -vE ",(decode|spec)," bench/attention/sweep_shapes.csv > /tmp/pre.csv
mkdir -p "$OUT/pre"
timeout 60 "$BIN/bench_sweep" --shapes /tmp/pre.csv --dtype fp16 --json "$OUT/pre/kiln_fp16.jsonl" > "$OUT/pre/kiln.log" 2>&1
timeout 60 python3 bench/attention/sweep_peers.py --shapes /tmp/pre.csv --dtype fp16 --json "$OUT/pre/peers_fp16.jsonl" \
    --budget-s 40 > "$OUT/pre/peers.log" 2>&1
python3 bench/attention/sweep_report.py "$OUT/pre" --shapes /tmp/pre.csv > "$OUT/pre/summary.txt" 2>&1 || true
grep -E "^# " "$OUT/pre/summary.txt"
log "sweep prefill/cross done"
M=/tmp/gpu_models_fp16
python3 bench/gpu_models/export.py --out $M --models bert gpt2 --precisions fp16 --no-check > /tmp/exp.log 2>&1
timeout 150 python3 bench/gpu_models/run.py --models $M --out "$OUT/gpu_models" --only bert gpt2_prefill --batches 8 32 \
    --no-cpu --budget 130 --target-s 0.25 --compile-timeout 60 > "$OUT/gpu_models.log" 2>&1
log "gpu_models rc=$?"
grep -E "^\| (BERT|GPT)|Geometric" "$OUT/gpu_models/results.md" 2>/dev/null | cut -c1-160
if [ -n "${CPU_MODELS:-}" ]; then
    python3 bench/gpu_models/export.py --out /tmp/gm32 --models resnet50 --precisions fp32 --no-check > /tmp/exp32.log 2>&1
    python3 bench/cpu_models/export.py --out /tmp/cpu_models --models squeezenet densenet121 > /tmp/expc.log 2>&1
    left=$((580 - SECONDS))
    [ $left -gt 40 ] && timeout $left python3 bench/cpu_models/run.py --threads 1 16 --batches 1 8 --gpu-models /tmp/gm32 \
        --cpu-models /tmp/cpu_models --torch-python python3 --target-s 0.15 --min-runs 3 --only $CPU_MODELS \
        --out "$OUT/cpu_models" > "$OUT/cpu_models.log" 2>&1
    log "cpu_models rc=$?"
    cat "$OUT"/cpu_models/*.md 2>/dev/null | cut -c1-150 | head -30
fi
tar czf /tmp/final_call.tgz -C "$OUT" . 2>/dev/null && mv /tmp/final_call.tgz "$OUT/"
