/*
 * vec.c — float32 distance kernels, run-time ISA dispatch, the top-k
 * collector and the exact k-NN scan.
 *
 * Kernels. Each instruction set has one table of four kernels (dot, squared
 * L2, 1 - dot, cosine). The AVX2 and AVX-512 kernels are compiled with
 * function-level target attributes, so the library itself needs no -m
 * flags, and are chosen at run time with __builtin_cpu_supports. They keep
 * four independent accumulators (enough to hide FMA latency on long
 * vectors) and load the ragged tail with a masked load rather than a scalar
 * loop, so odd dimensions cost one extra step, never a fault: masked-off
 * lanes are not read. The scalar kernels keep four accumulators as well.
 *
 * Accuracy. Any order of summing n products is within gamma_n * sum|a_i b_i|
 * of the exact dot product (gamma_n = n u / (1 - n u), u = 2^-24), which is
 * the bound tests/test_vec.c checks every kernel against. Squared L2 is
 * computed from the differences, never as |a|^2 + |b|^2 - 2<a,b>, so it
 * stays accurate for nearly identical vectors. Cosine accumulates the dot
 * product and both norms in one pass and divides in double.
 */
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ADB_VEC_X86 1
#else
#define ADB_VEC_X86 0
#endif

/* ------------------------------------------------------------ scalar */

static float dot_scalar(const float *a, const float *b, size_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; i++)
    s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

static float l2sq_scalar(const float *a, const float *b, size_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
    float d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; i < n; i++) {
    float d = a[i] - b[i];
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

static float ipdist_scalar(const float *a, const float *b, size_t n) {
  return 1.0f - dot_scalar(a, b, n);
}

/* 1 - dot / sqrt(na nb), clamped to [0, 2]; 1 when a norm is zero. */
static float cosine_finish(float dot, float na, float nb) {
  if (!(na > 0) || !(nb > 0)) return 1.0f;
  double c = (double)dot / sqrt((double)na * (double)nb);
  double d = 1.0 - c;
  if (d < 0) d = 0;
  if (d > 2) d = 2;
  return (float)d;
}

static float cosine_scalar(const float *a, const float *b, size_t n) {
  float d0 = 0, d1 = 0, a0 = 0, a1 = 0, b0 = 0, b1 = 0;
  size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    d0 += a[i] * b[i];
    d1 += a[i + 1] * b[i + 1];
    a0 += a[i] * a[i];
    a1 += a[i + 1] * a[i + 1];
    b0 += b[i] * b[i];
    b1 += b[i + 1] * b[i + 1];
  }
  if (i < n) {
    d0 += a[i] * b[i];
    a0 += a[i] * a[i];
    b0 += b[i] * b[i];
  }
  return cosine_finish(d0 + d1, a0 + a1, b0 + b1);
}

static const adb__vec_kernels scalar_kernels = {
    .isa = ADB__ISA_SCALAR,
    .name = "scalar",
    .dot = dot_scalar,
    .l2sq = l2sq_scalar,
    .ipdist = ipdist_scalar,
    .cosine = cosine_scalar,
};

#if ADB_VEC_X86
/* ------------------------------------------------------------ AVX2 */

#define AVX2 __attribute__((target("avx2,fma")))

/* Lanes 0..r-1 set (r in 1..7): a sliding window over this table. */
static const int32_t tail_mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                          0,  0,  0,  0,  0,  0,  0,  0};

AVX2 static inline __m256i tail_mask8(size_t r) {
  return _mm256_loadu_si256((const __m256i *)(tail_mask_tab + 8 - r));
}

AVX2 static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 static float dot_avx2(const float *a, const float *b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8),
                         s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16),
                         _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24),
                         _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  if (i < n) {
    __m256i m = tail_mask8(n - i);
    s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m),
                         _mm256_maskload_ps(b + i, m), s1);
  }
  return hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

AVX2 static inline __m256 sqdiff_acc(__m256 x, __m256 y, __m256 acc) {
  __m256 d = _mm256_sub_ps(x, y);
  return _mm256_fmadd_ps(d, d, acc);
}

AVX2 static float l2sq_avx2(const float *a, const float *b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = sqdiff_acc(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = sqdiff_acc(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = sqdiff_acc(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16),
                    s2);
    s3 = sqdiff_acc(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24),
                    s3);
  }
  for (; i + 8 <= n; i += 8)
    s0 = sqdiff_acc(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  if (i < n) {
    __m256i m = tail_mask8(n - i);
    s1 = sqdiff_acc(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m),
                    s1);
  }
  return hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

AVX2 static float ipdist_avx2(const float *a, const float *b, size_t n) {
  return 1.0f - dot_avx2(a, b, n);
}

