/*
 * test_server.c — `agentdb serve` end to end: starts the real binary
 * ($ADB_BIN) on a free port with a temporary SQLite store and drives it
 * over real sockets: the decide -> reward -> policy loop, every route of
 * docs/openapi.yaml, every bad input of TESTING.md, auth and agent scopes,
 * pipelining and keep-alive, async durability, and a SIGTERM during writes
 * that must lose no acknowledged reward.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "util_http.h"
#include "util_server.h"

/* ------------------------------------------------------------ servers */

typedef tsrv server; /* util_server.h */

static server S; /* shared by most tests */

static int quick(void) {
  return getenv("ADB_TEST_QUICK") != NULL;
}

/* Starts agentdb serve on s->dir (made if empty) with extra args, and 16
 * write threads as this suite has always run it. */
static void start_server(server *s, const char *const *extra) {
  const char *argv[40] = {"--write-threads", "16"};
  int n = 2;
  for (int i = 0; extra && extra[i] && n < 38; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  assert_int_equal(tsrv_start(s, argv), 0);
}

/* Sends sig and waits; returns the exit status (-1: killed by a signal or
 * did not stop within 60 s). */
static int stop_server(server *s, int sig) {
  return tsrv_stop(s, sig);
}

/* ------------------------------------------------------------- client */

/* The client is util_http.h's; these keep the calls short. */
typedef util_http_resp resp;

#define CALL_MS 20000

/* One request on a fresh connection. hdrs: extra "K: v\r\n" lines;
 * status -1 when no answer came. */
static resp call_h(const server *s, const char *method, const char *path,
                   const char *body, const char *hdrs) {
  resp r;
  int rc = util_http_once(s->port, method, path, body, hdrs, CALL_MS, &r);
  assert_int_not_equal(rc, UTIL_HTTP_REFUSED);
  return r;
}

static resp call(const server *s, const char *method, const char *path,
                 const char *body) {
  return call_h(s, method, path, body, NULL);
}

static size_t build(char *out, size_t cap, const char *method, const char *path,
                    const char *body, const char *hdrs) {
  size_t n = util_http_format(out, cap, method, path, body, hdrs);
  assert_true(n > 0);
  return n;
}

/* Asserts an error answer: status, JSON code and (if given) field. */
static void expect_error(const server *s, const char *method, const char *path,
                         const char *body, int status, const char *code,
                         const char *field) {
  resp r = call(s, method, path, body);
  if (r.status != status || !util_http_err_code(&r) ||
      strcmp(util_http_err_code(&r), code) ||
      (field &&
       (!util_http_err_field(&r) || strcmp(util_http_err_field(&r), field))))
    fprintf(stderr, "%s %s %.200s\n  -> %d %.300s\n  wanted %d %s %s\n", method,
            path, body ? body : "", r.status, r.body ? r.body : "", status,
            code, field ? field : "");
  assert_int_equal(r.status, status);
  assert_non_null(util_http_err_code(&r));
  assert_string_equal(util_http_err_code(&r), code);
  if (field) {
    assert_non_null(util_http_err_field(&r));
    assert_string_equal(util_http_err_field(&r), field);
  }
  util_http_resp_free(&r);
}

static void expect_status(const server *s, const char *method, const char *path,
                          const char *body, int status) {
  resp r = call(s, method, path, body);
  if (r.status != status)
    fprintf(stderr, "%s %s %.200s\n  -> %d %.300s (wanted %d)\n", method, path,
            body ? body : "", r.status, r.body ? r.body : "", status);
  assert_int_equal(r.status, status);
  util_http_resp_free(&r);
}

static void healthy(const server *s) {
  resp r = call(s, "GET", "/healthz", NULL);
  assert_int_equal(r.status, 200);
  assert_string_equal(json_string_value(json_object_get(r.json, "status")),
                      "ok");
  util_http_resp_free(&r);
}

/* -------------------------------------------------------------- setup */

static int group_setup(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_IGN);
  const char *extra[] = {"--request-timeout-ms", "1500", NULL};
  start_server(&S, extra);
  expect_status(&S, "PUT", "/v1/agents/shop", "{\"context_keys\":[\"device\"]}",
                200);
  expect_status(&S, "POST", "/v1/agents/shop/actions",
                "{\"actions\":[{\"id\":\"item-1\"},{\"id\":\"item-2\"},"
                "{\"id\":\"item-3\"},{\"id\":\"item-4\"},{\"id\":\"item-5\"}]}",
                200);
  expect_status(&S, "PUT", "/v1/agents/dims", "{\"embedding_dim\":4}", 200);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  int st = stop_server(&S, SIGTERM);
  if (st != 0) fprintf(stderr, "shared server exited with %d\n", st);
  tsrv_cleanup(&S);
  return st == 0 ? 0 : -1;
}

/* -------------------------------------------------------------- tests */

static int is_hex64(const char *s) {
  if (!s || strlen(s) != 64) return 0;
  for (; *s; s++)
    if (!strchr("0123456789abcdef", *s)) return 0;
  return 1;
}

static json_t *find_arm(json_t *policy, const char *action) {
  json_t *arms = json_object_get(policy, "arms"), *a;
  size_t i;
  json_array_foreach(arms, i, a) {
    if (strcmp(json_string_value(json_object_get(a, "action")), action) == 0)
      return a;
  }
  return NULL;
}

static void test_decide_reward_policy_loop(void **state) {
  (void)state;
  expect_status(&S, "PUT", "/v1/agents/loop", "{\"context_keys\":[\"device\"]}",
                200);
  expect_status(&S, "POST", "/v1/agents/loop/actions",
                "{\"actions\":[{\"id\":\"a1\"},{\"id\":\"a2\"},{\"id\":\"a3\"},"
                "{\"id\":\"a4\"},{\"id\":\"a5\"}]}",
                200);
  resp d = call(&S, "POST", "/v1/agents/loop/decide",
                "{\"user_id\":\"alice\",\"candidates\":[\"a1\",\"a2\",\"a3\","
                "\"a4\",\"a5\"],\"context\":{\"device\":\"tv\"},\"k\":3}");
  assert_int_equal(d.status, 200);
  const char *ev = json_string_value(json_object_get(d.json, "event_id"));
  const char *act = json_string_value(json_object_get(d.json, "action"));
  const char *sk = json_string_value(json_object_get(d.json, "state_key"));
  double prop = json_number_value(json_object_get(d.json, "propensity"));
  json_t *rank = json_object_get(d.json, "ranking");
  assert_non_null(ev);
  assert_true(strlen(ev) >= 1);
  assert_non_null(act);
  assert_true(act[0] == 'a' && act[1] >= '1' && act[1] <= '5' && !act[2]);
  assert_true(prop > 0 && prop <= 1);
  assert_true(is_hex64(sk));
  assert_int_equal(json_array_size(rank), 3);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(rank, 0), "action")),
      act);
  char body[512], path[256];
  snprintf(body, sizeof body,
           "{\"reward_id\":\"loop-r1\",\"event_id\":\"%s\",\"reward\":1}", ev);
  resp r = call(&S, "POST", "/v1/agents/loop/rewards", body);
  assert_int_equal(r.status, 200);
  assert_true(json_is_true(json_object_get(r.json, "applied")));
  assert_true(json_number_value(json_object_get(r.json, "reward")) == 1);
  util_http_resp_free(&r);
  r = call(&S, "POST", "/v1/agents/loop/rewards", body); /* a retry */
  assert_int_equal(r.status, 200);
  assert_true(json_is_false(json_object_get(r.json, "applied")));
  util_http_resp_free(&r);
  snprintf(body, sizeof body,
           "{\"reward_id\":\"loop-r1\",\"event_id\":\"%s\",\"reward\":0}", ev);
  expect_error(&S, "POST", "/v1/agents/loop/rewards", body, 409, "conflict",
               NULL);
  snprintf(path, sizeof path, "/v1/agents/loop/policies/alice?state_key=%s",
           sk);
  resp p = call(&S, "GET", path, NULL);
  assert_int_equal(p.status, 200);
  json_t *arm = find_arm(p.json, act);
  assert_non_null(arm);
  assert_int_equal(json_integer_value(json_object_get(arm, "n")), 1);
  /* Beta(1,1) plus one reward of 1: Beta(2,1), mean 2/3. */
  assert_true(json_number_value(json_object_get(arm, "alpha")) == 2);
  assert_true(json_number_value(json_object_get(arm, "beta")) == 1);
  util_http_resp_free(&p);
  /* Counters come from rollups the library writes about once a second. */
  int64_t decisions = 0, rewards = 0, deadline = util_now_ms() + 10000;
  while ((decisions < 1 || rewards < 1) && util_now_ms() < deadline) {
    resp a = call(&S, "GET", "/v1/agents/loop", NULL);
    assert_int_equal(a.status, 200);
    json_t *c = json_object_get(a.json, "counters");
    decisions = json_integer_value(json_object_get(c, "decisions"));
    rewards = json_integer_value(json_object_get(c, "rewards"));
    util_http_resp_free(&a);
    usleep(100000);
  }
  assert_true(decisions >= 1);
  assert_true(rewards >= 1);
  util_http_resp_free(&d);
}

