/*
 * decide.c — the read path and decisions.
 *
 * A decision reads the statistics of the candidates for the user's policy
 * and the agent-wide policy ('*') in one cache round trip; a key that
 * misses is loaded from the store by one thread at a time (the others wait
 * for it and re-read the cache) and cached. If the cache fails, the store
 * answers (degraded, counted). Thompson sampling then draws each eligible
 * candidate's posterior, ranks them, computes the chosen action's
 * propensity, and the decision is logged through the write queue.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>

#include "coordinator.h"
#include "hash.h"
#include "policy.h"
#include "slab.h"
#include "statekey.h"

/* Fills stats for actions from a policy read from the store (sorted by
 * action, but don't rely on it: small n, linear is fine on a miss). */
static void stats_from_policy(const adb__policy *p, const adb__ids *ids,
                              adb__arm_stats *out) {
  memset(out, 0, (size_t)ids->n * sizeof *out);
  for (int i = 0; i < p->n; i++)
    for (int a = 0; a < ids->n; a++)
      if (!strcmp(p->arms[i].action, ids->id[a])) out[a] = p->arms[i].s;
}

/* Loads one policy key from the store and caches it; one loader per key,
 * later arrivals wait and then re-read the cache. */
static int load_policy(adb *db, const char *key, const char *agent,
                       const char *user, const char *state, const adb__ids *ids,
                       adb__arm_stats *out, int use_cache) {
  for (;;) {
    pthread_mutex_lock(&db->sfmu);
    if (!adb__strmap_get(&db->inflight, key)) {
      int rc = adb__strmap_put(&db->inflight, key, (void *)1);
      pthread_mutex_unlock(&db->sfmu);
      if (rc) return adb__fail(db, rc, "out of memory");
      break;
    }
    while (adb__strmap_get(&db->inflight, key))
      pthread_cond_wait(&db->sfcond, &db->sfmu);
    pthread_mutex_unlock(&db->sfmu);
    int found = 0;
    if (use_cache &&
        db->cache->m->policy_mget(db->cache, 1, &key, ids, out, &found) ==
            ADB_OK &&
        found)
      return ADB_OK;
  }
  adb__policy p = {0};
  int rc = db->store->m->policy_get(db->store, agent, user, state, &p);
  if (rc == ADB_OK) {
    stats_from_policy(&p, ids, out);
    if (use_cache &&
        db->cache->m->policy_put(db->cache, key, &p,
                                 (int64_t)db->cfg.cache_ttl_s * 1000) != ADB_OK)
      atomic_fetch_add(&db->st_cache_errors, 1);
  } else {
    atomic_fetch_add(&db->st_store_errors, 1);
    rc = adb__fail(db, rc == ADB_EUNAVAIL ? rc : ADB_ESTORE,
                   "reading policy: %s", adb__store_errmsg(db->store));
  }
  adb__policy_free(&p);
  pthread_mutex_lock(&db->sfmu);
  adb__strmap_del(&db->inflight, key);
  pthread_cond_broadcast(&db->sfcond);
  pthread_mutex_unlock(&db->sfmu);
  return rc;
}

int adb__policy_read(adb *db, const char *agent, const char *user,
                     const char *state_key, const adb__ids *ids,
                     adb__arm_stats *stats, int *hits) {
  int n = ids->n;
  char kuser[400], kglob[400];
  adb__policy_key(kuser, sizeof kuser, agent, user, state_key);
  adb__policy_key(kglob, sizeof kglob, agent, "*", state_key);
  const char *keys[2] = {kuser, kglob};
  int found[2] = {0, 0}, nkeys = strcmp(user, "*") ? 2 : 1;
  int use_cache = db->cache->m->policy_mget(db->cache, nkeys, keys, ids, stats,
                                            found) == ADB_OK;
  if (!use_cache) {
    atomic_fetch_add(&db->st_cache_errors, 1);
    found[0] = found[1] = 0;
  }
  if (nkeys == 1) {
    found[1] = found[0];
    memcpy(stats + n, stats, (size_t)n * sizeof *stats);
  }
  *hits = found[0] + (nkeys == 2 ? found[1] : 0);
  atomic_fetch_add(&db->st_hits, *hits);
  atomic_fetch_add(&db->st_misses, nkeys - *hits);
  int rc = ADB_OK;
  if (!found[0])
    rc = load_policy(db, kuser, agent, user, state_key, ids, stats, use_cache);
  if (rc == ADB_OK && !found[1] && nkeys == 2)
    rc = load_policy(db, kglob, agent, "*", state_key, ids, stats + n,
                     use_cache);
  if (rc == ADB_OK && nkeys == 1)
    memcpy(stats + n, stats, (size_t)n * sizeof *stats);
  return rc;
}

