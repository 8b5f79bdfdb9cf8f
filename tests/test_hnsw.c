/*
 * test_hnsw.c — the HNSW index against exact search: recall on clustered
 * and uniform data in 64 and 768 dimensions, filtered search, tombstones,
 * replacement, the exact path, snapshots (round trip and every kind of
 * damage), bad input, and concurrent inserts, removes and searches (run
 * this file under TSan too: cmake -DADB_TSAN=ON).
 *
 * Recall bounds: recall@10 is the mean over Q queries of a fraction of 10;
 * the graph reaches about 0.99 here, and a shortfall to 0.95 is a real
 * regression, not sampling noise (the standard error over 200 queries is
 * below 0.01).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hnsw.h"
#include "vec.h"

#define K 10

static int quick(void) {
  const char *q = getenv("ADB_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

/* ------------------------------------------------------------ data */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double rng_uniform(rng *r) {
  return ((double)(rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

static double rng_normal(rng *r) {
  return sqrt(-2 * log(rng_uniform(r))) *
         cos(6.283185307179586 * rng_uniform(r));
}

typedef enum shape { UNIFORM, CLUSTERED } shape;

/* n + nq points of dim floats: uniform in [-1, 1), or a mixture of 20
 * Gaussian clusters (centres N(0, 1), spread 0.5). The last nq rows are
 * the queries. */
static float *make_points(shape s, int n, int nq, int dim, uint64_t seed) {
  rng r = {seed};
  float *c = malloc(sizeof(float) * 20 * dim);
  float *x = malloc(sizeof(float) * (size_t)(n + nq) * dim);
  assert_non_null(c);
  assert_non_null(x);
  for (int i = 0; i < 20 * dim; i++)
    c[i] = (float)rng_normal(&r);
  for (int i = 0; i < n + nq; i++) {
    int k = (int)(rng_uniform(&r) * 20);
    for (int j = 0; j < dim; j++)
      x[(size_t)i * dim + j] =
          s == UNIFORM ? (float)(2 * rng_uniform(&r) - 1)
                       : c[k * dim + j] + 0.5f * (float)rng_normal(&r);
  }
  free(c);
  return x;
}

static adb__hnsw *make_index(int dim, adb__metric m) {
  adb__hnsw_config cfg = {.dim = dim, .metric = m, .exact_threshold = -1};
  adb__hnsw *h = NULL;
  assert_int_equal(adb__hnsw_create(&cfg, &h), ADB_OK);
  return h;
}

static void add_all(adb__hnsw *h, const float *x, int n, int dim, int tag_mod) {
  for (int i = 0; i < n; i++)
    assert_int_equal(adb__hnsw_add(h, (uint64_t)i,
                                   tag_mod ? (uint64_t)(i % tag_mod) : 0,
                                   x + (size_t)i * dim),
                     ADB_OK);
}

static int search(adb__hnsw *h, const float *q, int k, int ef,
                  const adb__vec_filter *f, adb__hnsw_mode mode,
                  adb__vec_hit *out) {
  adb__hnsw_query qq = {.vec = q, .k = k, .ef = ef, .filter = f, .mode = mode};
  int n = -1;
  assert_int_equal(adb__hnsw_search(h, &qq, out, &n), ADB_OK);
  return n;
}

/* Fraction of the exact k nearest that the graph search returns, over the
 * nq queries after the n points of x. The graph search applies gf; the
 * exact one xf, with tags. */
static double recall2(adb__hnsw *h, const float *x, int n, int nq, int dim,
                      adb__metric m, int ef, const adb__vec_filter *gf,
                      const adb__vec_filter *xf, const uint64_t *tags) {
  long found = 0, want = 0;
  for (int i = 0; i < nq; i++) {
    const float *q = x + (size_t)(n + i) * dim;
    adb__vec_hit got[K], ref[K];
    int ng = search(h, q, K, ef, gf, ADB__HNSW_GRAPH, got), nr;
    assert_int_equal(adb__vec_knn(m, x, n, dim, NULL, tags, q, K, xf, ref, &nr),
                     ADB_OK);
    assert_int_equal(ng, nr);
    for (int a = 0; a < nr; a++)
      for (int b = 0; b < ng; b++)
        if (ref[a].label == got[b].label) found++;
    want += nr;
  }
  return want ? (double)found / want : 1.0;
}

/* The same filter on both sides. */
static double recall(adb__hnsw *h, const float *x, int n, int nq, int dim,
                     adb__metric m, int ef, const adb__vec_filter *f,
                     const uint64_t *tags) {
  return recall2(h, x, n, nq, dim, m, ef, f, f, tags);
}

/* Uniform data in 64 or more dimensions has no low-dimensional structure
 * for the graph to exploit (every point's neighbours are nearly as far as
 * any other point), so it needs a wider beam: ef 200 against 64 for
 * clustered data, the same trade the paper reports for high intrinsic
 * dimension. */
static void check_recall(shape s, int n, int dim, int nq) {
  float *x = make_points(s, n, nq, dim, 1000 + dim + s);
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  add_all(h, x, n, dim, 0);
  int ef = s == UNIFORM ? 200 : 64;
  double r = recall(h, x, n, nq, dim, ADB__METRIC_L2, ef, NULL, NULL);
  print_message("    %s %dx%d ef=%d recall@10 = %.4f\n",
                s == UNIFORM ? "uniform" : "clustered", n, dim, ef, r);
  assert_true(r >= 0.95);
  adb__hnsw_destroy(h);
  free(x);
}

/* ------------------------------------------------------------ recall */

static void test_recall_clustered_64d(void **state) {
  check_recall(CLUSTERED, quick() ? 2000 : 10000, 64, quick() ? 50 : 200);
}

static void test_recall_uniform_64d(void **state) {
  check_recall(UNIFORM, quick() ? 2000 : 10000, 64, quick() ? 50 : 200);
}

static void test_recall_clustered_768d(void **state) {
  check_recall(CLUSTERED, quick() ? 800 : 3000, 768, quick() ? 30 : 100);
}

static void test_recall_uniform_768d(void **state) {
  check_recall(UNIFORM, quick() ? 800 : 3000, 768, quick() ? 30 : 100);
}

static void test_cosine_index_matches_exact_cosine(void **state) {
  int n = quick() ? 1000 : 4000, nq = 50, dim = 32;
  float *x = make_points(CLUSTERED, n, nq, dim, 77);
  adb__hnsw *h = make_index(dim, ADB__METRIC_COSINE);
  add_all(h, x, n, dim, 0);
  assert_true(recall(h, x, n, nq, dim, ADB__METRIC_COSINE, 64, NULL, NULL) >=
              0.95);
  /* Distances are cosine distances of the raw vectors. */
  adb__vec_hit got[K];
  int ng = search(h, x + (size_t)n * dim, K, 64, NULL, ADB__HNSW_GRAPH, got);
  for (int i = 0; i < ng; i++) {
    float want = adb__vec_cosine(x + (size_t)n * dim,
                                 x + (size_t)got[i].label * dim, dim);
    assert_true(fabsf(got[i].dist - want) < 1e-5f);
  }
  adb__hnsw_destroy(h);
  free(x);
}

/* ------------------------------------------------------------ filters */

static void test_filtered_search_returns_k_hits_that_all_match(void **state) {
  int n = quick() ? 3000 : 10000, nq = quick() ? 30 : 100, dim = 64;
  float *x = make_points(CLUSTERED, n, nq, dim, 5);
  uint64_t *tags = malloc(sizeof(uint64_t) * n);
  assert_non_null(tags);
  for (int i = 0; i < n; i++)
    tags[i] = (uint64_t)(i % 10); /* 10% each */
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  add_all(h, x, n, dim, 10);
  adb__vec_filter f = {.match_tag = 1, .tag = 3};
  for (int i = 0; i < nq; i++) {
    adb__vec_hit got[K];
    int ng =
        search(h, x + (size_t)(n + i) * dim, K, 64, &f, ADB__HNSW_GRAPH, got);
    assert_int_equal(ng, K);
    for (int j = 0; j < ng; j++)
      assert_int_equal(got[j].label % 10, 3);
  }
  double r = recall(h, x, n, nq, dim, ADB__METRIC_L2, 64, &f, tags);
  print_message("    filtered (10%%) recall@10 = %.4f\n", r);
  assert_true(r >= 0.95);
  adb__hnsw_destroy(h);
  free(tags);
  free(x);
}

static int label_mod10_is_7(void *arg, uint64_t label, uint64_t tag) {
  (void)arg;
  (void)tag;
  return label % 10 == 7;
}

static void test_predicate_filter_applies_during_the_walk(void **state) {
  int n = quick() ? 2000 : 5000, nq = 30, dim = 64;
  float *x = make_points(CLUSTERED, n, nq, dim, 6);
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  add_all(h, x, n, dim, 0);
  adb__vec_filter f = {.accept = label_mod10_is_7};
  double r = recall(h, x, n, nq, dim, ADB__METRIC_L2, 64, &f, NULL);
  assert_true(r >= 0.95);
  adb__vec_hit got[K];
  assert_int_equal(
      search(h, x + (size_t)n * dim, K, 0, &f, ADB__HNSW_GRAPH, got), K);
  adb__hnsw_destroy(h);
  free(x);
}

static void test_rare_tag_is_answered_exactly(void **state) {
  int n = 4000, dim = 16;
  float *x = make_points(UNIFORM, n, 1, dim, 8);
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  uint64_t *tags = malloc(sizeof(uint64_t) * n);
  assert_non_null(tags);
  for (int i = 0; i < n; i++) {
    tags[i] = i % 200 == 0 ? 99 : 1; /* 20 vectors carry tag 99 */
    assert_int_equal(adb__hnsw_add(h, i, tags[i], x + (size_t)i * dim), ADB_OK);
  }
  adb__vec_filter f = {.match_tag = 1, .tag = 99};
  adb__vec_hit got[K], ref[K];
  int ng = search(h, x + (size_t)n * dim, K, 0, &f, ADB__HNSW_AUTO, got), nr;
  adb__vec_knn(ADB__METRIC_L2, x, n, dim, NULL, tags, x + (size_t)n * dim, K,
               &f, ref, &nr);
  assert_int_equal(ng, nr);
  for (int i = 0; i < ng; i++) {
    assert_int_equal(got[i].label, ref[i].label);
    assert_true(got[i].dist == ref[i].dist);
  }
  adb__vec_filter none = {.match_tag = 1, .tag = 12345};
  assert_int_equal(search(h, x, K, 0, &none, ADB__HNSW_AUTO, got), 0);
  adb__hnsw_destroy(h);
  free(tags);
  free(x);
}

/* ------------------------------------------------------------ updates */

static void test_removed_vectors_are_never_returned(void **state) {
  int n = quick() ? 2000 : 5000, nq = 50, dim = 32;
  float *x = make_points(CLUSTERED, n, nq, dim, 9);
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  add_all(h, x, n, dim, 0);
  for (int i = 0; i < n; i += 3)
    assert_int_equal(adb__hnsw_remove(h, i), 0);
  assert_int_equal(adb__hnsw_remove(h, 0), ADB_ENOTFOUND);
  assert_false(adb__hnsw_contains(h, 3));
  assert_true(adb__hnsw_contains(h, 4));
  long found = 0;
  for (int i = 0; i < nq; i++) {
    const float *q = x + (size_t)(n + i) * dim;
    adb__vec_hit got[K], ref[K];
    int ng = search(h, q, K, 64, NULL, ADB__HNSW_GRAPH, got);
    assert_int_equal(ng, K);
    for (int j = 0; j < ng; j++)
      assert_true(got[j].label % 3 != 0);
    /* Reference: exact over the survivors (tag 1 marks them). */
    uint64_t *alive = malloc(sizeof(uint64_t) * n);
    for (int j = 0; j < n; j++)
      alive[j] = j % 3 != 0;
    adb__vec_filter f = {.match_tag = 1, .tag = 1};
    int nr;
    adb__vec_knn(ADB__METRIC_L2, x, n, dim, NULL, alive, q, K, &f, ref, &nr);
    for (int a = 0; a < nr; a++)
      for (int b = 0; b < ng; b++)
        found += ref[a].label == got[b].label;
    free(alive);
  }
  assert_true((double)found / (nq * K) >= 0.95);
  adb__hnsw_stats st;
  adb__hnsw_stats_get(h, &st);
  assert_int_equal(st.live, n - (n + 2) / 3);
  assert_int_equal(st.deleted, (n + 2) / 3);
  adb__hnsw_destroy(h);
  free(x);
}

static void test_adding_a_label_again_replaces_its_vector(void **state) {
  int dim = 8;
  float a[8] = {1, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 9};
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  float *x = make_points(UNIFORM, 100, 0, dim, 10);
  add_all(h, x, 100, dim, 0);
  assert_int_equal(adb__hnsw_add(h, 500, 1, a), ADB_OK);
  assert_int_equal(adb__hnsw_add(h, 500, 2, b), ADB_OK);
  adb__vec_hit got[K];
  for (int mode = ADB__HNSW_GRAPH; mode <= ADB__HNSW_EXACT; mode++) {
    int ng = search(h, b, K, 0, NULL, (adb__hnsw_mode)mode, got);
    assert_true(ng > 0);
    assert_int_equal(got[0].label, 500);
    assert_true(got[0].dist == 0.0f);
    ng = search(h, a, 1, 0, NULL, (adb__hnsw_mode)mode, got);
    assert_true(got[0].label != 500 || got[0].dist > 0);
  }
  float back[8];
  uint64_t tag;
  assert_int_equal(adb__hnsw_get(h, 500, back, &tag), ADB_OK);
  assert_memory_equal(back, b, sizeof(b));
  assert_int_equal(tag, 2);
  adb__hnsw_stats st;
  adb__hnsw_stats_get(h, &st);
  assert_int_equal(st.live, 101);
  assert_int_equal(st.deleted, 1);
  adb__hnsw_destroy(h);
  free(x);
}

static void test_small_index_answers_exactly(void **state) {
  int n = 500, dim = 24; /* below the default exact_threshold of 2000 */
  float *x = make_points(CLUSTERED, n, 5, dim, 12);
  adb__hnsw_config cfg = {.dim = dim};
  adb__hnsw *h;
  assert_int_equal(adb__hnsw_create(&cfg, &h), ADB_OK);
  add_all(h, x, n, dim, 0);
  for (int i = 0; i < 5; i++) {
    const float *q = x + (size_t)(n + i) * dim;
    adb__vec_hit got[K], ref[K];
    int ng = search(h, q, K, 1, NULL, ADB__HNSW_AUTO, got), nr;
    adb__vec_knn(ADB__METRIC_L2, x, n, dim, NULL, NULL, q, K, NULL, ref, &nr);
    assert_int_equal(ng, nr);
    for (int j = 0; j < ng; j++) {
      assert_int_equal(got[j].label, ref[j].label);
      assert_true(got[j].dist == ref[j].dist);
    }
  }
  adb__hnsw_destroy(h);
  free(x);
}

static void test_empty_index_returns_nothing(void **state) {
  adb__hnsw *h = make_index(4, ADB__METRIC_L2);
  float q[4] = {1, 2, 3, 4};
  adb__vec_hit got[K];
  assert_int_equal(search(h, q, K, 0, NULL, ADB__HNSW_GRAPH, got), 0);
  assert_int_equal(search(h, q, K, 0, NULL, ADB__HNSW_AUTO, got), 0);
  assert_int_equal(adb__hnsw_add(h, 1, 0, q), ADB_OK);
  assert_int_equal(search(h, q, K, 0, NULL, ADB__HNSW_GRAPH, got), 1);
  assert_int_equal(adb__hnsw_remove(h, 1), ADB_OK);
  assert_int_equal(search(h, q, K, 0, NULL, ADB__HNSW_GRAPH, got), 0);
  adb__hnsw_stats st;
  adb__hnsw_stats_get(h, &st);
  assert_int_equal(st.max_level, 0);
  adb__hnsw_destroy(h);
}

static void test_memory_report_covers_the_vectors(void **state) {
  int n = 3000, dim = 64;
  float *x = make_points(UNIFORM, n, 0, dim, 13);
  adb__hnsw *h = make_index(dim, ADB__METRIC_L2);
  adb__hnsw_stats st0, st;
  adb__hnsw_stats_get(h, &st0);
  add_all(h, x, n, dim, 0);
  adb__hnsw_stats_get(h, &st);
  assert_true(st.bytes_vectors >= (size_t)n * dim * sizeof(float));
  /* layer 0 alone keeps up to 2 M = 32 links of 4 bytes per node */
  assert_true(st.bytes_links >= (size_t)n * 32 * 4);
  assert_true(st.bytes_total ==
              st.bytes_vectors + st.bytes_links + st.bytes_other);
  assert_true(st.bytes_total > st0.bytes_total);
  /* Segments double, so at most twice what the nodes need, plus slack. */
  assert_true(st.bytes_total <
              2 * (size_t)n * (dim * 4 + 33 * 4 + 40) + (1 << 20));
  assert_int_equal(st.live, n);
  assert_true(st.max_level >= 1);
  adb__hnsw_destroy(h);
  free(x);
}

/* ------------------------------------------------------------ bad input */

static void test_bad_config_is_rejected(void **state) {
  adb__hnsw *h = (adb__hnsw *)1;
  adb__hnsw_config bad[] = {
      {.dim = 0},
      {.dim = ADB_MAX_EMBEDDING_DIM + 1},
      {.dim = 4, .M = 1},
      {.dim = 4, .M = 101},
      {.dim = 4, .metric = (adb__metric)9},
      {.dim = 4, .ef_construction = -1},
      {.dim = 4, .ef_search = ADB__HNSW_MAX_EF + 1},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(adb__hnsw_create(&bad[i], &h), ADB_EINVAL);
    assert_null(h);
  }
  assert_int_equal(adb__hnsw_create(NULL, &h), ADB_EINVAL);
  adb__hnsw_config cfg = {.dim = 4};
  assert_int_equal(adb__hnsw_create(&cfg, &h), ADB_OK);
  adb__hnsw_get_config(h, &cfg);
  assert_int_equal(cfg.M, 16);
  assert_int_equal(cfg.ef_construction, 200);
  assert_int_equal(cfg.ef_search, 64);
  assert_int_equal(cfg.exact_threshold, 2000);
  adb__hnsw_destroy(h);
  adb__hnsw_destroy(NULL);
}

static void test_bad_vectors_and_queries_are_rejected(void **state) {
  adb__hnsw *h = make_index(3, ADB__METRIC_COSINE);
  float ok[3] = {1, 2, 3}, nan[3] = {1, NAN, 3}, zero[3] = {0, 0, 0};
  float inf[3] = {INFINITY, 0, 0};
  assert_int_equal(adb__hnsw_add(h, 1, 0, nan), ADB_EINVAL);
  assert_int_equal(adb__hnsw_add(h, 1, 0, inf), ADB_EINVAL);
  assert_int_equal(adb__hnsw_add(h, 1, 0, zero), ADB_EINVAL);
  assert_int_equal(adb__hnsw_add(h, 1, 0, NULL), ADB_EINVAL);
  assert_false(adb__hnsw_contains(h, 1));
  assert_int_equal(adb__hnsw_add(h, 1, 0, ok), ADB_OK);
  adb__vec_hit out[4];
  int n;
  adb__hnsw_query qs[] = {
      {.vec = nan, .k = 1},
      {.vec = zero, .k = 1},
      {.vec = NULL, .k = 1},
      {.vec = ok, .k = -1},
      {.vec = ok, .k = 1, .ef = -1},
      {.vec = ok, .k = ADB__HNSW_MAX_EF + 1},
      {.vec = ok, .k = 1, .mode = (adb__hnsw_mode)3},
  };
  for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
    n = 99;
    assert_int_equal(adb__hnsw_search(h, &qs[i], out, &n), ADB_EINVAL);
    assert_int_equal(n, 0);
  }
  adb__hnsw_query q = {.vec = ok, .k = 1};
  assert_int_equal(adb__hnsw_search(h, &q, NULL, &n), ADB_EINVAL);
  assert_int_equal(adb__hnsw_search(h, &q, out, NULL), ADB_EINVAL);
  q.k = 0;
  assert_int_equal(adb__hnsw_search(h, &q, NULL, &n), ADB_OK);
  assert_int_equal(n, 0);
  assert_int_equal(adb__hnsw_get(h, 2, NULL, NULL), ADB_ENOTFOUND);
  adb__hnsw_destroy(h);
}

/* ------------------------------------------------------------ snapshots */

static char *temp_path(void) {
  const char *dir = getenv("TMPDIR");
  char *p = malloc(4096);
  assert_non_null(p);
  snprintf(p, 4096, "%s/adb_hnsw_XXXXXX", dir && *dir ? dir : "/tmp");
  int fd = mkstemp(p);
  assert_true(fd >= 0);
  close(fd);
  return p;
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*len + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, *len, f), *len);
  fclose(f);
  return b;
}

