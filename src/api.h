/*
 * api.h — the HTTP/JSON API of `agentdb serve` (the contract in
 * docs/openapi.yaml): routes to adb_* calls, request validation, JSON
 * answers and errors, auth, metrics and logs. It plugs into http.h as the
 * handler and done hook.
 */
#ifndef ADB_API_H
#define ADB_API_H

#include <stdio.h>

#include "agentdb.h"
#include "auth.h"
#include "evaluate.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

typedef struct adb__api adb__api;

typedef struct adb__api_config {
  adb *db;                   /* borrowed; outlives the api */
  adb_durability durability; /* as the handle was opened */
  const adb__auth *auth;     /* NULL: no API keys required */
  int threads;               /* worker threads (metrics shards) */
  FILE *access_log;          /* NULL: none */
  int dash_max_agents;       /* agents with per-agent series; 0: 100 */
  const adb__log *log;       /* structured events (slow requests); or NULL */
  int64_t slow_ms;           /* a request slower than this is an event; 0:
                                none */
  /* CORS: origins allowed to call from a browser, comma-separated
   * ("https://a.example,https://b.example"; "*" = any); NULL or "" = CORS
   * off (no Access-Control-* header, OPTIONS is 405). */
  const char *cors_origins;
  /* Per API key token bucket: rate_per_s requests a second on average,
   * bursts of rate_burst; 0 = no limit. Only with API keys. */
  double rate_per_s, rate_burst;
  /* The agent of the /personalizer routes for a key not scoped to one
   * agent (or without keys); NULL or "" = "personalizer". */
  const char *personalizer_agent;
  /* Offline evaluations (POST /v1/agents/{agent}/evaluations): at most
   * max_evaluations at once (0: 2), reading the log through eval_scan
   * (NULL: the store's log_scan on db; evaluate.h). */
  int max_evaluations;
  adb__eval_scan_fn eval_scan;
  void *eval_scan_arg;
} adb__api_config;

int adb__api_new(const adb__api_config *cfg, adb__api **out);
void adb__api_free(adb__api *api);
/* Replaces the API keys (SIGHUP): requests that started keep the keys
 * they started with, so the caller frees the old table only once no
 * request can hold it (agentdb serve keeps it until exit). */
void adb__api_set_auth(adb__api *api, const adb__auth *auth);
/* Lets /readyz and /metrics see a shutdown starting. */
void adb__api_set_server(adb__api *api, adb__http_server *srv);

/* The adb__http_handler and adb__http_done of the API (ud is the api). */
int adb__api_handle(void *ud, adb__http_req *req, adb__http_resp *resp);
void adb__api_done(void *ud, const adb__http_req *req,
                   const adb__http_resp *resp, int64_t latency_ns);

/* The adb__http_admit of the API: refuses a large body without a valid
 * key (when keys are required) before it is read. */
int adb__api_admit(void *ud, const adb__http_req *req, adb__http_resp *resp);

/* The one mapping of library error codes to HTTP: returns the status and
 * sets *code to the stable error code and *retry_after_s to the
 * Retry-After seconds (0 = none). */
int adb__api_status(int adb_err, const char **code, int *retry_after_s);

/* Cancels and joins the running evaluations: before the handle closes. */
void adb__api_stop_evaluations(adb__api *api);

/* Lets /metrics show agentdb_store_up and agentdb_cache_up. */
void adb__api_set_health(adb__api *api, const adb__health *h);

/* Metrics of the api, for tests. */
adb__metrics *adb__api_metrics(adb__api *api);

/* Parses a time: integer milliseconds since the epoch, or ISO-8601
 * ("2024-05-01", "2024-05-01T12:00:00Z", "...T12:00:00.250+02:00"; no zone
 * means UTC). ADB_OK or ADB_EINVAL. */
int adb__api_parse_time(const char *s, int64_t *ms);

#endif /* ADB_API_H */
