/*
 * store.h — the durable store interface (SQLite, PostgreSQL).
 *
 * A backend is a static const adb__store_methods table, chosen by URL
 * scheme in store.c. Every method is thread-safe and returns ADB_OK or a
 * negative ADB_E* code; the text of the last failure is adb__store_errmsg().
 * ADB_EUNAVAIL means the store could not be reached or refused for a while
 * (connection lost, busy, serialization failure, deadlock, disk full):
 * retry later. ADB_ESTORE is any other failure, taken by write_batch's
 * caller as permanent for the data it was given (a constraint, an encoding,
 * a value out of range): retrying the same rows cannot succeed.
 *
 * Strings in records are NUL-terminated; pointers in records passed to a
 * method are borrowed for the call. Records a method fills with malloc'd
 * pointers say so and are freed with the matching *_free helper.
 */
#ifndef ADB_STORE_H
#define ADB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "agentdb.h"
#include "bandit.h"

typedef struct adb__store adb__store;
struct adb__log_row; /* offline.h */

/* One arm of a policy as read from the store (transient). */
typedef struct adb__policy_arm {
  char action[ADB_ID_MAX + 1];
  adb__arm_stats s;
} adb__policy_arm;

/* All arms of one (agent, user, state_key). */
typedef struct adb__policy {
  int n, cap;
  adb__policy_arm *arms; /* malloc'd; adb__policy_free */
} adb__policy;

int adb__policy_push(adb__policy *p, const char *action,
                     const adb__arm_stats *s);
void adb__policy_free(adb__policy *p);

#define ADB__FEATURES_MAX 192
typedef struct adb__decision_rec {
  char agent[ADB_ID_MAX + 1], event_id[ADB_ID_MAX + 1];
  char user[ADB_ID_MAX + 1], state_key[ADB_STATE_KEY_LEN + 1];
  char action[ADB_ID_MAX + 1];
  double propensity;
  char *context_json;    /* JSON object text ("{}" when none) */
  char *candidates_json; /* JSON array of ids */
  char model[32];        /* e.g. "beta-ts/1" */
  int64_t ts_ms;
  /* The features a linear decision used (linear.h), stored with it in
   * decision_features; n_features 0 for none. Not filled by decision_get. */
  int n_features;
  uint8_t features[ADB__FEATURES_MAX];
  /* The ranking answered, as JSON [["action", score], ...] with exact
   * scores, or NULL; kept for decisions with a client event id so that a
   * retried decide can answer it again. */
  char *ranking_json;
  int client_id; /* the event id came from the client: it may repeat */
  /* Filled by write_batch: 1 if this row was stored, 0 if the event id
   * was already taken (by an earlier decision, or an earlier copy in the
   * batch), which then stays the decision of that event. */
  int inserted;
} adb__decision_rec;

typedef struct adb__reward_rec {
  char agent[ADB_ID_MAX + 1], reward_id[ADB_ID_MAX + 1];
  char event_id[ADB_ID_MAX + 1]; /* "" for a direct reward */
  char user[ADB_ID_MAX + 1], state_key[ADB_STATE_KEY_LEN + 1];
  char action[ADB_ID_MAX + 1];
  double reward;
  int64_t reward_micro; /* adb__reward_to_micro(reward) */
  char body_hash[65];   /* hex SHA-256 of the request's canonical body */
  char *signals_json;   /* JSON object or NULL */
  int64_t ts_ms;
  /* The decision of event_id is not visible yet: user, state_key and action
   * are unknown (""), and the reward waits in pending_rewards until
   * pending_sweep joins it to its decision or expires it at expires_at_ms.
   * The reward id is taken all the same (duplicates and conflicts are
   * answered as for any reward); applied = 1 then means "accepted to
   * wait", and nothing is incremented. */
  int awaiting;
  int64_t expires_at_ms;
  /* Filled by write_batch: */
  int result;  /* ADB_OK or ADB_ECONFLICT (id reused, other body) */
  int applied; /* 1 if newly inserted and applied, 0 if duplicate */
  int late;    /* its decision's window closed first: the default reward was
                * applied instead (or, for a deferred event never activated,
                * nothing), this one never is (applied = 0) */
  double first_reward; /* the reward stored under this id */
} adb__reward_rec;

