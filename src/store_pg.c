/*
 * store_pg.c — the PostgreSQL 15 store backend: "postgresql://...".
 *
 * The URL is a libpq connection URI. These query parameters are ours and
 * are removed before libpq sees it:
 *   pool_size=N             connections (default cfg->pool_size, else 4)
 *   statement_timeout_ms=N  server-side statement_timeout (default 30000)
 *   retention_months=N      drop monthly partitions older than N months
 *                           (default env AGENTDB_RETENTION_MONTHS, else 0 =
 *                           keep everything)
 *   partitions_ahead=N      months created ahead (default 2)
 * Everything else (sslmode, connect_timeout, keepalives, application_name,
 * ...) goes to libpq, whose defaults we set first: connect_timeout=5,
 * TCP keepalives (30 s idle, 10 s interval, 3 probes), tcp_user_timeout and
 * application_name=agentdb.
 *
 * Pool. A fixed array of pool_size connection slots with a free stack under
 * a mutex; a caller waits on a condition variable when every slot is busy.
 * Slots connect lazily. On each acquire an idle connection is checked
 * without blocking (PQconsumeInput reads anything the server sent while it
 * sat idle: the FATAL of pg_terminate_backend or a shutdown, or EOF), and a
 * dead one is replaced before use. A connection on which a call failed with
 * a connection-class error (SQLSTATE 08xxx, 57P0x, or no SQLSTATE at all
 * because libpq lost the socket) is closed when released, so the next
 * caller reconnects. Reads are retried once on a fresh connection when the
 * one they got broke under them; writes are not (the commit may or may not
 * have happened): they return ADB_EUNAVAIL and the coordinator retries the
 * batch, which is idempotent (ON CONFLICT DO NOTHING everywhere).
 *
 * No call can hang. Connections are non-blocking and every wait for the
 * server is a poll() with a deadline of statement_timeout + 5 s; a server
 * that stops answering (SIGSTOP, a dead network with no RST) makes the call
 * fail with ADB_EUNAVAIL and the connection be dropped.
 *
 * Statements. Every SQL text is a constant in stmts[] and is prepared on a
 * connection the first time that connection runs it (and again after a
 * reconnect). Values are always parameters, in binary format for numbers,
 * bytea and arrays (no float formatting, no escaping); results come back in
 * binary too.
 *
 * Write batches. One transaction:
 *   1. decisions: one INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO
 *      NOTHING;
 *   2. rewards: the exactly-once gate is reward_ids (see the SQL header):
 *      the batch's distinct (agent, reward_id), sorted (so concurrent
 *      batches wait for each other's keys in one order and cannot
 *      deadlock), go in one INSERT ... ON CONFLICT DO NOTHING RETURNING;
 *      a returned id is new and applied. The others are read back: same
 *      body_hash is a duplicate (first_reward from the stored row), another
 *      body is ADB_ECONFLICT. New rewards are logged in reward_signals;
 *   3. episodes: COPY ... FROM STDIN (FORMAT binary) straight into
 *      agent_episodes under a savepoint; COPY cannot skip duplicates, so if
 *      that fails with a unique violation (a retried batch) the savepoint is
 *      rolled back and the rows go by COPY into a per-connection temporary
 *      staging table and then one INSERT ... SELECT ON CONFLICT DO NOTHING;
 *   4. metrics deltas, sorted by (agent, hour), one upsert each;
 *   5. last, so that these hot rows stay locked the shortest time: the
 *      increments of the new rewards, merged per row by adb__batch_merge
 *      (sorted by key), are added to rl_policies by one INSERT ... SELECT
 *      FROM unnest(...) ON CONFLICT DO UPDATE SET n = n + excluded.n, ...,
 *      version = version + 1 RETURNING version. Rows are locked in key
 *      order and every batch takes its locks in the same stage order, so
 *      two batches cannot deadlock.
 * Multi-row statements give one round trip per table, which is what
 * pipeline mode would buy, and COPY (not allowed in a pipeline) and the
 * read-back of step 2 depend on earlier results anyway.
 *
 * Partitions are maintained at open and then at most hourly from
 * write_batch, by the SQL function adb_maintain_partitions() under a short
 * lock_timeout so that it never queues the write path behind DDL.
 *
 * Migrations (sql/postgres/NNNN_name.sql, embedded) run at open on a dedicated
 * connection under a session advisory lock, each in its own transaction
 * with its schema_migrations row, so replicas starting together apply each
 * one exactly once and the others wait, then find nothing to do.
 */
#define _GNU_SOURCE /* qsort_r */
#include "store_pg.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log_scan.h"
#include "migrations.h"
#include "store.h"
#include "store_rec.h"
#include "util.h"

extern const adb__store_methods adb__store_pg;

#define DEFAULT_POOL 4
#define MAX_POOL 256
#define DEFAULT_STMT_TIMEOUT_MS 30000
#define DEFAULT_AHEAD 2
#define IO_MARGIN_MS 5000
#define MIGRATE_TIMEOUT_MS (30 * 60 * 1000)
#define MAINT_EVERY_MS (3600 * 1000)
#define MAINT_RETRY_MS (60 * 1000)
#define ERR_MAX 1024
#define MAX_PARAMS 24

/* pg_advisory_lock(ADV_CLASS, 1) guards migrations; (ADV_CLASS, 2) is taken
 * by adb_maintain_partitions(). */
#define ADV_CLASS 4703525

/* Type OIDs (pg_type.h) of the binary parameters and array elements. */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25
#define OID_FLOAT8 701

/* ------------------------------------------------------------ statements */

enum stmt_id {
  S_SETUP,
  S_AGENT_PUT,
  S_AGENT_GET,
  S_COUNTERS,
  S_ACTIONS_PUT,
  S_ACTIONS_LIST,
  S_POLICY_GET,
  S_DECISIONS_PUT,
  S_DECISION_GET,
  S_RID_INSERT,
  S_RID_LOOKUP,
  S_REWARDS_PUT,
  S_POLICY_ADD,
  S_METRICS_ADD,
  S_EPISODES_MOVE,
  S_METRICS_GET,
  S_USER_PUT,
  S_USER_GET,
  S_PATTERN_PUT,
  S_PATTERN_GET,
  S_PING,
  S_MAINTAIN,
  S_AGENT_FIX_DIM,
  S_DID_INSERT,
  S_DID_MINE,
  S_BATCH_MARK,
  S_BATCH_TRIM,
  S_PENDING_PUT,
  S_PENDING_JOIN,
  S_PENDING_EXPIRE,
  S_OUTCOME_CLAIM,
  S_DEFAULT_CLAIM,
  S_WATERMARK_INIT,
  S_DEFAULT_CANDIDATES,
  S_WATERMARK_ADVANCE,
  S_LOG_PAGE,
  S_DEFER_CLOSE,
  N_STMT
};

static const char *const stmts[N_STMT] = {
    [S_SETUP] = "SELECT set_config('statement_timeout', $1, false)",
    [S_AGENT_PUT] =
        "INSERT INTO agent_metadata AS a (agent_id, algorithm, prior_alpha,"
        " prior_beta, prior_mu, prior_kappa, prior_a, prior_b, context_keys,"
        " embedding_dim, simhash_bits, weight_watch, weight_click,"
        " weight_rating, fallback_strength, decay_half_life_s,"
        " reward_window_s, default_reward, created_at_ms, updated_at_ms,"
        " linear_crosses, linear_lambda, linear_v)"
        " VALUES ($1, $2, $3::float8, $4::float8, $5::float8, $6::float8,"
        " $7::float8, $8::float8, $9, $10::int8, $11::int8, $12::float8,"
        " $13::float8, $14::float8, $15::float8, $16::float8, $17::float8,"
        " $18::float8, $19::int8, $19::int8, $20::int8, $21::float8,"
        " $22::float8)"
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
        " THEN $2::int8 ELSE embedding_dim END WHERE agent_id = $1"
        " RETURNING embedding_dim",
    [S_AGENT_GET] =
        "SELECT algorithm, prior_alpha, prior_beta, prior_mu, prior_kappa,"
        " prior_a, prior_b, context_keys, embedding_dim, simhash_bits,"
        " weight_watch, weight_click, weight_rating, fallback_strength,"
        " decay_half_life_s, reward_window_s, default_reward, created_at_ms,"
        " updated_at_ms, linear_crosses, linear_lambda, linear_v"
        " FROM agent_metadata WHERE agent_id = $1",
    [S_COUNTERS] = "SELECT COALESCE(SUM(decisions), 0)::int8,"
                   " COALESCE(SUM(rewards), 0)::int8,"
                   " COALESCE(SUM(reward_sum), 0)::float8,"
                   " (SELECT count(*) FROM actions WHERE agent_id = $1)"
                   " FROM performance_metrics WHERE agent_id = $1",
    [S_ACTIONS_PUT] =
        "INSERT INTO actions (agent_id, action_id, embedding, metadata,"
        " disabled, updated_at_ms)"
        " SELECT $1, t.a, t.e, t.m, t.d, $6::int8 FROM unnest($2::text[],"
        " $3::bytea[], $4::text[], $5::bool[]) AS t(a, e, m, d)"
        " ON CONFLICT (agent_id, action_id) DO UPDATE SET"
        " embedding = excluded.embedding, metadata = excluded.metadata,"
        " disabled = excluded.disabled, updated_at_ms = excluded.updated_at_ms",
    [S_ACTIONS_LIST] =
        "SELECT action_id, disabled, COALESCE(length(embedding), 0)::int8,"
        " metadata FROM actions WHERE agent_id = $1 ORDER BY action_id",
    [S_POLICY_GET] = "SELECT action_id, n, sum_micro, sum_sq, version, sum_hi"
                     " FROM rl_policies"
                     " WHERE agent_id = $1 AND user_id = $2 AND state_key = $3"
                     " ORDER BY action_id",
    [S_DECISIONS_PUT] =
        "INSERT INTO decisions (agent_id, event_id, user_id, state_key,"
        " context, candidates, action_id, propensity, model, created_at_ms,"
        " ranking) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
        " $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[],"
        " $9::text[], $10::int8[], $11::text[]) ON CONFLICT DO NOTHING",
    [S_DECISION_GET] =
        "SELECT user_id, state_key, context, candidates, action_id,"
        " propensity, model, created_at_ms, ranking FROM decisions"
        " WHERE agent_id = $1 AND event_id = $2"
        " ORDER BY created_at_ms LIMIT 1",
    [S_RID_INSERT] =
        "INSERT INTO reward_ids (agent_id, reward_id, body_hash, reward,"
        " created_at_ms, batch_id) SELECT t.*, $6 FROM unnest($1::text[],"
        " $2::text[], $3::text[], $4::float8[], $5::int8[]) AS t"
        " ON CONFLICT DO NOTHING RETURNING agent_id, reward_id",
    [S_RID_LOOKUP] = "SELECT r.agent_id, r.reward_id, r.body_hash, r.reward,"
                     " COALESCE(r.batch_id, '') FROM reward_ids r JOIN "
                     "unnest($1::text[], $2::text[]) AS k(a, i)"
                     " ON r.agent_id = k.a COLLATE \"C\""
                     " AND r.reward_id = k.i COLLATE \"C\"",
    [S_REWARDS_PUT] =
        "INSERT INTO reward_signals (agent_id, reward_id, event_id, user_id,"
        " state_key, action_id, reward, reward_micro, signals, body_hash,"
        " created_at_ms) SELECT * FROM unnest($1::text[], $2::text[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[],"
        " $8::int8[], $9::text[], $10::text[], $11::int8[])"
        " ON CONFLICT DO NOTHING",
    [S_POLICY_ADD] =
        "INSERT INTO rl_policies AS p (agent_id, user_id, state_key,"
        " action_id, n, sum_micro, sum_hi, sum_sq, version, updated_at_ms)"
        " SELECT t.a, t.u, t.s, t.x, t.dn, t.dm, t.dh, t.dq, 1, $9::int8"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::int8[], $6::int8[], $7::float8[], $8::int8[])"
        " AS t(a, u, s, x, dn, dm, dq, dh)"
        " ON CONFLICT (agent_id, user_id, state_key, action_id) DO UPDATE SET"
        " n = p.n + excluded.n,"
        /* hi * 2^32 + lo, carried in the statement (0004_sum_headroom) */
        " sum_micro = (p.sum_micro + excluded.sum_micro) & 4294967295,"
        " sum_hi = p.sum_hi + excluded.sum_hi"
        " + ((p.sum_micro + excluded.sum_micro) >> 32),"
        " sum_sq = p.sum_sq + excluded.sum_sq, version = p.version + 1,"
        " updated_at_ms = excluded.updated_at_ms"
        " RETURNING agent_id, user_id, state_key, action_id, version",
    [S_METRICS_ADD] =
        "INSERT INTO performance_metrics AS m (agent_id, hour_ms, decisions,"
        " rewards, reward_sum, cache_hits, cache_misses, latency_p50_us,"
        " latency_p99_us) VALUES ($1, $2::int8, $3::int8, $4::int8,"
        " $5::float8, $6::int8, $7::int8, greatest($8::float8, 0),"
        " greatest($9::float8, 0)) ON CONFLICT (agent_id, hour_ms) DO UPDATE"
        " SET decisions = m.decisions + excluded.decisions,"
        " rewards = m.rewards + excluded.rewards,"
        " reward_sum = m.reward_sum + excluded.reward_sum,"
        " cache_hits = m.cache_hits + excluded.cache_hits,"
        " cache_misses = m.cache_misses + excluded.cache_misses,"
        " latency_p50_us = CASE WHEN $8::float8 >= 0 THEN $8::float8"
        " ELSE m.latency_p50_us END,"
        " latency_p99_us = CASE WHEN $9::float8 >= 0 THEN $9::float8"
        " ELSE m.latency_p99_us END",
    [S_EPISODES_MOVE] =
        "INSERT INTO agent_episodes (agent_id, episode_id, user_id,"
        " session_id, embedding, action_id, reward, context, created_at_ms)"
        " SELECT agent_id, episode_id, user_id, session_id, embedding,"
        " action_id, reward, context, created_at_ms FROM adb_episodes_in"
        " ON CONFLICT DO NOTHING",
    [S_METRICS_GET] =
        "SELECT hour_ms, decisions, rewards, reward_sum, cache_hits,"
        " cache_misses, latency_p50_us, latency_p99_us FROM"
        " performance_metrics WHERE agent_id = $1 AND hour_ms >= $2::int8"
        " AND hour_ms < $3::int8 ORDER BY hour_ms",
    [S_USER_PUT] =
        "INSERT INTO user_states (user_id, embedding, context, updated_at_ms)"
        " VALUES ($1, $2::bytea, $3, $4::int8) ON CONFLICT (user_id) DO UPDATE"
        " SET embedding = excluded.embedding, context = excluded.context,"
        " updated_at_ms = excluded.updated_at_ms",
    [S_USER_GET] = "SELECT embedding, context, updated_at_ms FROM user_states"
                   " WHERE user_id = $1",
    [S_PATTERN_PUT] =
        "INSERT INTO learned_patterns (agent_id, pattern_id, type, key, value,"
        " confidence, support, embedding, updated_at_ms)"
        " VALUES ($1, $2, $3, $4, $5, $6::float8, $7::int8, $8::bytea,"
        " $9::int8) ON CONFLICT (agent_id, pattern_id) DO UPDATE SET"
        " type = excluded.type, key = excluded.key, value = excluded.value,"
        " confidence = excluded.confidence, support = excluded.support,"
        " embedding = excluded.embedding,"
        " updated_at_ms = excluded.updated_at_ms",
    [S_PATTERN_GET] = "SELECT type, key, value, confidence, support, embedding,"
                      " updated_at_ms FROM learned_patterns"
                      " WHERE agent_id = $1 AND pattern_id = $2",
    [S_PING] = "SELECT 1",
    [S_MAINTAIN] = "SELECT adb_maintain_partitions($1::int4, $2::int4)",
    [S_DID_INSERT] = "INSERT INTO decision_ids (agent_id, event_id, batch_id,"
                     " created_at_ms) SELECT t.a, t.e, $3, $4::int8 FROM"
                     " unnest($1::text[], $2::text[]) AS t(a, e)"
                     " ON CONFLICT DO NOTHING RETURNING agent_id, event_id",
    [S_DID_MINE] =
        "SELECT d.agent_id, d.event_id FROM decision_ids d"
        " JOIN unnest($1::text[], $2::text[]) AS k(a, e)"
        " ON d.agent_id = k.a COLLATE \"C\" AND d.event_id = k.e COLLATE \"C\""
        " WHERE d.batch_id = $3",
    [S_BATCH_MARK] =
        "INSERT INTO write_batches (batch_id, created_at_ms)"
        " VALUES ($1, $2::int8) ON CONFLICT DO NOTHING RETURNING 1",
    [S_BATCH_TRIM] = "DELETE FROM write_batches WHERE created_at_ms < $1::int8",
    [S_PENDING_PUT] =
        "INSERT INTO pending_rewards (agent_id, reward_id, event_id, reward,"
        " reward_micro, signals, body_hash, created_at_ms, expires_at_ms)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
        " $4::float8[], $5::int8[], $6::text[], $7::text[], $8::int8[],"
        " $9::int8[]) ON CONFLICT DO NOTHING",
    [S_PENDING_JOIN] =
        "DELETE FROM pending_rewards p USING decisions d"
        " WHERE d.agent_id = p.agent_id AND d.event_id = p.event_id"
        " RETURNING p.agent_id, p.reward_id, p.event_id, d.user_id,"
        " d.state_key, d.action_id, p.reward, p.reward_micro, p.signals,"
        " p.body_hash, p.created_at_ms",
    [S_PENDING_EXPIRE] =
        "DELETE FROM pending_rewards WHERE expires_at_ms <= $1::int8"
        " RETURNING 1",
    /* DO UPDATE (a no-op) rather than DO NOTHING: it waits for a
     * concurrent claim and returns the outcome that won, committed. */
    [S_OUTCOME_CLAIM] =
        "INSERT INTO event_outcomes AS o (agent_id, event_id, outcome,"
        " created_at_ms) SELECT DISTINCT t.a, t.e, 'reward', $3::int8"
        " FROM unnest($1::text[], $2::text[]) AS t(a, e) ORDER BY 1, 2"
        " ON CONFLICT (agent_id, event_id) DO UPDATE SET outcome = o.outcome"
        " RETURNING agent_id, event_id, outcome",
    [S_DEFAULT_CLAIM] =
        "INSERT INTO event_outcomes (agent_id, event_id, outcome,"
        " created_at_ms) SELECT t.a, t.e, 'default', $3::int8"
        " FROM unnest($1::text[], $2::text[]) AS t(a, e) ORDER BY 1, 2"
        " ON CONFLICT DO NOTHING RETURNING agent_id, event_id",
    [S_WATERMARK_INIT] =
        "INSERT INTO default_watermarks (agent_id, upto_ms)"
        " SELECT agent_id, $1::int8 - (reward_window_s * 1000)::int8"
        " - $2::int8 FROM agent_metadata WHERE reward_window_s > 0"
        " ON CONFLICT DO NOTHING",
    [S_DEFAULT_CANDIDATES] =
        "SELECT DISTINCT ON (d.agent_id, d.event_id) d.agent_id, d.event_id,"
        " d.user_id, d.state_key, d.action_id, a.default_reward,"
        " x.event_id IS NOT NULL AND x.activated_at_ms IS NULL,"
        " x.event_id IS NOT NULL"
        " FROM default_watermarks w"
        " JOIN agent_metadata a ON a.agent_id = w.agent_id"
        " JOIN decisions d ON d.agent_id = w.agent_id"
        " AND d.created_at_ms >= w.upto_ms AND d.created_at_ms < $1::int8"
        " - (a.reward_window_s * 1000)::int8 - $2::int8"
        " LEFT JOIN deferred_events x ON x.agent_id = d.agent_id"
        " AND x.event_id = d.event_id"
        " WHERE a.reward_window_s > 0 ORDER BY d.agent_id, d.event_id,"
        " d.created_at_ms",
    [S_WATERMARK_ADVANCE] =
        "UPDATE default_watermarks AS w SET upto_ms = greatest(w.upto_ms,"
        " $1::int8 - (a.reward_window_s * 1000)::int8 - $2::int8)"
        " FROM agent_metadata a WHERE a.agent_id = w.agent_id"
        " AND a.reward_window_s > 0",
    /* log_scan's page (see there) */
    [S_LOG_PAGE] =
        "WITH d AS MATERIALIZED (SELECT * FROM decisions WHERE agent_id = $1"
        " AND created_at_ms >= $2::int8 AND created_at_ms < $3::int8"
        " AND (created_at_ms, id) > ($2::int8, $4::int8)"
        " ORDER BY created_at_ms, id LIMIT $5::int8)"
        " SELECT d.id, d.event_id, d.user_id, d.state_key, d.context,"
        " d.candidates, d.action_id, d.propensity, d.model, d.created_at_ms,"
        " d.ranking, f.features, u.embedding, r.n, r.s, r.first, r.dflt"
        " FROM d LEFT JOIN decision_features f"
        " ON f.agent_id = d.agent_id AND f.event_id = d.event_id"
        " LEFT JOIN user_states u ON f.features IS NULL AND u.user_id = "
        "d.user_id"
        " LEFT JOIN (SELECT event_id, count(*) AS n, sum(reward) AS s,"
        " min(created_at_ms) AS first, bool_or(reward_id LIKE '~%') AS dflt"
        " FROM reward_signals WHERE agent_id = $1"
        " AND event_id = ANY (ARRAY(SELECT event_id FROM d))"
        " AND event_id <> '' GROUP BY event_id) r ON r.event_id = d.event_id"
        " ORDER BY d.created_at_ms, d.id",
    /* The deferral marks of the decisions the sweep has just closed (they
     * are read by the sweep only while open: the table stays small). */
    [S_DEFER_CLOSE] =
        "DELETE FROM deferred_events x USING default_watermarks w,"
        " agent_metadata a, decisions d WHERE a.agent_id = w.agent_id"
        " AND a.reward_window_s > 0 AND d.agent_id = w.agent_id"
        " AND d.created_at_ms >= w.upto_ms AND d.created_at_ms < $1::int8"
        " - (a.reward_window_s * 1000)::int8 - $2::int8"
        " AND x.agent_id = d.agent_id AND x.event_id = d.event_id",
};

