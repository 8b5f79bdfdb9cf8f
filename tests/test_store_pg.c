/*
 * test_store_pg.c — what only the PostgreSQL store has: concurrent
 * migrations, monthly partitions and retention, the connection pool's
 * recovery from killed and frozen backends, the operators' apply_reward()
 * SQL function, the COPY path of episodes and the reward_ids gate across
 * partitions. (Everything both stores share is in test_store.c.)
 *
 * Needs AGENTDB_TEST_PG_URL (scripts/pg-test.sh starts a server; make test
 * does); every test is skipped without it. Each test gets a new database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrations.h"
#include "store.h"
#include "store_pg.h"
#include "util_store.h"

#define DAY 86400000LL

typedef struct fx {
  char *url; /* a fresh, empty database */
  adb__store *st;
} fx;

static int quick(void) {
  const char *q = getenv("ADB_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

#define assert_ok(st, call)                                                    \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != ADB_OK)                                                         \
      fprintf(stderr, "%s: %s\n", #call, (st)->m->errmsg(st));                 \
    assert_int_equal(rc_, ADB_OK);                                             \
  } while (0)

/* url + "?opts" (or "&opts"), malloc'd. */
static char *with_opts(const char *url, const char *opts) {
  size_t n = strlen(url) + strlen(opts) + 2;
  char *u = malloc(n);
  assert_non_null(u);
  snprintf(u, n, "%s%c%s", url, strchr(url, '?') ? '&' : '?', opts);
  return u;
}

static adb__store *open_store(const char *url) {
  adb__store *st = NULL;
  char err[1024] = "";
  int rc = adb__store_open(url, NULL, &st, err, sizeof err);
  if (rc != ADB_OK) fprintf(stderr, "open %s: %s\n", url, err);
  assert_int_equal(rc, ADB_OK);
  return st;
}

static int setup(void **state) {
  if (!getenv("AGENTDB_TEST_PG_URL")) {
    *state = NULL;
    return 0;
  }
  fx *f = calloc(1, sizeof *f);
  if (!f || !(f->url = util_store_fresh_url("postgresql"))) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  if (!f) return 0;
  adb__store_close(f->st);
  util_store_drop(f->url);
  free(f);
  return 0;
}

/* Every test starts with this: skip without a server. */
#define NEED_PG(f)                                                             \
  fx *f = *state;                                                              \
  if (!f) skip()

static int64_t q_int(const char *url, const char *sql) {
  int64_t v = util_store_query_int(url, sql);
  assert_true(v != INT64_MIN);
  return v;
}

/* ------------------------------------------------------------- builders */

/* Start of the UTC month `k` months from the current one, in ms, and its
 * partition suffix YYYYMM. */
static int64_t month_ms(int k, char yyyymm[16]) {
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  int m = tm.tm_year * 12 + tm.tm_mon + k;
  struct tm t = {.tm_year = m / 12, .tm_mon = m % 12, .tm_mday = 1};
  if (yyyymm) snprintf(yyyymm, 16, "%04d%02d", 1900 + m / 12, m % 12 + 1);
  return (int64_t)timegm(&t) * 1000;
}

static void state_key(char out[ADB_STATE_KEY_LEN + 1], unsigned i) {
  snprintf(out, ADB_STATE_KEY_LEN + 1, "%064x", i);
}

static adb__reward_rec reward(const char *id, const char *user, double r,
                              int64_t ts) {
  adb__reward_rec x;
  memset(&x, 0, sizeof x);
  snprintf(x.agent, sizeof x.agent, "ag");
  snprintf(x.reward_id, sizeof x.reward_id, "%s", id);
  snprintf(x.user, sizeof x.user, "%s", user);
  state_key(x.state_key, 1);
  snprintf(x.action, sizeof x.action, "a");
  x.reward = r;
  x.reward_micro = llround(r * ADB_MICRO);
  snprintf(x.body_hash, sizeof x.body_hash, "%064d", (int)(r * 1000));
  x.ts_ms = ts;
  return x;
}

static adb__decision_rec decision(const char *event, int64_t ts) {
  adb__decision_rec d;
  memset(&d, 0, sizeof d);
  snprintf(d.agent, sizeof d.agent, "ag");
  snprintf(d.event_id, sizeof d.event_id, "%s", event);
  snprintf(d.user, sizeof d.user, "u");
  state_key(d.state_key, 1);
  snprintf(d.action, sizeof d.action, "a");
  d.propensity = 0.5;
  snprintf(d.model, sizeof d.model, "beta-ts/1");
  d.ts_ms = ts;
  return d;
}

static int write_one_decision(adb__store *st, const char *event, int64_t ts) {
  adb__decision_rec d = decision(event, ts);
  adb__batch b = {.decisions = &d, .n_decisions = 1};
  int rc = st->m->write_batch(st, &b);
  free(b.changes);
  return rc;
}

static int write_rewards(adb__store *st, adb__reward_rec *r, int n) {
  adb__batch b = {.rewards = r, .n_rewards = n};
  int rc = st->m->write_batch(st, &b);
  free(b.changes);
  return rc;
}

static adb__arm_stats arm(adb__store *st, const char *user) {
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__policy p = {0};
  adb__arm_stats s = {0};
  assert_ok(st, st->m->policy_get(st, "ag", user, sk, &p));
  for (int i = 0; i < p.n; i++)
    if (strcmp(p.arms[i].action, "a") == 0) s = p.arms[i].s;
  adb__policy_free(&p);
  return s;
}

/* ------------------------------------------------------------ migrations */

typedef struct mig_run {
  const char *url;
  int rc, applied, seen;
} mig_run;

static void count_applied(void *arg, int version, const char *name,
                          int applied) {
  mig_run *m = arg;
  (void)version;
  (void)name;
  m->applied += applied;
  m->seen++;
}

static void *migrate_main(void *p) {
  mig_run *m = p;
  char err[512];
  m->rc = adb__pg_migrate(m->url, NULL, count_applied, m, err, sizeof err);
  if (m->rc) fprintf(stderr, "migrate: %s\n", err);
  return NULL;
}

static void migrations_from_four_threads_apply_each_once(void **state) {
  NEED_PG(f);
  enum { N = 4 };
  mig_run m[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    m[i] = (mig_run){.url = f->url};
    assert_int_equal(pthread_create(&t[i], NULL, migrate_main, &m[i]), 0);
  }
  int applied = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(m[i].rc, ADB_OK);
    assert_int_equal(m[i].seen, adb__n_migrations_postgres);
    applied += m[i].applied;
  }
  assert_int_equal(applied, adb__n_migrations_postgres);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM schema_migrations"),
                   adb__n_migrations_postgres);
  /* And once more from scratch: nothing left to do. */
  mig_run again = {.url = f->url};
  migrate_main(&again);
  assert_int_equal(again.rc, ADB_OK);
  assert_int_equal(again.applied, 0);
}

