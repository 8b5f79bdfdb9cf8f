/*
 * records.c — the plain records of the public API: agents, action
 * catalogues, user states, learned patterns, sessions, policy inspection,
 * state keys and hourly metrics. Each validates its input at the boundary
 * and passes through to the store or the cache.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator.h"
#include "statekey.h"

static int store_err(adb *db, int rc, const char *what) {
  if (rc == ADB_ENOTFOUND) return adb__fail(db, rc, "%s not found", what);
  if (rc != ADB_EUNAVAIL && rc != ADB_ENOMEM) rc = ADB_ESTORE;
  atomic_fetch_add(&db->st_store_errors, 1);
  return adb__fail(db, rc, "%s: %s", what, adb__store_errmsg(db->store));
}

/* ---------------------------------------------------------------- agents */

static int positive(adb *db, const char *name, double v) {
  if (isfinite(v) && v > 0) return ADB_OK;
  return adb__fail(db, ADB_EINVAL, "%s must be a finite number > 0", name);
}

static int non_negative(adb *db, const char *name, double v) {
  if (isfinite(v) && v >= 0) return ADB_OK;
  return adb__fail(db, ADB_EINVAL, "%s must be a finite number >= 0", name);
}

static int check_context_keys(adb *db, const adb_agent_config *c) {
  if (c->n_context_keys < 0 || c->n_context_keys > ADB_MAX_CONTEXT_KEYS)
    return adb__fail(db, ADB_EINVAL, "context_keys holds at most %d keys",
                     ADB_MAX_CONTEXT_KEYS);
  for (int i = 0; i < c->n_context_keys; i++) {
    if (!adb_id_valid(c->context_keys[i]))
      return adb__fail(db, ADB_EINVAL, "context_keys[%d] is not a valid key",
                       i);
    for (int j = 0; j < i; j++)
      if (!strcmp(c->context_keys[i], c->context_keys[j]))
        return adb__fail(db, ADB_EINVAL, "context key '%s' appears twice",
                         c->context_keys[i]);
  }
  return ADB_OK;
}

static int check_agent(adb *db, const adb_agent_config *c) {
  int rc = adb__check_id(db, "agent id", c->id);
  if (!rc && c->algorithm != ADB_ALGO_BETA &&
      c->algorithm != ADB_ALGO_GAUSSIAN && c->algorithm != ADB_ALGO_LINEAR)
    rc =
        adb__fail(db, ADB_EINVAL, "algorithm must be beta, gaussian or linear");
  if (!rc && (c->linear_crosses < 0 || c->linear_crosses > ADB_CROSS_ALL))
    rc = adb__fail(db, ADB_EINVAL, "crosses: unknown cross");
  if (!rc && (!isfinite(c->linear_lambda) || c->linear_lambda < 0 ||
              c->linear_lambda > 1e6))
    rc = adb__fail(db, ADB_EINVAL, "lambda must be in (0, 1e6] (0 = default)");
  if (!rc && (!isfinite(c->linear_v) || c->linear_v < 0 || c->linear_v > 1e3))
    rc = adb__fail(db, ADB_EINVAL, "v must be in (0, 1000] (0 = default)");
  if (!rc) rc = positive(db, "prior.alpha", c->prior_alpha);
  if (!rc) rc = positive(db, "prior.beta", c->prior_beta);
  if (!rc && !isfinite(c->prior_mu))
    rc = adb__fail(db, ADB_EINVAL, "prior.mu must be finite");
  if (!rc) rc = positive(db, "prior.kappa", c->prior_kappa);
  if (!rc) rc = positive(db, "prior.a", c->prior_a);
  if (!rc) rc = positive(db, "prior.b", c->prior_b);
  if (!rc) rc = check_context_keys(db, c);
  if (!rc && (c->embedding_dim < 0 || c->embedding_dim > ADB_MAX_EMBEDDING_DIM))
    rc = adb__fail(db, ADB_EINVAL, "embedding_dim must be 0..%d",
                   ADB_MAX_EMBEDDING_DIM);
  if (!rc && (c->simhash_bits < 0 || c->simhash_bits > 64))
    rc = adb__fail(db, ADB_EINVAL, "simhash_bits must be 0..64");
  if (!rc)
    rc = non_negative(db, "reward_weights.watch", c->reward_weights.watch);
  if (!rc)
    rc = non_negative(db, "reward_weights.click", c->reward_weights.click);
  if (!rc)
    rc = non_negative(db, "reward_weights.rating", c->reward_weights.rating);
  if (!rc && !isfinite(c->fallback_strength))
    rc = adb__fail(db, ADB_EINVAL, "fallback_strength must be finite");
  if (!rc) rc = non_negative(db, "decay_half_life_s", c->decay_half_life_s);
  if (!rc) rc = non_negative(db, "reward_window_s", c->reward_window_s);
  if (!rc && !isfinite(c->default_reward))
    rc = adb__fail(db, ADB_EINVAL, "default_reward must be finite");
  if (!rc && c->algorithm == ADB_ALGO_BETA &&
      (c->default_reward < 0 || c->default_reward > 1))
    rc = adb__fail(db, ADB_EINVAL, "default_reward must be in [0, 1]");
  return rc;
}

