# Named checks for the shell tests (sourced): `check WHAT CMD...` prints
# "ok   WHAT" or "FAIL WHAT" and counts; `checks_end` prints the closing
# "N passed, N failed" line and returns non-zero on any failure;
# `serve_bg` (below) starts a server and waits until it listens.
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
checks_end() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; }

# serve_bg OUT ERR CMD...: starts CMD (an `agentdb serve --listen
# 127.0.0.1:0 ...`) in the background, stdout to OUT and stderr to ERR,
# and waits up to 30 s for its "listening on" line. Sets SPID and BASE
# (http://HOST:PORT); returns 1 when it exits or does not listen in time.
# OUT exists before the job starts: the job opens it only when it runs,
# and a sed on a missing file would end a `set -e` script.
serve_bg() {
  local out=$1 err=$2; shift 2
  : >"$out"
  "$@" >"$out" 2>"$err" &
  SPID=$!
  BASE=
  for _ in $(seq 600); do
    BASE=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$out")
    [ -n "$BASE" ] && return 0
    kill -0 "$SPID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
