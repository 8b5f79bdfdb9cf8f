/*
 * bench_evaluate.c — offline evaluation (src/evaluate.c, evaluate_job.c):
 *   1. rows/s of a replay with two candidates (tabular and linear TS) on
 *      a seeded synthetic log with embeddings (20 candidates a row),
 *      anchored on in-process decisions/s of the same machine, same run;
 *   2. decide p50/p99 in process (SQLite, cached policies, one decision
 *      thread per CPU) without, then with, a background evaluation running
 *      on its lowest-priority thread (the way the server runs them): the
 *      ratio is the bound docs/evaluation.md states.
 * One line per case.   bench_evaluate [--quick]
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "evaluate.h"

#define NI 50
#define NC 20
#define DIM 16
#define NU 200

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------- a synthetic log */

typedef struct synth {
  float user[NU][DIM], item[NI][DIM];
  adb__rng r;
  long t, limit;
  adb__decision_rec d;
  char ctx[32], cands[NC * 12 + 4];
  const float *cemb[NC];
  adb__log_row row;
} synth;

static void synth_init(synth *s, long limit) {
  memset(s, 0, sizeof *s);
  adb__rng_seed(&s->r, 42);
  s->limit = limit;
  for (int u = 0; u < NU; u++)
    for (int j = 0; j < DIM; j++)
      s->user[u][j] = (float)adb__rng_normal(&s->r);
  for (int i = 0; i < NI; i++)
    for (int j = 0; j < DIM; j++)
      s->item[i][j] = (float)adb__rng_normal(&s->r);
}

/* The next row: uniform logging over 20 of the 50 items. */
static const adb__log_row *synth_next(synth *s) {
  int u = (int)(adb__rng_next(&s->r) % NU), c[NC];
  size_t n = (size_t)snprintf(s->cands, sizeof s->cands, "[");
  for (int k = 0; k < NC; k++) {
    c[k] = (int)((adb__rng_next(&s->r) % (NI / NC)) * NC + k) % NI;
    n += (size_t)snprintf(s->cands + n, sizeof s->cands - n, "%s\"i%d\"",
                          k ? "," : "", c[k]);
    s->cemb[k] = s->item[c[k]];
  }
  snprintf(s->cands + n, sizeof s->cands - n, "]");
  int a = (int)(adb__rng_next(&s->r) % NC);
  double dot = 0;
  for (int j = 0; j < DIM; j++)
    dot += s->user[u][j] * s->item[c[a]][j];
  snprintf(s->d.user, sizeof s->d.user, "u%d", u);
  snprintf(s->d.action, sizeof s->d.action, "i%d", c[a]);
  snprintf(s->ctx, sizeof s->ctx, "{\"daypart\":\"d%ld\"}", s->t % 4);
  s->d.context_json = s->ctx;
  s->d.candidates_json = s->cands;
  s->d.propensity = 1.0 / NC;
  s->d.ts_ms = 1000 * s->t++;
  s->row = (adb__log_row){.d = &s->d,
                          .outcome = ADB_LOG_REWARD,
                          .n_rewards = 1,
                          .reward =
                              adb__rng_uniform(&s->r) < 1 / (1 + exp(-dot / 4)),
                          .user_emb = s->user[u],
                          .user_dim = DIM,
                          .cand_emb = s->cemb,
                          .n_cand = NC,
                          .cand_dim = DIM};
  return &s->row;
}

static int synth_scan(void *arg, const char *agent, int64_t from_ms,
                      int64_t to_ms, adb__log_fn fn, void *ctx) {
  (void)agent, (void)from_ms, (void)to_ms;
  synth *s = malloc(sizeof *s);
  if (!s) return ADB_ENOMEM;
  synth_init(s, *(long *)arg);
  int rc = 0;
  for (long i = 0; i < s->limit && !rc; i++)
    rc = fn(ctx, synth_next(s));
  free(s);
  return rc;
}

static void policies(adb__eval_policy *p) {
  char err[256];
  if (adb__eval_policy_parse("{\"name\":\"tabular\",\"algorithm\":\"beta\","
                             "\"context_keys\":[\"daypart\"]}",
                             &p[0], err, sizeof err) ||
      adb__eval_policy_parse("{\"name\":\"linear\",\"algorithm\":\"linear\","
                             "\"context_keys\":[\"daypart\"]}",
                             &p[1], err, sizeof err)) {
    fprintf(stderr, "bench_evaluate: %s\n", err);
    exit(1);
  }
}

/* ------------------------------------------------------------ decisions */

static char uids[1000][16], items[NI][16];
static const char *lists[30][NC];