/* ------------------------------------------------------- linear agents */

/* An agent {"algorithm":"linear"} learns through the same routes: item
 * embeddings through the catalogue, user embeddings through the user
 * state (the decide requests carry none), rewards by event id. User k
 * likes item k (their embeddings point the same way). */
static void test_linear_agent_learns_over_http(void **state) {
  (void)state;
  resp a = call(&S, "PUT", "/v1/agents/hlin",
                "{\"algorithm\":\"linear\",\"context_keys\":[\"daypart\"],"
                "\"lambda\":2,\"crosses\":[\"user_action\",\"bias\"]}");
  assert_int_equal(a.status, 200);
  assert_string_equal(json_string_value(json_object_get(a.json, "algorithm")),
                      "linear");
  assert_true(json_number_value(json_object_get(a.json, "lambda")) == 2);
  assert_true(json_number_value(json_object_get(a.json, "v")) > 0);
  assert_int_equal(json_array_size(json_object_get(a.json, "crosses")), 2);
  util_http_resp_free(&a);
  expect_error(&S, "PUT", "/v1/agents/hlin2",
               "{\"algorithm\":\"linear\",\"crosses\":[\"nope\"]}", 400,
               "invalid_field", "crosses[0]");
  expect_error(&S, "PUT", "/v1/agents/hlin2",
               "{\"algorithm\":\"linear\",\"lambda\":0}", 400, "invalid_field",
               "lambda");
  a = call(&S, "PUT", "/v1/agents/hlin",
           "{\"algorithm\":\"linear\",\"context_keys\":[\"daypart\"]}");
  assert_int_equal(json_array_size(json_object_get(a.json, "crosses")), 4);
  util_http_resp_free(&a);
  char body[1024];
  enum { K = 4 }; /* 4-d: the dimension the other tests' users have */
  size_t n = (size_t)snprintf(body, sizeof body, "{\"actions\":[");
  for (int i = 0; i < K; i++)
    n += (size_t)snprintf(body + n, sizeof body - n,
                          "%s{\"id\":\"h%d\",\"embedding\":[%d,%d,%d,%d]}",
                          i ? "," : "", i, i == 0, i == 1, i == 2, i == 3);
  snprintf(body + n, sizeof body - n, "]}");
  expect_status(&S, "POST", "/v1/agents/hlin/actions", body, 200);
  for (int u = 0; u < K; u++) {
    char path[64];
    snprintf(path, sizeof path, "/v1/users/hu%d/state", u);
    snprintf(body, sizeof body, "{\"embedding\":[%d,%d,%d,%d]}", u == 0, u == 1,
             u == 2, u == 3);
    expect_status(&S, "PUT", path, body, 200);
  }
  enum { ROUNDS = 360, WIN = 60 };
  int hits_first = 0, hits_last = 0;
  for (int t = 0; t < ROUNDS; t++) {
    int u = t % K;
    snprintf(body, sizeof body,
             "{\"user_id\":\"hu%d\",\"candidates\":[\"h0\",\"h1\",\"h2\","
             "\"h3\"],\"context\":{\"daypart\":\"%s\"}}",
             u, t % 2 ? "night" : "day");
    resp d = call(&S, "POST", "/v1/agents/hlin/decide", body);
    assert_int_equal(d.status, 200);
    const char *act = json_string_value(json_object_get(d.json, "action"));
    double prop = json_number_value(json_object_get(d.json, "propensity"));
    assert_true(prop > 0 && prop <= 1);
    int good = act && atoi(act + 1) == u;
    hits_first += t < WIN && good;
    hits_last += t >= ROUNDS - WIN && good;
    snprintf(body, sizeof body,
             "{\"reward_id\":\"hr%d\",\"event_id\":\"%s\",\"reward\":%d}", t,
             json_string_value(json_object_get(d.json, "event_id")), good);
    resp r = call(&S, "POST", "/v1/agents/hlin/rewards", body);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "applied")));
    util_http_resp_free(&r);
    util_http_resp_free(&d);
    if (t % 30 == 29) usleep(150000); /* the model draws a new pool */
  }
  printf("    linear over HTTP: liked item chosen %d/%d at first, %d/%d at "
         "the end\n",
         hits_first, WIN, hits_last, WIN);
  assert_true(hits_last >= WIN / 2);
  assert_true(hits_last > hits_first);
  /* The policy route shows the linear model: its rewards, and per action
   * the score's mean and sd over the draws for the user's stored
   * embedding; user 2 likes h2. (Polled: the model folds rewards in
   * within a tick.) */
  resp p = {0};
  for (int i = 0; i < 100; i++) {
    util_http_resp_free(&p);
    p = call(&S, "GET", "/v1/agents/hlin/policies/hu2", NULL);
    assert_int_equal(p.status, 200);
    json_t *m = json_object_get(p.json, "model");
    if (json_integer_value(json_object_get(m, "n")) == ROUNDS) break;
    usleep(100000);
  }
  assert_string_equal(json_string_value(json_object_get(p.json, "algorithm")),
                      "linear");
  json_t *m = json_object_get(p.json, "model"),
         *arms = json_object_get(p.json, "arms");
  assert_int_equal(json_integer_value(json_object_get(m, "n")), ROUNDS);
  assert_int_equal(json_array_size(arms), K);
  double share = 0, n_sum = 0, top = -1e9;
  const char *best = "";
  for (size_t i = 0; i < json_array_size(arms); i++) {
    json_t *a = json_array_get(arms, i);
    double mean = json_number_value(json_object_get(a, "mean"));
    share += json_number_value(json_object_get(a, "share"));
    n_sum += json_number_value(json_object_get(a, "n"));
    assert_true(json_number_value(json_object_get(a, "sd")) >= 0);
    if (mean > top)
      top = mean, best = json_string_value(json_object_get(a, "action"));
  }
  assert_string_equal(best, "h2");
  assert_true(fabs(share - 1) < 1e-9);
  assert_true(fabs(n_sum - ROUNDS) < 1e-6); /* one per reward: no decay */
  util_http_resp_free(&p);
  /* The request's embedding overrides the stored one. */
  resp d = call(&S, "POST", "/v1/agents/hlin/decide",
                "{\"user_id\":\"hu0\",\"candidates\":[\"h0\",\"h3\"],"
                "\"embedding\":[0,0,0,1]}");
  if (d.status != 200) fprintf(stderr, "%s\n", d.body ? d.body : "");
  assert_int_equal(d.status, 200);
  util_http_resp_free(&d);
}

