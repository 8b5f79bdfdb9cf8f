/*
 * test_linear.c — the linear Thompson sampling model and linear agents.
 *
 * Math (linear.c, no store):
 *  - the posterior mean after incremental updates equals a batch ridge
 *    solve over [z, onehot(action)] (Gaussian elimination written here),
 *    to 1e-9; with decay, the batch solve weights each reward by
 *    2^((t - now)/h) (the closed form), in a shuffled order and across a
 *    rescaling of the reference time;
 *  - the pool's draws have the posterior's mean and covariance (within 4
 *    standard errors);
 *  - the logged propensity is the frequency with which the policy picks
 *    the action (Monte Carlo, +-0.02);
 *  - checkpoints round-trip exactly; malformed features are refused.
 * Agents (every store kind: SQLite, and PostgreSQL when
 * AGENTDB_TEST_PG_URL is set):
 *  - a linear agent learns through adb_decide/adb_reward, and the
 *    propensities it logs match the frequencies of its choices;
 *  - two handles over one store converge after rewards on one (the lag is
 *    printed; the bound asserted is 5 s, the requirement is 1 s);
 *  - SIGKILL of a process sending linear rewards loses no acknowledged
 *    reward, applies none twice, and the model rebuilt from a checkpoint
 *    plus the later rewards equals the model of the surviving rewards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "linear.h"
#include "policy.h"
#include "store.h"
#include "util_store.h"

/* ------------------------------------------------------------ helpers */

static void rand_x(adb__rng *r, adb__lin_x *x, int arm) {
  float u[24], e[ADB_LIN_P];
  for (int i = 0; i < 24; i++)
    u[i] = (float)adb__rng_normal(r);
  for (int i = 0; i < ADB_LIN_P; i++)
    e[i] = (float)(sin(arm * 1.7 + i) + 0.3 * adb__rng_normal(r));
  adb__lin_project(u, 24, x->u); /* exercises the projection */
  adb__lin_project(e, ADB_LIN_P, x->e);
  char v[8];
  snprintf(v, sizeof v, "d%d", (int)(adb__rng_next(r) % 4));
  const char *k = "daypart", *vp = v;
  adb__lin_context(&k, &vp, 1, x->c);
}

/* Solves M w = y (n x n, row-major, destroyed) by Gaussian elimination
 * with partial pivoting. */
static void gauss_solve(double *M, double *y, int n) {
  for (int c = 0; c < n; c++) {
    int p = c;
    for (int r = c + 1; r < n; r++)
      if (fabs(M[(size_t)r * n + c]) > fabs(M[(size_t)p * n + c])) p = r;
    if (p != c) {
      for (int j = 0; j < n; j++) {
        double t = M[(size_t)c * n + j];
        M[(size_t)c * n + j] = M[(size_t)p * n + j];
        M[(size_t)p * n + j] = t;
      }
      double t = y[c];
      y[c] = y[p];
      y[p] = t;
    }
    for (int r = c + 1; r < n; r++) {
      double f = M[(size_t)r * n + c] / M[(size_t)c * n + c];
      if (f == 0) continue;
      for (int j = c; j < n; j++)
        M[(size_t)r * n + j] -= f * M[(size_t)c * n + j];
      y[r] -= f * y[c];
    }
  }
  for (int r = n - 1; r >= 0; r--) {
    double s = y[r];
    for (int j = r + 1; j < n; j++)
      s -= M[(size_t)r * n + j] * y[j];
    y[r] = s / M[(size_t)r * n + r];
  }
}

#define N_ARMS 6
#define N_OBS 400

typedef struct obs {
  adb__lin_x x;
  int arm;
  double r, t;
} obs;

static void make_obs(obs *o, int n, uint64_t seed, double t_span) {
  adb__rng r;
  adb__rng_seed(&r, seed);
  for (int i = 0; i < n; i++) {
    o[i].arm = (int)(adb__rng_next(&r) % N_ARMS);
    rand_x(&r, &o[i].x, o[i].arm);
    o[i].r = 0.3 * o[i].arm / N_ARMS + 0.1 * o[i].x.u[0] * o[i].x.e[1] +
             0.2 * adb__rng_normal(&r);
    o[i].t = t_span * adb__rng_uniform(&r);
  }
}