AVX2 static float cosine_avx2(const float *a, const float *b, size_t n) {
  __m256 d = _mm256_setzero_ps(), na = d, nb = d;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
    d = _mm256_fmadd_ps(x, y, d);
    na = _mm256_fmadd_ps(x, x, na);
    nb = _mm256_fmadd_ps(y, y, nb);
  }
  if (i < n) {
    __m256i m = tail_mask8(n - i);
    __m256 x = _mm256_maskload_ps(a + i, m), y = _mm256_maskload_ps(b + i, m);
    d = _mm256_fmadd_ps(x, y, d);
    na = _mm256_fmadd_ps(x, x, na);
    nb = _mm256_fmadd_ps(y, y, nb);
  }
  return cosine_finish(hsum256(d), hsum256(na), hsum256(nb));
}

static const adb__vec_kernels avx2_kernels = {
    .isa = ADB__ISA_AVX2,
    .name = "avx2",
    .dot = dot_avx2,
    .l2sq = l2sq_avx2,
    .ipdist = ipdist_avx2,
    .cosine = cosine_avx2,
};

/* ------------------------------------------------------------ AVX-512 */

#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __mmask16 tail_mask16(size_t r) {
  return (__mmask16)((1u << r) - 1);
}

AVX512 static float dot_avx512(const float *a, const float *b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16),
                         _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32),
                         _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48),
                         _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16)
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                         _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 static inline __m512 sqdiff_acc16(__m512 x, __m512 y, __m512 acc) {
  __m512 d = _mm512_sub_ps(x, y);
  return _mm512_fmadd_ps(d, d, acc);
}

AVX512 static float l2sq_avx512(const float *a, const float *b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = sqdiff_acc16(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = sqdiff_acc16(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16),
                      s1);
    s2 = sqdiff_acc16(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32),
                      s2);
    s3 = sqdiff_acc16(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48),
                      s3);
  }
  for (; i + 16 <= n; i += 16)
    s0 = sqdiff_acc16(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    s1 = sqdiff_acc16(_mm512_maskz_loadu_ps(m, a + i),
                      _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 static float ipdist_avx512(const float *a, const float *b, size_t n) {
  return 1.0f - dot_avx512(a, b, n);
}

AVX512 static float cosine_avx512(const float *a, const float *b, size_t n) {
  __m512 d = _mm512_setzero_ps(), na = d, nb = d;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(a + i), y = _mm512_loadu_ps(b + i);
    d = _mm512_fmadd_ps(x, y, d);
    na = _mm512_fmadd_ps(x, x, na);
    nb = _mm512_fmadd_ps(y, y, nb);
  }
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    __m512 x = _mm512_maskz_loadu_ps(m, a + i);
    __m512 y = _mm512_maskz_loadu_ps(m, b + i);
    d = _mm512_fmadd_ps(x, y, d);
    na = _mm512_fmadd_ps(x, x, na);
    nb = _mm512_fmadd_ps(y, y, nb);
  }
  return cosine_finish(_mm512_reduce_add_ps(d), _mm512_reduce_add_ps(na),
                       _mm512_reduce_add_ps(nb));
}

static const adb__vec_kernels avx512_kernels = {
    .isa = ADB__ISA_AVX512,
    .name = "avx512",
    .dot = dot_avx512,
    .l2sq = l2sq_avx512,
    .ipdist = ipdist_avx512,
    .cosine = cosine_avx512,
};
#endif /* ADB_VEC_X86 */

/* ------------------------------------------------------------ dispatch */

int adb__vec_isa_supported(adb__isa isa) {
  switch (isa) {
  case ADB__ISA_SCALAR:
    return 1;
#if ADB_VEC_X86
  case ADB__ISA_AVX2:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case ADB__ISA_AVX512:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#endif
  default:
    return 0;
  }
}

const adb__vec_kernels *adb__vec_kernels_for(adb__isa isa) {
  if (!adb__vec_isa_supported(isa)) return NULL;
#if ADB_VEC_X86
  if (isa == ADB__ISA_AVX512) return &avx512_kernels;
  if (isa == ADB__ISA_AVX2) return &avx2_kernels;
#endif
  return &scalar_kernels;
}

/* The table in use; NULL until first use. Loaded and stored atomically so
 * that a test switching ISAs while another thread computes is race-free. */
static const adb__vec_kernels *active;

/* Best supported ISA, capped by ADB_VEC_ISA when it names one. */
static const adb__vec_kernels *pick_default(void) {
  const char *env = getenv("ADB_VEC_ISA");
  int cap = ADB__ISA_COUNT - 1;
  for (int i = 0; env && i < ADB__ISA_COUNT; i++) {
    const adb__vec_kernels *k = adb__vec_kernels_for((adb__isa)i);
    if (k && strcmp(env, k->name) == 0) cap = i;
  }
  for (int i = cap; i > 0; i--) {
    const adb__vec_kernels *k = adb__vec_kernels_for((adb__isa)i);
    if (k) return k;
  }
  return &scalar_kernels;
}

const adb__vec_kernels *adb__vec_kernels_active(void) {
  const adb__vec_kernels *k = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
  if (k) return k;
  k = pick_default();
  __atomic_store_n(&active, k, __ATOMIC_RELEASE);
  return k;
}

