/*
 * api.c — the routes of `agentdb serve`: each HTTP request is matched to a
 * route, authorised, validated into an adb_* call, and answered in compact
 * JSON. The contract is docs/openapi.yaml; the library error codes map to
 * HTTP statuses in exactly one place, adb__api_status.
 *
 * The request path. A request runs on the worker thread that read it; only
 * handlers that wait for a durable commit (writes in sync mode, and config
 * writes always) are deferred to the pool. Handlers allocate from a
 * per-thread arena that is reset after each request, so a cached decide
 * makes no malloc of its own (api_decide.c says how its body is read).
 *
 * This file holds the route table, matching, authorisation, dispatch,
 * errors, the probes, logs and lifecycle; the handlers live in one file
 * per resource (api_internal.h lists them).
 *
 * Errors are {"error":{"code","message","field"}} with stable codes:
 * invalid_json, missing_field, invalid_field, not_found, method_not_allowed,
 * unauthorized, forbidden, rate_limited, conflict, body_too_large, queue_full,
 * store_unavailable, timeout, shutting_down, not_implemented, internal (and the
 * HTTP layer's bad_request, request_timeout, headers_too_large).
 */
#define _GNU_SOURCE
#include "api_internal.h"
#include "evaluate.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------ arena */

static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void arena_destroy(void *p) {
  adb__arena_free(p);
}

static void arena_key_init(void) {
  pthread_key_create(&arena_key, arena_destroy);
}

static adb__arena *thread_arena(void) {
  pthread_once(&arena_once, arena_key_init);
  adb__arena *a = pthread_getspecific(arena_key);
  if (!a) {
    a = adb__arena_new(64 * 1024);
    if (a) pthread_setspecific(arena_key, a);
  }
  return a;
}

void *adb__api_alloc(rctx *x, size_t n) {
  return adb__arena_alloc(x->ar, n ? n : 1);
}

