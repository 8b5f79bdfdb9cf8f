#!/bin/sh
# contract.sh — docs/openapi.yaml as a contract (ctest: openapi_contract):
# lints it with Redocly (docs/redocly.yaml), then runs contract.mjs (routes
# vs spec both ways, every response of a real server validated). The npm
# packages are pinned by package-lock.json and installed with `npm ci`.
# Without npm/node it says so and exits 77 (ctest: skipped).
set -eu
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "openapi_contract: SKIPPED: npm/node not installed (apt-get install npm)"
  exit 77
fi
if [ ! -f node_modules/.package-lock.json ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npx --no-install redocly lint ../../docs/openapi.yaml \
  --config ../../docs/redocly.yaml --format=summary
node contract.mjs