int adb__vec_set_isa(adb__isa isa) {
  const adb__vec_kernels *k = adb__vec_kernels_for(isa);
  if (!k) return ADB_EINVAL;
  __atomic_store_n(&active, k, __ATOMIC_RELEASE);
  return ADB_OK;
}

float adb__vec_dot(const float *a, const float *b, size_t n) {
  return adb__vec_kernels_active()->dot(a, b, n);
}

float adb__vec_l2sq(const float *a, const float *b, size_t n) {
  return adb__vec_kernels_active()->l2sq(a, b, n);
}

float adb__vec_cosine(const float *a, const float *b, size_t n) {
  return adb__vec_kernels_active()->cosine(a, b, n);
}

float adb__vec_distance(adb__metric m, const float *a, const float *b,
                        size_t n) {
  const adb__vec_kernels *k = adb__vec_kernels_active();
  switch (m) {
  case ADB__METRIC_L2:
    return k->l2sq(a, b, n);
  case ADB__METRIC_IP:
    return k->ipdist(a, b, n);
  default:
    return k->cosine(a, b, n);
  }
}

adb__dist_fn adb__vec_index_kernel(const adb__vec_kernels *k, adb__metric m) {
  if (m == ADB__METRIC_L2) return k->l2sq;
  if (m == ADB__METRIC_IP || m == ADB__METRIC_COSINE) return k->ipdist;
  return NULL;
}

int adb__vec_metric_valid(int m) {
  return m == ADB__METRIC_L2 || m == ADB__METRIC_IP || m == ADB__METRIC_COSINE;
}

int adb__vec_finite(const float *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return 0;
  return 1;
}

int adb__vec_normalize(float *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += (double)v[i] * v[i];
  if (!(s > 0) || !isfinite(s)) return ADB_EINVAL;
  double inv = 1.0 / sqrt(s);
  for (size_t i = 0; i < n; i++)
    v[i] = (float)(v[i] * inv);
  return ADB_OK;
}

/* ------------------------------------------------------------ top-k */

/* a is worse than b: farther, or as far with a larger label. */
static inline int hit_worse(const adb__vec_hit *a, const adb__vec_hit *b) {
  return a->dist > b->dist || (a->dist == b->dist && a->label > b->label);
}

void adb__topk_init(adb__topk *t, adb__vec_hit *buf, int k) {
  t->h = buf;
  t->k = k < 0 ? 0 : k;
  t->n = 0;
}

static void heap_sift_down(adb__vec_hit *h, int n, int i) {
  adb__vec_hit x = h[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && hit_worse(&h[c + 1], &h[c])) c++;
    if (!hit_worse(&h[c], &x)) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

void adb__topk_push(adb__topk *t, uint64_t label, float dist) {
  adb__vec_hit x = {label, dist};
  if (t->n < t->k) {
    int i = t->n++;
    while (i > 0) {
      int p = (i - 1) / 2;
      if (!hit_worse(&x, &t->h[p])) break;
      t->h[i] = t->h[p];
      i = p;
    }
    t->h[i] = x;
  } else if (t->k > 0 && hit_worse(&t->h[0], &x)) {
    t->h[0] = x;
    heap_sift_down(t->h, t->n, 0);
  }
}

float adb__topk_bound(const adb__topk *t) {
  return t->n < t->k ? INFINITY : t->h[0].dist;
}

int adb__topk_finish(adb__topk *t) {
  /* Heap sort: move the worst to the end, n times. */
  for (int n = t->n; n > 1; n--) {
    adb__vec_hit w = t->h[0];
    t->h[0] = t->h[n - 1];
    t->h[n - 1] = w;
    heap_sift_down(t->h, n - 1, 0);
  }
  return t->n;
}

/* ------------------------------------------------------------ exact scan */

int adb__vec_knn(adb__metric m, const float *base, size_t n, size_t dim,
                 const uint64_t *labels, const uint64_t *tags, const float *q,
                 int k, const adb__vec_filter *f, adb__vec_hit *out,
                 int *n_out) {
  if (n_out) *n_out = 0;
  if (!n_out || !q || k < 0 || (k > 0 && !out) || (n > 0 && !base))
    return ADB_EINVAL;
  if (dim < 1 || dim > ADB_MAX_EMBEDDING_DIM || !adb__vec_metric_valid(m))
    return ADB_EINVAL;
  if (!adb__vec_finite(q, dim)) return ADB_EINVAL;
  const adb__vec_kernels *kern = adb__vec_kernels_active();
  adb__dist_fn dist = m == ADB__METRIC_L2   ? kern->l2sq
                      : m == ADB__METRIC_IP ? kern->ipdist
                                            : kern->cosine;
  adb__topk t;
  adb__topk_init(&t, out, k);
  for (size_t i = 0; i < n && k > 0; i++) {
    uint64_t label = labels ? labels[i] : i;
    if (!adb__vec_filter_keep(f, label, tags ? tags[i] : 0)) continue;
    adb__topk_push(&t, label, dist(q, base + i * dim, dim));
  }
  *n_out = adb__topk_finish(&t);
  return ADB_OK;
}
