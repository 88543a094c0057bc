#!/usr/bin/env bash
# One GPU call: where kiln's time goes on chosen model rows (scripts/gpu/diag.py), then a chosen set
# of GPU test files. Prepare with scripts/gpu/stage.sh; carry build-carry.
#   OUT=... ROWS="resnet50:1 bert:8:512" MODELS="resnet50 bert" TESTS="tests/gpu/..." bash scripts/gpu/diag.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/diag}; mkdir -p "$OUT"
SECONDS=0
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
if [ -n "${ROWS:-}" ]; then
    timeout ${EXPORT_TIMEOUT:-150} python3 bench/gpu_models/export.py --out /tmp/gpu_models --models ${MODELS:-resnet50 bert} \
        --precisions fp16 --no-check > "$OUT/export.log" 2>&1 || tail -5 "$OUT/export.log"
    echo "[diag ${SECONDS}s] exported"
    timeout ${DIAG_TIMEOUT:-200} python3 scripts/gpu/diag.py --models /tmp/gpu_models --rows $ROWS 2>&1 | grep -v Warning | tee "$OUT/diag.log"
fi
echo "[diag ${SECONDS}s] tests"
if [ -n "${TESTS:-}" ]; then
    for f in $TESTS; do
        timeout ${PER_FILE:-120} python3 -m pytest -q -p no:cacheprovider -x "$f" > "$OUT/$(basename "$f" .py).log" 2>&1
        rc=$?
        echo "$f rc=$rc: $(grep -E 'passed|failed|error' "$OUT/$(basename "$f" .py).log" | tail -1)"
        [ $rc != 0 ] && grep -E "^(FAILED|ERROR)|Error|assert" "$OUT/$(basename "$f" .py).log" | head -6
    done
fi
echo "[diag ${SECONDS}s] done"
