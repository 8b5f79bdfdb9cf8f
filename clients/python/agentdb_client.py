"""agentdb_client — a Python client for the AgentDB HTTP API.

Standard library only (http.client, json, uuid), so it installs anywhere a
Python 3.8+ runs: copy this one file, or `pip install clients/python`.

    from agentdb_client import Client
    db = Client("http://127.0.0.1:8080", api_key=None)
    db.put_agent("home", context_keys=["daypart"])
    d = db.decide("home", "user-1", ["a", "b", "c"], context={"daypart": "evening"})
    db.reward("home", event_id=d["event_id"], reward=1.0)

Behaviour:

- One keep-alive connection per client (not shared between threads: use
  one Client per thread). A connection the server closed is reopened.
- Errors are typed: every 4xx/5xx answer raises a subclass of
  AgentDBError (BadRequest, Unauthorized, Forbidden, NotFound,
  MethodNotAllowed, Conflict, PayloadTooLarge, RateLimited, Unavailable,
  ServerError) carrying .status, .code, .message, .field and .retry_after.
- Retries: a 503 (queue full, store down, shutting down) or 429 is retried
  after its Retry-After (else an exponential backoff), up to `retries`
  times. A timeout or a connection lost after the request was sent is
  retried only where that is safe: rewards (the same reward_id, generated
  here when not given, so the server applies it exactly once), episodes
  (episode ids generated here), decisions (event_id generated here) and
  every PUT, GET and DELETE (idempotent). A retry never changes the body.
"""

import base64
import http.client
import json
import socket
import struct
import time
import urllib.parse
import uuid

__all__ = [
    "Client", "AgentDBError", "BadRequest", "Unauthorized", "Forbidden",
    "NotFound", "MethodNotAllowed", "Conflict", "PayloadTooLarge",
    "RateLimited", "Unavailable", "ServerError", "TransportError",
]

__version__ = "0.1.0"


class AgentDBError(Exception):
    """An error answer of the server (or, TransportError, no answer)."""

    def __init__(self, status, code, message, field=None, retry_after=None):
        super().__init__("%s %s: %s%s" % (status, code, message,
                                          " (field %s)" % field if field else ""))
        self.status, self.code, self.message = status, code, message
        self.field, self.retry_after = field, retry_after


class BadRequest(AgentDBError):
    pass


class Unauthorized(AgentDBError):
    pass


class Forbidden(AgentDBError):
    pass


class NotFound(AgentDBError):
    pass


class MethodNotAllowed(AgentDBError):
    pass


class Conflict(AgentDBError):
    pass


class PayloadTooLarge(AgentDBError):
    pass


class RateLimited(AgentDBError):
    pass


class Unavailable(AgentDBError):
    pass


class ServerError(AgentDBError):
    pass


class TransportError(AgentDBError):
    """No answer: connection refused, reset, or timed out."""

    def __init__(self, message):
        super().__init__(0, "transport", message)


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden,
              404: NotFound, 405: MethodNotAllowed, 409: Conflict,
              413: PayloadTooLarge, 429: RateLimited, 503: Unavailable}


def _error(status, body, headers):
    try:
        e = json.loads(body.decode("utf-8"))["error"]
        code, msg, field = e.get("code", "?"), e.get("message", ""), e.get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, msg, field = "http_%d" % status, body[:200].decode("utf-8", "replace"), None
    ra = headers.get("Retry-After")
    try:
        ra = float(ra) if ra is not None else None
    except ValueError:
        ra = None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else AgentDBError)
    return cls(status, code, msg, field, ra)


def _q(s):
    return urllib.parse.quote(str(s), safe="")


def embedding_b64(values):
    """The base64 of little-endian float32 values (the embedding_b64 field)."""
    return base64.b64encode(struct.pack("<%df" % len(values), *values)).decode()


