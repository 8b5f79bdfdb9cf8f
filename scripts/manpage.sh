#!/usr/bin/env bash
# Writes the man page agentdb(1) from the --help texts of the binary and of
# each of its subcommands, so the page cannot drift from the code.
#   scripts/manpage.sh BIN VERSION OUT
set -euo pipefail
bin=$1 version=$2 out=$3

# roff-escapes a --help text: backslashes, and lines starting with . or '.
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }

commands=$("$bin" --help | awk '/^commands:/ {on=1; next} on && NF {print $1}')
{
  echo ".TH AGENTDB 1 \"\" \"agentdb $version\" \"User Commands\""
  echo ".SH NAME"
  echo "agentdb \\- storage and decision layer for reinforcement-learning recommenders"
  echo ".SH SYNOPSIS"
  echo ".B agentdb"
  echo ".I command"
  echo "[options]"
  echo ".SH DESCRIPTION"
  echo "AgentDB picks items by Thompson sampling over Bayesian posteriors,"
  echo "learns from rewards exactly once and keeps decisions, rewards,"
  echo "episodes, user states and learned patterns durably, in an embedded"
  echo "SQLite file or in PostgreSQL with a Redis cache."
  echo ".PP"
  echo ".nf"
  "$bin" --help | esc
  echo ".fi"
  echo ".SH COMMANDS"
  for c in $commands; do
    [ "$c" = version ] && continue
    echo ".SS agentdb $c"
    echo ".nf"
    "$bin" "$c" --help | esc
    echo ".fi"
  done
  echo ".SH FILES"
  echo "The HTTP API is described in openapi.yaml and the deployment in"
  echo "deploy.md and operations.md, installed under the documentation folder."
  echo ".SH SEE ALSO"
  echo "pkg-config(1) \\(em \\fBpkg-config --cflags --libs agentdb\\fR"
  echo "builds a program against libagentdb."
} >"$out.tmp"
mv "$out.tmp" "$out"
