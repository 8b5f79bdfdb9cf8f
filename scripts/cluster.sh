#!/usr/bin/env bash
# The production topology on one machine, on loopback: PostgreSQL 15, Redis
# (single, or a 3-master Redis Cluster), the schema migration (as the
# Kubernetes Job does it), N `agentdb serve` replicas with the settings of
# deploy/kubernetes/base/configmap.yaml, and HAProxy in front of them,
# health-checking /readyz as the Kubernetes Service's readiness does.
# Everything lives under DIR, on random free ports.
#
#   scripts/cluster.sh up DIR [--redis-cluster] [--replicas N]
#       starts it all; prints the export lines to eval (also in DIR/env):
#         AGENTDB_CLUSTER_URL        http://127.0.0.1:PORT (the balancer)
#         AGENTDB_CLUSTER_API_KEY    the key for Authorization: Bearer
#         AGENTDB_CLUSTER_PG_URL     the PostgreSQL database
#         AGENTDB_CLUSTER_REDIS_URL  the cache URL the replicas use
#         AGENTDB_CLUSTER_REPLICAS   how many replicas
#   scripts/cluster.sh down DIR          stops everything under DIR
#   scripts/cluster.sh kill DIR I        SIGKILL replica I (1-based)
#   scripts/cluster.sh stop DIR I        SIGTERM replica I, wait for its drain
#   scripts/cluster.sh start DIR I       (re)start replica I on its port
#   scripts/cluster.sh status DIR        replicas' pids and ports
#
# Binary: $AGENTDB_BIN, else build/agentdb. Needs haproxy (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
die() { echo "cluster: $*" >&2; exit 1; }
say() { echo "cluster: $*" >&2; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 200); do
    # Below Linux's ephemeral range (32768-60999), where a client socket of
    # another process can hold the port without listening on it.
    p=$((20000 + RANDOM % 12000))
    port_busy "$p" || { echo "$p"; return 0; }
  done
  die "no free port"
}

haproxy_bin() {
  command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } ||
    die "haproxy not installed (scripts/deps.sh installs it)"
}

# The AGENTDB_* settings of the manifests' ConfigMap, as NAME=VALUE lines.
manifest_settings() {
  awk '/^data:/ {on = 1; next} /^[^ ]/ {on = 0}
       on && $1 ~ /^AGENTDB_[A-Z0-9_]+:$/ {
         k = substr($1, 1, length($1) - 1); $1 = ""; v = substr($0, 2)
         gsub(/^"|"$/, "", v); print k "=" v }' deploy/kubernetes/base/configmap.yaml
}

start_replica() { # dir i
  local dir=$1 i=$2 r=$1/replica-$2
  local port bin=${AGENTDB_BIN:-$repo/build/agentdb}
  port=$(cat "$r/port")
  [ -x "$bin" ] || die "no agentdb binary at $bin (build first, or set AGENTDB_BIN)"
  if [ -f "$r/pid" ] && kill -0 "$(cat "$r/pid")" 2>/dev/null; then
    die "replica $i is running (pid $(cat "$r/pid"))"
  fi
  : >"$r/out.log"
  (
    set -a
    # shellcheck disable=SC1091
    . "$dir/settings.env"
    AGENTDB_LISTEN=127.0.0.1:$port
    exec "$bin" serve >>"$r/out.log" 2>>"$r/err.log" </dev/null
  ) &
  echo $! >"$r/pid"
  for _ in $(seq 300); do
    grep -q "listening on" "$r/out.log" 2>/dev/null && return 0
    kill -0 "$(cat "$r/pid")" 2>/dev/null || break
    sleep 0.05
  done
  tail -n 5 "$r/err.log" >&2 || true
  # Taken between the check and the bind: the caller may try another port.
  grep -q "already in use" "$r/err.log" 2>/dev/null && return 2
  die "replica $i did not start (see $r/err.log)"
}

write_haproxy_cfg() { # dir lbport n
  local dir=$1 lb=$2 n=$3 i
  # A refused or dropped connection to a replica becomes a JSON 503 with
  # Retry-After, the answer AgentDB itself gives when it cannot take work.
  for code in 502 503 504; do
    printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n{"error":{"code":"unavailable","message":"no replica could answer (balancer %s); retry"}}\n' \
      "$code" >"$dir/haproxy-$code.http"
  done
  {
    cat <<EOF
# Written by scripts/cluster.sh.
global
    pidfile $dir/haproxy.pid
    stats socket $dir/haproxy.sock mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    # Only a request that never reached a replica is sent again (to another):
    # safe for every route, idempotent or not.
    retries 3
    retry-on conn-failure
    option redispatch 1
    http-reuse safe
    errorfile 502 $dir/haproxy-502.http
    errorfile 503 $dir/haproxy-503.http
    errorfile 504 $dir/haproxy-504.http
frontend agentdb
    bind 127.0.0.1:$lb
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 300ms fall 2 rise 2
EOF
    for i in $(seq 1 "$n"); do
      echo "    server r$i 127.0.0.1:$(cat "$dir/replica-$i/port")"
    done
  } >"$dir/haproxy.cfg"
}