static void migrate_reports_unreachable_server(void **state) {
  NEED_PG(f);
  (void)f;
  char err[512] = "";
  int rc = adb__pg_migrate("postgresql://postgres@127.0.0.1:1/x", NULL, NULL,
                           NULL, err, sizeof err);
  assert_int_equal(rc, ADB_EUNAVAIL);
  assert_non_null(strstr(err, "cannot connect"));
}

/* ------------------------------------------------------------ partitions */

static int64_t relation_exists(const char *url, const char *name) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_class WHERE relname = '%s'", name);
  return q_int(url, sql);
}

static void partitions_cover_current_and_next_two_months(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  static const char *const tables[] = {"decisions", "reward_signals",
                                       "agent_episodes"};
  for (int t = 0; t < 3; t++) {
    for (int k = 0; k <= 2; k++) {
      char ym[16], name[64];
      month_ms(k, ym);
      snprintf(name, sizeof name, "%s_p%s", tables[t], ym);
      assert_int_equal(relation_exists(f->url, name), 1);
    }
    char name[64];
    snprintf(name, sizeof name, "%s_default", tables[t]);
    assert_int_equal(relation_exists(f->url, name), 1);
  }
}

static void rows_land_in_their_month_or_in_default(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  char ym[16], sql[256];
  int64_t now = month_ms(0, ym) + 3 * DAY;
  assert_ok(f->st, write_one_decision(f->st, "now", now));
  assert_ok(f->st, write_one_decision(f->st, "old", 978307200000LL)); /* 2001 */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM decisions_p%s WHERE event_id = 'now'", ym);
  assert_int_equal(q_int(f->url, sql), 1);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM decisions_default"
                                 " WHERE event_id = 'old'"),
                   1);
  adb__decision_rec d;
  assert_ok(f->st, f->st->m->decision_get(f->st, "ag", "old", &d));
  assert_int_equal(d.ts_ms, 978307200000LL);
  adb__decision_rec_free(&d);
}

