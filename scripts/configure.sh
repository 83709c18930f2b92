#!/usr/bin/env bash
# Configures the build in ./build. Extra arguments go to cmake.
# The CUDA backend is built when nvcc is present (set DIFFUSE_NO_CUDA=1 to skip it).
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_FLAG="-DDIFFUSE_CUDA=OFF"
if [ -x /usr/local/cuda/bin/nvcc ] && [ "${DIFFUSE_NO_CUDA:-0}" != "1" ]; then
  CUDA_FLAG="-DDIFFUSE_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc"
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release $CUDA_FLAG "$@" >/dev/null
