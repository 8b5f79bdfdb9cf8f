/*
 * test_export.c — the decision log as a data set (issue 10): log_scan on
 * every store, the DSJSON round trip, bad rows, the sample file, the CLI,
 * and `agentdb import` teaching a fresh agent what the logging agent
 * learned.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"
#include "coordinator.h"
#include "json.h"
#include "logfmt.h"
#include "logimport.h"
#include "util_http.h"
#include "util_server.h"
#include "util_store.h"

#define DIM 4

static adb *open_db(const char *url, uint64_t seed) {
  adb_config cfg = {.store_url = url, .seed = seed, .cold_start_k = -1};
  adb *db = NULL;
  char err[512] = "";
  if (adb_open(&cfg, &db, err, sizeof err)) fail_msg("open: %s", err);
  return db;
}

static void put_agent(adb *db, const char *id, adb_algorithm algo) {
  adb_agent_config c;
  adb_agent_config_init(&c);
  snprintf(c.id, sizeof c.id, "%s", id);
  c.algorithm = algo;
  c.n_context_keys = 1;
  snprintf(c.context_keys[0], sizeof c.context_keys[0], "segment");
  c.fallback_strength = 0;
  assert_int_equal(adb_agent_put(db, &c), 0);
}

static const char *const ACTIONS[] = {"x", "y", "z"};

static void put_actions(adb *db, const char *agent) {
  adb_action a[3];
  static float emb[3][DIM];
  for (int i = 0; i < 3; i++) {
    for (int k = 0; k < DIM; k++)
      emb[i][k] = (float)(k == i) + 0.1f * (float)(i + 1) / 3.0f;
    a[i] = (adb_action){
        .id = ACTIONS[i], .embedding = emb[i], .embedding_dim = DIM};
  }
  assert_int_equal(adb_actions_put(db, agent, a, 3), 0);
}

/* The true click probability of action a in segment s: x is best for
 * segment "a", y for "b". */
static double truth(int seg, int a) {
  return (seg == 0 && a == 0) || (seg == 1 && a == 1) ? 0.8 : 0.2;
}

static int action_index(const char *id) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(id, ACTIONS[i])) return i;
  return -1;
}

/* n decisions (and their Bernoulli rewards when learn) of agent; returns
 * the mean true value of the actions chosen. Some decisions get two
 * rewards, some none. */
static double run(adb *db, const char *agent, int n, int learn, uint64_t seed,
                  const char *tag) {
  adb__rng rng;
  adb__rng_seed(&rng, seed);
  double value = 0;
  for (int i = 0; i < n; i++) {
    int seg = i % 2;
    char user[32], eid[64];
    snprintf(user, sizeof user, "u%d", i % 7);
    snprintf(eid, sizeof eid, "%s-%d", tag, i);
    adb_kv ctx = {"segment", seg ? "b" : "a"};
    adb_ranked rk[3];
    adb_decision d = {.ranking = rk, .ranking_cap = 3};
    adb_decide_req q = {.agent_id = agent,
                        .user_id = user,
                        .candidates = ACTIONS,
                        .n_candidates = 3,
                        .context = &ctx,
                        .n_context = 1,
                        .k = 3,
                        .event_id = eid};
    assert_int_equal(adb_decide(db, &q, &d), 0);
    int a = action_index(d.action);
    assert_true(a >= 0);
    value += truth(seg, a);
    if (!learn || i % 11 == 5) continue; /* some decisions get no reward */
    int reps = i % 13 == 3 ? 2 : 1;
    for (int r = 0; r < reps; r++) {
      char rid[80];
      snprintf(rid, sizeof rid, "%s-r%d", eid, r);
      adb_reward_req rq = {.agent_id = agent,
                           .reward_id = rid,
                           .event_id = eid,
                           .has_reward = 1,
                           .reward = adb__rng_uniform(&rng) < truth(seg, a)};
      adb_reward_result res;
      assert_int_equal(adb_reward(db, &rq, &res), 0);
    }
  }
  assert_int_equal(adb_flush(db), 0);
  return value / n;
}

