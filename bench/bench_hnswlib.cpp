/*
 * bench_hnswlib.cpp — AgentDB's HNSW (src/hnsw.c) against hnswlib, the
 * anchor, on the same seeded data in one process.
 *
 * Cases: 100,000 x 128 and 20,000 x 768 float32 vectors (or smaller with
 * --quick / ADB_BENCH_QUICK=1), drawn from a seeded Gaussian mixture, L2
 * distance, M = 16, ef_construction = 200 for both libraries, one thread.
 * For each case it prints one line per measure with the anchor measured in
 * the same run and the ratio:
 *   build      seconds to insert every vector (ratio: hnswlib / agentdb,
 *              above 1 means AgentDB is faster)
 *   memory     resident bytes the index added (ratio: agentdb / hnswlib)
 *   exact      exact k-NN scans per second: adb__vec_knn against hnswlib's
 *              BruteforceSearch (ratio: agentdb / hnswlib)
 *   recall@10 >= R, for R in 0.90, 0.95, 0.99: ef_search is swept from 10
 *              up for each library, and the first ef whose recall@10
 *              against the exact answer reaches R is reported with its
 *              queries per second on one core (ratio: agentdb / hnswlib)
 * Times are CPU time of the benchmark thread, so waiting for a core that
 * other processes hold does not count; timed query passes alternate
 * between the libraries and keep the best of --reps passes, so what load
 * remains (shared caches) hurts both alike.
 *
 * hnswlib picks its distance kernels with compile-time macros (__AVX__,
 * __AVX512F__) and a run-time CPU check; the build compiles bench/ without
 * -march flags, so hnswlib's headers are compiled here under a target
 * pragma that enables AVX2/FMA and AVX-512F, giving the anchor its best
 * kernels on this CPU (what -march=native would give it). The harness refuses
 * to run on a CPU without AVX-512F unless built with
 * -DADB_BENCH_HNSWLIB_AVX2=1.
 *
 * Usage: bench_hnswlib [--quick] [--n128 N] [--n768 N] [--queries Q]
 *                      [--reps R] [--seed S]
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <deque>
#include <fstream>
#include <iostream>
#include <list>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <vector>

/* Only hnswlib's own code is compiled for AVX2/AVX-512 (the standard
 * headers it uses are included above, outside the region). g++, unlike
 * gcc, does not define __AVX__ / __AVX512F__ for a target pragma, and
 * hnswlib selects its kernels by those macros, so they are defined here
 * for the region and removed after it. */
#pragma GCC push_options
#if ADB_BENCH_HNSWLIB_AVX2
#pragma GCC target("avx2,fma")
#else
#pragma GCC target("avx2,fma,avx512f")
#endif
#ifndef __AVX__
#define __AVX__ 1
#define ADB_BENCH_UNDEF_AVX 1
#endif
#if !ADB_BENCH_HNSWLIB_AVX2 && !defined(__AVX512F__)
#define __AVX512F__ 1
#define ADB_BENCH_UNDEF_AVX512F 1
#endif
#include <hnswlib/hnswlib.h>
#ifdef ADB_BENCH_UNDEF_AVX
#undef __AVX__
#endif
#ifdef ADB_BENCH_UNDEF_AVX512F
#undef __AVX512F__
#endif
#pragma GCC pop_options

#include "hnsw.h"
#include "vec.h"

namespace {

const int K = 10;
const int EF_SWEEP[] = {10,  12,  14,  16,  20,  24,  28,  32,  40,
                        48,  56,  64,  80,  96,  112, 128, 160, 192,
                        256, 320, 384, 512, 640, 800, 1000};
const double TARGETS[] = {0.90, 0.95, 0.99};

struct Opts {
  int n128 = 100000, n768 = 20000, queries = 1000, reps = 3;
  uint64_t seed = 42;
};

/* CPU time of this thread: time spent waiting for the CPU while other
 * processes run does not count, so QPS is per core even on a busy host. */
double now_s() {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Resident bytes, after handing freed heap pages back to the kernel so
 * that a later delta counts only pages the index touched. */
double rss_bytes() {
  malloc_trim(0);
  long pages = 0, res = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
    fclose(f);
  }
  return (double)res * sysconf(_SC_PAGESIZE);
}

/* splitmix64 and Box-Muller: the same stream as bench_vector.c. */
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() {
    return ((next() >> 11) + 0.5) * 0x1.0p-53;
  }
  double normal() {
    return std::sqrt(-2 * std::log(uniform())) *
           std::cos(6.283185307179586 * uniform());
  }
};