/* ------------------------------------------------- documented routes */

typedef struct op {
  char method[8], path[128], example[2048];
  int first_status;
} op;

static int read_ops(op *ops, int cap) {
  const char *src = getenv("ADB_SOURCE_DIR");
  char fn[512];
  snprintf(fn, sizeof fn, "%s/docs/openapi.yaml", src ? src : ".");
  FILE *f = fopen(fn, "r");
  assert_non_null(f);
  char line[2048], path[128] = "";
  int n = 0, in_paths = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (strcmp(line, "paths:") == 0)
      in_paths = 1;
    else if (line[0] != ' ' && line[0])
      in_paths = 0;
    if (!in_paths) continue;
    char m[16], code[8];
    if (strncmp(line, "  /", 3) == 0 && sscanf(line, "  %127[^: ]:", path) == 1)
      continue;
    if (strncmp(line, "    ", 4) == 0 && line[4] != ' ' &&
        sscanf(line + 4, "%15[a-z]:", m) == 1 &&
        (!strcmp(m, "get") || !strcmp(m, "put") || !strcmp(m, "post") ||
         !strcmp(m, "delete"))) {
      assert_true(n < cap);
      memset(&ops[n], 0, sizeof ops[n]);
      for (int i = 0; m[i]; i++)
        ops[n].method[i] = (char)(m[i] - 32);
      snprintf(ops[n].path, sizeof ops[n].path, "%s", path);
      n++;
      continue;
    }
    const char *ex = strstr(line, "            example: ");
    if (n && ex == line) {
      snprintf(ops[n - 1].example, sizeof ops[n - 1].example, "%s", line + 21);
      continue;
    }
    if (n && !ops[n - 1].first_status &&
        sscanf(line, "        '%7[0-9]':", code) == 1 && line[8] == '\'')
      ops[n - 1].first_status = atoi(code);
  }
  fclose(f);
  return n;
}

/* The id of the evaluation the documented POST started. */
static char eval_id[64] = "none";

/* {agent} -> shop etc. */
static void fill_path(const char *tmpl, char *out, size_t cap) {
  static const char *const sub[][2] = {
      {"{agent}", "shop"},      {"{action}", "item-1"}, {"{user}", "u1"},
      {"{pattern}", "p1"},      {"{session}", "s1"},    {"{asset}", "app.js"},
      {"{evaluation}", eval_id}};
  size_t o = 0;
  for (const char *p = tmpl; *p && o + 1 < cap;) {
    int done = 0;
    for (size_t i = 0; i < sizeof sub / sizeof sub[0] && !done; i++) {
      size_t l = strlen(sub[i][0]);
      if (strncmp(p, sub[i][0], l) == 0) {
        o += (size_t)snprintf(out + o, cap - o, "%s", sub[i][1]);
        p += l;
        done = 1;
      }
    }
    if (!done) out[o++] = *p++;
  }
  out[o] = '\0';
}

static void test_every_documented_route_answers_as_documented(void **state) {
  (void)state;
  op ops[64];
  int n = read_ops(ops, 64);
  assert_int_equal(n, 41); /* every operation the server routes */
  /* Deletes last, in reverse order of the spec (an action before its
   * agent), so that every other operation finds its data. */
  int order[64], k = 0;
  for (int i = 0; i < n; i++)
    if (strcmp(ops[i].method, "DELETE")) order[k++] = i;
  for (int i = n - 1; i >= 0; i--)
    if (!strcmp(ops[i].method, "DELETE")) order[k++] = i;
  for (int j = 0; j < n; j++) {
    int i = order[j];
    char path[256];
    fill_path(ops[i].path, path, sizeof path);
    /* The log of a range without decisions: an empty answer with a
     * Content-Length (a streamed one is test_export's). */
    int is_log = strstr(ops[i].path, "}/log") != NULL;
    if (is_log) strcat(path, "?to=1");
    assert_true(ops[i].first_status >= 200);
    resp r = call(&S, ops[i].method, path,
                  ops[i].example[0] ? ops[i].example : NULL);
    if (r.status != ops[i].first_status)
      fprintf(stderr, "%s %s -> %d %s (documented first: %d)\n", ops[i].method,
              path, r.status, r.body ? r.body : "", ops[i].first_status);
    assert_int_equal(r.status, ops[i].first_status);
    json_t *eid = r.status == 202 && strstr(path, "/evaluations")
                      ? json_object_get(r.json, "id")
                      : NULL;
    if (json_is_string(eid))
      snprintf(eval_id, sizeof eval_id, "%s", json_string_value(eid));
    /* Every answer but /metrics, the log and the dashboard page's files
     * is JSON. */
    if (is_log) {
      assert_int_equal(r.body_len, 0);
      assert_true(strcasestr(r.head, "content-type: application/x-ndjson"));
    } else if (strcmp(ops[i].path, "/metrics") != 0 &&
               strcmp(ops[i].path, "/") != 0 &&
               strncmp(ops[i].path, "/dashboard/", 11) != 0) {
      assert_non_null(r.json);
      assert_true(strcasestr(r.head, "content-type: application/json") != NULL);
    }
    util_http_resp_free(&r);
  }
  /* The deletes took the agent "shop" that later tests use: the other
   * writes again put back what they made (the reset aside). */
  for (int i = 0; i < n; i++) {
    if (!strcmp(ops[i].method, "DELETE") || !strcmp(ops[i].method, "GET") ||
        strstr(ops[i].path, "/reset"))
      continue;
    char path[256];
    fill_path(ops[i].path, path, sizeof path);
    resp r = call(&S, ops[i].method, path,
                  ops[i].example[0] ? ops[i].example : NULL);
    assert_int_equal(r.status, ops[i].first_status);
    util_http_resp_free(&r);
  }
  /* And what is not documented is not served. */
  expect_error(&S, "GET", "/v1/agent", NULL, 404, "not_found", NULL);
  expect_error(&S, "GET", "/v1/agents/shop/", NULL, 404, "not_found", NULL);
  expect_error(&S, "POST", "/v1/agents", NULL, 405, "method_not_allowed", NULL);
}

/* ---------------------------------------------------------- bad input */

#define P_DECIDE "/v1/agents/shop/decide"
#define P_REWARD "/v1/agents/shop/rewards"

typedef struct bad {
  const char *method, *path, *body;
  int status;
  const char *code, *field;
} bad;

