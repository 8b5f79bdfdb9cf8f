/*
 * policy_linear.c — linear agents in a running handle: decisions from a
 * pool of posterior draws, and a model that is a pure function of the
 * applied rewards, kept current on every replica.
 *
 * Design
 * ------
 * The model (linear.c) is a set of sums, A and b, of per-reward increments.
 * So it is defined by the set of rewards applied, and the guarantees of the
 * tables carry over if that set is what the store says it is:
 *
 *  - Features are logged with the decision. A linear decision writes the
 *    features it used (user, action and context vectors, linear.h
 *    ADB_LIN_BLOB) into decision_features, in the decision's batch. A
 *    reward's update is computed from those, never from the world as it is
 *    when the reward arrives (a catalogue or user state may have changed),
 *    and the log can be replayed.
 *  - The reward row is the exactly-once unit. A trigger on reward_signals
 *    (migration 0003) copies each newly inserted reward of a decision with
 *    features into linear_rewards, in the reward's own transaction; the
 *    write path already inserts a reward row once per reward id (ON
 *    CONFLICT DO NOTHING) and commits it with the acknowledgement (sync
 *    durability). So linear_rewards holds each acknowledged reward exactly
 *    once, and nothing unacknowledged survives a crash that rolls its batch
 *    back. No C write path changed for rewards.
 *  - Every replica, this one included, folds linear_rewards into its
 *    in-memory sums by a catch-up scan (the model thread, every
 *    LIN_TICK_MS), so one code path applies a reward to every model, and
 *    a reward acknowledged anywhere is in every replica's model one tick
 *    (plus a pool draw) later. The scan must not miss a row: in SQLite one
 *    writer commits at a time, so seq order is commit order and "seq >
 *    the last seq applied" is exact. In PostgreSQL a sequence is not commit
 *    order (seq 6 may commit before seq 5), so the scan reads the rows whose
 *    transaction id is >= the xmin of the previous scan's snapshot (every
 *    lower xid had committed or aborted by then), and skips the seqs it
 *    already applied among them (kept until their xid falls below a later
 *    snapshot's xmin). Nothing is missed, nothing applied twice.
 *  - Checkpoints. Every LIN_CKPT_MS (or LIN_CKPT_N rewards) a replica saves
 *    its sums with the watermark they include (after_seq, min_xid and the
 *    seqs seen above it) in linear_checkpoints; a starting replica loads it
 *    and scans only the later rewards. Any replica's checkpoint is valid,
 *    being an exact pair (sums, set of rewards in them). A checkpoint of
 *    other settings (crosses, lambda, v, half-life) is ignored: the model
 *    is rebuilt from all rewards with the new feature map, since the logged
 *    features are the inputs, not the crossed vector.
 *
 * Decisions never take the model's lock: they read the current pool (an
 * immutable set of posterior draws, linear.c) and the action embeddings
 * (an immutable map) by reference. The model thread draws a new pool when
 * the model has changed, at most every LIN_TICK_MS (about 15 ms of one core
 * for 20 arms and the default crosses). The first decision of an agent on
 * a handle loads the model (checkpoint plus the rewards after it) before it
 * answers.
 *
 * Decay (decay_half_life_s, off by default) ages a reward by the time its
 * handle stamped it with (reward_signals.created_at_ms, copied into
 * linear_rewards) against the time a pool is drawn, both on the handle's
 * clock (adb_config.clock_ms, else the system clock): a simulation that
 * runs faster than real time gives the handle its own clock, and decay
 * acts on it exactly as on real time.
 *
 * The user vector is the request's embedding, else the user's stored state
 * (a store read per decision: send the embedding to avoid it), else zeros;
 * the context vector is built from the agent's context keys only.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator.h"
#include "linear.h"
#include "policy.h"

#define LIN_TICK_MS 100
#define LIN_CKPT_MS 30000
#define LIN_CKPT_N 50000
#define LIN_ACTS_MS 5000

typedef struct seen_ent {
  int64_t seq;
  uint64_t xid;
} seen_ent;

/* Projected action embeddings: immutable once published. */
typedef struct acts {
  _Atomic int refs;
  adb__strmap map; /* id -> float[ADB_LIN_P] */
} acts;

