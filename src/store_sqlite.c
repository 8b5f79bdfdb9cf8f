/*
 * store_sqlite.c — the SQLite store backend: "sqlite://PATH[?options]".
 *
 * Connections. SQLite allows one writer at a time per database file, and in
 * WAL mode readers never wait for it. So a handle holds one writer
 * connection behind a mutex, used by every method that writes (in practice
 * the flush worker's write_batch, and the rarer agent/action/user/pattern
 * puts), and a pool of cfg->pool_size reader connections, each behind its
 * own mutex, used by the lookups. A reader is taken round-robin with
 * trylock, so concurrent lookups spread over the pool and only queue when
 * every reader is busy. "sqlite://:memory:" is a private database that lives
 * in one connection, so there the writer serves reads too. Connections are
 * opened SQLITE_OPEN_NOMUTEX: our mutex is the only one needed.
 *
 * Statements. Every SQL text is a constant in stmt_sql[] below; values are
 * always bound, never formatted into SQL. Each connection prepares a
 * statement the first time it needs it (SQLITE_PREPARE_PERSISTENT) and
 * keeps it until close; a statement is always reset before its connection
 * is released, so no read transaction outlives a call.
 *
 * Write batches. write_batch runs BEGIN IMMEDIATE ... COMMIT on the writer.
 * A reward row is inserted ON CONFLICT DO NOTHING; when that inserted a row
 * the reward is new and is applied, else the stored row decides between a
 * duplicate (same body hash: report the first reward) and a conflict. The
 * increments of the new rewards, merged per row by adb__batch_merge, are
 * then added to rl_policies with an UPSERT (n = n + ?, never a read-modify-
 * write) that also bumps the row's version and returns it. Any failure rolls
 * the whole transaction back, so a batch is committed entirely or not at
 * all, and a retry of the same batch gives the same answer.
 *
 * Durability. journal_mode=WAL with synchronous=FULL (default) syncs the WAL
 * at each commit: a batch reported committed survives power loss. NORMAL
 * (?synchronous=normal) may lose the last commits on power loss, never on a
 * process crash. Disk full or I/O errors make SQLite roll back and return
 * an error; the file stays consistent and the next batch may succeed.
 *
 * Error messages. The text of a failure is kept per thread (so that two
 * threads failing at once do not overwrite each other's message) and, for
 * threads that did not fail, the handle's latest one under a lock.
 */
#include "log_scan.h"
#include "migrations.h"
#include "sqlite_walbuf.h"
#include "store.h"
#include "store_rec.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern const adb__store_methods adb__store_sqlite;

#define DEFAULT_POOL 4
#define MAX_POOL 64
#define DEFAULT_BUSY_MS 10000
#define ERR_MAX 512
/* The writer's page cache, in KiB (as a negative PRAGMA cache_size). Its
 * upserts land at random places in rl_policies, so a cache that holds the
 * hot part of the table pays: 32 MiB made 1,000-reward batches 1.6x faster
 * than SQLite's 2 MiB default (10k users x 7 states x 50 actions); 16 MiB
 * keeps most of that within the embedded memory budget (100 MB for 10k
 * users x 50 arms, bench_core). Readers keep the default. */
#define WRITER_CACHE_KIB "-16384"
/* WAL pages between the writer's automatic checkpoints (SQLite's default
 * is 1,000). A checkpoint writes each page the WAL holds once, however
 * many commits changed it, and durable rewards change the same pages
 * again and again (their index, rl_policies rows, the '*' rows): at 10,000
 * the store wrote 13 instead of 16 kB a reward at 64 writers and 10
 * instead of 13.5 at 512, which took SQLite's durable rewards from 14-16k
 * to 17-19k/s and from 18-20k to 29-35k/s (bench_core --only rewards,
 * docs/performance.md). The WAL file grows to about 40 MB. */
#define WRITER_WAL_PAGES "10000"

/* ------------------------------------------------------------ statements */

enum stmt_id {
  S_BEGIN,
  S_COMMIT,
  S_ROLLBACK,
  S_AGENT_PUT,
  S_AGENT_GET,
  S_COUNT_METRICS,
  S_COUNT_ACTIONS,
  S_ACTION_PUT,
  S_ACTION_LIST,
  S_POLICY_GET,
  S_POLICY_ADD,
  S_DECISION_PUT,
  S_DECISION_GET,
  S_EPISODE_PUT,
  S_REWARD_PUT,
  S_REWARD_GET,
  S_METRICS_ADD,
  S_METRICS_GET,
  S_USER_PUT,
  S_USER_GET,
  S_PATTERN_PUT,
  S_PATTERN_GET,
  S_VEC_EPISODES,
  S_VEC_USERS,
  S_VEC_PATTERNS,
  S_PING,
  S_LIN_FEATURES_PUT,
  S_LIN_SCAN,
  S_LIN_CKPT_PUT,
  S_LIN_CKPT_GET,
  S_ACTION_VECTORS,
  S_AGENT_FIX_DIM,
  S_PENDING_PUT,
  S_PENDING_GET,
  S_PENDING_DEL,
  S_PENDING_JOIN,
  S_PENDING_EXPIRE,
  S_OUTCOME_CLAIM,
  S_DEFAULT_CLAIM,
  S_WATERMARK_INIT,
  S_DEFAULT_CANDIDATES,
  S_WATERMARK_ADVANCE,
  S_DEFER_CLOSE,
  N_STMT
};

static const char *const stmt_sql[N_STMT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_AGENT_PUT] =
        "INSERT INTO agent_metadata (agent_id, algorithm, prior_alpha,"
        " prior_beta, prior_mu, prior_kappa, prior_a, prior_b, context_keys,"
        " embedding_dim, simhash_bits, weight_watch, weight_click,"
        " weight_rating, fallback_strength, decay_half_life_s,"
        " reward_window_s, default_reward, created_at_ms, updated_at_ms,"
        " linear_crosses, linear_lambda, linear_v)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
        " ?14, ?15, ?16, ?17, ?18, ?19, ?19, ?20, ?21, ?22)"
        " ON CONFLICT (agent_id) DO UPDATE SET algorithm = excluded.algorithm,"
        " prior_alpha = excluded.prior_alpha,"
        " prior_beta = excluded.prior_beta, prior_mu = excluded.prior_mu,"
        " prior_kappa = excluded.prior_kappa, prior_a = excluded.prior_a,"
        " prior_b = excluded.prior_b, context_keys = excluded.context_keys,"
        " embedding_dim = excluded.embedding_dim,"
        " simhash_bits = excluded.simhash_bits,"
        " weight_watch = excluded.weight_watch,"
        " weight_click = excluded.weight_click,"
        " weight_rating = excluded.weight_rating,"
        " fallback_strength = excluded.fallback_strength,"
        " decay_half_life_s = excluded.decay_half_life_s,"
        " reward_window_s = excluded.reward_window_s,"
        " default_reward = excluded.default_reward,"
        " updated_at_ms = excluded.updated_at_ms,"
        " linear_crosses = excluded.linear_crosses,"
        " linear_lambda = excluded.linear_lambda,"
        " linear_v = excluded.linear_v"
        " RETURNING created_at_ms, updated_at_ms",
    [S_AGENT_FIX_DIM] =
        "UPDATE agent_metadata SET embedding_dim = CASE WHEN embedding_dim = 0"
        " THEN ?2 ELSE embedding_dim END WHERE agent_id = ?1"
        " RETURNING embedding_dim",
    [S_AGENT_GET] =
        "SELECT algorithm, prior_alpha, prior_beta, prior_mu, prior_kappa,"
        " prior_a, prior_b, context_keys, embedding_dim, simhash_bits,"
        " weight_watch, weight_click, weight_rating, fallback_strength,"
        " decay_half_life_s, reward_window_s, default_reward, created_at_ms,"
        " updated_at_ms, linear_crosses, linear_lambda, linear_v"
        " FROM agent_metadata WHERE agent_id = ?1",
    [S_COUNT_METRICS] =
        "SELECT COALESCE(SUM(decisions), 0), COALESCE(SUM(rewards), 0),"
        " COALESCE(SUM(reward_sum), 0.0) FROM performance_metrics"
        " WHERE agent_id = ?1",
    [S_COUNT_ACTIONS] = "SELECT COUNT(*) FROM actions WHERE agent_id = ?1",
    [S_ACTION_PUT] =
        "INSERT INTO actions (agent_id, action_id, embedding, metadata,"
        " disabled, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        " ON CONFLICT (agent_id, action_id) DO UPDATE SET"
        " embedding = excluded.embedding, metadata = excluded.metadata,"
        " disabled = excluded.disabled, updated_at_ms = excluded.updated_at_ms",
    [S_ACTION_LIST] =
        "SELECT action_id, disabled, length(embedding), metadata FROM actions"
        " WHERE agent_id = ?1 ORDER BY action_id",
    [S_POLICY_GET] = "SELECT action_id, n, sum_micro, sum_sq, version, sum_hi"
                     " FROM rl_policies"
                     " WHERE agent_id = ?1 AND user_id = ?2 AND state_key = ?3"
                     " ORDER BY action_id",
    [S_POLICY_ADD] =
        "INSERT INTO rl_policies (agent_id, user_id, state_key, action_id, n,"
        " sum_micro, sum_hi, sum_sq, version, updated_at_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?7, 1, ?8)"
        " ON CONFLICT (agent_id, user_id, state_key, action_id) DO UPDATE SET"
        " n = n + excluded.n,"
        /* hi * 2^32 + lo, carried in the statement (0004_sum_headroom) */
        " sum_micro = (sum_micro + excluded.sum_micro) & 4294967295,"
        " sum_hi = sum_hi + excluded.sum_hi"
        " + ((sum_micro + excluded.sum_micro) >> 32),"
        " sum_sq = sum_sq + excluded.sum_sq, version = version + 1,"
        " updated_at_ms = excluded.updated_at_ms RETURNING version",
    [S_DECISION_PUT] =
        "INSERT INTO decisions (agent_id, event_id, user_id, state_key,"
        " context, candidates, action_id, propensity, model, created_at_ms,"
        " ranking) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        " ON CONFLICT DO NOTHING",
    [S_DECISION_GET] =
        "SELECT user_id, state_key, context, candidates, action_id,"
        " propensity, model, created_at_ms, ranking FROM decisions"
        " WHERE agent_id = ?1 AND event_id = ?2",
    [S_EPISODE_PUT] =
        "INSERT INTO agent_episodes (agent_id, episode_id, user_id,"
        " session_id, embedding, action_id, reward, context, created_at_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
    [S_REWARD_PUT] =
        "INSERT INTO reward_signals (agent_id, reward_id, event_id, user_id,"
        " state_key, action_id, reward, reward_micro, signals, body_hash,"
        " created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
        " ?11) ON CONFLICT DO NOTHING",
    [S_REWARD_GET] = "SELECT body_hash, reward FROM reward_signals"
                     " WHERE agent_id = ?1 AND reward_id = ?2",
    [S_METRICS_ADD] =
        "INSERT INTO performance_metrics (agent_id, hour_ms, decisions,"
        " rewards, reward_sum, cache_hits, cache_misses, latency_p50_us,"
        " latency_p99_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, max(?8, 0),"
        " max(?9, 0)) ON CONFLICT (agent_id, hour_ms) DO UPDATE SET"
        " decisions = decisions + excluded.decisions,"
        " rewards = rewards + excluded.rewards,"
        " reward_sum = reward_sum + excluded.reward_sum,"
        " cache_hits = cache_hits + excluded.cache_hits,"
        " cache_misses = cache_misses + excluded.cache_misses,"
        " latency_p50_us = CASE WHEN ?8 >= 0 THEN ?8 ELSE latency_p50_us END,"
        " latency_p99_us = CASE WHEN ?9 >= 0 THEN ?9 ELSE latency_p99_us END",
    [S_METRICS_GET] =
        "SELECT hour_ms, decisions, rewards, reward_sum, cache_hits,"
        " cache_misses, latency_p50_us, latency_p99_us FROM"
        " performance_metrics WHERE agent_id = ?1 AND hour_ms >= ?2"
        " AND hour_ms < ?3 ORDER BY hour_ms",
    [S_USER_PUT] =
        "INSERT INTO user_states (user_id, embedding, context, updated_at_ms)"
        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id) DO UPDATE SET"
        " embedding = excluded.embedding, context = excluded.context,"
        " updated_at_ms = excluded.updated_at_ms",
    [S_USER_GET] = "SELECT embedding, context, updated_at_ms FROM user_states"
                   " WHERE user_id = ?1",
    [S_PATTERN_PUT] =
        "INSERT INTO learned_patterns (agent_id, pattern_id, type, key, value,"
        " confidence, support, embedding, updated_at_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        " ON CONFLICT (agent_id, pattern_id) DO UPDATE SET"
        " type = excluded.type, key = excluded.key, value = excluded.value,"
        " confidence = excluded.confidence, support = excluded.support,"
        " embedding = excluded.embedding,"
        " updated_at_ms = excluded.updated_at_ms",
    [S_PATTERN_GET] = "SELECT type, key, value, confidence, support, embedding,"
                      " updated_at_ms FROM learned_patterns"
                      " WHERE agent_id = ?1 AND pattern_id = ?2",
    /* vectors_scan pages: keyset on (time, agent, id) after ?1..?3. */
    [S_VEC_EPISODES] =
        "SELECT agent_id, episode_id, user_id, action_id, reward, embedding,"
        " created_at_ms FROM agent_episodes WHERE embedding IS NOT NULL"
        " AND (created_at_ms, agent_id, episode_id) > (?1, ?2, ?3)"
        " ORDER BY created_at_ms, agent_id, episode_id LIMIT ?4",
    [S_VEC_USERS] = "SELECT '', user_id, '', '', 0.0, embedding, updated_at_ms"
                    " FROM user_states WHERE embedding IS NOT NULL"
                    " AND (updated_at_ms, '', user_id) > (?1, ?2, ?3)"
                    " ORDER BY updated_at_ms, user_id LIMIT ?4",
    [S_VEC_PATTERNS] =
        "SELECT agent_id, pattern_id, '', key, confidence, embedding,"
        " updated_at_ms FROM learned_patterns WHERE embedding IS NOT NULL"
        " AND (updated_at_ms, agent_id, pattern_id) > (?1, ?2, ?3)"
        " ORDER BY updated_at_ms, agent_id, pattern_id LIMIT ?4",
    [S_PING] = "SELECT count(*) FROM schema_migrations",
    [S_LIN_FEATURES_PUT] =
        "INSERT INTO decision_features (agent_id, event_id, features,"
        " created_at_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    [S_LIN_SCAN] = "SELECT seq, reward_id, action_id, reward, created_at_ms,"
                   " features FROM linear_rewards WHERE agent_id = ?1"
                   " AND seq > ?2 ORDER BY seq LIMIT ?3",
    [S_LIN_CKPT_PUT] =
        "INSERT INTO linear_checkpoints (agent_id, config, n, after_seq,"
        " min_xid, seen, state, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5,"
        " ?6, ?7, ?8) ON CONFLICT (agent_id) DO UPDATE SET"
        " config = excluded.config, n = excluded.n,"
        " after_seq = excluded.after_seq, min_xid = excluded.min_xid,"
        " seen = excluded.seen, state = excluded.state,"
        " updated_at_ms = excluded.updated_at_ms",
    [S_LIN_CKPT_GET] = "SELECT config, n, after_seq, min_xid, seen, state"
                       " FROM linear_checkpoints WHERE agent_id = ?1",
    [S_ACTION_VECTORS] = "SELECT action_id, embedding FROM actions"
                         " WHERE agent_id = ?1 AND embedding IS NOT NULL",
    [S_PENDING_PUT] =
        "INSERT INTO pending_rewards (agent_id, reward_id, event_id, reward,"
        " reward_micro, signals, body_hash, created_at_ms, expires_at_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
    [S_PENDING_GET] = "SELECT body_hash, reward FROM pending_rewards"
                      " WHERE agent_id = ?1 AND reward_id = ?2",
    [S_PENDING_DEL] =
        "DELETE FROM pending_rewards WHERE agent_id = ?1 AND reward_id = ?2",
    [S_PENDING_JOIN] =
        "SELECT p.agent_id, p.reward_id, p.event_id, d.user_id, d.state_key,"
        " d.action_id, p.reward, p.reward_micro, p.signals, p.body_hash,"
        " p.created_at_ms FROM pending_rewards p JOIN decisions d"
        " ON d.agent_id = p.agent_id AND d.event_id = p.event_id",
    [S_PENDING_EXPIRE] =
        "DELETE FROM pending_rewards WHERE expires_at_ms <= ?1",
    [S_OUTCOME_CLAIM] =
        "INSERT INTO event_outcomes (agent_id, event_id, outcome,"
        " created_at_ms) VALUES (?1, ?2, 'reward', ?3) ON CONFLICT"
        " (agent_id, event_id) DO UPDATE SET outcome = outcome"
        " RETURNING outcome",
    [S_DEFAULT_CLAIM] =
        "INSERT INTO event_outcomes (agent_id, event_id, outcome,"
        " created_at_ms) VALUES (?1, ?2, 'default', ?3)"
        " ON CONFLICT DO NOTHING",
    [S_WATERMARK_INIT] =
        "INSERT INTO default_watermarks (agent_id, upto_ms)"
        " SELECT agent_id, ?1 - CAST(reward_window_s * 1000 AS INTEGER) - ?2"
        " FROM agent_metadata WHERE reward_window_s > 0"
        " ON CONFLICT DO NOTHING",
    /* CROSS JOIN fixes the join order (SQLite's documented way): left to
     * itself, without statistics, the planner scanned every decision once
     * a second instead of the index range past each agent's watermark. */
    [S_DEFAULT_CANDIDATES] =
        "SELECT d.agent_id, d.event_id, d.user_id, d.state_key, d.action_id,"
        " a.default_reward,"
        " x.event_id IS NOT NULL AND x.activated_at_ms IS NULL,"
        " x.event_id IS NOT NULL"
        " FROM default_watermarks w"
        " CROSS JOIN agent_metadata a ON a.agent_id = w.agent_id"
        " CROSS JOIN decisions d ON d.agent_id = w.agent_id"
        " AND d.created_at_ms >= w.upto_ms AND d.created_at_ms < ?1"
        " - CAST(a.reward_window_s * 1000 AS INTEGER) - ?2"
        " LEFT JOIN deferred_events x ON x.agent_id = d.agent_id"
        " AND x.event_id = d.event_id"
        " WHERE a.reward_window_s > 0",
    [S_WATERMARK_ADVANCE] =
        "UPDATE default_watermarks AS w SET upto_ms = max(w.upto_ms, ?1"
        " - CAST(a.reward_window_s * 1000 AS INTEGER) - ?2)"
        " FROM agent_metadata a WHERE a.agent_id = w.agent_id"
        " AND a.reward_window_s > 0",
    /* The deferral marks of the decisions the sweep has just closed (read
     * by the sweep only while open: the table stays small). */
    [S_DEFER_CLOSE] =
        "DELETE FROM deferred_events WHERE (agent_id, event_id) IN"
        " (SELECT d.agent_id, d.event_id FROM default_watermarks w"
        " CROSS JOIN agent_metadata a ON a.agent_id = w.agent_id"
        " CROSS JOIN decisions d ON d.agent_id = w.agent_id"
        " AND d.created_at_ms >= w.upto_ms AND d.created_at_ms < ?1"
        " - CAST(a.reward_window_s * 1000 AS INTEGER) - ?2"
        " WHERE a.reward_window_s > 0)",
};

