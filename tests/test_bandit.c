/*
 * test_bandit.c — the bandit core: RNG and variates, conjugate posteriors,
 * Thompson selection and ranking, propensities, the engagement reward.
 *
 * Statistical tests use fixed seeds and bounds from the math: a sample mean
 * within 4 standard errors of the true mean (SE = sigma / sqrt(N)), a
 * sample variance within 4 SE of the true variance (SE = sqrt((mu4 -
 * sigma^4) / N), mu4 the fourth central moment, exact where known and the
 * sample's own otherwise). Propensities must be within 0.02 of a
 * 100,000-draw Monte Carlo estimate (its SE is at most 0.0016).
 * ADB_TEST_QUICK=1 (sanitizer runs) shrinks N to 20,000; the bounds still
 * follow from the same formulas.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bandit.h"
#include "propmemo.h"

static int quick(void) {
  return getenv("ADB_TEST_QUICK") != NULL;
}

static int n_samples(void) {
  return quick() ? 20000 : 200000;
}

static int mc_draws(void) {
  return quick() ? 20000 : 100000;
}

/* --------------------------------------------------------------- helpers */

typedef struct moments {
  double mean, var, m4; /* sample mean, variance, 4th central moment */
} moments;

static moments sample_moments(const double *x, int n) {
  moments m = {0, 0, 0};
  for (int i = 0; i < n; i++)
    m.mean += x[i];
  m.mean /= n;
  for (int i = 0; i < n; i++) {
    double d = x[i] - m.mean, d2 = d * d;
    m.var += d2;
    m.m4 += d2 * d2;
  }
  m.var /= n - 1;
  m.m4 /= n;
  return m;
}

/* Mean and variance within 4 standard errors; mu4 < 0: use the sample's. */
static void assert_moments(const double *x, int n, double mean, double var,
                           double mu4) {
  moments m = sample_moments(x, n);
  if (mu4 < 0) mu4 = m.m4;
  double se_mean = sqrt(var / n), se_var = sqrt((mu4 - var * var) / n);
  if (fabs(m.mean - mean) > 4 * se_mean || fabs(m.var - var) > 4 * se_var)
    print_error("mean %.6g (want %.6g +- %.2g), var %.6g (want %.6g +- "
                "%.2g)\n",
                m.mean, mean, 4 * se_mean, m.var, var, 4 * se_var);
  assert_true(fabs(m.mean - mean) <= 4 * se_mean);
  assert_true(fabs(m.var - var) <= 4 * se_var);
}

static adb__posterior beta_arm(double a, double b) {
  adb__posterior p;
  memset(&p, 0, sizeof p);
  p.algo = ADB_ALGO_BETA;
  p.alpha = a;
  p.beta = b;
  return p;
}

static adb__posterior nig_arm(double mu, double kappa, double a, double b) {
  adb__posterior p;
  memset(&p, 0, sizeof p);
  p.algo = ADB_ALGO_GAUSSIAN;
  p.mu = mu;
  p.kappa = kappa;
  p.a = a;
  p.b = b;
  return p;
}

/* The documented defaults, filled by hand (adb_agent_config_init lives
 * elsewhere). */
static void config_defaults(adb_agent_config *cfg, adb_algorithm algo) {
  memset(cfg, 0, sizeof *cfg);
  cfg->algorithm = algo;
  cfg->prior_alpha = cfg->prior_beta = 1.0;
  cfg->prior_mu = 0.0;
  cfg->prior_kappa = cfg->prior_a = cfg->prior_b = 1.0;
  cfg->fallback_strength = 10.0;
  cfg->reward_window_s = 86400.0;
  adb__reward_weights_default(&cfg->reward_weights);
}

static adb__arm_stats stats_of(int64_t n, double sum, double sum_sq) {
  adb__arm_stats s = {n, adb__reward_to_micro(sum), sum_sq, 0};
  return s;
}

/* ------------------------------------------------------------------ RNG */

static void rng_same_seed_same_sequence(void **state) {
  (void)state;
  adb__rng a, b, c;
  adb__rng_seed(&a, 42);
  adb__rng_seed(&b, 42);
  adb__rng_seed(&c, 43);
  int differ = 0;
  for (int i = 0; i < 1000; i++) {
    uint64_t x = adb__rng_next(&a);
    assert_int_equal(x, adb__rng_next(&b));
    differ += x != adb__rng_next(&c);
  }
  assert_true(differ > 990);
}

/* Reference values of xoshiro256** from a state set by hand, computed
 * from the published algorithm: s = {1, 2, 3, 4}. */
static void rng_matches_xoshiro256starstar(void **state) {
  (void)state;
  adb__rng r = {{1, 2, 3, 4}};
  /* result = rotl(s1 * 5, 7) * 9 with s1 = 2: rotl(10, 7) * 9 = 11520 */
  assert_int_equal(adb__rng_next(&r), 11520);
  /* after one step s = {7, 0, 262146, 211106232532992} */
  assert_int_equal(r.s[0], 7);
  assert_int_equal(r.s[1], 0);
  assert_int_equal(r.s[2], 262146);
  assert_int_equal(r.s[3], 211106232532992ULL);
  assert_int_equal(adb__rng_next(&r), 0);
}

static void uniform_is_open_unit_interval_with_uniform_moments(void **state) {
  (void)state;
  int n = n_samples();
  double *x = malloc(n * sizeof *x);
  adb__rng r;
  adb__rng_seed(&r, 1);
  double lo = 1, hi = 0;
  for (int i = 0; i < n; i++) {
    x[i] = adb__rng_uniform(&r);
    lo = fmin(lo, x[i]);
    hi = fmax(hi, x[i]);
  }
  assert_true(lo > 0.0 && hi < 1.0);
  assert_moments(x, n, 0.5, 1.0 / 12, 1.0 / 80);
  free(x);
}

static void normal_has_standard_moments(void **state) {
  (void)state;
  int n = n_samples();
  double *x = malloc(n * sizeof *x);
  adb__rng r;
  adb__rng_seed(&r, 2);
  for (int i = 0; i < n; i++)
    x[i] = adb__rng_normal(&r);
  assert_moments(x, n, 0.0, 1.0, 3.0);
  free(x);
}

/* The ziggurat's tail beyond 3.4426 takes a separate path: its frequency
 * must be erfc(3.4426 / sqrt 2) = 5.76e-4 (binomial SE). */
