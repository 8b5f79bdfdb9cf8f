/*
 * linear.c — linear Thompson sampling over user, context and action
 * features (Agrawal & Goyal 2013) with the hybrid shared + per-action
 * model of Li et al.'s LinUCB (2010, algorithm 2).
 *
 * Features. A decision sees the user embedding u (the request's, else the
 * user's stored state, else zeros), each candidate's catalogue embedding e
 * and the agent's context. u and e are brought to ADB_LIN_P = 16 values —
 * unchanged (zero-padded) up to 16 dimensions, else by a fixed seeded
 * Gaussian projection (Johnson-Lindenstrauss): the full u x e cross of two
 * 256-d embeddings has 65,536 weights, whose posterior (a 65k x 65k
 * precision) no decision could afford, while a 16 x 16 cross keeps the
 * shared block at k <= 401 (a 401^3/3 = 21 Mflop factorisation, done off
 * the request path) — and are scaled to norm 4 (so each value is ~ +-1
 * and one lambda suits any embedding scale). The context becomes
 * c in R^8, the sum of a fixed pseudo-random unit vector per key=value
 * (from its hash): for up to 8 distinct values these are linearly
 * independent, so c x e represents any per-value taste exactly, as a
 * one-hot would, in 128 weights instead of 16 x (number of values); beyond
 * 8 values it is a random-projection approximation. The shared feature
 * vector is z = [1, e (crosses "a"), u (x) e ("ua"), c (x) e ("ca")] and
 * each action has its own bias ("bias"), like VW's -q ua -q ca plus the
 * per-action constant of --cb_explore_adf.
 *
 * Posterior. Reward r ~ N(z.beta + theta_a, v^2) with prior beta, theta
 * ~ N(0, v^2/lambda I): a Bayesian ridge regression over [z, onehot(a)].
 * Its precision is [[A0, B^T], [B, diag(A_a)]] / v^2 with A0 = lambda I +
 * sum z z^T, B_a = sum over a's rewards of z, A_a = lambda + n_a, and the
 * right-hand side b0 = sum r z, b_a = sum over a's rewards of r. The
 * marginal of beta has precision S / v^2 with the Schur complement S = A0 -
 * sum_a B_a^T B_a / A_a and mean S^-1 (b0 - sum_a B_a^T b_a / A_a); given
 * beta, theta_a ~ N((b_a - B_a.beta) / A_a, v^2 / A_a). Drawing beta and
 * then each theta_a from these is an exact joint draw, with no bound on the
 * number of actions (each costs k + 2 sums), and S >= lambda I, so its
 * Cholesky factorisation cannot fail for lambda > 0.
 *
 * Sums, not a factor. The model keeps only the sums A0 (upper triangle),
 * b0, and per action (A_a, B_a, b_a): a reward adds to them (k^2/2 flops),
 * so the model is a pure function of the set of applied rewards, in any
 * order (up to rounding), which is what makes it durable and replicable
 * (policy_linear.c). The factorisation is redone from the sums each time a
 * pool is drawn, so rounding never accumulates in a factor (no rank-one
 * downdates to drift; periodic refactoring is the only factoring).
 * A catch-up of many rewards (a restart, a replica) folds them in batches
 * (adb__lin_batch): z = [1; g (x) e] with g = [1; u; c], so the rewards of
 * one action and one action embedding share their 25 x 25 sums of w g g^T
 * and expand into the k x k sums once per batch — O(25^2) per reward
 * instead of O(k^2), the same sums up to the order of addition.
 *
 * Decay. With half-life h, a reward at time t enters with weight 2^((t -
 * t_ref)/h) relative to a reference time t_ref, and the posterior at time
 * `now` scales every sum by 2^((t_ref - now)/h): exactly sum 2^((t -
 * now)/h) x (increment), whatever the order the rewards arrive in. When a
 * weight would exceed 2^64, every sum is rescaled and t_ref moves (the
 * same value, by the identity above).
 *
 * Truthful propensities: a pool of B posterior draws (bagging-style, like
 * VW's --bag, but from the exact posterior). A decision picks one draw
 * uniformly and takes its argmax, so the probability that this policy
 * picks action a is exactly (#draws whose argmax is a) / B, which is what
 * is logged — no approximation, and all B argmaxes cost B x (25 + n) x 16
 * multiply-adds (about 23k for 20 candidates and B = 32). Pools are drawn
 * again as the model changes (policy_linear.c), off the request path.
 */
#include "linear.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "agentdb.h"

/* ------------------------------------------------------------- features */