char *adb__api_strndup(rctx *x, const char *s, size_t n) {
  char *p = adb__api_alloc(x, n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* ----------------------------------------------------------- errors */

int adb__api_status(int adb_err, const char **code, int *retry_after_s) {
  *retry_after_s = 0;
  switch (adb_err) {
  case ADB_OK:
    *code = NULL;
    return 200;
  case ADB_EINVAL:
    *code = "invalid_field";
    return 400;
  case ADB_ENOTFOUND:
    *code = "not_found";
    return 404;
  case ADB_ECONFLICT:
    *code = "conflict";
    return 409;
  case ADB_EFULL:
    *code = "queue_full";
    *retry_after_s = 1;
    return 503;
  case ADB_EUNAVAIL:
    *code = "store_unavailable";
    *retry_after_s = 1;
    return 503;
  case ADB_ETIMEDOUT:
    *code = "timeout";
    return 503;
  case ADB_ECLOSED:
    *code = "shutting_down";
    *retry_after_s = 1;
    return 503;
  }
  *code = "internal";
  return 500;
}

int adb__api_fail(rctx *x, int status, const char *code, const char *field,
                  const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  adb__buf *b = x->out;
  b->len = 0;
  adb__buf_puts(b, "{\"error\":{\"code\":\"");
  adb__buf_puts(b, code);
  adb__buf_puts(b, "\",\"message\":");
  adb__json_str(b, msg);
  if (field) {
    adb__buf_puts(b, ",\"field\":");
    adb__json_str(b, field);
  }
  adb__buf_puts(b, "}}");
  x->resp->status = status;
  x->resp->error_code = code;
  return -1;
}

/* The field an EINVAL message from the library is about, if it says. */
const char *adb__api_guess_field(const char *msg) {
  static const char *const tab[][2] = {
      {"embedding", "embedding"}, {"candidate", "candidates"},
      {"context", "context"},     {"event", "event_id"},
      {"reward", "reward"},       {"signal", "signals"},
      {"prior", "prior"},         {"weight", "reward_weights"},
      {"state_key", "state_key"}, {"user", "user_id"}};
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (strstr(msg, tab[i][0])) return tab[i][1];
  return NULL;
}

/* Answers a library failure through adb__api_status. */
int adb__api_fail_adb(rctx *x, int rc, const char *field) {
  const char *code;
  int retry;
  int status = adb__api_status(rc, &code, &retry);
  const char *msg = adb_errmsg(x->db);
  if (!msg || !*msg) msg = adb_strerror(rc);
  if (rc == ADB_EINVAL && !field) field = adb__api_guess_field(msg);
  adb__api_fail(x, status, code, rc == ADB_EINVAL ? field : NULL, "%s", msg);
  if (retry) {
    char v[16];
    snprintf(v, sizeof v, "%d", retry);
    adb__http_resp_header(x->resp, "Retry-After", v);
  }
  return -1;
}

/* ------------------------------------------------------ probes etc. */

static int h_healthz(rctx *x) {
  adb__buf_puts(x->out, "{\"status\":\"ok\"}");
  return 0;
}

/* The server, once started (set by another thread after the workers). */
static adb__http_server *server_of(adb__api *api) {
  return __atomic_load_n(&api->srv, __ATOMIC_ACQUIRE);
}

static int h_readyz(rctx *x) {
  adb__http_server *srv = server_of(x->api);
  if (srv && adb__http_draining(srv)) {
    adb__http_resp_header(x->resp, "Retry-After", "1");
    return adb__api_fail(x, 503, "shutting_down", NULL,
                         "the server is shutting down");
  }
  /* A read of an agent that does not exist goes to the store (or the
   * cache) and back: ENOTFOUND proves the store answers. */
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, "adb.readyz.probe", &cfg);
  if (rc != ADB_OK && rc != ADB_ENOTFOUND)
    return adb__api_fail_adb(x, rc, NULL);
  adb__buf_puts(x->out, "{\"status\":\"ready\"}");
  return 0;
}

static int h_metrics(rctx *x) {
  adb__http_server *srv = server_of(x->api);
  int draining = srv && adb__http_draining(srv);
  adb__metrics_render(x->api->metrics, x->db, draining, x->out);
  adb__metrics_render_process(x->out);
  const adb__health *h = __atomic_load_n(&x->api->health, __ATOMIC_ACQUIRE);
  if (h)
    adb__buf_printf(x->out,
                    "# HELP agentdb_store_up 1 while the store answers.\n"
                    "# TYPE agentdb_store_up gauge\nagentdb_store_up %d\n"
                    "# HELP agentdb_cache_up 1 while the cache raises no "
                    "errors.\n# TYPE agentdb_cache_up gauge\n"
                    "agentdb_cache_up %d\n",
                    adb__health_store_up(h), adb__health_cache_up(h));
  adb__dash_render_metrics(x->api->dash, x->out);
  x->resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  return 0;
}

/* ----------------------------------------------------------- routes */

#define GET ADB__HTTP_GET
#define PUT ADB__HTTP_PUT
#define POST ADB__HTTP_POST
#define DEL ADB__HTTP_DELETE

static const route routes[] = {
    {0, "(unmatched)", NULL, 0, 1},
    {GET, "/healthz", h_healthz, BLK_NEVER, 1},
    {GET, "/readyz", h_readyz, BLK_NEVER, 1},
    {GET, "/metrics", h_metrics, BLK_NEVER, 1},
    {GET, "/v1/agents", adb__api_agents_list, BLK_ALWAYS, 0},
    {PUT, "/v1/agents/{agent}", adb__api_agent_put, BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}", adb__api_agent_get, BLK_NEVER, 0},
    {DEL, "/v1/agents/{agent}", adb__api_agent_delete, BLK_ALWAYS, 0},
    {POST, "/v1/agents/{agent}/reset", adb__api_agent_reset, BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}/actions", adb__api_actions_list, BLK_ALWAYS, 0},
    {DEL, "/v1/agents/{agent}/actions/{action}", adb__api_action_delete,
     BLK_ALWAYS, 0},
    {PUT, "/v1/agents/{agent}/actions/{action}", adb__api_action_put,
     BLK_ALWAYS, 0},
    {POST, "/v1/agents/{agent}/actions", adb__api_actions_post, BLK_ALWAYS, 0},
    {POST, "/v1/agents/{agent}/decide", adb__api_decide, BLK_NEVER, 0},
    {POST, "/v1/agents/{agent}/rewards", adb__api_reward, BLK_SYNC, 0},
    {POST, "/v1/agents/{agent}/episodes", adb__api_episodes, BLK_SYNC, 0},
    {POST, "/v1/agents/{agent}/episodes/search", adb__api_episodes_search,
     BLK_NEVER, 0},
    {GET, "/v1/agents/{agent}/policies/{user}", adb__api_policy, BLK_NEVER, 0},
    {POST, "/v1/agents/{agent}/patterns/search", adb__api_patterns_search,
     BLK_NEVER, 0},
    {PUT, "/v1/agents/{agent}/patterns/{pattern}", adb__api_pattern_put,
     BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}/patterns/{pattern}", adb__api_pattern_get,
     BLK_NEVER, 0},
    {GET, "/v1/agents/{agent}/metrics", adb__api_agent_metrics, BLK_NEVER, 0},
    {POST, "/v1/users/search", adb__api_users_search, BLK_NEVER, 0},
    {PUT, "/v1/users/{user}/state", adb__api_user_put, BLK_ALWAYS, 0},
    {GET, "/v1/users/{user}/state", adb__api_user_get, BLK_NEVER, 0},
    {GET, "/v1/users/{user}", adb__api_user_summary, BLK_ALWAYS, 0},
    {DEL, "/v1/users/{user}", adb__api_user_erase, BLK_ALWAYS, 0},
    {PUT, "/v1/sessions/{session}", adb__api_session_put, BLK_NEVER, 0},
    {GET, "/v1/sessions/{session}", adb__api_session_get, BLK_NEVER, 0},
    {DEL, "/v1/sessions/{session}", adb__api_session_delete, BLK_NEVER, 0},
    {GET, "/", adb__api_dash_index, BLK_NEVER, 1},
    {GET, "/dashboard/", adb__api_dash_index, BLK_NEVER, 1},
    {GET, "/dashboard/{asset}", adb__api_dash_asset, BLK_NEVER, 1},
    {GET, "/v1/dashboard/overview", adb__api_dash_overview, BLK_NEVER, 0},
    {GET, "/v1/dashboard/recent", adb__api_dash_recent, BLK_NEVER, 0},
    {GET, "/v1/dashboard/agents/{agent}/series", adb__api_dash_series,
     BLK_NEVER, 0},
    {GET, "/v1/dashboard/agents/{agent}/inspect/{user}", adb__api_dash_inspect,
     BLK_NEVER, 0},
    /* Azure Personalizer v1.0 (api_personalizer.c; docs/personalizer.md):
     * Microsoft's contract, not in docs/openapi.yaml. */
    {POST, "/personalizer/v1.0/rank", adb__api_pz_rank, BLK_ALWAYS, 0},
    {POST, "/personalizer/v1.0/events/{eventId}/reward", adb__api_pz_reward,
     BLK_ALWAYS, 0},
    {POST, "/personalizer/v1.0/events/{eventId}/activate", adb__api_pz_activate,
     BLK_ALWAYS, 0},
    {GET, "/personalizer/v1.0/configurations/service", adb__api_pz_service_get,
     BLK_ALWAYS, 0},
    {PUT, "/personalizer/v1.0/configurations/service", adb__api_pz_service_put,
     BLK_ALWAYS, 0},
    {GET, "/personalizer/v1.0/configurations/policy", adb__api_pz_policy_get,
     BLK_ALWAYS, 0},
    {PUT, "/personalizer/v1.0/configurations/policy", adb__api_pz_policy_put,
     BLK_ALWAYS, 0},
    {DEL, "/personalizer/v1.0/configurations/policy", adb__api_pz_policy_delete,
     BLK_ALWAYS, 0},
    {GET, "/personalizer/v1.0/model", adb__api_pz_model_get, BLK_ALWAYS, 0},
    {DEL, "/personalizer/v1.0/model", adb__api_pz_model_delete, BLK_ALWAYS, 0},
    {GET, "/personalizer/v1.0/model/properties", adb__api_pz_model_properties,
     BLK_ALWAYS, 0},
    {DEL, "/personalizer/v1.0/logs", adb__api_pz_logs_delete, BLK_ALWAYS, 0},
    {GET, "/personalizer/v1.0/logs/properties", adb__api_pz_logs_properties,
     BLK_ALWAYS, 0},
    {GET, "/personalizer/v1.0/evaluations", adb__api_pz_evaluations, BLK_NEVER,
     0},
    {POST, "/personalizer/v1.0/evaluations", adb__api_pz_evaluations, BLK_NEVER,
     0},
    {GET, "/personalizer/v1.0/evaluations/{evaluationId}",
     adb__api_pz_evaluations, BLK_NEVER, 0},
    {DEL, "/personalizer/v1.0/evaluations/{evaluationId}",
     adb__api_pz_evaluations, BLK_NEVER, 0},
    {GET, "/personalizer/v1.0/apprentice", adb__api_pz_apprentice, BLK_ALWAYS,
     0},
    {POST, "/v1/agents/{agent}/evaluations", adb__api_evaluation_start,
     BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}/evaluations", adb__api_evaluations_list,
     BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}/evaluations/{evaluation}",
     adb__api_evaluation_get, BLK_NEVER, 0},
    {DEL, "/v1/agents/{agent}/evaluations/{evaluation}",
     adb__api_evaluation_cancel, BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}/log", adb__api_agent_log, BLK_ALWAYS, 0},
};
#define N_ROUTES (int)(sizeof routes / sizeof routes[0])