int adb__check_embedding(adb *db, adb__agent *a, const float *v, int dim) {
  if (!v || dim <= 0 || dim > ADB_MAX_EMBEDDING_DIM)
    return adb__fail(db, ADB_EINVAL, "embedding must have 1..%d values",
                     ADB_MAX_EMBEDDING_DIM);
  for (int i = 0; i < dim; i++)
    if (!isfinite(v[i]))
      return adb__fail(db, ADB_EINVAL, "embedding[%d] is not a finite number",
                       i);
  int want = a->cfg.embedding_dim;
  if (want && want != dim)
    return adb__fail(db, ADB_EINVAL, "expected %d dimensions, not %d", want,
                     dim);
  return ADB_OK;
}

/* The first embedding fixes the agent's dimension, once the request that
 * carries it has been accepted (a refused request changes nothing): one
 * conditional update of that column in the store, so that of concurrent
 * first embeddings of different sizes exactly one wins (the others get
 * EINVAL), and no other column of the agent is written from a stale copy. */
int adb__fix_embedding_dim(adb *db, adb__agent *a, int dim) {
  if (a->cfg.embedding_dim) return ADB_OK; /* checked already */
  int stored = 0;
  int rc = db->store->m->agent_fix_dim(db->store, a->cfg.id, dim, &stored);
  if (rc) return adb__fail(db, rc, "%s", adb__store_errmsg(db->store));
  adb__agent_invalidate(db, a->cfg.id);
  if (stored != dim)
    return adb__fail(db, ADB_EINVAL, "expected %d dimensions, not %d", stored,
                     dim);
  return ADB_OK;
}

/* Generated event ids: "ev-" + 12 hex digits of the millisecond clock + 20
 * hex digits of randomness from the OS (never the seeded stream, so runs
 * with the same seed on one store cannot collide). Time first keeps the
 * decisions index growing at its right edge instead of at random pages. */
static void new_event_id(char out[ADB_ID_MAX + 1]) {
  static _Thread_local adb__rng idrng;
  static _Thread_local int seeded;
  static const char hex[] = "0123456789abcdef";
  if (!seeded) {
    uint64_t s;
    if (getrandom(&s, sizeof s, 0) != sizeof s) s = (uint64_t)adb__mono_ns();
    adb__rng_seed(&idrng, s ^ (uint64_t)(uintptr_t)&seeded);
    seeded = 1;
  }
  uint64_t t = (uint64_t)adb__now_ms(), r1 = adb__rng_next(&idrng),
           r2 = adb__rng_next(&idrng);
  memcpy(out, "ev-", 3);
  for (int i = 0; i < 12; i++)
    out[3 + i] = hex[(t >> (44 - 4 * i)) & 15];
  for (int i = 0; i < 16; i++)
    out[15 + i] = hex[(r1 >> (60 - 4 * i)) & 15];
  for (int i = 0; i < 4; i++)
    out[31 + i] = hex[(r2 >> (60 - 4 * i)) & 15];
  out[35] = 0;
}

/* Candidate ids valid and distinct, eligibility from the catalogue, each
 * id's length and hash. Each id is hashed once, for the catalogue, the
 * duplicate check (a hash set of indices on the stack) and the cache. */
