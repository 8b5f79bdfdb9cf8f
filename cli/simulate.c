/*
 * simulate.c — `agentdb simulate`: a seeded synthetic media workload that
 * measures how well AgentDB learns, against baselines on the same stream.
 *
 * The world: items belong to genres and have a quality; each time of day
 * (the context "daypart") has a population-wide taste per genre, and each
 * user a personal taste per genre, both hidden. The expected fraction of an
 * item a user watches is a logistic function of
 *     daypart_taste[genre] + user_taste[genre] + quality,
 * and the observed fraction is a Beta draw with that mean. Each round a
 * user (Zipf-distributed activity) arrives at a daypart with 20 candidates
 * drawn from the catalogue, and each policy picks one:
 *   - agentdb: adb_decide + adb_reward (by event id) through the public API
 *     on the embedded store, states keyed by daypart;
 *   - random: uniform over the candidates;
 *   - epsilon-greedy (eps 0.1): per-(user, daypart, item) mean reward when
 *     the user has seen the item there, else the per-(daypart, item) mean;
 *   - oracle: the candidate with the highest expected reward.
 * All policies see the same users, dayparts, candidates and reward noise
 * (each policy's reward noise comes from its own stream seeded alike), and
 * the score is mean reward as a share of the oracle's.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "cli.h"

#define GENRES 6
#define DAYPARTS 4
#define CANDS 20

typedef struct world {
  int n_items, n_users;
  int *genre;
  double *quality;
  double taste_day[DAYPARTS][GENRES];
  double *taste_user; /* n_users * GENRES */
  double *zipf_cdf;
} world;

typedef struct egreedy {
  double *sum_g, *n_g; /* [daypart][item] */
  double *sum_u, *n_u; /* [user][daypart][item] */
} egreedy;

static const char *daypart_names[DAYPARTS] = {"morning", "afternoon", "evening",
                                              "night"};

static double expected_reward(const world *w, int u, int d, int item) {
  int g = w->genre[item];
  double x =
      w->taste_day[d][g] + w->taste_user[u * GENRES + g] + w->quality[item];
  return 1.0 / (1.0 + exp(-(1.5 * x - 0.5)));
}

