#!/usr/bin/env bash
# One command from a fresh machine to a bundled model's outputs: install, build, run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
./build/example_basic examples/models/tiny_mlp.onnx
./build/kiln run examples/models/tiny_mlp.onnx --inputs examples/models/tiny_mlp_inputs.npz --output-dir out/tiny_mlp
