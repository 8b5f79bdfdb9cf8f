/*
 * test_backup.c — `agentdb backup` of a live SQLite store, then `agentdb
 * restore` of the copy.
 *
 * Four threads write durable (sync) rewards through the library; while they
 * run, the real binary takes a backup from another process. Every reward
 * acknowledged before the backup began must be in the restored store,
 * exactly once, and the restored posterior must equal the sum of the
 * rewards the copy holds (the copy is one transactionally consistent
 * snapshot, not a torn one). The copy must also hold fewer rewards than
 * the live store ends with, which shows the writers kept going.
 *
 * Canary: a naive `cp` of the database file alone under the same writes
 * misses rewards that were acknowledged (they sit in the WAL), and the same
 * checker must report them.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agentdb.h"
#include "util_store.h"

#define THREADS 4
#define MAX_IDS 1000000

typedef struct live {
  adb *db;
  char sk[ADB_STATE_KEY_LEN + 1];
  atomic_int acked[THREADS]; /* ids t-0 .. t-(acked-1) acknowledged */
  atomic_int stop;
} live;

typedef struct writer {
  live *lv;
  int t;
} writer;

static double reward_of(int t, int i) {
  return ((t * 131 + i * 7) % 1000) / 1000.0;
}

static void *write_loop(void *p) {
  writer *w = p;
  for (int i = 0; i < MAX_IDS && !atomic_load(&w->lv->stop);) {
    char id[32];
    snprintf(id, sizeof id, "t%d-%d", w->t, i);
    adb_reward_req r = {.agent_id = "bk",
                        .reward_id = id,
                        .user_id = "u",
                        .action = "a",
                        .state_key = w->lv->sk,
                        .has_reward = 1,
                        .reward = reward_of(w->t, i)};
    if (adb_reward(w->lv->db, &r, NULL) != ADB_OK) continue; /* retry id */
    atomic_store(&w->lv->acked[w->t], ++i);
  }
  return NULL;
}

static int total(live *lv) {
  int n = 0;
  for (int t = 0; t < THREADS; t++)
    n += atomic_load(&lv->acked[t]);
  return n;
}

static void wait_for(live *lv, int n) {
  for (int k = 0; k < 3000 && total(lv) < n; k++)
    usleep(10000);
}

static void start(live *lv, const char *url, pthread_t *th, writer *w) {
  memset(lv, 0, sizeof *lv);
  adb_config cfg = {.store_url = url, .durability = ADB_DURABILITY_SYNC};
  char err[256] = "";
  assert_int_equal(adb_open(&cfg, &lv->db, err, sizeof err), ADB_OK);
  adb_agent_config ag;
  adb_agent_config_init(&ag);
  snprintf(ag.id, sizeof ag.id, "bk");
  assert_int_equal(adb_agent_put(lv->db, &ag), ADB_OK);
  assert_int_equal(adb_state_key(lv->db, "bk", NULL, 0, NULL, 0, lv->sk),
                   ADB_OK);
  for (int t = 0; t < THREADS; t++) {
    w[t] = (writer){lv, t};
    assert_int_equal(pthread_create(&th[t], NULL, write_loop, &w[t]), 0);
  }
}

static void stop(live *lv, pthread_t *th) {
  atomic_store(&lv->stop, 1);
  for (int t = 0; t < THREADS; t++)
    pthread_join(th[t], NULL);
  assert_int_equal(adb_close(lv->db), ADB_OK);
}

static int run(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

static const char *bin(void) {
  const char *b = getenv("ADB_BIN");
  return b ? b : "./agentdb";
}

/* Rewards acknowledged before the copy (before[t] per thread) that the
 * store at url lacks; -1 when it cannot be read (a torn copy). */
static int missing_in(const char *url, const int *before) {
  int missing = 0;
  for (int t = 0; t < THREADS; t++) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM reward_signals WHERE agent_id = 'bk' "
             "AND reward_id LIKE 't%d-%%' AND CAST(substr(reward_id, %d) AS "
             "INTEGER) < %d",
             t, t < 10 ? 4 : 5, before[t]);
    int64_t n = util_store_query_int(url, sql);
    if (n < 0) return -1;
    missing += before[t] - (int)n;
  }
  return missing;
}

