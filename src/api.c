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
 * makes no malloc of its own: the decide body is read by a strict fast
 * parser straight into the arena (no jansson tree), and only when that
 * parser meets anything unusual (escapes, null, non-ASCII, reals in the
 * context, duplicate keys, malformed input) is the body parsed again by
 * jansson, which accepts exactly the same documents and produces the
 * precise error. Validation after parsing is shared by both paths.
 *
 * Errors are {"error":{"code","message","field"}} with stable codes:
 * invalid_json, missing_field, invalid_field, not_found, method_not_allowed,
 * unauthorized, conflict, body_too_large, queue_full, store_unavailable,
 * timeout, shutting_down, not_implemented, internal (and the HTTP layer's
 * bad_request, request_timeout, headers_too_large).
 */
#define _GNU_SOURCE
#include "api.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_CONTEXT 64 /* context entries in a request */
#define MAX_BULK 10000 /* actions or episodes in one request */
#define MAX_PARAMS 3

typedef struct rctx rctx;
typedef int (*route_fn)(rctx *x);

enum { BLK_NEVER = 0, BLK_ALWAYS, BLK_SYNC };

typedef struct route {
  int method;
  const char *pattern;
  route_fn fn;
  int blocking; /* BLK_*: when the handler waits for a commit */
  int open;     /* no API key needed */
} route;

struct adb__api {
  adb__api_config cfg;
  adb__metrics *metrics;
  adb__http_server *srv;
  const char **names, **methods;
};

struct rctx {
  adb__api *api;
  adb *db;
  adb__http_req *req;
  adb__http_resp *resp;
  adb__buf *out;
  adb__arena *ar;
  const route *rt;
  char *param[MAX_PARAMS]; /* decoded path parameters, in order */
  json_t *doc;
  int key; /* API key index, -1 without auth */
};

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

static void *alloc(rctx *x, size_t n) {
  return adb__arena_alloc(x->ar, n ? n : 1);
}

static char *strndup_ar(rctx *x, const char *s, size_t n) {
  char *p = alloc(x, n + 1);
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

/* Writes an error answer; always returns -1 (handlers return it). */
static int fail(rctx *x, int status, const char *code, const char *field,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail(rctx *x, int status, const char *code, const char *field,
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
static const char *guess_field(const char *msg) {
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
static int fail_adb(rctx *x, int rc, const char *field) {
  const char *code;
  int retry;
  int status = adb__api_status(rc, &code, &retry);
  const char *msg = adb_errmsg(x->db);
  if (!msg || !*msg) msg = adb_strerror(rc);
  if (rc == ADB_EINVAL && !field) field = guess_field(msg);
  fail(x, status, code, rc == ADB_EINVAL ? field : NULL, "%s", msg);
  if (retry) {
    char v[16];
    snprintf(v, sizeof v, "%d", retry);
    adb__http_resp_header(x->resp, "Retry-After", v);
  }
  return -1;
}

/* ----------------------------------------------------- JSON helpers */

static const char *fname(rctx *x, const char *prefix, const char *name) {
  if (!prefix) return name;
  size_t n = strlen(prefix) + strlen(name) + 2;
  char *s = alloc(x, n);
  if (!s) return name;
  snprintf(s, n, "%s.%s", prefix, name);
  return s;
}

static const char *fidx(rctx *x, const char *name, size_t i) {
  size_t n = strlen(name) + 24;
  char *s = alloc(x, n);
  if (!s) return name;
  snprintf(s, n, "%s[%zu]", name, i);
  return s;
}

/* The body as a JSON object; an empty body is {} when allow_empty. */
static json_t *parse_body(rctx *x, int allow_empty) {
  adb__http_req *r = x->req;
  size_t i = 0;
  while (i < r->body_len && isspace((unsigned char)r->body[i]))
    i++;
  if (i == r->body_len && allow_empty) return x->doc = json_object();
  if (i == r->body_len) {
    fail(x, 400, "invalid_json", NULL, "the request needs a JSON body");
    return NULL;
  }
  char err[256];
  x->doc = adb__json_parse(r->body, r->body_len, err, sizeof err);
  if (!x->doc) fail(x, 400, "invalid_json", NULL, "%s", err);
  return x->doc;
}

/* Rejects members of o not in allowed (NULL-terminated). */
static int check_keys(rctx *x, json_t *o, const char *const *allowed,
                      const char *prefix) {
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    int ok = 0;
    for (int i = 0; allowed[i]; i++)
      ok |= strcmp(k, allowed[i]) == 0;
    if (!ok)
      return fail(x, 400, "invalid_field", fname(x, prefix, k),
                  "unknown field '%s'", k);
  }
  return 0;
}

/* o[k], treating null as absent. */
static json_t *member(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_null(v) ? NULL : v;
}

static int get_id(rctx *x, json_t *o, const char *k, const char *prefix,
                  int required, const char **out) {
  json_t *v = member(o, k);
  const char *f = fname(x, prefix, k);
  *out = NULL;
  if (!v)
    return required ? fail(x, 400, "missing_field", f, "'%s' is required", f)
                    : 0;
  if (!json_is_string(v))
    return fail(x, 400, "invalid_field", f, "'%s' must be a string", f);
  const char *s = json_string_value(v);
  if (strlen(s) != json_string_length(v) || !adb_id_valid(s))
    return fail(x, 400, "invalid_field", f,
                "'%s' must be 1..128 characters of [A-Za-z0-9._:@-]", f);
  *out = s;
  return 0;
}

static int get_num(rctx *x, json_t *o, const char *k, const char *prefix,
                   double lo, double hi, double *out, int *present) {
  json_t *v = member(o, k);
  const char *f = fname(x, prefix, k);
  if (present) *present = v != NULL;
  if (!v) return 0;
  if (!json_is_number(v))
    return fail(x, 400, "invalid_field", f, "'%s' must be a number", f);
  double d = json_number_value(v);
  if (!isfinite(d) || d < lo || d > hi)
    return fail(x, 400, "invalid_field", f, "'%s' must be in [%g, %g]", f, lo,
                hi);
  *out = d;
  return 0;
}

static int get_int(rctx *x, json_t *o, const char *k, const char *prefix,
                   int64_t lo, int64_t hi, int64_t *out, int *present) {
  json_t *v = member(o, k);
  const char *f = fname(x, prefix, k);
  if (present) *present = v != NULL;
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo ||
      json_integer_value(v) > hi)
    return fail(x, 400, "invalid_field", f,
                "'%s' must be an integer in [%lld, %lld]", f, (long long)lo,
                (long long)hi);
  *out = json_integer_value(v);
  return 0;
}

static int get_bool(rctx *x, json_t *o, const char *k, const char *prefix,
                    int *out) {
  json_t *v = member(o, k);
  if (!v) return 0;
  if (json_is_boolean(v))
    *out = json_is_true(v);
  else if (json_is_integer(v) &&
           (json_integer_value(v) == 0 || json_integer_value(v) == 1))
    *out = (int)json_integer_value(v);
  else
    return fail(x, 400, "invalid_field", fname(x, prefix, k),
                "'%s' must be a boolean", k);
  return 0;
}

/* Compact JSON text of v in the arena. */
static char *dump(rctx *x, const json_t *v) {
  adb__buf b = {0};
  adb__json_value(&b, v);
  char *s = b.oom ? NULL : strndup_ar(x, b.p ? b.p : "null", b.len);
  adb__buf_free(&b);
  return s;
}

/* An optional JSON object member as compact text (NULL when absent). */
static int get_object_text(rctx *x, json_t *o, const char *k,
                           const char *prefix, char **out) {
  json_t *v = member(o, k);
  *out = NULL;
  if (!v) return 0;
  if (!json_is_object(v))
    return fail(x, 400, "invalid_field", fname(x, prefix, k),
                "'%s' must be a JSON object", k);
  if (!(*out = dump(x, v)))
    return fail(x, 500, "internal", NULL, "out of memory");
  return 0;
}

/* "embedding" (array) or "embedding_b64" (base64 float32 LE). */
static int get_embedding(rctx *x, json_t *o, const char *prefix, int required,
                         float **emb, int *dim) {
  json_t *a = member(o, "embedding"), *b = member(o, "embedding_b64");
  const char *fa = fname(x, prefix, "embedding");
  const char *fb = fname(x, prefix, "embedding_b64");
  *emb = NULL;
  *dim = 0;
  if (a && b)
    return fail(x, 400, "invalid_field", fb,
                "give 'embedding' or 'embedding_b64', not both");
  if (!a && !b)
    return required ? fail(x, 400, "missing_field", fa,
                           "'%s' (or 'embedding_b64') is required", fa)
                    : 0;
  /* Room for what was sent, up to the limit (the decoders reject more). */
  size_t cap = a ? json_array_size(a) : (json_string_length(b) * 3 / 4 + 3) / 4;
  if (cap > ADB_MAX_EMBEDDING_DIM) cap = ADB_MAX_EMBEDDING_DIM;
  float *v = alloc(x, cap * sizeof(float) + 8);
  if (!v) return fail(x, 500, "internal", NULL, "out of memory");
  char err[128];
  int rc;
  if (a) {
    rc = adb__json_floats(a, v, (int)cap, dim, err, sizeof err);
  } else if (!json_is_string(b)) {
    snprintf(err, sizeof err, "expected a base64 string");
    rc = ADB_EINVAL;
  } else {
    rc = adb__b64_floats(json_string_value(b), json_string_length(b), v,
                         (int)cap, dim, err, sizeof err);
  }
  if (rc == ADB_OK && *dim == 0) {
    snprintf(err, sizeof err, "an embedding needs at least one value");
    rc = ADB_EINVAL;
  }
  if (rc != ADB_OK)
    return fail(x, 400, "invalid_field", a ? fa : fb, "'%s': %s", a ? fa : fb,
                err);
  *emb = v;
  return 0;
}

/* A context {key: string|number|boolean} as key/value pairs. */
static int get_context(rctx *x, json_t *o, const char *k, adb_kv **kv, int *n) {
  json_t *c = member(o, k);
  *kv = NULL;
  *n = 0;
  if (!c) return 0;
  if (!json_is_object(c) || json_object_size(c) > MAX_CONTEXT)
    return fail(x, 400, "invalid_field", k,
                "'%s' must be an object of at most %d entries", k, MAX_CONTEXT);
  adb_kv *out = alloc(x, json_object_size(c) * sizeof *out);
  if (!out) return fail(x, 500, "internal", NULL, "out of memory");
  const char *key;
  json_t *v;
  int i = 0;
  json_object_foreach(c, key, v) {
    const char *f = fname(x, k, key);
    if (!adb_id_valid(key))
      return fail(x, 400, "invalid_field", f,
                  "context keys must be 1..128 characters of "
                  "[A-Za-z0-9._:@-]");
    char tmp[40];
    const char *s = NULL;
    if (json_is_string(v)) {
      s = json_string_value(v);
    } else if (json_is_integer(v)) {
      snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
      s = tmp;
    } else if (json_is_real(v)) {
      adb__buf b = {0};
      adb__json_num(&b, json_real_value(v));
      snprintf(tmp, sizeof tmp, "%s", b.p ? b.p : "0");
      adb__buf_free(&b);
      s = tmp;
    } else if (json_is_boolean(v)) {
      s = json_is_true(v) ? "true" : "false";
    } else if (json_is_null(v)) {
      continue;
    } else {
      return fail(x, 400, "invalid_field", f,
                  "context values must be strings, numbers or booleans");
    }
    if (strlen(s) > 1024)
      return fail(x, 400, "invalid_field", f,
                  "context values hold at most 1024 bytes");
    out[i].key = key;
    out[i].value = strndup_ar(x, s, strlen(s));
    if (!out[i].value) return fail(x, 500, "internal", NULL, "out of memory");
    i++;
  }
  *kv = out;
  *n = i;
  return 0;
}

/* ---------------------------------------------------- JSON output */

static void put_key(adb__buf *b, const char *k, int first) {
  if (!first) adb__buf_putc(b, ',');
  adb__buf_putc(b, '"');
  adb__buf_puts(b, k);
  adb__buf_puts(b, "\":");
}

static void put_str(adb__buf *b, const char *k, const char *v, int first) {
  put_key(b, k, first);
  adb__json_str(b, v);
}

static void put_num(adb__buf *b, const char *k, double v) {
  put_key(b, k, 0);
  adb__json_num(b, v);
}

static void put_int(adb__buf *b, const char *k, int64_t v) {
  put_key(b, k, 0);
  adb__json_int(b, v);
}

static void put_floats(adb__buf *b, const char *k, const float *v, int n) {
  put_key(b, k, 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__json_num9(b, v[i]);
  }
  adb__buf_putc(b, ']');
}

/* Raw JSON text from the store, or fallback when absent. */
static void put_raw(adb__buf *b, const char *k, const char *json,
                    const char *fallback) {
  put_key(b, k, 0);
  adb__buf_puts(b, json && *json ? json : fallback);
}

static const char *algo_name(adb_algorithm a) {
  return a == ADB_ALGO_GAUSSIAN ? "gaussian" : "beta";
}

static void put_agent(adb__buf *b, const adb_agent_config *c,
                      const adb_agent_counters *n) {
  adb__buf_putc(b, '{');
  put_str(b, "id", c->id, 1);
  put_str(b, "algorithm", algo_name(c->algorithm), 0);
  put_key(b, "prior", 0);
  if (c->algorithm == ADB_ALGO_GAUSSIAN) {
    adb__buf_puts(b, "{\"mu\":");
    adb__json_num(b, c->prior_mu);
    put_num(b, "kappa", c->prior_kappa);
    put_num(b, "a", c->prior_a);
    put_num(b, "b", c->prior_b);
  } else {
    adb__buf_puts(b, "{\"alpha\":");
    adb__json_num(b, c->prior_alpha);
    put_num(b, "beta", c->prior_beta);
  }
  adb__buf_putc(b, '}');
  put_key(b, "context_keys", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < c->n_context_keys; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__json_str(b, c->context_keys[i]);
  }
  adb__buf_putc(b, ']');
  put_int(b, "embedding_dim", c->embedding_dim);
  put_int(b, "simhash_bits", c->simhash_bits);
  put_key(b, "reward_weights", 0);
  adb__buf_puts(b, "{\"watch\":");
  adb__json_num(b, c->reward_weights.watch);
  put_num(b, "click", c->reward_weights.click);
  put_num(b, "rating", c->reward_weights.rating);
  adb__buf_putc(b, '}');
  put_num(b, "fallback_strength", c->fallback_strength);
  put_num(b, "decay_half_life_s", c->decay_half_life_s);
  put_num(b, "reward_window_s", c->reward_window_s);
  put_num(b, "default_reward", c->default_reward);
  put_int(b, "created_at_ms", c->created_at_ms);
  put_int(b, "updated_at_ms", c->updated_at_ms);
  if (n) {
    put_key(b, "counters", 0);
    adb__buf_puts(b, "{\"decisions\":");
    adb__json_int(b, n->decisions);
    put_int(b, "rewards", n->rewards);
    put_int(b, "actions", n->actions);
    put_num(b, "reward_sum", n->reward_sum);
    adb__buf_putc(b, '}');
  }
  adb__buf_putc(b, '}');
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
    return fail(x, 503, "shutting_down", NULL, "the server is shutting down");
  }
  /* A read of an agent that does not exist goes to the store (or the
   * cache) and back: ENOTFOUND proves the store answers. */
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, "adb.readyz.probe", &cfg);
  if (rc != ADB_OK && rc != ADB_ENOTFOUND) return fail_adb(x, rc, NULL);
  adb__buf_puts(x->out, "{\"status\":\"ready\"}");
  return 0;
}