/* ------------------------------------------------------- round trip */

typedef struct collect {
  adb__logw *w; /* jsonl of the rows seen */
  adb__buf out;
  int64_t rows;
} collect;

static int buf_sink(void *ctx, const char *p, size_t n) {
  adb__buf_append(ctx, p, n);
  return 0;
}

static void collect_init(collect *c, int fmt) {
  memset(c, 0, sizeof *c);
  c->w = adb__logw_new(fmt, buf_sink, &c->out);
  assert_non_null(c->w);
}

static void collect_done(collect *c) {
  assert_int_equal(adb__logw_finish(c->w), 0);
  c->rows = adb__logw_rows(c->w);
  adb__logw_free(c->w);
}

static void bad_fail(void *ctx, long line, const char *why) {
  (void)ctx;
  fail_msg("line %ld refused: %s", line, why);
}

/* Writes the agents' log as DSJSON, reads it back, and compares every
 * field (through the JSON-lines writer, which prints them all) with the
 * rows the store gave. */
static void dsjson_round_trip(void **state) {
  const char *kind = *state;
  char *url = util_store_fresh_url(kind);
  assert_non_null(url);
  adb *db = open_db(url, 7);
  put_agent(db, "lin", ADB_ALGO_LINEAR);
  put_agent(db, "tab", ADB_ALGO_BETA);
  put_actions(db, "lin");
  float ue[DIM] = {0.5f, -0.25f, 0.125f, 1.0f / 3.0f};
  assert_int_equal(adb_user_state_put(db, "u1", ue, DIM, NULL), 0);
  run(db, "lin", 60, 1, 1, "L");
  run(db, "tab", 40, 1, 2, "T");
  adb__store *st = db->store;
  for (int a = 0; a < 2; a++) {
    const char *agent = a ? "tab" : "lin";
    collect direct, ds, back;
    collect_init(&direct, ADB__LOGFMT_JSONL);
    collect_init(&ds, ADB__LOGFMT_DSJSON);
    assert_int_equal(st->m->log_scan(st, agent, INT64_MIN, INT64_MAX,
                                     adb__logw_row, direct.w),
                     0);
    assert_int_equal(
        st->m->log_scan(st, agent, INT64_MIN, INT64_MAX, adb__logw_row, ds.w),
        0);
    collect_done(&direct);
    collect_done(&ds);
    assert_int_equal(direct.rows, a ? 40 : 60);
    FILE *f = fmemopen(ds.out.p, ds.out.len, "r");
    collect_init(&back, ADB__LOGFMT_JSONL);
    long good = 0, bad = 0;
    assert_int_equal(adb__dsjson_read(f, agent, adb__logw_row, back.w, bad_fail,
                                      &good, &bad),
                     0);
    fclose(f);
    collect_done(&back);
    assert_int_equal(good, direct.rows);
    assert_int_equal(bad, 0);
    assert_string_equal(back.out.p, direct.out.p);
    /* the log is what happened: outcomes and embeddings are there */
    assert_non_null(strstr(direct.out.p, "\"outcome\":\"none\""));
    assert_non_null(strstr(direct.out.p, "\"n_rewards\":2"));
    if (!a) {
      assert_non_null(strstr(direct.out.p, "\"features\":\""));
      assert_non_null(strstr(direct.out.p, "\"candidate_embeddings\":[["));
    } else {
      assert_non_null(strstr(direct.out.p, "\"user_embedding\":[0.5,-0.25"));
    }
    const char *sample = getenv("ADB_WRITE_SAMPLE");
    if (!a && sample && !strcmp(kind, "sqlite")) {
      FILE *o = fopen(sample, "w");
      assert_non_null(o);
      /* the first 6 lines */
      const char *p = ds.out.p;
      for (int i = 0; i < 6 && p; i++)
        p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
      assert_int_equal(fwrite(ds.out.p, 1, (size_t)(p - ds.out.p), o),
                       (size_t)(p - ds.out.p));
      fclose(o);
    }
    adb__buf_free(&direct.out);
    adb__buf_free(&ds.out);
    adb__buf_free(&back.out);
  }
  /* a time range: [from, to) of the first rows */
  collect all, part;
  collect_init(&all, ADB__LOGFMT_CSV);
  assert_int_equal(
      st->m->log_scan(st, "tab", INT64_MIN, INT64_MAX, adb__logw_row, all.w),
      0);
  collect_done(&all);
  adb__decision_rec d10;
  assert_int_equal(st->m->decision_get(st, "tab", "T-10", &d10), 0);
  collect_init(&part, ADB__LOGFMT_CSV);
  assert_int_equal(st->m->log_scan(st, "tab", d10.ts_ms, d10.ts_ms + 1,
                                   adb__logw_row, part.w),
                   0);
  collect_done(&part);
  assert_true(part.rows >= 1 && part.rows < all.rows);
  assert_non_null(strstr(part.out.p, "\"T-10\""));
  adb__decision_rec_free(&d10);
  adb__buf_free(&all.out);
  adb__buf_free(&part.out);
  adb_close(db);
  util_store_drop(url);
}