/* Checks the model's posterior mean against the weighted batch solve. */
static void check_against_batch(const adb__lin_model *m, const obs *o, int n,
                                double now, double h) {
  int k = m->k, d = k + N_ARMS;
  double *M = calloc((size_t)d * d, sizeof *M), *y = calloc(d, sizeof *y);
  double *z = malloc((size_t)d * sizeof *z);
  for (int i = 0; i < d; i++)
    M[(size_t)i * d + i] = m->cfg.lambda;
  for (int i = 0; i < n; i++) {
    double w = h > 0 ? exp2((o[i].t - now) / h) : 1;
    memset(z, 0, (size_t)d * sizeof *z);
    adb__lin_features(&m->cfg, &o[i].x, z);
    z[k + o[i].arm] = 1;
    for (int a = 0; a < d; a++) {
      if (z[a] == 0) continue;
      for (int b = 0; b < d; b++)
        M[(size_t)a * d + b] += w * z[a] * z[b];
      y[a] += w * z[a] * o[i].r;
    }
  }
  gauss_solve(M, y, d);
  double *mean = malloc((size_t)k * sizeof *mean), worst = 0;
  assert_int_equal(adb__lin_posterior(m, now, mean, NULL, NULL, NULL), ADB_OK);
  for (int i = 0; i < k; i++)
    worst = fmax(worst, fabs(mean[i] - y[i]));
  for (int a = 0; a < N_ARMS; a++) {
    char id[8];
    double am;
    snprintf(id, sizeof id, "a%d", a);
    assert_int_equal(adb__lin_posterior(m, now, NULL, id, &am, NULL), ADB_OK);
    worst = fmax(worst, fabs(am - y[k + a]));
  }
  printf("    max |incremental - batch| = %.3g\n", worst);
  assert_true(worst < 1e-9);
  free(M);
  free(y);
  free(z);
  free(mean);
}

static void feed(adb__lin_model *m, const obs *o, int n, const int *order) {
  for (int i = 0; i < n; i++) {
    const obs *p = &o[order ? order[i] : i];
    char id[8];
    snprintf(id, sizeof id, "a%d", p->arm);
    assert_int_equal(adb__lin_update(m, id, &p->x, p->r, p->t), ADB_OK);
  }
}

/* ---------------------------------------------------------- math tests */

static void update_equals_batch_ridge_solve(void **state) {
  (void)state;
  obs *o = malloc(N_OBS * sizeof *o);
  make_obs(o, N_OBS, 7, 0);
  adb__lin_model m;
  assert_int_equal(adb__lin_init(&m, NULL), ADB_OK);
  assert_int_equal(m.k, 1 + 16 + 256 + 128);
  feed(&m, o, N_OBS, NULL);
  check_against_batch(&m, o, N_OBS, 0, 0);
  adb__lin_free(&m);
  /* And with only some crosses, another lambda. */
  adb__lin_cfg c = {.crosses = ADB_LIN_A | ADB_LIN_CA | ADB_LIN_BIAS,
                    .lambda = 3.5};
  assert_int_equal(adb__lin_init(&m, &c), ADB_OK);
  feed(&m, o, N_OBS, NULL);
  check_against_batch(&m, o, N_OBS, 0, 0);
  adb__lin_free(&m);
  free(o);
}

