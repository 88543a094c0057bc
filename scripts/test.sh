#!/usr/bin/env bash
# Runs every test: installs what is missing, builds (the CUDA sources too when nvcc is present),
# runs the example, the pytest suite (kernels vs onnxruntime, shared models, errors, API, CLI, ONNX
# node conformance), then the suite again on an ASan+UBSan build, the concurrent-runs stress test on
# a ThreadSanitizer build, then a short fuzz of the loader.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
echo "== example"
./build/example_basic examples/models/tiny_mlp.onnx
echo "== test suite (release build)"
python3 -m pytest -q -p no:cacheprovider tests
echo "== test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
bash scripts/sanitize.sh
echo "== concurrent runs under ThreadSanitizer"
bash scripts/tsan.sh
echo "== fuzz smoke (loader)"
bash tests/fuzz/run_fuzz.sh 60
