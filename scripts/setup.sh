#!/usr/bin/env bash
# Installs what kiln needs to build and test on Debian 12, by package name only: the C toolchain,
# OpenBLAS, the image codec libraries ImageDecoder links when present and the ONNX conformance data
# (onnx 1.12) from Debian (with python3-venv and patchelf for tests/test_wheel.py), and numpy, onnx
# (1.22, which still ships its node tests), onnxruntime (the oracle) and pytest from PyPI.
set -euo pipefail
need_apt=()
for p in build-essential cmake pkg-config libopenblas-dev zlib1g-dev libonnx-testdata clang libclang-rt-14-dev \
         libjpeg62-turbo-dev libpng-dev libtiff-dev libwebp-dev libopenjp2-7-dev python3-venv patchelf; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
PY=${PYTHON:-python3}
if ! $PY -c "import numpy, onnx, onnxruntime, pytest, wheel, PIL; assert onnx.__version__.startswith('1.22')" 2>/dev/null; then
  $PY -m pip install -q "numpy>=1.24" "onnx==1.22.0" "onnxruntime>=1.20" "pytest>=7" wheel pillow
fi
# tests/test_ml_models.py, test_tokenizer.py: scikit-learn, LightGBM and XGBoost models converted by
# skl2onnx / onnxmltools (xgboost-cpu: the wheel without the CUDA libraries); onnx-ir for
# onnxruntime's MatMulNBits quantizer (test_contrib_transformers.py)
if ! $PY -c "import sklearn, skl2onnx, onnxmltools, lightgbm, xgboost, onnx_ir" 2>/dev/null; then
  $PY -m pip install -q "scikit-learn==1.9.1" "skl2onnx==1.20.0" "onnxmltools==1.16.0" "lightgbm==4.6.0" \
    "xgboost-cpu==3.1.2" "onnx-ir==1.1.0"
fi
# tests/test_serving.py, examples/serving/: Ray Serve in this interpreter (~370 MB, ~20 s), and
# PyTriton, which bundles tritonserver (~350 MB, ~20 s), in a venv of its own: PyTriton 0.7 pins
# numpy < 2, which the rest of the suite has outgrown. The venv sees this interpreter's packages
# (onnxruntime) but keeps its own numpy. The test finds it here (or at $KILN_PYTRITON_PYTHON).
PYTRITON_VENV=${KILN_PYTRITON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln/pytriton-venv}
if ! $PY -c "import ray, ray.serve" 2>/dev/null || ! "$PYTRITON_VENV/bin/python" -c "import pytriton" 2>/dev/null; then
  $PY -m pip install -q "ray[serve]==2.60.0"
  $PY -m venv --system-site-packages "$PYTRITON_VENV"
  "$PYTRITON_VENV/bin/python" -m pip install -q "nvidia-pytriton==0.7.0"
fi
