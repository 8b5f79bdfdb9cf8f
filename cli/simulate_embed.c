/*
 * simulate_embed.c — `agentdb simulate --workload embed`: a catalogue
 * where users and items carry embeddings, the shape on which one model
 * over user, context and item features beats a table of posteriors.
 *
 * The world: 1,000 users and 50 items with 16-d embeddings; each item has
 * a genre (6), and its embedding is its genre's prototype plus noise; each
 * item a popularity, each (daypart, genre) a taste. The expected watched
 * fraction of item i by user u at daypart d is
 *     logistic(1.5 (2 cos(u, e_i) + pop_i + taste[d][genre_i]) - 0.5)
 * and the observed one a U-shaped Beta draw with that mean (as in the
 * default workload). Each round a user (Zipf activity) arrives at a
 * daypart with 20 of the 50 items as candidates. Variants:
 *   - base;
 *   - drift: popularity, daypart tastes and user embeddings move linearly
 *     from one random draw to another over the run (the request carries
 *     the user's current embedding);
 *   - newusers: only users 0..499 arrive in the first half; in the second
 *     half, half of the rounds belong to users 500..999, never seen before.
 * Policies, on the same rounds and reward noise:
 *   - tabular TS: adb_decide/adb_reward (beta, states by daypart,
 *     fallback 30, as the default workload);
 *   - linear TS: adb_decide/adb_reward on an agent {"algorithm":"linear"}
 *     with its defaults, the user embedding in the request;
 *   - epsilon-greedy ridge (eps 0.05, VW's default exploration) over the
 *     same crossed features: the ridge mean, refreshed on the same
 *     schedule as the linear agent's pool (linear.c, in process);
 *   - uniform random, and the oracle (highest expected reward).
 */
#include <getopt.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "cli.h"
#include "evaluate.h"
#include "linear.h"

#define E_USERS 1000
#define E_ITEMS 50
#define E_GENRES 6
#define E_DIM 16
#define E_DAYPARTS 4
#define E_CANDS 20

enum { V_BASE, V_DRIFT, V_NEWUSERS };

typedef struct eworld {
  int variant;
  long rounds;
  float user0[E_USERS][E_DIM], user1[E_USERS][E_DIM];
  float item[E_ITEMS][E_DIM];
  int genre[E_ITEMS];
  double pop0[E_ITEMS], pop1[E_ITEMS];
  double taste0[E_DAYPARTS][E_GENRES], taste1[E_DAYPARTS][E_GENRES];
  double zipf[E_USERS / 2]; /* cdf over a half (or, base, all as two) */
  double zipf_all[E_USERS];
} eworld;

static const char *dayparts[E_DAYPARTS] = {"morning", "afternoon", "evening",
                                           "night"};

static void zipf_cdf(double *cdf, int n) {
  double total = 0, acc = 0;
  for (int u = 0; u < n; u++)
    total += 1.0 / pow(u + 1, 0.8);
  for (int u = 0; u < n; u++)
    cdf[u] = (acc += 1.0 / pow(u + 1, 0.8) / total);
}

static void eworld_make(eworld *w, int variant, long rounds, uint64_t seed) {
  adb__rng r;
  adb__rng_seed(&r, seed * 104729 + 17);
  w->variant = variant;
  w->rounds = rounds;
  float proto[E_GENRES][E_DIM];
  for (int g = 0; g < E_GENRES; g++)
    for (int j = 0; j < E_DIM; j++)
      proto[g][j] = (float)adb__rng_normal(&r);
  for (int i = 0; i < E_ITEMS; i++) {
    w->genre[i] = i % E_GENRES;
    for (int j = 0; j < E_DIM; j++)
      w->item[i][j] = proto[w->genre[i]][j] + 0.6f * (float)adb__rng_normal(&r);
    w->pop0[i] = 0.5 * adb__rng_normal(&r);
    w->pop1[i] = 0.5 * adb__rng_normal(&r);
  }
  for (int d = 0; d < E_DAYPARTS; d++)
    for (int g = 0; g < E_GENRES; g++) {
      w->taste0[d][g] = 0.7 * adb__rng_normal(&r);
      w->taste1[d][g] = 0.7 * adb__rng_normal(&r);
    }
  for (int u = 0; u < E_USERS; u++)
    for (int j = 0; j < E_DIM; j++) {
      w->user0[u][j] = (float)adb__rng_normal(&r);
      w->user1[u][j] = (float)adb__rng_normal(&r);
    }
  zipf_cdf(w->zipf, E_USERS / 2);
  zipf_cdf(w->zipf_all, E_USERS);
}