static double observe(adb__rng *r, double mean) {
  const double conc = 0.5; /* U-shaped: most viewers finish or abandon */
  double v = adb__rng_beta(r, mean * conc + 1e-3, (1 - mean) * conc + 1e-3);
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

static int world_make(world *w, int n_items, int n_users, uint64_t seed) {
  adb__rng r;
  adb__rng_seed(&r, seed);
  w->n_items = n_items;
  w->n_users = n_users;
  w->genre = malloc((size_t)n_items * sizeof *w->genre);
  w->quality = malloc((size_t)n_items * sizeof *w->quality);
  w->taste_user = malloc((size_t)n_users * GENRES * sizeof *w->taste_user);
  w->zipf_cdf = malloc((size_t)n_users * sizeof *w->zipf_cdf);
  if (!w->genre || !w->quality || !w->taste_user || !w->zipf_cdf) return -1;
  for (int i = 0; i < n_items; i++) {
    w->genre[i] = i % GENRES;
    w->quality[i] = 0.5 * adb__rng_normal(&r);
  }
  for (int d = 0; d < DAYPARTS; d++)
    for (int g = 0; g < GENRES; g++)
      w->taste_day[d][g] = adb__rng_normal(&r);
  for (int i = 0; i < n_users * GENRES; i++)
    w->taste_user[i] = adb__rng_normal(&r);
  double total = 0;
  for (int u = 0; u < n_users; u++)
    total += 1.0 / pow(u + 1, 0.8);
  double acc = 0;
  for (int u = 0; u < n_users; u++) {
    acc += 1.0 / pow(u + 1, 0.8) / total;
    w->zipf_cdf[u] = acc;
  }
  return 0;
}

static void world_free(world *w) {
  free(w->genre);
  free(w->quality);
  free(w->taste_user);
  free(w->zipf_cdf);
}

static int pick_user(const world *w, adb__rng *r) {
  double x = adb__rng_uniform(r);
  int lo = 0, hi = w->n_users - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (w->zipf_cdf[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int egreedy_pick(const egreedy *e, const world *w, adb__rng *r, int u,
                        int d, const int *cands) {
  if (adb__rng_uniform(r) < 0.1) return (int)(adb__rng_next(r) % CANDS);
  int best = 0;
  double best_v = -1;
  for (int c = 0; c < CANDS; c++) {
    size_t gi = (size_t)d * w->n_items + cands[c];
    size_t ui = ((size_t)u * DAYPARTS + d) * w->n_items + cands[c];
    double v = e->n_u[ui] > 0   ? e->sum_u[ui] / e->n_u[ui]
               : e->n_g[gi] > 0 ? e->sum_g[gi] / e->n_g[gi]
                                : 1.0; /* optimistic for the unseen */
    if (v > best_v) best_v = v, best = c;
  }
  return best;
}

static void egreedy_learn(egreedy *e, const world *w, int u, int d, int item,
                          double reward) {
  size_t gi = (size_t)d * w->n_items + item;
  size_t ui = ((size_t)u * DAYPARTS + d) * w->n_items + item;
  e->sum_g[gi] += reward;
  e->n_g[gi] += 1;
  e->sum_u[ui] += reward;
  e->n_u[ui] += 1;
}

typedef struct sim_opts {
  double fallback;
  int gaussian;
  uint64_t seed;
  long rounds;
  int users, items;
  const char *store, *csv;
} sim_opts;

static int setup_agent(adb *db, const world *w, double fallback, int gaussian) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  if (gaussian) {
    cfg.algorithm = ADB_ALGO_GAUSSIAN;
    cfg.prior_mu = 0.5;
    cfg.prior_kappa = 1;
    cfg.prior_a = 1;
    cfg.prior_b = 0.05;
  }
  if (fallback >= 0) cfg.fallback_strength = fallback;
  snprintf(cfg.id, sizeof cfg.id, "sim");
  cfg.n_context_keys = 1;
  snprintf(cfg.context_keys[0], sizeof cfg.context_keys[0], "daypart");
  int rc = adb_agent_put(db, &cfg);
  if (rc) return rc;
  adb_action *acts = calloc((size_t)w->n_items, sizeof *acts);
  char(*ids)[16] = calloc((size_t)w->n_items, sizeof *ids);
  if (!acts || !ids) return ADB_ENOMEM;
  for (int i = 0; i < w->n_items; i++) {
    snprintf(ids[i], sizeof ids[i], "item-%d", i);
    acts[i].id = ids[i];
  }
  rc = adb_actions_put(db, "sim", acts, w->n_items);
  free(acts);
  free(ids);
  return rc;
}

/* One AgentDB round: decide, then report the observed reward. */
static int agentdb_round(adb *db, const char *user, int d,
                         const char *const *cand_ids, adb__rng *noise,
                         const world *w, int u, const int *cands,
                         double *reward) {
  adb_kv ctx = {"daypart", daypart_names[d]};
  adb_decide_req req = {.agent_id = "sim",
                        .user_id = user,
                        .candidates = cand_ids,
                        .n_candidates = CANDS,
                        .context = &ctx,
                        .n_context = 1};
  adb_decision dec = {0};
  int rc;
  /* A full write queue means "slow down": wait for the store, retry. */
  while ((rc = adb_decide(db, &req, &dec)) == ADB_EFULL)
    adb_flush(db);
  if (rc) return rc;
  int item = atoi(dec.action + 5);
  (void)cands;
  *reward = observe(noise, expected_reward(w, u, d, item));
  char rid[160];
  snprintf(rid, sizeof rid, "r-%s", dec.event_id);
  adb_reward_req rr = {.agent_id = "sim",
                       .reward_id = rid,
                       .event_id = dec.event_id,
                       .has_reward = 1,
                       .reward = *reward};
  while ((rc = adb_reward(db, &rr, NULL)) == ADB_EFULL)
    adb_flush(db);
  return rc;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: agentdb simulate [options]\n"
          "  --seed N      workload seed (default 1)\n"
          "  --rounds N    decisions per policy (default 300000)\n"
          "  --users N     users (default 200)\n"
          "  --items N     catalogue size (default 60)\n"
          "  --store URL   store (default: a temporary SQLite file)\n"
          "  --csv FILE    write the learning curve (per 1%% of rounds)\n"
          "  --fallback-strength N  pseudo-observations a user borrows from\n"
          "                the agent-wide posterior (default 30)\n"
          "  --algorithm beta|gaussian  the agent's posterior (default beta)\n"
          "  --workload embed  the embedding workload (linear vs tabular TS,\n"
          "                and --evaluate): agentdb simulate --workload embed "
          "--help\n");
}

static int parse(int argc, char **argv, sim_opts *o) {
  static const struct option lo[] = {{"seed", 1, 0, 's'},
                                     {"rounds", 1, 0, 'r'},
                                     {"users", 1, 0, 'u'},
                                     {"items", 1, 0, 'i'},
                                     {"store", 1, 0, 'S'},
                                     {"csv", 1, 0, 'c'},
                                     {"fallback-strength", 1, 0, 'f'},
                                     {"algorithm", 1, 0, 'a'},
                                     {"help", 0, 0, 'h'},
                                     {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 's':
      o->seed = strtoull(optarg, NULL, 10);
      break;
    case 'r':
      o->rounds = atol(optarg);
      break;
    case 'u':
      o->users = atoi(optarg);
      break;
    case 'i':
      o->items = atoi(optarg);
      break;
    case 'S':
      o->store = optarg;
      break;
    case 'c':
      o->csv = optarg;
      break;
    case 'f':
      o->fallback = atof(optarg);
      break;
    case 'a':
      o->gaussian = !strcmp(optarg, "gaussian");
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      usage(stderr);
      return -1;
    }
  }
  if (o->rounds < 100 || o->users < 1 || o->items < CANDS) {
    fprintf(stderr,
            "simulate: need --rounds >= 100, --users >= 1, "
            "--items >= %d\n",
            CANDS);
    return -1;
  }
  return 0;
}

int cli_simulate(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--workload") && !strcmp(argv[i + 1], "embed"))
      return cli_simulate_embed(argc, argv);
  sim_opts o = {
      .fallback = 30, .seed = 1, .rounds = 300000, .users = 200, .items = 60};
  if (parse(argc, argv, &o)) return 2;
  char tmpdb[256] = "", url[512];
  if (!o.store) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdb, sizeof tmpdb, "%s/agentdb-sim-%d.db", tmp, (int)getpid());
    snprintf(url, sizeof url, "sqlite://%s?synchronous=normal", tmpdb);
    o.store = url;
  }
  world w;
  if (world_make(&w, o.items, o.users, o.seed)) return 1;
  size_t gsz = (size_t)DAYPARTS * o.items,
         usz = (size_t)o.users * DAYPARTS * o.items;
  egreedy e = {calloc(gsz, 8), calloc(gsz, 8), calloc(usz, 8), calloc(usz, 8)};
  FILE *csv = o.csv ? fopen(o.csv, "w") : NULL;
  if (!e.sum_g || !e.n_g || !e.sum_u || !e.n_u || (o.csv && !csv)) {
    fprintf(stderr, "simulate: out of memory or cannot write %s\n",
            o.csv ? o.csv : "");
    return 1;
  }
  adb_config cfg = {
      .store_url = o.store, .durability = ADB_DURABILITY_ASYNC, .seed = o.seed};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc == ADB_OK) rc = setup_agent(db, &w, o.fallback, o.gaussian);
  if (rc) {
    fprintf(stderr, "simulate: %s\n", db ? adb_errmsg(db) : err);
    adb_close(db);
    return 1;
  }
  printf("simulate: seed %llu, %ld rounds, %d users, %d items, %d candidates, "
         "store %s\n",
         (unsigned long long)o.seed, o.rounds, o.users, o.items, CANDS,
         o.store);
  if (csv) fprintf(csv, "round,agentdb,random,egreedy,oracle\n");
  adb__rng world_rng, pick_rng, n_adb, n_rand, n_eg, n_or;
  adb__rng_seed(&world_rng, o.seed * 7919 + 1);
  adb__rng_seed(&pick_rng, o.seed * 7919 + 2);
  double tot[4] = {0}, win[4] = {0};
  int cands[CANDS];
  char ids[CANDS][16];
  const char *cand_ids[CANDS];
  long step = o.rounds / 100 > 0 ? o.rounds / 100 : 1;
  for (long t = 0; t < o.rounds && rc == ADB_OK; t++) {
    int u = pick_user(&w, &world_rng);
    int d = (int)(adb__rng_next(&world_rng) % DAYPARTS);
    for (int c = 0; c < CANDS; c++) { /* distinct candidates */
      int item, dup;
      do {
        item = (int)(adb__rng_next(&world_rng) % (uint64_t)o.items);
        dup = 0;
        for (int j = 0; j < c; j++)
          dup |= cands[j] == item;
      } while (dup);
      cands[c] = item;
      snprintf(ids[c], sizeof ids[c], "item-%d", item);
      cand_ids[c] = ids[c];
    }
    /* The same noise seed per round for every policy. */
    uint64_t ns = adb__rng_next(&world_rng);
    adb__rng_seed(&n_adb, ns);
    adb__rng_seed(&n_rand, ns);
    adb__rng_seed(&n_eg, ns);
    adb__rng_seed(&n_or, ns);
    char user[32];
    snprintf(user, sizeof user, "user-%d", u);
    double r[4] = {0, 0, 0, 0};
    rc = agentdb_round(db, user, d, cand_ids, &n_adb, &w, u, cands, &r[0]);
    int rnd = cands[adb__rng_next(&pick_rng) % CANDS];
    r[1] = observe(&n_rand, expected_reward(&w, u, d, rnd));
    int eg = cands[egreedy_pick(&e, &w, &pick_rng, u, d, cands)];
    r[2] = observe(&n_eg, expected_reward(&w, u, d, eg));
    egreedy_learn(&e, &w, u, d, eg, r[2]);
    int best = cands[0];
    for (int c = 1; c < CANDS; c++)
      if (expected_reward(&w, u, d, cands[c]) > expected_reward(&w, u, d, best))
        best = cands[c];
    r[3] = observe(&n_or, expected_reward(&w, u, d, best));
    for (int p = 0; p < 4; p++)
      tot[p] += r[p], win[p] += r[p];
    if ((t + 1) % step == 0) {
      if (csv)
        fprintf(csv, "%ld,%.5f,%.5f,%.5f,%.5f\n", t + 1, win[0] / step,
                win[1] / step, win[2] / step, win[3] / step);
      memset(win, 0, sizeof win);
      if ((t + 1) % (step * 10) == 0)
        fprintf(stderr,
                "simulate: %3ld%% (%ld rounds)  agentdb %.3f  random %.3f  "
                "epsilon-greedy %.3f  oracle %.3f\n",
                (t + 1) * 100 / o.rounds, t + 1, tot[0] / (t + 1),
                tot[1] / (t + 1), tot[2] / (t + 1), tot[3] / (t + 1));
    }
  }
  if (rc) fprintf(stderr, "simulate: %s\n", adb_errmsg(db));
  adb_stats st;
  adb_flush(db);
  adb_stats_get(db, &st);
  adb_close(db);
  if (tmpdb[0]) {
    char p[300];
    unlink(tmpdb);
    snprintf(p, sizeof p, "%s-wal", tmpdb);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", tmpdb);
    unlink(p);
  }
  if (csv) fclose(csv);
  if (rc == ADB_OK) {
    const char *names[4] = {"agentdb (thompson)", "epsilon-greedy (0.1)",
                            "uniform random", "oracle"};
    int order[4] = {0, 2, 1, 3};
    printf("%-22s %12s %14s\n", "policy", "mean reward", "% of oracle");
    for (int i = 0; i < 4; i++) {
      int p = order[i];
      printf("%-22s %12.4f %13.1f%%\n", names[i], tot[p] / o.rounds,
             100.0 * tot[p] / tot[3]);
    }
    printf("agentdb: %lld decisions, %lld rewards applied, cache hit rate "
           "%.1f%%\n",
           (long long)st.decisions, (long long)st.rewards_applied,
           100.0 * st.cache_hits /
               (st.cache_hits + st.cache_misses
                    ? st.cache_hits + st.cache_misses
                    : 1));
  }
  free(e.sum_g);
  free(e.n_g);
  free(e.sum_u);
  free(e.n_u);
  world_free(&w);
  return rc ? 1 : 0;
}