const char *adb__sqlite_stmt_sql(int i) {
  return i >= 0 && i < N_STMT ? stmt_sql[i] : NULL;
}

/* ---------------------------------------------------------------- handle */

typedef struct conn {
  pthread_mutex_t mu;
  sqlite3 *db;
  sqlite3_stmt *stmt[N_STMT];
} conn;

typedef struct sq_store {
  adb__store base;
  uint64_t id; /* unique per open: tags this handle's thread-local errors */
  conn writer;
  conn *readers; /* n_readers; 0 for :memory: (the writer reads too) */
  int n_readers;
  atomic_uint next_reader;
  pthread_mutex_t err_mu;
  char last_err[ERR_MAX];
  struct file_lock *lock; /* NULL for :memory: */
} sq_store;

typedef struct sq_opts {
  char path[PATH_MAX];
  int memory;
  const char *synchronous; /* "FULL" or "NORMAL" */
  int busy_ms;
} sq_opts;

static atomic_uint_fast64_t next_store_id = 1;

static _Thread_local struct {
  uint64_t owner;
  char msg[ERR_MAX];
} tls_err;

static void set_err(sq_store *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tls_err.msg, sizeof tls_err.msg, fmt, ap);
  va_end(ap);
  tls_err.owner = s->id;
  pthread_mutex_lock(&s->err_mu);
  memcpy(s->last_err, tls_err.msg, sizeof s->last_err);
  pthread_mutex_unlock(&s->err_mu);
}

static const char *sq_errmsg(adb__store *st) {
  sq_store *s = (sq_store *)st;
  if (tls_err.owner != s->id) {
    pthread_mutex_lock(&s->err_mu);
    memcpy(tls_err.msg, s->last_err, sizeof tls_err.msg);
    pthread_mutex_unlock(&s->err_mu);
    tls_err.owner = s->id;
  }
  return tls_err.msg;
}

/* Our code for an SQLite result code. Busy, locked, a full disk and I/O
 * errors mean "try again later" (ADB_EUNAVAIL: the flush worker retries);
 * anything else (a constraint, a value too big, a type mismatch) is about
 * the data and permanent (ADB_ESTORE: the worker isolates the item). */
static int map_rc(int rc) {
  switch (rc & 0xff) {
  case SQLITE_NOMEM:
    return ADB_ENOMEM;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
  case SQLITE_CANTOPEN:
  case SQLITE_FULL:
  case SQLITE_IOERR:
    return ADB_EUNAVAIL;
  default:
    return ADB_ESTORE;
  }
}

/* Records the failure of `what` on connection c; returns our code. Called
 * with c locked, before the failed statement is reset. */
static int sq_fail(sq_store *s, conn *c, int rc, const char *what) {
  set_err(s, "sqlite: %s: %s (code %d)", what, sqlite3_errmsg(c->db), rc);
  return map_rc(rc);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----------------------------------------------------------- connections */

static conn *reader_take(sq_store *s) {
  if (s->n_readers == 0) {
    pthread_mutex_lock(&s->writer.mu);
    return &s->writer;
  }
  unsigned start = atomic_fetch_add(&s->next_reader, 1);
  for (int i = 0; i < s->n_readers; i++) {
    conn *c = &s->readers[(start + (unsigned)i) % (unsigned)s->n_readers];
    if (pthread_mutex_trylock(&c->mu) == 0) return c;
  }
  conn *c = &s->readers[start % (unsigned)s->n_readers];
  pthread_mutex_lock(&c->mu);
  return c;
}

static conn *writer_take(sq_store *s) {
  pthread_mutex_lock(&s->writer.mu);
  return &s->writer;
}

static void conn_give(conn *c) {
  pthread_mutex_unlock(&c->mu);
}

/* The cached statement id of c, prepared on first use. */
static int stmt_get(sq_store *s, conn *c, int id, sqlite3_stmt **out) {
  *out = NULL;
  if (!c->stmt[id]) {
    int rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1,
                                SQLITE_PREPARE_PERSISTENT, &c->stmt[id], NULL);
    if (rc != SQLITE_OK) return sq_fail(s, c, rc, "prepare");
  }
  *out = c->stmt[id];
  return ADB_OK;
}

static void stmt_done(sqlite3_stmt *st) {
  if (!st) return;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

/* Steps a statement that returns no row (or whose rows are ignored). */
static int stmt_run(sq_store *s, conn *c, int id, const char *what) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, id, &st);
  if (rc) return rc;
  int src = sqlite3_step(st);
  rc = src == SQLITE_DONE || src == SQLITE_ROW ? ADB_OK
                                               : sq_fail(s, c, src, what);
  stmt_done(st);
  return rc;
}

/* Ends a failed transaction, if SQLite has not already rolled it back. */
static void txn_abort(sq_store *s, conn *c) {
  if (sqlite3_get_autocommit(c->db)) return;
  char keep[ERR_MAX];
  memcpy(keep, tls_err.msg, sizeof keep);
  if (stmt_run(s, c, S_ROLLBACK, "rollback") != ADB_OK)
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
  set_err(s, "%s", keep); /* the cause, not the rollback's own message */
}

/* ----------------------------------------------------------------- binds */

/* Bind helpers: each does nothing once *rc holds an error, so a run of
 * binds is checked once at the end. Text and blobs are SQLITE_STATIC: the
 * caller keeps them alive until the statement is reset. */
static void bind_text(sqlite3_stmt *st, int i, const char *v, int *rc) {
  if (*rc != SQLITE_OK) return;
  *rc = v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC)
          : sqlite3_bind_null(st, i);
}

static void bind_int(sqlite3_stmt *st, int i, int64_t v, int *rc) {
  if (*rc == SQLITE_OK) *rc = sqlite3_bind_int64(st, i, v);
}

