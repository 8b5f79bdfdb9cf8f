/*
 * test_vec.c — distance kernels against a double-precision reference on
 * every instruction set this CPU has, and the exact k-NN scan.
 *
 * Tolerances come from the standard error bound of floating-point
 * summation: any order of adding n terms, each product rounded at most
 * once, is within gamma_n = n u / (1 - n u) (u = 2^-24) of the exact sum,
 * relative to the sum of the terms' absolute values (Higham, Accuracy and
 * Stability of Numerical Algorithms, 2nd ed., section 3.1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vec.h"

static const size_t dims[] = {1, 3, 17, 64, 128, 768, 1000};
#define N_DIMS (sizeof(dims) / sizeof(dims[0]))
#define U 0x1.0p-24

static uint64_t rng_state;

static uint64_t rng_next(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double rng_uniform(void) {
  return ((double)(rng_next() >> 11) + 0.5) * 0x1.0p-53;
}

/* Values in [-scale, scale). */
static void fill(float *v, size_t n, double scale) {
  for (size_t i = 0; i < n; i++)
    v[i] = (float)((2 * rng_uniform() - 1) * scale);
}

static double gamma_n(size_t n) {
  return n * U / (1 - n * U);
}

/* Double reference: dot, sum |a b|, squared L2, norms. */
typedef struct ref {
  double dot, absdot, l2, na, nb;
} ref;

static ref reference(const float *a, const float *b, size_t n) {
  ref r = {0};
  for (size_t i = 0; i < n; i++) {
    double x = a[i], y = b[i];
    r.dot += x * y;
    r.absdot += fabs(x * y);
    r.l2 += (x - y) * (x - y);
    r.na += x * x;
    r.nb += y * y;
  }
  return r;
}

/* Calls check(kernels, a, b, n) for every ISA, every dim, several scales
 * and vector pairs (independent and nearly equal). */
typedef void (*pair_check)(const adb__vec_kernels *k, const float *a,
                           const float *b, size_t n);

static void for_all(pair_check check) {
  static const double scales[] = {1e-3, 1.0, 1e3};
  rng_state = 7;
  for (int isa = 0; isa < ADB__ISA_COUNT; isa++) {
    const adb__vec_kernels *k = adb__vec_kernels_for((adb__isa)isa);
    if (!k) continue;
    for (size_t d = 0; d < N_DIMS; d++) {
      size_t n = dims[d];
      float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
      assert_non_null(a);
      assert_non_null(b);
      for (int trial = 0; trial < 12; trial++) {
        fill(a, n, scales[trial % 3]);
        fill(b, n, scales[(trial / 3) % 3]);
        if (trial >= 9) /* nearly identical pair */
          for (size_t i = 0; i < n; i++)
            b[i] = a[i] * (1 + 1e-4f);
        check(k, a, b, n);
      }
      free(a);
      free(b);
    }
  }
}

static void check_dot(const adb__vec_kernels *k, const float *a, const float *b,
                      size_t n) {
  ref r = reference(a, b, n);
  double tol = gamma_n(n) * r.absdot + 1e-300;
  assert_true(fabs(k->dot(a, b, n) - r.dot) <= tol);
  /* 1 - dot adds one more rounding. */
  assert_true(fabs(k->ipdist(a, b, n) - (1 - r.dot)) <=
              tol + U * (fabs(1 - r.dot) + tol));
}

static void check_l2(const adb__vec_kernels *k, const float *a, const float *b,
                     size_t n) {
  ref r = reference(a, b, n);
  /* Each difference is rounded once, so its square is within 2u + u^2. */
  double tol = gamma_n(n + 2) * r.l2 + 1e-300;
  assert_true(fabs(k->l2sq(a, b, n) - r.l2) <= tol);
}

static void check_cosine(const adb__vec_kernels *k, const float *a,
                         const float *b, size_t n) {
  ref r = reference(a, b, n);
  double norm = sqrt(r.na * r.nb), c = r.dot / norm;
  double want = 1 - c;
  /* dot off by gamma_n sum|ab|, each norm relatively by gamma_n, then the
   * result rounded to float. */
  double g = gamma_n(n);
  double tol = g * (r.absdot / norm + 2 * fabs(c)) * (1 + 4 * g) + 4 * U;
  double got = k->cosine(a, b, n);
  if (want < 0) want = 0;
  assert_true(fabs(got - want) <= tol);
}

static void test_dot_matches_double_reference_on_every_isa(void **state) {
  for_all(check_dot);
}

static void test_l2_matches_double_reference_on_every_isa(void **state) {
  for_all(check_l2);
}

static void test_cosine_matches_double_reference_on_every_isa(void **state) {
  for_all(check_cosine);
}

/* A vector ending at a page boundary followed by an inaccessible page:
 * a kernel that reads past the last element faults. */