static const bad bad_inputs[] = {
    {"POST", P_DECIDE, "{\"user_id\":\"u1\",", 400, "invalid_json", NULL},
    {"POST", P_DECIDE, "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"", 400,
     "invalid_json", NULL},
    {"POST", P_DECIDE, "", 400, "invalid_json", NULL},
    {"POST", P_DECIDE, "[1,2]", 400, "invalid_json", NULL},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"user_id\":\"u2\",\"candidates\":[\"item-1\"]}", 400,
     "invalid_json", NULL},
    {"POST", P_DECIDE, "{\"user_id\":\"u1\",\"candidates\":\"item-1\"}", 400,
     "invalid_field", "candidates"},
    {"POST", P_DECIDE, "{\"user_id\":5,\"candidates\":[\"item-1\"]}", 400,
     "invalid_field", "user_id"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"k\":\"1\"}",
     400, "invalid_field", "k"},
    {"POST", P_DECIDE, "{\"user_id\":\"u1\",\"candidates\":[1]}", 400,
     "invalid_field", "candidates[0]"},
    {"POST", P_DECIDE, "{\"candidates\":[\"item-1\"]}", 400, "missing_field",
     "user_id"},
    {"POST", P_DECIDE, "{\"user_id\":\"u1\"}", 400, "missing_field",
     "candidates"},
    {"POST", P_DECIDE, "{\"user_id\":\"u1\",\"candidates\":[]}", 400,
     "invalid_field", "candidates"},
    {"POST", P_DECIDE, "{\"user_id\":\"\",\"candidates\":[\"item-1\"]}", 400,
     "invalid_field", "user_id"},
    {"POST", P_DECIDE, "{\"user_id\":\"a/b\",\"candidates\":[\"item-1\"]}", 400,
     "invalid_field", "user_id"},
    {"POST", P_DECIDE, "{\"user_id\":\"*\",\"candidates\":[\"item-1\"]}", 400,
     "invalid_field", "user_id"},
    {"POST", P_DECIDE, "{\"user_id\":\"a{b\",\"candidates\":[\"item-1\"]}", 400,
     "invalid_field", "user_id"},
    {"POST", P_DECIDE, "{\"user_id\":\"u\\u0000\",\"candidates\":[\"i\"]}", 400,
     "invalid_json", NULL},
    {"POST", P_DECIDE, "{\"user_id\":\"u\\\"1\",\"candidates\":[\"item-1\"]}",
     400, "invalid_field", "user_id"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"'; DROP TABLE x; --\","
     "\"candidates\":[\"item-1\"]}",
     400, "invalid_field", "user_id"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\","
     "\"'; DROP TABLE x; --\"]}",
     400, "invalid_field", "candidates[1]"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\","
     "\"item-1\"]}",
     400, "invalid_field", "candidates[1]"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"event_id\":\"e/1\"}",
     400, "invalid_field", "event_id"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"embedding\":[1,NaN]}",
     400, "invalid_json", NULL},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"embedding\":[1,Infinity]}",
     400, "invalid_json", NULL},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"embedding\":[1,1e309]}",
     400, "invalid_json", NULL},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"embedding\":[1,1e39]}",
     400, "invalid_field", "embedding"},
    {"POST", "/v1/agents/dims/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"x\"],\"embedding\":[1,2,3]}", 400,
     "invalid_field", "embedding"},
    {"POST", "/v1/agents/dims/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"x\"],"
     "\"embedding_b64\":\"AACAPwAAAEA=\"}",
     400, "invalid_field", "embedding"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"embedding_b64\":\"not base64!\"}",
     400, "invalid_field", "embedding_b64"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"embedding_b64\":\"AACAPwAA\"}",
     400, "invalid_field", "embedding_b64"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"k\":-1}",
     400, "invalid_field", "k"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\","
     "\"item-2\"],\"k\":3}",
     400, "invalid_field", "k"},
    {"POST", P_DECIDE,
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
     "\"colour\":\"red\"}",
     400, "invalid_field", "colour"},
    {"POST", "/v1/agents/no-such-agent/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}", 404, "not_found",
     NULL},
    {"POST", "/v1/agents/a%2Fb/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}", 400, "invalid_field",
     "agent"},
    {"POST", "/v1/agents/%27%3B%20DROP%20TABLE%20x%3B%20--/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}", 400, "invalid_field",
     "agent"},
    {"POST", "/v1/agents/a%00b/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}", 400, "invalid_field",
     "agent"},
    {"POST", "/v1/agents/%2A/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}", 400, "invalid_field",
     "agent"},
    {"POST", "/v1/agents/%7Bx%7D/decide",
     "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}", 400, "invalid_field",
     "agent"},
    {"POST", P_REWARD,
     "{\"user_id\":\"u1\",\"action\":\"item-1\","
     "\"reward\":1}",
     400, "missing_field", "reward_id"},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"user_id\":\"u1\","
     "\"action\":\"item-1\"}",
     400, "missing_field", "reward"},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"user_id\":\"u1\","
     "\"action\":\"item-1\",\"reward\":NaN}",
     400, "invalid_json", NULL},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"user_id\":\"u1\","
     "\"action\":\"item-1\",\"reward\":-Infinity}",
     400, "invalid_json", NULL},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"user_id\":\"u1\","
     "\"action\":\"item-1\",\"reward\":1e309}",
     400, "invalid_json", NULL},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"user_id\":\"u1\","
     "\"action\":\"item-1\",\"reward\":\"1\"}",
     400, "invalid_field", "reward"},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"event_id\":\"e1\","
     "\"signals\":{\"watch_time_s\":10}}",
     400, "invalid_field", "signals.duration_s"},
    {"POST", P_REWARD,
     "{\"reward_id\":\"r1\",\"user_id\":\"u1\","
     "\"action\":\"item-1\",\"reward\":1,"
     "\"state_key\":\"abc\"}",
     400, "invalid_field", "state_key"},
    {"PUT", "/v1/agents/shop", "{\"algorithm\":\"neural\"}", 400,
     "invalid_field", "algorithm"},
    {"PUT", "/v1/agents/shop", "{\"prior\":{\"alpha\":-1}}", 400,
     "invalid_field", "prior.alpha"},
    {"PUT", "/v1/sessions/s-bad?ttl_s=-5", "{\"context\":{}}", 400,
     "invalid_field", "ttl_s"},
    {"GET", "/v1/agents/shop/policies/u1?state_key=xyz", NULL, 400,
     "invalid_field", "state_key"},
    {"GET", "/v1/agents/shop/metrics?from=yesterday", NULL, 400,
     "invalid_field", "from"},
    {"PUT", "/v1/users/u9/state", "{\"embedding\":[]}", 400, "invalid_field",
     "embedding"},
};

static void test_bad_bodies_get_4xx_json_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_inputs / sizeof bad_inputs[0]; i++) {
    const bad *b = &bad_inputs[i];
    expect_error(&S, b->method, b->path, b->body, b->status, b->code, b->field);
  }
  healthy(&S);
}

static void test_generated_bad_bodies_get_4xx_json_errors(void **state) {
  (void)state;
  /* Thousands of candidates. */
  size_t cap = 40000, n = 0;
  char *body = malloc(cap);
  n += (size_t)snprintf(body, cap, "{\"user_id\":\"u1\",\"candidates\":[");
  for (int i = 0; i < 2000; i++)
    n += (size_t)snprintf(body + n, cap - n, "%s\"c%d\"", i ? "," : "", i);
  snprintf(body + n, cap - n, "]}");
  expect_error(&S, "POST", P_DECIDE, body, 400, "invalid_field", "candidates");
  /* An id of 129 characters, in the body and in the path. */
  char id[130], path[200];
  memset(id, 'x', 129);
  id[129] = '\0';
  snprintf(body, cap, "{\"user_id\":\"%s\",\"candidates\":[\"item-1\"]}", id);
  expect_error(&S, "POST", P_DECIDE, body, 400, "invalid_field", "user_id");
  id[128] = '\0'; /* 128 is fine */
  snprintf(body, cap, "{\"user_id\":\"%s\",\"candidates\":[\"item-1\"]}", id);
  expect_status(&S, "POST", P_DECIDE, body, 200);
  id[128] = 'x';
  snprintf(path, sizeof path, "/v1/agents/%s/decide", id);
  expect_error(&S, "POST", path, "{}", 400, "invalid_field", "agent");
  /* 100,000 nested '['. */
  char *deep = malloc(100001);
  memset(deep, '[', 100000);
  deep[100000] = '\0';
  expect_error(&S, "POST", P_DECIDE, deep, 400, "invalid_json", NULL);
  free(deep);
  free(body);
  healthy(&S);
}

static int raw_status(const char *answer) {
  return strncmp(answer, "HTTP/1.1 ", 9) == 0 ? atoi(answer + 9) : -1;
}

