# Sourced by test.sh and bench.sh: start and stop the throwaway PostgreSQL
# and Redis servers (when their scripts exist) under one temporary folder.
services_start() { # dir
  if [ -f scripts/pg-test.sh ]; then eval "$(bash scripts/pg-test.sh start "$1/pg")"; fi
  if [ -f scripts/redis-test.sh ]; then eval "$(bash scripts/redis-test.sh start "$1/redis")"; fi
}
services_stop() { # dir
  if [ -f scripts/redis-test.sh ]; then bash scripts/redis-test.sh stop "$1/redis" >/dev/null 2>&1 || true; fi
  if [ -f scripts/pg-test.sh ]; then bash scripts/pg-test.sh stop "$1/pg" >/dev/null 2>&1 || true; fi
}