static void normal_tail_beyond_ziggurat_base_has_right_mass(void **state) {
  (void)state;
  int n = quick() ? 200000 : 2000000, k = 0;
  const double r0 = 3.442619855899, p = erfc(r0 / sqrt(2.0));
  adb__rng r;
  adb__rng_seed(&r, 3);
  for (int i = 0; i < n; i++)
    k += fabs(adb__rng_normal(&r)) > r0;
  double se = sqrt(p * (1 - p) / n);
  assert_true(fabs((double)k / n - p) <= 4 * se);
}

static void gamma_has_mean_and_variance_k(void **state) {
  (void)state;
  static const double shapes[] = {0.3, 1.0, 2.5, 50.0};
  int n = n_samples();
  double *x = malloc(n * sizeof *x);
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    double k = shapes[s];
    adb__rng r;
    adb__rng_seed(&r, 10 + s);
    for (int i = 0; i < n; i++)
      x[i] = adb__rng_gamma(&r, k);
    /* Gamma(k): variance k, fourth central moment 3k^2 + 6k */
    assert_moments(x, n, k, k, 3 * k * k + 6 * k);
  }
  free(x);
}

static void beta_has_its_mean_and_variance(void **state) {
  (void)state;
  static const double ab[][2] = {
      {0.5, 0.5}, {2, 5}, {30, 70}, {0.2, 3}, {1500, 8500}};
  int n = n_samples();
  double *x = malloc(n * sizeof *x);
  for (size_t s = 0; s < sizeof ab / sizeof *ab; s++) {
    double a = ab[s][0], b = ab[s][1], t = a + b;
    adb__rng r;
    adb__rng_seed(&r, 20 + s);
    for (int i = 0; i < n; i++) {
      x[i] = adb__rng_beta(&r, a, b);
      assert_true(x[i] >= 0.0 && x[i] <= 1.0);
    }
    assert_moments(x, n, a / t, a * b / (t * t * (t + 1)), -1);
  }
  free(x);
}

static void variates_reject_bad_shapes_with_nan(void **state) {
  (void)state;
  adb__rng r;
  adb__rng_seed(&r, 4);
  assert_true(isnan(adb__rng_gamma(&r, 0.0)));
  assert_true(isnan(adb__rng_gamma(&r, -1.0)));
  assert_true(isnan(adb__rng_gamma(&r, NAN)));
  assert_true(isnan(adb__rng_beta(&r, 0.0, 1.0)));
  assert_true(isnan(adb__rng_beta(&r, 1.0, INFINITY)));
}

/* ----------------------------------------------------------- posteriors */

static void reward_to_micro_rounds_exactly(void **state) {
  (void)state;
  assert_int_equal(adb__reward_to_micro(0.5), 500000);
  assert_int_equal(adb__reward_to_micro(1.0), 1000000);
  assert_int_equal(adb__reward_to_micro(1e-6), 1);
  assert_int_equal(adb__reward_to_micro(0.1), 100000);
  assert_int_equal(adb__reward_to_micro(2.0 / 3), 666667);
  assert_int_equal(adb__reward_to_micro(-0.25), -250000);
  assert_int_equal(adb__reward_to_micro(-2.0 / 3), -666667);
  assert_int_equal(adb__reward_to_micro(0.0), 0);
}

static void beta_posterior_adds_successes_and_failures(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_BETA);
  cfg.prior_alpha = 2;
  cfg.prior_beta = 3;
  adb__arm_stats u = stats_of(10, 7.5, 0);
  adb__posterior p;
  adb__posterior_make(&cfg, &u, NULL, &p);
  assert_int_equal(p.algo, ADB_ALGO_BETA);
  assert_true(p.alpha == 9.5 && p.beta == 5.5);
  assert_true(adb__posterior_mean(&p) == 9.5 / 15);
  adb__posterior_make(&cfg, NULL, NULL, &p);
  assert_true(p.alpha == 2 && p.beta == 3);
}

static void beta_posterior_borrows_at_most_fallback_strength(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_BETA); /* fallback_strength 10 */
  adb__arm_stats u = stats_of(4, 1, 0), g = stats_of(1000, 300, 0);
  adb__posterior p;
  /* the others' 996 rewards (299 successes) at w = 10 / 996 */
  adb__posterior_make(&cfg, &u, &g, &p);
  assert_true(fabs(p.alpha - (1 + 1 + 299 * 10.0 / 996)) < 1e-12);
  assert_true(fabs(p.beta - (1 + 3 + 697 * 10.0 / 996)) < 1e-12);
  /* fewer others' observations than the strength: all borrowed (w = 1) */
  g = stats_of(7, 3, 0);
  adb__posterior_make(&cfg, &u, &g, &p);
  assert_true(p.alpha == 1 + 1 + 2 && p.beta == 1 + 3 + 1);
  g = stats_of(5, 2, 0);
  /* a new user sees the prior plus the borrowed global evidence */
  adb__posterior_make(&cfg, NULL, &g, &p);
  assert_true(p.alpha == 3 && p.beta == 4);
}

static void
beta_posterior_borrows_nothing_when_disabled_or_empty(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_BETA);
  adb__arm_stats u = stats_of(4, 1, 0), g = stats_of(1000, 300, 0);
  adb__posterior p;
  cfg.fallback_strength = -1;
  adb__posterior_make(&cfg, &u, &g, &p);
  assert_true(p.alpha == 2 && p.beta == 4);
  cfg.fallback_strength = 10;
  g = stats_of(0, 0, 0);
  adb__posterior_make(&cfg, &u, &g, &p);
  assert_true(p.alpha == 2 && p.beta == 4);
}

/* The agent-wide row already holds the user's own rewards: a user who is
 * the agent's only source of evidence borrows nothing (issue 9), and one
 * whose rewards are half of '*' borrows only the other half. */
