/*
 * bench_vector.c — AgentDB's vector layer on its own: distance kernels per
 * instruction set, the exact scan, the HNSW index under filters and
 * tombstones, snapshot reload against rebuild, and search on two threads.
 * (The comparison with hnswlib is bench_hnswlib.cpp.)
 *
 * Seeded, scalable (--n, --dim, --queries, or --quick / ADB_BENCH_QUICK=1),
 * one line per case with its anchor measured in the same run and the
 * ratio (above 1 means the case beats its anchor):
 *   kernel   ns per distance of each SIMD kernel; anchor: the scalar one
 *   exact    exact k-NN scans per second; anchor: the same scan with the
 *            scalar kernels
 *   search   graph queries per second at ef 64 unfiltered, with a tag
 *            filter matching 10% and 1% of vectors, and with 10% of the
 *            vectors removed, each with its recall@10; anchor: unfiltered
 *   reload   seconds to load a snapshot; anchor: seconds to rebuild
 *   threads  queries per second on two threads; anchor: one thread
 * Times are CPU time of the measuring thread (wall time for threads), so
 * a busy host slows the numbers less.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <math.h>

#include "hnsw.h"
#include "vec.h"

#define K 10

static double cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static double wall_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* splitmix64 + Box-Muller, as in bench_hnswlib.cpp. */
static uint64_t rng_s;