static void bind_real(sqlite3_stmt *st, int i, double v, int *rc) {
  if (*rc == SQLITE_OK) *rc = sqlite3_bind_double(st, i, v);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG_ENDIAN 1
#else
#define HOST_BIG_ENDIAN 0
#endif

static void swap4(void *dst, const void *src, size_t n) {
  const unsigned char *a = src;
  unsigned char *b = dst;
  for (size_t i = 0; i < n; i += 4) {
    b[i] = a[i + 3];
    b[i + 1] = a[i + 2];
    b[i + 2] = a[i + 1];
    b[i + 3] = a[i];
  }
}

/* An embedding as a little-endian float32 blob; NULL when dim is 0. */
static void bind_embedding(sqlite3_stmt *st, int i, const float *v, int dim,
                           int *rc) {
  if (*rc != SQLITE_OK) return;
  if (!v || dim <= 0) {
    *rc = sqlite3_bind_null(st, i);
    return;
  }
  size_t n = (size_t)dim * 4;
  if (!HOST_BIG_ENDIAN) {
    *rc = sqlite3_bind_blob(st, i, v, (int)n, SQLITE_STATIC);
    return;
  }
  void *b = malloc(n);
  if (!b) {
    *rc = SQLITE_NOMEM;
    return;
  }
  swap4(b, v, n);
  *rc = sqlite3_bind_blob(st, i, b, (int)n, free);
}

/* ------------------------------------------------------------- columns */

/* Copies a text column into a fixed buffer; too long means corrupt. */
static int col_copy(char *dst, size_t size, sqlite3_stmt *st, int col) {
  const unsigned char *t = sqlite3_column_text(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  if (!t) {
    dst[0] = 0;
    return sqlite3_column_type(st, col) == SQLITE_NULL ? ADB_OK : ADB_ENOMEM;
  }
  if (n >= size) return ADB_ECORRUPT;
  memcpy(dst, t, n + 1);
  return ADB_OK;
}

/* A malloc'd copy of a text column, NULL for SQL NULL. */
static int col_dup(char **dst, sqlite3_stmt *st, int col) {
  *dst = NULL;
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return ADB_OK;
  const unsigned char *t = sqlite3_column_text(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  if (!t || !(*dst = malloc(n + 1))) return ADB_ENOMEM;
  memcpy(*dst, t, n + 1);
  return ADB_OK;
}

/* A malloc'd embedding from a blob column; NULL and 0 for SQL NULL. */
static int col_embedding(float **v, int *dim, sqlite3_stmt *st, int col) {
  *v = NULL;
  *dim = 0;
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return ADB_OK;
  const void *b = sqlite3_column_blob(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  if (n == 0) return ADB_OK;
  if (n % 4 || n / 4 > ADB_MAX_EMBEDDING_DIM) return ADB_ECORRUPT;
  if (!b || !(*v = malloc(n))) return ADB_ENOMEM;
  if (HOST_BIG_ENDIAN)
    swap4(*v, b, n);
  else
    memcpy(*v, b, n);
  *dim = (int)(n / 4);
  return ADB_OK;
}

/* Message for a failure while reading columns (not an SQLite error). */
static int col_fail(sq_store *s, int rc, const char *what) {
  set_err(s, "sqlite: %s: %s", what,
          rc == ADB_ENOMEM ? "out of memory" : "stored value is malformed");
  return rc;
}

/* One column of a row into its field of rec (store_rec.h). */
static int col_read(sqlite3_stmt *st, int i, const adb__col *d, void *rec) {
  char *f = (char *)rec + d->off;
  switch (d->type) {
  case ADB__COL_INT:
    *(int *)f = sqlite3_column_int(st, i);
    break;
  case ADB__COL_I64:
    *(int64_t *)f = sqlite3_column_int64(st, i);
    break;
  case ADB__COL_F64:
    *(double *)f = sqlite3_column_double(st, i);
    break;
  case ADB__COL_BOOL:
    *(int *)f = sqlite3_column_int(st, i) != 0;
    break;
  case ADB__COL_DIM:
    *(int *)f = sqlite3_column_int(st, i) / 4;
    break;
  case ADB__COL_ID:
    return col_copy(f, d->aux, st, i);
  case ADB__COL_TEXT:
    return col_dup((char **)f, st, i);
  case ADB__COL_EMB:
    return col_embedding((float **)f, (int *)((char *)rec + d->aux), st, i);
  case ADB__COL_ALGO:
    return adb__algo_parse((const char *)sqlite3_column_text(st, i),
                           (adb_algorithm *)f);
  case ADB__COL_KEYS:
    return adb__context_keys_parse(rec,
                                   (const char *)sqlite3_column_text(st, i));
  }
  return ADB_OK;
}

/* Columns 0..n-1 of the current row into rec, by the reading rules of
 * store_rec.h. */
static int cols_read(sqlite3_stmt *st, const adb__col *cols, int n, void *rec) {
  int rc = ADB_OK;
  for (int i = 0; i < n; i++) {
    if (rc && adb__col_may_fail(cols[i].type)) continue;
    int r = col_read(st, i, &cols[i], rec);
    if (r && cols[i].type == ADB__COL_ALGO) return r;
    if (!rc) rc = r;
  }
  return rc;
}

/* Binds the fields of rec that cols describe as parameters first.. on;
 * a KEYS column binds the text keys. */
static void cols_bind(sqlite3_stmt *st, int first, const adb__col *cols, int n,
                      const void *rec, const char *keys, int *rc) {
  for (int i = 0; i < n; i++) {
    const char *f = (const char *)rec + cols[i].off;
    int p = first + i;
    switch (cols[i].type) {
    case ADB__COL_INT:
      bind_int(st, p, *(const int *)f, rc);
      break;
    case ADB__COL_I64:
      bind_int(st, p, *(const int64_t *)f, rc);
      break;
    case ADB__COL_F64:
      bind_real(st, p, *(const double *)f, rc);
      break;
    case ADB__COL_BOOL:
      bind_int(st, p, *(const int *)f ? 1 : 0, rc);
      break;
    case ADB__COL_ID:
      bind_text(st, p, f, rc);
      break;
    case ADB__COL_TEXT:
      bind_text(st, p, *(char *const *)f, rc);
      break;
    case ADB__COL_EMB:
      bind_embedding(st, p, *(float *const *)f,
                     *(const int *)((const char *)rec + cols[i].aux), rc);
      break;
    case ADB__COL_ALGO:
      bind_text(st, p, adb__algo_name(*(const adb_algorithm *)f), rc);
      break;
    case ADB__COL_KEYS:
      bind_text(st, p, keys, rc);
      break;
    case ADB__COL_DIM:
      if (*rc == SQLITE_OK) *rc = SQLITE_MISUSE; /* read only */
      break;
    }
  }
}

/* The one row a lookup by keys finds, read into rec as d describes; the
 * record is cleared first, and released again if a column fails. */
static int rec_get(sq_store *s, int id, const adb__rec_desc *d, const char *k1,
                   const char *k2, void *rec) {
  const char *key[2] = {k1, k2};
  memset(rec, 0, d->size);
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, id, &st);
  if (!rc) {
    rc = SQLITE_OK;
    for (int i = 0; i < d->nkeys; i++)
      bind_text(st, i + 1, key[i], &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      adb__rec_keys(d, rec, key);
      if ((rc = cols_read(st, d->cols, d->ncols, rec)) != ADB_OK) {
        col_fail(s, rc, d->read);
        if (d->release) d->release(rec);
      }
    } else if (rc == SQLITE_DONE) {
      set_err(s, "sqlite: %s '%.128s' %s", d->item, key[d->nkeys - 1],
              d->missing);
      rc = ADB_ENOTFOUND;
    } else {
      rc = sq_fail(s, c, rc, d->get);
    }
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

/* Steps st (rc: the result of binding its parameters) to its end, handing
 * each row to fn; a failure of fn ends the walk as a column failure, one of
 * SQLite as an SQLite failure, both told as `what`. */
static int rows_each(sq_store *s, conn *c, sqlite3_stmt *st, int rc,
                     int (*fn)(void *arg, sqlite3_stmt *st), void *arg,
                     const char *what) {
  int f = ADB_OK;
  while (!f && (rc == SQLITE_OK || rc == SQLITE_ROW)) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) f = fn(arg, st);
  }
  if (f) return col_fail(s, f, what);
  return rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, what);
}

/* ------------------------------------------------------------ validation */

#define ID_OK(f) ADB__ID_OK(f)
#define STR_OK(f) ADB__STR_OK(f)
#define dim_ok adb__dim_ok

static int bad(sq_store *s, const char *what, int i) {
  set_err(s, "sqlite: invalid %s #%d in batch", what, i);
  return ADB_EINVAL;
}

/* Checks a whole batch before touching the database. */
static int batch_validate(sq_store *s, const adb__batch *b) {
  char what[64];
  int rc = adb__batch_validate(b, what, sizeof what);
  if (rc) set_err(s, "sqlite: invalid %s in batch", what);
  return rc;
}

/* ---------------------------------------------------------- write batch */

/* Inserts the decision; d->inserted says whether it was new (the event id
 * is unique per agent: a retried decide keeps the first decision). */
static int decision_put(sq_store *s, conn *c, adb__decision_rec *d) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_DECISION_PUT, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, d->agent, &rc);
  bind_text(st, 2, d->event_id, &rc);
  bind_text(st, 3, d->user, &rc);
  bind_text(st, 4, d->state_key, &rc);
  bind_text(st, 5, d->context_json ? d->context_json : "{}", &rc);
  bind_text(st, 6, d->candidates_json ? d->candidates_json : "[]", &rc);
  bind_text(st, 7, d->action, &rc);
  bind_real(st, 8, d->propensity, &rc);
  bind_text(st, 9, d->model, &rc);
  bind_int(st, 10, d->ts_ms, &rc);
  bind_text(st, 11, d->ranking_json, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  d->inserted = rc == SQLITE_DONE && sqlite3_changes(c->db) == 1;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "insert decision");
  stmt_done(st);
  return rc;
}

static int episode_put(sq_store *s, conn *c, const adb__episode_rec *e) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_EPISODE_PUT, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, e->agent, &rc);
  bind_text(st, 2, e->episode_id, &rc);
  bind_text(st, 3, e->user, &rc);
  bind_text(st, 4, e->session, &rc);
  bind_embedding(st, 5, e->embedding, e->dim, &rc);
  bind_text(st, 6, e->action, &rc);
  bind_real(st, 7, e->reward, &rc);
  bind_text(st, 8, e->context_json, &rc);
  bind_int(st, 9, e->ts_ms, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "insert episode");
  stmt_done(st);
  return rc;
}

/* Inserts the reward row; *inserted says whether it was new. */
static int reward_insert(sq_store *s, conn *c, const adb__reward_rec *r,
                         int *inserted) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_REWARD_PUT, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, r->agent, &rc);
  bind_text(st, 2, r->reward_id, &rc);
  bind_text(st, 3, r->event_id, &rc);
  bind_text(st, 4, r->user, &rc);
  bind_text(st, 5, r->state_key, &rc);
  bind_text(st, 6, r->action, &rc);
  bind_real(st, 7, r->reward, &rc);
  bind_int(st, 8, r->reward_micro, &rc);
  bind_text(st, 9, r->signals_json, &rc);
  bind_text(st, 10, r->body_hash, &rc);
  bind_int(st, 11, r->ts_ms, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  *inserted = rc == SQLITE_DONE && sqlite3_changes(c->db) == 1;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "insert reward");
  stmt_done(st);
  return rc;
}

/* The reward stored under r's id by statement id (reward_signals or
 * pending_rewards), if any: *found, and same body is a duplicate, another
 * a conflict. */
static int reward_compare(sq_store *s, conn *c, adb__reward_rec *r, int id,
                          int *found) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, id, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, r->agent, &rc);
  bind_text(st, 2, r->reward_id, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  *found = rc == SQLITE_ROW;
  if (rc == SQLITE_ROW) {
    const char *h = (const char *)sqlite3_column_text(st, 0);
    r->first_reward = sqlite3_column_double(st, 1);
    r->result = h && strcmp(h, r->body_hash) == 0 ? ADB_OK : ADB_ECONFLICT;
  }
  rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? ADB_OK
                                             : sq_fail(s, c, rc, "read reward");
  stmt_done(st);
  return rc;
}

/* Deletes the awaiting copy of a reward, if any (*deleted may be NULL). */
static int pending_del(sq_store *s, conn *c, const char *agent,
                       const char *reward_id, int *deleted) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_PENDING_DEL, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, agent, &rc);
  bind_text(st, 2, reward_id, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (deleted) *deleted = rc == SQLITE_DONE && sqlite3_changes(c->db) == 1;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "delete pending reward");
  stmt_done(st);
  return rc;
}

/* A reward whose decision is not visible: refused as any reward if its id
 * is taken (applied, or already waiting), else stored to wait. */
static int reward_await(sq_store *s, conn *c, adb__reward_rec *r) {
  int found = 0;
  int rc = reward_compare(s, c, r, S_REWARD_GET, &found);
  if (rc || found) return rc;
  sqlite3_stmt *st;
  if ((rc = stmt_get(s, c, S_PENDING_PUT, &st))) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, r->agent, &rc);
  bind_text(st, 2, r->reward_id, &rc);
  bind_text(st, 3, r->event_id, &rc);
  bind_real(st, 4, r->reward, &rc);
  bind_int(st, 5, r->reward_micro, &rc);
  bind_text(st, 6, r->signals_json, &rc);
  bind_text(st, 7, r->body_hash, &rc);
  bind_int(st, 8, r->ts_ms, &rc);
  bind_int(st, 9, r->expires_at_ms, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  r->applied = rc == SQLITE_DONE && sqlite3_changes(c->db) == 1;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "insert pending reward");
  stmt_done(st);
  if (rc || r->applied) return rc;
  rc = reward_compare(s, c, r, S_PENDING_GET, &found);
  if (!rc && !found) rc = sq_fail(s, c, SQLITE_INTERNAL, "read reward");
  return rc;
}

/* Claims the first outcome of r's decision for a reward (event_outcomes);
 * *late when its default reward was applied first. */
static int outcome_claim(sq_store *s, conn *c, const adb__reward_rec *r,
                         int *late) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_OUTCOME_CLAIM, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, r->agent, &rc);
  bind_text(st, 2, r->event_id, &rc);
  bind_int(st, 3, r->ts_ms, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *o = (const char *)sqlite3_column_text(st, 0);
    *late = o && !strcmp(o, "default");
    rc = sqlite3_step(st);
  }
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "claim outcome");
  stmt_done(st);
  return rc;
}

static int reward_put(sq_store *s, conn *c, adb__reward_rec *r) {
  int inserted = 0, found = 0;
  r->result = ADB_OK;
  r->applied = 0;
  r->late = 0;
  r->first_reward = r->reward;
  int rc = r->event_id[0] ? outcome_claim(s, c, r, &r->late) : ADB_OK;
  if (rc || r->late) return rc;
  if (r->awaiting) return reward_await(s, c, r);
  rc = reward_insert(s, c, r, &inserted);
  /* A copy that waited for the decision is applied now, here, once. */
  if (!rc && inserted) rc = pending_del(s, c, r->agent, r->reward_id, NULL);
  if (rc || inserted) {
    r->applied = inserted;
    return rc;
  }
  rc = reward_compare(s, c, r, S_REWARD_GET, &found);
  /* Not found means the row vanished inside our own transaction. */
  if (!rc && !found) rc = sq_fail(s, c, SQLITE_INTERNAL, "read reward");
  return rc;
}

static int policy_add(sq_store *s, conn *c, adb__policy_change *ch,
                      int64_t now) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_POLICY_ADD, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, ch->agent, &rc);
  bind_text(st, 2, ch->user, &rc);
  bind_text(st, 3, ch->state_key, &rc);
  bind_text(st, 4, ch->action, &rc);
  bind_int(st, 5, ch->delta.n, &rc);
  bind_int(st, 6, adb__sum_lo(ch->delta.sum_micro), &rc);
  bind_int(st, 9, adb__sum_hi(ch->delta.sum_micro), &rc);
  bind_real(st, 7, ch->delta.sum_sq, &rc);
  bind_int(st, 8, now, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    ch->delta.version = sqlite3_column_int64(st, 0);
    rc = sqlite3_step(st);
  }
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "update policy");
  stmt_done(st);
  return rc;
}

static int metrics_add(sq_store *s, conn *c, const adb__metrics_delta *m) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_METRICS_ADD, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, m->agent, &rc);
  bind_int(st, 2, m->hour_ms, &rc);
  bind_int(st, 3, m->decisions, &rc);
  bind_int(st, 4, m->rewards, &rc);
  bind_real(st, 5, m->reward_sum, &rc);
  bind_int(st, 6, m->cache_hits, &rc);
  bind_int(st, 7, m->cache_misses, &rc);
  bind_real(st, 8, m->latency_p50_us, &rc);
  bind_real(st, 9, m->latency_p99_us, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "update metrics");
  stmt_done(st);
  return rc;
}

