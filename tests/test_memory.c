/*
 * test_memory.c — vector memory end to end through the public API, on
 * every store backend the build has (SQLite always, PostgreSQL when
 * AGENTDB_TEST_PG_URL is set): similar episodes, users and patterns;
 * filtering by user; a second handle on the same store (a replica) seeing
 * another's episodes; restart from a snapshot or a rebuild; validation;
 * and cold start from the nearest users' posteriors.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
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

#define DIM 16

typedef struct fixture {
  const char *kind;
  char *url;
  char index_dir[256]; /* PostgreSQL: snapshots need a directory */
  adb *db;
} fixture;

static int quick(void) {
  const char *q = getenv("ADB_TEST_QUICK");
  return q && *q && strcmp(q, "0");
}

static adb *open_db(fixture *f) {
  adb_config cfg = {.store_url = f->url,
                    .seed = 42,
                    .write_timeout_ms = 5000,
                    .index_dir = f->index_dir[0] ? f->index_dir : NULL};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) fprintf(stderr, "adb_open(%s): %s\n", f->url, err);
  assert_int_equal(rc, ADB_OK);
  return db;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->kind = *state;
  f->url = util_store_fresh_url(f->kind);
  if (!f->url) return -1;
  if (strcmp(f->kind, "sqlite")) {
    snprintf(f->index_dir, sizeof f->index_dir, "/tmp/adb-index-XXXXXX");
    if (!mkdtemp(f->index_dir)) return -1;
  }
  f->db = open_db(f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  assert_int_equal(adb_close(f->db), ADB_OK);
  util_store_drop(f->url);
  if (f->index_dir[0]) nftw(f->index_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x12345678;

static double unif(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void random_vec(float *v) {
  for (int i = 0; i < DIM; i++)
    v[i] = (float)(unif() * 2 - 1);
}

/* v = base + noise * uniform(-1, 1) per coordinate. */
static void near_vec(float *v, const float *base, double noise) {
  for (int i = 0; i < DIM; i++)
    v[i] = base[i] + (float)(noise * (unif() * 2 - 1));
}

static void make_agent(adb *db, const char *id) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  snprintf(cfg.id, sizeof cfg.id, "%s", id);
  cfg.embedding_dim = DIM;
  assert_int_equal(adb_agent_put(db, &cfg), ADB_OK);
}

/* n episodes "e<i>" of users "u<i % users>" with vectors vecs[i]. */
static void record_episodes(adb *db, const char *agent, int n, int users,
                            float (*vecs)[DIM]) {
  adb_episode *eps = calloc((size_t)n, sizeof *eps);
  char(*ids)[16] = calloc((size_t)n, 16), (*us)[16] = calloc((size_t)n, 16);
  for (int i = 0; i < n; i++) {
    snprintf(ids[i], 16, "e%d", i);
    snprintf(us[i], 16, "u%d", i % users);
    eps[i] = (adb_episode){.episode_id = ids[i],
                           .user_id = us[i],
                           .embedding = vecs[i],
                           .embedding_dim = DIM,
                           .action = i % 2 ? "x" : "y",
                           .reward = i * 0.5};
  }
  assert_int_equal(adb_episodes_record(db, agent, eps, n), ADB_OK);
  free(eps);
  free(ids);
  free(us);
}

/* -------------------------------------------------------------- tests */

static void episodes_are_found_by_similarity_best_first(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  float vecs[50][DIM];
  for (int i = 0; i < 50; i++)
    random_vec(vecs[i]);
  record_episodes(f->db, "ag", 50, 5, vecs);
  adb_hit hits[10];
  int n = -1;
  assert_int_equal(
      adb_episode_similar(f->db, "ag", vecs[17], DIM, 10, NULL, hits, &n),
      ADB_OK);
  assert_int_equal(n, 10);
  assert_string_equal(hits[0].id, "e17");
  assert_string_equal(hits[0].user_id, "u2");
  assert_string_equal(hits[0].action, "x");
  assert_true(fabs(hits[0].reward - 8.5) < 1e-9);
  assert_true(hits[0].score > 0.9999 && hits[0].score < 1.0001);
  for (int i = 1; i < n; i++)
    assert_true(hits[i].score <= hits[i - 1].score);
}

static void a_user_filter_returns_only_that_users_episodes(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  /* Above the exact-scan threshold (2000), so the graph is walked. */
  int n_eps = quick() ? 2200 : 3000, users = 10;
  float(*vecs)[DIM] = malloc((size_t)n_eps * sizeof *vecs);
  for (int i = 0; i < n_eps; i++)
    random_vec(vecs[i]);
  record_episodes(f->db, "ag", n_eps, users, vecs);
  adb_episode lone = {.episode_id = "lone1",
                      .user_id = "lonely",
                      .embedding = vecs[0],
                      .embedding_dim = DIM,
                      .action = "x",
                      .reward = 1};
  assert_int_equal(adb_episodes_record(f->db, "ag", &lone, 1), ADB_OK);
  adb_hit hits[20];
  int n = 0;
  assert_int_equal(
      adb_episode_similar(f->db, "ag", vecs[5], DIM, 20, "u3", hits, &n),
      ADB_OK);
  assert_int_equal(n, 20);
  for (int i = 0; i < n; i++)
    assert_string_equal(hits[i].user_id, "u3");
  assert_int_equal(
      adb_episode_similar(f->db, "ag", vecs[5], DIM, 20, "lonely", hits, &n),
      ADB_OK);
  assert_int_equal(n, 1);
  assert_string_equal(hits[0].id, "lone1");
  assert_int_equal(
      adb_episode_similar(f->db, "ag", vecs[5], DIM, 5, "nobody", hits, &n),
      ADB_OK);
  assert_int_equal(n, 0);
  free(vecs);
}

static void users_are_found_by_their_state_embedding(void **state) {
  fixture *f = *state;
  float vecs[30][DIM];
  char id[16];
  for (int i = 0; i < 30; i++) {
    random_vec(vecs[i]);
    snprintf(id, sizeof id, "user%d", i);
    assert_int_equal(adb_user_state_put(f->db, id, vecs[i], DIM, NULL), ADB_OK);
  }
  /* A newer state replaces the old one. */
  float moved[DIM];
  random_vec(moved);
  assert_int_equal(adb_user_state_put(f->db, "user3", moved, DIM, NULL),
                   ADB_OK);
  adb_hit hits[5];
  int n = 0;
  assert_int_equal(adb_user_similar(f->db, vecs[7], DIM, 5, hits, &n), ADB_OK);
  assert_int_equal(n, 5);
  assert_string_equal(hits[0].id, "user7");
  assert_true(hits[0].score > 0.9999);
  assert_int_equal(adb_user_similar(f->db, moved, DIM, 1, hits, &n), ADB_OK);
  assert_string_equal(hits[0].id, "user3");
  assert_true(hits[0].score > 0.9999);
  assert_int_equal(adb_user_similar(f->db, vecs[3], DIM, 1, hits, &n), ADB_OK);
  assert_string_not_equal(hits[0].id, "user3");
}

static void patterns_are_found_by_embedding(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  float vecs[6][DIM];
  for (int i = 0; i < 6; i++) {
    random_vec(vecs[i]);
    adb_pattern p = {.confidence = 0.5,
                     .support = 3,
                     .value_json = "{\"a\":1}",
                     .embedding = vecs[i],
                     .embedding_dim = DIM};
    snprintf(p.id, sizeof p.id, "p%d", i);
    snprintf(p.type, sizeof p.type, "taste");
    snprintf(p.key, sizeof p.key, "key %d", i);
    assert_int_equal(adb_pattern_put(f->db, "ag", &p), ADB_OK);
  }
  adb_hit hits[3];
  int n = 0;
  assert_int_equal(adb_pattern_search(f->db, "ag", vecs[4], DIM, 3, hits, &n),
                   ADB_OK);
  assert_int_equal(n, 3);
  assert_string_equal(hits[0].id, "p4");
  assert_string_equal(hits[0].action, "key 4");
  assert_true(hits[0].score > 0.9999);
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void
a_replica_sees_episodes_written_through_another_handle(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  adb *replica = open_db(f);
  float vecs[20][DIM];
  for (int i = 0; i < 20; i++)
    random_vec(vecs[i]);
  record_episodes(f->db, "ag", 20, 4, vecs);
  float uv[DIM];
  random_vec(uv);
  assert_int_equal(adb_user_state_put(f->db, "shared", uv, DIM, NULL), ADB_OK);
  adb_hit hits[3];
  int n = 0, found = 0, found_user = 0;
  for (int t = 0; t < 100 && !(found && found_user); t++) {
    assert_int_equal(
        adb_episode_similar(replica, "ag", vecs[11], DIM, 3, NULL, hits, &n),
        ADB_OK);
    found = n > 0 && !strcmp(hits[0].id, "e11");
    assert_int_equal(adb_user_similar(replica, uv, DIM, 1, hits, &n), ADB_OK);
    found_user = n == 1 && !strcmp(hits[0].id, "shared");
    if (!(found && found_user)) sleep_ms(100);
  }
  assert_true(found);
  assert_true(found_user);
  assert_int_equal(adb_close(replica), ADB_OK);
}

static void search_all(adb *db, float (*vecs)[DIM], int nq, adb_hit (*out)[5]) {
  for (int q = 0; q < nq; q++) {
    int n = 0;
    assert_int_equal(
        adb_episode_similar(db, "ag", vecs[q], DIM, 5, NULL, out[q], &n),
        ADB_OK);
    assert_int_equal(n, 5);
  }
}

static void assert_same_hits(adb_hit (*a)[5], adb_hit (*b)[5], int nq) {
  for (int q = 0; q < nq; q++)
    for (int i = 0; i < 5; i++) {
      assert_string_equal(a[q][i].id, b[q][i].id);
      assert_true(fabs(a[q][i].score - b[q][i].score) < 1e-6);
    }
}

/* Closes and reopens the fixture's handle. */
static void reopen(fixture *f) {
  assert_int_equal(adb_close(f->db), ADB_OK);
  f->db = open_db(f);
}

static const char *index_dir(fixture *f, char *buf, size_t len) {
  if (f->index_dir[0]) return f->index_dir;
  assert_int_equal(util_store_sqlite_path(f->url, buf, len), 0);
  strcat(buf, ".index");
  return buf;
}

static void reopening_answers_the_same_from_the_snapshot(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  int n = 300;
  float(*vecs)[DIM] = malloc((size_t)n * sizeof *vecs);
  for (int i = 0; i < n; i++)
    random_vec(vecs[i]);
  record_episodes(f->db, "ag", n, 7, vecs);
  adb_hit before[10][5], after[10][5];
  search_all(f->db, vecs, 10, before);
  reopen(f);
  char buf[4096], path[4200];
  snprintf(path, sizeof path, "%s/manifest", index_dir(f, buf, sizeof buf));
  assert_int_equal(access(path, R_OK), 0); /* a snapshot was written */
  search_all(f->db, vecs, 10, after);
  assert_same_hits(before, after, 10);
  /* Rows written by another handle while this one was closed are caught
   * up from the store after the snapshot is loaded. */
  assert_int_equal(adb_close(f->db), ADB_OK);
  adb *other = open_db(f);
  adb_episode late = {.episode_id = "late",
                      .user_id = "u1",
                      .embedding = vecs[299],
                      .embedding_dim = DIM,
                      .action = "x",
                      .reward = 1};
  assert_int_equal(adb_episodes_record(other, "ag", &late, 1), ADB_OK);
  f->db = open_db(f);
  assert_int_equal(adb_close(other), ADB_OK);
  adb_hit h[2];
  int got = 0;
  assert_int_equal(
      adb_episode_similar(f->db, "ag", vecs[299], DIM, 2, NULL, h, &got),
      ADB_OK);
  assert_int_equal(got, 2);
  assert_true(!strcmp(h[0].id, "late") || !strcmp(h[1].id, "late"));
  free(vecs);
}

static void a_corrupt_snapshot_means_a_rebuild(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  float vecs[100][DIM];
  for (int i = 0; i < 100; i++)
    random_vec(vecs[i]);
  record_episodes(f->db, "ag", 100, 3, vecs);
  adb_hit before[10][5], after[10][5];
  search_all(f->db, vecs, 10, before);
  assert_int_equal(adb_close(f->db), ADB_OK);
  char buf[4096], path[4200];
  snprintf(path, sizeof path, "%s/ep-ag.meta", index_dir(f, buf, sizeof buf));
  FILE *fp = fopen(path, "r+b");
  assert_non_null(fp);
  fseek(fp, 40, SEEK_SET);
  fputc('#', fp);
  fclose(fp);
  f->db = open_db(f);
  search_all(f->db, vecs, 10, after);
  assert_same_hits(before, after, 10);
}

static void bad_queries_are_refused_with_precise_messages(void **state) {
  fixture *f = *state;
  make_agent(f->db, "ag");
  float v[DIM * 2];
  for (int i = 0; i < DIM * 2; i++)
    v[i] = 1;
  adb_hit hits[4];
  int n = 7;
  assert_int_equal(
      adb_episode_similar(f->db, "ag", v, DIM / 2, 4, NULL, hits, &n),
      ADB_EINVAL);
  assert_int_equal(n, 0);
  char want[64];
  snprintf(want, sizeof want, "expected %d dimensions, not %d", DIM, DIM / 2);
  assert_string_equal(adb_errmsg(f->db), want);
  assert_int_equal(adb_pattern_search(f->db, "ag", v, DIM * 2, 4, hits, &n),
                   ADB_EINVAL);
  assert_int_equal(adb_episode_similar(f->db, "ag", v, DIM, 0, NULL, hits, &n),
                   ADB_EINVAL);
  assert_int_equal(
      adb_episode_similar(f->db, "ag", v, DIM, 1001, NULL, hits, &n),
      ADB_EINVAL);
  v[3] = NAN;
  assert_int_equal(adb_user_similar(f->db, v, DIM, 1, hits, &n), ADB_EINVAL);
  v[3] = 1;
  assert_int_equal(
      adb_episode_similar(f->db, "nope", v, DIM, 1, NULL, hits, &n),
      ADB_ENOTFOUND);
  assert_int_equal(
      adb_episode_similar(f->db, "ag", v, DIM, 1, "bad/user", hits, &n),
      ADB_EINVAL);
  float zero[DIM] = {0};
  assert_int_equal(adb_user_similar(f->db, zero, DIM, 1, hits, &n), ADB_EINVAL);
  /* Nothing stored yet: no hits, no error. */
  assert_int_equal(adb_episode_similar(f->db, "ag", v, DIM, 4, NULL, hits, &n),
                   ADB_OK);
  assert_int_equal(n, 0);
}

/* ---------------------------------------------------------- cold start */

/* How many of 200 decisions of a new user (embedding emb, never rewarded)
 * choose "X" over "Y". */
static int x_choices(adb *db, const char *user, const float *emb, int n) {
  const char *cands[2] = {"X", "Y"};
  int x = 0;
  for (int i = 0; i < n; i++) {
    adb_decision d = {0};
    adb_decide_req r = {.agent_id = "cs",
                        .user_id = user,
                        .candidates = cands,
                        .n_candidates = 2,
                        .embedding = emb,
                        .embedding_dim = emb ? DIM : 0};
    assert_int_equal(adb_decide(db, &r, &d), ADB_OK);
    x += !strcmp(d.action, "X");
  }
  return x;
}

static void reward(adb *db, const char *user, const char *action, double r,
                   int i) {
  char rid[64];
  snprintf(rid, sizeof rid, "r-%s-%s-%d", user, action, i);
  adb_reward_req q = {.agent_id = "cs",
                      .reward_id = rid,
                      .user_id = user,
                      .action = action,
                      .has_reward = 1,
                      .reward = r};
  adb_reward_result res;
  assert_int_equal(adb_reward(db, &q, &res), ADB_OK);
}

/* Users near A all like X (reward 1) and not Y (0); as many users near B
 * like Y and not X, so the agent-wide posterior is balanced: X and Y both
 * have mean 1/2 there. A new user near A borrows its 10 nearest users'
 * statistics (X: 1s only, Y: 0s only; fallback_strength 10 caps them at
 * Beta(11, 1) vs Beta(1, 11)), under which Thompson sampling picks X with
 * probability P(Beta(11,1) > Beta(1,11)) > 0.999: about 200 of 200. A new
 * user whose embedding points away from everyone (negative cosine to all)
 * has no neighbours and uses the balanced '*' posterior: X with
 * probability 1/2, 100 +- 7.1 of 200, so <= 135 holds beyond 4.9 sd. */
static void a_new_user_near_fans_of_x_is_shown_x(void **state) {
  fixture *f = *state;
  make_agent(f->db, "cs");
  float A[DIM] = {0}, B[DIM] = {0}, v[DIM], away[DIM] = {0};
  A[0] = 1;
  B[1] = 1;
  away[0] = -1;
  away[1] = -1;
  char user[16];
  for (int g = 0; g < 2; g++)
    for (int u = 0; u < 20; u++) {
      snprintf(user, sizeof user, "%c%02d", g ? 'b' : 'a', u);
      near_vec(v, g ? B : A, 0.15);
      assert_int_equal(adb_user_state_put(f->db, user, v, DIM, NULL), ADB_OK);
      for (int i = 0; i < 5; i++) {
        reward(f->db, user, "X", g ? 0 : 1, i);
        reward(f->db, user, "Y", g ? 1 : 0, i);
      }
    }
  near_vec(v, A, 0.15);
  int near = x_choices(f->db, "newA", v, 200);
  int far = x_choices(f->db, "newFar", away, 200);
  fprintf(stderr, "cold start: near-A user chose X %d/200, far user %d/200\n",
          near, far);
  assert_true(near >= 190);
  assert_true(far <= 135 && far >= 65);
  /* Without an embedding in the request, a stored state serves. */
  assert_int_equal(adb_user_state_put(f->db, "storedA", v, DIM, NULL), ADB_OK);
  assert_true(x_choices(f->db, "storedA", NULL, 50) >= 45);
}

static void cold_start_can_be_turned_off(void **state) {
  fixture *f = *state;
  assert_int_equal(adb_close(f->db), ADB_OK);
  adb_config cfg = {.store_url = f->url,
                    .seed = 7,
                    .cold_start_k = -1,
                    .index_dir = f->index_dir[0] ? f->index_dir : NULL};
  char err[256];
  assert_int_equal(adb_open(&cfg, &f->db, err, sizeof err), ADB_OK);
  make_agent(f->db, "cs");
  float A[DIM] = {0}, v[DIM];
  A[0] = 1;
  char user[16];
  for (int u = 0; u < 10; u++) {
    snprintf(user, sizeof user, "a%02d", u);
    near_vec(v, A, 0.1);
    assert_int_equal(adb_user_state_put(f->db, user, v, DIM, NULL), ADB_OK);
    reward(f->db, user, "X", 1, 0);
    reward(f->db, user, "Y", 1, 0);
  }
  for (int u = 0; u < 10; u++) {
    snprintf(user, sizeof user, "b%02d", u);
    reward(f->db, user, "X", 0, 0);
    reward(f->db, user, "Y", 0, 0);
  }
  /* '*' is balanced (X and Y both 10 of 20): about half, not ~all. */
  near_vec(v, A, 0.1);
  int x = x_choices(f->db, "newA", v, 200);
  assert_true(x <= 135 && x >= 65);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(episodes_are_found_by_similarity_best_first),
      T(a_user_filter_returns_only_that_users_episodes),
      T(users_are_found_by_their_state_embedding),
      T(patterns_are_found_by_embedding),
      T(a_replica_sees_episodes_written_through_another_handle),
      T(reopening_answers_the_same_from_the_snapshot),
      T(a_corrupt_snapshot_means_a_rebuild),
      T(bad_queries_are_refused_with_precise_messages),
      T(a_new_user_near_fans_of_x_is_shown_x),
      T(cold_start_can_be_turned_off),
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
    snprintf(name, sizeof name, "memory/%s", kinds[k]);
    failed +=
        _cmocka_run_group_tests(name, t, sizeof t / sizeof *t, NULL, NULL);
  }
  return failed;
}