_Static_assert(N_STMT <= 64, "pgconn.prepared is a 64-bit mask");

/* The staging table of episode COPY; one per connection, emptied at each
 * commit. Its columns are those of the COPY below, in order. */
static const char sql_staging[] =
    "CREATE TEMP TABLE IF NOT EXISTS adb_episodes_in (agent_id text,"
    " episode_id text, user_id text, session_id text, embedding bytea,"
    " action_id text, reward float8, context text, created_at_ms int8)"
    " ON COMMIT DELETE ROWS";
static const char sql_copy_staging[] =
    "COPY adb_episodes_in (agent_id, episode_id, user_id, session_id,"
    " embedding, action_id, reward, context, created_at_ms)"
    " FROM STDIN (FORMAT binary)";
static const char sql_copy_direct[] =
    "COPY agent_episodes (agent_id, episode_id, user_id, session_id,"
    " embedding, action_id, reward, context, created_at_ms)"
    " FROM STDIN (FORMAT binary)";

/* ---------------------------------------------------------------- handle */

typedef struct pgconn {
  PGconn *pg;
  uint64_t prepared; /* bit i: stmts[i] is prepared on this connection */
  int staging;       /* adb_episodes_in exists on this connection */
  int broken;        /* close at release */
  char sqlstate[6];  /* of the last failure on it ("" if none) */
} pgconn;

typedef struct pg_opts {
  int pool_size, stmt_timeout_ms, retention_months, ahead;
} pg_opts;

typedef struct pg_store {
  adb__store base;
  uint64_t id; /* unique per open: tags this handle's thread-local errors */
  char *url;   /* libpq URI, our own parameters removed */
  pg_opts o;
  int io_timeout_ms;
  pgconn *conns;
  int *free_stack, n_free;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  _Atomic int64_t maint_due_ms;
  pthread_mutex_t err_mu;
  char last_err[ERR_MAX];
} pg_store;

static atomic_uint_fast64_t next_store_id = 1;

/* ---------------------------------------------------------------- errors */

static _Thread_local struct {
  uint64_t owner;
  char msg[ERR_MAX];
} tls_err;

static void set_err(pg_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(pg_store *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tls_err.msg, sizeof tls_err.msg, fmt, ap);
  va_end(ap);
  size_t n = strlen(tls_err.msg); /* libpq messages end in a newline */
  while (n && (tls_err.msg[n - 1] == '\n' || tls_err.msg[n - 1] == ' '))
    tls_err.msg[--n] = 0;
  tls_err.owner = s->id;
  pthread_mutex_lock(&s->err_mu);
  memcpy(s->last_err, tls_err.msg, sizeof s->last_err);
  pthread_mutex_unlock(&s->err_mu);
}

static const char *pg_errmsg(adb__store *st) {
  pg_store *s = (pg_store *)st;
  if (tls_err.owner != s->id) {
    pthread_mutex_lock(&s->err_mu);
    memcpy(tls_err.msg, s->last_err, sizeof tls_err.msg);
    pthread_mutex_unlock(&s->err_mu);
    tls_err.owner = s->id;
  }
  return tls_err.msg;
}

/* Our code for a failed result (r may be NULL). Connection loss, shutdown,
 * too many connections, timeouts, lock timeouts, serialization failures and
 * deadlocks are "try again later"; the first two also mark the connection
 * broken. */
static int classify(pgconn *c, const PGresult *r) {
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (PQstatus(c->pg) != CONNECTION_OK || !st || strncmp(st, "08", 2) == 0 ||
      strncmp(st, "57P", 3) == 0) {
    c->broken = 1;
    return ADB_EUNAVAIL;
  }
  if (strncmp(st, "53", 2) == 0 || strcmp(st, "57014") == 0 ||
      strcmp(st, "55P03") == 0 || strcmp(st, "40001") == 0 ||
      strcmp(st, "40P01") == 0)
    return ADB_EUNAVAIL;
  return ADB_ESTORE;
}

static int fail(pg_store *s, pgconn *c, const PGresult *r, const char *what) {
  int rc = classify(c, r);
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  snprintf(c->sqlstate, sizeof c->sqlstate, "%s", st ? st : "");
  const char *msg = r ? PQresultErrorMessage(r) : "";
  if (!msg[0]) msg = PQerrorMessage(c->pg);
  if (!msg[0]) msg = "connection lost";
  set_err(s, "postgresql: %s: %s", what, msg);
  return rc;
}

static int oom(pg_store *s, const char *what) {
  set_err(s, "postgresql: %s: out of memory", what);
  return ADB_ENOMEM;
}

/* ---------------------------------------------------------- byte helpers */

static void be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static void be64(unsigned char *p, uint64_t v) {
  be32(p, (uint32_t)(v >> 32));
  be32(p + 4, (uint32_t)v);
}

static uint64_t rd_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

static uint64_t dbl_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  return u;
}

/* Embeddings are little-endian float32; so is every host we build on, but
 * a big-endian one swaps. dst holds 4 * dim bytes. */
static void emb_to_le(unsigned char *dst, const float *v, int dim) {
  for (int i = 0; i < dim; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    dst[4 * i] = (unsigned char)u;
    dst[4 * i + 1] = (unsigned char)(u >> 8);
    dst[4 * i + 2] = (unsigned char)(u >> 16);
    dst[4 * i + 3] = (unsigned char)(u >> 24);
  }
}

static void emb_from_le(float *v, const unsigned char *src, int dim) {
  for (int i = 0; i < dim; i++) {
    const unsigned char *b = src + 4 * i;
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    memcpy(&v[i], &u, 4);
  }
}

/* Appends to a binary buffer (array, COPY data). */
static void put32(adb__sbuf *b, uint32_t v) {
  unsigned char x[4];
  be32(x, v);
  adb__sbuf_add(b, (const char *)x, 4);
}

static void put64(adb__sbuf *b, uint64_t v) {
  unsigned char x[8];
  be64(x, v);
  adb__sbuf_add(b, (const char *)x, 8);
}

/* A field of an array element or COPY tuple: length, bytes; NULL is -1. */
static void fld_bytes(adb__sbuf *b, const void *p, size_t n) {
  if (!p) {
    put32(b, 0xFFFFFFFFu);
    return;
  }
  put32(b, (uint32_t)n);
  adb__sbuf_add(b, p, n);
}

static void fld_text(adb__sbuf *b, const char *s) {
  fld_bytes(b, s, s ? strlen(s) : 0);
}

static void fld_i64(adb__sbuf *b, int64_t v) {
  put32(b, 8);
  put64(b, (uint64_t)v);
}

static void fld_f64(adb__sbuf *b, double d) {
  put32(b, 8);
  put64(b, dbl_bits(d));
}

static void fld_bool(adb__sbuf *b, int v) {
  put32(b, 1);
  adb__sbuf_add(b, v ? "\1" : "\0", 1);
}

static void fld_emb(adb__sbuf *b, const float *v, int dim) {
  if (!v || dim <= 0) {
    put32(b, 0xFFFFFFFFu);
    return;
  }
  put32(b, (uint32_t)dim * 4);
  unsigned char tmp[256];
  for (int i = 0; i < dim; i += 64) {
    int k = dim - i < 64 ? dim - i : 64;
    emb_to_le(tmp, v + i, k);
    adb__sbuf_add(b, (const char *)tmp, (size_t)k * 4);
  }
}

/* The header of a one-dimensional binary array of n elements. */
static void arr_begin(adb__sbuf *b, uint32_t elem_oid, int n) {
  put32(b, 1);        /* dimensions */
  put32(b, 1);        /* may hold NULLs */
  put32(b, elem_oid); /* element type */
  put32(b, (uint32_t)n);
  put32(b, 1); /* lower bound */
}

/* ------------------------------------------------------------ parameters */

typedef struct params {
  int n;
  const char *v[MAX_PARAMS];
  int len[MAX_PARAMS], fmt[MAX_PARAMS];
  unsigned char raw[MAX_PARAMS][8];
} params;

static void p_text(params *p, const char *s) {
  p->v[p->n] = s;
  p->len[p->n] = 0;
  p->fmt[p->n++] = 0;
}

static void p_bin(params *p, const void *d, size_t n) {
  p->v[p->n] = d;
  p->len[p->n] = (int)n;
  p->fmt[p->n++] = 1;
}

static void p_i64(params *p, int64_t x) {
  be64(p->raw[p->n], (uint64_t)x);
  p_bin(p, p->raw[p->n], 8);
}

static void p_i32(params *p, int32_t x) {
  be32(p->raw[p->n], (uint32_t)x);
  p_bin(p, p->raw[p->n], 4);
}

static void p_f64(params *p, double d) {
  be64(p->raw[p->n], dbl_bits(d));
  p_bin(p, p->raw[p->n], 8);
}

static void p_buf(params *p, const adb__sbuf *b) {
  p_bin(p, b->p, b->len);
}

/* --------------------------------------------------------------- results */

static int64_t r_i64(const PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col)) return 0;
  int n = PQgetlength(r, row, col);
  const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
  if (n == 8) return (int64_t)rd_be(p, 8);
  if (n == 4) return (int32_t)(uint32_t)rd_be(p, 4);
  if (n == 2) return (int16_t)(uint16_t)rd_be(p, 2);
  return 0;
}

static double r_f64(const PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col)) return 0;
  const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
  if (PQgetlength(r, row, col) == 4) {
    uint32_t u = (uint32_t)rd_be(p, 4);
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  uint64_t u = rd_be(p, 8);
  double d;
  memcpy(&d, &u, 8);
  return d;
}

static int r_bool(const PGresult *r, int row, int col) {
  return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] != 0;
}

/* Copies a text column into a fixed buffer; too long means corrupt. */
static int r_copy(char *dst, size_t size, const PGresult *r, int row, int col) {
  size_t n = (size_t)PQgetlength(r, row, col);
  if (n >= size) return ADB_ECORRUPT;
  memcpy(dst, PQgetvalue(r, row, col), n);
  dst[n] = 0;
  return ADB_OK;
}

/* A malloc'd copy of a text column, NULL for SQL NULL. */
static int r_dup(char **dst, const PGresult *r, int row, int col) {
  *dst = NULL;
  if (PQgetisnull(r, row, col)) return ADB_OK;
  size_t n = (size_t)PQgetlength(r, row, col);
  if (!(*dst = malloc(n + 1))) return ADB_ENOMEM;
  memcpy(*dst, PQgetvalue(r, row, col), n);
  (*dst)[n] = 0;
  return ADB_OK;
}

/* A malloc'd embedding from a bytea column; NULL and 0 for SQL NULL. */
static int r_emb(float **v, int *dim, const PGresult *r, int row, int col) {
  *v = NULL;
  *dim = 0;
  if (PQgetisnull(r, row, col)) return ADB_OK;
  size_t n = (size_t)PQgetlength(r, row, col);
  if (n == 0) return ADB_OK;
  if (n % 4 || n / 4 > ADB_MAX_EMBEDDING_DIM) return ADB_ECORRUPT;
  if (!(*v = malloc(n))) return ADB_ENOMEM;
  emb_from_le(*v, (const unsigned char *)PQgetvalue(r, row, col), (int)(n / 4));
  *dim = (int)(n / 4);
  return ADB_OK;
}

static int col_fail(pg_store *s, int rc, const char *what) {
  set_err(s, "postgresql: %s: %s", what,
          rc == ADB_ENOMEM ? "out of memory" : "stored value is malformed");
  return rc;
}

/* Column i of row `row` into its field of rec (store_rec.h). */
static int col_read(const PGresult *r, int row, int i, const adb__col *d,
                    void *rec) {
  char *f = (char *)rec + d->off;
  switch (d->type) {
  case ADB__COL_INT:
    *(int *)f = (int)r_i64(r, row, i);
    break;
  case ADB__COL_I64:
    *(int64_t *)f = r_i64(r, row, i);
    break;
  case ADB__COL_F64:
    *(double *)f = r_f64(r, row, i);
    break;
  case ADB__COL_BOOL:
    *(int *)f = r_bool(r, row, i);
    break;
  case ADB__COL_DIM:
    *(int *)f = (int)(r_i64(r, row, i) / 4);
    break;
  case ADB__COL_ID:
    return r_copy(f, d->aux, r, row, i);
  case ADB__COL_TEXT:
    return r_dup((char **)f, r, row, i);
  case ADB__COL_EMB:
    return r_emb((float **)f, (int *)((char *)rec + d->aux), r, row, i);
  case ADB__COL_ALGO:
    return adb__algo_parse(PQgetvalue(r, row, i), (adb_algorithm *)f);
  case ADB__COL_KEYS:
    return adb__context_keys_parse(rec, PQgetvalue(r, row, i));
  }
  return ADB_OK;
}

/* Columns 0..n-1 of a row into rec, by the reading rules of store_rec.h. */
static int cols_read(const PGresult *r, int row, const adb__col *cols, int n,
                     void *rec) {
  int rc = ADB_OK;
  for (int i = 0; i < n; i++) {
    if (rc && adb__col_may_fail(cols[i].type)) continue;
    int e = col_read(r, row, i, &cols[i], rec);
    if (e && cols[i].type == ADB__COL_ALGO) return e;
    if (!rc) rc = e;
  }
  return rc;
}

/* ------------------------------------------------------------- waiting */

static int64_t mono_ms(void) {
  return adb__mono_ns() / 1000000;
}

/* Waits until the socket is readable (and, with out, writable) or the
 * deadline passes. Returns ADB_OK or ADB_EUNAVAIL. */
static int sock_wait(PGconn *pg, int out, int64_t deadline) {
  int fd = PQsocket(pg);
  if (fd < 0) return ADB_EUNAVAIL;
  for (;;) {
    int64_t left = deadline - mono_ms();
    if (left <= 0) return ADB_EUNAVAIL;
    struct pollfd p = {.fd = fd, .events = POLLIN | (out ? POLLOUT : 0)};
    int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r > 0) return ADB_OK;
    if (r < 0 && errno != EINTR) return ADB_EUNAVAIL;
  }
}

static int timed_out(pg_store *s, pgconn *c, int64_t ms, const char *what) {
  c->broken = 1;
  set_err(s, "postgresql: %s: no answer from the server within %lld ms", what,
          (long long)ms);
  return ADB_EUNAVAIL;
}

/* Sends the output buffer of the non-blocking connection. */
static int flush_out(pg_store *s, pgconn *c, int64_t deadline,
                     const char *what) {
  for (;;) {
    int r = PQflush(c->pg);
    if (r == 0) return ADB_OK;
    if (r < 0) return fail(s, c, NULL, what);
    if (sock_wait(c->pg, 1, deadline))
      return timed_out(s, c, s->io_timeout_ms, what);
    if (!PQconsumeInput(c->pg)) return fail(s, c, NULL, what);
  }
}

/* Collects the results of the command just sent, keeping the first error
 * (or else the last result). Stops early at a COPY IN result, which the
 * caller feeds. *res is NULL when nothing came back. */
static int collect(pg_store *s, pgconn *c, int64_t timeout_ms, const char *what,
                   PGresult **res) {
  *res = NULL;
  int64_t deadline = mono_ms() + timeout_ms;
  int rc = flush_out(s, c, deadline, what);
  PGresult *keep = NULL;
  while (!rc) {
    while (PQisBusy(c->pg)) {
      if (sock_wait(c->pg, 0, deadline)) {
        rc = timed_out(s, c, timeout_ms, what);
        break;
      }
      if (!PQconsumeInput(c->pg)) {
        rc = fail(s, c, NULL, what);
        break;
      }
    }
    if (rc) break;
    PGresult *r = PQgetResult(c->pg);
    if (!r) break;
    ExecStatusType st = PQresultStatus(r);
    int err = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
    if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
      PQclear(r);
    } else {
      PQclear(keep);
      keep = r;
    }
    if (st == PGRES_COPY_IN && !err) break;
  }
  if (rc) {
    PQclear(keep);
    return rc;
  }
  *res = keep;
  return ADB_OK;
}

