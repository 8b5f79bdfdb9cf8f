/*
 * evaluate.c — offline evaluation: "what if we had used policy X?"
 *
 * Input. Logged decisions in time order (adb__log_row): the context, the
 * candidates, the chosen action a_t, the propensity p_t with which the
 * logging policy chose it, and the reward r_t. Rows without a reward yet
 * are skipped (counted); so are rows whose propensity is outside (0, 1],
 * whose action is not among its candidates, or whose JSON is unreadable.
 *
 * Candidates. Each candidate policy is an agent config (as POST
 * /v1/agents takes it) and is run by AgentDB's own models, not a copy of
 * them: a tabular agent keeps adb__arm_stats per (user, state, action) and
 * per ('*', state, action), states from adb__state_key, posteriors from
 * adb__posterior_make (fallback_strength borrowing included), and its
 * probability of choosing each candidate is adb__propensity, the same
 * numerical integration decide logs; a linear agent keeps an
 * adb__lin_model, draws pools of posterior samples with adb__lin_pool_make
 * on the simulator's count schedule (adb__lin_refresh_every), and its
 * probability of a candidate is the share of the pool's draws whose argmax
 * it is, exactly what adb__lin_choose logs. Not replayed: the tabular
 * decay_half_life_s (tabular candidates learn without forgetting) and
 * cold-start neighbours (a server setting, not an agent's).
 *
 * Training: off-policy updates on the logged action. Every candidate
 * learns from every logged event (x_t, a_t, r_t), whatever it would have
 * chosen, after being asked for its distribution pi_t(.|x_t). So pi_t
 * depends only on rows before t, and
 *     E[ pi_t(a_t|x_t) / p_t * r_t | past ] = sum_a pi_t(a|x_t) mu(x_t, a),
 * which makes the estimators below unbiased (martingale differences) for
 *     V = (1/T) sum_t sum_a pi_t(a|x_t) mu(x_t, a),
 * the value of the candidate as it would have acted, step by step, while
 * learning from the logging policy's data (the "learning from logged
 * bandit feedback" setting: Strehl, Langford, Li & Kakade, NeurIPS 2010;
 * Swaminathan & Joachims, ICML 2015). The alternative, Li, Chu, Langford
 * & Wang's replay method (WSDM 2011), keeps only the events where the
 * candidate's choice matches the logged one and learns only from those;
 * it needs a uniformly random logging policy and discards most of the
 * log, which AgentDB's Thompson-sampled logs are not. What V is not: the
 * value the candidate would reach deployed, learning from its own
 * choices; with much exploration in the log the two are close.
 *
 * Estimators, with w_t = pi_t(a_t|x_t) / p_t over the T rows:
 *   IPS    (1/T) sum w_t r_t                  (Horvitz & Thompson 1952)
 *   SNIPS  sum w_t r_t / sum w_t              (Swaminathan & Joachims 2015)
 *   DR     (1/T) sum [ sum_a pi_t(a) q_t(a) + w_t (r_t - q_t(a_t)) ]
 *          (Dudik, Langford & Li, ICML 2011)
 * with the reward model q_t fitted on rows before t only (so DR stays
 * unbiased whatever q is; a good q only narrows it): a ridge regression
 * (linear.c's model at its posterior mean, all crosses) when the rows
 * carry embeddings, else the running mean reward of (context, action)
 * shrunk to the overall mean by one pseudo-observation.
 * 95% intervals: IPS and DR by the CLT on their per-row terms, est +-
 * 1.96 sd / sqrt(T); SNIPS by the delta method on the ratio,
 * se = sqrt(sum w_t^2 (r_t - SNIPS)^2) / sum w_t. Effective sample size
 * (sum w)^2 / sum w^2 (Kish): rows the estimate is worth; when it is a
 * small share of T, the candidate goes where the logger rarely went and
 * the intervals say so by their width. The logged policy's own mean reward
 * is given beside, with its CLT interval.
 */
#include "evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent_json.h"
#include "bandit.h"
#include "linear.h"
#include "statekey.h"
#include "util.h"

#define Z95 1.959963984540054
#define MAX_KV 64

/* ------------------------------------------------------- row reading */

