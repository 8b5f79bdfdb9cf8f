#!/usr/bin/env bash
# test_install: `make install-files DESTDIR=STAGE` (what `make install`
# runs after building) into a staging folder, then checks the installed
# tree and builds tests/install/prog.c against it twice with pkg-config
# only (PKG_CONFIG_SYSROOT_DIR and PKG_CONFIG_PATH point into the stage):
# once against the shared library (and runs it with the staged .so), once
# statically (pkg-config --static must name every dependency).
#   test_install.sh SOURCE_DIR BUILD_DIR   (env ADB_TEST_CFLAGS: sanitizers)
set -euo pipefail
src=$1 build=$2
prefix=/usr/local
stage=$(mktemp -d "${TMPDIR:-/tmp}/agentdb-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

make -s -C "$src" install-files BUILD="$build" PREFIX="$prefix" \
  DESTDIR="$stage" >"$stage/install.log" || { cat "$stage/install.log"; fail "make install"; }

root=$stage$prefix
pcdir=$(dirname "$(find "$root" -name agentdb.pc | head -1)")
[ -f "$pcdir/agentdb.pc" ] || fail "no agentdb.pc installed"
libdir=$(dirname "$pcdir")
version=$(sed -n 's/^#define ADB_VERSION "\(.*\)"/\1/p' "$src/include/agentdb.h")
major=${version%%.*}
for f in "$root/bin/agentdb" "$root/include/agentdb.h" "$libdir/libagentdb.a" \
  "$libdir/libagentdb.so.$version" "$root/share/man/man1/agentdb.1" \
  "$root/share/doc/agentdb/openapi.yaml"; do
  [ -f "$f" ] || fail "missing $f"
done
[ "$(readlink "$libdir/libagentdb.so.$major")" = "libagentdb.so.$version" ] ||
  fail "libagentdb.so.$major does not point at libagentdb.so.$version"
[ "$(readlink "$libdir/libagentdb.so")" = "libagentdb.so.$major" ] ||
  fail "libagentdb.so does not point at libagentdb.so.$major"
soname=$(objdump -p "$libdir/libagentdb.so.$version" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = "libagentdb.so.$major" ] || fail "SONAME is '$soname'"
internal=$(nm -D --defined-only "$libdir/libagentdb.so.$version" | awk '$3 ~ /^adb__/' | wc -l)
[ "$internal" -eq 0 ] || fail "$internal internal adb__ symbols exported"
grep -q '^\.TH AGENTDB 1' "$root/share/man/man1/agentdb.1" || fail "man page"
grep -q -- '--store URL' "$root/share/man/man1/agentdb.1" ||
  fail "man page lacks the serve options"
grep -qx "agentdb $version" <<<"$("$root/bin/agentdb" version)" || fail "agentdb version"

export PKG_CONFIG_SYSROOT_DIR=$stage PKG_CONFIG_PATH=$pcdir
[ "$(pkg-config --modversion agentdb)" = "$version" ] || fail "pkg-config --modversion"
cflags=$(pkg-config --cflags agentdb)
case "$cflags" in *"-I$root/include"*) ;; *) fail "cflags '$cflags' miss the staged include dir" ;; esac
cc=${CC:-cc}
extra=${ADB_TEST_CFLAGS:-}
# shellcheck disable=SC2086
$cc -std=c11 -Wall -Wextra -Werror $extra $cflags "$src/tests/install/prog.c" \
  -o "$stage/prog-shared" $(pkg-config --libs agentdb) || fail "shared build"
needed=$(objdump -p "$stage/prog-shared" | awk '$1 == "NEEDED" {print $2}')
grep -qx "libagentdb.so.$major" <<<"$needed" || fail "prog does not need libagentdb.so.$major"
resolved=$(LD_LIBRARY_PATH=$libdir ldd "$stage/prog-shared" | awk '/libagentdb/ {print $3}')
[ "$resolved" = "$libdir/libagentdb.so.$major" ] || fail "libagentdb resolved to '$resolved'"
LD_LIBRARY_PATH=$libdir "$stage/prog-shared" "$stage/shared.db" || fail "shared program"

# Static libagentdb, shared dependencies: the archive, the packages that
# agentdb.pc names as private requirements, and its Libs.private. (A fully
# static link is not possible on Debian: libpq.pc names archives that
# libpq-dev does not ship.)
requires=$(pkg-config --print-requires-private agentdb | awk '{print $1}')
[ -n "$requires" ] || fail "agentdb.pc has no Requires.private"
private=$(pkg-config --static --libs-only-other agentdb)
static_libs="$(pkg-config --libs $requires) $private -lm"
# shellcheck disable=SC2086
$cc -std=c11 -Wall -Wextra -Werror $extra $cflags "$src/tests/install/prog.c" \
  -o "$stage/prog-static" "$libdir/libagentdb.a" $static_libs || fail "static build"
grep -q 'NEEDED.*libagentdb' <<<"$(objdump -p "$stage/prog-static")" && fail "static prog needs the .so"
"$stage/prog-static" "$stage/static.db" || fail "static program"
echo "test_install: ok (installed under DESTDIR, built and ran against the shared and the static library)"
