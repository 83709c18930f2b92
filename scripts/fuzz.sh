#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang and
# -fsanitize=fuzzer,address,undefined in build-fuzz, then runs each target for
# SECONDS seconds (one after another, one job each) from its seed corpus in
# tests/fuzz/corpus/<target>/, and prints the executions per target.
#
#   scripts/fuzz.sh 30            CI-brief smoke run (~4 minutes for 7 targets)
#   scripts/fuzz.sh 600           long run
#   scripts/fuzz.sh 60 fuzz_png   one target
#
# New inputs found are written to build-fuzz/corpus/<target>/ (the checked-in
# seeds stay small); crashes to build-fuzz/artifacts/<target>/; logs to
# $FUZZ_LOGS (default build-fuzz/). Exit status 1 when any target crashed,
# leaked, timed out or ran out of memory.
#
# Long runs on a shared machine: `JOBS=1 nice -n 19 scripts/fuzz.sh 600`. The
# targets run one at a time, each on one core.
set -euo pipefail
SECONDS_PER_TARGET=${1:-30}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DIFFUSE_FUZZ_BUILD:-$ROOT/build-fuzz}
JOBS=${JOBS:-2}
LOGS=${FUZZ_LOGS:-$BUILD}
mkdir -p "$LOGS"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(fuzz_safetensors fuzz_torch_checkpoint fuzz_png fuzz_infotext fuzz_tokenizer fuzz_prompt_weights
           fuzz_request_json)
fi

CLANG=${CLANG:-clang}
CLANGXX=${CLANGXX:-clang++}
if ! command -v "$CLANGXX" >/dev/null; then
  echo "fuzz.sh: $CLANGXX not found (Debian: apt-get install clang)" >&2
  exit 2
fi

SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=$CLANG CXX=$CLANGXX cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDIFFUSE_FUZZ=ON -DDIFFUSE_TESTS=OFF -DDIFFUSE_BENCH=OFF \
    -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/fuzz.cmake" \
    -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" >/dev/null
fi
ninja -C "$BUILD" -j"$JOBS" "${TARGETS[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
declare -A EXECS RATE CORPUS
for t in "${TARGETS[@]}"; do
  corpus="$BUILD/corpus/$t"
  artifacts="$BUILD/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds="$ROOT/tests/fuzz/corpus/$t"
  log="$LOGS/$t.log"
  echo "== $t: ${SECONDS_PER_TARGET}s"
  # -rss_limit_mb: parsers must refuse absurd sizes before allocating them.
  if "$BUILD/$t" "$corpus" "$seeds" -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=3072 \
       -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    :
  else
    status=1
    echo "!! $t failed; see $log and $artifacts" >&2
    grep -m5 -E "ERROR|runtime error|SUMMARY|deadly signal" "$log" >&2 || true
  fi
  EXECS[$t]=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}' | tail -1)
  # "Done N runs in S second(s)" -> exec/s over the whole run
  RATE[$t]=$(awk '/^Done [0-9]+ runs in [0-9]+ second/ {if ($5 > 0) printf "%d", $2 / $5}' "$log" | tail -1)
  CORPUS[$t]=$(ls "$corpus" | wc -l)
done
echo
printf "%-24s %14s %10s %8s\n" target executions exec/s corpus
for t in "${TARGETS[@]}"; do
  printf "%-24s %14s %10s %8s\n" "$t" "${EXECS[$t]:-?}" "${RATE[$t]:-?}" "${CORPUS[$t]:-?}"
done
exit $status