static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/* A standard normal that is a pure function of key (Box-Muller). */
static double hash_normal(uint64_t key) {
  uint64_t a = mix64(key), b = mix64(a ^ 0x5851F42D4C957F2DULL);
  double u1 = ((double)(a >> 11) + 0.5) / 9007199254740992.0;
  double u2 = (double)(b >> 11) / 9007199254740992.0;
  return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* Projection matrices by input dimension, made once and kept. */
static _Atomic(float *) proj_cache[ADB_MAX_EMBEDDING_DIM + 1];

static const float *projection(int dim) {
  float *p = atomic_load(&proj_cache[dim]);
  if (p) return p;
  p = malloc((size_t)dim * ADB_LIN_P * sizeof *p);
  if (!p) return NULL;
  for (int i = 0; i < ADB_LIN_P; i++)
    for (int j = 0; j < dim; j++)
      p[i * dim + j] =
          (float)hash_normal(0xADB11EA2ULL ^ ((uint64_t)dim << 40) ^
                             ((uint64_t)i << 20) ^ (uint64_t)j);
  float *expect = NULL;
  if (!atomic_compare_exchange_strong(&proj_cache[dim], &expect, p)) {
    free(p);
    p = expect;
  }
  return p;
}

static void normalise(float *v, int n, double norm) {
  double s = 0;
  for (int i = 0; i < n; i++)
    s += (double)v[i] * v[i];
  if (s <= 0 || !isfinite(s)) {
    memset(v, 0, (size_t)n * sizeof *v);
    return;
  }
  double f = norm / sqrt(s);
  for (int i = 0; i < n; i++)
    v[i] = (float)(v[i] * f);
}

void adb__lin_project(const float *v, int dim, float out[ADB_LIN_P]) {
  memset(out, 0, ADB_LIN_P * sizeof *out);
  if (!v || dim <= 0 || dim > ADB_MAX_EMBEDDING_DIM) return;
  if (dim <= ADB_LIN_P) {
    memcpy(out, v, (size_t)dim * sizeof *v);
  } else {
    const float *p = projection(dim);
    if (!p) return;
    for (int i = 0; i < ADB_LIN_P; i++) {
      double s = 0;
      for (int j = 0; j < dim; j++)
        s += (double)p[i * dim + j] * v[j];
      out[i] = (float)s;
    }
  }
  normalise(out, ADB_LIN_P, sqrt(ADB_LIN_P));
}

void adb__lin_context(const char *const *keys, const char *const *values, int n,
                      float out[ADB_LIN_M]) {
  memset(out, 0, ADB_LIN_M * sizeof *out);
  for (int i = 0; i < n; i++) {
    uint64_t h = adb__hash64(keys[i], strlen(keys[i])) * 31 ^
                 adb__hash64(values[i], strlen(values[i]));
    float r[ADB_LIN_M];
    for (int m = 0; m < ADB_LIN_M; m++)
      r[m] = (float)hash_normal(h + (uint64_t)m);
    normalise(r, ADB_LIN_M, 1.0);
    for (int m = 0; m < ADB_LIN_M; m++)
      out[m] += r[m];
  }
}

void adb__lin_blob_write(const adb__lin_x *x, uint8_t out[ADB_LIN_BLOB]) {
  out[0] = 'L';
  out[1] = '1';
  float all[2 * ADB_LIN_P + ADB_LIN_M];
  memcpy(all, x->u, sizeof x->u);
  memcpy(all + ADB_LIN_P, x->e, sizeof x->e);
  memcpy(all + 2 * ADB_LIN_P, x->c, sizeof x->c);
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    uint32_t b;
    memcpy(&b, &all[i], 4);
    for (int k = 0; k < 4; k++)
      out[2 + 4 * i + (size_t)k] = (uint8_t)(b >> (8 * k));
  }
}

int adb__lin_blob_read(const void *blob, size_t len, adb__lin_x *x) {
  const uint8_t *p = blob;
  if (!p || len != ADB_LIN_BLOB || p[0] != 'L' || p[1] != '1')
    return ADB_ECORRUPT;
  float all[2 * ADB_LIN_P + ADB_LIN_M];
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    uint32_t b = 0;
    for (int k = 0; k < 4; k++)
      b |= (uint32_t)p[2 + 4 * i + (size_t)k] << (8 * k);
    memcpy(&all[i], &b, 4);
    if (!isfinite(all[i])) return ADB_ECORRUPT;
  }
  memcpy(x->u, all, sizeof x->u);
  memcpy(x->e, all + ADB_LIN_P, sizeof x->e);
  memcpy(x->c, all + 2 * ADB_LIN_P, sizeof x->c);
  return ADB_OK;
}

/* Offsets of the blocks of z (-1 when absent). */
typedef struct layout {
  int a, ua, ca, k;
} layout;

static layout layout_of(const adb__lin_cfg *c) {
  int cr = c->crosses ? c->crosses : ADB_LIN_ALL, k = 1;
  layout l = {-1, -1, -1, 0};
  if (cr & ADB_LIN_A) l.a = k, k += ADB_LIN_P;
  if (cr & ADB_LIN_UA) l.ua = k, k += ADB_LIN_P * ADB_LIN_P;
  if (cr & ADB_LIN_CA) l.ca = k, k += ADB_LIN_M * ADB_LIN_P;
  l.k = k;
  return l;
}

int adb__lin_dim(const adb__lin_cfg *cfg) {
  return layout_of(cfg).k;
}

void adb__lin_features(const adb__lin_cfg *cfg, const adb__lin_x *x,
                       double *z) {
  layout l = layout_of(cfg);
  z[0] = 1;
  for (int j = 0; j < ADB_LIN_P; j++) {
    if (l.a >= 0) z[l.a + j] = x->e[j];
    for (int i = 0; l.ua >= 0 && i < ADB_LIN_P; i++)
      z[l.ua + i * ADB_LIN_P + j] = (double)x->u[i] * x->e[j];
    for (int m = 0; l.ca >= 0 && m < ADB_LIN_M; m++)
      z[l.ca + m * ADB_LIN_P + j] = (double)x->c[m] * x->e[j];
  }
}