static void a_new_partition_takes_its_rows_out_of_default(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  char ym[16], sql[256];
  int64_t later = month_ms(6, ym) + DAY;
  assert_ok(f->st, write_one_decision(f->st, "later", later));
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM decisions_default"), 1);
  snprintf(sql, sizeof sql,
           "SELECT adb_create_partition('decisions',"
           " to_date('%s', 'YYYYMM'))::int",
           ym);
  assert_int_equal(q_int(f->url, sql), 1);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM decisions_default"), 0);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM decisions_p%s", ym);
  assert_int_equal(q_int(f->url, sql), 1);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM decisions"), 1);
}

/* Old partitions with a row each (decisions, rewards), then a reopen with
 * the given URL options / environment. */
static void make_old_rows(fx *f) {
  f->st = open_store(f->url);
  assert_int_equal(
      util_store_exec(f->url, "SELECT adb_create_partition(t, '2020-01-01')"
                              " FROM unnest(ARRAY['decisions',"
                              " 'reward_signals', 'agent_episodes']) t"),
      0);
  int64_t jan2020 = 1577836800000LL + DAY;
  assert_ok(f->st, write_one_decision(f->st, "old", jan2020));
  adb__reward_rec r = reward("old-r", "u", 0.5, jan2020);
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  assert_int_equal(relation_exists(f->url, "decisions_p202001"), 1);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM reward_ids"), 1);
  /* The per-event gates: a row of 2020 and one of now in each. */
  char sql[512];
  for (int i = 0; i < 3; i++) {
    static const char *ins[] = {
        "INSERT INTO decision_ids VALUES ('ag', '%s', 'b', %lld)",
        "INSERT INTO event_outcomes VALUES ('ag', '%s', 'reward', %lld)",
        "INSERT INTO deferred_events (agent_id, event_id, created_at_ms)"
        " VALUES ('ag', '%s', %lld)"};
    snprintf(sql, sizeof sql, ins[i], "gate-old", (long long)jan2020);
    assert_int_equal(util_store_exec(f->url, sql), 0);
    snprintf(sql, sizeof sql, ins[i], "gate-now", (long long)month_ms(0, NULL));
    assert_int_equal(util_store_exec(f->url, sql), 0);
  }
  adb__store_close(f->st);
  f->st = NULL;
}

/* Rows of the per-event gates with event id e. */
static int gate_rows(fx *f, const char *e) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT (SELECT count(*) FROM decision_ids WHERE event_id = '%s')"
           " + (SELECT count(*) FROM event_outcomes WHERE event_id = '%s')"
           " + (SELECT count(*) FROM deferred_events WHERE event_id = '%s')",
           e, e, e);
  return q_int(f->url, sql);
}