int adb_agent_put(adb *db, adb_agent_config *cfg) {
  if (!cfg) return adb__fail(db, ADB_EINVAL, "no agent config");
  int rc = check_agent(db, cfg);
  if (rc) return rc;
  rc = db->store->m->agent_put(db->store, cfg);
  if (rc) return store_err(db, rc, "storing agent");
  adb__agent_invalidate(db, cfg->id);
  return ADB_OK;
}

int adb_agent_get(adb *db, const char *agent_id, adb_agent_config *out) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (rc) return rc;
  rc = db->store->m->agent_get(db->store, agent_id, out);
  return rc ? store_err(db, rc, "agent") : ADB_OK;
}

int adb_agent_counters_get(adb *db, const char *agent_id,
                           adb_agent_counters *out) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (rc) return rc;
  memset(out, 0, sizeof *out);
  rc = db->store->m->agent_counters(db->store, agent_id, out);
  return rc ? store_err(db, rc, "agent") : ADB_OK;
}

/* --------------------------------------------------------------- actions */

int adb_actions_put(adb *db, const char *agent_id, const adb_action *acts,
                    int n) {
  if (n < 1 || !acts)
    return adb__fail(db, ADB_EINVAL, "at least one action required");
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a);
  if (rc) return rc;
  adb__action_rec *recs = calloc((size_t)n, sizeof *recs);
  if (!recs) rc = adb__fail(db, ADB_ENOMEM, "out of memory");
  int dim = 0; /* of the first embedding: all must agree */
  for (int i = 0; !rc && i < n; i++) {
    rc = adb__check_id(db, "action id", acts[i].id);
    if (!rc) rc = adb__check_utf8(db, "action metadata", acts[i].metadata_json);
    if (!rc && acts[i].embedding)
      rc =
          adb__check_embedding(db, a, acts[i].embedding, acts[i].embedding_dim);
    if (!rc && acts[i].embedding && dim && acts[i].embedding_dim != dim)
      rc = adb__fail(db, ADB_EINVAL, "expected %d dimensions, not %d", dim,
                     acts[i].embedding_dim);
    if (!rc && acts[i].embedding) dim = acts[i].embedding_dim;
    if (rc) break;
    snprintf(recs[i].id, sizeof recs[i].id, "%s", acts[i].id);
    recs[i].disabled = acts[i].disabled != 0;
    recs[i].embedding = acts[i].embedding;
    recs[i].dim = acts[i].embedding ? acts[i].embedding_dim : 0;
    recs[i].metadata_json = acts[i].metadata_json;
  }
  if (!rc && dim) rc = adb__fix_embedding_dim(db, a, dim);
  if (!rc) {
    rc = db->store->m->actions_put(db->store, agent_id, recs, n);
    if (rc) rc = store_err(db, rc, "storing actions");
  }
  free(recs);
  adb__agent_release(a);
  if (!rc) adb__agent_invalidate(db, agent_id);
  return rc;
}