static int batch_policies(sq_store *s, conn *c, adb__batch *b) {
  int rc = adb__batch_merge(b, &b->changes, &b->n_changes);
  if (rc) {
    set_err(s, "sqlite: merging policy increments: out of memory");
    return rc;
  }
  int64_t now = now_ms();
  for (int i = 0; i < b->n_changes && !rc; i++)
    rc = policy_add(s, c, &b->changes[i], now);
  return rc;
}

/* The features a linear decision used (0003_linear_model.sql). */
static int features_put(sq_store *s, conn *c, const adb__decision_rec *d) {
  if (d->n_features <= 0) return ADB_OK;
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_LIN_FEATURES_PUT, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, d->agent, &rc);
  bind_text(st, 2, d->event_id, &rc);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_blob(st, 3, d->features, d->n_features, SQLITE_STATIC);
  bind_int(st, 4, d->ts_ms, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "insert features");
  stmt_done(st);
  return rc;
}

/* Every statement of a batch, inside the open transaction. */
static int batch_apply(sq_store *s, conn *c, adb__batch *b) {
  int rc = ADB_OK;
  for (int i = 0; i < b->n_decisions && !rc; i++)
    rc = decision_put(s, c, &b->decisions[i]);
  for (int i = 0; i < b->n_decisions && !rc; i++)
    rc = features_put(s, c, &b->decisions[i]);
  for (int i = 0; i < b->n_episodes && !rc; i++)
    rc = episode_put(s, c, &b->episodes[i]);
  for (int i = 0; i < b->n_rewards && !rc; i++)
    rc = reward_put(s, c, &b->rewards[i]);
  if (!rc) rc = batch_policies(s, c, b);
  for (int i = 0; i < b->n_metrics && !rc; i++)
    rc = metrics_add(s, c, &b->metrics[i]);
  return rc;
}

/* After a failure nothing was committed: clear what we reported. */
static void batch_unset(adb__batch *b) {
  free(b->changes);
  b->changes = NULL;
  b->n_changes = 0;
  for (int i = 0; i < b->n_rewards; i++) {
    b->rewards[i].result = ADB_OK;
    b->rewards[i].applied = 0;
    b->rewards[i].first_reward = 0;
  }
}

static int sq_write_batch(adb__store *st, adb__batch *b) {
  sq_store *s = (sq_store *)st;
  b->changes = NULL;
  b->n_changes = 0;
  int rc = batch_validate(s, b);
  if (rc) return rc;
  conn *c = writer_take(s);
  rc = stmt_run(s, c, S_BEGIN, "begin batch");
  if (!rc) rc = batch_apply(s, c, b);
  if (!rc) rc = stmt_run(s, c, S_COMMIT, "commit batch");
  if (rc) {
    txn_abort(s, c);
    batch_unset(b);
  }
  conn_give(c);
  return rc;
}

/* ------------------------------------------------------ pending rewards */

/* Appends the current row of S_PENDING_JOIN to b->rewards. */
static int join_row(adb__batch *b, int *cap, sqlite3_stmt *st) {
  if (b->n_rewards == *cap) {
    int n = *cap ? *cap * 2 : 16;
    adb__reward_rec *r = realloc(b->rewards, (size_t)n * sizeof *r);
    if (!r) return ADB_ENOMEM;
    b->rewards = r;
    *cap = n;
  }
  adb__reward_rec *w = &b->rewards[b->n_rewards];
  memset(w, 0, sizeof *w);
  int rc = col_copy(w->agent, sizeof w->agent, st, 0);
  if (!rc) rc = col_copy(w->reward_id, sizeof w->reward_id, st, 1);
  if (!rc) rc = col_copy(w->event_id, sizeof w->event_id, st, 2);
  if (!rc) rc = col_copy(w->user, sizeof w->user, st, 3);
  if (!rc) rc = col_copy(w->state_key, sizeof w->state_key, st, 4);
  if (!rc) rc = col_copy(w->action, sizeof w->action, st, 5);
  w->reward = sqlite3_column_double(st, 6);
  w->reward_micro = sqlite3_column_int64(st, 7);
  if (!rc) rc = col_dup(&w->signals_json, st, 8);
  if (!rc) rc = col_copy(w->body_hash, sizeof w->body_hash, st, 9);
  w->ts_ms = sqlite3_column_int64(st, 10);
  w->first_reward = w->reward;
  if (!rc)
    b->n_rewards++;
  else
    free(w->signals_json);
  return rc;
}

static int join_read(sq_store *s, conn *c, adb__batch *b, int *cap_out) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_PENDING_JOIN, &st), cap = 0;
  if (rc) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    if (join_row(b, &cap, st)) {
      stmt_done(st);
      return col_fail(s, ADB_ENOMEM, "join pending rewards");
    }
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "join pending rewards");
  stmt_done(st);
  *cap_out = cap;
  return rc;
}

/* Moves each joined reward to reward_signals (once: the row leaves
 * pending_rewards in the same transaction) and applies it. */
/* Claims the default outcome of the current candidate row; *won if no
 * reward claimed it first. */
static int default_claim(sq_store *s, conn *c, sqlite3_stmt *cand, int64_t now,
                         int *won) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_DEFAULT_CLAIM, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, (const char *)sqlite3_column_text(cand, 0), &rc);
  bind_text(st, 2, (const char *)sqlite3_column_text(cand, 1), &rc);
  bind_int(st, 3, now, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  *won = rc == SQLITE_DONE && sqlite3_changes(c->db) == 1;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "claim default");
  stmt_done(st);
  return rc;
}

/* Appends the default reward of the current candidate row to b. */
static int default_row(adb__batch *b, int *cap, sqlite3_stmt *st, int64_t now) {
  if (b->n_rewards == *cap) {
    int n = *cap ? *cap * 2 : 16;
    adb__reward_rec *r = realloc(b->rewards, (size_t)n * sizeof *r);
    if (!r) return ADB_ENOMEM;
    b->rewards = r;
    *cap = n;
  }
  adb__reward_rec *w = &b->rewards[b->n_rewards];
  memset(w, 0, sizeof *w);
  int rc = col_copy(w->agent, sizeof w->agent, st, 0);
  if (!rc) rc = col_copy(w->event_id, sizeof w->event_id, st, 1);
  if (!rc) rc = col_copy(w->user, sizeof w->user, st, 2);
  if (!rc) rc = col_copy(w->state_key, sizeof w->state_key, st, 3);
  if (!rc) rc = col_copy(w->action, sizeof w->action, st, 4);
  if (rc) return rc;
  adb__default_reward_id(w->event_id, w->reward_id);
  w->reward = w->first_reward = sqlite3_column_double(st, 5);
  w->reward_micro = adb__reward_to_micro(w->reward);
  snprintf(w->body_hash, sizeof w->body_hash, "default");
  w->ts_ms = now;
  b->n_rewards++;
  return ADB_OK;
}

/* Runs statement id, bound to (now, ADB__DEFAULT_LAG_MS), to its end. */
static int sweep_exec(sq_store *s, conn *c, int id, int64_t now,
                      const char *what) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, id, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_int(st, 1, now, &rc);
  bind_int(st, 2, ADB__DEFAULT_LAG_MS, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, what);
  stmt_done(st);
  return rc;
}

/* Decisions whose window has ended (ADB__DEFAULT_LAG_MS after) since the
 * agent's watermark, with no reward: their default rewards, into b. The
 * rows are read first (the claims write to the tables read). A deferred
 * event never activated (column 6) is claimed, which closes it, and gets
 * no reward. */
static int defaults_read(sq_store *s, conn *c, adb__batch *b, int *cap,
                         int64_t now) {
  sqlite3_stmt *st;
  int rc = sweep_exec(s, c, S_WATERMARK_INIT, now, "init watermarks");
  if (rc || (rc = stmt_get(s, c, S_DEFAULT_CANDIDATES, &st))) return rc;
  rc = SQLITE_OK;
  bind_int(st, 1, now, &rc);
  bind_int(st, 2, ADB__DEFAULT_LAG_MS, &rc);
  int won = 0, marked = 0;
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    marked |= sqlite3_column_int(st, 7); /* a deferral mark to delete */
    rc = default_claim(s, c, st, now, &won);
    if (!rc && won && !sqlite3_column_int(st, 6) &&
        default_row(b, cap, st, now))
      rc = col_fail(s, ADB_ENOMEM, "default rewards");
    if (rc) break;
    rc = SQLITE_OK;
  }
  if (rc == SQLITE_DONE)
    rc = ADB_OK;
  else if (rc > 0)
    rc = sq_fail(s, c, rc, "default rewards");
  stmt_done(st);
  /* the marks of the deferred events closed here go */
  if (!rc && marked)
    rc = sweep_exec(s, c, S_DEFER_CLOSE, now, "close deferred events");
  if (rc) return rc;
  return sweep_exec(s, c, S_WATERMARK_ADVANCE, now, "advance watermarks");
}

static int join_apply(sq_store *s, conn *c, adb__batch *b) {
  int rc = ADB_OK;
  for (int i = 0; i < b->n_rewards && !rc; i++) {
    adb__reward_rec *r = &b->rewards[i];
    int inserted = 0;
    rc = pending_del(s, c, r->agent, r->reward_id, NULL);
    if (!rc) rc = reward_insert(s, c, r, &inserted);
    r->applied = inserted;
  }
  return rc ? rc : batch_policies(s, c, b);
}

static int expire(sq_store *s, conn *c, int64_t now, int64_t *expired) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_PENDING_EXPIRE, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_int(st, 1, now, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  *expired = rc == SQLITE_DONE ? sqlite3_changes(c->db) : 0;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "expire rewards");
  stmt_done(st);
  return rc;
}

static int sq_pending_sweep(adb__store *st, int64_t now_ms, adb__batch *out,
                            int64_t *expired) {
  sq_store *s = (sq_store *)st;
  memset(out, 0, sizeof *out);
  *expired = 0;
  conn *c = writer_take(s);
  int cap = 0;
  int rc = stmt_run(s, c, S_BEGIN, "begin sweep");
  if (!rc) rc = join_read(s, c, out, &cap);
  if (!rc) rc = defaults_read(s, c, out, &cap, now_ms);
  if (!rc) rc = join_apply(s, c, out);
  if (!rc) rc = expire(s, c, now_ms, expired);
  if (!rc) rc = stmt_run(s, c, S_COMMIT, "commit sweep");
  if (rc) txn_abort(s, c);
  conn_give(c);
  if (rc) {
    for (int i = 0; i < out->n_rewards; i++)
      free(out->rewards[i].signals_json);
    free(out->rewards);
    free(out->changes);
    memset(out, 0, sizeof *out);
    *expired = 0;
  }
  return rc;
}

/* ---------------------------------------------------------------- agents */

static void agent_bind(sqlite3_stmt *st, const adb_agent_config *a,
                       const char *keys, int64_t now, int *rc) {
  bind_text(st, 1, a->id, rc);
  cols_bind(st, 2, adb__agent_cols, ADB__AGENT_STAMPS, a, keys, rc);
  bind_int(st, ADB__AGENT_STAMPS + 2, now, rc);
  cols_bind(st, ADB__AGENT_STAMPS + 3, adb__agent_cols + ADB__AGENT_STAMPS + 2,
            ADB__AGENT_NCOLS - ADB__AGENT_STAMPS - 2, a, keys, rc);
}

static int sq_agent_put(adb__store *st_, adb_agent_config *cfg) {
  sq_store *s = (sq_store *)st_;
  if (!adb__agent_rec_ok(cfg)) {
    set_err(s, "sqlite: invalid agent config");
    return ADB_EINVAL;
  }
  char *keys = adb__context_keys_json(cfg);
  if (!keys) {
    set_err(s, "sqlite: agent context keys are not valid UTF-8 strings");
    return ADB_EINVAL;
  }
  conn *c = writer_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_AGENT_PUT, &st);
  if (!rc) {
    rc = SQLITE_OK;
    agent_bind(st, cfg, keys, now_ms(), &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      cfg->created_at_ms = sqlite3_column_int64(st, 0);
      cfg->updated_at_ms = sqlite3_column_int64(st, 1);
      rc = sqlite3_step(st);
    }
    rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "put agent");
    stmt_done(st);
  }
  conn_give(c);
  free(keys);
  return rc;
}

static int sq_agent_fix_dim(adb__store *st_, const char *agent, int dim,
                            int *stored) {
  sq_store *s = (sq_store *)st_;
  conn *c = writer_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_AGENT_FIX_DIM, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    bind_int(st, 2, dim, &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *stored = sqlite3_column_int(st, 0);
      rc = sqlite3_step(st);
      rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "fix agent dim");
    } else if (rc == SQLITE_DONE) {
      set_err(s, "sqlite: agent '%.128s' not found", agent);
      rc = ADB_ENOTFOUND;
    } else {
      rc = sq_fail(s, c, rc, "fix agent dim");
    }
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

static int sq_agent_get(adb__store *st_, const char *agent,
                        adb_agent_config *out) {
  return rec_get((sq_store *)st_, S_AGENT_GET, &adb__agent_desc, agent, NULL,
                 out);
}

static int sq_agent_counters(adb__store *st_, const char *agent,
                             adb_agent_counters *out) {
  sq_store *s = (sq_store *)st_;
  memset(out, 0, sizeof *out);
  conn *c = reader_take(s);
  sqlite3_stmt *m = NULL, *a = NULL;
  int rc = stmt_get(s, c, S_COUNT_METRICS, &m);
  if (!rc) rc = stmt_get(s, c, S_COUNT_ACTIONS, &a);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(m, 1, agent, &rc);
    bind_text(a, 1, agent, &rc);
    if (rc == SQLITE_OK && (rc = sqlite3_step(m)) == SQLITE_ROW) {
      out->decisions = sqlite3_column_int64(m, 0);
      out->rewards = sqlite3_column_int64(m, 1);
      out->reward_sum = sqlite3_column_double(m, 2);
      rc = sqlite3_step(a);
    }
    if (rc == SQLITE_ROW) out->actions = sqlite3_column_int64(a, 0);
    rc = rc == SQLITE_ROW ? ADB_OK : sq_fail(s, c, rc, "agent counters");
  }
  stmt_done(m);
  stmt_done(a);
  conn_give(c);
  return rc;
}

/* --------------------------------------------------------------- actions */

