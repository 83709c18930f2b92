#!/usr/bin/env bash
# Runs the playground browser test against a built `diffuse`.
#   tests/browser/run.sh [path/to/diffuse]
# Exit 77 (ctest SKIP_RETURN_CODE) when a program is missing: node or Chromium
# (apt-get install chromium). Missing fixtures are a failure: they come from the
# build (<build>/test-data/fixtures, which ctest passes as
# DIFFUSE_DEFAULT_FIXTURES) or from $DIFFUSE_FIXTURES. Installs playwright-core
# and the openai SDK (its images.edit test) from the npm registry only when
# node_modules lacks them (no browser download).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DIFFUSE_BINARY="${1:-${DIFFUSE_BINARY:-$repo/build/diffuse}}"
# Absolute (the tests run from this directory); a relative path is taken from where we were called.
case "$DIFFUSE_BINARY" in /*) ;; *) DIFFUSE_BINARY="$PWD/$DIFFUSE_BINARY" ;; esac
export DIFFUSE_BINARY
# The fixtures of the binary's own build tree, unless told otherwise.
build_fixtures="$(dirname "$DIFFUSE_BINARY")/test-data/fixtures"
[ -d "$build_fixtures" ] || build_fixtures="$repo/build/test-data/fixtures"
export DIFFUSE_FIXTURES="${DIFFUSE_FIXTURES:-${DIFFUSE_DEFAULT_FIXTURES:-$build_fixtures}}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

# The page drives the sd1 fixture model (checked first: missing fixtures never skip).
[ -f "$DIFFUSE_FIXTURES/sd1/model/model_index.json" ] || {
  echo "missing fixture file $DIFFUSE_FIXTURES/sd1/model/model_index.json: build the test_data target" \
       "(cmake --build <build dir> --target test_data) or set DIFFUSE_FIXTURES to a complete fixture set" >&2
  exit 1
}
skip() { echo "SKIP: $*" >&2; exit 77; }
command -v node >/dev/null || skip "node is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || skip "node $node_major is too old (playwright-core needs 20+)"
command -v npm >/dev/null || { [ -d "$here/node_modules/playwright-core" ] && [ -d "$here/node_modules/openai" ]; } ||
  skip "npm is not installed"
[ -x "$CHROMIUM" ] || skip "no Chromium at $CHROMIUM (apt-get install chromium)"
[ -x "$DIFFUSE_BINARY" ] || { echo "no diffuse binary at $DIFFUSE_BINARY" >&2; exit 1; }

cd "$here"
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/openai ]; then
  npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error
fi
exec node --test --test-concurrency=1 --test-reporter=spec playground.test.js live.test.js
