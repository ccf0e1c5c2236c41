#!/usr/bin/env bash
# Installs what pallasvm needs on a fresh Debian machine: the C++ toolchain
# and libraries from Debian's packages, and a project virtual environment
# (.venv) with the pinned JAX from PyPI. Idempotent: does nothing that is
# already done.
#
#   tools/install_deps.sh            what the build and the tests need
#   tools/install_deps.sh --fuzz     also clang and its libFuzzer runtime,
#                                    for the fuzz targets (tests/fuzz/run.sh;
#                                    ./test.sh asks for them)
#   tools/install_deps.sh --no-venv  the Debian packages only, .venv left
#                                    alone (the fuzz targets need no Python)
#   tools/install_deps.sh --bench    also bench/requirements.txt in .venv
#                                    (matplotlib, for bench/compare.py's
#                                    chart; ./setup.sh asks for it)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ=0
VENV=1
BENCH=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) FUZZ=1 ;;
    --no-venv) VENV=0 ;;
    --bench) BENCH=1 ;;
    *) echo "usage: $0 [--fuzz] [--no-venv] [--bench]" >&2; exit 2 ;;
  esac
done

DEBIAN_PACKAGES=(g++ meson ninja-build pkg-config python3 python3-venv
  libabsl-dev libxsimd-dev libflatbuffers-dev flatbuffers-compiler
  libgtest-dev libbenchmark-dev)
# libclang-rt-dev holds libFuzzer and the sanitizer runtimes of Debian's
# default clang.
((FUZZ)) && DEBIAN_PACKAGES+=(clang libclang-rt-dev)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

((VENV)) || exit 0

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import jax, pytest" >/dev/null 2>&1 ||
   ! cmp -s tools/requirements.txt .venv/.pallasvm-requirements; then
  echo "installing Python packages (tools/requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
  cp tools/requirements.txt .venv/.pallasvm-requirements
fi
# The pallasvm package itself (exporter, JAX bridge), editable.
# Reinstalled when tools/pyproject.toml changes (its entry points, such as
# the pytest plugin's, live in the installed metadata).
if ! .venv/bin/python -c "import pallasvm.export" >/dev/null 2>&1 ||
   [[ "$(.venv/bin/python -c 'import pallasvm, pathlib; print(pathlib.Path(pallasvm.__file__).resolve().parent)')" != "$PWD/tools/pallasvm" ]] ||
   ! cmp -s tools/pyproject.toml .venv/.pallasvm-pyproject; then
  echo "installing the pallasvm Python package (tools/, editable)"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e tools/
  cp tools/pyproject.toml .venv/.pallasvm-pyproject
fi
if ((BENCH)) && { ! .venv/bin/python -c "import matplotlib" >/dev/null 2>&1 ||
                  ! cmp -s bench/requirements.txt .venv/.pallasvm-bench-requirements; }; then
  echo "installing the benchmarks' Python packages (bench/requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
  cp bench/requirements.txt .venv/.pallasvm-bench-requirements
fi