static int action_put(sq_store *s, conn *c, const char *agent,
                      const adb__action_rec *a, int64_t now) {
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_ACTION_PUT, &st);
  if (rc) return rc;
  rc = SQLITE_OK;
  bind_text(st, 1, agent, &rc);
  bind_text(st, 2, a->id, &rc);
  bind_embedding(st, 3, a->embedding, a->dim, &rc);
  bind_text(st, 4, a->metadata_json, &rc);
  bind_int(st, 5, a->disabled ? 1 : 0, &rc);
  bind_int(st, 6, now, &rc);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "put action");
  stmt_done(st);
  return rc;
}

static int sq_actions_put(adb__store *st, const char *agent,
                          const adb__action_rec *a, int n) {
  sq_store *s = (sq_store *)st;
  if (!agent || !agent[0] || n < 0 || (n && !a))
    return bad(s, "actions array", 0);
  for (int i = 0; i < n; i++)
    if (!ID_OK(a[i].id) || !dim_ok(a[i].embedding, a[i].dim))
      return bad(s, "action", i);
  conn *c = writer_take(s);
  int64_t now = now_ms();
  int rc = stmt_run(s, c, S_BEGIN, "begin actions");
  for (int i = 0; i < n && !rc; i++)
    rc = action_put(s, c, agent, &a[i], now);
  if (!rc) rc = stmt_run(s, c, S_COMMIT, "commit actions");
  if (rc) txn_abort(s, c);
  conn_give(c);
  return rc;
}

typedef struct action_list {
  adb__action_rec *v;
  int n, cap;
} action_list;

static void action_list_free(action_list *l) {
  for (int i = 0; i < l->n; i++)
    free((char *)l->v[i].metadata_json);
  free(l->v);
}

static int action_list_add(void *arg, sqlite3_stmt *st) {
  action_list *l = arg;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 64;
    adb__action_rec *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) return ADB_ENOMEM;
    l->v = v;
    l->cap = cap;
  }
  adb__action_rec *a = &l->v[l->n];
  memset(a, 0, sizeof *a);
  int rc = cols_read(st, adb__action_cols, ADB__ACTION_NCOLS, a);
  char *meta = NULL;
  if (!rc) rc = col_dup(&meta, st, ADB__ACTION_NCOLS);
  a->metadata_json = meta;
  if (!rc) l->n++;
  return rc;
}

/* Rows are collected first and fn called after the connection is released,
 * so fn may call the store. */
static int sq_actions_list(adb__store *st_, const char *agent,
                           void (*fn)(void *arg, const adb__action_rec *a),
                           void *arg) {
  sq_store *s = (sq_store *)st_;
  action_list l = {0};
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_ACTION_LIST, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    rc = rows_each(s, c, st, rc, action_list_add, &l, "list actions");
    stmt_done(st);
  }
  conn_give(c);
  for (int i = 0; i < l.n && !rc; i++)
    fn(arg, &l.v[i]);
  action_list_free(&l);
  return rc;
}

/* -------------------------------------------------------------- policies */

static int policy_row(void *arg, sqlite3_stmt *st) {
  adb__arm_stats a = {.n = sqlite3_column_int64(st, 1),
                      .sum_micro = adb__sum_of(sqlite3_column_int64(st, 5),
                                               sqlite3_column_int64(st, 2)),
                      .sum_sq = sqlite3_column_double(st, 3),
                      .version = sqlite3_column_int64(st, 4)};
  const char *id = (const char *)sqlite3_column_text(st, 0);
  return id ? adb__policy_push(arg, id, &a) : ADB_ENOMEM;
}

static int sq_policy_get(adb__store *st_, const char *agent, const char *user,
                         const char *state_key, adb__policy *p) {
  sq_store *s = (sq_store *)st_;
  p->n = 0;
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_POLICY_GET, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    bind_text(st, 2, user, &rc);
    bind_text(st, 3, state_key, &rc);
    rc = rows_each(s, c, st, rc, policy_row, p, "get policy");
    stmt_done(st);
  }
  conn_give(c);
  if (rc) p->n = 0;
  return rc;
}

/* ------------------------------------------------------------- decisions */

static int sq_decision_get(adb__store *st_, const char *agent,
                           const char *event_id, adb__decision_rec *out) {
  return rec_get((sq_store *)st_, S_DECISION_GET, &adb__decision_desc, agent,
                 event_id, out);
}

/* ------------------------------------------------------------ user state */

static int sq_user_state_put(adb__store *st_, const adb__user_state_rec *u) {
  sq_store *s = (sq_store *)st_;
  if (!ID_OK(u->user) || !dim_ok(u->embedding, u->dim))
    return bad(s, "user state", 0);
  conn *c = writer_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_USER_PUT, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, u->user, &rc);
    cols_bind(st, 2, adb__user_state_desc.cols, 2, u, NULL, &rc);
    bind_int(st, 4, u->updated_at_ms > 0 ? u->updated_at_ms : now_ms(), &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "put user state");
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

static int sq_user_state_get(adb__store *st_, const char *user,
                             adb__user_state_rec *out) {
  return rec_get((sq_store *)st_, S_USER_GET, &adb__user_state_desc, user, NULL,
                 out);
}

/* -------------------------------------------------------------- patterns */

static int sq_pattern_put(adb__store *st_, const char *agent,
                          const adb_pattern *p) {
  sq_store *s = (sq_store *)st_;
  if (!agent || !agent[0] || !adb__pattern_rec_ok(p))
    return bad(s, "pattern", 0);
  conn *c = writer_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_PATTERN_PUT, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    bind_text(st, 2, p->id, &rc);
    cols_bind(st, 3, adb__pattern_desc.cols, 6, p, NULL, &rc);
    bind_int(st, 9, p->updated_at_ms > 0 ? p->updated_at_ms : now_ms(), &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "put pattern");
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

static int sq_pattern_get(adb__store *st_, const char *agent, const char *id,
                          adb_pattern *out) {
  return rec_get((sq_store *)st_, S_PATTERN_GET, &adb__pattern_desc, agent, id,
                 out);
}

/* --------------------------------------------------------------- metrics */

typedef struct metrics_acc {
  adb_metrics_row **rows;
  int *n, cap;
} metrics_acc;

static int metrics_push(void *arg, sqlite3_stmt *st) {
  metrics_acc *m = arg;
  if (*m->n == m->cap) {
    int nc = m->cap ? m->cap * 2 : 32;
    adb_metrics_row *r = realloc(*m->rows, (size_t)nc * sizeof *r);
    if (!r) return ADB_ENOMEM;
    *m->rows = r;
    m->cap = nc;
  }
  return cols_read(st, adb__metrics_cols, ADB__METRICS_NCOLS,
                   &(*m->rows)[(*m->n)++]);
}

static int sq_metrics_get(adb__store *st_, const char *agent, int64_t from_ms,
                          int64_t to_ms, adb_metrics_row **rows, int *n) {
  sq_store *s = (sq_store *)st_;
  *rows = NULL;
  *n = 0;
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_METRICS_GET, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    bind_int(st, 2, from_ms, &rc);
    bind_int(st, 3, to_ms, &rc);
    metrics_acc m = {rows, n, 0};
    rc = rows_each(s, c, st, rc, metrics_push, &m, "get metrics");
    stmt_done(st);
  }
  conn_give(c);
  if (rc) {
    free(*rows);
    *rows = NULL;
    *n = 0;
  }
  return rc;
}

/* ----------------------------------------------------------- vectors */

#define VEC_PAGE 2048

/* One page of vectors_scan rows, owned (strings and embeddings). */
typedef struct vec_page {
  int n, kind; /* rows, of kind ADB__VEC_* */
  adb__vec_row rows[VEC_PAGE];
  char *text[VEC_PAGE]; /* agent\0id\0user\0action\0 of each row */
  float *emb[VEC_PAGE];
} vec_page;

static void vec_page_clear(vec_page *pg) {
  for (int i = 0; i < pg->n; i++) {
    free(pg->text[i]);
    free(pg->emb[i]);
  }
  pg->n = 0;
}

/* Appends the current row of st (columns as in S_VEC_*) to the page. */
static int vec_page_add(void *arg, sqlite3_stmt *st) {
  vec_page *pg = arg;
  int kind = pg->kind;
  const char *col[4];
  size_t len[4], total = 0;
  for (int c = 0; c < 4; c++) {
    col[c] = (const char *)sqlite3_column_text(st, c);
    len[c] = (size_t)sqlite3_column_bytes(st, c);
    if (!col[c]) col[c] = "", len[c] = 0;
    if (len[c] > ADB_ID_MAX) return ADB_ECORRUPT;
    total += len[c] + 1;
  }
  float *v;
  int dim, rc = col_embedding(&v, &dim, st, 5);
  if (rc) return rc;
  char *t = malloc(total);
  if (!t) {
    free(v);
    return ADB_ENOMEM;
  }
  adb__vec_row *r = &pg->rows[pg->n];
  const char **dst[4] = {&r->agent, &r->id, &r->user, &r->action};
  char *p = t;
  for (int c = 0; c < 4; c++) {
    memcpy(p, col[c], len[c]);
    p[len[c]] = 0;
    *dst[c] = p;
    p += len[c] + 1;
  }
  r->kind = kind;
  r->reward = sqlite3_column_double(st, 4);
  r->embedding = v;
  r->dim = dim;
  r->ts_ms = sqlite3_column_int64(st, 6);
  pg->text[pg->n] = t;
  pg->emb[pg->n++] = v;
  return ADB_OK;
}

/* Reads the page after the key (ts, agent, id). */
static int vec_page_read(sq_store *s, int kind, int64_t ts, const char *agent,
                         const char *id, vec_page *pg) {
  static const int sid[3] = {S_VEC_EPISODES, S_VEC_USERS, S_VEC_PATTERNS};
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, sid[kind], &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_int(st, 1, ts, &rc);
    bind_text(st, 2, agent, &rc);
    bind_text(st, 3, id, &rc);
    bind_int(st, 4, VEC_PAGE, &rc);
    pg->kind = kind;
    rc = rows_each(s, c, st, rc, vec_page_add, pg, "scan vectors");
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

static int sq_vectors_scan(adb__store *st_, int kind, int64_t since_ms,
                           int (*fn)(void *arg, const adb__vec_row *row),
                           void *arg) {
  sq_store *s = (sq_store *)st_;
  if (kind < ADB__VEC_EPISODES || kind > ADB__VEC_PATTERNS || !fn)
    return bad(s, "vector scan", 0);
  vec_page *pg = calloc(1, sizeof *pg);
  if (!pg) return ADB_ENOMEM;
  int64_t ts = since_ms;
  char agent[ADB_ID_MAX + 1] = "", id[ADB_ID_MAX + 1] = "";
  int rc;
  for (;;) {
    rc = vec_page_read(s, kind, ts, agent, id, pg);
    for (int i = 0; !rc && i < pg->n; i++)
      rc = fn(arg, &pg->rows[i]);
    int full = pg->n == VEC_PAGE;
    if (!rc && full) {
      const adb__vec_row *last = &pg->rows[pg->n - 1];
      ts = last->ts_ms;
      snprintf(agent, sizeof agent, "%s", last->agent);
      snprintf(id, sizeof id, "%s", last->id);
    }
    vec_page_clear(pg);
    if (rc || !full) break;
  }
  free(pg);
  return rc;
}

static int sq_ping(adb__store *st) {
  sq_store *s = (sq_store *)st;
  conn *c = reader_take(s);
  int rc = stmt_run(s, c, S_PING, "ping");
  conn_give(c);
  return rc;
}

/* ------------------------------------------------------------ migrations */

static int exec_err(sqlite3 *db, const char *sql, const char *what, char *err,
                    size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    snprintf(err, errlen, "sqlite: %s: %s", what,
             msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return rc;
}

/* 1 if version v is recorded in schema_migrations, 0 if not, <0 error. */
static int migration_done(sqlite3 *db, int v) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(
      db, "SELECT 1 FROM schema_migrations WHERE version = ?1", -1, &st, NULL);
  if (rc != SQLITE_OK) return -1;
  sqlite3_bind_int(st, 1, v);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

static int migration_record(sqlite3 *db, const adb__migration *m) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT INTO schema_migrations (version, name,"
                              " applied_at_ms) VALUES (?1, ?2, ?3)",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_int(st, 1, m->version);
  sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, now_ms());
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Applies m in its own transaction unless already recorded, which also
 * makes concurrent opens of one file apply each migration once. */
static int migrate_one(sqlite3 *db, const adb__migration *m, char *err,
                       size_t errlen) {
  char what[128];
  snprintf(what, sizeof what, "migration %04d_%s", m->version, m->name);
  int rc = exec_err(db, "BEGIN IMMEDIATE", what, err, errlen);
  if (rc) return rc;
  int done = migration_done(db, m->version);
  if (done == 0) {
    rc = exec_err(db, m->sql, what, err, errlen);
    if (!rc) rc = migration_record(db, m);
  } else if (done < 0) {
    rc = SQLITE_ERROR;
  }
  if (rc && !*err)
    snprintf(err, errlen, "sqlite: %s: %s", what, sqlite3_errmsg(db));
  if (!rc) rc = exec_err(db, "COMMIT", what, err, errlen);
  if (rc && !sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

static int migrate(sqlite3 *db, char *err, size_t errlen) {
  int rc = exec_err(db,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                    " applied_at_ms INTEGER NOT NULL)",
                    "create schema_migrations", err, errlen);
  for (int i = 0; i < adb__n_migrations_sqlite && !rc; i++)
    rc = migrate_one(db, &adb__migrations_sqlite[i], err, errlen);
  return rc;
}

/* ------------------------------------------------------------ open/close */

static int parse_option(sq_opts *o, const char *kv, size_t len, char *err,
                        size_t errlen) {
  char buf[64], *end = NULL;
  if (len >= sizeof buf) len = sizeof buf - 1;
  memcpy(buf, kv, len);
  buf[len] = 0;
  const char *ms = strncmp(buf, "busy_timeout_ms=", 16) == 0 ? buf + 16 : NULL;
  long v = ms ? strtol(ms, &end, 10) : -1;
  if (strcmp(buf, "synchronous=full") == 0) {
    o->synchronous = "FULL";
  } else if (strcmp(buf, "synchronous=normal") == 0) {
    o->synchronous = "NORMAL";
  } else if (ms && end != ms && !*end && v >= 0 && v <= INT_MAX) {
    o->busy_ms = (int)v;
  } else {
    snprintf(err, errlen,
             "sqlite URL option '%s' unknown or invalid"
             " (synchronous=full|normal, busy_timeout_ms=N)",
             buf);
    return ADB_EURL;
  }
  return ADB_OK;
}

/* sqlite://PATH[?synchronous=full|normal&busy_timeout_ms=N] */
static int parse_url(const char *url, sq_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  o->synchronous = "FULL";
  o->busy_ms = DEFAULT_BUSY_MS;
  const char *p = url + strlen("sqlite://");
  size_t plen = strcspn(p, "?");
  if (plen == 0 || plen >= sizeof o->path) {
    snprintf(err, errlen, "sqlite URL '%.200s' needs a path (sqlite://PATH)",
             url);
    return ADB_EURL;
  }
  memcpy(o->path, p, plen);
  o->path[plen] = 0;
  o->memory = strcmp(o->path, ":memory:") == 0;
  for (const char *q = p + plen; *q;) {
    q++;
    size_t n = strcspn(q, "&");
    if (n && parse_option(o, q, n, err, errlen)) return ADB_EURL;
    q += n;
  }
  return ADB_OK;
}

/* ------------------------------------------------------------ the lock */

/* One process per database file. Two processes writing one SQLite file is
 * safe for SQLite, but not for what AgentDB keeps beside it (the vector
 * index snapshot, written at close from memory) nor for its in-process
 * caches, which would serve stale posteriors. So a store takes an
 * exclusive POSIX record lock on PATH.lock before it opens the database: a
 * second process fails at open, naming the holder's pid, and the first is
 * never touched. Record locks belong to the process, so handles of one
 * process share the file (a registry counts them: closing any descriptor
 * of a locked file would drop the lock, so the descriptor is closed only
 * with the last handle). Several processes on one store: PostgreSQL. */
typedef struct file_lock {
  struct file_lock *next;
  dev_t dev;
  ino_t ino;
  int fd, refs;
} file_lock;

static pthread_mutex_t locks_mu = PTHREAD_MUTEX_INITIALIZER;
static file_lock *locks;

static int lock_take(const char *db_path, file_lock **out, char *err,
                     size_t errlen) {
  char path[PATH_MAX + 8];
  snprintf(path, sizeof path, "%s.lock", db_path);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, errlen, "sqlite: cannot open the lock file '%s': %s", path,
             strerror(errno));
    if (fd >= 0) close(fd);
    return ADB_EIO;
  }
  pthread_mutex_lock(&locks_mu);
  file_lock *l = locks;
  while (l && (l->dev != st.st_dev || l->ino != st.st_ino))
    l = l->next;
  int rc = ADB_OK;
  if (l) {
    l->refs++;
    close(fd); /* the registry's descriptor keeps the lock */
  } else {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
      struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
      int pid = fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK
                    ? (int)who.l_pid
                    : 0;
      snprintf(err, errlen,
               "sqlite: the store '%s' is in use by another process "
               "(pid %d): one agentdb process per SQLite file (use "
               "PostgreSQL for several replicas)",
               db_path, pid);
      close(fd);
      rc = ADB_EUNAVAIL;
    } else if (!(l = calloc(1, sizeof *l))) {
      close(fd);
      snprintf(err, errlen, "sqlite: out of memory");
      rc = ADB_ENOMEM;
    } else {
      *l = (file_lock){locks, st.st_dev, st.st_ino, fd, 1};
      locks = l;
    }
  }
  pthread_mutex_unlock(&locks_mu);
  *out = rc ? NULL : l;
  return rc;
}

static void lock_give(file_lock *l) {
  if (!l) return;
  pthread_mutex_lock(&locks_mu);
  if (--l->refs == 0) {
    file_lock **p = &locks;
    while (*p != l)
      p = &(*p)->next;
    *p = l->next;
    close(l->fd); /* releases the lock */
    free(l);
  }
  pthread_mutex_unlock(&locks_mu);
}

/* Creates the missing parent directories of path (mkdir -p of dirname). */
static int make_parents(const char *path, char *err, size_t errlen) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
      snprintf(err, errlen, "sqlite: cannot create directory '%s': %s", buf,
               strerror(errno));
      return ADB_EIO;
    }
    *p = '/';
  }
  return ADB_OK;
}

