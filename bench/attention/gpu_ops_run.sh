#!/usr/bin/env bash
# One call on the GPU machine for the attention operators through the runtime
# (src/cuda/ops/attention.c): runs tests/gpu/test_cuda_ops.py against a libkiln.so built
# elsewhere with CUDA, then (if it fits) bench/attention/gpu_run.sh on the prebuilt kernel tests,
# and prints a short summary table last. Logs go under $OUT.
#
# Prepared on the build machine (carry build-carry-ops/, ~9 MB):
#   cmake -S . -B build-cuda && cmake --build build-cuda -j2
#   stage/: libkiln.so, lib/ (every non-system library `ldd libkiln.so` names: OpenBLAS and its
#   Fortran runtime, the image codecs and their compressors; the GPU image has none of them),
#   optionally build-carry/ (test_attention, bench_attention, peers/) -> bundle.tar.xz
#   (compressed because the carry limit is 64 MiB and the uncompressed set is ~77 MB).
#
# Environment: OUT (default out/ops), BUDGET_S (for gpu_run.sh, default 200), SKIP_GPU_RUN=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/ops}
mkdir -p "$OUT"
SECONDS=0
log() { echo "[gpu_ops_run ${SECONDS}s] $*"; }

X=$ROOT/build-carry-ops/x
if [ -f build-carry-ops/bundle.tar.xz ]; then
    mkdir -p "$X" && tar -C "$X" -xJf build-carry-ops/bundle.tar.xz || log "bundle extraction failed"
    # gpu_run.sh wants build-carry/ at the root; only take the bundle's copy if none is there
    [ -e build-carry ] || { [ -d "$X/build-carry" ] && ln -s "$X/build-carry" build-carry; }
fi
export KILN_LIBRARY=${KILN_LIBRARY:-$X/libkiln.so}

# CUDA 13 runtime and cuBLAS: the toolkit's, else the pip wheels PyTorch uses
LIBS=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -e "$d/libcublas.so.13" ] && LIBS="$LIBS:$d"
done
PYLIB=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site
for s in site.getsitepackages():
    for p in glob.glob(os.path.join(s, "nvidia", "**", "libcublas.so.13"), recursive=True):
        print(os.path.dirname(p)); raise SystemExit
EOF
)
[ -n "$PYLIB" ] && LIBS="$LIBS:$PYLIB"
export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$X/lib"
log "KILN_LIBRARY=$KILN_LIBRARY LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi -L 2>&1 | tee "$OUT/gpu.txt"
ldd "$KILN_LIBRARY" | grep -E "not found|cublas|cudart|openblas" | tee "$OUT/ldd.txt"

log "pytest tests/gpu/test_cuda_ops.py"
timeout 150 python3 -m pytest -v -rs -p no:cacheprovider tests/gpu/test_cuda_ops.py \
    --junitxml="$OUT/test_cuda_ops.xml" > "$OUT/test_cuda_ops.log" 2>&1
PYRC=$?
grep -E "PASSED|FAILED|ERROR|SKIPPED" "$OUT/test_cuda_ops.log" | tail -60
grep -E "^(FAILED|ERROR)|Error|assert" "$OUT/test_cuda_ops.log" | head -40
PYSUM=$(tail -1 "$OUT/test_cuda_ops.log")
log "pytest rc=$PYRC: $PYSUM"

GRRC=skipped
if [ -z "${SKIP_GPU_RUN:-}" ] && [ -d build-carry ]; then
    log "gpu_run.sh with the prebuilt kernel tests (BUDGET_S=${BUDGET_S:-200})"
    OUT="$OUT/attention" KILN_PREBUILT=build-carry PEERS=build-carry/peers/sdpa_peers.py \
        BUDGET_S=${BUDGET_S:-200} timeout $((${BUDGET_S:-200} + 60)) bash bench/attention/gpu_run.sh \
        > "$OUT/gpu_run.log" 2>&1
    GRRC=$?
    tail -40 "$OUT/gpu_run.log"
fi

echo
echo "| part | result |"
echo "|---|---|"
echo "| device | $(head -1 "$OUT/gpu.txt" 2>/dev/null) |"
echo "| tests/gpu/test_cuda_ops.py (rc $PYRC) | $PYSUM |"
echo "| bench/attention/gpu_run.sh (rc $GRRC) | $(grep -iE "passed|failed" "$OUT/gpu_run.log" 2>/dev/null | tail -1) |"
echo "| total seconds | $SECONDS |"
