/*
 * api_decide.c — the hot routes: POST /v1/agents/{agent}/decide and
 * /rewards. A decide body is read by a strict fast parser straight into the
 * request arena (no jansson tree); anything unusual (escapes, null,
 * non-ASCII, reals in the context, duplicate keys, malformed input) falls
 * back to jansson, which accepts exactly the same documents and produces
 * the precise error. Validation after parsing is shared by both paths.
 */
#define _GNU_SOURCE
#include "api_internal.h"
#include "coordinator.h" /* adb__reward_cb, the write timeout */

#include <stdlib.h>
#include <string.h>

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
  in->cands = adb__api_alloc(x, ADB_MAX_CANDIDATES * sizeof *in->cands);
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
  in->ctx = adb__api_alloc(x, MAX_CONTEXT * sizeof *in->ctx);
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
      char *t = adb__api_alloc(x, 24);
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
    in->emb = adb__api_alloc(x, ADB_MAX_EMBEDDING_DIM * sizeof(float));
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
  f.term = adb__api_alloc(x, (size_t)f.cap_term * sizeof *f.term);
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
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"user_id",   "candidates",       "context",
                                     "embedding", "embedding_b64",    "k",
                                     "event_id",  "context_features", NULL};
  if (adb__api_check_keys(x, doc, keys, NULL)) return -1;
  json_t *c = adb__api_member(doc, "candidates");
  if (c && !json_is_array(c))
    return adb__api_fail(x, 400, "invalid_field", "candidates",
                         "'candidates' must be an array of action ids");
  if (c) {
    size_t n = json_array_size(c);
    in->over = n > ADB_MAX_CANDIDATES;
    in->n_cands = (int)(in->over ? 0 : n);
    in->cands = adb__api_alloc(x, (n ? n : 1) * sizeof *in->cands);
    if (!in->cands)
      return adb__api_fail(x, 500, "internal", NULL, "out of memory");
    for (int i = 0; i < in->n_cands; i++) {
      json_t *v = json_array_get(c, (size_t)i);
      if (!json_is_string(v))
        return adb__api_fail(x, 400, "invalid_field",
                             adb__api_fidx(x, "candidates", (size_t)i),
                             "candidates must be strings");
      in->cands[i] = json_string_value(v);
    }
  }
  json_t *b = adb__api_member(doc, "embedding_b64");
  if (b && !json_is_string(b))
    return adb__api_fail(x, 400, "invalid_field", "embedding_b64",
                         "'embedding_b64' must be a base64 string");
  if (b) {
    in->has_b64 = 1;
    in->b64 = json_string_value(b);
    in->b64_len = json_string_length(b);
  }
  json_t *e = adb__api_member(doc, "embedding");
  char err[128];
  if (e) {
    in->has_emb = 1;
    in->emb = adb__api_alloc(x, ADB_MAX_EMBEDDING_DIM * sizeof(float));
    if (!in->emb)
      return adb__api_fail(x, 500, "internal", NULL, "out of memory");
    if (adb__json_floats(e, in->emb, ADB_MAX_EMBEDDING_DIM, &in->dim, err,
                         sizeof err))
      return adb__api_fail(x, 400, "invalid_field", "embedding",
                           "'embedding': %s", err);
  }
  if (adb__api_member(doc, "context_features")) { /* features.c */
    if (in->has_emb || in->has_b64)
      return adb__api_fail(x, 400, "invalid_field", "context_features",
                           "give 'context_features' or an embedding, not both");
    if (adb__api_get_features(x, doc, "context_features", NULL, &in->emb,
                              &in->dim))
      return -1;
    in->has_emb = 1;
  }
  json_t *k = adb__api_member(doc, "k");
  if (k && !json_is_integer(k))
    return adb__api_fail(x, 400, "invalid_field", "k",
                         "'k' must be an integer");
  in->has_k = k != NULL;
  in->k = json_integer_value(k);
  json_t *u = adb__api_member(doc, "user_id"),
         *ev = adb__api_member(doc, "event_id");
  if ((u && !json_is_string(u)) || (ev && !json_is_string(ev)))
    return adb__api_fail(x, 400, "invalid_field",
                         u && !json_is_string(u) ? "user_id" : "event_id",
                         "ids are strings");
  in->user_id = u ? json_string_value(u) : NULL;
  in->event_id = ev ? json_string_value(ev) : NULL;
  return adb__api_get_context(x, doc, "context", &in->ctx, &in->n_ctx);
}

