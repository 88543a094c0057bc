# Sourced on the GPU machine: unpacks build-carry/kiln.tar.xz (scripts/gpu/stage.sh) and points
# the loader and kiln's Python package at it and at the CUDA 13 libraries found there (the
# toolkit's, else the pip wheels PyTorch brings: cuBLAS, cuDNN).
KILN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KILN_STAGE=${KILN_STAGE:-/tmp/kiln-stage}
mkdir -p "$KILN_STAGE"
tar -C "$KILN_STAGE" -xJf "$KILN_ROOT/build-carry/kiln.tar.xz"
_kiln_libs="$KILN_STAGE/kiln:$KILN_STAGE/kiln/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && _kiln_libs="$_kiln_libs:$d"
done
for d in $(python3 - <<'PY' 2>/dev/null
import glob, os, site
seen = set()
for s in site.getsitepackages():
    for pat in ("libcublas.so.13", "libcudnn.so.9", "libcudart.so.13", "libcublasLt.so.13"):
        for p in glob.glob(os.path.join(s, "nvidia", "**", pat), recursive=True):
            d = os.path.dirname(p)
            if d not in seen:
                seen.add(d); print(d)
PY
); do _kiln_libs="$_kiln_libs:$d"; done
export LD_LIBRARY_PATH="$_kiln_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KILN_LIBRARY="$KILN_STAGE/kiln/libkiln.so"
export KILN_BIN="$KILN_STAGE/kiln/kiln"
export KILN_MODELS="$KILN_STAGE/kiln/models"
export PYTHONPATH="$KILN_ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
unset _kiln_libs
# kiln._native for this machine's python3 (the staged one was built for this machine's Python,
# another version): without it the binding takes its ctypes path, which copies every output once
# more (a 3 MB output: +0.6 ms a run), and single-node timings would carry that.
_kiln_ext=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))" 2>/dev/null)
if [ -n "$_kiln_ext" ] && [ ! -f "$KILN_STAGE/kiln/_native$_kiln_ext" ]; then
    _kiln_inc=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])" 2>/dev/null)
    _kiln_np=$(python3 -c "import numpy; print(numpy.get_include())" 2>/dev/null)
    if [ -f "$_kiln_inc/Python.h" ] && [ -n "$_kiln_np" ] && command -v cc >/dev/null; then
        cc -O2 -shared -fPIC -fvisibility=hidden -I"$_kiln_inc" -I"$_kiln_np" -I"$KILN_ROOT/include" \
            "$KILN_ROOT/python/kiln/_native.c" -L"$KILN_STAGE/kiln" -lkiln -Wl,-rpath,'$ORIGIN' \
            -o "$KILN_STAGE/kiln/_native$_kiln_ext" 2>/dev/null ||
            echo "env.sh: kiln._native did not build here; the binding uses ctypes" >&2
    else
        echo "env.sh: no Python headers or compiler here; the binding uses ctypes" >&2
    fi
fi
unset _kiln_ext _kiln_inc _kiln_np
