#!/usr/bin/env bash
# Structured logs and X-Request-Id of `agentdb serve` (ctest test_logs):
#  1. on SQLite, JSON format: start, config, request_error with the request
#     id, slow_request, shutdown, stopped; X-Request-Id echoed when valid,
#     generated otherwise; every line one JSON object;
#  2. text format: the same events as "TS LEVEL EVENT: MSG k=v";
#  3. on its own PostgreSQL (scripts/pg-test.sh) and Redis (redis-server),
#     stopped and started again under the server: store_down and store_up,
#     cache_down and cache_up, and agentdb_store_up / agentdb_cache_up on
#     /metrics following them. Skipped (said so) without PostgreSQL 15 or
#     redis-server.
#   logs.sh AGENTDB_BIN SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/adb-logs.XXXXXX")
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash "$src/scripts/pg-test.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$src/tests/checks.sh"

start() { # name args... -> sets BASE and SPID; stderr to $tmp/name.err
  local name=$1; shift
  serve_bg "$tmp/$name.out" "$tmp/$name.err" "$bin" serve --listen 127.0.0.1:0 "$@" || true
  pids+=("$SPID")
  [ -n "$BASE" ] && return 0
  echo "server $name did not start in 30 s"; cat "$tmp/$name.err"; exit 1
}
stop() { kill -TERM "$SPID"; wait "$SPID" || true; }
# Waits up to 60 s (bounded; sanitizer builds on a loaded CI machine
# reconnect slowly) for an event line in a log.
wait_event() { # file regex
  for _ in $(seq 600); do grep -qE "$2" "$1" && return 0; sleep 0.1; done
  return 1
}
hdr() { curl -s -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^X-Request-Id: //Ip'; }

# --- 1. JSON lines on SQLite
start json --store "sqlite://$tmp/a.db" --threads 2 --log-format json \
  --slow-request-ms 1 --flush-interval-ms 50
curl -s -X PUT "$BASE/v1/agents/a" -d '{}' >/dev/null
id=$(hdr -H 'X-Request-Id: client-id-42' "$BASE/v1/agents/nope")
check "a valid client X-Request-Id is echoed" [ "$id" = client-id-42 ]
id=$(hdr -H 'X-Request-Id: not valid!' "$BASE/healthz")
check "an invalid one is replaced by a generated id ($id)" \
  bash -c "[[ '$id' =~ ^[0-9a-f]{16}$ ]]"
id2=$(hdr "$BASE/healthz")
check "each request gets its own id" [ -n "$id2" ] && [ "$id2" != "$id" ]
# A sync reward waits for a commit, at least one 50 ms flush interval away.
curl -s -X PUT "$BASE/v1/agents/a/actions/x" -d '{}' >/dev/null
curl -s -X POST "$BASE/v1/agents/a/rewards" -H 'X-Request-Id: slow-1' \
  -d '{"reward_id":"r1","user_id":"u","action":"x","reward":1}' >/dev/null
stop
log=$tmp/json.err
cat "$log"
check "start event" grep -qE '^\{"ts":"[^"]+Z","level":"info","event":"start",' "$log"
check "config event lists the settings" grep -qE '"event":"config".*"slow-request-ms":"1"' "$log"
check "request_error carries the client's request id" \
  grep -qE '"event":"request_error".*"status":404.*"request_id":"client-id-42","error":\{"code":"not_found"' "$log"
check "slow_request event for the slow reward" \
  grep -qE '"event":"slow_request".*"path":"/v1/agents/a/rewards".*"request_id":"slow-1"' "$log"
check "shutdown and stopped events" \
  bash -c "grep -q '\"event\":\"shutdown\"' '$log' && grep -q '\"event\":\"stopped\",\"msg\":\"stopped cleanly\"' '$log'"
check "every line is one JSON object" bash -c "! grep -vqE '^\{\"ts\":.*\}$' '$log'"

# --- 2. text format
start text --store "sqlite://$tmp/b.db" --threads 1 --log-format text
curl -s -H 'X-Request-Id: t-1' "$BASE/v1/agents/nope" >/dev/null
stop
log=$tmp/text.err
cat "$log"
check "text: start line" grep -qE '^[0-9-]+T[0-9:.]+Z info start: serving address=127' "$log"
check "text: request_error line with request id" \
  grep -qE ' warn request_error: not_found .*status=404 .*request_id=t-1 ' "$log"
check "text: stopped line" grep -qE ' info stopped: stopped cleanly' "$log"
check "text: no JSON lines" bash -c "! grep -q '^{' '$log'"
check "--log-format is validated" \
  bash -c "! '$bin' serve --log-format yaml 2>/dev/null"

# --- 3. store and cache down and back
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! command -v redis-server >/dev/null; then
  echo "SKIPPED store/cache down-and-back part: needs postgresql-15 and redis-server (scripts/deps.sh)"
else
  eval "$(bash "$src/scripts/pg-test.sh" start "$tmp/pg")"
  rport=$((21000 + RANDOM % 11000)) # below the ephemeral range
  redis() { redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & RPID=$!; pids+=("$RPID"); }
  redis
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  start outage --store "$AGENTDB_TEST_PG_URL" --cache "redis://127.0.0.1:$rport/0" \
    --threads 2 --log-format json --write-timeout-ms 2000
  log=$tmp/outage.err
  curl -s -X PUT "$BASE/v1/agents/o" -d '{}' >/dev/null
  curl -s -X PUT "$BASE/v1/agents/o/actions/x" -d '{}' >/dev/null
  traffic() { for _ in $(seq 5); do curl -s -m 3 -X POST "$BASE/v1/agents/o/decide" -d '{"user_id":"u","candidates":["x"]}' >/dev/null; done; }
  gauge() { curl -s -m 5 "$BASE/metrics" | sed -n "s/^$1 //p"; }
  check "store and cache up at first" [ "$(gauge agentdb_store_up)$(gauge agentdb_cache_up)" = 11 ]
  kill "$RPID"; wait "$RPID" 2>/dev/null || true
  for _ in $(seq 60); do traffic; grep -q '"event":"cache_down"' "$log" && break; sleep 0.5; done
  check "cache_down event when Redis stops" grep -q '"level":"error","event":"cache_down"' "$log"
  check "agentdb_cache_up 0 while it is down" [ "$(gauge agentdb_cache_up)" = 0 ]
  redis
  check "cache_up event when Redis is back" wait_event "$log" '"event":"cache_up"'
  bash "$src/scripts/pg-test.sh" stop "$tmp/pg" >/dev/null 2>&1
  check "store_down event when PostgreSQL stops" wait_event "$log" '"level":"error","event":"store_down"'
  check "agentdb_store_up 0 while it is down" [ "$(gauge agentdb_store_up)" = 0 ]
  eval "$(bash "$src/scripts/pg-test.sh" start "$tmp/pg")"
  check "store_up event when PostgreSQL is back" wait_event "$log" '"event":"store_up"'
  check "agentdb_store_up 1 again" [ "$(gauge agentdb_store_up)" = 1 ]
  stop
  grep -E '"event":"(store|cache)_' "$log" || true
fi
checks_end
