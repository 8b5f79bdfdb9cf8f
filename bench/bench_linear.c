/*
 * bench_linear.c — the linear Thompson sampling agent, seeded:
 *   1. in-process decide with the linear model: 20 candidates, 16-d user
 *      (in the request) and item embeddings, default crosses; p50 latency
 *      and decisions/s per core (thread CPU time), beside the tabular
 *      decide measured in the same run (the anchor);
 *   2. the pool's argmaxes alone (what a decision costs in linear.c);
 *   3. reward-to-model cost: one update of the sums, one pool draw, and
 *      the rebuild rates (from rewards, from a checkpoint) for 1M rewards;
 *   4. a restarted replica's rebuild through the real store (SQLite, and
 *      PostgreSQL when AGENTDB_TEST_PG_URL is set): 1M rewards in
 *      linear_rewards, the time from a fresh handle to a model with all of
 *      them (no checkpoint), then from the checkpoint of those 1M; the
 *      anchor is a raw scan of the same rows in the same run.
 * One line per case: "bench <case>: <value> <unit> (target ..., anchor ...)".
 *
 *   bench_linear [--quick | --rebuild]   (--rebuild: case 4 alone)
 */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "linear.h"
#include "policy.h"
#include "util.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(adb *db, const char *what, int rc) {
  fprintf(stderr, "bench_linear: %s: %s (%s)\n", what, adb_strerror(rc),
          db ? adb_errmsg(db) : "");
  exit(1);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

#define ITEMS 50
#define DIM 16

static void make_agent(adb *db, const char *id, adb_algorithm algo) {
  adb_agent_config c;
  adb_agent_config_init(&c);
  snprintf(c.id, sizeof c.id, "%s", id);
  c.algorithm = algo;
  c.n_context_keys = 1;
  snprintf(c.context_keys[0], sizeof c.context_keys[0], "daypart");
  int rc = adb_agent_put(db, &c);
  if (rc) die(db, "agent", rc);
  static float emb[ITEMS][DIM];
  static char ids[ITEMS][16];
  adb_action acts[ITEMS];
  adb__rng r;
  adb__rng_seed(&r, 3);
  for (int i = 0; i < ITEMS; i++) {
    snprintf(ids[i], sizeof ids[i], "item-%d", i);
    for (int j = 0; j < DIM; j++)
      emb[i][j] = (float)adb__rng_normal(&r);
    acts[i] = (adb_action){.id = ids[i],
                           .embedding = algo == ADB_ALGO_LINEAR ? emb[i] : NULL,
                           .embedding_dim = algo == ADB_ALGO_LINEAR ? DIM : 0};
  }
  if ((rc = adb_actions_put(db, id, acts, ITEMS))) die(db, "actions", rc);
}

typedef struct result {
  double per_core, p50_us;
} result;

/* n decisions of agent `id`; with rewards first (warm model / policies). */
static result run_decide(adb *db, const char *id, int linear, int n) {
  static char uids[1000][16], items[ITEMS][16];
  static const char *lists[30][20];
  for (int u = 0; u < 1000; u++)
    snprintf(uids[u], sizeof uids[u], "u%d", u);
  for (int i = 0; i < ITEMS; i++)
    snprintf(items[i], sizeof items[i], "item-%d", i);
  for (int b = 0; b < 30; b++)
    for (int c = 0; c < 20; c++)
      lists[b][c] = items[b + c];
  static float uemb[1000][DIM];
  adb__rng r;
  adb__rng_seed(&r, 9);
  for (int u = 0; u < 1000; u++)
    for (int j = 0; j < DIM; j++)
      uemb[u][j] = (float)adb__rng_normal(&r);
  adb_kv ctx = {"daypart", "evening"};
  double *lat = malloc((size_t)n * sizeof *lat);
  result res = {0};
  for (int pass = 0; pass < 2; pass++) {
    int count = pass ? n : 2000;
    double c0 = thread_cpu_s();
    for (int i = 0; i < count; i++) {
      int u = (int)(adb__rng_next(&r) % 1000);
      adb_decide_req req = {.agent_id = id,
                            .user_id = uids[u],
                            .candidates = lists[adb__rng_next(&r) % 30],
                            .n_candidates = 20,
                            .context = &ctx,
                            .n_context = 1,
                            .embedding = linear ? uemb[u] : NULL,
                            .embedding_dim = linear ? DIM : 0};
      adb_decision d = {0};
      double t0 = now_s();
      int rc = adb_decide(db, &req, &d);
      if (pass) lat[i] = now_s() - t0;
      if (rc == ADB_EFULL) {
        adb_flush(db);
        i--;
        continue;
      }
      if (rc) die(db, "decide", rc);
      if (!pass) { /* warm-up: rewards, so the model has data */
        char rid[160];
        snprintf(rid, sizeof rid, "r-%s", d.event_id);
        adb_reward_req q = {.agent_id = id,
                            .reward_id = rid,
                            .event_id = d.event_id,
                            .has_reward = 1,
                            .reward = (double)(adb__rng_next(&r) % 100) / 100};
        if ((rc = adb_reward(db, &q, NULL)) && rc != ADB_EFULL)
          die(db, "reward", rc);
      }
    }
    if (!pass) {
      adb_flush(db);
      usleep(300000); /* the linear model folds them in and draws a pool */
      continue;
    }
    double cpu = thread_cpu_s() - c0;
    qsort(lat, (size_t)n, sizeof *lat, cmp_d);
    res.per_core = n / cpu;
    res.p50_us = lat[n / 2] * 1e6;
  }
  free(lat);
  return res;
}