/* The writer (create) commits with synchronous=FULL through the VFS that
 * writes a commit's WAL frames in one call (sqlite_walbuf.c: only a
 * connection whose commits sync the WAL may use it); readers, and a
 * writer with synchronous=NORMAL, use the default VFS. */
static int conn_open(conn *c, const sq_opts *o, int create, char *err,
                     size_t errlen) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
              (create ? SQLITE_OPEN_CREATE : 0);
  const char *vfs =
      create && !strcmp(o->synchronous, "FULL") ? adb__sqlite_walbuf() : NULL;
  int rc = sqlite3_open_v2(o->path, &c->db, flags, vfs);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, o->busy_ms);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", o->synchronous);
    rc = exec_err(c->db, sql, "set synchronous", err, errlen);
  } else {
    snprintf(err, errlen, "sqlite: cannot open '%s': %s", o->path,
             c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
  }
  return rc;
}

static void conn_close(conn *c) {
  for (int i = 0; i < N_STMT; i++)
    sqlite3_finalize(c->stmt[i]);
  sqlite3_close_v2(c->db);
  pthread_mutex_destroy(&c->mu);
}

static void sq_close(adb__store *st) {
  sq_store *s = (sq_store *)st;
  if (!s) return;
  for (int i = 0; i < s->n_readers; i++)
    conn_close(&s->readers[i]);
  free(s->readers);
  conn_close(&s->writer); /* last: it checkpoints the WAL */
  lock_give(s->lock);     /* after every connection is closed */
  pthread_mutex_destroy(&s->err_mu);
  free(s);
}

/* The writer: creates the file, switches it to WAL, runs migrations. */
static int writer_open(sq_store *s, const sq_opts *o, char *err,
                       size_t errlen) {
  int rc = conn_open(&s->writer, o, 1, err, errlen);
  if (!rc && !o->memory)
    rc = exec_err(s->writer.db, "PRAGMA journal_mode = WAL", "enable WAL", err,
                  errlen);
  if (!rc)
    rc = exec_err(s->writer.db, "PRAGMA cache_size = " WRITER_CACHE_KIB,
                  "set cache size", err, errlen);
  if (!rc)
    rc = exec_err(s->writer.db, "PRAGMA wal_autocheckpoint = " WRITER_WAL_PAGES,
                  "set the checkpoint interval", err, errlen);
  if (!rc) rc = migrate(s->writer.db, err, errlen);
  return rc;
}

static int readers_open(sq_store *s, const sq_opts *o, int n, char *err,
                        size_t errlen) {
  s->readers = calloc((size_t)n, sizeof *s->readers);
  if (!s->readers) {
    snprintf(err, errlen, "sqlite: out of memory");
    return SQLITE_NOMEM;
  }
  for (; s->n_readers < n; s->n_readers++) {
    conn *c = &s->readers[s->n_readers];
    pthread_mutex_init(&c->mu, NULL);
    if (conn_open(c, o, 0, err, errlen) != SQLITE_OK) {
      s->n_readers++; /* so that close frees this one too */
      return SQLITE_CANTOPEN;
    }
  }
  return SQLITE_OK;
}

static int sq_open(const char *url, const adb_config *cfg, adb__store **out,
                   char *err, size_t errlen) {
  *out = NULL;
  char none[1];
  if (!err || !errlen) {
    err = none;
    errlen = sizeof none;
  }
  err[0] = 0;
  sq_opts o;
  int rc = parse_url(url, &o, err, errlen);
  if (!rc && !o.memory) rc = make_parents(o.path, err, errlen);
  if (rc) return rc;
  sq_store *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "sqlite: out of memory");
    return ADB_ENOMEM;
  }
  s->base.m = &adb__store_sqlite;
  s->id = atomic_fetch_add(&next_store_id, 1);
  pthread_mutex_init(&s->err_mu, NULL);
  pthread_mutex_init(&s->writer.mu, NULL);
  int pool = cfg && cfg->pool_size > 0 ? cfg->pool_size : DEFAULT_POOL;
  if (pool > MAX_POOL) pool = MAX_POOL;
  if (!o.memory && (rc = lock_take(o.path, &s->lock, err, errlen))) {
    sq_close(&s->base);
    return rc;
  }
  rc = writer_open(s, &o, err, errlen);
  if (!rc && !o.memory) rc = readers_open(s, &o, pool, err, errlen);
  if (rc) {
    sq_close(&s->base);
    return map_rc(rc);
  }
  *out = &s->base;
  return ADB_OK;
}

/* ---------------------------------------------------------- linear models */

#define LIN_PAGE 4096

typedef struct lin_page {
  int n;
  struct lin_page_row {
    int64_t seq, ts;
    double reward;
    char rid[ADB_ID_MAX + 1], act[ADB_ID_MAX + 1];
    size_t nf;
    uint8_t f[ADB__FEATURES_MAX];
  } rows[LIN_PAGE];
} lin_page;

static int lin_page_read(sq_store *s, const char *agent, int64_t after,
                         lin_page *pg) {
  pg->n = 0;
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_LIN_SCAN, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    bind_int(st, 2, after, &rc);
    bind_int(st, 3, LIN_PAGE, &rc);
    int bad_row = 0;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
      rc = sqlite3_step(st);
      if (rc != SQLITE_ROW) break;
      struct lin_page_row *r = &pg->rows[pg->n];
      r->seq = sqlite3_column_int64(st, 0);
      r->reward = sqlite3_column_double(st, 3);
      r->ts = sqlite3_column_int64(st, 4);
      r->nf = (size_t)sqlite3_column_bytes(st, 5);
      const void *f = sqlite3_column_blob(st, 5);
      if (col_copy(r->rid, sizeof r->rid, st, 1) ||
          col_copy(r->act, sizeof r->act, st, 2) || r->nf > sizeof r->f) {
        bad_row = 1;
        break;
      }
      if (r->nf) memcpy(r->f, f, r->nf);
      pg->n++;
    }
    if (bad_row)
      rc = col_fail(s, ADB_ECORRUPT, "scan linear rewards");
    else
      rc =
          rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "scan linear rewards");
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

static int sq_lin_scan(adb__store *st_, const char *agent, int64_t after_seq,
                       uint64_t min_xid, uint64_t *snap_xmin,
                       int (*fn)(void *arg, const adb__lin_row *row),
                       void *arg) {
  sq_store *s = (sq_store *)st_;
  (void)min_xid;
  *snap_xmin = UINT64_MAX; /* one writer: seq order is commit order */
  lin_page *pg = malloc(sizeof *pg);
  if (!pg) return ADB_ENOMEM;
  int rc;
  for (;;) {
    rc = lin_page_read(s, agent, after_seq, pg);
    for (int i = 0; !rc && i < pg->n; i++) {
      const struct lin_page_row *r = &pg->rows[i];
      adb__lin_row row = {.seq = r->seq,
                          .reward_id = r->rid,
                          .action = r->act,
                          .reward = r->reward,
                          .ts_ms = r->ts,
                          .features = r->f,
                          .n_features = r->nf};
      after_seq = r->seq;
      rc = fn(arg, &row);
    }
    if (rc || pg->n < LIN_PAGE) break;
  }
  free(pg);
  return rc;
}

static int sq_lin_checkpoint_put(adb__store *st_, const char *agent,
                                 const adb__lin_ckpt *k) {
  sq_store *s = (sq_store *)st_;
  conn *c = writer_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_LIN_CKPT_PUT, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    bind_text(st, 2, k->config, &rc);
    bind_int(st, 3, k->n, &rc);
    bind_int(st, 4, k->after_seq, &rc);
    bind_int(st, 5, (int64_t)k->min_xid, &rc);
    if (rc == SQLITE_OK)
      rc = sqlite3_bind_blob(st, 6, k->seen ? k->seen : "",
                             (int)k->n_seen_bytes, SQLITE_STATIC);
    if (rc == SQLITE_OK)
      rc = sqlite3_bind_blob64(st, 7, k->state, k->n_state, SQLITE_STATIC);
    bind_int(st, 8, now_ms(), &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "put checkpoint");
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

static int col_blob(void **out, size_t *n, sqlite3_stmt *st, int col) {
  *n = (size_t)sqlite3_column_bytes(st, col);
  const void *b = sqlite3_column_blob(st, col);
  *out = malloc(*n ? *n : 1);
  if (!*out) return ADB_ENOMEM;
  if (*n) memcpy(*out, b, *n);
  return ADB_OK;
}

static int sq_lin_checkpoint_get(adb__store *st_, const char *agent,
                                 adb__lin_ckpt *k) {
  sq_store *s = (sq_store *)st_;
  memset(k, 0, sizeof *k);
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_LIN_CKPT_GET, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      k->n = sqlite3_column_int64(st, 1);
      k->after_seq = sqlite3_column_int64(st, 2);
      k->min_xid = (uint64_t)sqlite3_column_int64(st, 3);
      rc = col_copy(k->config, sizeof k->config, st, 0);
      if (!rc) rc = col_blob(&k->seen, &k->n_seen_bytes, st, 4);
      if (!rc) rc = col_blob(&k->state, &k->n_state, st, 5);
      if (rc) col_fail(s, rc, "get checkpoint");
    } else if (rc == SQLITE_DONE) {
      rc = ADB_ENOTFOUND;
    } else {
      rc = sq_fail(s, c, rc, "get checkpoint");
    }
    stmt_done(st);
  }
  conn_give(c);
  if (rc) {
    free(k->seen);
    free(k->state);
    k->seen = k->state = NULL;
  }
  return rc;
}

typedef struct actvec_arg {
  void (*fn)(void *arg, const char *action, const float *v, int dim);
  void *arg;
} actvec_arg;

