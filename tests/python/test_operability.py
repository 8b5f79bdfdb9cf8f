"""`agentdb serve` as an operator meets it (ctest: serve_operability): bad
--listen values and busy ports named in the error, URL errors naming the
right component and listing the schemes, one process per SQLite file (a
second server exits clearly, the first keeps serving untouched), --data-dir
deciding where every file goes, API keys reloaded on SIGHUP.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("ADB_BIN") or os.path.join(ROOT, "build", "agentdb"))


def serve(args, cwd, wait=True):
    p = subprocess.Popen([BIN, "serve"] + args, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    if not wait:
        return p, None
    line = p.stdout.readline().decode()
    if "listening on " not in line:
        p.kill()
        p.wait()
        raise AssertionError("did not start: %s %s" % (line, p.stderr.read().decode()))
    return p, line.split("listening on ")[1].split()[0]


def sighup_line(p):
    """The server's answer to a SIGHUP, skipping its request log lines."""
    p.send_signal(signal.SIGHUP)
    for _ in range(100):
        line = p.stderr.readline().decode()
        if "SIGHUP" in line or not line:
            return line
    return ""


def stop(p):
    if p.poll() is None:
        p.terminate()
        p.wait(30)
    p.stdout.close()
    p.stderr.close()


def fails(args, cwd, timeout=30):
    """Runs a serve that must exit; returns (code, stderr)."""
    p = subprocess.run([BIN, "serve"] + args, cwd=cwd, capture_output=True, timeout=timeout)
    return p.returncode, p.stderr.decode()