/* A row made readable: context pairs, candidate ids, the logged index. */
typedef struct xrow {
  const adb__log_row *row;
  json_t *ctx, *cands;
  adb_kv kv[MAX_KV];
  int n_kv;
  const char *ids[ADB_EVAL_MAX_CANDS];
  int n, a;
} xrow;

static void xrow_free(xrow *x) {
  json_decref(x->ctx);
  json_decref(x->cands);
}

static int xrow_context(xrow *x, char *err, size_t errlen) {
  const char *cj = x->row->d->context_json ? x->row->d->context_json : "{}";
  x->ctx = json_loads(cj, 0, NULL);
  if (!json_is_object(x->ctx)) {
    snprintf(err, errlen, "event '%s': context is not a JSON object",
             x->row->d->event_id);
    return ADB_EINVAL;
  }
  const char *k;
  json_t *v;
  json_object_foreach(x->ctx, k, v) {
    if (x->n_kv < MAX_KV && json_is_string(v))
      x->kv[x->n_kv++] = (adb_kv){k, json_string_value(v)};
  }
  return ADB_OK;
}

static int xrow_cands(xrow *x, char *err, size_t errlen) {
  const adb__decision_rec *d = x->row->d;
  x->cands = json_loads(d->candidates_json ? d->candidates_json : "", 0, NULL);
  size_t n = json_array_size(x->cands);
  if (!json_is_array(x->cands) || n == 0 || n > ADB_EVAL_MAX_CANDS) {
    snprintf(err, errlen,
             "event '%s': candidates must be an array of 1..%d ids",
             d->event_id, ADB_EVAL_MAX_CANDS);
    return ADB_EINVAL;
  }
  x->n = (int)n;
  x->a = -1;
  for (int i = 0; i < x->n; i++) {
    x->ids[i] = json_string_value(json_array_get(x->cands, (size_t)i));
    if (!x->ids[i]) {
      snprintf(err, errlen, "event '%s': candidate %d is not a string",
               d->event_id, i);
      return ADB_EINVAL;
    }
    if (x->a < 0 && !strcmp(x->ids[i], d->action)) x->a = i;
  }
  if (x->a < 0) {
    snprintf(err, errlen, "event '%s': action '%s' is not a candidate",
             d->event_id, d->action);
    return ADB_EINVAL;
  }
  return ADB_OK;
}

static int xrow_read(xrow *x, const adb__log_row *row, char *err,
                     size_t errlen) {
  memset(x, 0, sizeof *x);
  x->row = row;
  if (!row || !row->d) {
    snprintf(err, errlen, "empty row");
    return ADB_EINVAL;
  }
  if (row->n_cand && row->cand_emb && row->n_cand > ADB_EVAL_MAX_CANDS) {
    snprintf(err, errlen, "event '%s': too many candidate embeddings",
             row->d->event_id);
    return ADB_EINVAL;
  }
  int rc = xrow_context(x, err, errlen);
  if (rc == ADB_OK) rc = xrow_cands(x, err, errlen);
  if (rc == ADB_OK && row->n_cand && row->n_cand != x->n) {
    snprintf(err, errlen, "event '%s': %d candidate embeddings for %d ids",
             row->d->event_id, row->n_cand, x->n);
    rc = ADB_EINVAL;
  }
  return rc;
}

/* The row's features for a linear model over the agent's context keys:
 * u from the user embedding (else the logged features), c, and each
 * candidate's e (zeros without an embedding). */