static void bench_decide(int quick) {
  char dir[] = "/tmp/adb-bench-linear-XXXXXX", url[600];
  if (!mkdtemp(dir)) die(NULL, "mkdtemp", ADB_EIO);
  snprintf(url, sizeof url, "sqlite://%s/l.db?synchronous=normal", dir);
  int n = quick ? 50000 : 300000;
  adb_config cfg = {.store_url = url,
                    .durability = ADB_DURABILITY_ASYNC,
                    .seed = 1,
                    .queue_capacity = n + 10000,
                    .cold_start_k = -1,
                    .index_dir = dir};
  adb *db;
  char err[512];
  if (adb_open(&cfg, &db, err, sizeof err)) {
    fprintf(stderr, "bench_linear: %s\n", err);
    exit(1);
  }
  make_agent(db, "tab", ADB_ALGO_BETA);
  make_agent(db, "lin", ADB_ALGO_LINEAR);
  result t = run_decide(db, "tab", 0, n);
  adb_flush(db);
  result l = run_decide(db, "lin", 1, n);
  printf("bench decide_tabular: %.0f decisions/s per core, p50 %.1f us, 20 "
         "candidates (the anchor)\n",
         t.per_core, t.p50_us);
  printf("bench decide_linear: %.0f decisions/s per core, p50 %.1f us, 20 "
         "candidates, 16-d, default crosses (target >= 50000/s; anchor: the "
         "tabular decide above, ratio %.2f, target >= 0.5)\n",
         l.per_core, l.p50_us, l.per_core / t.per_core);
  adb_close(db);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) fprintf(stderr, "bench_linear: cannot remove %s\n", dir);
}

