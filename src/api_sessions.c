/*
 * api_sessions.c — session contexts, kept in the cache only, with a TTL:
 * PUT/GET/DELETE /v1/sessions/{session}[?agent=A].
 *
 * Namespaces. Without ?agent a session is in the shared namespace; with
 * ?agent=A in agent A's own. A key scoped to some agents only ever reaches
 * its agents' namespaces: ?agent may be left out when the key has one
 * agent, must name one of them otherwise (another agent is not found), so
 * that a key for agent A can neither read nor delete the sessions of B nor
 * the shared ones.
 */
#define _GNU_SOURCE
#include "api_internal.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "coordinator.h"

/* The session's namespace: NULL (shared) or an agent; see above. */
static int session_agent(rctx *x, const char **agent) {
  int bad;
  const char *q = adb__api_query_get(x, "agent", &bad);
  if (bad || (q && !adb_id_valid(q)))
    return adb__api_fail(x, 400, "invalid_field", "agent",
                         "'agent' must be 1..128 characters of "
                         "[A-Za-z0-9._:@-]");
  const adb__auth *auth = x->auth;
  const char *only = NULL;
  if (x->key >= 0 && adb__auth_scope(auth, x->key, &only) > 0) {
    if (!q) q = only;
    if (!q)
      return adb__api_fail(x, 400, "missing_field", "agent",
                           "this key is scoped to several agents: name the "
                           "session's with ?agent=");
    if (!adb__auth_allows(auth, x->key, q))
      return adb__api_fail(x, 404, "not_found", NULL, "unknown agent '%s'", q);
  }
  *agent = q;
  return 0;
}

/* --------------------------------------------------------- sessions */

int adb__api_session_put(rctx *x) {
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"context", "ttl_s", NULL};
  int bad;
  int64_t ttl = 0;
  const char *q = adb__api_query_get(x, "ttl_s", &bad);
  if (q || bad) {
    /* Only digits: strtoll alone would take " 5", "+5" and "5x" quietly. */
    size_t nd = q ? strspn(q, "0123456789") : 0;
    long long v = nd && nd <= 9 && !q[nd] ? strtoll(q, NULL, 10) : 0;
    if (v < 1 || v > 31536000)
      return adb__api_fail(x, 400, "invalid_field", "ttl_s",
                           "'ttl_s' must be an integer in [1, 31536000]");
    ttl = v;
  }
  char *ctx;
  const char *agent;
  if (session_agent(x, &agent) || adb__api_check_keys(x, doc, keys, NULL) ||
      adb__api_get_int(x, doc, "ttl_s", NULL, 1, 31536000, &ttl, NULL) ||
      adb__api_get_object_text(x, doc, "context", NULL, &ctx))
    return -1;
  if (!ctx)
    return adb__api_fail(x, 400, "missing_field", "context",
                         "'context' is required");
  int rc = adb__session_put(x->db, agent, x->param[0], ctx, (int)ttl);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "session_id", x->param[0], 1);
  adb__api_put_int(x->out, "ttl_s", ttl);
  adb__buf_putc(x->out, '}');
  return 0;
}

int adb__api_session_get(rctx *x) {
  char *json = NULL;
  const char *agent;
  if (session_agent(x, &agent)) return -1;
  int rc = adb__session_get(x->db, agent, x->param[0], &json);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "session_id", x->param[0], 1);
  adb__api_put_raw(x->out, "context", json, "{}");
  adb__buf_putc(x->out, '}');
  adb_free(json);
  return 0;
}

int adb__api_session_delete(rctx *x) {
  const char *agent;
  if (session_agent(x, &agent)) return -1;
  int rc = adb__session_delete(x->db, agent, x->param[0]);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "session_id", x->param[0], 1);
  adb__buf_puts(x->out, ",\"deleted\":true}");
  return 0;
}
