#!/usr/bin/env bash
# Configures (once) and builds pallasvm in build/ (release, -O3).
set -euo pipefail
cd "$(dirname "$0")/.."
# The JAX bridge is required here (install_deps.sh has made .venv with
# jaxlib), so a missing bridge fails the build instead of skipping its tests.
if [[ ! -f build/build.ninja ]]; then
  meson setup build --buildtype=release -Djax_bridge=enabled >/dev/null
else
  meson configure build -Djax_bridge=enabled >/dev/null
fi
ninja -C build "$@"
