/*
 * agentdb.h — the whole public contract of libagentdb.
 *
 * AgentDB is the storage and decision layer for reinforcement-learning agents
 * in a media recommender: it picks items by Thompson sampling over Bayesian
 * posteriors kept per (agent, user, state, action), learns from rewards
 * exactly once, and keeps decisions, rewards, episodes, user states and
 * learned patterns durably.
 *
 * Conventions (after SQLite and libuv):
 *  - Every fallible call returns ADB_OK (0) or a negative ADB_E* code; the
 *    detailed message of the last failure on a handle is adb_errmsg(db),
 *    valid until the next call on that handle from the same thread.
 *  - Handles are opaque; adb_close(NULL) is a no-op.
 *  - Strings passed in are borrowed for the duration of the call only.
 *  - Structs passed in may be filled with designated initializers; a zero
 *    field means "the documented default".
 *  - Ids are 1..128 characters of [A-Za-z0-9._:@-].
 *  - All functions are thread-safe on one adb handle.
 */
#ifndef AGENTDB_H
#define AGENTDB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ADB_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */

/* X(name, code, message): the one table of error codes. */
#define ADB_ERRNO_MAP(X)                                                       \
  X(OK, 0, "ok")                                                               \
  X(EINVAL, -1, "invalid argument")                                            \
  X(ENOMEM, -2, "out of memory")                                               \
  X(ENOTFOUND, -3, "not found")                                                \
  X(ECONFLICT, -4, "conflict: same id with a different body")                  \
  X(EFULL, -5, "write queue full")                                             \
  X(ESTORE, -6, "store error")                                                 \
  X(EUNAVAIL, -7, "store unavailable")                                         \
  X(ECACHE, -8, "cache error")                                                 \
  X(ETIMEDOUT, -9, "timed out")                                                \
  X(ECLOSED, -10, "handle is closing")                                         \
  X(EURL, -11, "unsupported or malformed URL")                                 \
  X(EIO, -12, "I/O error")                                                     \
  X(ECORRUPT, -13, "stored data is corrupt")

typedef enum adb_errno {
#define ADB__ERR_ENUM(name, code, msg) ADB_##name = code,
  ADB_ERRNO_MAP(ADB__ERR_ENUM)
#undef ADB__ERR_ENUM
} adb_errno;

/* Static text for an error code; never NULL. */
const char *adb_strerror(int code);
/* "ADB_EINVAL" etc.; never NULL. */
const char *adb_err_name(int code);

/* ---------------------------------------------------------------- limits */

#define ADB_ID_MAX 128          /* longest id, in bytes */
#define ADB_STATE_KEY_LEN 64    /* hex SHA-256 */
#define ADB_MAX_CONTEXT_KEYS 16 /* context keys that form a state */
#define ADB_MAX_CANDIDATES 1000 /* candidates in one decision */
#define ADB_MAX_EMBEDDING_DIM 4096

/* True when s is a valid id: 1..128 chars of [A-Za-z0-9._:@-]. */
int adb_id_valid(const char *s);

/* ---------------------------------------------------------------- handle */

typedef struct adb adb;

typedef enum adb_durability {
  ADB_DURABILITY_SYNC = 0, /* answer a write after its batch committed */
  ADB_DURABILITY_ASYNC = 1 /* answer at enqueue; a flush interval may be lost */
} adb_durability;

typedef struct adb_config {
  const char *store_url; /* default "sqlite://./data/agentdb.db";
                            "sqlite://:memory:" for a private in-memory db */
  const char *cache_url; /* default "mem://" */
  adb_durability durability;
  int flush_interval_ms;  /* flush at least this often; default 2 */
  int batch_size;         /* flush when this many writes wait; default 4096 */
  int queue_capacity;     /* writes waiting before ADB_EFULL; default 100000 */
  int write_timeout_ms;   /* sync writer gives up after; default 30000 */
  int cache_ttl_s;        /* cache entry TTL; default 3600 */
  size_t cache_max_bytes; /* in-process cache bound; default 256 MiB */
  int pool_size;          /* store connections; default 4 */
  uint64_t seed;          /* RNG seed; 0 = from the OS */
  /* Cold start: a user with no policy but an embedding borrows the
   * posteriors of its cold_start_k nearest users; default 10, -1 = off. */
  int cold_start_k;
  /* Where vector indexes are snapshotted for a fast restart; NULL = next
   * to a SQLite store file, else none (rebuilt from the store). */
  const char *index_dir;
  /* The clock (ms since the epoch) this handle stamps its decisions and
   * rewards with, and that linear models decay against
   * (decay_half_life_s); NULL = the system clock. For simulations and
   * replays that run faster than real time (agentdb simulate --workload
   * embed maps each round onto one second of it). It must not go
   * backwards, and should not run ahead of the system clock: reward
   * windows and default rewards are still swept by the system clock. */
  int64_t (*clock_ms)(void *arg);
  void *clock_arg;
} adb_config;