static void posterior_does_not_borrow_the_users_own_rewards(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_BETA);
  adb__arm_stats u = stats_of(6, 4, 0), g = stats_of(6, 4, 0);
  adb__posterior p, q;
  adb__posterior_make(&cfg, &u, &g, &p);
  adb__posterior_make(&cfg, &u, NULL, &q);
  assert_true(p.alpha == q.alpha && p.beta == q.beta);
  assert_true(p.alpha == 5 && p.beta == 3);
  g = stats_of(12, 5, 0); /* others: 6 rewards summing to 1 */
  adb__posterior_make(&cfg, &u, &g, &p);
  assert_true(p.alpha == 1 + 4 + 1 && p.beta == 1 + 2 + 5);
  g = stats_of(3, 1, 0); /* a stale '*' behind the user's row */
  adb__posterior_make(&cfg, &u, &g, &p);
  assert_true(p.alpha == 5 && p.beta == 3);
  config_defaults(&cfg, ADB_ALGO_GAUSSIAN);
  u = stats_of(4, 10, 30);
  g = stats_of(4, 10, 30);
  adb__posterior_make(&cfg, &u, &g, &p);
  adb__posterior_make(&cfg, &u, NULL, &q);
  assert_true(p.kappa == q.kappa && p.mu == q.mu && p.a == q.a && p.b == q.b);
  g = stats_of(24, 90, 350); /* others: 20 rewards of 4.0 */
  adb__posterior_make(&cfg, &u, &g, &p);
  /* w = 1/2: n = 4 + 10, S = 10 + 40, kappa 15, a = 1 + 7 */
  assert_true(fabs(p.kappa - 15) < 1e-12 && fabs(p.mu - 50.0 / 15) < 1e-12);
  assert_true(fabs(p.a - 8) < 1e-12);
}

/* Rewards 1, 2, 3, 4 under NIG(0, 1, 1, 1): kappa 5, mu 2, a 3 and
 * b = 1 + (30 - 100/4)/2 + 1*4*(2.5 - 0)^2/(2*5) = 6. */
static void gaussian_posterior_is_normal_inverse_gamma_update(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_GAUSSIAN);
  adb__arm_stats u = stats_of(4, 10, 30);
  adb__posterior p;
  adb__posterior_make(&cfg, &u, NULL, &p);
  assert_int_equal(p.algo, ADB_ALGO_GAUSSIAN);
  assert_true(fabs(p.kappa - 5) < 1e-12 && fabs(p.mu - 2) < 1e-12);
  assert_true(fabs(p.a - 3) < 1e-12 && fabs(p.b - 6) < 1e-12);
  assert_true(fabs(adb__posterior_mean(&p) - 2) < 1e-12);
  adb__posterior_make(&cfg, NULL, NULL, &p);
  assert_true(p.kappa == 1 && p.mu == 0 && p.a == 1 && p.b == 1);
}

/* Borrowing 10 of 20 global rewards (all 4.0) at w = 1/2: n = 10,
 * S = 40, Q = 160, so kappa 11, mu 40/11, a 6, b = 1 + 0 + 10*16/22. */
static void gaussian_posterior_borrows_scaled_global_stats(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_GAUSSIAN);
  adb__arm_stats g = stats_of(20, 80, 320);
  adb__posterior p;
  adb__posterior_make(&cfg, NULL, &g, &p);
  assert_true(fabs(p.kappa - 11) < 1e-12);
  assert_true(fabs(p.mu - 40.0 / 11) < 1e-12);
  assert_true(fabs(p.a - 6) < 1e-12);
  assert_true(fabs(p.b - (1 + 160.0 / 22)) < 1e-9);
}

/* The Thompson draw of a NIG arm is Student-t: location mu, variance
 * b / ((a - 1) kappa) for a > 2 (fourth moment finite for nu = 2a > 4). */
static void gaussian_posterior_sample_has_student_t_moments(void **state) {
  (void)state;
  adb__posterior p = nig_arm(2.0, 5.0, 3.0, 6.0);
  int n = n_samples();
  double *x = malloc(n * sizeof *x);
  adb__rng r;
  adb__rng_seed(&r, 5);
  for (int i = 0; i < n; i++)
    x[i] = adb__posterior_sample(&r, &p);
  /* scale^2 = b / (a kappa) = 0.4, sigma^2 = 0.4 nu / (nu - 2) = 0.6,
   * excess kurtosis 6 / (nu - 4) = 3: mu4 = 6 sigma^4 */
  assert_moments(x, n, 2.0, 0.6, 6 * 0.36);
  free(x);
}

/* ------------------------------------------------- selection and ranking */

/* Five Bernoulli arms with means 0.1..0.5 from Beta(1,1); rewards drawn
 * with the RNG. Thompson sampling's regret is logarithmic, so late in the
 * run the best arm is pulled almost always (about 99% here). */
static void thompson_finds_best_of_five_bernoulli_arms(void **state) {
  (void)state;
  static const double means[5] = {0.1, 0.2, 0.3, 0.4, 0.5};
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_BETA);
  adb__arm_stats st[5];
  memset(st, 0, sizeof st);
  adb__posterior post[5];
  adb__rng r;
  adb__rng_seed(&r, 6);
  int best_late = 0;
  for (int round = 0; round < 10000; round++) {
    for (int i = 0; i < 5; i++)
      adb__posterior_make(&cfg, &st[i], NULL, &post[i]);
    int c = adb__thompson_select(&r, post, 5, NULL, NULL);
    assert_in_range(c, 0, 4);
    if (round >= 9000) best_late += c == 4;
    double reward = adb__rng_uniform(&r) < means[c] ? 1.0 : 0.0;
    st[c].n++;
    st[c].sum_micro += adb__reward_to_micro(reward);
  }
  assert_true(best_late >= 950);
}

static void thompson_skips_ineligible_arms(void **state) {
  (void)state;
  adb__posterior arms[4] = {beta_arm(1000, 1), beta_arm(1, 1), beta_arm(900, 1),
                            beta_arm(1, 1000)};
  uint8_t el[4] = {0, 1, 0, 1};
  double scores[4];
  adb__rng r;
  adb__rng_seed(&r, 7);
  for (int i = 0; i < 1000; i++) {
    int c = adb__thompson_select(&r, arms, 4, el, scores);
    assert_true(c == 1 || c == 3);
    assert_true(isinf(scores[0]) && scores[0] < 0);
    assert_true(isinf(scores[2]) && scores[2] < 0);
    assert_true(scores[c] >= scores[1] && scores[c] >= scores[3]);
  }
  uint8_t none[4] = {0, 0, 0, 0};
  assert_int_equal(adb__thompson_select(&r, arms, 4, none, scores), -1);
}

static void rank_topk_orders_best_first_ties_by_index(void **state) {
  (void)state;
  const double s[] = {0.3, 0.9, 0.5, 0.9, NAN, 0.1, 0.5};
  int idx[7];
  assert_int_equal(adb__rank_topk(s, 7, 4, idx), 4);
  assert_int_equal(idx[0], 1);
  assert_int_equal(idx[1], 3);
  assert_int_equal(idx[2], 2);
  assert_int_equal(idx[3], 6);
  assert_int_equal(adb__rank_topk(s, 7, 10, idx), 7); /* k capped at n */
  assert_int_equal(idx[5], 5);
  assert_int_equal(idx[6], 4); /* NaN last */
  assert_int_equal(adb__rank_topk(s, 7, 0, idx), 0);
}

