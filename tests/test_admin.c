/*
 * test_admin.c — the admin calls on every store backend the build has
 * (SQLite always, PostgreSQL when AGENTDB_TEST_PG_URL is set), each with
 * the in-process cache and, when AGENTDB_TEST_REDIS_URL is set, Redis:
 * agents listed by page, deleted and reset; actions listed and deleted;
 * a user inspected and erased, leaving nothing in any table (read with
 * SQL behind the library's back), in Redis (every key and value scanned),
 * in the vector indexes (searched) or in their snapshot and the SQLite
 * files (read as bytes), with the agent-wide posterior left exactly as if
 * the user had never rewarded anything.
 */
#define _GNU_SOURCE /* memmem */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "agentdb.h"
#include "util_store.h"

typedef struct combo {
  const char *store, *cache; /* store kind; cache URL */
} combo;

typedef struct fixture {
  const combo *c;
  char *url;
  char index_dir[256];
  adb *db;
  char user[64]; /* unique per run: Redis is shared */
} fixture;

static adb *open_db(fixture *f) {
  adb_config cfg = {.store_url = f->url,
                    .cache_url = f->c->cache,
                    .seed = 7,
                    .index_dir = f->index_dir,
                    .write_timeout_ms = 5000};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) fprintf(stderr, "adb_open(%s): %s\n", f->url, err);
  assert_int_equal(rc, ADB_OK);
  return db;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->c = *state;
  f->url = util_store_fresh_url(f->c->store);
  assert_non_null(f->url);
  snprintf(f->index_dir, sizeof f->index_dir, "/tmp/adb-admin-idx-%d-%p",
           (int)getpid(), (void *)f);
  snprintf(f->user, sizeof f->user, "erase-me.%d.%lx", (int)getpid(),
           (unsigned long)(uintptr_t)f);
  f->db = open_db(f);
  *state = f;
  return 0;
}

static void rm_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char p[512];
  while (d && (de = readdir(d)))
    if (de->d_name[0] != '.') {
      snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
      unlink(p);
    }
  if (d) closedir(d);
  rmdir(dir);
}

static int teardown(void **state) {
  fixture *f = *state;
  adb_close(f->db);
  util_store_drop(f->url);
  rm_dir(f->index_dir);
  free(f);
  return 0;
}

static void make_agent(adb *db, const char *id, int n_actions) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  snprintf(cfg.id, sizeof cfg.id, "%s", id);
  cfg.n_context_keys = 1;
  snprintf(cfg.context_keys[0], sizeof cfg.context_keys[0], "daypart");
  assert_int_equal(adb_agent_put(db, &cfg), ADB_OK);
  adb_action acts[16];
  char ids[16][16];
  for (int i = 0; i < n_actions; i++) {
    snprintf(ids[i], sizeof ids[i], "a%d", i);
    acts[i] = (adb_action){.id = ids[i], .metadata_json = "{\"k\":1}"};
  }
  if (n_actions)
    assert_int_equal(adb_actions_put(db, id, acts, n_actions), ADB_OK);
}

/* One decision for user and its reward r (id rid). */
static void decide_reward(adb *db, const char *agent, const char *user,
                          const char *daypart, const char *rid, double r) {
  const char *cands[] = {"a0", "a1", "a2"};
  adb_kv ctx[] = {{"daypart", daypart}};
  adb_decide_req q = {.agent_id = agent,
                      .user_id = user,
                      .candidates = cands,
                      .n_candidates = 3,
                      .context = ctx,
                      .n_context = 1};
  adb_decision d = {0};
  assert_int_equal(adb_decide(db, &q, &d), ADB_OK);
  assert_int_equal(adb_flush(db), ADB_OK);
  adb_reward_req w = {.agent_id = agent,
                      .reward_id = rid,
                      .event_id = d.event_id,
                      .has_reward = 1,
                      .reward = r};
  adb_reward_result res;
  assert_int_equal(adb_reward(db, &w, &res), ADB_OK);
  assert_true(res.applied);
}