static int h_metrics(rctx *x) {
  adb__http_server *srv = server_of(x->api);
  int draining = srv && adb__http_draining(srv);
  adb__metrics_render(x->api->metrics, x->db, draining, x->out);
  x->resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  return 0;
}

/* ----------------------------------------------------------- agents */

static int agent_prior(rctx *x, json_t *doc, adb_agent_config *c) {
  json_t *p = member(doc, "prior");
  if (!p) return 0;
  if (!json_is_object(p))
    return fail(x, 400, "invalid_field", "prior", "'prior' must be an object");
  static const char *const keys[] = {"alpha", "beta", "mu", "kappa",
                                     "a",     "b",    NULL};
  if (check_keys(x, p, keys, "prior")) return -1;
  const double big = 1e300;
  if (get_num(x, p, "alpha", "prior", 1e-300, big, &c->prior_alpha, NULL) ||
      get_num(x, p, "beta", "prior", 1e-300, big, &c->prior_beta, NULL) ||
      get_num(x, p, "mu", "prior", -big, big, &c->prior_mu, NULL) ||
      get_num(x, p, "kappa", "prior", 1e-300, big, &c->prior_kappa, NULL) ||
      get_num(x, p, "a", "prior", 1e-300, big, &c->prior_a, NULL) ||
      get_num(x, p, "b", "prior", 1e-300, big, &c->prior_b, NULL))
    return -1;
  return 0;
}

static int agent_context_keys(rctx *x, json_t *doc, adb_agent_config *c) {
  json_t *a = member(doc, "context_keys");
  if (!a) return 0;
  if (!json_is_array(a) || json_array_size(a) > ADB_MAX_CONTEXT_KEYS)
    return fail(x, 400, "invalid_field", "context_keys",
                "'context_keys' must be an array of at most %d ids",
                ADB_MAX_CONTEXT_KEYS);
  for (size_t i = 0; i < json_array_size(a); i++) {
    json_t *v = json_array_get(a, i);
    if (!json_is_string(v) || !adb_id_valid(json_string_value(v)))
      return fail(x, 400, "invalid_field", fidx(x, "context_keys", i),
                  "context keys must be 1..128 characters of "
                  "[A-Za-z0-9._:@-]");
    for (size_t j = 0; j < i; j++)
      if (strcmp(c->context_keys[j], json_string_value(v)) == 0)
        return fail(x, 400, "invalid_field", fidx(x, "context_keys", i),
                    "duplicate context key '%s'", json_string_value(v));
    snprintf(c->context_keys[i], sizeof c->context_keys[i], "%s",
             json_string_value(v));
  }
  c->n_context_keys = (int)json_array_size(a);
  return 0;
}

