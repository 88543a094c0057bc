#!/usr/bin/env bash
# Builds the loader fuzz target with clang's libFuzzer (+ASan/UBSan) and fuzzes it for N seconds
# (default 600) from a seed corpus of small real models. A crash leaves crash-* files and fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-600}
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKILN_FUZZ=ON -DKILN_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_loader
corpus=build-fuzz/corpus
mkdir -p "$corpus"
cp examples/models/tiny_mlp.onnx "$corpus/" 2>/dev/null || true
for d in /usr/share/libonnx-testdata/data/node/test_{add,conv_with_strides_padding,gather_0,if,loop11,lstm_defaults,sequence_insert_at_back,reshape_reordered_all_dims,cast_FLOAT_to_STRING,constant}; do
  [ -f "$d/model.onnx" ] && cp "$d/model.onnx" "$corpus/$(basename "$d").onnx"
  [ -f "$d/test_data_set_0/input_0.pb" ] && cp "$d/test_data_set_0/input_0.pb" "$corpus/$(basename "$d")_in0.pb"
done
mkdir -p build-fuzz/artifacts
ASAN_OPTIONS=detect_leaks=1 ./build-fuzz/fuzz_loader "$corpus" -max_total_time="$SECS" -max_len=65536 \
  -rss_limit_mb=2048 -timeout=10 -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1 2>&1 | tail -n 15