static int by_score_desc(const void *a, const void *b, const double *s) {
  int i = *(const int *)a, j = *(const int *)b;
  if (s[i] != s[j]) return s[i] > s[j] ? -1 : 1;
  return i - j;
}

static const double *sort_scores;
static int cmp_idx(const void *a, const void *b) {
  return by_score_desc(a, b, sort_scores);
}

static void rank_topk_agrees_with_full_sort(void **state) {
  (void)state;
  enum { N = 1000 };
  static double s[N];
  static int all[N], idx[N];
  adb__rng r;
  adb__rng_seed(&r, 8);
  for (int i = 0; i < N; i++) {
    s[i] = (double)(adb__rng_next(&r) % 200); /* many ties */
    all[i] = i;
  }
  sort_scores = s;
  qsort(all, N, sizeof *all, cmp_idx);
  static const int ks[] = {1, 5, 20, 1000};
  for (size_t t = 0; t < sizeof ks / sizeof *ks; t++) {
    assert_int_equal(adb__rank_topk(s, N, ks[t], idx), ks[t]);
    for (int i = 0; i < ks[t]; i++)
      assert_int_equal(idx[i], all[i]);
  }
}

/* ---------------------------------------------------------- propensity */

static double propensity_sum(const adb__posterior *arms, int n);

/* Every eligible arm within 0.02 of adb__propensity_mc; ineligible ones 0. */
static void check_against_mc(const adb__posterior *arms, int n,
                             const uint8_t *el, uint64_t seed) {
  adb__rng r;
  adb__rng_seed(&r, seed);
  for (int c = 0; c < n; c++) {
    double p = adb__propensity(arms, n, el, c);
    if (el && !el[c]) {
      assert_true(p == 0.0);
      continue;
    }
    double mc = adb__propensity_mc(&r, arms, n, el, c, mc_draws());
    if (fabs(p - mc) > 0.02)
      print_error("arm %d of %d: propensity %.4f, Monte Carlo %.4f\n", c, n, p,
                  mc);
    assert_true(fabs(p - mc) <= 0.02);
  }
}

static void propensity_matches_mc_uniform_priors_20_arms(void **state) {
  (void)state;
  adb__posterior arms[20];
  for (int i = 0; i < 20; i++)
    arms[i] = beta_arm(1, 1);
  check_against_mc(arms, 20, NULL, 100);
  for (int i = 0; i < 20; i++) /* exactly 1/20 each, by symmetry */
    assert_true(fabs(adb__propensity(arms, 20, NULL, i) - 0.05) <= 0.005);
}

/* Flat but distinct arms (no symmetry shortcut): the quadrature itself. */
static void propensity_matches_mc_nearly_uniform_20_arms(void **state) {
  (void)state;
  adb__posterior arms[20];
  for (int i = 0; i < 20; i++)
    arms[i] = beta_arm(1 + 0.05 * i, 1 + 0.02 * i);
  check_against_mc(arms, 20, NULL, 111);
}

/* alpha + beta in the thousands, means 0.30..0.33: heavy overlap. */
static void propensity_matches_mc_peaked_posteriors(void **state) {
  (void)state;
  adb__posterior arms[12];
  for (int i = 0; i < 12; i++) {
    double m = 0.30 + 0.0025 * i, s = 2000 + 500 * (i % 5);
    arms[i] = beta_arm(m * s, (1 - m) * s);
  }
  check_against_mc(arms, 12, NULL, 101);
}

static void propensity_matches_mc_flat_and_peaked_mix(void **state) {
  (void)state;
  adb__rng r;
  adb__rng_seed(&r, 11);
  adb__posterior arms[16];
  for (int i = 0; i < 16; i++) {
    if (i % 3 == 0) {
      arms[i] =
          beta_arm(1 + adb__rng_uniform(&r), 1 + 2 * adb__rng_uniform(&r));
    } else {
      double m = 0.2 + 0.4 * adb__rng_uniform(&r);
      double s = 50 + 3000 * adb__rng_uniform(&r);
      arms[i] = beta_arm(m * s, (1 - m) * s);
    }
  }
  check_against_mc(arms, 16, NULL, 102);
}

/* Cold users: Beta(1,1) plus 10 borrowed pseudo-observations per arm. */
static void propensity_matches_mc_cold_start_with_fallback(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_BETA);
  adb__posterior arms[20];
  for (int i = 0; i < 20; i++) {
    adb__arm_stats g = stats_of(500 + 37 * i, (500 + 37 * i) * 0.02 * i, 0);
    adb__posterior_make(&cfg, NULL, &g, &arms[i]);
  }
  check_against_mc(arms, 20, NULL, 103);
}

/* Small click-through rates: strongly right-skewed posteriors. */
static void propensity_matches_mc_skewed_posteriors(void **state) {
  (void)state;
  adb__posterior arms[10];
  for (int i = 0; i < 10; i++) {
    double m = 0.004 + 0.0015 * i, s = 300 + 400 * i;
    arms[i] = beta_arm(m * s + 0.5, (1 - m) * s);
  }
  check_against_mc(arms, 10, NULL, 104);
}

static void propensity_matches_mc_two_arms(void **state) {
  (void)state;
  adb__posterior a[2] = {beta_arm(3, 7), beta_arm(5, 5)};
  check_against_mc(a, 2, NULL, 105);
  adb__posterior b[2] = {beta_arm(400, 600), beta_arm(2, 3)};
  check_against_mc(b, 2, NULL, 106);
}

static void propensity_is_one_for_a_single_eligible_arm(void **state) {
  (void)state;
  adb__posterior arms[3] = {beta_arm(1, 9), beta_arm(2, 2),
                            nig_arm(0, 1, 1, 1)};
  assert_true(adb__propensity(arms, 1, NULL, 0) == 1.0);
  uint8_t el[3] = {0, 1, 0};
  assert_true(adb__propensity(arms, 3, el, 1) == 1.0);
}

static void propensity_excludes_ineligible_arms(void **state) {
  (void)state;
  adb__posterior arms[8];
  for (int i = 0; i < 8; i++)
    arms[i] = beta_arm(20 + 10 * i, 100);
  uint8_t el[8] = {1, 1, 1, 0, 1, 0, 1, 0}; /* the best arm is ineligible */
  check_against_mc(arms, 8, el, 107);
  assert_true(adb__propensity(arms, 8, el, 7) == 0.0);
  assert_true(adb__propensity(arms, 8, el, 8) == 0.0); /* out of range */
  assert_true(adb__propensity(arms, 8, el, -1) == 0.0);
}

