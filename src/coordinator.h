/*
 * coordinator.h — the adb handle shared by the coordinator's files:
 * coordinator.c (open/close, the write queue and its flush worker),
 * decide.c (the read path and Thompson decisions), reward.c (rewards and
 * episodes) and records.c (agents, actions, user states, patterns,
 * sessions, policies, metrics).
 */
#ifndef ADB_COORDINATOR_H
#define ADB_COORDINATOR_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>

#include "agentdb.h"
#include "bandit.h"
#include "cache.h"
#include "memory.h"
#include "store.h"
#include "util.h"

/* Decide latency histogram buckets: [2^i, 2^(i+1)) microseconds. */
#define ADB_LAT_BUCKETS 24

/* Counters of one agent for the current hour's rollup; they outlive
 * config reloads and are swapped out by the flush worker. */
typedef struct adb__agent_stats {
  _Atomic int64_t decisions, cache_hits, cache_misses;
  _Atomic int64_t lat[ADB_LAT_BUCKETS];
  int64_t rewards;                   /* committed, worker only */
  double reward_sum;                 /* worker only */
  int64_t hour_ms;                   /* worker only */
  int64_t hour_lat[ADB_LAT_BUCKETS]; /* whole hour so far, worker only */
  /* Set when the agent was deleted or reset (admin.c): the worker's next
   * rollup drops the counters instead of writing them, and clears it.
   * Set under adb.rollup_mu, which a rollup holds from collecting the
   * counters to committing them, so none is written after the delete. */
  _Atomic int dropped;
} adb__agent_stats;

/* An agent as the coordinator keeps it: config and catalogue, immutable
 * once published. Loaded from the store and reloaded after
 * ADB_AGENT_REFRESH_MS so replicas see each other's changes; readers hold
 * a reference (adb__agent_acquire / adb__agent_release). */
#define ADB_AGENT_REFRESH_MS 5000
typedef struct adb__agent {
  adb_agent_config cfg;
  int has_catalogue;
  adb__strmap catalogue; /* action id -> (void*)1 enabled, (void*)2 disabled */
  int64_t loaded_ms;
  _Atomic int refs;
  adb__agent_stats *stats; /* owned by the handle */
} adb__agent;

typedef enum { ITEM_DECISION, ITEM_REWARD, ITEM_EPISODE } adb__item_kind;

/* One queued write. Sync writers wait on it; async ones never look back
 * and the worker frees it; with done_cb the waker thread hands it to the
 * callback, which owns it from then on (adb__enqueue_cb). */
struct adb__item;
typedef void (*adb__item_done_fn)(struct adb__item *it, void *arg);
typedef struct adb__item {
  struct adb__item *next;
  adb__item_kind kind;
  int slab; /* from adb__slab_alloc (slab.h): a decision's item */
  uint64_t seq;
  int waited;   /* a thread waits on it: it frees the item, not the worker */
  int has_sem;  /* sem is initialised (a sync writer waits on it) */
  int done;     /* committed (or abandoned at close) */
  int result;   /* ADB_OK or the reason it failed */
  char *errmsg; /* the store's message when result is a store error */
  float *emb;   /* episode embedding, owned */
  /* Decisions: context and candidates, raw (see decide.c), encoded as JSON
   * by the flush worker; raw points into the item's adb__decision_log. */
  char *raw;
  int raw_ctx, raw_cands;
  sem_t sem;                 /* the sync writer waits here */
  adb__item_done_fn done_cb; /* or this is called once it is done */
  void *done_arg;
  struct adb__item *wnext; /* on the waker's list */
  union {                  /* last: callers may zero only what precedes it */
    adb__reward_rec r;
    adb__episode_rec e;
  } u; /* a decision's item ends in an adb__decision_log instead */
} adb__item;

/* A decision as it waits in the queue, sized to the decision: a burst of
 * decisions outruns the log's drain, so every queued byte is fresh memory
 * on the deciding thread (docs/performance.md: about 3 ns a byte here),
 * and an adb__decision_rec has fixed buffers for the longest ids. It sits
 * where u would, in an item allocated to fit (decide.c); the flush worker
 * expands it into an adb__decision_rec for write_batch. text holds the
 * agent, event id, user, state key and action, each NUL-terminated, then
 * n_features feature bytes, then the raw context and candidates (raw). */