typedef struct adb__episode_rec {
  char agent[ADB_ID_MAX + 1], episode_id[ADB_ID_MAX + 1];
  char user[ADB_ID_MAX + 1], session[ADB_ID_MAX + 1]; /* session may be "" */
  const float *embedding;
  int dim;
  char action[ADB_ID_MAX + 1];
  double reward;
  char *context_json; /* or NULL */
  int64_t ts_ms;
} adb__episode_rec;

/* Increments to an hourly rollup; latency fields overwrite when >= 0. */
typedef struct adb__metrics_delta {
  char agent[ADB_ID_MAX + 1];
  int64_t hour_ms;
  int64_t decisions, rewards, cache_hits, cache_misses;
  double reward_sum;
  double latency_p50_us, latency_p99_us;
} adb__metrics_delta;

/* A committed posterior change, reported back for the cache: the row's
 * increments and its version after the update. */
typedef struct adb__policy_change {
  char agent[ADB_ID_MAX + 1], user[ADB_ID_MAX + 1];
  char state_key[ADB_STATE_KEY_LEN + 1], action[ADB_ID_MAX + 1];
  adb__arm_stats delta; /* delta.version is the row's new version */
} adb__policy_change;

/* Everything one flush commits, in one transaction: decisions and episodes
 * inserted (ON CONFLICT DO NOTHING), rewards inserted ON CONFLICT DO
 * NOTHING, and for each newly inserted reward the increments to its
 * (agent,user,state,action) row and to the agent-wide row (user '*'),
 * merged per row and applied in key order (no deadlocks between batches).
 * All or nothing: on failure nothing is committed and outputs are unset. */
typedef struct adb__batch {
  /* Set by the caller, the same on every retry of the same batch and
   * unique otherwise: a backend whose commit can be ambiguous (PostgreSQL:
   * the connection may die after COMMIT reached the server) writes it in
   * the transaction, and a retry that finds it knows that the earlier
   * attempt committed (see recovered). */
  char batch_id[48];
  adb__decision_rec *decisions;
  int n_decisions;
  adb__reward_rec *rewards;
  int n_rewards;
  adb__episode_rec *episodes;
  int n_episodes;
  adb__metrics_delta *metrics;
  int n_metrics;
  /* Output, malloc'd by write_batch (free with free()): */
  adb__policy_change *changes;
  int n_changes;
  /* Output: 1 when an earlier attempt of this batch had committed (its
   * answer was lost). The outputs then describe that commit: the rewards
   * it inserted are applied = 1, nothing was incremented twice, and each
   * change has a zero delta with the row's version after a zero
   * increment, so that a cache entry older than the lost commit shows a
   * gap and is dropped (cache.h policy_apply). Metrics were committed by
   * the earlier attempt. */
  int recovered;
} adb__batch;

typedef struct adb__action_rec {
  char id[ADB_ID_MAX + 1];
  int disabled;
  const float *embedding; /* borrowed on put; NULL on list */
  int dim;
  const char *metadata_json;
} adb__action_rec;

typedef struct adb__user_state_rec {
  char user[ADB_ID_MAX + 1];
  float *embedding; /* get: malloc'd */
  int dim;
  char *context_json; /* get: malloc'd */
  int64_t updated_at_ms;
} adb__user_state_rec;

/* Kinds of rows that carry an embedding, for vectors_scan. */
enum { ADB__VEC_EPISODES = 0, ADB__VEC_USERS = 1, ADB__VEC_PATTERNS = 2 };

/* One row with an embedding, as vectors_scan hands it to its callback;
 * every pointer is valid during the callback only. */
typedef struct adb__vec_row {
  int kind;           /* ADB__VEC_* */
  const char *agent;  /* "" for user states */
  const char *id;     /* episode, user or pattern id */
  const char *user;   /* episodes: the user; "" otherwise */
  const char *action; /* episodes: the action; patterns: the key */
  double reward;      /* episodes: the reward; patterns: confidence */
  const float *embedding;
  int dim;
  int64_t ts_ms; /* episodes: created; users, patterns: updated */
} adb__vec_row;

/* One increment of a linear model (a reward of a decision with features),
 * as lin_scan hands it over; pointers valid during the callback only. */
