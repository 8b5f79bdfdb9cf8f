/*
 * coordinator.c — the adb handle: open/close, errors, agents, and the write
 * path (a bounded queue drained by one flush worker).
 *
 * Write path design
 * -----------------
 * Every durable write (decision log, reward, episode) becomes an item in
 * one FIFO queue. A single flush worker takes up to batch_size items at a
 * time — waiting at most flush_interval_ms for a batch to fill once the
 * first item has arrived — and commits them with one store->write_batch
 * call, i.e. one transaction (group commit). The store reports which
 * rewards were new and the resulting posterior changes; the worker applies
 * those to the cache (versioned, see cache.h) BEFORE it wakes the writers,
 * so a decision made after a reward is acknowledged sees it.
 *
 * Sync writers (durability=sync) sleep until their item is done; async
 * writers return at enqueue and the worker frees their items. Waking is
 * not the worker's job: it marks a batch done under the queue mutex and
 * hands the waited items to a waker thread, which posts each writer's own
 * semaphore (or calls the item's completion callback, adb__enqueue_cb)
 * with no lock held, while the worker already commits the next batch. A
 * woken writer thus never queues for the mutex the worker holds, and the
 * wake-ups (a futex call each) stay off the commit path. A writer that
 * times out gives its item to the worker (waited = 0) unless the item is
 * already done; then the waker's post is on its way and is waited for, so
 * that no one touches an item after its owner freed it.
 *
 * Store errors come in two classes (store.h). A temporary one (connection
 * lost, busy, serialization failure, deadlock, disk full) is retried: the
 * worker retries the same batch with exponential backoff (10 ms .. 1 s)
 * while new writes queue up behind it; when queued + in-flight items reach
 * queue_capacity, new writes are refused with ADB_EFULL. A sync writer
 * waiting longer than write_timeout_ms gets ADB_ETIMEDOUT, but its item
 * stays queued and will commit later (a retry under the same reward id is
 * safe: exactly once). A permanent one (a constraint, an encoding, a
 * range: the store will never take these rows) must not wedge the queue:
 * the batch is split in halves, each committed (and split) the same way,
 * so the one record at fault fails alone, its writer gets ADB_ESTORE with
 * the store's message, and every other record commits, after about
 * 2 log2(batch) extra attempts. Strings are checked for UTF-8 at the API so
 * that such records rarely get this far.
 *
 * Ambiguous commits. A PostgreSQL connection can die after COMMIT reached
 * the server: the worker sees a temporary error and retries a batch that
 * may have committed. Each batch carries an id, the same on every retry of
 * it (batch_prefix, random per handle, and a sequence number); the store
 * writes it in the transaction (write_batches, and on each reward_ids and
 * decision_ids row), so a retry that finds it knows the earlier attempt
 * committed: the rewards it inserted are reported applied (their writers
 * get applied:true, the metrics count them once), the posterior rows get a
 * zero increment that bumps their versions so that any cache entry older
 * than the lost commit shows a gap and is dropped (cache.h), and metrics
 * deltas are not added twice.
 *
 * Decisions with a client event id may repeat (a client retrying a
 * decide, on any replica). Such a decide first looks the event up and
 * answers the stored decision (action, propensity, ranking) if there is
 * one; otherwise it draws and waits for the commit of its decision, in
 * either durability mode. The store keeps the first decision of an event
 * id (SQLite: UNIQUE; PostgreSQL: the decision_ids gate), and a decide
 * whose decision lost that race (ADB_ECONFLICT from the worker) answers
 * the stored one instead of its own draw. Decisions with generated ids are
 * unique and stay asynchronous.
 *
 * Rewards before their decision. With several replicas, a reward can
 * reach a replica before the decision it names is visible there (it may
 * still be in the deciding replica's queue). After flushing its own queue,
 * reward.c queues such a reward marked awaiting: the store takes its
 * reward id (so retries and conflicts behave as for any reward) and keeps
 * it in pending_rewards until the end of the agent's reward window. Once a
 * second each worker sweeps (store.h pending_sweep): in one transaction,
 * every awaiting reward whose decision is now stored is moved to the
 * reward log and applied, exactly once whichever replica sweeps, and
 * expired ones are dropped and counted (adb_stats, /metrics).
 *
 * adb_flush waits at most write_timeout_ms. adb_close stops intake, lets
 * the worker drain everything, and gives up only if the store stays down
 * for write_timeout_ms during the drain; then the lost items are reported
 * on stderr and adb_close returns ADB_EUNAVAIL saying how many.
 *
 * The worker also turns each agent's in-memory counters into hourly
 * performance_metrics rows, at most once a second, inside the same
 * batches.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "coordinator.h"
#include "slab.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "policy.h"
#include "statekey.h"

/* ---------------------------------------------------------------- errors */

const char *adb_strerror(int code) {
  switch (code) {
#define ADB__ERR_STR(name, c, msg)                                             \
  case c:                                                                      \
    return msg;
    ADB_ERRNO_MAP(ADB__ERR_STR)
#undef ADB__ERR_STR
  }
  return "unknown error";
}

const char *adb_err_name(int code) {
  switch (code) {
#define ADB__ERR_NAME(name, c, msg)                                            \
  case c:                                                                      \
    return "ADB_" #name;
    ADB_ERRNO_MAP(ADB__ERR_NAME)
#undef ADB__ERR_NAME
  }
  return "ADB_EUNKNOWN";
}

static _Thread_local char tl_errmsg[512];

int adb__fail(adb *db, int code, const char *fmt, ...) {
  (void)db;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tl_errmsg, sizeof tl_errmsg, fmt, ap);
  va_end(ap);
  return code;
}

const char *adb_errmsg(adb *db) {
  (void)db;
  return tl_errmsg[0] ? tl_errmsg : "ok";
}

/* The bytes an id may hold: [A-Za-z0-9._:@-]. */
static const unsigned char id_byte[256] = {
    ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['0' ... '9'] = 1, ['.'] = 1,
    ['_'] = 1,         [':'] = 1,         ['@'] = 1,         ['-'] = 1};

