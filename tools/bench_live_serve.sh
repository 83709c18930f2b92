#!/usr/bin/env bash
# End-to-end latency of the live mode on random full-size weights: starts
# `diffuse serve --random-model ARCH` on a free port, runs tools/bench_live.py
# against it, stops the server.
#   tools/bench_live_serve.sh DIFFUSE ARCH SIZE OUT.json [serve options...] [-- bench_live.py options...]
# e.g. tools/bench_live_serve.sh build/diffuse sd21 512 /tmp/sd21.json --device cuda --precision fp16 -- --requests 50
# Steps 1 and CFG 0 unless the bench_live.py options say otherwise.
# PYTHON: the Python 3 to run the client with (default python3; stdlib only).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 DIFFUSE ARCH SIZE OUT.json [serve options...] [-- bench_live.py options...]" >&2; exit 2; }
diffuse="$1" arch="$2" size="$3" out="$4"
shift 4
serve_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do serve_args+=("$1"); shift; done
[ $# -gt 0 ] && shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
data="$(mktemp -d)"
port="${PORT:-$((20000 + RANDOM % 20000))}"
"$diffuse" serve --random-model "$arch" --no-demo --no-hf-cache --port "$port" --data-dir "$data" \
  "${serve_args[@]}" >"$data/serve.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/api/models', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$pid" 2>/dev/null || { cat "$data/serve.log" >&2; exit 1; }
  sleep 0.2
done
rc=0
"$python" "$here/bench_live.py" --url "http://127.0.0.1:$port" --model "random-$arch" --size "$size" \
  --label "random-$arch ${size}x${size}" --json "$out" "$@" || rc=$?
[ $rc -eq 0 ] || tail -20 "$data/serve.log" >&2
exit $rc