static void assert_old_rows_dropped(fx *f) {
  assert_int_equal(relation_exists(f->url, "decisions_p202001"), 0);
  assert_int_equal(relation_exists(f->url, "reward_signals_p202001"), 0);
  assert_int_equal(relation_exists(f->url, "agent_episodes_p202001"), 0);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM reward_ids"), 0);
  /* The gates of the dropped decisions go with them; newer ones stay. */
  assert_int_equal(gate_rows(f, "gate-old"), 0);
  assert_int_equal(gate_rows(f, "gate-now"), 3);
  char ym[16], name[64];
  month_ms(0, ym);
  snprintf(name, sizeof name, "decisions_p%s", ym);
  assert_int_equal(relation_exists(f->url, name), 1);
  /* The posterior is not history: it stays. */
  assert_int_equal(arm(f->st, "u").n, 1);
}

static void retention_drops_old_partitions_and_reward_ids(void **state) {
  NEED_PG(f);
  make_old_rows(f);
  char *url = with_opts(f->url, "retention_months=3");
  f->st = open_store(url);
  free(url);
  assert_old_rows_dropped(f);
}

static void retention_can_come_from_the_environment(void **state) {
  NEED_PG(f);
  make_old_rows(f);
  setenv("AGENTDB_RETENTION_MONTHS", "12", 1);
  f->st = open_store(f->url);
  unsetenv("AGENTDB_RETENTION_MONTHS");
  assert_old_rows_dropped(f);
}

static void no_retention_keeps_everything(void **state) {
  NEED_PG(f);
  make_old_rows(f);
  f->st = open_store(f->url);
  assert_int_equal(relation_exists(f->url, "decisions_p202001"), 1);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM reward_ids"), 1);
  assert_int_equal(gate_rows(f, "gate-old"), 3);
}

/* ----------------------------------------------------------- exactly once */

/* reward_ids, not the partitioned log, decides: a retry in another month
 * (another partition) is still a duplicate. */
static void reward_id_is_applied_once_across_partitions(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  adb__reward_rec r = reward("r1", "u", 0.75, month_ms(0, NULL) + DAY);
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  assert_int_equal(r.applied, 1);
  adb__reward_rec again = reward("r1", "u", 0.75, month_ms(1, NULL) + DAY);
  assert_ok(f->st, write_rewards(f->st, &again, 1));
  assert_int_equal(again.applied, 0);
  assert_int_equal(again.result, ADB_OK);
  assert_true(again.first_reward == 0.75);
  assert_int_equal(arm(f->st, "u").n, 1);
  assert_int_equal(q_int(f->url, "SELECT count(*) FROM reward_signals"), 1);
}

typedef struct shared_ids {
  adb__store *st;
  unsigned seed;
  int n, rc, applied;
} shared_ids;

/* Writes the same reward ids as the other threads, shuffled. */
static void *shared_main(void *p) {
  shared_ids *x = p;
  adb__reward_rec *r = calloc((size_t)x->n, sizeof *r);
  if (!r) return NULL;
  for (int i = 0; i < x->n; i++) {
    char id[32];
    snprintf(id, sizeof id, "s%04d", i);
    r[i] = reward(id, "u", 0.5, month_ms(0, NULL) + DAY);
  }
  for (int i = x->n - 1; i > 0; i--) {
    int j = (int)(rand_r(&x->seed) % (unsigned)(i + 1));
    adb__reward_rec t = r[i];
    r[i] = r[j];
    r[j] = t;
  }
  for (int i = 0; i < x->n; i += 50) {
    int k = x->n - i < 50 ? x->n - i : 50;
    int rc = write_rewards(x->st, r + i, k);
    if (rc) x->rc = rc;
    for (int j = 0; j < k && !rc; j++)
      x->applied += r[i + j].applied;
  }
  free(r);
  return NULL;
}