static const char *method_name(int m) {
  switch (m) {
  case ADB__HTTP_GET:
    return "GET";
  case ADB__HTTP_PUT:
    return "PUT";
  case ADB__HTTP_POST:
    return "POST";
  case ADB__HTTP_DELETE:
    return "DELETE";
  }
  return "-";
}

/* Matches path against pattern, capturing the raw {param} segments. */
static int match(const char *pat, const char *path, size_t plen,
                 const char **seg, size_t *seglen, int *nseg) {
  const char *p = path, *end = path + plen;
  int n = 0;
  while (*pat) {
    if (*pat != '/' || p >= end || *p != '/') return 0;
    pat++, p++;
    const char *ps = pat, *s = p;
    while (*pat && *pat != '/')
      pat++;
    while (p < end && *p != '/')
      p++;
    if (*ps == '{') {
      if (p == s || n == MAX_PARAMS) return 0;
      seg[n] = s;
      seglen[n++] = (size_t)(p - s);
    } else if ((size_t)(pat - ps) != (size_t)(p - s) ||
               memcmp(ps, s, (size_t)(p - s)) != 0) {
      return 0;
    }
  }
  *nseg = n;
  return p == end;
}

static const char *param_name(const char *pat, int i) {
  static __thread char name[32];
  for (const char *p = strchr(pat, '{'); p; p = strchr(p + 1, '{'))
    if (i-- == 0) {
      const char *e = strchr(p, '}');
      snprintf(name, sizeof name, "%.*s", (int)(e - p - 1), p + 1);
      return name;
    }
  return "path";
}

