#!/usr/bin/env bash
# Throwaway Redis servers for the tests and benchmarks, on loopback ports,
# with no persistence:
#   scripts/redis-test.sh start DIR   one redis-server (DIR/single) and a
#                                     3-master Redis Cluster (DIR/node1..3);
#                                     prints the export lines to eval:
#     export AGENTDB_TEST_REDIS_URL=redis://127.0.0.1:P/0
#     export AGENTDB_TEST_REDIS_CLUSTER_URL=redis-cluster://127.0.0.1:P1,...
#   scripts/redis-test.sh stop DIR    shuts them all down.
# Needs redis-server and redis-cli (Debian 12: redis-server, redis-tools).
set -euo pipefail

die() { echo "redis-test: $*" >&2; exit 1; }

port_busy() { # port -> 0 when something listens there
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Sets PORT to a port P such that P and P+10000 (the cluster bus) are free
# and not already taken by this run.
TAKEN=" "
free_port() {
  local p
  for _ in $(seq 200); do
    # p and its cluster bus p+10000 both below Linux's ephemeral range
    # (32768-60999), where another process's client socket may hold a port.
    p=$((20000 + RANDOM % 2700))
    case "$TAKEN" in *" $p "*|*" $((p + 10000)) "*) continue ;; esac
    if ! port_busy "$p" && ! port_busy $((p + 10000)); then
      TAKEN="$TAKEN$p $((p + 10000)) "
      PORT=$p
      return 0
    fi
  done
  die "no free port"
}

start_server() { # dir port extra-args...
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --save "" --appendonly no --protected-mode yes "$@" >/dev/null ||
    die "redis-server on port $port did not start (see $dir/redis.log)"
  echo "$port" >"$dir/port"
}

pings() { # port: 0 once it answers PONG (within 10 s)
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  return 1
}

# Starts a server in dir on a free port (PORT), trying other ports when one
# does not answer: a port can be taken between the check and the bind.
start_answering() { # dir extra-args...
  local dir=$1 try pid
  shift
  for try in 1 2 3 4 5; do
    free_port
    start_server "$dir" "$PORT" "$@"
    pings "$PORT" && return 0
    echo "redis-test: port $PORT does not answer (try $try)" >&2
    pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/port" "$dir/redis.pid" "$dir/nodes.conf"
  done
  die "redis-server in $dir did not answer on 5 ports (see $dir/redis.log)"
}

wait_cluster_ok() { # ports...
  local p ok
  for _ in $(seq 200); do
    ok=1
    for p in "$@"; do
      redis-cli -p "$p" cluster info 2>/dev/null |
        grep -q '^cluster_state:ok' || ok=0
    done
    [ $ok = 1 ] && return 0
    sleep 0.1
  done
  die "cluster on ports $* did not reach cluster_state:ok"
}

cmd_start() {
  local dir=$1
  command -v redis-server >/dev/null || die "redis-server not installed"
  command -v redis-cli >/dev/null || die "redis-cli not installed"
  [ ! -e "$dir/single/port" ] || die "$dir is in use: stop it first"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local single ports=()
  start_answering "$dir/single"
  single=$PORT
  for i in 1 2 3; do
    start_answering "$dir/node$i" --cluster-enabled yes \
      --cluster-config-file "$dir/node$i/nodes.conf" \
      --cluster-node-timeout 5000
    ports+=("$PORT")
  done
  redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" \
    "127.0.0.1:${ports[2]}" --cluster-replicas 0 --cluster-yes \
    >"$dir/cluster-create.log" 2>&1 ||
    die "redis-cli --cluster create failed (see $dir/cluster-create.log)"
  wait_cluster_ok "${ports[@]}"
  echo "export AGENTDB_TEST_REDIS_URL=redis://127.0.0.1:$single/0"
  echo "export AGENTDB_TEST_REDIS_CLUSTER_URL=redis-cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
}

cmd_stop() {
  local dir=$1 d pid
  for d in "$dir"/single "$dir"/node1 "$dir"/node2 "$dir"/node3; do
    [ -f "$d/port" ] || continue
    pid=$(cat "$d/redis.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -CONT "$pid" 2>/dev/null || true
    timeout 5 redis-cli -p "$(cat "$d/port")" shutdown nosave >/dev/null 2>&1 ||
      true
    if [ -n "$pid" ]; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

case "${1:-}" in
  start) [ -n "${2:-}" ] || die "usage: $0 start DIR"; cmd_start "$2" ;;
  stop) [ -n "${2:-}" ] || die "usage: $0 stop DIR"; cmd_stop "$2" ;;
  *) die "usage: $0 start|stop DIR" ;;
esac
