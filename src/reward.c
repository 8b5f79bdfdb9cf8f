/*
 * reward.c — rewards and episodes: validation, resolving a reward's
 * decision, the request fingerprint that makes retries idempotent, and the
 * hand-off to the write queue.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator.h"
#include "statekey.h"

/* Finds the decision a reward refers to in the store, flushing this
 * handle's queued writes first if it is not there yet (the decision may
 * still be queued). A decision made on another replica becomes visible
 * once that replica flushes (flush_interval_ms, then the commit); a reward
 * arriving before that gets ADB_ENOTFOUND here and waits for it in the
 * store (reward_target). */
static int resolve_event(adb *db, const char *agent, const char *event_id,
                         adb__reward_rec *r) {
  for (int attempt = 0; attempt < 2; attempt++) {
    adb__decision_rec d = {0};
    int rc = db->store->m->decision_get(db->store, agent, event_id, &d);
    if (rc == ADB_OK) {
      memcpy(r->user, d.user, sizeof r->user);
      memcpy(r->state_key, d.state_key, sizeof r->state_key);
      memcpy(r->action, d.action, sizeof r->action);
      adb__decision_rec_free(&d);
      return ADB_OK;
    }
    if (rc != ADB_ENOTFOUND)
      return adb__fail(db, rc, "looking up event '%s': %s", event_id,
                       adb__store_errmsg(db->store));
    if (attempt == 0) adb_flush(db);
  }
  return adb__fail(db, ADB_ENOTFOUND, "event '%s' not found for agent '%s'",
                   event_id, agent);
}

static int check_reward_value(adb *db, const adb__agent *a, double r) {
  if (!isfinite(r))
    return adb__fail(db, ADB_EINVAL, "reward must be a finite number");
  if (a->cfg.algorithm == ADB_ALGO_BETA && (r < 0 || r > 1))
    return adb__fail(db, ADB_EINVAL,
                     "reward must be in [0, 1] for a beta agent, not %g", r);
  if (fabs(r) > 1e6)
    return adb__fail(db, ADB_EINVAL, "reward must be within +-1e6, not %g", r);
  return ADB_OK;
}

static char *signals_json(const adb_signals *s) {
  adb__sbuf b = {0};
  adb__sbuf_add(&b, "{", 1);
  const char *sep = "";
  if (s->has_watch) {
    adb__sbuf_printf(&b, "\"watch_time_s\":%.17g,\"duration_s\":%.17g",
                     s->watch_time_s, s->duration_s);
    sep = ",";
  }
  if (s->has_click) {
    adb__sbuf_printf(&b, "%s\"clicked\":%s", sep,
                     s->clicked ? "true" : "false");
    sep = ",";
  }
  if (s->has_rating) adb__sbuf_printf(&b, "%s\"rating\":%.17g", sep, s->rating);
  adb__sbuf_add(&b, "}", 1);
  return adb__sbuf_take(&b);
}

/* The value of the reward: given, or computed from the signals. */
static int reward_value(adb *db, const adb__agent *a, const adb_reward_req *q,
                        double *out) {
  if (q->has_reward) {
    *out = q->reward;
  } else if (q->signals) {
    *out = adb_reward_from_signals(&a->cfg.reward_weights, q->signals);
    if (isnan(*out))
      return adb__fail(db, ADB_EINVAL,
                       "signals give no reward: need a finite watch_time_s "
                       "with duration_s > 0, clicked, or rating");
  } else {
    return adb__fail(db, ADB_EINVAL, "reward or signals required");
  }
  return check_reward_value(db, a, *out);
}

/* Fingerprint of what the client asked for, so that a retry of the same
 * request is a duplicate and a different body under the id a conflict. */
static void body_hash(const adb_reward_req *q, const adb__reward_rec *r,
                      const char *signals, char out[65]) {
  adb__sbuf b = {0};
  adb__sbuf_printf(&b, "v1\n%s\n%s\n%s\n%s\n%s\n", r->event_id,
                   q->event_id ? "" : r->user, q->event_id ? "" : r->action,
                   q->event_id ? "" : r->state_key, signals ? signals : "");
  if (q->has_reward) adb__sbuf_printf(&b, "%.17g", q->reward);
  adb__sha256_hex(b.p ? b.p : "", b.len, out);
  free(b.p);
}