static void test_snapshot_round_trip_gives_identical_results(void **state) {
  int n = quick() ? 3000 : 6000, nq = 50, dim = 48;
  float *x = make_points(CLUSTERED, n, nq, dim, 14);
  adb__hnsw_config cfg = {.dim = dim,
                          .M = 12,
                          .ef_construction = 100,
                          .exact_threshold = -1,
                          .seed = 99};
  adb__hnsw *h, *g;
  assert_int_equal(adb__hnsw_create(&cfg, &h), ADB_OK);
  for (int i = 0; i < n; i++)
    assert_int_equal(adb__hnsw_add(h, 7 * i, i % 5, x + (size_t)i * dim), 0);
  for (int i = 0; i < n; i += 11)
    assert_int_equal(adb__hnsw_remove(h, 7 * i), 0);
  char *path = temp_path();
  assert_int_equal(adb__hnsw_save(h, path), ADB_OK);
  assert_int_equal(adb__hnsw_load(path, &g), ADB_OK);
  adb__hnsw_config c2;
  adb__hnsw_get_config(g, &c2);
  adb__hnsw_config want = {.dim = dim,
                           .M = 12,
                           .ef_construction = 100,
                           .ef_search = 64,
                           .exact_threshold = -1,
                           .seed = 99};
  assert_memory_equal(&c2, &want, sizeof(c2));
  adb__vec_filter f = {.match_tag = 1, .tag = 2};
  for (int i = 0; i < nq; i++) {
    const float *q = x + (size_t)(n + i) * dim;
    for (int filtered = 0; filtered < 2; filtered++) {
      adb__vec_hit a[K], b[K];
      const adb__vec_filter *ff = filtered ? &f : NULL;
      int na = search(h, q, K, 32, ff, ADB__HNSW_GRAPH, a);
      int nb = search(g, q, K, 32, ff, ADB__HNSW_GRAPH, b);
      assert_int_equal(na, nb);
      for (int j = 0; j < na; j++) {
        assert_int_equal(a[j].label, b[j].label);
        assert_true(a[j].dist == b[j].dist);
      }
    }
  }
  adb__hnsw_stats sa, sb;
  adb__hnsw_stats_get(h, &sa);
  adb__hnsw_stats_get(g, &sb);
  assert_int_equal(sa.live, sb.live);
  assert_int_equal(sa.deleted, sb.deleted);
  assert_int_equal(sa.max_level, sb.max_level);
  /* The loaded index keeps working. */
  assert_int_equal(adb__hnsw_add(g, 1, 0, x), ADB_OK);
  assert_true(adb__hnsw_contains(g, 1));
  assert_false(adb__hnsw_contains(g, 0));
  remove(path);
  free(path);
  adb__hnsw_destroy(h);
  adb__hnsw_destroy(g);
  free(x);
}