/* The memo (propmemo.c) keeps a number computed for the same arguments,
 * and the grid (bandit.c, design note 5) computes every value from the
 * arguments alone: what a thread has seen before never changes a value. */
static double propensity_without_memo(const adb__posterior *arms, int n,
                                      const uint8_t *el, int c) {
  adb__propmemo_enable(0);
  double p = adb__propensity(arms, n, el, c);
  adb__propmemo_enable(1);
  return p;
}

typedef struct fresh_call {
  const adb__posterior *arms;
  int n, c;
  const uint8_t *el;
  double p;
} fresh_call;

static void *fresh_main(void *v) {
  fresh_call *f = v;
  f->p = adb__propensity(f->arms, f->n, f->el, f->c);
  return NULL;
}

/* On a new thread: an empty memo and no arm on the grid yet. */
static double propensity_fresh(const adb__posterior *arms, int n,
                               const uint8_t *el, int c) {
  fresh_call f = {arms, n, c, el, -1.0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, fresh_main, &f), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  return f.p;
}

/* Within 1e-3 of the integral computed choice by choice, and 3% of it for
 * propensities in [1e-4, 0.05]; returns the difference. */
static double near_single_integral(double p, const adb__posterior *arms, int n,
                                   const uint8_t *el, int c) {
  double want = propensity_without_memo(arms, n, el, c), d = fabs(p - want);
  if (d > 1e-3 || (want > 1e-4 && want < 0.05 && d > 0.03 * want))
    print_error("%d arms, arm %d: %.6f, integrated alone %.6f\n", n, c, p,
                want);
  assert_true(d <= 1e-3);
  assert_true(!(want > 1e-4 && want < 0.05) || d <= 0.03 * want);
  return d;
}

/* A random broad set: Beta arms of shapes 1 to 12, or Student-t arms. */
static int random_broad_set(adb__rng *r, adb__posterior *arms, uint8_t *el) {
  int n = 5 + (int)(adb__rng_uniform(r) * 40),
      gauss = adb__rng_uniform(r) < 0.3;
  for (int j = 0; j < n; j++) {
    double u = adb__rng_uniform(r), v = adb__rng_uniform(r);
    arms[j] = gauss ? nig_arm(u, 1 + 3 * v, 1 + 2 * v, 0.5 + u)
                    : beta_arm(1 + 11 * u, 1 + 11 * v);
    el[j] = adb__rng_uniform(r) < 0.9;
  }
  return n;
}

/* A set's first answer is the one a thread that has seen nothing gives;
 * asked again, any choice returns the same number. */
static void propensity_memo_returns_what_the_integral_returns(void **state) {
  (void)state;
  adb__rng r;
  adb__rng_seed(&r, 7);
  adb__posterior arms[45];
  uint8_t el[45];
  uint64_t h0, m0, h1, m1;
  adb__propmemo_counts(&h0, &m0);
  for (int t = 0; t < 300; t++) { /* more sets than the memo has slots */
    int n = random_broad_set(&r, arms, el);
    const uint8_t *e = t % 2 ? el : NULL;
    int c = (int)(adb__rng_uniform(&r) * n);
    double first = adb__propensity(arms, n, e, c);
    if (t % 10 == 0) assert_true(first == propensity_fresh(arms, n, e, c));
    near_single_integral(first, arms, n, e, c);
    for (int k = 0; k < 4; k++) {
      c = (int)(adb__rng_uniform(&r) * n);
      double p = adb__propensity(arms, n, e, c);
      assert_true(adb__propensity(arms, n, e, c) == p);
    }
  }
  adb__propmemo_counts(&h1, &m1);
  assert_true(h1 - h0 >= 1000); /* the repeated calls were answered by it */
  assert_true(m1 - m0 >= 250);
}

/* Beta sets with shapes >= 1 are integrated on the grid (bandit.c, design
 * note 5): within 1e-3 of the single integral (measured: 2.3e-4) and
 * within 3% of it for propensities in [1e-4, 0.05] (measured: 0.9% over
 * 6,000 sets), on cold-start, broad,
 * mixed broad and peaked, and close peaked sets of 2 to 64 arms; and a
 * set whose arms the grid holds from other sets (the same arms in
 * another order) gets the same values. */
static void propensity_grid_matches_the_single_integral(void **state) {
  (void)state;
  adb__rng r;
  adb__rng_seed(&r, 17);
  adb__posterior arms[64];
  double worst = 0.0;
  for (int t = 0; t < (quick() ? 200 : 1000); t++) {
    int n = 2 + (int)(adb__rng_uniform(&r) * 62), kind = t % 4;
    for (int j = 0; j < n; j++) {
      double m = 0.02 + 0.5 * adb__rng_uniform(&r), s = 12; /* cold */
      if (kind == 1) s = 2 + 30 * adb__rng_uniform(&r);
      if (kind == 2)
        s = adb__rng_uniform(&r) < 0.3 ? 2000 + 20000 * adb__rng_uniform(&r)
                                       : 3 + 20 * adb__rng_uniform(&r);
      if (kind == 3) {
        m = 0.3 + 0.01 * adb__rng_uniform(&r);
        s = 200 + 3000 * adb__rng_uniform(&r);
      }
      arms[j] = beta_arm(1 + (s - 2) * m, 1 + (s - 2) * (1 - m));
    }
    double p[64];
    for (int c = 0; c < n; c++)
      worst = fmax(
          worst, near_single_integral(p[c] = adb__propensity(arms, n, NULL, c),
                                      arms, n, NULL, c));
    /* broad sets reversed: new sets for the memo, their arms known to
     * the grid (the integral's own values move with the order by up to
     * 4e-8 once more than 32 arms race: it keeps 32 arm models) */
    if (kind > 1) continue;
    for (int j = 0; j < n / 2; j++) {
      adb__posterior x = arms[j];
      arms[j] = arms[n - 1 - j];
      arms[n - 1 - j] = x;
    }
    for (int c = 0; c < n; c += 7)
      assert_true(fabs(adb__propensity(arms, n, NULL, n - 1 - c) - p[c]) <=
                  1e-12);
  }
  print_message("worst difference from the single integral: %.2e\n", worst);
  assert_true(worst > 0.0); /* the grid ran: not the single integral */
}

/* A set changed by one arm is not answered from the memo: each answer is
 * the one a thread that has seen nothing gives for the changed set. */