/* ------------------------------------------------------------ user state */

static void user_key(char *out, size_t cap, const char *user) {
  snprintf(out, cap, "u:{%s}", user);
}

int adb_user_state_put(adb *db, const char *user_id, const float *emb, int dim,
                       const char *context_json) {
  int rc = adb__check_id(db, "user_id", user_id);
  if (!rc) rc = adb__check_utf8(db, "context", context_json);
  if (rc) return rc;
  if (emb && (dim < 1 || dim > ADB_MAX_EMBEDDING_DIM))
    return adb__fail(db, ADB_EINVAL, "embedding must have 1..%d values",
                     ADB_MAX_EMBEDDING_DIM);
  for (int i = 0; emb && i < dim; i++)
    if (!isfinite(emb[i]))
      return adb__fail(db, ADB_EINVAL, "embedding[%d] is not finite", i);
  adb__user_state_rec u = {0};
  snprintf(u.user, sizeof u.user, "%s", user_id);
  u.embedding = (float *)emb;
  u.dim = emb ? dim : 0;
  u.context_json = (char *)context_json;
  u.updated_at_ms = adb__now_ms();
  rc = db->store->m->user_state_put(db->store, &u);
  if (rc) return store_err(db, rc, "storing user state");
  adb__vec_row row = {.kind = ADB__VEC_USERS,
                      .agent = "",
                      .id = user_id,
                      .user = "",
                      .action = "",
                      .embedding = emb,
                      .dim = u.dim,
                      .ts_ms = u.updated_at_ms};
  adb__memory_add(db->mem, &row); /* searchable now; the poller would too */
  char key[200];
  user_key(key, sizeof key, user_id);
  db->cache->m->del(db->cache, key);
  return ADB_OK;
}

int adb_user_state_get(adb *db, const char *user_id, adb_user_state *out) {
  int rc = adb__check_id(db, "user_id", user_id);
  if (rc) return rc;
  adb__user_state_rec u = {0};
  rc = db->store->m->user_state_get(db->store, user_id, &u);
  if (rc) return store_err(db, rc, "user state");
  memset(out, 0, sizeof *out);
  snprintf(out->user_id, sizeof out->user_id, "%s", u.user);
  out->embedding = u.embedding;
  out->embedding_dim = u.dim;
  out->context_json = u.context_json;
  out->updated_at_ms = u.updated_at_ms;
  return ADB_OK;
}

/* -------------------------------------------------------------- patterns */

int adb_pattern_put(adb *db, const char *agent_id, const adb_pattern *p) {
  adb__agent *a = NULL;
  int rc = p ? adb__agent_acquire(db, agent_id, &a)
             : adb__fail(db, ADB_EINVAL, "no pattern");
  if (rc) return rc;
  rc = adb__check_id(db, "pattern id", p->id);
  if (!rc && p->type[0]) rc = adb__check_id(db, "pattern type", p->type);
  if (!rc && !memchr(p->key, 0, sizeof p->key))
    rc = adb__fail(db, ADB_EINVAL, "pattern key is too long");
  if (!rc) rc = adb__check_utf8(db, "pattern key", p->key);
  if (!rc) rc = adb__check_utf8(db, "pattern value", p->value_json);
  if (!rc && !isfinite(p->confidence))
    rc = adb__fail(db, ADB_EINVAL, "confidence must be finite");
  if (!rc && p->support < 0)
    rc = adb__fail(db, ADB_EINVAL, "support must be >= 0");
  if (!rc && p->embedding)
    rc = adb__check_embedding(db, a, p->embedding, p->embedding_dim);
  if (!rc && p->embedding) rc = adb__fix_embedding_dim(db, a, p->embedding_dim);
  adb__agent_release(a);
  /* The time is fixed here so the index and the store agree on it. */
  adb_pattern q = *p;
  if (q.updated_at_ms <= 0) q.updated_at_ms = adb__now_ms();
  if (!rc) {
    rc = db->store->m->pattern_put(db->store, agent_id, &q);
    if (rc) rc = store_err(db, rc, "storing pattern");
  }
  if (!rc && q.embedding) {
    adb__vec_row row = {.kind = ADB__VEC_PATTERNS,
                        .agent = agent_id,
                        .id = q.id,
                        .user = "",
                        .action = q.key,
                        .reward = q.confidence,
                        .embedding = q.embedding,
                        .dim = q.embedding_dim,
                        .ts_ms = q.updated_at_ms};
    adb__memory_add(db->mem, &row);
  }
  return rc;
}