typedef struct lin_agent {
  char id[ADB_ID_MAX + 1];
  pthread_mutex_t mu; /* the model and its watermark */
  int loaded;
  char config[128];
  adb__lin_model m;
  int64_t after_seq;
  uint64_t min_xid;
  seen_ent *seen;
  int n_seen, cap_seen;
  int64_t pool_n, ckpt_n, ckpt_ms, acts_ms;
  adb__rng rng;
  pthread_mutex_t pmu; /* the published pool and actions */
  adb__lin_pool *pool;
  acts *acts;
} lin_agent;

struct adb__linear {
  adb *db;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  adb__strmap agents; /* id -> lin_agent* */
  int stop;
  pthread_t thr;
};

static pthread_mutex_t create_mu = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------- helpers */

static void acts_unref(acts *a) {
  if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
    adb__strmap_free(&a->map, free);
    free(a);
  }
}

static void cfg_of(const adb_agent_config *c, adb__lin_cfg *lc, char *key,
                   size_t n) {
  memset(lc, 0, sizeof *lc);
  lc->crosses = c->linear_crosses;
  lc->lambda = c->linear_lambda;
  lc->v = c->linear_v;
  lc->half_life_s = c->decay_half_life_s;
  adb__lin_model tmp; /* defaults applied as the model applies them */
  if (adb__lin_init(&tmp, lc) == ADB_OK) *lc = tmp.cfg;
  adb__lin_free(&tmp);
  snprintf(key, n, "v1 c%d l%.17g v%.17g h%.17g p%d", lc->crosses, lc->lambda,
           lc->v, lc->half_life_s, lc->pool);
}

static void seen_clear(lin_agent *la) {
  free(la->seen);
  la->seen = NULL;
  la->n_seen = la->cap_seen = 0;
}