static int agent_weights(rctx *x, json_t *doc, adb_agent_config *c) {
  json_t *w = member(doc, "reward_weights");
  if (!w) return 0;
  if (!json_is_object(w))
    return fail(x, 400, "invalid_field", "reward_weights",
                "'reward_weights' must be an object");
  static const char *const keys[] = {"watch", "click", "rating", NULL};
  const char *p = "reward_weights";
  adb_reward_weights *rw = &c->reward_weights;
  if (check_keys(x, w, keys, p) ||
      get_num(x, w, "watch", p, 0, 1e300, &rw->watch, NULL) ||
      get_num(x, w, "click", p, 0, 1e300, &rw->click, NULL) ||
      get_num(x, w, "rating", p, 0, 1e300, &rw->rating, NULL))
    return -1;
  return 0;
}

static int agent_from_json(rctx *x, json_t *doc, adb_agent_config *c) {
  static const char *const keys[] = {"id",
                                     "algorithm",
                                     "prior",
                                     "context_keys",
                                     "embedding_dim",
                                     "simhash_bits",
                                     "reward_weights",
                                     "fallback_strength",
                                     "decay_half_life_s",
                                     "reward_window_s",
                                     "default_reward",
                                     "created_at_ms",
                                     "updated_at_ms",
                                     "counters",
                                     NULL};
  if (check_keys(x, doc, keys, NULL)) return -1;
  json_t *id = member(doc, "id");
  if (id && (!json_is_string(id) || strcmp(json_string_value(id), c->id)))
    return fail(x, 400, "invalid_field", "id",
                "'id' must match the agent in the path");
  json_t *al = member(doc, "algorithm");
  if (al) {
    const char *s = json_is_string(al) ? json_string_value(al) : "";
    if (strcmp(s, "beta") == 0)
      c->algorithm = ADB_ALGO_BETA;
    else if (strcmp(s, "gaussian") == 0)
      c->algorithm = ADB_ALGO_GAUSSIAN;
    else
      return fail(x, 400, "invalid_field", "algorithm",
                  "'algorithm' must be \"beta\" or \"gaussian\"");
  }
  int64_t dim = c->embedding_dim, bits = c->simhash_bits;
  const double big = 1e300;
  if (agent_prior(x, doc, c) || agent_context_keys(x, doc, c) ||
      agent_weights(x, doc, c) ||
      get_int(x, doc, "embedding_dim", NULL, 0, ADB_MAX_EMBEDDING_DIM, &dim,
              NULL) ||
      get_int(x, doc, "simhash_bits", NULL, 0, 64, &bits, NULL) ||
      get_num(x, doc, "fallback_strength", NULL, -big, big,
              &c->fallback_strength, NULL) ||
      get_num(x, doc, "decay_half_life_s", NULL, 0, big, &c->decay_half_life_s,
              NULL) ||
      get_num(x, doc, "reward_window_s", NULL, 0, big, &c->reward_window_s,
              NULL) ||
      get_num(x, doc, "default_reward", NULL, -big, big, &c->default_reward,
              NULL))
    return -1;
  c->embedding_dim = (int)dim;
  c->simhash_bits = (int)bits;
  return 0;
}

static int h_agent_put(rctx *x) {
  adb_agent_config c;
  adb_agent_config_init(&c);
  snprintf(c.id, sizeof c.id, "%s", x->param[0]);
  json_t *doc = parse_body(x, 1);
  if (!doc || agent_from_json(x, doc, &c)) return -1;
  int rc = adb_agent_put(x->db, &c);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  put_agent(x->out, &c, NULL);
  return 0;
}

static int h_agent_get(rctx *x) {
  adb_agent_config c;
  adb_agent_counters n;
  int rc = adb_agent_get(x->db, x->param[0], &c);
  if (rc == ADB_OK) rc = adb_agent_counters_get(x->db, x->param[0], &n);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  put_agent(x->out, &c, &n);
  return 0;
}

/* ---------------------------------------------------------- actions */

static int action_from_json(rctx *x, json_t *o, const char *prefix,
                            adb_action *a) {
  static const char *const keys[] = {"id",       "embedding", "embedding_b64",
                                     "metadata", "disabled",  NULL};
  if (!json_is_object(o))
    return fail(x, 400, "invalid_field", prefix, "an action is an object");
  if (check_keys(x, o, keys, prefix)) return -1;
  float *emb;
  int dim, disabled = 0;
  char *meta;
  if (get_embedding(x, o, prefix, 0, &emb, &dim) ||
      get_object_text(x, o, "metadata", prefix, &meta) ||
      get_bool(x, o, "disabled", prefix, &disabled))
    return -1;
  a->embedding = emb;
  a->embedding_dim = dim;
  a->metadata_json = meta;
  a->disabled = disabled;
  return 0;
}

static int h_action_put(rctx *x) {
  json_t *doc = parse_body(x, 1);
  adb_action a = {.id = x->param[1]};
  if (!doc || action_from_json(x, doc, NULL, &a)) return -1;
  json_t *id = member(doc, "id");
  if (id && (!json_is_string(id) || strcmp(json_string_value(id), a.id)))
    return fail(x, 400, "invalid_field", "id",
                "'id' must match the action in the path");
  int rc = adb_actions_put(x->db, x->param[0], &a, 1);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "agent", x->param[0], 1);
  put_str(b, "id", a.id, 0);
  put_int(b, "embedding_dim", a.embedding_dim);
  put_key(b, "disabled", 0);
  adb__buf_puts(b, a.disabled ? "true" : "false");
  adb__buf_putc(b, '}');
  return 0;
}

/* Open-addressing set of strings in the arena, for uniqueness checks. */
typedef struct strset {
  const char **slot;
  size_t mask;
} strset;

static int strset_init(rctx *x, strset *s, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n)
    cap *= 2;
  s->slot = alloc(x, cap * sizeof *s->slot);
  if (!s->slot) return -1;
  memset(s->slot, 0, cap * sizeof *s->slot);
  s->mask = cap - 1;
  return 0;
}

/* Adds k; returns 0 if it was already there. */
static int strset_add(strset *s, const char *k) {
  uint64_t h = 1469598103934665603ull;
  for (const char *p = k; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ull;
  for (size_t i = h & s->mask;; i = (i + 1) & s->mask) {
    if (!s->slot[i]) {
      s->slot[i] = k;
      return 1;
    }
    if (strcmp(s->slot[i], k) == 0) return 0;
  }
}

static int h_actions_post(rctx *x) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"actions", NULL};
  if (check_keys(x, doc, keys, NULL)) return -1;
  json_t *arr = member(doc, "actions");
  if (!arr)
    return fail(x, 400, "missing_field", "actions", "'actions' is required");
  size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
  if (n == 0 || n > MAX_BULK)
    return fail(x, 400, "invalid_field", "actions",
                "'actions' must be an array of 1..%d actions", MAX_BULK);
  adb_action *as = alloc(x, n * sizeof *as);
  strset seen;
  if (!as || strset_init(x, &seen, n) < 0)
    return fail(x, 500, "internal", NULL, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_array_get(arr, i);
    const char *p = fidx(x, "actions", i);
    memset(&as[i], 0, sizeof as[i]);
    if (action_from_json(x, o, p, &as[i]) ||
        get_id(x, o, "id", p, 1, &as[i].id))
      return -1;
    if (!strset_add(&seen, as[i].id))
      return fail(x, 400, "invalid_field", fname(x, p, "id"),
                  "duplicate action id '%s'", as[i].id);
  }
  int rc = adb_actions_put(x->db, x->param[0], as, (int)n);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf_printf(x->out, "{\"upserted\":%zu}", n);
  return 0;
}

/* ---------------------------------------------------------- decide */

typedef struct decide_in {
  const char *user_id, *event_id;
  const char **cands;
  int n_cands, over; /* over: more candidates than allowed were given */
  adb_kv *ctx;
  int n_ctx;
  float *emb;
  int dim;
  const char *b64;
  size_t b64_len;
  int has_emb, has_b64, has_k;
  int64_t k;
} decide_in;

enum { F_USER, F_CANDS, F_CTX, F_EMB, F_B64, F_K, F_EVENT, F_N };
static const char *const decide_fields[F_N] = {
    "user_id",       "candidates", "context", "embedding",
    "embedding_b64", "k",          "event_id"};

static int decide_field(const char *k, size_t n) {
  for (int i = 0; i < F_N; i++)
    if (strlen(decide_fields[i]) == n && memcmp(decide_fields[i], k, n) == 0)
      return i;
  return -1;
}

