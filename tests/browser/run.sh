#!/usr/bin/env bash
# Runs the playground browser test against a built `diffuse`.
#   tests/browser/run.sh [path/to/diffuse]
# Exit 77 (ctest SKIP_RETURN_CODE) when a prerequisite is missing: node, Chromium
# (apt-get install chromium) or the fixtures. Installs playwright-core from the
# npm registry only when node_modules is missing (no browser download).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export DIFFUSE_BINARY="${1:-${DIFFUSE_BINARY:-$repo/build/diffuse}}"
export DIFFUSE_FIXTURES="${DIFFUSE_FIXTURES:-$repo/../shared/fixtures}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

skip() { echo "SKIP: $*" >&2; exit 77; }
command -v node >/dev/null || skip "node is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || skip "node $node_major is too old (playwright-core needs 20+)"
command -v npm >/dev/null || [ -d "$here/node_modules/playwright-core" ] || skip "npm is not installed"
[ -x "$CHROMIUM" ] || skip "no Chromium at $CHROMIUM (apt-get install chromium)"
[ -f "$DIFFUSE_FIXTURES/sd1/cases.json" ] || skip "no fixtures at $DIFFUSE_FIXTURES"
[ -x "$DIFFUSE_BINARY" ] || { echo "no diffuse binary at $DIFFUSE_BINARY" >&2; exit 1; }

cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error
fi
exec node --test --test-reporter=spec playground.test.js
