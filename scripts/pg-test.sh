#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL 15 for tests and benchmarks.
#
#   scripts/pg-test.sh start DIR   initdb into DIR/data, start on a free
#                                  loopback port (unix socket in DIR/sock),
#                                  wait until ready, then print on stdout
#                                    export AGENTDB_TEST_PG_URL=postgresql://...
#                                  for the caller to eval.
#   scripts/pg-test.sh stop DIR    stop it (fast shutdown); no-op if down.
#                                  A later start reuses DIR and its port.
#   scripts/pg-test.sh env DIR     print the exports again.
#
# Only the exports go to stdout; everything else goes to stderr. As root the
# server runs as the `postgres` OS user (PostgreSQL refuses to run as root),
# so DIR is chowned to it and its parent must be searchable by it.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
dir=${2:-}
say() { echo "pg-test: $*" >&2; }
die() { say "$*"; exit 1; }
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop|env DIR"

as_pg() { # runs a command as the server's OS user
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

print_env() {
  local port
  port=$(cat "$dir/port")
  echo "export AGENTDB_TEST_PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
  echo "export AGENTDB_TEST_PG_PORT=$port"
  echo "export AGENTDB_TEST_PG_DIR=$dir"
}

do_init() {
  [ -x "$PGBIN/initdb" ] || die "$PGBIN/initdb not found (install postgresql-15)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null || die "no 'postgres' OS user"
    chown postgres "$dir"
    as_pg test -w "$dir" ||
      die "$dir is not reachable by user postgres (chmod 755 its parents)"
  fi
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  as_pg mkdir -p "$dir/sock"
  cat >>"$dir/data/postgresql.conf" <<EOF
# pg-test.sh: throwaway test server
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
max_connections = 300
shared_buffers = 128MB
max_wal_size = 1GB
logging_collector = off
log_min_messages = warning
EOF
}

# Starts the server: on the port of an earlier start in DIR if there was one
# (so that a stop/start cycle keeps every client's URL valid), else on
# random free ports until one works (another process may take the port
# between the check and the bind).
do_start_server() {
  local try port
  for try in 1 2 3 4 5 6 7 8; do
    if [ -f "$dir/port" ]; then
      port=$(cat "$dir/port")
    else
      port=$((20000 + RANDOM % 12000)) # below the ephemeral range
      port_in_use "$port" && continue
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port" start >&2; then
      echo "$port" >"$dir/port"
      return 0
    fi
    say "start on port $port failed (try $try):"
    tail -n 5 "$dir/server.log" >&2 || true
    [ -f "$dir/port" ] && sleep 1
  done
  die "could not start PostgreSQL"
}

running() {
  [ -f "$dir/data/postmaster.pid" ] &&
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

wait_ready() {
  local port i
  port=$(cat "$dir/port")
  for i in $(seq 1 100); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres && return 0
    sleep 0.1
  done
  die "server on port $port not ready"
}

case "$cmd" in
start)
  if running && [ -f "$dir/port" ]; then
    say "already running in $dir"
  else
    [ -d "$dir/data" ] || do_init
    dir=$(cd "$dir" && pwd)
    do_start_server
  fi
  wait_ready
  say "PostgreSQL 15 ready on 127.0.0.1:$(cat "$dir/port") ($dir)"
  print_env
  ;;
stop)
  if running; then
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 ||
      say "stop failed"
  fi
  ;;
env)
  [ -f "$dir/port" ] || die "no server in $dir"
  dir=$(cd "$dir" && pwd)
  print_env
  ;;
*) die "unknown command '$cmd' (start|stop|env)" ;;
esac
