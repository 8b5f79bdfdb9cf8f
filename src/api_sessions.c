/*
 * api_sessions.c — session contexts, kept in the cache only, with a TTL:
 * PUT/GET/DELETE /v1/sessions/{session}.
 */
#define _GNU_SOURCE
#include "api_internal.h"

#include <stdlib.h>
#include <string.h>

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
  if (adb__api_check_keys(x, doc, keys, NULL) ||
      adb__api_get_int(x, doc, "ttl_s", NULL, 1, 31536000, &ttl, NULL) ||
      adb__api_get_object_text(x, doc, "context", NULL, &ctx))
    return -1;
  if (!ctx)
    return adb__api_fail(x, 400, "missing_field", "context",
                         "'context' is required");
  int rc = adb_session_put(x->db, x->param[0], ctx, (int)ttl);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "session_id", x->param[0], 1);
  adb__api_put_int(x->out, "ttl_s", ttl);
  adb__buf_putc(x->out, '}');
  return 0;
}

int adb__api_session_get(rctx *x) {
  char *json = NULL;
  int rc = adb_session_get(x->db, x->param[0], &json);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "session_id", x->param[0], 1);
  adb__api_put_raw(x->out, "context", json, "{}");
  adb__buf_putc(x->out, '}');
  adb_free(json);
  return 0;
}

int adb__api_session_delete(rctx *x) {
  int rc = adb_session_delete(x->db, x->param[0]);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "session_id", x->param[0], 1);
  adb__buf_puts(x->out, ",\"deleted\":true}");
  return 0;
}