/* n and sum of (agent, user, state) over every action. */
static void policy_totals(adb *db, const char *agent, const char *user,
                          const char *daypart, int64_t *n, double *sum) {
  char key[ADB_STATE_KEY_LEN + 1];
  adb_kv ctx[] = {{"daypart", daypart}};
  assert_int_equal(adb_state_key(db, agent, ctx, 1, NULL, 0, key), ADB_OK);
  adb_arm_posterior arms[16];
  int k = 0;
  assert_int_equal(adb_policy_get(db, agent, user, key, arms, 16, &k), ADB_OK);
  *n = 0;
  *sum = 0;
  for (int i = 0; i < k; i++) {
    *n += arms[i].n;
    *sum += arms[i].sum;
  }
}

static int64_t count(fixture *f, const char *fmt, ...) {
  char sql[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  int64_t v = util_store_query_int(f->url, sql);
  assert_true(v != INT64_MIN);
  return v;
}

/* ---------------------------------------------------------------- agents */

static void agents_are_listed_by_page_in_id_order(void **state) {
  fixture *f = *state;
  const char *ids[] = {"c", "a", "e", "b", "d"};
  for (int i = 0; i < 5; i++)
    make_agent(f->db, ids[i], 0);
  char page[2][ADB_ID_MAX + 1];
  char seen[8][ADB_ID_MAX + 1 + 160];
  int total = 0, n = 0;
  const char *after = NULL;
  char last[ADB_ID_MAX + 1] = "";
  do {
    assert_int_equal(adb_agents_list(f->db, after, 2, page, &n), ADB_OK);
    for (int i = 0; i < n; i++)
      snprintf(seen[total++], sizeof seen[0], "%s", page[i]);
    if (n) snprintf(last, sizeof last, "%s", page[n - 1]);
    after = last;
  } while (n == 2);
  assert_int_equal(total, 5);
  for (int i = 0; i < 5; i++) {
    char want[2] = {(char)('a' + i), 0};
    assert_string_equal(seen[i], want);
  }
  assert_int_equal(adb_agents_list(f->db, NULL, 0, page, &n), ADB_EINVAL);
  assert_int_equal(adb_agents_list(f->db, "bad/id", 2, page, &n), ADB_EINVAL);
}

static void deleting_an_agent_removes_all_its_rows_and_no_other(void **state) {
  fixture *f = *state;
  make_agent(f->db, "gone", 3);
  make_agent(f->db, "kept", 3);
  decide_reward(f->db, "gone", "u1", "evening", "r1", 1.0);
  decide_reward(f->db, "kept", "u1", "evening", "r1", 1.0);
  float e[4] = {1, 2, 3, 4};
  adb_episode ep = {.user_id = "u1",
                    .embedding = e,
                    .embedding_dim = 4,
                    .action = "a0",
                    .reward = 1};
  assert_int_equal(adb_episodes_record(f->db, "gone", &ep, 1), ADB_OK);
  assert_int_equal(adb_episodes_record(f->db, "kept", &ep, 1), ADB_OK);
  adb_pattern p = {.value_json = "{}", .embedding = e, .embedding_dim = 4};
  snprintf(p.id, sizeof p.id, "p1");
  assert_int_equal(adb_pattern_put(f->db, "gone", &p), ADB_OK);
  assert_int_equal(adb_flush(f->db), ADB_OK);

  assert_int_equal(adb_agent_delete(f->db, "gone"), ADB_OK);
  static const char *const tables[] = {
      "agent_metadata",   "actions",
      "rl_policies",      "decisions",
      "reward_signals",   "agent_episodes",
      "learned_patterns", "performance_metrics"};
  for (int i = 0; i < 8; i++) {
    int64_t left =
        count(f, "SELECT count(*) FROM %s WHERE agent_id = 'gone'", tables[i]);
    if (left)
      fprintf(stderr, "%s: %lld rows left (decisions %lld, hits %lld)\n",
              tables[i], (long long)left,
              (long long)count(f,
                               "SELECT max(decisions) FROM %s WHERE "
                               "agent_id = 'gone'",
                               tables[i]),
              (long long)count(f,
                               "SELECT max(cache_hits + cache_misses) "
                               "FROM %s WHERE agent_id = 'gone'",
                               tables[i]));
    assert_int_equal(left, 0);
    if (i != 7 && i != 6) /* kept has no pattern; rollups come later */
      assert_true(count(f, "SELECT count(*) FROM %s WHERE agent_id = 'kept'",
                        tables[i]) > 0);
  }
  if (!strcmp(f->c->store, "postgresql"))
    assert_int_equal(
        count(f, "SELECT count(*) FROM reward_ids WHERE agent_id = 'gone'"), 0);
  adb_agent_config cfg;
  assert_int_equal(adb_agent_get(f->db, "gone", &cfg), ADB_ENOTFOUND);
  assert_int_equal(adb_agent_delete(f->db, "gone"), ADB_ENOTFOUND);
  adb_hit hits[4];
  int n = 0;
  assert_int_equal(adb_episode_similar(f->db, "gone", e, 4, 4, NULL, hits, &n),
                   ADB_ENOTFOUND);
  /* Re-created, the agent starts empty: no episode, no posterior. */
  make_agent(f->db, "gone", 3);
  assert_int_equal(adb_episode_similar(f->db, "gone", e, 4, 4, NULL, hits, &n),
                   ADB_OK);
  assert_int_equal(n, 0);
  assert_int_equal(adb_pattern_search(f->db, "gone", e, 4, 4, hits, &n),
                   ADB_OK);
  assert_int_equal(n, 0);
  int64_t pn;
  double ps;
  policy_totals(f->db, "gone", "*", "evening", &pn, &ps);
  assert_int_equal(pn, 0);
  policy_totals(f->db, "kept", "*", "evening", &pn, &ps);
  assert_int_equal(pn, 1);
  /* The rollups of the deleted agent are not written back. */
  usleep(1500 * 1000);
  assert_int_equal(adb_flush(f->db), ADB_OK);
  assert_int_equal(
      count(f, "SELECT count(*) FROM performance_metrics WHERE agent_id = "
               "'gone' AND (decisions > 0 OR rewards > 0)"),
      0);
}

static void
a_reset_agent_keeps_config_and_catalogue_and_learns_anew(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 3);
  for (int i = 0; i < 4; i++) {
    char rid[16];
    snprintf(rid, sizeof rid, "r%d", i);
    decide_reward(f->db, "ag", "u1", "evening", rid, 1.0);
  }
  int64_t n;
  double sum;
  policy_totals(f->db, "ag", "*", "evening", &n, &sum);
  assert_int_equal(n, 4);
  assert_int_equal(adb_agent_reset(f->db, "ag"), ADB_OK);
  adb_agent_config cfg;
  assert_int_equal(adb_agent_get(f->db, "ag", &cfg), ADB_OK);
  assert_string_equal(cfg.context_keys[0], "daypart");
  adb_action_info *acts;
  int na;
  assert_int_equal(adb_actions_list(f->db, "ag", &acts, &na), ADB_OK);
  assert_int_equal(na, 3);
  adb_actions_free(acts, na);
  assert_int_equal(count(f, "SELECT count(*) FROM rl_policies"), 0);
  assert_int_equal(count(f, "SELECT count(*) FROM decisions"), 0);
  assert_int_equal(count(f, "SELECT count(*) FROM reward_signals"), 0);
  /* Cached posteriors went with the rows: the next reward counts from 0. */
  decide_reward(f->db, "ag", "u1", "evening", "r0", 1.0);
  policy_totals(f->db, "ag", "*", "evening", &n, &sum);
  assert_int_equal(n, 1);
  policy_totals(f->db, "ag", "u1", "evening", &n, &sum);
  assert_int_equal(n, 1);
}