typedef struct adb__decision_log {
  double propensity;
  int64_t ts_ms;
  const char *model;  /* the policy model's tag, a static string */
  char *ranking_json; /* owned; client event ids only (adb__decision_rec) */
  int client_id, n_features;
  char text[];
} adb__decision_log;

static inline adb__decision_log *adb__item_decision(adb__item *it) {
  return (adb__decision_log *)(void *)&it->u;
}

struct adb {
  adb_config cfg;
  char store_url[1024], cache_url[1024];
  adb__store *store;
  adb__cache *cache;
  adb__memory *mem; /* vector indexes (memory.c) */
  uint64_t id;      /* distinguishes handles for thread-local state */

  /* Write queue (FIFO) and flush worker. */
  pthread_mutex_t qmu;
  pthread_cond_t qwake; /* worker: work arrived or closing */
  pthread_cond_t qdone; /* writers: a batch finished */
  adb__item *qhead, *qtail;
  int64_t qlen;      /* queued + in the batch being written */
  int64_t q_sync;    /* queued items a sync writer waits on */
  uint64_t next_seq; /* seq of the next enqueued item */
  uint64_t done_seq; /* every item with seq < done_seq is finished */
  int closing;
  int64_t lost; /* writes given up at close (store down), under qmu */
  uint64_t batch_prefix, batch_seq; /* batch ids (worker only) */
  pthread_t worker;
  /* Waker: wakes the writers (or calls the callbacks) of finished
   * batches, so that the worker starts the next commit at once. */
  pthread_t waker;
  pthread_mutex_t wmu;
  pthread_cond_t wcv;
  struct adb__item *whead, *wtail;
  int wstop;
  int64_t last_rollup_ms;
  pthread_mutex_t rollup_mu; /* a rollup, collected to committed */

  /* Agents. */
  pthread_rwlock_t agents_lock;
  adb__strmap agents;      /* id -> adb__agent* (holds one reference) */
  adb__strmap agent_stats; /* id -> adb__agent_stats* */
  _Atomic int refreshing;
  _Atomic uint64_t rng_threads;

  /* Single-flight policy loads. */
  pthread_mutex_t sfmu;
  pthread_cond_t sfcond;
  adb__strmap inflight; /* policy key -> (void*)1 while loading */

  /* Linear models (policy_linear.c), created on first use. */
  _Atomic(struct adb__linear *) lin;

  /* Statistics. */
  _Atomic int64_t st_decisions, st_applied, st_duplicate, st_batches;
  _Atomic int64_t st_flush_errors, st_store_errors, st_cache_errors;
  _Atomic int64_t st_hits, st_misses;
  _Atomic int64_t st_awaiting, st_joined, st_expired;
  _Atomic int64_t st_defaulted, st_late;
  int64_t last_sweep_ms; /* worker only */
};