/* Waits for the result of the command just sent and checks it: tuples or
 * command OK (or COPY IN), else a failure with the server's message. On
 * success *res (if res is not NULL) is the caller's to PQclear. */
static int finish(pg_store *s, pgconn *c, int64_t timeout_ms, const char *what,
                  PGresult **res) {
  PGresult *r;
  int rc = collect(s, c, timeout_ms, what, &r);
  if (rc) return rc;
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && st != PGRES_COPY_IN) {
    rc = fail(s, c, r, what);
    PQclear(r);
    return rc;
  }
  if (res)
    *res = r;
  else
    PQclear(r);
  return ADB_OK;
}

/* Runs one of stmts[] with binary results, preparing it first on this
 * connection if needed. */
static int run(pg_store *s, pgconn *c, int id, const params *p,
               const char *what, PGresult **res) {
  char name[16];
  snprintf(name, sizeof name, "adb_%d", id);
  if (!(c->prepared & (1ull << id))) {
    if (!PQsendPrepare(c->pg, name, stmts[id], 0, NULL))
      return fail(s, c, NULL, what);
    int rc = finish(s, c, s->io_timeout_ms, what, NULL);
    if (rc) return rc;
    c->prepared |= 1ull << id;
  }
  static const params none;
  if (!p) p = &none;
  if (!PQsendQueryPrepared(c->pg, name, p->n, p->v, p->len, p->fmt, 1))
    return fail(s, c, NULL, what);
  return finish(s, c, s->io_timeout_ms, what, res);
}

/* Runs constant SQL text (BEGIN, COMMIT, DDL, a migration's script). */
static int run_sql(pg_store *s, pgconn *c, const char *sql, int64_t timeout_ms,
                   const char *what) {
  if (!PQsendQuery(c->pg, sql)) return fail(s, c, NULL, what);
  return finish(s, c, timeout_ms, what, NULL);
}

/* --------------------------------------------------------------- options */

/* Parses "name=value" if name is one of ours: 1 taken, 0 not ours, <0
 * invalid value. */
static int take_option(pg_opts *o, const char *kv, size_t n) {
  static const struct {
    const char *name;
    size_t off;
    long min, max;
  } opts[] = {
      {"pool_size", offsetof(pg_opts, pool_size), 1, MAX_POOL},
      {"statement_timeout_ms", offsetof(pg_opts, stmt_timeout_ms), 0,
       24L * 3600 * 1000},
      {"retention_months", offsetof(pg_opts, retention_months), 0, 1200},
      {"partitions_ahead", offsetof(pg_opts, ahead), 0, 120},
  };
  for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
    size_t k = strlen(opts[i].name);
    if (n <= k || strncmp(kv, opts[i].name, k) != 0 || kv[k] != '=') continue;
    char buf[32], *end;
    size_t vn = n - k - 1;
    if (vn == 0 || vn >= sizeof buf) return -1;
    memcpy(buf, kv + k + 1, vn);
    buf[vn] = 0;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end || errno || v < opts[i].min || v > opts[i].max) return -1;
    *(int *)((char *)o + opts[i].off) = (int)v;
    return 1;
  }
  return 0;
}

static int env_retention(void) {
  const char *e = getenv("AGENTDB_RETENTION_MONTHS");
  if (!e || !*e) return 0;
  char *end;
  long v = strtol(e, &end, 10);
  return *end || v < 0 || v > 1200 ? 0 : (int)v;
}

/* Splits our options off the URL: *libpq_url is malloc'd. */
static int parse_url(const char *url, const adb_config *cfg, pg_opts *o,
                     char **libpq_url, char *err, size_t errlen) {
  o->pool_size = cfg && cfg->pool_size > 0 ? cfg->pool_size : DEFAULT_POOL;
  if (o->pool_size > MAX_POOL) o->pool_size = MAX_POOL;
  o->stmt_timeout_ms = DEFAULT_STMT_TIMEOUT_MS;
  o->retention_months = env_retention();
  o->ahead = DEFAULT_AHEAD;
  size_t base = strcspn(url, "?");
  adb__sbuf b = {0};
  adb__sbuf_add(&b, url, base);
  char sep = '?';
  for (const char *q = url + base; *q;) {
    q++;
    size_t n = strcspn(q, "&");
    int t = n ? take_option(o, q, n) : 1;
    if (t < 0) {
      snprintf(err, errlen, "postgresql URL option '%.*s' is invalid",
               (int)(n > 100 ? 100 : n), q);
      free(b.p);
      return ADB_EURL;
    }
    if (t == 0) {
      adb__sbuf_add(&b, &sep, 1);
      adb__sbuf_add(&b, q, n);
      sep = '&';
    }
    q += n;
  }
  if (!(*libpq_url = adb__sbuf_take(&b))) {
    snprintf(err, errlen, "postgresql: out of memory");
    return ADB_ENOMEM;
  }
  return ADB_OK;
}

/* ----------------------------------------------------------- connections */

static void quiet_notice(void *arg, const char *msg) {
  (void)arg;
  (void)msg;
}

static void conn_drop(pgconn *c) {
  if (c->pg) PQfinish(c->pg);
  c->pg = NULL;
  c->prepared = 0;
  c->staging = 0;
  c->broken = 0;
}

/* Connects with our defaults (the URL may override each of them), then
 * sets statement_timeout. Fails with ADB_EUNAVAIL and the libpq message. */
static int conn_open(pg_store *s, pgconn *c, int stmt_timeout_ms) {
  conn_drop(c);
  static const char *const keys[] = {
      "connect_timeout",     "keepalives",       "keepalives_idle",
      "keepalives_interval", "keepalives_count", "tcp_user_timeout",
      "application_name",    "dbname",           NULL};
  char tcp_ms[24];
  snprintf(tcp_ms, sizeof tcp_ms, "%d", s->io_timeout_ms);
  const char *vals[] = {"5",    "1",       "30",   "10", "3",
                        tcp_ms, "agentdb", s->url, NULL};
  c->pg = PQconnectdbParams(keys, vals, 1);
  if (!c->pg) return oom(s, "connect");
  if (PQstatus(c->pg) != CONNECTION_OK) {
    set_err(s, "postgresql: cannot connect: %s", PQerrorMessage(c->pg));
    conn_drop(c);
    return ADB_EUNAVAIL;
  }
  PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
  if (PQsetnonblocking(c->pg, 1) != 0) {
    set_err(s, "postgresql: cannot make the connection non-blocking");
    conn_drop(c);
    return ADB_EUNAVAIL;
  }
  char ms[24];
  snprintf(ms, sizeof ms, "%d", stmt_timeout_ms);
  params p = {0};
  p_text(&p, ms);
  int rc = run(s, c, S_SETUP, &p, "set statement_timeout", NULL);
  if (rc) conn_drop(c);
  return rc;
}

/* Takes a free slot and makes sure it holds a live, idle connection. */
static int conn_get(pg_store *s, pgconn **out) {
  pthread_mutex_lock(&s->mu);
  while (s->n_free == 0)
    pthread_cond_wait(&s->cv, &s->mu);
  pgconn *c = &s->conns[s->free_stack[--s->n_free]];
  pthread_mutex_unlock(&s->mu);
  /* Reads what the server sent while the connection was idle: a dead
   * connection shows up here as CONNECTION_BAD. */
  if (c->pg && (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK ||
                PQtransactionStatus(c->pg) != PQTRANS_IDLE))
    conn_drop(c);
  int rc = c->pg ? ADB_OK : conn_open(s, c, s->o.stmt_timeout_ms);
  if (rc) {
    pthread_mutex_lock(&s->mu);
    s->free_stack[s->n_free++] = (int)(c - s->conns);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
  }
  *out = c;
  return ADB_OK;
}

static void conn_put(pg_store *s, pgconn *c) {
  if (c->broken) conn_drop(c);
  pthread_mutex_lock(&s->mu);
  s->free_stack[s->n_free++] = (int)(c - s->conns);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Runs fn on a pooled connection; a read (retry = 1) whose connection broke
 * under it is run once more on a fresh one. */
typedef int (*conn_fn)(pg_store *s, pgconn *c, void *arg);

static int with_conn(pg_store *s, conn_fn fn, void *arg, int retry) {
  for (int attempt = 0;; attempt++) {
    pgconn *c;
    int rc = conn_get(s, &c);
    if (rc) return rc;
    rc = fn(s, c, arg);
    int broke = c->broken;
    conn_put(s, c);
    if (rc == ADB_EUNAVAIL && broke && retry && attempt == 0) continue;
    return rc;
  }
}

/* Ends a failed transaction if the connection is still usable; else the
 * connection is dropped at release. Keeps the cause's message. */
static void txn_abort(pg_store *s, pgconn *c) {
  if (c->broken || !c->pg) return;
  char keep[ERR_MAX];
  memcpy(keep, tls_err.msg, sizeof keep);
  if (PQtransactionStatus(c->pg) != PQTRANS_IDLE &&
      run_sql(s, c, "ROLLBACK", s->io_timeout_ms, "rollback") != ADB_OK)
    c->broken = 1;
  set_err(s, "%s", keep);
}

/* ------------------------------------------------------------ validation */

#define ID_OK(f) ADB__ID_OK(f)
#define STR_OK(f) ADB__STR_OK(f)
#define dim_ok adb__dim_ok

static int bad(pg_store *s, const char *what, int i) {
  set_err(s, "postgresql: invalid %s #%d", what, i);
  return ADB_EINVAL;
}

/* Checks a whole batch before touching the database. */
static int batch_validate(pg_store *s, const adb__batch *b) {
  char what[64];
  int rc = adb__batch_validate(b, what, sizeof what);
  if (rc) set_err(s, "postgresql: invalid %s in batch", what);
  return rc;
}

/* ------------------------------------------------- batch: array columns */

/* A set of binary array parameters, one buffer per column. */
typedef struct cols {
  int n;
  adb__sbuf b[12];
} cols;

static void cols_free(cols *c) {
  for (int i = 0; i < c->n; i++)
    free(c->b[i].p);
}

static int cols_oom(const cols *c) {
  for (int i = 0; i < c->n; i++)
    if (c->b[i].oom) return 1;
  return 0;
}

/* Starts ncol arrays of the given element types, rows elements each. */
static void cols_begin(cols *c, const uint32_t *oids, int ncol, int rows) {
  memset(c, 0, sizeof *c);
  c->n = ncol;
  for (int i = 0; i < ncol; i++)
    arr_begin(&c->b[i], oids[i], rows);
}

static void cols_params(const cols *c, params *p) {
  for (int i = 0; i < c->n; i++)
    p_buf(p, &c->b[i]);
}

/* Orders decision indices by (agent, event_id), then by position. */
static int did_cmp(const void *a, const void *b, void *base) {
  const adb__decision_rec *d = base;
  int i = *(const int *)a, j = *(const int *)b;
  int c = strcmp(d[i].agent, d[j].agent);
  if (!c) c = strcmp(d[i].event_id, d[j].event_id);
  return c ? c : (i > j) - (i < j);
}

/* Marks inserted the lead (in ord[0..n), sorted by did_cmp) of each key
 * returned in res, by binary search. */
static void did_mark(adb__decision_rec *d, const int *ord, int n,
                     const PGresult *res) {
  for (int row = 0; row < PQntuples(res); row++) {
    const char *a = PQgetvalue(res, row, 0), *e = PQgetvalue(res, row, 1);
    int lo = 0, hi = n;
    while (lo < hi) {
      int mid = (lo + hi) / 2, c = strcmp(d[ord[mid]].agent, a);
      if (!c) c = strcmp(d[ord[mid]].event_id, e);
      if (c < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo < n && !strcmp(d[ord[lo]].agent, a) &&
        !strcmp(d[ord[lo]].event_id, e))
      d[ord[lo]].inserted = 1;
  }
}

/* Client event ids go through the decision_ids gate (migration 0005): the
 * first decision of each key in the batch is its lead, the leads are
 * inserted ON CONFLICT DO NOTHING RETURNING, and a returned key was new.
 * After a lost commit (b->recovered), a key whose row carries this
 * batch's id was inserted by that commit. */
static int decision_ids_put(pg_store *s, pgconn *c, adb__batch *b) {
  static const uint32_t t[] = {OID_TEXT, OID_TEXT};
  adb__decision_rec *d = b->decisions;
  int n = 0, leads = 0, rc = ADB_OK;
  int *ord = malloc((size_t)b->n_decisions * sizeof *ord);
  if (!ord) return oom(s, "insert decision ids");
  for (int i = 0; i < b->n_decisions; i++)
    if (d[i].client_id) ord[n++] = i;
  qsort_r(ord, (size_t)n, sizeof *ord, did_cmp, d);
  cols a;
  cols_begin(&a, t, 2, 0);
  for (int k = 0; k < n; k++) {
    adb__decision_rec *x = &d[ord[k]];
    x->inserted = 0;
    if (k && !strcmp(x->agent, d[ord[k - 1]].agent) &&
        !strcmp(x->event_id, d[ord[k - 1]].event_id))
      continue;
    ord[leads++] = ord[k];
    fld_text(&a.b[0], x->agent);
    fld_text(&a.b[1], x->event_id);
  }
  for (int i = 0; i < 2; i++) /* the element count, now known */
    if (a.b[i].p && !a.b[i].oom)
      be32((unsigned char *)a.b[i].p + 12, (uint32_t)leads);
  for (int q = 0; leads && !rc && q < 1 + b->recovered; q++) {
    params p = {0};
    cols_params(&a, &p);
    p_text(&p, b->batch_id);
    if (q == 0) p_i64(&p, adb__now_ms());
    PGresult *res = NULL;
    rc = cols_oom(&a) ? oom(s, "insert decision ids")
                      : run(s, c, q ? S_DID_MINE : S_DID_INSERT, &p,
                            "insert decision ids", &res);
    if (!rc) did_mark(d, ord, leads, res);
    PQclear(res);
  }
  cols_free(&a);
  free(ord);
  return rc;
}

static int decisions_put(pg_store *s, pgconn *c, adb__batch *b) {
  if (!b->n_decisions) return ADB_OK;
  for (int i = 0; i < b->n_decisions; i++)
    b->decisions[i].inserted = 1; /* generated ids are unique */
  int rc = decision_ids_put(s, c, b), n = 0;
  if (rc) return rc;
  for (int i = 0; i < b->n_decisions; i++)
    n += b->decisions[i].inserted;
  if (!n) return ADB_OK;
  static const uint32_t t[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT,
                               OID_TEXT, OID_TEXT, OID_TEXT, OID_FLOAT8,
                               OID_TEXT, OID_INT8, OID_TEXT};
  cols a;
  cols_begin(&a, t, 11, n);
  for (int i = 0; i < b->n_decisions; i++) {
    const adb__decision_rec *d = &b->decisions[i];
    if (!d->inserted) continue;
    fld_text(&a.b[0], d->agent);
    fld_text(&a.b[1], d->event_id);
    fld_text(&a.b[2], d->user);
    fld_text(&a.b[3], d->state_key);
    fld_text(&a.b[4], d->context_json ? d->context_json : "{}");
    fld_text(&a.b[5], d->candidates_json ? d->candidates_json : "[]");
    fld_text(&a.b[6], d->action);
    fld_f64(&a.b[7], d->propensity);
    fld_text(&a.b[8], d->model);
    fld_i64(&a.b[9], d->ts_ms);
    fld_text(&a.b[10], d->ranking_json);
  }
  if (cols_oom(&a)) {
    rc = oom(s, "insert decisions");
  } else {
    params p = {0};
    cols_params(&a, &p);
    rc = run(s, c, S_DECISIONS_PUT, &p, "insert decisions", NULL);
  }
  cols_free(&a);
  return rc;
}

/* ------------------------------------------------------- batch: rewards */

static int reward_key_cmp(const adb__reward_rec *x, const adb__reward_rec *y) {
  int c = strcmp(x->agent, y->agent);
  return c ? c : strcmp(x->reward_id, y->reward_id);
}

/* Orders indices by (agent, reward_id), then by position, so that the
 * first of equal keys is the earliest in the batch. */
static int idx_cmp(const void *a, const void *b, void *base) {
  const adb__reward_rec *r = base;
  int i = *(const int *)a, j = *(const int *)b;
  int c = reward_key_cmp(&r[i], &r[j]);
  return c ? c : (i > j) - (i < j);
}

/* Per-batch reward bookkeeping: ord[] is the batch sorted by key; the
 * first of a run of equal keys in ord[] (the earliest in the batch) is the
 * "lead" that goes into reward_ids; the others are duplicates of it. */
typedef struct rw_state {
  int n;
  int *ord;
} rw_state;

static int rw_init(rw_state *w, adb__reward_rec *r, int n) {
  w->n = n;
  w->ord = malloc((size_t)n * sizeof *w->ord);
  if (!w->ord) return ADB_ENOMEM;
  for (int i = 0; i < n; i++)
    w->ord[i] = i;
  qsort_r(w->ord, (size_t)n, sizeof *w->ord, idx_cmp, r);
  return ADB_OK;
}

static void rw_free(rw_state *w) {
  free(w->ord);
}

static int rw_is_lead(const rw_state *w, const adb__reward_rec *r, int k) {
  return k == 0 || reward_key_cmp(&r[w->ord[k - 1]], &r[w->ord[k]]) != 0;
}

/* Position in ord[] of the first reward with key (agent, id), or -1. */
static int rw_find(const rw_state *w, const adb__reward_rec *r,
                   const char *agent, const char *id) {
  int lo = 0, hi = w->n;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    const adb__reward_rec *m = &r[w->ord[mid]];
    int c = strcmp(m->agent, agent);
    if (!c) c = strcmp(m->reward_id, id);
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == w->n) return -1;
  const adb__reward_rec *m = &r[w->ord[lo]];
  return strcmp(m->agent, agent) == 0 && strcmp(m->reward_id, id) == 0 ? lo
                                                                       : -1;
}

/* Step 1: the lead of each key into reward_ids, in key order; a returned
 * key was new, so its lead reward is applied. */
static int rid_insert(pg_store *s, pgconn *c, adb__batch *b,
                      const rw_state *w) {
  static const uint32_t t[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_FLOAT8,
                               OID_INT8};
  int leads = 0;
  for (int k = 0; k < w->n; k++)
    leads += rw_is_lead(w, b->rewards, k);
  cols a;
  cols_begin(&a, t, 5, leads);
  for (int k = 0; k < w->n; k++) {
    const adb__reward_rec *r = &b->rewards[w->ord[k]];
    if (!rw_is_lead(w, b->rewards, k)) continue;
    fld_text(&a.b[0], r->agent);
    fld_text(&a.b[1], r->reward_id);
    fld_text(&a.b[2], r->body_hash);
    fld_f64(&a.b[3], r->reward);
    fld_i64(&a.b[4], r->ts_ms);
  }
  PGresult *res = NULL;
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "insert reward ids");
  } else {
    params p = {0};
    cols_params(&a, &p);
    p_text(&p, b->batch_id);
    rc = run(s, c, S_RID_INSERT, &p, "insert reward ids", &res);
  }
  cols_free(&a);
  for (int i = 0; !rc && i < PQntuples(res); i++) {
    int k =
        rw_find(w, b->rewards, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    if (k >= 0) b->rewards[w->ord[k]].applied = 1;
  }
  PQclear(res);
  return rc;
}