static void xrow_lin(const xrow *x, const adb_agent_config *cfg, adb__lin_x *lx,
                     float (*e)[ADB_LIN_P]) {
  memset(lx, 0, sizeof *lx);
  const adb__log_row *r = x->row;
  adb__lin_x logged;
  if (r->user_emb && r->user_dim > 0)
    adb__lin_project(r->user_emb, r->user_dim, lx->u);
  else if (r->d->n_features &&
           adb__lin_blob_read(r->d->features, (size_t)r->d->n_features,
                              &logged) == ADB_OK)
    memcpy(lx->u, logged.u, sizeof lx->u);
  const char *keys[ADB_MAX_CONTEXT_KEYS], *vals[ADB_MAX_CONTEXT_KEYS];
  int n = 0;
  for (int k = 0; cfg && k < cfg->n_context_keys; k++)
    for (int i = 0; i < x->n_kv; i++)
      if (!strcmp(x->kv[i].key, cfg->context_keys[k])) {
        keys[n] = cfg->context_keys[k];
        vals[n++] = x->kv[i].value;
        break;
      }
  adb__lin_context(keys, vals, n, lx->c);
  for (int i = 0; i < x->n; i++) {
    const float *v = r->cand_emb ? r->cand_emb[i] : NULL;
    if (v)
      adb__lin_project(v, r->cand_dim, e[i]);
    else
      memset(e[i], 0, sizeof e[i]);
  }
}

/* ------------------------------------------------------ tabular learner */

typedef struct tab {
  adb__strmap stats; /* "user\x1fstate\x1faction" -> adb__arm_stats * */
} tab;

static int tab_state(const adb_agent_config *cfg, const xrow *x,
                     char key[ADB_STATE_KEY_LEN + 1]) {
  const adb__log_row *r = x->row;
  return adb__state_key(cfg->context_keys, cfg->n_context_keys, x->kv, x->n_kv,
                        r->user_emb, r->user_dim, cfg->simhash_bits, key);
}

static adb__arm_stats *tab_get(tab *t, const char *user, const char *state,
                               const char *action, int create) {
  char k[3 * (ADB_ID_MAX + 1) + ADB_STATE_KEY_LEN];
  snprintf(k, sizeof k, "%s\x1f%s\x1f%s", user, state, action);
  adb__arm_stats *s = adb__strmap_get(&t->stats, k);
  if (s || !create) return s;
  s = calloc(1, sizeof *s);
  if (s && adb__strmap_put(&t->stats, k, s)) {
    free(s);
    s = NULL;
  }
  return s;
}

static int tab_dist(tab *t, const adb_agent_config *cfg, const xrow *x,
                    double *pi) {
  char st[ADB_STATE_KEY_LEN + 1];
  if (tab_state(cfg, x, st)) return ADB_EINVAL;
  adb__posterior *post = malloc((size_t)x->n * sizeof *post);
  if (!post) return ADB_ENOMEM;
  const char *user = x->row->d->user;
  for (int i = 0; i < x->n; i++)
    adb__posterior_make(cfg, tab_get(t, user, st, x->ids[i], 0),
                        tab_get(t, "*", st, x->ids[i], 0), &post[i]);
  double sum = 0;
  for (int i = 0; i < x->n; i++)
    sum += pi[i] = adb__propensity(post, x->n, NULL, i);
  /* The integration is within ~1e-3 of exact: renormalise. */
  for (int i = 0; i < x->n; i++)
    pi[i] = sum > 0 ? pi[i] / sum : 1.0 / x->n;
  free(post);
  return ADB_OK;
}

static void stats_add(adb__arm_stats *s, double r) {
  s->n++;
  s->sum_micro += adb__reward_to_micro(r);
  s->sum_sq += r * r;
}

static int tab_update(tab *t, const adb_agent_config *cfg, const xrow *x) {
  char st[ADB_STATE_KEY_LEN + 1];
  if (tab_state(cfg, x, st)) return ADB_EINVAL;
  const char *act = x->ids[x->a];
  adb__arm_stats *u = tab_get(t, x->row->d->user, st, act, 1);
  adb__arm_stats *g =
      strcmp(x->row->d->user, "*") ? tab_get(t, "*", st, act, 1) : u;
  if (!u || !g) return ADB_ENOMEM;
  stats_add(u, x->row->reward);
  if (g != u) stats_add(g, x->row->reward);
  return ADB_OK;
}

/* ------------------------------------------------------- linear learner */

typedef struct lin {
  adb__lin_model m;
  adb__lin_pool *pool;
  int64_t n_at_pool;
  adb__rng rng;
  double v_override; /* -1: Thompson draws; 0: the mean (reward model) */
} lin;

static double row_time_s(const xrow *x) {
  return (double)x->row->d->ts_ms / 1000.0;
}