/* How far through the drift round t is (0 unless the variant drifts). */
static double drift_at(const eworld *w, long t) {
  return w->variant == V_DRIFT ? (double)t / (double)w->rounds : 0;
}

static void user_emb(const eworld *w, int u, long t, float out[E_DIM]) {
  double f = drift_at(w, t);
  for (int j = 0; j < E_DIM; j++)
    out[j] = (float)((1 - f) * w->user0[u][j] + f * w->user1[u][j]);
}

static double expected(const eworld *w, int u, int d, int i, long t) {
  float ue[E_DIM];
  user_emb(w, u, t, ue);
  double dot = 0, nu = 0, ni = 0, f = drift_at(w, t);
  for (int j = 0; j < E_DIM; j++) {
    dot += (double)ue[j] * w->item[i][j];
    nu += (double)ue[j] * ue[j];
    ni += (double)w->item[i][j] * w->item[i][j];
  }
  double cosv = nu > 0 && ni > 0 ? dot / sqrt(nu * ni) : 0;
  int g = w->genre[i];
  double x = 2 * cosv + (1 - f) * w->pop0[i] + f * w->pop1[i] +
             (1 - f) * w->taste0[d][g] + f * w->taste1[d][g];
  return 1.0 / (1.0 + exp(-(1.5 * x - 0.5)));
}

