#!/usr/bin/env bash
# Command 1 of the README: installs what Diffuse needs on Debian 12, builds it,
# and runs the main job. Safe to run again (it only rebuilds what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
PKGS="build-essential cmake ninja-build ccache pkg-config git python3 \
  libdnnl-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libspng-dev \
  libsqlite3-dev libcurl4-openssl-dev zlib1g-dev libgtest-dev libbenchmark-dev"
missing=$(for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "Installing: $missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
CUDA_FLAG="-DDIFFUSE_CUDA=OFF"
if [ -x /usr/local/cuda/bin/nvcc ] && [ "${DIFFUSE_NO_CUDA:-0}" != "1" ]; then
  CUDA_FLAG="-DDIFFUSE_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc"
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release $CUDA_FLAG -DDIFFUSE_TESTS=OFF -DDIFFUSE_BENCH=OFF >/dev/null
cmake --build build --target diffuse -j"$(nproc)"
echo
./build/diffuse devices
