#!/usr/bin/env bash
# Command 2 of the README (and CI's .ci/run): builds everything, then runs the
# whole test suite except the tests that need a GPU (ctest label "cuda").
# On a GPU machine run `ctest --test-dir build-test -L cuda` as well.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null 2>&1 || ./scripts/setup.sh   # install + build (prints only on failure)
CUDA_FLAG="-DDIFFUSE_CUDA=OFF"
if [ -x /usr/local/cuda/bin/nvcc ] && [ "${DIFFUSE_NO_CUDA:-0}" != "1" ]; then
  CUDA_FLAG="-DDIFFUSE_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc"
fi
cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=Release $CUDA_FLAG -DDIFFUSE_TESTS=ON -DDIFFUSE_BENCH=ON >/dev/null
cmake --build build-test -j"$(nproc)"
ctest --test-dir build-test -LE cuda --output-on-failure -j"$(nproc)" --timeout 900