static void actions_are_listed_and_deleted_one_by_one(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 3);
  adb_action_info *v;
  int n;
  assert_int_equal(adb_actions_list(f->db, "ag", &v, &n), ADB_OK);
  assert_int_equal(n, 3);
  assert_string_equal(v[0].id, "a0");
  assert_string_equal(v[0].metadata_json, "{\"k\":1}");
  adb_actions_free(v, n);
  assert_int_equal(adb_action_delete(f->db, "ag", "a1"), ADB_OK);
  assert_int_equal(adb_action_delete(f->db, "ag", "a1"), ADB_ENOTFOUND);
  assert_int_equal(adb_actions_list(f->db, "ag", &v, &n), ADB_OK);
  assert_int_equal(n, 2);
  assert_string_equal(v[1].id, "a2");
  adb_actions_free(v, n);
  /* The deleted action is no longer chosen. */
  const char *cands[] = {"a1"};
  adb_decide_req q = {
      .agent_id = "ag", .user_id = "u", .candidates = cands, .n_candidates = 1};
  adb_decision d = {0};
  assert_int_not_equal(adb_decide(f->db, &q, &d), ADB_OK);
  assert_int_equal(adb_actions_list(f->db, "none", &v, &n), ADB_ENOTFOUND);
}

/* ----------------------------------------------------------------- users */

