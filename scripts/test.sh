#!/usr/bin/env bash
# Command 2 of the README (and CI's .ci/run): installs, builds everything, then
# runs the whole test suite except the tests that need a GPU (ctest label "cuda").
# On a GPU machine, `ctest --test-dir build -L cuda` runs those.
#
# Then the sanitizer stage (scripts/sanitize.sh --ci): a clang ASan + UBSan
# build (build-asan) of the CI subset of the unit tests, which it runs, and of
# the libFuzzer targets, each run for FUZZ_SECONDS (10). Set
# DIFFUSE_NO_SANITIZE=1 to skip that stage locally (it builds the sources a
# second time).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's wall time is printed at the end (budgets: docs/ci.md).
t0=$(date +%s)
stage_times=""
stage() { local now; now=$(date +%s); stage_times+="$1 $((now - t0))s, "; t0=$now; }
./scripts/install_deps.sh
stage deps
./scripts/configure.sh -DDIFFUSE_TESTS=ON -DDIFFUSE_BENCH=ON
cmake --build build -j"$(nproc)"
stage build
# Tests run in parallel processes: oneDNN's OpenMP threads must sleep, not spin,
# while they wait, or two processes on 2 cores slow each other down ~25x.
export OMP_WAIT_POLICY=PASSIVE
ctest_status=0
ctest --test-dir build -LE cuda --output-on-failure -j"$(nproc)" --timeout 900 || ctest_status=$?
# How many tests were skipped, and why (only a GPU's absence should skip one).
python3 scripts/skipped_tests.py build --not-run cuda || true
stage tests
echo "test.sh: ${stage_times%, }"
[ "$ctest_status" = 0 ] || exit "$ctest_status"
if [ "${DIFFUSE_NO_SANITIZE:-0}" != "1" ]; then
  ./scripts/sanitize.sh --ci   # prints its own build / tests / fuzz times
fi
