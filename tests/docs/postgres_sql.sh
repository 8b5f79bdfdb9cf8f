#!/usr/bin/env bash
# The SQL of docs/postgres.md, run as written on a real PostgreSQL 15 of
# its own (scripts/pg-test.sh), and what the text around each block says
# of it checked (ctest doc_postgres_sql):
#  1. the role and a database of its own: `agentdb migrate` as that role;
#  2. a schema of its own inside an existing database: the tables land in
#     it;
#  3. the grants to a service role that owns nothing: `agentdb serve` as
#     that role decides and takes a durable reward;
#  4. the partition functions, by hand;
#  5. apply_reward by hand: the user's row and the agent-wide row.
# Blocks are taken by their order among the document's ```sql blocks.
# Skipped (said so) without PostgreSQL 15.
#   postgres_sql.sh AGENTDB_BIN SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
doc=$src/docs/postgres.md
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! command -v psql >/dev/null; then
  echo "doc_postgres_sql: SKIPPED: needs postgresql-15 (scripts/deps.sh)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/adb-pgdoc.XXXXXX")
chmod 755 "$tmp"
spid=
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null || true
  bash "$src/scripts/pg-test.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$src/tests/checks.sh"

eval "$(bash "$src/scripts/pg-test.sh" start "$tmp/pg")"
port=$AGENTDB_TEST_PG_PORT
url() { echo "postgresql://$1@127.0.0.1:$port/$2"; } # role database
# The n-th ```sql block of the document (1-based).
block() {
  awk -v n="$1" '/^```sql/ { k++; on = (k == n); next }
                 /^```/ { on = 0 } on' "$doc"
}
run() { # role database: SQL on stdin, stops at the first error
  psql -X -q -v ON_ERROR_STOP=1 "$(url "$1" "$2")" >"$tmp/psql.out" 2>&1 ||
    { cat "$tmp/psql.out"; return 1; }
}
q() { psql -X -At "$(url "$1" "$2")" -c "$3"; } # role database query
migrate() { "$bin" migrate --store "$(url "$1" "$2")" >"$tmp/migrate.out" 2>&1 ||
  { cat "$tmp/migrate.out"; return 1; }; }
n_blocks=$(grep -c '^```sql' "$doc")
check "the document has the 5 SQL blocks this test walks ($n_blocks)" [ "$n_blocks" = 5 ]

# 1. A role and a database of its own; the role migrates it.
check "block 1 (role, database) runs" run postgres postgres < <(block 1)
check "agentdb migrate as the new role" migrate agentdb agentdb
check "its tables belong to it" \
  [ "$(q agentdb agentdb "SELECT tableowner FROM pg_tables WHERE tablename = 'decisions'")" = agentdb ]

# 2. A schema of its own inside an existing database.
q postgres postgres "CREATE DATABASE appdb" >/dev/null
check "block 2 (schema, search_path) runs" run postgres appdb < <(block 2)
check "agentdb migrate into that schema" migrate agentdb appdb
check "the tables are in schema agentdb, none in public" \
  [ "$(q agentdb appdb "SELECT string_agg(DISTINCT schemaname, ',') FROM pg_tables WHERE tablename IN ('decisions', 'rl_policies')")" = agentdb ]

# 3. A service role that owns nothing, with the documented grants.
q postgres postgres "CREATE ROLE agentdb_app LOGIN" >/dev/null
check "block 3 (grants) runs" run postgres appdb < <(block 3)
serve_bg "$tmp/serve.out" "$tmp/serve.err" "$bin" serve --listen 127.0.0.1:0 \
  --store "$(url agentdb_app appdb)" --threads 1 || true
spid=$SPID base=$BASE
check "agentdb serve starts as the service role" [ -n "$base" ]
if [ -n "$base" ]; then
  code() { curl -s -o "$tmp/body" -w '%{http_code}' "$@"; }
  check "it creates an agent" [ "$(code -X PUT "$base/v1/agents/recs" -d '{}')" = 200 ]
  code -X PUT "$base/v1/agents/recs/actions/movie-7" -d '{}' >/dev/null
  check "it decides" [ "$(code -X POST "$base/v1/agents/recs/decide" \
    -d '{"user_id":"u1","candidates":["movie-7"],"event_id":"e1"}')" = 200 ]
  check "it stores a durable reward" [ "$(code -X POST "$base/v1/agents/recs/rewards" \
    -d '{"reward_id":"r1","event_id":"e1","reward":1}')" = 200 ]
  kill -TERM "$spid"; wait "$spid" || true; spid=
fi
[ "$fail" -eq 0 ] || cat "$tmp/serve.err"
check "the service role owns no table" \
  [ "$(q postgres appdb "SELECT count(*) FROM pg_tables WHERE tableowner = 'agentdb_app'")" = 0 ]
check "its reward is stored" \
  [ "$(q agentdb appdb "SELECT count(*) FROM reward_ids WHERE agent_id = 'recs'")" = 1 ]

# 4. Partitions by hand, as the owner.
before=$(q agentdb appdb "SELECT count(*) FROM pg_inherits WHERE inhparent = 'decisions'::regclass")
check "block 4 (partition functions) runs" run agentdb appdb < <(block 4)
after=$(q agentdb appdb "SELECT count(*) FROM pg_inherits WHERE inhparent = 'decisions'::regclass")
check "a partition of decisions was added ($before -> $after)" [ "$after" -gt "$before" ]

# 5. apply_reward by hand, with a real state key in the placeholder.
key=$(printf 'a%.0s' $(seq 64))
check "block 5 (apply_reward) runs" \
  run agentdb appdb < <(block 5 | sed "s/<64-hex state key>/$key/")
check "the user's row and the agent-wide row each got n + 1" \
  [ "$(q agentdb appdb "SELECT string_agg(user_id || '=' || n, ',' ORDER BY user_id) FROM rl_policies WHERE agent_id = 'recs' AND state_key = '$key' AND action_id = 'movie-7'")" = "*=1,user-42=1" ]

checks_end