/* Every Redis key, and every value, that holds needle. */
static int redis_mentions(const char *cache_url, const char *needle) {
  int port = 0, dbn = 0;
  if (sscanf(cache_url, "redis://127.0.0.1:%d/%d", &port, &dbn) < 1) return 0;
  redisContext *r = redisConnect("127.0.0.1", port);
  assert_true(r && !r->err);
  redisReply *sel = redisCommand(r, "SELECT %d", dbn);
  freeReplyObject(sel);
  int found = 0;
  char cursor[32] = "0";
  do {
    redisReply *s = redisCommand(r, "SCAN %s COUNT 1000", cursor);
    assert_true(s && s->type == REDIS_REPLY_ARRAY && s->elements == 2);
    snprintf(cursor, sizeof cursor, "%s", s->element[0]->str);
    for (size_t i = 0; i < s->element[1]->elements; i++) {
      const char *k = s->element[1]->element[i]->str;
      if (strstr(k, needle)) {
        fprintf(stderr, "redis key %s mentions %s\n", k, needle);
        found++;
      }
      redisReply *d = redisCommand(r, "DUMP %s", k);
      if (d && d->type == REDIS_REPLY_STRING &&
          memmem(d->str, d->len, needle, strlen(needle))) {
        fprintf(stderr, "redis value of %s mentions %s\n", k, needle);
        found++;
      }
      freeReplyObject(d);
    }
    freeReplyObject(s);
  } while (strcmp(cursor, "0"));
  redisFree(r);
  return found;
}

/* Files of dir (and the SQLite file and its WAL) that hold the bytes. */
static int file_mentions(const char *path, const void *b, size_t n) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return 0;
  fseek(fp, 0, SEEK_END);
  long len = ftell(fp);
  rewind(fp);
  char *buf = malloc(len > 0 ? (size_t)len : 1);
  size_t got = fread(buf, 1, (size_t)(len > 0 ? len : 0), fp);
  fclose(fp);
  int hit = memmem(buf, got, b, n) != NULL;
  if (hit) fprintf(stderr, "%s holds the erased bytes\n", path);
  free(buf);
  return hit;
}

static int dir_mentions(const char *dir, const void *b, size_t n) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int hits = 0;
  char p[512];
  while (d && (de = readdir(d)))
    if (de->d_name[0] != '.') {
      snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
      hits += file_mentions(p, b, n);
    }
  if (d) closedir(d);
  return hits;
}

static void user_data(fixture *f, const char *user, float *emb) {
  float e[4] = {emb[0], emb[1], emb[2], emb[3]};
  assert_int_equal(adb_user_state_put(f->db, user, e, 4, "{\"tz\":\"CET\"}"),
                   ADB_OK);
  char sid[80];
  snprintf(sid, sizeof sid, "s.%s", user);
  adb_episode ep = {.user_id = user,
                    .session_id = sid,
                    .embedding = e,
                    .embedding_dim = 4,
                    .action = "a0",
                    .reward = 0.5};
  for (const char *const *ag = (const char *const[]){"ag1", "ag2", NULL}; *ag;
       ag++) {
    assert_int_equal(adb_episodes_record(f->db, *ag, &ep, 1), ADB_OK);
    for (int i = 0; i < 3; i++) {
      char rid[160];
      snprintf(rid, sizeof rid, "%s.r%d", user, i);
      decide_reward(f->db, *ag, user, i ? "evening" : "morning", rid,
                    0.25 * (i + 1));
    }
  }
  assert_int_equal(adb_session_put(f->db, sid, "{\"page\":1}", 600), ADB_OK);
}