/* ---------------------------------------------------------------- model */

static void cfg_defaults(adb__lin_cfg *c) {
  if (!c->crosses) c->crosses = ADB_LIN_ALL;
  if (!(c->lambda > 0) || !isfinite(c->lambda))
    c->lambda = ADB_LIN_DEFAULT_LAMBDA;
  if (!(c->v > 0) || !isfinite(c->v)) c->v = ADB_LIN_DEFAULT_V;
  if (!(c->half_life_s > 0) || !isfinite(c->half_life_s)) c->half_life_s = 0;
  if (c->pool <= 0) c->pool = ADB_LIN_DEFAULT_POOL;
}

int adb__lin_init(adb__lin_model *m, const adb__lin_cfg *cfg) {
  memset(m, 0, sizeof *m);
  if (cfg) m->cfg = *cfg;
  cfg_defaults(&m->cfg);
  m->k = adb__lin_dim(&m->cfg);
  m->A0 = calloc((size_t)m->k * m->k, sizeof *m->A0);
  m->b0 = calloc((size_t)m->k, sizeof *m->b0);
  return m->A0 && m->b0 ? ADB_OK : ADB_ENOMEM;
}

void adb__lin_free(adb__lin_model *m) {
  if (!m) return;
  for (int i = 0; i < m->n_arms; i++) {
    free(m->arms[i].B);
    free(m->arm_ids[i]);
  }
  free(m->arms);
  free(m->arm_ids);
  adb__strmap_free(&m->arm_index, NULL);
  free(m->A0);
  free(m->b0);
  memset(m, 0, sizeof *m);
}

static adb__lin_arm *arm_get(adb__lin_model *m, const char *id) {
  void *v = adb__strmap_get(&m->arm_index, id);
  if (v) return &m->arms[(uintptr_t)v - 1];
  if (m->n_arms == m->cap_arms) {
    int cap = m->cap_arms ? 2 * m->cap_arms : 64;
    adb__lin_arm *a = realloc(m->arms, (size_t)cap * sizeof *a);
    if (!a) return NULL;
    m->arms = a;
    char **ids = realloc(m->arm_ids, (size_t)cap * sizeof *ids);
    if (!ids) return NULL;
    m->arm_ids = ids;
    m->cap_arms = cap;
  }
  adb__lin_arm *a = &m->arms[m->n_arms];
  memset(a, 0, sizeof *a);
  a->B = calloc((size_t)m->k, sizeof *a->B);
  char *id_copy = strdup(id);
  if (!a->B || !id_copy ||
      adb__strmap_put(&m->arm_index, id, (void *)(uintptr_t)(m->n_arms + 1)) !=
          ADB_OK) {
    free(a->B);
    free(id_copy);
    return NULL;
  }
  m->arm_ids[m->n_arms++] = id_copy;
  return a;
}

/* Multiplies every sum by f (decay rescaling). */
static void scale_all(adb__lin_model *m, double f) {
  size_t kk = (size_t)m->k * m->k;
  for (size_t i = 0; i < kk; i++)
    m->A0[i] *= f;
  for (int i = 0; i < m->k; i++)
    m->b0[i] *= f;
  for (int a = 0; a < m->n_arms; a++) {
    m->arms[a].a *= f;
    m->arms[a].br *= f;
    for (int i = 0; i < m->k; i++)
      m->arms[a].B[i] *= f;
  }
}

/* The weight of a reward at t_s, moving t_ref forward when it would
 * overflow. */
static double weight(adb__lin_model *m, double t_s) {
  double h = m->cfg.half_life_s;
  if (h <= 0) return 1;
  if (m->n == 0 && m->t_ref_s == 0) m->t_ref_s = t_s;
  double ex = (t_s - m->t_ref_s) / h;
  if (ex > 64) {
    scale_all(m, exp2((m->t_ref_s - t_s) / h));
    m->t_ref_s = t_s;
    ex = 0;
  }
  return exp2(ex);
}

int adb__lin_update(adb__lin_model *m, const char *action, const adb__lin_x *x,
                    double r, double t_s) {
  if (!isfinite(r) || !isfinite(t_s) || !action) return ADB_EINVAL;
  for (int i = 0; i < ADB_LIN_P; i++)
    if (!isfinite(x->u[i]) || !isfinite(x->e[i])) return ADB_EINVAL;
  for (int i = 0; i < ADB_LIN_M; i++)
    if (!isfinite(x->c[i])) return ADB_EINVAL;
  int k = m->k;
  double z[k];
  adb__lin_features(&m->cfg, x, z);
  adb__lin_arm *arm = NULL;
  if ((m->cfg.crosses & ADB_LIN_BIAS) && !(arm = arm_get(m, action)))
    return ADB_ENOMEM;
  double w = weight(m, t_s);
  for (int i = 0; i < k; i++) {
    if (z[i] == 0) continue;
    double wz = w * z[i], *row = m->A0 + (size_t)i * k;
    for (int j = i; j < k; j++)
      row[j] += wz * z[j];
    m->b0[i] += wz * r;
  }
  if (arm) {
    arm->a += w;
    arm->br += w * r;
    for (int i = 0; i < k; i++)
      arm->B[i] += w * z[i];
  }
  m->n++;
  return ADB_OK;
}