static void expect_consistent(const char *url) {
  int64_t dups = util_store_query_int(
      url, "SELECT count(*) - count(DISTINCT reward_id) FROM reward_signals "
           "WHERE agent_id = 'bk'");
  assert_int_equal(dups, 0);
  int64_t n = util_store_query_int(
      url, "SELECT count(*) FROM reward_signals WHERE agent_id = 'bk'");
  int64_t sum = util_store_query_int(
      url, "SELECT sum(reward_micro) FROM reward_signals WHERE agent_id = "
           "'bk'");
  int64_t pn = util_store_query_int(
      url, "SELECT n FROM rl_policies WHERE agent_id = 'bk' AND user_id = "
           "'u' AND action_id = 'a'");
  int64_t psum = util_store_query_int(
      url, "SELECT sum_micro FROM rl_policies WHERE agent_id = 'bk' AND "
           "user_id = 'u' AND action_id = 'a'");
  assert_int_equal(pn, n);
  assert_int_equal(psum, sum);
}

static void test_backup_of_a_live_store_holds_every_earlier_ack(void **st) {
  char *url = util_store_fresh_url("sqlite"), path[4096];
  assert_non_null(url);
  assert_int_equal(util_store_sqlite_path(url, path, sizeof path), 0);
  live lv;
  pthread_t th[THREADS];
  writer w[THREADS];
  start(&lv, url, th, w);
  wait_for(&lv, 2000);
  int before[THREADS];
  for (int t = 0; t < THREADS; t++)
    before[t] = atomic_load(&lv.acked[t]);
  assert_int_equal(run("'%s' backup --store 'sqlite://%s' --to '%s.bak' "
                       ">/dev/null",
                       bin(), path, path),
                   0);
  int during = total(&lv);
  wait_for(&lv, during + 500);
  stop(&lv, th);

  char restored[4200];
  snprintf(restored, sizeof restored, "sqlite://%s.restored", path);
  assert_int_equal(run("'%s' restore --from '%s.bak' --store '%s' >/dev/null",
                       bin(), path, restored),
                   0);
  int n_before = 0;
  for (int t = 0; t < THREADS; t++)
    n_before += before[t];
  int missing = missing_in(restored, before);
  int64_t in_copy = util_store_query_int(
      restored, "SELECT count(*) FROM reward_signals WHERE agent_id = 'bk'");
  int64_t in_live = util_store_query_int(
      url, "SELECT count(*) FROM reward_signals WHERE agent_id = 'bk'");
  printf("backup: %d rewards acknowledged before the backup began, %lld in "
         "the restored copy, %lld in the live store at the end; %d "
         "missing\n",
         n_before, (long long)in_copy, (long long)in_live, missing);
  assert_int_equal(missing, 0);
  assert_true(in_copy < in_live); /* the writers ran during the backup */
  expect_consistent(restored);
  expect_consistent(url);

  /* The restored store opens and serves the same posterior. */
  adb_config cfg = {.store_url = restored};
  adb *db;
  assert_int_equal(adb_open(&cfg, &db, NULL, 0), ADB_OK);
  adb_arm_posterior arm;
  int n = 0;
  assert_int_equal(adb_policy_get(db, "bk", "u", lv.sk, &arm, 1, &n), ADB_OK);
  assert_int_equal(n, 1);
  assert_int_equal(arm.n, in_copy);
  assert_int_equal(adb_close(db), ADB_OK);
  unlink(restored + 9);
  char bak[4200];
  snprintf(bak, sizeof bak, "%s.bak", path);
  unlink(bak);
  util_store_drop(url);
}

/* The canary: copying only the main file under writes loses acks. */
static void test_copying_the_file_alone_is_caught_losing_acks(void **st) {
  char *url = util_store_fresh_url("sqlite"), path[4096];
  assert_non_null(url);
  assert_int_equal(util_store_sqlite_path(url, path, sizeof path), 0);
  live lv;
  pthread_t th[THREADS];
  writer w[THREADS];
  start(&lv, url, th, w);
  int missing = 0, tries = 0;
  char copy[4200];
  snprintf(copy, sizeof copy, "sqlite://%s.cp", path);
  /* A copy taken right after a checkpoint loses nothing: try a few. */
  for (; tries < 5 && missing == 0; tries++) {
    wait_for(&lv, total(&lv) + 1000);
    int before[THREADS];
    for (int t = 0; t < THREADS; t++)
      before[t] = atomic_load(&lv.acked[t]);
    unlink(copy + 9);
    assert_int_equal(run("cp '%s' '%s'", path, copy + 9), 0);
    missing = missing_in(copy, before);
  }
  stop(&lv, th);
  printf("canary: a plain copy of the database file missed %d acknowledged "
         "rewards (try %d; -1: unreadable copy)\n",
         missing, tries);
  assert_true(missing != 0);
  unlink(copy + 9);
  util_store_drop(url);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backup_of_a_live_store_holds_every_earlier_ack),
      cmocka_unit_test(test_copying_the_file_alone_is_caught_losing_acks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