typedef struct adb__lin_row {
  int64_t seq;  /* insertion order */
  uint64_t xid; /* PostgreSQL: the writing transaction; SQLite: 0 */
  const char *reward_id, *action;
  double reward;
  int64_t ts_ms;
  const void *features;
  size_t n_features;
} adb__lin_row;

/* A linear model's checkpoint: its sums (state, linear.c adb__lin_save)
 * and the watermark they include (see policy_linear.c). */
typedef struct adb__lin_ckpt {
  char config[128];
  int64_t n, after_seq;
  uint64_t min_xid;
  void *seen; /* int64 seqs; get: malloc'd */
  size_t n_seen_bytes;
  void *state; /* get: malloc'd */
  size_t n_state;
} adb__lin_ckpt;
/* Admin operations (rare; each a transaction of its own). */

/* Deferred events (event_defer). */
enum { ADB__DEFER_GET = 0, ADB__DEFER_MARK = 1, ADB__DEFER_ACTIVATE = 2 };
enum { ADB__DEFER_NONE = 0, ADB__DEFER_WAITING = 1, ADB__DEFER_ACTIVE = 2 };

/* What log_delete deleted: decisions and rewards (defaults included), all
 * made before upto_ms. */
typedef struct adb__log_deleted {
  int64_t upto_ms, decisions, rewards;
} adb__log_deleted;

/* One cache key's parts: a policy entry (agent, user, state_key). */
typedef struct adb__cell {
  char agent[ADB_ID_MAX + 1], user[ADB_ID_MAX + 1];
  char state_key[ADB_STATE_KEY_LEN + 1];
} adb__cell;

/* What the store holds about one user, and (user_data with erase) what an
 * erasure removed. Arrays malloc'd: adb__user_data_free. */
typedef struct adb__user_data {
  adb_user_summary sum; /* counts per table; sum.agents malloc'd too */
  /* Distinct (agent, state_key) of the user's policies, decisions and
   * rewards: the policy cache keys that may exist for the user. */
  adb__cell *cells;
  int n_cells;
  /* Distinct non-empty session ids of the user's episodes. */
  char (*sessions)[ADB_ID_MAX + 1];
  int n_sessions;
  /* Erase: the agent-wide ('*') rows decremented by the user's own rows,
   * sorted by key, delta negative and version the row's new one. */
  adb__policy_change *changes;
  int n_changes;
} adb__user_data;

/* Frees the arrays, sum.agents included. */
void adb__user_data_free(adb__user_data *u);
int adb__agents_push(adb__user_data *u, const char *agent);

/* The SQL of the admin operations, shared by both backends: parameters are
 * $1, $2, ... numbered in order of first use, which SQLite reads as named
 * parameters with those indexes and PostgreSQL as its own. Lists end with
 * NULL. Every table with a user_id column is in adb__sql_user_delete, every
 * table with an agent_id column in adb__sql_agent_learning (plus the config
 * and catalogue in adb__sql_agent_config): a new table must join them. */
extern const char adb__sql_agents_list[];    /* $1 after, $2 limit */
extern const char adb__sql_agent_exists[];   /* $1 agent */
extern const char adb__sql_agent_cells[];    /* $1 agent: user, state_key */
extern const char adb__sql_action_delete[];  /* $1 agent, $2 action */
extern const char adb__sql_pattern_expire[]; /* $1 agent, $2 prefix, $3 ms */
extern const char *const adb__sql_agent_learning[]; /* $1 agent */
extern const char *const adb__sql_agent_config[];   /* $1 agent */
/* $1 user: decisions, rewards, episodes, policy rows, state, sessions */
extern const char adb__sql_user_counts[];
extern const char adb__sql_user_cells[];    /* agent, state_key */
extern const char adb__sql_user_agents[];   /* agent */
extern const char adb__sql_user_sessions[]; /* session */
/* agent, state_key, action, n, sum_micro, sum_sq, sum_hi of the user's
 * rows */
extern const char adb__sql_user_rows[];
/* $1 n, $2 hi and $3 lo of the negated sum, $4 sum_sq, $5 now, $6 agent,
 * $7 state, $8 action: returns the '*' row's new version */
extern const char adb__sql_star_subtract[];
extern const char *const adb__sql_user_delete[]; /* $1 user */
/* Deferred events: $1 agent, $2 event, $3 now (event_defer; the update
 * uses $3 first, so SQLite binds these by name). */