static double observe(adb__rng *r, double mean) {
  const double conc = 0.5;
  double v = adb__rng_beta(r, mean * conc + 1e-3, (1 - mean) * conc + 1e-3);
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

static int pick(const double *cdf, int n, adb__rng *r) {
  double x = adb__rng_uniform(r);
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (cdf[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int pick_user(const eworld *w, long t, adb__rng *r) {
  if (w->variant != V_NEWUSERS) return pick(w->zipf_all, E_USERS, r);
  int half = t >= w->rounds / 2 && (adb__rng_next(r) & 1);
  return pick(w->zipf, E_USERS / 2, r) + (half ? E_USERS / 2 : 0);
}

/* ------------------------------------------------------- agentdb agents */

static int agent_setup(adb *db, const char *id, const eworld *w, int linear,
                       const double *v_lambda_h) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  snprintf(cfg.id, sizeof cfg.id, "%s", id);
  cfg.n_context_keys = 1;
  snprintf(cfg.context_keys[0], sizeof cfg.context_keys[0], "daypart");
  if (linear) {
    cfg.algorithm = ADB_ALGO_LINEAR;
    if (v_lambda_h[0] > 0) cfg.linear_v = v_lambda_h[0];
    if (v_lambda_h[1] > 0) cfg.linear_lambda = v_lambda_h[1];
    cfg.decay_half_life_s = v_lambda_h[2];
  } else {
    cfg.fallback_strength = 30;
  }
  int rc = adb_agent_put(db, &cfg);
  adb_action acts[E_ITEMS];
  char ids[E_ITEMS][16];
  for (int i = 0; i < E_ITEMS; i++) {
    snprintf(ids[i], sizeof ids[i], "item-%d", i);
    acts[i] = (adb_action){.id = ids[i],
                           .embedding = linear ? w->item[i] : NULL,
                           .embedding_dim = linear ? E_DIM : 0};
  }
  if (rc == ADB_OK) rc = adb_actions_put(db, id, acts, E_ITEMS);
  return rc;
}

static int agent_reward(adb *db, const char *agent, const char *event_id,
                        double reward) {
  char rid[160];
  snprintf(rid, sizeof rid, "r-%s", event_id);
  adb_reward_req rr = {.agent_id = agent,
                       .reward_id = rid,
                       .event_id = event_id,
                       .has_reward = 1,
                       .reward = reward};
  int rc;
  while ((rc = adb_reward(db, &rr, NULL)) == ADB_EFULL)
    adb_flush(db);
  return rc;
}

/* The handle's clock (adb_config.clock_ms): round t is second t of a run
 * that ends now, so every stamp is a real, past time, and a half-life in
 * seconds is one in rounds. */
typedef struct sim_clock {
  int64_t t0_ms;
  _Atomic long round;
} sim_clock;

static int64_t sim_clock_ms(void *arg) {
  sim_clock *c = arg;
  return c->t0_ms + (int64_t)atomic_load(&c->round) * 1000;
}

/* ------------------------------------------------- epsilon-greedy ridge */

typedef struct ridge {
  adb__lin_model m;
  adb__lin_pool *pool;
  int64_t n_at_pool;
  double eps, v; /* v < 0: the model's own (Thompson), 0: the mean */
} ridge;

static void ridge_x(const eworld *w, const float *ue, int d, int item,
                    adb__lin_x *x) {
  const char *k = "daypart", *v = dayparts[d];
  adb__lin_project(ue, E_DIM, x->u);
  adb__lin_project(w->item[item], E_DIM, x->e);
  adb__lin_context(&k, &v, 1, x->c);
}

static int ridge_pick(ridge *rg, adb__rng *r, const eworld *w, const float *ue,
                      int d, const int *cands, const char *const *ids, long t) {
  /* Same refresh schedule as the linear agent (policy_linear.c). */
  if (!rg->pool || rg->m.n - rg->n_at_pool >= adb__lin_refresh_every(rg->m.n)) {
    adb__lin_pool *p = adb__lin_pool_make(&rg->m, (double)t, r, rg->v);
    if (p) {
      adb__lin_pool_unref(rg->pool);
      rg->pool = p;
      rg->n_at_pool = rg->m.n;
    }
  }
  if ((rg->eps > 0 && adb__rng_uniform(r) < rg->eps) || !rg->pool)
    return cands[adb__rng_next(r) % E_CANDS];
  adb__lin_x x;
  float e[E_CANDS][ADB_LIN_P];
  ridge_x(w, ue, d, cands[0], &x);
  for (int c = 0; c < E_CANDS; c++)
    adb__lin_project(w->item[cands[c]], E_DIM, e[c]);
  double prop;
  int c = adb__lin_choose(rg->pool, r, &x, (const float(*)[ADB_LIN_P])e, ids,
                          NULL, E_CANDS, NULL, &prop);
  return cands[c < 0 ? 0 : c];
}

/* --------------------------------------------------------------- driver */

static int simulate_evaluate(int argc, char **argv);

#define N_POL 5
static const char *pol_names[N_POL] = {
    "linear TS", "tabular TS", "eps-greedy ridge", "uniform random", "oracle"};

typedef struct eopts {
  uint64_t seed;
  long rounds;
  int variant;
  int in_process;   /* linear TS by linear.c directly, without the store */
  double half_life; /* rounds (one round = one second of model time) */
  double v, lambda; /* the linear model's settings; 0 = defaults */
} eopts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: agentdb simulate --workload embed [options]\n"
          "  --seed N        workload seed (default 1)\n"
          "  --rounds N      decisions per policy (default 20000, >= 100)\n"
          "  --variant base|drift|newusers  (default base)\n"
          "  --in-process    linear TS through linear.c directly\n"
          "  --half-life H   forgetting, in rounds (drift: 2000, else 0 = "
          "off)\n"
          "  --v X, --lambda X  the linear model's exploration scale and\n"
          "                  prior precision (default 0.1 and 1)\n"
          "usage: agentdb simulate --workload embed --evaluate [options]\n"
          "  --seeds N       seeds from --seed on (default 1)\n"
          "  --rounds N      logged decisions per seed (default 5000)\n"
          "  --logger JSON   the logging policy (an agent config)\n"
          "  --policy JSON   a candidate policy (repeatable; default tabular\n"
          "                  and linear)\n"
          "  --json          machine-readable result\n");
}

static int parse(int argc, char **argv, eopts *o) {
  static const struct option lo[] = {
      {"seed", 1, 0, 's'},       {"rounds", 1, 0, 'r'},
      {"variant", 1, 0, 'v'},    {"workload", 1, 0, 'w'},
      {"in-process", 0, 0, 'i'}, {"half-life", 1, 0, 'H'},
      {"v", 1, 0, 'V'},          {"lambda", 1, 0, 'L'},
      {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c == 's') o->seed = strtoull(optarg, NULL, 10);
    if (c == 'r') o->rounds = atol(optarg);
    if (c == 'v')
      o->variant = !strcmp(optarg, "drift")      ? V_DRIFT
                   : !strcmp(optarg, "newusers") ? V_NEWUSERS
                   : !strcmp(optarg, "base")     ? V_BASE
                                                 : -1;
    if (c == 'i') o->in_process = 1;
    if (c == 'H') o->half_life = atof(optarg);
    if (c == 'V') o->v = atof(optarg);
    if (c == 'L') o->lambda = atof(optarg);
    if (c == 'h') {
      usage(stdout);
      return 1;
    }
    if (c == '?') return -1;
  }
  /* The drift variant forgets by default (README): a half-life of 2,000
   * rounds (seconds of the handle's clock) for the linear agent and the
   * ridge; --half-life 0 turns it off. */
  if (o->half_life < 0) o->half_life = o->variant == V_DRIFT ? 2000 : 0;
  if (o->rounds < 100 || o->variant < 0) {
    fprintf(stderr, "simulate: --workload embed takes --seed N, --rounds N "
                    "(>= 100), --variant base|drift|newusers\n");
    return -1;
  }
  return 0;
}

static void report(const eopts *o, const double *tot, const double *last,
                   long n_last) {
  static const char *vn[] = {"base", "drift", "newusers"};
  printf("workload embed/%s, seed %llu, %ld rounds, half-life %g rounds\n",
         vn[o->variant], (unsigned long long)o->seed, o->rounds, o->half_life);
  printf("%-18s %12s %12s %16s\n", "policy", "mean reward", "% of oracle",
         "last 10% / oracle");
  for (int p = 0; p < N_POL; p++)
    printf("%-18s %12.4f %11.1f%% %15.1f%%\n", pol_names[p], tot[p] / o->rounds,
           100.0 * tot[p] / tot[N_POL - 1], 100.0 * last[p] / last[N_POL - 1]);
  (void)n_last;
}

/* The round's candidates: 20 distinct items. */
static void draw_cands(adb__rng *r, int *cands, char (*ids)[16],
                       const char **cand_ids) {
  for (int c = 0; c < E_CANDS; c++) {
    int item, dup;
    do {
      item = (int)(adb__rng_next(r) % E_ITEMS);
      dup = 0;
      for (int j = 0; j < c; j++)
        dup |= cands[j] == item;
    } while (dup);
    cands[c] = item;
    snprintf(ids[c], sizeof ids[c], "item-%d", item);
    cand_ids[c] = ids[c];
  }
}

static int run(adb *db, const eworld *w, const eopts *o, sim_clock *clk,
               double *tot, double *last) {
  adb__rng wr, pr, lr, noise[N_POL];
  adb__rng_seed(&wr, o->seed * 7919 + 11);
  adb__rng_seed(&pr, o->seed * 7919 + 12);
  adb__rng_seed(&lr, o->seed * 7919 + 13); /* linear TS in process */
  ridge rg = {.eps = 0.05, .v = 0}, lt = {.v = -1};
  adb__lin_cfg lc = {
      .half_life_s = o->half_life, .v = o->v, .lambda = o->lambda};
  int rc = adb__lin_init(&rg.m, &lc);
  if (rc == ADB_OK) rc = adb__lin_init(&lt.m, &lc);
  int cands[E_CANDS];
  char ids[E_CANDS][16];
  const char *cand_ids[E_CANDS];
  long from_last = o->rounds - o->rounds / 10;
  for (long t = 0; t < o->rounds && rc == ADB_OK; t++) {
    atomic_store(&clk->round, t);
    int u = pick_user(w, t, &wr), d = (int)(adb__rng_next(&wr) % E_DAYPARTS);
    draw_cands(&wr, cands, ids, cand_ids);
    uint64_t ns = adb__rng_next(&wr);
    for (int p = 0; p < N_POL; p++)
      adb__rng_seed(&noise[p], ns);
    float ue[E_DIM];
    user_emb(w, u, t, ue);
    char user[32];
    snprintf(user, sizeof user, "user-%d", u);
    int chosen[N_POL];
    adb_decision dl = {0}, dt = {0};
    adb_kv ctx = {"daypart", dayparts[d]};
    adb_decide_req req = {.user_id = user,
                          .candidates = cand_ids,
                          .n_candidates = E_CANDS,
                          .context = &ctx,
                          .n_context = 1};
    req.agent_id = "lin";
    req.embedding = ue;
    req.embedding_dim = E_DIM;
    if (o->in_process)
      chosen[0] = ridge_pick(&lt, &lr, w, ue, d, cands, cand_ids, t);
    else
      while ((rc = adb_decide(db, &req, &dl)) == ADB_EFULL)
        adb_flush(db);
    if (rc) break;
    req.agent_id = "tab";
    req.embedding = NULL;
    req.embedding_dim = 0;
    while ((rc = adb_decide(db, &req, &dt)) == ADB_EFULL)
      adb_flush(db);
    if (rc) break;
    if (!o->in_process) chosen[0] = atoi(dl.action + 5);
    chosen[1] = atoi(dt.action + 5);
    chosen[2] = ridge_pick(&rg, &pr, w, ue, d, cands, cand_ids, t);
    chosen[3] = cands[adb__rng_next(&pr) % E_CANDS];
    chosen[4] = cands[0];
    for (int c = 1; c < E_CANDS; c++)
      if (expected(w, u, d, cands[c], t) > expected(w, u, d, chosen[4], t))
        chosen[4] = cands[c];
    double r[N_POL];
    for (int p = 0; p < N_POL; p++) {
      r[p] = observe(&noise[p], expected(w, u, d, chosen[p], t));
      tot[p] += r[p];
      if (t >= from_last) last[p] += r[p];
    }
    if (!o->in_process) rc = agent_reward(db, "lin", dl.event_id, r[0]);
    if (rc == ADB_OK) rc = agent_reward(db, "tab", dt.event_id, r[1]);
    ridge *learners[2] = {&lt, &rg};
    for (int l = o->in_process ? 0 : 1; l < 2 && rc == ADB_OK; l++) {
      int item = chosen[l ? 2 : 0];
      adb__lin_x x;
      ridge_x(w, ue, d, item, &x);
      char iid[16];
      snprintf(iid, sizeof iid, "item-%d", item);
      rc = adb__lin_update(&learners[l]->m, iid, &x, r[l ? 2 : 0], (double)t);
    }
    if ((t + 1) % (o->rounds / 10) == 0)
      fprintf(stderr,
              "simulate: %3ld%%  linear %.3f  tabular %.3f  ridge %.3f  "
              "random %.3f  oracle %.3f\n",
              (t + 1) * 100 / o->rounds, tot[0] / (t + 1), tot[1] / (t + 1),
              tot[2] / (t + 1), tot[3] / (t + 1), tot[4] / (t + 1));
  }
  adb__lin_pool_unref(rg.pool);
  adb__lin_free(&rg.m);
  adb__lin_pool_unref(lt.pool);
  adb__lin_free(&lt.m);
  return rc;
}

int cli_simulate_embed(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--evaluate")) return simulate_evaluate(argc, argv);
  eopts o = {.seed = 1, .rounds = 20000, .variant = V_BASE, .half_life = -1};
  int prc = parse(argc, argv, &o);
  if (prc) return prc > 0 ? 0 : 2;
  eworld *w = calloc(1, sizeof *w);
  if (!w) return 1;
  eworld_make(w, o.variant, o.rounds, o.seed);
  char tmpdb[256], url[512];
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(tmpdb, sizeof tmpdb, "%s/agentdb-sim-embed-%d.db", tmp,
           (int)getpid());
  snprintf(url, sizeof url, "sqlite://%s?synchronous=normal", tmpdb);
  /* Sync durability: each reward is in the model before the next round,
   * as in a deployment where the reward arrives before the user's next
   * visit. */
  sim_clock clk = {.t0_ms = adb__now_ms() - (int64_t)o.rounds * 1000};
  adb_config cfg = {.store_url = url,
                    .durability = ADB_DURABILITY_SYNC,
                    .seed = o.seed,
                    .cold_start_k = -1,
                    .flush_interval_ms = 1,
                    .clock_ms = sim_clock_ms,
                    .clock_arg = &clk};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc == ADB_OK && !o.in_process)
    rc = agent_setup(db, "lin", w, 1, (double[]){o.v, o.lambda, o.half_life});
  if (rc == ADB_OK) rc = agent_setup(db, "tab", w, 0, (double[]){0, 0, 0});
  double tot[N_POL] = {0}, last[N_POL] = {0};
  if (rc == ADB_OK) rc = run(db, w, &o, &clk, tot, last);
  if (rc) fprintf(stderr, "simulate: %s\n", db ? adb_errmsg(db) : err);
  adb_close(db);
  const char *sfx[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    char p[300];
    snprintf(p, sizeof p, "%s%s", tmpdb, sfx[i]);
    unlink(p);
  }
  if (rc == ADB_OK) report(&o, tot, last, o.rounds / 10);
  free(w);
  return rc ? 1 : 0;
}

