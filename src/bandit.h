/*
 * bandit.h — the bandit core: RNG, variates, conjugate posteriors, Thompson
 * selection, propensities and the engagement reward. Pure functions: no I/O,
 * no mutable globals; the RNG is passed in, so every result is reproducible.
 * An adb__rng is not thread-safe: one per thread (or a lock).
 */
#ifndef ADB_BANDIT_H
#define ADB_BANDIT_H

#include <stdint.h>

#include "agentdb.h"

/* xoshiro256** (Blackman & Vigna). Seed it through splitmix64. */
typedef struct adb__rng {
  uint64_t s[4];
} adb__rng;

void adb__rng_seed(adb__rng *r, uint64_t seed);
uint64_t adb__rng_next(adb__rng *r);
double adb__rng_uniform(adb__rng *r); /* in (0, 1), never 0 or 1 */
double adb__rng_normal(adb__rng *r);  /* N(0, 1), ziggurat */
/* Gamma(k, 1) by Marsaglia-Tsang; NaN unless 0 < k < inf. */
double adb__rng_gamma(adb__rng *r, double k);
/* Beta(a, b) as a ratio of gammas; NaN unless both shapes are in (0, inf). */
double adb__rng_beta(adb__rng *r, double a, double b);

/* Rewards are kept as fixed-point micro-units so that sums are exact and
 * independent of order: 0.5 -> 500000. */
#define ADB_MICRO 1000000.0
/* llround(r * 1e6); 0 for NaN or infinity, saturated beyond +-9.2e12. */
int64_t adb__reward_to_micro(double r);

/* A posterior sum of rewards in micro-units, with headroom: the '*' row
 * adds every user's rewards, past INT64_MAX. 128-bit in memory; stored as
 * hi * 2^32 + lo with 0 <= lo < 2^32 (the columns sum_hi and sum_micro;
 * the Redis cache adds the same two parts in Lua, whose numbers are
 * doubles, exact to 2^53). Every store and cache refuses a sum whose hi
 * leaves [ADB_SUM_HI_MIN, ADB_SUM_HI_MAX], i.e. outside [-2^84, 2^84):
 * the stores by a CHECK constraint (the batch fails, nothing changes), the
 * caches by dropping the entry (the store is the authority). 2^84 micro-
 * units are 1.9e19 reward units: 1.9e13 rewards of 1e6. Aligned to 8, not
 * 16, so that arm stats keep their packing in the caches' arrays. */
__extension__ typedef __int128 adb__sum __attribute__((aligned(8)));
#define ADB_SUM_HI_MAX ((INT64_C(1) << 52) - 1)
#define ADB_SUM_HI_MIN (-(INT64_C(1) << 52))
#define ADB_SUM_LO_BASE (INT64_C(1) << 32)
static inline int64_t adb__sum_hi(adb__sum v) {
  return (int64_t)(v >> 32); /* arithmetic shift: floor(v / 2^32) */
}
static inline int64_t adb__sum_lo(adb__sum v) {
  return (int64_t)(v & (ADB_SUM_LO_BASE - 1));
}
static inline adb__sum adb__sum_of(int64_t hi, int64_t lo) {
  return (adb__sum)hi * ADB_SUM_LO_BASE + lo;
}
static inline int adb__sum_ok(adb__sum v) {
  return v >= adb__sum_of(ADB_SUM_HI_MIN, 0) &&
         v < adb__sum_of(ADB_SUM_HI_MAX + 1, 0);
}

/* Sufficient statistics of one arm. version counts committed updates of the
 * row (see the cache consistency scheme in coordinator.c). */
typedef struct adb__arm_stats {
  int64_t n;          /* rewards observed */
  adb__sum sum_micro; /* their sum, in micro-units */
  double sum_sq;      /* sum of squares (gaussian only) */
  int64_t version;
} adb__arm_stats;

/* A posterior ready to sample: Beta(alpha, beta) or NIG(mu, kappa, a, b). */
typedef struct adb__posterior {
  adb_algorithm algo;
  double alpha, beta;
  double mu, kappa, a, b;
} adb__posterior;