/* The length is checked once at the end (the NUL is not an id byte, so
 * the scan stops there): one table load and test a byte. */
size_t adb__id_len(const char *s) {
  if (!s) return 0;
  const unsigned char *p = (const unsigned char *)s;
  while (id_byte[*p])
    p++;
  size_t n = (size_t)(p - (const unsigned char *)s);
  return *p || n > ADB_ID_MAX ? 0 : n;
}

int adb_id_valid(const char *s) {
  return adb__id_len(s) > 0;
}

int adb__check_id(adb *db, const char *what, const char *id) {
  if (adb_id_valid(id)) return ADB_OK;
  if (!id) return adb__fail(db, ADB_EINVAL, "%s is required", what);
  return adb__fail(db, ADB_EINVAL,
                   "%s must be 1-128 characters of [A-Za-z0-9._:@-]", what);
}

int adb__check_utf8(adb *db, const char *what, const char *s) {
  if (adb__utf8_valid(s)) return ADB_OK;
  return adb__fail(db, ADB_EINVAL, "%s is not valid UTF-8", what);
}

void adb_free(void *p) {
  free(p);
}

/* ------------------------------------------------------------------- rng */

static _Atomic uint64_t next_handle_id = 1;
static _Thread_local adb__rng tl_rng;
static _Thread_local uint64_t tl_rng_handle;

/* With cfg.seed, the first thread of a handle draws exactly the stream of
 * that seed (reproducible runs) and later threads distinct ones. */
adb__rng *adb__rng_for(adb *db) {
  if (tl_rng_handle != db->id) {
    uint64_t k = atomic_fetch_add(&db->rng_threads, 1), seed = db->cfg.seed;
    if (seed == 0 && getrandom(&seed, sizeof seed, 0) != sizeof seed)
      seed = (uint64_t)adb__mono_ns();
    adb__rng_seed(&tl_rng, seed + 0x9E3779B97F4A7C15ULL * k);
    tl_rng_handle = db->id;
  }
  return &tl_rng;
}

/* ---------------------------------------------------------------- agents */

void adb_agent_config_init(adb_agent_config *c) {
  memset(c, 0, sizeof *c);
  c->algorithm = ADB_ALGO_BETA;
  c->prior_alpha = 1;
  c->prior_beta = 1;
  c->prior_mu = 0;
  c->prior_kappa = 1;
  c->prior_a = 1;
  c->prior_b = 1;
  adb__reward_weights_default(&c->reward_weights);
  c->fallback_strength = 10;
  c->reward_window_s = 86400;
  c->default_reward = 0;
  c->linear_crosses = ADB_CROSS_ALL;
  c->linear_lambda = 1;
  c->linear_v = 0.1;
}

void adb__agent_release(adb__agent *a) {
  if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
    adb__strmap_free(&a->catalogue, NULL);
    free(a);
  }
}

static void agent_release_void(void *a) {
  adb__agent_release(a);
}

static void catalogue_add(void *arg, const adb__action_rec *r) {
  adb__agent *a = arg;
  if (adb__strmap_put(&a->catalogue, r->id,
                      (void *)(uintptr_t)(r->disabled ? 2 : 1)))
    a->has_catalogue = -1; /* OOM marker, checked by the loader */
  else if (a->has_catalogue >= 0)
    a->has_catalogue = 1;
}

static adb__agent_stats *agent_stats(adb *db, const char *id) {
  adb__agent_stats *s = adb__strmap_get(&db->agent_stats, id);
  if (s) return s;
  s = calloc(1, sizeof *s);
  if (s && adb__strmap_put(&db->agent_stats, id, s)) {
    free(s);
    s = NULL;
  }
  return s;
}

/* Loads an agent and its catalogue from the store. */
static int agent_load(adb *db, const char *id, adb__agent **out) {
  adb__agent *a = calloc(1, sizeof *a);
  if (!a) return adb__fail(db, ADB_ENOMEM, "out of memory");
  int rc = db->store->m->agent_get(db->store, id, &a->cfg);
  if (rc == ADB_OK)
    rc = db->store->m->actions_list(db->store, id, catalogue_add, a);
  if (rc == ADB_OK && a->has_catalogue < 0) rc = ADB_ENOMEM;
  if (rc != ADB_OK) {
    adb__strmap_free(&a->catalogue, NULL);
    free(a);
    if (rc == ADB_ENOTFOUND)
      return adb__fail(db, rc, "agent '%s' not found", id);
    return adb__fail(db, rc, "loading agent '%s': %s", id,
                     adb__store_errmsg(db->store));
  }
  a->loaded_ms = adb__now_ms();
  a->refs = 1;
  *out = a;
  return ADB_OK;
}

/* Publishes a freshly loaded agent, replacing (and releasing) the old. */
static int agent_publish(adb *db, adb__agent *a) {
  pthread_rwlock_wrlock(&db->agents_lock);
  a->stats = agent_stats(db, a->cfg.id);
  adb__agent *old = adb__strmap_get(&db->agents, a->cfg.id);
  int rc = a->stats ? adb__strmap_put(&db->agents, a->cfg.id, a) : ADB_ENOMEM;
  pthread_rwlock_unlock(&db->agents_lock);
  if (rc != ADB_OK) return rc;
  adb__agent_release(old);
  return ADB_OK;
}

int adb__agent_acquire(adb *db, const char *id, adb__agent **out) {
  int rc = adb__check_id(db, "agent id", id);
  if (rc) return rc;
  pthread_rwlock_rdlock(&db->agents_lock);
  adb__agent *a = adb__strmap_get(&db->agents, id);
  if (a) atomic_fetch_add(&a->refs, 1);
  pthread_rwlock_unlock(&db->agents_lock);
  int stale = a && adb__now_ms() - a->loaded_ms > ADB_AGENT_REFRESH_MS;
  /* One thread refreshes a stale agent; the others keep using it. */
  if (stale && atomic_exchange(&db->refreshing, 1) == 0) {
    adb__agent *fresh;
    if (agent_load(db, id, &fresh) == ADB_OK) {
      atomic_fetch_add(&fresh->refs, 1);
      if (agent_publish(db, fresh) == ADB_OK) {
        adb__agent_release(a);
        a = fresh;
      } else {
        adb__agent_release(fresh);
        adb__agent_release(fresh);
      }
    }
    atomic_store(&db->refreshing, 0);
  }
  if (!a) {
    if ((rc = agent_load(db, id, &a)) != ADB_OK) return rc;
    atomic_fetch_add(&a->refs, 1);
    if ((rc = agent_publish(db, a)) != ADB_OK) {
      adb__agent_release(a);
      adb__agent_release(a);
      return adb__fail(db, rc, "out of memory");
    }
  }
  *out = a;
  return ADB_OK;
}

