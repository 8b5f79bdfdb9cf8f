#!/usr/bin/env bash
# test_dockerfile: what can be checked of the container recipe without a
# container engine (none is reachable from the build machines):
#  - two Debian 12 stages; the build stage runs scripts/deps.sh and make;
#  - the runtime stage's package list holds the Debian packages of the
#    shared libraries the binary needs (objdump NEEDED, resolved by ldd,
#    mapped by dpkg -S; libc6 is in every image) and nothing but packages
#    of libraries the build links (+ ca-certificates), and everything ldd
#    loads is in those packages' dependency closure (apt-cache depends);
#  - non-root USER equal to the manifests' runAsUser, EXPOSE equal to
#    their containerPort, version label equal to the binary's version and
#    the kustomize image tag, STOPSIGNAL SIGTERM, ENV names the binary
#    knows;
#  - the HEALTHCHECK command itself, run against a real `agentdb serve`:
#    succeeds while it serves, fails once it is stopped.
# Canaries: the same package check on a copy without libpq5, and on one
# with an extra library package, must fail.
#   test_dockerfile.sh SOURCE_DIR AGENTDB_BIN
set -euo pipefail
src=$1 bin=$2
df=$src/Dockerfile
tmp=$(mktemp -d "${TMPDIR:-/tmp}/agentdb-dockerfile.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "test_dockerfile: FAIL: $*" >&2; exit 1; }

runtime_stage() { awk '/^FROM /{n++} n == 2' "$1"; }

# The runtime stage's apt-get install list, sorted.
runtime_packages() {
  runtime_stage "$1" | sed -n '/apt-get install/,/&& rm -rf/p' |
    tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
    grep -vxE 'apt-get|install|rm|&&' | sort -u
}

# "PATH PACKAGE" for every library ldd loads, from one dpkg -S call (the
# dpkg database names /lib/... or /usr/lib/...: both forms are asked).
LIBMAP=$tmp/libmap
lib_map() {
  local f files=()
  for f in $(ldd "$bin" | awk '/=>/ {print $3}'); do
    f=$(readlink -f "$f")
    files+=("$f" "${f#/usr}")
  done
  { dpkg -S "${files[@]}" 2>/dev/null || true; } | awk -F': ' '{sub(/:.*/, "", $1); p = $2; sub(/^\/usr/, "", p); print p, $1}' | sort -u >"$LIBMAP"
}
pkg_of() { # library path -> Debian package
  local f
  f=$(readlink -f "$1")
  f=${f#/usr}
  awk -v f="$f" '$1 == f {print $2; exit}' "$LIBMAP"
}

# Packages of the libraries the binary itself needs (NEEDED entries).
needed_packages() {
  local lib path
  for lib in $(objdump -p "$bin" | awk '$1 == "NEEDED" {print $2}'); do
    case $lib in ld-linux*) continue ;; esac # the loader: libc6
    path=$(ldd "$bin" | awk -v l="$lib" '$1 == l {print $3}')
    [ -n "$path" ] || fail "ldd does not resolve $lib"
    pkg_of "$path"
  done | grep -vxE 'libc6|libasan[0-9]*|libubsan[0-9]*|libtsan[0-9]*|libstdc\+\+6|libgcc-s1' | sort -u
}

# Packages of the libraries the build links (the -l flags of the modules
# agentdb.pc requires): a linker with --as-needed drops unused ones from
# NEEDED (the release build does; the sanitizer builds do not), so the
# image may carry them.
linked_packages() {
  local mods l f
  mods=$(sed -n 's/^Requires.private: //p' "$src/cmake/agentdb.pc.in")
  for l in $(pkg-config --libs-only-l $mods | tr ' ' '\n' | sed -n 's/^-l//p'); do
    f=$(readlink -f "$(${CC:-cc} -print-file-name="lib$l.so")")
    [ -f "$f" ] || continue
    { dpkg -S "$f" 2>/dev/null || dpkg -S "${f#/usr}" 2>/dev/null || true; } | sed 's/:.*//'
  done | sort -u
}

# NEEDED <= runtime list <= linked libraries' packages + ca-certificates.
check_packages() { # dockerfile -> 0 if the list fits
  local want have linked extra
  want=$(needed_packages) || return 1
  have=$(runtime_packages "$1" | grep -vx ca-certificates || true)
  linked=$(linked_packages)
  missing=$(comm -23 <(echo "$want") <(echo "$have"))
  extra=$(comm -23 <(echo "$have") <(echo "$linked"))
  if [ -n "$missing" ] || [ -n "$extra" ]; then
    echo "runtime stage installs: $(echo $have)"
    echo "the binary needs:       $(echo $want)"
    echo "the build links:        $(echo $linked)"
    [ -z "$missing" ] || echo "missing from the image: $(echo $missing)"
    [ -z "$extra" ] || echo "not linked by the binary: $(echo $extra)"
    return 1
  fi
}

lib_map
echo "== stages"
[ "$(grep -c '^FROM debian:12' "$df")" = 2 ] || fail "not two debian:12 stages"
grep -q 'scripts/deps.sh' <<<"$(awk '/^FROM /{n++} n == 1' "$df")" || fail "build stage does not run scripts/deps.sh"
grep -q 'make build' <<<"$(awk '/^FROM /{n++} n == 1' "$df")" || fail "build stage does not run make build"

echo "== runtime packages against ldd"
check_packages "$df" || fail "runtime package list differs from what the binary links"
echo "runtime packages: $(runtime_packages "$df" | tr '\n' ' ')"
echo "needed by the binary: $(needed_packages | tr '\n' ' ')"
if closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances $(runtime_packages "$df") 2>/dev/null |
    grep -v '^ ' | sort -u) && [ -n "$closure" ]; then
  for f in $(ldd "$bin" | awk '/=>/ {print $3}'); do
    p=$(pkg_of "$f")
    case "$p" in libc6|libasan*|libubsan*|libtsan*|libstdc++6|libgcc-s1) continue ;; esac
    grep -qx "$p" <<<"$closure" || fail "ldd loads $f ($p), which the runtime packages do not pull in"
  done
  echo "every library ldd loads is in their dependency closure ($(echo "$closure" | wc -l) packages)"
