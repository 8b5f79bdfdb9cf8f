#!/usr/bin/env bash
# The dashboard's browser test (tests/dashboard/browser.mjs), run by ctest
# as test_dashboard_browser: needs Debian's chromium (scripts/deps.sh
# installs it), node >= 20 and playwright-core from npm (web/package-lock.json;
# the build's `npm ci` put it in <build>/web, else this runs npm ci there).
# When one of them is missing it says so and exits 77, which ctest reports
# as skipped.
#   run.sh AGENTDB_BIN SOURCE_DIR BUILD_DIR
set -euo pipefail
bin=$1 src=$2 build=$3
skip() { echo "SKIPPED test_dashboard_browser: $*" >&2; exit 77; }
chrome=${ADB_CHROMIUM:-/usr/bin/chromium}
[ -x "$chrome" ] || skip "no $chrome (apt-get install chromium, or bash scripts/deps.sh)"
command -v node >/dev/null || skip "no node"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $major is older than 20 (playwright-core needs 20)"
mods=$build/web/node_modules
if [ ! -d "$mods/playwright-core" ]; then
  command -v npm >/dev/null || skip "no npm to install playwright-core"
  mkdir -p "$build/web"
  cp "$src/web/package.json" "$src/web/package-lock.json" "$build/web/"
  (cd "$build/web" && npm ci --no-audit --no-fund --loglevel=error) ||
    skip "npm ci failed (is the npm registry reachable?)"
fi
expect_canvas=
grep -q "adb__web_has_uplot = 1" "$build/gen/web_assets.c" || expect_canvas=1
ADB_BIN=$bin ADB_NODE_MODULES=$mods ADB_ARTIFACTS=$build/artifacts/dashboard \
  ADB_CHROMIUM=$chrome ADB_EXPECT_CANVAS=$expect_canvas \
  exec node "$src/tests/dashboard/browser.mjs"
