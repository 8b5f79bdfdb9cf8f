/*
 * bench_pg.c — the PostgreSQL store against PostgreSQL itself, on the same
 * server in the same run (AGENTDB_TEST_PG_URL, as scripts/pg-test.sh
 * prints; skipped without it):
 *   1. episode ingest: N rows of 128-d embeddings by a raw COPY ... FROM
 *      STDIN (FORMAT binary) into agent_episodes (the anchor) vs the store's
 *      write_batch in batches of 4096 (COPY into staging + INSERT ... ON
 *      CONFLICT DO NOTHING, one transaction per batch); target >= 0.5x;
 *   2. uncached policy lookup: pgbench -S -M prepared, one client, p50
 *      latency from its per-transaction log (the anchor), vs the store's
 *      policy_get p50 on one thread, for policies of 1 arm (one row, like
 *      pgbench's lookup; the target, <= 1.5x) and of 10 arms (10 rows);
 *   3. reward batches: rewards/s through write_batch, batches of 1000 from
 *      4 threads on 4 pooled connections (what the flush worker does, an
 *      upper bound for durable rewards/s; the 64-writer end-to-end number
 *      comes from the coordinator's benchmark).
 * The seed's claims (2,375 episodes/s, 16.4 ms lookups) are printed beside.
 * Rows are seeded; the COPY path is verified by counting rows.
 *
 *   bench_pg [--quick]
 */
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define DIM 128
#define EP_BATCH 4096

static int quick;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *msg) {
  fprintf(stderr, "bench_pg: %s: %s\n", what, msg);
  exit(1);
}

/* ---------------------------------------------------------------- server */

static PGconn *connect_url(const char *url) {
  PGconn *c = PQconnectdb(url);
  if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
  PQsetNoticeProcessor(c, NULL, NULL);
  return c;
}

static void exec_ok(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    die(sql, PQerrorMessage(c));
  PQclear(r);
}

static long long query_ll(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) die(sql, PQerrorMessage(c));
  long long v = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

/* base URL with the database replaced (malloc'd). */
static char *url_with_db(const char *base, const char *db) {
  const char *auth = strstr(base, "://");
  if (!auth) die("url", "no scheme");
  const char *slash = strchr(auth + 3, '/'), *q = strchr(auth + 3, '?');
  if (slash && q && slash > q) slash = NULL;
  size_t head = slash ? (size_t)(slash - base)
                : q   ? (size_t)(q - base)
                      : strlen(base);
  size_t n = head + strlen(db) + (q ? strlen(q) : 0) + 2;
  char *u = malloc(n);
  if (!u) die("url", "out of memory");
  snprintf(u, n, "%.*s/%s%s", (int)head, base, db, q ? q : "");
  return u;
}

/* ------------------------------------------------------------- episodes */

typedef struct rows {
  int n;
  float *emb;
  adb__episode_rec *e;
} rows;

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static double rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static void rows_make(rows *r, int n) {
  r->n = n;
  r->emb = malloc((size_t)n * DIM * sizeof *r->emb);
  r->e = calloc((size_t)n, sizeof *r->e);
  if (!r->emb || !r->e) die("rows", "out of memory");
  for (size_t i = 0; i < (size_t)n * DIM; i++)
    r->emb[i] = (float)(rnd() * 2 - 1);
  for (int i = 0; i < n; i++) {
    adb__episode_rec *e = &r->e[i];
    snprintf(e->episode_id, sizeof e->episode_id, "ep-%08d", i);
    snprintf(e->user, sizeof e->user, "user-%d", i % 1000);
    snprintf(e->session, sizeof e->session, "s-%d", i % 5000);
    e->embedding = r->emb + (size_t)i * DIM;
    e->dim = DIM;
    snprintf(e->action, sizeof e->action, "item-%d", i % 200);
    e->reward = rnd();
    e->context_json = "{\"device\":\"tv\"}";
    e->ts_ms = 1700000000000LL + i; /* partitions by month: one partition */
  }
}

static void rows_set_agent(rows *r, const char *agent) {
  for (int i = 0; i < r->n; i++)
    snprintf(r->e[i].agent, sizeof r->e[i].agent, "%s", agent);
}

static void put_be(char **p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--)
    *(*p)++ = (char)(v >> (8 * i));
}

static void put_text(char **p, const char *s) {
  size_t n = strlen(s);
  put_be(p, n, 4);
  memcpy(*p, s, n);
  *p += n;
}