/* Decodes and validates the captured ids. */
static int take_params(rctx *x, const char **seg, const size_t *len, int n) {
  for (int i = 0; i < n; i++) {
    x->param[i] = seg[i] ? adb__api_pct_decode(x, seg[i], len[i]) : NULL;
    /* The agent-wide posterior is user "*" (policies only). */
    int star =
        (x->rt->fn == adb__api_policy || x->rt->fn == adb__api_dash_inspect) &&
        i == 1 && x->param[i] && strcmp(x->param[i], "*") == 0;
    /* Personalizer's ids are any text (api_personalizer.c maps them). */
    int pz = strncmp(x->rt->pattern, "/personalizer/", 14) == 0;
    if (!x->param[i] || (!star && !pz && !adb_id_valid(x->param[i]))) {
      const char *f = param_name(x->rt->pattern, i);
      return adb__api_fail(x, 400, "invalid_field", f,
                           "'%s' in the path must be 1..128 characters of "
                           "[A-Za-z0-9._:@-]",
                           f);
    }
  }
  return 0;
}

/* Finds the route; answers 404/405 itself and returns NULL then. */
static const route *find_route(rctx *x, const char **seg, size_t *len, int *n) {
  adb__http_req *r = x->req;
  int method = r->method == ADB__HTTP_HEAD ? ADB__HTTP_GET : r->method;
  char allow[64] = "";
  for (int i = 1; i < N_ROUTES; i++) {
    if (!match(routes[i].pattern, r->path, r->path_len, seg, len, n)) continue;
    if (routes[i].method == method) return &routes[i];
    size_t l = strlen(allow);
    snprintf(allow + l, sizeof allow - l, "%s%s", l ? ", " : "",
             method_name(routes[i].method));
  }
  if (allow[0]) {
    adb__api_fail(x, 405, "method_not_allowed", NULL,
                  "%.*s is not allowed here", (int)r->method_len,
                  r->method_str);
    adb__http_resp_header(x->resp, "Allow", allow);
  } else {
    int pl = r->path_len > 200 ? 200 : (int)r->path_len;
    adb__api_fail(x, 404, "not_found", NULL, "no route for %.*s", pl, r->path);
  }
  return NULL;
}

/* The key of a request: Authorization: Bearer, or Personalizer's
 * Ocp-Apim-Subscription-Key header. */
static int key_of(const adb__auth *auth, const adb__http_req *r) {
  int k = adb__auth_check(auth, r->authorization, r->authorization_len);
  if (k >= 0 || !r->subscription_key || r->subscription_key_len > 512) return k;
  char h[7 + 512];
  memcpy(h, "Bearer ", 7);
  memcpy(h + 7, r->subscription_key, r->subscription_key_len);
  return adb__auth_check(auth, h, 7 + r->subscription_key_len);
}

/* API key and agent scope. */
static int authorise(rctx *x) {
  const adb__auth *auth = x->auth;
  x->key = -1;
  if (!auth || x->rt->open) return 0;
  x->key = key_of(auth, x->req);
  if (x->key < 0 && strncmp(x->rt->pattern, "/personalizer/", 14) == 0)
    return adb__api_fail(x, 401, "401", NULL,
                         "Access denied due to invalid subscription key: "
                         "Ocp-Apim-Subscription-Key must hold an AgentDB API "
                         "key");
  if (x->key < 0) {
    adb__api_fail(x, 401, "unauthorized", NULL,
                  "a valid API key is required: Authorization: Bearer <key>");
    adb__http_resp_header(x->resp, "WWW-Authenticate",
                          "Bearer realm=\"agentdb\"");
    return -1;
  }
  return 0;
}

/* Without a valid key, a /v1 path that matches no route is a 401 like any
 * other: the route table is not shown to anonymous clients. */