/* Whether the run of equal keys starting at ord[k] (a lead) has a reward
 * that was not applied: only a lead can be applied, so the run needs its
 * stored row when the lead was not, or when it has more members. */
static int rw_needs_row(const rw_state *w, const adb__reward_rec *r, int k) {
  return !r[w->ord[k]].applied || (k + 1 < w->n && !rw_is_lead(w, r, k + 1));
}

/* Step 2: every reward not applied is compared with the stored row of its
 * key: same body hash is a duplicate, another one a conflict. Each key is
 * read once. */
static int rid_compare(pg_store *s, pgconn *c, adb__batch *b,
                       const rw_state *w) {
  static const uint32_t t[] = {OID_TEXT, OID_TEXT};
  int todo = 0, keys = 0;
  for (int k = 0; k < w->n; k++) {
    todo += !b->rewards[w->ord[k]].applied;
    keys += rw_is_lead(w, b->rewards, k) && rw_needs_row(w, b->rewards, k);
  }
  if (!todo) return ADB_OK;
  cols a;
  cols_begin(&a, t, 2, keys);
  for (int k = 0; k < w->n; k++) {
    if (!rw_is_lead(w, b->rewards, k) || !rw_needs_row(w, b->rewards, k))
      continue;
    fld_text(&a.b[0], b->rewards[w->ord[k]].agent);
    fld_text(&a.b[1], b->rewards[w->ord[k]].reward_id);
  }
  PGresult *res = NULL;
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "read reward ids");
  } else {
    params p = {0};
    cols_params(&a, &p);
    rc = run(s, c, S_RID_LOOKUP, &p, "read reward ids", &res);
  }
  cols_free(&a);
  int found = 0;
  for (int i = 0; !rc && i < PQntuples(res); i++) {
    const char *agent = PQgetvalue(res, i, 0), *id = PQgetvalue(res, i, 1);
    const char *hash = PQgetvalue(res, i, 2);
    double first = r_f64(res, i, 3);
    /* Inserted by this batch's earlier attempt, whose commit went through
     * although its answer was lost: the lead is applied (once: the row's
     * increments were committed with it). */
    int mine = b->recovered && b->batch_id[0] &&
               strcmp(PQgetvalue(res, i, 4), b->batch_id) == 0;
    int k = rw_find(w, b->rewards, agent, id);
    for (int j = k; k >= 0 && j < w->n; j++) {
      adb__reward_rec *r = &b->rewards[w->ord[j]];
      if (j > k && rw_is_lead(w, b->rewards, j)) break;
      if (r->applied) continue;
      r->first_reward = first;
      found++;
      if (j == k && mine) {
        r->applied = 1;
        continue;
      }
      r->result = strcmp(hash, r->body_hash) == 0 ? ADB_OK : ADB_ECONFLICT;
    }
  }
  PQclear(res);
  if (!rc && found != todo) {
    set_err(s, "postgresql: read reward ids: %d of %d rows missing",
            todo - found, todo);
    rc = ADB_ESTORE;
  }
  return rc;
}

/* Step 3: the new rewards into the partitioned log. */
static int rewards_log(pg_store *s, pgconn *c, const adb__batch *b) {
  static const uint32_t t[] = {OID_TEXT, OID_TEXT, OID_TEXT,   OID_TEXT,
                               OID_TEXT, OID_TEXT, OID_FLOAT8, OID_INT8,
                               OID_TEXT, OID_TEXT, OID_INT8};
  int n = 0;
  for (int i = 0; i < b->n_rewards; i++)
    n += b->rewards[i].applied && !b->rewards[i].awaiting;
  if (!n) return ADB_OK;
  cols a;
  cols_begin(&a, t, 11, n);
  for (int i = 0; i < b->n_rewards; i++) {
    const adb__reward_rec *r = &b->rewards[i];
    if (!r->applied || r->awaiting) continue;
    fld_text(&a.b[0], r->agent);
    fld_text(&a.b[1], r->reward_id);
    fld_text(&a.b[2], r->event_id);
    fld_text(&a.b[3], r->user);
    fld_text(&a.b[4], r->state_key);
    fld_text(&a.b[5], r->action);
    fld_f64(&a.b[6], r->reward);
    fld_i64(&a.b[7], r->reward_micro);
    fld_text(&a.b[8], r->signals_json);
    fld_text(&a.b[9], r->body_hash);
    fld_i64(&a.b[10], r->ts_ms);
  }
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "insert rewards");
  } else {
    params p = {0};
    cols_params(&a, &p);
    rc = run(s, c, S_REWARDS_PUT, &p, "insert rewards", NULL);
  }
  cols_free(&a);
  return rc;
}

/* Step 3b: the new rewards awaiting their decision into pending_rewards. */
static int rewards_await(pg_store *s, pgconn *c, const adb__batch *b) {
  static const uint32_t t[] = {OID_TEXT,   OID_TEXT, OID_TEXT,
                               OID_FLOAT8, OID_INT8, OID_TEXT,
                               OID_TEXT,   OID_INT8, OID_INT8};
  int n = 0;
  for (int i = 0; i < b->n_rewards; i++)
    n += b->rewards[i].applied && b->rewards[i].awaiting;
  if (!n) return ADB_OK;
  cols a;
  cols_begin(&a, t, 9, n);
  for (int i = 0; i < b->n_rewards; i++) {
    const adb__reward_rec *r = &b->rewards[i];
    if (!r->applied || !r->awaiting) continue;
    fld_text(&a.b[0], r->agent);
    fld_text(&a.b[1], r->reward_id);
    fld_text(&a.b[2], r->event_id);
    fld_f64(&a.b[3], r->reward);
    fld_i64(&a.b[4], r->reward_micro);
    fld_text(&a.b[5], r->signals_json);
    fld_text(&a.b[6], r->body_hash);
    fld_i64(&a.b[7], r->ts_ms);
    fld_i64(&a.b[8], r->expires_at_ms);
  }
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "insert pending rewards");
  } else {
    params p = {0};
    cols_params(&a, &p);
    rc = run(s, c, S_PENDING_PUT, &p, "insert pending rewards", NULL);
  }
  cols_free(&a);
  return rc;
}

/* Step 2b: every reward of a decision claims its first outcome
 * (event_outcomes); where the default reward won, the decision's window
 * closed first: such rewards are late, never applied (their ids stay
 * taken, so a retry is answered the same). */
static int outcomes_claim(pg_store *s, pgconn *c, adb__batch *b) {
  static const uint32_t t[] = {OID_TEXT, OID_TEXT};
  int n = 0;
  for (int i = 0; i < b->n_rewards; i++)
    n += b->rewards[i].event_id[0] != 0;
  if (!n) return ADB_OK;
  cols a;
  cols_begin(&a, t, 2, n);
  for (int i = 0; i < b->n_rewards; i++) {
    if (!b->rewards[i].event_id[0]) continue;
    fld_text(&a.b[0], b->rewards[i].agent);
    fld_text(&a.b[1], b->rewards[i].event_id);
  }
  PGresult *res = NULL;
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "claim outcomes");
  } else {
    params p = {0};
    cols_params(&a, &p);
    p_i64(&p, adb__now_ms());
    rc = run(s, c, S_OUTCOME_CLAIM, &p, "claim outcomes", &res);
  }
  cols_free(&a);
  for (int row = 0; !rc && row < PQntuples(res); row++) {
    if (strcmp(PQgetvalue(res, row, 2), "default")) continue;
    const char *ag = PQgetvalue(res, row, 0), *ev = PQgetvalue(res, row, 1);
    for (int i = 0; i < b->n_rewards; i++) {
      adb__reward_rec *r = &b->rewards[i];
      if (strcmp(r->event_id, ev) || strcmp(r->agent, ag)) continue;
      r->late = 1;
      r->applied = 0;
    }
  }
  PQclear(res);
  return rc;
}

static int rewards_put(pg_store *s, pgconn *c, adb__batch *b) {
  if (!b->n_rewards) return ADB_OK;
  for (int i = 0; i < b->n_rewards; i++) {
    adb__reward_rec *r = &b->rewards[i];
    r->result = ADB_OK;
    r->applied = 0;
    r->late = 0;
    r->first_reward = r->reward;
  }
  rw_state w = {0};
  int rc = rw_init(&w, b->rewards, b->n_rewards);
  if (rc) rc = oom(s, "sort rewards");
  if (!rc) rc = rid_insert(s, c, b, &w);
  if (!rc) rc = rid_compare(s, c, b, &w);
  if (!rc) rc = outcomes_claim(s, c, b);
  if (!rc) rc = rewards_log(s, c, b);
  /* After a lost commit they were inserted by it, and may have been
   * joined (deleted) since: inserting them again would apply them twice. */
  if (!rc && !b->recovered) rc = rewards_await(s, c, b);
  rw_free(&w);
  return rc;
}

/* ------------------------------------------------------ batch: policies */

static int change_key_cmp(const adb__policy_change *x, const char *agent,
                          const char *user, const char *state,
                          const char *action) {
  int c = strcmp(agent, x->agent);
  if (!c) c = strcmp(user, x->user);
  if (!c) c = strcmp(state, x->state_key);
  if (!c) c = strcmp(action, x->action);
  return c;
}

/* Sets the new version of the change with the returned key (changes are
 * sorted by key: binary search). */
static int change_set_version(adb__policy_change *ch, int n, const PGresult *r,
                              int row) {
  const char *a = PQgetvalue(r, row, 0), *u = PQgetvalue(r, row, 1);
  const char *k = PQgetvalue(r, row, 2), *x = PQgetvalue(r, row, 3);
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = change_key_cmp(&ch[mid], a, u, k, x);
    if (!c) {
      ch[mid].delta.version = r_i64(r, row, 4);
      return 1;
    }
    if (c < 0)
      hi = mid - 1;
    else
      lo = mid + 1;
  }
  return 0;
}

static int policies_add(pg_store *s, pgconn *c, adb__batch *b) {
  if (adb__batch_merge(b, &b->changes, &b->n_changes))
    return oom(s, "merge policy increments");
  if (!b->n_changes) return ADB_OK;
  /* After a lost commit the increments are in already: add zero, which
   * still bumps each row's version (see adb__batch.recovered). */
  for (int i = 0; b->recovered && i < b->n_changes; i++) {
    int64_t v = b->changes[i].delta.version;
    memset(&b->changes[i].delta, 0, sizeof b->changes[i].delta);
    b->changes[i].delta.version = v;
  }
  static const uint32_t t[] = {OID_TEXT, OID_TEXT, OID_TEXT,   OID_TEXT,
                               OID_INT8, OID_INT8, OID_FLOAT8, OID_INT8};
  cols a;
  cols_begin(&a, t, 8, b->n_changes);
  for (int i = 0; i < b->n_changes; i++) {
    const adb__policy_change *ch = &b->changes[i];
    fld_text(&a.b[0], ch->agent);
    fld_text(&a.b[1], ch->user);
    fld_text(&a.b[2], ch->state_key);
    fld_text(&a.b[3], ch->action);
    fld_i64(&a.b[4], ch->delta.n);
    fld_i64(&a.b[5], adb__sum_lo(ch->delta.sum_micro));
    fld_f64(&a.b[6], ch->delta.sum_sq);
    fld_i64(&a.b[7], adb__sum_hi(ch->delta.sum_micro));
  }
  PGresult *res = NULL;
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "update policies");
  } else {
    params p = {0};
    cols_params(&a, &p);
    p_i64(&p, adb__now_ms());
    rc = run(s, c, S_POLICY_ADD, &p, "update policies", &res);
  }
  cols_free(&a);
  int set = 0;
  for (int i = 0; !rc && i < PQntuples(res); i++)
    set += change_set_version(b->changes, b->n_changes, res, i);
  PQclear(res);
  if (!rc && set != b->n_changes) {
    set_err(s, "postgresql: update policies: %d of %d rows not returned",
            b->n_changes - set, b->n_changes);
    rc = ADB_ESTORE;
  }
  return rc;
}

/* ------------------------------------------------------- batch: metrics */

static int metrics_cmp(const void *a, const void *b) {
  const adb__metrics_delta *x = a, *y = b;
  int c = strcmp(x->agent, y->agent);
  return c ? c : (x->hour_ms > y->hour_ms) - (x->hour_ms < y->hour_ms);
}

static int metrics_add_one(pg_store *s, pgconn *c,
                           const adb__metrics_delta *m) {
  params p = {0};
  p_text(&p, m->agent);
  p_i64(&p, m->hour_ms);
  p_i64(&p, m->decisions);
  p_i64(&p, m->rewards);
  p_f64(&p, m->reward_sum);
  p_i64(&p, m->cache_hits);
  p_i64(&p, m->cache_misses);
  p_f64(&p, m->latency_p50_us);
  p_f64(&p, m->latency_p99_us);
  return run(s, c, S_METRICS_ADD, &p, "update metrics", NULL);
}

/* Deltas sorted by key (lock order) and applied one by one: a later delta
 * for the same hour adds to and overwrites what an earlier one set, as it
 * would on SQLite. There are few per batch (one per agent and hour). */
static int metrics_add(pg_store *s, pgconn *c, const adb__batch *b) {
  if (!b->n_metrics) return ADB_OK;
  adb__metrics_delta *m = malloc((size_t)b->n_metrics * sizeof *m);
  if (!m) return oom(s, "update metrics");
  memcpy(m, b->metrics, (size_t)b->n_metrics * sizeof *m);
  /* Stable for equal keys: order by key, keep batch order within one. */
  for (int i = 1; i < b->n_metrics; i++) {
    adb__metrics_delta x = m[i];
    int j = i;
    for (; j > 0 && metrics_cmp(&m[j - 1], &x) > 0; j--)
      m[j] = m[j - 1];
    m[j] = x;
  }
  int rc = ADB_OK;
  for (int i = 0; i < b->n_metrics && !rc; i++)
    rc = metrics_add_one(s, c, &m[i]);
  free(m);
  return rc;
}

/* ------------------------------------------------------ batch: episodes */

static void copy_header(adb__sbuf *b) {
  adb__sbuf_add(b, "PGCOPY\n\377\r\n\0", 11);
  put32(b, 0); /* flags */
  put32(b, 0); /* header extension length */
}

static void copy_episode(adb__sbuf *b, const adb__episode_rec *e) {
  unsigned char n[2] = {0, 9};
  adb__sbuf_add(b, (const char *)n, 2);
  fld_text(b, e->agent);
  fld_text(b, e->episode_id);
  fld_text(b, e->user);
  fld_text(b, e->session);
  fld_emb(b, e->embedding, e->dim);
  fld_text(b, e->action);
  fld_f64(b, e->reward);
  fld_text(b, e->context_json);
  fld_i64(b, e->ts_ms);
}

/* Queues COPY data, waiting for the socket while libpq's buffer is full.
 * A failure here leaves the connection mid-COPY: it is dropped. */
static int copy_send(pg_store *s, pgconn *c, const char *p, size_t n) {
  int64_t deadline = mono_ms() + s->io_timeout_ms;
  while (n) {
    int k = n > (1 << 20) ? 1 << 20 : (int)n;
    int r = PQputCopyData(c->pg, p, k);
    if (r < 0) return fail(s, c, NULL, "copy episodes");
    if (r == 1) {
      p += k;
      n -= (size_t)k;
      continue;
    }
    if (flush_out(s, c, deadline, "copy episodes")) return ADB_EUNAVAIL;
  }
  return ADB_OK;
}

/* Ends the COPY; the server's verdict (a unique violation, say) comes back
 * here, with the connection usable again. */
static int copy_end(pg_store *s, pgconn *c) {
  int64_t deadline = mono_ms() + s->io_timeout_ms;
  for (;;) {
    int r = PQputCopyEnd(c->pg, NULL);
    if (r < 0) return fail(s, c, NULL, "copy episodes");
    if (r == 1) return finish(s, c, s->io_timeout_ms, "copy episodes", NULL);
    if (flush_out(s, c, deadline, "copy episodes")) {
      c->broken = 1;
      return ADB_EUNAVAIL;
    }
  }
}

/* Streams the episodes with `sql` (a COPY ... FROM STDIN), in 1 MiB
 * pieces. */
static int copy_episodes(pg_store *s, pgconn *c, const adb__batch *b,
                         const char *sql) {
  if (!PQsendQuery(c->pg, sql)) return fail(s, c, NULL, "copy episodes");
  int rc = finish(s, c, s->io_timeout_ms, "copy episodes", NULL);
  if (rc) return rc;
  adb__sbuf buf = {0};
  copy_header(&buf);
  for (int i = 0; i < b->n_episodes && !rc; i++) {
    int last = i == b->n_episodes - 1;
    copy_episode(&buf, &b->episodes[i]);
    if (last) adb__sbuf_add(&buf, "\377\377", 2); /* trailer */
    if (buf.oom) {
      rc = oom(s, "copy episodes");
    } else if (last || buf.len >= (1 << 20)) {
      rc = copy_send(s, c, buf.p, buf.len);
      buf.len = 0;
    }
  }
  free(buf.p);
  if (rc) {
    c->broken = 1; /* stuck inside COPY IN */
    return rc;
  }
  return copy_end(s, c);
}

/* Creates the staging table, outside any transaction (a rollback would
 * take it away again). */
static int staging_make(pg_store *s, pgconn *c) {
  if (c->staging) return ADB_OK;
  int rc = run_sql(s, c, sql_staging, s->io_timeout_ms, "create staging");
  if (!rc) c->staging = 1;
  return rc;
}

/* The fast path is a COPY straight into agent_episodes, under a savepoint.
 * COPY cannot skip duplicates, so when the batch holds an episode already
 * stored (a retried batch) it fails with a unique violation: then the
 * savepoint is rolled back and the batch goes through the staging table and
 * INSERT ... ON CONFLICT DO NOTHING. */
static int episodes_put(pg_store *s, pgconn *c, const adb__batch *b) {
  if (!b->n_episodes) return ADB_OK;
  int64_t t = s->io_timeout_ms;
  c->sqlstate[0] = 0;
  int rc = run_sql(s, c, "SAVEPOINT adb_episodes", t, "copy episodes");
  if (!rc) rc = copy_episodes(s, c, b, sql_copy_direct);
  if (!rc)
    return run_sql(s, c, "RELEASE SAVEPOINT adb_episodes", t, "copy episodes");
  if (c->broken || strcmp(c->sqlstate, "23505") != 0) return rc;
  rc = run_sql(s, c, "ROLLBACK TO SAVEPOINT adb_episodes", t, "copy episodes");
  if (!rc) rc = copy_episodes(s, c, b, sql_copy_staging);
  if (!rc) rc = run(s, c, S_EPISODES_MOVE, NULL, "insert episodes", NULL);
  return rc;
}

