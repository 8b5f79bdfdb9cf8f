#!/usr/bin/env bash
# The vector case of `make bench`: AgentDB's HNSW against hnswlib on the
# same seeded data in one process (bench_hnswlib), one line per case with
# the anchor and the ratio; the per-ef sweep goes to stderr. (bench_vector,
# AgentDB's vector layer on its own, is run by scripts/bench.sh with every
# other bench_* program.)
#   scripts/bench-vector.sh [build-dir] [--quick]
# BENCH_QUICK=1 or ADB_BENCH_QUICK=1 also selects the small sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
args=("$@")
if [ -n "${BENCH_QUICK:-}" ]; then args+=(--quick); fi
if [ ! -x "$build/bench_hnswlib" ]; then
  cmake -S . -B "$build" >/dev/null
  cmake --build "$build" -j"$(nproc)" --target bench_hnswlib >/dev/null
fi
"$build/bench_hnswlib" "${args[@]}" 2>/dev/null