/* The model alone: updates, pool draws, choices, checkpoints. */
static void bench_model(int quick) {
  adb__lin_model m;
  if (adb__lin_init(&m, NULL)) die(NULL, "init", ADB_ENOMEM);
  adb__rng r;
  adb__rng_seed(&r, 5);
  int n = quick ? 20000 : 100000;
  adb__lin_x *xs = malloc(1000 * sizeof *xs);
  char ids[ITEMS][16];
  for (int i = 0; i < ITEMS; i++)
    snprintf(ids[i], sizeof ids[i], "item-%d", i);
  for (int i = 0; i < 1000; i++) {
    float u[DIM], e[DIM];
    for (int j = 0; j < DIM; j++)
      u[j] = (float)adb__rng_normal(&r), e[j] = (float)adb__rng_normal(&r);
    adb__lin_project(u, DIM, xs[i].u);
    adb__lin_project(e, DIM, xs[i].e);
    const char *k = "daypart", *v = i % 2 ? "day" : "night";
    adb__lin_context(&k, &v, 1, xs[i].c);
  }
  double c0 = thread_cpu_s();
  for (int i = 0; i < n; i++)
    adb__lin_update(&m, ids[i % ITEMS], &xs[i % 1000], 0.5, 0);
  double upd = (thread_cpu_s() - c0) / n;
  c0 = thread_cpu_s();
  int pools = quick ? 5 : 20;
  adb__lin_pool *p = NULL;
  for (int i = 0; i < pools; i++) {
    adb__lin_pool_unref(p);
    p = adb__lin_pool_make(&m, 0, &r, -1);
  }
  double draw = (thread_cpu_s() - c0) / pools;
  float e[20][ADB_LIN_P];
  const char *cid[20];
  for (int c = 0; c < 20; c++) {
    memcpy(e[c], xs[c].e, sizeof e[c]);
    cid[c] = ids[c];
  }
  int choices = quick ? 50000 : 200000;
  c0 = thread_cpu_s();
  double prop, sink = 0;
  for (int i = 0; i < choices; i++)
    sink += adb__lin_choose(p, &r, &xs[i % 1000], (const float(*)[ADB_LIN_P])e,
                            cid, NULL, 20, NULL, &prop);
  double choose = (thread_cpu_s() - c0) / choices;
  adb__sbuf b = {0};
  adb__lin_save(&m, &b);
  adb__lin_model m2;
  c0 = thread_cpu_s();
  adb__lin_init(&m2, NULL);
  int rc = adb__lin_load(&m2, b.p, b.len);
  double load = thread_cpu_s() - c0;
  printf("bench linear_choose: %.1f us per decision (%d pool draws x 20 "
         "candidates, exact propensity; %.0f/s per core)%s\n",
         choose * 1e6, p ? p->B : 0, 1 / choose, sink < 0 ? "!" : "");
  printf("bench linear_update: %.1f us per reward folded into the sums "
         "(k = %d); 1M rewards rebuild in %.0f s from scratch\n",
         upd * 1e6, m.k, upd * 1e6);
  printf("bench linear_pool: %.1f ms per pool of %d draws (drawn at most "
         "every 100 ms while rewards arrive)\n",
         draw * 1e3, p ? p->B : 0);
  printf("bench linear_checkpoint: %.1f ms to load a %.1f MB checkpoint "
         "(%s), then only the later rewards are folded in\n",
         load * 1e3, b.len / 1e6, rc ? "FAILED" : "ok");
  adb__lin_pool_unref(p);
  adb__lin_free(&m);
  adb__lin_free(&m2);
  free(b.p);
  free(xs);
}

/* ------------------------------------------------------------- rebuild */

#define BLOBS 1000

/* Feature blobs of 1,000 (user, item, daypart) combinations. */
static void make_blobs(uint8_t (*blobs)[ADB_LIN_BLOB]) {
  adb__rng r;
  adb__rng_seed(&r, 11);
  for (int i = 0; i < BLOBS; i++) {
    float u[DIM], e[DIM];
    for (int j = 0; j < DIM; j++)
      u[j] = (float)adb__rng_normal(&r), e[j] = (float)adb__rng_normal(&r);
    adb__lin_x x;
    adb__lin_project(u, DIM, x.u);
    adb__lin_project(e, DIM, x.e);
    const char *k = "daypart", *v = i % 2 ? "day" : "night";
    adb__lin_context(&k, &v, 1, x.c);
    adb__lin_blob_write(&x, blobs[i]);
  }
}

/* Seconds from a fresh handle to this handle's model holding every
 * reward (the first decision of an agent waits for exactly this); *n gets
 * the rewards in the model. */
static double time_rebuild(const char *url, int64_t *n) {
  adb_config cfg = {.store_url = url, .seed = 1, .cold_start_k = -1};
  adb *db;
  char err[512];
  if (adb_open(&cfg, &db, err, sizeof err)) {
    fprintf(stderr, "bench_linear: %s\n", err);
    exit(1);
  }
  double t0 = now_s(), mean[1];
  int k, rc = adb__linear_sync(db, "lin");
  double t = now_s() - t0;
  if (!rc) rc = adb__linear_posterior(db, "lin", 0, mean, 1, &k, n);
  if (rc) die(db, "rebuild", rc);
  adb_close(db);
  return t;
}

static void checkpoint_now(const char *url) {
  adb_config cfg = {.store_url = url, .seed = 1, .cold_start_k = -1};
  adb *db;
  char err[512];
  if (adb_open(&cfg, &db, err, sizeof err)) die(NULL, err, ADB_ESTORE);
  int rc = adb__linear_checkpoint(db, "lin");
  if (rc) die(db, "checkpoint", rc);
  adb_close(db);
}

static void agent_only(const char *url) {
  adb_config cfg = {.store_url = url, .seed = 1, .cold_start_k = -1};
  adb *db;
  char err[512];
  if (adb_open(&cfg, &db, err, sizeof err)) {
    fprintf(stderr, "bench_linear: %s\n", err);
    exit(1);
  }
  make_agent(db, "lin", ADB_ALGO_LINEAR);
  adb_close(db);
}

