#!/usr/bin/env bash
# `make bench`: every benchmark, each printing its anchor measured in the
# same run and the ratio. Starts throwaway PostgreSQL and Redis servers
# like the tests do. BENCH_QUICK=1 shrinks the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tmp=$(mktemp -d /tmp/agentdb-bench.XXXXXX)
. scripts/services.sh
cleanup() { services_stop "$tmp"; rm -rf "$tmp"; }
trap cleanup EXIT
chmod 755 "$tmp"
services_start "$tmp"
quick=${BENCH_QUICK:+--quick}
run() { echo "\$ $*"; "$@"; }
mkdir -p "$tmp/core"
run "$build/bench_core" $quick --dir "$tmp/core"
for b in "$build"/bench_*; do
  case "$(basename "$b")" in bench_core|bench_hnswlib) continue ;; esac
  [ -x "$b" ] && run "$b" $quick
done
for s in scripts/bench-*.sh; do [ -f "$s" ] && run bash "$s" "$build"; done
echo "# reproduce: make bench (or BENCH_QUICK=1 make bench)"