static int seen_has(const lin_agent *la, int n_old, int64_t seq) {
  int lo = 0, hi = n_old;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (la->seen[mid].seq < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n_old && la->seen[lo].seq == seq;
}

static int seen_add(lin_agent *la, int64_t seq, uint64_t xid) {
  if (la->n_seen == la->cap_seen) {
    int cap = la->cap_seen ? 2 * la->cap_seen : 64;
    seen_ent *s = realloc(la->seen, (size_t)cap * sizeof *s);
    if (!s) return ADB_ENOMEM;
    la->seen = s;
    la->cap_seen = cap;
  }
  la->seen[la->n_seen++] = (seen_ent){seq, xid};
  return ADB_OK;
}

static int seen_cmp(const void *a, const void *b) {
  int64_t x = ((const seen_ent *)a)->seq, y = ((const seen_ent *)b)->seq;
  return (x > y) - (x < y);
}

/* Keeps the seqs whose xid may still be returned by a scan from xmin. */
static void seen_prune(lin_agent *la, uint64_t xmin) {
  int k = 0;
  for (int i = 0; i < la->n_seen; i++)
    if (la->seen[i].xid >= xmin) la->seen[k++] = la->seen[i];
  la->n_seen = k;
  if (k > 1) qsort(la->seen, (size_t)k, sizeof *la->seen, seen_cmp);
}

/* ------------------------------------------------------------ catch-up */

typedef struct scan_arg {
  lin_agent *la;
  adb__lin_batch *batch; /* the rows of a scan are folded in together */
  int n_old;
  int64_t applied;
} scan_arg;

static int scan_row(void *arg, const adb__lin_row *row) {
  scan_arg *x = arg;
  lin_agent *la = x->la;
  if (seen_has(la, x->n_old, row->seq)) return ADB_OK;
  adb__lin_x feat;
  if (adb__lin_blob_read(row->features, row->n_features, &feat) != ADB_OK) {
    fprintf(stderr,
            "agentdb: linear agent '%s': reward '%s' has malformed "
            "features; skipped\n",
            la->id, row->reward_id);
  } else {
    int rc = adb__lin_batch_add(x->batch, row->action, &feat, row->reward,
                                (double)row->ts_ms / 1000.0);
    if (rc == ADB_ENOMEM) return rc;
  }
  if (row->seq > la->after_seq) la->after_seq = row->seq;
  x->applied++;
  return seen_add(la, row->seq, row->xid);
}

/* Folds in the rewards applied since the watermark (la->mu held). */
static int catch_up(adb *db, lin_agent *la, int64_t *applied) {
  scan_arg x = {la, adb__lin_batch_new(&la->m), la->n_seen, 0};
  uint64_t snap = 0;
  if (!x.batch) return ADB_ENOMEM;
  int rc = db->store->m->lin_scan(db->store, la->id, la->after_seq, la->min_xid,
                                  &snap, scan_row, &x);
  int frc = adb__lin_batch_flush(x.batch);
  adb__lin_batch_free(x.batch);
  if (frc) rc = frc;
  if (rc == ADB_ENOMEM)
    la->loaded = 0; /* rows marked applied may be
                      missing: rebuild the model */
  if (rc == ADB_OK && snap > la->min_xid) la->min_xid = snap;
  seen_prune(la, la->min_xid);
  if (applied) *applied = x.applied;
  return rc;
}

/* ------------------------------------------------------- model lifecycle */

static int ckpt_load(adb *db, lin_agent *la) {
  adb__lin_ckpt k;
  int rc = db->store->m->lin_checkpoint_get(db->store, la->id, &k);
  if (rc) return rc;
  rc = strcmp(k.config, la->config) ? ADB_ENOTFOUND : ADB_OK;
  if (!rc) rc = adb__lin_load(&la->m, k.state, k.n_state);
  int n = (int)(k.n_seen_bytes / sizeof(seen_ent));
  for (int i = 0; !rc && i < n; i++) {
    seen_ent e;
    memcpy(&e, (const char *)k.seen + (size_t)i * sizeof e, sizeof e);
    rc = seen_add(la, e.seq, e.xid);
  }
  if (!rc) {
    la->after_seq = k.after_seq;
    la->min_xid = k.min_xid;
    la->ckpt_n = la->m.n;
    if (la->n_seen > 1)
      qsort(la->seen, (size_t)la->n_seen, sizeof *la->seen, seen_cmp);
  }
  free(k.seen);
  free(k.state);
  return rc;
}

static int ckpt_save(adb *db, lin_agent *la) {
  adb__sbuf b = {0};
  int rc = adb__lin_save(&la->m, &b);
  adb__lin_ckpt k = {.n = la->m.n,
                     .after_seq = la->after_seq,
                     .min_xid = la->min_xid,
                     .seen = la->seen,
                     .n_seen_bytes = (size_t)la->n_seen * sizeof(seen_ent),
                     .state = b.p,
                     .n_state = b.len};
  snprintf(k.config, sizeof k.config, "%s", la->config);
  if (!rc) rc = db->store->m->lin_checkpoint_put(db->store, la->id, &k);
  free(b.p);
  if (!rc) {
    la->ckpt_n = la->m.n;
    la->ckpt_ms = adb__now_ms();
  }
  return rc;
}

/* (Re)builds the model for these settings: checkpoint, then catch-up. */
static int model_load(adb *db, lin_agent *la, const adb_agent_config *c) {
  adb__lin_cfg lc;
  char key[128];
  cfg_of(c, &lc, key, sizeof key);
  adb__lin_free(&la->m);
  seen_clear(la);
  la->after_seq = 0;
  la->min_xid = 0;
  la->ckpt_n = 0;
  la->ckpt_ms = adb__now_ms();
  la->pool_n = -1;
  snprintf(la->config, sizeof la->config, "%s", key);
  int rc = adb__lin_init(&la->m, &lc);
  if (rc) return rc;
  rc = ckpt_load(db, la);
  if (rc != ADB_OK) { /* none, stale or unreadable: from the start */
    adb__lin_free(&la->m);
    seen_clear(la);
    la->after_seq = 0;
    la->min_xid = 0;
    la->ckpt_n = 0;
    if ((rc = adb__lin_init(&la->m, &lc))) return rc;
  }
  rc = catch_up(db, la, NULL);
  if (rc == ADB_OK) la->loaded = 1;
  return rc;
}

static void publish_pool(lin_agent *la, adb__lin_pool *p) {
  pthread_mutex_lock(&la->pmu);
  adb__lin_pool *old = la->pool;
  la->pool = p;
  pthread_mutex_unlock(&la->pmu);
  adb__lin_pool_unref(old);
}

/* The posterior at the handle's clock (decay ages rewards against it). */
static int draw_pool(adb *db, lin_agent *la) {
  adb__lin_pool *p = adb__lin_pool_make(
      &la->m, (double)adb__clock_ms(db) / 1000.0, &la->rng, -1);
  if (!p) return ADB_ENOMEM;
  la->pool_n = la->m.n;
  publish_pool(la, p);
  return ADB_OK;
}

static void act_add(void *arg, const char *id, const float *v, int dim) {
  acts *a = arg;
  float *e = malloc(ADB_LIN_P * sizeof *e);
  if (!e) return;
  adb__lin_project(v, dim, e);
  if (adb__strmap_put(&a->map, id, e)) free(e);
}

static int load_acts(adb *db, lin_agent *la) {
  acts *a = calloc(1, sizeof *a);
  if (!a) return ADB_ENOMEM;
  a->refs = 1;
  int rc = db->store->m->action_vectors(db->store, la->id, act_add, a);
  if (rc) {
    acts_unref(a);
    return rc;
  }
  pthread_mutex_lock(&la->pmu);
  acts *old = la->acts;
  la->acts = a;
  pthread_mutex_unlock(&la->pmu);
  acts_unref(old);
  la->acts_ms = adb__now_ms();
  return ADB_OK;
}

/* One round of upkeep of an agent (la->mu held). */
static void agent_tick(adb *db, lin_agent *la, const adb_agent_config *c,
                       int force_acts) {
  adb__lin_cfg lc;
  char key[128];
  cfg_of(c, &lc, key, sizeof key);
  int rc = ADB_OK;
  if (!la->loaded || strcmp(key, la->config))
    rc = model_load(db, la, c);
  else
    rc = catch_up(db, la, NULL);
  int64_t now = adb__now_ms();
  if (rc == ADB_OK && la->m.n != la->pool_n) rc = draw_pool(db, la);
  if (force_acts || now - la->acts_ms >= LIN_ACTS_MS) load_acts(db, la);
  if (rc == ADB_OK && la->m.n != la->ckpt_n &&
      (la->m.n - la->ckpt_n >= LIN_CKPT_N || now - la->ckpt_ms >= LIN_CKPT_MS))
    rc = ckpt_save(db, la);
  if (rc && rc != ADB_ENOTFOUND)
    fprintf(stderr, "agentdb: linear agent '%s': %s: %s\n", la->id,
            adb_err_name(rc), adb__store_errmsg(db->store));
}

/* ---------------------------------------------------------- model thread */

static void tick_all(adb__linear *l) {
  pthread_mutex_lock(&l->mu);
  int n = 0;
  lin_agent **list = malloc((l->agents.len + 1) * sizeof *list);
  for (size_t i = 0; list && i < l->agents.cap; i++)
    if (l->agents.slots[i].key) list[n++] = l->agents.slots[i].val;
  pthread_mutex_unlock(&l->mu);
  for (int i = 0; i < n; i++) {
    adb__agent *a = NULL;
    if (adb__agent_acquire(l->db, list[i]->id, &a) != ADB_OK) continue;
    pthread_mutex_lock(&list[i]->mu);
    agent_tick(l->db, list[i], &a->cfg, 0);
    pthread_mutex_unlock(&list[i]->mu);
    adb__agent_release(a);
  }
  free(list);
}

static void *model_thread(void *arg) {
  adb__linear *l = arg;
  pthread_setname_np(pthread_self(), "adb-linear");
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    int64_t ns = dl.tv_nsec + (int64_t)LIN_TICK_MS * 1000000;
    dl.tv_sec += ns / 1000000000;
    dl.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&l->cv, &l->mu, &dl);
    if (l->stop) break;
    pthread_mutex_unlock(&l->mu);
    tick_all(l);
    pthread_mutex_lock(&l->mu);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void agent_free(void *p) {
  lin_agent *la = p;
  adb__lin_free(&la->m);
  seen_clear(la);
  adb__lin_pool_unref(la->pool);
  acts_unref(la->acts);
  pthread_mutex_destroy(&la->mu);
  pthread_mutex_destroy(&la->pmu);
  free(la);
}

void adb__linear_close(adb__linear *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->thr, NULL);
  adb__strmap_free(&l->agents, agent_free);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
  free(l);
}