static void print_rebuild(const char *store, int64_t n_rows, double scan,
                          double full, int64_t n_full, double ckpt,
                          int64_t n_ckpt) {
  printf("bench linear_rebuild_%s: %.2f s to rebuild from %lld rewards "
         "(%.0f rewards/s; model n = %lld), %.1fx the raw scan of the "
         "same rows, %.2f s (the anchor)\n",
         store, full, (long long)n_rows, n_rows / full, (long long)n_full,
         full / scan, scan);
  printf("bench linear_restart_%s: %.3f s to restart from the checkpoint "
         "of those %lld rewards (model n = %lld), %.4fx the raw scan\n",
         store, ckpt, (long long)n_rows, (long long)n_ckpt, ckpt / scan);
}

static void sq_ok(sqlite3 *s, int rc, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "bench_linear: %s: %s\n", what, sqlite3_errmsg(s));
    exit(1);
  }
}

static void rebuild_sqlite(int64_t n_rows) {
  char dir[] = "/tmp/adb-bench-rebuild-XXXXXX", url[700], path[600];
  if (!mkdtemp(dir)) die(NULL, "mkdtemp", ADB_EIO);
  snprintf(path, sizeof path, "%s/r.db", dir);
  snprintf(url, sizeof url, "sqlite://%s?synchronous=normal", path);
  agent_only(url);
  static uint8_t blobs[BLOBS][ADB_LIN_BLOB];
  make_blobs(blobs);
  sqlite3 *s;
  sqlite3_stmt *st;
  sq_ok(s, sqlite3_open(path, &s), "open");
  sq_ok(s, sqlite3_exec(s, "BEGIN", 0, 0, 0), "begin");
  sq_ok(s,
        sqlite3_prepare_v2(s,
                           "INSERT INTO linear_rewards (agent_id, reward_id,"
                           " action_id, reward, created_at_ms, features)"
                           " VALUES ('lin', ?1, ?2, ?3, ?4, ?5)",
                           -1, &st, NULL),
        "prepare");
  int64_t t_ms = adb__now_ms();
  for (int64_t i = 0; i < n_rows; i++) {
    char rid[32], act[16];
    snprintf(rid, sizeof rid, "r-%lld", (long long)i);
    snprintf(act, sizeof act, "item-%d", (int)(i % ITEMS));
    sqlite3_bind_text(st, 1, rid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, act, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, (double)(i % 100) / 100);
    sqlite3_bind_int64(st, 4, t_ms);
    sqlite3_bind_blob(st, 5, blobs[i % BLOBS], ADB_LIN_BLOB, SQLITE_STATIC);
    sq_ok(s, sqlite3_step(st), "insert");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  sq_ok(s, sqlite3_exec(s, "COMMIT", 0, 0, 0), "commit");
  /* The anchor: every column of every row, as the catch-up reads them. */
  double t0 = now_s(), sink = 0;
  sq_ok(s,
        sqlite3_prepare_v2(s,
                           "SELECT seq, reward_id, action_id, reward,"
                           " created_at_ms, features FROM linear_rewards"
                           " WHERE agent_id = 'lin' ORDER BY seq",
                           -1, &st, NULL),
        "prepare scan");
  while (sqlite3_step(st) == SQLITE_ROW) {
    const uint8_t *b = sqlite3_column_blob(st, 5);
    sink += sqlite3_column_double(st, 3) + (b ? b[2] : 0) +
            (double)sqlite3_column_bytes(st, 1);
  }
  sqlite3_finalize(st);
  double scan = now_s() - t0;
  sqlite3_close(s);
  int64_t n_full, n_ckpt;
  double full = time_rebuild(url, &n_full);
  checkpoint_now(url);
  double ckpt = time_rebuild(url, &n_ckpt);
  print_rebuild("sqlite", n_rows, scan + (sink < 0), full, n_full, ckpt,
                n_ckpt);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) fprintf(stderr, "bench_linear: cannot remove %s\n", dir);
}

static PGconn *pg_connect(const char *url) {
  PGconn *c = PQconnectdb(url);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "bench_linear: %s\n", PQerrorMessage(c));
    exit(1);
  }
  return c;
}

static void pg_ok(PGconn *c, PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    fprintf(stderr, "bench_linear: %s\n", PQerrorMessage(c));
    exit(1);
  }
  PQclear(r);
}

