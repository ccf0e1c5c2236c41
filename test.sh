#!/usr/bin/env bash
# Runs the whole test suite on a fresh or set-up machine: installs what is
# missing, builds, runs the C++ tests (meson test) and the Python tests.
set -euo pipefail
cd "$(dirname "$0")"
tools/install_deps.sh
tools/build.sh
meson test -C build --print-errorlogs --num-processes 2
.venv/bin/python -m pytest tests/python -q