/* Fast-path scratch: where to put NULs once the whole body is accepted. */
typedef struct fast {
  adb__jlex l;
  char **term;
  int n_term, cap_term;
} fast;

static int fast_str(fast *f, const char **s) {
  size_t n;
  if (f->n_term == f->cap_term || !adb__jlex_string(&f->l, s, &n)) return 0;
  f->term[f->n_term++] = (char *)*s + n;
  return 1;
}

static int fast_cands(rctx *x, fast *f, decide_in *in) {
  in->cands = alloc(x, ADB_MAX_CANDIDATES * sizeof *in->cands);
  if (!in->cands || !adb__jlex_eat(&f->l, '[')) return 0;
  if (adb__jlex_eat(&f->l, ']')) return 1;
  do {
    if (in->n_cands == ADB_MAX_CANDIDATES ||
        !fast_str(f, &in->cands[in->n_cands]))
      return 0;
    in->n_cands++;
  } while (adb__jlex_eat(&f->l, ','));
  return adb__jlex_eat(&f->l, ']');
}

/* Context values in the fast path: strings, and integers as their
 * canonical decimal text (what the jansson path produces). */
static int fast_ctx(rctx *x, fast *f, decide_in *in) {
  in->ctx = alloc(x, MAX_CONTEXT * sizeof *in->ctx);
  if (!in->ctx || !adb__jlex_eat(&f->l, '{')) return 0;
  if (adb__jlex_eat(&f->l, '}')) return 1;
  do {
    adb_kv *kv = &in->ctx[in->n_ctx];
    if (in->n_ctx == MAX_CONTEXT || !fast_str(f, &kv->key) ||
        !adb__jlex_eat(&f->l, ':'))
      return 0;
    size_t kl = (size_t)(f->term[f->n_term - 1] - kv->key);
    for (int i = 0; i < in->n_ctx; i++) /* duplicates: let jansson say */
      if (strncmp(in->ctx[i].key, kv->key, kl) == 0 &&
          in->ctx[i].key[kl] == '"')
        return 0;
    if (adb__jlex_peek(&f->l) == '"') {
      if (!fast_str(f, &kv->value)) return 0;
    } else {
      double d;
      int is_int;
      int64_t iv;
      char *t = alloc(x, 24);
      if (!t || !adb__jlex_number(&f->l, &d, &is_int, &iv) || !is_int) return 0;
      snprintf(t, 24, "%lld", (long long)iv);
      kv->value = t;
    }
    in->n_ctx++;
  } while (adb__jlex_eat(&f->l, ','));
  return adb__jlex_eat(&f->l, '}');
}

static int fast_member(rctx *x, fast *f, int field, decide_in *in) {
  double d;
  int is_int;
  switch (field) {
  case F_USER:
    return fast_str(f, &in->user_id);
  case F_EVENT:
    return fast_str(f, &in->event_id);
  case F_CANDS:
    return fast_cands(x, f, in);
  case F_CTX:
    return fast_ctx(x, f, in);
  case F_K:
    in->has_k = 1;
    return adb__jlex_number(&f->l, &d, &is_int, &in->k) && is_int;
  case F_EMB:
    in->has_emb = 1;
    in->emb = alloc(x, ADB_MAX_EMBEDDING_DIM * sizeof(float));
    return in->emb &&
           adb__jlex_floats(&f->l, in->emb, ADB_MAX_EMBEDDING_DIM, &in->dim);
  case F_B64:
    in->has_b64 = 1;
    if (!fast_str(f, &in->b64)) return 0;
    in->b64_len = (size_t)(f->term[f->n_term - 1] - in->b64);
    return 1;
  }
  return 0;
}

/* The fast parser: 1 when the body was read into *in, 0 to fall back. */
static int decide_fast(rctx *x, decide_in *in) {
  fast f = {.l = {x->req->body, x->req->body + x->req->body_len},
            .cap_term = ADB_MAX_CANDIDATES + 2 * MAX_CONTEXT + 4};
  f.term = alloc(x, (size_t)f.cap_term * sizeof *f.term);
  unsigned seen = 0;
  if (!f.term || !adb__jlex_eat(&f.l, '{')) return 0;
  if (!adb__jlex_eat(&f.l, '}')) {
    do {
      const char *k;
      size_t kl;
      if (!adb__jlex_string(&f.l, &k, &kl) || !adb__jlex_eat(&f.l, ':'))
        return 0;
      int field = decide_field(k, kl);
      if (field < 0 || (seen & (1u << field))) return 0;
      seen |= 1u << field;
      if (!fast_member(x, &f, field, in)) return 0;
    } while (adb__jlex_eat(&f.l, ','));
    if (!adb__jlex_eat(&f.l, '}')) return 0;
  }
  if (adb__jlex_peek(&f.l) != -1) return 0;
  for (int i = 0; i < f.n_term; i++)
    *f.term[i] = '\0';
  return 1;
}

/* The jansson path: same fields, with precise type errors. */
static int decide_json(rctx *x, decide_in *in) {
  memset(in, 0, sizeof *in);
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {
      "user_id",       "candidates", "context",  "embedding",
      "embedding_b64", "k",          "event_id", NULL};
  if (check_keys(x, doc, keys, NULL)) return -1;
  json_t *c = member(doc, "candidates");
  if (c && !json_is_array(c))
    return fail(x, 400, "invalid_field", "candidates",
                "'candidates' must be an array of action ids");
  if (c) {
    size_t n = json_array_size(c);
    in->over = n > ADB_MAX_CANDIDATES;
    in->n_cands = (int)(in->over ? 0 : n);
    in->cands = alloc(x, (n ? n : 1) * sizeof *in->cands);
    if (!in->cands) return fail(x, 500, "internal", NULL, "out of memory");
    for (int i = 0; i < in->n_cands; i++) {
      json_t *v = json_array_get(c, (size_t)i);
      if (!json_is_string(v))
        return fail(x, 400, "invalid_field", fidx(x, "candidates", (size_t)i),
                    "candidates must be strings");
      in->cands[i] = json_string_value(v);
    }
  }
  json_t *b = member(doc, "embedding_b64");
  if (b && !json_is_string(b))
    return fail(x, 400, "invalid_field", "embedding_b64",
                "'embedding_b64' must be a base64 string");
  if (b) {
    in->has_b64 = 1;
    in->b64 = json_string_value(b);
    in->b64_len = json_string_length(b);
  }
  json_t *e = member(doc, "embedding");
  char err[128];
  if (e) {
    in->has_emb = 1;
    in->emb = alloc(x, ADB_MAX_EMBEDDING_DIM * sizeof(float));
    if (!in->emb) return fail(x, 500, "internal", NULL, "out of memory");
    if (adb__json_floats(e, in->emb, ADB_MAX_EMBEDDING_DIM, &in->dim, err,
                         sizeof err))
      return fail(x, 400, "invalid_field", "embedding", "'embedding': %s", err);
  }
  json_t *k = member(doc, "k");
  if (k && !json_is_integer(k))
    return fail(x, 400, "invalid_field", "k", "'k' must be an integer");
  in->has_k = k != NULL;
  in->k = json_integer_value(k);
  json_t *u = member(doc, "user_id"), *ev = member(doc, "event_id");
  if ((u && !json_is_string(u)) || (ev && !json_is_string(ev)))
    return fail(x, 400, "invalid_field",
                u && !json_is_string(u) ? "user_id" : "event_id",
                "ids are strings");
  in->user_id = u ? json_string_value(u) : NULL;
  in->event_id = ev ? json_string_value(ev) : NULL;
  return get_context(x, doc, "context", &in->ctx, &in->n_ctx);
}