/* Thread-local error message of the last failure (per thread, any handle). */
int adb__fail(adb *db, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The calling thread's RNG for this handle. */
adb__rng *adb__rng_for(adb *db);
/* The handle's clock (cfg.clock_ms, else the system clock), ms since the
 * epoch: what decisions and rewards are stamped with. */
static inline int64_t adb__clock_ms(const adb *db) {
  return db->cfg.clock_ms ? db->cfg.clock_ms(db->cfg.clock_arg) : adb__now_ms();
}

/* Agent lookup with refresh; the agent is referenced until released. */
int adb__agent_acquire(adb *db, const char *agent_id, adb__agent **out);
void adb__agent_release(adb__agent *a);
void adb__agent_invalidate(adb *db, const char *agent_id);
/* Marks the agent's counters dropped (see adb__agent_stats). */
void adb__agent_stats_drop(adb *db, const char *agent_id);
/* Applies committed posterior changes (sorted by key) to the cache. */
void adb__apply_changes(adb *db, const adb__policy_change *ch, int n);

/* Queues a chain of items (linked by ->next; takes ownership), all or none
 * (ADB_EFULL). With wait, blocks until the last one is committed, returns
 * its result and copies its reward record into *out when not NULL. A
 * decision whose event id was already taken returns ADB_ECONFLICT; a write
 * the store refused for good, ADB_ESTORE with the store's message. */
int adb__enqueue(adb *db, adb__item *chain, int wait, adb__reward_rec *out);
/* Queues a chain like adb__enqueue without blocking: once the last item
 * is committed (or failed), cb(item, arg) is called on the handle's waker
 * thread with no lock held; the callback owns the item (adb__item_result
 * gives its answer, adb__item_free frees it). Items before the last are
 * freed by the worker. On a refusal (ADB_EFULL, ADB_ECLOSED) cb is never
 * called and the chain is freed. */
int adb__enqueue_cb(adb *db, adb__item *chain, adb__item_done_fn cb, void *arg);
/* A durable reward without a waiting thread: validated and queued like
 * adb_reward (any durability), then, once committed or failed, cb(rc,
 * result or NULL, arg) is called on the handle's waker thread, where
 * adb_errmsg gives the message of a failure. It must not block: it delays
 * the wake-up of later writers. An error returned here (validation, queue
 * full, closing) means cb will not be called. For the HTTP layer, whose
 * loop threads must not wait for a commit. */
typedef void (*adb__reward_done_fn)(int rc, const adb_reward_result *res,
                                    void *arg);
int adb__reward_cb(adb *db, const adb_reward_req *q, adb__reward_done_fn cb,
                   void *arg);
/* The answer of a finished item as adb__enqueue returns it (with the
 * message set), copying its reward record into *out when not NULL. */
int adb__item_result(adb *db, adb__item *it, adb__reward_rec *out);
void adb__item_free(adb__item *it);

/* Statistics of the n actions ids in (agent, user, state): stats[0..n)
 * the user's, stats[n..2n) the agent-wide ('*') ones; through the cache,
 * else the store (one loader per key at a time). *hits gets how many of
 * the two keys hit. */
int adb__policy_read(adb *db, const char *agent, const char *user,
                     const char *state_key, const adb__ids *ids,
                     adb__arm_stats *stats, int *hits);

/* Deletes an agent's patterns whose id starts with prefix, last written
 * before before_ms and without an embedding; *deleted (may be NULL) their
 * number. For bookkeeping patterns of the layers above (api_personalizer.c). */
int adb__pattern_expire(adb *db, const char *agent, const char *prefix,
                        int64_t before_ms, int64_t *deleted);

/* Sessions in the shared namespace (agent NULL, the public adb_session_*)
 * or in an agent's own (agent-scoped API keys). */
int adb__session_put(adb *db, const char *agent, const char *session_id,
                     const char *json, int ttl_s);
int adb__session_get(adb *db, const char *agent, const char *session_id,
                     char **json_out);
int adb__session_delete(adb *db, const char *agent, const char *session_id);

/* Validation helpers with messages. */
/* The length of a valid id (1..ADB_ID_MAX bytes of [A-Za-z0-9._:@-]),
 * 0 for an invalid one or NULL. */
size_t adb__id_len(const char *s);
int adb__check_id(adb *db, const char *what, const char *id);
/* ADB_EINVAL "<what> is not valid UTF-8" unless s is (NULL is). */
int adb__check_utf8(adb *db, const char *what, const char *s);
/* Checks an embedding's values and, when the agent has one, its dimension;
 * writes nothing. */
int adb__check_embedding(adb *db, adb__agent *a, const float *v, int dim);
/* Fixes an agent's dimension to dim if it has none yet (call once the
 * request is accepted); EINVAL when another dimension got there first. */
int adb__fix_embedding_dim(adb *db, adb__agent *a, int dim);

/* Deferred activation (admin.c; the store's event_defer): op and *state
 * are ADB__DEFER_* (store.h). For the Personalizer routes. */
int adb__event_defer(adb *db, const char *agent_id, const char *event_id,
                     int op, int *state);
/* The agent's decision log (admin.c): the times of its first and last
 * decision (ADB_ENOTFOUND when it has none), and the deletion of the part
 * whose reward window has ended (the store's log_delete, after the
 * handle's queued writes are committed). */
int adb__log_range(adb *db, const char *agent_id, int64_t *first_ms,
                   int64_t *last_ms);
int adb__log_delete(adb *db, const char *agent_id, adb__log_deleted *out);

#endif
