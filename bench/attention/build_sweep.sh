#!/usr/bin/env bash
# Builds, on a machine with nvcc (the GPU machine may have none), the attention sweep's binaries
# against a CUDA build of kiln, into build-carry/attn/ so they travel with scripts/gpu/stage.sh's
# tarball (carry ["build-carry"]):
#   bench_sweep      the sweep harness (bench_sweep.cu)
#   test_attention   the kernel-level attention tests (tests/gpu/test_attention.cu)
# Both link libkiln_cuda.so (and the shared CUDA runtime, as the library does); at run time
# scripts/gpu/env.sh puts the staged library on the loader path.
#
#   KILN_BUILD_DIR=build bash bench/attention/build_sweep.sh     # stage.sh's build directory
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KILN_BUILD_DIR:-build}
DEST=${SWEEP_DEST:-build-carry/attn}
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
[ -f "$BUILD/libkiln_cuda.so" ] || { echo "build_sweep: $BUILD/libkiln_cuda.so missing (a KILN_CUDA=ON build)"; exit 1; }
mkdir -p "$DEST"
FLAGS="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc -cudart shared"
LINK="-L$BUILD -lkiln_cuda -lcublas"
"$NVCC" $FLAGS bench/attention/bench_sweep.cu -o "$DEST/bench_sweep" $LINK &
p1=$!
"$NVCC" $FLAGS tests/gpu/test_attention.cu -o "$DEST/test_attention" $LINK &
p2=$!
ok=0
wait $p1 || ok=1
wait $p2 || ok=1
[ $ok = 0 ] || { echo "build_sweep: compile failed"; exit 1; }
ls -la "$DEST"