/* ------------------------------------------------------------- bad rows */

typedef struct bad_log {
  long lines[32];
  int n;
} bad_log;

static void bad_note(void *ctx, long line, const char *why) {
  bad_log *b = ctx;
  assert_true(why && *why);
  if (b->n < 32) b->lines[b->n++] = line;
}

static int count_row(void *ctx, const adb__log_row *row) {
  (void)row;
  ++*(long *)((bad_log *)ctx + 1);
  return 0;
}

static void dsjson_bad_rows_are_reported_and_skipped(void **state) {
  (void)state;
  const char *good =
      "{\"_label_cost\":-1,\"_label_probability\":0.5,"
      "\"_labelIndex\":1,\"Timestamp\":\"2026-01-02T03:04:05."
      "006Z\",\"EventId\":\"e%d\",\"a\":[2,1],\"c\":{\"context\":"
      "{\"segment\":\"a\"},\"_multi\":[{\"action\":{\"id\":\"x\"}},"
      "{\"action\":{\"id\":\"y\"}}]},\"p\":[0.5,0.5]}\n";
  const char *bad[] = {
      /* 2 */ "{\"_label_cost\":-1,\"_labelIndex\":0,\"Timestamp\":"
              "\"2026-01-02T03:04:05Z\",\"EventId\":\"b1\",\"c\":{\"_multi\":"
              "[{\"action\":{\"id\":\"x\"}}]}}\n",
      /* 4 */
      "{\"_label_cost\":-1,\"_label_probability\":0,\"_labelIndex\":0,"
      "\"Timestamp\":\"2026-01-02T03:04:05Z\",\"EventId\":\"b2\",\"c\":"
      "{\"_multi\":[{\"action\":{\"id\":\"x\"}}]}}\n",
      /* 6 */
      "{\"_label_cost\":-1,\"_label_probability\":1.5,\"_labelIndex\":"
      "0,\"Timestamp\":\"2026-01-02T03:04:05Z\",\"EventId\":\"b3\","
      "\"c\":{\"_multi\":[{\"action\":{\"id\":\"x\"}}]}}\n",
      /* 8 */
      "{\"_label_cost\":-1,\"_label_probability\":0.5,\"_labelIndex\":"
      "3,\"Timestamp\":\"2026-01-02T03:04:05Z\",\"EventId\":\"b4\","
      "\"c\":{\"_multi\":[{\"action\":{\"id\":\"x\"}}]}}\n",
      /* 10 */
      "{\"_label_cost\":-1,\"_label_probability\":0.5,"
      "\"_label_Action\":1,\"Timestamp\":\"2026-01-02T03:04:05Z\","
      "\"EventId\":\"b5\",\"c\":{\"_multi\":[{\"action\":{}}]}}\n",
      /* 12 */
      "{\"_label_cost\":-1,\"_label_probability\":-0.2,"
      "\"_labelIndex\":0,\"Timestamp\":\"2026-01-02T03:04:05Z\","
      "\"EventId\":\"b6\",\"c\":{\"_multi\":[{\"action\":{\"id\":"
      "\"x\"}}]}}\n",
      /* 14 */ "{\"_label_cost\":-1,\"_label_probability\":0.5,\n",
      /* 16 */ "not json at all\n",
      /* 18 */ "[1,2,3]\n",
      /* 20 */
      "{\"_label_cost\":-1,\"_label_probability\":0.5,\"_labelIndex\""
      ":0,\"EventId\":\"bad/id\",\"Timestamp\":\"2026-01-02T03:04:05Z\""
      ",\"c\":{\"_multi\":[{\"action\":{\"id\":\"x\"}}]}}\n",
  };
  adb__buf in = {0};
  int nb = (int)(sizeof bad / sizeof *bad);
  for (int i = 0; i < nb; i++) {
    adb__buf_printf(&in, good, i);
    adb__buf_puts(&in, bad[i]);
  }
  adb__buf_printf(&in, good, 99);
  struct {
    bad_log b;
    long rows;
  } x = {{{0}, 0}, 0};
  FILE *f = fmemopen(in.p, in.len, "r");
  long g = 0, b = 0;
  assert_int_equal(adb__dsjson_read(f, "ag", count_row, &x, bad_note, &g, &b),
                   0);
  fclose(f);
  assert_int_equal(g, nb + 1);
  assert_int_equal(x.rows, nb + 1);
  assert_int_equal(b, nb);
  assert_int_equal(x.b.n, nb);
  for (int i = 0; i < nb; i++)
    assert_int_equal(x.b.lines[i], 2 * (i + 1));
  adb__buf_free(&in);
}