static int decide_check(rctx *x, decide_in *in) {
  if (!in->user_id)
    return fail(x, 400, "missing_field", "user_id", "'user_id' is required");
  if (!adb_id_valid(in->user_id))
    return fail(x, 400, "invalid_field", "user_id",
                "'user_id' must be 1..128 characters of [A-Za-z0-9._:@-]");
  if (in->event_id && !adb_id_valid(in->event_id))
    return fail(x, 400, "invalid_field", "event_id",
                "'event_id' must be 1..128 characters of [A-Za-z0-9._:@-]");
  if (!in->cands && !in->over)
    return fail(x, 400, "missing_field", "candidates",
                "'candidates' is required");
  if (in->over || in->n_cands == 0)
    return fail(x, 400, "invalid_field", "candidates",
                "'candidates' must hold 1..%d action ids", ADB_MAX_CANDIDATES);
  strset seen;
  if (strset_init(x, &seen, (size_t)in->n_cands) < 0)
    return fail(x, 500, "internal", NULL, "out of memory");
  for (int i = 0; i < in->n_cands; i++) {
    if (!adb_id_valid(in->cands[i]))
      return fail(x, 400, "invalid_field", fidx(x, "candidates", (size_t)i),
                  "candidate ids must be 1..128 characters of "
                  "[A-Za-z0-9._:@-]");
    if (!strset_add(&seen, in->cands[i]))
      return fail(x, 400, "invalid_field", fidx(x, "candidates", (size_t)i),
                  "duplicate candidate '%s'", in->cands[i]);
  }
  if (in->has_k && (in->k < 1 || in->k > in->n_cands))
    return fail(x, 400, "invalid_field", "k",
                "'k' must be in [1, %d] (the number of candidates)",
                in->n_cands);
  for (int i = 0; i < in->n_ctx; i++)
    if (!adb_id_valid(in->ctx[i].key) || strlen(in->ctx[i].value) > 1024)
      return fail(x, 400, "invalid_field", fname(x, "context", in->ctx[i].key),
                  "context keys are ids and values at most 1024 bytes");
  if (in->has_emb && in->has_b64)
    return fail(x, 400, "invalid_field", "embedding_b64",
                "give 'embedding' or 'embedding_b64', not both");
  if (in->has_emb && in->dim == 0)
    return fail(x, 400, "invalid_field", "embedding",
                "an embedding needs at least one value");
  if (in->has_b64) {
    char err[128];
    in->emb = alloc(x, ADB_MAX_EMBEDDING_DIM * sizeof(float) + 8);
    if (!in->emb) return fail(x, 500, "internal", NULL, "out of memory");
    int rc = adb__b64_floats(in->b64, in->b64_len, in->emb,
                             ADB_MAX_EMBEDDING_DIM, &in->dim, err, sizeof err);
    if (rc == ADB_OK && in->dim == 0) snprintf(err, sizeof err, "no values");
    if (rc != ADB_OK || in->dim == 0)
      return fail(x, 400, "invalid_field", "embedding_b64",
                  "'embedding_b64': %s", err);
  }
  return 0;
}

static void put_decision(adb__buf *b, const adb_decision *d) {
  adb__buf_puts(b, "{\"event_id\":");
  adb__json_str(b, d->event_id);
  adb__buf_puts(b, ",\"action\":");
  adb__json_str(b, d->action);
  adb__buf_puts(b, ",\"propensity\":");
  adb__json_num9(b, d->propensity);
  adb__buf_puts(b, ",\"ranking\":[");
  for (int i = 0; i < d->n_ranking; i++) {
    adb__buf_puts(b, i ? ",{\"action\":" : "{\"action\":");
    adb__json_str(b, d->ranking[i].action);
    adb__buf_puts(b, ",\"score\":");
    adb__json_num9(b, d->ranking[i].score);
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "],\"state_key\":");
  adb__json_str(b, d->state_key);
  adb__buf_putc(b, '}');
}

/* A fixed embedding dimension is checked here for a precise message; the
 * library checks it again (and fixes it on first use). */
static int embedding_dim_check(rctx *x, int dim) {
  adb_agent_config c;
  if (adb_agent_get(x->db, x->param[0], &c) != ADB_OK) return 0;
  if (c.embedding_dim > 0 && c.embedding_dim != dim)
    return fail(x, 400, "invalid_field", "embedding",
                "expected %d dimensions, not %d", c.embedding_dim, dim);
  return 0;
}

static int h_decide(rctx *x) {
  decide_in in;
  memset(&in, 0, sizeof in);
  if (!decide_fast(x, &in) && decide_json(x, &in)) return -1;
  if (decide_check(x, &in)) return -1;
  int k = in.has_k ? (int)in.k : 1;
  if ((in.has_emb || in.has_b64) && embedding_dim_check(x, in.dim)) return -1;
  adb_decide_req r = {.agent_id = x->param[0],
                      .user_id = in.user_id,
                      .candidates = in.cands,
                      .n_candidates = in.n_cands,
                      .context = in.ctx,
                      .n_context = in.n_ctx,
                      .embedding = (in.has_emb || in.has_b64) ? in.emb : NULL,
                      .embedding_dim = in.dim,
                      .k = k,
                      .event_id = in.event_id};
  adb_decision d;
  memset(&d, 0, sizeof d);
  d.ranking = alloc(x, (size_t)k * sizeof *d.ranking);
  if (!d.ranking) return fail(x, 500, "internal", NULL, "out of memory");
  d.ranking_cap = k;
  d.n_ranking = 0;
  int rc = adb_decide(x->db, &r, &d);
  if (rc == ADB_EINVAL && r.embedding && !guess_field(adb_errmsg(x->db)))
    return fail_adb(x, rc, "embedding");
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  put_decision(x->out, &d);
  return 0;
}

/* ---------------------------------------------------------- rewards */

static int get_signals(rctx *x, json_t *doc, adb_signals *s, int *has) {
  json_t *o = member(doc, "signals");
  *has = 0;
  if (!o) return 0;
  if (!json_is_object(o))
    return fail(x, 400, "invalid_field", "signals",
                "'signals' must be an object");
  static const char *const keys[] = {"watch_time_s", "duration_s", "clicked",
                                     "rating", NULL};
  const char *p = "signals";
  int has_w = 0, has_d = 0;
  memset(s, 0, sizeof *s);
  if (check_keys(x, o, keys, p) ||
      get_num(x, o, "watch_time_s", p, 0, 1e12, &s->watch_time_s, &has_w) ||
      get_num(x, o, "duration_s", p, 1e-9, 1e12, &s->duration_s, &has_d) ||
      get_num(x, o, "rating", p, 1, 5, &s->rating, &s->has_rating))
    return -1;
  if (has_w != has_d)
    return fail(x, 400, "invalid_field",
                has_w ? "signals.duration_s" : "signals.watch_time_s",
                "'watch_time_s' and 'duration_s' go together");
  s->has_watch = has_w;
  if (member(o, "clicked")) {
    if (get_bool(x, o, "clicked", p, &s->clicked)) return -1;
    s->has_click = 1;
  }
  if (!s->has_watch && !s->has_click && !s->has_rating)
    return fail(x, 400, "invalid_field", "signals",
                "'signals' holds none of watch_time_s/duration_s, clicked, "
                "rating");
  *has = 1;
  return 0;
}

static int is_state_key(const char *s) {
  if (strlen(s) != ADB_STATE_KEY_LEN) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

/* Which of the two reward forms, and that it is whole. */
static int reward_form(rctx *x, json_t *doc, adb_reward_req *r) {
  if (r->event_id) {
    static const char *const direct[] = {"user_id", "action", "context",
                                         "state_key", NULL};
    for (int i = 0; direct[i]; i++)
      if (member(doc, direct[i]))
        return fail(x, 400, "invalid_field", direct[i],
                    "'%s' does not go with 'event_id': the decision already "
                    "says it",
                    direct[i]);
    return 0;
  }
  if (!r->user_id || !r->action)
    return fail(x, 400, "missing_field", r->user_id ? "action" : "user_id",
                "a reward needs 'event_id', or 'user_id' and 'action'");
  json_t *sk = member(doc, "state_key");
  if (sk && member(doc, "context"))
    return fail(x, 400, "invalid_field", "state_key",
                "give 'context' or 'state_key', not both");
  if (sk && (!json_is_string(sk) || !is_state_key(json_string_value(sk))))
    return fail(x, 400, "invalid_field", "state_key",
                "'state_key' must be 64 lowercase hex characters");
  r->state_key = sk ? json_string_value(sk) : NULL;
  adb_kv *kv;
  int n;
  if (get_context(x, doc, "context", &kv, &n)) return -1;
  r->context = kv;
  r->n_context = n;
  return 0;
}

static int h_reward(rctx *x) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"reward_id", "event_id", "user_id",
                                     "action",    "context",  "state_key",
                                     "reward",    "signals",  NULL};
  if (check_keys(x, doc, keys, NULL)) return -1;
  adb_reward_req r = {.agent_id = x->param[0]};
  adb_signals sig;
  int has_sig;
  if (get_id(x, doc, "reward_id", NULL, 1, &r.reward_id) ||
      get_id(x, doc, "event_id", NULL, 0, &r.event_id) ||
      get_id(x, doc, "user_id", NULL, 0, &r.user_id) ||
      get_id(x, doc, "action", NULL, 0, &r.action) ||
      get_num(x, doc, "reward", NULL, -1e300, 1e300, &r.reward,
              &r.has_reward) ||
      get_signals(x, doc, &sig, &has_sig) || reward_form(x, doc, &r))
    return -1;
  if (!r.has_reward && !has_sig)
    return fail(x, 400, "missing_field", "reward",
                "a reward needs 'reward' or 'signals'");
  r.signals = has_sig ? &sig : NULL;
  adb_reward_result res = {0};
  int rc = adb_reward(x->db, &r, &res);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "reward_id", r.reward_id, 1);
  put_num(b, "reward", res.reward);
  put_key(b, "applied", 0);
  adb__buf_puts(b, res.applied ? "true" : "false");
  if (res.pending) {
    adb__buf_puts(b, ",\"pending\":true");
    x->resp->status = 202;
  }
  adb__buf_putc(b, '}');
  return 0;
}

/* --------------------------------------------------------- episodes */