/* ----------------------------------------------------------- write batch */

/* Runs the partition maintenance when it is due, outside the batch's
 * transaction and with a short lock_timeout: DDL waiting for a lock would
 * queue every insert behind it. A failure is retried a minute later. */
static int maintain(pg_store *s, pgconn *c, int force) {
  int64_t now = adb__now_ms(), due = atomic_load(&s->maint_due_ms);
  if (!force &&
      (now < due || !atomic_compare_exchange_strong(&s->maint_due_ms, &due,
                                                    now + MAINT_EVERY_MS)))
    return ADB_OK;
  params p = {0};
  p_i32(&p, s->o.ahead);
  p_i32(&p, s->o.retention_months);
  int rc = run_sql(s, c, "BEGIN", s->io_timeout_ms, "maintain partitions");
  if (!rc)
    rc = run_sql(s, c, "SET LOCAL lock_timeout = '2s'", s->io_timeout_ms,
                 "maintain partitions");
  if (!rc) rc = run(s, c, S_MAINTAIN, &p, "maintain partitions", NULL);
  params t = {0}; /* batch ids older than a day (migration 0005) */
  p_i64(&t, now - 86400000);
  if (!rc) rc = run(s, c, S_BATCH_TRIM, &t, "maintain partitions", NULL);
  if (!rc)
    rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, "maintain partitions");
  if (rc) txn_abort(s, c);
  atomic_store(&s->maint_due_ms, now + (rc ? MAINT_RETRY_MS : MAINT_EVERY_MS));
  return rc;
}

static void batch_unset(adb__batch *b) {
  free(b->changes);
  b->changes = NULL;
  b->n_changes = 0;
  b->recovered = 0;
  for (int i = 0; i < b->n_decisions; i++)
    b->decisions[i].inserted = 0;
  for (int i = 0; i < b->n_rewards; i++) {
    b->rewards[i].result = ADB_OK;
    b->rewards[i].applied = 0;
    b->rewards[i].first_reward = 0;
  }
}

static int lin_features_put(pg_store *s, pgconn *c, const adb__batch *b);
/* Writes the batch's id into write_batches (migration 0005); finding it
 * there already means an earlier attempt of this batch committed. */
static int batch_mark(pg_store *s, pgconn *c, adb__batch *b) {
  b->recovered = 0;
  if (!b->batch_id[0]) return ADB_OK;
  params p = {0};
  p_text(&p, b->batch_id);
  p_i64(&p, adb__now_ms());
  PGresult *res = NULL;
  int rc = run(s, c, S_BATCH_MARK, &p, "mark batch", &res);
  if (!rc) b->recovered = PQntuples(res) == 0;
  PQclear(res);
  return rc;
}

static atomic_int fault_lose_commits;

int adb__pg_fault_lose_commit_answers(int n) {
  return atomic_exchange(&fault_lose_commits, n);
}

/* COMMIT, or with the test hook armed, COMMIT whose answer is lost. */
static int batch_commit(pg_store *s, pgconn *c) {
  int rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, "commit batch");
  int armed = atomic_load(&fault_lose_commits);
  while (!rc && armed > 0 &&
         !atomic_compare_exchange_weak(&fault_lose_commits, &armed, armed - 1))
    ;
  if (rc || armed <= 0) return rc;
  c->broken = 1;
  set_err(s, "postgresql: commit batch: connection lost (injected)");
  return ADB_EUNAVAIL;
}

static int batch_txn(pg_store *s, pgconn *c, void *arg) {
  adb__batch *b = arg;
  if (maintain(s, c, 0) == ADB_EUNAVAIL && c->broken) return ADB_EUNAVAIL;
  int rc = b->n_episodes ? staging_make(s, c) : ADB_OK;
  if (rc) return rc;
  rc = run_sql(s, c, "BEGIN", s->io_timeout_ms, "begin batch");
  if (!rc) rc = batch_mark(s, c, b);
  if (!rc) rc = decisions_put(s, c, b);
  if (!rc) rc = lin_features_put(s, c, b);
  if (!rc) rc = rewards_put(s, c, b);
  if (!rc) rc = episodes_put(s, c, b);
  /* The hot rows last, so their locks are held the shortest time. */
  if (!rc && !b->recovered) rc = metrics_add(s, c, b);
  if (!rc) rc = policies_add(s, c, b);
  if (!rc) rc = batch_commit(s, c);
  if (rc) {
    txn_abort(s, c);
    batch_unset(b);
  }
  return rc;
}

/* The joined rows of S_PENDING_JOIN as applied reward records. */
static int sweep_rows(pg_store *s, const PGresult *r, adb__batch *b) {
  int n = PQntuples(r);
  b->rewards = calloc((size_t)n + 1, sizeof *b->rewards);
  if (!b->rewards) return oom(s, "join pending rewards");
  for (int i = 0; i < n; i++) {
    adb__reward_rec *w = &b->rewards[b->n_rewards++];
    int rc = r_copy(w->agent, sizeof w->agent, r, i, 0);
    if (!rc) rc = r_copy(w->reward_id, sizeof w->reward_id, r, i, 1);
    if (!rc) rc = r_copy(w->event_id, sizeof w->event_id, r, i, 2);
    if (!rc) rc = r_copy(w->user, sizeof w->user, r, i, 3);
    if (!rc) rc = r_copy(w->state_key, sizeof w->state_key, r, i, 4);
    if (!rc) rc = r_copy(w->action, sizeof w->action, r, i, 5);
    w->reward = r_f64(r, i, 6);
    w->reward_micro = r_i64(r, i, 7);
    if (!rc) rc = r_dup(&w->signals_json, r, i, 8);
    if (!rc) rc = r_copy(w->body_hash, sizeof w->body_hash, r, i, 9);
    w->ts_ms = r_i64(r, i, 10);
    w->applied = 1;
    w->first_reward = w->reward;
    if (rc) return col_fail(s, rc, "join pending rewards");
  }
  return ADB_OK;
}

/* The candidates of S_DEFAULT_CANDIDATES that won their default claim, as
 * applied rewards appended to b; a deferred event never activated (column
 * 6) is claimed, which closes it, and gets no reward. */
static int defaults_add(pg_store *s, pgconn *c, const PGresult *cand,
                        adb__batch *b, int64_t now) {
  static const uint32_t t[] = {OID_TEXT, OID_TEXT};
  int n = PQntuples(cand);
  if (!n) return ADB_OK;
  cols a;
  cols_begin(&a, t, 2, n);
  for (int i = 0; i < n; i++) {
    fld_text(&a.b[0], PQgetvalue(cand, i, 0));
    fld_text(&a.b[1], PQgetvalue(cand, i, 1));
  }
  PGresult *res = NULL;
  params p = {0};
  cols_params(&a, &p);
  p_i64(&p, now);
  int rc = cols_oom(&a)
               ? oom(s, "claim defaults")
               : run(s, c, S_DEFAULT_CLAIM, &p, "claim defaults", &res);
  cols_free(&a);
  adb__reward_rec *grown =
      rc ? NULL
         : realloc(b->rewards, (size_t)(b->n_rewards + n + 1) * sizeof *grown);
  if (!rc && !grown) rc = oom(s, "default rewards");
  if (grown) b->rewards = grown;
  for (int row = 0; !rc && row < PQntuples(res); row++) {
    const char *ag = PQgetvalue(res, row, 0), *ev = PQgetvalue(res, row, 1);
    for (int i = 0; i < n; i++) { /* both sorted by key: could merge */
      if (strcmp(PQgetvalue(cand, i, 1), ev) ||
          strcmp(PQgetvalue(cand, i, 0), ag))
        continue;
      if (r_bool(cand, i, 6)) break; /* never activated */
      adb__reward_rec *w = &b->rewards[b->n_rewards];
      memset(w, 0, sizeof *w);
      rc = r_copy(w->agent, sizeof w->agent, cand, i, 0);
      if (!rc) rc = r_copy(w->event_id, sizeof w->event_id, cand, i, 1);
      if (!rc) rc = r_copy(w->user, sizeof w->user, cand, i, 2);
      if (!rc) rc = r_copy(w->state_key, sizeof w->state_key, cand, i, 3);
      if (!rc) rc = r_copy(w->action, sizeof w->action, cand, i, 4);
      if (rc) return col_fail(s, rc, "default rewards");
      adb__default_reward_id(w->event_id, w->reward_id);
      w->reward = w->first_reward = r_f64(cand, i, 5);
      w->reward_micro = adb__reward_to_micro(w->reward);
      snprintf(w->body_hash, sizeof w->body_hash, "default");
      w->ts_ms = now;
      w->applied = 1;
      b->n_rewards++;
      break;
    }
  }
  PQclear(res);
  return rc;
}

/* Decisions whose window has ended (ADB__DEFAULT_LAG_MS after) since their
 * agent's watermark and no reward claimed: their default rewards into b,
 * then the watermarks move on. */
static int defaults_sweep(pg_store *s, pgconn *c, adb__batch *b, int64_t now) {
  params p = {0};
  p_i64(&p, now);
  p_i64(&p, ADB__DEFAULT_LAG_MS);
  PGresult *cand = NULL;
  int rc = run(s, c, S_WATERMARK_INIT, &p, "init watermarks", NULL);
  if (!rc) rc = run(s, c, S_DEFAULT_CANDIDATES, &p, "default rewards", &cand);
  if (!rc) rc = defaults_add(s, c, cand, b, now);
  int marked = 0; /* column 7: the event has a deferral mark */
  for (int i = 0; !rc && !marked && i < PQntuples(cand); i++)
    marked = r_bool(cand, i, 7);
  PQclear(cand);
  if (marked) rc = run(s, c, S_DEFER_CLOSE, &p, "close deferred events", NULL);
  if (!rc) rc = run(s, c, S_WATERMARK_ADVANCE, &p, "advance watermarks", NULL);
  return rc;
}

typedef struct sweep_arg {
  int64_t now_ms, expired;
  adb__batch *b;
} sweep_arg;

static int sweep_txn(pg_store *s, pgconn *c, void *arg) {
  sweep_arg *x = arg;
  PGresult *res = NULL;
  params p = {0};
  p_i64(&p, x->now_ms);
  int rc = run_sql(s, c, "BEGIN", s->io_timeout_ms, "sweep pending rewards");
  if (!rc) rc = run(s, c, S_PENDING_JOIN, NULL, "join pending rewards", &res);
  if (!rc) rc = sweep_rows(s, res, x->b);
  PQclear(res);
  res = NULL;
  if (!rc) rc = defaults_sweep(s, c, x->b, x->now_ms);
  if (!rc) rc = rewards_log(s, c, x->b);
  if (!rc) rc = policies_add(s, c, x->b);
  if (!rc) rc = run(s, c, S_PENDING_EXPIRE, &p, "expire pending rewards", &res);
  if (!rc) x->expired = PQntuples(res);
  PQclear(res);
  if (!rc) rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, "sweep commit");
  if (rc) txn_abort(s, c);
  return rc;
}

static int pg_pending_sweep(adb__store *st, int64_t now_ms, adb__batch *out,
                            int64_t *expired) {
  memset(out, 0, sizeof *out);
  *expired = 0;
  sweep_arg x = {.now_ms = now_ms, .b = out};
  int rc = with_conn((pg_store *)st, sweep_txn, &x, 0);
  if (rc) {
    for (int i = 0; i < out->n_rewards; i++)
      free(out->rewards[i].signals_json);
    free(out->rewards);
    free(out->changes);
    memset(out, 0, sizeof *out);
    return rc;
  }
  *expired = x.expired;
  return ADB_OK;
}

static int pg_write_batch(adb__store *st, adb__batch *b) {
  pg_store *s = (pg_store *)st;
  b->changes = NULL;
  b->n_changes = 0;
  int rc = batch_validate(s, b);
  if (rc) return rc;
  return with_conn(s, batch_txn, b, 0);
}

/* ---------------------------------------------------------------- agents */

static int params_cols(params *p, const adb__col *cols, int n, const void *rec,
                       const char *keys, unsigned char **emb);

typedef struct agent_put_arg {
  adb_agent_config *cfg;
  const char *keys;
} agent_put_arg;

static int agent_put_fn(pg_store *s, pgconn *c, void *arg) {
  agent_put_arg *x = arg;
  const adb_agent_config *a = x->cfg;
  params p = {0};
  p_text(&p, a->id);
  params_cols(&p, adb__agent_cols, ADB__AGENT_STAMPS, a, x->keys, NULL);
  p_i64(&p, adb__now_ms());
  params_cols(&p, adb__agent_cols + ADB__AGENT_STAMPS + 2,
              ADB__AGENT_NCOLS - ADB__AGENT_STAMPS - 2, a, x->keys, NULL);
  PGresult *r;
  int rc = run(s, c, S_AGENT_PUT, &p, "put agent", &r);
  if (rc) return rc;
  if (PQntuples(r) == 1) {
    x->cfg->created_at_ms = r_i64(r, 0, 0);
    x->cfg->updated_at_ms = r_i64(r, 0, 1);
  }
  PQclear(r);
  return ADB_OK;
}

static int pg_agent_put(adb__store *st, adb_agent_config *cfg) {
  pg_store *s = (pg_store *)st;
  if (!adb__agent_rec_ok(cfg)) {
    set_err(s, "postgresql: invalid agent config");
    return ADB_EINVAL;
  }
  char *keys = adb__context_keys_json(cfg);
  if (!keys) {
    set_err(s, "postgresql: agent context keys are not valid UTF-8 strings");
    return ADB_EINVAL;
  }
  agent_put_arg x = {cfg, keys};
  int rc = with_conn(s, agent_put_fn, &x, 0);
  free(keys);
  return rc;
}

typedef struct rec_arg {
  const adb__rec_desc *d;
  int id;
  const char *key[2];
  void *rec;
} rec_arg;

/* The one row a lookup by keys finds, read into the record as the
 * description says; released again if a column fails. */
static int rec_get_fn(pg_store *s, pgconn *c, void *arg) {
  rec_arg *x = arg;
  const adb__rec_desc *d = x->d;
  params p = {0};
  for (int i = 0; i < d->nkeys; i++)
    p_text(&p, x->key[i]);
  PGresult *r;
  int rc = run(s, c, x->id, &p, d->get, &r);
  if (rc) return rc;
  if (PQntuples(r) == 1) {
    memset(x->rec, 0, d->size);
    adb__rec_keys(d, x->rec, x->key);
    if ((rc = cols_read(r, 0, d->cols, d->ncols, x->rec)) != ADB_OK) {
      col_fail(s, rc, d->read);
      if (d->release) d->release(x->rec);
    }
  } else {
    set_err(s, "postgresql: %s '%.128s' %s", d->item, x->key[d->nkeys - 1],
            d->missing);
    rc = ADB_ENOTFOUND;
  }
  PQclear(r);
  return rc;
}

static int rec_get(pg_store *s, int id, const adb__rec_desc *d, const char *k1,
                   const char *k2, void *rec) {
  memset(rec, 0, d->size);
  rec_arg x = {d, id, {k1, k2}, rec};
  return with_conn(s, rec_get_fn, &x, 1);
}

typedef struct get_arg {
  const char *k1, *k2, *k3;
  int64_t n1, n2;
  void *out;
} get_arg;

/* One statement: under READ COMMITTED a concurrent update of the row is
 * waited for and the CASE sees its result, so exactly one dimension wins. */
static int agent_fix_dim_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  params p = {0};
  p_text(&p, x->k1);
  p_i64(&p, x->n1);
  PGresult *r;
  int rc = run(s, c, S_AGENT_FIX_DIM, &p, "fix agent dim", &r);
  if (rc) return rc;
  if (PQntuples(r) == 1) {
    *(int *)x->out = (int)r_i64(r, 0, 0);
  } else {
    set_err(s, "postgresql: agent '%.128s' not found", x->k1);
    rc = ADB_ENOTFOUND;
  }
  PQclear(r);
  return rc;
}

static int pg_agent_fix_dim(adb__store *st, const char *agent, int dim,
                            int *stored) {
  get_arg x = {.k1 = agent, .n1 = dim, .out = stored};
  return with_conn((pg_store *)st, agent_fix_dim_fn, &x, 1);
}

static int pg_agent_get(adb__store *st, const char *agent,
                        adb_agent_config *out) {
  return rec_get((pg_store *)st, S_AGENT_GET, &adb__agent_desc, agent, NULL,
                 out);
}

static int counters_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  adb_agent_counters *out = x->out;
  params p = {0};
  p_text(&p, x->k1);
  PGresult *r;
  int rc = run(s, c, S_COUNTERS, &p, "agent counters", &r);
  if (rc) return rc;
  if (PQntuples(r) == 1) {
    out->decisions = r_i64(r, 0, 0);
    out->rewards = r_i64(r, 0, 1);
    out->reward_sum = r_f64(r, 0, 2);
    out->actions = r_i64(r, 0, 3);
  }
  PQclear(r);
  return ADB_OK;
}

static int pg_agent_counters(adb__store *st, const char *agent,
                             adb_agent_counters *out) {
  memset(out, 0, sizeof *out);
  get_arg x = {.k1 = agent, .out = out};
  return with_conn((pg_store *)st, counters_fn, &x, 1);
}

/* --------------------------------------------------------------- actions */

typedef struct actions_arg {
  const char *agent;
  const adb__action_rec *a;
  int n;
} actions_arg;

/* By id, and for equal ids the later one first, so that the first of a
 * run is the one that wins (as consecutive puts would on SQLite). */
static int act_cmp(const void *a, const void *b, void *base) {
  const adb__action_rec *v = base;
  int i = *(const int *)a, j = *(const int *)b;
  int c = strcmp(v[i].id, v[j].id);
  return c ? c : (j > i) - (j < i);
}

static int actions_fn(pg_store *s, pgconn *c, void *arg) {
  actions_arg *x = arg;
  int *ord = malloc((size_t)x->n * sizeof *ord);
  if (!ord) return oom(s, "put actions");
  for (int i = 0; i < x->n; i++)
    ord[i] = i;
  qsort_r(ord, (size_t)x->n, sizeof *ord, act_cmp, (void *)x->a);
  static const uint32_t t[] = {OID_TEXT, OID_BYTEA, OID_TEXT, OID_BOOL};
  int rows = 0;
  for (int k = 0; k < x->n; k++)
    rows += k == 0 || strcmp(x->a[ord[k]].id, x->a[ord[k - 1]].id) != 0;
  cols a;
  cols_begin(&a, t, 4, rows);
  for (int k = 0; k < x->n; k++) {
    const adb__action_rec *r = &x->a[ord[k]];
    if (k > 0 && strcmp(r->id, x->a[ord[k - 1]].id) == 0) continue;
    fld_text(&a.b[0], r->id);
    fld_emb(&a.b[1], r->embedding, r->dim);
    fld_text(&a.b[2], r->metadata_json);
    fld_bool(&a.b[3], r->disabled);
  }
  free(ord);
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "put actions");
  } else {
    params p = {0};
    p_text(&p, x->agent);
    cols_params(&a, &p);
    p_i64(&p, adb__now_ms());
    rc = run(s, c, S_ACTIONS_PUT, &p, "put actions", NULL);
  }
  cols_free(&a);
  return rc;
}