/* ---------------------------------------------------------------- batch */

#define GDIM (1 + ADB_LIN_P + ADB_LIN_M)

typedef struct group {
  char *action;
  float e[ADB_LIN_P];
  double sw, swr, sg[GDIM], sgr[GDIM], sgg[GDIM * GDIM]; /* upper */
} group;

struct adb__lin_batch {
  adb__lin_model *m;
  adb__strmap index; /* action + e -> (void*)(index + 1) */
  group *g;
  int n, cap;
};

adb__lin_batch *adb__lin_batch_new(adb__lin_model *m) {
  adb__lin_batch *b = calloc(1, sizeof *b);
  if (b) b->m = m;
  return b;
}

static void batch_clear(adb__lin_batch *b) {
  for (int i = 0; i < b->n; i++)
    free(b->g[i].action);
  adb__strmap_free(&b->index, NULL);
  memset(&b->index, 0, sizeof b->index);
  b->n = 0;
}

void adb__lin_batch_free(adb__lin_batch *b) {
  if (!b) return;
  batch_clear(b);
  free(b->g);
  free(b);
}

static group *group_of(adb__lin_batch *b, const char *action, const float *e) {
  static const char hex[] = "0123456789abcdef";
  char key[ADB_ID_MAX + 2 + 8 * ADB_LIN_P + 1];
  size_t n = strlen(action);
  if (n > ADB_ID_MAX) n = ADB_ID_MAX;
  memcpy(key, action, n);
  key[n++] = '\x1f';
  for (int j = 0; j < ADB_LIN_P; j++) {
    uint32_t bits;
    memcpy(&bits, &e[j], 4);
    for (int d = 7; d >= 0; d--)
      key[n++] = hex[(bits >> (4 * d)) & 15];
  }
  key[n] = 0;
  void *v = adb__strmap_get(&b->index, key);
  if (v) return &b->g[(uintptr_t)v - 1];
  if (b->n == b->cap) {
    int cap = b->cap ? 2 * b->cap : 64;
    group *g = realloc(b->g, (size_t)cap * sizeof *g);
    if (!g) return NULL;
    b->g = g;
    b->cap = cap;
  }
  group *g = &b->g[b->n];
  memset(g, 0, sizeof *g);
  memcpy(g->e, e, sizeof g->e);
  if (!(g->action = strdup(action)) ||
      adb__strmap_put(&b->index, key, (void *)(uintptr_t)(b->n + 1))) {
    free(g->action);
    return NULL;
  }
  b->n++;
  return g;
}

int adb__lin_batch_add(adb__lin_batch *b, const char *action,
                       const adb__lin_x *x, double r, double t_s) {
  adb__lin_model *m = b->m;
  if (!isfinite(r) || !isfinite(t_s) || !action) return ADB_EINVAL;
  for (int i = 0; i < ADB_LIN_P; i++)
    if (!isfinite(x->u[i]) || !isfinite(x->e[i])) return ADB_EINVAL;
  for (int i = 0; i < ADB_LIN_M; i++)
    if (!isfinite(x->c[i])) return ADB_EINVAL;
  double h = m->cfg.half_life_s;
  if (h > 0 && (m->n > 0 || m->t_ref_s != 0) &&
      (t_s - m->t_ref_s) / h > 64) { /* weight() rescales the sums */
    int rc = adb__lin_batch_flush(b);
    if (rc) return rc;
  }
  group *g = group_of(b, action, x->e);
  if (!g) return ADB_ENOMEM;
  double w = weight(m, t_s), gv[GDIM];
  gv[0] = 1;
  for (int i = 0; i < ADB_LIN_P; i++)
    gv[1 + i] = x->u[i];
  for (int i = 0; i < ADB_LIN_M; i++)
    gv[1 + ADB_LIN_P + i] = x->c[i];
  g->sw += w;
  g->swr += w * r;
  for (int i = 0; i < GDIM; i++) {
    double wg = w * gv[i], *row = g->sgg + i * GDIM;
    g->sg[i] += wg;
    g->sgr[i] += wg * r;
    for (int j = i; j < GDIM; j++)
      row[j] += wg * gv[j];
  }
  m->n++;
  return ADB_OK;
}

/* z index p of the layout as (row of g, factor of e): z_p = g[gi] E_p. */
static void z_map(const layout *l, int k, int *gi, int *ej) {
  gi[0] = 0, ej[0] = -1;
  for (int j = 0; j < ADB_LIN_P; j++) {
    if (l->a >= 0) gi[l->a + j] = 0, ej[l->a + j] = j;
    for (int i = 0; l->ua >= 0 && i < ADB_LIN_P; i++)
      gi[l->ua + i * ADB_LIN_P + j] = 1 + i, ej[l->ua + i * ADB_LIN_P + j] = j;
    for (int c = 0; l->ca >= 0 && c < ADB_LIN_M; c++)
      gi[l->ca + c * ADB_LIN_P + j] = 1 + ADB_LIN_P + c,
                                 ej[l->ca + c * ADB_LIN_P + j] = j;
  }
  (void)k;
}