cmd_up() {
  local dir=$1; shift
  local cluster=0 n=3
  while [ $# -gt 0 ]; do
    case $1 in
      --redis-cluster) cluster=1 ;;
      --replicas) n=$2; shift ;;
      *) die "unknown option $1" ;;
    esac
    shift
  done
  [ ! -e "$dir/env" ] || die "$dir is in use: run down first"
  mkdir -p "$dir"
  chmod 755 "$dir"
  dir=$(cd "$dir" && pwd)
  local hap
  hap=$(haproxy_bin)
  eval "$(bash scripts/pg-test.sh start "$dir/pg")"
  local pg_url=${AGENTDB_TEST_PG_URL%/postgres}/agentdb
  psql -q -d "$AGENTDB_TEST_PG_URL" -c "CREATE DATABASE agentdb" >/dev/null
  eval "$(bash scripts/redis-test.sh start "$dir/redis")"
  local cache=$AGENTDB_TEST_REDIS_URL
  [ $cluster = 1 ] && cache=$AGENTDB_TEST_REDIS_CLUSTER_URL
  # The migration Job, then the replicas (which would also migrate).
  AGENTDB_STORE=$pg_url "${AGENTDB_BIN:-$repo/build/agentdb}" migrate >"$dir/migrate.log" ||
    die "agentdb migrate failed (see $dir/migrate.log)"
  local key
  key=k$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  echo "$key" >"$dir/api-keys"
  {
    manifest_settings
    echo "AGENTDB_STORE=$pg_url"
    echo "AGENTDB_CACHE=$cache"
    echo "AGENTDB_API_KEYS_FILE=$dir/api-keys"
  } | awk -F= '{k = $1; sub(/^[^=]*=/, ""); v[k] = $0; if (!(k in seen)) order[n++] = k; seen[k] = 1}
         END {for (i = 0; i < n; i++) printf "%s=\x27%s\x27\n", order[i], v[order[i]]}' >"$dir/settings.env"
  local i
  for i in $(seq 1 "$n"); do
    mkdir -p "$dir/replica-$i"
    local try rc=2
    for try in 1 2 3 4 5; do
      free_port >"$dir/replica-$i/port"
      rc=0
      start_replica "$dir" "$i" || rc=$?
      [ "$rc" -eq 2 ] || break
      : >"$dir/replica-$i/err.log"
    done
    [ "$rc" -eq 0 ] || die "replica $i did not start: no free port"
  done
  local lb
  lb=$(free_port)
  write_haproxy_cfg "$dir" "$lb" "$n"
  "$hap" -c -q -f "$dir/haproxy.cfg" || die "haproxy rejects $dir/haproxy.cfg"
  "$hap" -D -f "$dir/haproxy.cfg" 2>"$dir/haproxy.log" || die "haproxy did not start"
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$lb/readyz" && break
    sleep 0.1
  done
  {
    echo "export AGENTDB_CLUSTER_URL=http://127.0.0.1:$lb"
    echo "export AGENTDB_CLUSTER_API_KEY=$key"
    echo "export AGENTDB_CLUSTER_PG_URL=$pg_url"
    echo "export AGENTDB_CLUSTER_REDIS_URL=$cache"
    echo "export AGENTDB_CLUSTER_REPLICAS=$n"
  } >"$dir/env"
  say "up: $n replicas behind http://127.0.0.1:$lb (store $pg_url, cache $cache)"
  cat "$dir/env"
}

replica_dir() { # dir i
  [ -f "$1/replica-$2/port" ] || die "no replica $2 in $1"
  echo "$1/replica-$2"
}

wait_exit() { # pid seconds
  local i
  for i in $(seq $(($2 * 20))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  return 1
}

cmd_kill() {
  local r
  r=$(replica_dir "$1" "$2")
  local pid
  pid=$(cat "$r/pid")
  kill -KILL "$pid" 2>/dev/null || true
  wait_exit "$pid" 10 || die "replica $2 (pid $pid) survives SIGKILL"
}

cmd_stop() {
  local r pid
  r=$(replica_dir "$1" "$2")
  pid=$(cat "$r/pid")
  kill -TERM "$pid" 2>/dev/null || return 0
  wait_exit "$pid" 60 || { kill -KILL "$pid" 2>/dev/null; die "replica $2 did not drain in 60s"; }
}

cmd_down() {
  local dir=$1 r pid
  [ -d "$dir" ] || return 0
  if [ -f "$dir/haproxy.pid" ]; then
    pid=$(cat "$dir/haproxy.pid")
    kill -TERM "$pid" 2>/dev/null && wait_exit "$pid" 10 || true
  fi
  for r in "$dir"/replica-*; do
    [ -f "$r/pid" ] || continue
    pid=$(cat "$r/pid")
    kill -TERM "$pid" 2>/dev/null && { wait_exit "$pid" 30 || kill -KILL "$pid" 2>/dev/null; } || true
  done
  bash scripts/redis-test.sh stop "$dir/redis" >/dev/null 2>&1 || true
  bash scripts/pg-test.sh stop "$dir/pg" >/dev/null 2>&1 || true
  rm -f "$dir/env"
}

cmd_status() {
  local r
  for r in "$1"/replica-*; do
    local pid
    pid=$(cat "$r/pid" 2>/dev/null || echo -)
    if kill -0 "$pid" 2>/dev/null; then s=running; else s=down; fi
    echo "$(basename "$r") port $(cat "$r/port") pid $pid $s"
  done
}

[ $# -ge 2 ] || die "usage: $0 up|down|kill|stop|start|status DIR [...]"
cmd=$1 dir=$2
shift 2
case $cmd in
  up) cmd_up "$dir" "$@" ;;
  down) cmd_down "$dir" ;;
  kill) cmd_kill "$dir" "$1" ;;
  stop) cmd_stop "$dir" "$1" ;;
  start) start_replica "$(cd "$dir" && pwd)" "$1" || die "replica $1 did not start" ;;
  status) cmd_status "$dir" ;;
  *) die "unknown command $cmd" ;;
esac
