/*
 * api_agents.c — agents, their catalogue of actions, policy inspection
 * and hourly metrics: PUT/GET /v1/agents/{agent}, PUT .../actions/{action},
 * POST .../actions, GET .../policies/{user}, GET .../metrics.
 */
#define _GNU_SOURCE
#include "agent_json.h"
#include "api_internal.h"
#include "policy.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void adb__api_put_agent(adb__buf *b, const adb_agent_config *c,
                        const adb_agent_counters *n) {
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "id", c->id, 1);
  adb__api_put_str(b, "algorithm", adb__api_algo_name(c->algorithm), 0);
  adb__api_put_key(b, "prior", 0);
  if (c->algorithm == ADB_ALGO_GAUSSIAN) {
    adb__buf_puts(b, "{\"mu\":");
    adb__json_num(b, c->prior_mu);
    adb__api_put_num(b, "kappa", c->prior_kappa);
    adb__api_put_num(b, "a", c->prior_a);
    adb__api_put_num(b, "b", c->prior_b);
  } else {
    adb__buf_puts(b, "{\"alpha\":");
    adb__json_num(b, c->prior_alpha);
    adb__api_put_num(b, "beta", c->prior_beta);
  }
  adb__buf_putc(b, '}');
  adb__api_put_key(b, "context_keys", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < c->n_context_keys; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__json_str(b, c->context_keys[i]);
  }
  adb__buf_putc(b, ']');
  adb__api_put_int(b, "embedding_dim", c->embedding_dim);
  adb__api_put_int(b, "simhash_bits", c->simhash_bits);
  adb__api_put_key(b, "reward_weights", 0);
  adb__buf_puts(b, "{\"watch\":");
  adb__json_num(b, c->reward_weights.watch);
  adb__api_put_num(b, "click", c->reward_weights.click);
  adb__api_put_num(b, "rating", c->reward_weights.rating);
  adb__buf_putc(b, '}');
  adb__api_put_num(b, "fallback_strength", c->fallback_strength);
  adb__api_put_num(b, "decay_half_life_s", c->decay_half_life_s);
  adb__api_put_num(b, "reward_window_s", c->reward_window_s);
  adb__api_put_num(b, "default_reward", c->default_reward);
  adb__api_put_key(b, "crosses", 0);
  adb__buf_putc(b, '[');
  for (int i = 0, first = 1; i < 4; i++)
    if (c->linear_crosses & (1 << i)) {
      if (!first) adb__buf_putc(b, ',');
      adb__json_str(b, adb__cross_names[i]);
      first = 0;
    }
  adb__buf_putc(b, ']');
  adb__api_put_num(b, "lambda", c->linear_lambda);
  adb__api_put_num(b, "v", c->linear_v);
  adb__api_put_int(b, "created_at_ms", c->created_at_ms);
  adb__api_put_int(b, "updated_at_ms", c->updated_at_ms);
  if (n) {
    adb__api_put_key(b, "counters", 0);
    adb__buf_puts(b, "{\"decisions\":");
    adb__json_int(b, n->decisions);
    adb__api_put_int(b, "rewards", n->rewards);
    adb__api_put_int(b, "actions", n->actions);
    adb__api_put_num(b, "reward_sum", n->reward_sum);
    adb__buf_putc(b, '}');
  }
  adb__buf_putc(b, '}');
}

/* ----------------------------------------------------------- agents */

static int agent_from_json(rctx *x, json_t *doc, adb_agent_config *c) {
  json_t *id = adb__api_member(doc, "id");
  if (id && (!json_is_string(id) || strcmp(json_string_value(id), c->id)))
    return adb__api_fail(x, 400, "invalid_field", "id",
                         "'id' must match the agent in the path");
  adb__jerr e;
  if (adb__agent_from_json(doc, NULL, c, &e) == ADB_OK) return 0;
  return adb__api_fail(x, 400, "invalid_field", e.field, "%s", e.msg);
}

int adb__api_agent_put(rctx *x) {
  adb_agent_config c;
  adb_agent_config_init(&c);
  snprintf(c.id, sizeof c.id, "%s", x->param[0]);
  json_t *doc = adb__api_parse_body(x, 1);
  if (!doc || agent_from_json(x, doc, &c)) return -1;
  int rc = adb_agent_put(x->db, &c);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__api_put_agent(x->out, &c, NULL);
  return 0;
}

