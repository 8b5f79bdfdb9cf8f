#!/bin/sh
# personalizer.sh — Azure Personalizer's API driven by Microsoft's SDK
# (ctest: personalizer_sdk; tests/node/personalizer.mjs says what it
# checks). The npm packages are pinned by package-lock.json and installed
# with `npm ci`. Without npm/node it says so and exits 77 (ctest: skipped).
set -eu
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "personalizer_sdk: SKIPPED: npm/node not installed (apt-get install npm)"
  exit 77
fi
if [ ! -f node_modules/.package-lock.json ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node personalizer.mjs
