/*
 * test_coordinator.c — the public API end to end on every store backend
 * the build has (SQLite always, PostgreSQL when AGENTDB_TEST_PG_URL is
 * set): decide/reward loop, exactly-once rewards, no lost updates under
 * concurrency, the write queue's limits, and the records around them.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "agentdb.h"
#include "util_store.h"

typedef struct fixture {
  char *url;
  adb *db;
} fixture;

static const char *kind_of(void **state) {
  return (const char *)*state;
}

static adb *open_db(const char *url, adb_durability dur, int queue_cap) {
  adb_config cfg = {.store_url = url,
                    .durability = dur,
                    .queue_capacity = queue_cap,
                    .seed = 42,
                    .write_timeout_ms = 2000};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) fprintf(stderr, "adb_open(%s): %s\n", url, err);
  assert_int_equal(rc, ADB_OK);
  return db;
}

static void make_agent(adb *db, const char *id, int n_actions) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  snprintf(cfg.id, sizeof cfg.id, "%s", id);
  cfg.n_context_keys = 1;
  snprintf(cfg.context_keys[0], sizeof cfg.context_keys[0], "daypart");
  assert_int_equal(adb_agent_put(db, &cfg), ADB_OK);
  if (!n_actions) return;
  adb_action acts[64];
  char ids[64][16];
  for (int i = 0; i < n_actions; i++) {
    snprintf(ids[i], sizeof ids[i], "a%d", i);
    acts[i] = (adb_action){.id = ids[i]};
  }
  assert_int_equal(adb_actions_put(db, id, acts, n_actions), ADB_OK);
}

static int64_t arm_n(adb *db, const char *agent, const char *user,
                     const char *state, const char *action, double *sum) {
  adb_arm_posterior arms[64];
  int n = 0;
  assert_int_equal(adb_policy_get(db, agent, user, state, arms, 64, &n),
                   ADB_OK);
  for (int i = 0; i < n && i < 64; i++)
    if (!strcmp(arms[i].action, action)) {
      if (sum) *sum = arms[i].sum;
      return arms[i].n;
    }
  if (sum) *sum = 0;
  return 0;
}

static void empty_state(adb *db, const char *agent, char key[65]) {
  assert_int_equal(adb_state_key(db, agent, NULL, 0, NULL, 0, key), ADB_OK);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->url = util_store_fresh_url(kind_of(state));
  if (!f->url) return -1;
  f->db = open_db(f->url, ADB_DURABILITY_SYNC, 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  assert_int_equal(adb_close(f->db), ADB_OK);
  util_store_drop(f->url);
  free(f);
  return 0;
}

static void
decide_then_reward_updates_user_and_agent_wide_policy(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 5);
  const char *cands[] = {"a0", "a1", "a2", "a3", "a4"};
  adb_kv ctx = {"daypart", "evening"};
  adb_ranked ranking[5];
  adb_decision d = {.ranking = ranking, .ranking_cap = 5};
  adb_decide_req req = {.agent_id = "ag",
                        .user_id = "u1",
                        .candidates = cands,
                        .n_candidates = 5,
                        .context = &ctx,
                        .n_context = 1,
                        .k = 3};
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_OK);
  assert_true(d.propensity > 0 && d.propensity <= 1);
  assert_int_equal(d.n_ranking, 3);
  assert_string_equal(d.ranking[0].action, d.action);
  assert_true(d.ranking[0].score >= d.ranking[1].score);
  assert_int_equal(strlen(d.state_key), 64);

  adb_reward_req rr = {.agent_id = "ag",
                       .reward_id = "r1",
                       .event_id = d.event_id,
                       .has_reward = 1,
                       .reward = 0.75};
  adb_reward_result res;
  assert_int_equal(adb_reward(f->db, &rr, &res), ADB_OK);
  assert_int_equal(res.applied, 1);
  assert_true(res.reward == 0.75);
  double sum;
  assert_int_equal(arm_n(f->db, "ag", "u1", d.state_key, d.action, &sum), 1);
  assert_true(sum == 0.75);
  assert_int_equal(arm_n(f->db, "ag", "*", d.state_key, d.action, NULL), 1);
}

static void
same_reward_id_is_applied_once_and_answers_the_first_reward(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 2);
  char sk[65];
  empty_state(f->db, "ag", sk);
  adb_reward_req rr = {.agent_id = "ag",
                       .reward_id = "dup",
                       .user_id = "u",
                       .action = "a1",
                       .state_key = sk,
                       .has_reward = 1,
                       .reward = 0.5};
  adb_reward_result res;
  for (int i = 0; i < 5; i++) {
    assert_int_equal(adb_reward(f->db, &rr, &res), ADB_OK);
    assert_int_equal(res.applied, i == 0);
    assert_true(res.reward == 0.5);
  }
  assert_int_equal(arm_n(f->db, "ag", "u", sk, "a1", NULL), 1);
}

static void same_reward_id_with_a_different_body_is_a_conflict(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 2);
  char sk[65];
  empty_state(f->db, "ag", sk);
  adb_reward_req rr = {.agent_id = "ag",
                       .reward_id = "x",
                       .user_id = "u",
                       .action = "a1",
                       .state_key = sk,
                       .has_reward = 1,
                       .reward = 0.5};
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_OK);
  rr.reward = 0.6;
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_ECONFLICT);
  rr.reward = 0.5;
  rr.action = "a0";
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_ECONFLICT);
  assert_int_equal(arm_n(f->db, "ag", "u", sk, "a1", NULL), 1);
  assert_int_equal(arm_n(f->db, "ag", "u", sk, "a0", NULL), 0);
}

typedef struct hammer_arg {
  adb *db;
  int thread, count;
  const char *sk;
  int failures;
} hammer_arg;

static void *hammer(void *p) {
  hammer_arg *h = p;
  for (int i = 0; i < h->count; i++) {
    char id[64];
    snprintf(id, sizeof id, "t%d-%d", h->thread, i);
    adb_reward_req rr = {.agent_id = "ag",
                         .reward_id = id,
                         .user_id = "u",
                         .action = "a0",
                         .state_key = h->sk,
                         .has_reward = 1,
                         .reward = (i % 1000) / 1000.0};
    adb_reward_result res;
    if (adb_reward(h->db, &rr, &res) != ADB_OK || res.applied != 1)
      h->failures++;
  }
  return NULL;
}

/* DESIGN.md: 16 threads x 10,000 rewards on one arm give exactly 160,000. */
static void sixteen_threads_rewarding_one_arm_lose_no_update(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 1);
  char sk[65];
  empty_state(f->db, "ag", sk);
  int per = getenv("ADB_TEST_QUICK") ? 1000 : 10000;
  pthread_t th[16];
  hammer_arg args[16];
  for (int t = 0; t < 16; t++) {
    args[t] = (hammer_arg){f->db, t, per, sk, 0};
    pthread_create(&th[t], NULL, hammer, &args[t]);
  }
  for (int t = 0; t < 16; t++) {
    pthread_join(th[t], NULL);
    assert_int_equal(args[t].failures, 0);
  }
  double sum;
  assert_int_equal(arm_n(f->db, "ag", "u", sk, "a0", &sum), 16 * per);
  /* each thread sent (i % 1000)/1000 for i < per: 16 * per/1000 * 499.5 */
  double want = 16.0 * (per / 1000) * 499.5;
  assert_true(fabs(sum - want) < 1e-6);
  assert_int_equal(arm_n(f->db, "ag", "*", sk, "a0", NULL), 16 * per);
}