int adb_pattern_get(adb *db, const char *agent_id, const char *pattern_id,
                    adb_pattern *out) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (!rc) rc = adb__check_id(db, "pattern id", pattern_id);
  if (rc) return rc;
  memset(out, 0, sizeof *out);
  rc = db->store->m->pattern_get(db->store, agent_id, pattern_id, out);
  return rc ? store_err(db, rc, "pattern") : ADB_OK;
}

int adb__pattern_expire(adb *db, const char *agent, const char *prefix,
                        int64_t before_ms, int64_t *deleted) {
  int64_t n = 0;
  int rc = adb__check_id(db, "agent id", agent);
  if (rc) return rc;
  rc = db->store->m->pattern_expire(db->store, agent, prefix, before_ms, &n);
  if (deleted) *deleted = n;
  return rc ? store_err(db, rc, "expiring patterns") : ADB_OK;
}

/* -------------------------------------------------------------- sessions */

/* A shared session is "s:{id}"; one in an agent's namespace (sessions of
 * agent-scoped API keys) is "s:{id}/a:agent". Ids hold neither '}' nor
 * '/', so the two never meet; the hash tag keeps a session on one Redis
 * Cluster slot either way. */
static int session_key(adb *db, char *out, size_t cap, const char *agent,
                       const char *session) {
  int rc = adb__check_id(db, "session id", session);
  if (!rc && agent) rc = adb__check_id(db, "agent id", agent);
  if (rc) return rc;
  if (agent)
    snprintf(out, cap, "s:{%s}/a:%s", session, agent);
  else
    snprintf(out, cap, "s:{%s}", session);
  return ADB_OK;
}

enum { SESSION_KEY_MAX = 2 * ADB_ID_MAX + 16 };

int adb__session_put(adb *db, const char *agent, const char *session_id,
                     const char *json, int ttl_s) {
  char key[SESSION_KEY_MAX];
  int rc = session_key(db, key, sizeof key, agent, session_id);
  if (rc) return rc;
  if (!json) return adb__fail(db, ADB_EINVAL, "session context required");
  if ((rc = adb__check_utf8(db, "session context", json))) return rc;
  if (ttl_s < 0) return adb__fail(db, ADB_EINVAL, "ttl_s must be >= 0");
  int64_t ttl = ttl_s ? (int64_t)ttl_s * 1000 : 1800000; /* 30 min */
  rc = db->cache->m->set(db->cache, key, json, strlen(json), ttl);
  return rc ? adb__fail(db, ADB_ECACHE, "cache unavailable") : ADB_OK;
}

int adb__session_get(adb *db, const char *agent, const char *session_id,
                     char **json_out) {
  char key[SESSION_KEY_MAX];
  int rc = session_key(db, key, sizeof key, agent, session_id);
  if (rc) return rc;
  void *val;
  size_t len;
  rc = db->cache->m->get(db->cache, key, &val, &len);
  if (rc == ADB_ENOTFOUND)
    return adb__fail(db, rc, "session '%s' not found", session_id);
  if (rc) return adb__fail(db, ADB_ECACHE, "cache unavailable");
  char *s = malloc(len + 1);
  if (!s) {
    free(val);
    return adb__fail(db, ADB_ENOMEM, "out of memory");
  }
  memcpy(s, val, len);
  s[len] = 0;
  free(val);
  *json_out = s;
  return ADB_OK;
}

