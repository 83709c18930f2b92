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
echo
# The main job: an image from a prompt, offline, with the built-in demo model
# (models/demo). The path of the PNG is printed on the last line.
./build/diffuse generate "a red circle on the left, on a blue background" --seed 7 -o diffuse-demo.png