static void test_kernels_never_read_past_the_end(void **state) {
  long page = sysconf(_SC_PAGESIZE);
  char *mem = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(mem != MAP_FAILED);
  assert_int_equal(mprotect(mem + page, page, PROT_NONE), 0);
  for (int isa = 0; isa < ADB__ISA_COUNT; isa++) {
    const adb__vec_kernels *k = adb__vec_kernels_for((adb__isa)isa);
    if (!k) continue;
    for (size_t n = 1; n <= 70; n++) {
      float *a = (float *)(mem + page) - n;
      for (size_t i = 0; i < n; i++)
        a[i] = 1.0f;
      assert_true(k->dot(a, a, n) == (float)n);
      assert_true(k->l2sq(a, a, n) == 0.0f);
      assert_true(k->cosine(a, a, n) < 1e-6f);
    }
  }
  munmap(mem, 2 * page);
}

static void test_cosine_of_a_zero_vector_is_one(void **state) {
  float z[5] = {0}, v[5] = {1, 2, 3, 4, 5};
  for (int isa = 0; isa < ADB__ISA_COUNT; isa++) {
    const adb__vec_kernels *k = adb__vec_kernels_for((adb__isa)isa);
    if (!k) continue;
    assert_true(k->cosine(z, v, 5) == 1.0f);
    assert_true(k->cosine(v, z, 5) == 1.0f);
  }
}

static void test_cosine_distance_lies_in_zero_two(void **state) {
  float v[17], w[17];
  rng_state = 3;
  fill(v, 17, 1.0);
  for (int i = 0; i < 17; i++)
    w[i] = -v[i];
  assert_true(fabsf(adb__vec_cosine(v, w, 17) - 2.0f) < 1e-6f);
  assert_true(adb__vec_cosine(v, v, 17) >= 0.0f);
  assert_true(adb__vec_cosine(v, v, 17) < 1e-6f);
}

static void test_scalar_is_always_supported(void **state) {
  assert_true(adb__vec_isa_supported(ADB__ISA_SCALAR));
  assert_non_null(adb__vec_kernels_for(ADB__ISA_SCALAR));
  assert_non_null(adb__vec_kernels_active());
  assert_null(adb__vec_kernels_for(ADB__ISA_COUNT));
}

static void test_set_isa_switches_the_active_kernels(void **state) {
  const adb__vec_kernels *before = adb__vec_kernels_active();
  assert_int_equal(adb__vec_set_isa(ADB__ISA_SCALAR), ADB_OK);
  assert_int_equal(adb__vec_kernels_active()->isa, ADB__ISA_SCALAR);
  assert_int_equal(adb__vec_set_isa(ADB__ISA_COUNT), ADB_EINVAL);
  assert_int_equal(adb__vec_set_isa(before->isa), ADB_OK);
  assert_ptr_equal(adb__vec_kernels_active(), before);
}

static void test_normalize_gives_unit_length(void **state) {
  float v[1000];
  rng_state = 11;
  fill(v, 1000, 50.0);
  assert_int_equal(adb__vec_normalize(v, 1000), ADB_OK);
  double s = 0;
  for (int i = 0; i < 1000; i++)
    s += (double)v[i] * v[i];
  assert_true(fabs(s - 1) < 1000 * U);
}

static void test_normalize_rejects_zero_and_infinite(void **state) {
  float z[4] = {0, 0, 0, 0}, inf[2] = {INFINITY, 1};
  assert_int_equal(adb__vec_normalize(z, 4), ADB_EINVAL);
  assert_int_equal(adb__vec_normalize(inf, 2), ADB_EINVAL);
  assert_true(inf[0] == INFINITY);
}

/* ------------------------------------------------------------ exact k-NN */

typedef struct idist {
  double d;
  size_t i;
} idist;

