/*
 * store.c — backend selection by URL scheme, and the parts every backend
 * shares: policy arrays, record frees and the merge of reward increments.
 */
#include "store.h"

#include "statekey.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
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
  for (size_t i = 0; i < sizeof backends / sizeof *backends; i++)
    if (adb__url_has_scheme(url, backends[i]->scheme))
      return backends[i]->open(url, cfg, out, err, errlen);
  if (adb__url_has_scheme(url, "postgres")) { /* libpq's alias */
    char buf[2048];
    snprintf(buf, sizeof buf, "postgresql%s", url + strlen("postgres"));
    return adb__store_open(buf, cfg, out, err, errlen);
  }
  snprintf(err, errlen,
           "unsupported store URL '%s': the schemes are sqlite://PATH "
           "(sqlite://:memory: for a private one) and "
           "postgresql://USER@HOST:PORT/DB (or postgres://)",
           url ? url : "(null)");
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

/* Makes room for one more element of size sz in *v (n used). */
static int grow(void **v, int n, size_t sz) {
  /* Capacity: 8, then doubled each time n reaches a power of two. */
  if (n != 0 && (n < 8 || (n & (n - 1)))) return ADB_OK;
  size_t cap = n ? (size_t)n * 2 : 8;
  void *p = realloc(*v, cap * sz);
  if (!p) return ADB_ENOMEM;
  *v = p;
  return ADB_OK;
}

int adb__cells_push(adb__cell **v, int *n, const char *agent, const char *user,
                    const char *state_key) {
  if (grow((void **)v, *n, sizeof **v)) return ADB_ENOMEM;
  adb__cell *c = &(*v)[(*n)++];
  snprintf(c->agent, sizeof c->agent, "%s", agent);
  snprintf(c->user, sizeof c->user, "%s", user);
  snprintf(c->state_key, sizeof c->state_key, "%s", state_key);
  return ADB_OK;
}

int adb__sessions_push(adb__user_data *u, const char *session) {
  if (grow((void **)&u->sessions, u->n_sessions, sizeof *u->sessions))
    return ADB_ENOMEM;
  snprintf(u->sessions[u->n_sessions++], ADB_ID_MAX + 1, "%s", session);
  return ADB_OK;
}

int adb__change_push(adb__user_data *u, const char *agent,
                     const char *state_key, const char *action,
                     const adb__arm_stats *delta) {
  if (grow((void **)&u->changes, u->n_changes, sizeof *u->changes))
    return ADB_ENOMEM;
  adb__policy_change *c = &u->changes[u->n_changes++];
  memset(c, 0, sizeof *c);
  snprintf(c->agent, sizeof c->agent, "%s", agent);
  snprintf(c->user, sizeof c->user, "*");
  snprintf(c->state_key, sizeof c->state_key, "%s", state_key);
  snprintf(c->action, sizeof c->action, "%s", action);
  c->delta = *delta;
  return ADB_OK;
}

int adb__agents_push(adb__user_data *u, const char *agent) {
  if (grow((void **)&u->sum.agents, u->sum.n_agents, sizeof *u->sum.agents))
    return ADB_ENOMEM;
  snprintf(u->sum.agents[u->sum.n_agents++], ADB_ID_MAX + 1, "%s", agent);
  return ADB_OK;
}

void adb__user_data_free(adb__user_data *u) {
  free(u->sum.agents);
  free(u->cells);
  free(u->sessions);
  free(u->changes);
  memset(u, 0, sizeof *u);
}

void adb__policy_free(adb__policy *p) {
  free(p->arms);
  p->arms = NULL;
  p->n = p->cap = 0;
}