def http(url, method="GET", body=None, key=None, headers=None, full=False):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if key:
        h["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url, method=method, headers=h,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            out = r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        out = e.code, json.loads(e.read() or b"null"), e.headers
    return out if full else out[:2]


class Operability(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(BIN):
            self.skipTest("no agentdb binary at " + BIN)
        self.dir = tempfile.mkdtemp(prefix="adb-ops-")
        self.cwd = os.path.join(self.dir, "cwd")
        os.mkdir(self.cwd)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def store(self):
        return "sqlite://%s/data/agentdb.db" % self.dir

    def test_listen_port_out_of_range_is_refused_and_named(self):
        code, err = fails(["--listen", "127.0.0.1:99999", "--store", self.store()], self.cwd)
        self.assertEqual(code, 1)
        self.assertIn("127.0.0.1:99999", err)
        self.assertIn("0..65535", err)
        code, err = fails(["--listen", "127.0.0.1:http", "--store", self.store()], self.cwd)
        self.assertEqual(code, 1)
        self.assertIn("port must be a number", err)

    def test_a_busy_port_is_named(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = "127.0.0.1:%d" % s.getsockname()[1]
        try:
            code, err = fails(["--listen", addr, "--store", self.store()], self.cwd)
        finally:
            s.close()
        self.assertEqual(code, 1)
        self.assertIn("cannot listen on " + addr, err)
        self.assertIn("in use", err)

    def test_url_errors_name_the_component_and_the_schemes(self):
        code, err = fails(["--listen", "127.0.0.1:0", "--store", self.store(),
                           "--cache", "memcached://x"], self.cwd)
        self.assertEqual(code, 1)
        self.assertIn("cache: unsupported cache URL 'memcached://x'", err)
        self.assertNotIn("store", err.split("cache URL")[0])
        for scheme in ("mem://", "redis://", "redis-cluster://"):
            self.assertIn(scheme, err)
        code, err = fails(["--listen", "127.0.0.1:0", "--store", "mysql://x"], self.cwd)
        self.assertIn("store: unsupported store URL 'mysql://x'", err)
        for scheme in ("sqlite://", "postgresql://", "postgres://"):
            self.assertIn(scheme, err)

    def test_a_second_server_on_one_sqlite_file_exits_and_the_first_serves_on(self):
        a, url = serve(["--listen", "127.0.0.1:0", "--store", self.store()], self.cwd)
        try:
            self.assertEqual(http(url + "/v1/agents/ag", "PUT", {})[0], 200)
            st, d = http(url + "/v1/agents/ag/decide", "POST",
                         {"user_id": "u", "candidates": ["x", "y"]})
            self.assertEqual(st, 200)
            self.assertEqual(http(url + "/v1/agents/ag/rewards", "POST",
                                  {"reward_id": "r", "event_id": d["event_id"],
                                   "reward": 1})[0], 200)
            self.assertEqual(http(url + "/v1/agents/ag/episodes", "POST",
                                  {"episodes": [{"user_id": "u", "action": "x",
                                                 "reward": 1,
                                                 "embedding": [1, 2, 3]}]})[0], 200)
            files = sorted(os.listdir(os.path.join(self.dir, "data")))
            code, err = fails(["--listen", "127.0.0.1:0", "--store", self.store()],
                              self.cwd)
            self.assertEqual(code, 1)
            self.assertIn("in use by another process (pid %d)" % a.pid, err)
            self.assertEqual(sorted(os.listdir(os.path.join(self.dir, "data"))), files)
            # The first serves on, with everything it had.
            self.assertIsNone(a.poll())
            st, p = http(url + "/v1/agents/ag/policies/u?state_key=" + d["state_key"])
            self.assertEqual((st, sum(x["n"] for x in p["arms"])), (200, 1))
            st, h = http(url + "/v1/agents/ag/episodes/search", "POST",
                         {"embedding": [1, 2, 3], "k": 1})
            self.assertEqual((st, len(h["hits"])), (200, 1))
        finally:
            stop(a)
        # Once it is gone, the file is free again.
        b, url = serve(["--listen", "127.0.0.1:0", "--store", self.store()], self.cwd)
        stop(b)

    def test_data_dir_decides_where_every_file_goes(self):
        data = os.path.join(self.dir, "elsewhere")
        a, url = serve(["--listen", "127.0.0.1:0", "--data-dir", data], self.cwd)
        try:
            self.assertEqual(http(url + "/v1/agents/ag", "PUT", {})[0], 200)
            self.assertEqual(http(url + "/v1/agents/ag/episodes", "POST",
                                  {"episodes": [{"user_id": "u", "action": "x",
                                                 "reward": 1,
                                                 "embedding": [1, 2]}]})[0], 200)
        finally:
            stop(a)
        self.assertEqual(os.listdir(self.cwd), [])
        self.assertIn("agentdb.db", os.listdir(data))
        self.assertIn("manifest", os.listdir(os.path.join(data, "index")))

    def test_api_keys_are_reloaded_on_sighup(self):
        keys = os.path.join(self.dir, "keys")
        with open(keys, "w") as f:
            f.write("old-key\n")
        a, url = serve(["--listen", "127.0.0.1:0", "--store", self.store(),
                        "--api-keys-file", keys], self.cwd)
        try:
            self.assertEqual(http(url + "/v1/agents/ag", "PUT", {}, "old-key")[0], 200)
            self.assertEqual(http(url + "/v1/agents/ag", key="new-key")[0], 401)
            with open(keys, "w") as f:
                f.write("new-key\n")
            self.assertIn("1 API keys loaded", sighup_line(a))
            self.assertEqual(http(url + "/v1/agents/ag", key="new-key")[0], 200)
            self.assertEqual(http(url + "/v1/agents/ag", key="old-key")[0], 401)
            # A file that does not load keeps the keys in force.
            with open(keys, "w") as f:
                f.write("")
            self.assertIn("keys in force stay", sighup_line(a))
            self.assertEqual(http(url + "/v1/agents/ag", key="new-key")[0], 200)
        finally:
            stop(a)

    def test_cors_is_off_by_default_and_follows_the_allow_list(self):
        a, url = serve(["--listen", "127.0.0.1:0", "--store", self.store()], self.cwd)
        try:
            st, _, h = http(url + "/healthz", headers={"Origin": "https://a.example"},
                            full=True)
            self.assertEqual(st, 200)
            self.assertIsNone(h.get("Access-Control-Allow-Origin"))
            st, _, h = http(url + "/v1/agents/x", "OPTIONS",
                            headers={"Origin": "https://a.example"}, full=True)
            self.assertEqual(st, 405)
        finally:
            stop(a)
        a, url = serve(["--listen", "127.0.0.1:0", "--store", self.store(),
                        "--cors-origins", "https://a.example, https://b.example"],
                       self.cwd)
        try:
            st, _, h = http(url + "/v1/agents/x", "PUT", {},
                            headers={"Origin": "https://b.example"}, full=True)
            self.assertEqual(st, 200)  # a deferred write keeps its headers
            self.assertEqual(h.get("Access-Control-Allow-Origin"), "https://b.example")
            self.assertIn("Origin", h.get("Vary", ""))
            st, _, h = http(url + "/v1/agents/x", "OPTIONS",
                            headers={"Origin": "https://a.example",
                                     "Access-Control-Request-Method": "DELETE"},
                            full=True)
            self.assertEqual(st, 204)
            self.assertIn("DELETE", h.get("Access-Control-Allow-Methods"))
            self.assertIn("Authorization", h.get("Access-Control-Allow-Headers"))
            st, _, h = http(url + "/v1/agents/x", headers={"Origin": "https://evil.example"},
                            full=True)
            self.assertEqual(st, 200)
            self.assertIsNone(h.get("Access-Control-Allow-Origin"))
        finally:
            stop(a)

    def test_each_key_has_its_own_rate_limit(self):
        keys = os.path.join(self.dir, "keys")
        with open(keys, "w") as f:
            f.write("key-a\nkey-b\n")
        a, url = serve(["--listen", "127.0.0.1:0", "--store", self.store(),
                        "--api-keys-file", keys, "--rate-limit", "1",
                        "--rate-burst", "3"], self.cwd)
        try:
            self.assertEqual(http(url + "/v1/agents/ag", "PUT", {}, "key-b")[0], 200)
            t0 = time.monotonic()
            answers = []
            while len(answers) < 60 and not any(a[0] == 429 for a in answers):
                answers.append(http(url + "/v1/agents/ag", key="key-a", full=True))
            elapsed = time.monotonic() - t0
            ok = sum(1 for st, _, _ in answers if st == 200)
            limited = [(b, h) for st, b, h in answers if st == 429]
            # A bucket of 3 refilled at 1/s lets through at most 3 plus
            # one per second elapsed (plus one for the fractions); so
            # within 60 requests a 429 comes unless they took a minute.
            self.assertLessEqual(ok, 3 + int(elapsed) + 1)
            self.assertEqual(ok + len(limited), len(answers))
            self.assertTrue(limited or elapsed >= 55, (ok, elapsed))
            body, h = limited[0]
            self.assertEqual(body["error"]["code"], "rate_limited")
            self.assertGreaterEqual(int(h["Retry-After"]), 1)
            # Another key is not held back by key-a's bucket.
            self.assertEqual(http(url + "/v1/agents/ag", key="key-b")[0], 200)
            # Probes are open and not limited.
            for _ in range(5):
                self.assertEqual(http(url + "/healthz")[0], 200)
        finally:
            stop(a)


if __name__ == "__main__":
    unittest.main()
