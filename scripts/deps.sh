#!/usr/bin/env bash
# Installs the Debian 12 packages AgentDB needs to build, test and bench.
# As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail
PKGS=(build-essential cmake pkg-config git
      libsqlite3-dev libssl-dev libpq-dev libhiredis-dev libevent-dev
      libjansson-dev libcmocka-dev
      postgresql-15 postgresql-contrib redis-server redis-tools
      libhnswlib-dev curl
      haproxy      # the load balancer of scripts/cluster.sh
      chromium prometheus)  # the dashboard browser test; promtool
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# node and npm (the manifest validation's npm project): by command, since
# a NodeSource nodejs brings its own npm and conflicts with Debian's.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