/* docs/sample.dsjson was written by this code (ADB_WRITE_SAMPLE=FILE): it
 * reads back whole, and writing its rows again gives the same bytes. */
static void sample_file_parses_back(void **state) {
  (void)state;
  const char *src = getenv("ADB_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/docs/sample.dsjson", src ? src : ".");
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  collect c;
  collect_init(&c, ADB__LOGFMT_DSJSON);
  long good = 0, bad = 0;
  assert_int_equal(
      adb__dsjson_read(f, "tab", adb__logw_row, c.w, bad_fail, &good, &bad), 0);
  collect_done(&c);
  assert_true(good >= 6);
  assert_int_equal(bad, 0);
  rewind(f);
  char *orig = calloc(1, c.out.len + 1);
  assert_int_equal(fread(orig, 1, c.out.len + 1, f), c.out.len);
  assert_string_equal(orig, c.out.p);
  free(orig);
  fclose(f);
  adb__buf_free(&c.out);
}

/* ------------------------------------------------------------- import */

static int64_t q_int(const char *url, const char *fmt, const char *agent) {
  char sql[512];
  snprintf(sql, sizeof sql, fmt, agent);
  return util_store_query_int(url, sql);
}

/* Agent A learns from 1,200 decisions; its log, exported as DSJSON and
 * imported into a fresh agent B, gives B the same posteriors (tabular sums
 * equal, one linear increment per reward) and so a policy that decides as
 * well as A's. Importing the file again changes nothing. */
