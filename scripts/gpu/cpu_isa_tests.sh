#!/usr/bin/env bash
# On the GPU machine's Sapphire Rapids CPU (AVX-512, VNNI, AMX): the test files whose kernels
# pick an instruction set at run time, so that the AVX-512 paths, which a CI machine without
# AVX-512 never reaches, are still checked after a change (ISA_MODES="avx512 avx2" adds a pass
# with KILN_NO_AVX512=1: the AVX2 paths on that CPU). Test-only packages missing from that
# image (pytest, onnx) come from build-carry/wheels (pip download on this machine), installed
# into a folder of their own. Prepare with scripts/gpu/stage.sh; carry build-carry.
#
#   bash scripts/gpu/cpu_isa_tests.sh [pytest args...]     # results under $OUT/isa
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/isa
mkdir -p "$OUT"
source scripts/gpu/env.sh
export KILN_BUILD_DIR="$KILN_STAGE/kiln"
if ! python3 -c "import pytest, onnx" 2>/dev/null; then
    python3 -m pip install -q --no-index --find-links build-carry/wheels --target /tmp/kiln-testlib \
        pytest onnx > "$OUT/pip.log" 2>&1
    export PYTHONPATH="$PYTHONPATH:/tmp/kiln-testlib"
fi
FILES=${ISA_TEST_FILES:-"tests/test_conv_fast_paths.py tests/test_squeeze_paths.py tests/test_conv_partition.py
    tests/test_partition.py tests/test_conv_depthwise.py tests/test_int8_kernels.py tests/test_quant_contrib.py
    tests/test_weights_once.py tests/unit/test_conv.py tests/unit/test_matmul.py tests/unit/test_pool.py
    tests/unit/test_rnn.py tests/unit/test_quant.py tests/unit/test_tensor.py tests/test_fusions.py"}
grep -o -m1 'avx512[a-z_]*\|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ' > "$OUT/cpu.txt"
for mode in ${ISA_MODES:-avx512}; do
    env_set=""; [ "$mode" = avx2 ] && env_set="KILN_NO_AVX512=1"
    env $env_set timeout ${ISA_TIMEOUT:-400} python3 -m pytest -q -p no:cacheprovider --maxfail=30 $FILES "$@" \
        > "$OUT/pytest_$mode.txt" 2>&1
    echo "$mode: $(tail -1 "$OUT/pytest_$mode.txt")"
    grep -E "^FAILED|^ERROR" "$OUT/pytest_$mode.txt" | head -20
done
