#!/usr/bin/env bash
# The Prometheus side (ctest test_promtool): `promtool check rules` and
# `promtool test rules` on deploy/prometheus/, `promtool check metrics` on
# a live /metrics after some traffic (decisions, rewards, errors), and the
# Grafana dashboard: valid JSON whose every queried series exists on that
# /metrics. Needs promtool (Debian's prometheus package, in
# scripts/deps.sh); without it says so and exits 77 (skipped).
#   promtool.sh AGENTDB_BIN SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
command -v promtool >/dev/null ||
  { echo "SKIPPED test_promtool: no promtool (apt-get install prometheus, or bash scripts/deps.sh)" >&2; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/adb-prom.XXXXXX")
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
. "$src/tests/checks.sh"

check "promtool check rules deploy/prometheus/alerts.yml" \
  promtool check rules "$src/deploy/prometheus/alerts.yml"
check "promtool test rules deploy/prometheus/alerts_test.yml" \
  promtool test rules "$src/deploy/prometheus/alerts_test.yml"

serve_bg "$tmp/out" "$tmp/err" "$bin" serve --listen 127.0.0.1:0 \
  --store "sqlite://$tmp/db" --threads 2 || true
spid=$SPID base=$BASE
[ -n "$base" ] || { cat "$tmp/err"; exit 1; }
curl -s -X PUT "$base/v1/agents/m" -d '{}' >/dev/null
curl -s -X POST "$base/v1/agents/m/actions" -d '{"actions":[{"id":"a"},{"id":"b"}]}' >/dev/null
for i in $(seq 20); do
  ev=$(curl -s -X POST "$base/v1/agents/m/decide" -d '{"user_id":"u","candidates":["a","b"]}' |
       sed -n 's/.*"event_id":"\([^"]*\)".*/\1/p')
  curl -s -X POST "$base/v1/agents/m/rewards" -d "{\"reward_id\":\"r$i\",\"event_id\":\"$ev\",\"reward\":1}" >/dev/null
done
curl -s "$base/v1/agents/none" >/dev/null
curl -s -X POST "$base/v1/agents/m/decide" -d '{' >/dev/null
sleep 1.2 # one health check: agentdb_store_up and agentdb_cache_up
curl -s "$base/metrics" >"$tmp/metrics"
check "promtool check metrics on a live /metrics" \
  bash -c "promtool check metrics < '$tmp/metrics'"
check "per-agent series: 20 decisions of agent m" \
  grep -qx 'agentdb_agent_decisions_total{agent="m"} 20' "$tmp/metrics"
check "per-agent decide latency histogram" \
  grep -q '^agentdb_agent_decide_duration_seconds_count{agent="m"} 20$' "$tmp/metrics"
check "build info and process series" \
  bash -c "grep -q '^agentdb_build_info{version=' '$tmp/metrics' && grep -q '^process_resident_memory_bytes [1-9]' '$tmp/metrics' && grep -q '^process_open_fds [1-9]' '$tmp/metrics' && grep -q '^process_start_time_seconds [1-9]' '$tmp/metrics'"

# The dashboard: valid JSON (CMake's parser), and every series it queries
# (and every one the alerts use, up{} aside) is exposed.
dash=$src/deploy/grafana/agentdb.json
cat >"$tmp/json.cmake" <<'CM'
file(READ "${F}" c)
string(JSON n ERROR_VARIABLE e LENGTH "${c}" panels)
if(e)
  message(FATAL_ERROR "${F}: ${e}")
endif()
message("panels: ${n}")
CM
check "Grafana dashboard is valid JSON with panels" cmake -DF="$dash" -P "$tmp/json.cmake"
missing=
for m in $(grep -ohE '\b(agentdb|process)_[a-z_]+' "$dash" "$src/deploy/prometheus/alerts.yml" | sort -u); do
  grep -qE "^$m(\{| )" "$tmp/metrics" || grep -qE "^${m}_bucket\{" "$tmp/metrics" || missing="$missing $m"
done
check "every series the dashboard and alerts use is on /metrics${missing:+ (missing:$missing)}" [ -z "$missing" ]
kill -TERM "$spid"; wait "$spid" || true; spid=
checks_end
