/*
 * policy.h — policy models behind one method table: how an agent decides,
 * and what a decision logs. Two implementations: the tabular Beta/NIG
 * posteriors per (user, state, action) (decide.c; their rewards are applied
 * by the store's write batch as increments of rl_policies) and linear
 * Thompson sampling over user, context and action features
 * (policy_linear.c on linear.c; its rewards are applied by the store, in the
 * reward's transaction, as rows of linear_rewards, and folded into each
 * replica's model by a catch-up scan).
 */
#ifndef ADB_POLICY_H
#define ADB_POLICY_H

#include <stdint.h>

#include "agentdb.h"
#include "cache.h"
#include "store.h"

struct adb__agent;

/* A decision's candidates, validated: the request's ids with their
 * lengths and hashes (ids.len, ids.h), and which the catalogue lets be
 * chosen (eligible[i]; n_eligible of them). */
typedef struct adb__cands {
  adb__ids ids;
  const uint8_t *eligible;
  int n_eligible;
} adb__cands;

typedef struct adb__policy_model {
  const char *name;      /* "beta-ts", "gaussian-ts", "linear-ts" */
  const char *model_tag; /* logged with each decision, e.g. "beta-ts/1" */
  /* Chooses among the candidates c (the request's, validated;
   * out->state_key already set): fills out's action, propensity and
   * ranking, and the features the decision used into
   * features[0..*n_features) (0 when the model logs none). *hits: cache
   * keys hit (of 2). */
  int (*decide)(adb *db, struct adb__agent *a, const adb_decide_req *req,
                const adb__cands *c, adb_decision *out,
                uint8_t features[ADB__FEATURES_MAX], int *n_features,
                int *hits);
} adb__policy_model;

/* The model of an algorithm (never NULL). */
const adb__policy_model *adb__policy_model_of(adb_algorithm algo);

extern const adb__policy_model adb__policy_linear;

/* Linear models of a handle (policy_linear.c): created on the first
 * linear decision, stopped and freed by adb__linear_close (NULL is a
 * no-op), before the store closes. */
typedef struct adb__linear adb__linear;
void adb__linear_close(adb__linear *l);
/* Folds in every reward applied so far, for tests: blocks until this
 * handle's model of the agent has caught up with the store. */
int adb__linear_sync(adb *db, const char *agent_id);

/* For tests: this handle's model of the agent after a sync — the number
 * of rewards in it and the posterior mean of the shared weights at now_s
 * (up to cap values; *k gets the dimension). */
int adb__linear_posterior(adb *db, const char *agent_id, double now_s,
                          double *mean, int cap, int *k, int64_t *n);
/* For tests: the number of rewards in the pool that decisions of this
 * handle draw from now (no catch-up: what the model thread has done). */
int adb__linear_pool_n(adb *db, const char *agent_id, int64_t *n);
/* For tests: writes the model's checkpoint now. */
int adb__linear_checkpoint(adb *db, const char *agent_id);

/* What GET /v1/agents/{a}/policies/{user} shows of a linear agent: per
 * catalogue action with an embedding (in id order), the weighted count of
 * its rewards in the model (decayed, when the agent decays), and, for the
 * user's stored embedding at an empty context (a state key cannot be
 * turned back into context values), the mean and standard deviation of its
 * score over the posterior draws decisions use, and the share of draws
 * whose argmax it is (its propensity among all of them). */
typedef struct adb__lin_arm_view {
  char action[ADB_ID_MAX + 1];
  double n, mean, sd, share;
} adb__lin_arm_view;
/* *arms is malloc'd (free it); *n_rewards: rewards in the model; *k: the
 * shared features; *draws: the pool's size. */
int adb__linear_view(adb *db, const char *agent_id, const char *user_id,
                     adb__lin_arm_view **arms, int *n_arms, int64_t *n_rewards,
                     int *k, int *draws);

#endif