static int lin_refresh(lin *l, double now_s) {
  if (l->pool && l->m.n - l->n_at_pool < adb__lin_refresh_every(l->m.n))
    return ADB_OK;
  adb__lin_pool *p = adb__lin_pool_make(&l->m, now_s, &l->rng, l->v_override);
  if (!p) return ADB_ENOMEM;
  adb__lin_pool_unref(l->pool);
  l->pool = p;
  l->n_at_pool = l->m.n;
  return ADB_OK;
}

/* Scores of the row's candidates under draw j into s. */
static int lin_scores(lin *l, const adb_agent_config *cfg, const xrow *x, int j,
                      double *s) {
  float(*e)[ADB_LIN_P] = malloc((size_t)x->n * sizeof *e);
  if (!e) return ADB_ENOMEM;
  adb__lin_x lx;
  xrow_lin(x, cfg, &lx, e);
  adb__lin_scores(l->pool, j, &lx, (const float(*)[ADB_LIN_P])e, x->ids, x->n,
                  s);
  free(e);
  return ADB_OK;
}

/* pi(i) = the share of the pool's draws whose argmax is i (lowest index on
 * a tie, as adb__lin_choose). */
static int lin_dist(lin *l, const adb_agent_config *cfg, const xrow *x,
                    double *pi) {
  int rc = lin_refresh(l, row_time_s(x));
  if (rc) return rc;
  float(*e)[ADB_LIN_P] = malloc((size_t)x->n * sizeof *e);
  double *s = malloc((size_t)x->n * sizeof *s);
  if (!e || !s) {
    free(e);
    free(s);
    return ADB_ENOMEM;
  }
  adb__lin_x lx;
  xrow_lin(x, cfg, &lx, e);
  memset(pi, 0, (size_t)x->n * sizeof *pi);
  int B = l->pool->B;
  for (int j = 0; j < B; j++) {
    adb__lin_scores(l->pool, j, &lx, (const float(*)[ADB_LIN_P])e, x->ids, x->n,
                    s);
    int best = 0;
    for (int i = 1; i < x->n; i++)
      if (s[i] > s[best]) best = i;
    pi[best] += 1.0 / B;
  }
  free(e);
  free(s);
  return ADB_OK;
}

static int lin_update(lin *l, const adb_agent_config *cfg, const xrow *x) {
  float(*e)[ADB_LIN_P] = malloc((size_t)x->n * sizeof *e);
  if (!e) return ADB_ENOMEM;
  adb__lin_x lx;
  xrow_lin(x, cfg, &lx, e);
  memcpy(lx.e, e[x->a], sizeof lx.e);
  free(e);
  int rc =
      adb__lin_update(&l->m, x->ids[x->a], &lx, x->row->reward, row_time_s(x));
  return rc == ADB_EINVAL ? ADB_OK : rc; /* a non-finite input: skip it */
}

static int lin_init(lin *l, const adb_agent_config *cfg, uint64_t seed,
                    double v_override, int pool) {
  adb__lin_cfg lc = {.crosses = cfg ? cfg->linear_crosses : 0,
                     .lambda = cfg ? cfg->linear_lambda : 0,
                     .v = cfg ? cfg->linear_v : 0,
                     .half_life_s = cfg ? cfg->decay_half_life_s : 0,
                     .pool = pool};
  adb__rng_seed(&l->rng, seed);
  l->v_override = v_override;
  return adb__lin_init(&l->m, &lc);
}

static void lin_free(lin *l) {
  adb__lin_pool_unref(l->pool);
  adb__lin_free(&l->m);
}

/* -------------------------------------------------------------- learner */

struct adb__eval_learner {
  adb_agent_config cfg;
  tab t;
  lin l;
};

int adb__eval_learner_new(const adb_agent_config *cfg, uint64_t seed,
                          adb__eval_learner **out) {
  adb__eval_learner *le = calloc(1, sizeof *le);
  if (!le) return ADB_ENOMEM;
  le->cfg = *cfg;
  int rc = cfg->algorithm == ADB_ALGO_LINEAR
               ? lin_init(&le->l, cfg, seed, -1, 0)
               : ADB_OK;
  if (rc) {
    adb__eval_learner_free(le);
    return rc;
  }
  *out = le;
  return ADB_OK;
}