static int check_candidates(adb *db, adb__agent *a, const adb_decide_req *req,
                            uint8_t *eligible, int *n_eligible, uint32_t *len,
                            uint64_t *h) {
  int n = req->n_candidates;
  size_t cap = 2;
  while (cap < 2 * (size_t)n)
    cap <<= 1;
  uint16_t seen[cap]; /* index + 1; n <= ADB_MAX_CANDIDATES */
  memset(seen, 0, sizeof seen);
  size_t mask = cap - 1;
  *n_eligible = 0;
  for (int i = 0; i < n; i++) {
    const char *c = req->candidates[i];
    if (!(len[i] = (uint32_t)adb__id_len(c)))
      return adb__fail(db, ADB_EINVAL, "candidates[%d] is not a valid id", i);
    h[i] = adb__hash_id(c, len[i]);
    size_t j = h[i] & mask;
    for (; seen[j]; j = (j + 1) & mask) {
      int k = seen[j] - 1;
      if (len[k] == len[i] && adb__bytes_equal(req->candidates[k], c, len[i]))
        return adb__fail(db, ADB_EINVAL, "candidate '%s' appears twice", c);
    }
    seen[j] = (uint16_t)(i + 1);
    eligible[i] = 1;
    if (a->has_catalogue)
      eligible[i] =
          adb__strmap_get_h(&a->catalogue, c, len[i], h[i]) == (void *)1;
    *n_eligible += eligible[i];
  }
  return ADB_OK;
}

static int check_request(adb *db, const adb_decide_req *req) {
  if (!req) return adb__fail(db, ADB_EINVAL, "no request");
  int rc = adb__check_id(db, "user_id", req->user_id);
  if (rc) return rc;
  if (req->n_candidates < 1 || req->n_candidates > ADB_MAX_CANDIDATES ||
      !req->candidates)
    return adb__fail(db, ADB_EINVAL, "candidates must hold 1..%d ids",
                     ADB_MAX_CANDIDATES);
  if (req->k < 0 || req->k > req->n_candidates)
    return adb__fail(db, ADB_EINVAL, "k must be 1..%d (the candidates)",
                     req->n_candidates);
  if (req->event_id && !adb_id_valid(req->event_id))
    return adb__fail(db, ADB_EINVAL,
                     "event_id must be 1-128 characters of [A-Za-z0-9._:@-]");
  if (req->n_context < 0 || (req->n_context && !req->context))
    return adb__fail(db, ADB_EINVAL, "bad context");
  for (int i = 0; i < req->n_context; i++)
    if (!req->context[i].key || !req->context[i].value)
      return adb__fail(db, ADB_EINVAL, "context entries need key and value");
    else if (!adb__utf8_valid(req->context[i].key) ||
             !adb__utf8_valid(req->context[i].value))
      return adb__fail(db, ADB_EINVAL, "context[%d] is not valid UTF-8", i);
  return ADB_OK;
}

/* The decision's context and candidates are copied raw into its queued
 * log entry (adb__decision_log; the flush worker encodes them as JSON, off
 * the decision's path). Layout: n_ctx key/value pairs then n_cand ids,
 * each NUL-terminated. */
static size_t raw_len(const adb_decide_req *req, const uint32_t *clen) {
  size_t len = 0;
  for (int i = 0; i < req->n_context; i++)
    len += strlen(req->context[i].key) + strlen(req->context[i].value) + 2;
  for (int i = 0; i < req->n_candidates; i++)
    len += clen[i] + 1;
  return len;
}

static void raw_fill(const adb_decide_req *req, const uint32_t *clen, char *p) {
  for (int i = 0; i < req->n_context; i++) {
    p = stpcpy(p, req->context[i].key) + 1;
    p = stpcpy(p, req->context[i].value) + 1;
  }
  for (int i = 0; i < req->n_candidates; i++) {
    memcpy(p, req->candidates[i], clen[i] + 1);
    p += clen[i] + 1;
  }
}

/* snprintf(dst, cap, "%s", src) without the format machinery (a few
 * hundred ns per decision with its ranking). */
static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strnlen(src, cap - 1);
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* The ranking as JSON [["action", score], ...], scores exact. */
static char *ranking_json(const adb_decision *d) {
  adb__sbuf b = {0};
  adb__sbuf_add(&b, "[", 1);
  for (int i = 0; i < d->n_ranking; i++) {
    adb__sbuf_add(&b, i ? ",[" : "[", i ? 2 : 1);
    adb__sbuf_json_str(&b, d->ranking[i].action);
    adb__sbuf_printf(&b, ",%.17g]", d->ranking[i].score);
  }
  adb__sbuf_add(&b, "]", 1);
  return adb__sbuf_take(&b);
}

/* Queues the decision for the log. One with a client event id may repeat
 * (a retry): it is waited for, and ADB_ECONFLICT says the id was taken
 * first by another decision, which stays the decision of the event. */