static int actvec_row(void *arg, sqlite3_stmt *st) {
  actvec_arg *x = arg;
  char id[ADB_ID_MAX + 1];
  float *v;
  int dim;
  if (col_copy(id, sizeof id, st, 0) || col_embedding(&v, &dim, st, 1))
    return ADB_ECORRUPT;
  if (dim) x->fn(x->arg, id, v, dim);
  free(v);
  return ADB_OK;
}

static int sq_action_vectors(adb__store *st_, const char *agent,
                             void (*fn)(void *arg, const char *action,
                                        const float *v, int dim),
                             void *arg) {
  sq_store *s = (sq_store *)st_;
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = stmt_get(s, c, S_ACTION_VECTORS, &st);
  if (!rc) {
    rc = SQLITE_OK;
    bind_text(st, 1, agent, &rc);
    actvec_arg x = {fn, arg};
    rc = rows_each(s, c, st, rc, actvec_row, &x, "list action embeddings");
    stmt_done(st);
  }
  conn_give(c);
  return rc;
}

/* ----------------------------------------------------------------- admin */

/* The admin calls are rare: their statements (adb__sql_*, store.c) are
 * prepared on each call rather than cached on the connection. */
static int adhoc(sq_store *s, conn *c, const char *sql, const char *a,
                 const char *b, sqlite3_stmt **st) {
  int rc = sqlite3_prepare_v2(c->db, sql, -1, st, NULL);
  if (rc != SQLITE_OK) return sq_fail(s, c, rc, "prepare");
  rc = SQLITE_OK;
  if (a) bind_text(*st, 1, a, &rc);
  if (b) bind_text(*st, 2, b, &rc);
  if (rc != SQLITE_OK) {
    rc = sq_fail(s, c, rc, "bind");
    sqlite3_finalize(*st);
    *st = NULL;
  }
  return rc;
}

/* Runs sql($1 = a, $2 = b) to the end; *changes (may be NULL) gets the
 * rows it changed. */
static int adhoc_run(sq_store *s, conn *c, const char *sql, const char *a,
                     const char *b, int64_t *changes) {
  sqlite3_stmt *st;
  int rc = adhoc(s, c, sql, a, b, &st);
  if (rc) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    ;
  rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "admin statement");
  if (!rc && changes) *changes = sqlite3_changes64(c->db);
  sqlite3_finalize(st);
  return rc;
}

static int run_list(sq_store *s, conn *c, const char *const *sql,
                    const char *a) {
  int rc = ADB_OK;
  for (int i = 0; sql[i] && !rc; i++)
    rc = adhoc_run(s, c, sql[i], a, NULL, NULL);
  return rc;
}

/* Calls fn(arg, st) for each row of sql($1 = a). */
static int adhoc_rows(sq_store *s, conn *c, const char *sql, const char *a,
                      int (*fn)(void *arg, sqlite3_stmt *st), void *arg) {
  sqlite3_stmt *st;
  int rc = adhoc(s, c, sql, a, NULL, &st);
  if (rc) return rc;
  rc = rows_each(s, c, st, SQLITE_OK, fn, arg, "admin read");
  sqlite3_finalize(st);
  return rc;
}

static const char *ctext(sqlite3_stmt *st, int i) {
  const char *t = (const char *)sqlite3_column_text(st, i);
  return t ? t : "";
}

static int sq_agents_list(adb__store *st_, const char *after, int limit,
                          char (*ids)[ADB_ID_MAX + 1], int *n) {
  sq_store *s = (sq_store *)st_;
  *n = 0;
  conn *c = reader_take(s);
  sqlite3_stmt *st;
  int rc = adhoc(s, c, adb__sql_agents_list, after ? after : "", NULL, &st);
  if (!rc) {
    int b = SQLITE_OK;
    bind_int(st, 2, limit, &b);
    while ((b == SQLITE_OK || b == SQLITE_ROW) && *n < limit &&
           (b = sqlite3_step(st)) == SQLITE_ROW)
      snprintf(ids[(*n)++], ADB_ID_MAX + 1, "%s", ctext(st, 0));
    rc = b == SQLITE_DONE || b == SQLITE_ROW ? ADB_OK
                                             : sq_fail(s, c, b, "list agents");
    sqlite3_finalize(st);
  }
  conn_give(c);
  return rc;
}

typedef struct cells_arg {
  const char *agent;
  adb__cell **cells;
  int *n;
} cells_arg;

static int agent_cell_row(void *arg, sqlite3_stmt *st) {
  cells_arg *x = arg;
  return adb__cells_push(x->cells, x->n, x->agent, ctext(st, 0), ctext(st, 1));
}

/* Erasure leaves no copy in the file: secure_delete overwrites the freed
 * content with zeros while the erasing transaction runs, and a truncating
 * checkpoint afterwards drops the WAL frames that still hold the old pages
 * (best effort: a reader in the middle of a transaction may keep part of
 * the WAL until the next checkpoint). */
static void secure_delete(conn *c, int on) {
  sqlite3_exec(c->db,
               on ? "PRAGMA secure_delete = ON" : "PRAGMA secure_delete = OFF",
               NULL, NULL, NULL);
  if (!on)
    sqlite3_exec(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
}

static int count_row(void *arg, sqlite3_stmt *st) {
  (void)st;
  ++*(int *)arg;
  return ADB_OK;
}

static int sq_agent_delete(adb__store *st_, const char *agent, int keep_config,
                           adb__cell **cells, int *n_cells) {
  sq_store *s = (sq_store *)st_;
  *cells = NULL;
  *n_cells = 0;
  cells_arg x = {agent, cells, n_cells};
  conn *c = writer_take(s);
  int found = 0;
  secure_delete(c, 1);
  int rc = stmt_run(s, c, S_BEGIN, "begin agent delete");
  if (!rc)
    rc = adhoc_rows(s, c, adb__sql_agent_exists, agent, count_row, &found);
  if (!rc && !found) {
    set_err(s, "agent '%s' not found", agent);
    rc = ADB_ENOTFOUND;
  }
  if (!rc)
    rc = adhoc_rows(s, c, adb__sql_agent_cells, agent, agent_cell_row, &x);
  if (!rc) rc = run_list(s, c, adb__sql_agent_learning, agent);
  if (!rc && !keep_config) rc = run_list(s, c, adb__sql_agent_config, agent);
  if (!rc) rc = stmt_run(s, c, S_COMMIT, "commit agent delete");
  if (rc) txn_abort(s, c);
  secure_delete(c, 0);
  conn_give(c);
  if (rc) {
    free(*cells);
    *cells = NULL;
    *n_cells = 0;
  }
  return rc;
}

static int sq_action_delete(adb__store *st_, const char *agent,
                            const char *action) {
  sq_store *s = (sq_store *)st_;
  conn *c = writer_take(s);
  int64_t n = 0;
  int rc = adhoc_run(s, c, adb__sql_action_delete, agent, action, &n);
  conn_give(c);
  if (!rc && n == 0) {
    set_err(s, "action '%s' of agent '%s' not found", action, agent);
    rc = ADB_ENOTFOUND;
  }
  return rc;
}

static int user_count_row(void *arg, sqlite3_stmt *st) {
  adb_user_summary *u = arg;
  u->decisions = sqlite3_column_int64(st, 0);
  u->rewards = sqlite3_column_int64(st, 1);
  u->episodes = sqlite3_column_int64(st, 2);
  u->policy_rows = sqlite3_column_int64(st, 3);
  u->has_state = sqlite3_column_int64(st, 4) > 0;
  u->sessions = sqlite3_column_int64(st, 5);
  return ADB_OK;
}

static int user_cell_row(void *arg, sqlite3_stmt *st) {
  adb__user_data *u = arg;
  return adb__cells_push(&u->cells, &u->n_cells, ctext(st, 0), "",
                         ctext(st, 1));
}

static int user_agent_row(void *arg, sqlite3_stmt *st) {
  return adb__agents_push(arg, ctext(st, 0));
}

static int user_session_row(void *arg, sqlite3_stmt *st) {
  return adb__sessions_push(arg, ctext(st, 0));
}

static int user_policy_row(void *arg, sqlite3_stmt *st) {
  adb__arm_stats d = {.n = -sqlite3_column_int64(st, 3),
                      .sum_micro = -adb__sum_of(sqlite3_column_int64(st, 6),
                                                sqlite3_column_int64(st, 4)),
                      .sum_sq = -sqlite3_column_double(st, 5)};
  return adb__change_push(arg, ctext(st, 0), ctext(st, 1), ctext(st, 2), &d);
}

/* Subtracts each of the user's rows (u->changes, negated) from its '*'
 * row and records the '*' row's new version. */
static int star_subtract(sq_store *s, conn *c, adb__user_data *u, int64_t now) {
  for (int i = 0; i < u->n_changes; i++) {
    adb__policy_change *ch = &u->changes[i];
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(c->db, adb__sql_star_subtract, -1, &st, NULL);
    if (rc != SQLITE_OK) return sq_fail(s, c, rc, "prepare");
    bind_int(st, 1, -ch->delta.n, &rc);
    bind_int(st, 2, adb__sum_hi(ch->delta.sum_micro), &rc);
    bind_int(st, 3, adb__sum_lo(ch->delta.sum_micro), &rc);
    bind_real(st, 4, -ch->delta.sum_sq, &rc);
    bind_int(st, 5, now, &rc);
    bind_text(st, 6, ch->agent, &rc);
    bind_text(st, 7, ch->state_key, &rc);
    bind_text(st, 8, ch->action, &rc);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      ch->delta.version = sqlite3_column_int64(st, 0);
      rc = sqlite3_step(st);
    }
    rc = rc == SQLITE_DONE ? ADB_OK : sq_fail(s, c, rc, "subtract from '*'");
    sqlite3_finalize(st);
    if (rc) return rc;
  }
  return ADB_OK;
}

static int user_read(sq_store *s, conn *c, const char *user, int erase,
                     adb__user_data *u) {
  int rc =
      adhoc_rows(s, c, adb__sql_user_counts, user, user_count_row, &u->sum);
  if (!rc) rc = adhoc_rows(s, c, adb__sql_user_cells, user, user_cell_row, u);
  if (!rc) rc = adhoc_rows(s, c, adb__sql_user_agents, user, user_agent_row, u);
  if (!rc)
    rc = adhoc_rows(s, c, adb__sql_user_sessions, user, user_session_row, u);
  if (!rc && erase)
    rc = adhoc_rows(s, c, adb__sql_user_rows, user, user_policy_row, u);
  return rc;
}

static int sq_user_data(adb__store *st_, const char *user, int erase,
                        adb__user_data *u) {
  sq_store *s = (sq_store *)st_;
  memset(u, 0, sizeof *u);
  conn *c = erase ? writer_take(s) : reader_take(s);
  if (erase) secure_delete(c, 1);
  int rc = erase ? stmt_run(s, c, S_BEGIN, "begin user erase") : ADB_OK;
  if (!rc) rc = user_read(s, c, user, erase, u);
  if (!rc && erase) rc = star_subtract(s, c, u, now_ms());
  if (!rc && erase) rc = run_list(s, c, adb__sql_user_delete, user);
  if (!rc && erase) rc = stmt_run(s, c, S_COMMIT, "commit user erase");
  if (rc && erase) txn_abort(s, c);
  if (erase) secure_delete(c, 0);
  conn_give(c);
  if (rc) adb__user_data_free(u);
  return rc;
}

/* ------------------------------------------------------------ log scan */

/* One page of the joined log: decisions after (ts, id) in [.., to), each
 * with its features, the user's stored embedding when it has no features,
 * and its rewards' count, sum, first time and whether one is the default.
 * GROUP BY and ORDER BY follow decisions_by_agent_time (agent, time,
 * rowid), so SQLite walks the index and stops at the limit. */
static const char log_page_sql[] =
    "SELECT d.id, d.event_id, d.user_id, d.state_key, d.context,"
    " d.candidates, d.action_id, d.propensity, d.model, d.created_at_ms,"
    " d.ranking, f.features, u.embedding, count(r.reward_id),"
    " total(r.reward), min(r.created_at_ms),"
    " max(substr(r.reward_id, 1, 1) = '~')"
    " FROM decisions d"
    " LEFT JOIN decision_features f"
    " ON f.agent_id = d.agent_id AND f.event_id = d.event_id"
    " LEFT JOIN user_states u ON f.features IS NULL AND u.user_id = d.user_id"
    " LEFT JOIN reward_signals r ON r.agent_id = d.agent_id"
    " AND r.event_id = d.event_id AND r.event_id <> ''"
    " WHERE d.agent_id = ?1 AND d.created_at_ms >= ?2 AND d.created_at_ms < ?3"
    " AND (d.created_at_ms, d.id) > (?2, ?4)"
    " GROUP BY d.created_at_ms, d.id ORDER BY d.created_at_ms, d.id LIMIT ?5";

typedef struct log_item {
  adb__decision_rec d;
  int64_t id;
  uint8_t feat[ADB__FEATURES_MAX];
  adb__logscan_cols c;
  void *user_emb;
} log_item;

static void log_items_clear(log_item *it, int n) {
  for (int i = 0; i < n; i++) {
    adb__decision_rec_free(&it[i].d);
    free(it[i].user_emb);
    it[i].user_emb = NULL;
  }
}

static int col_blob_dup(void **out, size_t *n, sqlite3_stmt *st, int col) {
  *out = NULL;
  *n = (size_t)sqlite3_column_bytes(st, col);
  const void *b = sqlite3_column_blob(st, col);
  if (!b || *n == 0) return ADB_OK;
  if (!(*out = malloc(*n))) return ADB_ENOMEM;
  memcpy(*out, b, *n);
  return ADB_OK;
}

