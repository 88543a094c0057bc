#!/usr/bin/env bash
# One GPU call for what the benchmark does not cover: the attention operators through the runtime
# (tests/gpu/test_cuda_ops.py on a libkiln.so built here with CUDA, via gpu_ops_run.sh) and
# compute-sanitizer memcheck on the default kernels (--quick) and on the persistent TMA tiles'
# multi-tile and empty-tile cases. Prepared here: build-carry/test_attention (BUILD_ONLY=1
# bench/attention/gpu_run.sh) and build-carry-ops/bundle.tar.xz (see gpu_ops_run.sh); carry both.
#   OUT=... bash bench/attention/check_gpu.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
O=${OUT:-$ROOT/out/check}
mkdir -p "$O"
SKIP_GPU_RUN=1 OUT=$O/ops timeout 200 bash bench/attention/gpu_ops_run.sh > "$O/ops.txt" 2>&1
tail -8 "$O/ops.txt"
san() { # log name, test_attention arguments
    local n=$1
    shift
    timeout "${SAN_T:-150}" compute-sanitizer --tool memcheck --error-exitcode 9 build-carry/test_attention "$@" \
        > "$O/san_$n.log" 2>&1
    echo "sanitizer $* rc=$?: $(grep -c '^ok' "$O/san_$n.log") ok, $(grep -c '^FAIL' "$O/san_$n.log") FAIL," \
        "$(grep -E 'ERROR SUMMARY' "$O/san_$n.log")"
}
san quick --quick
san empty_tiles --filter "B=16 S=300 L=77"
san multi_tile --filter "B=8 S=300 L=300 N=12"
# Many small files do not all come back from the GPU machine; one archive does.
cd "$O" && tar czf check.tgz ops ops.txt san_*.log && rm -rf ops san_*.log