/* One COPY BINARY tuple, written the plain way a client would. */
static size_t copy_row(char *buf, const adb__episode_rec *e) {
  char *p = buf;
  put_be(&p, 9, 2);
  put_text(&p, e->agent);
  put_text(&p, e->episode_id);
  put_text(&p, e->user);
  put_text(&p, e->session);
  put_be(&p, DIM * 4, 4);
  memcpy(p, e->embedding, DIM * 4); /* little-endian host */
  p += DIM * 4;
  put_text(&p, e->action);
  uint64_t u;
  memcpy(&u, &e->reward, 8);
  put_be(&p, 8, 4);
  put_be(&p, u, 8);
  put_text(&p, e->context_json);
  put_be(&p, 8, 4);
  put_be(&p, (uint64_t)e->ts_ms, 8);
  return (size_t)(p - buf);
}

/* The anchor: all rows in one COPY BINARY straight into agent_episodes. */
static double raw_copy(PGconn *c, const rows *r) {
  static char buf[1 << 16];
  double t0 = now_s();
  exec_ok(c, "BEGIN");
  PGresult *res = PQexec(c, "COPY agent_episodes (agent_id, episode_id,"
                            " user_id, session_id, embedding, action_id,"
                            " reward, context, created_at_ms) FROM STDIN"
                            " (FORMAT binary)");
  if (PQresultStatus(res) != PGRES_COPY_IN) die("copy", PQerrorMessage(c));
  PQclear(res);
  size_t len = 0;
  memcpy(buf, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19);
  len = 19;
  for (int i = 0; i < r->n; i++) {
    len += copy_row(buf + len, &r->e[i]);
    if (len > sizeof buf - 2048 || i == r->n - 1) {
      if (i == r->n - 1) {
        buf[len++] = (char)0xFF;
        buf[len++] = (char)0xFF;
      }
      if (PQputCopyData(c, buf, (int)len) != 1) die("copy", PQerrorMessage(c));
      len = 0;
    }
  }
  if (PQputCopyEnd(c, NULL) != 1) die("copy end", PQerrorMessage(c));
  res = PQgetResult(c);
  if (PQresultStatus(res) != PGRES_COMMAND_OK) die("copy", PQerrorMessage(c));
  PQclear(res);
  while ((res = PQgetResult(c)))
    PQclear(res);
  exec_ok(c, "COMMIT");
  return r->n / (now_s() - t0);
}

static double store_ingest(adb__store *st, rows *r) {
  double t0 = now_s();
  for (int i = 0; i < r->n; i += EP_BATCH) {
    adb__batch b = {.episodes = r->e + i,
                    .n_episodes = r->n - i < EP_BATCH ? r->n - i : EP_BATCH};
    if (st->m->write_batch(st, &b)) die("write_batch", st->m->errmsg(st));
    free(b.changes);
  }
  return r->n / (now_s() - t0);
}

static void bench_episodes(PGconn *c, adb__store *st) {
  rows r;
  rows_make(&r, quick ? 10000 : 50000);
  double raw = 0, ours = 0;
  char agent[32], sql[128];
  for (int round = 0; round < 2; round++) { /* best of 2, interleaved */
    snprintf(agent, sizeof agent, "raw-%d", round);
    rows_set_agent(&r, agent);
    double x = raw_copy(c, &r);
    raw = x > raw ? x : raw;
    snprintf(agent, sizeof agent, "adb-%d", round);
    rows_set_agent(&r, agent);
    x = store_ingest(st, &r);
    ours = x > ours ? x : ours;
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM agent_episodes WHERE agent_id = '%s'",
             agent);
    if (query_ll(c, sql) != r.n) die("episodes", "row count differs");
  }
  printf("bench episodes_ingest_pg: %.0f episodes/s (%d x %d-d, batches of "
         "%d) vs raw COPY BINARY %.0f rows/s: %.2fx (target >= 0.5x; seed "
         "claimed 2,375/s)\n",
         ours, r.n, DIM, EP_BATCH, raw, ours / raw);
  free(r.emb);
  free(r.e);
}

/* --------------------------------------------------------------- lookups */

static int dcmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double percentile(double *v, int n, double q) {
  qsort(v, (size_t)n, sizeof *v, dcmp);
  return n ? v[(int)(q * (n - 1))] : NAN;
}

static const char *pgbench_path(void) {
  static const char *const p = "/usr/lib/postgresql/15/bin/pgbench";
  return access(p, X_OK) == 0 ? p : "pgbench";
}

/* Runs argv in dir with stdout and stderr into dir/log. */
static int run_cmd(char *const argv[], const char *dir) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (chdir(dir) != 0 || !freopen("log", "a", stdout) ||
        dup2(fileno(stdout), 2) < 0)
      _exit(127);
    execvp(argv[0], argv);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void show_log(const char *dir) {
  char path[128], line[512];
  snprintf(path, sizeof path, "%s/log", dir);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof line, f))
    fprintf(stderr, "  %s", line);
  if (f) fclose(f);
}