extern const char adb__sql_defer_mark[];
extern const char adb__sql_defer_activate[];
extern const char adb__sql_defer_get[]; /* activated_at_ms (NULL or not) */
/* $1 agent: min and max created_at_ms of its decisions (NULL for none). */
extern const char adb__sql_log_range[];
/* log_delete, $1 agent and $2 upto_ms: the rows keyed by the decisions to
 * delete (run first), the rewards, the decisions, then the deferral marks
 * left with no decision. */
extern const char *const adb__sql_log_delete_keyed[];
extern const char *const adb__sql_log_delete_rewards[];
extern const char adb__sql_log_delete_decisions[];
extern const char adb__sql_log_delete_marks[];
int adb__cells_push(adb__cell **v, int *n, const char *agent, const char *user,
                    const char *state_key);
int adb__sessions_push(adb__user_data *u, const char *session);
int adb__change_push(adb__user_data *u, const char *agent,
                     const char *state_key, const char *action,
                     const adb__arm_stats *delta);

typedef struct adb__store_methods {
  int version;        /* 1 */
  const char *scheme; /* "sqlite", "postgresql" */
  int (*open)(const char *url, const adb_config *cfg, adb__store **out,
              char *err, size_t errlen);
  void (*close)(adb__store *st);
  const char *(*errmsg)(adb__store *st);
  int (*ping)(adb__store *st);

  int (*agent_put)(adb__store *st, adb_agent_config *cfg); /* sets times */
  int (*agent_get)(adb__store *st, const char *agent, adb_agent_config *out);
  int (*agent_counters)(adb__store *st, const char *agent,
                        adb_agent_counters *out);

  int (*actions_put)(adb__store *st, const char *agent,
                     const adb__action_rec *a, int n);
  /* Calls fn for each action of the agent; embedding not filled. */
  int (*actions_list)(adb__store *st, const char *agent,
                      void (*fn)(void *arg, const adb__action_rec *a),
                      void *arg);

  /* All arms of a policy; an unknown policy is ADB_OK with p->n == 0. */
  int (*policy_get)(adb__store *st, const char *agent, const char *user,
                    const char *state_key, adb__policy *p);
  int (*write_batch)(adb__store *st, adb__batch *b);
  /* In one transaction: joins every awaiting reward whose decision is now
   * stored (each exactly once, also with several processes sweeping),
   * logging it and adding its increments; applies the agent's
   * default_reward to each decision whose reward window ended (plus
   * ADB__DEFAULT_LAG_MS) with no reward (once: event_outcomes), except
   * that a decision whose event is deferred and not activated
   * (event_defer) gets its outcome claimed and no reward, and the marks of
   * the decisions closed are deleted; and deletes the awaiting rewards
   * whose expires_at_ms <= now_ms.
   * out->rewards (malloc'd, each signals_json malloc'd) and out->changes
   * (malloc'd) describe the joined and default rewards (a default's
   * reward_id starts with '~'); *expired counts the deleted ones. May be
   * NULL. */
  int (*pending_sweep)(adb__store *st, int64_t now_ms, adb__batch *out,
                       int64_t *expired);
  /* out's json pointers are malloc'd: adb__decision_rec_free. */
  int (*decision_get)(adb__store *st, const char *agent, const char *event_id,
                      adb__decision_rec *out);

  int (*user_state_put)(adb__store *st, const adb__user_state_rec *u);
  int (*user_state_get)(adb__store *st, const char *user,
                        adb__user_state_rec *out);
  int (*pattern_put)(adb__store *st, const char *agent, const adb_pattern *p);
  int (*pattern_get)(adb__store *st, const char *agent, const char *id,
                     adb_pattern *out);
  /* Deletes the agent's patterns whose id starts with prefix (an id's
   * characters are all below '~'), last written before before_ms and
   * without an embedding (so in no vector index); *deleted their number. */
  int (*pattern_expire)(adb__store *st, const char *agent, const char *prefix,
                        int64_t before_ms, int64_t *deleted);
  int (*metrics_get)(adb__store *st, const char *agent, int64_t from_ms,
                     int64_t to_ms, adb_metrics_row **rows, int *n);
  /* Calls fn for each row of the kind that has an embedding and whose time
   * (ts_ms above) is >= since_ms, in (time, agent, id) order. Rows are read
   * in pages with no connection held while fn runs, so fn may call the
   * store. A nonzero return of fn stops the scan and is returned. May be
   * NULL in a backend that lacks it (the indexes then start empty). */
  int (*vectors_scan)(adb__store *st, int kind, int64_t since_ms,
                      int (*fn)(void *arg, const adb__vec_row *row), void *arg);

  /* Linear models (policy_linear.c). lin_scan calls fn, in seq order, for
   * the agent's linear_rewards rows not yet seen: SQLite those with seq >
   * after_seq; PostgreSQL those whose xid >= min_xid (the caller skips
   * the seqs it has applied). *snap_xmin gets the xmin of the snapshot of
   * the first page (every row with a lower xid is settled: PostgreSQL),
   * or UINT64_MAX (SQLite). Pages of rows, no connection held during fn;
   * a nonzero return of fn stops the scan and is returned. */
  int (*lin_scan)(adb__store *st, const char *agent, int64_t after_seq,
                  uint64_t min_xid, uint64_t *snap_xmin,
                  int (*fn)(void *arg, const adb__lin_row *row), void *arg);
  int (*lin_checkpoint_put)(adb__store *st, const char *agent,
                            const adb__lin_ckpt *c);
  /* ADB_ENOTFOUND when there is none; free c->seen and c->state. */
  int (*lin_checkpoint_get)(adb__store *st, const char *agent,
                            adb__lin_ckpt *c);
  /* Calls fn for each action of the agent that has an embedding. */
  int (*action_vectors)(adb__store *st, const char *agent,
                        void (*fn)(void *arg, const char *action,
                                   const float *v, int dim),
                        void *arg);
  /* Admin. agents_list: up to limit agent ids > after ("" = from the
   * start), in id order. */
  int (*agents_list)(adb__store *st, const char *after, int limit,
                     char (*ids)[ADB_ID_MAX + 1], int *n);
  /* Deletes every row of the agent in every table — or, with keep_config,
   * every row but its config and catalogue (a reset of its learning) — in
   * one transaction; *cells (malloc'd) gets the (user, state_key) of every
   * policy cache key that may exist for it. ADB_ENOTFOUND for an unknown
   * agent. */
  int (*agent_delete)(adb__store *st, const char *agent, int keep_config,
                      adb__cell **cells, int *n_cells);
  /* Deletes one action of the catalogue; ADB_ENOTFOUND when absent. */
  int (*action_delete)(adb__store *st, const char *agent, const char *action);
  /* Reads what the store holds about user into *out; with erase, deletes
   * it all in the same transaction: every row whose user_id is user in
   * every table (and, on PostgreSQL, the reward_ids of its rewards), after
   * subtracting the user's own policy rows from the agent-wide rows. */
  int (*user_data)(adb__store *st, const char *user, int erase,
                   adb__user_data *out);
  /* Sets the agent's embedding_dim to dim if it is 0, in one conditional
   * update of that column alone (no other column is written, so a
   * concurrent agent_put is never reverted); *stored gets the dimension
   * the agent has afterwards: dim, or the one a concurrent first embedding
   * set. ADB_ENOTFOUND for an unknown agent. */
  int (*agent_fix_dim)(adb__store *st, const char *agent, int dim, int *stored);
  /* The agent's decision log (offline.h): calls fn for each decision with
   * from_ms <= time < to_ms, in (time, id) order, joined with its rewards
   * (count, sum, first time; the default reward counts as one, marked
   * ADB_LOG_DEFAULT), its features blob, the user embedding it saw and
   * its candidates' catalogue embeddings. Keyset pages of ADB__LOG_PAGE
   * rows, no connection held while fn runs, so memory stays constant and
   * fn may call the store. A nonzero return of fn stops the scan and is
   * returned. */
  int (*log_scan)(adb__store *st, const char *agent, int64_t from_ms,
                  int64_t to_ms,
                  int (*fn)(void *ctx, const struct adb__log_row *row),
                  void *ctx);

  /* Deferred activation (Personalizer's deferActivation): op
   * ADB__DEFER_MARK records event_id of agent as deferred (before its
   * decision is made; marking it again changes nothing),
   * ADB__DEFER_ACTIVATE activates a marked event (an event never marked is
   * left alone), ADB__DEFER_GET only reads. *state (may be NULL) gets the
   * event's state afterwards (ADB__DEFER_*). pending_sweep claims the
   * outcome of a decision whose window ended while its event was marked
   * and not activated, and applies no default reward to it; it deletes the
   * marks of the decisions it closes (their state is then NONE again). */
  int (*event_defer)(adb__store *st, const char *agent, const char *event_id,
                     int op, int64_t now_ms, int *state);
  /* The times of the agent's first and last logged decision;
   * ADB_ENOTFOUND when it has none. */
  int (*log_range)(adb__store *st, const char *agent, int64_t *first_ms,
                   int64_t *last_ms);
  /* Deletes, in one transaction, the agent's log whose reward window has
   * ended: its decisions made before out->upto_ms (now_ms less its
   * reward_window_s and ADB__DEFAULT_LAG_MS, and never past the point its
   * default rewards were swept to), their rewards, outcomes, deferral marks
   * and logged features, and its direct rewards before upto_ms; on
   * PostgreSQL also the exactly-once memory of those reward ids and event
   * ids. What the model is made of stays: posteriors, linear_rewards and
   * checkpoints, settings, catalogue, episodes, rollups. ADB_ENOTFOUND for
   * an unknown agent. */
  int (*log_delete)(adb__store *st, const char *agent, int64_t now_ms,
                    adb__log_deleted *out);
} adb__store_methods;