int adb__api_agent_get(rctx *x) {
  adb_agent_config c;
  adb_agent_counters n;
  int rc = adb_agent_get(x->db, x->param[0], &c);
  if (rc == ADB_OK) rc = adb_agent_counters_get(x->db, x->param[0], &n);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__api_put_agent(x->out, &c, &n);
  return 0;
}

/* ---------------------------------------------------------- actions */

static int action_from_json(rctx *x, json_t *o, const char *prefix,
                            adb_action *a) {
  static const char *const keys[] = {"id",       "embedding", "embedding_b64",
                                     "metadata", "disabled",  "features",
                                     NULL};
  if (!json_is_object(o))
    return adb__api_fail(x, 400, "invalid_field", prefix,
                         "an action is an object");
  if (adb__api_check_keys(x, o, keys, prefix)) return -1;
  float *emb;
  int dim, disabled = 0;
  char *meta;
  if (adb__api_get_embedding(x, o, prefix, 0, &emb, &dim) ||
      adb__api_get_object_text(x, o, "metadata", prefix, &meta) ||
      adb__api_get_bool(x, o, "disabled", prefix, &disabled) ||
      adb__api_get_features(x, o, "features", prefix, &emb, &dim))
    return -1;
  a->embedding = emb;
  a->embedding_dim = dim;
  a->metadata_json = meta;
  a->disabled = disabled;
  return 0;
}

int adb__api_action_put(rctx *x) {
  json_t *doc = adb__api_parse_body(x, 1);
  adb_action a = {.id = x->param[1]};
  if (!doc || action_from_json(x, doc, NULL, &a)) return -1;
  json_t *id = adb__api_member(doc, "id");
  if (id && (!json_is_string(id) || strcmp(json_string_value(id), a.id)))
    return adb__api_fail(x, 400, "invalid_field", "id",
                         "'id' must match the action in the path");
  int rc = adb_actions_put(x->db, x->param[0], &a, 1);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", x->param[0], 1);
  adb__api_put_str(b, "id", a.id, 0);
  adb__api_put_int(b, "embedding_dim", a.embedding_dim);
  adb__api_put_key(b, "disabled", 0);
  adb__buf_puts(b, a.disabled ? "true" : "false");
  adb__buf_putc(b, '}');
  return 0;
}

int adb__api_actions_post(rctx *x) {
  json_t *arr;
  size_t n;
  if (adb__api_bulk(x, "actions", &arr, &n)) return -1;
  adb_action *as = adb__api_alloc(x, n * sizeof *as);
  adb__api_strset seen;
  if (!as || adb__api_strset_init(x, &seen, n) < 0)
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_array_get(arr, i);
    const char *p = adb__api_fidx(x, "actions", i);
    memset(&as[i], 0, sizeof as[i]);
    if (action_from_json(x, o, p, &as[i]) ||
        adb__api_get_id(x, o, "id", p, 1, &as[i].id))
      return -1;
    if (!adb__api_strset_add(&seen, as[i].id))
      return adb__api_fail(x, 400, "invalid_field", adb__api_fname(x, p, "id"),
                           "duplicate action id '%s'", as[i].id);
  }
  int rc = adb_actions_put(x->db, x->param[0], as, (int)n);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_printf(x->out, "{\"upserted\":%zu}", n);
  return 0;
}

/* --------------------------------------------------------- policies */

static void put_arm(adb__buf *b, const adb_arm_posterior *a,
                    adb_algorithm algo) {
  adb__buf_puts(b, "{\"action\":");
  adb__json_str(b, a->action);
  adb__api_put_int(b, "n", a->n);
  adb__api_put_num(b, "sum", a->sum);
  if (algo == ADB_ALGO_GAUSSIAN) {
    adb__api_put_num(b, "mu", a->mu);
    adb__api_put_num(b, "kappa", a->kappa);
    adb__api_put_num(b, "a", a->a);
    adb__api_put_num(b, "b", a->b);
  } else {
    adb__api_put_num(b, "alpha", a->alpha);
    adb__api_put_num(b, "beta", a->beta);
  }
  adb__api_put_num(b, "mean", a->mean);
  adb__buf_putc(b, '}');
}

/* A linear agent's policy is its model (policy.h adb__linear_view), not
 * cells of counts. */