/* ------------------------------------------- offline evaluation harness */

/* `simulate --workload embed --evaluate`: the world above logs the
 * decisions of a logging policy (an AgentDB learner, evaluate.c, sampled
 * from its own distribution, so each logged propensity is exact), and
 * `agentdb evaluate`'s estimators replay that log through candidate
 * policies. The simulator knows mu(x, a) of every candidate, hence the
 * true value V = (1/T) sum_t sum_a pi_t(a|x_t) mu(x_t, a) of each
 * candidate as it learns from the log (see evaluate.c). Per seed, one
 * line of results; then, over the seeds, how often each 95% interval
 * covered V, how often DR's interval was narrower than IPS's, and whether
 * the estimates ranked the candidates as their true values do. */

#define EV_MAX_POL 8

typedef struct evopts {
  uint64_t seed;
  int seeds, json;
  long rounds;
  const char *logger;
  const char *policies[EV_MAX_POL];
  int n_pol;
} evopts;

typedef struct evround {
  const eworld *w;
  int u, d;
  long t;
  const int *cands;
} evround;

static double ev_mu(void *ctx, const adb__log_row *row, int i) {
  const evround *r = ctx;
  (void)row;
  return expected(r->w, r->u, r->d, r->cands[i], r->t);
}

static const char *ev_default_pol[] = {
    "{\"name\":\"tabular\",\"algorithm\":\"beta\",\"context_keys\":"
    "[\"daypart\"],\"fallback_strength\":30}",
    "{\"name\":\"linear\",\"algorithm\":\"linear\",\"context_keys\":"
    "[\"daypart\"]}"};