static int episode_from_json(rctx *x, json_t *o, const char *p,
                             adb_episode *e) {
  static const char *const keys[] = {
      "episode_id", "user_id", "session_id", "embedding", "embedding_b64",
      "action",     "reward",  "context",    NULL};
  if (!json_is_object(o))
    return fail(x, 400, "invalid_field", p, "an episode is an object");
  float *emb;
  int dim, has_r;
  char *ctx;
  if (check_keys(x, o, keys, p) ||
      get_id(x, o, "episode_id", p, 0, &e->episode_id) ||
      get_id(x, o, "user_id", p, 1, &e->user_id) ||
      get_id(x, o, "session_id", p, 0, &e->session_id) ||
      get_id(x, o, "action", p, 1, &e->action) ||
      get_num(x, o, "reward", p, -1e300, 1e300, &e->reward, &has_r) ||
      get_embedding(x, o, p, 1, &emb, &dim) ||
      get_object_text(x, o, "context", p, &ctx))
    return -1;
  if (!has_r)
    return fail(x, 400, "missing_field", fname(x, p, "reward"),
                "'reward' is required");
  e->embedding = emb;
  e->embedding_dim = dim;
  e->context_json = ctx;
  return 0;
}

static int h_episodes(rctx *x) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"episodes", NULL};
  if (check_keys(x, doc, keys, NULL)) return -1;
  json_t *arr = member(doc, "episodes");
  if (!arr)
    return fail(x, 400, "missing_field", "episodes", "'episodes' is required");
  size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
  if (n == 0 || n > MAX_BULK)
    return fail(x, 400, "invalid_field", "episodes",
                "'episodes' must be an array of 1..%d episodes", MAX_BULK);
  adb_episode *es = alloc(x, n * sizeof *es);
  if (!es) return fail(x, 500, "internal", NULL, "out of memory");
  for (size_t i = 0; i < n; i++) {
    memset(&es[i], 0, sizeof es[i]);
    if (episode_from_json(x, json_array_get(arr, i), fidx(x, "episodes", i),
                          &es[i]))
      return -1;
  }
  int rc = adb_episodes_record(x->db, x->param[0], es, (int)n);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf_printf(x->out, "{\"inserted\":%zu", n);
  if (x->api->cfg.durability == ADB_DURABILITY_ASYNC) {
    adb__buf_puts(x->out, ",\"pending\":true");
    x->resp->status = 202;
  }
  adb__buf_putc(x->out, '}');
  return 0;
}

/* ----------------------------------------------------- vector search */

#define MAX_HITS 1000

/* {embedding|embedding_b64, k, user_id?} of the three searches. */
static int search_in(rctx *x, int with_user, float **emb, int *dim, int *k,
                     const char **user) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"embedding", "embedding_b64", "k",
                                     "user_id", NULL};
  static const char *const keys_nouser[] = {"embedding", "embedding_b64", "k",
                                            NULL};
  int64_t kk = 10;
  int has_k = 0;
  *user = NULL;
  if (check_keys(x, doc, with_user ? keys : keys_nouser, NULL) ||
      get_embedding(x, doc, NULL, 1, emb, dim) ||
      get_int(x, doc, "k", NULL, 1, MAX_HITS, &kk, &has_k) ||
      (with_user && get_id(x, doc, "user_id", NULL, 0, user)))
    return -1;
  *k = (int)kk;
  return 0;
}

/* Answers a search's library failure, naming the field of an EINVAL. */
static int search_fail(rctx *x, int rc) {
  const char *msg = adb_errmsg(x->db);
  if (rc == ADB_EINVAL && !guess_field(msg))
    return fail_adb(x, rc, strncmp(msg, "k ", 2) ? "embedding" : "k");
  return fail_adb(x, rc, NULL);
}

enum { SEARCH_EPISODES, SEARCH_USERS, SEARCH_PATTERNS };

/* The three searches: same input, one library call each, and the fields of
 * their hits (adb_hit in agentdb.h says what each holds per kind). */
static int search(rctx *x, int kind) {
  float *emb;
  int dim, k, n = 0;
  const char *user;
  if (search_in(x, kind == SEARCH_EPISODES, &emb, &dim, &k, &user)) return -1;
  adb_hit *hits = alloc(x, (size_t)k * sizeof *hits);
  if (!hits) return fail(x, 500, "internal", NULL, "out of memory");
  int rc =
      kind == SEARCH_EPISODES
          ? adb_episode_similar(x->db, x->param[0], emb, dim, k, user, hits, &n)
      : kind == SEARCH_USERS
          ? adb_user_similar(x->db, emb, dim, k, hits, &n)
          : adb_pattern_search(x->db, x->param[0], emb, dim, k, hits, &n);
  if (rc != ADB_OK) return search_fail(x, rc);
  static const char *const id_field[] = {"episode_id", "user_id", "pattern_id"};
  adb__buf *b = x->out;
  adb__buf_puts(b, "{\"hits\":[");
  for (int i = 0; i < n; i++) {
    adb__buf_puts(b, i ? ",{" : "{");
    put_str(b, id_field[kind], hits[i].id, 1);
    put_num(b, "score", hits[i].score);
    if (kind == SEARCH_EPISODES) {
      put_str(b, "user_id", hits[i].user_id, 0);
      put_str(b, "action", hits[i].action, 0);
      put_num(b, "reward", hits[i].reward);
    } else if (kind == SEARCH_PATTERNS) {
      put_str(b, "key", hits[i].action, 0);
      put_num(b, "confidence", hits[i].reward);
    }
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "]}");
  return 0;
}

static int h_episodes_search(rctx *x) {
  return search(x, SEARCH_EPISODES);
}

static int h_users_search(rctx *x) {
  return search(x, SEARCH_USERS);
}

static int h_patterns_search(rctx *x) {
  return search(x, SEARCH_PATTERNS);
}

/* ------------------------------------------------------------ query */

static int hexv(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..n) into the arena; NULL when malformed or when it
 * decodes to a NUL byte. */
static char *pct_decode(rctx *x, const char *s, size_t n) {
  char *o = alloc(x, n + 1), *p = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      *p++ = s[i];
      continue;
    }
    int h = i + 2 < n ? hexv(s[i + 1]) : -1, l = h >= 0 ? hexv(s[i + 2]) : -1;
    if (l < 0 || (h == 0 && l == 0)) return NULL;
    *p++ = (char)(h * 16 + l);
    i += 2;
  }
  *p = '\0';
  return o;
}

/* The decoded value of query parameter name, or NULL; *bad when the
 * query holds it but malformed. */
static const char *query_get(rctx *x, const char *name, int *bad) {
  const char *q = x->req->query;
  size_t n = x->req->query_len, nl = strlen(name), i = 0;
  *bad = 0;
  while (q && i < n) {
    size_t j = i;
    while (j < n && q[j] != '&')
      j++;
    const char *eq = memchr(q + i, '=', j - i);
    size_t kl = eq ? (size_t)(eq - (q + i)) : j - i;
    if (kl == nl && memcmp(q + i, name, nl) == 0) {
      const char *v = eq ? eq + 1 : q + j;
      char *d = pct_decode(x, v, (size_t)(q + j - v));
      *bad = d == NULL;
      return d;
    }
    i = j + 1;
  }
  return NULL;
}

/* --------------------------------------------------------- policies */

static void put_arm(adb__buf *b, const adb_arm_posterior *a,
                    adb_algorithm algo) {
  adb__buf_puts(b, "{\"action\":");
  adb__json_str(b, a->action);
  put_int(b, "n", a->n);
  put_num(b, "sum", a->sum);
  if (algo == ADB_ALGO_GAUSSIAN) {
    put_num(b, "mu", a->mu);
    put_num(b, "kappa", a->kappa);
    put_num(b, "a", a->a);
    put_num(b, "b", a->b);
  } else {
    put_num(b, "alpha", a->alpha);
    put_num(b, "beta", a->beta);
  }
  put_num(b, "mean", a->mean);
  adb__buf_putc(b, '}');
}

static int h_policy(rctx *x) {
  const char *agent = x->param[0], *user = x->param[1];
  int bad;
  const char *sk = query_get(x, "state_key", &bad);
  if (bad || (sk && !is_state_key(sk)))
    return fail(x, 400, "invalid_field", "state_key",
                "'state_key' must be 64 lowercase hex characters");
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, agent, &cfg);
  char key[ADB_STATE_KEY_LEN + 1];
  if (rc == ADB_OK && !sk) {
    rc = adb_state_key(x->db, agent, NULL, 0, NULL, 0, key);
    sk = key;
  }
  int cap = 256, n = 0;
  adb_arm_posterior *arms = NULL;
  while (rc == ADB_OK) {
    arms = alloc(x, (size_t)cap * sizeof *arms);
    if (!arms) return fail(x, 500, "internal", NULL, "out of memory");
    rc = adb_policy_get(x->db, agent, user, sk, arms, cap, &n);
    if (rc != ADB_OK || n <= cap) break;
    cap = n;
  }
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "agent", agent, 1);
  put_str(b, "user_id", user, 0);
  put_str(b, "state_key", sk, 0);
  put_str(b, "algorithm", algo_name(cfg.algorithm), 0);
  put_key(b, "arms", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    if (i) adb__buf_putc(b, ',');
    put_arm(b, &arms[i], cfg.algorithm);
  }
  adb__buf_puts(b, "]}");
  return 0;
}