static void free_ptr(void *p) {
  free(p);
}

void adb__eval_learner_free(adb__eval_learner *le) {
  if (!le) return;
  adb__strmap_free(&le->t.stats, free_ptr);
  if (le->cfg.algorithm == ADB_ALGO_LINEAR) lin_free(&le->l);
  free(le);
}

static int learner_dist(adb__eval_learner *le, const xrow *x, double *pi) {
  return le->cfg.algorithm == ADB_ALGO_LINEAR
             ? lin_dist(&le->l, &le->cfg, x, pi)
             : tab_dist(&le->t, &le->cfg, x, pi);
}

static int learner_update(adb__eval_learner *le, const xrow *x) {
  return le->cfg.algorithm == ADB_ALGO_LINEAR ? lin_update(&le->l, &le->cfg, x)
                                              : tab_update(&le->t, &le->cfg, x);
}

int adb__eval_learner_dist(adb__eval_learner *le, const adb__log_row *row,
                           double *pi, char *err, size_t errlen) {
  xrow x;
  int rc = xrow_read(&x, row, err, errlen);
  if (rc == ADB_OK) rc = learner_dist(le, &x, pi);
  xrow_free(&x);
  return rc;
}

int adb__eval_learner_update(adb__eval_learner *le, const adb__log_row *row,
                             char *err, size_t errlen) {
  xrow x;
  int rc = xrow_read(&x, row, err, errlen);
  if (rc == ADB_OK) rc = learner_update(le, &x);
  xrow_free(&x);
  return rc;
}

/* --------------------------------------------------------- reward model */

/* q_t(a): see the essay. Fitted on rows before t only. */
typedef struct qmodel {
  lin ridge;         /* used when the rows carry embeddings */
  adb__strmap cells; /* context_json \x1f action -> double[2] (n, sum) */
  double n, sum;
} qmodel;

static int has_emb(const xrow *x) {
  return x->row->cand_emb && x->row->n_cand == x->n;
}

static int q_predict(qmodel *q, const xrow *x, double *out) {
  double prior = q->n > 0 ? q->sum / q->n : 0;
  if (has_emb(x)) {
    adb_agent_config all = {.n_context_keys = 0};
    /* Context over every key of the row. */
    all.n_context_keys =
        x->n_kv < ADB_MAX_CONTEXT_KEYS ? x->n_kv : ADB_MAX_CONTEXT_KEYS;
    for (int i = 0; i < all.n_context_keys; i++)
      snprintf(all.context_keys[i], sizeof all.context_keys[i], "%s",
               x->kv[i].key);
    int rc = lin_refresh(&q->ridge, row_time_s(x));
    if (rc == ADB_OK) rc = lin_scores(&q->ridge, &all, x, 0, out);
    return rc;
  }
  for (int i = 0; i < x->n; i++) {
    char k[4096];
    snprintf(k, sizeof k, "%s\x1f%s", x->row->d->context_json, x->ids[i]);
    double *c = adb__strmap_get(&q->cells, k);
    out[i] = c ? (c[1] + prior) / (c[0] + 1) : prior;
  }
  return ADB_OK;
}

static int q_update(qmodel *q, const xrow *x) {
  double r = x->row->reward;
  q->n++;
  q->sum += r;
  if (has_emb(x)) {
    adb_agent_config all = {.n_context_keys = 0};
    all.n_context_keys =
        x->n_kv < ADB_MAX_CONTEXT_KEYS ? x->n_kv : ADB_MAX_CONTEXT_KEYS;
    for (int i = 0; i < all.n_context_keys; i++)
      snprintf(all.context_keys[i], sizeof all.context_keys[i], "%s",
               x->kv[i].key);
    return lin_update(&q->ridge, &all, x);
  }
  char k[4096];
  snprintf(k, sizeof k, "%s\x1f%s", x->row->d->context_json, x->ids[x->a]);
  double *c = adb__strmap_get(&q->cells, k);
  if (!c) {
    c = calloc(2, sizeof *c);
    if (!c || adb__strmap_put(&q->cells, k, c)) {
      free(c);
      return ADB_ENOMEM;
    }
  }
  c[0]++;
  c[1] += r;
  return ADB_OK;
}

