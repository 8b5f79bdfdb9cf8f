/*
 * admin.c — the operations a team runs on its second day: list, delete and
 * reset agents, list and delete actions, inspect and erase a user.
 *
 * Each is one store transaction (store.h: agents_list, agent_delete,
 * action_delete, user_data) followed by the clean-up of what the store
 * does not hold: cache entries, the handle's vector indexes and their
 * snapshot, the handle's agent and counters. Writes queued before the call
 * are committed first (adb_flush), so none lands after the delete.
 *
 * Cache keys. The cache has no scan, so the store names the keys that may
 * exist: every (user, state_key) with a policy row, a decision or a reward
 * of the agent (or the user), plus the agent-wide '*' key of every state a
 * decision was made in (a decide caches it even when it holds no row).
 * Those entries are deleted, tombstones included. Entries are also bounded
 * by their TTL.
 *
 * The agent-wide posterior and an erased user. Every reward adds the same
 * increment to the user's row and to the agent-wide ('*') row of its
 * (state, action); so the user's own rows hold exactly the user's share of
 * the '*' rows, and erasure subtracts them (sums are exact integers in
 * micro-units; sum_sq is floating and clamped at 0). The '*' rows are then
 * exactly what they would be had the user never rewarded anything, and no
 * aggregate keeps a contribution that could be traced back. The subtraction
 * bumps each row's version and reaches the cache through policy_apply like
 * any committed increment, so no stale '*' posterior is served. Cold start
 * borrows neighbours' posteriors at decision time and stores nothing, and
 * the hourly rollups (performance_metrics) count events without users:
 * both keep nothing of the user to erase.
 *
 * What stays (docs/admin.md): a concurrent decision for the user during
 * the erasure may write its row after it; other replicas' vector indexes
 * keep the user's vectors until they restart (their snapshots are theirs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator.h"

#define MAX_LIST 1000

static int store_fail(adb *db, int rc, const char *what) {
  if (rc == ADB_ENOTFOUND)
    return adb__fail(db, rc, "%s", adb__store_errmsg(db->store));
  if (rc != ADB_EUNAVAIL && rc != ADB_ENOMEM) rc = ADB_ESTORE;
  atomic_fetch_add(&db->st_store_errors, 1);
  return adb__fail(db, rc, "%s: %s", what, adb__store_errmsg(db->store));
}

int adb_agents_list(adb *db, const char *after, int limit,
                    char (*ids)[ADB_ID_MAX + 1], int *n_out) {
  if (n_out) *n_out = 0;
  if (!ids || !n_out) return adb__fail(db, ADB_EINVAL, "no output buffer");
  if (limit < 1 || limit > MAX_LIST)
    return adb__fail(db, ADB_EINVAL, "limit must be 1..%d, not %d", MAX_LIST,
                     limit);
  if (after && after[0] && !adb_id_valid(after))
    return adb__fail(db, ADB_EINVAL, "after must be an agent id");
  int rc = db->store->m->agents_list(db->store, after ? after : "", limit, ids,
                                     n_out);
  return rc ? store_fail(db, rc, "listing agents") : ADB_OK;
}

static void cache_del_cells(adb *db, const adb__cell *c, int n,
                            const char *user) {
  char key[600];
  for (int i = 0; i < n; i++) {
    adb__policy_key(key, sizeof key, c[i].agent, user ? user : c[i].user,
                    c[i].state_key);
    if (db->cache->m->del(db->cache, key) != ADB_OK)
      atomic_fetch_add(&db->st_cache_errors, 1);
  }
}

static int agent_drop(adb *db, const char *agent, int keep_config) {
  int rc = adb__check_id(db, "agent id", agent);
  if (rc) return rc;
  adb_flush(db);
  adb__cell *cells = NULL;
  int n = 0;
  /* No rollup of the agent's counters may commit after the delete. */
  pthread_mutex_lock(&db->rollup_mu);
  adb__agent_stats_drop(db, agent);
  rc = db->store->m->agent_delete(db->store, agent, keep_config, &cells, &n);
  pthread_mutex_unlock(&db->rollup_mu);
  if (rc)
    return store_fail(db, rc,
                      keep_config ? "resetting agent" : "deleting agent");
  cache_del_cells(db, cells, n, NULL);
  free(cells);
  adb__agent_invalidate(db, agent);
  int f = adb__memory_forget(db->mem, agent, NULL);
  if (f < 0)
    return adb__fail(db, f,
                     "agent '%s' deleted from the store, but its "
                     "vectors could not be removed from memory",
                     agent);
  return ADB_OK;
}

int adb_agent_delete(adb *db, const char *agent_id) {
  return agent_drop(db, agent_id, 0);
}

int adb_agent_reset(adb *db, const char *agent_id) {
  return agent_drop(db, agent_id, 1);
}

/* --------------------------------------------------------------- actions */

typedef struct act_list {
  adb_action_info *v;
  int n, cap, oom;
} act_list;

static void act_add(void *arg, const adb__action_rec *r) {
  act_list *l = arg;
  if (l->oom) return;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 16;
    adb_action_info *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) {
      l->oom = 1;
      return;
    }
    l->v = v;
    l->cap = cap;
  }
  adb_action_info *a = &l->v[l->n];
  memset(a, 0, sizeof *a);
  snprintf(a->id, sizeof a->id, "%s", r->id);
  a->disabled = r->disabled;
  a->embedding_dim = r->dim;
  if (r->metadata_json && !(a->metadata_json = strdup(r->metadata_json))) {
    l->oom = 1;
    return;
  }
  l->n++;
}