/* A URL of base with database db (base ends in /<database>). */
static void pg_url_for(const char *base, const char *db, char *out, size_t n) {
  const char *slash = strrchr(base, '/'), *q = strchr(base, '?');
  int head = slash ? (int)(slash - base) : (int)strlen(base);
  snprintf(out, n, "%.*s/%s%s", head, base, db, q ? q : "");
}

static void rebuild_pg(int64_t n_rows) {
  const char *base = getenv("AGENTDB_TEST_PG_URL");
  if (!base || !*base) {
    printf("bench linear_rebuild_pg: skipped (AGENTDB_TEST_PG_URL not set; "
           "scripts/pg-test.sh start DIR prints it)\n");
    return;
  }
  char db[64], sql[512], url[600];
  snprintf(db, sizeof db, "adb_bench_lin_%ld", (long)getpid());
  PGconn *admin = pg_connect(base);
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  pg_ok(admin, PQexec(admin, sql));
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  pg_ok(admin, PQexec(admin, sql));
  pg_url_for(base, db, url, sizeof url);
  agent_only(url);
  static uint8_t blobs[BLOBS][ADB_LIN_BLOB];
  make_blobs(blobs);
  PGconn *c = pg_connect(url);
  /* The blobs as one bytea[] parameter (binary text of the array is long;
   * a temporary table of them is simpler). */
  pg_ok(c, PQexec(c, "CREATE TEMP TABLE blobs (i int PRIMARY KEY, f bytea)"));
  for (int i = 0; i < BLOBS; i++) {
    char num[16];
    snprintf(num, sizeof num, "%d", i);
    const char *vals[2] = {num, (const char *)blobs[i]};
    int lens[2] = {0, ADB_LIN_BLOB}, fmts[2] = {0, 1};
    pg_ok(c, PQexecParams(c, "INSERT INTO blobs VALUES ($1::int, $2)", 2, NULL,
                          vals, lens, fmts, 0));
  }
  snprintf(sql, sizeof sql,
           "INSERT INTO linear_rewards (agent_id, reward_id, action_id,"
           " reward, created_at_ms, features) SELECT 'lin', 'r-' || g,"
           " 'item-' || (g %% %d), (g %% 100) / 100.0, %lld, b.f"
           " FROM generate_series(0, %lld) g JOIN blobs b ON b.i = g %% %d",
           ITEMS, (long long)adb__now_ms(), (long long)n_rows - 1, BLOBS);
  pg_ok(c, PQexec(c, sql));
  pg_ok(c, PQexec(c, "ANALYZE linear_rewards"));
  /* The anchor: every column of every row in binary, one row at a time. */
  double t0 = now_s(), sink = 0;
  if (!PQsendQueryParams(c,
                         "SELECT seq, reward_id, action_id, reward,"
                         " created_at_ms, features, xid::text::int8 FROM"
                         " linear_rewards WHERE agent_id = 'lin' ORDER BY seq",
                         0, NULL, NULL, NULL, NULL, 1) ||
      !PQsetSingleRowMode(c)) {
    fprintf(stderr, "bench_linear: %s\n", PQerrorMessage(c));
    exit(1);
  }
  PGresult *r;
  while ((r = PQgetResult(c))) {
    if (PQresultStatus(r) == PGRES_SINGLE_TUPLE)
      sink += (double)PQgetlength(r, 0, 5) + PQgetvalue(r, 0, 1)[0];
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
      fprintf(stderr, "bench_linear: scan: %s\n", PQerrorMessage(c));
    PQclear(r);
  }
  double scan = now_s() - t0;
  PQfinish(c);
  int64_t n_full, n_ckpt;
  double full = time_rebuild(url, &n_full);
  checkpoint_now(url);
  double ckpt = time_rebuild(url, &n_ckpt);
  print_rebuild("pg", n_rows, scan + (sink < 0), full, n_full, ckpt, n_ckpt);
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  pg_ok(admin, PQexec(admin, sql));
  PQfinish(admin);
}

int main(int argc, char **argv) {
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  int rebuild_only = argc > 1 && !strcmp(argv[1], "--rebuild");
  setvbuf(stdout, NULL, _IONBF, 0);
  if (!rebuild_only) {
    bench_model(quick);
    bench_decide(quick);
  }
  int64_t rows = quick ? 100000 : 1000000;
  rebuild_sqlite(rows);
  rebuild_pg(rows);
  return 0;
}