static const char *ev_default_logger =
    "{\"name\":\"logger\",\"algorithm\":\"beta\",\"fallback_strength\":0}";

static int ev_parse(int argc, char **argv, evopts *o) {
  static const struct option lo[] = {
      {"seed", 1, 0, 's'},     {"seeds", 1, 0, 'n'},
      {"rounds", 1, 0, 'r'},   {"logger", 1, 0, 'l'},
      {"policy", 1, 0, 'p'},   {"json", 0, 0, 'j'},
      {"evaluate", 0, 0, 'e'}, {"workload", 1, 0, 'w'},
      {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c == 's') o->seed = strtoull(optarg, NULL, 10);
    if (c == 'n') o->seeds = atoi(optarg);
    if (c == 'r') o->rounds = atol(optarg);
    if (c == 'l') o->logger = optarg;
    if (c == 'j') o->json = 1;
    if (c == 'p' && o->n_pol < EV_MAX_POL) o->policies[o->n_pol++] = optarg;
    if (c == 'h') {
      usage(stdout);
      return 1;
    }
    if (c == '?') return -1;
  }
  if (o->rounds < 100 || o->seeds < 1) {
    fprintf(stderr, "simulate --evaluate: --rounds N (>= 100), --seeds N "
                    "(>= 1), --seed N, --logger JSON, --policy JSON...\n");
    return -1;
  }
  if (!o->n_pol) {
    o->policies[0] = ev_default_pol[0];
    o->policies[1] = ev_default_pol[1];
    o->n_pol = 2;
  }
  return 0;
}