static void concurrent_batches_sharing_reward_ids_never_deadlock(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  enum { T = 4 };
  shared_ids x[T];
  pthread_t t[T];
  int n = quick() ? 200 : 1000;
  for (int i = 0; i < T; i++) {
    x[i] = (shared_ids){.st = f->st, .seed = 7u + (unsigned)i, .n = n};
    assert_int_equal(pthread_create(&t[i], NULL, shared_main, &x[i]), 0);
  }
  int applied = 0;
  for (int i = 0; i < T; i++) {
    pthread_join(t[i], NULL);
    if (x[i].rc) fprintf(stderr, "writer: %s\n", f->st->m->errmsg(f->st));
    assert_int_equal(x[i].rc, ADB_OK);
    applied += x[i].applied;
  }
  assert_int_equal(applied, n);
  assert_int_equal(arm(f->st, "u").n, n);
  assert_int_equal(arm(f->st, "*").n, n);
}

/* --------------------------------------------------------------- episodes */

/* Floats that a text round trip could alter: exact bytes must come back. */
static float tricky(unsigned i) {
  static const float special[] = {-0.0f, 1e-45f,           3.4028235e38f,
                                  0.1f,  -1.17549435e-38f, 1.0f / 3.0f};
  if (i % 7 < 6) return special[i % 7];
  return (float)sin((double)i) * 1e3f;
}

static void copy_path_stores_episodes_with_exact_bytes(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  enum { DIM = 128 };
  int n = quick() ? 600 : 2500; /* over 1 MiB: COPY goes in pieces */
  float *emb = malloc((size_t)n * DIM * sizeof *emb);
  adb__episode_rec *e = calloc((size_t)n, sizeof *e);
  assert_true(emb && e);
  for (int i = 0; i < n; i++) {
    for (int d = 0; d < DIM; d++)
      emb[i * DIM + d] = tricky((unsigned)(i + d));
    snprintf(e[i].agent, sizeof e[i].agent, "ag");
    snprintf(e[i].episode_id, sizeof e[i].episode_id, "ep-%05d", i);
    snprintf(e[i].user, sizeof e[i].user, "u%d", i % 10);
    snprintf(e[i].session, sizeof e[i].session, "%s", i % 2 ? "s" : "");
    e[i].embedding = emb + (size_t)i * DIM;
    e[i].dim = DIM;
    snprintf(e[i].action, sizeof e[i].action, "a");
    e[i].reward = 0.1 * i;
    e[i].context_json = i % 3 ? "{\"k\": [1, 2]}" : NULL;
    e[i].ts_ms = month_ms(0, NULL) + i;
  }
  adb__batch b = {.episodes = e, .n_episodes = n};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  assert_ok(f->st, f->st->m->write_batch(f->st, &b)); /* a retry: no-op */

  PGconn *c = PQconnectdb(f->url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexecParams(c,
                             "SELECT embedding, session_id, context, reward"
                             " FROM agent_episodes ORDER BY episode_id",
                             0, NULL, NULL, NULL, NULL, 1);
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  assert_int_equal(PQntuples(r), n);
  for (int i = 0; i < n; i++) {
    assert_int_equal(PQgetlength(r, i, 0), DIM * 4);
    assert_memory_equal(PQgetvalue(r, i, 0), emb + (size_t)i * DIM, DIM * 4);
    assert_string_equal(PQgetvalue(r, i, 1), e[i].session);
    if (e[i].context_json)
      assert_string_equal(PQgetvalue(r, i, 2), e[i].context_json);
    else
      assert_true(PQgetisnull(r, i, 2));
    uint64_t u = 0;
    for (int k = 0; k < 8; k++)
      u = u << 8 | (unsigned char)PQgetvalue(r, i, 3)[k];
    double got;
    memcpy(&got, &u, 8);
    assert_true(got == e[i].reward);
  }
  PQclear(r);
  PQfinish(c);
  free(emb);
  free(e);
}

/* ----------------------------------------------------------- connections */

/* Kills the store's backends in its database; returns how many. */
static int64_t terminate_store_backends(const char *url) {
  return q_int(url, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid,"
                    " 5000)) FROM pg_stat_activity WHERE datname ="
                    " current_database() AND application_name = 'agentdb'"
                    " AND pid <> pg_backend_pid()");
}

static void terminated_connections_are_replaced(void **state) {
  NEED_PG(f);
  char *url = with_opts(f->url, "pool_size=2");
  f->st = open_store(url);
  free(url);
  adb__reward_rec r = reward("k1", "u", 1, month_ms(0, NULL) + DAY);
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  assert_true(terminate_store_backends(f->url) >= 1);
  /* A read finds its connection dead and uses a new one. */
  assert_ok(f->st, f->st->m->ping(f->st));
  assert_int_equal(arm(f->st, "u").n, 1);

  assert_true(terminate_store_backends(f->url) >= 1);
  /* A write may report the loss once; the next one goes through. */
  adb__reward_rec r2 = reward("k2", "u", 1, month_ms(0, NULL) + DAY);
  int rc = write_rewards(f->st, &r2, 1);
  if (rc == ADB_EUNAVAIL) rc = write_rewards(f->st, &r2, 1);
  assert_ok(f->st, rc);
  assert_int_equal(arm(f->st, "u").n, 2);
}

static void unreachable_server_is_unavailable(void **state) {
  NEED_PG(f);
  (void)f;
  adb__store *st = NULL;
  char err[512] = "";
  int rc = adb__store_open("postgresql://postgres@127.0.0.1:1/x", NULL, &st,
                           err, sizeof err);
  assert_int_equal(rc, ADB_EUNAVAIL);
  assert_null(st);
  assert_non_null(strstr(err, "127.0.0.1"));
}

static void bad_url_options_are_rejected(void **state) {
  NEED_PG(f);
  static const char *const bad[] = {"pool_size=0", "pool_size=x",
                                    "retention_months=-1",
                                    "statement_timeout_ms="};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *url = with_opts(f->url, bad[i]);
    adb__store *st = NULL;
    char err[512] = "";
    assert_int_equal(adb__store_open(url, NULL, &st, err, sizeof err),
                     ADB_EURL);
    assert_non_null(strstr(err, "option"));
    free(url);
  }
}

