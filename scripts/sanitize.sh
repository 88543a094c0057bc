#!/usr/bin/env bash
# Builds kiln with ASan+UBSan into build-asan/ and runs the test suite against it (Python loads the
# sanitized library through KILN_LIBRARY; the ASan runtime is preloaded into the interpreter).
# Leak checking covers the C code only: the interpreter's own allocations are not kiln's.
# KILN_POISON_OUTPUTS=1: node outputs off the arena start as 0xff bytes, not as whatever malloc
# gave, so a kernel that leaves part of its output unwritten fails its comparison here.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON -DKILN_CUDA=OFF >/dev/null
cmake --build build-asan -j"$(nproc)"
ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
export KILN_LIBRARY=$PWD/build-asan/libkiln.so KILN_BUILD_DIR=$PWD/build-asan
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export KILN_POISON_OUTPUTS=1
LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB" python3 -m pytest -q -p no:cacheprovider -x tests "$@"
# the C example and the CLI under LeakSanitizer: every allocation released
ASAN_OPTIONS=detect_leaks=1 ./build-asan/example_basic examples/models/tiny_mlp.onnx >/dev/null
ASAN_OPTIONS=detect_leaks=1 ./build-asan/kiln run ../shared/models/bert_tiny.onnx \
  --inputs ../shared/models/bert_tiny.ref.npz --output-dir build-asan/out --quiet
echo "sanitized suite and leak checks passed"