static adb__linear *linear_of(adb *db) {
  adb__linear *l = atomic_load(&db->lin);
  if (l) return l;
  pthread_mutex_lock(&create_mu);
  if (!(l = atomic_load(&db->lin)) && (l = calloc(1, sizeof *l))) {
    l->db = db;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thr, NULL, model_thread, l)) {
      pthread_mutex_destroy(&l->mu);
      pthread_cond_destroy(&l->cv);
      free(l);
      l = NULL;
    } else {
      atomic_store(&db->lin, l);
    }
  }
  pthread_mutex_unlock(&create_mu);
  return l;
}

/* The agent's model on this handle, loaded (the first call loads it). */
static int agent_of(adb *db, adb__agent *a, lin_agent **out) {
  adb__linear *l = linear_of(db);
  if (!l) return adb__fail(db, ADB_ENOMEM, "out of memory");
  pthread_mutex_lock(&l->mu);
  lin_agent *la = adb__strmap_get(&l->agents, a->cfg.id);
  if (!la && (la = calloc(1, sizeof *la))) {
    snprintf(la->id, sizeof la->id, "%s", a->cfg.id);
    pthread_mutex_init(&la->mu, NULL);
    pthread_mutex_init(&la->pmu, NULL);
    adb__rng_seed(&la->rng, db->cfg.seed ^ adb__hash64(la->id, strlen(la->id)));
    if (adb__strmap_put(&l->agents, la->id, la)) {
      agent_free(la);
      la = NULL;
    }
  }
  pthread_mutex_unlock(&l->mu);
  if (!la) return adb__fail(db, ADB_ENOMEM, "out of memory");
  pthread_mutex_lock(&la->pmu);
  int ready = la->pool != NULL;
  pthread_mutex_unlock(&la->pmu);
  int rc = ADB_OK;
  if (!ready) {
    pthread_mutex_lock(&la->mu);
    pthread_mutex_lock(&la->pmu);
    ready = la->pool != NULL;
    pthread_mutex_unlock(&la->pmu);
    if (!ready) agent_tick(db, la, &a->cfg, 1);
    pthread_mutex_lock(&la->pmu);
    ready = la->pool != NULL;
    pthread_mutex_unlock(&la->pmu);
    pthread_mutex_unlock(&la->mu);
    if (!ready) rc = ADB_ESTORE;
  }
  if (rc)
    return adb__fail(db, rc, "loading the linear model of '%s': %s", la->id,
                     adb__store_errmsg(db->store));
  *out = la;
  return ADB_OK;
}