/* Opens the store (running migrations) and the cache, starts the flush
 * worker. On failure *out is NULL and, if errbuf is not NULL, the reason is
 * written there. */
int adb_open(const adb_config *cfg, adb **out, char *errbuf, size_t errlen);

/* Drains the write queue (every queued write is committed or, if the store
 * stays down past write_timeout_ms, reported lost on stderr), stops the
 * worker and frees everything. NULL is a no-op. Returns ADB_OK when every
 * queued write was committed (or refused by the store, which its writer
 * was told), else ADB_EUNAVAIL with how many were lost in adb_errmsg(NULL)
 * (the handle is freed either way). */
int adb_close(adb *db);

/* Message of the last failure on this handle in this thread; never NULL. */
const char *adb_errmsg(adb *db);

/* Blocks until every write queued before the call is committed (or
 * refused by the store), at most write_timeout_ms: then ADB_ETIMEDOUT, and
 * the writes stay queued. */
int adb_flush(adb *db);

/* ---------------------------------------------------------------- agents */

typedef enum adb_algorithm {
  ADB_ALGO_BETA = 0,     /* Beta-Bernoulli, rewards in [0,1] */
  ADB_ALGO_GAUSSIAN = 1, /* Normal-Inverse-Gamma, unbounded rewards */
  ADB_ALGO_LINEAR = 2    /* linear Thompson sampling over features */
} adb_algorithm;

/* Engagement reward: the weighted mean, over the signals present, of
 *   watched fraction clamp01(watch_time_s / duration_s),
 *   clicked (0 or 1),
 *   clamp01((rating - 1) / 4)   (ratings 1..5),
 * i.e. sum(w_s * x_s) / sum(w_s), so it lies in [0, 1]. Defaults: watch
 * 0.7, click 0.1, rating 0.2. */
typedef struct adb_reward_weights {
  double watch, click, rating;
} adb_reward_weights;

typedef struct adb_agent_config {
  char id[ADB_ID_MAX + 1];
  adb_algorithm algorithm;
  /* Beta prior (default 1, 1). */
  double prior_alpha, prior_beta;
  /* Normal-Inverse-Gamma prior (default mu 0, kappa 1, a 1, b 1). */
  double prior_mu, prior_kappa, prior_a, prior_b;
  int n_context_keys;
  char context_keys[ADB_MAX_CONTEXT_KEYS][ADB_ID_MAX + 1];
  int embedding_dim; /* 0 = fixed by the first embedding received */
  int simhash_bits;  /* 0 = off, else 1..64 bits of the embedding */
  adb_reward_weights reward_weights;
  /* Pseudo-observations a new user borrows from the agent-wide posterior
   * (user '*'); default 10 (from adb_agent_config_init), 0 or negative =
   * none. */
  double fallback_strength;
  double decay_half_life_s; /* 0 = no decay (reserved) */
  double reward_window_s;   /* default 86400 */
  double default_reward;    /* reward given when the window passes; default 0 */
  /* Linear model (algorithm linear; see README "Linear agents"). crosses:
   * a set of ADB_CROSS_* bits, default all; lambda: ridge prior precision,
   * default 1; v: exploration scale (posterior sd multiplier), default
   * 0.1. */
  int linear_crosses;
  double linear_lambda, linear_v;
  int64_t created_at_ms, updated_at_ms; /* set by the store */
} adb_agent_config;

/* The linear model's crosses (VW's -q): user x action embedding, context x
 * action embedding, the action embedding alone, a bias per action. */
#define ADB_CROSS_USER_ACTION 1
#define ADB_CROSS_CONTEXT_ACTION 2
#define ADB_CROSS_ACTION 4
#define ADB_CROSS_BIAS 8
#define ADB_CROSS_ALL 15

/* Fills every field with its default (id left empty). */
void adb_agent_config_init(adb_agent_config *cfg);

/* Creates or replaces an agent. Fields validated; *cfg updated with the
 * stored values (timestamps). */
int adb_agent_put(adb *db, adb_agent_config *cfg);
int adb_agent_get(adb *db, const char *agent_id, adb_agent_config *out);