/* A Gaussian mixture: `clusters` centres ~ N(0, 1)^dim, each point a
 * centre plus N(0, sigma^2)^dim noise; queries come from the same law. */
struct Data {
  int n, nq, dim;
  std::vector<float> base, queries;
  std::vector<adb__vec_hit> truth; /* K per query */
};

void gen_points(Rng &r, const std::vector<float> &c, int clusters, int dim,
                float sigma, int n, std::vector<float> &out) {
  out.resize((size_t)n * dim);
  for (int i = 0; i < n; i++) {
    int k = (int)(r.uniform() * clusters);
    for (int j = 0; j < dim; j++)
      out[(size_t)i * dim + j] = c[(size_t)k * dim + j] + sigma * r.normal();
  }
}

Data make_data(int n, int dim, int nq, uint64_t seed) {
  Data d{n, nq, dim, {}, {}, {}};
  Rng r{seed ^ (uint64_t)dim << 32};
  int clusters = std::max(16, n / 500);
  std::vector<float> c((size_t)clusters * dim);
  for (float &x : c)
    x = (float)r.normal();
  gen_points(r, c, clusters, dim, 0.6f, n, d.base);
  gen_points(r, c, clusters, dim, 0.6f, nq, d.queries);
  d.truth.resize((size_t)nq * K);
  for (int i = 0; i < nq; i++) {
    int got;
    adb__vec_knn(ADB__METRIC_L2, d.base.data(), n, dim, NULL, NULL,
                 &d.queries[(size_t)i * dim], K, NULL, &d.truth[(size_t)i * K],
                 &got);
  }
  return d;
}

/* recall@K of one query's answer (labels) against the truth. */
int hits(const Data &d, int q, const uint64_t *labels, int n) {
  int h = 0;
  for (int a = 0; a < n; a++)
    for (int b = 0; b < K; b++)
      if (labels[a] == d.truth[(size_t)q * K + b].label) {
        h++;
        break;
      }
  return h;
}

/* One library behind a common face. */
struct Lib {
  virtual ~Lib() {}
  virtual const char *name() = 0;
  virtual void build(const Data &d) = 0;
  /* Answers query q with ef; writes labels, returns their number. */
  virtual int search(const Data &d, int q, int ef, uint64_t *labels) = 0;
};

struct Agentdb : Lib {
  adb__hnsw *h = nullptr;
  ~Agentdb() {
    adb__hnsw_destroy(h);
  }
  const char *name() override {
    return "agentdb";
  }
  void build(const Data &d) override {
    adb__hnsw_config cfg = {};
    cfg.dim = d.dim;
    cfg.metric = ADB__METRIC_L2;
    cfg.M = 16;
    cfg.ef_construction = 200;
    if (adb__hnsw_create(&cfg, &h) != ADB_OK) abort();
    for (int i = 0; i < d.n; i++)
      if (adb__hnsw_add(h, (uint64_t)i, 0, &d.base[(size_t)i * d.dim])) abort();
  }
  int search(const Data &d, int q, int ef, uint64_t *labels) override {
    adb__vec_hit out[K];
    adb__hnsw_query qq = {};
    qq.vec = &d.queries[(size_t)q * d.dim];
    qq.k = K;
    qq.ef = ef;
    qq.mode = ADB__HNSW_GRAPH;
    int n = 0;
    adb__hnsw_search(h, &qq, out, &n);
    for (int i = 0; i < n; i++)
      labels[i] = out[i].label;
    return n;
  }
};

