#!/usr/bin/env bash
# The installed program, away from the source and build trees (ctest
# `install_and_run`, label "install"; cmake/install.cmake registers it).
#
#   tests/install/run.sh BUILD_DIR SOURCE_DIR
#
# 1. `cmake --install BUILD_DIR --prefix` a fresh temporary directory, then
#    move the whole prefix somewhere else: the binary must find its data from
#    where it is now, not from where it was installed.
# 2. Run it from an empty working directory with a bare environment (no
#    HOME/XDG of the user, PATH=/usr/bin:/bin): `--version` must name the data
#    directory inside the moved prefix; `generate "a red circle"` must write a
#    128x128 PNG made by the demo model; `serve` must answer GET / (the page)
#    and POST /sdapi/v1/txt2img with an image.
# 3. The source tree cannot be moved away (other work shares it), so the test
#    proves it unused two ways. By construction: an executable outside the
#    build tree never looks at the source tree (src/pipeline/data_dir.h). By
#    observation: `generate` runs under strace, and no file or directory under
#    SOURCE_DIR (which holds the build tree) may be opened, stat'ed or read.
set -euo pipefail
build=$(cd "$1" && pwd -P)
src=$(cd "$2" && pwd -P)

fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-install.XXXXXX")
work=$(cd "$work" && pwd -P)
case "$work/" in "$src/"* | "$build/"*) fail "temporary directory $work is inside the source or build tree" ;; esac
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cmake --install "$build" --prefix "$work/installed" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
mv "$work/installed" "$work/prefix"
prefix="$work/prefix"
bin="$prefix/bin/diffuse"
[ -x "$bin" ] || fail "no $bin after cmake --install"
for f in share/diffuse/models/tokenizers/clip/vocab.json share/diffuse/models/tokenizers/clip/merges.txt \
         share/diffuse/models/demo/model_index.json share/doc/diffuse/README.md; do
  [ -s "$prefix/$f" ] || fail "cmake --install did not install $f"
done

mkdir "$work/cwd" "$work/home"
cd "$work/cwd"
# A bare environment: nothing of the calling user or of the build leaks in.
run() { env -i PATH=/usr/bin:/bin HOME="$work/home" OMP_WAIT_POLICY=PASSIVE "$@"; }

# --- --version ---------------------------------------------------------------
run "$bin" --version >"$work/version.txt" || fail "diffuse --version exited $?"
cat "$work/version.txt"
grep -qx "data: $prefix/share/diffuse" "$work/version.txt" ||
  fail "--version does not name the moved prefix's data directory ($prefix/share/diffuse)"
grep -Eq '^diffuse [0-9]+\.[0-9]+\.[0-9]+$' "$work/version.txt" || fail "--version has no version line"
grep -Eq '^commit: ([0-9a-f]{7,}(-dirty)?|unknown)$' "$work/version.txt" || fail "--version has no commit line"
grep -Eq '^backends: cpu \(oneDNN [0-9]+\.[0-9]+\.[0-9]+\)' "$work/version.txt" || fail "--version has no backends line"

# --- generate, under strace ----------------------------------------------------
command -v strace >/dev/null || fail "strace is needed (scripts/install_deps.sh installs it)"
trace=(strace -f -qq -e trace=%file,%process -o "$work/strace.log")
if ! "${trace[@]}" true 2>"$work/strace.err"; then
  cat "$work/strace.err" >&2
  fail "strace cannot trace here (ptrace not permitted?)"
fi
run "${trace[@]}" "$bin" generate "a red circle" --seed 7 --steps 12 -o "$work/cwd/red.png" \
  >"$work/generate.out" 2>"$work/generate.err" || { cat "$work/generate.err" >&2; fail "generate exited non-zero"; }
cat "$work/generate.err"
grep -q "^device: " "$work/generate.err" || fail "generate did not print the device it chose"
grep -qx "$work/cwd/red.png" "$work/generate.out" || fail "generate did not print the PNG's path"
# PNG signature and IHDR width/height (big-endian at bytes 16..23): 128x128.
[ "$(od -An -tx1 -N8 "$work/cwd/red.png" | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "red.png is not a PNG"
[ "$(od -An -tu1 -j16 -N8 "$work/cwd/red.png" | tr -s ' ' | sed 's/^ //')" = "0 0 0 128 0 0 0 128" ] ||
  fail "red.png is not 128x128"
grep -aq "Model: demo" "$work/cwd/red.png" || fail "red.png has no A1111 parameters naming the demo model"
# What the process touched: the data must come from the prefix, nothing from the source/build trees.
grep -qF "$prefix/share/diffuse/models/demo/unet" "$work/strace.log" || fail "strace saw no read of the installed demo model"
if grep -F -e "\"$src/" -e "\"$src\"" -e "\"$build/" -e "\"$build\"" "$work/strace.log" >"$work/leaks.txt"; then
  head -20 "$work/leaks.txt" >&2
  fail "the installed diffuse accessed the source or build tree ($src, $build)"
fi
echo "generate: ok ($(grep -c . "$work/strace.log") traced calls, none under $src or $build)"

# --- serve: the page and one A1111 request -------------------------------------
# Not through run(): $! must be the server itself (env execs it) for the SIGTERM below.
env -i PATH=/usr/bin:/bin HOME="$work/home" OMP_WAIT_POLICY=PASSIVE \
  "$bin" serve --port 0 --no-hf-cache --data-dir "$work/data" --threads 2 2>"$work/serve.err" &
server_pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's|^diffuse serve: http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$work/serve.err")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; fail "serve exited before listening"; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/serve.err" >&2; fail "serve printed no address"; }

# One HTTP/1.1 request over bash's /dev/tcp (no curl needed); prints the response.
http() {  # METHOD PATH [BODY]
  local body=${3:-}
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "${#body}" "$body" >&3
  cat <&3
  exec 3<&-
}
http GET / >"$work/page.txt"
head -1 "$work/page.txt" | grep -q "200" || fail "GET / did not answer 200: $(head -1 "$work/page.txt")"
grep -qi "<html" "$work/page.txt" || fail "GET / did not return the web page"
http POST /sdapi/v1/txt2img '{"prompt": "a red circle", "steps": 4, "width": 128, "height": 128, "seed": 3}' \
  >"$work/txt2img.txt"
head -1 "$work/txt2img.txt" | grep -q "200" ||
  { head -c 2000 "$work/txt2img.txt" >&2; fail "POST /sdapi/v1/txt2img did not answer 200"; }
# base64 of the PNG signature starts "iVBORw0KGgo".
grep -q '"images":\["iVBORw0KGgo' "$work/txt2img.txt" || { head -c 2000 "$work/txt2img.txt" >&2; fail "txt2img returned no PNG"; }
kill -TERM "$server_pid"
wait "$server_pid" || fail "serve did not exit cleanly on SIGTERM"
server_pid=""
grep -q "^device: " "$work/serve.err" || fail "serve did not print the device it chose"
echo "serve: ok (GET / and POST /sdapi/v1/txt2img on port $port)"
echo "install test passed: $prefix"
