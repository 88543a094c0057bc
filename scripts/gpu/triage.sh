#!/usr/bin/env bash
# Short GPU triage: a C backtrace of one reproducer under cuda-gdb, then each tests/gpu file on its
# own (a crash in one does not hide the others), with a one-line summary per file.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/triage}; mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
if [ -n "${REPRO:-}" ]; then
    timeout 40 cuda-gdb -q -batch -ex run -ex bt --args python3 -c "$REPRO" > "$OUT/gdb.txt" 2>&1
    grep -E "^#|signal|SIG" "$OUT/gdb.txt" | head -25
fi
for f in ${FILES:-tests/gpu/test_cuda_*.py tests/gpu/test_gpu_models.py}; do
    timeout ${PER_FILE:-25} python3 -m pytest -q -p no:cacheprovider -x "$f" > "$OUT/$(basename "$f" .py).log" 2>&1
    rc=$?
    echo "$f rc=$rc: $(grep -E 'passed|failed|error' "$OUT/$(basename "$f" .py).log" | tail -1)"
    [ $rc != 0 ] && grep -E "^(FAILED|ERROR)|Error|assert|Fatal|line [0-9]+ in" "$OUT/$(basename "$f" .py).log" | head -6
done
