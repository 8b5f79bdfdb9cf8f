/*
 * linear.h — the linear Thompson sampling model (pure math, no I/O): the
 * feature map, the hybrid ridge posterior as sums, the pool of posterior
 * draws that decisions choose from, and exact propensities. The design
 * essay is at the top of linear.c.
 */
#ifndef ADB_LINEAR_H
#define ADB_LINEAR_H

#include <pthread.h>
#include <stdint.h>

#include "bandit.h"
#include "util.h"

#define ADB_LIN_P 16 /* user and action embeddings, after projection */
#define ADB_LIN_M 8  /* context vector */
/* Logged features of a decision: magic "L1", then u, e, c as float32 LE. */
#define ADB_LIN_BLOB (2 + 4 * (2 * ADB_LIN_P + ADB_LIN_M))

/* Crosses (VW's -q), a bit set; default all. */
enum {
  ADB_LIN_UA = 1,   /* user x action embedding (bilinear taste) */
  ADB_LIN_CA = 2,   /* context x action embedding */
  ADB_LIN_A = 4,    /* action embedding (main effect) */
  ADB_LIN_BIAS = 8, /* per-action bias (hybrid, exact, unbounded actions) */
  ADB_LIN_ALL = 15
};

typedef struct adb__lin_cfg {
  int crosses;        /* ADB_LIN_* bits; 0 = ADB_LIN_ALL */
  double lambda;      /* ridge prior precision; <= 0 = 1 */
  double v;           /* exploration scale; <= 0 = default (linear.c) */
  double half_life_s; /* exponential forgetting; 0 = none */
  int pool;           /* posterior draws kept; <= 0 = 32 */
} adb__lin_cfg;

/* The defaults documented in README and openapi.yaml. */
#define ADB_LIN_DEFAULT_LAMBDA 1.0
#define ADB_LIN_DEFAULT_V 0.1
#define ADB_LIN_DEFAULT_POOL 32

/* The features of one (user, context, action): projected, normalised. */
typedef struct adb__lin_x {
  float u[ADB_LIN_P], e[ADB_LIN_P], c[ADB_LIN_M];
} adb__lin_x;

/* Projects an embedding of dim values to ADB_LIN_P (identity padded with
 * zeros when dim <= ADB_LIN_P, else a fixed seeded Gaussian projection)
 * and scales it to norm sqrt(ADB_LIN_P); zeros (or NULL) stay zeros. */
void adb__lin_project(const float *v, int dim, float out[ADB_LIN_P]);
/* The context vector: the sum over key=value pairs of a fixed pseudo-random
 * unit vector per pair (from its hash). */
void adb__lin_context(const char *const *keys, const char *const *values, int n,
                      float out[ADB_LIN_M]);
void adb__lin_blob_write(const adb__lin_x *x, uint8_t out[ADB_LIN_BLOB]);
/* ADB_OK or ADB_ECORRUPT (wrong size, magic or a non-finite value). */
int adb__lin_blob_read(const void *blob, size_t len, adb__lin_x *x);

/* The model: sums of weighted increments (see linear.c). Not thread-safe:
 * the caller serialises updates and refreshes. */
typedef struct adb__lin_arm {
  double a, br; /* sum w, sum w r */
  double *B;    /* sum w z (k values) */
} adb__lin_arm;

typedef struct adb__lin_model {
  adb__lin_cfg cfg;
  int k;          /* shared features */
  int64_t n;      /* rewards applied */
  double t_ref_s; /* reference time of the weights */
  double *A0;     /* k x k, upper triangle: sum w z z^T */
  double *b0;     /* sum w r z */
  int n_arms, cap_arms;
  adb__lin_arm *arms;
  char **arm_ids;
  adb__strmap arm_index; /* id -> (void*)(index + 1) */
} adb__lin_model;

int adb__lin_init(adb__lin_model *m, const adb__lin_cfg *cfg);
void adb__lin_free(adb__lin_model *m);
/* Number of shared features of a config. */
int adb__lin_dim(const adb__lin_cfg *cfg);
/* The shared feature vector z (k values) of x. */
void adb__lin_features(const adb__lin_cfg *cfg, const adb__lin_x *x, double *z);
/* Adds one reward r of action `action` with features x observed at time
 * t_s (seconds). ADB_EINVAL for a non-finite input, ADB_ENOMEM. */
int adb__lin_update(adb__lin_model *m, const char *action, const adb__lin_x *x,
                    double r, double t_s);

