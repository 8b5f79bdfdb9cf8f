/*
 * bench_linear.c — the linear Thompson sampling agent, seeded:
 *   1. in-process decide with the linear model: 20 candidates, 16-d user
 *      (in the request) and item embeddings, default crosses; p50 latency
 *      and decisions/s per core (thread CPU time), beside the tabular
 *      decide measured in the same run (the anchor);
 *   2. the pool's argmaxes alone (what a decision costs in linear.c);
 *   3. reward-to-model cost: one update of the sums, one pool draw, and
 *      the rebuild rates (from rewards, from a checkpoint) for 1M rewards.
 * One line per case: "bench <case>: <value> <unit> (target ..., anchor ...)".
 *
 *   bench_linear [--quick]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "linear.h"
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

int main(int argc, char **argv) {
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  setvbuf(stdout, NULL, _IONBF, 0);
  bench_model(quick);
  bench_decide(quick);
  return 0;
}