static void group_fold(adb__lin_model *m, const group *g, const int *gi,
                       const int *ej, adb__lin_arm *arm) {
  int k = m->k;
  double E[k];
  for (int p = 0; p < k; p++)
    E[p] = ej[p] < 0 ? 1 : g->e[ej[p]];
  for (int p = 0; p < k; p++) {
    if (E[p] == 0) continue;
    double *row = m->A0 + (size_t)p * k;
    int a = gi[p];
    for (int q = p; q < k; q++) {
      int b = gi[q];
      double s = a <= b ? g->sgg[a * GDIM + b] : g->sgg[b * GDIM + a];
      row[q] += s * E[p] * E[q];
    }
    m->b0[p] += g->sgr[a] * E[p];
  }
  if (arm) {
    arm->a += g->sw;
    arm->br += g->swr;
    for (int p = 0; p < k; p++)
      arm->B[p] += g->sg[gi[p]] * E[p];
  }
}

int adb__lin_batch_flush(adb__lin_batch *b) {
  adb__lin_model *m = b->m;
  if (!b->n) return ADB_OK;
  int k = m->k, *gi = malloc(2 * (size_t)k * sizeof *gi), rc = ADB_OK;
  if (!gi) rc = ADB_ENOMEM;
  layout l = layout_of(&m->cfg);
  if (gi) z_map(&l, k, gi, gi + k);
  for (int i = 0; !rc && i < b->n; i++) {
    adb__lin_arm *arm = NULL;
    if ((m->cfg.crosses & ADB_LIN_BIAS) && !(arm = arm_get(m, b->g[i].action)))
      rc = ADB_ENOMEM;
    else
      group_fold(m, &b->g[i], gi, gi + k, arm);
  }
  free(gi);
  batch_clear(b);
  return rc;
}

/* ------------------------------------------------------------ posterior */

/* In-place Cholesky of the lower triangle of S (k x k): S = L L^T. */
static int cholesky(double *S, int k) {
  for (int j = 0; j < k; j++) {
    double *rj = S + (size_t)j * k, d = rj[j];
    for (int p = 0; p < j; p++)
      d -= rj[p] * rj[p];
    if (!(d > 0) || !isfinite(d)) return ADB_ECORRUPT;
    d = sqrt(d);
    rj[j] = d;
    for (int i = j + 1; i < k; i++) {
      double *ri = S + (size_t)i * k, s = ri[j];
      for (int p = 0; p < j; p++)
        s -= ri[p] * rj[p];
      ri[j] = s / d;
    }
  }
  return ADB_OK;
}

/* Solves L y = b (forward) then L^T x = y (backward), in place. */
static void solve_lower(const double *L, int k, double *b) {
  for (int i = 0; i < k; i++) {
    const double *ri = L + (size_t)i * k;
    double s = b[i];
    for (int p = 0; p < i; p++)
      s -= ri[p] * b[p];
    b[i] = s / ri[i];
  }
}

static void solve_upper(const double *L, int k, double *b) {
  for (int i = k - 1; i >= 0; i--) {
    double s = b[i];
    for (int p = i + 1; p < k; p++)
      s -= L[(size_t)p * k + i] * b[p];
    b[i] = s / L[(size_t)i * k + i];
  }
}

static double decay_at(const adb__lin_model *m, double now_s) {
  if (m->cfg.half_life_s <= 0 || m->n == 0) return 1;
  return exp2((m->t_ref_s - now_s) / m->cfg.half_life_s);
}

/* Builds chol(S) and the mean of beta at now_s. */
static int post_make(const adb__lin_model *m, double now_s, adb__lin_post *p) {
  int k = m->k;
  double s = decay_at(m, now_s), lam = m->cfg.lambda;
  memset(p, 0, sizeof *p);
  p->k = k;
  p->n_arms = m->n_arms;
  p->v = m->cfg.v;
  p->lambda = lam;
  p->decay = s;
  p->L = malloc((size_t)k * k * sizeof *p->L);
  p->mean = malloc((size_t)k * sizeof *p->mean);
  if (!p->L || !p->mean) return ADB_ENOMEM;
  /* Lower triangle of S from the upper triangle of A0. */
  for (int i = 0; i < k; i++) {
    for (int j = 0; j <= i; j++)
      p->L[(size_t)i * k + j] = s * m->A0[(size_t)j * k + i];
    p->L[(size_t)i * k + i] += lam;
    p->mean[i] = s * m->b0[i];
  }
  for (int a = 0; a < m->n_arms; a++) {
    const adb__lin_arm *arm = &m->arms[a];
    double Aa = lam + s * arm->a, f = s * s / Aa;
    for (int i = 0; i < k; i++) {
      double bi = arm->B[i];
      if (bi == 0) continue;
      double *row = p->L + (size_t)i * k;
      for (int j = 0; j <= i; j++)
        row[j] -= f * bi * arm->B[j];
      p->mean[i] -= f * bi * arm->br;
    }
  }
  int rc = cholesky(p->L, k);
  if (rc) return rc;
  solve_lower(p->L, k, p->mean);
  solve_upper(p->L, k, p->mean);
  return ADB_OK;
}