/* p50 of `pgbench -S -M prepared`, 1 client, for `seconds`, from its
 * per-transaction log (third field: latency in us); NAN on failure. */
static double pgbench_p50_us(const char *url, const char *dir, int seconds) {
  static int round;
  char secs[16], prefix[32], cmd[160];
  snprintf(secs, sizeof secs, "%d", seconds);
  snprintf(prefix, sizeof prefix, "pgb%d", round++);
  char *run[] = {(char *)pgbench_path(),
                 "-S",
                 "-M",
                 "prepared",
                 "-c",
                 "1",
                 "-j",
                 "1",
                 "-n",
                 "-T",
                 secs,
                 "-l",
                 "--log-prefix",
                 prefix,
                 (char *)url,
                 NULL};
  if (run_cmd(run, dir) != 0) {
    show_log(dir);
    return NAN;
  }
  int cap = 1 << 16, n = 0;
  double *v = malloc((size_t)cap * sizeof *v), p50 = NAN;
  snprintf(cmd, sizeof cmd, "cat %s/%s.*", dir, prefix);
  FILE *f = popen(cmd, "r");
  char line[256];
  while (v && f && fgets(line, sizeof line, f)) {
    long cid, tx, us;
    if (sscanf(line, "%ld %ld %ld", &cid, &tx, &us) != 3) continue;
    if (n == cap) {
      double *w = realloc(v, (size_t)(cap *= 2) * sizeof *v);
      if (!w) break;
      v = w;
    }
    v[n++] = (double)us;
  }
  if (f) pclose(f);
  if (v && n) p50 = percentile(v, n, 0.5);
  free(v);
  return p50;
}

/* `users` policies of `arms` arms each under `agent`. */
static void policy_fill(adb__store *st, const char *agent, int users,
                        int arms) {
  int n = users * arms;
  adb__reward_rec *r = calloc((size_t)n, sizeof *r);
  if (!r) die("fill", "out of memory");
  for (int i = 0; i < n; i++) {
    snprintf(r[i].agent, sizeof r[i].agent, "%s", agent);
    snprintf(r[i].reward_id, sizeof r[i].reward_id, "f%d", i);
    snprintf(r[i].user, sizeof r[i].user, "user-%d", i / arms);
    snprintf(r[i].state_key, sizeof r[i].state_key, "%064d", 0);
    snprintf(r[i].action, sizeof r[i].action, "item-%d", i % arms);
    r[i].reward = 0.5;
    r[i].reward_micro = 500000;
    snprintf(r[i].body_hash, sizeof r[i].body_hash, "%064d", i);
    r[i].ts_ms = 1700000000000LL;
  }
  for (int i = 0; i < n; i += 2000) {
    adb__batch b = {.rewards = r + i, .n_rewards = n - i < 2000 ? n - i : 2000};
    if (st->m->write_batch(st, &b)) die("fill", st->m->errmsg(st));
    free(b.changes);
  }
  free(r);
}

/* p50 of `calls` policy_get of random users, one thread. */
static double store_p50_us(adb__store *st, const char *agent, int users,
                           int arms, int calls) {
  double *lat = malloc((size_t)calls * sizeof *lat);
  if (!lat) die("lookup", "out of memory");
  char sk[ADB_STATE_KEY_LEN + 1], user[32];
  snprintf(sk, sizeof sk, "%064d", 0);
  adb__policy p = {0};
  for (int i = 0; i < calls; i++) {
    snprintf(user, sizeof user, "user-%d", (int)(rnd() * users));
    double t0 = now_s();
    if (st->m->policy_get(st, agent, user, sk, &p))
      die("policy_get", st->m->errmsg(st));
    lat[i] = (now_s() - t0) * 1e6;
    if (p.n != arms) die("policy_get", "wrong number of arms");
  }
  adb__policy_free(&p);
  double p50 = percentile(lat, calls, 0.5);
  free(lat);
  return p50;
}

static double median3(double *v) {
  return percentile(v, 3, 0.5);
}

/* Policies of 1 arm (one row, like pgbench -S) and of 10 arms; each
 * measured in 3 rounds interleaved with pgbench (the machine may be
 * shared), medians compared. */
