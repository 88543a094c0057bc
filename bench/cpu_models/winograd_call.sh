#!/usr/bin/env bash
# One GPU-machine call on its 16-core Sapphire Rapids for the Winograd convolutions
# (src/cpu/kernels/conv_winograd.c):
#   1. the Winograd and depthwise test files on the AVX-512 tier and on the AVX2 tier
#      (KILN_NO_AVX512=1), the partition report at 16 threads, and the tiers' same bits;
#   2. single 3x3 convolutions (bench/conv_bench.py cases) at 16 threads and at 1, and whole CNNs,
#      each as wino (the default), direct (KILN_NO_WINOGRAD=1) and onnxruntime in processes of
#      their own, alternating (bench/variants_ab.py).
# Prepare with KILN_STAGE_CPU_ONLY=1 KILN_BUILD_DIR=build-cpu bash scripts/gpu/stage.sh; carry
# build-carry/kiln.tar.xz and build-carry/wheels. Results under $OUT/winograd.
#
#   bash bench/cpu_models/winograd_call.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}/winograd
mkdir -p "$OUT"
source scripts/gpu/env.sh
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[winograd ${SECONDS}s] $*"; }
lscpu > "$OUT/lscpu.txt" 2>&1; grep -m1 "Model name" "$OUT/lscpu.txt"
if [ "${TESTS:-1}" = 1 ]; then
    OUT=$OUT ISA_MODES=${ISA_MODES:-"avx512 avx2"} ISA_TIMEOUT=${ISA_TIMEOUT:-150} \
        ISA_TEST_FILES=${WG_TEST_FILES:-"tests/test_conv_winograd.py tests/test_conv_depthwise.py
        tests/test_conv_partition.py::test_partition_report tests/test_conv_fast_paths.py::test_tiers_same_bits"} \
        bash scripts/gpu/cpu_isa_tests.sh
    log "tests done"
fi
V="--variant wino=- --variant direct=-,KILN_NO_WINOGRAD=1 --variant ort=ort"
CASES=${CASES:-"r50_3x3_56_64_b1 r50_3x3_28_128_b1 r50_3x3_14_256_b1 r50_3x3_56_64_b8 r50_3x3_28_128_b8
    r50_3x3_14_256_b8 wg_3x3_20_96to160_b1 wg_3x3_112_24to64_b1 wg_3x3_16_256to128_b1 wg_3x3_14_128_b8
    dn_3x3_28_128to32_b8 sq_fire_expand3x3_27_32to128_b8"}
for c in $CASES; do
    timeout 60 python3 bench/variants_ab.py "$c" --threads 16 --rounds ${ROUNDS:-2} --seconds 0.3 $V --json "$OUT/ab.jsonl"
done 2>&1 | grep -v "^ *$" | tee "$OUT/convs16.txt"
log "16-thread convs done"
for c in ${ONE-r50_3x3_56_64_b1 r50_3x3_28_128_b1 r50_3x3_14_256_b1 wg_3x3_20_96to160_b1 wg_3x3_112_24to64_b1}; do
    timeout 60 python3 bench/variants_ab.py "$c" --threads 1 --rounds 1 --seconds 0.3 $V --json "$OUT/ab.jsonl"
done 2>&1 | grep -v "^ *$" | tee "$OUT/convs1.txt"
log "1-thread convs done"
MODELS=${MODELS-"resnet50.fp32.onnx:1:16 resnet50.fp32.onnx:8:16 densenet121.onnx:8:16 squeezenet.onnx:8:16
        resnet50.fp32.onnx:1:4 resnet50.fp32.onnx:8:1"}
[ -z "$MODELS" ] && exit 0
python3 bench/cpu_models/export.py --out /tmp/cpu_models --models squeezenet densenet121 > "$OUT/export.log" 2>&1
python3 bench/gpu_models/export.py --out /tmp/gpu_models --models resnet50 --precisions fp32 --no-check \
    --device cpu >> "$OUT/export.log" 2>&1
log "exported"
for spec in $MODELS; do
    IFS=: read -r m b t <<< "$spec"
    path=/tmp/cpu_models/$m; [ -f "$path" ] || path=/tmp/gpu_models/$m
    timeout 120 python3 bench/variants_ab.py "$path" --batch "$b" --threads "$t" --rounds ${ROUNDS:-2} --seconds 0.6 $V \
        --json "$OUT/ab.jsonl"
done 2>&1 | grep -v "^ *$" | tee "$OUT/models.txt"
log "models done"