static void post_free(adb__lin_post *p) {
  free(p->L);
  free(p->mean);
}

/* Conditional mean of arm a's bias given beta. */
static double arm_mean(const adb__lin_model *m, const adb__lin_arm *arm,
                       double s, const double *beta, double *prec) {
  double d = 0;
  for (int i = 0; i < m->k; i++)
    d += arm->B[i] * beta[i];
  *prec = m->cfg.lambda + s * arm->a;
  return (s * arm->br - s * d) / *prec;
}

int adb__lin_posterior(const adb__lin_model *m, double now_s, double *mean_z,
                       const char *arm, double *arm_mean_out, double *cov) {
  adb__lin_post p;
  int rc = post_make(m, now_s, &p), k = m->k;
  if (rc == ADB_OK && mean_z)
    memcpy(mean_z, p.mean, (size_t)k * sizeof *p.mean);
  if (rc == ADB_OK && arm && arm_mean_out) {
    void *v = adb__strmap_get(&m->arm_index, arm);
    double prec = m->cfg.lambda;
    *arm_mean_out =
        v ? arm_mean(m, &m->arms[(uintptr_t)v - 1], p.decay, p.mean, &prec) : 0;
  }
  if (rc == ADB_OK && cov) {
    double col[k];
    for (int j = 0; j < k; j++) {
      memset(col, 0, sizeof col);
      col[j] = 1;
      solve_lower(p.L, k, col);
      solve_upper(p.L, k, col);
      for (int i = 0; i < k; i++)
        cov[(size_t)i * k + j] = m->cfg.v * m->cfg.v * col[i];
    }
  }
  post_free(&p);
  return rc;
}

/* ----------------------------------------------------------------- pool */

void adb__lin_pool_unref(adb__lin_pool *p) {
  if (!p || atomic_fetch_sub(&p->refs, 1) != 1) return;
  free(p->G);
  free(p->bias);
  adb__strmap_free(&p->arm_index, NULL);
  free(p);
}

/* Folds one draw of beta into its G block (see linear.h). */
static void fold_draw(const adb__lin_model *m, const double *beta, double *G) {
  layout l = layout_of(&m->cfg);
  memset(G, 0, ADB_LIN_G_ROWS * ADB_LIN_P * sizeof *G);
  for (int j = 0; j < ADB_LIN_P; j++) {
    if (l.a >= 0) G[j] = beta[l.a + j];
    for (int i = 0; l.ua >= 0 && i < ADB_LIN_P; i++)
      G[(1 + i) * ADB_LIN_P + j] = beta[l.ua + i * ADB_LIN_P + j];
    for (int c = 0; l.ca >= 0 && c < ADB_LIN_M; c++)
      G[(1 + ADB_LIN_P + c) * ADB_LIN_P + j] = beta[l.ca + c * ADB_LIN_P + j];
  }
}

static adb__lin_pool *pool_alloc(const adb__lin_model *m, int B) {
  adb__lin_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->B = B;
  p->n_arms = m->n_arms;
  p->n = m->n;
  p->refs = 1;
  p->G = malloc((size_t)B * ADB_LIN_G_ROWS * ADB_LIN_P * sizeof *p->G);
  p->bias = malloc(((size_t)m->n_arms * B + 1) * sizeof *p->bias);
  int ok = p->G && p->bias;
  for (int a = 0; ok && a < m->n_arms; a++)
    ok = adb__strmap_put(&p->arm_index, m->arm_ids[a],
                         (void *)(uintptr_t)(a + 1)) == ADB_OK;
  if (!ok) {
    adb__lin_pool_unref(p);
    return NULL;
  }
  return p;
}

adb__lin_pool *adb__lin_pool_make(const adb__lin_model *m, double now_s,
                                  adb__rng *r, double v_override) {
  double v = v_override >= 0 ? v_override : m->cfg.v;
  int B = v > 0 ? m->cfg.pool : 1, k = m->k;
  adb__lin_post post;
  adb__lin_pool *p = NULL;
  double *beta = malloc((size_t)k * sizeof *beta);
  if (beta && post_make(m, now_s, &post) == ADB_OK) p = pool_alloc(m, B);
  if (p) {
    int has_bias = (m->cfg.crosses & ADB_LIN_BIAS) != 0;
    p->v_prior = has_bias ? v / sqrt(m->cfg.lambda) : 0;
    p->gen = adb__rng_next(r);
    for (int j = 0; j < B; j++) {
      for (int i = 0; i < k; i++)
        beta[i] = v > 0 ? adb__rng_normal(r) : 0;
      solve_upper(post.L, k, beta); /* L^-T z: covariance S^-1 */
      for (int i = 0; i < k; i++)
        beta[i] = post.mean[i] + v * beta[i];
      fold_draw(m, beta, p->G + (size_t)j * ADB_LIN_G_ROWS * ADB_LIN_P);
      for (int a = 0; a < m->n_arms; a++) {
        double prec, mu = arm_mean(m, &m->arms[a], post.decay, beta, &prec);
        p->bias[(size_t)a * B + j] =
            mu + (v > 0 ? v / sqrt(prec) * adb__rng_normal(r) : 0);
      }
    }
  }
  if (beta) post_free(&post);
  free(beta);
  return p;
}

