/*
 * api_log.c — GET /v1/agents/{agent}/log: the decision log of [from, to)
 * in DSJSON, JSON lines or CSV (logfmt.h), the same bytes `agentdb export`
 * writes (cli/logio.c; docs/evaluation.md "Export").
 *
 * The route runs on a pool thread (BLK_ALWAYS) and streams: the store's
 * log_scan reads keyset pages and holds no connection while rows are
 * written; the writer hands about 64 KiB at a time to the HTTP stream,
 * which blocks while the socket is behind (http.h, adb__http_stream_*), so
 * memory stays bounded whatever the size of the log. Everything that can
 * be refused (format, from, to, an unknown agent) is checked before the
 * first byte and answered as a JSON error; the status line goes out with
 * the writer's first bytes, so that a store that fails at once is still a
 * JSON 503. A failure later ends the answer without its last chunk (the
 * client sees a truncated answer); a client that goes away stops the scan.
 */
#include "api_internal.h"
#include "evaluate.h"
#include "logfmt.h"

#include <stdint.h>

enum { CLIENT_GONE = 1 }; /* a sink's stop value; not an ADB_E* code */

typedef struct log_out {
  rctx *x;
  int fmt, begun;
} log_out;

static int stream_sink(void *ctx, const char *p, size_t n) {
  log_out *o = ctx;
  adb__http_stream *st = o->x->req->stream;
  if (!st) { /* no pool thread: the answer is built whole */
    adb__buf_append(o->x->out, p, n);
    return o->x->out->oom ? ADB_ENOMEM : 0;
  }
  if (!o->begun) {
    o->begun = 1;
    adb__api_answer_headers(o->x);
    if (adb__http_stream_begin(st, o->x->resp)) return CLIENT_GONE;
  }
  return adb__http_stream_write(st, p, n) ? CLIENT_GONE : 0;
}

int adb__api_agent_log(rctx *x) {
  int bad = 0;
  const char *f = adb__api_query_get(x, "format", &bad);
  int fmt = f ? adb__logfmt_parse(f) : ADB__LOGFMT_DSJSON;
  if (bad || fmt < 0)
    return adb__api_fail(x, 400, "invalid_field", "format",
                         "'format' must be dsjson, jsonl or csv");
  int64_t from = INT64_MIN, to = INT64_MAX;
  if (adb__api_time_param(x, "from", &from) ||
      adb__api_time_param(x, "to", &to))
    return -1;
  if (from > to)
    return adb__api_fail(x, 400, "invalid_field", "from",
                         "'from' is after 'to'");
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, x->param[0], &cfg);
  if (rc) return adb__api_fail_adb(x, rc, NULL);
  log_out o = {.x = x, .fmt = fmt};
  adb__logw *w = adb__logw_new(fmt, stream_sink, &o);
  if (!w) return adb__api_fail_adb(x, ADB_ENOMEM, NULL);
  x->resp->content_type = adb__logfmt_mime(fmt);
  adb__eval_scan_fn scan =
      x->api->cfg.eval_scan ? x->api->cfg.eval_scan : adb__eval_scan_store;
  void *arg = x->api->cfg.eval_scan ? x->api->cfg.eval_scan_arg : x->db;
  rc = scan(arg, x->param[0], from, to, adb__logw_row, w);
  if (!rc) rc = adb__logw_finish(w);
  adb__logw_free(w);
  if (rc == CLIENT_GONE) return 0;
  if (rc && o.begun) {
    adb__http_stream_fail(x->req->stream);
    x->resp->status = 500; /* for the logs; the client sees a truncation */
    return -1;
  }
  if (rc) {
    x->out->len = 0;
    x->resp->content_type = NULL;
    return adb__api_fail_adb(x, rc, NULL);
  }
  return 0;
}