static void import_teaches_a_fresh_agent(void **state) {
  const char *kind = *state;
  char *url = util_store_fresh_url(kind);
  assert_non_null(url);
  adb *db = open_db(url, 11);
  put_agent(db, "A", ADB_ALGO_BETA);
  put_agent(db, "B", ADB_ALGO_BETA);
  put_agent(db, "LA", ADB_ALGO_LINEAR);
  put_agent(db, "LB", ADB_ALGO_LINEAR);
  put_actions(db, "LA");
  put_actions(db, "LB");
  int n_learn = getenv("ADB_TEST_QUICK") ? 600 : 1200;
  run(db, "A", n_learn, 1, 3, "A");
  run(db, "LA", 200, 1, 4, "LA");
  adb__store *st = db->store;
  const char *pairs[2][2] = {{"A", "B"}, {"LA", "LB"}};
  for (int p = 0; p < 2; p++) {
    collect ds;
    collect_init(&ds, ADB__LOGFMT_DSJSON);
    assert_int_equal(st->m->log_scan(st, pairs[p][0], INT64_MIN, INT64_MAX,
                                     adb__logw_row, ds.w),
                     0);
    collect_done(&ds);
    for (int rep = 0; rep < 2; rep++) {
      adb__log_import *im;
      assert_int_equal(adb__log_import_new(st, pairs[p][1], &im), 0);
      FILE *f = fmemopen(ds.out.p, ds.out.len, "r");
      long good, bad;
      assert_int_equal(adb__dsjson_read(f, pairs[p][1], adb__log_import_row, im,
                                        bad_fail, &good, &bad),
                       0);
      fclose(f);
      assert_int_equal(adb__log_import_finish(im), 0);
      adb__log_import_stats s = adb__log_import_get_stats(im);
      assert_int_equal(good, ds.rows);
      assert_int_equal(s.decisions, rep ? 0 : ds.rows);
      if (rep) assert_int_equal(s.rewards, 0);
      adb__log_import_free(im);
    }
    adb__buf_free(&ds.out);
    static const char *const checks[] = {
        "SELECT count(*) FROM decisions WHERE agent_id = '%s'",
        "SELECT sum(n) FROM rl_policies WHERE agent_id = '%s'",
        "SELECT sum(sum_micro) + sum(sum_hi) * 4294967296 FROM rl_policies"
        " WHERE agent_id = '%s' AND user_id = '*'",
        "SELECT count(*) FROM rl_policies WHERE agent_id = '%s'",
    };
    for (size_t k = 0; k < sizeof checks / sizeof *checks; k++) {
      int64_t a = q_int(url, checks[k], pairs[p][0]);
      int64_t b = q_int(url, checks[k], pairs[p][1]);
      /* one reward per event: an event with two rewards counts once */
      if (k == 1 || k == 3) {
        assert_true(b <= a && b > 0);
        continue;
      }
      assert_int_equal(b, a);
    }
    int64_t lin = q_int(url,
                        "SELECT count(*) FROM linear_rewards"
                        " WHERE agent_id = '%s'",
                        pairs[p][1]);
    int64_t evs = q_int(url,
                        "SELECT count(DISTINCT event_id) FROM reward_signals"
                        " WHERE agent_id = '%s'",
                        pairs[p][0]);
    assert_int_equal(lin, p ? evs : 0);
  }
  /* Decide without learning, 600 times each: the true value of A's and
   * B's choices. Each is a mean of values in [0.2, 0.8] (sd <= 0.3), so
   * the difference of the two means has sd <= 0.3 * sqrt(2 / 600) = 0.017;
   * 4 sd = 0.07. Uniform choice is worth 0.4. */
  int m = 600;
  double va = run(db, "A", m, 0, 5, "evalA");
  double vb = run(db, "B", m, 0, 5, "evalB");
  printf("import: value of A %.3f, of B (imported) %.3f\n", va, vb);
  assert_true(fabs(va - vb) <= 0.07);
  assert_true(vb > 0.4 + 0.07);
  adb_close(db);
  util_store_drop(url);
}

/* ---------------------------------------------------------------- CLI */