static void propensity_memo_sees_a_changed_set(void **state) {
  (void)state;
  adb__posterior arms[20];
  uint8_t el[20];
  for (int j = 0; j < 20; j++) {
    arms[j] = beta_arm(1 + 0.5 * j, 12 - 0.5 * j);
    el[j] = 1;
  }
  double p = adb__propensity(arms, 20, el, 3);
  assert_true(p == propensity_fresh(arms, 20, el, 3));
  /* one arm's posterior moved by one reward's worth of a '*' row */
  arms[19].alpha += 0.002;
  double q = adb__propensity(arms, 20, el, 3), want;
  assert_true(q == (want = propensity_fresh(arms, 20, el, 3)) && want != p);
  /* another arm left out, then the set cut short, then two arms swapped */
  el[19] = 0;
  q = adb__propensity(arms, 20, el, 3);
  assert_true(q == propensity_fresh(arms, 20, el, 3) && q > p);
  q = adb__propensity(arms, 19, el, 3);
  assert_true(q == propensity_fresh(arms, 19, el, 3));
  adb__posterior t = arms[3];
  arms[3] = arms[18];
  arms[18] = t;
  q = adb__propensity(arms, 19, el, 3);
  assert_true(q == propensity_fresh(arms, 19, el, 3) && q > p);
  near_single_integral(q, arms, 19, el, 3);
}

/* NIG arms: the Thompson draw of the mean is Student-t with 2a degrees of
 * freedom, heavy-tailed with few observations. */
static void propensity_matches_mc_gaussian_student_t_arms(void **state) {
  (void)state;
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_GAUSSIAN);
  adb__posterior arms[10];
  for (int i = 0; i < 10; i++) {
    int64_t n = i < 3 ? 0 : (i < 6 ? 3 : 40 * i); /* prior only, few, many */
    double mean = 0.1 * i - 0.3;
    adb__arm_stats u = stats_of(n, n * mean, n * (mean * mean + 0.5));
    adb__posterior_make(&cfg, &u, NULL, &arms[i]);
  }
  check_against_mc(arms, 10, NULL, 108);
}

/* A cold user's arms under the prior are equal Student-t arms, which the
 * integral merges into one CDF raised to a power. The same set with those
 * arms' b nudged by 1e-13 (the same distributions, no longer equal) is
 * integrated arm by arm. A third of the arms are the prior; with 30 arms
 * every one has a model and both take the same nodes (equal to rounding);
 * with 48, act[] (32 models) fills with merged arms in it and the rest,
 * prior arms too, are streamed, which places the nodes differently (the
 * streamed arms' scales are not followed): equal to the quadrature's
 * error, where a dropped or doubled arm would move P by a tenth. */
static double merged_vs_arm_by_arm(int n, int c) {
  adb_agent_config cfg;
  config_defaults(&cfg, ADB_ALGO_GAUSSIAN);
  adb__posterior arms[48], twin[48];
  for (int i = 0; i < n; i++) {
    int64_t k = i % 3 ? 1 + i % 5 : 0;
    double mean = 0.02 + 0.006 * i;
    adb__arm_stats u = stats_of(k, k * mean, k * (mean * mean + 0.25));
    adb__posterior_make(&cfg, &u, NULL, &arms[i]);
    twin[i] = arms[i];
    if (k == 0) twin[i].b *= 1.0 + 1e-13 * i;
  }
  assert_true(adb__same_posterior(&arms[0], &arms[3]));
  double p = adb__propensity(arms, n, NULL, c);
  double q = adb__propensity(twin, n, NULL, c);
  assert_true(p > 0.0);
  return fabs(p - q);
}

static void propensity_merges_equal_student_t_arms(void **state) {
  (void)state;
  for (int c = 0; c < 30; c += 4)
    assert_true(merged_vs_arm_by_arm(30, c) <= 1e-9);
  for (int c = 0; c < 48; c += 5)
    assert_true(merged_vs_arm_by_arm(48, c) <= 2e-4);
}

/* A user's arms under the default prior (a = 1) are Student-t with nu =
 * 2, whose CDF has a closed form, F(t) = 1/2 + t / (2 sqrt(2 + t^2)), and
 * whose density in theta = atan(t / sqrt 2) is cos(theta) / 2. One arm
 * (a lower mean, nu = 2) races `others` prior arms: its propensity is
 * integral cos(theta) / 2 F(x(theta))^others, here by a 20,000-point
 * midpoint rule (error ~1e-9). Small propensities are divided by in
 * off-policy evaluation, so they are held to 1% relative: an approximate
 * CDF whose error has one sign over 40 arms was 5% off here. */
static double prior_race_exact(double mu, double s, int others) {
  double p = 0.0, h = M_PI / 20000;
  for (int i = 0; i < 20000; i++) {
    double th = -M_PI / 2 + (i + 0.5) * h;
    double t = mu + s * sqrt(2.0) * tan(th); /* in the prior arms' units */
    double F = 0.5 + t / (2.0 * sqrt(2.0 + t * t));
    p += 0.5 * cos(th) * pow(F, others) * h;
  }
  return p;
}

static void propensity_is_right_among_many_prior_arms(void **state) {
  (void)state;
  enum { N = 41 };
  const double mus[3] = {0.0, -0.5, -1.5}, ss[3] = {1.0, 0.5, 0.8};
  adb__posterior arms[N];
  for (int i = 1; i < N; i++)
    arms[i] = nig_arm(0.0, 1.0, 1.0, 1.0); /* the prior: nu 2, scale 1 */
  for (int k = 0; k < 3; k++) {
    arms[0] = nig_arm(mus[k], 1.0, 1.0, ss[k] * ss[k]);
    double p = adb__propensity(arms, N, NULL, 0);
    double q = prior_race_exact(mus[k], ss[k], N - 1);
    if (fabs(p - q) > 0.01 * q)
      print_error("mu %.1f: propensity %.6f, exact %.6f\n", mus[k], p, q);
    assert_true(q > 1e-4 && fabs(p - q) <= 0.01 * q);
  }
}

/* Beta(1/2, 1/2) priors: densities infinite at 0 and 1. */
static void propensity_matches_mc_singular_jeffreys_arms(void **state) {
  (void)state;
  adb__posterior arms[5] = {beta_arm(0.5, 0.5), beta_arm(2.5, 0.5),
                            beta_arm(0.5, 3.5), beta_arm(1.5, 1.5),
                            beta_arm(3.5, 0.5)};
  check_against_mc(arms, 5, NULL, 109);
}

