#!/usr/bin/env bash
# One GPU-machine call on its 16-core Sapphire Rapids (AVX-512, VNNI, AMX) for the 8-bit products'
# AMX-INT8 tiles (src/cpu/kernels/qgemm_amx.c, opt-in with KILN_AMX_INT8=1 until this call has
# timed them) and the float products' column chunks (gemm_avx512.c, gemm_bp_direct):
#   1. the 8-bit test files (bit-exact against numpy and onnxruntime) with the tiles and without,
#      and the float kernels' files in FLOAT_TESTS;
#   2. int8 BERT (dynamic quantisation, sequence 128) and MobileNetV3 (QDQ, QOperator): amx
#      (KILN_AMX_INT8=1), vnni (the default) and onnxruntime, alternating (bench/variants_ab.py);
#   3. single float32 MatMuls with BERT-base's shapes and BERT-base itself at one thread: column
#      chunks (default) against none (KILN_BP_CHUNK_KB=0) and onnxruntime.
# Prepare with KILN_STAGE_CPU_ONLY=1 KILN_BUILD_DIR=build-cpu bash scripts/gpu/stage.sh; carry
# build-carry/kiln.tar.xz and build-carry/wheels. Results under $OUT/amx.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT_OUT=${OUT:-out}
OUT=$ROOT_OUT/amx
mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[amx ${SECONDS}s] $*"; }
lscpu > "$OUT/lscpu.txt" 2>&1; grep -m1 "Model name" "$OUT/lscpu.txt"
grep -o -m1 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
if [ "${TESTS:-1}" = 1 ]; then
    INT8="tests/test_int8_kernels.py tests/test_quant_contrib.py tests/unit/test_quant.py"
    KILN_AMX_INT8=1 OUT=$ROOT_OUT ISA_MODES=avx512 ISA_TIMEOUT=150 ISA_TEST_FILES="$INT8 ${FLOAT_TESTS:-}" \
        bash scripts/gpu/cpu_isa_tests.sh
    cp "$ROOT_OUT/isa/pytest_avx512.txt" "$OUT/tests_amx.txt"
    OUT=$ROOT_OUT ISA_MODES=avx512 ISA_TIMEOUT=100 ISA_TEST_FILES="$INT8" \
        bash scripts/gpu/cpu_isa_tests.sh
    cp "$ROOT_OUT/isa/pytest_avx512.txt" "$OUT/tests_no_amx.txt"
    log "tests done"
fi
python3 -c "import sys; sys.path.insert(0, 'bench'); import int8_bench; int8_bench.build_models('/tmp/int8_models', 'python3')" \
    > "$OUT/int8_models.log" 2>&1
log "int8 models built"
ab() { timeout ${AB_S:-120} python3 bench/variants_ab.py "$@" 2>&1 | grep -E " (amx|vnni|ort|chunks|whole) " | tee -a "$OUT/ab.txt"; }
for spec in ${INT8_ROWS:-"bert_dyn:8:1 bert_dyn:1:1 bert_dyn:8:16 mnv3_qdq:8:1 mnv3_qop:8:1"}; do
    IFS=: read -r m b t <<< "$spec"
    ab /tmp/int8_models/$m.onnx --batch "$b" --threads "$t" --seq 128 --rounds 3 --seconds 1 \
        --variant amx=-,KILN_AMX_INT8=1 --variant vnni=- --variant ort=ort --json "$OUT/ab.jsonl"
done
log "int8 done"
python3 bench/matmul_models.py --out /tmp/mm > /dev/null
for m in /tmp/mm/*.onnx; do
    ab "$m" --threads 1 --rounds 3 --seconds 1 --variant chunks=- --variant whole=-,KILN_BP_CHUNK_KB=0 \
        --variant ort=ort --json "$OUT/ab.jsonl"
done
log "float done"