/* Bias of candidate `id` under every draw, into out[B]. */
static void bias_of(const adb__lin_pool *p, const char *id, double *out) {
  void *v = adb__strmap_get(&p->arm_index, id);
  if (v) {
    memcpy(out, p->bias + ((uintptr_t)v - 1) * (size_t)p->B,
           (size_t)p->B * sizeof *out);
    return;
  }
  uint64_t h = adb__hash64(id, strlen(id)) ^ mix64(p->gen);
  for (int j = 0; j < p->B; j++)
    out[j] = p->v_prior > 0 ? p->v_prior * hash_normal(h + (uint64_t)j) : 0;
}

/* w = G_j^T [1; u; c]; f = [u; c] in double. */
typedef double v2d __attribute__((vector_size(16)));

static void draw_w(const adb__lin_pool *p, int j, const double *f,
                   double w[ADB_LIN_P]) {
  const double *G = p->G + (size_t)j * ADB_LIN_G_ROWS * ADB_LIN_P;
  /* Eight pairs of sums held in registers, a row added pair by pair: left
   * to itself the compiler vectorised across rows, with shuffles and the
   * sums in memory (7 instructions a term). Same order of additions. */
  v2d acc[ADB_LIN_P / 2], x;
  memcpy(acc, G, sizeof acc);
  for (int r = 0; r < ADB_LIN_P + ADB_LIN_M; r++) {
    v2d fr = {f[r], f[r]};
    const double *row = G + (1 + r) * ADB_LIN_P;
    for (int k = 0; k < ADB_LIN_P / 2; k++) {
      memcpy(&x, row + 2 * k, sizeof x);
      acc[k] += fr * x;
    }
  }
  memcpy(w, acc, sizeof acc);
}

static void x_to_f(const adb__lin_x *x, double *f) {
  for (int i = 0; i < ADB_LIN_P; i++)
    f[i] = x->u[i];
  for (int i = 0; i < ADB_LIN_M; i++)
    f[ADB_LIN_P + i] = x->c[i];
}

static double dot16(const double *w, const double *e) {
  double s = 0;
  for (int c = 0; c < ADB_LIN_P; c++)
    s += w[c] * e[c];
  return s;
}

/* w . e for the n actions of et, whose embeddings are stored by pairs of
 * actions, component by component (et[q * P + c] = the c-th components
 * of actions 2q and 2q + 1): each pair's two sums in one register, in
 * dot16's order (the same numbers). */
static void dots_paired(const double *w, const v2d *et, int n, double *s) {
  v2d wv[ADB_LIN_P];
  for (int c = 0; c < ADB_LIN_P; c++)
    wv[c] = (v2d){w[c], w[c]};
  for (int q = 0; 2 * q < n; q++) {
    const v2d *e = et + (size_t)q * ADB_LIN_P;
    v2d acc = {0.0, 0.0};
    for (int c = 0; c < ADB_LIN_P; c++)
      acc += wv[c] * e[c];
    s[2 * q] = acc[0];
    if (2 * q + 1 < n) s[2 * q + 1] = acc[1];
  }
}

void adb__lin_scores(const adb__lin_pool *p, int j, const adb__lin_x *x,
                     const float (*e)[ADB_LIN_P], const char *const *ids, int n,
                     double *scores) {
  double w[ADB_LIN_P], f[ADB_LIN_P + ADB_LIN_M], bias[p->B], ed[ADB_LIN_P];
  x_to_f(x, f);
  draw_w(p, j, f, w);
  for (int a = 0; a < n; a++) {
    bias_of(p, ids[a], bias);
    for (int c = 0; c < ADB_LIN_P; c++)
      ed[c] = e[a][c];
    scores[a] = dot16(w, ed) + bias[j];
  }
}