void adb__agent_invalidate(adb *db, const char *id) {
  pthread_rwlock_wrlock(&db->agents_lock);
  adb__agent *old = adb__strmap_del(&db->agents, id);
  pthread_rwlock_unlock(&db->agents_lock);
  adb__agent_release(old);
}

/* ------------------------------------------------------------ write queue */

void adb__item_free(adb__item *it) {
  if (!it) return;
  if (it->kind == ITEM_DECISION) free(adb__item_decision(it)->ranking_json);
  if (it->kind == ITEM_REWARD) free(it->u.r.signals_json);
  if (it->kind == ITEM_EPISODE) free(it->u.e.context_json);
  if (it->has_sem) sem_destroy(&it->sem);
  free(it->errmsg);
  free(it->emb);
  if (it->slab)
    adb__slab_free(it);
  else
    free(it);
}

/* Appends a chain to the queue, all or none; the last item gets wait (a
 * sync writer sleeps on its semaphore) or cb. */
static int enqueue_chain(adb *db, adb__item *chain, int wait,
                         adb__item_done_fn cb, void *arg) {
  int n = 0;
  adb__item *it = chain;
  for (adb__item *p = chain; p; p = p->next, n++)
    it = p;
  int no_sem = 0;
  if (wait && it && !it->has_sem) {
    no_sem = sem_init(&it->sem, 0, 0) != 0;
    it->has_sem = !no_sem;
  }
  pthread_mutex_lock(&db->qmu);
  int rc = db->closing                             ? ADB_ECLOSED
           : !chain                                ? ADB_EINVAL
           : no_sem                                ? ADB_ENOMEM
           : db->qlen + n > db->cfg.queue_capacity ? ADB_EFULL
                                                   : ADB_OK;
  if (rc != ADB_OK) {
    pthread_mutex_unlock(&db->qmu);
    for (adb__item *p = chain, *next; p; p = next) {
      next = p->next;
      adb__item_free(p);
    }
    if (rc == ADB_ECLOSED) return adb__fail(db, rc, "the handle is closing");
    if (rc != ADB_EFULL) return adb__fail(db, rc, "cannot queue the write");
    return adb__fail(db, rc,
                     "write queue full (%d writes waiting); retry later",
                     db->cfg.queue_capacity);
  }
  for (adb__item *p = chain; p; p = p->next) {
    p->seq = db->next_seq++;
    p->waited = 0;
    p->done = 0;
  }
  it->waited = wait;
  it->done_cb = cb;
  it->done_arg = arg;
  db->q_sync += wait || cb;
  if (db->qtail)
    db->qtail->next = chain;
  else
    db->qhead = chain;
  db->qtail = it;
  db->qlen += n;
  /* The worker needs waking only when it may be idle (the queue was
   * empty), a batch is full, or a writer waits; otherwise it comes back
   * within flush_interval_ms by itself. Saves a futex call per write. */
  if (db->qlen == n || db->qlen >= db->cfg.batch_size || wait || cb)
    pthread_cond_signal(&db->qwake);
  pthread_mutex_unlock(&db->qmu);
  return ADB_OK;
}

int adb__item_result(adb *db, adb__item *it, adb__reward_rec *out) {
  int rc = it->result;
  if (out && it->kind == ITEM_REWARD) {
    *out = it->u.r;
    out->signals_json = NULL;
  }
  if (rc == ADB_ECONFLICT && it->kind == ITEM_DECISION)
    rc = adb__fail(db, rc, "event id already used");
  else if (rc == ADB_ECONFLICT)
    rc = adb__fail(db, rc, "reward id already used with a different body");
  else if (rc != ADB_OK && it->errmsg)
    rc = adb__fail(db, rc,
                   "write refused by the store (retrying cannot "
                   "help): %s",
                   it->errmsg);
  else if (rc != ADB_OK)
    rc = adb__fail(db, rc, "write failed: %s", adb_strerror(rc));
  return rc;
}

int adb__enqueue_cb(adb *db, adb__item *chain, adb__item_done_fn cb,
                    void *arg) {
  if (!cb) {
    for (adb__item *p = chain, *next; p; p = next) {
      next = p->next;
      adb__item_free(p);
    }
    return adb__fail(db, ADB_EINVAL, "no completion callback");
  }
  return enqueue_chain(db, chain, 0, cb, arg);
}

/* Sleeps until the waker posts the item's semaphore or the deadline
 * passes. On a timeout the item is given to the worker (waited = 0), unless
 * it finished meanwhile: then its post is on the way and is waited for, so
 * that nobody touches the item after it is freed. */
static int wait_item(adb *db, adb__item *it) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  int64_t ns = dl.tv_nsec + (int64_t)db->cfg.write_timeout_ms * 1000000;
  dl.tv_sec += ns / 1000000000;
  dl.tv_nsec = ns % 1000000000;
  for (;;) {
    if (sem_timedwait(&it->sem, &dl) == 0) return ADB_OK;
    if (errno != ETIMEDOUT) continue; /* EINTR */
    pthread_mutex_lock(&db->qmu);
    int done = it->done;
    if (!done) it->waited = 0; /* the worker frees it once committed */
    pthread_mutex_unlock(&db->qmu);
    if (!done)
      return adb__fail(db, ADB_ETIMEDOUT,
                       "write not committed within %d ms (store: %s); it "
                       "stays queued, retry with the same id is safe",
                       db->cfg.write_timeout_ms, adb__store_errmsg(db->store));
    while (sem_wait(&it->sem) != 0) {
    }
    return ADB_OK;
  }
}