else
  echo "apt-cache has no package lists: dependency closure not checked"
fi

echo "== runtime settings"
user=$(runtime_stage "$df" | awk '$1 == "USER" {print $2}' | tail -1)
uid=${user%%:*}
case "$uid" in ''|0|root|*[!0-9]*) fail "USER '$user' is not a numeric non-root user" ;; esac
grep -q "runAsUser: $uid\$" "$src/deploy/kubernetes/base/deployment.yaml" || fail "USER $uid is not the manifests' runAsUser"
port=$(awk '$1 == "EXPOSE" {print $2}' "$df")
grep -q "containerPort: $port\$" "$src/deploy/kubernetes/base/deployment.yaml" || fail "EXPOSE $port is not the manifests' containerPort"
version=$("$bin" version | awk '{print $2}')
grep -q "image.version=\"$version\"" "$df" || fail "image version label is not $version"
grep -q "newTag: \"$version\"" "$src/deploy/kubernetes/base/kustomization.yaml" || fail "kustomize tag is not $version"
grep -qx 'STOPSIGNAL SIGTERM' "$df" || fail "no STOPSIGNAL SIGTERM"
for v in $(runtime_stage "$df" | grep -oE 'AGENTDB_[A-Z_]+' | sort -u); do
  grep -q "$v" <<<"$("$bin" serve --help)" || fail "ENV $v is not in 'agentdb serve --help'"
done
grep -q '^ENTRYPOINT \["/usr/local/bin/agentdb"\]' "$df" || fail "ENTRYPOINT is not the binary"
echo "USER $uid, EXPOSE $port, version $version, STOPSIGNAL SIGTERM: agree with the manifests and the binary"

echo "== HEALTHCHECK against a real server"
hc=$(sed -n '/^HEALTHCHECK/,/^[^ ]/p' "$df" | grep -o 'CMD \[.*\]' | sed 's/^CMD //')
script=$(node -e 'const a=JSON.parse(process.argv[1]); if (a[0]!=="bash"||a[1]!=="-c") process.exit(1); console.log(a[2])' "$hc" 2>/dev/null ||
  python3 -c 'import json,sys; a=json.loads(sys.argv[1]); assert a[:2]==["bash","-c"]; print(a[2])' "$hc") ||
  fail "HEALTHCHECK is not CMD [\"bash\", \"-c\", ...]"
grep -q '/healthz' <<<"$script" || fail "HEALTHCHECK does not ask /healthz"
: >"$tmp/out" # before the background job opens it
AGENTDB_STORE="sqlite://$tmp/hc.db" "$bin" serve --listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 200); do grep -q listening "$tmp/out" && break; sleep 0.05; done
hport=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/out")
[ -n "$hport" ] || fail "agentdb serve did not start: $(cat "$tmp/err")"
local_script=${script//127.0.0.1\/$port/127.0.0.1\/$hport}
timeout 3 bash -c "$local_script" || fail "HEALTHCHECK fails against a serving agentdb"
kill -TERM "$pid"; wait "$pid" || true; pid=
if timeout 3 bash -c "$local_script" 2>/dev/null; then fail "HEALTHCHECK passes with the server stopped"; fi
echo "HEALTHCHECK passes while serving, fails when stopped"

echo "== canary: a runtime stage without libpq5"
sed 's/ libpq5 / /' "$df" >"$tmp/Dockerfile"
cmp -s "$df" "$tmp/Dockerfile" && fail "canary changed nothing"
if check_packages "$tmp/Dockerfile"; then fail "the package check passed without libpq5"; fi
echo "== canary: a runtime stage with a package the binary does not link"
sed 's/ libpq5 / libpq5 libcurl4 /' "$df" >"$tmp/Dockerfile"
if check_packages "$tmp/Dockerfile"; then fail "the package check passed with libcurl4"; fi
echo "test_dockerfile: ok (no container engine here: the image itself is not built or run)"
