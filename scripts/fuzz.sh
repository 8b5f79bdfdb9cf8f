#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.c) with clang, ASan and UBSan
# in build-fuzz/ and runs each on its corpus (fuzz/corpus/<target>/).
#   scripts/fuzz.sh run     each target FUZZ_SECONDS (default 60) seconds
#                           (make fuzz); new inputs go to build-fuzz/new/
#   scripts/fuzz.sh smoke   each target FUZZ_SMOKE_SECONDS (default 3)
#                           seconds (the fuzz_smoke test of make test)
# FUZZ_TARGETS="fuzz_http fuzz_api" limits the run; FUZZ_RUNS=N stops each
# target after N executions (within its time). Prints, per target,
# the executions and a crash's input; exits 1 when any target crashed,
# 77 (skipped) when clang cannot link libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
secs=${FUZZ_SECONDS:-60}
[ "$mode" = smoke ] && secs=${FUZZ_SMOKE_SECONDS:-3}
build=${FUZZ_BUILD:-build-fuzz}
probe=$(mktemp -d /tmp/agentdb-fuzz.XXXXXX)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){return 0;}' \
  >"$probe/p.c"
if ! command -v clang >/dev/null ||
   ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" \
     2>/dev/null; then
  echo "fuzz: SKIPPED: clang with libFuzzer is not installed" \
       "(scripts/deps.sh installs clang and libclang-rt-14-dev)"
  exit 77
fi
targets=${FUZZ_TARGETS:-$(cd fuzz && ls fuzz_*.c | sed 's/\.c$//')}
CC=clang CXX=clang++ cmake -S . -B "$build" -DADB_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target $targets >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in $targets; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus" "$build/new/$t" "$build/crashes"
  if [ "$t" = fuzz_hnsw_load ] && [ -z "$(ls -A "$corpus")" ]; then
    ADB_FUZZ_WRITE_SEEDS="$PWD/$corpus" "$build/$t" || true
  fi
  log=$build/$t.log
  # New inputs go to the scratch folder (first); the corpus is read only.
  if "$build/$t" -max_total_time="$secs" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} \
       -print_final_stats=1 \
       -artifact_prefix="$build/crashes/$t-" -max_len=65536 \
       -rss_limit_mb=4096 "$build/new/$t" "$corpus" >"$log" 2>&1; then
    res=ok
  else
    res=CRASH; status=1
    grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5 || true
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
          grep -o '[0-9]*$' || echo "?")
  printf 'fuzz: %-16s %s, %s executions in %ss\n' "$t" "$res" "$execs" "$secs"
done
exit $status
