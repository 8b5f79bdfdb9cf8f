/*
 * logimport.c — `agentdb import`: logged decisions (adb__log_row, e.g. from
 * a DSJSON file) stored in an agent as if they had happened, so that its
 * models learn from them.
 *
 * Each row becomes a decision (its event id, action, propensity, context,
 * candidates and time as logged) and, when it has an outcome, one reward
 * carrying its summed reward, written by the store's write_batch like the
 * flush worker's batches: the reward's increments go to the tabular
 * posteriors, and the decision's features (the logged blob, or one built
 * from the row's user embedding, context and the chosen action's
 * embedding, for a linear agent) let the linear_rewards trigger feed the
 * linear model. Exactly once: the event id is the row's EventId (unique
 * per agent, ON CONFLICT DO NOTHING) and the reward id is derived from it
 * ("dsjson-" and 40 hex digits of its SHA-256; a default outcome keeps the
 * agent's own '~' id), so importing the same file again changes nothing.
 */
#include "logimport.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bandit.h"
#include "linear.h"
#include "statekey.h"
#include "util.h"

#define IMPORT_BATCH 500

struct adb__log_import {
  adb__store *st;
  adb_agent_config cfg;
  adb__batch b;
  adb__decision_rec dec[IMPORT_BATCH];
  adb__reward_rec rew[IMPORT_BATCH];
  int64_t batches;
  adb__log_import_stats stats;
  char err[256];
};

int adb__log_import_new(adb__store *st, const char *agent,
                        adb__log_import **out) {
  *out = NULL;
  adb__log_import *im = calloc(1, sizeof *im);
  if (!im) return ADB_ENOMEM;
  int rc = st->m->agent_get(st, agent, &im->cfg);
  if (rc) {
    snprintf(im->err, sizeof im->err, "%s", adb__store_errmsg(st));
    *out = im;
    return rc;
  }
  im->st = st;
  *out = im;
  return ADB_OK;
}

const char *adb__log_import_errmsg(const adb__log_import *im) {
  return im->err;
}

adb__log_import_stats adb__log_import_get_stats(const adb__log_import *im) {
  return im->stats;
}

static void batch_clear(adb__log_import *im) {
  for (int i = 0; i < im->b.n_decisions; i++) {
    free(im->dec[i].context_json);
    free(im->dec[i].candidates_json);
    free(im->dec[i].ranking_json);
  }
  memset(&im->b, 0, sizeof im->b);
}

static int flush(adb__log_import *im) {
  if (!im->b.n_decisions) return ADB_OK;
  im->b.decisions = im->dec;
  im->b.rewards = im->rew;
  snprintf(im->b.batch_id, sizeof im->b.batch_id, "import:%lld:%lld",
           (long long)adb__now_ms(), (long long)++im->batches);
  int rc = im->st->m->write_batch(im->st, &im->b);
  if (rc) {
    snprintf(im->err, sizeof im->err, "%s", adb__store_errmsg(im->st));
  } else {
    for (int i = 0; i < im->b.n_decisions; i++)
      im->stats.decisions += im->dec[i].inserted;
    for (int i = 0; i < im->b.n_rewards; i++)
      im->stats.rewards += im->rew[i].applied;
  }
  free(im->b.changes);
  batch_clear(im);
  return rc;
}

/* The context's string (or number) values of the agent's keys. */
static int context_kv(const adb_agent_config *cfg, json_t *ctx, adb_kv *kv,
                      char (*num)[32]) {
  int n = 0;
  for (int k = 0; k < cfg->n_context_keys; k++) {
    json_t *v = json_object_get(ctx, cfg->context_keys[k]);
    const char *s = json_string_value(v);
    if (!s && json_is_number(v)) {
      snprintf(num[n], sizeof num[n], "%.17g", json_number_value(v));
      s = num[n];
    }
    if (!s) continue;
    kv[n].key = cfg->context_keys[k];
    kv[n++].value = s;
  }
  return n;
}

