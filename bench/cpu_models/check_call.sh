#!/usr/bin/env bash
# One GPU-machine call after a CPU kernel change, on its 16-core Sapphire Rapids:
#   1. the test files or cases in ISA_TEST_FILES (pytest -k ISA_K) on the AVX-512 tier and on the
#      AVX2 tier (KILN_NO_AVX512=1), scripts/gpu/cpu_isa_tests.sh;
#   2. bench/cpu_models/status_call.sh over the models in ONLY at THREADS_LIST threads (speed,
#      peak RSS, time to first result against onnxruntime);
#   3. per-node profiles, kiln next to onnxruntime (bench/node_profile.py), of the model:batch:threads
#      rows in PROFILES (models from step 2's folders).
# Prepare with KILN_STAGE_CPU_ONLY=1 KILN_BUILD_DIR=build-cpu bash scripts/gpu/stage.sh; carry
# build-carry/kiln.tar.xz and build-carry/wheels. Results under $OUT/isa, $OUT/status, $OUT/profiles.
#
#   ISA_TEST_FILES="tests/test_squeeze_paths.py" ONLY="squeezenet resnet50" \
#       PROFILES="squeezenet.onnx:1:4 bert_dyn.onnx:8:1" bash bench/cpu_models/check_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-out}
SECONDS=0
if [ -n "${ISA_TEST_FILES:-}" ]; then
    ISA_MODES=${ISA_MODES:-"avx512 avx2"} ISA_TIMEOUT=${ISA_TIMEOUT:-150} ISA_TEST_FILES="$ISA_TEST_FILES" \
        bash scripts/gpu/cpu_isa_tests.sh ${ISA_K:+-k "$ISA_K"}
    echo "[check ${SECONDS}s] tests done"
fi
if [ -n "${ONLY:-}" ]; then
    THREADS_LIST=${THREADS_LIST:-"1 16"} RUN_S=${RUN_S:-300} ONLY="$ONLY" bash bench/cpu_models/status_call.sh
fi
source scripts/gpu/env.sh
mkdir -p "$OUT/profiles"
for spec in ${PROFILES:-}; do
    IFS=: read -r m b t <<< "$spec"
    path=""
    for d in /tmp/cpu_models /tmp/gpu_models /tmp/int8_models; do [ -f "$d/$m" ] && path=$d/$m; done
    [ -z "$path" ] && { echo "$m: not exported"; continue; }
    timeout 90 python3 bench/node_profile.py "$path" --batch "$b" --threads "$t" --runs 10 \
        > "$OUT/profiles/${m%.onnx}_b${b}_t${t}.txt" 2>&1
    echo "== $m b$b t$t"; head -2 "$OUT/profiles/${m%.onnx}_b${b}_t${t}.txt" | cut -c1-220
done
echo "[check ${SECONDS}s] done"
