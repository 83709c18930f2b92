#!/usr/bin/env bash
# Installs the Debian 12 packages Diffuse builds against (only what is missing).
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
PKGS="build-essential cmake ninja-build ccache pkg-config git python3 \
  libdnnl-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libspng-dev \
  libsqlite3-dev libcurl4-openssl-dev zlib1g-dev libssl-dev libzip-dev libutf8proc-dev libopencv-imgproc-dev libgtest-dev libbenchmark-dev \
  chromium nodejs clang libclang-rt-14-dev strace redis-server libhiredis-dev \
  python3-dev pybind11-dev python3-numpy python3-pil python3-pytest \
  jupyter-nbconvert python3-nbconvert python3-ipykernel python3-ipywidgets"
missing=$(for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "Installing:" $missing
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