static void erasing_a_user_leaves_no_trace_and_exact_aggregates(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag1", 3);
  make_agent(f->db, "ag2", 3);
  float me[4] = {0.9f, -0.3f, 0.2f, 0.7f}, other[4] = {0.1f, 0.8f, -0.5f, 0.3f};
  user_data(f, f->user, me);
  user_data(f, "other", other);
  assert_int_equal(adb_flush(f->db), ADB_OK);

  adb_user_summary s;
  assert_int_equal(adb_user_summary_get(f->db, f->user, &s), ADB_OK);
  assert_int_equal(s.decisions, 6);
  assert_int_equal(s.rewards, 6);
  assert_int_equal(s.episodes, 2);
  assert_true(s.policy_rows >= 2);
  assert_int_equal(s.has_state, 1);
  assert_int_equal(s.sessions, 1);
  assert_int_equal(s.n_agents, 2);
  assert_string_equal(s.agents[1], "ag2");
  adb_free(s.agents);

  /* What the agent-wide rows must come back to: the other user's sums. */
  int64_t on[2], sn[2];
  double os[2], ss[2];
  policy_totals(f->db, "ag1", "other", "evening", &on[0], &os[0]);
  policy_totals(f->db, "ag1", "*", "evening", &sn[0], &ss[0]);
  policy_totals(f->db, "ag1", "other", "morning", &on[1], &os[1]);
  assert_int_equal(sn[0], 2 * on[0]);

  assert_int_equal(adb_user_erase(f->db, f->user, &s), ADB_OK);
  assert_int_equal(s.decisions, 6);
  assert_int_equal(s.rewards, 6);
  adb_free(s.agents);

  /* The store: no row of the user in any table. */
  static const char *const tables[] = {"decisions", "reward_signals",
                                       "agent_episodes", "rl_policies",
                                       "user_states"};
  for (int i = 0; i < 5; i++) {
    assert_int_equal(count(f, "SELECT count(*) FROM %s WHERE user_id = '%s'",
                           tables[i], f->user),
                     0);
    assert_true(count(f, "SELECT count(*) FROM %s WHERE user_id = 'other'",
                      tables[i]) > 0);
  }
  if (!strcmp(f->c->store, "postgresql"))
    assert_int_equal(count(f,
                           "SELECT count(*) FROM reward_ids WHERE reward_id "
                           "LIKE '%s%%'",
                           f->user),
                     0);
  /* The agent-wide posterior: exactly the other user's. */
  policy_totals(f->db, "ag1", "*", "evening", &sn[0], &ss[0]);
  policy_totals(f->db, "ag1", "*", "morning", &sn[1], &ss[1]);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(sn[i], on[i]);
    assert_true(ss[i] == os[i]);
  }
  assert_int_equal(adb_user_summary_get(f->db, f->user, &s), ADB_OK);
  assert_int_equal(s.decisions + s.rewards + s.episodes + s.policy_rows +
                       s.has_state + s.sessions + s.n_agents,
                   0);
  adb_free(s.agents);

  /* The caches: its session is gone, and Redis holds nothing of it. */
  char sid[80], *js = NULL;
  snprintf(sid, sizeof sid, "s.%s", f->user);
  assert_int_equal(adb_session_get(f->db, sid, &js), ADB_ENOTFOUND);
  assert_int_equal(adb_session_get(f->db, "s.other", &js), ADB_OK);
  adb_free(js);
  if (!strncmp(f->c->cache, "redis://", 8))
    assert_int_equal(redis_mentions(f->c->cache, f->user), 0);

  /* The vector indexes: neither its state nor its episodes are found. */
  adb_hit hits[8];
  int n = 0;
  assert_int_equal(adb_user_similar(f->db, me, 4, 8, hits, &n), ADB_OK);
  assert_int_equal(n, 1);
  assert_string_equal(hits[0].id, "other");
  assert_int_equal(
      adb_episode_similar(f->db, "ag1", me, 4, 8, f->user, hits, &n), ADB_OK);
  assert_int_equal(n, 0);
  assert_int_equal(adb_episode_similar(f->db, "ag2", me, 4, 8, NULL, hits, &n),
                   ADB_OK);
  assert_int_equal(n, 1);
  assert_string_equal(hits[0].user_id, "other");

  /* On disk: the snapshot written at close, and the SQLite files, hold
   * neither its id nor its (normalised) vector. */
  adb_close(f->db);
  f->db = NULL;
  float norm[4];
  double len = 0;
  for (int i = 0; i < 4; i++)
    len += (double)me[i] * me[i];
  for (int i = 0; i < 4; i++)
    norm[i] = (float)(me[i] / sqrt(len));
  assert_true(dir_mentions(f->index_dir, "other", 5) > 0); /* can see */
  assert_int_equal(dir_mentions(f->index_dir, f->user, strlen(f->user)), 0);
  assert_int_equal(dir_mentions(f->index_dir, norm, sizeof norm), 0);
  assert_int_equal(dir_mentions(f->index_dir, me, sizeof me), 0);
  char path[512], wal[600];
  if (util_store_sqlite_path(f->url, path, sizeof path) == 0) {
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_int_equal(file_mentions(path, f->user, strlen(f->user)), 0);
    assert_int_equal(file_mentions(wal, f->user, strlen(f->user)), 0);
    assert_int_equal(file_mentions(path, me, sizeof me), 0);
  }
  /* Reopened from the snapshot, the indexes still lack it. */
  f->db = open_db(f);
  assert_int_equal(adb_user_similar(f->db, me, 4, 8, hits, &n), ADB_OK);
  assert_int_equal(n, 1);
  assert_string_equal(hits[0].id, "other");
}

