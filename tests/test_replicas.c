/*
 * test_replicas.c — two coordinators (two adb handles, as two `agentdb
 * serve` replicas would be) over one store and one Redis of the test's own:
 *  - a reward acknowledged through one is seen by a decision through the
 *    other at once (and the canary: with per-process caches it is not);
 *  - Redis killed and restarted under a steady write load: decisions keep
 *    succeeding, the cache fills again, and a concurrent reader never sees
 *    a posterior older than the last acknowledged reward.
 * The store is a fresh SQLite file, and PostgreSQL too when
 * AGENTDB_TEST_PG_URL is set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "coordinator.h"
#include "util_redis.h"
#include "util_store.h"

static util_redis redis = {.pid = -1};

typedef struct fixture {
  char *store;
  char cache[256];
  char sk[65];
} fixture;

static adb *open_handle(const char *store, const char *cache) {
  adb_config cfg = {
      .store_url = store, .cache_url = cache, .write_timeout_ms = 10000};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) fprintf(stderr, "adb_open: %s\n", err);
  assert_int_equal(rc, ADB_OK);
  return db;
}

static int setup(void **state) {
  if (!util_have_redis_server()) return -1;
  fixture *f = calloc(1, sizeof *f);
  f->store = util_store_fresh_url((const char *)*state);
  if (!f->store || util_redis_start(&redis)) return -1;
  snprintf(f->cache, sizeof f->cache,
           "redis://127.0.0.1:%d/0?connect_timeout_ms=200&timeout_ms=300"
           "&retry_ms=200",
           redis.port);
  adb *db = open_handle(f->store, f->cache);
  adb_agent_config ac;
  adb_agent_config_init(&ac);
  snprintf(ac.id, sizeof ac.id, "rep");
  ac.fallback_strength = -1; /* the user's own posterior only */
  assert_int_equal(adb_agent_put(db, &ac), ADB_OK);
  assert_int_equal(adb_state_key(db, "rep", NULL, 0, NULL, 0, f->sk), ADB_OK);
  adb_close(db);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  util_redis_cleanup(&redis);
  util_store_drop(f->store);
  free(f);
  return 0;
}

static void reward(adb *db, const char *sk, const char *id, const char *act,
                   double r) {
  adb_reward_req rr = {.agent_id = "rep",
                       .reward_id = id,
                       .user_id = "u",
                       .action = act,
                       .state_key = sk,
                       .has_reward = 1,
                       .reward = r};
  assert_int_equal(adb_reward(db, &rr, NULL), ADB_OK);
}

/* B caches u's empty policy, A learns that x is good, B decides: how often
 * does B pick x out of 50? */
static int picks_after_remote_rewards(fixture *f, const char *b_cache) {
  adb *a = open_handle(f->store, f->cache), *b = open_handle(f->store, b_cache);
  const char *cands[] = {"x", "y"};
  adb_decide_req q = {.agent_id = "rep",
                      .user_id = "u",
                      .candidates = cands,
                      .n_candidates = 2};
  adb_decision d = {0};
  assert_int_equal(adb_decide(b, &q, &d), ADB_OK); /* cached, empty */
  for (int i = 0; i < 15; i++) {
    char id[32];
    snprintf(id, sizeof id, "x%d", i);
    reward(a, f->sk, id, "x", 1.0);
    snprintf(id, sizeof id, "y%d", i);
    reward(a, f->sk, id, "y", 0.0);
  }
  adb_stats before, after;
  adb_stats_get(b, &before);
  int x = 0;
  for (int i = 0; i < 50; i++) {
    assert_int_equal(adb_decide(b, &q, &d), ADB_OK);
    x += !strcmp(d.action, "x");
  }
  adb_stats_get(b, &after);
  assert_true(after.cache_hits - before.cache_hits >= 50); /* from cache */
  adb_close(a);
  adb_close(b);
  return x;
}

static void a_reward_through_one_replica_is_seen_by_the_other(void **state) {
  fixture *f = *state;
  /* Beta(16,1) against Beta(1,16): x all but always. */
  assert_true(picks_after_remote_rewards(f, f->cache) >= 49);
}

/* The canary: replicas with caches of their own cannot see each other's
 * updates, and the same check catches it (x about half the time). */
static void canary_per_process_caches_serve_stale_policies(void **state) {
  fixture *f = *state;
  assert_true(picks_after_remote_rewards(f, "mem://") <= 40);
}