/* One round's row: the decision as a store would log it. */
typedef struct evrow {
  adb__decision_rec d;
  char ctx[64], cands[E_CANDS * 12 + 4];
  const float *cemb[E_CANDS];
  adb__log_row row;
} evrow;

static void evrow_make(evrow *e, const eworld *w, long t, int u, int d,
                       const int *cands, const float *ue) {
  memset(e, 0, sizeof *e);
  snprintf(e->d.user, sizeof e->d.user, "user-%d", u);
  snprintf(e->d.event_id, sizeof e->d.event_id, "e-%ld", t);
  snprintf(e->ctx, sizeof e->ctx, "{\"daypart\":\"%s\"}", dayparts[d]);
  size_t n = 0;
  n += (size_t)snprintf(e->cands + n, sizeof e->cands - n, "[");
  for (int c = 0; c < E_CANDS; c++) {
    n += (size_t)snprintf(e->cands + n, sizeof e->cands - n, "%s\"item-%d\"",
                          c ? "," : "", cands[c]);
    e->cemb[c] = w->item[cands[c]];
  }
  snprintf(e->cands + n, sizeof e->cands - n, "]");
  snprintf(e->d.action, sizeof e->d.action, "item-%d", cands[0]);
  e->d.context_json = e->ctx;
  e->d.candidates_json = e->cands;
  e->d.ts_ms = (int64_t)t * 1000;
  e->d.propensity = 1;
  e->row = (adb__log_row){.d = &e->d,
                          .outcome = ADB_LOG_REWARD,
                          .n_rewards = 1,
                          .user_emb = ue,
                          .user_dim = E_DIM,
                          .cand_emb = e->cemb,
                          .n_cand = E_CANDS,
                          .cand_dim = E_DIM};
}