/* ------------------------------------------------------- user state */

static int h_user_put(rctx *x) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"embedding", "embedding_b64", "context",
                                     NULL};
  float *emb;
  int dim;
  char *ctx;
  if (check_keys(x, doc, keys, NULL) ||
      get_embedding(x, doc, NULL, 1, &emb, &dim) ||
      get_object_text(x, doc, "context", NULL, &ctx))
    return -1;
  int rc = adb_user_state_put(x->db, x->param[0], emb, dim, ctx);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  put_str(x->out, "user_id", x->param[0], 1);
  put_int(x->out, "embedding_dim", dim);
  adb__buf_putc(x->out, '}');
  return 0;
}

static int h_user_get(rctx *x) {
  adb_user_state st;
  memset(&st, 0, sizeof st);
  int rc = adb_user_state_get(x->db, x->param[0], &st);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "user_id", x->param[0], 1);
  put_floats(b, "embedding", st.embedding, st.embedding_dim);
  put_raw(b, "context", st.context_json, "{}");
  put_int(b, "updated_at_ms", st.updated_at_ms);
  adb__buf_putc(b, '}');
  adb_free(st.embedding);
  adb_free(st.context_json);
  return 0;
}

/* --------------------------------------------------------- patterns */

static int get_text(rctx *x, json_t *o, const char *k, int id, char *out,
                    size_t cap) {
  json_t *v = member(o, k);
  if (!v) return fail(x, 400, "missing_field", k, "'%s' is required", k);
  const char *s = json_is_string(v) ? json_string_value(v) : NULL;
  size_t n = s ? strlen(s) : 0;
  int ok = s && n == json_string_length(v) && n >= 1 && n < cap &&
           (!id || adb_id_valid(s));
  for (size_t i = 0; ok && i < n; i++)
    ok = (unsigned char)s[i] >= 0x20;
  if (!ok)
    return fail(x, 400, "invalid_field", k,
                id ? "'%s' must be 1..128 characters of [A-Za-z0-9._:@-]"
                   : "'%s' must be a string of 1..128 printable bytes",
                k);
  memcpy(out, s, n + 1);
  return 0;
}

static int h_pattern_put(rctx *x) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {
      "type",      "key",           "value", "confidence",    "support",
      "embedding", "embedding_b64", "id",    "updated_at_ms", NULL};
  adb_pattern p;
  memset(&p, 0, sizeof p);
  snprintf(p.id, sizeof p.id, "%s", x->param[1]);
  int64_t support = 0;
  json_t *id = member(doc, "id");
  if (check_keys(x, doc, keys, NULL)) return -1;
  if (id && (!json_is_string(id) || strcmp(json_string_value(id), p.id)))
    return fail(x, 400, "invalid_field", "id",
                "'id' must match the pattern in the path");
  json_t *v = json_object_get(doc, "value");
  if (!v) return fail(x, 400, "missing_field", "value", "'value' is required");
  if (get_text(x, doc, "type", 1, p.type, sizeof p.type) ||
      get_text(x, doc, "key", 0, p.key, sizeof p.key) ||
      get_num(x, doc, "confidence", NULL, 0, 1, &p.confidence, NULL) ||
      get_int(x, doc, "support", NULL, 0, INT64_MAX, &support, NULL) ||
      get_embedding(x, doc, NULL, 0, &p.embedding, &p.embedding_dim))
    return -1;
  p.support = support;
  if (!(p.value_json = dump(x, v)))
    return fail(x, 500, "internal", NULL, "out of memory");
  int rc = adb_pattern_put(x->db, x->param[0], &p);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "id", p.id, 1);
  put_str(b, "type", p.type, 0);
  put_str(b, "key", p.key, 0);
  put_raw(b, "value", p.value_json, "null");
  put_num(b, "confidence", p.confidence);
  put_int(b, "support", p.support);
  put_int(b, "embedding_dim", p.embedding_dim);
  adb__buf_putc(b, '}');
  return 0;
}

static int h_pattern_get(rctx *x) {
  adb_pattern p;
  memset(&p, 0, sizeof p);
  int rc = adb_pattern_get(x->db, x->param[0], x->param[1], &p);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "id", p.id[0] ? p.id : x->param[1], 1);
  put_str(b, "type", p.type, 0);
  put_str(b, "key", p.key, 0);
  put_raw(b, "value", p.value_json, "null");
  put_num(b, "confidence", p.confidence);
  put_int(b, "support", p.support);
  if (p.embedding && p.embedding_dim > 0)
    put_floats(b, "embedding", p.embedding, p.embedding_dim);
  put_int(b, "updated_at_ms", p.updated_at_ms);
  adb__buf_putc(b, '}');
  adb_free(p.value_json);
  adb_free(p.embedding);
  return 0;
}

/* --------------------------------------------------------- sessions */

static int h_session_put(rctx *x) {
  json_t *doc = parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"context", "ttl_s", NULL};
  int bad;
  int64_t ttl = 0;
  const char *q = query_get(x, "ttl_s", &bad);
  if (q) {
    char *end;
    long long v = strtoll(q, &end, 10);
    if (bad || !*q || *end || v < 1 || v > 31536000)
      return fail(x, 400, "invalid_field", "ttl_s",
                  "'ttl_s' must be an integer in [1, 31536000]");
    ttl = v;
  }
  char *ctx;
  if (check_keys(x, doc, keys, NULL) ||
      get_int(x, doc, "ttl_s", NULL, 1, 31536000, &ttl, NULL) ||
      get_object_text(x, doc, "context", NULL, &ctx))
    return -1;
  if (!ctx)
    return fail(x, 400, "missing_field", "context", "'context' is required");
  int rc = adb_session_put(x->db, x->param[0], ctx, (int)ttl);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  put_str(x->out, "session_id", x->param[0], 1);
  put_int(x->out, "ttl_s", ttl);
  adb__buf_putc(x->out, '}');
  return 0;
}

static int h_session_get(rctx *x) {
  char *json = NULL;
  int rc = adb_session_get(x->db, x->param[0], &json);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  put_str(x->out, "session_id", x->param[0], 1);
  put_raw(x->out, "context", json, "{}");
  adb__buf_putc(x->out, '}');
  adb_free(json);
  return 0;
}

static int h_session_delete(rctx *x) {
  int rc = adb_session_delete(x->db, x->param[0]);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  put_str(x->out, "session_id", x->param[0], 1);
  adb__buf_puts(x->out, ",\"deleted\":true}");
  return 0;
}

/* ---------------------------------------------------------- metrics */

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

/* "Z", "+HH:MM", "+HHMM", "-HH:MM" or nothing, into seconds east. */
static int parse_zone(const char *s, int *off) {
  *off = 0;
  if (!*s || ((s[0] == 'Z' || s[0] == 'z') && !s[1])) return 0;
  int sign = s[0] == '+' ? 1 : s[0] == '-' ? -1 : 0, h, m;
  if (!sign || digits(s + 1, 2, &h) < 0) return -1;
  s += 3;
  if (*s == ':') s++;
  if (digits(s, 2, &m) < 0 || s[2] || h > 23 || m > 59) return -1;
  *off = sign * (h * 3600 + m * 60);
  return 0;
}

int adb__api_parse_time(const char *s, int64_t *ms) {
  size_t n = strlen(s);
  if (n && strspn(s + (s[0] == '-'), "0123456789") == n - (s[0] == '-')) {
    if (n > 18) return ADB_EINVAL;
    *ms = strtoll(s, NULL, 10);
    return ADB_OK;
  }
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  int y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0, off;
  if (n < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
      s[7] != '-' || digits(s + 8, 2, &d))
    return ADB_EINVAL;
  const char *p = s + 10;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    if (digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &mi))
      return ADB_EINVAL;
    p += 6;
    if (*p == ':') {
      if (digits(p + 1, 2, &sec)) return ADB_EINVAL;
      p += 3;
      if (*p == '.') {
        int k = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, k++)
          if (k < 3) frac_ms = frac_ms * 10 + (*p - '0');
        if (k == 0) return ADB_EINVAL;
        for (; k < 3; k++)
          frac_ms *= 10;
      }
    }
  }
  if (parse_zone(p, &off) < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
      h > 23 || mi > 59 || sec > 60)
    return ADB_EINVAL;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *ms = ((int64_t)timegm(&tm) - off) * 1000 + frac_ms;
  return ADB_OK;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int time_param(rctx *x, const char *name, int64_t *ms) {
  int bad;
  const char *v = query_get(x, name, &bad);
  if (!v && !bad) return 0;
  if (bad || adb__api_parse_time(v, ms) != ADB_OK)
    return fail(x, 400, "invalid_field", name,
                "'%s' must be milliseconds since the epoch or an ISO-8601 "
                "time",
                name);
  return 0;
}