static void erasing_an_unknown_user_is_a_no_op(void **state) {
  fixture *f = *state;
  adb_user_summary s;
  assert_int_equal(adb_user_erase(f->db, "nobody", &s), ADB_OK);
  assert_int_equal(s.decisions + s.rewards + s.n_agents, 0);
  assert_int_equal(adb_user_erase(f->db, "*", &s), ADB_EINVAL);
  assert_int_equal(adb_user_erase(f->db, "a/b", &s), ADB_EINVAL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(agents_are_listed_by_page_in_id_order),
      T(deleting_an_agent_removes_all_its_rows_and_no_other),
      T(a_reset_agent_keeps_config_and_catalogue_and_learns_anew),
      T(actions_are_listed_and_deleted_one_by_one),
      T(erasing_a_user_leaves_no_trace_and_exact_aggregates),
      T(erasing_an_unknown_user_is_a_no_op),
  };
  const char *kinds[4];
  int nk = util_store_kinds(kinds, 4), failed = 0;
  const char *redis = getenv("AGENTDB_TEST_REDIS_URL");
  if (!redis || !*redis)
    fprintf(stderr, "test_admin: AGENTDB_TEST_REDIS_URL not set: the Redis "
                    "cache is not tested (scripts/redis-test.sh)\n");
  static combo combos[8];
  for (int k = 0; k < nk; k++) {
    for (int c = 0; c < 2; c++) {
      if (c == 1 && (!redis || !*redis)) continue;
      combos[2 * k + c] = (combo){kinds[k], c ? redis : "mem://"};
      struct CMUnitTest t[sizeof tests / sizeof *tests];
      for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        t[i] = tests[i];
        t[i].initial_state = &combos[2 * k + c];
      }
      char name[64];
      snprintf(name, sizeof name, "admin/%s+%s", kinds[k], c ? "redis" : "mem");
      failed +=
          _cmocka_run_group_tests(name, t, sizeof t / sizeof *t, NULL, NULL);
    }
  }
  return failed;
}