static void unknown_agent_and_bad_ids_are_refused(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 2);
  adb_reward_req rr = {.agent_id = "ag",
                       .reward_id = "r",
                       .event_id = "nope",
                       .has_reward = 1,
                       .reward = 1};
  /* An unknown event may be a decision not visible yet: it waits. */
  adb_reward_result res = {0};
  assert_int_equal(adb_reward(f->db, &rr, &res), ADB_OK);
  assert_int_equal(res.awaiting_decision, 1);
  assert_int_equal(res.applied, 0);
  rr.agent_id = "ghost";
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_ENOTFOUND);
  rr.agent_id = "ag";
  rr.reward_id = "'; DROP TABLE x; --";
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_EINVAL);
  const char *cands[] = {"a0", "a0"};
  adb_decision d = {0};
  adb_decide_req req = {
      .agent_id = "ag", .user_id = "u", .candidates = cands, .n_candidates = 2};
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL); /* duplicate */
  req.n_candidates = 0;
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL);
  req.n_candidates = 1;
  req.k = 2;
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL);
  req.k = 1;
  req.user_id = "a/b";
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL);
  rr.reward_id = "ok";
  rr.event_id = NULL;
  rr.user_id = "u";
  rr.action = "a0";
  rr.reward = NAN;
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_EINVAL);
  rr.reward = 1.5; /* beta agents take [0, 1] */
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_EINVAL);
}