/* ------------------------------------------------------------ estimator */

typedef struct acc {
  double sw, sw2, swr, sw2r, sw2r2; /* sums of w, w^2, w r, w^2 r, w^2 r^2 */
  double sdr, sdr2;                 /* DR terms and their squares */
  double max_w, truth;
} acc;

struct adb__eval {
  int n;
  adb__eval_policy pol[ADB_EVAL_MAX_POLICIES];
  adb__eval_learner *le[ADB_EVAL_MAX_POLICIES];
  acc acc[ADB_EVAL_MAX_POLICIES];
  qmodel q;
  double (*mu)(void *, const adb__log_row *, int);
  void *mu_ctx;
  int64_t rows, pending, bad;
  double sr, sr2;
  char last_error[256];
};

int adb__eval_new(const adb__eval_policy *pols, int n, uint64_t seed,
                  adb__eval **out) {
  if (n < 1 || n > ADB_EVAL_MAX_POLICIES) return ADB_EINVAL;
  adb__eval *ev = calloc(1, sizeof *ev);
  if (!ev) return ADB_ENOMEM;
  ev->n = n;
  int rc = lin_init(&ev->q.ridge, NULL, seed ^ 0x9e3779b97f4a7c15ull, 0, 1);
  for (int i = 0; i < n && rc == ADB_OK; i++) {
    ev->pol[i] = pols[i];
    rc =
        adb__eval_learner_new(&pols[i].cfg, seed + 1 + (uint64_t)i, &ev->le[i]);
  }
  if (rc) {
    adb__eval_free(ev);
    return rc;
  }
  *out = ev;
  return ADB_OK;
}

void adb__eval_free(adb__eval *ev) {
  if (!ev) return;
  for (int i = 0; i < ev->n; i++)
    adb__eval_learner_free(ev->le[i]);
  lin_free(&ev->q.ridge);
  adb__strmap_free(&ev->q.cells, free_ptr);
  free(ev);
}

void adb__eval_set_truth(adb__eval *ev,
                         double (*mu)(void *, const adb__log_row *, int),
                         void *ctx) {
  ev->mu = mu;
  ev->mu_ctx = ctx;
}

int adb__eval_count(const adb__eval *ev) {
  return ev->n;
}

static void accumulate(acc *c, const xrow *x, const double *pi, const double *q,
                       const double *mu) {
  double r = x->row->reward, p = x->row->d->propensity;
  double w = pi[x->a] / p, dm = 0;
  for (int i = 0; i < x->n; i++)
    dm += pi[i] * q[i];
  double dr = dm + w * (r - q[x->a]);
  c->sw += w;
  c->sw2 += w * w;
  c->swr += w * r;
  c->sw2r += w * w * r;
  c->sw2r2 += w * w * r * r;
  c->sdr += dr;
  c->sdr2 += dr * dr;
  if (w > c->max_w) c->max_w = w;
  for (int i = 0; mu && i < x->n; i++)
    c->truth += pi[i] * mu[i];
}

/* Every policy's distribution, the estimates' terms, then the updates. */
static int replay(adb__eval *ev, const xrow *x) {
  int n = x->n, rc = ADB_OK;
  double *buf = malloc((size_t)3 * n * sizeof *buf);
  if (!buf) return ADB_ENOMEM;
  double *pi = buf, *q = buf + n, *mu = ev->mu ? buf + 2 * n : NULL;
  for (int i = 0; mu && i < n; i++)
    mu[i] = ev->mu(ev->mu_ctx, x->row, i);
  rc = q_predict(&ev->q, x, q);
  for (int k = 0; k < ev->n && rc == ADB_OK; k++) {
    rc = learner_dist(ev->le[k], x, pi);
    if (rc == ADB_OK) accumulate(&ev->acc[k], x, pi, q, mu);
  }
  for (int k = 0; k < ev->n && rc == ADB_OK; k++)
    rc = learner_update(ev->le[k], x);
  if (rc == ADB_OK) rc = q_update(&ev->q, x);
  free(buf);
  return rc;
}

