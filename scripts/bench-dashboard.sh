#!/usr/bin/env bash
# Does serving the dashboard change decide latency? Cached decide over HTTP
# (bench_http load: 20 candidates, k=5, keep-alive) with five dashboard
# pages open, each fetching every second what the page fetches (HTML, JS,
# CSS, overview, series, recent), against the anchor: five pollers of
# /healthz in the same way; alternating rounds against the same server;
# prints each round and the ratio of the medians. Also the page weight (HTML + JS + CSS, raw and gzip -9).
#   scripts/bench-dashboard.sh [BUILD]     ($ADB_BIN overrides the binary)
set -euo pipefail
build=${1:-build}
bin=${ADB_BIN:-$build/agentdb}
load=$build/bench_http
n1=20000 n32=200000 rounds=3
[ -n "${BENCH_QUICK:-}" ] && n1=5000 n32=50000 rounds=2
tmp=$(mktemp -d /tmp/adb-bench-dash.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
: >"$tmp/out" # before the background job opens it (sed reads it at once)
"$bin" serve --listen 127.0.0.1:0 --store "sqlite://$tmp/db" >"$tmp/out" 2>"$tmp/err" &
pids+=($!)
for _ in $(seq 200); do
  base=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$tmp/out"); [ -n "$base" ] && break; sleep 0.05
done
[ -n "$base" ] || { cat "$tmp/err"; exit 1; }
port=${base##*:}
curl -s -X PUT "$base/v1/agents/bench" -d '{"context_keys":["device"]}' >/dev/null
acts=$(for i in $(seq 0 19); do printf '%s{"id":"item-%d"}' "$([ "$i" -gt 0 ] && echo ,)" "$i"; done)
curl -s -X POST "$base/v1/agents/bench/actions" -d "{\"actions\":[$acts]}" >/dev/null

raw=0 gz=0
for p in / /dashboard/app.js /dashboard/app.css; do
  raw=$((raw + $(curl -s "$base$p" | wc -c))); gz=$((gz + $(curl -s "$base$p" | gzip -9 | wc -c)))
done
echo "dashboard page weight: $raw bytes, $gz bytes gzip -9 (limit 153600)"

# Server CPU per page refresh (process_cpu_seconds_total around 300
# refreshes over one keep-alive connection), against 300 x 6 /healthz.
cpu() { curl -s "$base/metrics" | sed -n 's/^process_cpu_seconds_total //p'; }
cpu_of() { # urls... -> server CPU ms per round of them, 300 rounds
  local args=() c0 c1
  for _ in $(seq 300); do for u in "$@"; do args+=(-o /dev/null "$base$u"); done; done
  c0=$(cpu); curl -s "${args[@]}"; c1=$(cpu)
  awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", (b - a) * 1000 / 300 }'
}
# shellcheck disable=SC2086
for _ in 1 2; do
  ch=$(cpu_of /healthz /healthz /healthz /healthz /healthz /healthz)
  cp=$(cpu_of / /dashboard/app.js /dashboard/app.css /v1/dashboard/overview \
       /v1/dashboard/agents/bench/series "/v1/dashboard/recent?limit=50")
  awk -v h="$ch" -v p="$cp" 'BEGIN { printf "server CPU per dashboard refresh: %.3f ms (6 x /healthz: %.3f ms): ratio %.1f; at one refresh per 5 s, %.3f%% of a core per open page\n", p, h, (h > 0 ? p / h : 0), p / 50 }'
done

# One open page: every second one curl (one keep-alive connection)
# fetches what the page does. The control polls /healthz the same way, so
# that the pollers' own cost (a process a second each) is in both.
page_urls="/ /dashboard/app.js /dashboard/app.css /v1/dashboard/overview /v1/dashboard/agents/bench/series /v1/dashboard/recent?limit=50"
poll() { # urls...
  local args=()
  for u in "$@"; do args+=(-o /dev/null "$base$u"); done
  while :; do curl -s "${args[@]}" || true; sleep 1; done
}
measure() { # conns requests -> "p50 p99 rps"
  "$load" load --port "$port" --decide /v1/agents/bench/decide -c "$1" -n "$2" \
    --warmup $(($2 / 10)) | sed -n 's/.*p50 \([0-9.]*\) us  p99 \([0-9.]*\) us  \([0-9]*\) req.*/\1 \2 \3/p'
}
declare -A res
for r in $(seq "$rounds"); do
  for mode in control pages; do
    ppids=()
    # shellcheck disable=SC2086
    for _ in 1 2 3 4 5; do
      if [ "$mode" = pages ]; then poll $page_urls & else poll /healthz /healthz /healthz /healthz /healthz /healthz & fi
      ppids+=($!); pids+=($!)
    done
    sleep 1
    for c in 1 32; do
      n=$([ "$c" = 1 ] && echo "$n1" || echo "$n32")
      out=$(measure "$c" "$n")
      echo "round $r, $mode, decide c=$c: p50/p99/rps $out"
      res[$mode.$c]+="$(echo "$out" | cut -d' ' -f1) "
      res[$mode.$c.rps]+="$(echo "$out" | cut -d' ' -f3) "
    done
    for p in "${ppids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for c in 1 32; do
  a=$(echo "${res[control.$c]}" | median) b=$(echo "${res[pages.$c]}" | median)
  ar=$(echo "${res[control.$c.rps]}" | median) br=$(echo "${res[pages.$c.rps]}" | median)
  awk -v a="$a" -v b="$b" -v ar="$ar" -v br="$br" -v c="$c" 'BEGIN {
    printf "decide c=%s: median p50 %.1f us with 5 /healthz pollers (anchor), %.1f us with 5 dashboard pages open: ratio %.2f; req/s %d vs %d: ratio %.2f\n", c, a, b, b / a, ar, br, br / ar }'
done