int adb_actions_list(adb *db, const char *agent_id, adb_action_info **out,
                     int *n_out) {
  *out = NULL;
  *n_out = 0;
  adb__agent *a = NULL;
  int rc = adb__agent_acquire(db, agent_id, &a); /* 404 for no agent */
  if (rc) return rc;
  adb__agent_release(a);
  act_list l = {0};
  rc = db->store->m->actions_list(db->store, agent_id, act_add, &l);
  if (!rc && l.oom)
    rc = adb__fail(db, ADB_ENOMEM, "out of memory");
  else if (rc)
    rc = store_fail(db, rc, "listing actions");
  if (rc) {
    adb_actions_free(l.v, l.n);
    return rc;
  }
  *out = l.v;
  *n_out = l.n;
  return ADB_OK;
}

void adb_actions_free(adb_action_info *v, int n) {
  for (int i = 0; v && i < n; i++)
    free(v[i].metadata_json);
  free(v);
}

int adb_action_delete(adb *db, const char *agent_id, const char *action_id) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (!rc) rc = adb__check_id(db, "action id", action_id);
  if (rc) return rc;
  rc = db->store->m->action_delete(db->store, agent_id, action_id);
  if (rc) return store_fail(db, rc, "deleting action");
  adb__agent_invalidate(db, agent_id);
  return ADB_OK;
}

/* ----------------------------------------------------------------- users */

static void take_summary(adb__user_data *u, adb_user_summary *out) {
  if (out) {
    *out = u->sum;
    u->sum.agents = NULL; /* now the caller's */
  }
}

int adb_user_summary_get(adb *db, const char *user_id, adb_user_summary *out) {
  if (out) memset(out, 0, sizeof *out);
  int rc = adb__check_id(db, "user_id", user_id);
  if (!rc && !out) rc = adb__fail(db, ADB_EINVAL, "no output");
  if (rc) return rc;
  adb__user_data u;
  rc = db->store->m->user_data(db->store, user_id, 0, &u);
  if (rc) return store_fail(db, rc, "reading user");
  take_summary(&u, out);
  adb__user_data_free(&u);
  return ADB_OK;
}

/* Cache entries of an erased user: its policies, its state, its sessions;
 * and the '*' rows it was subtracted from, as committed changes. */
static void user_cache_clean(adb *db, const char *user, adb__user_data *u) {
  cache_del_cells(db, u->cells, u->n_cells, user);
  char key[300];
  snprintf(key, sizeof key, "u:{%s}", user);
  db->cache->m->del(db->cache, key);
  for (int i = 0; i < u->n_sessions; i++) {
    snprintf(key, sizeof key, "s:{%s}", u->sessions[i]);
    db->cache->m->del(db->cache, key);
  }
  adb__apply_changes(db, u->changes, u->n_changes);
}

int adb_user_erase(adb *db, const char *user_id, adb_user_summary *erased) {
  if (erased) memset(erased, 0, sizeof *erased);
  int rc = adb__check_id(db, "user_id", user_id);
  if (rc) return rc;
  adb_flush(db);
  adb__user_data u;
  rc = db->store->m->user_data(db->store, user_id, 1, &u);
  if (rc) return store_fail(db, rc, "erasing user");
  user_cache_clean(db, user_id, &u);
  take_summary(&u, erased);
  adb__user_data_free(&u);
  int f = adb__memory_forget(db->mem, NULL, user_id);
  if (f < 0)
    return adb__fail(db, f,
                     "user '%s' erased from the store, but its "
                     "vectors could not be removed from memory",
                     user_id);
  return ADB_OK;
}

/* ------------------------------------------- deferred events and the log */

int adb__event_defer(adb *db, const char *agent_id, const char *event_id,
                     int op, int *state) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (!rc) rc = adb__check_id(db, "event id", event_id);
  if (rc) return rc;
  rc = db->store->m->event_defer(db->store, agent_id, event_id, op,
                                 adb__clock_ms(db), state);
  return rc ? store_fail(db, rc, "deferred event") : ADB_OK;
}

int adb__log_range(adb *db, const char *agent_id, int64_t *first_ms,
                   int64_t *last_ms) {
  int rc = adb__check_id(db, "agent id", agent_id);
  if (rc) return rc;
  rc = db->store->m->log_range(db->store, agent_id, first_ms, last_ms);
  return rc ? store_fail(db, rc, "log range") : ADB_OK;
}

/* Queued decisions and rewards are committed first, so that the cutoff
 * (the store's, from the handle's clock) sees them all. */
int adb__log_delete(adb *db, const char *agent_id, adb__log_deleted *out) {
  memset(out, 0, sizeof *out);
  int rc = adb__check_id(db, "agent id", agent_id);
  if (rc) return rc;
  adb_flush(db);
  rc = db->store->m->log_delete(db->store, agent_id, adb__clock_ms(db), out);
  return rc ? store_fail(db, rc, "deleting the log") : ADB_OK;
}