int adb__session_delete(adb *db, const char *agent, const char *session_id) {
  char key[SESSION_KEY_MAX];
  int rc = session_key(db, key, sizeof key, agent, session_id);
  if (rc) return rc;
  rc = db->cache->m->del(db->cache, key);
  if (rc == ADB_ENOTFOUND)
    return adb__fail(db, rc, "session '%s' not found", session_id);
  return rc ? adb__fail(db, ADB_ECACHE, "cache unavailable") : ADB_OK;
}

int adb_session_put(adb *db, const char *session_id, const char *json,
                    int ttl_s) {
  return adb__session_put(db, NULL, session_id, json, ttl_s);
}

int adb_session_get(adb *db, const char *session_id, char **json_out) {
  return adb__session_get(db, NULL, session_id, json_out);
}

int adb_session_delete(adb *db, const char *session_id) {
  return adb__session_delete(db, NULL, session_id);
}

/* -------------------------------------------------------------- policies */

int adb_policy_get(adb *db, const char *agent_id, const char *user_id,
                   const char *state_key, adb_arm_posterior *arms, int cap,
                   int *n_out) {
  adb__agent *a = NULL;
  int rc = (user_id && !strcmp(user_id, "*"))
               ? ADB_OK
               : adb__check_id(db, "user_id", user_id);
  if (!rc && (!state_key || strlen(state_key) != ADB_STATE_KEY_LEN))
    rc = adb__fail(db, ADB_EINVAL, "state_key must be 64 hex characters");
  if (!rc) rc = adb__agent_acquire(db, agent_id, &a);
  if (rc) return rc;
  adb__policy p = {0};
  rc = db->store->m->policy_get(db->store, agent_id, user_id, state_key, &p);
  if (rc) {
    adb__agent_release(a);
    return store_err(db, rc, "policy");
  }
  for (int i = 0; i < p.n && i < cap; i++) {
    adb__posterior post;
    adb_arm_posterior *o = &arms[i];
    adb__posterior_make(&a->cfg, &p.arms[i].s, NULL, &post);
    memset(o, 0, sizeof *o);
    snprintf(o->action, sizeof o->action, "%s", p.arms[i].action);
    o->n = p.arms[i].s.n;
    o->sum = (double)p.arms[i].s.sum_micro / ADB_MICRO;
    o->alpha = post.alpha;
    o->beta = post.beta;
    o->mu = post.mu;
    o->kappa = post.kappa;
    o->a = post.a;
    o->b = post.b;
    o->mean = adb__posterior_mean(&post);
  }
  *n_out = p.n;
  adb__policy_free(&p);
  adb__agent_release(a);
  return ADB_OK;
}

int adb_state_key(adb *db, const char *agent_id, const adb_kv *ctx, int n_ctx,
                  const float *emb, int dim, char out[ADB_STATE_KEY_LEN + 1]) {
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a);
  if (rc) return rc;
  if (a->cfg.simhash_bits && !emb)
    rc = adb__fail(db, ADB_EINVAL, "this agent's states need an embedding");
  else if (adb__state_key(a->cfg.context_keys, a->cfg.n_context_keys, ctx,
                          n_ctx, emb, dim, a->cfg.simhash_bits, out))
    rc = adb__fail(db, ADB_EINVAL, "bad context or embedding");
  adb__agent_release(a);
  return rc;
}

/* --------------------------------------------------------------- metrics */

int adb_metrics_get(adb *db, const char *agent_id, int64_t from_ms,
                    int64_t to_ms, adb_metrics_row **rows, int *n) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (rc) return rc;
  if (from_ms > to_ms)
    return adb__fail(db, ADB_EINVAL, "from must not be after to");
  rc = db->store->m->metrics_get(db->store, agent_id, from_ms, to_ms, rows, n);
  return rc ? store_err(db, rc, "metrics") : ADB_OK;
}