int adb__enqueue(adb *db, adb__item *chain, int wait, adb__reward_rec *out) {
  adb__item *it = chain;
  while (it && it->next)
    it = it->next;
  int rc = enqueue_chain(db, chain, wait, NULL, NULL);
  if (rc != ADB_OK || !wait) return rc;
  if ((rc = wait_item(db, it)) != ADB_OK) return rc;
  rc = adb__item_result(db, it, out);
  adb__item_free(it);
  return rc;
}

static void deadline_in(struct timespec *dl, int64_t ms) {
  clock_gettime(CLOCK_REALTIME, dl);
  int64_t ns = dl->tv_nsec + ms * 1000000;
  dl->tv_sec += ns / 1000000000;
  dl->tv_nsec = ns % 1000000000;
}

int adb_flush(adb *db) {
  struct timespec dl;
  deadline_in(&dl, db->cfg.write_timeout_ms);
  pthread_mutex_lock(&db->qmu);
  uint64_t target = db->next_seq;
  pthread_cond_signal(&db->qwake);
  int rc = 0;
  while (db->done_seq < target && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&db->qdone, &db->qmu, &dl);
  int done = db->done_seq >= target;
  int64_t left = db->qlen;
  pthread_mutex_unlock(&db->qmu);
  if (done) return ADB_OK;
  return adb__fail(db, ADB_ETIMEDOUT,
                   "writes not committed within %d ms (%lld queued; store: "
                   "%s); they stay queued",
                   db->cfg.write_timeout_ms, (long long)left,
                   adb__store_errmsg(db->store));
}

/* ------------------------------------------------------------ flush worker */

static int lat_percentile(const int64_t *h, double q) {
  int64_t total = 0;
  for (int i = 0; i < ADB_LAT_BUCKETS; i++)
    total += h[i];
  if (!total) return -1;
  int64_t rank = (int64_t)ceil(q * (double)total), seen = 0;
  for (int i = 0; i < ADB_LAT_BUCKETS; i++)
    if ((seen += h[i]) >= rank) return i;
  return ADB_LAT_BUCKETS - 1;
}

/* Forgets the counters of a deleted or reset agent (worker only). */
static void drop_counters(adb__agent_stats *s) {
  atomic_store(&s->decisions, 0);
  atomic_store(&s->cache_hits, 0);
  atomic_store(&s->cache_misses, 0);
  for (int b = 0; b < ADB_LAT_BUCKETS; b++)
    atomic_store(&s->lat[b], 0);
  s->rewards = 0;
  s->reward_sum = 0;
  memset(s->hour_lat, 0, sizeof s->hour_lat);
}

void adb__agent_stats_drop(adb *db, const char *id) {
  pthread_rwlock_rdlock(&db->agents_lock);
  adb__agent_stats *s = adb__strmap_get(&db->agent_stats, id);
  if (s) atomic_store(&s->dropped, 1);
  pthread_rwlock_unlock(&db->agents_lock);
}

/* Swaps each agent's counters out into metrics deltas (worker only). */
static int collect_metrics(adb *db, adb__metrics_delta **out) {
  int64_t now = adb__now_ms(), hour = now - now % 3600000;
  pthread_rwlock_rdlock(&db->agents_lock);
  int n = 0;
  adb__metrics_delta *m = calloc(db->agent_stats.len + 1, sizeof *m);
  for (size_t i = 0; m && i < db->agent_stats.cap; i++) {
    if (!db->agent_stats.slots[i].key) continue;
    adb__agent_stats *s = db->agent_stats.slots[i].val;
    if (atomic_exchange(&s->dropped, 0)) {
      drop_counters(s);
      continue;
    }
    adb__metrics_delta *d = &m[n];
    snprintf(d->agent, sizeof d->agent, "%s", db->agent_stats.slots[i].key);
    d->hour_ms = hour;
    d->decisions = atomic_exchange(&s->decisions, 0);
    d->cache_hits = atomic_exchange(&s->cache_hits, 0);
    d->cache_misses = atomic_exchange(&s->cache_misses, 0);
    d->rewards = s->rewards;
    d->reward_sum = s->reward_sum;
    s->rewards = 0;
    s->reward_sum = 0;
    if (s->hour_ms != hour) memset(s->hour_lat, 0, sizeof s->hour_lat);
    s->hour_ms = hour;
    int64_t sampled = 0;
    for (int b = 0; b < ADB_LAT_BUCKETS; b++) {
      int64_t k = atomic_exchange(&s->lat[b], 0);
      s->hour_lat[b] += k;
      sampled += k;
    }
    /* Nothing happened: no row to write (a deleted agent's stats stay in
     * the map, and must not bring its rollup row back). */
    if (!d->decisions && !d->cache_hits && !d->cache_misses && !d->rewards &&
        !sampled)
      continue;
    int p50 = lat_percentile(s->hour_lat, 0.5);
    int p99 = lat_percentile(s->hour_lat, 0.99);
    /* A bucket's geometric middle: [2^i, 2^(i+1)) us. */
    d->latency_p50_us = p50 < 0 ? -1 : ldexp(1.5, p50);
    d->latency_p99_us = p99 < 0 ? -1 : ldexp(1.5, p99);
    n++;
  }
  pthread_rwlock_unlock(&db->agents_lock);
  *out = m;
  return n;
}

/* Adds committed rewards to their agents' counters (worker only); the next
 * rollup writes them. */
static void count_rewards(adb *db, const adb__batch *b) {
  pthread_rwlock_wrlock(&db->agents_lock);
  for (int i = 0; i < b->n_rewards; i++) {
    const adb__reward_rec *r = &b->rewards[i];
    adb__agent_stats *s =
        r->applied && !r->awaiting ? agent_stats(db, r->agent) : NULL;
    if (!s) continue;
    s->rewards++;
    s->reward_sum += r->reward;
  }
  pthread_rwlock_unlock(&db->agents_lock);
}