/* Posterior of an arm from the agent's prior, the user's own statistics and
 * the agent-wide statistics (user '*'), of which at most `fallback_strength`
 * pseudo-observations are borrowed (scaled down when there are more).
 * global includes the user's own statistics (the '*' row adds every
 * user's rewards), so only the others' are borrowed: n_g = global n - user
 * n (likewise the sums; none when that is <= 0). w = 0 when
 * fallback_strength <= 0 or n_g == 0, else min(1, fallback_strength / n_g);
 * user and borrowed stats enter as n + w n_g, s + w s_g (and sum_sq + w
 * sum_sq_g). user or global may be NULL (no data). A prior field that is not a
 * positive finite number counts as its documented default; for Beta, sums are
 * clamped to [0, n]. */
void adb__posterior_make(const adb_agent_config *cfg,
                         const adb__arm_stats *user,
                         const adb__arm_stats *global, adb__posterior *out);
/* The same for n arms: out[i] from user[i] and global[i]. */
void adb__posteriors_make(const adb_agent_config *cfg, int n,
                          const adb__arm_stats *user,
                          const adb__arm_stats *global, adb__posterior *out);
double adb__posterior_mean(const adb__posterior *p);
/* Whether two posteriors are the same distribution: the same kind and, for
 * that kind, the same parameters (compared with ==). */
int adb__same_posterior(const adb__posterior *x, const adb__posterior *y);
/* One Thompson draw of the arm's mean reward. */
double adb__posterior_sample(adb__rng *r, const adb__posterior *p);

/* Draws each eligible arm once and returns the index of the best (the
 * lowest index on a tie), or -1 when none is eligible. scores[i] gets the
 * draw's comparison key (ineligible arms -inf): the odds X / (1 - X) for a
 * Beta arm (X itself would round to 1 and tie for small shapes), the mean
 * for NIG, the mean for both when the kinds are mixed; adb__score_of turns
 * a key back into the drawn mean. eligible and scores may be NULL. A draw
 * that is NaN (improper posterior) counts as -inf. */
int adb__thompson_select(adb__rng *r, const adb__posterior *arms, int n,
                         const uint8_t *eligible, double *scores);
/* The drawn mean of arm p from its comparison key (above). */
double adb__score_of(const adb__posterior *p, double key);

/* Indices of the k highest scores, best first, into idx (k <= n). Ties
 * broken by lower index; NaN ranks last. Returns the number written,
 * min(k, n), or 0 for k <= 0. A bounded heap: O(n log k), no allocation. */
int adb__rank_topk(const double *scores, int n, int k, int *idx);

/* Probability that Thompson sampling over the eligible arms picks `chosen`,
 * by numerical integration (design in bandit.c); within 0.02 of a Monte
 * Carlo estimate (measured within 2.2e-3 of an exact reference). 0 when
 * chosen is out of range, ineligible or improper; 1 when it is the only
 * eligible arm; 1/k when all k eligible arms have the same posterior; may
 * be 0 when the true value is below ~1e-6. About 60 KB of stack (one
 * frame, 58 KB at -O2). Arms may mix Beta and NIG posteriors. A value
 * that needed the integral is kept in the calling thread's memo
 * (propmemo.c) and returned again, the same number, while the arguments
 * are the same; it depends on the arguments alone, never on what the
 * thread computed before. */
double adb__propensity(const adb__posterior *arms, int n,
                       const uint8_t *eligible, int chosen);
/* The Monte Carlo reference: the share of `draws` rounds of Thompson
 * selection that pick `chosen`; 0 when draws <= 0. */
double adb__propensity_mc(adb__rng *r, const adb__posterior *arms, int n,
                          const uint8_t *eligible, int chosen, int draws);

/* Default reward weights (watch 0.7, click 0.1, rating 0.2). */
void adb__reward_weights_default(adb_reward_weights *w);

#endif