/* CRC-32C, to forge checksums of damaged files. */
static uint32_t crc32c(const uint8_t *p, size_t n) {
  uint32_t c = ~0u;
  while (n--) {
    c ^= *p++;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
  }
  return ~c;
}

static void reseal(uint8_t *b, size_t len) {
  uint32_t c = crc32c(b, len - 8);
  for (int i = 0; i < 4; i++)
    b[len - 8 + i] = (uint8_t)(c >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* A small saved index: its bytes and the dim. */
static uint8_t *small_snapshot(size_t *len, int *dim) {
  *dim = 6;
  float *x = make_points(UNIFORM, 60, 0, *dim, 15);
  adb__hnsw *h = make_index(*dim, ADB__METRIC_L2);
  add_all(h, x, 60, *dim, 3);
  assert_int_equal(adb__hnsw_remove(h, 5), ADB_OK);
  char *path = temp_path();
  assert_int_equal(adb__hnsw_save(h, path), ADB_OK);
  uint8_t *b = read_all(path, len);
  remove(path);
  free(path);
  adb__hnsw_destroy(h);
  free(x);
  return b;
}

static int load(const uint8_t *b, size_t len) {
  adb__hnsw *h = (adb__hnsw *)1;
  int rc = adb__hnsw_load_buf(b, len, &h);
  if (rc != ADB_OK) assert_null(h);
  adb__hnsw_destroy(h);
  return rc;
}

static void test_damaged_snapshot_is_rejected(void **state) {
  size_t len;
  int dim;
  uint8_t *b = small_snapshot(&len, &dim);
  assert_int_equal(load(b, len), ADB_OK);
  for (size_t cut = 0; cut < len; cut++)
    assert_int_equal(load(b, cut), ADB_ECORRUPT);
  for (size_t i = 0; i < len; i += 7) { /* any flipped bit */
    b[i] ^= 0x10;
    assert_int_equal(load(b, len), ADB_ECORRUPT);
    b[i] ^= 0x10;
  }
  free(b);
}

/* Checksum-valid files whose content is wrong. */
static void test_forged_snapshot_is_rejected(void **state) {
  size_t len;
  int dim;
  uint8_t *b = small_snapshot(&len, &dim);
  uint8_t *c = malloc(len);
  size_t node0 = 60, link0 = node0 + 18 + 4 * (size_t)dim;
  struct {
    size_t off;
    uint32_t val;
  } forge[] = {
      {8, 2},                   /* version 2 */
      {16, 0},                  /* dim 0 */
      {20, 1},                  /* M 1 */
      {12, 7},                  /* metric 7 */
      {link0, 33},              /* 33 links on layer 0, Mmax0 is 32 */
      {link0 + 4, 60},          /* link to node 60 of 60 */
      {node0 + 18, 0x7fc00000}, /* NaN coordinate */
      {52, 60},                 /* entry point id out of range */
      {44, 61},                 /* one node more than written */
  };
  for (size_t i = 0; i < sizeof(forge) / sizeof(forge[0]); i++) {
    memcpy(c, b, len);
    put32(c + forge[i].off, forge[i].val);
    reseal(c, len);
    assert_int_equal(load(c, len), ADB_ECORRUPT);
  }
  memcpy(c, b, len);
  c[node0 + 17] = 2; /* flags other than "removed" */
  reseal(c, len);
  assert_int_equal(load(c, len), ADB_ECORRUPT);
  /* Random damage behind a valid checksum: rejected or loaded, never a
   * crash, and a loaded index answers queries. */
  rng r = {16};
  for (int t = 0; t < (quick() ? 300 : 2000); t++) {
    memcpy(c, b, len);
    for (int k = 0; k < 3; k++)
      c[rng_next(&r) % (len - 16)] = (uint8_t)rng_next(&r);
    reseal(c, len);
    adb__hnsw *h = NULL;
    if (adb__hnsw_load_buf(c, len, &h) == ADB_OK) {
      float q[6] = {0};
      adb__vec_hit out[K];
      search(h, q, K, 0, NULL, ADB__HNSW_GRAPH, out);
      adb__hnsw_destroy(h);
    }
  }
  free(c);
  free(b);
}

static void test_missing_or_unwritable_snapshot_paths(void **state) {
  adb__hnsw *h = make_index(4, ADB__METRIC_L2);
  assert_int_equal(adb__hnsw_save(h, "/nonexistent-dir/x.hnsw"), ADB_EIO);
  adb__hnsw *g = (adb__hnsw *)1;
  assert_int_equal(adb__hnsw_load("/nonexistent-dir/x.hnsw", &g),
                   ADB_ENOTFOUND);
  assert_null(g);
  adb__hnsw_destroy(h);
}

static void test_empty_index_snapshot_round_trips(void **state) {
  adb__hnsw *h = make_index(4, ADB__METRIC_IP), *g;
  char *path = temp_path();
  assert_int_equal(adb__hnsw_save(h, path), ADB_OK);
  assert_int_equal(adb__hnsw_load(path, &g), ADB_OK);
  float q[4] = {1, 0, 0, 0};
  adb__vec_hit out[K];
  assert_int_equal(search(g, q, K, 0, NULL, ADB__HNSW_GRAPH, out), 0);
  remove(path);
  free(path);
  adb__hnsw_destroy(h);
  adb__hnsw_destroy(g);
}

/* ------------------------------------------------------------ threads */

typedef struct shared {
  adb__hnsw *h;
  const float *x;
  int n, dim, writers, next_remove;
  int writers_done; /* atomic */
  long clock;       /* atomic: removals completed */
  long *removed_at; /* atomic per label: clock after its removal, or 0 */
  int failures;     /* atomic */
} shared;

typedef struct worker {
  shared *s;
  int id;
} worker;

static void *writer_main(void *arg) {
  worker *w = arg;
  shared *s = w->s;
  for (int i = w->id; i < s->n; i += s->writers)
    if (adb__hnsw_add(s->h, i, i % 4, s->x + (size_t)i * s->dim) != ADB_OK)
      __atomic_fetch_add(&s->failures, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&s->writers_done, 1, __ATOMIC_ACQ_REL);
  return NULL;
}

/* Removes labels below n / 10 that writers have added. */
static void *remover_main(void *arg) {
  shared *s = arg;
  for (int i = 0; i < s->n / 10; i++) {
    while (!adb__hnsw_contains(s->h, i)) {
      if (__atomic_load_n(&s->writers_done, __ATOMIC_ACQUIRE) == s->writers)
        break;
      sched_yield();
    }
    if (adb__hnsw_remove(s->h, i) != ADB_OK) continue;
    long c = __atomic_add_fetch(&s->clock, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&s->removed_at[i], c, __ATOMIC_RELEASE);
  }
  return NULL;
}

/* Checks one answer: labels in range, distinct, sorted, none removed
 * before the search began. */
static int answer_ok(shared *s, const adb__vec_hit *out, int n, long t0) {
  for (int i = 0; i < n; i++) {
    if (out[i].label >= (uint64_t)s->n) return 0;
    if (i > 0 && out[i - 1].dist > out[i].dist) return 0;
    for (int j = 0; j < i; j++)
      if (out[j].label == out[i].label) return 0;
    long r = __atomic_load_n(&s->removed_at[out[i].label], __ATOMIC_ACQUIRE);
    if (r && r <= t0) return 0;
  }
  return 1;
}

static void *reader_main(void *arg) {
  worker *w = arg;
  shared *s = w->s;
  rng r = {(uint64_t)w->id};
  adb__vec_filter f = {.match_tag = 1, .tag = 1};
  while (__atomic_load_n(&s->writers_done, __ATOMIC_ACQUIRE) < s->writers) {
    const float *q = s->x + (rng_next(&r) % s->n) * s->dim;
    adb__hnsw_query qq = {.vec = q,
                          .k = K,
                          .ef = 32,
                          .filter = rng_next(&r) % 2 ? &f : NULL,
                          .mode = ADB__HNSW_GRAPH};
    adb__vec_hit out[K];
    int n;
    long t0 = __atomic_load_n(&s->clock, __ATOMIC_ACQUIRE);
    if (adb__hnsw_search(s->h, &qq, out, &n) != ADB_OK ||
        !answer_ok(s, out, n, t0))
      __atomic_fetch_add(&s->failures, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

static void test_concurrent_inserts_removes_and_searches(void **state) {
  enum { WRITERS = 2, READERS = 2 };
  int n = quick() ? 1500 : 6000, dim = 32, nq = 50;
  float *x = make_points(CLUSTERED, n, nq, dim, 17);
  shared s = {.h = make_index(dim, ADB__METRIC_L2),
              .x = x,
              .n = n,
              .dim = dim,
              .writers = WRITERS};
  s.removed_at = calloc(n, sizeof(long));
  pthread_t t[WRITERS + READERS + 1];
  worker w[WRITERS + READERS];
  for (int i = 0; i < WRITERS + READERS; i++) {
    w[i] = (worker){&s, i};
    pthread_create(&t[i], NULL, i < WRITERS ? writer_main : reader_main, &w[i]);
  }
  pthread_create(&t[WRITERS + READERS], NULL, remover_main, &s);
  for (int i = 0; i <= WRITERS + READERS; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(s.failures, 0);
  adb__hnsw_stats st;
  adb__hnsw_stats_get(s.h, &st);
  assert_int_equal(st.live + (size_t)s.clock, (size_t)n);
  /* The graph built by racing writers is as good as a sequential one. */
  for (int i = 0; i < n / 10; i++)
    if (!s.removed_at[i]) adb__hnsw_remove(s.h, i);
  uint64_t *tags = malloc(sizeof(uint64_t) * n);
  for (int i = 0; i < n; i++)
    tags[i] = i >= n / 10;
  adb__vec_filter alive = {.match_tag = 1, .tag = 1};
  double r =
      recall2(s.h, x, n, nq, dim, ADB__METRIC_L2, 64, NULL, &alive, tags);
  assert_true(r >= 0.95);
  free(tags);
  free(s.removed_at);
  adb__hnsw_destroy(s.h);
  free(x);
}

static void test_concurrent_save_and_search(void **state) {
  int n = 3000, dim = 16;
  float *x = make_points(UNIFORM, n, 0, dim, 18);
  shared s = {.h = make_index(dim, ADB__METRIC_L2),
              .x = x,
              .n = n,
              .dim = dim,
              .writers = 1};
  s.removed_at = calloc(n, sizeof(long));
  add_all(s.h, x, n / 2, dim, 0);
  pthread_t tw, tr;
  worker ww = {&s, 0}, wr = {&s, 7};
  /* The writer re-adds the first half and adds the second meanwhile. */
  pthread_create(&tw, NULL, writer_main, &ww);
  pthread_create(&tr, NULL, reader_main, &wr);
  char *path = temp_path();
  for (int i = 0; i < 3; i++)
    assert_int_equal(adb__hnsw_save(s.h, path), 0);
  pthread_join(tw, NULL);
  pthread_join(tr, NULL);
  assert_int_equal(s.failures, 0);
  adb__hnsw *g;
  assert_int_equal(adb__hnsw_load(path, &g), ADB_OK);
  adb__hnsw_destroy(g);
  remove(path);
  free(path);
  free(s.removed_at);
  adb__hnsw_destroy(s.h);
  free(x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_recall_clustered_64d),
      cmocka_unit_test(test_recall_uniform_64d),
      cmocka_unit_test(test_recall_clustered_768d),
      cmocka_unit_test(test_recall_uniform_768d),
      cmocka_unit_test(test_cosine_index_matches_exact_cosine),
      cmocka_unit_test(test_filtered_search_returns_k_hits_that_all_match),
      cmocka_unit_test(test_predicate_filter_applies_during_the_walk),
      cmocka_unit_test(test_rare_tag_is_answered_exactly),
      cmocka_unit_test(test_removed_vectors_are_never_returned),
      cmocka_unit_test(test_adding_a_label_again_replaces_its_vector),
      cmocka_unit_test(test_small_index_answers_exactly),
      cmocka_unit_test(test_empty_index_returns_nothing),
      cmocka_unit_test(test_memory_report_covers_the_vectors),
      cmocka_unit_test(test_bad_config_is_rejected),
      cmocka_unit_test(test_bad_vectors_and_queries_are_rejected),
      cmocka_unit_test(test_snapshot_round_trip_gives_identical_results),
      cmocka_unit_test(test_damaged_snapshot_is_rejected),
      cmocka_unit_test(test_forged_snapshot_is_rejected),
      cmocka_unit_test(test_missing_or_unwritable_snapshot_paths),
      cmocka_unit_test(test_empty_index_snapshot_round_trips),
      cmocka_unit_test(test_concurrent_inserts_removes_and_searches),
      cmocka_unit_test(test_concurrent_save_and_search),
  };
  /* Under TSan only the tests with threads are worth their 10x cost. */
#if defined(__SANITIZE_THREAD__)
  cmocka_set_test_filter("test_concurrent_*");
#endif
  const char *filter = getenv("ADB_TEST_FILTER");
  if (filter && *filter) cmocka_set_test_filter(filter);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