/* The backend of the store's one connection, stopped with SIGSTOP: a write
 * fails within the I/O deadline (statement timeout + 5 s) instead of
 * hanging, and the store works again on a new connection. (A read would
 * quietly succeed: reads are retried once on a fresh connection.) */
static void frozen_backend_times_out_and_is_replaced(void **state) {
  NEED_PG(f);
  char *url = with_opts(f->url, "pool_size=1&statement_timeout_ms=100");
  f->st = open_store(url);
  free(url);
  assert_ok(f->st, f->st->m->ping(f->st));
  int64_t pid = q_int(f->url, "SELECT max(pid) FROM pg_stat_activity WHERE"
                              " datname = current_database() AND"
                              " application_name = 'agentdb'");
  if (pid <= 0 || kill((pid_t)pid, SIGSTOP) != 0) skip(); /* not ours */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  adb__reward_rec r = reward("f1", "u", 1, month_ms(0, NULL) + DAY);
  int rc = write_rewards(f->st, &r, 1);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  kill((pid_t)pid, SIGCONT);
  assert_int_equal(rc, ADB_EUNAVAIL);
  double s =
      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  assert_true(s >= 4.5 && s < 30);
  assert_non_null(strstr(f->st->m->errmsg(f->st), "no answer"));
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  assert_int_equal(arm(f->st, "u").n, 1);
}

/* ------------------------------------------------------------- operators */