int adb__eval_row(void *ctx, const adb__log_row *row) {
  adb__eval *ev = ctx;
  if (row && row->outcome == ADB_LOG_NONE) {
    ev->pending++;
    return 0;
  }
  xrow x;
  int rc = xrow_read(&x, row, ev->last_error, sizeof ev->last_error);
  double p = rc == ADB_OK ? row->d->propensity : 0;
  if (rc == ADB_OK && !(p > 0 && p <= 1)) {
    snprintf(ev->last_error, sizeof ev->last_error,
             "event '%s': propensity %g is outside (0, 1]", row->d->event_id,
             p);
    rc = ADB_EINVAL;
  }
  if (rc == ADB_OK && !isfinite(row->reward)) {
    snprintf(ev->last_error, sizeof ev->last_error,
             "event '%s': the reward is not a finite number", row->d->event_id);
    rc = ADB_EINVAL;
  }
  if (rc == ADB_OK) rc = replay(ev, &x);
  xrow_free(&x);
  if (rc == ADB_ENOMEM) return rc;
  if (rc) {
    ev->bad++;
    return 0;
  }
  ev->rows++;
  ev->sr += row->reward;
  ev->sr2 += row->reward * row->reward;
  return 0;
}

/* est +- 1.96 sd/sqrt(T) from a sum and a sum of squares of T terms. */
static adb__eval_interval clt(double s, double s2, double T) {
  adb__eval_interval v = {0, 0, 0};
  if (T <= 0) return v;
  v.est = s / T;
  double var = T > 1 ? (s2 - T * v.est * v.est) / (T - 1) : 0;
  double h = Z95 * sqrt(var > 0 ? var / T : 0);
  v.lo = v.est - h;
  v.hi = v.est + h;
  return v;
}

static void result_of(const acc *c, double T, adb__eval_result *r) {
  r->ips = clt(c->swr, c->sw2r2, T);
  r->dr = clt(c->sdr, c->sdr2, T);
  double sn = c->sw > 0 ? c->swr / c->sw : 0;
  /* sum w^2 (r - sn)^2, expanded. */
  double ss = c->sw2r2 - 2 * sn * c->sw2r + sn * sn * c->sw2;
  double se = c->sw > 0 ? sqrt(ss > 0 ? ss : 0) / c->sw : 0;
  r->snips = (adb__eval_interval){sn, sn - Z95 * se, sn + Z95 * se};
  r->ess = c->sw2 > 0 ? c->sw * c->sw / c->sw2 : 0;
  r->max_w = c->max_w;
  r->truth = T > 0 ? c->truth / T : 0;
}

void adb__eval_results(const adb__eval *ev, adb__eval_result *out,
                       adb__eval_summary *sum) {
  double T = (double)ev->rows;
  for (int k = 0; out && k < ev->n; k++) {
    memset(&out[k], 0, sizeof out[k]);
    snprintf(out[k].name, sizeof out[k].name, "%s", ev->pol[k].name);
    result_of(&ev->acc[k], T, &out[k]);
    if (!ev->mu) out[k].truth = NAN;
  }
  if (!sum) return;
  memset(sum, 0, sizeof *sum);
  sum->rows = ev->rows;
  sum->pending = ev->pending;
  sum->bad = ev->bad;
  sum->logged = clt(ev->sr, ev->sr2, T);
  snprintf(sum->last_error, sizeof sum->last_error, "%s", ev->last_error);
}

/* --------------------------------------------------------------- output */

static void put_iv(adb__sbuf *b, const char *name, adb__eval_interval v) {
  adb__sbuf_printf(b, "\"%s\":{\"estimate\":%.6g,\"lo\":%.6g,\"hi\":%.6g}",
                   name, v.est, v.lo, v.hi);
}