/* A batch of rewards folded in together (a catch-up of many rewards).
 * z = [1; g (x) e] with g = [1; u; c], so the rewards of one action with
 * one action embedding e share their sums of w, w r, w g, w r g and
 * w g g^T (25 x 25): each reward costs O(25^2) instead of O(k^2), and each
 * (action, e) group is expanded into the model's sums once, at flush. The
 * model is the one adb__lin_update would make (up to rounding: the sums
 * are added in another order). Rewards count in m->n when added. */
typedef struct adb__lin_batch adb__lin_batch;
adb__lin_batch *adb__lin_batch_new(adb__lin_model *m);
/* As adb__lin_update, into the batch (flushing first when decay must
 * rescale the model's sums). */
int adb__lin_batch_add(adb__lin_batch *b, const char *action,
                       const adb__lin_x *x, double r, double t_s);
/* Folds the batch into the model and empties it; ADB_ENOMEM leaves the
 * model short of the batch's rewards (reload it). */
int adb__lin_batch_flush(adb__lin_batch *b);
void adb__lin_batch_free(adb__lin_batch *b);

/* The posterior at time now_s: mean of the shared weights (k) and, for
 * known arms, of their biases; and the Cholesky factor of the shared
 * precision S (lower, k x k) — what a pool is drawn from. */
typedef struct adb__lin_post {
  int k, n_arms;
  double v, lambda, decay; /* decay: the weight factor at now_s */
  double *L;               /* chol(S), lower */
  double *mean;            /* S^-1 c */
} adb__lin_post;

/* A pool of posterior draws: immutable once made, shared by decisions.
 * Draw j: shared weights folded into G[j] (rows: 1, u, c; 16 columns
 * each, so w_j = G[j]^T [1; u; c]), and a bias per known arm. */
#define ADB_LIN_G_ROWS (1 + ADB_LIN_P + ADB_LIN_M)
typedef struct adb__lin_pool {
  int B;
  double v_prior; /* sd of an unknown arm's bias */
  uint64_t gen;   /* seeds unknown arms' biases */
  int64_t n;      /* rewards the pool was drawn from */
  double *G;      /* B x ADB_LIN_G_ROWS x ADB_LIN_P */
  double *bias;   /* n_arms x B */
  int n_arms;
  adb__strmap arm_index; /* id -> (void*)(index + 1) */
  _Atomic int refs;
} adb__lin_pool;

/* Draws a pool from the model's posterior at now_s (cfg.pool draws; with
 * v_override >= 0, that exploration scale, e.g. 0 for the mean). NULL on
 * ENOMEM or a failed factorisation. refs starts at 1. */
adb__lin_pool *adb__lin_pool_make(const adb__lin_model *m, double now_s,
                                  adb__rng *r, double v_override);
void adb__lin_pool_unref(adb__lin_pool *p);

/* Scores of n candidates under draw j (u, c and the candidates' e taken
 * from xs; only .e differs per candidate). */
void adb__lin_scores(const adb__lin_pool *p, int j, const adb__lin_x *x,
                     const float (*e)[ADB_LIN_P], const char *const *ids, int n,
                     double *scores);
/* A Thompson decision: draw j uniform, the eligible argmax under it; the
 * propensity is the share of draws whose argmax is the same action (exact
 * for this policy). Returns the chosen index (-1 if none eligible); scores
 * (may be NULL) get draw j's scores. */
int adb__lin_choose(const adb__lin_pool *p, adb__rng *r, const adb__lin_x *x,
                    const float (*e)[ADB_LIN_P], const char *const *ids,
                    const uint8_t *eligible, int n, double *scores,
                    double *propensity);

/* Checkpoints: the sums in host byte order (a header check rejects a
 * checkpoint of another shape). load wants a freshly initialised model of
 * the same config; ADB_ECORRUPT for anything else. */
int adb__lin_save(const adb__lin_model *m, adb__sbuf *b);
int adb__lin_load(adb__lin_model *m, const void *data, size_t len);

/* Rewards to wait for between pools when they are drawn by count (the
 * simulator; the server draws by time, policy_linear.c): max(10, n/50). */
int64_t adb__lin_refresh_every(int64_t n);

/* Posterior mean and (shared block) covariance, for tests: mean_z (k),
 * arm means for the given arm, cov (k x k) = v^2 S^-1. NULL outputs are
 * skipped. */
int adb__lin_posterior(const adb__lin_model *m, double now_s, double *mean_z,
                       const char *arm, double *arm_mean, double *cov);

#endif