typedef struct adb_agent_counters {
  int64_t decisions, rewards, actions;
  double reward_sum;
} adb_agent_counters;
int adb_agent_counters_get(adb *db, const char *agent_id,
                           adb_agent_counters *out);

/* --------------------------------------------------------------- actions */

typedef struct adb_action {
  const char *id;
  const float *embedding; /* may be NULL */
  int embedding_dim;
  const char *metadata_json; /* a JSON object or NULL */
  int disabled;              /* disabled actions are never chosen */
} adb_action;

/* Creates or replaces actions of an agent's catalogue in one transaction.
 * Once an agent has a catalogue, decisions only choose among catalogue
 * actions that are not disabled; with no catalogue any candidate goes. */
int adb_actions_put(adb *db, const char *agent_id, const adb_action *actions,
                    int n);

/* ------------------------------------------------------------- decisions */

typedef struct adb_kv {
  const char *key, *value;
} adb_kv;

typedef struct adb_decide_req {
  const char *agent_id;
  const char *user_id;
  const char *const *candidates;
  int n_candidates; /* 1..ADB_MAX_CANDIDATES */
  const adb_kv *context;
  int n_context;
  const float *embedding; /* optional */
  int embedding_dim;
  int k;                /* ranking length; 0 = 1 */
  const char *event_id; /* optional; generated when NULL */
} adb_decide_req;

typedef struct adb_ranked {
  char action[ADB_ID_MAX + 1];
  double score; /* the Thompson sample */
} adb_ranked;

typedef struct adb_decision {
  char event_id[ADB_ID_MAX + 1];
  char action[ADB_ID_MAX + 1];
  double propensity; /* P(Thompson sampling picks action) */
  char state_key[ADB_STATE_KEY_LEN + 1];
  adb_ranked *ranking; /* caller's buffer, may be NULL */
  int ranking_cap;     /* its capacity */
  int n_ranking;       /* entries written */
} adb_decision;

/* Chooses an action and logs the decision (asynchronously). A user with no
 * history starts from the agent-wide posterior. With req->event_id, the
 * call returns once the decision is stored, and an event id that already
 * has a decision (a retry, through any handle) answers that decision
 * (action, propensity, ranking) rather than a new draw; ADB_ECONFLICT if
 * it is another user's. */
int adb_decide(adb *db, const adb_decide_req *req, adb_decision *out);

/* --------------------------------------------------------------- rewards */

typedef struct adb_signals {
  int has_watch, has_click, has_rating;
  double watch_time_s, duration_s; /* watched fraction = watch/duration */
  int clicked;
  double rating; /* 1..5 */
} adb_signals;

typedef struct adb_reward_req {
  const char *agent_id;
  const char *reward_id; /* unique per agent; retries reuse it */
  /* Either the decision it rewards ... */
  const char *event_id;
  /* ... or, without a decision, the policy cell directly. */
  const char *user_id, *action;
  const char *state_key; /* or computed from context */
  const adb_kv *context;
  int n_context;
  /* The reward, or signals to compute it from. */
  int has_reward;
  double reward;
  const adb_signals *signals;
} adb_reward_req;

typedef struct adb_reward_result {
  double reward; /* the reward applied (or first applied) */
  int applied;   /* 0 for a duplicate of an earlier reward */
  int pending;   /* async mode: queued, not yet committed; or awaiting */
  /* The reward's event_id is not a visible decision yet (it may still be
   * in another replica's write queue): the reward is stored durably and is
   * applied exactly once when the decision appears, or dropped (counted in
   * rewards_expired) if none appears within the agent's reward_window_s. */
  int awaiting_decision;
  /* The decision's reward window had closed and its default_reward was
   * applied instead: this reward is kept out (never applied, applied = 0);
   * its reward_id stays taken. */
  int late;
} adb_reward_result;

/* Records a reward and applies it to the posterior exactly once per
 * reward id. Sync mode returns after commit; ADB_ECONFLICT when the id was
 * used with a different body; ADB_EFULL when the write queue is full. A
 * reward whose event is not a visible decision yet (one made through
 * another handle is visible once that handle has flushed it) is stored to
 * await it (out->awaiting_decision) and applied once the decision is
 * stored, or dropped at the end of the agent's reward_window_s. */
int adb_reward(adb *db, const adb_reward_req *req, adb_reward_result *out);

/* Pure: the engagement reward of signals under weights (NULL = defaults);
 * NaN when no signal with a positive weight is present or a value is not
 * finite, or duration_s <= 0 with has_watch. */