char *adb__eval_json(const adb__eval_result *r, int n,
                     const adb__eval_summary *s) {
  adb__sbuf b = {0};
  adb__sbuf_printf(&b, "{\"rows\":%lld,\"pending\":%lld,\"bad\":%lld,",
                   (long long)s->rows, (long long)s->pending,
                   (long long)s->bad);
  if (s->bad) {
    adb__sbuf_puts(&b, "\"last_error\":");
    adb__sbuf_json_str(&b, s->last_error);
    adb__sbuf_puts(&b, ",");
  }
  put_iv(&b, "logged", s->logged);
  adb__sbuf_puts(&b, ",\"policies\":[");
  for (int k = 0; k < n; k++) {
    adb__sbuf_puts(&b, k ? ",{\"name\":" : "{\"name\":");
    adb__sbuf_json_str(&b, r[k].name);
    adb__sbuf_puts(&b, ",");
    put_iv(&b, "ips", r[k].ips);
    adb__sbuf_puts(&b, ",");
    put_iv(&b, "snips", r[k].snips);
    adb__sbuf_puts(&b, ",");
    put_iv(&b, "dr", r[k].dr);
    adb__sbuf_printf(&b, ",\"ess\":%.6g,\"max_weight\":%.6g", r[k].ess,
                     r[k].max_w);
    if (isfinite(r[k].truth))
      adb__sbuf_printf(&b, ",\"true_value\":%.6g", r[k].truth);
    adb__sbuf_puts(&b, "}");
  }
  adb__sbuf_puts(&b, "]}");
  return adb__sbuf_take(&b);
}

char *adb__eval_table(const adb__eval_result *r, int n,
                      const adb__eval_summary *s) {
  adb__sbuf b = {0};
  adb__sbuf_printf(&b,
                   "%lld rows evaluated (%lld awaiting a reward, %lld "
                   "unreadable); logged policy: %.4f [%.4f, %.4f]\n",
                   (long long)s->rows, (long long)s->pending, (long long)s->bad,
                   s->logged.est, s->logged.lo, s->logged.hi);
  if (s->bad) adb__sbuf_printf(&b, "last unreadable row: %s\n", s->last_error);
  adb__sbuf_printf(&b, "%-20s %-24s %-24s %-24s %9s\n", "policy",
                   "IPS [95% CI]", "SNIPS [95% CI]", "DR [95% CI]", "ESS");
  for (int k = 0; k < n; k++) {
    char c[3][64];
    const adb__eval_interval *iv[3] = {&r[k].ips, &r[k].snips, &r[k].dr};
    for (int j = 0; j < 3; j++)
      snprintf(c[j], sizeof c[j], "%.4f [%.4f, %.4f]", iv[j]->est, iv[j]->lo,
               iv[j]->hi);
    adb__sbuf_printf(&b, "%-20s %-24s %-24s %-24s %9.1f\n", r[k].name, c[0],
                     c[1], c[2], r[k].ess);
  }
  return adb__sbuf_take(&b);
}

/* --------------------------------------------------------------- policy */

int adb__eval_policy_parse(const char *json, adb__eval_policy *p, char *err,
                           size_t errlen) {
  memset(p, 0, sizeof *p);
  adb_agent_config_init(&p->cfg);
  json_error_t je;
  json_t *doc = json_loads(json ? json : "", 0, &je);
  static const char *const extra[] = {"name", NULL};
  adb__jerr e = {"", "a policy must be a JSON object (an agent config)"};
  int rc = json_is_object(doc) ? adb__agent_from_json(doc, extra, &p->cfg, &e)
                               : ADB_EINVAL;
  json_t *name = json_object_get(doc, "name");
  if (rc == ADB_OK && name &&
      (!json_is_string(name) || !*json_string_value(name) ||
       strlen(json_string_value(name)) >= sizeof p->name)) {
    snprintf(e.msg, sizeof e.msg,
             "'name' must be a string of 1..63 characters");
    rc = ADB_EINVAL;
  }
  if (rc == ADB_OK && name)
    snprintf(p->name, sizeof p->name, "%s", json_string_value(name));
  if (rc != ADB_OK) snprintf(err, errlen, "%s", e.msg);
  json_decref(doc);
  return rc;
}

/* --------------------------------------------------------------- source */

/* The store's decision log, through its log_scan method. */
#include "coordinator.h"
int adb__eval_scan_store(void *arg, const char *agent, int64_t from_ms,
                         int64_t to_ms, adb__log_fn fn, void *ctx) {
  adb *db = arg;
  return db->store->m->log_scan(db->store, agent, from_ms, to_ms, fn, ctx);
}