static adb *open_decide(const char *dir) {
  char url[512];
  snprintf(url, sizeof url, "sqlite://%s/decide.db?synchronous=normal", dir);
  adb_config cfg = {.store_url = url,
                    .durability = ADB_DURABILITY_ASYNC,
                    .seed = 1,
                    .queue_capacity = 4000000};
  adb *db;
  char err[512];
  if (adb_open(&cfg, &db, err, sizeof err)) {
    fprintf(stderr, "bench_evaluate: %s\n", err);
    exit(1);
  }
  adb_agent_config ac;
  adb_agent_config_init(&ac);
  snprintf(ac.id, sizeof ac.id, "bench");
  adb_agent_put(db, &ac);
  adb_action acts[NI];
  for (int i = 0; i < NI; i++) {
    snprintf(items[i], sizeof items[i], "item-%d", i);
    acts[i] = (adb_action){.id = items[i]};
  }
  adb_actions_put(db, "bench", acts, NI);
  for (int u = 0; u < 1000; u++)
    snprintf(uids[u], sizeof uids[u], "u%d", u);
  for (int b = 0; b < 30; b++)
    for (int c = 0; c < NC; c++)
      lists[b][c] = items[b + c];
  return db;
}

typedef struct dec_arg {
  adb *db;
  int seed, n;
  double *lat_us;
} dec_arg;

static void *decider(void *p) {
  dec_arg *a = p;
  adb__rng r;
  adb__rng_seed(&r, (uint64_t)a->seed);
  adb_kv ctx = {"daypart", "evening"};
  for (int i = 0; i < a->n; i++) {
    adb_decide_req req = {.agent_id = "bench",
                          .user_id = uids[adb__rng_next(&r) % 1000],
                          .candidates = lists[adb__rng_next(&r) % 30],
                          .n_candidates = NC,
                          .context = &ctx,
                          .n_context = 1};
    adb_decision d = {0};
    double t0 = now_s();
    while (adb_decide(a->db, &req, &d) == ADB_EFULL)
      adb_flush(a->db);
    a->lat_us[i] = (now_s() - t0) * 1e6;
  }
  return NULL;
}

static int cmp_d(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

/* p50 and p99 of n decisions on each of t threads. */
static void decide_run(adb *db, int t, int n, double *p50, double *p99,
                       double *rate) {
  pthread_t th[64];
  dec_arg a[64];
  double *lat = malloc((size_t)t * n * sizeof *lat);
  double t0 = now_s();
  for (int i = 0; i < t; i++) {
    a[i] = (dec_arg){db, 100 + i, n, lat + (size_t)i * n};
    pthread_create(&th[i], NULL, decider, &a[i]);
  }
  for (int i = 0; i < t; i++)
    pthread_join(th[i], NULL);
  *rate = t * n / (now_s() - t0);
  qsort(lat, (size_t)t * n, sizeof *lat, cmp_d);
  *p50 = lat[(size_t)t * n / 2];
  *p99 = lat[(size_t)t * n * 99 / 100];
  free(lat);
}

int main(int argc, char **argv) {
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  char dir[] = "/tmp/bench_evaluate.XXXXXX";
  if (!mkdtemp(dir)) return 1;
  adb *db = open_decide(dir);
  double p50, p99, rate;
  int t = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (t < 1) t = 1;
  if (t > 64) t = 64;
  int n = quick ? 20000 : 100000;
  decide_run(db, 1, 2000, &p50, &p99, &rate); /* warm the cache */
  decide_run(db, 1, n, &p50, &p99, &rate);
  double decide_rate = rate;

  /* 1. Replay rows/s. */
  adb__eval_policy pol[2];
  policies(pol);
  long rows = quick ? 1000 : 5000;
  adb__eval *ev;
  if (adb__eval_new(pol, 2, 1, &ev)) return 1;
  double t0 = cpu_s();
  synth_scan(&rows, "bench", 0, INT64_MAX, adb__eval_row, ev);
  double rps = rows / (cpu_s() - t0);
  adb__eval_free(ev);
  printf("bench evaluate_rows: %.0f rows/s per core (thread CPU time) replayed through tabular + "
         "linear TS, 20 candidates (anchor: %.0f decisions/s in process, "
         "ratio %.4f)\n",
         rps, decide_rate, rps / decide_rate);

  /* 2. decide p50 without and with an evaluation running. */
  double b50, b99, brate, e50, e99, erate;
  decide_run(db, t, n, &b50, &b99, &brate);
  long forever = 1L << 40;
  adb__eval_jobs *jobs;
  char id[33];
  adb__eval_jobs_new(1, synth_scan, &forever, &jobs);
  adb__eval_job_start(jobs, "bench", pol, 2, 0, INT64_MAX, id);
  usleep(200000);
  decide_run(db, t, n, &e50, &e99, &erate);
  adb__eval_jobs_free(jobs);
  printf("bench decide_with_evaluation: p50 %.1f us, p99 %.1f us, %.0f/s on "
         "%d threads with a background evaluation running (anchor: p50 %.1f "
         "us, p99 %.1f us, %.0f/s without; p50 ratio %.2f)\n",
         e50, e99, erate, t, b50, b99, brate, e50 / b50);
  adb_close(db);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) return 1;
  return 0;
}