double adb_reward_from_signals(const adb_reward_weights *w,
                               const adb_signals *s);

/* -------------------------------------------------------------- episodes */

typedef struct adb_episode {
  const char *episode_id; /* optional; generated when NULL */
  const char *user_id;
  const char *session_id; /* optional */
  const float *embedding;
  int embedding_dim;
  const char *action;
  double reward;
  const char *context_json; /* a JSON object or NULL */
} adb_episode;

/* Queues episodes for the store (durably, as rewards). */
int adb_episodes_record(adb *db, const char *agent_id, const adb_episode *eps,
                        int n);

/* --------------------------------------------------------- vector search */

/* One nearest neighbour. For episodes: id is the episode id, with its user,
 * action and reward; for users: id is the user id; for patterns: id is the
 * pattern id, action its key and reward its confidence. score is the
 * cosine similarity (higher is closer). */
typedef struct adb_hit {
  char id[ADB_ID_MAX + 1];
  char user_id[ADB_ID_MAX + 1];
  char action[ADB_ID_MAX + 1];
  double reward;
  double score;
} adb_hit;

/* The k (1..1000) episodes of an agent nearest to the embedding, best
 * first, optionally only those of user_id (NULL = all users); *n_out is the
 * number written to hits (capacity k). */
int adb_episode_similar(adb *db, const char *agent_id, const float *embedding,
                        int dim, int k, const char *user_id, adb_hit *hits,
                        int *n_out);
/* The k users whose stored state embeddings are nearest. */
int adb_user_similar(adb *db, const float *embedding, int dim, int k,
                     adb_hit *hits, int *n_out);
/* The k learned patterns of an agent nearest to the embedding. */
int adb_pattern_search(adb *db, const char *agent_id, const float *embedding,
                       int dim, int k, adb_hit *hits, int *n_out);

/* ------------------------------------------------------------ user state */

typedef struct adb_user_state {
  char user_id[ADB_ID_MAX + 1];
  float *embedding; /* get: malloc'd, free with adb_free */
  int embedding_dim;
  char *context_json; /* get: malloc'd, free with adb_free */
  int64_t updated_at_ms;
} adb_user_state;

int adb_user_state_put(adb *db, const char *user_id, const float *embedding,
                       int dim, const char *context_json);
/* On success the caller owns out->embedding and out->context_json. */
int adb_user_state_get(adb *db, const char *user_id, adb_user_state *out);

/* ------------------------------------------------------ learned patterns */

typedef struct adb_pattern {
  char id[ADB_ID_MAX + 1];
  char type[ADB_ID_MAX + 1];
  char key[ADB_ID_MAX + 1];
  char *value_json; /* JSON; get: malloc'd, free with adb_free */
  double confidence;
  int64_t support;
  float *embedding; /* optional; get: malloc'd */
  int embedding_dim;
  int64_t updated_at_ms;
} adb_pattern;

int adb_pattern_put(adb *db, const char *agent_id, const adb_pattern *p);
int adb_pattern_get(adb *db, const char *agent_id, const char *pattern_id,
                    adb_pattern *out);

/* -------------------------------------------------------------- sessions */

/* Session context lives in the cache only, for ttl_s seconds. */
int adb_session_put(adb *db, const char *session_id, const char *json,
                    int ttl_s);
/* *json_out is malloc'd, free with adb_free. */
int adb_session_get(adb *db, const char *session_id, char **json_out);
int adb_session_delete(adb *db, const char *session_id);

/* -------------------------------------------------------------- policies */

typedef struct adb_arm_posterior {
  char action[ADB_ID_MAX + 1];
  int64_t n;              /* rewards observed (user's own) */
  double sum;             /* their sum */
  double alpha, beta;     /* Beta posterior (algorithm beta) */
  double mu, kappa, a, b; /* NIG posterior (algorithm gaussian) */
  double mean;            /* posterior mean reward */
} adb_arm_posterior;

/* Fills up to cap arms of (agent, user, state_key) — the user's own
 * posterior, without the agent-wide fallback; *n_out is the number of arms
 * stored (may exceed cap). user "*" is the agent-wide posterior. */
int adb_policy_get(adb *db, const char *agent_id, const char *user_id,
                   const char *state_key, adb_arm_posterior *arms, int cap,
                   int *n_out);

/* Computes the state key of a context (and embedding) for an agent. */
int adb_state_key(adb *db, const char *agent_id, const adb_kv *context,
                  int n_context, const float *embedding, int dim,
                  char out[ADB_STATE_KEY_LEN + 1]);

