/*
 * bench_export.c — exporting the decision log (issue 10): N logged
 * decisions (1,000,000; --quick 100,000) of one agent, three in four with
 * a reward, 10 candidates with 8-d catalogue embeddings and a user state
 * each, exported as DSJSON by the store's log_scan and the DSJSON writer
 * (bytes counted, not stored), from SQLite and from PostgreSQL
 * (AGENTDB_TEST_PG_URL; skipped without it). Anchors in the same run:
 * SQLite, a raw SELECT stepping over the same decisions' columns;
 * PostgreSQL, a raw COPY (SELECT ...) TO STDOUT of them. Target >= 100,000
 * rows/s. Memory: the peak RSS after a first export of N/10 rows and after
 * the export of all N (constant memory: the second is no larger).
 *
 *   bench_export [--quick]
 */
#include <libpq-fe.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "logfmt.h"
#include "store.h"

static long n_rows = 1000000;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0;
}

static void die(const char *what, const char *msg) {
  fprintf(stderr, "bench_export: %s: %s\n", what, msg);
  exit(1);
}

/* The data, in SQL both engines run: $N rows from a series s(i). */
static const char *const seed_sql[] = {
    "INSERT INTO agent_metadata (agent_id, algorithm, prior_alpha,"
    " prior_beta, prior_mu, prior_kappa, prior_a, prior_b, weight_watch,"
    " weight_click, weight_rating, fallback_strength, reward_window_s,"
    " created_at_ms, updated_at_ms) VALUES ('bench', 'beta', 1, 1, 0, 1, 1,"
    " 1, 0.7, 0.1, 0.2, 10, 86400, 0, 0)",
    "INSERT INTO decisions (agent_id, event_id, user_id, state_key, context,"
    " candidates, action_id, propensity, model, created_at_ms)"
    " SELECT 'bench', 'e' || i, 'u' || (i %% 10000), 'sk' || (i %% 7),"
    " '{\"segment\":\"' || (i %% 3) || '\"}',"
    " '[\"a0\",\"a1\",\"a2\",\"a3\",\"a4\",\"a5\",\"a6\",\"a7\",\"a8\",\"a9\"]'"
    ","
    " 'a' || (i %% 10), 0.05 + (i %% 9) * 0.1, 'beta-ts/1',"
    " 1700000000000 + i FROM %s",
    "INSERT INTO reward_signals (agent_id, reward_id, event_id, user_id,"
    " state_key, action_id, reward, reward_micro, body_hash, created_at_ms)"
    " SELECT 'bench', 'r' || i, 'e' || i, 'u' || (i %% 10000), 'sk' || (i %% "
    "7),"
    " 'a' || (i %% 10), i %% 2, (i %% 2) * 1000000, 'h',"
    " 1700000000005 + i FROM %s WHERE i %% 4 <> 0",
};

static void sq_exec(sqlite3 *db, const char *sql);

/* Catalogue and user embeddings, 8 values from N(0, 1) (seeded), through
 * the store's own writes. */
static double gauss(uint64_t *s) {
  double u[2];
  for (int k = 0; k < 2; k++) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    u[k] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
  }
  return sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static void seed_vectors(adb__store *st, sqlite3 *sq) {
  uint64_t s = 42;
  float v[8];
  for (int i = 0; i < 10; i++) {
    char id[16];
    snprintf(id, sizeof id, "a%d", i);
    for (int k = 0; k < 8; k++)
      v[k] = (float)gauss(&s);
    adb__action_rec a = {.embedding = v, .dim = 8};
    snprintf(a.id, sizeof a.id, "%s", id);
    if (st->m->actions_put(st, "bench", &a, 1)) die("actions", "put");
  }
  sqlite3_stmt *ins = NULL;
  if (sq && sqlite3_prepare_v2(sq,
                               "INSERT INTO user_states (user_id, embedding,"
                               " updated_at_ms) VALUES (?1, ?2, 1)",
                               -1, &ins, NULL) != SQLITE_OK)
    die("sqlite", sqlite3_errmsg(sq));
  if (sq) sq_exec(sq, "BEGIN");
  for (int i = 0; i < 10000; i++) {
    adb__user_state_rec u = {.embedding = v, .dim = 8, .updated_at_ms = 1};
    snprintf(u.user, sizeof u.user, "u%d", i);
    for (int k = 0; k < 8; k++)
      v[k] = (float)gauss(&s);
    if (ins) { /* one transaction (little-endian hosts) */
      sqlite3_bind_text(ins, 1, u.user, -1, SQLITE_STATIC);
      sqlite3_bind_blob(ins, 2, v, sizeof v, SQLITE_STATIC);
      if (sqlite3_step(ins) != SQLITE_DONE) die("sqlite", sqlite3_errmsg(sq));
      sqlite3_reset(ins);
    } else if (st->m->user_state_put(st, &u)) {
      die("users", adb__store_errmsg(st));
    }
  }
  if (sq) {
    sqlite3_finalize(ins);
    sq_exec(sq, "COMMIT");
  }
}

