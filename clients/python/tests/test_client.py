"""The Python client against the real `agentdb serve` (env ADB_BIN, else
build/agentdb), over real sockets; faults (a 503, a connection cut after the
server answered) are injected by a loopback proxy between the two.

    python3 -m unittest discover -s clients/python/tests -v
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import agentdb_client as ac  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def agentdb_bin():
    b = os.path.abspath(os.environ.get("ADB_BIN") or
                        os.path.join(ROOT, "build", "agentdb"))
    if not os.path.exists(b):
        raise unittest.SkipTest("no agentdb binary at %s (build first)" % b)
    return b


class Server:
    """`agentdb serve` on a free port with its own data folder."""

    def __init__(self, *extra):
        self.dir = tempfile.mkdtemp(prefix="adb-py-")
        args = [agentdb_bin(), "serve", "--listen", "127.0.0.1:0",
                "--store", "sqlite://%s/agentdb.db" % self.dir] + list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=self.dir)
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if "listening on " in line:
                self.url = line.split("listening on ")[1].split()[0]
                break
        if not self.url:
            self.stop()
            raise RuntimeError("agentdb serve did not start: %s"
                               % self.proc.stderr.read().decode())
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class FaultProxy:
    """Forwards one HTTP request per connection to the server, except that
    the plan (a list consumed request by request) may say '503' (answer a
    503 itself, without forwarding) or 'cut' (forward, read the server's
    answer, then close the client's connection without answering). Every
    request body is recorded."""

    def __init__(self, port, plan):
        self.port, self.plan, self.bodies = port, list(plan), []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stop_flag = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    @staticmethod
    def read_request(c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None
            buf += d
        head, body = buf.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(body) < n:
            body += c.recv(65536)
        return head, body

    def loop(self):
        self.sock.settimeout(0.2)
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        with c:
            while True:
                req = self.read_request(c)
                if req is None:
                    return
                head, body = req
                self.bodies.append(body)
                step = self.plan.pop(0) if self.plan else "pass"
                if step == "503":
                    msg = b'{"error":{"code":"queue_full","message":"injected"}}'
                    c.sendall(b"HTTP/1.1 503 Service Unavailable\r\n"
                              b"Content-Type: application/json\r\nRetry-After: 0\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(msg), msg))
                    continue
                with socket.create_connection(("127.0.0.1", self.port)) as s:
                    s.sendall(head + b"\r\n\r\n" + body)
                    resp = b""
                    s.settimeout(10)
                    while b"\r\n\r\n" not in resp:
                        resp += s.recv(65536)
                    h, b = resp.split(b"\r\n\r\n", 1)
                    n = 0
                    for line in h.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            n = int(v)
                    while len(b) < n:
                        b += s.recv(65536)
                if step == "cut":
                    return  # the server answered; the client never hears it
                c.sendall(h + b"\r\n\r\n" + b)

    def close(self):
        self.stop_flag = True
        self.t.join()
        self.sock.close()


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def setUp(self):
        self.db = ac.Client(self.srv.url, timeout=5)
        self.agent = "py-" + self.id().rsplit(".", 1)[1][:40]
        self.db.put_agent(self.agent, context_keys=["daypart"])
        self.db.put_actions(self.agent, [{"id": a} for a in ("a", "b", "c")])

    def tearDown(self):
        self.db.close()

    def test_decide_reward_loop_updates_the_policy_once_per_reward_id(self):
        d = self.db.decide(self.agent, "u1", ["a", "b", "c"],
                           context={"daypart": "evening"}, k=3)
        self.assertIn(d["action"], ("a", "b", "c"))
        self.assertEqual(len(d["ranking"]), 3)
        r = self.db.reward(self.agent, event_id=d["event_id"], reward=1.0,
                           reward_id="r1")
        self.assertTrue(r["applied"])
        again = self.db.reward(self.agent, event_id=d["event_id"], reward=1.0,
                               reward_id="r1")
        self.assertFalse(again["applied"])
        p = self.db.policy(self.agent, "u1", d["state_key"])
        self.assertEqual(sum(a["n"] for a in p["arms"]), 1)

    def test_errors_are_typed_with_code_and_field(self):
        with self.assertRaises(ac.NotFound) as e:
            self.db.get_agent("no-such-agent")
        self.assertEqual(e.exception.code, "not_found")
        with self.assertRaises(ac.BadRequest) as e:
            self.db.decide(self.agent, "u1", [])
        self.assertEqual(e.exception.field, "candidates")
        d = self.db.decide(self.agent, "u1", ["a"])
        self.db.reward(self.agent, event_id=d["event_id"], reward=1.0, reward_id="x")
        with self.assertRaises(ac.Conflict):
            self.db.reward(self.agent, event_id=d["event_id"], reward=0.0, reward_id="x")
        with self.assertRaises(ac.MethodNotAllowed):
            self.db.request("POST", "/v1/agents/" + self.agent, {})

    def test_one_keep_alive_connection_serves_many_calls(self):
        for _ in range(20):
            self.db.decide(self.agent, "u2", ["a", "b"])
        self.assertEqual(self.db.connects, 1)
        self.assertGreaterEqual(self.db.requests, 20)

    def test_a_503_is_retried_with_the_same_reward_id(self):
        d = self.db.decide(self.agent, "u3", ["a", "b"])
        px = FaultProxy(self.srv.port, ["503", "503", "pass"])
        try:
            c = ac.Client(px.url, timeout=5, retries=3)
            r = c.reward(self.agent, event_id=d["event_id"], reward=1.0)
            c.close()
        finally:
            px.close()
        self.assertTrue(r["applied"])
        ids = {json.loads(b)["reward_id"] for b in px.bodies}
        self.assertEqual(len(px.bodies), 3)
        self.assertEqual(len(ids), 1)

    def test_an_answer_lost_after_commit_is_retried_and_applied_once(self):
        d = self.db.decide(self.agent, "u4", ["a", "b"])
        px = FaultProxy(self.srv.port, ["cut", "pass"])
        try:
            c = ac.Client(px.url, timeout=5, retries=3)
            r = c.reward(self.agent, event_id=d["event_id"], reward=1.0)
            c.close()
        finally:
            px.close()
        self.assertFalse(r["applied"])  # the first send was applied
        self.assertEqual(len({json.loads(b)["reward_id"] for b in px.bodies}), 1)
        p = self.db.policy(self.agent, "u4", d["state_key"])
        self.assertEqual(sum(a["n"] for a in p["arms"]), 1)

    def test_retries_give_up_with_the_last_error(self):
        px = FaultProxy(self.srv.port, ["503"] * 10)
        try:
            c = ac.Client(px.url, timeout=5, retries=2, backoff=0)
            with self.assertRaises(ac.Unavailable) as e:
                c.reward(self.agent, user_id="u", action="a", reward=1.0,
                         context={"daypart": "x"})
            c.close()
        finally:
            px.close()
        self.assertEqual(e.exception.code, "queue_full")
        self.assertEqual(len(px.bodies), 3)

    def test_episodes_users_patterns_and_sessions(self):
        n = self.db.record_episodes(self.agent, [
            {"user_id": "u5", "embedding": [1, 0, 0, 0], "action": "a",
             "reward": 1, "session_id": "s5"},
            {"user_id": "u6", "embedding": [0, 1, 0, 0], "action": "b",
             "reward": 0}])
        self.assertEqual(n["inserted"], 2)
        hits = self.db.search_episodes(self.agent, [1, 0.1, 0, 0], k=1)
        self.assertEqual(hits[0]["user_id"], "u5")
        self.db.put_user_state("u5", [0.5, 0.5, 0, 0], {"tz": "CET"})
        self.assertEqual(self.db.get_user_state("u5")["context"], {"tz": "CET"})
        self.assertEqual(self.db.search_users([0.5, 0.5, 0, 0], k=1)[0]["user_id"], "u5")
        self.db.put_pattern(self.agent, "p1", "co-watch", "genre:drama",
                            {"next": ["b"]}, confidence=0.5, embedding=[0, 0, 1, 0])
        self.assertEqual(self.db.get_pattern(self.agent, "p1")["value"], {"next": ["b"]})
        self.assertEqual(self.db.search_patterns(self.agent, [0, 0, 1, 0])[0]["pattern_id"], "p1")
        self.db.put_session("s5", {"page": "home"}, ttl_s=60)
        self.assertEqual(self.db.get_session("s5"), {"page": "home"})
        self.db.delete_session("s5")
        with self.assertRaises(ac.NotFound):
            self.db.get_session("s5")

    def test_admin_lists_resets_deletes_and_erases(self):
        names = {a["id"] for a in self.db.iter_agents(page=1)}
        self.assertIn(self.agent, names)
        self.assertEqual([a["id"] for a in self.db.list_actions(self.agent)],
                         ["a", "b", "c"])
        self.db.delete_action(self.agent, "c")
        self.assertEqual(len(self.db.list_actions(self.agent)), 2)
        d = self.db.decide(self.agent, "gone-user", ["a", "b"])
        self.db.reward(self.agent, event_id=d["event_id"], reward=1.0)
        self.db.put_user_state("gone-user", [1, 2, 3, 4])
        data = self.db.user_data("gone-user")["data"]
        self.assertEqual((data["decisions"], data["rewards"], data["state"]),
                         (1, 1, True))
        erased = self.db.erase_user("gone-user")["erased"]
        self.assertEqual(erased["decisions"], 1)
        data = self.db.user_data("gone-user")["data"]
        self.assertEqual((data["decisions"], data["rewards"], data["state"]),
                         (0, 0, False))
        with self.assertRaises(ac.NotFound):
            self.db.get_user_state("gone-user")
        self.db.reset_agent(self.agent)
        self.assertEqual(self.db.get_agent(self.agent)["counters"]["actions"], 2)
        self.db.delete_agent(self.agent)
        with self.assertRaises(ac.NotFound):
            self.db.get_agent(self.agent)
        with self.assertRaises(ac.NotFound):
            self.db.delete_agent(self.agent)
        self.db.put_agent(self.agent)  # for tearDown symmetry

    def test_the_example_script_runs(self):
        env = dict(os.environ, AGENTDB_URL=self.srv.url)
        ex = os.path.join(ROOT, "clients", "python", "example.py")
        out = subprocess.run([sys.executable, ex], env=env, capture_output=True,
                             timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertIn("erased", out.stdout.decode())


if __name__ == "__main__":
    unittest.main()
