#!/usr/bin/env bash
# ASan + UBSan build of the unit tests and the libFuzzer targets, in one clang
# build (build-asan), then a ctest run. Any sanitizer report fails the test
# that triggered it: UBSan is built with -fno-sanitize-recover, ASan aborts on
# its first error, LeakSanitizer runs at exit.
#
#   scripts/sanitize.sh          every unit test except the exclusions below,
#                                and each fuzz target's corpus replay (ctest
#                                label fuzz)
#   scripts/sanitize.sh --ci     the CI stage: the same, then each fuzz target
#                                mutates for FUZZ_SECONDS (default 10)
#   JOBS=1 scripts/sanitize.sh   fewer parallel jobs (default: nproc)
#
# One build serves both jobs, as OSS-Fuzz does: the libraries carry ASan, UBSan
# and libFuzzer's coverage instrumentation (-fsanitize=fuzzer-no-link, whose
# hooks the ASan runtime stubs out in the unit tests), so CI compiles the
# sources once instead of twice. Without clang it falls back to the default
# compiler with -DDIFFUSE_SANITIZE=ON and no fuzzers.
#
# Excluded everywhere (ctest -E), because they only repeat code paths that
# other tests already run under the sanitizers and take many minutes each at
# ASan speed:
#   - */PipelineRuns.MatchDiffusers/*: every diffusers fixture generation end
#     to end (the same UNet / VAE / scheduler code runs in the models,
#     sampling, Pipeline.* and server tests);
#   - Soak.*: 500 HTTP requests with 50 generations (the hardening tests drive
#     the same handlers; `ctest --test-dir build-asan -R Soak` runs it);
#   - */SamplerPairs.*: ~600 whole generations, every sampler x schedule pair
#     on three families (each sampler's and schedule's code runs under the
#     sanitizers in tests/sampling: test_k_samplers, test_schedulers, ...).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DIFFUSE_ASAN_BUILD:-$ROOT/build-asan}
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
MODE=full
[ "${1:-}" = "--ci" ] && MODE=ci

start=$(date +%s)
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -gline-tables-only"
HAVE_CLANG=0
if command -v clang++ >/dev/null && [ -f "$(clang++ -print-runtime-dir)/libclang_rt.fuzzer-$(uname -m).a" ]; then
  HAVE_CLANG=1
fi
if [ ! -f "$BUILD/build.ninja" ]; then
  if [ $HAVE_CLANG = 1 ]; then
    CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" \
      -DDIFFUSE_TESTS=ON -DDIFFUSE_BENCH=OFF -DDIFFUSE_CUDA=OFF -DDIFFUSE_FUZZ=ON \
      -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/fuzz.cmake" \
      -DCMAKE_C_FLAGS="$SAN -fsanitize=fuzzer-no-link" -DCMAKE_CXX_FLAGS="$SAN -fsanitize=fuzzer-no-link" >/dev/null
  else
    echo "sanitize.sh: no clang with libFuzzer; ASan+UBSan with the default compiler, no fuzzers" >&2
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIFFUSE_SANITIZE=ON \
      -DDIFFUSE_TESTS=ON -DDIFFUSE_BENCH=OFF -DDIFFUSE_CUDA=OFF >/dev/null
  fi
fi
fuzz_built=0
grep -q "^DIFFUSE_FUZZ:BOOL=ON" "$BUILD/CMakeCache.txt" && fuzz_built=1
ninja -C "$BUILD" -j"$JOBS"
built=$(date +%s)

# halt_on_error: the first report fails the test. detect_leaks: LSan at exit;
# its suppressions (process-lifetime allocations of libraries) sit next to
# this script. OpenMP threads sleep while they wait, or parallel test
# processes starve each other on 2 cores.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0}
export OMP_WAIT_POLICY=PASSIVE
status=0
ctest --test-dir "$BUILD" -LE "cuda|browser" -E "PipelineRuns\.MatchDiffusers|^Soak\.|SamplerPairs\." \
  --output-on-failure -j"$JOBS" --timeout 900 || status=$?
tested=$(date +%s)

if [ $MODE = ci ] && [ $fuzz_built = 1 ] && [ "$FUZZ_SECONDS" -gt 0 ]; then
  DIFFUSE_FUZZ_BUILD="$BUILD" "$ROOT/scripts/fuzz.sh" "$FUZZ_SECONDS" || status=1
fi
end=$(date +%s)
echo "sanitize.sh ($MODE): build $((built - start))s, tests $((tested - built))s, fuzz $((end - tested))s," \
     "total $((end - start))s, status $status"
exit $status
