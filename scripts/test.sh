#!/usr/bin/env bash
# Runs the test suite: starts a throwaway PostgreSQL and Redis (when their
# scripts exist) in a temporary folder on loopback, runs ctest on the normal
# build, then on an ASan+UBSan build, then the concurrency suites on a TSan
# build, and stops the servers.
#   scripts/test.sh all    normal + sanitizer pass (make test)
#   scripts/test.sh asan   sanitizer pass only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
jobs=$(nproc)
tmp=$(mktemp -d /tmp/agentdb-test.XXXXXX)
. scripts/services.sh
cleanup() { services_stop "$tmp"; rm -rf "$tmp"; }
trap cleanup EXIT
chmod 755 "$tmp"
services_start "$tmp"
export TMPDIR="$tmp"
werror=$([ -n "${CI:-}" ] && echo ON || echo OFF)

run_suite() { # build-dir cmake-flags...
  local dir=$1; shift
  cmake -S . -B "$dir" -DADB_WERROR="$werror" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 900
}

# The concurrency suites under ThreadSanitizer (built alone: TSan is slow);
# test_server drives the TSan build of `agentdb serve` (event loops, pool,
# answers handed back by the library's waker), whose report ends it with a
# non-zero status that the test checks.
tsan_tests="test_coordinator test_replicas test_cache test_hnsw test_statekey test_dash test_linear test_server test_slab"
run_tsan() {
  cmake -S . -B build-tsan -DADB_WERROR="$werror" -DADB_TSAN=ON >/dev/null
  cmake --build build-tsan -j"$jobs" --target $tsan_tests agentdb_bin >/dev/null
  ctest --test-dir build-tsan --output-on-failure -j"$jobs" --timeout 900 \
    -R "^($(echo $tsan_tests | tr ' ' '|'))\$"
}
status=0
if [ "$mode" = all ]; then
  echo "== tests (RelWithDebInfo)"
  run_suite build || status=1
fi
echo "== tests under ASan+UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
ADB_TEST_QUICK=1 run_suite build-asan -DADB_SANITIZE=ON || status=1
echo "== concurrency tests under TSan"
ADB_TEST_QUICK=1 TSAN_OPTIONS=halt_on_error=1 run_tsan || status=1
exit $status
