#!/usr/bin/env bash
# Runs the whole test suite on a fresh or set-up machine: installs what is
# missing (clang and libFuzzer included, for the fuzz targets), builds, runs
# the C++ tests (meson test), the Python tests, and the fuzz targets' short
# run (tests/fuzz/run.sh).
set -euo pipefail
cd "$(dirname "$0")"
tools/install_deps.sh --fuzz
tools/build.sh
meson test -C build --print-errorlogs --num-processes 2
# A test stuck for 5 minutes dumps every thread's stack (faulthandler).
# Two workers (pytest-xdist), one per core: the suite is mostly JAX's own
# interpret mode computing the expected values, single-threaded.
.venv/bin/python -m pytest tests/python -q -n 2 -o faulthandler_timeout=300
# The fuzz targets: seeds, regressions and 20 s of fuzzing each (2 min).
tests/fuzz/run.sh