int adb__lin_choose(const adb__lin_pool *p, adb__rng *r, const adb__lin_x *x,
                    const float (*e)[ADB_LIN_P], const char *const *ids,
                    const uint8_t *eligible, int n, double *scores,
                    double *propensity) {
  int B = p->B;
  if (B <= 0 || n <= 0) return -1;
  int j0 = (int)(adb__rng_next(r) % (uint64_t)B);
  /* Candidates' embeddings in double, by pairs (dots_paired), their
   * biases by draw (n x B) and one draw's dot products (n). */
  int np = (n + 1) / 2;
  v2d *et = malloc((size_t)np * ADB_LIN_P * sizeof *et +
                   (size_t)n * (B + 1) * sizeof(double));
  if (!et) return -1;
  double *bias = (double *)(et + (size_t)np * ADB_LIN_P), *dot = bias + n * B;
  double f[ADB_LIN_P + ADB_LIN_M];
  int best[B];
  x_to_f(x, f);
  for (int a = 0; a < n; a++) {
    bias_of(p, ids[a], bias + (size_t)a * B);
    for (int c = 0; c < ADB_LIN_P; c++)
      et[(size_t)(a / 2) * ADB_LIN_P + c][a & 1] = e[a][c];
  }
  if (n & 1) /* the last pair's second lane: no action */
    for (int c = 0; c < ADB_LIN_P; c++)
      et[(size_t)(np - 1) * ADB_LIN_P + c][1] = 0.0;
  for (int j = 0; j < B; j++) {
    double w[ADB_LIN_P], top = -INFINITY;
    draw_w(p, j, f, w);
    dots_paired(w, et, n, dot);
    best[j] = -1;
    for (int a = 0; a < n; a++) {
      if (eligible && !eligible[a]) {
        if (j == j0 && scores) scores[a] = -INFINITY;
        continue;
      }
      double s = dot[a] + bias[(size_t)a * B + j];
      if (j == j0 && scores) scores[a] = s;
      if (s > top || best[j] < 0) top = s, best[j] = a;
    }
  }
  free(et);
  int chosen = best[j0 < B ? j0 : 0], same = 0;
  for (int j = 0; j < B; j++)
    same += best[j] == chosen;
  if (propensity) *propensity = (double)same / B;
  return chosen;
}

int64_t adb__lin_refresh_every(int64_t n) {
  return n / 50 > 10 ? n / 50 : 10;
}

/* ----------------------------------------------------------- checkpoints */

#define SAVE_MAGIC 0x314E494CU /* "LIN1" */

static void put_raw(adb__sbuf *b, const void *p, size_t n) {
  adb__sbuf_add(b, p, n);
}

int adb__lin_save(const adb__lin_model *m, adb__sbuf *b) {
  uint32_t hdr[3] = {SAVE_MAGIC, (uint32_t)m->k, (uint32_t)m->n_arms};
  put_raw(b, hdr, sizeof hdr);
  put_raw(b, &m->n, sizeof m->n);
  put_raw(b, &m->t_ref_s, sizeof m->t_ref_s);
  for (int i = 0; i < m->k; i++)
    put_raw(b, m->A0 + (size_t)i * m->k + i,
            (size_t)(m->k - i) * sizeof *m->A0);
  put_raw(b, m->b0, (size_t)m->k * sizeof *m->b0);
  for (int a = 0; a < m->n_arms; a++) {
    uint16_t len = (uint16_t)strlen(m->arm_ids[a]);
    put_raw(b, &len, sizeof len);
    put_raw(b, m->arm_ids[a], len);
    put_raw(b, &m->arms[a].a, sizeof(double));
    put_raw(b, &m->arms[a].br, sizeof(double));
    put_raw(b, m->arms[a].B, (size_t)m->k * sizeof(double));
  }
  return b->oom ? ADB_ENOMEM : ADB_OK;
}

typedef struct reader {
  const uint8_t *p;
  size_t left;
} reader;

static int take(reader *r, void *out, size_t n) {
  if (r->left < n) return ADB_ECORRUPT;
  memcpy(out, r->p, n);
  r->p += n;
  r->left -= n;
  return ADB_OK;
}

static int finite_all(const double *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return 0;
  return 1;
}

int adb__lin_load(adb__lin_model *m, const void *data, size_t len) {
  reader r = {data, len};
  uint32_t hdr[3];
  int rc = take(&r, hdr, sizeof hdr);
  if (rc || hdr[0] != SAVE_MAGIC || (int)hdr[1] != m->k || m->n)
    return ADB_ECORRUPT;
  if (!rc) rc = take(&r, &m->n, sizeof m->n);
  if (!rc) rc = take(&r, &m->t_ref_s, sizeof m->t_ref_s);
  for (int i = 0; !rc && i < m->k; i++)
    rc = take(&r, m->A0 + (size_t)i * m->k + i,
              (size_t)(m->k - i) * sizeof *m->A0);
  if (!rc) rc = take(&r, m->b0, (size_t)m->k * sizeof *m->b0);
  for (uint32_t a = 0; !rc && a < hdr[2]; a++) {
    uint16_t n;
    char id[ADB_ID_MAX + 1];
    rc = take(&r, &n, sizeof n);
    if (!rc && n > ADB_ID_MAX) rc = ADB_ECORRUPT;
    if (!rc) rc = take(&r, id, n);
    id[rc ? 0 : n] = 0;
    adb__lin_arm *arm = rc ? NULL : arm_get(m, id);
    if (!rc && !arm) rc = ADB_ENOMEM;
    if (!rc) rc = take(&r, &arm->a, sizeof(double));
    if (!rc) rc = take(&r, &arm->br, sizeof(double));
    if (!rc) rc = take(&r, arm->B, (size_t)m->k * sizeof(double));
    if (!rc && !(finite_all(&arm->a, 1) && finite_all(&arm->br, 1) &&
                 finite_all(arm->B, (size_t)m->k)))
      rc = ADB_ECORRUPT;
  }
  if (!rc && (r.left || !finite_all(m->b0, (size_t)m->k) ||
              !isfinite(m->t_ref_s) || m->n < 0))
    rc = ADB_ECORRUPT;
  return rc;
}