static int sh(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

/* `agentdb export` writes what log_scan gives; `agentdb import` of it
 * stores every row once and reports bad lines with their numbers. */
static void cli_export_and_import(void **state) {
  (void)state;
  const char *bin = getenv("ADB_BIN");
  if (!bin) {
    printf("skipped: ADB_BIN not set\n");
    skip();
  }
  char *url = util_store_fresh_url("sqlite");
  adb *db = open_db(url, 3);
  put_agent(db, "A", ADB_ALGO_BETA);
  put_agent(db, "B", ADB_ALGO_BETA);
  run(db, "A", 50, 1, 9, "c");
  collect ds;
  collect_init(&ds, ADB__LOGFMT_DSJSON);
  assert_int_equal(db->store->m->log_scan(db->store, "A", INT64_MIN, INT64_MAX,
                                          adb__logw_row, ds.w),
                   0);
  collect_done(&ds);
  adb_close(db);
  char dir[] = "/tmp/adb_export_XXXXXX";
  assert_non_null(mkdtemp(dir));
  assert_int_equal(sh("%s export --store '%s' --agent A --out %s/a.dsjson "
                      "2>%s/err",
                      bin, url, dir, dir),
                   0);
  char path[256];
  snprintf(path, sizeof path, "%s/a.dsjson", dir);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char *got = calloc(1, ds.out.len + 2);
  assert_int_equal(fread(got, 1, ds.out.len + 1, f), ds.out.len);
  fclose(f);
  assert_string_equal(got, ds.out.p);
  free(got);
  assert_int_equal(sh("echo 'garbage' >> %s/a.dsjson", dir), 0);
  assert_int_equal(sh("%s import --store '%s' --agent B %s/a.dsjson "
                      ">%s/out 2>%s/err2 && grep -q 'line 51 skipped' "
                      "%s/err2 && grep -q 'imported 50 decisions' %s/out",
                      bin, url, dir, dir, dir, dir, dir),
                   0);
  assert_int_equal(sh("%s import --store '%s' --agent nosuch %s/a.dsjson "
                      ">/dev/null 2>&1",
                      bin, url, dir),
                   3 << 8);
  assert_int_equal(sh("%s export --store '%s' --agent A --format csv --from "
                      "1970-01-01T00:00:00Z --to 1970-01-02 | wc -l | "
                      "grep -qx 1",
                      bin, url),
                   0);
  sh("rm -rf %s", dir);
  adb__buf_free(&ds.out);
  util_store_drop(url);
}

/* ------------------------------------------------------------ HTTP */

/* The body of a chunked answer in raw (head and chunks), decoded; NULL
 * when raw is not a whole 200 chunked answer. */
static char *dechunk(const char *raw, const char *ctype, size_t *len) {
  const char *body = strstr(raw, "\r\n\r\n");
  if (strncmp(raw, "HTTP/1.1 200 ", 13) || !body ||
      !strcasestr(raw, "transfer-encoding: chunked") ||
      !strcasestr(raw, ctype) || strcasestr(raw, "content-length"))
    return NULL;
  body += 4;
  char *out = malloc(strlen(body) + 1);
  size_t n = 0;
  for (;;) {
    char *end;
    unsigned long sz = strtoul(body, &end, 16);
    if (end == body || strncmp(end, "\r\n", 2)) break;
    body = end + 2;
    if (sz == 0) {
      if (strcmp(body, "\r\n")) break;
      out[n] = '\0';
      *len = n;
      return out;
    }
    if (strlen(body) < sz + 2 || strncmp(body + sz, "\r\n", 2)) break;
    memcpy(out + n, body, sz);
    n += sz;
    body += sz + 2;
  }
  free(out);
  return NULL;
}

/* GET path on a fresh connection (Connection: close), read until the
 * server closes (malloc'd, NUL-terminated). */
static char *http_get_raw(int port, const char *path) {
  char req[512];
  snprintf(req, sizeof req,
           "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
           path);
  util_http_conn *c = malloc(sizeof *c);
  util_http_init(c, port);
  assert_int_equal(util_http_send(c, req, strlen(req), 10000), 0);
  adb__buf b = {0};
  for (;;) {
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    if (poll(&pf, 1, 30000) != 1) fail_msg("GET %s: no answer in 30 s", path);
    char tmp[65536];
    ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    adb__buf_append(&b, tmp, (size_t)n);
  }
  util_http_close(c);
  free(c);
  adb__buf_putc(&b, '\0');
  return b.p;
}

static char *read_file_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)n + 1);
  assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
  p[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return p;
}