static int pg_actions_put(adb__store *st, const char *agent,
                          const adb__action_rec *a, int n) {
  pg_store *s = (pg_store *)st;
  if (!agent || !agent[0] || n < 0 || (n && !a))
    return bad(s, "actions array", 0);
  for (int i = 0; i < n; i++)
    if (!ID_OK(a[i].id) || !dim_ok(a[i].embedding, a[i].dim))
      return bad(s, "action", i);
  if (!n) return ADB_OK;
  actions_arg x = {agent, a, n};
  return with_conn(s, actions_fn, &x, 0);
}

static int actions_list_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  params p = {0};
  p_text(&p, x->k1);
  PGresult *r = NULL;
  int rc = run(s, c, S_ACTIONS_LIST, &p, "list actions", &r);
  x->out = r;
  return rc;
}

/* Rows are fetched first and fn called after the connection is released,
 * so fn may call the store. */
static int pg_actions_list(adb__store *st, const char *agent,
                           void (*fn)(void *arg, const adb__action_rec *a),
                           void *arg) {
  pg_store *s = (pg_store *)st;
  get_arg x = {.k1 = agent};
  int rc = with_conn(s, actions_list_fn, &x, 1);
  if (rc) return rc;
  PGresult *r = x.out;
  for (int i = 0; i < PQntuples(r) && !rc; i++) {
    adb__action_rec a;
    memset(&a, 0, sizeof a);
    if ((rc = cols_read(r, i, adb__action_cols, ADB__ACTION_NCOLS, &a))) {
      col_fail(s, rc, "list actions");
      break;
    }
    int m = ADB__ACTION_NCOLS;
    a.metadata_json = PQgetisnull(r, i, m) ? NULL : PQgetvalue(r, i, m);
    fn(arg, &a);
  }
  PQclear(r);
  return rc;
}

/* -------------------------------------------------------------- policies */

static int policy_get_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  adb__policy *pol = x->out;
  pol->n = 0;
  params p = {0};
  p_text(&p, x->k1);
  p_text(&p, x->k2);
  p_text(&p, x->k3);
  PGresult *r;
  int rc = run(s, c, S_POLICY_GET, &p, "get policy", &r);
  if (rc) return rc;
  for (int i = 0; i < PQntuples(r) && !rc; i++) {
    adb__arm_stats a = {.n = r_i64(r, i, 1),
                        .sum_micro =
                            adb__sum_of(r_i64(r, i, 5), r_i64(r, i, 2)),
                        .sum_sq = r_f64(r, i, 3),
                        .version = r_i64(r, i, 4)};
    if (PQgetlength(r, i, 0) > ADB_ID_MAX)
      rc = col_fail(s, ADB_ECORRUPT, "get policy");
    else if (adb__policy_push(pol, PQgetvalue(r, i, 0), &a))
      rc = col_fail(s, ADB_ENOMEM, "get policy");
  }
  PQclear(r);
  return rc;
}

static int pg_policy_get(adb__store *st, const char *agent, const char *user,
                         const char *state_key, adb__policy *p) {
  get_arg x = {.k1 = agent, .k2 = user, .k3 = state_key, .out = p};
  int rc = with_conn((pg_store *)st, policy_get_fn, &x, 1);
  if (rc) p->n = 0;
  return rc;
}

/* ------------------------------------------------------------- decisions */

static int pg_decision_get(adb__store *st, const char *agent,
                           const char *event_id, adb__decision_rec *out) {
  return rec_get((pg_store *)st, S_DECISION_GET, &adb__decision_desc, agent,
                 event_id, out);
}

/* ------------------------------------------------------------ user state */

/* A little-endian copy of an embedding for a bytea parameter (NULL when
 * there is none); *buf is malloc'd. */
static int emb_param(params *p, const float *v, int dim, unsigned char **buf) {
  *buf = NULL;
  if (!v || dim <= 0) {
    p_bin(p, NULL, 0);
    return ADB_OK;
  }
  if (!(*buf = malloc((size_t)dim * 4))) return ADB_ENOMEM;
  emb_to_le(*buf, v, dim);
  p_bin(p, *buf, (size_t)dim * 4);
  return ADB_OK;
}

/* Adds the fields of rec that cols describe as parameters; a KEYS column
 * adds the text keys, an EMB column a copy in *emb (malloc'd, at most one
 * EMB in cols). ADB_ENOMEM, or ADB_EINVAL for a read-only column type. */
static int params_cols(params *p, const adb__col *cols, int n, const void *rec,
                       const char *keys, unsigned char **emb) {
  for (int i = 0; i < n; i++) {
    const char *f = (const char *)rec + cols[i].off;
    switch (cols[i].type) {
    case ADB__COL_INT:
      p_i64(p, *(const int *)f);
      break;
    case ADB__COL_I64:
      p_i64(p, *(const int64_t *)f);
      break;
    case ADB__COL_F64:
      p_f64(p, *(const double *)f);
      break;
    case ADB__COL_ID:
      p_text(p, f);
      break;
    case ADB__COL_TEXT:
      p_text(p, *(char *const *)f);
      break;
    case ADB__COL_EMB:
      if (emb_param(p, *(float *const *)f,
                    *(const int *)((const char *)rec + cols[i].aux), emb))
        return ADB_ENOMEM;
      break;
    case ADB__COL_ALGO:
      p_text(p, adb__algo_name(*(const adb_algorithm *)f));
      break;
    case ADB__COL_KEYS:
      p_text(p, keys);
      break;
    case ADB__COL_BOOL:
    case ADB__COL_DIM:
      return ADB_EINVAL; /* read only */
    }
  }
  return ADB_OK;
}

static int user_put_fn(pg_store *s, pgconn *c, void *arg) {
  const adb__user_state_rec *u = arg;
  params p = {0};
  unsigned char *emb;
  p_text(&p, u->user);
  if (params_cols(&p, adb__user_state_desc.cols, 2, u, NULL, &emb))
    return oom(s, "user state");
  p_i64(&p, u->updated_at_ms > 0 ? u->updated_at_ms : adb__now_ms());
  int rc = run(s, c, S_USER_PUT, &p, "put user state", NULL);
  free(emb);
  return rc;
}

static int pg_user_state_put(adb__store *st, const adb__user_state_rec *u) {
  pg_store *s = (pg_store *)st;
  if (!ID_OK(u->user) || !dim_ok(u->embedding, u->dim))
    return bad(s, "user state", 0);
  return with_conn(s, user_put_fn, (void *)u, 0);
}

static int pg_user_state_get(adb__store *st, const char *user,
                             adb__user_state_rec *out) {
  return rec_get((pg_store *)st, S_USER_GET, &adb__user_state_desc, user, NULL,
                 out);
}

/* -------------------------------------------------------------- patterns */

typedef struct pattern_arg {
  const char *agent;
  const adb_pattern *p;
} pattern_arg;

static int pattern_put_fn(pg_store *s, pgconn *c, void *arg) {
  pattern_arg *x = arg;
  const adb_pattern *pt = x->p;
  params p = {0};
  unsigned char *emb;
  p_text(&p, x->agent);
  p_text(&p, pt->id);
  if (params_cols(&p, adb__pattern_desc.cols, 6, pt, NULL, &emb))
    return oom(s, "put pattern");
  p_i64(&p, pt->updated_at_ms > 0 ? pt->updated_at_ms : adb__now_ms());
  int rc = run(s, c, S_PATTERN_PUT, &p, "put pattern", NULL);
  free(emb);
  return rc;
}

static int pg_pattern_put(adb__store *st, const char *agent,
                          const adb_pattern *p) {
  pg_store *s = (pg_store *)st;
  if (!agent || !agent[0] || !adb__pattern_rec_ok(p))
    return bad(s, "pattern", 0);
  pattern_arg x = {agent, p};
  return with_conn(s, pattern_put_fn, &x, 0);
}

static int pg_pattern_get(adb__store *st, const char *agent, const char *id,
                          adb_pattern *out) {
  return rec_get((pg_store *)st, S_PATTERN_GET, &adb__pattern_desc, agent, id,
                 out);
}

/* --------------------------------------------------------------- metrics */

static int metrics_get_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  params p = {0};
  p_text(&p, x->k1);
  p_i64(&p, x->n1);
  p_i64(&p, x->n2);
  PGresult *r = NULL;
  int rc = run(s, c, S_METRICS_GET, &p, "get metrics", &r);
  x->out = r;
  return rc;
}

static int pg_metrics_get(adb__store *st, const char *agent, int64_t from_ms,
                          int64_t to_ms, adb_metrics_row **rows, int *n) {
  pg_store *s = (pg_store *)st;
  *rows = NULL;
  *n = 0;
  get_arg x = {.k1 = agent, .n1 = from_ms, .n2 = to_ms};
  int rc = with_conn(s, metrics_get_fn, &x, 1);
  if (rc) return rc;
  PGresult *r = x.out;
  int k = PQntuples(r);
  if (k > 0 && !(*rows = calloc((size_t)k, sizeof **rows))) {
    PQclear(r);
    return oom(s, "get metrics");
  }
  for (int i = 0; i < k; i++)
    cols_read(r, i, adb__metrics_cols, ADB__METRICS_NCOLS, &(*rows)[i]);
  *n = k;
  PQclear(r);
  return ADB_OK;
}

static int ping_fn(pg_store *s, pgconn *c, void *arg) {
  (void)arg;
  PGresult *r;
  int rc = run(s, c, S_PING, NULL, "ping", &r);
  if (!rc) PQclear(r);
  return rc;
}

static int pg_ping(adb__store *st) {
  return with_conn((pg_store *)st, ping_fn, NULL, 1);
}

/* ------------------------------------------------------------ migrations */

static int migration_record(pg_store *s, pgconn *c, const adb__migration *m) {
  params p = {0};
  p_i32(&p, m->version);
  p_text(&p, m->name);
  p_i64(&p, adb__now_ms());
  if (!PQsendQueryParams(c->pg,
                         "INSERT INTO schema_migrations (version, name,"
                         " applied_at_ms) VALUES ($1::int4, $2, $3::int8)",
                         p.n, NULL, p.v, p.len, p.fmt, 1))
    return fail(s, c, NULL, "record migration");
  return finish(s, c, s->io_timeout_ms, "record migration", NULL);
}

/* The versions already recorded, as a bitmap over the embedded table. */
static int migrations_done(pg_store *s, pgconn *c, char *done) {
  PGresult *r;
  if (!PQsendQueryParams(c->pg, "SELECT version FROM schema_migrations", 0,
                         NULL, NULL, NULL, NULL, 1))
    return fail(s, c, NULL, "read schema_migrations");
  int rc = finish(s, c, s->io_timeout_ms, "read schema_migrations", &r);
  if (rc) return rc;
  for (int i = 0; i < PQntuples(r); i++) {
    int64_t v = r_i64(r, i, 0);
    for (int k = 0; k < adb__n_migrations_postgres; k++)
      if (adb__migrations_postgres[k].version == v) done[k] = 1;
  }
  PQclear(r);
  return ADB_OK;
}

/* Creates schema_migrations when it is missing, and only then: a service
 * role that owns nothing (docs/postgres.md) may not create tables, even
 * with IF NOT EXISTS. */
static int migrations_table(pg_store *s, pgconn *c) {
  PGresult *r;
  if (!PQsendQueryParams(c->pg,
                         "SELECT to_regclass('schema_migrations') IS NULL", 0,
                         NULL, NULL, NULL, NULL, 0))
    return fail(s, c, NULL, "find schema_migrations");
  int rc = finish(s, c, s->io_timeout_ms, "find schema_migrations", &r);
  if (rc) return rc;
  int missing = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  if (!missing) return ADB_OK;
  return run_sql(s, c,
                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 " version integer PRIMARY KEY, name text NOT NULL,"
                 " applied_at_ms bigint NOT NULL)",
                 s->io_timeout_ms, "create schema_migrations");
}

static int migrate_one(pg_store *s, pgconn *c, const adb__migration *m) {
  char what[160];
  snprintf(what, sizeof what, "migration %04d_%s", m->version, m->name);
  int rc = run_sql(s, c, "BEGIN", s->io_timeout_ms, what);
  if (!rc) rc = run_sql(s, c, m->sql, MIGRATE_TIMEOUT_MS, what);
  if (!rc) rc = migration_record(s, c, m);
  if (!rc) rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, what);
  if (rc) txn_abort(s, c);
  return rc;
}

/* Applies the missing migrations under the migration advisory lock (held
 * by this session until unlock or disconnect). */
static int migrate(pg_store *s, pgconn *c, adb__pg_migrate_fn fn, void *arg) {
  static const char lock[] = "SELECT pg_advisory_lock(4703525, 1)";
  static const char unlock[] = "SELECT pg_advisory_unlock(4703525, 1)";
  int n = adb__n_migrations_postgres;
  char *done = calloc((size_t)n + 1, 1);
  if (!done) return oom(s, "migrate");
  int rc = run_sql(s, c, lock, MIGRATE_TIMEOUT_MS, "migration lock");
  if (rc) {
    free(done);
    return rc;
  }
  rc = migrations_table(s, c);
  if (!rc) rc = migrations_done(s, c, done);
  for (int k = 0; k < n && !rc; k++) {
    const adb__migration *m = &adb__migrations_postgres[k];
    if (!done[k]) rc = migrate_one(s, c, m);
    if (!rc && fn) fn(arg, m->version, m->name, !done[k]);
  }
  if (!c->broken && run_sql(s, c, unlock, s->io_timeout_ms, "unlock") && !rc)
    rc = ADB_ESTORE;
  free(done);
  return rc;
}

/* Migrations and partition maintenance on a connection of their own, with
 * no statement_timeout (a migration may build an index for a long time). */
static int setup(pg_store *s, adb__pg_migrate_fn fn, void *arg, int *maint) {
  pgconn c = {0};
  int rc = conn_open(s, &c, 0);
  if (!rc) rc = migrate(s, &c, fn, arg);
  if (!rc) {
    *maint = maintain(s, &c, 1);
    if (*maint == ADB_EUNAVAIL && c.broken) rc = ADB_EUNAVAIL;
  }
  conn_drop(&c);
  return rc;
}

/* ------------------------------------------------------------ open/close */

static void pg_close(adb__store *st) {
  pg_store *s = (pg_store *)st;
  if (!s) return;
  for (int i = 0; s->conns && i < s->o.pool_size; i++)
    conn_drop(&s->conns[i]);
  free(s->conns);
  free(s->free_stack);
  free(s->url);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->err_mu);
  free(s);
}

static int store_new(const char *url, const adb_config *cfg, pg_store **out,
                     char *err, size_t errlen) {
  *out = NULL;
  pg_store *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "postgresql: out of memory");
    return ADB_ENOMEM;
  }
  s->base.m = &adb__store_pg;
  s->id = atomic_fetch_add(&next_store_id, 1);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_mutex_init(&s->err_mu, NULL);
  int rc = parse_url(url, cfg, &s->o, &s->url, err, errlen);
  if (rc) {
    pg_close(&s->base);
    return rc;
  }
  s->io_timeout_ms =
      (s->o.stmt_timeout_ms ? s->o.stmt_timeout_ms : DEFAULT_STMT_TIMEOUT_MS) +
      IO_MARGIN_MS;
  s->conns = calloc((size_t)s->o.pool_size, sizeof *s->conns);
  s->free_stack = calloc((size_t)s->o.pool_size, sizeof *s->free_stack);
  if (!s->conns || !s->free_stack) {
    pg_close(&s->base);
    snprintf(err, errlen, "postgresql: out of memory");
    return ADB_ENOMEM;
  }
  for (int i = s->o.pool_size - 1; i >= 0; i--)
    s->free_stack[s->n_free++] = i;
  *out = s;
  return ADB_OK;
}

int adb__pg_migrate(const char *url, const adb_config *cfg,
                    adb__pg_migrate_fn fn, void *arg, char *err,
                    size_t errlen) {
  char none[1];
  if (!err || !errlen) {
    err = none;
    errlen = sizeof none;
  }
  err[0] = 0;
  pg_store *s;
  int rc = store_new(url, cfg, &s, err, errlen);
  if (rc) return rc;
  int maint = ADB_OK;
  rc = setup(s, fn, arg, &maint);
  if (rc) snprintf(err, errlen, "%s", tls_err.msg);
  pg_close(&s->base);
  return rc;
}

static int pg_open(const char *url, const adb_config *cfg, adb__store **out,
                   char *err, size_t errlen) {
  *out = NULL;
  char none[1];
  if (!err || !errlen) {
    err = none;
    errlen = sizeof none;
  }
  err[0] = 0;
  pg_store *s;
  int rc = store_new(url, cfg, &s, err, errlen);
  if (rc) return rc;
  int maint = ADB_OK;
  rc = setup(s, NULL, NULL, &maint);
  if (rc) {
    snprintf(err, errlen, "%s", tls_err.msg);
    pg_close(&s->base);
    return rc;
  }
  /* A failed maintenance is not fatal: the DEFAULT partitions take every
   * row and maintain() retries soon. */
  *out = &s->base;
  return ADB_OK;
}

/* ------------------------------------------------------- vector scans */

/* Pages of rows with an embedding after the key ($1 time, $2 agent, $3
 * id), in key order; each page is read on a pooled connection, which is
 * released before the rows are handed out. Unprepared: run about once a
 * second per kind. */
#define VEC_PAGE 2048
static const char *const vec_scan_sql[3] = {
    "SELECT agent_id, episode_id, user_id, action_id, reward, embedding,"
    " created_at_ms FROM agent_episodes WHERE embedding IS NOT NULL"
    " AND (created_at_ms, agent_id, episode_id) > ($1, $2, $3)"
    " ORDER BY created_at_ms, agent_id, episode_id LIMIT $4",
    "SELECT ''::text, user_id, ''::text, ''::text, 0::float8, embedding,"
    " updated_at_ms FROM user_states WHERE embedding IS NOT NULL"
    " AND (updated_at_ms, ''::text, user_id) > ($1, $2, $3)"
    " ORDER BY updated_at_ms, user_id LIMIT $4",
    "SELECT agent_id, pattern_id, ''::text, key, confidence, embedding,"
    " updated_at_ms FROM learned_patterns WHERE embedding IS NOT NULL"
    " AND (updated_at_ms, agent_id, pattern_id) > ($1, $2, $3)"
    " ORDER BY updated_at_ms, agent_id, pattern_id LIMIT $4"};

typedef struct vec_scan_arg {
  int kind;
  int64_t ts;
  const char *agent, *id;
  PGresult *res;
} vec_scan_arg;