static void hide_routes(rctx *x) {
  const adb__http_req *r = x->req;
  if (!x->auth || r->path_len < 3 || memcmp(r->path, "/v1", 3) ||
      key_of(x->auth, r) >= 0)
    return;
  x->resp->headers_len = 0;
  adb__api_fail(x, 401, "unauthorized", NULL,
                "a valid API key is required: Authorization: Bearer <key>");
  adb__http_resp_header(x->resp, "WWW-Authenticate",
                        "Bearer realm=\"agentdb\"");
}

/* What a key scoped to some agents may reach: those agents (another is
 * not found, whether it exists or not); sessions in those agents'
 * namespaces (api_sessions.c); no user state and no user search, which
 * every agent shares (the cold start of any agent reads them), so only a
 * key for every agent may write or read them. */
static int scope_ok(rctx *x) {
  if (x->key < 0) return 0;
  const char *only;
  if (strncmp(x->rt->pattern, "/v1/users", 9) == 0 &&
      adb__auth_scope(x->auth, x->key, &only) > 0)
    return adb__api_fail(x, 403, "forbidden", NULL,
                         "user states are shared by every agent: only a key "
                         "not scoped to agents may read or write them");
  if (strncmp(x->rt->pattern, "/v1/agents/", 11) != 0 &&
      strncmp(x->rt->pattern, "/v1/dashboard/agents/", 21))
    return 0;
  if (adb__auth_allows(x->auth, x->key, x->param[0])) return 0;
  return adb__api_fail(x, 404, "not_found", NULL, "unknown agent '%s'",
                       x->param[0]);
}

/* The query parameters each route takes. A route listed here answers 400
 * to a parameter it does not take, to one given twice and to a malformed
 * one, so that no typo is silently taken as the default. */
static const struct {
  const char *pattern;
  const char *params[4];
} query_params[] = {
    {"/healthz", {NULL}},
    {"/readyz", {NULL}},
    {"/metrics", {NULL}},
    {"/v1/agents/{agent}", {NULL}},
    {"/v1/agents/{agent}/actions/{action}", {NULL}},
    {"/v1/agents/{agent}/actions", {NULL}},
    {"/v1/agents/{agent}/decide", {NULL}},
    {"/v1/agents/{agent}/rewards", {NULL}},
    {"/v1/agents/{agent}/episodes", {NULL}},
    {"/v1/agents/{agent}/episodes/search", {NULL}},
    {"/v1/agents/{agent}/policies/{user}", {"state_key", NULL}},
    {"/v1/agents/{agent}/patterns/search", {NULL}},
    {"/v1/agents/{agent}/patterns/{pattern}", {NULL}},
    {"/v1/agents/{agent}/metrics", {"from", "to", NULL}},
    {"/v1/users/search", {NULL}},
    {"/v1/users/{user}/state", {NULL}},
    {"/v1/sessions/{session}", {"ttl_s", "agent", NULL}},
    {"/v1/agents/{agent}/evaluations", {NULL}},
    {"/v1/agents/{agent}/evaluations/{evaluation}", {NULL}},
    {"/v1/agents/{agent}/log", {"from", "to", "format", NULL}},
};

static int query_param_known(int q, const char *name, size_t n) {
  for (int i = 0; query_params[q].params[i]; i++)
    if (strlen(query_params[q].params[i]) == n &&
        memcmp(query_params[q].params[i], name, n) == 0)
      return 1;
  return 0;
}

static int check_query(rctx *x) {
  const char *qs = x->req->query;
  size_t n = x->req->query_len;
  int q = -1;
  for (int i = 0; i < (int)(sizeof query_params / sizeof query_params[0]); i++)
    if (strcmp(query_params[i].pattern, x->rt->pattern) == 0) q = i;
  if (q < 0 || !qs) return 0; /* a route that checks its own */
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && qs[j] != '&')
      j++;
    const char *eq = memchr(qs + i, '=', j - i);
    size_t kl = eq ? (size_t)(eq - (qs + i)) : j - i;
    if (j > i && !query_param_known(q, qs + i, kl))
      return adb__api_fail(x, 400, "invalid_field", NULL,
                           "unknown query parameter '%.*s'",
                           (int)(kl > 64 ? 64 : kl), qs + i);
    int bad = 0;
    if (j > i) {
      char name[16];
      snprintf(name, sizeof name, "%.*s", (int)kl, qs + i);
      const char *first = adb__api_query_get(x, name, &bad);
      if (bad || !first || adb__api_pct_decode(x, qs + i, kl) == NULL)
        return adb__api_fail(x, 400, "invalid_field", name,
                             "query parameter '%s' is malformed", name);
      for (size_t k = j + 1; k < n;) { /* given twice? */
        size_t e = k;
        while (e < n && qs[e] != '&')
          e++;
        if ((e - k == kl || (e - k > kl && qs[k + kl] == '=')) &&
            memcmp(qs + k, qs + i, kl) == 0)
          return adb__api_fail(x, 400, "invalid_field", name,
                               "query parameter '%s' is given twice", name);
        k = e + 1;
      }
    }
    i = j + 1;
  }
  return 0;
}

