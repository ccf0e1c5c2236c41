#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in build-fuzz/ with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer, and runs them.
#
#   tests/fuzz/run.sh                        what ./test.sh runs (2 minutes at
#                                            most): replay the seed corpora
#                                            and the regressions, then fuzz
#                                            each target for 20 s
#   tests/fuzz/run.sh --seconds N [TARGET..] a long run: fuzz each TARGET
#                                            (default: all) for N seconds,
#                                            keeping the corpus grown in
#                                            build-fuzz/fuzz/corpus/TARGET
#
# Targets: interchange_json, interchange_binary, module, npy. Seeds are made
# at each run from the golden fixtures (fuzz_seed_corpus). Findings go to
# build-fuzz/fuzz/artifacts/TARGET/; a fuzzing run reports them without
# failing (its inputs are random; PALLASVM_FUZZ_STRICT=1 fails it), while a
# seed or a regression that crashes fails the script, except the
# regressions listed in tests/fuzz/regressions/OPEN (defects not fixed yet),
# which are reported. One fuzzer process runs at a time, niced.
#
# clang and libFuzzer are installed first if missing (tools/install_deps.sh
# --fuzz, Debian's packages): without them the script fails, so ./test.sh
# never passes with the fuzz targets silently left out.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGETS=(interchange_json interchange_binary module npy)
SECONDS_PER_TARGET=20
LONG=0
if [[ ${1:-} == --seconds ]]; then
  SECONDS_PER_TARGET=${2:?--seconds needs a number}
  LONG=1
  shift 2
  (($#)) && TARGETS=("$@")
elif (($#)); then
  echo "usage: $0 [--seconds N [TARGET...]]" >&2
  exit 2
fi

tools/install_deps.sh --fuzz --no-venv
if ! command -v clang++ >/dev/null; then
  echo "fuzz: no clang++ after tools/install_deps.sh --fuzz" >&2
  exit 1
fi

BUILD=build-fuzz
# One build at a time (a lock beside the build directory): runs of
# different targets may be started side by side.
(
  flock 9
  if [[ ! -f $BUILD/build.ninja ]]; then
    # -O0: at -O1 (the sanitizers' usual level) clang spent 11 minutes on
    # vm/interpreter.cc's dispatch function alone (2026-12-03, Zen 3),
    # against 17 s at -O0; the fuzzers run slower, but CI has 20 minutes.
    CC=clang CXX=clang++ meson setup "$BUILD" --buildtype=plain \
      -Doptimization=0 -Dfuzz=enabled -Djax_bridge=disabled \
      -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
  fi
  nice -n 10 ninja -C "$BUILD" "${TARGETS[@]/#/tests/fuzz/fuzz_}" \
    tests/fuzz/fuzz_seed_corpus
) 9>"$BUILD.lock"

WORK=$BUILD/fuzz
# Seeds of this run only, so that long runs of different targets can go
# side by side (each keeps its own corpus and logs).
SEEDS=$WORK/seeds.$$
trap 'rm -rf "$SEEDS"' EXIT
mkdir -p "$WORK"
"$BUILD/tests/fuzz/fuzz_seed_corpus" tests/golden "$SEEDS"

# Memory and time limits: a finding, not a stalled run, when a module asks
# for gigabytes or loops forever.
LIMITS=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048)
# UBSan's reports with the stack, as ASan's have it.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0
open_list=tests/fuzz/regressions/OPEN
is_open() { [[ -f $open_list ]] && grep -q "^$1\b" "$open_list"; }

for t in "${TARGETS[@]}"; do
  fuzzer=$BUILD/tests/fuzz/fuzz_$t
  dict=()
  [[ $t == interchange_json ]] && dict=(-dict="$SEEDS/interchange_json.dict")

  # 1. The seeds: each must run clean.
  if ! nice -n 10 "$fuzzer" "${LIMITS[@]}" -runs=0 "$SEEDS/$t" \
      >"$WORK/$t.seeds.log" 2>&1; then
    echo "fuzz $t: a seed fails; see $WORK/$t.seeds.log"
    failed=1
  fi

  # 2. The regressions, one at a time (a failing file stops libFuzzer).
  for r in tests/fuzz/regressions/"$t"/*; do
    [[ -f $r ]] || continue
    name=$t/$(basename "$r")
    log=$WORK/$t.regression.log
    if nice -n 10 "$fuzzer" "${LIMITS[@]}" "$r" >"$log" 2>&1; then
      is_open "$name" && echo "fuzz $name: passes now; remove it from $open_list"
    elif is_open "$name"; then
      echo "fuzz $name: still fails (open defect, see $open_list)"
    else
      echo "fuzz $name: regression fails:"
      grep -E 'ERROR|SUMMARY|FUZZ CHECK|runtime error' "$log" | head -5
      failed=1
    fi
  done

  # 3. Fuzzing, in one forked worker that goes on after a crash, so one
  # finding does not end the run.
  artifacts=$WORK/artifacts/$t
  mkdir -p "$artifacts"
  if ((LONG)); then
    corpus=$WORK/corpus/$t
    mkdir -p "$corpus"
  else
    corpus=$(mktemp -d)
  fi
  before=$(find "$artifacts" -type f | wc -l)
  nice -n 10 "$fuzzer" "${LIMITS[@]}" "${dict[@]}" -fork=1 -ignore_crashes=1 \
    -ignore_timeouts=1 -ignore_ooms=1 -max_total_time="$SECONDS_PER_TARGET" \
    -artifact_prefix="$artifacts/" "$corpus" "$SEEDS/$t" \
    >"$WORK/$t.fuzz.log" 2>&1 || true
  ((LONG)) || rm -rf "$corpus"
  stats=$(grep -E '^#[0-9]+' "$WORK/$t.fuzz.log" | tail -1 || true)
  found=$(($(find "$artifacts" -type f | wc -l) - before))
  echo "fuzz $t: ${SECONDS_PER_TARGET}s: ${stats:-no statistics, see $WORK/$t.fuzz.log}"
  if ((found)); then
    echo "fuzz $t: $found new finding(s) in $artifacts/ (log: $WORK/$t.fuzz.log)"
    [[ ${PALLASVM_FUZZ_STRICT:-0} == 1 ]] && failed=1
  fi
done
exit $failed
