/*
 * fuzz_api.c — libFuzzer target: every route that takes a body, through
 * the real handler (adb__api_handle: routing, auth off, the body decoders
 * including the decide fast path, validation and the library call) on a
 * real library handle over a private SQLite :memory: store, async
 * durability so that writes do not wait for commits.
 *
 * Input: byte 0 picks the route, byte 1 a query string variant; the rest
 * is the body. Checks, beyond the sanitizers: every answer is a status of
 * the contract with a JSON body (an error object for >= 400), never a
 * 500.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agentdb.h"
#include "api.h"
#include "http.h"

static adb *db;
static adb__api *api;

static const struct {
  int method;
  const char *path;
} routes[] = {
    {ADB__HTTP_POST, "/v1/agents/f/decide"},
    {ADB__HTTP_POST, "/v1/agents/f/rewards"},
    {ADB__HTTP_POST, "/v1/agents/f/episodes"},
    {ADB__HTTP_POST, "/v1/agents/f/episodes/search"},
    {ADB__HTTP_POST, "/v1/agents/f/patterns/search"},
    {ADB__HTTP_PUT, "/v1/agents/f/patterns/p1"},
    {ADB__HTTP_POST, "/v1/agents/f/actions"},
    {ADB__HTTP_PUT, "/v1/agents/f/actions/a1"},
    {ADB__HTTP_PUT, "/v1/agents/g"},
    {ADB__HTTP_POST, "/v1/users/search"},
    {ADB__HTTP_PUT, "/v1/users/u1/state"},
    {ADB__HTTP_PUT, "/v1/sessions/s1"},
    {ADB__HTTP_POST, "/v1/agents/f/decide"}, /* weighted: the hot path */
};
#define N_ROUTES (int)(sizeof routes / sizeof routes[0])

static const char *queries[] = {
    NULL, "ttl_s=5", "ttl_s=%zz", "x=1", "agent=f", "ttl_s=5&ttl_s=6", ""};
#define N_QUERIES (int)(sizeof queries / sizeof queries[0])

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  adb_config cfg = {.store_url = "sqlite://:memory:",
                    .durability = ADB_DURABILITY_ASYNC,
                    .queue_capacity = 100000,
                    .seed = 1};
  char err[256];
  if (adb_open(&cfg, &db, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "fuzz_api: %s\n", err);
    exit(1);
  }
  adb_agent_config a;
  adb_agent_config_init(&a);
  snprintf(a.id, sizeof a.id, "f");
  a.n_context_keys = 1;
  snprintf(a.context_keys[0], sizeof a.context_keys[0], "device");
  if (adb_agent_put(db, &a) != ADB_OK) exit(1);
  float e[4] = {1, 0, 0, 0};
  adb_action acts[3] = {{.id = "a1", .embedding = e, .embedding_dim = 4},
                        {.id = "a2"},
                        {.id = "a3"}};
  if (adb_actions_put(db, "f", acts, 3) != ADB_OK) exit(1);
  adb__api_config ac = {
      .db = db, .durability = ADB_DURABILITY_ASYNC, .threads = 1};
  if (adb__api_new(&ac, &api) != ADB_OK) exit(1);
  return 0;
}

static int documented(int status) {
  static const int ok[] = {200, 201, 202, 400, 404, 405, 409, 413, 503};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    if (ok[i] == status) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
  if (len < 2) return 0;
  int r = data[0] % N_ROUTES;
  const char *q = queries[data[1] % N_QUERIES];
  data += 2, len -= 2;
  char *body = malloc(len + 1); /* handlers may write into the body */
  memcpy(body, data, len);
  body[len] = 0;
  adb__http_req req;
  memset(&req, 0, sizeof req);
  req.method = routes[r].method;
  req.method_str = req.method == ADB__HTTP_PUT ? "PUT" : "POST";
  req.method_len = strlen(req.method_str);
  req.path = routes[r].path;
  req.path_len = strlen(req.path);
  req.query = q;
  req.query_len = q ? strlen(q) : 0;
  req.minor = 1;
  req.content_length = (int64_t)len;
  req.keep_alive = 1;
  req.body = body;
  req.body_len = len;
  req.in_pool = 1; /* blocking handlers run here */
  adb__buf out = {0};
  adb__http_resp resp = {.status = 200, .body = &out};
  adb__api_handle(api, &req, &resp);
  if (!documented(resp.status)) {
    fprintf(stderr, "status %d: %.*s\n", resp.status, (int)out.len, out.p);
    abort();
  }
  json_error_t je;
  json_t *v = json_loadb(out.p ? out.p : "", out.len, 0, &je);
  if (!v || (resp.status >= 400 && !json_object_get(v, "error"))) {
    fprintf(stderr, "not JSON: %.*s\n", (int)out.len, out.p);
    abort();
  }
  json_decref(v);
  adb__buf_free(&out);
  free(body);
  return 0;
}