static void disabled_and_unknown_actions_are_never_chosen(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 3);
  adb_action off = {.id = "a1", .disabled = 1};
  assert_int_equal(adb_actions_put(f->db, "ag", &off, 1), ADB_OK);
  const char *cands[] = {"a0", "a1", "zz"};
  for (int i = 0; i < 200; i++) {
    adb_decision d = {0};
    adb_decide_req req = {.agent_id = "ag",
                          .user_id = "u",
                          .candidates = cands,
                          .n_candidates = 3};
    assert_int_equal(adb_decide(f->db, &req, &d), ADB_OK);
    assert_string_equal(d.action, "a0");
    assert_true(fabs(d.propensity - 1.0) < 1e-9);
  }
  const char *none[] = {"a1", "zz"};
  adb_decision d = {0};
  adb_decide_req req = {
      .agent_id = "ag", .user_id = "u", .candidates = none, .n_candidates = 2};
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL);
}

/* Other users taught the agent-wide posterior that a2 is good: a user never
 * seen before picks a2 far more often than the 1/5 of a flat prior. */
static void a_new_user_starts_from_the_agent_wide_posterior(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 5);
  char sk[65];
  empty_state(f->db, "ag", sk);
  for (int i = 0; i < 200; i++) {
    char id[32], user[32];
    snprintf(id, sizeof id, "r%d", i);
    snprintf(user, sizeof user, "old%d", i % 20);
    char act[8];
    snprintf(act, sizeof act, "a%d", i % 5);
    adb_reward_req rr = {.agent_id = "ag",
                         .reward_id = id,
                         .user_id = user,
                         .action = act,
                         .state_key = sk,
                         .has_reward = 1,
                         .reward = i % 5 == 2 ? 1.0 : 0.0};
    assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_OK);
  }
  const char *cands[] = {"a0", "a1", "a2", "a3", "a4"};
  int hits = 0;
  for (int i = 0; i < 200; i++) {
    adb_decision d = {0};
    adb_decide_req req = {.agent_id = "ag",
                          .user_id = "newcomer",
                          .candidates = cands,
                          .n_candidates = 5};
    assert_int_equal(adb_decide(f->db, &req, &d), ADB_OK);
    hits += !strcmp(d.action, "a2");
  }
  /* Beta(11,1) vs Beta(1,11) arms: a2 wins essentially always. */
  assert_true(hits >= 190);
}