static int with_model(adb *db, const char *agent_id,
                      int (*fn)(adb *db, lin_agent *la, void *arg), void *arg) {
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a);
  if (rc) return rc;
  lin_agent *la = NULL;
  rc = agent_of(db, a, &la);
  if (rc == ADB_OK) {
    pthread_mutex_lock(&la->mu);
    agent_tick(db, la, &a->cfg, 1);
    rc = fn ? fn(db, la, arg) : ADB_OK;
    pthread_mutex_unlock(&la->mu);
  }
  adb__agent_release(a);
  return rc;
}

int adb__linear_sync(adb *db, const char *agent_id) {
  return with_model(db, agent_id, NULL, NULL);
}

typedef struct post_arg {
  double now_s, *mean;
  int cap, *k;
  int64_t *n;
} post_arg;

static int post_fn(adb *db, lin_agent *la, void *arg) {
  post_arg *x = arg;
  (void)db;
  *x->k = la->m.k;
  *x->n = la->m.n;
  double *m = malloc((size_t)la->m.k * sizeof *m);
  if (!m) return ADB_ENOMEM;
  int rc = adb__lin_posterior(&la->m, x->now_s, m, NULL, NULL, NULL);
  if (!rc)
    memcpy(x->mean, m,
           (size_t)(x->cap < la->m.k ? x->cap : la->m.k) * sizeof *m);
  free(m);
  return rc;
}

int adb__linear_posterior(adb *db, const char *agent_id, double now_s,
                          double *mean, int cap, int *k, int64_t *n) {
  post_arg x = {now_s, mean, cap, k, n};
  return with_model(db, agent_id, post_fn, &x);
}

int adb__linear_pool_n(adb *db, const char *agent_id, int64_t *n) {
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a);
  if (rc) return rc;
  lin_agent *la = NULL;
  rc = agent_of(db, a, &la);
  if (rc == ADB_OK) {
    pthread_mutex_lock(&la->pmu);
    *n = la->pool ? la->pool->n : -1;
    pthread_mutex_unlock(&la->pmu);
  }
  adb__agent_release(a);
  return rc;
}

static int ckpt_fn(adb *db, lin_agent *la, void *arg) {
  (void)arg;
  return ckpt_save(db, la);
}