struct Hnswlib : Lib {
  std::unique_ptr<hnswlib::L2Space> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> alg;
  const char *name() override {
    return "hnswlib";
  }
  void build(const Data &d) override {
    space.reset(new hnswlib::L2Space(d.dim));
    alg.reset(new hnswlib::HierarchicalNSW<float>(space.get(), d.n, 16, 200));
    for (int i = 0; i < d.n; i++)
      alg->addPoint(&d.base[(size_t)i * d.dim], (size_t)i);
  }
  int search(const Data &d, int q, int ef, uint64_t *labels) override {
    alg->setEf(ef);
    auto pq = alg->searchKnn(&d.queries[(size_t)q * d.dim], K);
    int n = 0;
    for (; !pq.empty(); pq.pop())
      labels[n++] = pq.top().second;
    return n;
  }
};

struct Point {
  int ef;
  double recall, qps;
};

/* One pass over all queries: recall, and seconds taken. */
double pass(Lib &lib, const Data &d, int ef, double *recall) {
  uint64_t labels[K];
  long h = 0;
  double t = now_s();
  for (int q = 0; q < d.nq; q++) {
    int n = lib.search(d, q, ef, labels);
    h += hits(d, q, labels, n);
  }
  t = now_s() - t;
  *recall = (double)h / ((double)d.nq * K);
  return t;
}

/* Sweeps ef over both libraries, alternating; stops once both pass the
 * highest target. */
void sweep(Lib &a, Lib &b, const Data &d, int reps, std::vector<Point> &pa,
           std::vector<Point> &pb) {
  double top = TARGETS[sizeof(TARGETS) / sizeof(TARGETS[0]) - 1];
  for (int ef : EF_SWEEP) {
    double ta = 1e30, tb = 1e30, ra = 0, rb = 0;
    for (int r = 0; r < reps; r++) {
      ta = std::min(ta, pass(a, d, ef, &ra));
      tb = std::min(tb, pass(b, d, ef, &rb));
    }
    pa.push_back({ef, ra, d.nq / ta});
    pb.push_back({ef, rb, d.nq / tb});
    if (ra >= top && rb >= top) break;
  }
}

const Point *first_at(const std::vector<Point> &p, double target) {
  for (const Point &x : p)
    if (x.recall >= target) return &x;
  return nullptr;
}

void report_recall(const char *tag, const std::vector<Point> &pa,
                   const std::vector<Point> &pb) {
  for (double t : TARGETS) {
    const Point *a = first_at(pa, t), *b = first_at(pb, t);
    printf("%s recall@10>=%.2f  ", tag, t);
    if (a)
      printf("agentdb ef=%d r=%.3f %.0f qps  ", a->ef, a->recall, a->qps);
    else
      printf("agentdb not reached  ");
    if (b)
      printf("hnswlib ef=%d r=%.3f %.0f qps  ", b->ef, b->recall, b->qps);
    else
      printf("hnswlib not reached  ");
    if (a && b) printf("ratio %.2f", a->qps / b->qps);
    printf("\n");
  }
}

/* Exact scans per second over the first nq queries. */
double exact_qps_agentdb(const Data &d, int nq) {
  adb__vec_hit out[K];
  int n;
  double t = now_s();
  for (int q = 0; q < nq; q++)
    adb__vec_knn(ADB__METRIC_L2, d.base.data(), d.n, d.dim, NULL, NULL,
                 &d.queries[(size_t)q * d.dim], K, NULL, out, &n);
  return nq / (now_s() - t);
}

double exact_qps_hnswlib(const Data &d, int nq) {
  hnswlib::L2Space space(d.dim);
  hnswlib::BruteforceSearch<float> bf(&space, d.n);
  for (int i = 0; i < d.n; i++)
    bf.addPoint(&d.base[(size_t)i * d.dim], (size_t)i);
  double t = now_s();
  for (int q = 0; q < nq; q++)
    bf.searchKnn(&d.queries[(size_t)q * d.dim], K);
  return nq / (now_s() - t);
}