static int decide_check(rctx *x, decide_in *in) {
  if (!in->user_id)
    return adb__api_fail(x, 400, "missing_field", "user_id",
                         "'user_id' is required");
  if (!adb_id_valid(in->user_id))
    return adb__api_fail(
        x, 400, "invalid_field", "user_id",
        "'user_id' must be 1..128 characters of [A-Za-z0-9._:@-]");
  if (in->event_id && !adb_id_valid(in->event_id))
    return adb__api_fail(
        x, 400, "invalid_field", "event_id",
        "'event_id' must be 1..128 characters of [A-Za-z0-9._:@-]");
  if (!in->cands && !in->over)
    return adb__api_fail(x, 400, "missing_field", "candidates",
                         "'candidates' is required");
  if (in->over || in->n_cands == 0)
    return adb__api_fail(x, 400, "invalid_field", "candidates",
                         "'candidates' must hold 1..%d action ids",
                         ADB_MAX_CANDIDATES);
  adb__api_strset seen;
  if (adb__api_strset_init(x, &seen, (size_t)in->n_cands) < 0)
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  for (int i = 0; i < in->n_cands; i++) {
    if (!adb_id_valid(in->cands[i]))
      return adb__api_fail(x, 400, "invalid_field",
                           adb__api_fidx(x, "candidates", (size_t)i),
                           "candidate ids must be 1..128 characters of "
                           "[A-Za-z0-9._:@-]");
    if (!adb__api_strset_add(&seen, in->cands[i]))
      return adb__api_fail(x, 400, "invalid_field",
                           adb__api_fidx(x, "candidates", (size_t)i),
                           "duplicate candidate '%s'", in->cands[i]);
  }
  if (in->has_k && (in->k < 1 || in->k > in->n_cands))
    return adb__api_fail(x, 400, "invalid_field", "k",
                         "'k' must be in [1, %d] (the number of candidates)",
                         in->n_cands);
  for (int i = 0; i < in->n_ctx; i++)
    if (!adb_id_valid(in->ctx[i].key) || strlen(in->ctx[i].value) > 1024)
      return adb__api_fail(
          x, 400, "invalid_field", adb__api_fname(x, "context", in->ctx[i].key),
          "context keys are ids and values at most 1024 bytes");
  if (in->has_emb && in->has_b64)
    return adb__api_fail(x, 400, "invalid_field", "embedding_b64",
                         "give 'embedding' or 'embedding_b64', not both");
  if (in->has_emb && in->dim == 0)
    return adb__api_fail(x, 400, "invalid_field", "embedding",
                         "an embedding needs at least one value");
  if (in->has_b64) {
    char err[128];
    in->emb = adb__api_alloc(x, ADB_MAX_EMBEDDING_DIM * sizeof(float) + 8);
    if (!in->emb)
      return adb__api_fail(x, 500, "internal", NULL, "out of memory");
    int rc = adb__b64_floats(in->b64, in->b64_len, in->emb,
                             ADB_MAX_EMBEDDING_DIM, &in->dim, err, sizeof err);
    if (rc == ADB_OK && in->dim == 0) snprintf(err, sizeof err, "no values");
    if (rc != ADB_OK || in->dim == 0)
      return adb__api_fail(x, 400, "invalid_field", "embedding_b64",
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
    return adb__api_fail(x, 400, "invalid_field", "embedding",
                         "expected %d dimensions, not %d", c.embedding_dim,
                         dim);
  return 0;
}

int adb__api_decide(rctx *x) {
  int64_t t0 = adb__mono_ns();
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
  d.ranking = adb__api_alloc(x, (size_t)k * sizeof *d.ranking);
  if (!d.ranking)
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  d.ranking_cap = k;
  d.n_ranking = 0;
  int rc = adb_decide(x->db, &r, &d);
  if (rc == ADB_EINVAL && r.embedding &&
      !adb__api_guess_field(adb_errmsg(x->db)))
    return adb__api_fail_adb(x, rc, "embedding");
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  put_decision(x->out, &d);
  adb__dash_decision(adb__dash_agent_of(x->api->dash, x->param[0]),
                     adb__api_wall_ms(), in.user_id, d.event_id, d.action,
                     d.propensity, adb__mono_ns() - t0);
  return 0;
}

/* ---------------------------------------------------------- rewards */

static int get_signals(rctx *x, json_t *doc, adb_signals *s, int *has) {
  json_t *o = adb__api_member(doc, "signals");
  *has = 0;
  if (!o) return 0;
  if (!json_is_object(o))
    return adb__api_fail(x, 400, "invalid_field", "signals",
                         "'signals' must be an object");
  static const char *const keys[] = {"watch_time_s", "duration_s", "clicked",
                                     "rating", NULL};
  const char *p = "signals";
  int has_w = 0, has_d = 0;
  memset(s, 0, sizeof *s);
  if (adb__api_check_keys(x, o, keys, p) ||
      adb__api_get_num(x, o, "watch_time_s", p, 0, 1e12, &s->watch_time_s,
                       &has_w) ||
      adb__api_get_num(x, o, "duration_s", p, 1e-9, 1e12, &s->duration_s,
                       &has_d) ||
      adb__api_get_num(x, o, "rating", p, 1, 5, &s->rating, &s->has_rating))
    return -1;
  if (has_w != has_d)
    return adb__api_fail(x, 400, "invalid_field",
                         has_w ? "signals.duration_s" : "signals.watch_time_s",
                         "'watch_time_s' and 'duration_s' go together");
  s->has_watch = has_w;
  if (adb__api_member(o, "clicked")) {
    if (adb__api_get_bool(x, o, "clicked", p, &s->clicked)) return -1;
    s->has_click = 1;
  }
  if (!s->has_watch && !s->has_click && !s->has_rating)
    return adb__api_fail(
        x, 400, "invalid_field", "signals",
        "'signals' holds none of watch_time_s/duration_s, clicked, "
        "rating");
  *has = 1;
  return 0;
}

/* Which of the two reward forms, and that it is whole. */
static int reward_form(rctx *x, json_t *doc, adb_reward_req *r) {
  if (r->event_id) {
    static const char *const direct[] = {"user_id", "action", "context",
                                         "state_key", NULL};
    for (int i = 0; direct[i]; i++)
      if (adb__api_member(doc, direct[i]))
        return adb__api_fail(
            x, 400, "invalid_field", direct[i],
            "'%s' does not go with 'event_id': the decision already "
            "says it",
            direct[i]);
    return 0;
  }
  if (!r->user_id || !r->action)
    return adb__api_fail(
        x, 400, "missing_field", r->user_id ? "action" : "user_id",
        "a reward needs 'event_id', or 'user_id' and 'action'");
  json_t *sk = adb__api_member(doc, "state_key");
  if (sk && adb__api_member(doc, "context"))
    return adb__api_fail(x, 400, "invalid_field", "state_key",
                         "give 'context' or 'state_key', not both");
  if (sk &&
      (!json_is_string(sk) || !adb__api_is_state_key(json_string_value(sk))))
    return adb__api_fail(x, 400, "invalid_field", "state_key",
                         "'state_key' must be 64 lowercase hex characters");
  r->state_key = sk ? json_string_value(sk) : NULL;
  adb_kv *kv;
  int n;
  if (adb__api_get_context(x, doc, "context", &kv, &n)) return -1;
  r->context = kv;
  r->n_context = n;
  return 0;
}

/* The answer to an accepted reward, and its point on the dashboard. */
static void reward_answer(adb__api *api, const char *agent,
                          const adb_reward_req *r, const adb_reward_result *res,
                          adb__http_resp *resp) {
  /* Async mode answers before the flush knows whether the id is a
   * duplicate: a pending reward is counted when accepted. */
  if (res->applied || res->pending)
    adb__dash_reward(adb__dash_agent_of(api->dash, agent), adb__api_wall_ms(),
                     r->event_id, r->user_id, r->action, res->reward);
  adb__buf *b = resp->body;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "reward_id", r->reward_id, 1);
  adb__api_put_num(b, "reward", res->reward);
  adb__api_put_key(b, "applied", 0);
  adb__buf_puts(b, res->applied ? "true" : "false");
  if (res->pending) {
    adb__buf_puts(b, ",\"pending\":true");
    resp->status = 202;
  }
  if (res->awaiting_decision) adb__buf_puts(b, ",\"awaiting_decision\":true");
  if (res->late) adb__buf_puts(b, ",\"late\":true");
  adb__buf_putc(b, '}');
}

/* A durable reward answered when its group commit is done, with no thread
 * waiting for it (http.h, adb__http_later): the pool thread queues it with
 * a completion callback and is free at once, so the rewards in flight are
 * bounded by the connections, not by the pool's threads, and each commit
 * takes all of them. Its request's strings are copied: the answer is
 * written after the handler returned. */
typedef struct later_reward {
  adb__api *api;
  adb__http_later *l;
  int rc;
  adb_reward_result res;
  char msg[512];
  adb_reward_req r; /* its strings point into text */
  char text[];
} later_reward;

static void reward_fill(adb__http_resp *resp, void *arg) {
  later_reward *lr = arg;
  if (resp && lr->rc == ADB_OK)
    reward_answer(lr->api, lr->r.agent_id, &lr->r, &lr->res, resp);
  if (resp && lr->rc != ADB_OK) {
    rctx x = {.resp = resp, .out = resp->body};
    const char *code;
    int retry, status = adb__api_status(lr->rc, &code, &retry);
    adb__api_fail(&x, status, code, NULL, "%s", lr->msg);
    if (retry) {
      char v[16];
      snprintf(v, sizeof v, "%d", retry);
      adb__http_resp_header(resp, "Retry-After", v);
    }
  }
  free(lr);
}

/* On the library's waker thread, once the reward's batch is committed. */
static void reward_committed(int rc, const adb_reward_result *res, void *arg) {
  later_reward *lr = arg;
  lr->rc = rc;
  if (res) lr->res = *res;
  if (rc) snprintf(lr->msg, sizeof lr->msg, "%s", adb_errmsg(lr->api->cfg.db));
  adb__http_later_done(lr->l, reward_fill, lr);
}

static char *copy_into(char **at, const char *s) {
  if (!s) return NULL;
  char *d = *at;
  *at = stpcpy(d, s) + 1;
  return d;
}

/* 0 when the reward is on its way (the answer comes later), -1 when it is
 * to be written the blocking way (async durability, not on a pool thread,
 * out of memory); a reward refused at once is answered here (0 too). */
static int reward_later(rctx *x, const adb_reward_req *r) {
  adb *db = x->db;
  if (db->cfg.durability != ADB_DURABILITY_SYNC || !x->req->in_pool) return -1;
  const char *s[] = {r->agent_id, r->reward_id, r->event_id, r->user_id,
                     r->action};
  size_t len = 0;
  for (int i = 0; i < 5; i++)
    len += s[i] ? strlen(s[i]) + 1 : 0;
  char msg[160];
  snprintf(msg, sizeof msg,
           "write not committed within %d ms; it stays queued, retry with "
           "the same id is safe",
           db->cfg.write_timeout_ms);
  later_reward *lr = calloc(1, sizeof *lr + len);
  adb__http_later *l =
      lr ? adb__http_later_begin(x->req, db->cfg.write_timeout_ms, msg) : NULL;
  if (!l) {
    free(lr);
    return -1;
  }
  char *at = lr->text;
  lr->api = x->api;
  lr->l = l;
  lr->r = (adb_reward_req){.agent_id = copy_into(&at, r->agent_id),
                           .reward_id = copy_into(&at, r->reward_id),
                           .event_id = copy_into(&at, r->event_id),
                           .user_id = copy_into(&at, r->user_id),
                           .action = copy_into(&at, r->action)};
  adb__api_answer_headers(x); /* resp is not ours once handed on */
  int rc = adb__reward_cb(db, r, reward_committed, lr);
  if (rc != ADB_OK) {
    free(lr); /* the handle is dropped: the handler answers */
    adb__api_fail_adb(x, rc, NULL);
    return 0;
  }
  x->later = 1;
  return 0;
}

int adb__api_reward(rctx *x) {
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"reward_id", "event_id", "user_id",
                                     "action",    "context",  "state_key",
                                     "reward",    "signals",  NULL};
  if (adb__api_check_keys(x, doc, keys, NULL)) return -1;
  adb_reward_req r = {.agent_id = x->param[0]};
  adb_signals sig;
  int has_sig;
  if (adb__api_get_id(x, doc, "reward_id", NULL, 1, &r.reward_id) ||
      adb__api_get_id(x, doc, "event_id", NULL, 0, &r.event_id) ||
      adb__api_get_id(x, doc, "user_id", NULL, 0, &r.user_id) ||
      adb__api_get_id(x, doc, "action", NULL, 0, &r.action) ||
      adb__api_get_num(x, doc, "reward", NULL, -1e300, 1e300, &r.reward,
                       &r.has_reward) ||
      get_signals(x, doc, &sig, &has_sig) || reward_form(x, doc, &r))
    return -1;
  if (!r.has_reward && !has_sig)
    return adb__api_fail(x, 400, "missing_field", "reward",
                         "a reward needs 'reward' or 'signals'");
  r.signals = has_sig ? &sig : NULL;
  if (reward_later(x, &r) == 0) return 0;
  adb_reward_result res = {0};
  int rc = adb_reward(x->db, &r, &res);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  reward_answer(x->api, x->param[0], &r, &res, x->resp);
  return 0;
}
