/*
 * store.c — backend selection by URL scheme, and the parts every backend
 * shares: policy arrays, record frees and the merge of reward increments.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const adb__store_methods adb__store_sqlite;
extern const adb__store_methods adb__store_pg;

/* One line per backend. */
static const adb__store_methods *const backends[] = {
    &adb__store_sqlite,
    &adb__store_pg,
};

int adb__store_open(const char *url, const adb_config *cfg, adb__store **out,
                    char *err, size_t errlen) {
  *out = NULL;
  const char *colon = url ? strstr(url, "://") : NULL;
  if (!colon) {
    snprintf(err, errlen, "store URL '%s' has no scheme (sqlite://...)",
             url ? url : "(null)");
    return ADB_EURL;
  }
  size_t slen = (size_t)(colon - url);
  for (size_t i = 0; i < sizeof backends / sizeof *backends; i++) {
    const char *s = backends[i]->scheme;
    if (strlen(s) == slen && memcmp(s, url, slen) == 0)
      return backends[i]->open(url, cfg, out, err, errlen);
  }
  if (slen == 8 && memcmp(url, "postgres", 8) == 0) {
    /* alias */
    char buf[2048];
    snprintf(buf, sizeof buf, "postgresql%s", colon);
    return adb__store_open(buf, cfg, out, err, errlen);
  }
  snprintf(err, errlen, "unsupported store URL scheme '%.*s'", (int)slen, url);
  return ADB_EURL;
}

void adb__store_close(adb__store *st) {
  if (st) st->m->close(st);
}

const char *adb__store_errmsg(adb__store *st) {
  return st ? st->m->errmsg(st) : "no store";
}

int adb__policy_push(adb__policy *p, const char *action,
                     const adb__arm_stats *s) {
  if (p->n == p->cap) {
    int cap = p->cap ? p->cap * 2 : 16;
    adb__policy_arm *a = realloc(p->arms, (size_t)cap * sizeof *a);
    if (!a) return ADB_ENOMEM;
    p->arms = a;
    p->cap = cap;
  }
  adb__policy_arm *a = &p->arms[p->n++];
  snprintf(a->action, sizeof a->action, "%s", action);
  a->s = *s;
  return ADB_OK;
}

void adb__policy_free(adb__policy *p) {
  free(p->arms);
  p->arms = NULL;
  p->n = p->cap = 0;
}

void adb__decision_rec_free(adb__decision_rec *d) {
  free(d->context_json);
  free(d->candidates_json);
  d->context_json = d->candidates_json = NULL;
}

void adb__user_state_rec_free(adb__user_state_rec *u) {
  free(u->embedding);
  free(u->context_json);
  u->embedding = NULL;
  u->context_json = NULL;
}

void adb__pattern_free(adb_pattern *p) {
  free(p->value_json);
  free(p->embedding);
  p->value_json = NULL;
  p->embedding = NULL;
}

static int change_cmp(const void *a, const void *b) {
  const adb__policy_change *x = a, *y = b;
  int c = strcmp(x->agent, y->agent);
  if (!c) c = strcmp(x->user, y->user);
  if (!c) c = strcmp(x->state_key, y->state_key);
  if (!c) c = strcmp(x->action, y->action);
  return c;
}

static void change_init(adb__policy_change *c, const adb__reward_rec *r,
                        const char *user) {
  memset(c, 0, sizeof *c);
  memcpy(c->agent, r->agent, sizeof c->agent);
  snprintf(c->user, sizeof c->user, "%s", user);
  memcpy(c->state_key, r->state_key, sizeof c->state_key);
  memcpy(c->action, r->action, sizeof c->action);
  c->delta.n = 1;
  c->delta.sum_micro = r->reward_micro;
  c->delta.sum_sq = r->reward * r->reward;
}

/* Two changes per applied reward (user row and '*' row), sorted, then
 * runs of equal keys summed in place. */
int adb__batch_merge(const adb__batch *b, adb__policy_change **out, int *n) {
  *out = NULL;
  *n = 0;
  int m = 0;
  for (int i = 0; i < b->n_rewards; i++) m += b->rewards[i].applied ? 2 : 0;
  if (!m) return ADB_OK;
  adb__policy_change *c = malloc((size_t)m * sizeof *c);
  if (!c) return ADB_ENOMEM;
  int k = 0;
  for (int i = 0; i < b->n_rewards; i++) {
    const adb__reward_rec *r = &b->rewards[i];
    if (!r->applied) continue;
    change_init(&c[k++], r, r->user);
    change_init(&c[k++], r, "*");
  }
  qsort(c, (size_t)k, sizeof *c, change_cmp);
  int w = 0;
  for (int i = 0; i < k; i++) {
    if (w > 0 && change_cmp(&c[w - 1], &c[i]) == 0) {
      c[w - 1].delta.n += c[i].delta.n;
      c[w - 1].delta.sum_micro += c[i].delta.sum_micro;
      c[w - 1].delta.sum_sq += c[i].delta.sum_sq;
    } else {
      c[w++] = c[i];
    }
  }
  *out = c;
  *n = w;
  return ADB_OK;
}