/* ------------------------------------------------------- request id */

/* A client's X-Request-Id is kept when it is 1..64 characters of
 * [A-Za-z0-9._:@/+=-]; otherwise one is made: 16 hex digits from a
 * per-thread generator seeded from the clock and the thread. */
static int request_id_ok(const char *s, size_t n) {
  if (n < 1 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && !strchr("._:@/+=-", s[i])) return 0;
  return 1;
}

static void request_id(const adb__http_req *req, adb__http_resp *resp) {
  static __thread uint64_t state;
  if (req->request_id && request_id_ok(req->request_id, req->request_id_len)) {
    memcpy(resp->request_id, req->request_id, req->request_id_len);
    resp->request_id[req->request_id_len] = '\0';
  } else {
    if (!state) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      state = ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
              ((uint64_t)(uintptr_t)&state << 16) ^ 0x9e3779b97f4a7c15ULL;
    }
    /* splitmix64 */
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 15; i >= 0; i--, z >>= 4)
      resp->request_id[i] = "0123456789abcdef"[z & 15];
    resp->request_id[16] = '\0';
  }
  adb__http_resp_header(resp, "X-Request-Id", resp->request_id);
}

/* ------------------------------------------------- CORS and rate limits */

/* The request's Origin when the allow-list holds it, else NULL. */
static const char *cors_origin(rctx *x) {
  const char *list = x->api->cfg.cors_origins;
  const adb__http_req *r = x->req;
  if (!list || !list[0] || !r->origin || !r->origin_len || r->origin_len > 256)
    return NULL;
  for (const char *p = list; *p;) {
    size_t n = strcspn(p, ",");
    while (n && p[n - 1] == ' ')
      n--;
    if ((n == 1 && *p == '*') ||
        (n == r->origin_len && memcmp(p, r->origin, n) == 0))
      return adb__api_strndup(x, r->origin, r->origin_len);
    p += strcspn(p, ",");
    while (*p == ',' || *p == ' ')
      p++;
  }
  return NULL;
}

/* Adds the CORS headers of an allowed origin to the answer; answers a
 * preflight (OPTIONS) and returns 1 then. Called once per request, when
 * its answer is final (never before a deferral). */