static void bench_lookup(const char *url, adb__store *st) {
  int users = quick ? 2000 : 20000, calls = quick ? 3000 : 10000;
  policy_fill(st, "look1", users, 1);
  policy_fill(st, "look10", users, 10);
  char dir[] = "/tmp/bench_pg.XXXXXX", cmd[64];
  if (!mkdtemp(dir)) die("mkdtemp", strerror(errno));
  char *init[] = {
      (char *)pgbench_path(), "-i", "-q", "-s", "1", (char *)url, NULL};
  if (run_cmd(init, dir) != 0) {
    show_log(dir);
    die("pgbench -i", "failed");
  }
  double one[3], ten[3], anchor[3];
  for (int r = 0; r < 3; r++) {
    one[r] = store_p50_us(st, "look1", users, 1, calls);
    ten[r] = store_p50_us(st, "look10", users, 10, calls);
    anchor[r] = pgbench_p50_us(url, dir, quick ? 1 : 3);
  }
  double a = median3(anchor), o = median3(one), t = median3(ten);
  printf("bench policy_lookup_pg: p50 %.1f us (1-arm policy, one thread) vs "
         "pgbench -S -M prepared p50 %.1f us: %.2fx (target <= 1.5x; seed "
         "claimed 16.4 ms)\n",
         o, a, o / a);
  printf("bench policy_lookup_pg_10arms: p50 %.1f us (10-arm policy, 10 "
         "rows) vs pgbench -S -M prepared p50 %.1f us: %.2fx\n",
         t, a, t / a);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "bench_pg: cannot remove %s\n", dir);
}

/* --------------------------------------------------------------- rewards */

typedef struct rw_arg {
  adb__store *st;
  int id, batches, size;
} rw_arg;

static void *reward_writer(void *p) {
  rw_arg *a = p;
  adb__reward_rec *r = calloc((size_t)a->size, sizeof *r);
  if (!r) die("rewards", "out of memory");
  for (int b = 0; b < a->batches; b++) {
    for (int i = 0; i < a->size; i++) {
      adb__reward_rec *x = &r[i];
      snprintf(x->agent, sizeof x->agent, "rw");
      snprintf(x->reward_id, sizeof x->reward_id, "w%d-%d-%d", a->id, b, i);
      snprintf(x->user, sizeof x->user, "user-%d", (b * a->size + i) % 5000);
      snprintf(x->state_key, sizeof x->state_key, "%064d", 0);
      snprintf(x->action, sizeof x->action, "item-%d", i % 20);
      x->reward = 1;
      x->reward_micro = 1000000;
      snprintf(x->body_hash, sizeof x->body_hash, "%064d", i);
      x->ts_ms = 1700000000000LL;
    }
    adb__batch bt = {.rewards = r, .n_rewards = a->size};
    if (a->st->m->write_batch(a->st, &bt))
      die("rewards", a->st->m->errmsg(a->st));
    free(bt.changes);
  }
  free(r);
  return NULL;
}

static void bench_rewards(PGconn *c, adb__store *st) {
  enum { T = 4 };
  int batches = quick ? 10 : 40, size = 1000;
  pthread_t t[T];
  rw_arg a[T];
  double t0 = now_s();
  for (int i = 0; i < T; i++) {
    a[i] = (rw_arg){st, i, batches, size};
    pthread_create(&t[i], NULL, reward_writer, &a[i]);
  }
  for (int i = 0; i < T; i++)
    pthread_join(t[i], NULL);
  double rate = T * batches * size / (now_s() - t0);
  long long n = query_ll(c, "SELECT sum(n) FROM rl_policies WHERE agent_id ="
                            " 'rw' AND user_id = '*'");
  if (n != (long long)T * batches * size) die("rewards", "lost an update");
  printf("bench reward_batches_pg: %.0f rewards/s committed (batches of %d, "
         "%d threads, pool of 4; store only, no coordinator; the durable "
         "end-to-end target is >= 20,000/s)\n",
         rate, size, T);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    quick |= strcmp(argv[i], "--quick") == 0;
  const char *base = getenv("AGENTDB_TEST_PG_URL");
  if (!base || !*base) {
    printf("bench pg: skipped (AGENTDB_TEST_PG_URL not set; "
           "scripts/pg-test.sh start DIR prints it)\n");
    return 0;
  }
  char db[64], sql[128];
  snprintf(db, sizeof db, "adb_bench_%ld", (long)getpid());
  PGconn *admin = connect_url(base);
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
  exec_ok(admin, sql);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  exec_ok(admin, sql);
  char *url = url_with_db(base, db);
  adb__store *st = NULL;
  char err[512];
  adb_config cfg = {.pool_size = 4};
  if (adb__store_open(url, &cfg, &st, err, sizeof err)) die("open", err);
  PGconn *c = connect_url(url);

  bench_episodes(c, st);
  bench_lookup(url, st);
  bench_rewards(c, st);

  PQfinish(c);
  adb__store_close(st);
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
  exec_ok(admin, sql);
  PQfinish(admin);
  free(url);
  return 0;
}