static int reward_target(adb *db, const adb__agent *a, const adb_reward_req *q,
                         adb__reward_rec *r) {
  if (q->event_id) {
    int rc = adb__check_id(db, "event_id", q->event_id);
    if (rc) return rc;
    snprintf(r->event_id, sizeof r->event_id, "%s", q->event_id);
    rc = resolve_event(db, a->cfg.id, q->event_id, r);
    if (rc != ADB_ENOTFOUND) return rc;
    /* Not visible yet: stored to wait for its decision until the end of
     * the agent's reward window (the flush worker's sweep joins it). */
    r->awaiting = 1;
    double w = a->cfg.reward_window_s > 0 ? a->cfg.reward_window_s : 86400;
    r->expires_at_ms = adb__now_ms() + (int64_t)(w * 1000);
    return ADB_OK;
  }
  int rc = adb__check_id(db, "user_id", q->user_id);
  if (!rc) rc = adb__check_id(db, "action", q->action);
  if (rc) return rc;
  snprintf(r->user, sizeof r->user, "%s", q->user_id);
  snprintf(r->action, sizeof r->action, "%s", q->action);
  if (q->state_key) {
    size_t len = strlen(q->state_key);
    if (len != ADB_STATE_KEY_LEN ||
        strspn(q->state_key, "0123456789abcdef") != len)
      return adb__fail(db, ADB_EINVAL,
                       "state_key must be 64 lower-case hex characters");
    memcpy(r->state_key, q->state_key, ADB_STATE_KEY_LEN + 1);
    return ADB_OK;
  }
  if (a->cfg.simhash_bits)
    return adb__fail(db, ADB_EINVAL,
                     "agent '%s' keys states by embedding: give state_key",
                     a->cfg.id);
  if (adb__state_key(a->cfg.context_keys, a->cfg.n_context_keys, q->context,
                     q->n_context, NULL, 0, 0, r->state_key) != ADB_OK)
    return adb__fail(db, ADB_EINVAL, "bad context");
  return ADB_OK;
}

/* Validates a reward request and builds its queue item. */
static int reward_item(adb *db, const adb_reward_req *q, adb__item **out) {
  if (!q) return adb__fail(db, ADB_EINVAL, "no request");
  int rc = adb__check_id(db, "reward_id", q->reward_id);
  adb__agent *a = NULL;
  if (!rc) rc = adb__agent_acquire(db, q->agent_id, &a);
  if (rc) return rc;
  adb__item *it = calloc(1, sizeof *it);
  if (!it) {
    adb__agent_release(a);
    return adb__fail(db, ADB_ENOMEM, "out of memory");
  }
  it->kind = ITEM_REWARD;
  adb__reward_rec *r = &it->u.r;
  snprintf(r->agent, sizeof r->agent, "%s", a->cfg.id);
  snprintf(r->reward_id, sizeof r->reward_id, "%s", q->reward_id);
  double value = 0;
  rc = reward_value(db, a, q, &value);
  if (!rc) rc = reward_target(db, a, q, r);
  adb__agent_release(a);
  if (rc) {
    adb__item_free(it);
    return rc;
  }
  r->reward = value;
  r->reward_micro = adb__reward_to_micro(value);
  r->signals_json = q->signals ? signals_json(q->signals) : NULL;
  body_hash(q, r, r->signals_json, r->body_hash);
  r->ts_ms = adb__clock_ms(db);
  *out = it;
  return ADB_OK;
}

/* The answer of a committed (sync) or queued (async) reward. */
static void reward_answer(int sync, int awaiting, double value,
                          const adb__reward_rec *done, adb_reward_result *out) {
  out->reward = sync ? done->first_reward : value;
  out->applied = sync ? done->applied && !done->awaiting : 0;
  out->awaiting_decision = awaiting && !(sync && done->late);
  out->pending = !sync || out->awaiting_decision;
  out->late = sync && done->late;
}

int adb_reward(adb *db, const adb_reward_req *q, adb_reward_result *out) {
  adb__item *it = NULL;
  int rc = reward_item(db, q, &it);
  if (rc) return rc;
  int sync = db->cfg.durability == ADB_DURABILITY_SYNC;
  int r_awaiting = it->u.r.awaiting;
  double value = it->u.r.reward;
  adb__reward_rec done = {0};
  rc = adb__enqueue(db, it, sync, &done);
  if (rc) return rc;
  if (out) reward_answer(sync, r_awaiting, value, &done, out);
  return ADB_OK;
}

typedef struct reward_cb_ctx {
  adb *db;
  adb__reward_done_fn cb;
  void *arg;
} reward_cb_ctx;

static void reward_cb_done(adb__item *it, void *p) {
  reward_cb_ctx x = *(reward_cb_ctx *)p;
  free(p);
  adb__reward_rec done = {0};
  adb_reward_result res = {0};
  int rc = adb__item_result(x.db, it, &done);
  if (rc == ADB_OK)
    reward_answer(1, it->u.r.awaiting, it->u.r.reward, &done, &res);
  adb__item_free(it);
  x.cb(rc, rc == ADB_OK ? &res : NULL, x.arg);
}

int adb__reward_cb(adb *db, const adb_reward_req *q, adb__reward_done_fn cb,
                   void *arg) {
  reward_cb_ctx *x = malloc(sizeof *x);
  if (!x) return adb__fail(db, ADB_ENOMEM, "out of memory");
  *x = (reward_cb_ctx){db, cb, arg};
  adb__item *it = NULL;
  int rc = reward_item(db, q, &it);
  if (!rc) rc = adb__enqueue_cb(db, it, reward_cb_done, x);
  if (rc) free(x);
  return rc;
}

/* ---------------------------------------------------------------- episodes */

