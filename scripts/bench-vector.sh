#!/usr/bin/env bash
# Runs the vector benchmarks: AgentDB's vector layer on its own
# (bench_vector) and AgentDB's HNSW against hnswlib on the same data in one
# process (bench_hnswlib). One line per case on stdout, each with its anchor
# and the ratio; per-ef sweep details go to stderr.
#   scripts/bench-vector.sh [build-dir] [--quick]
# ADB_BENCH_QUICK=1 also selects the small sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
args=("$@")
for b in bench_vector bench_hnswlib; do
  if [ ! -x "$build/$b" ]; then
    cmake -S . -B "$build" >/dev/null
    cmake --build "$build" -j"$(nproc)" --target "$b" >/dev/null
  fi
done
echo "== vector layer (bench_vector)"
"$build/bench_vector" "${args[@]}"
echo "== vector search against hnswlib (bench_hnswlib)"
"$build/bench_hnswlib" "${args[@]}" 2>/dev/null
