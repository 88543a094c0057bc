#!/usr/bin/env bash
# Builds the two libFuzzer targets (+ASan/UBSan) and fuzzes them for N seconds in all (default
# 600), split evenly: fuzz_loader (model bytes) from a seed corpus of small real models, then
# fuzz_graph (bytes decoded into a valid graph and its inputs, see docs/fuzzing.md) from a few
# fixed random recipes. A crash, leak, timeout or sanitizer report leaves a crash-*/leak-*/timeout-*
# file in build-fuzz/artifacts/ and fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-600}
LOADER_SECS=$(( (SECS + 1) / 2 ))
GRAPH_SECS=$(( SECS - LOADER_SECS ))
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKILN_FUZZ=ON -DKILN_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_loader fuzz_graph
corpus=build-fuzz/corpus
mkdir -p "$corpus"
cp examples/models/tiny_mlp.onnx "$corpus/" 2>/dev/null || true
for d in /usr/share/libonnx-testdata/data/node/test_{add,conv_with_strides_padding,gather_0,if,loop11,lstm_defaults,sequence_insert_at_back,reshape_reordered_all_dims,cast_FLOAT_to_STRING,constant}; do
  [ -f "$d/model.onnx" ] && cp "$d/model.onnx" "$corpus/$(basename "$d").onnx"
  [ -f "$d/test_data_set_0/input_0.pb" ] && cp "$d/test_data_set_0/input_0.pb" "$corpus/$(basename "$d")_in0.pb"
done
mkdir -p build-fuzz/artifacts
ASAN_OPTIONS=detect_leaks=1 ./build-fuzz/fuzz_loader "$corpus" -max_total_time="$LOADER_SECS" -max_len=65536 \
  -rss_limit_mb=2048 -timeout=10 -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1 2>&1 | tail -n 15

# fuzz_graph: any bytes are a recipe, so the seeds are fixed pseudo-random byte strings (the same on
# every machine) plus the saved reproducers of earlier findings, which must stay fixed.
graph_corpus=build-fuzz/graph_corpus
mkdir -p "$graph_corpus"
python3 -c '
import random, sys
rng = random.Random(9)
for i in range(32):
    open(f"{sys.argv[1]}/seed{i:02d}", "wb").write(bytes(rng.randrange(256) for _ in range(24 * (i + 1))))
' "$graph_corpus"
cp tests/fuzz/findings/graph-* "$graph_corpus/" 2>/dev/null || true
ASAN_OPTIONS=detect_leaks=1 ./build-fuzz/fuzz_graph "$graph_corpus" -max_total_time="$GRAPH_SECS" -max_len=4096 \
  -rss_limit_mb=2048 -timeout=10 -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1 2>&1 | tail -n 15