/* --------------------------------------------------------------- metrics */

typedef struct adb_metrics_row {
  int64_t hour_ms; /* start of the hour, UTC */
  int64_t decisions, rewards;
  double reward_sum;
  int64_t cache_hits, cache_misses;
  double latency_p50_us, latency_p99_us; /* decide latency */
} adb_metrics_row;

/* Hourly rollups of [from_ms, to_ms); rows malloc'd into *rows_out (free
 * with adb_free). */
int adb_metrics_get(adb *db, const char *agent_id, int64_t from_ms,
                    int64_t to_ms, adb_metrics_row **rows_out, int *n_out);

typedef struct adb_stats {
  int64_t decisions, rewards_applied, rewards_duplicate;
  int64_t queue_depth, queue_capacity;
  int64_t flush_batches, flush_errors, store_errors;
  int64_t cache_hits, cache_misses, cache_errors, cache_evictions;
  int64_t cache_entries, cache_bytes;
  /* Rewards that arrived before their decision: accepted to wait, joined
   * to it later (by this handle's sweep), dropped when their window
   * closed with no decision. */
  int64_t rewards_awaiting, rewards_joined, rewards_expired;
  /* Default rewards applied by this handle's sweep (a decision's window
   * closed with no reward), and rewards refused as late for that. */
  int64_t rewards_defaulted, rewards_late;
} adb_stats;

void adb_stats_get(adb *db, adb_stats *out);

/* ----------------------------------------------------------------- admin */

/* Up to limit (1..1000) agent ids greater than after (NULL or "" = from
 * the first), in id order, into ids; *n_out is the number written. Page by
 * passing the last id of a page as the next after. */
int adb_agents_list(adb *db, const char *after, int limit,
                    char (*ids)[ADB_ID_MAX + 1], int *n_out);

/* Deletes an agent and everything it holds: config, catalogue, policies,
 * decisions, rewards, episodes, patterns and rollups, their cache entries
 * and their vectors. Writes queued before the call are committed first.
 * ADB_ENOTFOUND for an unknown agent. Other replicas drop the agent's
 * cached config within ADB_AGENT_REFRESH_MS (5 s); their vector indexes
 * keep its vectors until they restart (see docs/admin.md). */
int adb_agent_delete(adb *db, const char *agent_id);

/* Resets an agent's learning: deletes its policies (every user's and the
 * agent-wide ones), decisions, rewards, episodes, patterns and rollups,
 * keeping its config and catalogue. */
int adb_agent_reset(adb *db, const char *agent_id);

/* One action of a catalogue as listed. */
typedef struct adb_action_info {
  char id[ADB_ID_MAX + 1];
  int disabled;
  int embedding_dim;   /* 0 = none */
  char *metadata_json; /* NULL or a JSON object; freed with the list */
} adb_action_info;

/* The catalogue of an agent, in id order; *out malloc'd, free it with
 * adb_actions_free(*out, *n_out). */
int adb_actions_list(adb *db, const char *agent_id, adb_action_info **out,
                     int *n_out);
void adb_actions_free(adb_action_info *v, int n);
/* Deletes one action; ADB_ENOTFOUND when the catalogue lacks it. */
int adb_action_delete(adb *db, const char *agent_id, const char *action_id);

/* What the store holds about one user, row counts per table. */
typedef struct adb_user_summary {
  int64_t decisions, rewards, episodes, policy_rows;
  int has_state;                  /* a user_states row */
  int64_t sessions;               /* distinct sessions of the user's episodes */
  int n_agents;                   /* agents the user has rows with */
  char (*agents)[ADB_ID_MAX + 1]; /* malloc'd, free with adb_free */
} adb_user_summary;

/* Inspects a user across tables (a user with no row at all is ADB_OK with
 * zero counts). */
int adb_user_summary_get(adb *db, const char *user_id, adb_user_summary *out);

/* Erases every trace of a user: every row whose user is user_id in every
 * table, the cache entries of its policies, state and sessions, and its
 * vectors (user state and episodes) in this handle's indexes and their
 * on-disk snapshot. The agent-wide ('*') posteriors are decremented by the
 * user's own contributions (the user's policy rows), so they become what
 * they would be had the user never rewarded anything. Writes queued before
 * the call are committed first. *erased (may be NULL) gets the counts of
 * what was removed. */
int adb_user_erase(adb *db, const char *user_id, adb_user_summary *erased);

/* Frees memory that the library handed to the caller. */
void adb_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* AGENTDB_H */