int adb__linear_checkpoint(adb *db, const char *agent_id) {
  return with_model(db, agent_id, ckpt_fn, NULL);
}

/* -------------------------------------------------------------- decide */

/* The user vector: the request's embedding, else the stored state. */
static void user_vector(adb *db, const adb_decide_req *req, float *u) {
  if (req->embedding) {
    adb__lin_project(req->embedding, req->embedding_dim, u);
    return;
  }
  adb__user_state_rec s = {0};
  if (db->store->m->user_state_get(db->store, req->user_id, &s) == ADB_OK)
    adb__lin_project(s.embedding, s.dim, u);
  else
    memset(u, 0, ADB_LIN_P * sizeof *u);
  adb__user_state_rec_free(&s);
}

/* The context vector over the agent's context keys. */
static void context_vector(const adb__agent *a, const adb_decide_req *req,
                           float *c) {
  const char *keys[ADB_MAX_CONTEXT_KEYS], *vals[ADB_MAX_CONTEXT_KEYS];
  int n = 0;
  for (int k = 0; k < a->cfg.n_context_keys; k++)
    for (int i = 0; i < req->n_context; i++)
      if (!strcmp(req->context[i].key, a->cfg.context_keys[k])) {
        keys[n] = a->cfg.context_keys[k];
        vals[n++] = req->context[i].value;
        break;
      }
  adb__lin_context(keys, vals, n, c);
}

static void fill_ranking(const adb_decide_req *req, const double *scores,
                         int n_eligible, adb_decision *out) {
  int n = req->n_candidates, k = req->k ? req->k : 1;
  out->n_ranking = 0;
  if (k > n_eligible) k = n_eligible;
  if (k > out->ranking_cap) k = out->ranking_cap;
  if (!out->ranking || k <= 0) return;
  int idx[k];
  int m = adb__rank_topk(scores, n, k, idx);
  for (int i = 0; i < m; i++) {
    snprintf(out->ranking[i].action, sizeof out->ranking[i].action, "%s",
             req->candidates[idx[i]]);
    out->ranking[i].score = scores[idx[i]];
  }
  out->n_ranking = m;
}

static int linear_decide(adb *db, adb__agent *a, const adb_decide_req *req,
                         const adb__cands *cands, adb_decision *out,
                         uint8_t features[], int *n_features, int *hits) {
  lin_agent *la;
  int rc = agent_of(db, a, &la), n = req->n_candidates;
  if (rc) return rc;
  pthread_mutex_lock(&la->pmu);
  adb__lin_pool *pool = la->pool;
  acts *ac = la->acts;
  atomic_fetch_add(&pool->refs, 1);
  if (ac) atomic_fetch_add(&ac->refs, 1);
  pthread_mutex_unlock(&la->pmu);
  adb__lin_x x;
  user_vector(db, req, x.u);
  context_vector(a, req, x.c);
  float(*e)[ADB_LIN_P] = malloc((size_t)n * sizeof *e);
  double *scores = malloc((size_t)n * sizeof *scores);
  int chosen = -1;
  double prop = 0;
  if (e && scores) {
    for (int i = 0; i < n; i++) {
      const float *v =
          !ac            ? NULL
          : cands->ids.h ? adb__strmap_get_h(&ac->map, req->candidates[i],
                                             cands->ids.len[i], cands->ids.h[i])
                         : adb__strmap_get(&ac->map, req->candidates[i]);
      if (v)
        memcpy(e[i], v, sizeof e[i]);
      else
        memset(e[i], 0, sizeof e[i]);
    }
    chosen = adb__lin_choose(pool, adb__rng_for(db), &x,
                             (const float(*)[ADB_LIN_P])e, req->candidates,
                             cands->eligible, n, scores, &prop);
  }
  if (chosen >= 0) {
    snprintf(out->action, sizeof out->action, "%s", req->candidates[chosen]);
    out->propensity = prop;
    fill_ranking(req, scores, cands->n_eligible, out);
    memcpy(x.e, e[chosen], sizeof x.e);
    adb__lin_blob_write(&x, features);
    *n_features = ADB_LIN_BLOB;
    *hits = 2;
  } else {
    rc = adb__fail(db, ADB_ENOMEM, "out of memory");
  }
  free(e);
  free(scores);
  adb__lin_pool_unref(pool);
  acts_unref(ac);
  return rc;
}