static void put_iso_hour(adb__buf *b, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char s[32];
  gmtime_r(&t, &tm);
  strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  put_str(b, "hour", s, 0);
}

static int h_agent_metrics(rctx *x) {
  int64_t to = wall_ms(), from;
  if (time_param(x, "to", &to)) return -1;
  from = to - 24 * 3600 * 1000LL;
  if (time_param(x, "from", &from)) return -1;
  if (from > to)
    return fail(x, 400, "invalid_field", "from", "'from' is after 'to'");
  adb_metrics_row *rows = NULL;
  int n = 0;
  int rc = adb_metrics_get(x->db, x->param[0], from, to, &rows, &n);
  if (rc != ADB_OK) return fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  put_str(b, "agent", x->param[0], 1);
  put_int(b, "from_ms", from);
  put_int(b, "to_ms", to);
  put_key(b, "rows", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    const adb_metrics_row *r = &rows[i];
    adb__buf_puts(b, i ? ",{\"hour_ms\":" : "{\"hour_ms\":");
    adb__json_int(b, r->hour_ms);
    put_iso_hour(b, r->hour_ms);
    put_int(b, "decisions", r->decisions);
    put_int(b, "rewards", r->rewards);
    put_num(b, "reward_sum", r->reward_sum);
    put_num(b, "mean_reward",
            r->rewards ? r->reward_sum / (double)r->rewards : 0);
    put_int(b, "cache_hits", r->cache_hits);
    put_int(b, "cache_misses", r->cache_misses);
    put_num(b, "latency_p50_us", r->latency_p50_us);
    put_num(b, "latency_p99_us", r->latency_p99_us);
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "]}");
  adb_free(rows);
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
    {PUT, "/v1/agents/{agent}", h_agent_put, BLK_ALWAYS, 0},
    {GET, "/v1/agents/{agent}", h_agent_get, BLK_NEVER, 0},
    {PUT, "/v1/agents/{agent}/actions/{action}", h_action_put, BLK_ALWAYS, 0},
    {POST, "/v1/agents/{agent}/actions", h_actions_post, BLK_ALWAYS, 0},
    {POST, "/v1/agents/{agent}/decide", h_decide, BLK_NEVER, 0},
    {POST, "/v1/agents/{agent}/rewards", h_reward, BLK_SYNC, 0},
    {POST, "/v1/agents/{agent}/episodes", h_episodes, BLK_SYNC, 0},
    {POST, "/v1/agents/{agent}/episodes/search", h_episodes_search, BLK_NEVER,
     0},
    {GET, "/v1/agents/{agent}/policies/{user}", h_policy, BLK_NEVER, 0},
    {POST, "/v1/agents/{agent}/patterns/search", h_patterns_search, BLK_NEVER,
     0},
    {PUT, "/v1/agents/{agent}/patterns/{pattern}", h_pattern_put, BLK_ALWAYS,
     0},
    {GET, "/v1/agents/{agent}/patterns/{pattern}", h_pattern_get, BLK_NEVER, 0},
    {GET, "/v1/agents/{agent}/metrics", h_agent_metrics, BLK_NEVER, 0},
    {POST, "/v1/users/search", h_users_search, BLK_NEVER, 0},
    {PUT, "/v1/users/{user}/state", h_user_put, BLK_ALWAYS, 0},
    {GET, "/v1/users/{user}/state", h_user_get, BLK_NEVER, 0},
    {PUT, "/v1/sessions/{session}", h_session_put, BLK_NEVER, 0},
    {GET, "/v1/sessions/{session}", h_session_get, BLK_NEVER, 0},
    {DEL, "/v1/sessions/{session}", h_session_delete, BLK_NEVER, 0},
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
    x->param[i] = seg[i] ? pct_decode(x, seg[i], len[i]) : NULL;
    /* The agent-wide posterior is user "*" (policies only). */
    int star = x->rt->fn == h_policy && i == 1 && x->param[i] &&
               strcmp(x->param[i], "*") == 0;
    if (!x->param[i] || (!star && !adb_id_valid(x->param[i]))) {
      const char *f = param_name(x->rt->pattern, i);
      return fail(x, 400, "invalid_field", f,
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
    fail(x, 405, "method_not_allowed", NULL, "%.*s is not allowed here",
         (int)r->method_len, r->method_str);
    adb__http_resp_header(x->resp, "Allow", allow);
  } else {
    int pl = r->path_len > 200 ? 200 : (int)r->path_len;
    fail(x, 404, "not_found", NULL, "no route for %.*s", pl, r->path);
  }
  return NULL;
}

/* API key and agent scope. */
static int authorise(rctx *x) {
  const adb__auth *auth = x->api->cfg.auth;
  x->key = -1;
  if (!auth || x->rt->open) return 0;
  x->key =
      adb__auth_check(auth, x->req->authorization, x->req->authorization_len);
  if (x->key < 0) {
    fail(x, 401, "unauthorized", NULL,
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
  if (!x->api->cfg.auth || r->path_len < 3 || memcmp(r->path, "/v1", 3) ||
      adb__auth_check(x->api->cfg.auth, r->authorization,
                      r->authorization_len) >= 0)
    return;
  x->resp->headers_len = 0;
  fail(x, 401, "unauthorized", NULL,
       "a valid API key is required: Authorization: Bearer <key>");
  adb__http_resp_header(x->resp, "WWW-Authenticate",
                        "Bearer realm=\"agentdb\"");
}

static int scope_ok(rctx *x) {
  if (x->key < 0 || strncmp(x->rt->pattern, "/v1/agents/", 11) != 0) return 0;
  if (adb__auth_allows(x->api->cfg.auth, x->key, x->param[0])) return 0;
  return fail(x, 404, "not_found", NULL, "unknown agent '%s'", x->param[0]);
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
            .key = -1};
  if (!x.ar) {
    resp->status = 500;
    adb__buf_puts(resp->body, "{\"error\":{\"code\":\"internal\","
                              "\"message\":\"out of memory\"}}");
    return ADB__HTTP_DONE;
  }
  const char *seg[MAX_PARAMS];
  size_t len[MAX_PARAMS];
  int n = 0;
  x.rt = find_route(&x, seg, len, &n);
  resp->route = x.rt ? (int)(x.rt - routes) : 0;
  if (!x.rt) hide_routes(&x);
  if (x.rt && !authorise(&x) && !take_params(&x, seg, len, n) &&
      !scope_ok(&x)) {
    if (blocks(api, x.rt) && !req->in_pool) {
      adb__arena_reset(x.ar);
      return ADB__HTTP_DEFER;
    }
    x.rt->fn(&x);
  }
  json_decref(x.doc);
  adb__arena_reset(x.ar);
  return ADB__HTTP_DONE;
}

/* ------------------------------------------------------------- logs */

static void iso_now(char *s, size_t n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t k = strftime(s, n, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(s + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* One JSON line per error answer, holding the answer's error object. */
static void log_error(FILE *f, const adb__http_req *req,
                      const adb__http_resp *resp, int64_t latency_ns) {
  char ts[40];
  iso_now(ts, sizeof ts);
  adb__buf b = {0};
  adb__buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"method\":", ts,
                  resp->status >= 500 ? "error" : "warn");
  adb__json_strn(&b, req->method_str ? req->method_str : "",
                 req->method_str ? req->method_len : 0);
  adb__buf_puts(&b, ",\"path\":");
  adb__json_strn(&b, req->path ? req->path : "",
                 req->path ? (req->path_len > 256 ? 256 : req->path_len) : 0);
  adb__buf_printf(&b, ",\"status\":%d,\"latency_us\":%lld", resp->status,
                  (long long)(latency_ns / 1000));
  const adb__buf *body = resp->body;
  if (body && body->len > 10 && memcmp(body->p, "{\"error\":", 9) == 0) {
    adb__buf_putc(&b, ',');
    adb__buf_append(&b, body->p + 1, body->len - 1);
  } else {
    adb__buf_putc(&b, '}');
  }
  adb__buf_putc(&b, '\n');
  if (!b.oom) fwrite(b.p, 1, b.len, f);
  adb__buf_free(&b);
}

static void log_access(FILE *f, const adb__http_req *req,
                       const adb__http_resp *resp, int64_t latency_ns) {
  char ts[40];
  iso_now(ts, sizeof ts);
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
  if (resp->status >= 400 && api->cfg.error_log)
    log_error(api->cfg.error_log, req, resp, latency_ns);
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
  if (!api->metrics) goto fail;
  *out = api;
  return ADB_OK;
fail:
  adb__api_free(api);
  return ADB_ENOMEM;
}

void adb__api_free(adb__api *api) {
  if (!api) return;
  adb__metrics_free(api->metrics);
  free(api->names);
  free(api->methods);
  free(api);
}

void adb__api_set_server(adb__api *api, adb__http_server *srv) {
  __atomic_store_n(&api->srv, srv, __ATOMIC_RELEASE);
}

adb__metrics *adb__api_metrics(adb__api *api) {
  return api->metrics;
}