/* State key and (linear agents) features of a row that lacks them. */
static int derive(adb__log_import *im, const adb__log_row *row,
                  adb__decision_rec *d) {
  json_t *ctx = json_loads(d->context_json, 0, NULL);
  adb_kv kv[ADB_MAX_CONTEXT_KEYS];
  char num[ADB_MAX_CONTEXT_KEYS][32];
  int n = context_kv(&im->cfg, ctx, kv, num), rc = ADB_OK;
  if (!d->state_key[0]) {
    int bits = row->user_emb ? im->cfg.simhash_bits : 0;
    rc = adb__state_key((const char(*)[ADB_ID_MAX + 1]) im->cfg.context_keys,
                        im->cfg.n_context_keys, kv, n, row->user_emb,
                        row->user_dim, bits, d->state_key);
  }
  if (!rc && im->cfg.algorithm == ADB_ALGO_LINEAR && !d->n_features) {
    adb__lin_x x;
    const char *keys[ADB_MAX_CONTEXT_KEYS], *vals[ADB_MAX_CONTEXT_KEYS];
    for (int i = 0; i < n; i++) {
      keys[i] = kv[i].key;
      vals[i] = kv[i].value;
    }
    adb__lin_project(row->user_emb, row->user_dim, x.u);
    adb__lin_context(keys, vals, n, x.c);
    const float *e = NULL;
    json_t *cands = json_loads(d->candidates_json, 0, NULL);
    for (int i = 0; i < row->n_cand && row->cand_emb; i++)
      if (!strcmp(json_string_value(json_array_get(cands, (size_t)i)) ?: "",
                  d->action))
        e = row->cand_emb[i];
    json_decref(cands);
    adb__lin_project(e, e ? row->cand_dim : 0, x.e);
    adb__lin_blob_write(&x, d->features);
    d->n_features = ADB_LIN_BLOB;
  }
  json_decref(ctx);
  return rc;
}

static int add_decision(adb__log_import *im, const adb__log_row *row,
                        adb__decision_rec *d) {
  const adb__decision_rec *s = row->d;
  memset(d, 0, sizeof *d);
  snprintf(d->agent, sizeof d->agent, "%s", im->cfg.id);
  memcpy(d->event_id, s->event_id, sizeof d->event_id);
  memcpy(d->user, s->user, sizeof d->user);
  memcpy(d->state_key, s->state_key, sizeof d->state_key);
  memcpy(d->action, s->action, sizeof d->action);
  memcpy(d->model, s->model, sizeof d->model);
  d->propensity = s->propensity;
  d->ts_ms = s->ts_ms;
  d->client_id = 1;
  if (im->cfg.algorithm == ADB_ALGO_LINEAR && s->n_features) {
    memcpy(d->features, s->features, (size_t)s->n_features);
    d->n_features = s->n_features;
  }
  d->context_json = strdup(s->context_json ? s->context_json : "{}");
  d->candidates_json = strdup(s->candidates_json ? s->candidates_json : "[]");
  if (s->ranking_json) d->ranking_json = strdup(s->ranking_json);
  if (!d->context_json || !d->candidates_json ||
      (s->ranking_json && !d->ranking_json))
    return ADB_ENOMEM;
  return derive(im, row, d);
}

static void add_reward(adb__log_import *im, const adb__log_row *row,
                       const adb__decision_rec *d, adb__reward_rec *r) {
  memset(r, 0, sizeof *r);
  snprintf(r->agent, sizeof r->agent, "%s", d->agent);
  char h[65];
  if (row->outcome == ADB_LOG_DEFAULT) {
    adb__default_reward_id(d->event_id, r->reward_id);
  } else {
    adb__sha256_hex(d->event_id, strlen(d->event_id), h);
    snprintf(r->reward_id, sizeof r->reward_id, "dsjson-%.40s", h);
  }
  memcpy(r->event_id, d->event_id, sizeof r->event_id);
  memcpy(r->user, d->user, sizeof r->user);
  memcpy(r->state_key, d->state_key, sizeof r->state_key);
  memcpy(r->action, d->action, sizeof r->action);
  r->reward = row->reward;
  r->reward_micro = adb__reward_to_micro(row->reward);
  char body[ADB_ID_MAX + 64];
  int n =
      snprintf(body, sizeof body, "dsjson:%s:%.17g", d->event_id, row->reward);
  adb__sha256_hex(body, (size_t)n, r->body_hash);
  r->ts_ms = row->reward_ts_ms ? row->reward_ts_ms : d->ts_ms;
}

int adb__log_import_row(void *ctx, const adb__log_row *row) {
  adb__log_import *im = ctx;
  adb__decision_rec *d = &im->dec[im->b.n_decisions++];
  int rc = add_decision(im, row, d);
  if (rc) {
    /* a row the agent cannot key (e.g. simhash without an embedding) */
    free(d->context_json);
    free(d->candidates_json);
    free(d->ranking_json);
    im->b.n_decisions--;
    im->stats.skipped++;
    return rc == ADB_ENOMEM ? rc : ADB_OK;
  }
  if (row->outcome != ADB_LOG_NONE && isfinite(row->reward))
    add_reward(im, row, d, &im->rew[im->b.n_rewards++]);
  return im->b.n_decisions == IMPORT_BATCH ? flush(im) : ADB_OK;
}

int adb__log_import_finish(adb__log_import *im) {
  return flush(im);
}

void adb__log_import_free(adb__log_import *im) {
  if (!im) return;
  batch_clear(im);
  free(im);
}