static void decay_matches_closed_form_in_any_order(void **state) {
  (void)state;
  obs *o = malloc(N_OBS * sizeof *o);
  /* 100 half-lives of 10 s: the reference time must move (2^64). */
  make_obs(o, N_OBS, 11, 1000);
  int order[N_OBS];
  for (int i = 0; i < N_OBS; i++)
    order[i] = i;
  /* Sorted by time (forces rescaling), then shuffled. */
  for (int i = 1; i < N_OBS; i++)
    for (int j = i; j > 0 && o[order[j]].t < o[order[j - 1]].t; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  adb__lin_cfg c = {.half_life_s = 10,
                    .crosses = ADB_LIN_A | ADB_LIN_UA | ADB_LIN_BIAS};
  adb__lin_model m;
  assert_int_equal(adb__lin_init(&m, &c), ADB_OK);
  feed(&m, o, N_OBS, order);
  assert_true(m.t_ref_s > 640); /* rescaled at least once */
  check_against_batch(&m, o, N_OBS, 1000, 10);
  adb__lin_free(&m);
  adb__rng r;
  adb__rng_seed(&r, 5);
  for (int i = N_OBS - 1; i > 0; i--) {
    int j = (int)(adb__rng_next(&r) % (uint64_t)(i + 1)), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  assert_int_equal(adb__lin_init(&m, &c), ADB_OK);
  feed(&m, o, N_OBS, order);
  check_against_batch(&m, o, N_OBS, 1000, 10);
  adb__lin_free(&m);
  free(o);
}

/* The catch-up's batched fold (rewards of one action and embedding
 * grouped) is the same model: against the closed-form ridge solve, for
 * several crosses (with the per-action bias the reference assumes), with
 * and without decay (rescaling mid-batch). */
static void batched_fold_equals_batch_ridge_solve(void **state) {
  (void)state;
  obs *o = malloc(N_OBS * sizeof *o);
  make_obs(o, N_OBS, 13, 1000);
  for (int i = 0; i < N_OBS; i++) /* one embedding per arm: groups */
    for (int j = 0; j < i; j++)
      if (o[j].arm == o[i].arm) {
        memcpy(o[i].x.e, o[j].x.e, sizeof o[i].x.e);
        break;
      }
  int crosses[] = {ADB_LIN_ALL, ADB_LIN_A | ADB_LIN_UA | ADB_LIN_BIAS,
                   ADB_LIN_CA | ADB_LIN_BIAS, ADB_LIN_UA | ADB_LIN_BIAS};
  double hs[] = {0, 10};
  for (int c = 0; c < 4; c++)
    for (int hi = 0; hi < 2; hi++) {
      adb__lin_cfg cfg = {.crosses = crosses[c], .half_life_s = hs[hi]};
      adb__lin_model m;
      assert_int_equal(adb__lin_init(&m, &cfg), ADB_OK);
      adb__lin_batch *b = adb__lin_batch_new(&m);
      assert_non_null(b);
      for (int i = 0; i < N_OBS; i++) {
        char id[8];
        snprintf(id, sizeof id, "a%d", o[i].arm);
        assert_int_equal(adb__lin_batch_add(b, id, &o[i].x, o[i].r, o[i].t),
                         ADB_OK);
        if (i % 97 == 96) assert_int_equal(adb__lin_batch_flush(b), ADB_OK);
      }
      assert_int_equal(adb__lin_batch_flush(b), ADB_OK);
      adb__lin_batch_free(b);
      assert_int_equal(m.n, N_OBS);
      if (hs[hi] > 0) assert_true(m.t_ref_s > 0);
      check_against_batch(&m, o, N_OBS, 1000, hs[hi]);
      adb__lin_free(&m);
    }
  free(o);
}

static void sampler_has_posterior_mean_and_covariance(void **state) {
  (void)state;
  obs *o = malloc(60 * sizeof *o);
  make_obs(o, 60, 3, 0);
  adb__lin_cfg c = {
      .crosses = ADB_LIN_A | ADB_LIN_BIAS, .pool = 20000, .v = 0.7};
  adb__lin_model m;
  assert_int_equal(adb__lin_init(&m, &c), ADB_OK);
  feed(&m, o, 60, NULL);
  int k = m.k; /* 17: intercept + e */
  double mean[17], cov[17 * 17];
  assert_int_equal(adb__lin_posterior(&m, 0, mean, NULL, NULL, cov), ADB_OK);
  adb__rng r;
  adb__rng_seed(&r, 99);
  adb__lin_pool *p = adb__lin_pool_make(&m, 0, &r, -1);
  assert_non_null(p);
  int B = p->B;
  /* Draw j's e-weights are G[j] row 0 = beta[1..16]. */
  double sm[16] = {0}, sc[16][16] = {{0}};
  for (int j = 0; j < B; j++) {
    const double *g = p->G + (size_t)j * ADB_LIN_G_ROWS * ADB_LIN_P;
    for (int a = 0; a < 16; a++) {
      sm[a] += g[a];
      for (int b = 0; b < 16; b++)
        sc[a][b] += (g[a] - mean[1 + a]) * (g[b] - mean[1 + b]);
    }
  }
  double worst_m = 0, worst_c = 0;
  for (int a = 0; a < 16; a++) {
    double va = cov[(size_t)(1 + a) * k + 1 + a];
    double z = fabs(sm[a] / B - mean[1 + a]) / sqrt(va / B);
    worst_m = fmax(worst_m, z);
    assert_true(z < 4.5);
    for (int b = 0; b < 16; b++) {
      double vb = cov[(size_t)(1 + b) * k + 1 + b],
             cab = cov[(size_t)(1 + a) * k + 1 + b];
      double se = sqrt((va * vb + cab * cab) / B);
      double zc = fabs(sc[a][b] / B - cab) / se;
      worst_c = fmax(worst_c, zc);
      assert_true(zc < 5);
    }
  }
  printf("    worst mean z %.2f, worst covariance z %.2f (of %d draws)\n",
         worst_m, worst_c, B);
  adb__lin_pool_unref(p);
  adb__lin_free(&m);
  free(o);
}

static void propensity_matches_monte_carlo(void **state) {
  (void)state;
  obs *o = malloc(N_OBS * sizeof *o);
  make_obs(o, N_OBS, 21, 0);
  adb__lin_model m;
  assert_int_equal(adb__lin_init(&m, NULL), ADB_OK);
  feed(&m, o, 50, NULL); /* little data: a spread-out policy */
  adb__rng r;
  adb__rng_seed(&r, 4);
  adb__lin_pool *p = adb__lin_pool_make(&m, 0, &r, -1);
  assert_non_null(p);
  enum { N = 8, DRAWS = 100000 };
  const char *ids[N] = {"a0", "a1", "a2", "a3", "a4", "a5", "new1", "new2"};
  float e[N][ADB_LIN_P];
  adb__lin_x x = o[100].x;
  for (int i = 0; i < N; i++)
    memcpy(e[i], o[i].x.e, sizeof e[i]);
  uint8_t elig[N] = {1, 1, 1, 0, 1, 1, 1, 1};
  double prop[N] = {0}, count[N] = {0};
  for (int d = 0; d < DRAWS; d++) {
    double pr;
    int c = adb__lin_choose(p, &r, &x, (const float(*)[ADB_LIN_P])e, ids, elig,
                            N, NULL, &pr);
    assert_true(c >= 0 && elig[c]);
    count[c]++;
    prop[c] = pr; /* constant per action for one pool */
  }
  double worst = 0, total = 0;
  for (int i = 0; i < N; i++) {
    worst = fmax(worst, fabs(count[i] / DRAWS - prop[i]));
    total += prop[i];
  }
  printf("    max |logged - Monte Carlo| = %.4f over %d actions\n", worst, N);
  assert_true(worst < 0.02);
  assert_true(fabs(total - 1) < 1e-12 || total < 1); /* unseen ones are 0 */
  adb__lin_pool_unref(p);
  adb__lin_free(&m);
  free(o);
}

static void checkpoint_round_trips_and_bad_features_are_refused(void **st) {
  (void)st;
  obs *o = malloc(100 * sizeof *o);
  make_obs(o, 100, 8, 50);
  adb__lin_cfg c = {.half_life_s = 30};
  adb__lin_model m, m2;
  assert_int_equal(adb__lin_init(&m, &c), ADB_OK);
  feed(&m, o, 100, NULL);
  adb__sbuf b = {0};
  assert_int_equal(adb__lin_save(&m, &b), ADB_OK);
  assert_int_equal(adb__lin_init(&m2, &c), ADB_OK);
  assert_int_equal(adb__lin_load(&m2, b.p, b.len), ADB_OK);
  double m1[401], mm2[401];
  assert_int_equal(adb__lin_posterior(&m, 60, m1, NULL, NULL, NULL), 0);
  assert_int_equal(adb__lin_posterior(&m2, 60, mm2, NULL, NULL, NULL), 0);
  assert_memory_equal(m1, mm2, sizeof m1);
  adb__lin_free(&m2);
  assert_int_equal(adb__lin_init(&m2, &c), ADB_OK);
  assert_int_equal(adb__lin_load(&m2, b.p, b.len - 1), ADB_ECORRUPT);
  adb__lin_free(&m2);
  free(b.p);
  uint8_t blob[ADB_LIN_BLOB];
  adb__lin_x x;
  adb__lin_blob_write(&o[0].x, blob);
  assert_int_equal(adb__lin_blob_read(blob, sizeof blob, &x), ADB_OK);
  assert_memory_equal(&x, &o[0].x, sizeof x);
  blob[2 + 3] = 0x7f; /* float 0 turned into a NaN */
  blob[2 + 2] = 0xc0;
  assert_int_equal(adb__lin_blob_read(blob, sizeof blob, &x), ADB_ECORRUPT);
  adb__lin_x bad = o[0].x;
  bad.u[3] = NAN;
  assert_int_equal(adb__lin_update(&m, "a1", &bad, 1, 0), ADB_EINVAL);
  assert_int_equal(adb__lin_update(&m, "a1", &o[0].x, INFINITY, 0), ADB_EINVAL);
  adb__lin_free(&m);
  free(o);
}

/* -------------------------------------------------------- agent tests */

#define ITEMS 12
static const char *item_ids[ITEMS] = {"i0", "i1", "i2", "i3", "i4",  "i5",
                                      "i6", "i7", "i8", "i9", "i10", "i11"};

static float item_vec(int i, int j) {
  return (float)sin(1.3 * i + 0.7 * j);
}

static adb *open_db(const char *url, adb_durability dur) {
  adb_config cfg = {.store_url = url,
                    .durability = dur,
                    .write_timeout_ms = 20000,
                    .cold_start_k = -1};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) fprintf(stderr, "adb_open: %s\n", err);
  assert_int_equal(rc, ADB_OK);
  return db;
}

static void make_agent(adb *db) {
  adb_agent_config c;
  adb_agent_config_init(&c);
  snprintf(c.id, sizeof c.id, "lin");
  c.algorithm = ADB_ALGO_LINEAR;
  c.n_context_keys = 1;
  snprintf(c.context_keys[0], sizeof c.context_keys[0], "daypart");
  assert_int_equal(adb_agent_put(db, &c), ADB_OK);
  adb_agent_config back;
  assert_int_equal(adb_agent_get(db, "lin", &back), ADB_OK);
  assert_int_equal(back.algorithm, ADB_ALGO_LINEAR);
  assert_int_equal(back.linear_crosses, ADB_CROSS_ALL);
  assert_true(back.linear_v == 0.1 && back.linear_lambda == 1);
  float emb[ITEMS][8];
  adb_action acts[ITEMS];
  for (int i = 0; i < ITEMS; i++) {
    for (int j = 0; j < 8; j++)
      emb[i][j] = item_vec(i, j);
    acts[i] = (adb_action){
        .id = item_ids[i], .embedding = emb[i], .embedding_dim = 8};
  }
  assert_int_equal(adb_actions_put(db, "lin", acts, ITEMS), ADB_OK);
}

static void user_vec(int u, float *v) {
  for (int j = 0; j < 8; j++)
    v[j] = (float)cos(0.9 * u + 1.1 * j);
}

/* Expected reward: the cosine-like affinity of user and item, in [0, 1]. */
static double truth(int u, int item) {
  float uv[8];
  user_vec(u, uv);
  double s = 0;
  for (int j = 0; j < 8; j++)
    s += uv[j] * item_vec(item, j);
  return 1 / (1 + exp(-s));
}

static int decide(adb *db, int u, const char *event_id, adb_decision *d) {
  float uv[8];
  user_vec(u, uv);
  char user[16];
  snprintf(user, sizeof user, "u%d", u);
  adb_kv ctx = {"daypart", u % 2 ? "night" : "morning"};
  adb_decide_req req = {.agent_id = "lin",
                        .user_id = user,
                        .candidates = item_ids,
                        .n_candidates = ITEMS,
                        .context = &ctx,
                        .n_context = 1,
                        .embedding = uv,
                        .embedding_dim = 8,
                        .event_id = event_id};
  memset(d, 0, sizeof *d);
  return adb_decide(db, &req, d);
}

static int reward(adb *db, const char *event_id, double r, int *applied) {
  char rid[160];
  snprintf(rid, sizeof rid, "r-%s", event_id);
  adb_reward_req q = {.agent_id = "lin",
                      .reward_id = rid,
                      .event_id = event_id,
                      .has_reward = 1,
                      .reward = r};
  adb_reward_result res = {0};
  int rc = adb_reward(db, &q, &res);
  if (applied) *applied = res.applied;
  return rc;
}

/* The reference: a fresh model fed with every linear_rewards row. */
typedef struct ref_arg {
  adb__lin_model *m;
} ref_arg;

static int ref_row(void *arg, const adb__lin_row *row) {
  ref_arg *x = arg;
  adb__lin_x f;
  assert_int_equal(adb__lin_blob_read(row->features, row->n_features, &f), 0);
  return adb__lin_update(x->m, row->action, &f, row->reward,
                         (double)row->ts_ms / 1000.0);
}

static void reference_mean(const char *url, double *mean, int64_t *n) {
  adb__store *st = NULL;
  char err[256];
  adb_config cfg = {0};
  assert_int_equal(adb__store_open(url, &cfg, &st, err, sizeof err), 0);
  adb__lin_model m;
  assert_int_equal(adb__lin_init(&m, NULL), ADB_OK);
  ref_arg x = {&m};
  uint64_t snap;
  assert_int_equal(st->m->lin_scan(st, "lin", 0, 0, &snap, ref_row, &x), 0);
  assert_int_equal(adb__lin_posterior(&m, 0, mean, NULL, NULL, NULL), 0);
  *n = m.n;
  adb__lin_free(&m);
  adb__store_close(st);
}

static void assert_means_close(const double *a, const double *b, int k) {
  double worst = 0;
  for (int i = 0; i < k; i++)
    worst = fmax(worst, fabs(a[i] - b[i]) / fmax(1, fabs(b[i])));
  printf("    max relative difference of the models: %.3g\n", worst);
  assert_true(worst < 1e-9);
}

/* With the model frozen (no reward arriving), the logged propensity of
 * each action is the frequency with which adb_decide picks it.
 *
 * MC decisions of user 3 from one pool: counts and logged propensities.
 * 0 when the model thread drew a new pool meanwhile (a late reward caught
 * up; on a slow build the loop outlasts many ticks), whose propensities
 * differ: the caller tries again. */
enum { MC = 20000 };
static int decide_from_one_pool(adb *db, double *cnt, double *prop) {
  int64_t before, after;
  assert_int_equal(adb__linear_sync(db, "lin"), ADB_OK);
  assert_int_equal(adb__linear_pool_n(db, "lin", &before), ADB_OK);
  memset(cnt, 0, ITEMS * sizeof *cnt);
  for (int t = 0; t < MC; t++) {
    adb_decision d;
    assert_int_equal(decide(db, 3, NULL, &d), ADB_OK);
    int item = atoi(d.action + 1);
    cnt[item]++;
    prop[item] = d.propensity;
  }
  assert_int_equal(adb__linear_pool_n(db, "lin", &after), ADB_OK);
  return before == after;
}

/* min_chosen: how many actions the frozen policy must still pick, so that
 * the check is not the trivial one of a single action with propensity 1.
 * Before any reward every draw is prior noise and many actions win; after
 * a few rewards the 32 draws may all agree, which is right, not a fault. */
static void check_api_propensities(adb *db, int min_chosen) {
  double cnt[ITEMS], prop[ITEMS] = {0};
  int one_pool = 0;
  for (int tries = 0; tries < 5 && !one_pool; tries++)
    one_pool = decide_from_one_pool(db, cnt, prop);
  assert_true(one_pool);
  double worst = 0;
  int chosen = 0;
  for (int i = 0; i < ITEMS; i++) {
    worst = fmax(worst, fabs(cnt[i] / MC - prop[i]));
    chosen += cnt[i] > 0;
  }
  printf("    API: max |logged propensity - frequency| = %.4f (%d actions "
         "chosen)\n",
         worst, chosen);
  assert_true(chosen >= min_chosen);
  assert_true(worst < 0.02);
}

static void linear_agent_learns_and_logs_true_propensities(void **state) {
  char *url = util_store_fresh_url((const char *)*state);
  assert_non_null(url);
  adb *db = open_db(url, ADB_DURABILITY_SYNC);
  make_agent(db);
  adb__rng r;
  adb__rng_seed(&r, 17);
  double got_first = 0, got_last = 0, best_first = 0, best_last = 0;
  enum { ROUNDS = 1500 };
  for (int t = 0; t < ROUNDS; t++) {
    int u = (int)(adb__rng_next(&r) % 40);
    adb_decision d;
    char ev[32];
    snprintf(ev, sizeof ev, "e%d", t);
    assert_int_equal(decide(db, u, ev, &d), ADB_OK);
    assert_true(d.propensity > 0 && d.propensity <= 1);
    int item = atoi(d.action + 1);
    double best = 0;
    for (int i = 0; i < ITEMS; i++)
      best = fmax(best, truth(u, i));
    double rr = truth(u, item) + 0.1 * adb__rng_normal(&r);
    if (t < 300) got_first += truth(u, item), best_first += best;
    if (t >= ROUNDS - 300) got_last += truth(u, item), best_last += best;
    int applied;
    assert_int_equal(reward(db, ev, rr, &applied), ADB_OK);
    assert_int_equal(applied, 1);
    if (t % 100 == 99) adb__linear_sync(db, "lin");
    if (t == 0) check_api_propensities(db, 2);
    if (t == 20) check_api_propensities(db, 1);
  }
  printf("    share of the best: first 300 %.3f, last 300 %.3f\n",
         got_first / best_first, got_last / best_last);
  /* Uniform random's share over the same users, for scale. */
  double rnd = 0, best_all = 0;
  for (int u = 0; u < 40; u++) {
    double best = 0;
    for (int i = 0; i < ITEMS; i++) {
      rnd += truth(u, i) / ITEMS;
      best = fmax(best, truth(u, i));
    }
    best_all += best;
  }
  printf("    (uniform random: %.3f)\n", rnd / best_all);
  assert_true(got_last / best_last > 0.95);
  assert_true(got_last / best_last > rnd / best_all + 0.1);
  /* The model is the model of the stored rewards. */
  double mine[401], ref[401];
  int k;
  int64_t n, nref;
  assert_int_equal(adb__linear_posterior(db, "lin", 0, mine, 401, &k, &n), 0);
  reference_mean(url, ref, &nref);
  printf("    rewards in the model %lld, in the store %lld\n", (long long)n,
         (long long)nref);
  assert_int_equal(nref, ROUNDS);
  assert_int_equal(n, ROUNDS);
  assert_means_close(mine, ref, k);
  /* A retried reward is not applied again. */
  int applied = 1;
  assert_int_equal(reward(db, "e5", truth(0, 0) + 9, &applied), ADB_ECONFLICT);
  adb_close(db);
  util_store_drop(url);
}

typedef struct writer_arg {
  adb *db;
  const char *prefix;
  int n;
} writer_arg;

static void *write_rewards(void *p) {
  writer_arg *w = p;
  for (int t = 0; t < w->n; t++) {
    char ev[32];
    adb_decision d;
    snprintf(ev, sizeof ev, "%s%d", w->prefix, t);
    if (decide(w->db, t % 17, ev, &d) ||
        reward(w->db, ev, truth(t % 17, atoi(d.action + 1)), NULL))
      return (void *)1;
  }
  return NULL;
}

/* Rewards are written through both handles at once (concurrent
 * transactions: in PostgreSQL their sequence order is not their commit
 * order), and a's rewards must reach b's model by b's model thread. */
static void two_handles_converge_after_rewards_on_one(void **state) {
  char *url = util_store_fresh_url((const char *)*state);
  assert_non_null(url);
  adb *a = open_db(url, ADB_DURABILITY_SYNC),
      *b = open_db(url, ADB_DURABILITY_SYNC);
  make_agent(a);
  adb_decision d;
  assert_int_equal(decide(b, 1, "warm", &d), ADB_OK); /* b's model loaded */
  writer_arg wa[2] = {{a, "ca", 150}, {b, "cb", 150}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, write_rewards, &wa[i]);
  for (int i = 0; i < 2; i++) {
    void *ret;
    pthread_join(th[i], &ret);
    assert_null(ret);
  }
  /* Then 60 more on a alone, with b idle. */
  writer_arg last = {a, "cc", 60};
  assert_null(write_rewards(&last));
  /* b's model thread alone (no sync call) must pick them up. */
  double mb[401], ma[401];
  int k;
  int64_t n = 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double start = ts.tv_sec + ts.tv_nsec * 1e-9, lag = 0;
  for (;;) {
    /* What b's decisions draw from, without catching up here. */
    assert_int_equal(adb__linear_pool_n(b, "lin", &n), 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lag = ts.tv_sec + ts.tv_nsec * 1e-9 - start;
    if (n == 360 || lag > 5) break;
    usleep(20000);
  }
  printf("    replica caught up with the last rewards in %.3f s\n", lag);
  assert_int_equal(n, 360);
  assert_int_equal(adb__linear_posterior(b, "lin", 0, mb, 401, &k, &n), 0);
  assert_int_equal(adb__linear_posterior(a, "lin", 0, ma, 401, &k, &n), 0);
  assert_means_close(mb, ma, k);
  adb_close(a);
  adb_close(b);
  util_store_drop(url);
}

/* ------------------------------------------------------------- crash */

#define CRASH_CYCLES 6
#define PER_CYCLE 600

static void crash_child(const char *url, int cycle, int fd) {
  adb *db = open_db(url, ADB_DURABILITY_SYNC);
  for (int i = 0; i < PER_CYCLE; i++) {
    char ev[32];
    snprintf(ev, sizeof ev, "k%d-%d", cycle, i);
    adb_decision d;
    if (decide(db, i % 23, ev, &d)) _exit(3);
    if (reward(db, ev, truth(i % 23, atoi(d.action + 1)), NULL)) _exit(4);
    int id = cycle * PER_CYCLE + i;
    if (write(fd, &id, sizeof id) != sizeof id) _exit(5);
  }
  _exit(0);
}

/* ThreadSanitizer cannot follow a child that starts threads after a
 * multi-threaded fork; the normal and ASan builds run this test. */
#if defined(__SANITIZE_THREAD__)
#define ADB_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ADB_TEST_TSAN 1
#endif
#endif

static void sigkill_loses_no_acknowledged_linear_reward(void **state) {
#ifdef ADB_TEST_TSAN
  printf("    skipped under TSan (fork of a threaded process); the normal "
         "and ASan builds run it\n");
  skip();
#endif
  char *url = util_store_fresh_url((const char *)*state);
  assert_non_null(url);
  adb *db = open_db(url, ADB_DURABILITY_SYNC);
  make_agent(db);
  adb_close(db);
  static char acked[CRASH_CYCLES * PER_CYCLE];
  memset(acked, 0, sizeof acked);
  adb__rng r;
  adb__rng_seed(&r, 1234);
  int n_acked = 0;
  for (int c = 0; c < CRASH_CYCLES; c++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      crash_child(url, c, fds[1]);
    }
    close(fds[1]);
    /* Kill at a random moment once rewards flow (the first ack shows the
     * child is past its start, however slow the build or machine). */
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    poll(&pfd, 1, 120000);
    usleep((useconds_t)(100000 + adb__rng_next(&r) % 700000));
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    int id;
    while (read(fds[0], &id, sizeof id) == sizeof id)
      if (id >= 0 && id < CRASH_CYCLES * PER_CYCLE && !acked[id])
        acked[id] = 1, n_acked++;
    close(fds[0]);
    if (c == CRASH_CYCLES / 2) { /* a checkpoint half-way */
      db = open_db(url, ADB_DURABILITY_SYNC);
      assert_int_equal(adb__linear_checkpoint(db, "lin"), ADB_OK);
      adb_close(db);
    }
  }
  printf("    %d rewards acknowledged over %d kills\n", n_acked, CRASH_CYCLES);
  assert_true(n_acked > 0);
  /* Every acknowledged reward is in linear_rewards exactly once. */
  int64_t rows =
      util_store_query_int(url, "SELECT count(*) FROM linear_rewards");
  int64_t distinct = util_store_query_int(
      url, "SELECT count(DISTINCT reward_id) FROM linear_rewards");
  int64_t rewards = util_store_query_int(
      url, "SELECT count(*) FROM reward_signals WHERE agent_id = 'lin'");
  assert_int_equal(rows, distinct);
  assert_int_equal(rows, rewards);
  size_t cap = (size_t)n_acked * 24 + 128;
  char *sql = malloc(cap);
  size_t len = (size_t)snprintf(
      sql, cap, "SELECT count(*) FROM linear_rewards WHERE reward_id IN (");
  int first = 1;
  for (int id = 0; id < CRASH_CYCLES * PER_CYCLE; id++)
    if (acked[id]) {
      len += (size_t)snprintf(sql + len, cap - len, "%s'r-k%d-%d'",
                              first ? "" : ",", id / PER_CYCLE, id % PER_CYCLE);
      first = 0;
    }
  snprintf(sql + len, cap - len, ")");
  assert_int_equal(util_store_query_int(url, sql), n_acked);
  free(sql);
  assert_true(rows >= n_acked);
  /* The restarted model (checkpoint + later rewards) = the model of the
   * surviving rewards. */
  db = open_db(url, ADB_DURABILITY_SYNC);
  double mine[401], ref[401];
  int k;
  int64_t n, nref;
  assert_int_equal(adb__linear_posterior(db, "lin", 0, mine, 401, &k, &n), 0);
  reference_mean(url, ref, &nref);
  assert_int_equal(n, rows);
  assert_int_equal(nref, rows);
  assert_means_close(mine, ref, k);
  adb_close(db);
  util_store_drop(url);
}

/* A handle clock (adb_config.clock_ms) one day in the past, moved by the
 * test: 7 s per round. */
static _Atomic int64_t test_clock_ms;
static int64_t test_clock(void *arg) {
  (void)arg;
  return atomic_load(&test_clock_ms);
}

enum { DECAY_ROUNDS = 120, DECAY_STEP_MS = 7000 };
static int64_t decay_t0_ms;

/* The reference for decay: rewards weighted by the times the test set
 * (from the reward id "r-d<t>"), not by anything the store says. */
static int decay_ref_row(void *arg, const adb__lin_row *row) {
  ref_arg *x = arg;
  adb__lin_x f;
  int t = atoi(row->reward_id + 3);
  assert_int_equal(strncmp(row->reward_id, "r-d", 3), 0);
  assert_int_equal(row->ts_ms, decay_t0_ms + (int64_t)t * DECAY_STEP_MS);
  assert_int_equal(adb__lin_blob_read(row->features, row->n_features, &f), 0);
  return adb__lin_update(x->m, row->action, &f, row->reward,
                         (double)(decay_t0_ms + (int64_t)t * DECAY_STEP_MS) /
                             1000.0);
}

/* decay_half_life_s acts on the handle's clock: rewards are stamped with
 * it (not the wall clock), and the model is the closed form
 * sum 2^(-(now - t_i)/h) of the increments of the stored rewards. */
static void decay_follows_the_handle_clock(void **state) {
  char *url = util_store_fresh_url((const char *)*state);
  assert_non_null(url);
  decay_t0_ms = adb__now_ms() - 86400000;
  atomic_store(&test_clock_ms, decay_t0_ms);
  adb_config cfg = {.store_url = url,
                    .durability = ADB_DURABILITY_SYNC,
                    .write_timeout_ms = 20000,
                    .cold_start_k = -1,
                    .clock_ms = test_clock};
  adb *db = NULL;
  char err[512];
  assert_int_equal(adb_open(&cfg, &db, err, sizeof err), ADB_OK);
  make_agent(db);
  adb_agent_config c;
  assert_int_equal(adb_agent_get(db, "lin", &c), ADB_OK);
  c.decay_half_life_s = 60;
  assert_int_equal(adb_agent_put(db, &c), ADB_OK);
  adb__rng r;
  adb__rng_seed(&r, 23);
  for (int t = 0; t < DECAY_ROUNDS; t++) {
    atomic_store(&test_clock_ms, decay_t0_ms + (int64_t)t * DECAY_STEP_MS);
    int u = (int)(adb__rng_next(&r) % 40);
    char ev[32];
    adb_decision d;
    snprintf(ev, sizeof ev, "d%d", t);
    assert_int_equal(decide(db, u, ev, &d), ADB_OK);
    /* Tastes that flip half-way: what decay is for. */
    double rr = t < DECAY_ROUNDS / 2 ? truth(u, atoi(d.action + 1))
                                     : 1 - truth(u, atoi(d.action + 1));
    int applied;
    assert_int_equal(reward(db, ev, rr, &applied), ADB_OK);
    assert_int_equal(applied, 1);
  }
  double now_s =
      (double)(decay_t0_ms + (int64_t)DECAY_ROUNDS * DECAY_STEP_MS) / 1000;
  double mine[401], ref[401], flat[401];
  int k;
  int64_t n;
  assert_int_equal(adb__linear_posterior(db, "lin", now_s, mine, 401, &k, &n),
                   0);
  assert_int_equal(n, DECAY_ROUNDS);
  adb_close(db);
  /* The closed form from the stored rows and the times the test set. */
  adb__store *st = NULL;
  adb_config scfg = {0};
  assert_int_equal(adb__store_open(url, &scfg, &st, err, sizeof err), 0);
  double h[2] = {60, 0};
  double *out[2] = {ref, flat};
  for (int i = 0; i < 2; i++) {
    adb__lin_model m;
    adb__lin_cfg lc = {.half_life_s = h[i]};
    assert_int_equal(adb__lin_init(&m, &lc), ADB_OK);
    ref_arg x = {&m};
    uint64_t snap;
    assert_int_equal(st->m->lin_scan(st, "lin", 0, 0, &snap, decay_ref_row, &x),
                     0);
    assert_int_equal(m.n, DECAY_ROUNDS);
    assert_int_equal(adb__lin_posterior(&m, now_s, out[i], NULL, NULL, NULL),
                     0);
    adb__lin_free(&m);
  }
  adb__store_close(st);
  assert_means_close(mine, ref, k);
  /* And decay mattered: the model without it is another model. */
  double diff = 0;
  for (int i = 0; i < k; i++)
    diff = fmax(diff, fabs(flat[i] - ref[i]));
  printf("    max |decayed - undecayed| posterior mean: %.3g\n", diff);
  assert_true(diff > 1e-3);
  util_store_drop(url);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest math[] = {
      cmocka_unit_test(update_equals_batch_ridge_solve),
      cmocka_unit_test(decay_matches_closed_form_in_any_order),
      cmocka_unit_test(batched_fold_equals_batch_ridge_solve),
      cmocka_unit_test(sampler_has_posterior_mean_and_covariance),
      cmocka_unit_test(propensity_matches_monte_carlo),
      cmocka_unit_test(checkpoint_round_trips_and_bad_features_are_refused),
  };
  int fails = cmocka_run_group_tests_name("linear math", math, NULL, NULL);
  const char *kinds[4];
  int nk = util_store_kinds(kinds, 4);
  for (int i = 0; i < nk; i++) {
    struct CMUnitTest t[] = {
        cmocka_unit_test_prestate(
            linear_agent_learns_and_logs_true_propensities, (void *)kinds[i]),
        cmocka_unit_test_prestate(two_handles_converge_after_rewards_on_one,
                                  (void *)kinds[i]),
        cmocka_unit_test_prestate(sigkill_loses_no_acknowledged_linear_reward,
                                  (void *)kinds[i]),
        cmocka_unit_test_prestate(decay_follows_the_handle_clock,
                                  (void *)kinds[i]),
    };
    printf("[ store %s ]\n", kinds[i]);
    fails += cmocka_run_group_tests_name(kinds[i], t, NULL, NULL);
  }
  return fails ? 1 : 0;
}
