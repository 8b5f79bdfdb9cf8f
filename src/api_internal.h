/*
 * api_internal.h — what the route files of the API share: the request
 * context, the route table's shape, the request readers and answer writers
 * (api_json.c), errors (api.c) and the handlers, one file per resource:
 * api_agents.c (agents, actions, policies, agent metrics), api_decide.c
 * (decide, rewards), api_memory.c (episodes, users, patterns, vector
 * search), api_sessions.c, api_admin.c (agent list, delete and reset,
 * action list and delete, user inspection and erasure). The table that maps
 * paths to handlers is in api.c.
 *
 * Handlers and readers write their error answer themselves and return -1;
 * every allocation comes from the request's arena (freed after the answer).
 */
#ifndef ADB_API_INTERNAL_H
#define ADB_API_INTERNAL_H

#include <pthread.h>

#include "api.h"
#include "dash.h"
#include "json.h"
#include "util.h"

#define MAX_CONTEXT 64 /* context entries in a request */
#define MAX_BULK 10000 /* actions or episodes in one request */
#define MAX_PARAMS 3

typedef struct rctx rctx;
typedef int (*route_fn)(rctx *x);

enum { BLK_NEVER = 0, BLK_ALWAYS, BLK_SYNC };

typedef struct route {
  int method;
  const char *pattern;
  route_fn fn;
  int blocking; /* BLK_*: when the handler waits for a commit */
  int open;     /* no API key needed */
} route;

/* One API key's token bucket (api.c). */
typedef struct adb__api_bucket {
  pthread_mutex_t mu;
  double tokens;
  int64_t at_ns;
} adb__api_bucket;

#define ADB_API_MAX_BUCKETS 4096 /* keys beyond share the last bucket */

struct adb__api {
  adb__api_config cfg;
  adb__api_bucket *buckets; /* rate limits: one per key index, or NULL */
  adb__metrics *metrics;
  adb__dash *dash; /* per-agent series for the dashboard and /metrics */
  adb__http_server *srv;
  const adb__health *health;
  const char **names, **methods;
  struct adb__eval_jobs *evals; /* offline evaluations (api_evaluations.c) */
};

struct rctx {
  adb__api *api;
  adb *db;
  adb__http_req *req;
  adb__http_resp *resp;
  adb__buf *out;
  adb__arena *ar;
  const route *rt;
  char *param[MAX_PARAMS]; /* decoded path parameters, in order */
  json_t *doc;
  const adb__auth *auth; /* the keys in force when the request came */
  int key;               /* API key index in auth, -1 without auth */
  int headers_set;       /* request id and CORS headers already added */
  int later; /* the answer was handed on (adb__http_later): resp is not ours */
};

/* Open-addressing set of strings in the arena, for uniqueness checks. */
typedef struct adb__api_strset {
  const char **slot;
  size_t mask;
} adb__api_strset;

/* ------------------------------------------- errors and memory (api.c) */

void *adb__api_alloc(rctx *x, size_t n);
char *adb__api_strndup(rctx *x, const char *s, size_t n);
/* Writes an error answer {"error":{code, message, field}}; returns -1
 * (handlers return it). */
