/*
 * api_admin.c — the admin routes: GET /v1/agents (paged), DELETE
 * /v1/agents/{agent}, POST /v1/agents/{agent}/reset, GET
 * /v1/agents/{agent}/actions, DELETE /v1/agents/{agent}/actions/{action},
 * GET and DELETE /v1/users/{user}. Each is one library call (admin.c).
 *
 * Scope. A key limited to some agents lists only those, and reaches the
 * others' routes as if they did not exist (api.c, scope_ok). A user spans
 * every agent, so inspecting or erasing one takes a key with no agent
 * list (403 forbidden otherwise).
 */
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"

#define DEFAULT_LIMIT 100
#define MAX_LIMIT 1000

static int all_agents(rctx *x) {
  return x->key < 0 || adb__auth_allows(x->auth, x->key, "*");
}

static int query_limit(rctx *x, int *limit) {
  int bad;
  const char *v = adb__api_query_get(x, "limit", &bad);
  *limit = DEFAULT_LIMIT;
  if (!v && !bad) return 0;
  char *end = NULL;
  long n = bad ? 0 : strtol(v, &end, 10);
  if (bad || !end || end == v || *end || n < 1 || n > MAX_LIMIT)
    return adb__api_fail(x, 400, "invalid_field", "limit",
                         "limit must be an integer 1..%d", MAX_LIMIT);
  *limit = (int)n;
  return 0;
}

int adb__api_agents_list(rctx *x) {
  int limit, bad;
  if (query_limit(x, &limit)) return -1;
  const char *after = adb__api_query_get(x, "after", &bad);
  if (bad || (after && !adb_id_valid(after)))
    return adb__api_fail(x, 400, "invalid_field", "after",
                         "after must be an agent id");
  char(*ids)[ADB_ID_MAX + 1] = adb__api_alloc(x, (size_t)limit * sizeof *ids);
  if (!ids) return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  int n = 0;
  int rc = adb_agents_list(x->db, after, limit, ids, &n);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_puts(b, "{\"agents\":[");
  int first = 1;
  for (int i = 0; i < n; i++) {
    if (x->key >= 0 && !adb__auth_allows(x->auth, x->key, ids[i])) continue;
    adb_agent_config c;
    adb_agent_counters k;
    rc = adb_agent_get(x->db, ids[i], &c);
    if (rc == ADB_ENOTFOUND) continue; /* deleted meanwhile */
    if (rc == ADB_OK) rc = adb_agent_counters_get(x->db, ids[i], &k);
    if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
    if (!first) adb__buf_putc(b, ',');
    first = 0;
    adb__api_put_agent(b, &c, &k);
  }
  adb__buf_puts(b, "],\"next\":");
  if (n == limit)
    adb__json_str(b, ids[n - 1]);
  else
    adb__buf_puts(b, "null");
  adb__buf_putc(b, '}');
  return 0;
}

static int agent_done(rctx *x, const char *what) {
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "agent", x->param[0], 1);
  adb__buf_printf(x->out, ",\"%s\":true}", what);
  return 0;
}

int adb__api_agent_delete(rctx *x) {
  int rc = adb_agent_delete(x->db, x->param[0]);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  return agent_done(x, "deleted");
}

int adb__api_agent_reset(rctx *x) {
  json_t *doc = adb__api_parse_body(x, 1);
  static const char *const none[] = {NULL};
  if (!doc || adb__api_check_keys(x, doc, none, NULL)) return -1;
  int rc = adb_agent_reset(x->db, x->param[0]);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  return agent_done(x, "reset");
}

int adb__api_actions_list(rctx *x) {
  adb_action_info *v = NULL;
  int n = 0;
  int rc = adb_actions_list(x->db, x->param[0], &v, &n);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", x->param[0], 1);
  adb__buf_puts(b, ",\"actions\":[");
  for (int i = 0; i < n; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__buf_putc(b, '{');
    adb__api_put_str(b, "id", v[i].id, 1);
    adb__api_put_int(b, "embedding_dim", v[i].embedding_dim);
    adb__api_put_key(b, "disabled", 0);
    adb__buf_puts(b, v[i].disabled ? "true" : "false");
    adb__api_put_raw(b, "metadata", v[i].metadata_json, "null");
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "]}");
  adb_actions_free(v, n);
  return 0;
}

int adb__api_action_delete(rctx *x) {
  int rc = adb_action_delete(x->db, x->param[0], x->param[1]);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "agent", x->param[0], 1);
  adb__api_put_str(x->out, "id", x->param[1], 0);
  adb__buf_puts(x->out, ",\"deleted\":true}");
  return 0;
}

static void put_summary(adb__buf *b, const adb_user_summary *s) {
  adb__buf_puts(b, "{\"decisions\":");
  adb__json_int(b, s->decisions);
  adb__api_put_int(b, "rewards", s->rewards);
  adb__api_put_int(b, "episodes", s->episodes);
  adb__api_put_int(b, "policy_rows", s->policy_rows);
  adb__api_put_int(b, "sessions", s->sessions);
  adb__api_put_key(b, "state", 0);
  adb__buf_puts(b, s->has_state ? "true" : "false");
  adb__buf_puts(b, ",\"agents\":[");
  for (int i = 0; i < s->n_agents; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__json_str(b, s->agents[i]);
  }
  adb__buf_puts(b, "]}");
}

static int user_scope(rctx *x) {
  if (all_agents(x)) return 0;
  return adb__api_fail(x, 403, "forbidden", NULL,
                       "a user spans every agent: this needs a key that is "
                       "not limited to some agents");
}

int adb__api_user_summary(rctx *x) {
  if (user_scope(x)) return -1;
  adb_user_summary s;
  int rc = adb_user_summary_get(x->db, x->param[0], &s);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "user_id", x->param[0], 1);
  adb__api_put_key(x->out, "data", 0);
  put_summary(x->out, &s);
  adb__buf_putc(x->out, '}');
  adb_free(s.agents);
  return 0;
}

int adb__api_user_erase(rctx *x) {
  if (user_scope(x)) return -1;
  adb_user_summary s;
  int rc = adb_user_erase(x->db, x->param[0], &s);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "user_id", x->param[0], 1);
  adb__api_put_key(x->out, "erased", 0);
  put_summary(x->out, &s);
  adb__buf_putc(x->out, '}');
  adb_free(s.agents);
  return 0;
}