static int ev_sample(adb__rng *r, const double *pi, int n) {
  double x = adb__rng_uniform(r), acc = 0;
  for (int i = 0; i < n; i++)
    if (pi[i] > 0 && x <= (acc += pi[i])) return i;
  for (int i = n - 1; i >= 0; i--)
    if (pi[i] > 0) return i;
  return 0;
}

/* One seed: log rounds of the logger, replayed through the candidates. */
static int ev_seed(const evopts *o, uint64_t seed, const adb__eval_policy *pol,
                   const adb__eval_policy *logp, adb__eval_result *res,
                   adb__eval_summary *sum) {
  eworld *w = calloc(1, sizeof *w);
  adb__eval *ev = NULL;
  adb__eval_learner *lg = NULL;
  if (!w) return ADB_ENOMEM;
  eworld_make(w, V_BASE, o->rounds, seed);
  int rc = adb__eval_new(pol, o->n_pol, seed, &ev);
  if (rc == ADB_OK) rc = adb__eval_learner_new(&logp->cfg, seed * 31 + 7, &lg);
  adb__rng wr, nr;
  adb__rng_seed(&wr, seed * 7919 + 11);
  adb__rng_seed(&nr, seed * 7919 + 14);
  evround er = {.w = w};
  if (ev) adb__eval_set_truth(ev, ev_mu, &er);
  char err[256];
  for (long t = 0; t < o->rounds && rc == ADB_OK; t++) {
    int cands[E_CANDS];
    char ids[E_CANDS][16];
    const char *cand_ids[E_CANDS];
    int u = pick_user(w, t, &wr), d = (int)(adb__rng_next(&wr) % E_DAYPARTS);
    draw_cands(&wr, cands, ids, cand_ids);
    float ue[E_DIM];
    user_emb(w, u, t, ue);
    evrow e;
    evrow_make(&e, w, t, u, d, cands, ue);
    double pi[E_CANDS];
    rc = adb__eval_learner_dist(lg, &e.row, pi, err, sizeof err);
    if (rc) break;
    int a = ev_sample(&nr, pi, E_CANDS);
    snprintf(e.d.action, sizeof e.d.action, "item-%d", cands[a]);
    e.d.propensity = pi[a];
    e.row.reward = observe(&nr, expected(w, u, d, cands[a], t));
    er = (evround){.w = w, .u = u, .d = d, .t = t, .cands = cands};
    rc = adb__eval_row(ev, &e.row);
    if (rc == ADB_OK)
      rc = adb__eval_learner_update(lg, &e.row, err, sizeof err);
    if (!o->json && (t + 1) % (o->rounds / 10) == 0)
      fprintf(stderr, "\rsimulate: seed %llu %3ld%%", (unsigned long long)seed,
              (t + 1) * 100 / o->rounds);
  }
  if (rc == ADB_OK) adb__eval_results(ev, res, sum);
  adb__eval_learner_free(lg);
  adb__eval_free(ev);
  free(w);
  return rc;
}

typedef struct evtally {
  int cov[EV_MAX_POL][3]; /* IPS, SNIPS, DR intervals covering V */
  int narrower[EV_MAX_POL];
  int ranked;
} evtally;

static int covers(adb__eval_interval v, double x) {
  return v.lo <= x && x <= v.hi;
}

/* Do the DR estimates order every pair of candidates as their true
 * values do? */
static int ev_ranked(const adb__eval_result *r, int n) {
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if ((r[i].truth > r[j].truth) != (r[i].dr.est > r[j].dr.est)) return 0;
  return 1;
}

