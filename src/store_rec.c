/*
 * store_rec.c — the column tables of the stored records (store_rec.h).
 */
#include "store_rec.h"

#include <stdio.h>
#include <string.h>

#define COL(t, rec, f)                                                         \
  { ADB__COL_##t, offsetof(rec, f), 0 }
#define ID(rec, f)                                                             \
  { ADB__COL_ID, offsetof(rec, f), sizeof((rec *)0)->f }
#define EMB(rec, f, dim)                                                       \
  { ADB__COL_EMB, offsetof(rec, f), offsetof(rec, dim) }
#define N(a) ((int)(sizeof a / sizeof *a))

#define AG adb_agent_config
const adb__col adb__agent_cols[ADB__AGENT_NCOLS] = {
    COL(ALGO, AG, algorithm),
    COL(F64, AG, prior_alpha),
    COL(F64, AG, prior_beta),
    COL(F64, AG, prior_mu),
    COL(F64, AG, prior_kappa),
    COL(F64, AG, prior_a),
    COL(F64, AG, prior_b),
    COL(KEYS, AG, context_keys),
    COL(INT, AG, embedding_dim),
    COL(INT, AG, simhash_bits),
    COL(F64, AG, reward_weights.watch),
    COL(F64, AG, reward_weights.click),
    COL(F64, AG, reward_weights.rating),
    COL(F64, AG, fallback_strength),
    COL(F64, AG, decay_half_life_s),
    COL(F64, AG, reward_window_s),
    COL(F64, AG, default_reward),
    COL(I64, AG, created_at_ms),
    COL(I64, AG, updated_at_ms),
    COL(INT, AG, linear_crosses),
    COL(F64, AG, linear_lambda),
    COL(F64, AG, linear_v),
};

const adb__rec_desc adb__agent_desc = {
    .size = sizeof(AG),
    .cols = adb__agent_cols,
    .ncols = ADB__AGENT_NCOLS,
    .nkeys = 1,
    .key_off = {offsetof(AG, id)},
    .key_size = {sizeof((AG *)0)->id},
    .get = "get agent",
    .read = "read agent",
    .item = "agent",
    .missing = "not found",
};
#undef AG

#define DR adb__decision_rec
static const adb__col decision_cols[] = {
    ID(DR, user),
    ID(DR, state_key),
    COL(TEXT, DR, context_json),
    COL(TEXT, DR, candidates_json),
    ID(DR, action),
    COL(F64, DR, propensity),
    ID(DR, model),
    COL(I64, DR, ts_ms),
    COL(TEXT, DR, ranking_json),
};

static void decision_release(void *d) {
  adb__decision_rec_free(d);
}

const adb__rec_desc adb__decision_desc = {
    .size = sizeof(DR),
    .cols = decision_cols,
    .ncols = N(decision_cols),
    .nkeys = 2,
    .key_off = {offsetof(DR, agent), offsetof(DR, event_id)},
    .key_size = {sizeof((DR *)0)->agent, sizeof((DR *)0)->event_id},
    .get = "get decision",
    .read = "read decision",
    .item = "decision",
    .missing = "not found",
    .release = decision_release,
};
#undef DR

#define US adb__user_state_rec
static const adb__col user_state_cols[] = {
    EMB(US, embedding, dim),
    COL(TEXT, US, context_json),
    COL(I64, US, updated_at_ms),
};

static void user_state_release(void *u) {
  adb__user_state_rec_free(u);
}

const adb__rec_desc adb__user_state_desc = {
    .size = sizeof(US),
    .cols = user_state_cols,
    .ncols = N(user_state_cols),
    .nkeys = 1,
    .key_off = {offsetof(US, user)},
    .key_size = {sizeof((US *)0)->user},
    .get = "get user state",
    .read = "read user state",
    .item = "user",
    .missing = "has no state",
    .release = user_state_release,
};
#undef US

#define PT adb_pattern
static const adb__col pattern_cols[] = {
    ID(PT, type),
    ID(PT, key),
    COL(TEXT, PT, value_json),
    COL(F64, PT, confidence),
    COL(I64, PT, support),
    EMB(PT, embedding, embedding_dim),
    COL(I64, PT, updated_at_ms),
};

static void pattern_release(void *p) {
  adb__pattern_free(p);
}

const adb__rec_desc adb__pattern_desc = {
    .size = sizeof(PT),
    .cols = pattern_cols,
    .ncols = N(pattern_cols),
    .nkeys = 2,
    .key_off = {0, offsetof(PT, id)},
    .key_size = {0, sizeof((PT *)0)->id},
    .get = "get pattern",
    .read = "read pattern",
    .item = "pattern",
    .missing = "not found",
    .release = pattern_release,
};
#undef PT

#define MR adb_metrics_row
const adb__col adb__metrics_cols[ADB__METRICS_NCOLS] = {
    COL(I64, MR, hour_ms),        COL(I64, MR, decisions),
    COL(I64, MR, rewards),        COL(F64, MR, reward_sum),
    COL(I64, MR, cache_hits),     COL(I64, MR, cache_misses),
    COL(F64, MR, latency_p50_us), COL(F64, MR, latency_p99_us),
};
#undef MR

#define AR adb__action_rec
const adb__col adb__action_cols[ADB__ACTION_NCOLS] = {
    ID(AR, id),
    COL(BOOL, AR, disabled),
    COL(DIM, AR, dim),
};
#undef AR

int adb__col_may_fail(adb__col_type t) {
  return t == ADB__COL_ID || t == ADB__COL_TEXT || t == ADB__COL_EMB ||
         t == ADB__COL_KEYS;
}

int adb__algo_parse(const char *name, adb_algorithm *out) {
  if (!name) return ADB_ECORRUPT;
  if (strcmp(name, "beta") == 0)
    *out = ADB_ALGO_BETA;
  else if (strcmp(name, "gaussian") == 0)
    *out = ADB_ALGO_GAUSSIAN;
  else if (strcmp(name, "linear") == 0)
    *out = ADB_ALGO_LINEAR;
  else
    return ADB_ECORRUPT;
  return ADB_OK;
}

void adb__rec_keys(const adb__rec_desc *d, void *rec, const char *const *key) {
  for (int i = 0; i < d->nkeys; i++)
    if (d->key_size[i])
      snprintf((char *)rec + d->key_off[i], d->key_size[i], "%s", key[i]);
}