const adb__policy_model adb__policy_linear = {
    .name = "linear-ts",
    .model_tag = "linear-ts/1",
    .decide = linear_decide,
};

/* ---------------------------------------------------------------- view */

static int view_cmp(const void *a, const void *b) {
  return strcmp(((const adb__lin_arm_view *)a)->action,
                ((const adb__lin_arm_view *)b)->action);
}

/* Mean, sd and argmax share of each arm's score over the pool's draws. */
static void view_scores(const adb__lin_pool *p, const adb__lin_x *x,
                        const float (*e)[ADB_LIN_P], const char *const *ids,
                        int n, adb__lin_arm_view *v, double *scores) {
  for (int j = 0; j < p->B; j++) {
    adb__lin_scores(p, j, x, e, ids, n, scores);
    int best = 0;
    for (int a = 0; a < n; a++) {
      v[a].mean += scores[a] / p->B;
      v[a].sd += scores[a] * scores[a] / p->B;
      if (scores[a] > scores[best]) best = a;
    }
    v[best].share += 1.0 / p->B;
  }
  for (int a = 0; a < n; a++)
    v[a].sd = sqrt(fmax(0, v[a].sd - v[a].mean * v[a].mean));
}

int adb__linear_view(adb *db, const char *agent_id, const char *user_id,
                     adb__lin_arm_view **arms, int *n_arms, int64_t *n_rewards,
                     int *k, int *draws) {
  *arms = NULL;
  *n_arms = 0;
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a);
  lin_agent *la = NULL;
  if (!rc) rc = agent_of(db, a, &la);
  if (a) adb__agent_release(a);
  if (rc) return rc;
  pthread_mutex_lock(&la->pmu);
  adb__lin_pool *pool = la->pool;
  acts *ac = la->acts;
  atomic_fetch_add(&pool->refs, 1);
  if (ac) atomic_fetch_add(&ac->refs, 1);
  pthread_mutex_unlock(&la->pmu);
  int n = ac ? (int)ac->map.len : 0;
  adb__lin_arm_view *v = calloc((size_t)n + 1, sizeof *v);
  float(*e)[ADB_LIN_P] = malloc(((size_t)n + 1) * sizeof *e);
  const char **ids = malloc(((size_t)n + 1) * sizeof *ids);
  double *scores = malloc(((size_t)n + 1) * sizeof *scores);
  if (!v || !e || !ids || !scores) {
    rc = adb__fail(db, ADB_ENOMEM, "out of memory");
    n = 0;
  }
  int m = 0;
  for (size_t i = 0; ac && m < n && i < ac->map.cap; i++)
    if (ac->map.slots[i].key) {
      snprintf(v[m].action, sizeof v[m].action, "%s", ac->map.slots[i].key);
      memcpy(e[m], ac->map.slots[i].val, sizeof e[m]);
      m++;
    }
  qsort(v, (size_t)m, sizeof *v, view_cmp);
  for (int i = 0; i < m; i++) {
    ids[i] = v[i].action;
    memcpy(e[i], adb__strmap_get(&ac->map, v[i].action), sizeof e[i]);
  }
  adb_decide_req req = {.user_id = user_id};
  adb__lin_x x;
  user_vector(db, &req, x.u);
  memset(x.c, 0, sizeof x.c);
  if (m > 0)
    view_scores(pool, &x, (const float(*)[ADB_LIN_P])e, ids, m, v, scores);
  pthread_mutex_lock(&la->mu);
  double s = la->m.cfg.half_life_s > 0 && la->m.n
                 ? exp2((la->m.t_ref_s - (double)adb__clock_ms(db) / 1000) /
                        la->m.cfg.half_life_s)
                 : 1;
  for (int i = 0; i < m; i++) {
    void *idx = adb__strmap_get(&la->m.arm_index, v[i].action);
    v[i].n = idx ? s * la->m.arms[(uintptr_t)idx - 1].a : 0;
  }
  *n_rewards = la->m.n;
  *k = la->m.k;
  pthread_mutex_unlock(&la->mu);
  *draws = pool->B;
  adb__lin_pool_unref(pool);
  acts_unref(ac);
  free(e);
  free(ids);
  free(scores);
  if (rc) {
    free(v);
    return rc;
  }
  *arms = v;
  *n_arms = m;
  return ADB_OK;
}