static void the_first_embedding_fixes_the_dimension(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 2);
  const char *cands[] = {"a0", "a1"};
  float v8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  adb_decision d = {0};
  adb_decide_req req = {.agent_id = "ag",
                        .user_id = "u",
                        .candidates = cands,
                        .n_candidates = 2,
                        .embedding = v8,
                        .embedding_dim = 8};
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_OK);
  req.embedding_dim = 4;
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL);
  assert_non_null(strstr(adb_errmsg(f->db), "expected 8"));
  v8[3] = INFINITY;
  req.embedding_dim = 8;
  assert_int_equal(adb_decide(f->db, &req, &d), ADB_EINVAL);
  adb_agent_config cfg;
  assert_int_equal(adb_agent_get(f->db, "ag", &cfg), ADB_OK);
  assert_int_equal(cfg.embedding_dim, 8);
}

/* A store that refuses writes for a while (SQLite: another connection
 * holds the write lock; PostgreSQL: disk full, SQLSTATE 53100, raised by a
 * trigger) fills the queue: new writes get ADB_EFULL, and once the store
 * is back everything queued commits. */
static void a_full_queue_refuses_writes_and_loses_nothing(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 1);
  char sk[65];
  empty_state(f->db, "ag", sk);
  adb_close(f->db);
  int sqlite = !strncmp(f->url, "sqlite:", 7);
  char url[1200];
  snprintf(url, sizeof url, "%s%s", f->url,
           sqlite ? "?busy_timeout_ms=100" : "");
  f->db = open_db(url, ADB_DURABILITY_ASYNC, 50);
  sqlite3 *lock = NULL;
  if (sqlite) {
    char path[1024];
    assert_int_equal(util_store_sqlite_path(f->url, path, sizeof path), 0);
    assert_int_equal(sqlite3_open(path, &lock), SQLITE_OK);
    sqlite3_busy_timeout(lock, 10000); /* the worker writes too */
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", 0, 0, 0), 0);
  } else {
    assert_int_equal(
        util_store_exec(f->url,
                        "CREATE FUNCTION adb_coord_fail() RETURNS "
                        "trigger LANGUAGE plpgsql AS $f$ BEGIN RAISE "
                        "EXCEPTION 'injected' USING ERRCODE = '53100'; END "
                        "$f$; CREATE TRIGGER adb_coord_fail BEFORE INSERT ON "
                        "reward_signals FOR EACH ROW EXECUTE FUNCTION "
                        "adb_coord_fail()"),
        0);
  }
  int accepted = 0, full = 0;
  for (int i = 0; i < 200; i++) {
    char id[32];
    snprintf(id, sizeof id, "q%d", i);
    adb_reward_req rr = {.agent_id = "ag",
                         .reward_id = id,
                         .user_id = "u",
                         .action = "a0",
                         .state_key = sk,
                         .has_reward = 1,
                         .reward = 1};
    adb_reward_result res;
    int rc = adb_reward(f->db, &rr, &res);
    if (rc == ADB_OK) {
      accepted++;
      assert_int_equal(res.pending, 1);
    } else {
      assert_int_equal(rc, ADB_EFULL);
      full++;
    }
  }
  assert_true(full > 0);
  assert_true(accepted >= 50);
  adb_stats st;
  for (int i = 0; i < 500; i++) { /* the worker keeps retrying */
    adb_stats_get(f->db, &st);
    if (st.flush_errors > 0) break;
    usleep(10000);
  }
  assert_true(st.flush_errors > 0);
  /* The store recovers: release the lock or drop the trigger; the queue
   * drains. The DDL can deadlock with the worker's retrying batch on
   * PostgreSQL (the server then aborts one of them): retry it, as an
   * operator would. */
  int dropped = -1;
  if (lock) {
    sqlite3_exec(lock, "ROLLBACK", 0, 0, 0);
    dropped = sqlite3_close(lock);
  }
  for (int i = 0; i < 50 && dropped != 0; i++)
    if ((dropped =
             util_store_exec(f->url, "DROP FUNCTION adb_coord_fail() CASCADE")))
      usleep(100000);
  assert_int_equal(dropped, 0);
  /* adb_flush waits write_timeout_ms at most; the drain may take longer
   * on a loaded machine (backoff up to 1 s between attempts). */
  int flushed = ADB_ETIMEDOUT;
  for (int i = 0; i < 30 && flushed == ADB_ETIMEDOUT; i++)
    flushed = adb_flush(f->db);
  assert_int_equal(flushed, ADB_OK);
  assert_int_equal(arm_n(f->db, "ag", "u", sk, "a0", NULL), accepted);
}

