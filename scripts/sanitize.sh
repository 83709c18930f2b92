#!/usr/bin/env bash
# ASan + UBSan build of the unit tests (build-asan, -DDIFFUSE_SANITIZE=ON) and
# a ctest run without the GPU and browser tests. Any sanitizer report fails
# the test that triggered it (UBSan is built with -fno-sanitize-recover, ASan
# aborts on its first error, LeakSanitizer runs at exit).
#
#   scripts/sanitize.sh            build + run
#   JOBS=4 scripts/sanitize.sh     more parallelism where the machine has it
#
# CI budget: ~12 minutes on 2 cores once ccache is warm (cold: the build
# dominates). Excluded on purpose (ctest -E below), because they only repeat
# code paths other tests already cover under the sanitizers and take minutes
# each at ASan speed:
#   - */PipelineRuns.MatchDiffusers/*: every diffusers fixture generation end
#     to end (the same UNet / VAE / scheduler code runs under the sanitizers in
#     the models, sampling, Pipeline.* and server tests);
#   - Soak.*: 500 HTTP requests with 50 generations, minutes even without
#     sanitizers on a loaded 2-core box (the hardening tests exercise the same
#     handlers; run it with `ctest --test-dir build-asan -R Soak` when needed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DIFFUSE_ASAN_BUILD:-$ROOT/build-asan}
JOBS=${JOBS:-2}
start=$(date +%s)
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIFFUSE_SANITIZE=ON \
    -DDIFFUSE_TESTS=ON -DDIFFUSE_BENCH=OFF -DDIFFUSE_CUDA=OFF >/dev/null
fi
cmake --build "$BUILD" -j"$JOBS"
built=$(date +%s)

# halt_on_error: the first report fails the test. detect_leaks: LSan at exit.
# oneDNN's JIT and the thread pool keep process-lifetime allocations alive on
# purpose; suppressions live next to this script.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
if [ -f "$ROOT/scripts/lsan.supp" ]; then
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0}
fi
status=0
ctest --test-dir "$BUILD" -LE "cuda|browser" -E "PipelineRuns\.MatchDiffusers|^Soak\." --output-on-failure \
  -j"$JOBS" --timeout 900 || status=$?
end=$(date +%s)
echo "sanitize.sh: build $((built - start))s, tests $((end - built))s, total $((end - start))s"
exit $status
