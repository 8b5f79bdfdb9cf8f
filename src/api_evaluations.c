/*
 * api_evaluations.c — offline evaluations over HTTP:
 *   POST   /v1/agents/{agent}/evaluations       starts one (202), 429 when
 *                                               max_evaluations run already
 *   GET    /v1/agents/{agent}/evaluations       the agent's, newest first
 *   GET    /v1/agents/{agent}/evaluations/{id}  status, progress, result
 *   DELETE /v1/agents/{agent}/evaluations/{id}  cancels and forgets it
 * The work runs in evaluate_job.c, on threads of the lowest priority.
 */
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "evaluate.h"

/* "from"/"to": integer milliseconds or an ISO-8601 string. */
static int body_time(rctx *x, json_t *doc, const char *k, int64_t *ms) {
  json_t *v = adb__api_member(doc, k);
  if (!v) return 0;
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *ms = json_integer_value(v);
    return 0;
  }
  if (json_is_string(v) && adb__api_parse_time(json_string_value(v), ms) == 0)
    return 0;
  return adb__api_fail(x, 400, "invalid_field", k,
                       "'%s' must be milliseconds since the epoch or an "
                       "ISO-8601 time",
                       k);
}

static int body_policies(rctx *x, json_t *doc, adb__eval_policy *pol, int *n) {
  json_t *a = adb__api_member(doc, "policies");
  if (!json_is_array(a) || json_array_size(a) < 1 ||
      json_array_size(a) > ADB_EVAL_MAX_POLICIES)
    return adb__api_fail(x, 400, "invalid_field", "policies",
                         "'policies' must be an array of 1..%d agent configs",
                         ADB_EVAL_MAX_POLICIES);
  for (size_t i = 0; i < json_array_size(a); i++) {
    char err[256], *txt = adb__api_dump(x, json_array_get(a, i));
    if (!txt || adb__eval_policy_parse(txt, &pol[i], err, sizeof err))
      return adb__api_fail(x, 400, "invalid_field",
                           adb__api_fidx(x, "policies", i), "%s",
                           txt ? err : "out of memory");
    if (!pol[i].name[0])
      snprintf(pol[i].name, sizeof pol[i].name, "policy-%zu", i + 1);
  }
  *n = (int)json_array_size(a);
  return 0;
}

static int answer(rctx *x, adb__sbuf *b) {
  if (b->oom || !b->p) {
    free(b->p);
    return adb__api_fail_adb(x, ADB_ENOMEM, NULL);
  }
  adb__buf_puts(x->out, b->p);
  free(b->p);
  return 0;
}

int adb__api_evaluation_start(rctx *x) {
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, x->param[0], &cfg);
  if (rc) return adb__api_fail_adb(x, rc, NULL);
  json_t *doc = adb__api_parse_body(x, 0);
  static const char *const keys[] = {"policies", "from", "to", NULL};
  adb__eval_policy pol[ADB_EVAL_MAX_POLICIES];
  int n = 0;
  int64_t from = 0, to = INT64_MAX;
  if (!doc || adb__api_check_keys(x, doc, keys, NULL) ||
      body_policies(x, doc, pol, &n) || body_time(x, doc, "from", &from) ||
      body_time(x, doc, "to", &to))
    return -1;
  if (to <= from)
    return adb__api_fail(x, 400, "invalid_field", "to",
                         "'to' must be after 'from'");
  char id[33];
  rc = adb__eval_job_start(x->api->evals, x->param[0], pol, n, from, to, id);
  if (rc == ADB_EFULL) {
    adb__http_resp_header(x->resp, "Retry-After", "10");
    return adb__api_fail(x, 429, "too_many_evaluations", NULL,
                         "%d evaluations are running already (the server's "
                         "--max-evaluations); retry when one has finished",
                         adb__eval_jobs_max(x->api->evals));
  }
  if (rc) return adb__api_fail_adb(x, rc, NULL);
  adb__sbuf b = {0};
  adb__eval_job_get(x->api->evals, x->param[0], id, &b);
  x->resp->status = 202;
  return answer(x, &b);
}

int adb__api_evaluations_list(rctx *x) {
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, x->param[0], &cfg);
  if (rc) return adb__api_fail_adb(x, rc, NULL);
  adb__sbuf b = {0};
  adb__eval_job_list(x->api->evals, x->param[0], &b);
  return answer(x, &b);
}

int adb__api_evaluation_get(rctx *x) {
  adb__sbuf b = {0};
  if (adb__eval_job_get(x->api->evals, x->param[0], x->param[1], &b))
    return adb__api_fail(x, 404, "not_found", NULL, "unknown evaluation '%s'",
                         x->param[1]);
  return answer(x, &b);
}

int adb__api_evaluation_cancel(rctx *x) {
  adb__sbuf b = {0};
  if (adb__eval_job_cancel(x->api->evals, x->param[0], x->param[1], &b))
    return adb__api_fail(x, 404, "not_found", NULL, "unknown evaluation '%s'",
                         x->param[1]);
  return answer(x, &b);
}