/* Applies committed posterior changes to the cache, one call per key. */
void adb__apply_changes(adb *db, const adb__policy_change *ch, int nch) {
  const char *actions[256];
  adb__arm_stats deltas[256];
  char key[600];
  for (int i = 0; i < nch;) {
    const adb__policy_change *c = &ch[i];
    int n = 0;
    while (i < nch && n < 256 && !strcmp(ch[i].agent, c->agent) &&
           !strcmp(ch[i].user, c->user) &&
           !strcmp(ch[i].state_key, c->state_key)) {
      actions[n] = ch[i].action;
      deltas[n++] = ch[i].delta;
      i++;
    }
    adb__policy_key(key, sizeof key, c->agent, c->user, c->state_key);
    if (db->cache->m->policy_apply(db->cache, key, n, actions, deltas) !=
        ADB_OK) {
      /* The cache is failing: the backend now hides what it cached (see
       * cache.h); the rest of the batch would only wait for timeouts. */
      atomic_fetch_add(&db->st_cache_errors, 1);
      return;
    }
  }
}

static void apply_changes(adb *db, adb__batch *b) {
  adb__apply_changes(db, b->changes, b->n_changes);
}

/* JSON of a decision's raw context and candidates (see decide.c). */
static int decision_json(const adb__item *it, adb__decision_rec *r) {
  adb__sbuf c = {0}, k = {0};
  const char *p = it->raw;
  adb__sbuf_add(&c, "{", 1);
  for (int i = 0; i < it->raw_ctx; i++) {
    if (i) adb__sbuf_add(&c, ",", 1);
    adb__sbuf_json_str(&c, p);
    p += strlen(p) + 1;
    adb__sbuf_add(&c, ":", 1);
    adb__sbuf_json_str(&c, p);
    p += strlen(p) + 1;
  }
  adb__sbuf_add(&c, "}", 1);
  adb__sbuf_add(&k, "[", 1);
  for (int i = 0; i < it->raw_cands; i++) {
    if (i) adb__sbuf_add(&k, ",", 1);
    adb__sbuf_json_str(&k, p);
    p += strlen(p) + 1;
  }
  adb__sbuf_add(&k, "]", 1);
  r->context_json = adb__sbuf_take(&c);
  r->candidates_json = adb__sbuf_take(&k);
  return r->context_json && r->candidates_json ? ADB_OK : ADB_ENOMEM;
}

/* Copies the next NUL-terminated string of a decision log into dst. */
static const char *log_str(char *dst, size_t cap, const char *p) {
  size_t n = strlen(p);
  memcpy(dst, p, n < cap ? n + 1 : cap);
  dst[cap - 1] = 0;
  return p + n + 1;
}

/* The record write_batch takes for a queued decision; its JSON texts are
 * the batch's (batch_free), its ranking the item's. */
static int decision_expand(adb__item *it, adb__decision_rec *r) {
  const adb__decision_log *g = adb__item_decision(it);
  const char *p = g->text;
  p = log_str(r->agent, sizeof r->agent, p);
  p = log_str(r->event_id, sizeof r->event_id, p);
  p = log_str(r->user, sizeof r->user, p);
  p = log_str(r->state_key, sizeof r->state_key, p);
  p = log_str(r->action, sizeof r->action, p);
  log_str(r->model, sizeof r->model, g->model);
  r->propensity = g->propensity;
  r->ts_ms = g->ts_ms;
  r->n_features = g->n_features;
  if (g->n_features > 0) memcpy(r->features, p, (size_t)g->n_features);
  r->ranking_json = g->ranking_json;
  r->client_id = g->client_id;
  r->inserted = 0;
  r->context_json = r->candidates_json = NULL;
  return decision_json(it, r);
}

/* Builds the batch's record arrays from the items (pointers copied). */
static int batch_build(adb__batch *b, adb__item **items, int n) {
  b->decisions = malloc((size_t)n * sizeof *b->decisions);
  b->rewards = malloc((size_t)n * sizeof *b->rewards);
  b->episodes = malloc((size_t)n * sizeof *b->episodes);
  if (n && (!b->decisions || !b->rewards || !b->episodes)) return ADB_ENOMEM;
  for (int i = 0; i < n; i++) {
    adb__item *it = items[i];
    if (it->kind == ITEM_DECISION &&
        decision_expand(it, &b->decisions[b->n_decisions++]) != ADB_OK)
      return ADB_ENOMEM;
    if (it->kind == ITEM_REWARD) b->rewards[b->n_rewards++] = it->u.r;
    if (it->kind == ITEM_EPISODE) b->episodes[b->n_episodes++] = it->u.e;
  }
  return ADB_OK;
}

/* Frees what batch_build and write_batch allocated (not the metrics). */
static void batch_free(adb__batch *b) {
  for (int i = 0; i < b->n_decisions; i++) {
    free(b->decisions[i].context_json);
    free(b->decisions[i].candidates_json);
  }
  free(b->decisions);
  free(b->rewards);
  free(b->episodes);
  free(b->changes);
  memset(b, 0, sizeof *b);
}

/* Failures that retrying the same rows cannot cure: the store refused the
 * data (store.h), or a record is invalid. Everything else (the store
 * unreachable or busy, out of memory) is retried. */
static int permanent(int rc) {
  return rc == ADB_ESTORE || rc == ADB_EINVAL || rc == ADB_ECORRUPT;
}

/* Commits the batch, retrying temporary failures with backoff until it
 * succeeds or, while closing, the store has been failing for
 * write_timeout_ms. A permanent failure returns at once. */