static void test_bad_http_gets_4xx_json_errors(void **state) {
  (void)state;
  /* Content-Length and Transfer-Encoding together. */
  const char *both = "POST " P_DECIDE " HTTP/1.1\r\nHost: t\r\n"
                     "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\n\r\n";
  char *a = util_http_raw(S.port, both, strlen(both), 0, 5000);
  assert_int_equal(raw_status(a), 400);
  assert_non_null(strstr(a, "\"code\":\"bad_request\""));
  free(a);
  /* Huge headers. */
  size_t hn = 40000;
  char *huge = malloc(hn + 100);
  int k = snprintf(huge, 100, "GET /healthz HTTP/1.1\r\nX-Big: ");
  memset(huge + k, 'h', hn);
  strcpy(huge + k + hn, "\r\n\r\n");
  a = util_http_raw(S.port, huge, strlen(huge), 0, 5000);
  assert_int_equal(raw_status(a), 431);
  assert_non_null(strstr(a, "\"code\":\"headers_too_large\""));
  free(a);
  free(huge);
  /* A body over the limit (1 MiB by default). */
  size_t bn = (1 << 20) + 10;
  char *big = malloc(bn + 200);
  k = snprintf(big, 200,
               "POST " P_DECIDE " HTTP/1.1\r\nHost: t\r\n"
               "Content-Length: %zu\r\n\r\n",
               bn);
  memset(big + k, ' ', bn);
  a = util_http_raw(S.port, big, (size_t)k + bn, 0, 5000);
  assert_int_equal(raw_status(a), 413);
  assert_non_null(strstr(a, "\"code\":\"body_too_large\""));
  free(a);
  free(big);
  /* A body cut short by the client. */
  const char *cut = "POST " P_DECIDE " HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 100\r\n\r\n{\"user_id\":";
  a = util_http_raw(S.port, cut, strlen(cut), 1, 5000);
  assert_int_equal(raw_status(a), 400);
  assert_non_null(strstr(a, "\"code\":\"bad_request\""));
  free(a);
  /* A malformed request line. */
  a = util_http_raw(S.port, "GARBAGE\r\n\r\n", 11, 0, 5000);
  assert_int_equal(raw_status(a), 400);
  assert_non_null(strstr(a, "\"error\""));
  free(a);
  healthy(&S);
}

/* One byte every 200 ms: the server (--request-timeout-ms 1500) must give
 * up with 408 instead of holding the connection. */
static void test_a_client_sending_one_byte_at_a_time_gets_408(void **state) {
  (void)state;
  const char *req =
      "POST " P_DECIDE " HTTP/1.1\r\nHost: t\r\n"
      "Content-Length: 60\r\n\r\n{\"user_id\":\"u1\",\"candidates\":"
      "[\"item-1\"]}                  ";
  static util_http_conn c;
  util_http_init(&c, S.port);
  assert_int_equal(util_http_connect(&c, CALL_MS), 0);
  int fd = c.fd;
  char out[4096] = "";
  size_t len = 0;
  int64_t t0 = util_now_ms();
  for (size_t i = 0; i < strlen(req) && util_now_ms() - t0 < 8000; i++) {
    if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 200) > 0) {
      ssize_t k = recv(fd, out, sizeof out - 1, 0);
      if (k > 0) len = (size_t)k;
      break;
    }
  }
  util_http_close(&c);
  out[len] = '\0';
  int64_t took = util_now_ms() - t0;
  assert_int_equal(raw_status(out), 408);
  assert_non_null(strstr(out, "\"code\":\"request_timeout\""));
  assert_true(took >= 1400 && took < 5000);
  healthy(&S);
}

/* The fast decide parser and the jansson one must agree: each pair holds
 * the same document, the second written so that the fast path gives up. */
static void test_fast_and_full_decide_parsers_agree(void **state) {
  (void)state;
  const char *pairs[][2] = {
      {"{\"user_id\":\"u1\",\"candidates\":[\"item-1\",\"item-2\"],\"k\":2}",
       "{\"user_id\":\"\\u0075\\u0031\",\"candidates\":[\"item-1\","
       "\"item-2\"],\"k\":2}"},
      {"{\"user_id\":\"u/1\",\"candidates\":[\"item-1\"]}",
       "{\"user_id\":\"\\u0075/1\",\"candidates\":[\"item-1\"]}"},
      {"{\"user_id\":\"u1\",\"candidates\":[\"item-1\",\"item-1\"]}",
       "{\"user_id\":null,\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}"},
      {"{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],\"k\":0}",
       "{\"user_id\":\"u1\",\"candidates\":[\"item-\\u0031\"],\"k\":0}"},
      {"{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
       "\"context\":{\"device\":\"tv\",\"n\":20}}",
       "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],"
       "\"context\":{\"device\":\"t\\u0076\",\"n\":20}}"},
      {"{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],\"embedding\":[]}",
       "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"],\"embedding\":[],"
       "\"k\":null}"},
  };
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    resp a = call(&S, "POST", P_DECIDE, pairs[i][0]);
    resp b = call(&S, "POST", P_DECIDE, pairs[i][1]);
    if (i == 2) { /* a duplicate key is invalid JSON; a duplicate id not */
      assert_int_equal(a.status, 400);
      assert_int_equal(b.status, 400);
      assert_string_equal(util_http_err_code(&b), "invalid_json");
    } else {
      if (a.status != b.status)
        fprintf(stderr, "%s -> %d\n%s -> %d\n", pairs[i][0], a.status,
                pairs[i][1], b.status);
      assert_int_equal(a.status, b.status);
      if (a.status >= 400) {
        assert_string_equal(util_http_err_code(&a), util_http_err_code(&b));
        assert_string_equal(
            util_http_err_field(&a) ? util_http_err_field(&a) : "",
            util_http_err_field(&b) ? util_http_err_field(&b) : "");
      }
    }
    util_http_resp_free(&a);
    util_http_resp_free(&b);
  }
}

static void test_pipelined_requests_are_answered_in_order(void **state) {
  (void)state;
  char req[4096];
  size_t n = build(req, sizeof req, "GET", "/healthz", NULL, NULL);
  n += build(req + n, sizeof req - n, "POST", P_DECIDE,
             "{\"user_id\":\"u1\",\"candidates\":[\"item-1\",\"item-2\"]}",
             NULL);
  n += build(req + n, sizeof req - n, "POST", P_DECIDE, "{\"oops\":", NULL);
  n += build(req + n, sizeof req - n, "GET", "/v1/agents/shop", NULL, NULL);
  static util_http_conn c;
  util_http_init(&c, S.port);
  assert_int_equal(util_http_send(&c, req, n, CALL_MS), 0);
  int want[] = {200, 200, 400, 200};
  for (int i = 0; i < 4; i++) {
    resp r;
    assert_int_equal(util_http_read(&c, CALL_MS, &r), 0);
    assert_int_equal(r.status, want[i]);
    util_http_resp_free(&r);
  }
  /* The connection stays open for more. */
  n = build(req, sizeof req, "GET", "/healthz", NULL, NULL);
  assert_int_equal(util_http_send(&c, req, n, CALL_MS), 0);
  resp r;
  assert_int_equal(util_http_read(&c, CALL_MS, &r), 0);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  util_http_close(&c);
}

static void test_expect_100_continue_is_honoured(void **state) {
  (void)state;
  const char *body = "{\"user_id\":\"u1\",\"candidates\":[\"item-1\"]}";
  char head[512];
  int n = snprintf(head, sizeof head,
                   "POST " P_DECIDE " HTTP/1.1\r\nHost: t\r\nExpect: "
                   "100-continue\r\nContent-Length: %zu\r\n\r\n",
                   strlen(body));
  static util_http_conn c;
  util_http_init(&c, S.port);
  assert_int_equal(util_http_send(&c, head, (size_t)n, CALL_MS), 0);
  char got[64] = "";
  assert_int_equal(util_http_recv(&c, got, 25, CALL_MS), 0);
  assert_memory_equal(got, "HTTP/1.1 100 Continue\r\n\r\n", 25);
  assert_int_equal(util_http_send(&c, body, strlen(body), CALL_MS), 0);
  resp r;
  assert_int_equal(util_http_read(&c, CALL_MS, &r), 0);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  util_http_close(&c);
}