/* More overlapping arms than propensity keeps bounds (64) and models (32)
 * for: they are rescanned and streamed. */
static void propensity_matches_mc_many_overlapping_arms(void **state) {
  (void)state;
  enum { N = 100 };
  adb__posterior arms[N];
  adb__rng r;
  adb__rng_seed(&r, 12);
  for (int i = 0; i < N; i++)
    arms[i] = beta_arm(8 + 4 * adb__rng_uniform(&r), 20);
  adb__rng m;
  adb__rng_seed(&m, 110);
  int draws = mc_draws() / 2;
  for (int c = 0; c < N; c += 17) {
    double p = adb__propensity(arms, N, NULL, c);
    double mc = adb__propensity_mc(&m, arms, N, NULL, c, draws);
    if (fabs(p - mc) > 0.02)
      print_error("arm %d: propensity %.4f, Monte Carlo %.4f\n", c, p, mc);
    assert_true(fabs(p - mc) <= 0.02);
  }
  assert_true(fabs(propensity_sum(arms, N) - 1) <= 0.01);
}

static double propensity_sum(const adb__posterior *arms, int n) {
  double s = 0;
  for (int i = 0; i < n; i++)
    s += adb__propensity(arms, n, NULL, i);
  return s;
}

/* The quadrature error is below 3e-3 per arm where P is large and far
 * smaller where it is small (measured against an exact-CDF reference), so
 * the sum over all arms is within 0.01 of 1. */
static void propensities_of_all_arms_sum_to_one(void **state) {
  (void)state;
  adb__rng r;
  adb__rng_seed(&r, 13);
  for (int rep = 0; rep < 20; rep++) {
    adb__posterior arms[20];
    int n = 2 + rep % 19;
    for (int i = 0; i < n; i++) {
      double m = 0.05 + 0.5 * adb__rng_uniform(&r);
      double s = rep % 2 ? 5 + 30 * adb__rng_uniform(&r)
                         : 200 + 5000 * adb__rng_uniform(&r);
      arms[i] = beta_arm(m * s, (1 - m) * s);
    }
    assert_true(fabs(propensity_sum(arms, n) - 1) <= 0.01);
    for (int i = 0; i < n; i++)
      arms[i] = nig_arm(adb__rng_uniform(&r), 1 + rep, 1 + rep / 2.0, 1);
    assert_true(fabs(propensity_sum(arms, n) - 1) <= 0.01);
  }
}

/* Beta shapes down to 0.05 (issue 9): priors Beta(p, p), p in {0.05, 0.1,
 * 0.3}, plus 0 to 5 observations, some fractional. Such densities are
 * infinite at an end and keep much of their mass within 1e-16 of it, where
 * the x-space integral lost up to 0.19 (the first case: two Beta(1.1, 0.1)
 * arms took 0.30 each instead of 0.46). */
static void propensity_matches_mc_small_beta_shapes(void **state) {
  (void)state;
  adb__posterior first[8] = {
      beta_arm(1.1, 0.1),       beta_arm(1.1, 0.1),
      beta_arm(2.1, 1.1),       beta_arm(0.1, 1.1),
      beta_arm(0.7209, 0.4791), beta_arm(3.1066, 2.0934),
      beta_arm(3.2194, 0.9806), beta_arm(0.5144, 3.6856)};
  check_against_mc(first, 8, NULL, 120);
  assert_true(fabs(propensity_sum(first, 8) - 1) <= 0.01);
  static const double priors[3] = {0.05, 0.1, 0.3};
  adb__rng r;
  adb__rng_seed(&r, 121);
  for (int rep = 0; rep < (quick() ? 3 : 9); rep++) {
    double p0 = priors[rep % 3];
    int n = 2 + (int)(adb__rng_next(&r) % 11);
    adb__posterior arms[12];
    for (int i = 0; i < n; i++) {
      int obs = (int)(adb__rng_next(&r) % 6);
      double s = 0;
      for (int k = 0; k < obs; k++)
        s += k % 3 ? (double)(adb__rng_next(&r) % 2) : adb__rng_uniform(&r);
      arms[i] = beta_arm(p0 + s, p0 + obs - s);
    }
    check_against_mc(arms, n, NULL, 122 + rep);
    assert_true(fabs(propensity_sum(arms, n) - 1) <= 0.01);
  }
}

/* 16% of Beta(1.05, 0.05) draws round to 1.0: compared as means, two such
 * arms tie 2.5% of the time and the lower index won those (0.5125 against
 * 0.4875). Compared as odds they never tie: each wins half, within 4 SE. */
static void thompson_breaks_no_ties_for_small_shapes(void **state) {
  (void)state;
  adb__posterior arms[2] = {beta_arm(1.05, 0.05), beta_arm(1.05, 0.05)};
  adb__rng r;
  adb__rng_seed(&r, 130);
  int n = n_samples(), wins = 0;
  double scores[2];
  for (int i = 0; i < n; i++) {
    int c = adb__thompson_select(&r, arms, 2, NULL, scores);
    wins += c == 0;
    /* the keys are odds; adb__score_of gives back the drawn mean */
    double x = adb__score_of(&arms[c], scores[c]);
    assert_true(x > 0.0 && x <= 1.0);
  }
  double se = sqrt(0.25 / n);
  assert_true(fabs((double)wins / n - 0.5) <= 4 * se);
}

static void propensity_near_zero_or_one_when_arms_separate(void **state) {
  (void)state;
  adb__posterior arms[3] = {beta_arm(100, 900), beta_arm(900, 100),
                            beta_arm(500, 500)};
  assert_true(adb__propensity(arms, 3, NULL, 0) < 1e-4);
  assert_true(adb__propensity(arms, 3, NULL, 1) > 1 - 1e-4);
}

/* ---------------------------------------------------------------- reward */

static adb_signals signals(int watch, double w, double d, int click, int c,
                           int rate, double rating) {
  adb_signals s = {watch, click, rate, w, d, c, rating};
  return s;
}

static void reward_is_weighted_mean_of_present_signals(void **state) {
  (void)state;
  adb_signals s = signals(1, 30, 60, 1, 1, 1, 5);
  /* (0.7 * 0.5 + 0.1 * 1 + 0.2 * 1) / 1.0 */
  assert_true(fabs(adb_reward_from_signals(NULL, &s) - 0.65) < 1e-12);
  s = signals(0, 0, 0, 1, 1, 0, 0);
  assert_true(adb_reward_from_signals(NULL, &s) == 1.0);
  s = signals(0, 0, 0, 1, 0, 1, 3); /* (0.1 * 0 + 0.2 * 0.5) / 0.3 */
  assert_true(fabs(adb_reward_from_signals(NULL, &s) - 1.0 / 3) < 1e-12);
}