static int idist_cmp(const void *a, const void *b) {
  const idist *x = a, *y = b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

/* Reference distances of q to every row, in double. */
static idist *ref_all(adb__metric m, const float *base, size_t n, size_t dim,
                      const float *q) {
  idist *r = malloc(n * sizeof(idist));
  assert_non_null(r);
  for (size_t i = 0; i < n; i++) {
    ref x = reference(q, base + i * dim, dim);
    r[i].i = i;
    r[i].d = m == ADB__METRIC_L2   ? x.l2
             : m == ADB__METRIC_IP ? 1 - x.dot
                                   : 1 - x.dot / sqrt(x.na * x.nb);
  }
  return r;
}

static void check_knn(adb__metric m, size_t n, size_t dim, int k) {
  float *base = malloc(n * dim * sizeof(float)), q[128];
  assert_non_null(base);
  fill(base, n * dim, 1.0);
  fill(q, dim, 1.0);
  adb__vec_hit out[64];
  int got;
  assert_int_equal(
      adb__vec_knn(m, base, n, dim, NULL, NULL, q, k, NULL, out, &got), ADB_OK);
  idist *r = ref_all(m, base, n, dim, q);
  qsort(r, n, sizeof(idist), idist_cmp);
  assert_int_equal(got, k < (int)n ? k : (int)n);
  /* Each hit is among the true k nearest, up to float error at the
   * boundary, and the hits are sorted and distinct. */
  double slack = 1e-4 * (1 + fabs(r[got - 1].d));
  for (int i = 0; i < got; i++) {
    assert_true(out[i].label < n);
    idist *self = ref_all(m, base + out[i].label * dim, 1, dim, q);
    assert_true(self->d <= r[got - 1].d + slack);
    free(self);
    if (i > 0) assert_true(out[i - 1].dist <= out[i].dist);
    for (int j = 0; j < i; j++)
      assert_true(out[j].label != out[i].label);
  }
  free(r);
  free(base);
}

static void test_knn_finds_the_exact_nearest(void **state) {
  rng_state = 5;
  check_knn(ADB__METRIC_L2, 2000, 17, 10);
  check_knn(ADB__METRIC_IP, 2000, 64, 10);
  check_knn(ADB__METRIC_COSINE, 2000, 128, 10);
  check_knn(ADB__METRIC_L2, 3, 3, 10); /* k larger than n */
}

static int accept_even(void *arg, uint64_t label, uint64_t tag) {
  (void)arg;
  (void)tag;
  return label % 2 == 0;
}

static void test_knn_honours_tag_and_predicate(void **state) {
  enum { N = 500, D = 8 };
  float base[N * D], q[D];
  uint64_t tags[N], labels[N];
  rng_state = 9;
  fill(base, N * D, 1.0);
  fill(q, D, 1.0);
  for (int i = 0; i < N; i++) {
    tags[i] = i % 7;
    labels[i] = 1000 + i;
  }
  adb__vec_filter f = {.match_tag = 1, .tag = 3, .accept = accept_even};
  adb__vec_hit out[20];
  int got;
  assert_int_equal(adb__vec_knn(ADB__METRIC_L2, base, N, D, labels, tags, q, 20,
                                &f, out, &got),
                   ADB_OK);
  assert_int_equal(got, 20);
  for (int i = 0; i < got; i++) {
    assert_int_equal(tags[out[i].label - 1000], 3);
    assert_int_equal(out[i].label % 2, 0);
  }
}

static void test_knn_rejects_bad_arguments(void **state) {
  float base[4] = {1, 2, 3, 4}, q[2] = {1, 2}, nanq[2] = {NAN, 0};
  adb__vec_hit out[2];
  int got = 99;
  assert_int_equal(adb__vec_knn(ADB__METRIC_L2, base, 2, 2, NULL, NULL, q, -1,
                                NULL, out, &got),
                   ADB_EINVAL);
  assert_int_equal(got, 0);
  assert_int_equal(adb__vec_knn(ADB__METRIC_L2, base, 2, 0, NULL, NULL, q, 1,
                                NULL, out, &got),
                   ADB_EINVAL);
  assert_int_equal(adb__vec_knn((adb__metric)7, base, 2, 2, NULL, NULL, q, 1,
                                NULL, out, &got),
                   ADB_EINVAL);
  assert_int_equal(adb__vec_knn(ADB__METRIC_L2, base, 2, 2, NULL, NULL, nanq, 1,
                                NULL, out, &got),
                   ADB_EINVAL);
  assert_int_equal(adb__vec_knn(ADB__METRIC_L2, base, 2, 2, NULL, NULL, q, 1,
                                NULL, NULL, &got),
                   ADB_EINVAL);
}

static void test_topk_breaks_ties_by_smaller_label(void **state) {
  adb__vec_hit buf[3];
  adb__topk t;
  adb__topk_init(&t, buf, 3);
  uint64_t order[] = {9, 4, 7, 1, 8, 2};
  for (int i = 0; i < 6; i++)
    adb__topk_push(&t, order[i], 1.0f);
  assert_int_equal(adb__topk_finish(&t), 3);
  assert_int_equal(buf[0].label, 1);
  assert_int_equal(buf[1].label, 2);
  assert_int_equal(buf[2].label, 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dot_matches_double_reference_on_every_isa),
      cmocka_unit_test(test_l2_matches_double_reference_on_every_isa),
      cmocka_unit_test(test_cosine_matches_double_reference_on_every_isa),
      cmocka_unit_test(test_kernels_never_read_past_the_end),
      cmocka_unit_test(test_cosine_of_a_zero_vector_is_one),
      cmocka_unit_test(test_cosine_distance_lies_in_zero_two),
      cmocka_unit_test(test_scalar_is_always_supported),
      cmocka_unit_test(test_set_isa_switches_the_active_kernels),
      cmocka_unit_test(test_normalize_gives_unit_length),
      cmocka_unit_test(test_normalize_rejects_zero_and_infinite),
      cmocka_unit_test(test_knn_finds_the_exact_nearest),
      cmocka_unit_test(test_knn_honours_tag_and_predicate),
      cmocka_unit_test(test_knn_rejects_bad_arguments),
      cmocka_unit_test(test_topk_breaks_ties_by_smaller_label),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
