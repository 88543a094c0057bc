#!/usr/bin/env bash
# One device call for the Hopper flash kernels' additive bias (2026-12-06): the kernel tests of
# every bias case (each sm90 tile forced, decode, unfused, default dispatch) and of every sm90
# tile without one, compute-sanitizer memcheck over the sm90 bias cases, the GPU attention and
# fusion tests, the sweep's prefill and cross rows next to cuDNN/FA2 (no bias there: a check
# that the bias branch costs the other shapes nothing), and where BERT and GPT-2 spend their GPU
# time (bench/gpu_models/op_time.sh), then bench/gpu_models/run.py's BERT and GPT-2 prefill rows.
#
#   bash scripts/gpu/bias_call.sh     # carry ["build-carry"], after scripts/gpu/stage.sh here
#   KERNELS_ONLY=1 bash ...            # the kernel tests, memcheck and sweep rows only (no pytest,
#                                      # op_time or model rows)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/bias_call}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[bias ${SECONDS}s] $*"; }
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
BIN=/tmp/kiln-attn/attn
mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz
nvidia-smi --query-gpu=name --format=csv,noheader
timeout ${TEST_S:-150} "$BIN/test_attention" --filter bias=1 > "$OUT/test_bias.log" 2>&1
log "test_attention bias=1: rc=$? $(tail -1 "$OUT/test_bias.log")"
grep -E "^FAIL" "$OUT/test_bias.log" | head -5
timeout ${TEST_S:-150} "$BIN/test_attention" --filter sm90 --filter bias=0 > "$OUT/test_sm90.log" 2>&1
log "test_attention sm90 bias=0: rc=$? $(tail -1 "$OUT/test_sm90.log")"
grep -E "^FAIL" "$OUT/test_sm90.log" | head -5
timeout ${MEMCHECK_S:-120} compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 "$BIN/test_attention" \
    --filter bias=1 --filter sm90 --filter H=64 > "$OUT/memcheck_bias.log" 2>&1
log "memcheck sm90 bias H=64: rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_bias.log" | tail -1)"
if [ -z "${KERNELS_ONLY:-}" ]; then
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cuda_attention_onnx.py \
    tests/gpu/test_cuda_attention_ops.py > "$OUT/pytest_attention.log" 2>&1
log "GPU attention tests: rc=$? $(tail -1 "$OUT/pytest_attention.log")"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cuda_ops.py -k "bias or mha or attention" \
    > "$OUT/pytest_ops.log" 2>&1
log "GPU ops tests (bias, mha, attention): rc=$? $(tail -1 "$OUT/pytest_ops.log")"
fi
grep -vE ",(decode|spec)," bench/attention/sweep_shapes.csv > /tmp/pre.csv
mkdir -p "$OUT/pre"
timeout 60 "$BIN/bench_sweep" --shapes /tmp/pre.csv --dtype fp16 --json "$OUT/pre/kiln_fp16.jsonl" > "$OUT/pre/kiln.log" 2>&1
timeout 70 python3 bench/attention/sweep_peers.py --shapes /tmp/pre.csv --dtype fp16 --json "$OUT/pre/peers_fp16.jsonl" \
    --budget-s 45 > "$OUT/pre/peers.log" 2>&1
python3 bench/attention/sweep_report.py "$OUT/pre" --shapes /tmp/pre.csv > "$OUT/pre/summary.txt" 2>&1 || true
grep -E "^# |prefill|cross" "$OUT/pre/summary.txt" | cut -c1-130
log "sweep prefill/cross done"
if [ -z "${KERNELS_ONLY:-}" ]; then
timeout 100 bash bench/gpu_models/op_time.sh > "$OUT/op_time.txt" 2>&1
grep -E "untraced|^Attention|traced total" "$OUT/op_time.txt"
log "op_time done"
left=$((560 - SECONDS))
[ $left -gt 60 ] && timeout $left python3 bench/gpu_models/run.py --models /tmp/gpu_models_fp16 --out "$OUT/gpu_models" \
    --only bert gpt2_prefill --no-cpu --budget $((left - 20)) --target-s 0.3 > "$OUT/gpu_models.log" 2>&1
log "gpu_models rc=$?"
tail -12 "$OUT/gpu_models/results.md" 2>/dev/null
fi
tar czf "$OUT/bias_call.tgz" -C "$OUT" --exclude bias_call.tgz . 2>/dev/null
