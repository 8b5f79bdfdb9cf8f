/*
 * vec.h — float32 vector distances (squared L2, inner product, cosine) with
 * SIMD kernels chosen at run time (AVX-512F, AVX2+FMA, or portable scalar),
 * a bounded top-k collector, and the exact k-nearest-neighbour scan that is
 * the reference every approximate index (hnsw.h) is tested against.
 *
 * Distances, smaller is nearer:
 *   ADB__METRIC_L2      sum (a_i - b_i)^2          (squared Euclidean)
 *   ADB__METRIC_IP      1 - <a, b>
 *   ADB__METRIC_COSINE  1 - <a, b> / (|a| |b|), in [0, 2]; 1 when either
 *                       vector is zero
 *
 * All functions are thread-safe. Pointers passed in are borrowed for the
 * call. Vectors need no particular alignment.
 */
#ifndef ADB_VEC_H
#define ADB_VEC_H

#include <stddef.h>
#include <stdint.h>

#include "agentdb.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum adb__metric {
  ADB__METRIC_L2 = 0,
  ADB__METRIC_IP = 1,
  ADB__METRIC_COSINE = 2
} adb__metric;

/* Instruction sets with a kernel table, weakest first. */
typedef enum adb__isa {
  ADB__ISA_SCALAR = 0,
  ADB__ISA_AVX2 = 1,   /* AVX2 + FMA */
  ADB__ISA_AVX512 = 2, /* AVX-512F */
  ADB__ISA_COUNT = 3
} adb__isa;

/* A distance kernel over n floats. */
typedef float (*adb__dist_fn)(const float *a, const float *b, size_t n);

/* The kernels of one instruction set. */
typedef struct adb__vec_kernels {
  adb__isa isa;
  const char *name;    /* "scalar", "avx2", "avx512" */
  adb__dist_fn dot;    /* <a, b> */
  adb__dist_fn l2sq;   /* squared L2 */
  adb__dist_fn ipdist; /* 1 - <a, b> */
  adb__dist_fn cosine; /* cosine distance, as above */
} adb__vec_kernels;

/* True when this CPU can run the kernels of isa. */
int adb__vec_isa_supported(adb__isa isa);
/* Kernel table of isa, or NULL when the CPU lacks it. */
const adb__vec_kernels *adb__vec_kernels_for(adb__isa isa);
/* The table in use: the best supported one unless adb__vec_set_isa chose
 * another, or the environment variable ADB_VEC_ISA (scalar|avx2|avx512)
 * capped it at first use. Never NULL. */
const adb__vec_kernels *adb__vec_kernels_active(void);
/* Uses isa from now on (tests, benchmarks). ADB_EINVAL when unsupported.
 * Indexes pick their kernel when created, so set this before creating. */
int adb__vec_set_isa(adb__isa isa);

/* The active kernels, by metric. */
float adb__vec_dot(const float *a, const float *b, size_t n);
float adb__vec_l2sq(const float *a, const float *b, size_t n);
float adb__vec_cosine(const float *a, const float *b, size_t n);
float adb__vec_distance(adb__metric m, const float *a, const float *b,
                        size_t n);

/* The kernel an index uses on stored vectors: l2sq for L2, ipdist for IP
 * and for COSINE (whose vectors the index normalizes first). NULL for an
 * unknown metric. */
adb__dist_fn adb__vec_index_kernel(const adb__vec_kernels *k, adb__metric m);

/* Scales v to unit length. ADB_EINVAL (v unchanged) when its norm is zero
 * or not finite. */
int adb__vec_normalize(float *v, size_t n);
/* True when all n values are finite. */
int adb__vec_finite(const float *v, size_t n);
/* True when m is one of the three metrics. */
int adb__vec_metric_valid(int m);

/* ------------------------------------------------------------ filtering */

/* Called for a candidate that passed the tag test; nonzero keeps it. */
typedef int (*adb__vec_accept_fn)(void *arg, uint64_t label, uint64_t tag);

/* Which vectors a search may return. Zero-filled: all of them. */
typedef struct adb__vec_filter {
  int match_tag;             /* nonzero: only vectors whose tag == tag */
  uint64_t tag;              /* e.g. a hash of the owning user or agent */
  adb__vec_accept_fn accept; /* optional further predicate */
  void *arg;                 /* passed to accept */
} adb__vec_filter;

/* True when f (NULL = no filter) keeps the vector (label, tag). */
static inline int adb__vec_filter_keep(const adb__vec_filter *f, uint64_t label,
                                       uint64_t tag) {
  if (!f) return 1;
  if (f->match_tag && f->tag != tag) return 0;
  return !f->accept || f->accept(f->arg, label, tag);
}

/* ------------------------------------------------------------ top-k */

typedef struct adb__vec_hit {
  uint64_t label;
  float dist;
} adb__vec_hit;

/* The k best hits seen so far: a max-heap on (dist, label) in a buffer of
 * k hits owned by the caller. Ties are broken by the smaller label, so the
 * result does not depend on the order hits arrive in. */
typedef struct adb__topk {
  adb__vec_hit *h;
  int k, n;
} adb__topk;

void adb__topk_init(adb__topk *t, adb__vec_hit *buf, int k);
/* Offers a hit; kept when among the k best. */
void adb__topk_push(adb__topk *t, uint64_t label, float dist);
/* Distance a hit must beat to enter (+inf while fewer than k). */
float adb__topk_bound(const adb__topk *t);
/* Sorts the buffer nearest first and returns the number of hits. The
 * collector is spent afterwards. */
int adb__topk_finish(adb__topk *t);

/* ------------------------------------------------------------ exact scan */

/* The exact k nearest of q among the n rows of dim floats at base (row i at
 * base + i * dim). Row i has label labels[i] (i when labels is NULL) and
 * tag tags[i] (0 when tags is NULL); only rows that f keeps are considered.
 * Writes min(k, kept rows) hits to out, nearest first, ties by smaller
 * label, and their number to *n_out. ADB_EINVAL for dim outside
 * 1..ADB_MAX_EMBEDDING_DIM, k < 0, a NULL pointer that is needed, a
 * non-finite query, or an unknown metric. */
int adb__vec_knn(adb__metric m, const float *base, size_t n, size_t dim,
                 const uint64_t *labels, const uint64_t *tags, const float *q,
                 int k, const adb__vec_filter *f, adb__vec_hit *out,
                 int *n_out);

#ifdef __cplusplus
}
#endif

#endif