static int log_decision(adb *db, adb__agent *a, const adb_decide_req *req,
                        const uint32_t *clen, const adb_decision *d,
                        const adb__policy_model *pm, const uint8_t *features,
                        int n_features) {
  const char *s[5] = {a->cfg.id, d->event_id, req->user_id, d->state_key,
                      d->action};
  size_t sl[5], len = raw_len(req, clen) + (size_t)n_features;
  for (int i = 0; i < 5; i++)
    len += sl[i] = strlen(s[i]) + 1;
  size_t size = offsetof(adb__item, u) + sizeof(adb__decision_log) + len;
  adb__item *it = adb__slab_alloc(size);
  int slab = it != NULL;
  if (!it && !(it = malloc(size)))
    return adb__fail(db, ADB_ENOMEM, "out of memory");
  memset(it, 0, offsetof(adb__item, u));
  it->slab = slab;
  adb__decision_log *g = adb__item_decision(it);
  char *p = g->text;
  for (int i = 0; i < 5; i++) {
    memcpy(p, s[i], sl[i]);
    p += sl[i];
  }
  if (n_features > 0) memcpy(p, features, (size_t)n_features);
  it->raw = p + n_features;
  raw_fill(req, clen, it->raw);
  it->kind = ITEM_DECISION;
  it->raw_ctx = req->n_context;
  it->raw_cands = req->n_candidates;
  g->propensity = d->propensity;
  g->ts_ms = adb__clock_ms(db);
  g->model = pm->model_tag;
  g->n_features = n_features;
  g->client_id = req->event_id != NULL;
  g->ranking_json = NULL;
  if (g->client_id && !(g->ranking_json = ranking_json(d))) {
    adb__item_free(it);
    return adb__fail(db, ADB_ENOMEM, "out of memory");
  }
  return adb__enqueue(db, it, g->client_id, NULL);
}

/* Fills out from a stored ranking; without one (a decision logged before
 * rankings were kept), the chosen action alone. */
static void ranking_from_json(const char *text, adb_decision *out) {
  json_t *arr = text ? json_loads(text, 0, NULL) : NULL;
  out->n_ranking = 0;
  for (size_t i = 0; out->ranking && i < json_array_size(arr) &&
                     out->n_ranking < out->ranking_cap;
       i++) {
    json_t *e = json_array_get(arr, i);
    const char *act = json_string_value(json_array_get(e, 0));
    if (!act || !json_is_number(json_array_get(e, 1))) continue;
    adb_ranked *r = &out->ranking[out->n_ranking++];
    snprintf(r->action, sizeof r->action, "%s", act);
    r->score = json_number_value(json_array_get(e, 1));
  }
  json_decref(arr);
  if (!out->n_ranking && out->ranking && out->ranking_cap > 0) {
    snprintf(out->ranking[0].action, sizeof out->ranking[0].action, "%s",
             out->action);
    out->ranking[0].score = 0;
    out->n_ranking = 1;
  }
}

/* The stored decision of the request's event id, if there is one: *found
 * is 1 and out holds it (a retried decide answers what was answered). An
 * event id of another user's decision is a conflict. */
static int stored_decision(adb *db, adb__agent *a, const adb_decide_req *req,
                           adb_decision *out, int *found) {
  adb__decision_rec d = {0};
  *found = 0;
  int rc = db->store->m->decision_get(db->store, a->cfg.id, req->event_id, &d);
  if (rc == ADB_ENOTFOUND) return ADB_OK;
  if (rc)
    return adb__fail(db, rc, "looking up event '%s': %s", req->event_id,
                     adb__store_errmsg(db->store));
  if (strcmp(d.user, req->user_id)) {
    adb__decision_rec_free(&d);
    return adb__fail(db, ADB_ECONFLICT,
                     "event_id '%s' is already the decision of another user",
                     req->event_id);
  }
  snprintf(out->event_id, sizeof out->event_id, "%s", req->event_id);
  snprintf(out->action, sizeof out->action, "%s", d.action);
  memcpy(out->state_key, d.state_key, sizeof out->state_key);
  out->propensity = d.propensity;
  ranking_from_json(d.ranking_json, out);
  adb__decision_rec_free(&d);
  *found = 1;
  return ADB_OK;
}