/* ------------------------------------------------------ vector search */

static json_t *hit(const resp *r, size_t i) {
  return json_array_get(json_object_get(r->json, "hits"), i);
}

static const char *hit_str(const resp *r, size_t i, const char *k) {
  return json_string_value(json_object_get(hit(r, i), k));
}

static void
test_episode_search_finds_the_nearest_and_filters_by_user(void **state) {
  (void)state;
  expect_status(&S, "PUT", "/v1/agents/vec", "{\"embedding_dim\":4}", 200);
  expect_status(&S, "POST", "/v1/agents/vec/episodes",
                "{\"episodes\":["
                "{\"episode_id\":\"e1\",\"user_id\":\"ann\",\"embedding\":"
                "[1,0,0,0],\"action\":\"a1\",\"reward\":1},"
                "{\"episode_id\":\"e2\",\"user_id\":\"bob\",\"embedding\":"
                "[0.9,0.1,0,0],\"action\":\"a2\",\"reward\":0.5},"
                "{\"episode_id\":\"e3\",\"user_id\":\"ann\",\"embedding\":"
                "[0,1,0,0],\"action\":\"a3\",\"reward\":0}]}",
                200);
  resp r = call(&S, "POST", "/v1/agents/vec/episodes/search",
                "{\"embedding\":[1,0,0,0],\"k\":2}");
  assert_int_equal(r.status, 200);
  assert_int_equal(json_array_size(json_object_get(r.json, "hits")), 2);
  assert_string_equal(hit_str(&r, 0, "episode_id"), "e1");
  assert_string_equal(hit_str(&r, 0, "user_id"), "ann");
  assert_string_equal(hit_str(&r, 0, "action"), "a1");
  assert_true(json_number_value(json_object_get(hit(&r, 0), "score")) > 0.999);
  assert_true(json_number_value(json_object_get(hit(&r, 0), "reward")) == 1);
  assert_string_equal(hit_str(&r, 1, "episode_id"), "e2");
  util_http_resp_free(&r);
  r = call(&S, "POST", "/v1/agents/vec/episodes/search",
           "{\"embedding\":[1,0,0,0],\"k\":5,\"user_id\":\"ann\"}");
  assert_int_equal(r.status, 200);
  assert_int_equal(json_array_size(json_object_get(r.json, "hits")), 2);
  assert_string_equal(hit_str(&r, 0, "episode_id"), "e1");
  assert_string_equal(hit_str(&r, 1, "episode_id"), "e3");
  util_http_resp_free(&r);
  expect_error(&S, "POST", "/v1/agents/vec/episodes/search",
               "{\"embedding\":[1,0],\"k\":2}", 400, "invalid_field",
               "embedding");
  r = call(&S, "POST", "/v1/agents/vec/episodes/search",
           "{\"embedding\":[1,0],\"k\":2}");
  assert_non_null(strstr(r.body, "expected 4 dimensions, not 2"));
  util_http_resp_free(&r);
  expect_error(&S, "POST", "/v1/agents/vec/episodes/search",
               "{\"embedding\":[1,0,0,0],\"k\":0}", 400, "invalid_field", "k");
  expect_error(&S, "POST", "/v1/agents/vec/episodes/search",
               "{\"embedding\":[1,0,0,0],\"k\":1001}", 400, "invalid_field",
               "k");
  expect_error(&S, "POST", "/v1/agents/vec/episodes/search",
               "{\"embedding\":[0,0,0,0]}", 400, "invalid_field", "embedding");
  expect_error(&S, "POST", "/v1/agents/vec/episodes/search", "{\"k\":3}", 400,
               "missing_field", "embedding");
  expect_error(&S, "POST", "/v1/agents/vec/episodes/search",
               "{\"embedding\":[1,0,0,0],\"user_id\":\"a/b\"}", 400,
               "invalid_field", "user_id");
  expect_error(&S, "POST", "/v1/agents/nope/episodes/search",
               "{\"embedding\":[1,0,0,0]}", 404, "not_found", NULL);
}

static void test_user_and_pattern_search_find_the_nearest(void **state) {
  (void)state;
  expect_status(&S, "PUT", "/v1/users/vu1/state", "{\"embedding\":[0,0,1,0,0]}",
                200);
  expect_status(&S, "PUT", "/v1/users/vu2/state", "{\"embedding\":[0,1,0,0,0]}",
                200);
  resp r = call(&S, "POST", "/v1/users/search",
                "{\"embedding\":[0,0.1,1,0,0],\"k\":2}");
  assert_int_equal(r.status, 200);
  assert_int_equal(json_array_size(json_object_get(r.json, "hits")), 2);
  assert_string_equal(hit_str(&r, 0, "user_id"), "vu1");
  assert_string_equal(hit_str(&r, 1, "user_id"), "vu2");
  util_http_resp_free(&r);
  expect_error(&S, "POST", "/v1/users/search", "{\"embedding\":[1,2,\"x\"]}",
               400, "invalid_field", "embedding");
  expect_error(&S, "POST", "/v1/users/search",
               "{\"embedding\":[1,0],\"bogus\":1}", 400, "invalid_field",
               "bogus");
  expect_status(&S, "PUT", "/v1/agents/vpat", "{\"embedding_dim\":3}", 200);
  expect_status(&S, "PUT", "/v1/agents/vpat/patterns/p1",
                "{\"type\":\"t\",\"key\":\"evening drama\",\"value\":{},"
                "\"confidence\":0.75,\"embedding\":[1,0,0]}",
                200);
  expect_status(&S, "PUT", "/v1/agents/vpat/patterns/p2",
                "{\"type\":\"t\",\"key\":\"morning news\",\"value\":{},"
                "\"embedding\":[0,0,1]}",
                200);
  r = call(&S, "POST", "/v1/agents/vpat/patterns/search",
           "{\"embedding\":[0.2,0,1],\"k\":1}");
  assert_int_equal(r.status, 200);
  assert_int_equal(json_array_size(json_object_get(r.json, "hits")), 1);
  assert_string_equal(hit_str(&r, 0, "pattern_id"), "p2");
  assert_string_equal(hit_str(&r, 0, "key"), "morning news");
  util_http_resp_free(&r);
  r = call(&S, "POST", "/v1/agents/vpat/patterns/search",
           "{\"embedding\":[1,0,0]}");
  assert_int_equal(r.status, 200);
  assert_int_equal(json_array_size(json_object_get(r.json, "hits")), 2);
  assert_string_equal(hit_str(&r, 0, "pattern_id"), "p1");
  assert_true(json_number_value(json_object_get(hit(&r, 0), "confidence")) ==
              0.75);
  util_http_resp_free(&r);
}

static void test_sessions_round_trip(void **state) {
  (void)state;
  resp r = call(&S, "PUT", "/v1/sessions/sess-7?ttl_s=60",
                "{\"context\":{\"page\":\"home\",\"n\":[1,2]}}");
  assert_int_equal(r.status, 200);
  assert_int_equal(json_integer_value(json_object_get(r.json, "ttl_s")), 60);
  util_http_resp_free(&r);
  r = call(&S, "GET", "/v1/sessions/sess-7", NULL);
  assert_int_equal(r.status, 200);
  json_t *want = json_loads("{\"page\":\"home\",\"n\":[1,2]}", 0, NULL);
  assert_true(json_equal(json_object_get(r.json, "context"), want));
  json_decref(want);
  util_http_resp_free(&r);
  expect_status(&S, "DELETE", "/v1/sessions/sess-7", NULL, 200);
  expect_error(&S, "GET", "/v1/sessions/sess-7", NULL, 404, "not_found", NULL);
}