static int vec_page_fn(pg_store *s, pgconn *c, void *arg) {
  vec_scan_arg *x = arg;
  params p = {0};
  p_i64(&p, x->ts);
  p_text(&p, x->agent);
  p_text(&p, x->id);
  p_i64(&p, VEC_PAGE);
  if (!PQsendQueryParams(c->pg, vec_scan_sql[x->kind], p.n, NULL, p.v, p.len,
                         p.fmt, 1))
    return fail(s, c, NULL, "scan vectors");
  return finish(s, c, s->io_timeout_ms, "scan vectors", &x->res);
}

/* Hands row i of a page to fn; keeps its key in key[0..1] and *ts. */
static int vec_row_give(pg_store *s, const PGresult *r, int i, int kind,
                        int (*fn)(void *, const adb__vec_row *), void *arg,
                        char key[2][ADB_ID_MAX + 1], int64_t *ts) {
  char t[4][ADB_ID_MAX + 1];
  for (int c = 0; c < 4; c++)
    if (r_copy(t[c], sizeof t[c], r, i, c))
      return col_fail(s, ADB_ECORRUPT, "scan vectors");
  float *v;
  int dim, rc = r_emb(&v, &dim, r, i, 5);
  if (rc) return col_fail(s, rc, "scan vectors");
  adb__vec_row row = {.kind = kind,
                      .agent = t[0],
                      .id = t[1],
                      .user = t[2],
                      .action = t[3],
                      .reward = r_f64(r, i, 4),
                      .embedding = v,
                      .dim = dim,
                      .ts_ms = r_i64(r, i, 6)};
  rc = dim ? fn(arg, &row) : ADB_OK;
  free(v);
  memcpy(key[0], t[0], sizeof key[0]);
  memcpy(key[1], t[1], sizeof key[1]);
  *ts = row.ts_ms;
  return rc;
}

static int pg_vectors_scan(adb__store *st, int kind, int64_t since_ms,
                           int (*fn)(void *arg, const adb__vec_row *row),
                           void *arg) {
  pg_store *s = (pg_store *)st;
  if (kind < ADB__VEC_EPISODES || kind > ADB__VEC_PATTERNS || !fn)
    return bad(s, "vector scan", 0);
  char key[2][ADB_ID_MAX + 1] = {"", ""};
  int64_t ts = since_ms;
  for (;;) {
    vec_scan_arg x = {.kind = kind, .ts = ts, .agent = key[0], .id = key[1]};
    int rc = with_conn(s, vec_page_fn, &x, 1);
    int n = rc ? 0 : PQntuples(x.res);
    for (int i = 0; !rc && i < n; i++)
      rc = vec_row_give(s, x.res, i, kind, fn, arg, key, &ts);
    PQclear(x.res);
    if (rc || n < VEC_PAGE) return rc;
  }
}

/* Runs sql with its parameters, unprepared, on c; results in binary. For
 * rare statements: the linear model's rows and the admin calls. */
static int run_params(pg_store *s, pgconn *c, const char *sql, const params *p,
                      const char *what, PGresult **res) {
  if (!PQsendQueryParams(c->pg, sql, p->n, NULL, p->v, p->len, p->fmt, 1))
    return fail(s, c, NULL, what);
  return finish(s, c, s->io_timeout_ms, what, res);
}

/* ---------------------------------------------------------- linear models
 *
 * The linear model's rows (sql/postgres/0003_linear_model.sql): features
 * logged with decisions, increments scanned by transaction id, and
 * checkpoints. Unprepared: a few statements a second per linear agent. */

static int lin_features_put(pg_store *s, pgconn *c, const adb__batch *b) {
  int n = 0;
  for (int i = 0; i < b->n_decisions; i++)
    n += b->decisions[i].n_features > 0;
  if (!n) return ADB_OK;
  static const uint32_t t[] = {OID_TEXT, OID_TEXT, OID_BYTEA, OID_INT8};
  cols a;
  cols_begin(&a, t, 4, n);
  for (int i = 0; i < b->n_decisions; i++) {
    const adb__decision_rec *d = &b->decisions[i];
    if (d->n_features <= 0) continue;
    fld_text(&a.b[0], d->agent);
    fld_text(&a.b[1], d->event_id);
    fld_bytes(&a.b[2], (const char *)d->features, (size_t)d->n_features);
    fld_i64(&a.b[3], d->ts_ms);
  }
  int rc;
  if (cols_oom(&a)) {
    rc = oom(s, "insert decision features");
  } else {
    params p = {0};
    cols_params(&a, &p);
    rc = run_params(
        s, c,
        "INSERT INTO decision_features (agent_id, event_id,"
        " features, created_at_ms) SELECT * FROM unnest($1::text[],"
        " $2::text[], $3::bytea[], $4::int8[]) ON CONFLICT DO NOTHING",
        &p, "insert decision features", NULL);
  }
  cols_free(&a);
  return rc;
}

#define LIN_PAGE 10000

typedef struct lin_page_arg {
  const char *agent;
  int64_t after_seq;
  uint64_t min_xid;
  PGresult *res;
} lin_page_arg;

static int lin_page_fn(pg_store *s, pgconn *c, void *arg) {
  lin_page_arg *x = arg;
  params p = {0};
  p_text(&p, x->agent);
  p_i64(&p, (int64_t)x->min_xid);
  p_i64(&p, x->after_seq);
  p_i64(&p, LIN_PAGE);
  return run_params(
      s, c,
      "SELECT r.seq, r.xid::text::int8, r.reward_id, r.action_id, r.reward,"
      " r.created_at_ms, r.features, s.xmin"
      " FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8"
      " AS xmin) s LEFT JOIN LATERAL (SELECT * FROM linear_rewards"
      " WHERE agent_id = $1 AND xid >= $2::int8::text::xid8"
      " AND seq > $3::int8 ORDER BY seq LIMIT $4::int8) r ON true"
      " ORDER BY r.seq",
      &p, "scan linear rewards", &x->res);
}

static int pg_lin_scan(adb__store *st, const char *agent, int64_t after_seq,
                       uint64_t min_xid, uint64_t *snap_xmin,
                       int (*fn)(void *arg, const adb__lin_row *row),
                       void *arg) {
  pg_store *s = (pg_store *)st;
  int64_t cursor = 0; /* pages by seq within the xid condition */
  (void)after_seq;
  *snap_xmin = 0;
  for (int page = 0;; page++) {
    lin_page_arg x = {.agent = agent, .after_seq = cursor, .min_xid = min_xid};
    int rc = with_conn(s, lin_page_fn, &x, 1);
    int n = rc ? 0 : PQntuples(x.res);
    /* The snapshot's xmin comes with the rows, from the same snapshot;
     * with no rows, one row of NULLs carries it. */
    if (!rc && page == 0 && n > 0) *snap_xmin = (uint64_t)r_i64(x.res, 0, 7);
    if (n == 1 && PQgetisnull(x.res, 0, 0)) n = 0;
    for (int i = 0; !rc && i < n; i++) {
      char rid[ADB_ID_MAX + 1], act[ADB_ID_MAX + 1];
      if (r_copy(rid, sizeof rid, x.res, i, 2) ||
          r_copy(act, sizeof act, x.res, i, 3)) {
        rc = col_fail(s, ADB_ECORRUPT, "scan linear rewards");
        break;
      }
      adb__lin_row row = {.seq = r_i64(x.res, i, 0),
                          .xid = (uint64_t)r_i64(x.res, i, 1),
                          .reward_id = rid,
                          .action = act,
                          .reward = r_f64(x.res, i, 4),
                          .ts_ms = r_i64(x.res, i, 5),
                          .features = PQgetvalue(x.res, i, 6),
                          .n_features = (size_t)PQgetlength(x.res, i, 6)};
      cursor = row.seq;
      rc = fn(arg, &row);
    }
    PQclear(x.res);
    if (rc || n < LIN_PAGE) return rc;
  }
}

static int ckpt_put_fn(pg_store *s, pgconn *c, void *arg) {
  const void **a = arg;
  const char *agent = a[0];
  const adb__lin_ckpt *k = a[1];
  params p = {0};
  p_text(&p, agent);
  p_text(&p, k->config);
  p_i64(&p, k->n);
  p_i64(&p, k->after_seq);
  p_i64(&p, (int64_t)k->min_xid);
  p_bin(&p, k->seen ? k->seen : "", k->n_seen_bytes);
  p_bin(&p, k->state, k->n_state);
  p_i64(&p, adb__now_ms());
  return run_params(
      s, c,
      "INSERT INTO linear_checkpoints (agent_id, config, n, after_seq,"
      " min_xid, seen, state, updated_at_ms) VALUES ($1, $2, $3::int8,"
      " $4::int8, $5::int8, $6::bytea, $7::bytea, $8::int8)"
      " ON CONFLICT (agent_id) DO UPDATE SET config = excluded.config,"
      " n = excluded.n, after_seq = excluded.after_seq,"
      " min_xid = excluded.min_xid, seen = excluded.seen,"
      " state = excluded.state, updated_at_ms = excluded.updated_at_ms",
      &p, "put linear checkpoint", NULL);
}

static int pg_lin_checkpoint_put(adb__store *st, const char *agent,
                                 const adb__lin_ckpt *k) {
  const void *a[2] = {agent, k};
  return with_conn((pg_store *)st, ckpt_put_fn, a, 1);
}

static int blob_dup(void **out, size_t *n, const PGresult *r, int col) {
  *n = (size_t)PQgetlength(r, 0, col);
  *out = malloc(*n ? *n : 1);
  if (!*out) return ADB_ENOMEM;
  memcpy(*out, PQgetvalue(r, 0, col), *n);
  return ADB_OK;
}

static int ckpt_get_fn(pg_store *s, pgconn *c, void *arg) {
  void **a = arg;
  adb__lin_ckpt *k = a[1];
  params p = {0};
  p_text(&p, a[0]);
  PGresult *r = NULL;
  int rc = run_params(s, c,
                      "SELECT config, n, after_seq, min_xid, seen, state"
                      " FROM linear_checkpoints WHERE agent_id = $1",
                      &p, "get linear checkpoint", &r);
  if (!rc && PQntuples(r) != 1) rc = ADB_ENOTFOUND;
  if (!rc && r_copy(k->config, sizeof k->config, r, 0, 0))
    rc = col_fail(s, ADB_ECORRUPT, "get linear checkpoint");
  if (!rc) {
    k->n = r_i64(r, 0, 1);
    k->after_seq = r_i64(r, 0, 2);
    k->min_xid = (uint64_t)r_i64(r, 0, 3);
    rc = blob_dup(&k->seen, &k->n_seen_bytes, r, 4);
    if (!rc) rc = blob_dup(&k->state, &k->n_state, r, 5);
  }
  PQclear(r);
  return rc;
}

static int pg_lin_checkpoint_get(adb__store *st, const char *agent,
                                 adb__lin_ckpt *k) {
  memset(k, 0, sizeof *k);
  void *a[2] = {(void *)agent, k};
  int rc = with_conn((pg_store *)st, ckpt_get_fn, a, 1);
  if (rc) {
    free(k->seen);
    free(k->state);
    k->seen = k->state = NULL;
  }
  return rc;
}

static int actvec_fn(pg_store *s, pgconn *c, void *arg) {
  void **a = arg;
  params p = {0};
  p_text(&p, a[0]);
  return run_params(s, c,
                    "SELECT action_id, embedding FROM actions WHERE agent_id ="
                    " $1 AND embedding IS NOT NULL",
                    &p, "list action embeddings", (PGresult **)&a[1]);
}

static int pg_action_vectors(adb__store *st, const char *agent,
                             void (*fn)(void *arg, const char *action,
                                        const float *v, int dim),
                             void *arg) {
  pg_store *s = (pg_store *)st;
  void *a[2] = {(void *)agent, NULL};
  int rc = with_conn(s, actvec_fn, a, 1);
  PGresult *r = a[1];
  for (int i = 0; !rc && i < PQntuples(r); i++) {
    char id[ADB_ID_MAX + 1];
    float *v;
    int dim;
    if (r_copy(id, sizeof id, r, i, 0) || r_emb(&v, &dim, r, i, 1)) {
      rc = col_fail(s, ADB_ECORRUPT, "list action embeddings");
      break;
    }
    if (dim) fn(arg, id, v, dim);
    free(v);
  }
  PQclear(r);
  return rc;
}

/* ----------------------------------------------------------------- admin */

static int run_text(pg_store *s, pgconn *c, const char *sql, const char *a,
                    const char *b, const char *what, PGresult **res) {
  params p = {0};
  p_text(&p, a);
  if (b) p_text(&p, b);
  return run_params(s, c, sql, &p, what, res);
}

static int run_list(pg_store *s, pgconn *c, const char *const *sql,
                    const char *a) {
  int rc = ADB_OK;
  for (int i = 0; sql[i] && !rc; i++)
    rc = run_text(s, c, sql[i], a, NULL, "admin delete", NULL);
  return rc;
}

/* A text column as a C string (binary text is the bytes, no NUL). */
static const char *r_str(const PGresult *r, int row, int col, char *buf,
                         size_t cap) {
  if (r_copy(buf, cap, r, row, col)) buf[0] = 0;
  return buf;
}

typedef struct list_arg {
  const char *after;
  int limit;
  char (*ids)[ADB_ID_MAX + 1];
  int *n;
} list_arg;

static int agents_list_fn(pg_store *s, pgconn *c, void *arg) {
  list_arg *x = arg;
  params p = {0};
  p_text(&p, x->after);
  p_i64(&p, x->limit);
  PGresult *r;
  int rc = run_params(s, c, adb__sql_agents_list, &p, "list agents", &r);
  if (rc) return rc;
  *x->n = 0;
  for (int i = 0; i < PQntuples(r) && *x->n < x->limit; i++)
    r_str(r, i, 0, x->ids[(*x->n)++], ADB_ID_MAX + 1);
  PQclear(r);
  return ADB_OK;
}

static int pg_agents_list(adb__store *st, const char *after, int limit,
                          char (*ids)[ADB_ID_MAX + 1], int *n) {
  *n = 0;
  list_arg x = {after ? after : "", limit, ids, n};
  return with_conn((pg_store *)st, agents_list_fn, &x, 1);
}

typedef struct agent_del_arg {
  const char *agent;
  int keep_config;
  adb__cell *cells;
  int n_cells;
} agent_del_arg;

static int agent_del_body(pg_store *s, pgconn *c, agent_del_arg *x) {
  PGresult *r;
  int rc =
      run_text(s, c, adb__sql_agent_exists, x->agent, NULL, "find agent", &r);
  if (rc) return rc;
  int found = PQntuples(r) > 0;
  PQclear(r);
  if (!found) {
    set_err(s, "agent '%s' not found", x->agent);
    return ADB_ENOTFOUND;
  }
  rc = run_text(s, c, adb__sql_agent_cells, x->agent, NULL, "agent keys", &r);
  if (rc) return rc;
  char u[ADB_ID_MAX + 1], k[ADB_STATE_KEY_LEN + 1];
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = adb__cells_push(&x->cells, &x->n_cells, x->agent,
                         r_str(r, i, 0, u, sizeof u),
                         r_str(r, i, 1, k, sizeof k));
  PQclear(r);
  if (rc) return oom(s, "agent keys");
  rc = run_text(s, c, "DELETE FROM reward_ids WHERE agent_id = $1", x->agent,
                NULL, "admin delete", NULL);
  if (!rc)
    rc = run_text(s, c, "DELETE FROM decision_ids WHERE agent_id = $1",
                  x->agent, NULL, "admin delete", NULL);
  if (!rc) rc = run_list(s, c, adb__sql_agent_learning, x->agent);
  if (!rc && !x->keep_config)
    rc = run_list(s, c, adb__sql_agent_config, x->agent);
  return rc;
}

static int agent_del_fn(pg_store *s, pgconn *c, void *arg) {
  agent_del_arg *x = arg;
  free(x->cells);
  x->cells = NULL;
  x->n_cells = 0;
  int rc = run_sql(s, c, "BEGIN", s->io_timeout_ms, "begin agent delete");
  if (!rc) rc = agent_del_body(s, c, x);
  if (!rc) rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, "commit");
  if (rc) txn_abort(s, c);
  return rc;
}

static int pg_agent_delete(adb__store *st, const char *agent, int keep_config,
                           adb__cell **cells, int *n_cells) {
  agent_del_arg x = {agent, keep_config, NULL, 0};
  int rc = with_conn((pg_store *)st, agent_del_fn, &x, 0);
  if (rc) {
    free(x.cells);
    x.cells = NULL;
    x.n_cells = 0;
  }
  *cells = x.cells;
  *n_cells = x.n_cells;
  return rc;
}

static int action_del_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  PGresult *r;
  int rc =
      run_text(s, c, adb__sql_action_delete, x->k1, x->k2, "delete action", &r);
  if (rc) return rc;
  int n = atoi(PQcmdTuples(r));
  PQclear(r);
  if (n == 0) {
    set_err(s, "action '%s' of agent '%s' not found", x->k2, x->k1);
    return ADB_ENOTFOUND;
  }
  return ADB_OK;
}

typedef struct expire_arg {
  const char *agent, *prefix;
  int64_t before_ms, *deleted;
} expire_arg;

static int pattern_expire_fn(pg_store *s, pgconn *c, void *arg) {
  expire_arg *x = arg;
  params p = {0};
  p_text(&p, x->agent);
  p_text(&p, x->prefix);
  p_i64(&p, x->before_ms);
  PGresult *r = NULL;
  int rc = run_params(s, c, adb__sql_pattern_expire, &p, "expire patterns", &r);
  if (!rc && x->deleted) *x->deleted = atoll(PQcmdTuples(r));
  PQclear(r);
  return rc;
}

static int pg_pattern_expire(adb__store *st, const char *agent,
                             const char *prefix, int64_t before_ms,
                             int64_t *deleted) {
  expire_arg x = {agent, prefix, before_ms, deleted};
  return with_conn((pg_store *)st, pattern_expire_fn, &x, 0);
}

static int pg_action_delete(adb__store *st, const char *agent,
                            const char *action) {
  get_arg x = {.k1 = agent, .k2 = action};
  return with_conn((pg_store *)st, action_del_fn, &x, 0);
}

typedef struct user_arg {
  const char *user;
  int erase;
  adb__user_data *u;
} user_arg;

static int user_counts(pg_store *s, pgconn *c, user_arg *x) {
  PGresult *r;
  int rc = run_text(s, c, adb__sql_user_counts, x->user, NULL, "user", &r);
  if (rc) return rc;
  adb_user_summary *u = &x->u->sum;
  if (PQntuples(r) == 1) {
    u->decisions = r_i64(r, 0, 0);
    u->rewards = r_i64(r, 0, 1);
    u->episodes = r_i64(r, 0, 2);
    u->policy_rows = r_i64(r, 0, 3);
    u->has_state = r_i64(r, 0, 4) > 0;
    u->sessions = r_i64(r, 0, 5);
  }
  PQclear(r);
  return ADB_OK;
}