static int commit_with_retry(adb *db, adb__batch *b) {
  int64_t backoff_ms = 10, first_fail = 0;
  for (;;) {
    int rc = db->store->m->write_batch(db->store, b);
    if (rc == ADB_OK) return ADB_OK;
    atomic_fetch_add(&db->st_flush_errors, 1);
    atomic_fetch_add(&db->st_store_errors, 1);
    if (permanent(rc)) return rc;
    int64_t now = adb__now_ms();
    if (!first_fail) {
      first_fail = now;
      fprintf(stderr, "agentdb: flush of %d writes failed (%s): %s; retrying\n",
              b->n_decisions + b->n_rewards + b->n_episodes, adb_err_name(rc),
              adb__store_errmsg(db->store));
    }
    pthread_mutex_lock(&db->qmu);
    int closing = db->closing;
    pthread_mutex_unlock(&db->qmu);
    if (closing && now - first_fail >= db->cfg.write_timeout_ms) return rc;
    struct timespec ts = {backoff_ms / 1000, (backoff_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
  }
}

/* Copies a committed batch's per-record answers back into its items. */
static void items_answer(adb__item **items, int n, const adb__batch *b) {
  int di = 0, ri = 0;
  for (int i = 0; i < n; i++) {
    adb__item *it = items[i];
    if (it->kind == ITEM_DECISION) {
      if (!b->decisions[di++].inserted) it->result = ADB_ECONFLICT;
    } else if (it->kind == ITEM_REWARD) {
      const adb__reward_rec *r = &b->rewards[ri++];
      it->u.r.result = r->result;
      it->u.r.applied = r->applied;
      it->u.r.late = r->late;
      it->u.r.first_reward = r->first_reward;
      it->result = r->result;
    }
  }
}

/* Gives up on items: each gets rc and the store's message. */
static void items_fail(adb *db, adb__item **items, int n, int rc) {
  const char *msg = adb__store_errmsg(db->store);
  for (int i = 0; i < n; i++) {
    items[i]->result = rc;
    free(items[i]->errmsg);
    items[i]->errmsg = strdup(msg);
    fprintf(stderr, "agentdb: write seq %llu %s: %s\n",
            (unsigned long long)items[i]->seq,
            permanent(rc) ? "refused by the store" : "lost", msg);
  }
}

/* Commits items[0..n) and the metrics deltas m[0..nm) as one batch. When
 * the store refuses the batch for good, the batch is split in halves (the
 * metrics going alone) and each half committed the same way, so that a
 * record the store can never take fails alone, after about 2 log2(n)
 * extra attempts, and every other record commits. */
static void commit_part(adb *db, adb__item **items, int n,
                        adb__metrics_delta *m, int nm) {
  if (n == 0 && nm == 0) return;
  adb__batch b = {0};
  snprintf(b.batch_id, sizeof b.batch_id, "%016llx-%llu",
           (unsigned long long)db->batch_prefix,
           (unsigned long long)++db->batch_seq);
  int rc = batch_build(&b, items, n);
  b.metrics = m;
  b.n_metrics = nm;
  if (rc == ADB_OK) rc = commit_with_retry(db, &b);
  if (rc == ADB_OK) {
    apply_changes(db, &b);
    count_rewards(db, &b);
    items_answer(items, n, &b);
    if (n) atomic_fetch_add(&db->st_batches, 1);
  } else if (permanent(rc) && n > 0 && nm > 0) {
    commit_part(db, items, n, NULL, 0);
    commit_part(db, NULL, 0, m, nm);
  } else if (permanent(rc) && n > 1) {
    commit_part(db, items, n / 2, NULL, 0);
    commit_part(db, items + n / 2, n - n / 2, NULL, 0);
  } else {
    if (nm)
      fprintf(stderr, "agentdb: %d metrics rollups dropped: %s\n", nm,
              adb__store_errmsg(db->store));
    items_fail(db, items, n, rc);
  }
  batch_free(&b);
}

/* Takes up to batch_size items off the queue, waiting for work. Returns
 * NULL when closing and the queue is empty. Called with qmu held. */
static adb__item *take_batch(adb *db, int *n_out) {
  while (!db->qhead && !db->closing) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 1; /* wake at least once a second for metrics */
    if (pthread_cond_timedwait(&db->qwake, &db->qmu, &dl) == ETIMEDOUT) break;
  }
  if (!db->qhead) return NULL;
  /* Group commit. A sync writer waits for this commit, so commit now: the
   * writes arriving meanwhile form the next batch. Async writes only give
   * a small batch up to flush_interval_ms to grow. */
  if (!db->closing && db->qlen < db->cfg.batch_size && !db->q_sync) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    int64_t ns = dl.tv_nsec + (int64_t)db->cfg.flush_interval_ms * 1000000;
    dl.tv_sec += ns / 1000000000;
    dl.tv_nsec = ns % 1000000000;
    while (!db->closing && db->qlen < db->cfg.batch_size && !db->q_sync &&
           pthread_cond_timedwait(&db->qwake, &db->qmu, &dl) != ETIMEDOUT) {
    }
  }
  adb__item *head = db->qhead, *last = head;
  int n = 1;
  db->q_sync -= head->has_sem || head->done_cb;
  while (last->next && n < db->cfg.batch_size) {
    last = last->next;
    db->q_sync -= last->has_sem || last->done_cb;
    n++;
  }
  db->qhead = last->next;
  if (!db->qhead) db->qtail = NULL;
  last->next = NULL;
  *n_out = n;
  return head;
}

/* Marks items done and frees the unwaited ones; the waited ones (a sync
 * writer, a callback) go to the waker, which wakes them outside qmu while
 * this worker starts the next commit. */
static void finish_items(adb *db, adb__item **items, int n) {
  adb__item *wake = NULL, *wlast = NULL;
  pthread_mutex_lock(&db->qmu);
  for (int i = 0; i < n; i++) {
    adb__item *it = items[i];
    if (it->kind == ITEM_REWARD)
      atomic_fetch_add(it->u.r.late       ? &db->st_late
                       : !it->u.r.applied ? &db->st_duplicate
                       : it->u.r.awaiting ? &db->st_awaiting
                                          : &db->st_applied,
                       it->result == ADB_OK);
    if (it->result != ADB_OK && !permanent(it->result) &&
        it->result != ADB_ECONFLICT)
      db->lost++;
    it->done = 1;
    if (it->seq + 1 > db->done_seq) db->done_seq = it->seq + 1;
    if (it->waited || it->done_cb) {
      it->wnext = NULL;
      if (wlast)
        wlast->wnext = it;
      else
        wake = it;
      wlast = it;
    } else {
      adb__item_free(it);
    }
  }
  db->qlen -= n;
  pthread_cond_broadcast(&db->qdone);
  pthread_mutex_unlock(&db->qmu);
  if (!wake) return;
  pthread_mutex_lock(&db->wmu);
  if (db->wtail)
    db->wtail->wnext = wake;
  else
    db->whead = wake;
  db->wtail = wlast;
  pthread_cond_signal(&db->wcv);
  pthread_mutex_unlock(&db->wmu);
}