static void close_drains_async_writes(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 1);
  char sk[65];
  empty_state(f->db, "ag", sk);
  adb_close(f->db);
  f->db = open_db(f->url, ADB_DURABILITY_ASYNC, 0);
  for (int i = 0; i < 1000; i++) {
    char id[32];
    snprintf(id, sizeof id, "c%d", i);
    adb_reward_req rr = {.agent_id = "ag",
                         .reward_id = id,
                         .user_id = "u",
                         .action = "a0",
                         .state_key = sk,
                         .has_reward = 1,
                         .reward = 1};
    assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_OK);
  }
  adb_close(f->db);
  f->db = open_db(f->url, ADB_DURABILITY_SYNC, 0);
  assert_int_equal(arm_n(f->db, "ag", "u", sk, "a0", NULL), 1000);
}

static void signals_become_an_engagement_reward(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 1);
  char sk[65];
  empty_state(f->db, "ag", sk);
  adb_signals s = {.has_watch = 1, .watch_time_s = 30, .duration_s = 60};
  adb_reward_req rr = {.agent_id = "ag",
                       .reward_id = "s1",
                       .user_id = "u",
                       .action = "a0",
                       .state_key = sk,
                       .signals = &s};
  adb_reward_result res;
  assert_int_equal(adb_reward(f->db, &rr, &res), ADB_OK);
  assert_true(fabs(res.reward - 0.5) < 1e-12);
  adb_signals bad = {.has_watch = 1, .watch_time_s = 30, .duration_s = 0};
  rr.reward_id = "s2";
  rr.signals = &bad;
  assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_EINVAL);
}

static void sessions_live_in_the_cache_with_a_ttl(void **state) {
  fixture *f = *state;
  char *json = NULL;
  assert_int_equal(adb_session_put(f->db, "s1", "{\"a\":1}", 1), ADB_OK);
  assert_int_equal(adb_session_get(f->db, "s1", &json), ADB_OK);
  assert_string_equal(json, "{\"a\":1}");
  adb_free(json);
  assert_int_equal(adb_session_delete(f->db, "s1"), ADB_OK);
  assert_int_equal(adb_session_get(f->db, "s1", &json), ADB_ENOTFOUND);
  assert_int_equal(adb_session_put(f->db, "s2", "{}", 1), ADB_OK);
  usleep(1100 * 1000);
  assert_int_equal(adb_session_get(f->db, "s2", &json), ADB_ENOTFOUND);
}

static void user_states_and_patterns_round_trip(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 1);
  float v[3] = {0.25f, -1.5f, 3.0f};
  assert_int_equal(adb_user_state_put(f->db, "u1", v, 3, "{\"tz\":\"UTC\"}"),
                   ADB_OK);
  adb_user_state us;
  assert_int_equal(adb_user_state_get(f->db, "u1", &us), ADB_OK);
  assert_int_equal(us.embedding_dim, 3);
  assert_memory_equal(us.embedding, v, sizeof v);
  assert_string_equal(us.context_json, "{\"tz\":\"UTC\"}");
  adb_free(us.embedding);
  adb_free(us.context_json);
  assert_int_equal(adb_user_state_get(f->db, "nobody", &us), ADB_ENOTFOUND);

  adb_pattern p = {
      .value_json = "{\"genre\":\"drama\"}", .confidence = 0.8, .support = 12};
  snprintf(p.id, sizeof p.id, "p1");
  snprintf(p.type, sizeof p.type, "preference");
  snprintf(p.key, sizeof p.key, "evening");
  assert_int_equal(adb_pattern_put(f->db, "ag", &p), ADB_OK);
  adb_pattern got;
  assert_int_equal(adb_pattern_get(f->db, "ag", "p1", &got), ADB_OK);
  assert_string_equal(got.type, "preference");
  assert_string_equal(got.value_json, "{\"genre\":\"drama\"}");
  assert_true(got.confidence == 0.8);
  assert_int_equal(got.support, 12);
  adb_free(got.value_json);
  adb_free(got.embedding);
}