/* Generic handle header: every backend's handle starts with this. */
struct adb__store {
  const adb__store_methods *m;
};

/* Opens the backend named by the URL's scheme and runs its migrations. */
int adb__store_open(const char *url, const adb_config *cfg, adb__store **out,
                    char *err, size_t errlen);
void adb__store_close(adb__store *st);
const char *adb__store_errmsg(adb__store *st);

void adb__decision_rec_free(adb__decision_rec *d);
void adb__user_state_rec_free(adb__user_state_rec *u);
void adb__pattern_free(adb_pattern *p);

/* Shared checks of records handed to a backend, run before touching the
 * database (defence in depth: the coordinator validates first). A
 * fixed-size string field must be NUL-terminated and, for an id, not
 * empty; an embedding has 0..ADB_MAX_EMBEDDING_DIM values. */
int adb__field_ok(const char *f, size_t size, int id);
#define ADB__ID_OK(f) adb__field_ok((f), sizeof(f), 1)
#define ADB__STR_OK(f) adb__field_ok((f), sizeof(f), 0)
int adb__dim_ok(const float *v, int dim);
int adb__agent_rec_ok(const adb_agent_config *c);
int adb__pattern_rec_ok(const adb_pattern *p);
/* Agent config columns both backends store the same way: the algorithm's
 * name, and the context keys as a JSON array (malloc'd; NULL if invalid),
 * parsed back into cfg (ADB_ECORRUPT if the text is not such an array). */