/* One comparison: format, query range, content type; the CLI's file. */
typedef struct log_case {
  const char *fmt;
  char range[128];
  const char *ctype;
} log_case;

/* `agentdb export` of a case into dir/cli<i>.out (before the server holds
 * the SQLite file). */
static void cli_export_case(const char *bin, const char *url, const char *dir,
                            const log_case *k, int i) {
  char flags[256] = ""; /* "from=..&to=.." -> " --from .. --to .." */
  for (const char *p = k->range; *p;) {
    size_t kl = strcspn(p, "=");
    size_t vl = strcspn(p + kl + 1, "&");
    size_t o = strlen(flags);
    snprintf(flags + o, sizeof flags - o, " --%.*s %.*s", (int)kl, p, (int)vl,
             p + kl + 1);
    p += kl + 1 + vl;
    if (*p == '&') p++;
  }
  assert_int_equal(sh("%s export --store '%s' --agent A --format %s%s --out "
                      "%s/cli%d.out 2>%s/cli.err || cat %s/cli.err",
                      bin, url, k->fmt, flags, dir, i, dir, dir),
                   0);
}

/* The route's body is the CLI export's file, byte for byte. */
static void expect_same_as_cli(const tsrv *srv, const char *dir,
                               const log_case *k, int i) {
  char q[256], path[300];
  snprintf(q, sizeof q, "/v1/agents/A/log?format=%s%s%s", k->fmt,
           k->range[0] ? "&" : "", k->range);
  snprintf(path, sizeof path, "%s/cli%d.out", dir, i);
  size_t want_len, got_len = 0;
  char *want = read_file_all(path, &want_len);
  char *raw = http_get_raw(srv->port, q);
  char *got = dechunk(raw, k->ctype, &got_len);
  if (!got && !(want_len == 0 && strstr(raw, "Content-Length: 0\r\n")))
    fail_msg("GET %s (%zu bytes, the CLI's %zu): %.300s ... %s", q, strlen(raw),
             want_len, raw, raw + (strlen(raw) > 200 ? strlen(raw) - 200 : 0));
  if (got) {
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
  }
  free(raw);
  free(got);
  free(want);
}

/* A client with a small receive window that reads the first bytes of
 * the log and closes: the server's queue for it fills, its producer
 * blocks, and only the close can free it. */
static void leave_after_first_bytes(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const char *req = "GET /v1/agents/A/log HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
  char first[17];
  size_t got = 0;
  while (got < sizeof first) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 10000), 1);
    ssize_t n = recv(fd, first + got, sizeof first - got, 0);
    assert_true(n > 0);
    got += (size_t)n;
  }
  assert_memory_equal(first, "HTTP/1.1 200 OK\r\n", 17);
  usleep(20000); /* let the server's queue fill */
  close(fd);
}

/* GET /v1/agents/{agent}/log streams what `agentdb export` writes; a
 * client that goes away mid-answer stops its producer and the server goes
 * on answering; bad parameters are JSON errors before any byte. */
