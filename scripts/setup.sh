#!/usr/bin/env bash
# Command 1 of the README: installs what Diffuse needs on Debian 12, builds it,
# and runs the main job. Safe to run again (it only rebuilds what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
./scripts/configure.sh
cmake --build build --target diffuse -j"$(nproc)"
echo
./build/diffuse devices