static void test_probes_and_metrics(void **state) {
  (void)state;
  healthy(&S);
  resp r = call(&S, "GET", "/readyz", NULL);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  expect_status(&S, "POST", P_DECIDE,
                "{\"user_id\":\"m1\",\"candidates\":[\"item-1\"]}", 200);
  r = call(&S, "GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strcasestr(r.head, "content-type: text/plain"));
  const char *want[] = {
      "agentdb_http_requests_total{route=\"/v1/agents/{agent}/decide\","
      "method=\"POST\",status=\"200\"} ",
      "agentdb_http_request_duration_seconds_bucket{route=\"/v1/agents/"
      "{agent}/decide\",method=\"POST\",le=\"+Inf\"} ",
      "\nagentdb_decisions_total ",
      "\nagentdb_rewards_applied_total ",
      "\nagentdb_write_queue_depth ",
      "\nagentdb_flush_batches_total ",
      "\nagentdb_flush_errors_total ",
      "\nagentdb_cache_hits_total ",
      "\nagentdb_cache_misses_total ",
      "\nagentdb_cache_hit_ratio ",
      "\nagentdb_store_errors_total "};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    if (!strstr(r.body, want[i])) fprintf(stderr, "missing: %s\n", want[i]);
    assert_non_null(strstr(r.body, want[i]));
  }
  util_http_resp_free(&r);
}

/* ---------------------------------------------------------------- auth */

static void test_without_keys_v1_is_open(void **state) {
  (void)state;
  expect_status(&S, "GET", "/v1/agents/shop", NULL, 200);
}

static void test_api_keys_and_agent_scopes(void **state) {
  (void)state;
  server a;
  memset(&a, 0, sizeof a);
  const char *keys =
      tsrv_keys(&a, "# test keys\nadmin-0123456789abcdef\n"
                    "scoped-0123456789abcdef  scoped-a,scoped-b\n");
  assert_non_null(keys);
  const char *extra[] = {"--api-keys-file", keys, NULL};
  start_server(&a, extra);
  const char *admin = "Authorization: Bearer admin-0123456789abcdef\r\n";
  const char *scoped = "Authorization: Bearer scoped-0123456789abcdef\r\n";
  const char *wrong = "Authorization: Bearer admin-0123456789abcdeX\r\n";
  resp r = call(&a, "GET", "/v1/agents/scoped-a", NULL);
  assert_int_equal(r.status, 401);
  assert_string_equal(util_http_err_code(&r), "unauthorized");
  assert_non_null(strcasestr(r.head, "www-authenticate: bearer"));
  util_http_resp_free(&r);
  r = call_h(&a, "GET", "/v1/agents/scoped-a", NULL, wrong);
  assert_int_equal(r.status, 401);
  util_http_resp_free(&r);
  r = call(&a, "GET", "/v1/no/such/route", NULL); /* 401 before 404 */
  assert_int_equal(r.status, 401);
  util_http_resp_free(&r);
  const char *agents[] = {"scoped-a", "other"};
  for (int i = 0; i < 2; i++) {
    char p[64];
    snprintf(p, sizeof p, "/v1/agents/%s", agents[i]);
    r = call_h(&a, "PUT", p, "{}", admin);
    assert_int_equal(r.status, 200);
    util_http_resp_free(&r);
  }
  r = call_h(&a, "GET", "/v1/agents/scoped-a", NULL, scoped);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  r = call_h(&a, "POST", "/v1/agents/scoped-a/decide",
             "{\"user_id\":\"u\",\"candidates\":[\"x\"]}", scoped);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  /* Another agent, existing or not, is not found for a scoped key. */
  const char *outside[] = {"/v1/agents/other", "/v1/agents/nonexistent"};
  for (int i = 0; i < 2; i++) {
    r = call_h(&a, "GET", outside[i], NULL, scoped);
    assert_int_equal(r.status, 404);
    assert_string_equal(util_http_err_code(&r), "not_found");
    util_http_resp_free(&r);
  }
  r = call_h(&a, "POST", "/v1/agents/other/decide",
             "{\"user_id\":\"u\",\"candidates\":[\"x\"]}", scoped);
  assert_int_equal(r.status, 404);
  util_http_resp_free(&r);
  r = call_h(&a, "GET", "/v1/agents/other", NULL, admin);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  /* Probes and metrics stay open. */
  const char *open_paths[] = {"/healthz", "/readyz", "/metrics"};
  for (int i = 0; i < 3; i++)
    expect_status(&a, "GET", open_paths[i], NULL, 200);
  assert_int_equal(stop_server(&a, SIGTERM), 0);
  tsrv_cleanup(&a);
}

/* Rewards applied to action "a" of user "u" of the agent. */
static int64_t arm_n(const server *s, const char *agent) {
  char path[160];
  snprintf(path, sizeof path, "/v1/agents/%s/policies/u", agent);
  resp r = call(s, "GET", path, NULL);
  assert_int_equal(r.status, 200);
  json_t *arm = find_arm(r.json, "a");
  int64_t n = arm ? json_integer_value(json_object_get(arm, "n")) : 0;
  util_http_resp_free(&r);
  return n;
}

/* ----------------------------------------------------------- durability */

static void test_async_durability_answers_202_pending(void **state) {
  (void)state;
  server a;
  memset(&a, 0, sizeof a);
  const char *extra[] = {"--durability", "async", NULL};
  start_server(&a, extra);
  expect_status(&a, "PUT", "/v1/agents/fast", "{}", 200);
  resp r = call(&a, "POST", "/v1/agents/fast/rewards",
                "{\"reward_id\":\"r1\",\"user_id\":\"u\",\"action\":\"a\","
                "\"reward\":1}");
  assert_int_equal(r.status, 202);
  assert_true(json_is_true(json_object_get(r.json, "pending")));
  util_http_resp_free(&r);
  /* Drained on a clean stop: the reward is there after a restart. */
  assert_int_equal(stop_server(&a, SIGINT), 0);
  start_server(&a, extra);
  assert_int_equal(arm_n(&a, "fast"), 1);
  assert_int_equal(stop_server(&a, SIGTERM), 0);
  tsrv_cleanup(&a);
}

/* Holds the SQLite store's write lock, so that no batch commits while
 * held; returns the connection (release with unlock_store). */
static sqlite3 *lock_store(const server *s) {
  char path[400];
  snprintf(path, sizeof path, "%s/agentdb.db", s->dir);
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  return db;
}

