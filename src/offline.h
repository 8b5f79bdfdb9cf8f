/*
 * offline.h — the decision log as a data set (issue 10): the row that
 * export, import and offline evaluation pass between them.
 *
 * One row is one logged decision joined with what it was learned from:
 * its rewards (summed, as the posteriors added them), or the agent's
 * default reward once its window passed, or nothing yet. Producers: the
 * stores' log_scan (time order, constant memory) and the DSJSON reader;
 * consumers: the exporters (dsjson, jsonl, csv), `agentdb import` and the
 * estimators of `agentdb evaluate`. A row and everything it points to is
 * valid only during the callback that receives it.
 */
#ifndef ADB_OFFLINE_H
#define ADB_OFFLINE_H

#include <stdint.h>

#include "store.h"

enum {
  ADB_LOG_NONE = 0,    /* no reward yet, window still open */
  ADB_LOG_REWARD = 1,  /* one or more rewards of the event */
  ADB_LOG_DEFAULT = 2, /* the window passed: default_reward was applied */
};

typedef struct adb__log_row {
  /* The decision as stored: context_json, candidates_json (the ids, in
   * the order the request gave them), action, propensity, model, ts_ms,
   * and the linear features blob when the decision had one. */
  const adb__decision_rec *d;
  int outcome;          /* ADB_LOG_* */
  int n_rewards;        /* rewards applied for the event */
  double reward;        /* their sum (or the default reward) */
  int64_t reward_ts_ms; /* time of the first of them; 0 for none */
  /* Features for replay, when known (NULL / 0 otherwise): the user's
   * embedding as the decision saw it, and each candidate's catalogue
   * embedding, in candidates order (an entry NULL when it has none). */
  const float *user_emb;
  int user_dim;
  const float *const *cand_emb;
  int n_cand, cand_dim;
} adb__log_row;

/* Called once per row; a nonzero return stops the scan and is returned. */
typedef int (*adb__log_fn)(void *ctx, const adb__log_row *row);

#endif