static void http_log_streams_the_export(void **state) {
  const char *kind = *state;
  const char *bin = getenv("ADB_BIN");
  if (!bin) {
    printf("skipped: ADB_BIN not set\n");
    skip();
  }
  char *url = util_store_fresh_url(kind);
  adb *db = open_db(url, 5);
  put_agent(db, "A", ADB_ALGO_BETA);
  put_agent(db, "B", ADB_ALGO_BETA);
  /* Over a store page (2,000 rows), and over the server's queue. */
  int n = getenv("ADB_TEST_QUICK") ? 2500 : 5000;
  run(db, "A", n, 1, 7, "h");
  /* A range: the first rows' times, from the JSON lines. */
  collect all;
  collect_init(&all, ADB__LOGFMT_JSONL);
  assert_int_equal(db->store->m->log_scan(db->store, "A", INT64_MIN, INT64_MAX,
                                          adb__logw_row, all.w),
                   0);
  collect_done(&all);
  adb_close(db);
  assert_int_equal(all.rows, n);
  const char *ts = strstr(all.out.p, "\"ts_ms\":");
  assert_non_null(ts);
  long long t0 = atoll(ts + 8);
  adb__buf_free(&all.out);
  log_case cases[] = {{"dsjson", "", "application/x-ndjson"},
                      {"jsonl", "", "application/x-ndjson"},
                      {"csv", "", "text/csv"},
                      {"jsonl", "", "application/x-ndjson"},
                      {"csv", "from=1970-01-01&to=1970-01-02", "text/csv"}};
  snprintf(cases[3].range, sizeof cases[3].range, "from=%lld&to=%lld", t0,
           t0 + 2);
  int nc = (int)(sizeof cases / sizeof cases[0]);
  char dir[] = "/tmp/adb_export_XXXXXX";
  assert_non_null(mkdtemp(dir));
  for (int i = 0; i < nc; i++)
    cli_export_case(bin, url, dir, &cases[i], i);
  tsrv srv = {0};
  const char *extra[] = {"--store", url, "--write-threads", "4", NULL};
  assert_int_equal(tsrv_start(&srv, extra), 0);
  for (int i = 0; i < nc; i++)
    expect_same_as_cli(&srv, dir, &cases[i], i);
  /* More clients that leave after the first bytes than there are pool
   * threads (4): a producer left blocked would take a thread for good,
   * and the last full answer below would never come. */
  for (int i = 0; i < 8; i++)
    leave_after_first_bytes(srv.port);
  expect_same_as_cli(&srv, dir, &cases[0], 0);
  /* Refused before the first byte, as JSON. */
  static const struct {
    const char *path;
    int status;
    const char *field;
  } bad[] = {{"/v1/agents/A/log?format=xml", 400, "format"},
             {"/v1/agents/A/log?from=yesterday", 400, "from"},
             {"/v1/agents/A/log?to=1e99", 400, "to"},
             {"/v1/agents/A/log?from=5&to=4", 400, "from"},
             {"/v1/agents/A/log?limit=3", 400, NULL},
             {"/v1/agents/A/log?format=csv&format=csv", 400, "format"},
             {"/v1/agents/nosuch/log", 404, NULL}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    util_http_resp r;
    assert_int_equal(
        util_http_once(srv.port, "GET", bad[i].path, NULL, NULL, 10000, &r), 0);
    if (r.status != bad[i].status || !r.json)
      fail_msg("%s -> %d %s", bad[i].path, r.status, r.body ? r.body : "");
    if (bad[i].field)
      assert_string_equal(util_http_err_field(&r), bad[i].field);
    util_http_resp_free(&r);
  }
  /* An agent without decisions: an empty answer. */
  util_http_resp r;
  assert_int_equal(util_http_once(srv.port, "GET",
                                  "/v1/agents/B/log?format=jsonl", NULL, NULL,
                                  10000, &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  util_http_resp_free(&r);
  assert_int_equal(tsrv_stop(&srv, 15), 0);
  tsrv_cleanup(&srv);
  sh("rm -rf %s", dir);
  util_store_drop(url);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest pure[] = {
      cmocka_unit_test(dsjson_bad_rows_are_reported_and_skipped),
      cmocka_unit_test(sample_file_parses_back),
      cmocka_unit_test(cli_export_and_import),
  };
  int fails = cmocka_run_group_tests_name("log formats", pure, NULL, NULL);
  const char *kinds[4];
  int nk = util_store_kinds(kinds, 4);
  for (int i = 0; i < nk; i++) {
    struct CMUnitTest t[] = {
        cmocka_unit_test_prestate(dsjson_round_trip, (void *)kinds[i]),
        cmocka_unit_test_prestate(import_teaches_a_fresh_agent,
                                  (void *)kinds[i]),
        cmocka_unit_test_prestate(http_log_streams_the_export,
                                  (void *)kinds[i]),
    };
    printf("[ store %s ]\n", kinds[i]);
    fails += cmocka_run_group_tests_name(kinds[i], t, NULL, NULL);
  }
  return fails ? 1 : 0;
}