typedef struct load {
  adb *writer, *reader;
  const char *sk;
  _Atomic int stop;
  _Atomic int64_t acked;
  _Atomic int64_t reads, stale, read_errors, decide_errors, hits;
} load;

static void *write_loop(void *p) {
  load *l = p;
  for (int64_t i = 0; !atomic_load(&l->stop); i++) {
    char id[32];
    snprintf(id, sizeof id, "w%lld", (long long)i);
    adb_reward_req rr = {.agent_id = "rep",
                         .reward_id = id,
                         .user_id = "u",
                         .action = "x",
                         .state_key = l->sk,
                         .has_reward = 1,
                         .reward = 1};
    if (adb_reward(l->writer, &rr, NULL) == ADB_OK)
      atomic_store(&l->acked, i + 1);
    else
      i--; /* retry the same id */
  }
  return NULL;
}

/* Reads the posterior the way a decision does (cache, else store) and
 * checks it holds every reward acknowledged before the read began. */
static void *read_loop(void *p) {
  load *l = p;
  const char *acts[] = {"x"};
  const char *cands[] = {"x", "y"};
  while (!atomic_load(&l->stop)) {
    int64_t before = atomic_load(&l->acked);
    adb__arm_stats st[2];
    int hits = 0;
    if (adb__policy_read(l->reader, "rep", "u", l->sk,
                         &(adb__ids){.n = 1, .id = acts}, st, &hits)) {
      atomic_fetch_add(&l->read_errors, 1);
      continue;
    }
    atomic_fetch_add(&l->reads, 1);
    atomic_fetch_add(&l->hits, hits);
    if (st[0].n < before) atomic_fetch_add(&l->stale, 1);
    adb_decide_req q = {.agent_id = "rep",
                        .user_id = "u",
                        .candidates = cands,
                        .n_candidates = 2};
    adb_decision d = {0};
    if (adb_decide(l->reader, &q, &d) != ADB_OK)
      atomic_fetch_add(&l->decide_errors, 1);
  }
  return NULL;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static void
redis_killed_and_restarted_under_load_serves_nothing_stale(void **state) {
  fixture *f = *state;
  static load l;
  memset(&l, 0, sizeof l);
  l.writer = open_handle(f->store, f->cache);
  l.reader = open_handle(f->store, f->cache);
  l.sk = f->sk;
  pthread_t w, r;
  pthread_create(&w, NULL, write_loop, &l);
  pthread_create(&r, NULL, read_loop, &l);
  sleep_ms(800);
  int64_t hits_up = atomic_load(&l.hits);
  util_redis_kill(&redis);
  sleep_ms(800);
  int64_t reads_down = atomic_load(&l.reads);
  assert_int_equal(util_redis_start(&redis), 0);
  int64_t hits_restart = atomic_load(&l.hits);
  sleep_ms(1500);
  atomic_store(&l.stop, 1);
  pthread_join(w, NULL);
  pthread_join(r, NULL);
  printf("# %lld rewards acknowledged, %lld reads (%lld while Redis was "
         "down), hits %lld before the kill, %lld after the restart; %lld "
         "stale\n",
         (long long)l.acked, (long long)l.reads, (long long)reads_down,
         (long long)hits_up, (long long)(l.hits - hits_restart),
         (long long)l.stale);
  assert_true(hits_up > 0);
  assert_true(l.hits - hits_restart > 0); /* the cache is used again */
  assert_true(l.acked > 0);
  assert_int_equal(l.stale, 0);
  assert_int_equal(l.read_errors, 0);
  assert_int_equal(l.decide_errors, 0);
  adb_close(l.writer);
  adb_close(l.reader);
}

int main(void) {
  const char *kinds[4];
  int nk = util_store_kinds(kinds, 4), failed = 0;
  for (int k = 0; k < nk; k++) {
    struct CMUnitTest t[] = {
        cmocka_unit_test_prestate_setup_teardown(
            a_reward_through_one_replica_is_seen_by_the_other, setup, teardown,
            (void *)kinds[k]),
        cmocka_unit_test_prestate_setup_teardown(
            canary_per_process_caches_serve_stale_policies, setup, teardown,
            (void *)kinds[k]),
        cmocka_unit_test_prestate_setup_teardown(
            redis_killed_and_restarted_under_load_serves_nothing_stale, setup,
            teardown, (void *)kinds[k]),
    };
    char name[64];
    snprintf(name, sizeof name, "replicas/%s", kinds[k]);
    failed += _cmocka_run_group_tests(name, t, 3, NULL, NULL);
  }
  return failed;
}