static int linear_policy(rctx *x, const char *agent, const char *user) {
  adb__lin_arm_view *v = NULL;
  int n = 0, k = 0, draws = 0;
  int64_t n_rewards = 0;
  int rc = adb__linear_view(x->db, agent, user, &v, &n, &n_rewards, &k, &draws);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", agent, 1);
  adb__api_put_str(b, "user_id", user, 0);
  adb__api_put_str(b, "algorithm", "linear", 0);
  adb__api_put_key(b, "model", 0);
  adb__buf_putc(b, '{');
  adb__api_put_key(b, "n", 1);
  adb__json_int(b, n_rewards);
  adb__api_put_int(b, "features", k);
  adb__api_put_int(b, "draws", draws);
  adb__buf_putc(b, '}');
  adb__api_put_key(b, "arms", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    adb__buf_puts(b, i ? ",{" : "{");
    adb__api_put_str(b, "action", v[i].action, 1);
    adb__api_put_num(b, "n", v[i].n);
    adb__api_put_num(b, "mean", v[i].mean);
    adb__api_put_num(b, "sd", v[i].sd);
    adb__api_put_num(b, "share", v[i].share);
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "]}");
  free(v);
  return 0;
}

int adb__api_policy(rctx *x) {
  const char *agent = x->param[0], *user = x->param[1];
  int bad;
  const char *sk = adb__api_query_get(x, "state_key", &bad);
  if (bad || (sk && !adb__api_is_state_key(sk)))
    return adb__api_fail(x, 400, "invalid_field", "state_key",
                         "'state_key' must be 64 lowercase hex characters");
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, agent, &cfg);
  if (rc == ADB_OK && cfg.algorithm == ADB_ALGO_LINEAR)
    return linear_policy(x, agent, user);
  char key[ADB_STATE_KEY_LEN + 1];
  if (rc == ADB_OK && !sk) {
    rc = adb_state_key(x->db, agent, NULL, 0, NULL, 0, key);
    sk = key;
  }
  int cap = 256, n = 0;
  adb_arm_posterior *arms = NULL;
  while (rc == ADB_OK) {
    arms = adb__api_alloc(x, (size_t)cap * sizeof *arms);
    if (!arms) return adb__api_fail(x, 500, "internal", NULL, "out of memory");
    rc = adb_policy_get(x->db, agent, user, sk, arms, cap, &n);
    if (rc != ADB_OK || n <= cap) break;
    cap = n;
  }
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", agent, 1);
  adb__api_put_str(b, "user_id", user, 0);
  adb__api_put_str(b, "state_key", sk, 0);
  adb__api_put_str(b, "algorithm", adb__api_algo_name(cfg.algorithm), 0);
  adb__api_put_key(b, "arms", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    if (i) adb__buf_putc(b, ',');
    put_arm(b, &arms[i], cfg.algorithm);
  }
  adb__buf_puts(b, "]}");
  return 0;
}

static void put_iso_hour(adb__buf *b, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char s[32];
  gmtime_r(&t, &tm);
  strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  adb__api_put_str(b, "hour", s, 0);
}

int adb__api_agent_metrics(rctx *x) {
  int64_t to = adb__api_wall_ms(), from;
  if (adb__api_time_param(x, "to", &to)) return -1;
  from = to - 24 * 3600 * 1000LL;
  if (adb__api_time_param(x, "from", &from)) return -1;
  if (from > to)
    return adb__api_fail(x, 400, "invalid_field", "from",
                         "'from' is after 'to'");
  adb_metrics_row *rows = NULL;
  int n = 0;
  int rc = adb_metrics_get(x->db, x->param[0], from, to, &rows, &n);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", x->param[0], 1);
  adb__api_put_int(b, "from_ms", from);
  adb__api_put_int(b, "to_ms", to);
  adb__api_put_key(b, "rows", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    const adb_metrics_row *r = &rows[i];
    adb__buf_puts(b, i ? ",{\"hour_ms\":" : "{\"hour_ms\":");
    adb__json_int(b, r->hour_ms);
    put_iso_hour(b, r->hour_ms);
    adb__api_put_int(b, "decisions", r->decisions);
    adb__api_put_int(b, "rewards", r->rewards);
    adb__api_put_num(b, "reward_sum", r->reward_sum);
    adb__api_put_num(b, "mean_reward",
                     r->rewards ? r->reward_sum / (double)r->rewards : 0);
    adb__api_put_int(b, "cache_hits", r->cache_hits);
    adb__api_put_int(b, "cache_misses", r->cache_misses);
    adb__api_put_num(b, "latency_p50_us", r->latency_p50_us);
    adb__api_put_num(b, "latency_p99_us", r->latency_p99_us);
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "]}");
  adb_free(rows);
  return 0;
}