class Client:
    """A connection to one `agentdb serve`."""

    def __init__(self, base_url="http://127.0.0.1:8080", api_key=None,
                 timeout=10.0, retries=3, backoff=0.05):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError("base_url must be http:// or https://, not %r" % base_url)
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname, u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self._key, self.timeout = api_key, timeout
        self.retries, self.backoff = retries, backoff
        self._conn = None
        self.requests = 0  # answered requests, for tests and curiosity
        self.connects = 0  # connections opened

    # ------------------------------------------------------------ transport

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _connection(self):
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
            self.connects += 1
        return self._conn

    def _once(self, method, path, body):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["Authorization"] = "Bearer " + self._key
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise TransportError("%s %s: %s" % (method, path, e or type(e).__name__))
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        self.requests += 1
        if resp.status >= 400:
            raise _error(resp.status, raw, resp.headers)
        ctype = resp.getheader("Content-Type", "")
        if not raw:
            return None
        return json.loads(raw.decode()) if "json" in ctype else raw.decode()

    def request(self, method, path, body=None, safe=None):
        """One API call with retries; safe says whether a request that may
        have reached the server can be sent again (default: every method
        but POST)."""
        if safe is None:
            safe = method != "POST"
        attempt = 0
        while True:
            try:
                return self._once(method, path, body)
            except (Unavailable, RateLimited) as e:
                err, wait = e, e.retry_after
            except TransportError as e:
                # A stale keep-alive connection fails before the server
                # reads anything: one fresh try is always safe.
                if not safe and attempt > 0:
                    raise
                err, wait = e, None
            attempt += 1
            if attempt > self.retries:
                raise err
            time.sleep(wait if wait is not None else self.backoff * (2 ** (attempt - 1)))

    # --------------------------------------------------------------- probes

    def health(self):
        return self.request("GET", "/healthz")

    def ready(self):
        return self.request("GET", "/readyz")

    def metrics_text(self):
        return self.request("GET", "/metrics")

    # --------------------------------------------------------------- agents

    def put_agent(self, agent, **config):
        """Creates or replaces an agent (fields of docs/openapi.yaml's
        AgentConfig: algorithm, prior, context_keys, embedding_dim, ...)."""
        return self.request("PUT", "/v1/agents/" + _q(agent), config)

    def get_agent(self, agent):
        return self.request("GET", "/v1/agents/" + _q(agent))

    def list_agents(self, limit=100, after=None):
        """One page: {"agents": [...], "next": id or None}."""
        q = {"limit": limit}
        if after:
            q["after"] = after
        return self.request("GET", "/v1/agents?" + urllib.parse.urlencode(q))

    def iter_agents(self, page=100):
        """Every agent, page by page."""
        after = None
        while True:
            p = self.list_agents(page, after)
            for a in p["agents"]:
                yield a
            after = p["next"]
            if not after:
                return

    def delete_agent(self, agent):
        return self.request("DELETE", "/v1/agents/" + _q(agent))

    def reset_agent(self, agent):
        """Forgets what the agent learned; keeps its config and catalogue."""
        return self.request("POST", "/v1/agents/%s/reset" % _q(agent), {}, safe=True)

    # -------------------------------------------------------------- actions

    def put_action(self, agent, action, embedding=None, metadata=None,
                   disabled=None):
        body = {}
        if embedding is not None:
            body["embedding"] = list(embedding)
        if metadata is not None:
            body["metadata"] = metadata
        if disabled is not None:
            body["disabled"] = bool(disabled)
        return self.request("PUT", "/v1/agents/%s/actions/%s" % (_q(agent), _q(action)), body)

    def put_actions(self, agent, actions):
        """Bulk: actions is a list of {"id", "embedding"?, "metadata"?,
        "disabled"?}; all or none are stored (a retry stores the same)."""
        return self.request("POST", "/v1/agents/%s/actions" % _q(agent),
                            {"actions": list(actions)}, safe=True)

    def list_actions(self, agent):
        return self.request("GET", "/v1/agents/%s/actions" % _q(agent))["actions"]

    def delete_action(self, agent, action):
        return self.request("DELETE", "/v1/agents/%s/actions/%s" % (_q(agent), _q(action)))

    # ---------------------------------------------------- decide and reward

    def decide(self, agent, user_id, candidates, context=None, embedding=None,
               k=None, event_id=None):
        """Chooses among candidates. The event id is generated here when
        not given, so a retry after a timeout logs one decision."""
        body = {"user_id": user_id, "candidates": list(candidates),
                "event_id": event_id or uuid.uuid4().hex}
        if context is not None:
            body["context"] = context
        if embedding is not None:
            body["embedding"] = list(embedding)
        if k is not None:
            body["k"] = k
        return self.request("POST", "/v1/agents/%s/decide" % _q(agent), body, safe=True)

    def reward(self, agent, reward=None, event_id=None, reward_id=None,
               signals=None, user_id=None, action=None, context=None,
               state_key=None):
        """Rewards a decision (event_id) or, without one, a policy cell
        (user_id, action, context or state_key). reward_id defaults to a
        new UUID and is reused by every retry: applied exactly once."""
        body = {"reward_id": reward_id or uuid.uuid4().hex}
        for k, v in (("event_id", event_id), ("reward", reward),
                     ("signals", signals), ("user_id", user_id),
                     ("action", action), ("context", context),
                     ("state_key", state_key)):
            if v is not None:
                body[k] = v
        return self.request("POST", "/v1/agents/%s/rewards" % _q(agent), body, safe=True)

    def policy(self, agent, user_id, state_key):
        return self.request("GET", "/v1/agents/%s/policies/%s?state_key=%s"
                            % (_q(agent), _q(user_id), _q(state_key)))

    def agent_metrics(self, agent, from_=None, to=None):
        q = {}
        if from_ is not None:
            q["from"] = from_
        if to is not None:
            q["to"] = to
        s = "?" + urllib.parse.urlencode(q) if q else ""
        return self.request("GET", "/v1/agents/%s/metrics%s" % (_q(agent), s))

    # ------------------------------------------------------------- episodes

    def record_episodes(self, agent, episodes):
        """episodes: dicts with user_id, action, reward, embedding and
        optionally episode_id (generated here when absent, so a retry
        inserts each once), session_id, context."""
        eps = []
        for e in episodes:
            e = dict(e)
            e.setdefault("episode_id", uuid.uuid4().hex)
            if "embedding" in e:
                e["embedding"] = list(e["embedding"])
            eps.append(e)
        return self.request("POST", "/v1/agents/%s/episodes" % _q(agent),
                            {"episodes": eps}, safe=True)

    def search_episodes(self, agent, embedding, k=10, user_id=None):
        body = {"embedding": list(embedding), "k": k}
        if user_id is not None:
            body["user_id"] = user_id
        return self.request("POST", "/v1/agents/%s/episodes/search" % _q(agent),
                            body, safe=True)["hits"]

    # ---------------------------------------------------------------- users

    def put_user_state(self, user_id, embedding=None, context=None):
        body = {}
        if embedding is not None:
            body["embedding"] = list(embedding)
        if context is not None:
            body["context"] = context
        return self.request("PUT", "/v1/users/%s/state" % _q(user_id), body)

    def get_user_state(self, user_id):
        return self.request("GET", "/v1/users/%s/state" % _q(user_id))

    def search_users(self, embedding, k=10):
        return self.request("POST", "/v1/users/search",
                            {"embedding": list(embedding), "k": k}, safe=True)["hits"]

    def user_data(self, user_id):
        """What the server holds about a user, per table."""
        return self.request("GET", "/v1/users/" + _q(user_id))

    def erase_user(self, user_id):
        """Erases every trace of the user (idempotent)."""
        return self.request("DELETE", "/v1/users/" + _q(user_id))

    # ------------------------------------------------------------- patterns

    def put_pattern(self, agent, pattern_id, type, key, value, confidence=None,
                    support=None, embedding=None):
        body = {"type": type, "key": key, "value": value}
        if confidence is not None:
            body["confidence"] = confidence
        if support is not None:
            body["support"] = support
        if embedding is not None:
            body["embedding"] = list(embedding)
        return self.request("PUT", "/v1/agents/%s/patterns/%s" % (_q(agent), _q(pattern_id)), body)

    def get_pattern(self, agent, pattern_id):
        return self.request("GET", "/v1/agents/%s/patterns/%s" % (_q(agent), _q(pattern_id)))

    def search_patterns(self, agent, embedding, k=10):
        return self.request("POST", "/v1/agents/%s/patterns/search" % _q(agent),
                            {"embedding": list(embedding), "k": k}, safe=True)["hits"]

    # ------------------------------------------------------------- sessions

    def put_session(self, session_id, context, ttl_s=None):
        body = {"context": context}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return self.request("PUT", "/v1/sessions/" + _q(session_id), body)

    def get_session(self, session_id):
        return self.request("GET", "/v1/sessions/" + _q(session_id))["context"]

    def delete_session(self, session_id):
        return self.request("DELETE", "/v1/sessions/" + _q(session_id))