static uint64_t rng_next(void) {
  uint64_t z = (rng_s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double rng_uniform(void) {
  return ((rng_next() >> 11) + 0.5) * 0x1.0p-53;
}

static double rng_normal(void) {
  return sqrt(-2 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform());
}

/* n points of a Gaussian mixture (see bench_hnswlib.cpp). */
static float *mixture(int n, int dim, const float *c, int clusters) {
  float *x = malloc(sizeof(float) * (size_t)n * dim);
  if (!x) exit(1);
  for (int i = 0; i < n; i++) {
    int k = (int)(rng_uniform() * clusters);
    for (int j = 0; j < dim; j++)
      x[(size_t)i * dim + j] = c[(size_t)k * dim + j] + 0.6f * rng_normal();
  }
  return x;
}

typedef struct data {
  int n, nq, dim;
  float *base, *queries;
} data;

static data make_data(int n, int nq, int dim, uint64_t seed) {
  rng_s = seed;
  int clusters = n / 500 > 16 ? n / 500 : 16;
  float *c = malloc(sizeof(float) * (size_t)clusters * dim);
  if (!c) exit(1);
  for (int i = 0; i < clusters * dim; i++)
    c[i] = (float)rng_normal();
  data d = {n, nq, dim, mixture(n, dim, c, clusters),
            mixture(nq, dim, c, clusters)};
  free(c);
  return d;
}

static void line(const char *what, const char *unit, double v,
                 const char *anchor, double a, double ratio) {
  printf("%-44s %10.2f %-5s  anchor %-16s %10.2f  ratio %.2f\n", what, v, unit,
         anchor, a, ratio);
}

/* ------------------------------------------------------------ kernels */

/* ns per call of f over a working set of 256 vectors (in cache). */
static double kernel_ns(adb__dist_fn f, const float *x, int dim) {
  volatile float sink = 0;
  long calls = 0;
  double t = cpu_s(), el;
  do {
    for (int r = 0; r < 1000; r++)
      for (int i = 0; i < 255; i++)
        sink += f(x + (size_t)i * dim, x + (size_t)(i + 1) * dim, dim);
    calls += 255 * 1000;
  } while ((el = cpu_s() - t) < 0.2);
  (void)sink;
  return el * 1e9 / calls;
}

static void bench_kernels(void) {
  static const int dims[] = {128, 768};
  const adb__vec_kernels *sc = adb__vec_kernels_for(ADB__ISA_SCALAR);
  for (size_t d = 0; d < 2; d++) {
    int dim = dims[d];
    float *x = malloc(sizeof(float) * 256 * dim);
    if (!x) exit(1);
    rng_s = 1;
    for (int i = 0; i < 256 * dim; i++)
      x[i] = (float)rng_normal();
    double ref_l2 = kernel_ns(sc->l2sq, x, dim);
    double ref_dot = kernel_ns(sc->dot, x, dim);
    double ref_cos = kernel_ns(sc->cosine, x, dim);
    for (int isa = 1; isa < ADB__ISA_COUNT; isa++) {
      const adb__vec_kernels *k = adb__vec_kernels_for((adb__isa)isa);
      if (!k) continue;
      char what[64];
      double v;
      snprintf(what, sizeof(what), "kernel l2sq d=%d %s", dim, k->name);
      v = kernel_ns(k->l2sq, x, dim);
      line(what, "ns", v, "scalar", ref_l2, ref_l2 / v);
      snprintf(what, sizeof(what), "kernel dot d=%d %s", dim, k->name);
      v = kernel_ns(k->dot, x, dim);
      line(what, "ns", v, "scalar", ref_dot, ref_dot / v);
      snprintf(what, sizeof(what), "kernel cosine d=%d %s", dim, k->name);
      v = kernel_ns(k->cosine, x, dim);
      line(what, "ns", v, "scalar", ref_cos, ref_cos / v);
    }
    free(x);
  }
}

/* ------------------------------------------------------------ exact */

static double exact_qps(const data *d, int nq) {
  adb__vec_hit out[K];
  int n;
  double t = cpu_s();
  for (int q = 0; q < nq; q++)
    adb__vec_knn(ADB__METRIC_L2, d->base, d->n, d->dim, NULL, NULL,
                 d->queries + (size_t)q * d->dim, K, NULL, out, &n);
  return nq / (cpu_s() - t);
}

static void bench_exact(const data *d) {
  int nq = (int)(1e8 / ((double)d->n * d->dim));
  if (nq < 10) nq = 10;
  if (nq > d->nq) nq = d->nq;
  const adb__vec_kernels *best = adb__vec_kernels_active();
  double v = exact_qps(d, nq);
  adb__vec_set_isa(ADB__ISA_SCALAR);
  double a = exact_qps(d, nq);
  adb__vec_set_isa(best->isa);
  char what[64];
  snprintf(what, sizeof(what), "exact %dx%d %s", d->n, d->dim, best->name);
  line(what, "qps", v, "scalar", a, v / a);
}

/* ------------------------------------------------------------ search */

typedef struct run {
  double qps, recall;
} run;

/* Exact answers for every query, among the vectors whose tags[] is 1. */
static adb__vec_hit *truth(const data *d, const uint64_t *tags) {
  adb__vec_hit *t = malloc(sizeof(adb__vec_hit) * K * d->nq);
  adb__vec_filter want = {.match_tag = 1, .tag = 1};
  int n;
  if (!t) exit(1);
  for (int q = 0; q < d->nq; q++)
    adb__vec_knn(ADB__METRIC_L2, d->base, d->n, d->dim, NULL, tags,
                 d->queries + (size_t)q * d->dim, K, &want, t + q * K, &n);
  return t;
}

/* Queries per second and recall@10 at ef 64, with a tag filter matching
 * label % mod == 0 when mod > 0, and labels % 10 == 9 removed when
 * `removed`. The truth is computed first, so the timed pass runs alone. */
static run measure(adb__hnsw *h, const data *d, int mod, int removed) {
  uint64_t *tags = malloc(sizeof(uint64_t) * d->n);
  adb__vec_hit *got = malloc(sizeof(adb__vec_hit) * K * d->nq);
  int *ng = malloc(sizeof(int) * d->nq);
  if (!tags || !got || !ng) exit(1);
  for (int i = 0; i < d->n; i++)
    tags[i] = (!mod || i % mod == 0) && !(removed && i % 10 == 9);
  adb__vec_hit *ref = truth(d, tags);
  adb__vec_filter f = {.match_tag = 1, .tag = 0};
  double t = cpu_s();
  for (int q = 0; q < d->nq; q++) {
    adb__hnsw_query qq = {.vec = d->queries + (size_t)q * d->dim,
                          .k = K,
                          .ef = 64,
                          .filter = mod ? &f : NULL};
    adb__hnsw_search(h, &qq, got + q * K, &ng[q]);
  }
  t = cpu_s() - t;
  long found = 0;
  for (int q = 0; q < d->nq; q++)
    for (int a = 0; a < K; a++)
      for (int b = 0; b < ng[q]; b++)
        found += ref[q * K + a].label == got[q * K + b].label;
  free(tags);
  free(got);
  free(ng);
  free(ref);
  return (run){d->nq / t, (double)found / ((double)d->nq * K)};
}

static adb__hnsw *build(const data *d, int mod, double *secs) {
  adb__hnsw_config cfg = {.dim = d->dim, .M = 16, .ef_construction = 200};
  adb__hnsw *h;
  if (adb__hnsw_create(&cfg, &h)) exit(1);
  double t = cpu_s();
  for (int i = 0; i < d->n; i++)
    adb__hnsw_add(h, i, mod ? (uint64_t)(i % mod) : 0,
                  d->base + (size_t)i * d->dim);
  *secs = cpu_s() - t;
  return h;
}

static void search_line(const data *d, const char *what, run r, run a) {
  char w[96];
  snprintf(w, sizeof(w), "search %dx%d %s r=%.3f", d->n, d->dim, what,
           r.recall);
  line(w, "qps", r.qps, "unfiltered", a.qps, r.qps / a.qps);
}

static void bench_search(const data *d, const char *snap) {
  double build_s;
  adb__hnsw *h = build(d, 0, &build_s);
  run base = measure(h, d, 0, 0);
  search_line(d, "ef=64", base, base);
  adb__hnsw_destroy(h);

  h = build(d, 10, &build_s);
  search_line(d, "tag 10%", measure(h, d, 10, 0), base);
  adb__hnsw_destroy(h);
  h = build(d, 100, &build_s);
  search_line(d, "tag 1% (auto: exact)", measure(h, d, 100, 0), base);
  adb__hnsw_destroy(h);

  h = build(d, 0, &build_s);
  for (int i = 9; i < d->n; i += 10)
    adb__hnsw_remove(h, i);
  search_line(d, "10% removed", measure(h, d, 0, 1), base);

  double t = wall_s();
  int rc = adb__hnsw_save(h, snap);
  double save_s = wall_s() - t;
  adb__hnsw *g = NULL;
  t = wall_s();
  rc = rc ? rc : adb__hnsw_load(snap, &g);
  double load_s = wall_s() - t;
  if (rc) {
    fprintf(stderr, "snapshot: %s\n", adb_err_name(rc));
  } else {
    char w[96];
    snprintf(w, sizeof(w), "reload %dx%d (save took %.2f s)", d->n, d->dim,
             save_s);
    line(w, "s", load_s, "rebuild", build_s, build_s / load_s);
  }
  remove(snap);
  adb__hnsw_destroy(g);
  adb__hnsw_destroy(h);
}

/* ------------------------------------------------------------ threads */

typedef struct tjob {
  adb__hnsw *h;
  const data *d;
  int from, count;
} tjob;

static void *search_loop(void *arg) {
  tjob *j = arg;
  adb__vec_hit out[K];
  int n;
  for (int i = 0; i < j->count; i++) {
    adb__hnsw_query qq = {.vec = j->d->queries +
                                 (size_t)((j->from + i) % j->d->nq) * j->d->dim,
                          .k = K,
                          .ef = 64};
    adb__hnsw_search(j->h, &qq, out, &n);
  }
  return NULL;
}

static double threads_qps(adb__hnsw *h, const data *d, int nt, int total) {
  pthread_t t[8];
  tjob j[8];
  double s = wall_s();
  for (int i = 0; i < nt; i++) {
    j[i] = (tjob){h, d, i * 997, total / nt};
    pthread_create(&t[i], NULL, search_loop, &j[i]);
  }
  for (int i = 0; i < nt; i++)
    pthread_join(t[i], NULL);
  return total / (wall_s() - s);
}

static void bench_threads(const data *d) {
  double b;
  adb__hnsw *h = build(d, 0, &b);
  int total = d->nq * 20;
  double one = threads_qps(h, d, 1, total), two = threads_qps(h, d, 2, total);
  char w[96];
  snprintf(w, sizeof(w), "threads %dx%d 2 threads (wall)", d->n, d->dim);
  line(w, "qps", two, "1 thread", one, two / one);
  adb__hnsw_destroy(h);
}

int main(int argc, char **argv) {
  int n = 100000, dim = 128, nq = 500;
  const char *quick = getenv("ADB_BENCH_QUICK");
  int q = quick && *quick && strcmp(quick, "0") != 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick"))
      q = 1;
    else if (!strcmp(argv[i], "--n") && i + 1 < argc)
      n = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
      dim = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
      nq = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--quick] [--n N] [--dim D] [--queries Q]\n",
              argv[0]);
      return 2;
    }
  }
  if (q) {
    n = n < 20000 ? n : 20000;
    nq = nq < 200 ? nq : 200;
  }
  char snap[4096];
  const char *tmp = getenv("TMPDIR");
  snprintf(snap, sizeof(snap), "%s/bench_vector.%d.hnsw",
           tmp && *tmp ? tmp : "/tmp", (int)getpid());
  printf("# vector layer, kernels: %s\n", adb__vec_kernels_active()->name);
  bench_kernels();
  data d = make_data(n, nq, dim, 42);
  bench_exact(&d);
  bench_search(&d, snap);
  bench_threads(&d);
  free(d.base);
  free(d.queries);
  return 0;
}