/* ------------------------------------------------------------ export */

typedef struct counter {
  size_t bytes;
} counter;

static int count_sink(void *ctx, const char *p, size_t n) {
  (void)p;
  ((counter *)ctx)->bytes += n;
  return 0;
}

static int64_t export_rows(adb__store *st, int64_t to_ms, size_t *bytes) {
  counter c = {0};
  adb__logw *w = adb__logw_new(ADB__LOGFMT_DSJSON, count_sink, &c);
  if (!w) die("export", "out of memory");
  int rc = st->m->log_scan(st, "bench", INT64_MIN, to_ms, adb__logw_row, w);
  if (!rc) rc = adb__logw_finish(w);
  if (rc) die("export", adb__store_errmsg(st));
  int64_t n = adb__logw_rows(w);
  adb__logw_free(w);
  *bytes = c.bytes;
  return n;
}

static int noop(void *ctx, const adb__log_row *row) {
  (void)row;
  ++*(int64_t *)ctx;
  return 0;
}

/* log_scan alone (rows joined and assembled, not formatted): rows/s. */
static double scan_only(adb__store *st) {
  int64_t n = 0;
  double t0 = now_s();
  if (st->m->log_scan(st, "bench", INT64_MIN, INT64_MAX, noop, &n) ||
      n != n_rows)
    die("scan", adb__store_errmsg(st));
  return (double)n / (now_s() - t0);
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *store, adb__store *st, double anchor_rps,
                   const char *anchor) {
  size_t bytes;
  double t0 = now_s();
  int64_t small = export_rows(st, 1700000000000 + n_rows / 10, &bytes);
  double t1 = now_s();
  double rss_small = rss_mb();
  double c1 = cpu_s();
  int64_t all = export_rows(st, INT64_MAX, &bytes);
  double t2 = now_s(), c2 = cpu_s();
  double rss_all = rss_mb();
  if (small != n_rows / 10 || all != n_rows) die("export", "row count");
  double rps = (double)all / (t2 - t1);
  printf("export %-10s %8ld rows  %9.0f rows/s  (%.0f MB DSJSON)  anchor %s "
         "%9.0f rows/s  ratio %.2f  target >= 100000 rows/s: %s\n",
         store, (long)all, rps, (double)bytes / 1e6, anchor, anchor_rps,
         rps / anchor_rps, rps >= 100000 ? "met" : "NOT met");
  double scan = scan_only(st);
  printf("export %-10s log_scan alone %.0f rows/s; export CPU time %.2f s "
         "of %.2f s wall (%.0f rows per CPU second)\n",
         store, scan, c2 - c1, t2 - t1, (double)all / (c2 - c1));
  printf("export %-10s peak RSS %.1f MB after %ld rows, %.1f MB after %ld "
         "rows (%.2f s for the first)\n",
         store, rss_small, (long)small, rss_all, (long)all, t1 - t0);
}

/* ------------------------------------------------------------ SQLite */

static void sq_exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) die("sqlite", err);
}

static void sq_seed(const char *path) {
  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK) die("sqlite", "open");
  char series[256], sql[2048];
  sq_exec(db, "BEGIN");
  for (size_t k = 0; k < sizeof seed_sql / sizeof *seed_sql; k++) {
    long n = n_rows;
    snprintf(series, sizeof series,
             "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s"
             " WHERE i < %ld) SELECT i FROM s) s",
             n - 1);
    snprintf(sql, sizeof sql, seed_sql[k], series);
    sq_exec(db, sql);
  }
  sq_exec(db, "COMMIT");
  sqlite3_close(db);
}

