/*
 * decay.h — exponential forgetting as exact, order-independent increments.
 *
 * With a half-life h (decay_half_life_s), an observation made at time t
 * counts at time `now` with weight 2^(-(now - t) / h). A sum of such
 * weighted observations cannot be decayed in place without a read-modify-
 * write of every row, which the write path never does (increments only).
 * So each increment is stored pre-weighted relative to a reference time
 * t_ref kept per agent:
 *
 *     w(t) = 2^((t - t_ref) / h),         S = sum_i w(t_i) x_i,
 *
 * and read back scaled by 2^(-(now - t_ref) / h), which gives
 * sum_i 2^(-(now - t_i) / h) x_i, the decayed sum, exactly as its closed
 * form. To keep sums exact and independent of the order increments land
 * in, a weighted value is quantised once, at the writer, to a fixed-point
 * integer with ADB_DECAY_FRAC fractional bits (adb__decay_fixed) and added
 * as an adb__sum (128-bit, bandit.h): integer addition commutes exactly.
 *
 * Weights grow by a factor 2 per half-life after t_ref. Before they leave
 * the headroom of the sums (ADB_DECAY_MAX_LOG2 half-lives), the reference
 * moves forward by k whole half-lives and every stored sum of the agent is
 * divided by 2^k (adb__decay_rescale: a shift, rounded to nearest); then
 * increments weighted against the old reference must not land any more,
 * which the writer ensures by weighting in the transaction that reads the
 * agent's reference (a rescale takes the same lock). Rescaling rounds each
 * sum once, by at most half a unit of 2^-ADB_DECAY_FRAC.
 *
 * Pure functions, no I/O; a half-life <= 0 (or not finite) means no decay:
 * every weight is 1 and no rescale is ever needed.
 */
#ifndef ADB_DECAY_H
#define ADB_DECAY_H

#include <math.h>
#include <stdint.h>

#include "bandit.h"

/* Fractional bits of a weighted fixed-point value. */
#define ADB_DECAY_FRAC 20
/* Half-lives past the reference after which to rescale. Weights stay
 * below 2^24 and carry 2^20 fractional bits, so an increment of x is at
 * most |x| 2^44 units: within the sums' 2^84 (adb__sum_ok) there is room
 * for 2^40 counts or rewards in [0, 1] at full weight, and for 2^20
 * rewards of 1e6. */
#define ADB_DECAY_MAX_LOG2 24.0

static inline int adb__decay_on(double half_life_s) {
  return half_life_s > 0.0 && isfinite(half_life_s);
}

/* log2 of the weight of time t_ms against the reference: (t - ref) / h. */
static inline double adb__decay_log2w(int64_t t_ms, int64_t ref_ms,
                                      double half_life_s) {
  if (!adb__decay_on(half_life_s)) return 0.0;
  return (double)(t_ms - ref_ms) / (half_life_s * 1000.0);
}

/* w(t) = 2^((t - ref) / h); 1 without decay. */
static inline double adb__decay_weight(int64_t t_ms, int64_t ref_ms,
                                       double half_life_s) {
  return exp2(adb__decay_log2w(t_ms, ref_ms, half_life_s));
}

/* The factor that turns a stored sum into its value at now_ms:
 * 2^(-(now - ref) / h); 1 without decay. */
static inline double adb__decay_readback(int64_t now_ms, int64_t ref_ms,
                                         double half_life_s) {
  return exp2(-adb__decay_log2w(now_ms, ref_ms, half_life_s));
}

/* round(w(t) x 2^ADB_DECAY_FRAC), the increment a writer adds for value x
 * observed at t_ms; 0 for a value that is not finite. */
static inline adb__sum adb__decay_fixed(double x, int64_t t_ms, int64_t ref_ms,
                                        double half_life_s) {
  double v = x * adb__decay_weight(t_ms, ref_ms, half_life_s) *
             (double)(INT64_C(1) << ADB_DECAY_FRAC);
  if (!isfinite(v)) return 0;
  return (adb__sum)llround(v);
}

/* The decayed value at now_ms of a fixed-point sum. */
static inline double adb__decay_value(adb__sum s, int64_t now_ms,
                                      int64_t ref_ms, double half_life_s) {
  return (double)s / (double)(INT64_C(1) << ADB_DECAY_FRAC) *
         adb__decay_readback(now_ms, ref_ms, half_life_s);
}

/* Whole half-lives k by which to move the reference before weighting an
 * observation at t_ms (0: none needed): past ADB_DECAY_MAX_LOG2, all of
 * them, so the new weight is below 2. */
static inline int adb__decay_rescale_steps(int64_t t_ms, int64_t ref_ms,
                                           double half_life_s) {
  double l = adb__decay_log2w(t_ms, ref_ms, half_life_s);
  return l > ADB_DECAY_MAX_LOG2 ? (int)floor(l) : 0;
}

/* The new reference after k steps: ref + k h (ms, rounded). Callers keep
 * the rounded value, so that every replica uses the same one. */
static inline int64_t adb__decay_moved_ref(int64_t ref_ms, int k,
                                           double half_life_s) {
  return ref_ms + llround((double)k * half_life_s * 1000.0);
}

/* A stored sum after the reference moved by k half-lives: s / 2^k,
 * rounded to nearest (ties away from zero). */
static inline adb__sum adb__decay_rescale(adb__sum s, int k) {
  if (k <= 0) return s;
  if (k >= 126) return 0;
  adb__sum half = (adb__sum)1 << (k - 1);
  return s >= 0 ? (s + half) >> k : -((-s + half) >> k);
}

#endif