/* The waker: posts each finished item's semaphore, or calls its callback.
 * Exits once stopped (after the worker) with nothing left to wake. */
static void *waker(void *arg) {
  adb *db = arg;
  pthread_setname_np(pthread_self(), "adb-wake");
  pthread_mutex_lock(&db->wmu);
  for (;;) {
    while (!db->whead && !db->wstop)
      pthread_cond_wait(&db->wcv, &db->wmu);
    adb__item *list = db->whead;
    db->whead = db->wtail = NULL;
    if (!list) break;
    pthread_mutex_unlock(&db->wmu);
    for (adb__item *it = list, *next; it; it = next) {
      next = it->wnext; /* it may be freed once posted */
      if (it->done_cb)
        it->done_cb(it, it->done_arg);
      else
        sem_post(&it->sem);
    }
    pthread_mutex_lock(&db->wmu);
  }
  pthread_mutex_unlock(&db->wmu);
  return NULL;
}

/* One round of the worker: commit a batch of items (possibly none) and,
 * at most once a second or when asked, the hourly rollups. */
static void flush_round(adb *db, adb__item *chain, int n, int rollup) {
  adb__item *one[1], **items = n > 1 ? malloc((size_t)n * sizeof *items) : one;
  adb__metrics_delta *m = NULL;
  int nm = 0, i = 0;
  if (!items) { /* no memory for the array: one item at a time */
    for (adb__item *it = chain, *next; it; it = next) {
      next = it->next;
      it->next = NULL;
      flush_round(db, it, 1, 0);
    }
    items = one;
    n = 0;
    chain = NULL;
  }
  for (adb__item *it = chain; it; it = it->next) {
    it->result = ADB_OK;
    items[i++] = it;
  }
  if (rollup) {
    pthread_mutex_lock(&db->rollup_mu); /* see adb__agent_stats */
    nm = collect_metrics(db, &m);
    db->last_rollup_ms = adb__now_ms();
  }
  commit_part(db, items, n, m, nm);
  if (rollup) pthread_mutex_unlock(&db->rollup_mu);
  if (n) finish_items(db, items, n);
  free(m);
  if (items != one) free(items);
}

/* Joins the rewards that waited for their decision and drops those whose
 * window closed (store.h pending_sweep), at most once a second; their
 * increments go to the cache and their counts to the metrics. A failure
 * is retried at the next sweep. */
static void sweep(adb *db) {
  adb__batch b = {0};
  int64_t expired = 0, now = adb__now_ms();
  if (!db->store->m->pending_sweep || now - db->last_sweep_ms < 1000) return;
  db->last_sweep_ms = now;
  if (db->store->m->pending_sweep(db->store, now, &b, &expired) != ADB_OK) {
    atomic_fetch_add(&db->st_store_errors, 1);
    return;
  }
  apply_changes(db, &b);
  count_rewards(db, &b);
  int joined = 0, defaulted = 0;
  for (int i = 0; i < b.n_rewards; i++) {
    int dflt = b.rewards[i].reward_id[0] == '~';
    joined += b.rewards[i].applied && !dflt;
    defaulted += b.rewards[i].applied && dflt;
    free(b.rewards[i].signals_json);
  }
  atomic_fetch_add(&db->st_joined, joined);
  atomic_fetch_add(&db->st_applied, joined);
  atomic_fetch_add(&db->st_defaulted, defaulted);
  atomic_fetch_add(&db->st_expired, expired);
  if (expired)
    fprintf(stderr,
            "agentdb: %lld rewards dropped: no decision with their event_id "
            "appeared within the agent's reward_window_s\n",
            (long long)expired);
  free(b.rewards);
  free(b.changes);
}

static void *flush_worker(void *arg) {
  adb *db = arg;
  int64_t last_trim = 0;
  pthread_setname_np(pthread_self(), "adb-flush");
  pthread_mutex_lock(&db->qmu);
  for (;;) {
    int n = 0;
    adb__item *items = take_batch(db, &n);
    int done = db->closing && !db->qhead;
    pthread_mutex_unlock(&db->qmu);
    flush_round(db, items, n, adb__now_ms() - db->last_rollup_ms >= 1000);
    if (done) break;
    sweep(db);
    pthread_mutex_lock(&db->qmu);
    /* After a burst, give the freed queue memory back to the system (at
     * most once a second: trimming walks the heap). */
    if (n >= 1024 && !db->qhead && adb__now_ms() - last_trim >= 1000) {
      pthread_mutex_unlock(&db->qmu);
      malloc_trim(0);
      last_trim = adb__now_ms();
      pthread_mutex_lock(&db->qmu);
    }
  }
  flush_round(db, NULL, 0, 1); /* the last rollup, after the last batch */
  return NULL;
}

/* ---------------------------------------------------------- open / close */

/* Stops the waker once it has woken everything handed to it. */
static void waker_stop(adb *db) {
  pthread_mutex_lock(&db->wmu);
  db->wstop = 1;
  pthread_cond_signal(&db->wcv);
  pthread_mutex_unlock(&db->wmu);
  pthread_join(db->waker, NULL);
}

static void config_defaults(adb_config *c) {
  if (!c->store_url) c->store_url = "sqlite://./data/agentdb.db";
  if (!c->cache_url) c->cache_url = "mem://";
  if (c->flush_interval_ms <= 0) c->flush_interval_ms = 2;
  if (c->batch_size <= 0) c->batch_size = 4096;
  if (c->queue_capacity <= 0) c->queue_capacity = 100000;
  if (c->write_timeout_ms <= 0) c->write_timeout_ms = 30000;
  if (c->cache_ttl_s <= 0) c->cache_ttl_s = 3600;
  if (c->cache_max_bytes == 0) c->cache_max_bytes = (size_t)256 << 20;
  if (c->pool_size <= 0) c->pool_size = 4;
}