static void record_latency(adb__agent *a, int64_t ns, int hits) {
  int64_t us = ns / 1000;
  int b = us <= 1 ? 0 : 63 - __builtin_clzll((unsigned long long)us);
  if (b >= ADB_LAT_BUCKETS) b = ADB_LAT_BUCKETS - 1;
  atomic_fetch_add(&a->stats->lat[b], 1);
  atomic_fetch_add(&a->stats->decisions, 1);
  atomic_fetch_add(&a->stats->cache_hits, hits);
  atomic_fetch_add(&a->stats->cache_misses, 2 - hits);
}

/* Thompson selection and ranking over the candidates' posteriors. */
static void choose(adb *db, adb__agent *a, const adb_decide_req *req,
                   const adb__arm_stats *stats, const adb__cands *c,
                   adb_decision *out) {
  const uint8_t *eligible = c->eligible;
  int n = req->n_candidates;
  adb__posterior post[n];
  double scores[n];
  adb__posteriors_make(&a->cfg, n, stats, stats + n, post);
  adb__rng *rng = adb__rng_for(db);
  int best = adb__thompson_select(rng, post, n, eligible, scores);
  copy_str(out->action, sizeof out->action, req->candidates[best]);
  /* The chosen action was possible: never log a zero propensity (the
   * integration may round one below 1e-6 to 0), since off-policy
   * estimators divide by it. */
  out->propensity = fmax(adb__propensity(post, n, eligible, best), 1e-6);
  out->n_ranking = 0;
  int k = req->k ? req->k : 1;
  if (k > c->n_eligible) k = c->n_eligible;
  if (k > out->ranking_cap) k = out->ranking_cap;
  if (out->ranking && k > 0) {
    int idx[k];
    int m = adb__rank_topk(scores, n, k, idx);
    for (int i = 0; i < m; i++) {
      copy_str(out->ranking[i].action, sizeof out->ranking[i].action,
               req->candidates[idx[i]]);
      out->ranking[i].score = adb__score_of(&post[idx[i]], scores[idx[i]]);
    }
    out->n_ranking = m;
  }
}

/* True when the user has no observation of any candidate in this state. */
static int cold_user(const adb__arm_stats *stats, int n) {
  for (int i = 0; i < n; i++)
    if (stats[i].n > 0) return 0;
  return 1;
}

/* Cold start: a user with no observations here borrows, in place of the
 * agent-wide ('*') statistics, the sum of the statistics of its nearest
 * users (by the request's embedding, else by its own stored state) in the
 * same state; adb__posterior_make still caps what is borrowed at the
 * agent's fallback_strength. Without neighbours, or when they have no
 * observations of these candidates, '*' stays. Only cold users pay for
 * the search; a failure of it leaves '*' too. */
static int cold_start(adb *db, adb__agent *a, const adb_decide_req *req,
                      const adb__cands *c, const adb_decision *out,
                      adb__arm_stats *stats) {
  int k = db->cfg.cold_start_k ? db->cfg.cold_start_k : 10;
  if (k < 0 || !db->mem) return ADB_OK;
  if (k > 100) k = 100;
  char ids[100][ADB_ID_MAX + 1];
  int nn = adb__memory_neighbours(db->mem, req->user_id, req->embedding,
                                  req->embedding_dim, k, ids);
  if (nn <= 0) return ADB_OK;
  int n = req->n_candidates, hits = 0;
  adb__arm_stats sum[n], nb[2 * n];
  memset(sum, 0, sizeof sum);
  int64_t total = 0;
  for (int j = 0; j < nn; j++) {
    if (adb__policy_read(db, a->cfg.id, ids[j], out->state_key, &c->ids, nb,
                         &hits) != ADB_OK)
      continue;
    for (int i = 0; i < n; i++) {
      sum[i].n += nb[i].n;
      sum[i].sum_micro += nb[i].sum_micro;
      sum[i].sum_sq += nb[i].sum_sq;
      total += nb[i].n;
    }
  }
  if (total > 0) memcpy(stats + n, sum, sizeof sum);
  return ADB_OK;
}

/* The tabular models: the posteriors of the candidates for the user (and
 * the agent-wide or neighbours' fallback), Thompson sampling over them. */
