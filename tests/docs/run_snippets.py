"""Runs what the README and docs show, so that they cannot drift (ctest:
doc_snippets).

    python3 tests/docs/run_snippets.py [FILE.md ...]   (default: README.md docs/*.md)

For each Markdown file, the fenced code blocks in order:

- ```sh, ```bash, ```shell: run by bash (-euo pipefail) against a fresh
  `agentdb serve` started for the file (blocks of one file share it, as a
  reader following along would), in a temporary working folder, with the
  build's `agentdb` first on PATH, AGENTDB_URL set, every
  `localhost:8080` / `127.0.0.1:8080` pointed at the test server, and
  `curl` failing on an HTTP error (--fail-with-body). `# ->` lines are
  comments to bash, so the answers shown stay as they are.
- ```c: compiled with -Wall -Wextra -Werror against the library
  (env ADB_LIB, the static library, and pkg-config for its dependencies)
  and run; a block without `main` becomes the body of one (its #include
  lines moved above), so a snippet shows just the calls.
- a block whose info string holds `norun` (e.g. ```sh norun: needs a
  production PostgreSQL) is not run: it is listed with its reason, and a
  `norun` without a reason is an error.
- other languages (sql, yaml, json, text, ...) are listed as shown, not run
  here; the SQL of docs/postgres.md is run by tests/docs/postgres_sql.sh.

Also every file path the text cites in backticks (`docs/x.md`,
`examples/y.sh`, `TESTING.md`) must exist in the repository.

Exit status: 0 when every runnable block passed and every cited path
exists; 1 otherwise.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("ADB_BIN") or os.path.join(ROOT, "build", "agentdb"))
LIB = os.environ.get("ADB_LIB") or os.path.join(ROOT, "build", "libagentdb.a")
SHELLS = ("sh", "bash", "shell")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([^`]*)$")
PATH_RE = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:md|yaml|yml|sh|c|h|py|json|sql|mjs))`")


def blocks(text):
    """(line, info, body) of each fenced block."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        out.append((start, info, "\n".join(body) + "\n"))
        i += 1
    return out


class Server:
    def __init__(self, tmp):
        self.data = os.path.join(tmp, "server-data")
        self.p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0",
                                   "--data-dir", self.data], cwd=tmp,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.p.stdout.readline().decode()
        if "listening on " not in line:
            raise RuntimeError("agentdb serve did not start: " + line)
        self.url = line.split("listening on ")[1].split()[0]
        self.addr = self.url.split("//")[1]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(30)
        self.p.stdout.close()


CURL_FN = 'curl() { command curl -sS --fail-with-body "$@"; echo; }\n'


def run_sh(body, srv, cwd):
    text = body.replace("localhost:8080", srv.addr).replace("127.0.0.1:8080", srv.addr)
    env = dict(os.environ, PATH=os.path.dirname(BIN) + os.pathsep + os.environ.get("PATH", ""),
               AGENTDB_URL=srv.url)
    env.pop("AGENTDB_STORE", None)
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", CURL_FN + text], cwd=cwd,
                       env=env, capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode() + p.stderr.decode()


def link_flags():
    p = subprocess.run(["pkg-config", "--libs", "sqlite3", "openssl", "libpq", "hiredis",
                        "libevent", "libevent_pthreads", "jansson"],
                       capture_output=True, text=True)
    return p.stdout.split() + ["-lpthread", "-lm"]


def run_c(body, cwd):
    if not re.search(r"\bint\s+main\s*\(", body):
        inc = [l for l in body.split("\n") if l.startswith("#include")]
        rest = [l for l in body.split("\n") if not l.startswith("#include")]
        body = ("\n".join(["#include <stdio.h>", "#include <string.h>"] + inc) +
                "\n\nint main(void) {\n" + "\n".join("  " + l for l in rest) +
                "\n  return 0;\n}\n")
    src = os.path.join(cwd, "snippet.c")
    exe = os.path.join(cwd, "snippet")
    with open(src, "w") as f:
        f.write(body)
    cc = os.environ.get("CC", "cc")
    # A sanitizer build's library needs the same flags at the link.
    extra = os.environ.get("ADB_SNIPPET_CFLAGS", "").split()
    p = subprocess.run([cc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter", "-I", os.path.join(ROOT, "include")] +
                       extra + [src, LIB, "-o", exe] + link_flags(),
                       capture_output=True, text=True)
    if p.returncode:
        return p.returncode, "does not compile:\n" + p.stderr + "\n" + body
    p = subprocess.run([exe], cwd=cwd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


_TRACKED = []


def tracked():
    """The repository's files (for paths cited relative to a subfolder)."""
    if not _TRACKED:
        p = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
        _TRACKED.extend(p.stdout.split() or ["."])
    return _TRACKED


def check_file(md):
    rel = os.path.relpath(md, ROOT)
    text = open(md).read()
    failed, ran, shown = 0, 0, []
    for m in PATH_RE.finditer(text):
        path = m.group(1)
        if "/" not in path and not path[0].isupper():
            continue  # a bare file name (agentdb.db): not a repository path
        if re.search(r"NNNN|XXX|[<*{]", path):
            continue  # a pattern, not a file
        if not os.path.exists(os.path.join(ROOT, path)) and not any(
                f.endswith("/" + path) for f in tracked()):
            line = text[:m.start()].count("\n") + 1
            print("FAIL %s:%d cites %s, which the repository does not have" % (rel, line, path))
            failed += 1
    tmp = tempfile.mkdtemp(prefix="adb-doc-")
    srv = None
    try:
        for line, info, body in blocks(text):
            words = info.split()
            lang = words[0].lower() if words else ""
            where = "%s:%d" % (rel, line)
            if "norun" in info:
                reason = info.split("norun", 1)[1].strip(" :-")
                if not reason:
                    print("FAIL %s: `norun` needs a reason (```%s norun: why)" % (where, lang))
                    failed += 1
                else:
                    print("skip %s (%s): %s" % (where, lang, reason))
                continue
            if lang in SHELLS:
                if srv is None:
                    srv = Server(tmp)
                rc, out = run_sh(body, srv, tmp)
            elif lang == "c":
                rc, out = run_c(body, tmp)
            else:
                shown.append("%s (%s)" % (where, lang or "no language"))
                continue
            ran += 1
            if rc:
                print("FAIL %s (%s), exit %d:\n%s" % (where, lang, rc, out[-3000:]))
                failed += 1
            else:
                print("ok   %s (%s)" % (where, lang))
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for s in shown:
        print("shown %s: not a command, not run" % s)
    return failed, ran


def main(argv):
    files = argv or [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    if not os.path.exists(BIN):
        print("doc_snippets: no agentdb binary at %s (build first)" % BIN)
        return 1
    failed = ran = 0
    for f in files:
        a, b = check_file(os.path.abspath(f))
        failed, ran = failed + a, ran + b
    print("doc_snippets: %d blocks run, %d failures" % (ran, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
