#!/usr/bin/env bash
# Prepares, on this (GPU-less) machine, what the GPU machine's call needs: a CUDA build of kiln
# (libkiln.so, libkiln_cuda.so, the kiln command) and every non-system library libkiln links
# (OpenBLAS and its Fortran runtime, zlib, the image codecs: the GPU image has none of them),
# packed as build-carry/kiln.tar.xz (the device call's carry limit is 64 MiB).
#
#   bash scripts/gpu/stage.sh          # then run with carry ["build-carry"]
#   KILN_STAGE_CPU_ONLY=1 KILN_BUILD_DIR=build-cpu bash scripts/gpu/stage.sh
#                                      # a call that times only the 16-core CPU: no CUDA compile
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KILN_BUILD_DIR:-build}
CPU_ONLY=${KILN_STAGE_CPU_ONLY:-0}
if [ "$CPU_ONLY" = 1 ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=OFF >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target kiln kiln_cli
    mkdir -p build-carry
else
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target kiln kiln_cuda kiln_cli
    # the attention sweep's binaries (bench_sweep, test_attention) as build-carry/attn.tar.xz
    KILN_BUILD_DIR="$BUILD" bash bench/attention/build_sweep.sh
fi
# the cost of one parallel-for (bench/fork_cost.c), run there against the carried libkiln
cc -O2 -Isrc bench/fork_cost.c -L"$BUILD" -lkiln -lpthread -o build-carry/fork_cost
STAGE=$(mktemp -d)
mkdir -p "$STAGE/kiln/lib"
cp "$BUILD/libkiln.so" "$BUILD/kiln" "$STAGE/kiln/"
[ "$CPU_ONLY" = 1 ] || cp "$BUILD/libkiln_cuda.so" "$STAGE/kiln/"
# libkiln's own dependencies that are not in the base image (CUDA's come from the GPU machine)
ldd "$BUILD/libkiln.so" "$BUILD/kiln" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|ld-linux*|libgcc_s*|libstdc++*) ;;
        libkiln*) ;;
        *) cp -L "$lib" "$STAGE/kiln/lib/" ;;
    esac
done
# the shared models (../shared does not travel to the GPU machine)
SHARED=${KILN_SHARED:-../shared}
if [ -d "$SHARED/models" ]; then
    mkdir -p "$STAGE/kiln/models"
    cp "$SHARED"/models/*.onnx "$SHARED"/models/*.npz "$STAGE/kiln/models/"
fi
mkdir -p build-carry
tar -C "$STAGE" -cJf build-carry/kiln.tar.xz kiln
rm -rf "$STAGE"
ls -la build-carry/kiln.tar.xz