static void reward_clamps_watch_fraction_and_rating(void **state) {
  (void)state;
  adb_signals s = signals(1, 120, 60, 0, 0, 0, 0);
  assert_true(adb_reward_from_signals(NULL, &s) == 1.0);
  s = signals(1, -5, 60, 0, 0, 0, 0);
  assert_true(adb_reward_from_signals(NULL, &s) == 0.0);
  s = signals(0, 0, 0, 0, 0, 1, 0.0);
  assert_true(adb_reward_from_signals(NULL, &s) == 0.0);
  s = signals(0, 0, 0, 0, 0, 1, 9.0);
  assert_true(adb_reward_from_signals(NULL, &s) == 1.0);
}

static void reward_uses_given_weights(void **state) {
  (void)state;
  adb_reward_weights w = {0.0, 1.0, 3.0};
  adb_signals s = signals(1, 60, 60, 1, 0, 1, 5); /* watch weight 0 */
  assert_true(fabs(adb_reward_from_signals(&w, &s) - 0.75) < 1e-12);
  adb_reward_weights d;
  adb__reward_weights_default(&d);
  assert_true(d.watch == 0.7 && d.click == 0.1 && d.rating == 0.2);
}

static void reward_is_nan_without_usable_signals(void **state) {
  (void)state;
  adb_signals s = signals(0, 0, 0, 0, 0, 0, 0);
  assert_true(isnan(adb_reward_from_signals(NULL, &s)));
  assert_true(isnan(adb_reward_from_signals(NULL, NULL)));
  adb_reward_weights w = {1.0, 0.0, 0.0};
  s = signals(0, 0, 0, 1, 1, 0, 0); /* only a zero-weight signal */
  assert_true(isnan(adb_reward_from_signals(&w, &s)));
}

static void reward_is_nan_for_non_finite_or_bad_duration(void **state) {
  (void)state;
  adb_signals s = signals(1, 10, 0, 0, 0, 0, 0);
  assert_true(isnan(adb_reward_from_signals(NULL, &s)));
  s = signals(1, 10, -3, 1, 1, 0, 0);
  assert_true(isnan(adb_reward_from_signals(NULL, &s)));
  s = signals(1, NAN, 60, 0, 0, 0, 0);
  assert_true(isnan(adb_reward_from_signals(NULL, &s)));
  s = signals(1, 10, INFINITY, 0, 0, 0, 0);
  assert_true(isnan(adb_reward_from_signals(NULL, &s)));
  s = signals(0, 0, 0, 1, 1, 1, NAN);
  assert_true(isnan(adb_reward_from_signals(NULL, &s)));
  adb_reward_weights w = {0.7, NAN, 0.2};
  s = signals(0, 0, 0, 1, 1, 0, 0);
  assert_true(isnan(adb_reward_from_signals(&w, &s)));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rng_same_seed_same_sequence),
      cmocka_unit_test(rng_matches_xoshiro256starstar),
      cmocka_unit_test(uniform_is_open_unit_interval_with_uniform_moments),
      cmocka_unit_test(normal_has_standard_moments),
      cmocka_unit_test(normal_tail_beyond_ziggurat_base_has_right_mass),
      cmocka_unit_test(gamma_has_mean_and_variance_k),
      cmocka_unit_test(beta_has_its_mean_and_variance),
      cmocka_unit_test(variates_reject_bad_shapes_with_nan),
      cmocka_unit_test(reward_to_micro_rounds_exactly),
      cmocka_unit_test(beta_posterior_adds_successes_and_failures),
      cmocka_unit_test(beta_posterior_borrows_at_most_fallback_strength),
      cmocka_unit_test(posterior_does_not_borrow_the_users_own_rewards),
      cmocka_unit_test(beta_posterior_borrows_nothing_when_disabled_or_empty),
      cmocka_unit_test(gaussian_posterior_is_normal_inverse_gamma_update),
      cmocka_unit_test(gaussian_posterior_borrows_scaled_global_stats),
      cmocka_unit_test(gaussian_posterior_sample_has_student_t_moments),
      cmocka_unit_test(thompson_finds_best_of_five_bernoulli_arms),
      cmocka_unit_test(thompson_skips_ineligible_arms),
      cmocka_unit_test(rank_topk_orders_best_first_ties_by_index),
      cmocka_unit_test(rank_topk_agrees_with_full_sort),
      cmocka_unit_test(propensity_matches_mc_uniform_priors_20_arms),
      cmocka_unit_test(propensity_matches_mc_nearly_uniform_20_arms),
      cmocka_unit_test(propensity_matches_mc_peaked_posteriors),
      cmocka_unit_test(propensity_matches_mc_flat_and_peaked_mix),
      cmocka_unit_test(propensity_matches_mc_cold_start_with_fallback),
      cmocka_unit_test(propensity_matches_mc_skewed_posteriors),
      cmocka_unit_test(propensity_matches_mc_two_arms),
      cmocka_unit_test(propensity_is_one_for_a_single_eligible_arm),
      cmocka_unit_test(propensity_excludes_ineligible_arms),
      cmocka_unit_test(propensity_memo_returns_what_the_integral_returns),
      cmocka_unit_test(propensity_grid_matches_the_single_integral),
      cmocka_unit_test(propensity_memo_sees_a_changed_set),
      cmocka_unit_test(propensity_matches_mc_gaussian_student_t_arms),
      cmocka_unit_test(propensity_merges_equal_student_t_arms),
      cmocka_unit_test(propensity_is_right_among_many_prior_arms),
      cmocka_unit_test(propensity_matches_mc_singular_jeffreys_arms),
      cmocka_unit_test(propensity_matches_mc_many_overlapping_arms),
      cmocka_unit_test(propensities_of_all_arms_sum_to_one),
      cmocka_unit_test(propensity_near_zero_or_one_when_arms_separate),
      cmocka_unit_test(propensity_matches_mc_small_beta_shapes),
      cmocka_unit_test(thompson_breaks_no_ties_for_small_shapes),
      cmocka_unit_test(reward_is_weighted_mean_of_present_signals),
      cmocka_unit_test(reward_clamps_watch_fraction_and_rating),
      cmocka_unit_test(reward_uses_given_weights),
      cmocka_unit_test(reward_is_nan_without_usable_signals),
      cmocka_unit_test(reward_is_nan_for_non_finite_or_bad_duration),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