void adb__decision_rec_free(adb__decision_rec *d) {
  free(d->context_json);
  free(d->candidates_json);
  free(d->ranking_json);
  d->context_json = d->candidates_json = d->ranking_json = NULL;
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
  for (int i = 0; i < b->n_rewards; i++)
    m += b->rewards[i].applied && !b->rewards[i].awaiting ? 2 : 0;
  if (!m) return ADB_OK;
  adb__policy_change *c = malloc((size_t)m * sizeof *c);
  if (!c) return ADB_ENOMEM;
  int k = 0;
  for (int i = 0; i < b->n_rewards; i++) {
    const adb__reward_rec *r = &b->rewards[i];
    if (!r->applied || r->awaiting) continue;
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

void adb__default_reward_id(const char *event_id, char out[ADB_ID_MAX + 1]) {
  char hex[65];
  adb__sha256_hex(event_id, strlen(event_id), hex);
  out[0] = '~';
  memcpy(out + 1, hex, 65);
}

/* ------------------------------------------------------ record checks */

int adb__field_ok(const char *f, size_t size, int id) {
  return memchr(f, 0, size) != NULL && (!id || f[0]);
}

int adb__dim_ok(const float *v, int dim) {
  return dim >= 0 && dim <= ADB_MAX_EMBEDDING_DIM && (dim == 0 || v);
}

int adb__agent_rec_ok(const adb_agent_config *c) {
  const double d[] = {c->prior_alpha,
                      c->prior_beta,
                      c->prior_mu,
                      c->prior_kappa,
                      c->prior_a,
                      c->prior_b,
                      c->reward_weights.watch,
                      c->reward_weights.click,
                      c->reward_weights.rating,
                      c->fallback_strength,
                      c->decay_half_life_s,
                      c->reward_window_s,
                      c->default_reward,
                      c->linear_lambda,
                      c->linear_v};
  for (size_t i = 0; i < sizeof d / sizeof *d; i++)
    if (!isfinite(d[i])) return 0;
  return ADB__ID_OK(c->id) &&
         (c->algorithm == ADB_ALGO_BETA || c->algorithm == ADB_ALGO_GAUSSIAN ||
          c->algorithm == ADB_ALGO_LINEAR) &&
         c->linear_crosses >= 0 && c->linear_crosses <= ADB_CROSS_ALL &&
         c->n_context_keys >= 0 && c->n_context_keys <= ADB_MAX_CONTEXT_KEYS &&
         c->embedding_dim >= 0 && c->embedding_dim <= ADB_MAX_EMBEDDING_DIM &&
         c->simhash_bits >= 0 && c->simhash_bits <= 64;
}

int adb__pattern_rec_ok(const adb_pattern *p) {
  return ADB__ID_OK(p->id) && ADB__STR_OK(p->type) && ADB__STR_OK(p->key) &&
         isfinite(p->confidence) && adb__dim_ok(p->embedding, p->embedding_dim);
}

static int decision_ok(const adb__decision_rec *d) {
  return ADB__ID_OK(d->agent) && ADB__ID_OK(d->event_id) &&
         ADB__ID_OK(d->user) && ADB__ID_OK(d->action) &&
         ADB__STR_OK(d->state_key) && ADB__STR_OK(d->model) &&
         isfinite(d->propensity);
}

static int reward_ok(const adb__reward_rec *r) {
  return ADB__ID_OK(r->agent) && ADB__ID_OK(r->reward_id) &&
         ADB__STR_OK(r->event_id) && ADB__STR_OK(r->user) &&
         ADB__STR_OK(r->action) &&
         (r->awaiting ? r->event_id[0] != 0
                      : r->user[0] != 0 && r->action[0] != 0) &&
         ADB__STR_OK(r->state_key) && ADB__STR_OK(r->body_hash) &&
         isfinite(r->reward);
}

static int episode_ok(const adb__episode_rec *e) {
  return ADB__ID_OK(e->agent) && ADB__ID_OK(e->episode_id) &&
         ADB__ID_OK(e->user) && ADB__STR_OK(e->session) &&
         ADB__ID_OK(e->action) && adb__dim_ok(e->embedding, e->dim) &&
         isfinite(e->reward);
}

static int metrics_ok(const adb__metrics_delta *m) {
  return ADB__ID_OK(m->agent) && m->decisions >= 0 && m->rewards >= 0 &&
         m->cache_hits >= 0 && m->cache_misses >= 0 &&
         isfinite(m->reward_sum) && isfinite(m->latency_p50_us) &&
         isfinite(m->latency_p99_us);
}

static int invalid(char *what, size_t cap, const char *kind, int i) {
  snprintf(what, cap, "%s #%d", kind, i);
  return ADB_EINVAL;
}

int adb__batch_validate(const adb__batch *b, char *what, size_t cap) {
  if (b->n_decisions < 0 || b->n_rewards < 0 || b->n_episodes < 0 ||
      b->n_metrics < 0 || (b->n_decisions && !b->decisions) ||
      (b->n_rewards && !b->rewards) || (b->n_episodes && !b->episodes) ||
      (b->n_metrics && !b->metrics))
    return invalid(what, cap, "batch array", 0);
  for (int i = 0; i < b->n_decisions; i++)
    if (!decision_ok(&b->decisions[i]))
      return invalid(what, cap, "decision", i);
  for (int i = 0; i < b->n_rewards; i++)
    if (!reward_ok(&b->rewards[i])) return invalid(what, cap, "reward", i);
  for (int i = 0; i < b->n_episodes; i++)
    if (!episode_ok(&b->episodes[i])) return invalid(what, cap, "episode", i);
  for (int i = 0; i < b->n_metrics; i++)
    if (!metrics_ok(&b->metrics[i]))
      return invalid(what, cap, "metrics delta", i);
  return ADB_OK;
}

/* ------------------------------------------------- agent config columns */

const char *adb__algo_name(adb_algorithm a) {
  return a == ADB_ALGO_GAUSSIAN ? "gaussian"
         : a == ADB_ALGO_LINEAR ? "linear"
                                : "beta";
}

char *adb__context_keys_json(const adb_agent_config *cfg) {
  json_t *a = json_array();
  for (int i = 0; a && i < cfg->n_context_keys; i++) {
    const char *k = cfg->context_keys[i];
    if (!memchr(k, 0, sizeof cfg->context_keys[i]) ||
        json_array_append_new(a, json_string(k)) != 0) {
      json_decref(a);
      return NULL;
    }
  }
  char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  return text;
}

int adb__context_keys_parse(adb_agent_config *cfg, const char *text) {
  json_t *a = text ? json_loads(text, 0, NULL) : NULL;
  size_t n = json_is_array(a) ? json_array_size(a) : SIZE_MAX;
  int ok = n <= ADB_MAX_CONTEXT_KEYS;
  for (size_t i = 0; ok && i < n; i++) {
    const char *k = json_string_value(json_array_get(a, i));
    ok = k && strlen(k) <= ADB_ID_MAX;
    if (ok) memcpy(cfg->context_keys[i], k, strlen(k) + 1);
  }
  cfg->n_context_keys = ok ? (int)n : 0;
  json_decref(a);
  return ok ? ADB_OK : ADB_ECORRUPT;
}

/* ------------------------------------------------------------ admin SQL */

const char adb__sql_agents_list[] =
    "SELECT agent_id FROM agent_metadata WHERE agent_id > $1 "
    "ORDER BY agent_id LIMIT $2";
const char adb__sql_agent_exists[] =
    "SELECT 1 FROM agent_metadata WHERE agent_id = $1";
/* '*' with every state of a decision: a decide caches the agent-wide
 * policy of its state even when it holds no row yet. */
const char adb__sql_agent_cells[] =
    "SELECT user_id, state_key FROM rl_policies WHERE agent_id = $1 "
    "UNION SELECT user_id, state_key FROM decisions WHERE agent_id = $1 "
    "UNION SELECT '*', state_key FROM decisions WHERE agent_id = $1 "
    "UNION SELECT user_id, state_key FROM reward_signals WHERE agent_id = $1";
const char adb__sql_action_delete[] =
    "DELETE FROM actions WHERE agent_id = $1 AND action_id = $2";
const char adb__sql_pattern_expire[] =
    "DELETE FROM learned_patterns WHERE agent_id = $1 AND pattern_id >= $2 "
    "AND pattern_id < CAST($2 AS TEXT) || '~' AND updated_at_ms < $3 "
    "AND embedding IS NULL";
const char *const adb__sql_agent_learning[] = {
    "DELETE FROM rl_policies WHERE agent_id = $1",
    "DELETE FROM decisions WHERE agent_id = $1",
    "DELETE FROM reward_signals WHERE agent_id = $1",
    "DELETE FROM agent_episodes WHERE agent_id = $1",
    "DELETE FROM learned_patterns WHERE agent_id = $1",
    "DELETE FROM performance_metrics WHERE agent_id = $1",
    "DELETE FROM pending_rewards WHERE agent_id = $1",
    "DELETE FROM event_outcomes WHERE agent_id = $1",
    "DELETE FROM default_watermarks WHERE agent_id = $1",
    "DELETE FROM decision_features WHERE agent_id = $1",
    "DELETE FROM linear_rewards WHERE agent_id = $1",
    "DELETE FROM linear_checkpoints WHERE agent_id = $1",
    "DELETE FROM deferred_events WHERE agent_id = $1",
    NULL};
const char *const adb__sql_agent_config[] = {
    "DELETE FROM actions WHERE agent_id = $1",
    "DELETE FROM agent_metadata WHERE agent_id = $1", NULL};

const char adb__sql_user_counts[] =
    "SELECT (SELECT count(*) FROM decisions WHERE user_id = $1), "
    "(SELECT count(*) FROM reward_signals WHERE user_id = $1), "
    "(SELECT count(*) FROM agent_episodes WHERE user_id = $1), "
    "(SELECT count(*) FROM rl_policies WHERE user_id = $1), "
    "(SELECT count(*) FROM user_states WHERE user_id = $1), "
    "(SELECT count(DISTINCT session_id) FROM agent_episodes "
    "WHERE user_id = $1 AND session_id <> '')";
const char adb__sql_user_cells[] =
    "SELECT agent_id, state_key FROM rl_policies WHERE user_id = $1 "
    "UNION SELECT agent_id, state_key FROM decisions WHERE user_id = $1 "
    "UNION SELECT agent_id, state_key FROM reward_signals WHERE user_id = $1 "
    "ORDER BY 1, 2";
const char adb__sql_user_agents[] =
    "SELECT agent_id FROM rl_policies WHERE user_id = $1 "
    "UNION SELECT agent_id FROM decisions WHERE user_id = $1 "
    "UNION SELECT agent_id FROM reward_signals WHERE user_id = $1 "
    "UNION SELECT agent_id FROM agent_episodes WHERE user_id = $1 "
    "ORDER BY 1";
const char adb__sql_user_sessions[] =
    "SELECT DISTINCT session_id FROM agent_episodes "
    "WHERE user_id = $1 AND session_id <> '' ORDER BY 1";
const char adb__sql_user_rows[] =
    "SELECT agent_id, state_key, action_id, n, sum_micro, sum_sq, sum_hi "
    "FROM rl_policies WHERE user_id = $1 "
    "ORDER BY agent_id, state_key, action_id";
/* The sum is hi * 2^32 + lo (0004_sum_headroom): the negated user sum is
 * added with the carry of the write path's upsert. */
const char adb__sql_star_subtract[] =
    "UPDATE rl_policies SET n = n - $1, "
    "sum_hi = sum_hi + $2 + ((sum_micro + $3) >> 32), "
    "sum_micro = (sum_micro + $3) & 4294967295, "
    "sum_sq = CASE WHEN sum_sq > $4 THEN sum_sq - $4 ELSE 0 END, "
    "version = version + 1, updated_at_ms = $5 "
    "WHERE agent_id = $6 AND user_id = '*' AND state_key = $7 "
    "AND action_id = $8 RETURNING version";
const char *const adb__sql_user_delete[] = {
    /* Rows keyed by the user's decisions go first (0005_write_path). */
    "DELETE FROM pending_rewards WHERE (agent_id, event_id) IN "
    "(SELECT agent_id, event_id FROM decisions WHERE user_id = $1)",
    "DELETE FROM event_outcomes WHERE (agent_id, event_id) IN "
    "(SELECT agent_id, event_id FROM decisions WHERE user_id = $1)",
    "DELETE FROM deferred_events WHERE (agent_id, event_id) IN "
    "(SELECT agent_id, event_id FROM decisions WHERE user_id = $1)",
    /* The linear model's copies of the user's features (0003). */
    "DELETE FROM decision_features WHERE (agent_id, event_id) IN "
    "(SELECT agent_id, event_id FROM decisions WHERE user_id = $1)",
    "DELETE FROM linear_rewards WHERE (agent_id, reward_id) IN "
    "(SELECT agent_id, reward_id FROM reward_signals WHERE user_id = $1)",
    "DELETE FROM decisions WHERE user_id = $1",
    "DELETE FROM reward_signals WHERE user_id = $1",
    "DELETE FROM agent_episodes WHERE user_id = $1",
    "DELETE FROM rl_policies WHERE user_id = $1",
    "DELETE FROM user_states WHERE user_id = $1",
    NULL};

/* ------------------------------------------- deferred events and the log */

const char adb__sql_defer_mark[] =
    "INSERT INTO deferred_events (agent_id, event_id, created_at_ms) "
    "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const char adb__sql_defer_activate[] =
    "UPDATE deferred_events SET activated_at_ms = $3 "
    "WHERE agent_id = $1 AND event_id = $2 AND activated_at_ms IS NULL";
const char adb__sql_defer_get[] = "SELECT activated_at_ms FROM deferred_events "
                                  "WHERE agent_id = $1 AND event_id = $2";

const char adb__sql_log_range[] =
    "SELECT min(created_at_ms), max(created_at_ms) FROM decisions "
    "WHERE agent_id = $1";

/* The events of the decisions log_delete deletes. */
#define LOG_EVENTS                                                             \
  "(SELECT event_id FROM decisions WHERE agent_id = $1 "                       \
  "AND created_at_ms < $2)"
const char *const adb__sql_log_delete_keyed[] = {
    "DELETE FROM event_outcomes WHERE agent_id = $1 AND event_id "
    "IN " LOG_EVENTS,
    "DELETE FROM deferred_events WHERE agent_id = $1 AND event_id "
    "IN " LOG_EVENTS,
    "DELETE FROM decision_features WHERE agent_id = $1 AND event_id "
    "IN " LOG_EVENTS,
    NULL};
/* The rewards of those events, then the direct rewards (no event) before
 * the cutoff; "event_id <> ''" lets the planner use the partial index. */
const char *const adb__sql_log_delete_rewards[] = {
    "DELETE FROM reward_signals WHERE agent_id = $1 AND event_id <> '' "
    "AND event_id IN " LOG_EVENTS,
    "DELETE FROM reward_signals WHERE agent_id = $1 AND event_id = '' "
    "AND created_at_ms < $2",
    NULL};
const char adb__sql_log_delete_decisions[] =
    "DELETE FROM decisions WHERE agent_id = $1 AND created_at_ms < $2";
/* Marks of ranks whose decision was never stored (a failed decide). */
const char adb__sql_log_delete_marks[] =
    "DELETE FROM deferred_events WHERE agent_id = $1 AND created_at_ms < $2 "
    "AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.agent_id = $1 "
    "AND d.event_id = deferred_events.event_id)";