static int log_item_read(log_item *it, sqlite3_stmt *st, const char *agent) {
  memset(it, 0, sizeof *it);
  adb__decision_rec *d = &it->d;
  it->id = sqlite3_column_int64(st, 0);
  snprintf(d->agent, sizeof d->agent, "%s", agent);
  int rc = col_copy(d->event_id, sizeof d->event_id, st, 1);
  if (!rc) rc = col_copy(d->user, sizeof d->user, st, 2);
  if (!rc) rc = col_copy(d->state_key, sizeof d->state_key, st, 3);
  if (!rc) rc = col_dup(&d->context_json, st, 4);
  if (!rc) rc = col_dup(&d->candidates_json, st, 5);
  if (!rc) rc = col_copy(d->action, sizeof d->action, st, 6);
  d->propensity = sqlite3_column_double(st, 7);
  if (!rc) rc = col_copy(d->model, sizeof d->model, st, 8);
  d->ts_ms = sqlite3_column_int64(st, 9);
  if (!rc) rc = col_dup(&d->ranking_json, st, 10);
  size_t fl = (size_t)sqlite3_column_bytes(st, 11);
  const void *f = sqlite3_column_blob(st, 11);
  if (f && fl > 0 && fl <= sizeof it->feat) {
    memcpy(it->feat, f, fl);
    it->c.features = it->feat;
    it->c.features_len = fl;
  }
  if (!rc) rc = col_blob_dup(&it->user_emb, &it->c.user_emb_len, st, 12);
  it->c.user_emb = it->user_emb;
  it->c.n_rewards = sqlite3_column_int64(st, 13);
  it->c.reward_sum = sqlite3_column_double(st, 14);
  it->c.first_ms = sqlite3_column_int64(st, 15);
  it->c.has_default = sqlite3_column_int(st, 16) != 0;
  return rc;
}

/* Reads the page after (*ts, *id) into it[0..*n). */
static int log_page_read(sq_store *s, const char *agent, int64_t ts, int64_t id,
                         int64_t to, log_item *it, int *n) {
  *n = 0;
  conn *c = reader_take(s);
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(c->db, log_page_sql, -1, &st, NULL);
  if (rc != SQLITE_OK) {
    rc = sq_fail(s, c, rc, "prepare log scan");
    conn_give(c);
    return rc;
  }
  rc = SQLITE_OK;
  bind_text(st, 1, agent, &rc);
  bind_int(st, 2, ts, &rc);
  bind_int(st, 3, to, &rc);
  bind_int(st, 4, id, &rc);
  bind_int(st, 5, ADB__LOG_PAGE, &rc);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    int crc = log_item_read(&it[*n], st, agent);
    (*n)++;
    if (crc) {
      rc = col_fail(s, crc, "read log");
      break;
    }
    rc = SQLITE_OK;
  }
  if (rc == SQLITE_DONE || rc == SQLITE_OK)
    rc = ADB_OK;
  else if (rc > 0)
    rc = sq_fail(s, c, rc, "scan log");
  sqlite3_finalize(st);
  conn_give(c);
  return rc;
}

/* One page to read (by a prefetch thread): its rows, their count, its
 * result and message. */
typedef struct log_fetch {
  sq_store *s;
  const char *agent;
  int64_t ts, id, to;
  log_item *it;
  int n, rc;
  char err[ERR_MAX];
} log_fetch;

static void log_fetch_run(log_fetch *f) {
  f->rc = log_page_read(f->s, f->agent, f->ts, f->id, f->to, f->it, &f->n);
  if (f->rc) snprintf(f->err, sizeof f->err, "%s", tls_err.msg);
}

static void *log_fetch_thread(void *arg) {
  log_fetch_run(arg);
  return NULL;
}

/* Pages as in store_pg.c: while the rows of one page are emitted, a thread
 * reads the next (after the page's last row), so reading overlaps the
 * writer; two pages in memory, no connection held during the callback. */
static int sq_log_scan(adb__store *st_, const char *agent, int64_t from_ms,
                       int64_t to_ms,
                       int (*fn)(void *ctx, const struct adb__log_row *row),
                       void *ctx) {
  sq_store *s = (sq_store *)st_;
  adb__logscan *x = malloc(sizeof *x);
  log_item *it = calloc(2 * ADB__LOG_PAGE, sizeof *it);
  log_fetch *pg = calloc(2, sizeof *pg);
  int ok = x && it && pg;
  int rc = ok ? adb__logscan_begin(x, st_, agent) : ADB_ENOMEM;
  if (!ok) set_err(s, "sqlite: log scan: out of memory");
  if (!rc) {
    pg[0] = (log_fetch){
        .s = s, .agent = agent, .ts = from_ms, .id = INT64_MIN, .to = to_ms};
    pg[1] = pg[0];
    pg[0].it = it;
    pg[1].it = it + ADB__LOG_PAGE;
    log_fetch_run(&pg[0]);
    if ((rc = pg[0].rc)) {
      log_items_clear(pg[0].it, pg[0].n);
      set_err(s, "%s", pg[0].err);
    }
  }
  for (int cur = 0; !rc; cur = !cur) {
    log_fetch *f = &pg[cur], *next = &pg[!cur];
    int more = f->n == ADB__LOG_PAGE, ahead = 0;
    pthread_t th;
    if (more) {
      next->ts = f->it[f->n - 1].d.ts_ms;
      next->id = f->it[f->n - 1].id;
      ahead = pthread_create(&th, NULL, log_fetch_thread, next) == 0;
    }
    for (int i = 0; !rc && i < f->n; i++)
      rc = adb__logscan_emit(x, &f->it[i].d, &f->it[i].c, fn, ctx);
    log_items_clear(f->it, f->n);
    f->n = 0;
    if (!more) break;
    if (ahead)
      pthread_join(th, NULL);
    else if (!rc)
      log_fetch_run(next);
    else
      break;
    if (!rc && (rc = next->rc)) set_err(s, "%s", next->err);
    if (rc) {
      log_items_clear(next->it, next->n);
      next->n = 0;
    }
  }
  if (ok) adb__logscan_end(x);
  free(x);
  free(it);
  free(pg);
  return rc;
}

/* ------------------------------------------ deferred events and the log */

/* Steps sql($1 = agent, $2 = the text t2 or, when it is NULL, the integer
 * i2, $3 = the integer i3) to its end, binding the parameters by name (the
 * shared SQL may use them in any order); *changes (may be NULL) gets the
 * rows it changed. */
static int adhoc_run_i(sq_store *s, conn *c, const char *sql, const char *agent,
                       const char *t2, int64_t i2, int64_t i3,
                       int64_t *changes) {
  sqlite3_stmt *st;
  int b = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
  if (b != SQLITE_OK) return sq_fail(s, c, b, "prepare");
  int i = sqlite3_bind_parameter_index(st, "$2");
  bind_text(st, sqlite3_bind_parameter_index(st, "$1"), agent, &b);
  if (t2)
    bind_text(st, i, t2, &b);
  else
    bind_int(st, i, i2, &b);
  if ((i = sqlite3_bind_parameter_index(st, "$3")) > 0) bind_int(st, i, i3, &b);
  while (b == SQLITE_OK || b == SQLITE_ROW)
    b = sqlite3_step(st);
  int rc = b == SQLITE_DONE ? ADB_OK : sq_fail(s, c, b, "log statement");
  if (!rc && changes) *changes = sqlite3_changes64(c->db);
  sqlite3_finalize(st);
  return rc;
}

static int sq_pattern_expire(adb__store *st_, const char *agent,
                             const char *prefix, int64_t before_ms,
                             int64_t *deleted) {
  sq_store *s = (sq_store *)st_;
  conn *c = writer_take(s);
  int rc = adhoc_run_i(s, c, adb__sql_pattern_expire, agent, prefix, 0,
                       before_ms, deleted);
  conn_give(c);
  return rc;
}

static int defer_row(void *arg, sqlite3_stmt *st) {
  *(int *)arg = sqlite3_column_type(st, 0) == SQLITE_NULL ? ADB__DEFER_WAITING
                                                          : ADB__DEFER_ACTIVE;
  return ADB_OK;
}

static int sq_event_defer(adb__store *st_, const char *agent,
                          const char *event_id, int op, int64_t now_ms,
                          int *state) {
  sq_store *s = (sq_store *)st_;
  conn *c = op == ADB__DEFER_GET ? reader_take(s) : writer_take(s);
  int rc = ADB_OK, got = ADB__DEFER_NONE;
  if (op != ADB__DEFER_GET)
    rc = adhoc_run_i(s, c,
                     op == ADB__DEFER_MARK ? adb__sql_defer_mark
                                           : adb__sql_defer_activate,
                     agent, event_id, 0, now_ms, NULL);
  if (!rc && state) {
    sqlite3_stmt *st;
    rc = adhoc(s, c, adb__sql_defer_get, agent, event_id, &st);
    if (!rc) {
      rc = rows_each(s, c, st, SQLITE_OK, defer_row, &got, "deferred event");
      sqlite3_finalize(st);
    }
    *state = got;
  }
  conn_give(c);
  return rc;
}

static int range_row(void *arg, sqlite3_stmt *st) {
  int64_t *r = arg;
  r[0] = sqlite3_column_type(st, 0) == SQLITE_NULL;
  r[1] = sqlite3_column_int64(st, 0);
  r[2] = sqlite3_column_int64(st, 1);
  return ADB_OK;
}

static int sq_log_range(adb__store *st_, const char *agent, int64_t *first_ms,
                        int64_t *last_ms) {
  sq_store *s = (sq_store *)st_;
  int64_t r[3] = {1, 0, 0};
  conn *c = reader_take(s);
  int rc = adhoc_rows(s, c, adb__sql_log_range, agent, range_row, r);
  conn_give(c);
  if (!rc && r[0]) {
    set_err(s, "sqlite: agent '%s' has no logged decision", agent);
    rc = ADB_ENOTFOUND;
  }
  *first_ms = rc ? 0 : r[1];
  *last_ms = rc ? 0 : r[2];
  return rc;
}

/* The cutoff of log_delete: now less the window and the lag, never past
 * the agent's default-reward watermark; no row for an unknown agent. */
static const char log_cutoff_sql[] =
    "SELECT CASE WHEN a.reward_window_s > 0 THEN"
    " min(?2 - CAST(a.reward_window_s * 1000 AS INTEGER) - ?3,"
    " coalesce(w.upto_ms, ?2)) ELSE ?2 - ?3 END"
    " FROM agent_metadata a LEFT JOIN default_watermarks w"
    " ON w.agent_id = a.agent_id WHERE a.agent_id = ?1";

static int cutoff_row(void *arg, sqlite3_stmt *st) {
  int64_t *r = arg;
  r[0] = 1;
  r[1] = sqlite3_column_int64(st, 0);
  return ADB_OK;
}

static int log_cutoff(sq_store *s, conn *c, const char *agent, int64_t now,
                      int64_t *upto) {
  sqlite3_stmt *st;
  int64_t r[2] = {0, 0};
  int rc = adhoc(s, c, log_cutoff_sql, agent, NULL, &st);
  if (rc) return rc;
  int b = SQLITE_OK;
  bind_int(st, 2, now, &b);
  bind_int(st, 3, ADB__DEFAULT_LAG_MS, &b);
  rc = rows_each(s, c, st, b, cutoff_row, r, "log cutoff");
  sqlite3_finalize(st);
  if (!rc && !r[0]) {
    set_err(s, "sqlite: agent '%s' not found", agent);
    rc = ADB_ENOTFOUND;
  }
  *upto = r[1];
  return rc;
}

static int log_delete_body(sq_store *s, conn *c, const char *agent, int64_t now,
                           adb__log_deleted *out) {
  int rc = log_cutoff(s, c, agent, now, &out->upto_ms);
  int64_t t = out->upto_ms, n = 0;
  for (int i = 0; !rc && adb__sql_log_delete_keyed[i]; i++)
    rc = adhoc_run_i(s, c, adb__sql_log_delete_keyed[i], agent, NULL, t, -1,
                     NULL);
  for (int i = 0; !rc && adb__sql_log_delete_rewards[i]; i++) {
    rc = adhoc_run_i(s, c, adb__sql_log_delete_rewards[i], agent, NULL, t, -1,
                     &n);
    out->rewards += rc ? 0 : n;
  }
  if (!rc)
    rc = adhoc_run_i(s, c, adb__sql_log_delete_decisions, agent, NULL, t, -1,
                     &out->decisions);
  if (!rc)
    rc = adhoc_run_i(s, c, adb__sql_log_delete_marks, agent, NULL, t, -1, NULL);
  return rc;
}

/* Like an erasure, the deleted rows leave no copy in the file. */
static int sq_log_delete(adb__store *st_, const char *agent, int64_t now_ms,
                         adb__log_deleted *out) {
  sq_store *s = (sq_store *)st_;
  memset(out, 0, sizeof *out);
  conn *c = writer_take(s);
  secure_delete(c, 1);
  int rc = stmt_run(s, c, S_BEGIN, "begin log delete");
  if (!rc) rc = log_delete_body(s, c, agent, now_ms, out);
  if (!rc) rc = stmt_run(s, c, S_COMMIT, "commit log delete");
  if (rc) txn_abort(s, c);
  secure_delete(c, 0);
  conn_give(c);
  if (rc) {
    int64_t upto = out->upto_ms;
    memset(out, 0, sizeof *out);
    out->upto_ms = upto;
  }
  return rc;
}

const adb__store_methods adb__store_sqlite = {
    .version = 1,
    .scheme = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .ping = sq_ping,
    .agent_put = sq_agent_put,
    .agent_get = sq_agent_get,
    .agent_counters = sq_agent_counters,
    .actions_put = sq_actions_put,
    .actions_list = sq_actions_list,
    .policy_get = sq_policy_get,
    .write_batch = sq_write_batch,
    .decision_get = sq_decision_get,
    .user_state_put = sq_user_state_put,
    .user_state_get = sq_user_state_get,
    .pattern_put = sq_pattern_put,
    .pattern_get = sq_pattern_get,
    .pattern_expire = sq_pattern_expire,
    .metrics_get = sq_metrics_get,
    .vectors_scan = sq_vectors_scan,
    .lin_scan = sq_lin_scan,
    .lin_checkpoint_put = sq_lin_checkpoint_put,
    .lin_checkpoint_get = sq_lin_checkpoint_get,
    .action_vectors = sq_action_vectors,
    .agent_fix_dim = sq_agent_fix_dim,
    .pending_sweep = sq_pending_sweep,
    .agents_list = sq_agents_list,
    .agent_delete = sq_agent_delete,
    .action_delete = sq_action_delete,
    .user_data = sq_user_data,
    .log_scan = sq_log_scan,
    .event_defer = sq_event_defer,
    .log_range = sq_log_range,
    .log_delete = sq_log_delete,
};