static void apply_reward_function_updates_user_and_agent_rows(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  char sk[ADB_STATE_KEY_LEN + 1], sql[512];
  state_key(sk, 1);
  adb__reward_rec r = reward("r1", "u", 0.25, month_ms(0, NULL));
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  snprintf(sql, sizeof sql, "SELECT apply_reward('ag', 'u', '%s', 'a', 0.5)",
           sk);
  assert_int_equal(q_int(f->url, sql), 2); /* the user row's new version */
  /* Rounded as the C side does (llround of micro-units), also at halves. */
  static const double odd[] = {0.0000025, -0.3333335, 0.1234565, -2.5e-6};
  int64_t want = 750000;
  for (int i = 0; i < 4; i++) {
    snprintf(sql, sizeof sql,
             "SELECT apply_reward('ag', 'u2', '%s', 'a', %.17g)", sk, odd[i]);
    assert_int_equal(q_int(f->url, sql), i + 1);
    want += llround(odd[i] * ADB_MICRO);
  }
  adb__arm_stats u = arm(f->st, "u"), all = arm(f->st, "*");
  assert_int_equal(u.n, 2);
  assert_int_equal(u.sum_micro, 750000);
  assert_true(u.sum_sq == 0.25 * 0.25 + 0.5 * 0.5);
  assert_int_equal(u.version, 2);
  assert_int_equal(all.n, 6);
  assert_int_equal(all.sum_micro, want);
  assert_int_equal(all.version, 6);
  /* Not a finite number: refused. */
  assert_int_equal(util_store_exec(f->url,
                                   "SELECT apply_reward('ag', 'u', 'k', 'a',"
                                   " 'NaN')"),
                   -1);
}

/* apply_reward carries between the two parts of a sum as the write path
 * does (0004_sum_headroom): from just below 2^32 and past INT64_MAX. */
static void apply_reward_function_carries_past_int64(void **state) {
  NEED_PG(f);
  f->st = open_store(f->url);
  char sk[ADB_STATE_KEY_LEN + 1], sql[512];
  state_key(sk, 1);
  adb__reward_rec r = reward("r1", "u", 0.25, month_ms(0, NULL));
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  snprintf(sql, sizeof sql,
           "UPDATE rl_policies SET sum_hi = 2147483647,"
           " sum_micro = 4294967295 WHERE state_key = '%s'",
           sk); /* INT64_MAX */
  assert_int_equal(util_store_exec(f->url, sql), 0);
  snprintf(sql, sizeof sql, "SELECT apply_reward('ag', 'u', '%s', 'a', 0.5)",
           sk);
  assert_int_equal(q_int(f->url, sql), 2);
  snprintf(sql, sizeof sql,
           "SELECT apply_reward('ag', 'u', '%s', 'a', -9000000)", sk);
  assert_int_equal(q_int(f->url, sql), 3);
  adb__sum want = (adb__sum)INT64_MAX + 500000 - (adb__sum)9000000 * 1000000;
  assert_true(arm(f->st, "u").sum_micro == want);
  assert_true(arm(f->st, "*").sum_micro == want);
}

/* ----------------------------------------------------------------- main */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(migrations_from_four_threads_apply_each_once),
      T(apply_reward_function_carries_past_int64),
      T(migrate_reports_unreachable_server),
      T(partitions_cover_current_and_next_two_months),
      T(rows_land_in_their_month_or_in_default),
      T(a_new_partition_takes_its_rows_out_of_default),
      T(retention_drops_old_partitions_and_reward_ids),
      T(retention_can_come_from_the_environment),
      T(no_retention_keeps_everything),
      T(reward_id_is_applied_once_across_partitions),
      T(concurrent_batches_sharing_reward_ids_never_deadlock),
      T(copy_path_stores_episodes_with_exact_bytes),
      T(terminated_connections_are_replaced),
      T(unreachable_server_is_unavailable),
      T(bad_url_options_are_rejected),
      T(frozen_backend_times_out_and_is_replaced),
      T(apply_reward_function_updates_user_and_agent_rows),
  };
  return cmocka_run_group_tests_name("store: postgresql only", tests, NULL,
                                     NULL);
}
