#!/usr/bin/env bash
# The chaos soak: PostgreSQL + Redis + two `agentdb serve` replicas (and a
# third on SQLite in a small tmpfs) under mixed decide/reward/episode load
# while faults are injected on a schedule; a ledger checks at the end that
# no acknowledged reward was lost or doubled, every posterior is exact, no
# answer was wrong, RSS stayed flat and the service recovered after each
# fault (tests/soak_driver.c has the details). Bounded: minutes, not hours.
#
#   scripts/soak.sh [--seconds N] [--no-canary] [--canary-only]
#                   [--build DIR]
#
#   --seconds N    length of the load phase (default $SOAK_SECONDS or 90)
#   --no-canary    skip the canary run (async durability + replica SIGKILL,
#                  which must report losses)
#   --build DIR    build folder with agentdb and soak_driver (default build;
#                  built first when missing)
#
# It starts a PostgreSQL of its own (scripts/pg-test.sh, in a temporary
# folder: the driver stops and starts it) and the driver starts its own
# Redis and replicas; all of them are stopped at the end. The fault 'fill
# the SQLite disk' needs to mount a tmpfs (root); without that it is
# skipped, and the driver says so.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SOAK_SECONDS:-90}
canary=1
main=1
build=build
while [ $# -gt 0 ]; do
  case "$1" in
  --seconds) seconds=$2; shift 2 ;;
  --no-canary) canary=0; shift ;;
  --canary-only) main=0; shift ;;
  --build) build=$2; shift 2 ;;
  *) echo "usage: $0 [--seconds N] [--no-canary] [--canary-only] [--build DIR]" >&2; exit 2 ;;
  esac
done
case "$build" in /*) ;; *) build=$PWD/$build ;; esac
if [ ! -x "$build/soak_driver" ] || [ ! -x "$build/agentdb" ]; then
  cmake -S . -B "$build" >/dev/null
  nice cmake --build "$build" -j2 --target soak_driver agentdb_bin >/dev/null
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/agentdb-soak.XXXXXX")
chmod 755 "$tmp"
cleanup() {
  scripts/pg-test.sh stop "$tmp/pg" || true
  for m in "$tmp"/adb-soak-*/sqlite-disk; do # left mounted by a crash
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
eval "$(scripts/pg-test.sh start "$tmp/pg")"
export ADB_BIN=$build/agentdb ADB_SOURCE_DIR=$PWD TMPDIR=$tmp
status=0
if [ $main = 1 ]; then
  nice "$build/soak_driver" --seconds "$seconds" || status=1
fi
if [ $canary = 1 ]; then
  nice "$build/soak_driver" --canary --seconds 30 || status=1
fi
if [ $status != 0 ]; then # keep the replicas' logs for a look
  keep=$(mktemp -d /tmp/agentdb-soak-logs.XXXXXX)
  for d in "$tmp"/adb-soak-*; do
    mkdir -p "$keep/${d##*/}" && cp "$d"/*.log "$keep/${d##*/}/" 2>/dev/null || true
  done
  echo "soak: replica logs kept in $keep" >&2
fi
exit $status