int adb__api_fail(rctx *x, int status, const char *code, const char *field,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The field an EINVAL message from the library is about, if it says. */
const char *adb__api_guess_field(const char *msg);
/* Answers a library failure through adb__api_status. */
int adb__api_fail_adb(rctx *x, int rc, const char *field);

/* ------------------------------ request readers, answer writers (api_json.c)
 */

const char *adb__api_fname(rctx *x, const char *prefix, const char *name);
const char *adb__api_fidx(rctx *x, const char *name, size_t i);
/* The body as a JSON object; an empty body is {} when allow_empty. */
json_t *adb__api_parse_body(rctx *x, int allow_empty);
/* Rejects members of o not in allowed (NULL-terminated). */
int adb__api_check_keys(rctx *x, json_t *o, const char *const *allowed,
                        const char *prefix);
/* o[k], treating null as absent. */
json_t *adb__api_member(json_t *o, const char *k);
int adb__api_get_id(rctx *x, json_t *o, const char *k, const char *prefix,
                    int required, const char **out);
int adb__api_get_num(rctx *x, json_t *o, const char *k, const char *prefix,
                     double lo, double hi, double *out, int *present);
int adb__api_get_int(rctx *x, json_t *o, const char *k, const char *prefix,
                     int64_t lo, int64_t hi, int64_t *out, int *present);
int adb__api_get_bool(rctx *x, json_t *o, const char *k, const char *prefix,
                      int *out);
/* Compact JSON text of v in the arena. */
char *adb__api_dump(rctx *x, const json_t *v);
/* An optional JSON object member as compact text (NULL when absent).
 */
int adb__api_get_object_text(rctx *x, json_t *o, const char *k,
                             const char *prefix, char **out);
/* "embedding" (array) or "embedding_b64" (base64 float32 LE). */
int adb__api_get_embedding(rctx *x, json_t *o, const char *prefix, int required,
                           float **emb, int *dim);
/* Personalizer-style features o[k] (a list of JSON objects, features.c)
 * hashed into a vector of ADB_FEAT_DIM values, when o[k] is present and
 * *emb is NULL (an embedding given as well is a 400). */
int adb__api_get_features(rctx *x, json_t *o, const char *k, const char *prefix,
                          float **emb, int *dim);
/* A context {key: string|number|boolean} as key/value pairs. */
int adb__api_get_context(rctx *x, json_t *o, const char *k, adb_kv **kv,
                         int *n);
void adb__api_put_key(adb__buf *b, const char *k, int first);
void adb__api_put_str(adb__buf *b, const char *k, const char *v, int first);
void adb__api_put_num(adb__buf *b, const char *k, double v);
void adb__api_put_int(adb__buf *b, const char *k, int64_t v);
void adb__api_put_floats(adb__buf *b, const char *k, const float *v, int n);
/* Raw JSON text from the store, or fallback when absent. */
void adb__api_put_raw(adb__buf *b, const char *k, const char *json,
                      const char *fallback);
const char *adb__api_algo_name(adb_algorithm a);
int adb__api_strset_init(rctx *x, adb__api_strset *s, size_t n);
/* Adds k; returns 0 if it was already there. */
int adb__api_strset_add(adb__api_strset *s, const char *k);
int adb__api_is_state_key(const char *s);
/* Percent-decodes s[0..n) into the arena; NULL when malformed or when it
 * decodes to a NUL byte. */
char *adb__api_pct_decode(rctx *x, const char *s, size_t n);
/* The decoded value of query parameter name, or NULL; *bad when the
 * query holds it but malformed. */
const char *adb__api_query_get(rctx *x, const char *name, int *bad);
int64_t adb__api_wall_ms(void);
int adb__api_time_param(rctx *x, const char *name, int64_t *ms);
int adb__api_session_delete(rctx *x);
/* An agent's config (and counters, when n is not NULL) as JSON. */
void adb__api_put_agent(adb__buf *b, const adb_agent_config *c,
                        const adb_agent_counters *n);

/* The body of a bulk route: {name: [1..MAX_BULK items]}. */
int adb__api_bulk(rctx *x, const char *name, json_t **arr, size_t *n);

/* ------------------------------------------------------------- handlers */

int adb__api_agent_put(rctx *x);
int adb__api_agent_get(rctx *x);
int adb__api_action_put(rctx *x);
int adb__api_actions_post(rctx *x);
int adb__api_policy(rctx *x);
int adb__api_agent_metrics(rctx *x);
int adb__api_decide(rctx *x);
int adb__api_reward(rctx *x);
int adb__api_episodes(rctx *x);
int adb__api_episodes_search(rctx *x);
int adb__api_users_search(rctx *x);
int adb__api_patterns_search(rctx *x);
int adb__api_user_put(rctx *x);
int adb__api_user_get(rctx *x);
int adb__api_pattern_put(rctx *x);
int adb__api_pattern_get(rctx *x);
int adb__api_session_put(rctx *x);
int adb__api_session_get(rctx *x);
int adb__api_dash_index(rctx *x);
int adb__api_dash_asset(rctx *x);
int adb__api_dash_overview(rctx *x);
int adb__api_dash_series(rctx *x);
int adb__api_dash_recent(rctx *x);
int adb__api_dash_inspect(rctx *x);
int adb__api_agents_list(rctx *x);
int adb__api_agent_delete(rctx *x);
int adb__api_agent_reset(rctx *x);
int adb__api_actions_list(rctx *x);
int adb__api_action_delete(rctx *x);
int adb__api_user_summary(rctx *x);
int adb__api_user_erase(rctx *x);
int adb__api_evaluation_start(rctx *x);
/* api_log.c: GET /v1/agents/{agent}/log, the decision log streamed. */
int adb__api_agent_log(rctx *x);
/* Adds the request id and CORS headers to the answer now (api.c), for an
 * answer streamed before its handler returns. */
void adb__api_answer_headers(rctx *x);
int adb__api_evaluations_list(rctx *x);
int adb__api_evaluation_get(rctx *x);
int adb__api_evaluation_cancel(rctx *x);

/* Azure Personalizer v1.0 (api_personalizer.c). */
int adb__api_pz_rank(rctx *x);
int adb__api_pz_reward(rctx *x);
int adb__api_pz_activate(rctx *x);
int adb__api_pz_service_get(rctx *x);
int adb__api_pz_service_put(rctx *x);
int adb__api_pz_policy_get(rctx *x);
int adb__api_pz_policy_put(rctx *x);
int adb__api_pz_policy_delete(rctx *x);
int adb__api_pz_model_get(rctx *x);
int adb__api_pz_model_properties(rctx *x);
int adb__api_pz_model_delete(rctx *x);
int adb__api_pz_logs_delete(rctx *x);
int adb__api_pz_logs_properties(rctx *x);
int adb__api_pz_evaluations(rctx *x);
int adb__api_pz_apprentice(rctx *x);

#endif /* ADB_API_INTERNAL_H */
