#!/usr/bin/env bash
# compute-sanitizer memcheck over every GPU test (the differential tests of each CUDA kernel
# against the CPU provider, device I/O, graphs, models), cut into SHARDS processes that run side by
# side (the sanitizer's cost is mostly on the host, which has 16 cores). Logs under $OUT; prints
# each shard's error summary and a total.
#
#   OUT=... SHARDS=6 bash scripts/gpu/memcheck_all.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
OUT=${OUT:-/tmp/memcheck}; SHARDS=${SHARDS:-6}
mkdir -p "$OUT"
python3 -m pytest -q -p no:cacheprovider --collect-only ${MC_TESTS:-tests/gpu} 2>/dev/null | grep '::' > "$OUT/ids.txt"
echo "memcheck: $(wc -l < "$OUT/ids.txt") tests in $SHARDS shards"
for k in $(seq 0 $((SHARDS - 1))); do
    awk -v k=$k -v n=$SHARDS 'NR % n == k' "$OUT/ids.txt" > "$OUT/shard$k.txt"
    ( timeout ${MC_TIMEOUT:-500} compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        --target-processes all python3 -m pytest -q -p no:cacheprovider $(cat "$OUT/shard$k.txt") \
        > "$OUT/memcheck$k.log" 2>&1; echo "shard $k rc=$?" >> "$OUT/memcheck$k.log" ) &
done
wait
for k in $(seq 0 $((SHARDS - 1))); do
    echo "shard $k: $(grep -c . "$OUT/shard$k.txt") tests | $(grep -E 'passed|failed' "$OUT/memcheck$k.log" | tail -1) | $(grep 'ERROR SUMMARY' "$OUT/memcheck$k.log" | tail -1) | $(tail -1 "$OUT/memcheck$k.log")"
done
grep -h -E "Invalid|out of bounds|Uninitialized" "$OUT"/memcheck*.log | sort | uniq -c | head -20