static void unlock_store(sqlite3 *db) {
  assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

/* A gauge or counter of /metrics (no labels). */
static double metric_of(const server *s, const char *name) {
  resp r = call(s, "GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  char want[128];
  snprintf(want, sizeof want, "\n%s ", name);
  const char *p = strstr(r.body, want);
  assert_non_null(p);
  double v = strtod(p + strlen(want), NULL);
  util_http_resp_free(&r);
  return v;
}

typedef struct one_reward {
  int port, i, status;
} one_reward;

static void *one_reward_main(void *arg) {
  one_reward *o = arg;
  char body[160];
  snprintf(body, sizeof body,
           "{\"reward_id\":\"wide-%d\",\"user_id\":\"u\",\"action\":\"a\","
           "\"reward\":1}",
           o->i);
  resp r;
  util_http_once(o->port, "POST", "/v1/agents/wide/rewards", body, NULL,
                 CALL_MS, &r);
  o->status = r.status;
  util_http_resp_free(&r);
  return NULL;
}

/* A durable reward waits for its group commit on no thread of the server
 * (http.h, adb__http_later_begin): with 2 write threads and the store's
 * write lock held, all 24 rewards sent at once are in the library's queue
 * together (a thread per waiting reward would hold 2 there and the rest
 * in the HTTP pool's queue), and all are answered 200 once it commits. */
static void test_durable_rewards_wait_on_no_thread(void **state) {
  (void)state;
  server a;
  memset(&a, 0, sizeof a);
  const char *extra[] = {"--write-threads", "2", NULL};
  start_server(&a, extra);
  expect_status(&a, "PUT", "/v1/agents/wide", "{}", 200);
  enum { N = 24 };
  sqlite3 *lock = lock_store(&a);
  one_reward o[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    o[i] = (one_reward){.port = a.port, .i = i};
    pthread_create(&t[i], NULL, one_reward_main, &o[i]);
  }
  double depth = 0;
  for (int64_t end = util_now_ms() + 15000;
       util_now_ms() < end &&
       (depth = metric_of(&a, "agentdb_write_queue_depth")) < N;)
    usleep(20000);
  fprintf(stderr, "rewards queued together behind the lock: %.0f of %d\n",
          depth, N);
  assert_true(depth == N);
  unlock_store(lock);
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(o[i].status, 200);
  }
  assert_int_equal(arm_n(&a, "wide"), N);
  assert_int_equal(stop_server(&a, SIGTERM), 0);
  tsrv_cleanup(&a);
}

/* Past --write-timeout-ms a durable reward is answered 503 "timeout" by the
 * server while it stays queued; the connection goes on, the reward commits
 * once the store is back, and a retry applies nothing twice. */
static void test_a_durable_reward_past_its_timeout_gets_503(void **state) {
  (void)state;
  server a;
  memset(&a, 0, sizeof a);
  const char *extra[] = {"--write-timeout-ms", "500", NULL};
  start_server(&a, extra);
  expect_status(&a, "PUT", "/v1/agents/slow", "{}", 200);
  const char *body = "{\"reward_id\":\"late-1\",\"user_id\":\"u\","
                     "\"action\":\"a\",\"reward\":1}";
  sqlite3 *lock = lock_store(&a);
  util_http_conn *c = malloc(sizeof *c);
  assert_non_null(c);
  util_http_init(c, a.port);
  resp r;
  int64_t t0 = util_now_ms();
  assert_int_equal(util_http_call(c, "POST", "/v1/agents/slow/rewards", body,
                                  NULL, CALL_MS, &r),
                   UTIL_HTTP_OK);
  int64_t waited = util_now_ms() - t0;
  assert_int_equal(r.status, 503);
  json_t *e = json_object_get(r.json, "error");
  assert_string_equal(json_string_value(json_object_get(e, "code")), "timeout");
  util_http_resp_free(&r);
  assert_true(waited >= 450);
  /* The same keep-alive connection answers the next request. */
  assert_int_equal(
      util_http_call(c, "GET", "/healthz", NULL, NULL, CALL_MS, &r),
      UTIL_HTTP_OK);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  util_http_close(c);
  free(c);
  unlock_store(lock);
  expect_status(&a, "POST", "/v1/agents/slow/rewards", body, 200);
  assert_int_equal(arm_n(&a, "slow"), 1);
  assert_int_equal(stop_server(&a, SIGTERM), 0);
  tsrv_cleanup(&a);
}

typedef struct writer {
  int port, id;
  int64_t stop_at_ms;
  int sent, acked; /* rewards sent; the first `acked` of them answered */
  int bad;         /* answers that were neither 200 nor a closed socket */
} writer;

static void reward_body(char *b, size_t cap, int w, int i) {
  snprintf(b, cap,
           "{\"reward_id\":\"w%d-%d\",\"user_id\":\"u\","
           "\"action\":\"a\",\"reward\":1}",
           w, i);
}

/* Sends rewards one after another on keep-alive connections until the
 * server goes away. */
static void *writer_main(void *arg) {
  writer *w = arg;
  util_http_conn *c = malloc(sizeof *c);
  if (!c) return NULL;
  util_http_init(c, w->port);
  while (util_now_ms() < w->stop_at_ms) {
    if (util_http_connect(c, CALL_MS) != UTIL_HTTP_OK) break;
    char body[256];
    reward_body(body, sizeof body, w->id, w->sent);
    w->sent++;
    resp r; /* a Connection: close answer closes c; the next one dials */
    if (util_http_call(c, "POST", "/v1/agents/durable/rewards", body, NULL,
                       CALL_MS, &r) != UTIL_HTTP_OK)
      break;
    if (r.status == 200)
      w->acked = w->sent;
    else
      w->bad = r.status != 503;
    util_http_resp_free(&r);
    if (w->acked != w->sent) break;
  }
  util_http_close(c);
  free(c);
  return NULL;
}

static void test_sigterm_loses_no_acknowledged_reward(void **state) {
  (void)state;
  server a;
  memset(&a, 0, sizeof a);
  start_server(&a, NULL);
  expect_status(&a, "PUT", "/v1/agents/durable", "{}", 200);
  enum { NW = 4 };
  writer w[NW];
  pthread_t t[NW];
  for (int i = 0; i < NW; i++) {
    w[i] =
        (writer){.port = a.port, .id = i, .stop_at_ms = util_now_ms() + 20000};
    pthread_create(&t[i], NULL, writer_main, &w[i]);
  }
  usleep(quick() ? 300000 : 600000);
  int st = stop_server(&a, SIGTERM);
  int sent = 0, acked = 0;
  for (int i = 0; i < NW; i++) {
    pthread_join(t[i], NULL);
    sent += w[i].sent;
    acked += w[i].acked;
    assert_false(w[i].bad);
  }
  assert_int_equal(st, 0);
  assert_true(acked > 0);
  /* Restart on the same store: every acknowledged reward is there. */
  start_server(&a, NULL);
  int64_t n = arm_n(&a, "durable");
  fprintf(stderr, "sigterm: %d sent, %d acknowledged, %lld applied\n", sent,
          acked, (long long)n);
  assert_true(n >= acked);
  assert_true(n <= sent);
  /* Retrying the unanswered ones applies each exactly once. */
  for (int i = 0; i < NW; i++)
    for (int k = w[i].acked; k < w[i].sent; k++) {
      char body[256];
      reward_body(body, sizeof body, i, k);
      expect_status(&a, "POST", "/v1/agents/durable/rewards", body, 200);
    }
  assert_int_equal(arm_n(&a, "durable"), sent);
  assert_int_equal(stop_server(&a, SIGTERM), 0);
  tsrv_cleanup(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decide_reward_policy_loop),
      cmocka_unit_test(test_linear_agent_learns_over_http),
      cmocka_unit_test(test_every_documented_route_answers_as_documented),
      cmocka_unit_test(test_bad_bodies_get_4xx_json_errors),
      cmocka_unit_test(test_generated_bad_bodies_get_4xx_json_errors),
      cmocka_unit_test(test_bad_http_gets_4xx_json_errors),
      cmocka_unit_test(test_a_client_sending_one_byte_at_a_time_gets_408),
      cmocka_unit_test(test_fast_and_full_decide_parsers_agree),
      cmocka_unit_test(test_pipelined_requests_are_answered_in_order),
      cmocka_unit_test(test_expect_100_continue_is_honoured),
      cmocka_unit_test(
          test_episode_search_finds_the_nearest_and_filters_by_user),
      cmocka_unit_test(test_user_and_pattern_search_find_the_nearest),
      cmocka_unit_test(test_sessions_round_trip),
      cmocka_unit_test(test_probes_and_metrics),
      cmocka_unit_test(test_without_keys_v1_is_open),
      cmocka_unit_test(test_api_keys_and_agent_scopes),
      cmocka_unit_test(test_async_durability_answers_202_pending),
      cmocka_unit_test(test_durable_rewards_wait_on_no_thread),
      cmocka_unit_test(test_a_durable_reward_past_its_timeout_gets_503),
      cmocka_unit_test(test_sigterm_loses_no_acknowledged_reward),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