const char *adb__algo_name(adb_algorithm a);
char *adb__context_keys_json(const adb_agent_config *cfg);
int adb__context_keys_parse(adb_agent_config *cfg, const char *text);

/* How long after the end of its reward window a decision gets its default
 * reward: room for decisions still in a write queue (their time is that of
 * the decide, their commit later), which the sweep's watermark would pass. */
#define ADB__DEFAULT_LAG_MS 5000

/* The reward id of the default reward of event_id: '~' (never in a client
 * id) and the first 64 hex digits of its SHA-256. */
void adb__default_reward_id(const char *event_id, char out[ADB_ID_MAX + 1]);

/* ADB_OK, or ADB_EINVAL with the offender ("reward #3") written to what. */
int adb__batch_validate(const adb__batch *b, char *what, size_t cap);

/* Shared by backends: merges the increments of newly applied rewards
 * (applied == 1) into per-row changes, for the row of the user and the row
 * of '*', sorted by (agent, user, state_key, action). *out malloc'd. */
int adb__batch_merge(const adb__batch *b, adb__policy_change **out, int *n);

/* The text of the SQLite store's i-th prepared statement, NULL past the
 * last: test_store checks that none of them scans a table that grows. */
const char *adb__sqlite_stmt_sql(int i);

#endif