static int episode_item(adb *db, adb__agent *a, const adb_episode *e, int i,
                        adb__item **out) {
  int rc = adb__check_id(db, "user_id", e->user_id);
  if (!rc && e->episode_id) rc = adb__check_id(db, "episode_id", e->episode_id);
  if (!rc && e->session_id) rc = adb__check_id(db, "session_id", e->session_id);
  if (!rc) rc = adb__check_id(db, "action", e->action);
  if (!rc) rc = adb__check_utf8(db, "episode context", e->context_json);
  if (!rc && !isfinite(e->reward))
    rc = adb__fail(db, ADB_EINVAL, "episodes[%d].reward must be finite", i);
  if (!rc) rc = adb__check_embedding(db, a, e->embedding, e->embedding_dim);
  if (rc) return rc;
  adb__item *it = calloc(1, sizeof *it);
  float *emb = it ? malloc((size_t)e->embedding_dim * sizeof *emb) : NULL;
  char *ctx = e->context_json ? strdup(e->context_json) : NULL;
  if (!it || !emb || (e->context_json && !ctx)) {
    free(it);
    free(emb);
    free(ctx);
    return adb__fail(db, ADB_ENOMEM, "out of memory");
  }
  memcpy(emb, e->embedding, (size_t)e->embedding_dim * sizeof *emb);
  it->kind = ITEM_EPISODE;
  it->emb = emb;
  adb__episode_rec *r = &it->u.e;
  snprintf(r->agent, sizeof r->agent, "%s", a->cfg.id);
  if (e->episode_id)
    snprintf(r->episode_id, sizeof r->episode_id, "%s", e->episode_id);
  else
    snprintf(r->episode_id, sizeof r->episode_id, "ep-%016llx%016llx",
             (unsigned long long)adb__rng_next(adb__rng_for(db)),
             (unsigned long long)adb__mono_ns());
  snprintf(r->user, sizeof r->user, "%s", e->user_id);
  snprintf(r->session, sizeof r->session, "%s",
           e->session_id ? e->session_id : "");
  r->embedding = emb;
  r->dim = e->embedding_dim;
  snprintf(r->action, sizeof r->action, "%s", e->action);
  r->reward = e->reward;
  r->context_json = ctx;
  r->ts_ms = adb__now_ms();
  *out = it;
  return ADB_OK;
}

/* Queues the episodes, then adds them to the agent's vector index: after
 * the commit in sync mode (adb__enqueue waits for it), at enqueue in async
 * mode. An item that timed out stays queued and will commit, so it is
 * indexed too; refused ones (queue full, closing) are not. The items
 * belong to the queue once enqueued, so their ids and times are kept
 * first. */
static int enqueue_and_index(adb *db, const char *agent, const adb_episode *eps,
                             int n, adb__item *head) {
  struct ep_key {
    char id[ADB_ID_MAX + 1];
    int64_t ts;
  } *keys = db->mem ? malloc((size_t)n * sizeof *keys) : NULL;
  int i = 0;
  for (adb__item *p = head; keys && p; p = p->next, i++) {
    memcpy(keys[i].id, p->u.e.episode_id, sizeof keys[i].id);
    keys[i].ts = p->u.e.ts_ms;
  }
  int rc =
      adb__enqueue(db, head, db->cfg.durability == ADB_DURABILITY_SYNC, NULL);
  for (i = 0; keys && (rc == ADB_OK || rc == ADB_ETIMEDOUT) && i < n; i++) {
    adb__vec_row row = {.kind = ADB__VEC_EPISODES,
                        .agent = agent,
                        .id = keys[i].id,
                        .user = eps[i].user_id,
                        .action = eps[i].action,
                        .reward = eps[i].reward,
                        .embedding = eps[i].embedding,
                        .dim = eps[i].embedding_dim,
                        .ts_ms = keys[i].ts};
    adb__memory_add(db->mem, &row);
  }
  free(keys);
  return rc;
}

int adb_episodes_record(adb *db, const char *agent_id, const adb_episode *eps,
                        int n) {
  if (n < 0 || (n > 0 && !eps))
    return adb__fail(db, ADB_EINVAL, "bad episode list");
  if (n == 0) return ADB_OK;
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a);
  if (rc) return rc;
  adb__item *head = NULL, **tail = &head;
  for (int i = 0; i < n && rc == ADB_OK; i++) {
    /* Every embedding of the batch has the first one's dimension. */
    if (i > 0 && eps[i].embedding_dim != eps[0].embedding_dim)
      rc = adb__fail(db, ADB_EINVAL, "expected %d dimensions, not %d",
                     eps[0].embedding_dim, eps[i].embedding_dim);
    if (rc == ADB_OK && (rc = episode_item(db, a, &eps[i], i, tail)) == ADB_OK)
      tail = &(*tail)->next;
  }
  if (rc == ADB_OK) rc = adb__fix_embedding_dim(db, a, eps[0].embedding_dim);
  adb__agent_release(a);
  if (rc) {
    for (adb__item *p = head, *next; p; p = next) {
      next = p->next;
      adb__item_free(p);
    }
    return rc;
  }
  return enqueue_and_index(db, agent_id, eps, n, head);
}