static int tabular_decide(adb *db, adb__agent *a, const adb_decide_req *req,
                          const adb__cands *c, adb_decision *out,
                          uint8_t features[], int *n_features, int *hits) {
  int n = req->n_candidates;
  adb__arm_stats stats[2 * n];
  (void)features;
  *n_features = 0;
  int rc = adb__policy_read(db, a->cfg.id, req->user_id, out->state_key,
                            &c->ids, stats, hits);
  if (rc == ADB_OK && cold_user(stats, n))
    rc = cold_start(db, a, req, c, out, stats);
  if (rc == ADB_OK) choose(db, a, req, stats, c, out);
  return rc;
}

static const adb__policy_model policy_beta = {
    .name = "beta-ts", .model_tag = "beta-ts/1", .decide = tabular_decide};
static const adb__policy_model policy_gaussian = {.name = "gaussian-ts",
                                                  .model_tag = "gaussian-ts/1",
                                                  .decide = tabular_decide};

const adb__policy_model *adb__policy_model_of(adb_algorithm algo) {
  if (algo == ADB_ALGO_LINEAR) return &adb__policy_linear;
  return algo == ADB_ALGO_GAUSSIAN ? &policy_gaussian : &policy_beta;
}

int adb_decide(adb *db, const adb_decide_req *req, adb_decision *out) {
  int64_t t0 = adb__mono_ns();
  int rc = check_request(db, req);
  adb__agent *a = NULL;
  if (rc == ADB_OK) rc = adb__agent_acquire(db, req->agent_id, &a);
  if (rc) return rc;
  int n = req->n_candidates, n_eligible = 0, hits = 0, found = 0;
  if (req->event_id) {
    rc = stored_decision(db, a, req, out, &found);
    if (rc || found) {
      adb__agent_release(a);
      return rc;
    }
  }
  uint8_t eligible[n];
  uint32_t clen[n];
  uint64_t chash[n];
  rc = check_candidates(db, a, req, eligible, &n_eligible, clen, chash);
  if (rc == ADB_OK && n_eligible == 0)
    rc =
        adb__fail(db, ADB_EINVAL,
                  "no candidate is an enabled action of agent '%s'", a->cfg.id);
  if (rc == ADB_OK && req->embedding)
    rc = adb__check_embedding(db, a, req->embedding, req->embedding_dim);
  if (rc == ADB_OK && a->cfg.simhash_bits && !req->embedding)
    rc = adb__fail(db, ADB_EINVAL,
                   "agent '%s' keys states by embedding: embedding required",
                   a->cfg.id);
  if (rc == ADB_OK &&
      adb__state_key(a->cfg.context_keys, a->cfg.n_context_keys, req->context,
                     req->n_context, req->embedding, req->embedding_dim,
                     a->cfg.simhash_bits, out->state_key) != ADB_OK)
    rc = adb__fail(db, ADB_EINVAL, "cannot compute the state key");
  const adb__policy_model *pm = adb__policy_model_of(a->cfg.algorithm);
  uint8_t features[ADB__FEATURES_MAX];
  int n_features = 0;
  if (rc == ADB_OK)
    rc = pm->decide(db, a, req,
                    &(adb__cands){.ids = {n, req->candidates, clen, chash},
                                  .eligible = eligible,
                                  .n_eligible = n_eligible},
                    out, features, &n_features, &hits);
  if (rc == ADB_OK && req->embedding)
    rc = adb__fix_embedding_dim(db, a, req->embedding_dim);
  if (rc == ADB_OK) {
    if (req->event_id)
      snprintf(out->event_id, sizeof out->event_id, "%s", req->event_id);
    else
      new_event_id(out->event_id);
    rc = log_decision(db, a, req, clen, out, pm, features, n_features);
    /* Another decide with this event id was stored first (a concurrent
     * retry, here or on another replica): answer that one. */
    if (rc == ADB_ECONFLICT && req->event_id) {
      rc = stored_decision(db, a, req, out, &found);
      if (!rc && !found)
        rc = adb__fail(db, ADB_ESTORE, "event '%s' taken but not found",
                       req->event_id);
    }
  }
  if (rc == ADB_OK) {
    atomic_fetch_add(&db->st_decisions, 1);
    record_latency(a, adb__mono_ns() - t0, hits);
  }
  adb__agent_release(a);
  return rc;
}
