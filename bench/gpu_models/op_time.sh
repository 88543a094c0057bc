#!/usr/bin/env bash
# On the GPU machine: exports BERT-base and GPT-2 (fp16) and prints where kiln's GPU time goes
# (bench/gpu_models/op_time.py) on the rows of bench/gpu_models/run.py that lose to
# torch.compile. ROWS overrides the list ("graph:batch:seq ...").
#
#   bash bench/gpu_models/op_time.sh       # carry ["build-carry"]
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
M=${MODELS_DIR:-/tmp/gpu_models_fp16}
ROWS=${ROWS:-"bert:32:512 gpt2_prefill:32:512 bert:8:512"}
SECONDS=0
[ -f "$M/bert.fp16.onnx" ] || python3 bench/gpu_models/export.py --out "$M" --models bert gpt2 --precisions fp16 \
    --no-check > /tmp/op_time_export.log 2>&1 || tail -5 /tmp/op_time_export.log
echo "[op_time ${SECONDS}s] exported"
for r in $ROWS; do
    IFS=: read -r g b s <<< "$r"
    timeout 120 python3 bench/gpu_models/op_time.py "$M/$g.fp16.onnx" --dim batch="$b" --dim seq="$s" --top 14 2>&1 \
        | grep -v "^kiln: " | tail -34
    echo "[op_time ${SECONDS}s] $r rc=$?"
done