static int cors(rctx *x) {
  const char *o = cors_origin(x);
  if (!o) return 0;
  adb__http_resp_header(x->resp, "Access-Control-Allow-Origin", o);
  adb__http_resp_header(x->resp, "Vary", "Origin");
  if (x->req->method != ADB__HTTP_OPTIONS) return 0;
  adb__http_resp_header(x->resp, "Access-Control-Allow-Methods",
                        "GET, PUT, POST, DELETE");
  adb__http_resp_header(x->resp, "Access-Control-Allow-Headers",
                        "Authorization, Content-Type, "
                        "Ocp-Apim-Subscription-Key");
  adb__http_resp_header(x->resp, "Access-Control-Max-Age", "600");
  x->resp->status = 204;
  return 1;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Takes a token from the key's bucket, or answers 429 with the seconds
 * until one is there. */
static int rate_ok(rctx *x) {
  adb__api *api = x->api;
  if (!api->buckets || x->key < 0) return 0;
  int k = x->key < ADB_API_MAX_BUCKETS ? x->key : ADB_API_MAX_BUCKETS - 1;
  adb__api_bucket *b = &api->buckets[k];
  double rate = api->cfg.rate_per_s, burst = api->cfg.rate_burst, wait = 0;
  int64_t now = mono_ns();
  pthread_mutex_lock(&b->mu);
  b->tokens += (double)(now - b->at_ns) * 1e-9 * rate;
  if (b->tokens > burst) b->tokens = burst;
  b->at_ns = now;
  if (b->tokens >= 1)
    b->tokens -= 1;
  else
    wait = (1 - b->tokens) / rate;
  pthread_mutex_unlock(&b->mu);
  if (wait <= 0) return 0;
  char v[24];
  snprintf(v, sizeof v, "%.0f", ceil(wait));
  adb__api_fail(x, 429, "rate_limited", NULL,
                "this API key is limited to %g requests a second (bursts of "
                "%g); retry after %s s",
                rate, burst, v);
  adb__http_resp_header(x->resp, "Retry-After", v);
  return -1;
}

static void buckets_reset(adb__api *api) {
  if (!api->buckets) return;
  int64_t now = mono_ns();
  for (int i = 0; i < ADB_API_MAX_BUCKETS; i++) {
    pthread_mutex_lock(&api->buckets[i].mu);
    api->buckets[i].tokens = api->cfg.rate_burst;
    api->buckets[i].at_ns = now;
    pthread_mutex_unlock(&api->buckets[i].mu);
  }
}

static int blocks(const adb__api *api, const route *rt) {
  return rt->blocking == BLK_ALWAYS ||
         (rt->blocking == BLK_SYNC &&
          api->cfg.durability == ADB_DURABILITY_SYNC);
}

int adb__api_handle(void *ud, adb__http_req *req, adb__http_resp *resp) {
  adb__api *api = ud;
  rctx x = {.api = api,
            .db = api->cfg.db,
            .req = req,
            .resp = resp,
            .out = resp->body,
            .ar = thread_arena(),
            .auth = __atomic_load_n(&api->cfg.auth, __ATOMIC_ACQUIRE),
            .key = -1};
  if (!x.ar) {
    resp->status = 500;
    adb__buf_puts(resp->body, "{\"error\":{\"code\":\"internal\","
                              "\"message\":\"out of memory\"}}");
    return ADB__HTTP_DONE;
  }
  if (req->method == ADB__HTTP_OPTIONS && cors(&x)) { /* a preflight */
    adb__arena_reset(x.ar);
    return ADB__HTTP_DONE;
  }
  const char *seg[MAX_PARAMS];
  size_t len[MAX_PARAMS];
  int n = 0;
  x.rt = find_route(&x, seg, len, &n);
  resp->route = x.rt ? (int)(x.rt - routes) : 0;
  if (!x.rt) hide_routes(&x);
  if (x.rt && !authorise(&x) && (req->in_pool || !rate_ok(&x)) &&
      !take_params(&x, seg, len, n) && !scope_ok(&x) && !check_query(&x)) {
    if (blocks(api, x.rt) && !req->in_pool) {
      adb__arena_reset(x.ar);
      return ADB__HTTP_DEFER;
    }
    x.rt->fn(&x);
  }
  if (!x.later) adb__api_answer_headers(&x);
  json_decref(x.doc);
  adb__arena_reset(x.ar);
  return x.later ? ADB__HTTP_LATER : ADB__HTTP_DONE;
}

void adb__api_answer_headers(rctx *x) {
  if (x->headers_set) return;
  x->headers_set = 1;
  request_id(x->req, x->resp);
  cors(x);
}

/* Before a large body is read: without a valid key (when keys are set)
 * the request is refused at its head, so that an anonymous client costs
 * no more than max_head + the HTTP layer's preauth_body per connection. */
int adb__api_admit(void *ud, const adb__http_req *req, adb__http_resp *resp) {
  adb__api *api = ud;
  const adb__auth *auth = __atomic_load_n(&api->cfg.auth, __ATOMIC_ACQUIRE);
  if (!auth || key_of(auth, req) >= 0) return 0;
  rctx x = {.api = api,
            .req = (adb__http_req *)req,
            .resp = resp,
            .out = resp->body,
            .key = -1};
  adb__api_fail(&x, 401, "unauthorized", NULL,
                "a valid API key is required: Authorization: Bearer <key>");
  adb__http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"agentdb\"");
  return 1;
}

/* ------------------------------------------------------------- logs */

/* One event per error answer, holding the answer's error object. */
static void log_error(const adb__log *l, const adb__http_req *req,
                      const adb__http_resp *resp, int64_t latency_ns) {
  char method[16], path[260];
  snprintf(method, sizeof method, "%.*s",
           (int)(req->method_len > 15 ? 15 : req->method_len),
           req->method_str ? req->method_str : "");
  snprintf(path, sizeof path, "%.*s",
           req->path ? (int)(req->path_len > 256 ? 256 : req->path_len) : 0,
           req->path ? req->path : "");
  const adb__buf *body = resp->body;
  char *err = NULL;
  if (body && body->len > 10 && memcmp(body->p, "{\"error\":", 9) == 0 &&
      body->p[body->len - 1] == '}')
    err = strndup(body->p + 9, body->len - 10);
  adb__logf f[] = {ADB_LOGS("method", method),
                   ADB_LOGS("path", path),
                   ADB_LOGN("status", resp->status),
                   ADB_LOGN("latency_us", latency_ns / 1000),
                   ADB_LOGS("request_id", resp->request_id),
                   ADB_LOGRAW("error", err ? err : "null")};
  adb__log_event(l, resp->status >= 500 ? "error" : "warn", "request_error",
                 resp->error_code ? resp->error_code : "error", f, 6);
  free(err);
}

/* One event per request slower than the threshold. */
static void log_slow(const adb__log *l, const adb__http_req *req,
                     const adb__http_resp *resp, int64_t latency_ns,
                     int64_t slow_ms) {
  char method[16], path[260];
  snprintf(method, sizeof method, "%.*s",
           (int)(req->method_len > 15 ? 15 : req->method_len),
           req->method_str ? req->method_str : "");
  snprintf(path, sizeof path, "%.*s",
           req->path ? (int)(req->path_len > 256 ? 256 : req->path_len) : 0,
           req->path ? req->path : "");
  adb__logf f[] = {ADB_LOGS("method", method),
                   ADB_LOGS("path", path),
                   ADB_LOGN("status", resp->status),
                   ADB_LOGN("latency_ms", (double)latency_ns / 1e6),
                   ADB_LOGN("threshold_ms", slow_ms),
                   ADB_LOGS("request_id", resp->request_id)};
  adb__log_event(l, "warn", "slow_request",
                 "a request took longer than "
                 "the threshold",
                 f, 6);
}