static void ev_tally(evtally *t, const adb__eval_result *r, int n) {
  for (int k = 0; k < n; k++) {
    t->cov[k][0] += covers(r[k].ips, r[k].truth);
    t->cov[k][1] += covers(r[k].snips, r[k].truth);
    t->cov[k][2] += covers(r[k].dr, r[k].truth);
    t->narrower[k] += r[k].dr.hi - r[k].dr.lo < r[k].ips.hi - r[k].ips.lo;
  }
  t->ranked += ev_ranked(r, n);
}

static void ev_print_seed(const evopts *o, uint64_t seed,
                          const adb__eval_result *r,
                          const adb__eval_summary *s) {
  if (o->json) {
    char *j = adb__eval_json(r, o->n_pol, s);
    printf("{\"seed\":%llu,\"result\":%s}\n", (unsigned long long)seed,
           j ? j : "null");
    free(j);
    return;
  }
  fprintf(stderr, "\r");
  printf("seed %llu: logged %.4f\n", (unsigned long long)seed, s->logged.est);
  for (int k = 0; k < o->n_pol; k++)
    printf("  %-10s true %.4f  IPS %.4f [%.4f, %.4f]  SNIPS %.4f [%.4f, "
           "%.4f]  DR %.4f [%.4f, %.4f]  ESS %.0f\n",
           r[k].name, r[k].truth, r[k].ips.est, r[k].ips.lo, r[k].ips.hi,
           r[k].snips.est, r[k].snips.lo, r[k].snips.hi, r[k].dr.est,
           r[k].dr.lo, r[k].dr.hi, r[k].ess);
}

static void ev_print_tally(const evopts *o, const adb__eval_policy *pol,
                           const evtally *t) {
  if (o->json) {
    printf("{\"summary\":{\"seeds\":%d,\"rounds\":%ld,\"ranked\":%d,"
           "\"policies\":[",
           o->seeds, o->rounds, t->ranked);
    for (int k = 0; k < o->n_pol; k++)
      printf("%s{\"name\":\"%s\",\"ips_cover\":%d,\"snips_cover\":%d,"
             "\"dr_cover\":%d,\"dr_narrower\":%d}",
             k ? "," : "", pol[k].name, t->cov[k][0], t->cov[k][1],
             t->cov[k][2], t->narrower[k]);
    printf("]}}\n");
    return;
  }
  printf("over %d seeds of %ld rounds: ranked as the true values on %d\n",
         o->seeds, o->rounds, t->ranked);
  printf("%-10s %12s %12s %12s %16s\n", "policy", "IPS covers", "SNIPS covers",
         "DR covers", "DR narrower");
  for (int k = 0; k < o->n_pol; k++)
    printf("%-10s %12d %12d %12d %16d\n", pol[k].name, t->cov[k][0],
           t->cov[k][1], t->cov[k][2], t->narrower[k]);
}

static int simulate_evaluate(int argc, char **argv) {
  evopts o = {
      .seed = 1, .seeds = 1, .rounds = 5000, .logger = ev_default_logger};
  int prc = ev_parse(argc, argv, &o);
  if (prc) return prc > 0 ? 0 : 2;
  adb__eval_policy pol[EV_MAX_POL], logp;
  char err[256];
  for (int k = 0; k <= o.n_pol; k++) {
    const char *src = k < o.n_pol ? o.policies[k] : o.logger;
    adb__eval_policy *p = k < o.n_pol ? &pol[k] : &logp;
    if (adb__eval_policy_parse(src, p, err, sizeof err)) {
      fprintf(stderr, "simulate: %s: %s\n", src, err);
      return 2;
    }
    if (!p->name[0]) snprintf(p->name, sizeof p->name, "policy-%d", k);
  }
  evtally tally = {0};
  for (int s = 0; s < o.seeds; s++) {
    adb__eval_result res[EV_MAX_POL];
    adb__eval_summary sum;
    uint64_t seed = o.seed + (uint64_t)s;
    int rc = ev_seed(&o, seed, pol, &logp, res, &sum);
    if (rc) {
      fprintf(stderr, "simulate: seed %llu: %s\n", (unsigned long long)seed,
              adb_strerror(rc));
      return 1;
    }
    ev_print_seed(&o, seed, res, &sum);
    ev_tally(&tally, res, o.n_pol);
    fflush(stdout);
  }
  ev_print_tally(&o, pol, &tally);
  return 0;
}
