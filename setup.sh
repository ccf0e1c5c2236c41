#!/usr/bin/env bash
# Installs everything, builds pallasvm, and runs the main job: the
# jax.experimental.pallas.ops.tpu.matmul kernel (exported from JAX) on
# JAX's inputs, checked against the outputs of JAX's TPU interpret mode,
# and timed per grid step.
set -euo pipefail
cd "$(dirname "$0")"
tools/install_deps.sh --bench
tools/build.sh
echo
echo "== pallasvm run tests/golden/matmul_f32 --check --time"
build/tools/pallasvm run tests/golden/matmul_f32 --check --time
