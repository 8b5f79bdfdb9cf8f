# Named checks for the shell tests (sourced): `check WHAT CMD...` prints
# "ok   WHAT" or "FAIL WHAT" and counts; `checks_end` prints the closing
# "N passed, N failed" line and returns non-zero on any failure.
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
checks_end() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; }