static void log_access(FILE *f, const adb__http_req *req,
                       const adb__http_resp *resp, int64_t latency_ns) {
  char ts[40];
  adb__log_now(ts, sizeof ts);
  int pl = req->path ? (int)(req->path_len > 256 ? 256 : req->path_len) : 0;
  fprintf(f, "%s %.*s %.*s%s%.*s %d %zu %lldus\n", ts, (int)req->method_len,
          req->method_str ? req->method_str : "", pl,
          req->path ? req->path : "", req->query ? "?" : "",
          req->query ? (int)(req->query_len > 256 ? 256 : req->query_len) : 0,
          req->query ? req->query : "", resp->status,
          resp->body ? resp->body->len : 0, (long long)(latency_ns / 1000));
  fflush(f);
}

void adb__api_done(void *ud, const adb__http_req *req,
                   const adb__http_resp *resp, int64_t latency_ns) {
  adb__api *api = ud;
  adb__metrics_observe(api->metrics, req->worker, resp->route, resp->status,
                       latency_ns);
  if (api->cfg.access_log)
    log_access(api->cfg.access_log, req, resp, latency_ns);
  if (resp->status >= 400 && api->cfg.log)
    log_error(api->cfg.log, req, resp, latency_ns);
  if (api->cfg.slow_ms > 0 && latency_ns > api->cfg.slow_ms * 1000000 &&
      api->cfg.log)
    log_slow(api->cfg.log, req, resp, latency_ns, api->cfg.slow_ms);
}

/* -------------------------------------------------------- lifecycle */

int adb__api_new(const adb__api_config *cfg, adb__api **out) {
  *out = NULL;
  adb__api *api = calloc(1, sizeof *api);
  if (!api) return ADB_ENOMEM;
  api->cfg = *cfg;
  api->names = calloc(N_ROUTES, sizeof *api->names);
  api->methods = calloc(N_ROUTES, sizeof *api->methods);
  if (!api->names || !api->methods) goto fail;
  for (int i = 0; i < N_ROUTES; i++) {
    api->names[i] = routes[i].pattern;
    api->methods[i] = method_name(routes[i].method);
  }
  api->metrics = adb__metrics_new(cfg->threads > 0 ? cfg->threads : 1, N_ROUTES,
                                  api->names, api->methods);
  api->dash = adb__dash_new(cfg->dash_max_agents);
  if (!api->metrics || !api->dash) goto fail;
  if (adb__eval_jobs_new(cfg->max_evaluations, cfg->eval_scan,
                         cfg->eval_scan ? cfg->eval_scan_arg : cfg->db,
                         &api->evals))
    goto fail;
  if (cfg->rate_per_s > 0) {
    if (api->cfg.rate_burst < 1) api->cfg.rate_burst = 1;
    api->buckets = calloc(ADB_API_MAX_BUCKETS, sizeof *api->buckets);
    if (!api->buckets) goto fail;
    for (int i = 0; i < ADB_API_MAX_BUCKETS; i++)
      pthread_mutex_init(&api->buckets[i].mu, NULL);
    buckets_reset(api);
  }
  *out = api;
  return ADB_OK;
fail:
  adb__api_free(api);
  return ADB_ENOMEM;
}

void adb__api_free(adb__api *api) {
  if (!api) return;
  for (int i = 0; api->buckets && i < ADB_API_MAX_BUCKETS; i++)
    pthread_mutex_destroy(&api->buckets[i].mu);
  free(api->buckets);
  adb__eval_jobs_free(api->evals);
  adb__metrics_free(api->metrics);
  adb__dash_free(api->dash);
  free(api->names);
  free(api->methods);
  free(api);
}

void adb__api_set_auth(adb__api *api, const adb__auth *auth) {
  __atomic_store_n(&api->cfg.auth, auth, __ATOMIC_RELEASE);
  buckets_reset(api); /* key indexes now name other keys */
}

void adb__api_set_server(adb__api *api, adb__http_server *srv) {
  __atomic_store_n(&api->srv, srv, __ATOMIC_RELEASE);
}

void adb__api_stop_evaluations(adb__api *api) {
  if (api) adb__eval_jobs_stop(api->evals);
}

void adb__api_set_health(adb__api *api, const adb__health *h) {
  __atomic_store_n(&api->health, h, __ATOMIC_RELEASE);
}

adb__metrics *adb__api_metrics(adb__api *api) {
  return api->metrics;
}