/* The rows of the user's keys, agents, sessions and (erase) policies. */
static int user_lists(pg_store *s, pgconn *c, user_arg *x) {
  adb__user_data *u = x->u;
  char a[ADB_ID_MAX + 1], k[ADB_ID_MAX + 1], t[ADB_ID_MAX + 1];
  PGresult *r;
  int rc = run_text(s, c, adb__sql_user_cells, x->user, NULL, "user", &r);
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = adb__cells_push(&u->cells, &u->n_cells, r_str(r, i, 0, a, sizeof a),
                         "", r_str(r, i, 1, k, sizeof k));
  if (r) PQclear(r);
  r = NULL;
  if (!rc) rc = run_text(s, c, adb__sql_user_agents, x->user, NULL, "user", &r);
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = adb__agents_push(u, r_str(r, i, 0, a, sizeof a));
  if (r) PQclear(r);
  r = NULL;
  if (!rc)
    rc = run_text(s, c, adb__sql_user_sessions, x->user, NULL, "user", &r);
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = adb__sessions_push(u, r_str(r, i, 0, a, sizeof a));
  if (r) PQclear(r);
  r = NULL;
  if (!rc && x->erase)
    rc = run_text(s, c, adb__sql_user_rows, x->user, NULL, "user", &r);
  for (int i = 0; !rc && x->erase && i < PQntuples(r); i++) {
    adb__arm_stats d = {.n = -r_i64(r, i, 3),
                        .sum_micro =
                            -adb__sum_of(r_i64(r, i, 6), r_i64(r, i, 4)),
                        .sum_sq = -r_f64(r, i, 5)};
    rc = adb__change_push(u, r_str(r, i, 0, a, sizeof a),
                          r_str(r, i, 1, k, sizeof k),
                          r_str(r, i, 2, t, sizeof t), &d);
  }
  if (r) PQclear(r);
  return rc == ADB_ENOMEM ? oom(s, "user") : rc;
}

/* Subtracts the user's rows from the '*' rows, in key order (the order
 * of the write path, so neither can deadlock the other). */
static int star_subtract(pg_store *s, pgconn *c, adb__user_data *u) {
  int64_t now = adb__now_ms();
  for (int i = 0; i < u->n_changes; i++) {
    adb__policy_change *ch = &u->changes[i];
    params p = {0};
    p_i64(&p, -ch->delta.n);
    p_i64(&p, adb__sum_hi(ch->delta.sum_micro));
    p_i64(&p, adb__sum_lo(ch->delta.sum_micro));
    p_f64(&p, -ch->delta.sum_sq);
    p_i64(&p, now);
    p_text(&p, ch->agent);
    p_text(&p, ch->state_key);
    p_text(&p, ch->action);
    PGresult *r;
    int rc = run_params(s, c, adb__sql_star_subtract, &p, "subtract", &r);
    if (rc) return rc;
    if (PQntuples(r) == 1) ch->delta.version = r_i64(r, 0, 0);
    PQclear(r);
  }
  return ADB_OK;
}

static int user_fn(pg_store *s, pgconn *c, void *arg) {
  user_arg *x = arg;
  adb__user_data_free(x->u);
  int rc =
      x->erase ? run_sql(s, c, "BEGIN", s->io_timeout_ms, "begin") : ADB_OK;
  if (!rc) rc = user_counts(s, c, x);
  if (!rc) rc = user_lists(s, c, x);
  if (!rc && x->erase) rc = star_subtract(s, c, x->u);
  /* reward_ids holds no user: its rows go by the user's reward ids. */
  if (!rc && x->erase)
    rc = run_text(s, c,
                  "DELETE FROM reward_ids i USING reward_signals r "
                  "WHERE r.user_id = $1 AND i.agent_id = r.agent_id "
                  "AND i.reward_id = r.reward_id",
                  x->user, NULL, "erase reward ids", NULL);
  if (!rc && x->erase)
    rc = run_text(s, c,
                  "DELETE FROM decision_ids i USING decisions d "
                  "WHERE d.user_id = $1 AND i.agent_id = d.agent_id "
                  "AND i.event_id = d.event_id",
                  x->user, NULL, "erase decision ids", NULL);
  if (!rc && x->erase) rc = run_list(s, c, adb__sql_user_delete, x->user);
  if (!rc && x->erase)
    rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, "commit user erase");
  if (rc && x->erase) txn_abort(s, c);
  return rc;
}

static int pg_user_data(adb__store *st, const char *user, int erase,
                        adb__user_data *u) {
  memset(u, 0, sizeof *u);
  user_arg x = {user, erase, u};
  int rc = with_conn((pg_store *)st, user_fn, &x, !erase);
  if (rc) adb__user_data_free(u);
  return rc;
}

/* ------------------------------------------------------------ log scan */

/* One page of the joined log (S_LOG_PAGE, prepared: its plan over the
 * partitions costs more than a page's rows): decisions after (ts, id) in
 * [.., to), by decisions_by_agent_time and an incremental sort on id, each
 * with its features, the user's stored embedding when it has none, and its
 * rewards' count, sum, first time and default flag. The rewards of the
 * whole page are found by one index scan over the page's event ids, then
 * grouped: a lateral aggregate per decision (an Append over every
 * partition, rescanned per row) cost the server twice as much.
 *
 * While the rows of one page are emitted, a thread fetches the next one
 * (its keyset is the page's last row), so the server's work overlaps the
 * writer's: at most two pages are in memory, and no connection is held
 * while the callback runs (the thread holds one for its query only). */
typedef struct log_page_arg {
  pg_store *s;
  const char *agent;
  int64_t ts, id, to;
  PGresult *res;
  int rc;
  char err[ERR_MAX];
} log_page_arg;

static int log_page_fn(pg_store *s, pgconn *c, void *arg) {
  log_page_arg *x = arg;
  params p = {0};
  p_text(&p, x->agent);
  p_i64(&p, x->ts);
  p_i64(&p, x->to);
  p_i64(&p, x->id);
  p_i64(&p, ADB__LOG_PAGE);
  return run(s, c, S_LOG_PAGE, &p, "scan log", &x->res);
}

/* Fetches page x (x->res, x->rc; the message in x->err). */
static void log_page_get(log_page_arg *x) {
  x->res = NULL;
  x->rc = with_conn(x->s, log_page_fn, x, 1);
  if (x->rc) snprintf(x->err, sizeof x->err, "%s", tls_err.msg);
}

static void *log_page_thread(void *arg) {
  log_page_get(arg);
  return NULL;
}

/* The decision of row i, its JSON pointing into r (valid until PQclear). */
static int log_row_read(const PGresult *r, int i, const char *agent,
                        adb__decision_rec *d, adb__logscan_cols *c) {
  memset(d, 0, offsetof(adb__decision_rec, features));
  memset(c, 0, sizeof *c);
  snprintf(d->agent, sizeof d->agent, "%s", agent);
  if (r_copy(d->event_id, sizeof d->event_id, r, i, 1) ||
      r_copy(d->user, sizeof d->user, r, i, 2) ||
      r_copy(d->state_key, sizeof d->state_key, r, i, 3) ||
      r_copy(d->action, sizeof d->action, r, i, 6) ||
      r_copy(d->model, sizeof d->model, r, i, 8))
    return ADB_ECORRUPT;
  d->context_json = PQgetvalue(r, i, 4);
  d->candidates_json = PQgetvalue(r, i, 5);
  d->propensity = r_f64(r, i, 7);
  d->ts_ms = r_i64(r, i, 9);
  d->ranking_json = PQgetisnull(r, i, 10) ? NULL : PQgetvalue(r, i, 10);
  if (!PQgetisnull(r, i, 11)) {
    c->features = PQgetvalue(r, i, 11);
    c->features_len = (size_t)PQgetlength(r, i, 11);
  }
  if (!PQgetisnull(r, i, 12)) {
    c->user_emb = PQgetvalue(r, i, 12);
    c->user_emb_len = (size_t)PQgetlength(r, i, 12);
  }
  c->n_rewards = r_i64(r, i, 13);
  c->reward_sum = r_f64(r, i, 14);
  c->first_ms = r_i64(r, i, 15);
  c->has_default = r_bool(r, i, 16);
  return ADB_OK;
}

/* Emits the n rows of r. */
static int log_page_emit(pg_store *s, adb__logscan *x, adb__decision_rec *d,
                         const PGresult *r, int n, const char *agent,
                         adb__log_fn fn, void *ctx) {
  int rc = ADB_OK;
  for (int i = 0; !rc && i < n; i++) {
    adb__logscan_cols c;
    if (log_row_read(r, i, agent, d, &c))
      return col_fail(s, ADB_ECORRUPT, "read log");
    rc = adb__logscan_emit(x, d, &c, fn, ctx);
  }
  return rc;
}

static int pg_log_scan(adb__store *st, const char *agent, int64_t from_ms,
                       int64_t to_ms,
                       int (*fn)(void *ctx, const struct adb__log_row *row),
                       void *ctx) {
  pg_store *s = (pg_store *)st;
  adb__logscan *x = malloc(sizeof *x);
  adb__decision_rec *d = malloc(sizeof *d);
  log_page_arg *pg = calloc(2, sizeof *pg);
  int rc = x && d && pg ? adb__logscan_begin(x, st, agent) : ADB_ENOMEM;
  if (!x || !d || !pg) oom(s, "scan log");
  if (!rc) {
    pg[0] = (log_page_arg){
        .s = s, .agent = agent, .ts = from_ms, .id = INT64_MIN, .to = to_ms};
    pg[1] = pg[0];
    log_page_get(&pg[0]);
    if ((rc = pg[0].rc)) set_err(s, "%s", pg[0].err);
  }
  for (int cur = 0; !rc; cur = !cur) {
    PGresult *r = pg[cur].res;
    log_page_arg *next = &pg[!cur];
    int n = PQntuples(r), more = n == ADB__LOG_PAGE, ahead = 0;
    pthread_t th;
    if (more) {
      next->ts = r_i64(r, n - 1, 9);
      next->id = r_i64(r, n - 1, 0);
      ahead = pthread_create(&th, NULL, log_page_thread, next) == 0;
    }
    rc = log_page_emit(s, x, d, r, n, agent, fn, ctx);
    PQclear(r);
    pg[cur].res = NULL;
    if (!more) break;
    if (ahead)
      pthread_join(th, NULL);
    else if (!rc)
      log_page_get(next);
    else
      break;
    if (!rc && (rc = next->rc)) set_err(s, "%s", next->err);
    if (rc) PQclear(next->res);
  }
  if (x && d && pg) adb__logscan_end(x);
  free(x);
  free(d);
  free(pg);
  return rc;
}

/* ------------------------------------------ deferred events and the log */

typedef struct defer_arg {
  const char *agent, *event_id;
  int op, state;
  int64_t now_ms;
} defer_arg;

static int defer_fn(pg_store *s, pgconn *c, void *arg) {
  defer_arg *x = arg;
  params p = {0};
  p_text(&p, x->agent);
  p_text(&p, x->event_id);
  PGresult *r = NULL;
  int rc = ADB_OK;
  if (x->op != ADB__DEFER_GET) {
    p_i64(&p, x->now_ms);
    rc = run_params(s, c,
                    x->op == ADB__DEFER_MARK ? adb__sql_defer_mark
                                             : adb__sql_defer_activate,
                    &p, "defer event", NULL);
    p.n = 2;
  }
  if (!rc) rc = run_params(s, c, adb__sql_defer_get, &p, "deferred event", &r);
  if (!rc)
    x->state = PQntuples(r) == 0      ? ADB__DEFER_NONE
               : PQgetisnull(r, 0, 0) ? ADB__DEFER_WAITING
                                      : ADB__DEFER_ACTIVE;
  PQclear(r);
  return rc;
}

static int pg_event_defer(adb__store *st, const char *agent,
                          const char *event_id, int op, int64_t now_ms,
                          int *state) {
  defer_arg x = {agent, event_id, op, ADB__DEFER_NONE, now_ms};
  int rc = with_conn((pg_store *)st, defer_fn, &x, op == ADB__DEFER_GET);
  if (state) *state = rc ? ADB__DEFER_NONE : x.state;
  return rc;
}

static int range_fn(pg_store *s, pgconn *c, void *arg) {
  get_arg *x = arg;
  PGresult *r;
  int rc = run_text(s, c, adb__sql_log_range, x->k1, NULL, "log range", &r);
  if (rc) return rc;
  if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
    set_err(s, "postgresql: agent '%s' has no logged decision", x->k1);
    rc = ADB_ENOTFOUND;
  } else {
    x->n1 = r_i64(r, 0, 0);
    x->n2 = r_i64(r, 0, 1);
  }
  PQclear(r);
  return rc;
}

static int pg_log_range(adb__store *st, const char *agent, int64_t *first_ms,
                        int64_t *last_ms) {
  get_arg x = {.k1 = agent};
  int rc = with_conn((pg_store *)st, range_fn, &x, 1);
  *first_ms = rc ? 0 : x.n1;
  *last_ms = rc ? 0 : x.n2;
  return rc;
}

/* The cutoff of log_delete: now less the window and the lag, never past
 * the agent's default-reward watermark; no row for an unknown agent. */
static const char log_cutoff_sql[] =
    "SELECT CASE WHEN a.reward_window_s > 0 THEN"
    " least($2::int8 - (a.reward_window_s * 1000)::int8 - $3::int8,"
    " coalesce(w.upto_ms, $2::int8)) ELSE $2::int8 - $3::int8 END"
    " FROM agent_metadata a LEFT JOIN default_watermarks w"
    " ON w.agent_id = a.agent_id WHERE a.agent_id = $1";

/* The exactly-once memory of the reward ids and client event ids deleted
 * (0005_write_path), run before the rewards and decisions go. */
static const char *const log_delete_ids[] = {
    "DELETE FROM reward_ids WHERE agent_id = $1 AND reward_id IN"
    " (SELECT reward_id FROM reward_signals WHERE agent_id = $1"
    " AND event_id <> '' AND event_id IN (SELECT event_id FROM decisions"
    " WHERE agent_id = $1 AND created_at_ms < $2))",
    "DELETE FROM reward_ids WHERE agent_id = $1 AND reward_id IN"
    " (SELECT reward_id FROM reward_signals WHERE agent_id = $1"
    " AND event_id = '' AND created_at_ms < $2)",
    "DELETE FROM decision_ids WHERE agent_id = $1 AND event_id IN"
    " (SELECT event_id FROM decisions WHERE agent_id = $1"
    " AND created_at_ms < $2)",
    NULL};

typedef struct log_del_arg {
  const char *agent;
  int64_t now_ms;
  adb__log_deleted out;
} log_del_arg;

/* Runs sql($1 = agent, $2 = t); *n (may be NULL) gets the rows changed. */
static int run_log(pg_store *s, pgconn *c, const char *sql, const char *agent,
                   int64_t t, int64_t *n) {
  params p = {0};
  p_text(&p, agent);
  p_i64(&p, t);
  PGresult *r = NULL;
  int rc = run_params(s, c, sql, &p, "delete log", &r);
  if (!rc && n) *n = strtoll(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return rc;
}

static int log_cutoff(pg_store *s, pgconn *c, log_del_arg *x) {
  params p = {0};
  p_text(&p, x->agent);
  p_i64(&p, x->now_ms);
  p_i64(&p, ADB__DEFAULT_LAG_MS);
  PGresult *r = NULL;
  int rc = run_params(s, c, log_cutoff_sql, &p, "log cutoff", &r);
  if (!rc && PQntuples(r) != 1) {
    set_err(s, "postgresql: agent '%s' not found", x->agent);
    rc = ADB_ENOTFOUND;
  }
  if (!rc) x->out.upto_ms = r_i64(r, 0, 0);
  PQclear(r);
  return rc;
}

static int log_del_body(pg_store *s, pgconn *c, log_del_arg *x) {
  int rc = log_cutoff(s, c, x);
  int64_t t = x->out.upto_ms, n = 0;
  for (int i = 0; !rc && adb__sql_log_delete_keyed[i]; i++)
    rc = run_log(s, c, adb__sql_log_delete_keyed[i], x->agent, t, NULL);
  for (int i = 0; !rc && log_delete_ids[i]; i++)
    rc = run_log(s, c, log_delete_ids[i], x->agent, t, NULL);
  for (int i = 0; !rc && adb__sql_log_delete_rewards[i]; i++) {
    rc = run_log(s, c, adb__sql_log_delete_rewards[i], x->agent, t, &n);
    x->out.rewards += rc ? 0 : n;
  }
  if (!rc)
    rc = run_log(s, c, adb__sql_log_delete_decisions, x->agent, t,
                 &x->out.decisions);
  if (!rc) rc = run_log(s, c, adb__sql_log_delete_marks, x->agent, t, NULL);
  return rc;
}

static int log_del_fn(pg_store *s, pgconn *c, void *arg) {
  log_del_arg *x = arg;
  memset(&x->out, 0, sizeof x->out);
  int rc = run_sql(s, c, "BEGIN", s->io_timeout_ms, "begin log delete");
  if (!rc) rc = log_del_body(s, c, x);
  if (!rc) rc = run_sql(s, c, "COMMIT", s->io_timeout_ms, "commit");
  if (rc) txn_abort(s, c);
  return rc;
}

static int pg_log_delete(adb__store *st, const char *agent, int64_t now_ms,
                         adb__log_deleted *out) {
  log_del_arg x = {.agent = agent, .now_ms = now_ms};
  int rc = with_conn((pg_store *)st, log_del_fn, &x, 0);
  *out = x.out;
  if (rc) out->decisions = out->rewards = 0;
  return rc;
}

const adb__store_methods adb__store_pg = {
    .version = 1,
    .scheme = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .errmsg = pg_errmsg,
    .ping = pg_ping,
    .agent_put = pg_agent_put,
    .agent_get = pg_agent_get,
    .agent_counters = pg_agent_counters,
    .actions_put = pg_actions_put,
    .actions_list = pg_actions_list,
    .policy_get = pg_policy_get,
    .write_batch = pg_write_batch,
    .decision_get = pg_decision_get,
    .user_state_put = pg_user_state_put,
    .user_state_get = pg_user_state_get,
    .pattern_put = pg_pattern_put,
    .pattern_get = pg_pattern_get,
    .pattern_expire = pg_pattern_expire,
    .metrics_get = pg_metrics_get,
    .vectors_scan = pg_vectors_scan,
    .lin_scan = pg_lin_scan,
    .lin_checkpoint_put = pg_lin_checkpoint_put,
    .lin_checkpoint_get = pg_lin_checkpoint_get,
    .action_vectors = pg_action_vectors,
    .agent_fix_dim = pg_agent_fix_dim,
    .pending_sweep = pg_pending_sweep,
    .agents_list = pg_agents_list,
    .agent_delete = pg_agent_delete,
    .action_delete = pg_action_delete,
    .user_data = pg_user_data,
    .log_scan = pg_log_scan,
    .event_defer = pg_event_defer,
    .log_range = pg_log_range,
    .log_delete = pg_log_delete,
};
