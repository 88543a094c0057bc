#!/usr/bin/env bash
# Builds, on a machine with nvcc (the GPU machine may have none), the attention sweep's binaries
# from a CUDA build of kiln and packs them as build-carry/attn.tar.xz, which travels with
# scripts/gpu/stage.sh's tarball (carry ["build-carry"]) and which bench/attention/sweep.sh unpacks:
#   bench_sweep      the sweep harness (bench_sweep.cu)
#   test_attention   the kernel-level attention tests (tests/gpu/test_attention.cu)
#   test_attention_fp8, bench_fp8   the FP8 attention's kernel tests and benchmark (fp8.sh)
# Both link the build's attention and provider objects statically, as gpu_run.sh does (the
# library's C entry points are hidden), plus cuBLAS at run time (scripts/gpu/env.sh finds it).
#
#   KILN_BUILD_DIR=build bash bench/attention/build_sweep.sh     # the CUDA build stage.sh made
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KILN_BUILD_DIR:-build}
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
OBJ=$BUILD/CMakeFiles/kiln_cuda.dir/src/cuda
[ -f "$OBJ/cuda_provider.c.o" ] && [ -f "$OBJ/attention/gpu/attention_decode.cu.o" ] \
    || { echo "build_sweep: no KILN_CUDA=ON objects under $OBJ (build kiln_cuda first)"; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ARCH="-gencode=arch=compute_90a,code=sm_90a"
FLAGS="-std=c++17 -O3 $ARCH -Iinclude -Isrc"
LIBOBJ=("$OBJ/cuda_provider.c.o" "$OBJ"/attention/gpu/*.cu.o)
"$NVCC" $FLAGS -c bench/attention/bench_sweep.cu -o "$WORK/bench_sweep.o" &
p1=$!
"$NVCC" $FLAGS -c tests/gpu/test_attention.cu -o "$WORK/test_attention.o" &
p2=$!
ok=0
wait $p1 || ok=1
wait $p2 || ok=1
# the FP8 attention's kernel test and benchmark (bench/attention/fp8.sh runs them)
"$NVCC" $FLAGS -c tests/gpu/test_attention_fp8.cu -o "$WORK/test_attention_fp8.o" &
p3=$!
"$NVCC" $FLAGS -c bench/attention/bench_fp8.cu -o "$WORK/bench_fp8.o" &
p4=$!
wait $p3 || ok=1
wait $p4 || ok=1
[ $ok = 0 ] || { echo "build_sweep: compile failed"; exit 1; }
mkdir -p "$WORK/attn"
"$NVCC" $ARCH -o "$WORK/attn/bench_sweep" "$WORK/bench_sweep.o" "${LIBOBJ[@]}" -lcublas
"$NVCC" $ARCH -o "$WORK/attn/test_attention" "$WORK/test_attention.o" "${LIBOBJ[@]}" -lcublas
"$NVCC" $ARCH -o "$WORK/attn/test_attention_fp8" "$WORK/test_attention_fp8.o" "${LIBOBJ[@]}" -lcublas
"$NVCC" $ARCH -o "$WORK/attn/bench_fp8" "$WORK/bench_fp8.o" "${LIBOBJ[@]}" -lcublas
strip "$WORK/attn/bench_sweep" "$WORK/attn/test_attention" "$WORK/attn/test_attention_fp8" "$WORK/attn/bench_fp8" \
    2>/dev/null || true
mkdir -p build-carry
tar -C "$WORK" -cf - attn | xz -9e -T2 > build-carry/attn.tar.xz
ls -la build-carry/attn.tar.xz