static void handle_free(adb *db) {
  adb__linear_close(atomic_load(&db->lin)); /* uses the store */
  adb__memory_close(db->mem); /* saves its snapshot; before the store */
  adb__cache_close(db->cache);
  adb__store_close(db->store);
  adb__strmap_free(&db->agents, agent_release_void);
  adb__strmap_free(&db->agent_stats, free);
  adb__strmap_free(&db->inflight, NULL);
  pthread_mutex_destroy(&db->qmu);
  pthread_cond_destroy(&db->qwake);
  pthread_cond_destroy(&db->qdone);
  pthread_mutex_destroy(&db->wmu);
  pthread_cond_destroy(&db->wcv);
  pthread_rwlock_destroy(&db->agents_lock);
  pthread_mutex_destroy(&db->sfmu);
  pthread_mutex_destroy(&db->rollup_mu);
  pthread_cond_destroy(&db->sfcond);
  free(db);
}

/* Prefixes an open failure's reason with the component that failed, so
 * that a bad cache URL is not reported as a store problem. */
static void name_component(char *err, size_t errlen, const char *what) {
  if (!err || !errlen) return;
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", err);
  snprintf(err, errlen, "%s: %s", what, tmp);
}

int adb_open(const adb_config *cfg, adb **out, char *err, size_t errlen) {
  char dummy[8];
  if (!err) {
    err = dummy;
    errlen = sizeof dummy;
  }
  *out = NULL;
  err[0] = 0;
  adb *db = calloc(1, sizeof *db);
  if (!db) {
    snprintf(err, errlen, "out of memory");
    return ADB_ENOMEM;
  }
  if (cfg) db->cfg = *cfg;
  config_defaults(&db->cfg);
  snprintf(db->store_url, sizeof db->store_url, "%s", db->cfg.store_url);
  snprintf(db->cache_url, sizeof db->cache_url, "%s", db->cfg.cache_url);
  db->cfg.store_url = db->store_url;
  db->cfg.cache_url = db->cache_url;
  db->id = atomic_fetch_add(&next_handle_id, 1);
  if (getrandom(&db->batch_prefix, sizeof db->batch_prefix, 0) !=
      sizeof db->batch_prefix)
    db->batch_prefix = (uint64_t)adb__mono_ns() ^ db->id;
  pthread_mutex_init(&db->qmu, NULL);
  pthread_cond_init(&db->qwake, NULL);
  pthread_cond_init(&db->qdone, NULL);
  pthread_mutex_init(&db->wmu, NULL);
  pthread_cond_init(&db->wcv, NULL);
  pthread_rwlock_init(&db->agents_lock, NULL);
  pthread_mutex_init(&db->sfmu, NULL);
  pthread_mutex_init(&db->rollup_mu, NULL);
  pthread_cond_init(&db->sfcond, NULL);
  db->last_rollup_ms = adb__now_ms();
  int rc = adb__store_open(db->store_url, &db->cfg, &db->store, err, errlen);
  if (rc != ADB_OK) name_component(err, errlen, "store");
  if (rc == ADB_OK) {
    rc = adb__cache_open(db->cache_url, &db->cfg, &db->cache, err, errlen);
    if (rc != ADB_OK) name_component(err, errlen, "cache");
  }
  if (rc == ADB_OK) rc = adb__memory_open(db, &db->mem, err, errlen);
  if (rc == ADB_OK && pthread_create(&db->waker, NULL, waker, db)) {
    snprintf(err, errlen, "cannot start the waker thread");
    rc = ADB_ENOMEM;
  } else if (rc == ADB_OK &&
             pthread_create(&db->worker, NULL, flush_worker, db)) {
    snprintf(err, errlen, "cannot start the flush worker");
    waker_stop(db);
    rc = ADB_ENOMEM;
  }
  if (rc != ADB_OK) {
    handle_free(db);
    return rc;
  }
  *out = db;
  return ADB_OK;
}

int adb_close(adb *db) {
  if (!db) return ADB_OK;
  pthread_mutex_lock(&db->qmu);
  db->closing = 1;
  pthread_cond_signal(&db->qwake);
  pthread_mutex_unlock(&db->qmu);
  pthread_join(db->worker, NULL);
  waker_stop(db); /* after the worker: it wakes the last batch's writers */
  int64_t lost = db->lost;
  char msg[400];
  snprintf(msg, sizeof msg, "%s", adb__store_errmsg(db->store));
  handle_free(db);
  if (lost)
    return adb__fail(NULL, ADB_EUNAVAIL,
                     "%lld queued write%s not committed: the store stayed "
                     "unavailable for write_timeout_ms while closing (%s)",
                     (long long)lost, lost == 1 ? " was" : "s were", msg);
  return ADB_OK;
}

void adb_stats_get(adb *db, adb_stats *o) {
  memset(o, 0, sizeof *o);
  o->decisions = atomic_load(&db->st_decisions);
  o->rewards_applied = atomic_load(&db->st_applied);
  o->rewards_duplicate = atomic_load(&db->st_duplicate);
  pthread_mutex_lock(&db->qmu);
  o->queue_depth = db->qlen;
  pthread_mutex_unlock(&db->qmu);
  o->queue_capacity = db->cfg.queue_capacity;
  o->flush_batches = atomic_load(&db->st_batches);
  o->flush_errors = atomic_load(&db->st_flush_errors);
  o->store_errors = atomic_load(&db->st_store_errors);
  adb__cache_stats cs = {0};
  db->cache->m->stats(db->cache, &cs);
  o->cache_hits = atomic_load(&db->st_hits);
  o->cache_misses = atomic_load(&db->st_misses);
  o->cache_errors = cs.errors + atomic_load(&db->st_cache_errors);
  o->cache_evictions = cs.evictions;
  o->cache_entries = cs.entries;
  o->cache_bytes = cs.bytes;
  o->rewards_awaiting = atomic_load(&db->st_awaiting);
  o->rewards_joined = atomic_load(&db->st_joined);
  o->rewards_expired = atomic_load(&db->st_expired);
  o->rewards_defaulted = atomic_load(&db->st_defaulted);
  o->rewards_late = atomic_load(&db->st_late);
}