static void hourly_metrics_count_decisions_and_rewards(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag", 2);
  const char *cands[] = {"a0", "a1"};
  for (int i = 0; i < 10; i++) {
    adb_decision d = {0};
    adb_decide_req req = {.agent_id = "ag",
                          .user_id = "u",
                          .candidates = cands,
                          .n_candidates = 2};
    assert_int_equal(adb_decide(f->db, &req, &d), ADB_OK);
    char id[32];
    snprintf(id, sizeof id, "m%d", i);
    adb_reward_req rr = {.agent_id = "ag",
                         .reward_id = id,
                         .event_id = d.event_id,
                         .has_reward = 1,
                         .reward = 0.5};
    assert_int_equal(adb_reward(f->db, &rr, NULL), ADB_OK);
  }
  adb_close(f->db); /* the rollup is written at least at close */
  f->db = open_db(f->url, ADB_DURABILITY_SYNC, 0);
  adb_metrics_row *rows = NULL;
  int n = 0;
  int64_t now = (int64_t)time(NULL) * 1000;
  assert_int_equal(
      adb_metrics_get(f->db, "ag", now - 7200000, now + 3600000, &rows, &n),
      ADB_OK);
  int64_t dec = 0, rew = 0;
  double sum = 0;
  for (int i = 0; i < n; i++) {
    dec += rows[i].decisions;
    rew += rows[i].rewards;
    sum += rows[i].reward_sum;
    assert_true(rows[i].latency_p50_us > 0);
  }
  adb_free(rows);
  assert_int_equal(dec, 10);
  assert_int_equal(rew, 10);
  assert_true(fabs(sum - 5.0) < 1e-9);
  adb_agent_counters c;
  assert_int_equal(adb_agent_counters_get(f->db, "ag", &c), ADB_OK);
  assert_int_equal(c.decisions, 10);
  assert_int_equal(c.actions, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(decide_then_reward_updates_user_and_agent_wide_policy),
      T(same_reward_id_is_applied_once_and_answers_the_first_reward),
      T(same_reward_id_with_a_different_body_is_a_conflict),
      T(sixteen_threads_rewarding_one_arm_lose_no_update),
      T(unknown_agent_and_bad_ids_are_refused),
      T(disabled_and_unknown_actions_are_never_chosen),
      T(a_new_user_starts_from_the_agent_wide_posterior),
      T(the_first_embedding_fixes_the_dimension),
      T(a_full_queue_refuses_writes_and_loses_nothing),
      T(close_drains_async_writes),
      T(signals_become_an_engagement_reward),
      T(sessions_live_in_the_cache_with_a_ttl),
      T(user_states_and_patterns_round_trip),
      T(hourly_metrics_count_decisions_and_rewards),
  };
  const char *kinds[4];
  int nk = util_store_kinds(kinds, 4), failed = 0;
  for (int k = 0; k < nk; k++) {
    struct CMUnitTest t[sizeof tests / sizeof *tests];
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
      t[i] = tests[i];
      t[i].initial_state = (void *)kinds[k];
    }
    char name[64];
    snprintf(name, sizeof name, "coordinator/%s", kinds[k]);
    failed +=
        _cmocka_run_group_tests(name, t, sizeof t / sizeof *t, NULL, NULL);
  }
  return failed;
}
