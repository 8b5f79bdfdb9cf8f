/*
 * log_scan.c — what both stores' log_scan share: the agent's catalogue
 * embeddings (read once per scan, looked up per candidate) and the
 * assembly of an adb__log_row from the columns of one joined decision.
 *
 * A backend reads pages of decisions joined with their reward aggregate,
 * features blob and user state, fills an adb__decision_rec (its JSON
 * pointers borrowed from the page) and hands the rest to adb__logscan_emit.
 * Memory is the catalogue plus one page, whatever the number of rows.
 */
#include "log_scan.h"

#include <stdlib.h>
#include <string.h>

#include "linear.h"

static void cat_put(void *arg, const char *action, const float *v, int dim) {
  adb__logscan *x = arg;
  if (x->rc || dim <= 0) return;
  float *copy = malloc((size_t)dim * sizeof *copy);
  if (!copy) {
    x->rc = ADB_ENOMEM;
    return;
  }
  memcpy(copy, v, (size_t)dim * sizeof *copy);
  float *old = adb__strmap_del(&x->cat, action);
  free(old);
  if (adb__strmap_put(&x->cat, action, copy)) {
    free(copy);
    x->rc = ADB_ENOMEM;
    return;
  }
  if (dim > x->cat_dim) x->cat_dim = dim;
}

int adb__logscan_begin(adb__logscan *x, adb__store *st, const char *agent) {
  memset(x, 0, sizeof *x);
  if (!st->m->action_vectors) return ADB_OK;
  int rc = st->m->action_vectors(st, agent, cat_put, x);
  if (!rc) rc = x->rc;
  if (rc) adb__logscan_end(x);
  return rc;
}

void adb__logscan_end(adb__logscan *x) {
  adb__strmap_free(&x->cat, free);
  memset(x, 0, sizeof *x);
}

int adb__cand_ids(const char *s, char *ids, int *at) {
  int n = 0;
  size_t used = 0;
  while (*s == ' ')
    s++;
  if (*s++ != '[') return -1;
  for (;;) {
    while (*s == ' ' || *s == ',')
      s++;
    if (*s == ']') return n;
    if (*s++ != '"' || n >= ADB_MAX_CANDIDATES) return -1;
    const char *e = strchr(s, '"');
    if (!e || e - s > ADB_ID_MAX || memchr(s, '\\', (size_t)(e - s))) return -1;
    size_t len = (size_t)(e - s);
    memcpy(ids + used, s, len);
    ids[used + len] = 0;
    at[n++] = (int)used;
    used += len + 1;
    s = e + 1;
  }
}

static int cand_parse(adb__logscan *x, const char *s) {
  return adb__cand_ids(s, x->ids, x->id_at);
}

static void cand_lookup(adb__logscan *x, adb__log_row *row, const char *cands) {
  int n = cand_parse(x, cands ? cands : "[]");
  if (n <= 0 || x->cat.len == 0) return;
  for (int i = 0; i < n; i++)
    x->cand[i] = adb__strmap_get(&x->cat, x->ids + x->id_at[i]);
  row->cand_emb = (const float *const *)x->cand;
  row->n_cand = n;
  row->cand_dim = x->cat_dim;
}

/* The user's embedding: the projected one of the features blob when the
 * decision was linear, else the stored user state (little-endian float32),
 * when present. */
static void user_lookup(adb__logscan *x, adb__log_row *row,
                        const adb__logscan_cols *c) {
  adb__lin_x lx;
  if (c->features_len &&
      adb__lin_blob_read(c->features, c->features_len, &lx) == ADB_OK) {
    memcpy(x->user, lx.u, sizeof lx.u);
    row->user_emb = x->user;
    row->user_dim = ADB_LIN_P;
    return;
  }
  size_t n = c->user_emb_len / 4;
  if (!c->user_emb || n == 0 || c->user_emb_len % 4 ||
      n > ADB_MAX_EMBEDDING_DIM)
    return;
  const unsigned char *b = c->user_emb;
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                 (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
    memcpy(&x->user[i], &u, 4);
  }
  row->user_emb = x->user;
  row->user_dim = (int)n;
}

int adb__logscan_emit(adb__logscan *x, adb__decision_rec *d,
                      const adb__logscan_cols *c, adb__log_fn fn, void *ctx) {
  adb__log_row row = {.d = d};
  d->n_features = 0;
  if (c->features_len && c->features_len <= sizeof d->features) {
    memcpy(d->features, c->features, c->features_len);
    d->n_features = (int)c->features_len;
  }
  row.n_rewards = (int)c->n_rewards;
  if (c->n_rewards > 0) {
    row.outcome = c->has_default ? ADB_LOG_DEFAULT : ADB_LOG_REWARD;
    row.reward = c->reward_sum;
    row.reward_ts_ms = c->first_ms;
  }
  user_lookup(x, &row, c);
  cand_lookup(x, &row, d->candidates_json);
  return fn(ctx, &row);
}