/* The anchor: a raw SELECT stepping over the decisions' own columns. */
static double sq_anchor(const char *path) {
  sqlite3 *db;
  sqlite3_stmt *st;
  if (sqlite3_open(path, &db) != SQLITE_OK) die("sqlite", "open");
  double t0 = now_s();
  if (sqlite3_prepare_v2(db,
                         "SELECT id, event_id, user_id, state_key, context,"
                         " candidates, action_id, propensity, model,"
                         " created_at_ms FROM decisions WHERE agent_id ="
                         " 'bench' ORDER BY created_at_ms, id",
                         -1, &st, NULL) != SQLITE_OK)
    die("sqlite", sqlite3_errmsg(db));
  long n = 0;
  size_t sum = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    for (int c = 0; c < 10; c++)
      sum += (size_t)sqlite3_column_bytes(st, c) +
             (sqlite3_column_text(st, c) ? 1 : 0);
    n++;
  }
  double rps = (double)n / (now_s() - t0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (n != n_rows || !sum) die("sqlite anchor", "row count");
  return rps;
}

static void bench_sqlite(void) {
  char dir[] = "/tmp/bench_export_XXXXXX", path[128], url[160];
  if (!mkdtemp(dir)) die("mkdtemp", "failed");
  snprintf(path, sizeof path, "%s/x.db", dir);
  snprintf(url, sizeof url, "sqlite://%s", path);
  adb_config cfg = {.store_url = url};
  adb__store *st;
  char err[512];
  if (adb__store_open(url, &cfg, &st, err, sizeof err)) die("open", err);
  sq_seed(path);
  sqlite3 *sq;
  if (sqlite3_open(path, &sq) != SQLITE_OK) die("sqlite", "open");
  sqlite3_busy_timeout(sq, 10000);
  seed_vectors(st, sq);
  sqlite3_close(sq);
  double anchor = sq_anchor(path);
  report("sqlite", st, anchor, "raw SELECT");
  adb__store_close(st);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) fprintf(stderr, "bench_export: could not remove %s\n", dir);
}

/* -------------------------------------------------------- PostgreSQL */

static void pg_exec(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType s = PQresultStatus(r);
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
    die("postgresql", PQerrorMessage(c));
  PQclear(r);
}

static double pg_anchor(PGconn *c) {
  double t0 = now_s();
  PGresult *r = PQexec(c, "COPY (SELECT id, event_id, user_id, state_key,"
                          " context, candidates, action_id, propensity, model,"
                          " created_at_ms FROM decisions WHERE agent_id ="
                          " 'bench' ORDER BY created_at_ms, id) TO STDOUT");
  if (PQresultStatus(r) != PGRES_COPY_OUT) die("copy", PQerrorMessage(c));
  PQclear(r);
  long n = 0;
  char *buf;
  while (PQgetCopyData(c, &buf, 0) > 0) {
    n++;
    PQfreemem(buf);
  }
  PQclear(PQgetResult(c));
  if (n != n_rows) die("copy", "row count");
  return (double)n / (now_s() - t0);
}

static void bench_pg(const char *base) {
  PGconn *admin = PQconnectdb(base);
  if (PQstatus(admin) != CONNECTION_OK) die("connect", PQerrorMessage(admin));
  char db[64], sql[2048], series[128], url[1024];
  snprintf(db, sizeof db, "bench_export_%ld", (long)getpid());
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  pg_exec(admin, sql);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  pg_exec(admin, sql);
  const char *slash = strrchr(base, '/');
  snprintf(url, sizeof url, "%.*s/%s", (int)(slash - base), base, db);
  adb_config cfg = {.store_url = url};
  adb__store *st;
  char err[512];
  if (adb__store_open(url, &cfg, &st, err, sizeof err)) die("open", err);
  PGconn *c = PQconnectdb(url);
  if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
  PQsetNoticeProcessor(c, NULL, NULL);
  for (size_t k = 0; k < sizeof seed_sql / sizeof *seed_sql; k++) {
    long n = n_rows;
    snprintf(series, sizeof series, "generate_series(0, %ld) s(i)", n - 1);
    snprintf(sql, sizeof sql, seed_sql[k], series);
    pg_exec(c, sql);
  }
  seed_vectors(st, NULL);
  pg_exec(c, "ANALYZE");
  double anchor = pg_anchor(c);
  report("postgresql", st, anchor, "raw COPY TO");
  PQfinish(c);
  adb__store_close(st);
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  pg_exec(admin, sql);
  PQfinish(admin);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--quick")) n_rows = 100000;
  setvbuf(stdout, NULL, _IOLBF, 0);
  bench_sqlite();
  const char *pg = getenv("AGENTDB_TEST_PG_URL");
  if (pg && *pg)
    bench_pg(pg);
  else
    printf("export postgresql skipped: AGENTDB_TEST_PG_URL not set\n");
  return 0;
}
