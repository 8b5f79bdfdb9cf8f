/*
 * test_decay.c — exponential forgetting (decay.h): weighted increments
 * read back as their closed form sum_i 2^(-(now - t_i) / h) x_i, exactly
 * the same sums in any order, and moving the reference keeps the value.
 *
 * Bounds follow from the representation: each increment is rounded once
 * to a unit of 2^-ADB_DECAY_FRAC (error <= 1/2 unit), each rescale rounds
 * a sum once more (<= 1/2 unit), and reading back multiplies by a factor
 * <= 1 in double precision (relative error ~1e-16).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "decay.h"

#define T0 1700000000000LL
#define H 3600.0 /* half-life, s */
#define UNIT (1.0 / (double)(INT64_C(1) << ADB_DECAY_FRAC))

typedef struct obs {
  int64_t t;
  double x;
} obs;

static void make_obs(obs *o, int n, int64_t span_ms, uint64_t seed) {
  adb__rng r;
  adb__rng_seed(&r, seed);
  for (int i = 0; i < n; i++) {
    o[i].t = T0 + (int64_t)(adb__rng_uniform(&r) * (double)span_ms);
    o[i].x = adb__rng_uniform(&r);
  }
}

static double closed_form(const obs *o, int n, int64_t now) {
  double s = 0;
  for (int i = 0; i < n; i++)
    s += exp2(-(double)(now - o[i].t) / (H * 1000.0)) * o[i].x;
  return s;
}

static void decayed_sum_matches_closed_form(void **state) {
  (void)state;
  enum { N = 2000 };
  static obs o[N];
  make_obs(o, N, (int64_t)(20 * H * 1000), 1);
  adb__sum s = 0, n = 0;
  for (int i = 0; i < N; i++) {
    s += adb__decay_fixed(o[i].x, o[i].t, T0, H);
    n += adb__decay_fixed(1.0, o[i].t, T0, H);
  }
  int64_t now = T0 + (int64_t)(22 * H * 1000);
  double want = closed_form(o, N, now), got = adb__decay_value(s, now, T0, H);
  double bound = N * 0.5 * UNIT + 1e-12 * want;
  assert_true(fabs(got - want) <= bound);
  obs ones[N];
  for (int i = 0; i < N; i++)
    ones[i] = (obs){o[i].t, 1.0};
  double wn = closed_form(ones, N, now);
  assert_true(fabs(adb__decay_value(n, now, T0, H) - wn) <= bound + 1e-12 * wn);
  /* and it does forget: far less than the plain count */
  assert_true(wn < N / 3.0);
}

/* One observation halves every half-life. */
static void one_observation_halves_every_half_life(void **state) {
  (void)state;
  adb__sum s = adb__decay_fixed(0.75, T0 + 5000, T0, H);
  for (int k = 0; k < 6; k++) {
    int64_t now = T0 + 5000 + (int64_t)(k * H * 1000);
    double v = adb__decay_value(s, now, T0, H);
    assert_true(fabs(v - 0.75 / (double)(1 << k)) <= 0.5 * UNIT);
  }
}

/* Integer increments commute: any order gives the very same sums. */
static void decayed_sums_do_not_depend_on_order(void **state) {
  (void)state;
  enum { N = 1000 };
  obs o[N];
  make_obs(o, N, (int64_t)(10 * H * 1000), 2);
  adb__sum first = 0;
  for (int i = 0; i < N; i++)
    first += adb__decay_fixed(o[i].x, o[i].t, T0, H);
  adb__rng r;
  adb__rng_seed(&r, 3);
  for (int rep = 0; rep < 5; rep++) {
    for (int i = N - 1; i > 0; i--) { /* Fisher-Yates */
      int j = (int)(adb__rng_next(&r) % (uint64_t)(i + 1));
      obs t = o[i];
      o[i] = o[j];
      o[j] = t;
    }
    adb__sum s = 0;
    for (int i = 0; i < N; i++)
      s += adb__decay_fixed(o[i].x, o[i].t, T0, H);
    assert_true(s == first);
  }
}

/* Over 100 half-lives the reference moves whenever weights would pass
 * 2^ADB_DECAY_MAX_LOG2; the sum stays within its bound of the closed form
 * and within the sums' range. */
static void moving_the_reference_keeps_the_value(void **state) {
  (void)state;
  enum { N = 5000 };
  static obs o[N];
  make_obs(o, N, (int64_t)(100 * H * 1000), 4);
  for (int i = 1; i < N; i++) /* in time order, as a writer sees them */
    for (int j = i; j > 0 && o[j].t < o[j - 1].t; j--) {
      obs t = o[j];
      o[j] = o[j - 1];
      o[j - 1] = t;
    }
  int64_t ref = T0;
  adb__sum s = 0;
  int moves = 0;
  for (int i = 0; i < N; i++) {
    int k = adb__decay_rescale_steps(o[i].t, ref, H);
    if (k > 0) {
      s = adb__decay_rescale(s, k);
      ref = adb__decay_moved_ref(ref, k, H);
      moves++;
    }
    assert_true(adb__decay_log2w(o[i].t, ref, H) <= ADB_DECAY_MAX_LOG2);
    s += adb__decay_fixed(o[i].x, o[i].t, ref, H);
    assert_true(adb__sum_ok(s));
  }
  assert_true(moves >= 3);
  int64_t now = o[N - 1].t + 1000;
  double want = closed_form(o, N, now);
  /* quantisation at the then-current reference (<= 1/2 unit each, scaled
   * down by the readback), plus 1/2 unit per move */
  double bound = (N + moves) * 0.5 * UNIT + 1e-12 * want;
  assert_true(fabs(adb__decay_value(s, now, ref, H) - want) <= bound);
}

static void rescale_rounds_to_nearest_on_both_sides(void **state) {
  (void)state;
  assert_true(adb__decay_rescale(10, 2) == 3); /* 2.5 -> 3 */
  assert_true(adb__decay_rescale(-10, 2) == -3);
  assert_true(adb__decay_rescale(9, 2) == 2); /* 2.25 */
  assert_true(adb__decay_rescale(-9, 2) == -2);
  assert_true(adb__decay_rescale((adb__sum)1 << 80, 80) == 1);
  assert_true(adb__decay_rescale(12345, 0) == 12345);
}

static void no_decay_without_a_half_life(void **state) {
  (void)state;
  static const double hl[] = {0.0, -5.0, NAN, INFINITY};
  for (int i = 0; i < 4; i++) {
    assert_true(adb__decay_weight(T0 + 1000000, T0, hl[i]) == 1.0);
    assert_true(adb__decay_readback(T0 + 1000000, T0, hl[i]) == 1.0);
    assert_int_equal(adb__decay_rescale_steps(T0 + 100000000000, T0, hl[i]), 0);
    assert_true(adb__decay_fixed(0.5, T0 + 99, T0, hl[i]) ==
                (adb__sum)1 << (ADB_DECAY_FRAC - 1));
  }
  assert_true(adb__decay_fixed(NAN, T0, T0, H) == 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(decayed_sum_matches_closed_form),
      cmocka_unit_test(one_observation_halves_every_half_life),
      cmocka_unit_test(decayed_sums_do_not_depend_on_order),
      cmocka_unit_test(moving_the_reference_keeps_the_value),
      cmocka_unit_test(rescale_rounds_to_nearest_on_both_sides),
      cmocka_unit_test(no_decay_without_a_half_life),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
