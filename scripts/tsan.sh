#!/usr/bin/env bash
# Builds kiln with ThreadSanitizer into build-tsan/ and runs the concurrent-runs stress test on it
# (tests/stress/concurrent_runs.c: 8 threads share one session per model, every output compared
# bitwise with single-threaded runs). OpenBLAS is not instrumented: it keeps one thread of its own.
# A data race stops the program (halt_on_error) and fails the test. The run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TSAN=ON -DKILN_CUDA=OFF >/dev/null
cmake --build build-tsan -j"$(nproc)" --target test_concurrent_runs
export OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
KILN_BUILD_DIR=$PWD/build-tsan python3 -m pytest -q -p no:cacheprovider tests/test_concurrent_runs.py -k c_stress "$@"
echo "ThreadSanitizer: concurrent runs clean"