void run_case(const Opts &o, int n, int dim) {
  char tag[64];
  snprintf(tag, sizeof(tag), "vector %dx%d", n, dim);
  double t = now_s();
  Data d = make_data(n, dim, o.queries, o.seed);
  fprintf(stderr, "%s: data and ground truth in %.1f s\n", tag, now_s() - t);

  int nq_exact =
      std::max(20, std::min(o.queries, (int)(2e8 / ((double)n * dim))));
  double ea = 0, eb = 0;
  for (int r = 0; r < o.reps; r++) {
    ea = std::max(ea, exact_qps_agentdb(d, nq_exact));
    eb = std::max(eb, exact_qps_hnswlib(d, nq_exact));
  }
  printf("%s exact          agentdb %.1f qps  hnswlib(bruteforce) %.1f qps  "
         "ratio %.2f\n",
         tag, ea, eb, ea / eb);

  Agentdb a;
  Hnswlib b;
  double m0 = rss_bytes(), t0 = now_s();
  a.build(d);
  double ba = now_s() - t0, m1 = rss_bytes(), t1 = now_s();
  b.build(d);
  double bb = now_s() - t1, m2 = rss_bytes();
  printf("%s build          agentdb %.2f s  hnswlib %.2f s  ratio %.2f "
         "(hnswlib time / agentdb time)\n",
         tag, ba, bb, bb / ba);
  adb__hnsw_stats st;
  adb__hnsw_stats_get(a.h, &st);
  printf("%s memory         agentdb %.1f MB (reports %.1f MB allocated)  "
         "hnswlib %.1f MB  ratio %.2f (RSS added, agentdb / hnswlib)\n",
         tag, (m1 - m0) / 1e6, st.bytes_total / 1e6, (m2 - m1) / 1e6,
         (m1 - m0) / (m2 - m1));
  std::vector<Point> pa, pb;
  sweep(a, b, d, o.reps, pa, pb);
  for (size_t i = 0; i < pa.size(); i++)
    fprintf(stderr,
            "%s ef=%d agentdb r=%.4f %.0f qps | hnswlib r=%.4f %.0f "
            "qps\n",
            tag, pa[i].ef, pa[i].recall, pa[i].qps, pb[i].recall, pb[i].qps);
  report_recall(tag, pa, pb);
  fflush(stdout);
}

int arg_int(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "%s needs a value\n", argv[*i]);
    exit(2);
  }
  return atoi(argv[++*i]);
}

} // namespace

int main(int argc, char **argv) {
  Opts o;
  const char *quick = getenv("ADB_BENCH_QUICK");
  bool q = quick && *quick && strcmp(quick, "0") != 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick"))
      q = true;
    else if (!strcmp(argv[i], "--n128"))
      o.n128 = arg_int(argc, argv, &i);
    else if (!strcmp(argv[i], "--n768"))
      o.n768 = arg_int(argc, argv, &i);
    else if (!strcmp(argv[i], "--queries"))
      o.queries = arg_int(argc, argv, &i);
    else if (!strcmp(argv[i], "--reps"))
      o.reps = arg_int(argc, argv, &i);
    else if (!strcmp(argv[i], "--seed"))
      o.seed = arg_int(argc, argv, &i);
    else {
      fprintf(stderr,
              "usage: %s [--quick] [--n128 N] [--n768 N] "
              "[--queries Q] [--reps R] [--seed S]\n",
              argv[0]);
      return 2;
    }
  }
  if (q) {
    o.n128 = std::min(o.n128, 20000);
    o.n768 = std::min(o.n768, 5000);
    o.queries = std::min(o.queries, 300);
  }
#if !ADB_BENCH_HNSWLIB_AVX2
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) {
    fprintf(stderr, "bench_hnswlib: this CPU lacks AVX-512F; rebuild with "
                    "-DADB_BENCH_HNSWLIB_AVX2=1\n");
    return 1;
  }
#endif
  printf("# vector search, one thread, L2, M=16 ef_construction=200, k=10, "
         "%d queries; agentdb kernels: %s\n",
         o.queries, adb__vec_kernels_active()->name);
  if (o.n128 > 0) run_case(o, o.n128, 128);
  if (o.n768 > 0) run_case(o, o.n768, 768);
  return 0;
}
