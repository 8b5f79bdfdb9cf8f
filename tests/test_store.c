/*
 * test_store.c — the store conformance suite.
 *
 * The same tests run against every backend the environment offers: SQLite
 * always (a fresh temporary file per test), PostgreSQL when
 * AGENTDB_TEST_PG_URL is set (a fresh database per test); see util_store.h.
 * A backend is done when it passes every test here through the store.h
 * interface alone. A last group covers what only SQLite has: its URL
 * options and a real disk-full failure (RLIMIT_FSIZE).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "migrations.h"
#include "offline.h"
#include "store.h"
#include "util_store.h"

#define T0 1700000000000LL /* a fixed time, ms */
#define HOUR 3600000LL
#define H0 1699999200000LL /* an hour boundary */

static const char *g_kind; /* backend of the group being run */

typedef struct fx {
  char *url;
  adb__store *st;
} fx;

static int quick(void) {
  const char *q = getenv("ADB_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

/* A store call that must succeed; on failure the store's message shows. */
#define assert_ok(st, call)                                                    \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != ADB_OK)                                                         \
      fprintf(stderr, "%s: %s\n", #call, (st)->m->errmsg(st));                 \
    assert_int_equal(rc_, ADB_OK);                                             \
  } while (0)

#define assert_near(a, b, tol)                                                 \
  assert_true(fabs((double)(a) - (double)(b)) <= (tol))

static adb__store *open_url(const char *url) {
  adb__store *st = NULL;
  char err[512] = "";
  adb_config cfg = {.pool_size = 4};
  int rc = adb__store_open(url, &cfg, &st, err, sizeof err);
  if (rc != ADB_OK) fprintf(stderr, "open %s: %s\n", url, err);
  assert_int_equal(rc, ADB_OK);
  assert_non_null(st);
  return st;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->url = util_store_fresh_url(g_kind);
  if (!f->url) {
    free(f);
    return -1;
  }
  char err[512] = "";
  if (adb__store_open(f->url, NULL, &f->st, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "open %s: %s\n", f->url, err);
    util_store_drop(f->url);
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  adb__store_close(f->st);
  util_store_drop(f->url);
  free(f);
  return 0;
}

/* ------------------------------------------------------------- builders */

static void state_key(char out[ADB_STATE_KEY_LEN + 1], unsigned i) {
  snprintf(out, ADB_STATE_KEY_LEN + 1, "%064x", i);
}

static int64_t micro(double r) {
  return llround(r * ADB_MICRO);
}

/* A stand-in body hash: 64 hex digits of FNV-1a over the reward's cell and
 * value, so that another value under the same id is another body. */
static void body_hash(adb__reward_rec *r) {
  char text[1024];
  snprintf(text, sizeof text, "%s|%s|%s|%.17g", r->user, r->state_key,
           r->action, r->reward);
  uint64_t h = 1469598103934665603ULL;
  for (const char *p = text; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  snprintf(r->body_hash, sizeof r->body_hash, "%016llx%016llx%016llx%016llx",
           (unsigned long long)h, (unsigned long long)~h,
           (unsigned long long)(h * 3), (unsigned long long)(h * 5));
}

static adb__reward_rec reward(const char *agent, const char *id,
                              const char *user, const char *sk,
                              const char *action, double r) {
  adb__reward_rec x;
  memset(&x, 0, sizeof x);
  snprintf(x.agent, sizeof x.agent, "%s", agent);
  snprintf(x.reward_id, sizeof x.reward_id, "%s", id);
  snprintf(x.user, sizeof x.user, "%s", user);
  snprintf(x.state_key, sizeof x.state_key, "%s", sk);
  snprintf(x.action, sizeof x.action, "%s", action);
  x.reward = r;
  x.reward_micro = micro(r);
  x.ts_ms = T0;
  body_hash(&x);
  return x;
}

static adb__decision_rec decision(const char *agent, const char *event,
                                  const char *user, const char *action) {
  adb__decision_rec d;
  memset(&d, 0, sizeof d);
  snprintf(d.agent, sizeof d.agent, "%s", agent);
  snprintf(d.event_id, sizeof d.event_id, "%s", event);
  snprintf(d.user, sizeof d.user, "%s", user);
  state_key(d.state_key, 7);
  snprintf(d.action, sizeof d.action, "%s", action);
  d.propensity = 0.375;
  d.context_json = "{\"genre\":\"jazz\",\"device\":\"tv\"}";
  d.candidates_json = "[\"a\",\"b\",\"c\"]";
  snprintf(d.model, sizeof d.model, "beta-ts/1");
  d.ts_ms = T0 + 17;
  return d;
}

static adb__episode_rec episode(const char *agent, const char *id,
                                const float *emb, int dim) {
  adb__episode_rec e;
  memset(&e, 0, sizeof e);
  snprintf(e.agent, sizeof e.agent, "%s", agent);
  snprintf(e.episode_id, sizeof e.episode_id, "%s", id);
  snprintf(e.user, sizeof e.user, "u1");
  snprintf(e.session, sizeof e.session, "s1");
  e.embedding = emb;
  e.dim = dim;
  snprintf(e.action, sizeof e.action, "a");
  e.reward = 0.25;
  e.context_json = "{\"k\":1}";
  e.ts_ms = T0;
  return e;
}

static adb__metrics_delta metrics(const char *agent, int64_t hour) {
  adb__metrics_delta m;
  memset(&m, 0, sizeof m);
  snprintf(m.agent, sizeof m.agent, "%s", agent);
  m.hour_ms = hour;
  m.latency_p50_us = m.latency_p99_us = -1;
  return m;
}

static int write_rewards(adb__store *st, adb__reward_rec *r, int n) {
  adb__batch b = {.rewards = r, .n_rewards = n};
  int rc = st->m->write_batch(st, &b);
  free(b.changes);
  return rc;
}

/* The stats of one arm (zeros when the store has none). */
static adb__arm_stats arm(adb__store *st, const char *agent, const char *user,
                          const char *sk, const char *action) {
  adb__policy p = {0};
  adb__arm_stats s = {0};
  assert_ok(st, st->m->policy_get(st, agent, user, sk, &p));
  for (int i = 0; i < p.n; i++)
    if (strcmp(p.arms[i].action, action) == 0) s = p.arms[i].s;
  adb__policy_free(&p);
  return s;
}

/* Same JSON value (backends may re-format JSON text). */
static void assert_json_equal(const char *a, const char *b) {
  assert_non_null(a);
  assert_non_null(b);
  json_t *x = json_loads(a, 0, NULL), *y = json_loads(b, 0, NULL);
  assert_non_null(x);
  assert_non_null(y);
  int eq = json_equal(x, y);
  json_decref(x);
  json_decref(y);
  if (!eq) fprintf(stderr, "JSON differs: %s vs %s\n", a, b);
  assert_true(eq);
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void fill_agent(adb_agent_config *a);

/* ----------------------------------------------------------- migrations */

static int expected_migrations(void) {
  return strcmp(g_kind, "sqlite") == 0 ? adb__n_migrations_sqlite
                                       : adb__n_migrations_postgres;
}

static void migrations_are_idempotent_across_reopens(void **state) {
  fx *f = *state;
  adb_agent_config a;
  fill_agent(&a);
  snprintf(a.id, sizeof a.id, "keep");
  assert_ok(f->st, f->st->m->agent_put(f->st, &a));
  adb__store_close(f->st);
  f->st = open_url(f->url);
  adb__store *second = open_url(f->url); /* while the first is open */
  adb__store_close(second);
  assert_true(expected_migrations() > 0);
  assert_int_equal(
      util_store_query_int(f->url, "SELECT count(*) FROM schema_migrations"),
      expected_migrations());
  adb_agent_config out;
  assert_ok(f->st, f->st->m->agent_get(f->st, "keep", &out));
}

static void ping_answers_on_an_open_store(void **state) {
  fx *f = *state;
  assert_ok(f->st, f->st->m->ping(f->st));
}

/* --------------------------------------------------------------- agents */

static void fill_agent(adb_agent_config *a) {
  memset(a, 0, sizeof *a);
  snprintf(a->id, sizeof a->id, "agent.full:1@x-y_z");
  a->algorithm = ADB_ALGO_GAUSSIAN;
  a->prior_alpha = 2.5;
  a->prior_beta = 0.1;
  a->prior_mu = -3.25;
  a->prior_kappa = 1e-9;
  a->prior_a = 7.0 / 3.0;
  a->prior_b = 1e300;
  a->n_context_keys = ADB_MAX_CONTEXT_KEYS;
  for (int i = 0; i < ADB_MAX_CONTEXT_KEYS; i++)
    snprintf(a->context_keys[i], sizeof a->context_keys[i], "key_%d", i);
  memset(a->context_keys[3], 'k', ADB_ID_MAX); /* longest id */
  a->context_keys[3][ADB_ID_MAX] = 0;
  a->embedding_dim = 384;
  a->simhash_bits = 12;
  a->reward_weights = (adb_reward_weights){0.6, 0.15, 0.25};
  a->fallback_strength = -1;
  a->decay_half_life_s = 86400.5;
  a->reward_window_s = 3600;
  a->default_reward = 0.05;
}

static void agent_roundtrips_every_field(void **state) {
  fx *f = *state;
  adb_agent_config a, out;
  fill_agent(&a);
  assert_ok(f->st, f->st->m->agent_put(f->st, &a));
  assert_true(a.created_at_ms > 0);
  assert_int_equal(a.updated_at_ms, a.created_at_ms);
  assert_ok(f->st, f->st->m->agent_get(f->st, a.id, &out));
  assert_string_equal(out.id, a.id);
  assert_int_equal(out.algorithm, a.algorithm);
  assert_true(out.prior_alpha == a.prior_alpha);
  assert_true(out.prior_beta == a.prior_beta);
  assert_true(out.prior_mu == a.prior_mu);
  assert_true(out.prior_kappa == a.prior_kappa);
  assert_true(out.prior_a == a.prior_a);
  assert_true(out.prior_b == a.prior_b);
  assert_int_equal(out.n_context_keys, a.n_context_keys);
  for (int i = 0; i < a.n_context_keys; i++)
    assert_string_equal(out.context_keys[i], a.context_keys[i]);
  assert_int_equal(out.embedding_dim, a.embedding_dim);
  assert_int_equal(out.simhash_bits, a.simhash_bits);
  assert_true(out.reward_weights.watch == a.reward_weights.watch);
  assert_true(out.reward_weights.click == a.reward_weights.click);
  assert_true(out.reward_weights.rating == a.reward_weights.rating);
  assert_true(out.fallback_strength == a.fallback_strength);
  assert_true(out.decay_half_life_s == a.decay_half_life_s);
  assert_true(out.reward_window_s == a.reward_window_s);
  assert_true(out.default_reward == a.default_reward);
  assert_int_equal(out.created_at_ms, a.created_at_ms);
  assert_int_equal(out.updated_at_ms, a.updated_at_ms);
}

static void agent_put_again_replaces_config_and_keeps_created(void **state) {
  fx *f = *state;
  adb_agent_config a, out;
  fill_agent(&a);
  assert_ok(f->st, f->st->m->agent_put(f->st, &a));
  int64_t created = a.created_at_ms;
  sleep_ms(5);
  a.algorithm = ADB_ALGO_BETA;
  a.n_context_keys = 1;
  a.default_reward = 0;
  assert_ok(f->st, f->st->m->agent_put(f->st, &a));
  assert_int_equal(a.created_at_ms, created);
  assert_true(a.updated_at_ms > created);
  assert_ok(f->st, f->st->m->agent_get(f->st, a.id, &out));
  assert_int_equal(out.algorithm, ADB_ALGO_BETA);
  assert_int_equal(out.n_context_keys, 1);
  assert_string_equal(out.context_keys[0], "key_0");
  assert_true(out.default_reward == 0);
  assert_int_equal(out.created_at_ms, created);
  assert_int_equal(out.updated_at_ms, a.updated_at_ms);
}

static void unknown_agent_is_not_found(void **state) {
  fx *f = *state;
  adb_agent_config out;
  assert_int_equal(f->st->m->agent_get(f->st, "nobody", &out), ADB_ENOTFOUND);
  assert_non_null(f->st->m->errmsg(f->st));
}

static void agent_counters_sum_metrics_and_count_actions(void **state) {
  fx *f = *state;
  adb_agent_counters c;
  assert_ok(f->st, f->st->m->agent_counters(f->st, "ag", &c));
  assert_int_equal(c.decisions, 0);
  assert_int_equal(c.actions, 0);
  adb__metrics_delta m[2] = {metrics("ag", H0), metrics("ag", H0 + HOUR)};
  m[0].decisions = 10, m[0].rewards = 4, m[0].reward_sum = 1.5;
  m[1].decisions = 5, m[1].rewards = 2, m[1].reward_sum = 0.25;
  adb__batch b = {.metrics = m, .n_metrics = 2};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  adb__action_rec acts[3] = {
      {.id = "x"}, {.id = "y"}, {.id = "z", .disabled = 1}};
  assert_ok(f->st, f->st->m->actions_put(f->st, "ag", acts, 3));
  assert_ok(f->st, f->st->m->agent_counters(f->st, "ag", &c));
  assert_int_equal(c.decisions, 15);
  assert_int_equal(c.rewards, 6);
  assert_near(c.reward_sum, 1.75, 1e-12);
  assert_int_equal(c.actions, 3);
}

/* -------------------------------------------------------------- actions */

typedef struct seen_actions {
  int n;
  char id[8][ADB_ID_MAX + 1];
  int disabled[8];
  char meta[8][256];
} seen_actions;

static void collect_action(void *arg, const adb__action_rec *a) {
  seen_actions *s = arg;
  if (s->n >= 8) return;
  snprintf(s->id[s->n], sizeof s->id[0], "%s", a->id);
  s->disabled[s->n] = a->disabled;
  snprintf(s->meta[s->n], sizeof s->meta[0], "%s",
           a->metadata_json ? a->metadata_json : "");
  s->n++;
}

static void actions_put_and_list_include_disabled(void **state) {
  fx *f = *state;
  float emb[3] = {1, 2, 3};
  adb__action_rec a[3] = {
      {.id = "movie-2",
       .embedding = emb,
       .dim = 3,
       .metadata_json = "{\"title\":\"B\"}"},
      {.id = "movie-1", .disabled = 1, .metadata_json = "{\"title\":\"A\"}"},
      {.id = "movie-3"},
  };
  assert_ok(f->st, f->st->m->actions_put(f->st, "ag", a, 3));
  seen_actions s = {0};
  assert_ok(f->st, f->st->m->actions_list(f->st, "ag", collect_action, &s));
  assert_int_equal(s.n, 3);
  assert_string_equal(s.id[0], "movie-1");
  assert_int_equal(s.disabled[0], 1);
  assert_json_equal(s.meta[0], "{\"title\":\"A\"}");
  assert_string_equal(s.id[1], "movie-2");
  assert_int_equal(s.disabled[1], 0);
  assert_json_equal(s.meta[1], "{\"title\":\"B\"}");
  assert_string_equal(s.id[2], "movie-3");
  assert_string_equal(s.meta[2], "");
}

static void actions_put_replaces_existing_action(void **state) {
  fx *f = *state;
  adb__action_rec a = {.id = "m", .metadata_json = "{\"v\":1}"};
  assert_ok(f->st, f->st->m->actions_put(f->st, "ag", &a, 1));
  a.disabled = 1;
  a.metadata_json = "{\"v\":2}";
  assert_ok(f->st, f->st->m->actions_put(f->st, "ag", &a, 1));
  seen_actions s = {0};
  assert_ok(f->st, f->st->m->actions_list(f->st, "ag", collect_action, &s));
  assert_int_equal(s.n, 1);
  assert_int_equal(s.disabled[0], 1);
  assert_json_equal(s.meta[0], "{\"v\":2}");
  seen_actions none = {0};
  assert_ok(f->st,
            f->st->m->actions_list(f->st, "other", collect_action, &none));
  assert_int_equal(none.n, 0);
}

/* ------------------------------------------------------------- policies */

static void policy_of_unknown_cell_is_empty(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__policy p = {0};
  assert_ok(f->st, f->st->m->policy_get(f->st, "ag", "u", sk, &p));
  assert_int_equal(p.n, 0);
  adb__policy_free(&p);
}

static void reward_increments_user_and_agent_wide_rows(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r = reward("ag", "r1", "u1", sk, "a", 0.7);
  adb__batch b = {.rewards = &r, .n_rewards = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  assert_int_equal(r.result, ADB_OK);
  assert_int_equal(r.applied, 1);
  assert_true(r.first_reward == 0.7);
  /* Changes: the '*' row sorts before "u1". */
  assert_int_equal(b.n_changes, 2);
  assert_string_equal(b.changes[0].user, "*");
  assert_string_equal(b.changes[1].user, "u1");
  for (int i = 0; i < 2; i++) {
    assert_int_equal(b.changes[i].delta.n, 1);
    assert_int_equal(b.changes[i].delta.sum_micro, 700000);
    assert_int_equal(b.changes[i].delta.version, 1);
  }
  free(b.changes);
  adb__arm_stats u = arm(f->st, "ag", "u1", sk, "a");
  adb__arm_stats g = arm(f->st, "ag", "*", sk, "a");
  assert_int_equal(u.n, 1);
  assert_int_equal(u.sum_micro, 700000);
  assert_near(u.sum_sq, 0.49, 1e-12);
  assert_int_equal(u.version, 1);
  assert_int_equal(g.n, 1);
  assert_int_equal(g.version, 1);

  adb__reward_rec r2 = reward("ag", "r2", "u1", sk, "a", 0.2);
  b = (adb__batch){.rewards = &r2, .n_rewards = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  assert_int_equal(b.n_changes, 2);
  assert_int_equal(b.changes[1].delta.version, 2);
  free(b.changes);
  u = arm(f->st, "ag", "u1", sk, "a");
  assert_int_equal(u.n, 2);
  assert_int_equal(u.sum_micro, 900000);
  assert_near(u.sum_sq, 0.53, 1e-12);
  assert_int_equal(u.version, 2);
  assert_int_equal(arm(f->st, "ag", "*", sk, "a").version, 2);
}

static void policy_lists_every_arm_sorted_by_action(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1], other[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  state_key(other, 2);
  adb__reward_rec r[4] = {
      reward("ag", "r1", "u", sk, "c", 1),
      reward("ag", "r2", "u", sk, "a", 0),
      reward("ag", "r3", "u", sk, "b", 1),
      reward("ag", "r4", "u", other, "d", 1),
  };
  assert_ok(f->st, write_rewards(f->st, r, 4));
  adb__policy p = {0};
  assert_ok(f->st, f->st->m->policy_get(f->st, "ag", "u", sk, &p));
  assert_int_equal(p.n, 3);
  assert_string_equal(p.arms[0].action, "a");
  assert_string_equal(p.arms[1].action, "b");
  assert_string_equal(p.arms[2].action, "c");
  assert_int_equal(p.arms[0].s.sum_micro, 0);
  assert_int_equal(p.arms[2].s.sum_micro, 1000000);
  adb__policy_free(&p);
}

static void duplicate_reward_id_is_not_applied_twice(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r = reward("ag", "once", "u", sk, "a", 0.5);
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  adb__reward_rec again = r;
  adb__batch b = {.rewards = &again, .n_rewards = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  assert_int_equal(again.result, ADB_OK);
  assert_int_equal(again.applied, 0);
  assert_true(again.first_reward == 0.5);
  assert_int_equal(b.n_changes, 0);
  free(b.changes);
  adb__arm_stats u = arm(f->st, "ag", "u", sk, "a");
  assert_int_equal(u.n, 1);
  assert_int_equal(u.version, 1);
  assert_int_equal(arm(f->st, "ag", "*", sk, "a").n, 1);
}

static void reused_reward_id_with_other_body_conflicts(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r = reward("ag", "id", "u", sk, "a", 0.5);
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  adb__reward_rec other = reward("ag", "id", "u", sk, "a", 0.9);
  assert_ok(f->st, write_rewards(f->st, &other, 1));
  assert_int_equal(other.result, ADB_ECONFLICT);
  assert_int_equal(other.applied, 0);
  assert_int_equal(arm(f->st, "ag", "u", sk, "a").sum_micro, 500000);
  /* The same id under another agent is another reward. */
  adb__reward_rec mine = reward("ag2", "id", "u", sk, "a", 0.9);
  assert_ok(f->st, write_rewards(f->st, &mine, 1));
  assert_int_equal(mine.applied, 1);
}

static void duplicate_within_one_batch_applies_once(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r[3] = {reward("ag", "x", "u", sk, "a", 0.25),
                          reward("ag", "x", "u", sk, "a", 0.25),
                          reward("ag", "x", "u", sk, "a", 1.0)};
  assert_ok(f->st, write_rewards(f->st, r, 3));
  assert_int_equal(r[0].applied, 1);
  assert_int_equal(r[1].applied, 0);
  assert_int_equal(r[1].result, ADB_OK);
  assert_true(r[1].first_reward == 0.25);
  assert_int_equal(r[2].applied, 0);
  assert_int_equal(r[2].result, ADB_ECONFLICT);
  adb__arm_stats u = arm(f->st, "ag", "u", sk, "a");
  assert_int_equal(u.n, 1);
  assert_int_equal(u.sum_micro, 250000);
}

/* The agent-wide row adds every user's rewards (issue 13): three users'
 * rewards of 4e12 (4e18 micro-units each) take '*' past INT64_MAX, where
 * SQLite turned the sum into a REAL and PostgreSQL raised "bigint out of
 * range". The sum stays exact through later batches (the carry between
 * its two parts), and likewise below INT64_MIN. */
static void agent_wide_sum_passes_int64_limits_exactly(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r[3] = {reward("ag", "r1", "u1", sk, "a", 4e12),
                          reward("ag", "r2", "u2", sk, "a", 4e12),
                          reward("ag", "r3", "u3", sk, "a", 4e12)};
  assert_ok(f->st, write_rewards(f->st, r, 3));
  adb__arm_stats g = arm(f->st, "ag", "*", sk, "a");
  assert_int_equal(g.n, 3);
  assert_true(g.sum_micro == (adb__sum)3 * micro(4e12));
  assert_true(g.sum_micro > INT64_MAX);
  adb__reward_rec more[2] = {reward("ag", "r4", "u1", sk, "a", 4e12),
                             reward("ag", "r5", "u4", sk, "a", 0.000001)};
  assert_ok(f->st, write_rewards(f->st, &more[0], 1));
  assert_ok(f->st, write_rewards(f->st, &more[1], 1));
  g = arm(f->st, "ag", "*", sk, "a");
  assert_int_equal(g.n, 5);
  assert_true(g.sum_micro == (adb__sum)4 * micro(4e12) + 1);
  assert_true(arm(f->st, "ag", "u1", sk, "a").sum_micro ==
              (adb__sum)2 * micro(4e12));
  adb__reward_rec neg[3] = {reward("ag", "n1", "u1", sk, "b", -4e12),
                            reward("ag", "n2", "u2", sk, "b", -4e12),
                            reward("ag", "n3", "u3", sk, "b", -4e12)};
  assert_ok(f->st, write_rewards(f->st, neg, 3));
  g = arm(f->st, "ag", "*", sk, "b");
  assert_true(g.sum_micro == (adb__sum)3 * micro(-4e12));
  assert_true(g.sum_micro < INT64_MIN);
  if (strcmp(g_kind, "sqlite") == 0) /* never a REAL */
    assert_int_equal(
        util_store_query_int(f->url, "SELECT count(*) FROM rl_policies"
                                     " WHERE typeof(sum_micro) <> 'integer'"
                                     " OR typeof(sum_hi) <> 'integer'"),
        0);
}

/* Every store and cache keeps a sum within [-2^84, 2^84) (adb__sum_ok); at
 * the boundary the store refuses the reward and changes nothing. The
 * agent-wide row is set just below the limit behind the store's back
 * (2^84 micro-units are 1.9e13 rewards of 1e6 away). */
static void sum_beyond_the_limit_is_refused_changing_nothing(void **state) {
  fx *f = *state;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r1 = reward("ag", "r1", "u", sk, "a", 1.0);
  assert_ok(f->st, write_rewards(f->st, &r1, 1));
  assert_int_equal(util_store_exec(f->url, "UPDATE rl_policies SET"
                                           " sum_hi = 4503599627370495,"
                                           " sum_micro = 4294967295 - 1000000"
                                           " WHERE user_id = '*'"),
                   0);
  const adb__sum top = adb__sum_of(ADB_SUM_HI_MAX, ADB_SUM_LO_BASE - 1);
  assert_true(arm(f->st, "ag", "*", sk, "a").sum_micro == top - 1000000);
  adb__reward_rec r2 = reward("ag", "r2", "u", sk, "a", 1.0);
  assert_ok(f->st, write_rewards(f->st, &r2, 1)); /* reaches the top */
  assert_int_equal(r2.applied, 1);
  assert_true(arm(f->st, "ag", "*", sk, "a").sum_micro == top);
  adb__reward_rec r3 = reward("ag", "r3", "u", sk, "a", 0.000001);
  adb__batch b = {.rewards = &r3, .n_rewards = 1};
  int rc = f->st->m->write_batch(f->st, &b);
  free(b.changes);
  assert_true(rc < 0 || r3.result < 0);
  assert_int_equal(r3.applied, 0);
  adb__arm_stats u = arm(f->st, "ag", "u", sk, "a");
  adb__arm_stats g = arm(f->st, "ag", "*", sk, "a");
  assert_int_equal(u.n, 2);
  assert_int_equal(u.version, 2);
  assert_int_equal(g.n, 2);
  assert_true(g.sum_micro == top);
  /* nothing of r3 was kept: once there is room it applies, once */
  assert_int_equal(util_store_exec(f->url, "UPDATE rl_policies SET sum_hi = 0"
                                           " WHERE user_id = '*'"),
                   0);
  r3 = reward("ag", "r3", "u", sk, "a", 0.000001);
  assert_ok(f->st, write_rewards(f->st, &r3, 1));
  assert_int_equal(r3.applied, 1);
  assert_int_equal(arm(f->st, "ag", "u", sk, "a").n, 3);
}

/* Rewards spread over users x states x actions in one batch: every row's
 * n and sum_micro are exact, and so are the agent-wide rows. */
static void ten_thousand_rewards_in_one_batch_sum_exactly(void **state) {
  fx *f = *state;
  enum { N = 10000, U = 8, K = 5, A = 10 };
  static int64_t n[U][K][A], sum[U][K][A];
  memset(n, 0, sizeof n);
  memset(sum, 0, sizeof sum);
  adb__reward_rec *r = calloc(N, sizeof *r);
  assert_non_null(r);
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < N; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int u = (int)(x % U), k = (int)(x / U % K), a = (int)(x / U / K % A);
    char user[16], sk[ADB_STATE_KEY_LEN + 1], act[16], id[32];
    snprintf(user, sizeof user, "u%d", u);
    state_key(sk, (unsigned)k);
    snprintf(act, sizeof act, "a%d", a);
    snprintf(id, sizeof id, "r%d", i);
    double v = (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
    r[i] = reward("ag", id, user, sk, act, v);
    n[u][k][a]++;
    sum[u][k][a] += r[i].reward_micro;
  }
  adb__batch b = {.rewards = r, .n_rewards = N};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  for (int i = 1; i < b.n_changes; i++) /* sorted, distinct */
    assert_true(strcmp(b.changes[i - 1].user, b.changes[i].user) < 0 ||
                strcmp(b.changes[i - 1].state_key, b.changes[i].state_key) <
                    0 ||
                strcmp(b.changes[i - 1].action, b.changes[i].action) < 0);
  free(b.changes);
  for (int k = 0; k < K; k++) {
    char sk[ADB_STATE_KEY_LEN + 1];
    state_key(sk, (unsigned)k);
    for (int a = 0; a < A; a++) {
      char act[16];
      snprintf(act, sizeof act, "a%d", a);
      int64_t gn = 0, gs = 0;
      for (int u = 0; u < U; u++) {
        char user[16];
        snprintf(user, sizeof user, "u%d", u);
        adb__arm_stats s = arm(f->st, "ag", user, sk, act);
        assert_int_equal(s.n, n[u][k][a]);
        assert_int_equal(s.sum_micro, sum[u][k][a]);
        gn += n[u][k][a];
        gs += sum[u][k][a];
      }
      adb__arm_stats g = arm(f->st, "ag", "*", sk, act);
      assert_int_equal(g.n, gn);
      assert_int_equal(g.sum_micro, gs);
    }
  }
  free(r);
}

/* ------------------------------------------------------------ concurrency */

typedef struct writer_arg {
  adb__store *st;
  int thread, batches, per_batch;
  int rc;
} writer_arg;

static void *writer_main(void *p) {
  writer_arg *w = p;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 9);
  adb__reward_rec *r = calloc((size_t)w->per_batch, sizeof *r);
  if (!r) {
    w->rc = ADB_ENOMEM;
    return NULL;
  }
  for (int b = 0; b < w->batches && !w->rc; b++) {
    for (int i = 0; i < w->per_batch; i++) {
      char id[64];
      snprintf(id, sizeof id, "t%d-b%d-%d", w->thread, b, i);
      r[i] = reward("ag", id, "u", sk, "hot", 0.5);
    }
    w->rc = write_rewards(w->st, r, w->per_batch);
    if (w->rc)
      fprintf(stderr, "writer %d: %s\n", w->thread, w->st->m->errmsg(w->st));
  }
  free(r);
  return NULL;
}

typedef struct reader_arg {
  adb__store *st;
  atomic_int *stop;
  int reads, bad;
} reader_arg;

/* Readers during the writes: a row is never seen half-updated (sum is n
 * halves) and never goes back. */
static void *reader_main(void *p) {
  reader_arg *r = p;
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 9);
  int64_t last = 0;
  while (!atomic_load(r->stop)) {
    adb__policy pol = {0};
    if (r->st->m->policy_get(r->st, "ag", "u", sk, &pol) != ADB_OK) {
      r->bad++;
      break;
    }
    if (pol.n == 1) {
      const adb__arm_stats *s = &pol.arms[0].s;
      if (s->n < last || s->sum_micro != s->n * 500000) r->bad++;
      last = s->n;
    }
    adb__policy_free(&pol);
    r->reads++;
  }
  return NULL;
}

static void concurrent_batches_on_one_arm_lose_no_update(void **state) {
  fx *f = *state;
  enum { THREADS = 8 };
  int batches = quick() ? 10 : 40, per = quick() ? 50 : 100;
  adb__store *second = open_url(f->url);
  pthread_t t[THREADS], rt;
  writer_arg w[THREADS];
  atomic_int stop = 0;
  reader_arg ra = {.st = second, .stop = &stop};
  assert_int_equal(pthread_create(&rt, NULL, reader_main, &ra), 0);
  for (int i = 0; i < THREADS; i++) {
    w[i] = (writer_arg){.st = i % 2 ? second : f->st,
                        .thread = i,
                        .batches = batches,
                        .per_batch = per};
    assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  atomic_store(&stop, 1);
  pthread_join(rt, NULL);
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(w[i].rc, ADB_OK);
  assert_int_equal(ra.bad, 0);
  assert_true(ra.reads > 0);
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 9);
  int64_t total = (int64_t)THREADS * batches * per;
  adb__arm_stats u = arm(f->st, "ag", "u", sk, "hot");
  adb__arm_stats g = arm(second, "ag", "*", sk, "hot");
  assert_int_equal(u.n, total);
  assert_int_equal(u.sum_micro, total * 500000);
  assert_int_equal(u.version, (int64_t)THREADS * batches);
  assert_int_equal(g.n, total);
  assert_int_equal(g.version, (int64_t)THREADS * batches);
  adb__store_close(second);
}

/* ---------------------------------------------------- decisions, episodes */

static void decision_roundtrips(void **state) {
  fx *f = *state;
  adb__decision_rec d = decision("ag", "ev-1", "u1", "b");
  adb__batch b = {.decisions = &d, .n_decisions = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  free(b.changes);
  adb__decision_rec out;
  assert_ok(f->st, f->st->m->decision_get(f->st, "ag", "ev-1", &out));
  assert_string_equal(out.agent, "ag");
  assert_string_equal(out.event_id, "ev-1");
  assert_string_equal(out.user, "u1");
  assert_string_equal(out.state_key, d.state_key);
  assert_string_equal(out.action, "b");
  assert_true(out.propensity == 0.375);
  assert_json_equal(out.context_json, d.context_json);
  assert_json_equal(out.candidates_json, d.candidates_json);
  assert_string_equal(out.model, "beta-ts/1");
  assert_int_equal(out.ts_ms, d.ts_ms);
  adb__decision_rec_free(&out);
  assert_int_equal(f->st->m->decision_get(f->st, "ag", "ev-2", &out),
                   ADB_ENOTFOUND);
  assert_int_equal(f->st->m->decision_get(f->st, "other", "ev-1", &out),
                   ADB_ENOTFOUND);
}

static void decision_with_known_event_id_keeps_the_first(void **state) {
  fx *f = *state;
  adb__decision_rec d = decision("ag", "ev", "u1", "a");
  adb__decision_rec d2 = decision("ag", "ev", "u2", "c");
  adb__batch b = {.decisions = &d, .n_decisions = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  b = (adb__batch){.decisions = &d2, .n_decisions = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  adb__decision_rec out;
  assert_ok(f->st, f->st->m->decision_get(f->st, "ag", "ev", &out));
  assert_string_equal(out.user, "u1");
  assert_string_equal(out.action, "a");
  adb__decision_rec_free(&out);
}

static void episodes_insert_once_with_exact_embedding(void **state) {
  fx *f = *state;
  float emb[4] = {0.5f, -1.25f, 3e-38f, 1e30f};
  adb__episode_rec e[2] = {episode("ag", "e1", emb, 4),
                           episode("ag", "e2", NULL, 0)};
  adb__batch b = {.episodes = e, .n_episodes = 2};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  assert_ok(f->st, f->st->m->write_batch(f->st, &b)); /* retry */
  assert_int_equal(
      util_store_query_int(f->url, "SELECT count(*) FROM agent_episodes"), 2);
  assert_int_equal(util_store_query_int(f->url,
                                        "SELECT length(embedding) FROM"
                                        " agent_episodes WHERE episode_id ="
                                        " 'e1'"),
                   16);
}

/* ------------------------------------------------- user states, patterns */

static void user_state_roundtrips_embedding_bytes_exactly(void **state) {
  fx *f = *state;
  float emb[6] = {-0.0f,    1e-40f /* subnormal */,
                  FLT_MAX,  1.0f / 3.0f,
                  -FLT_MIN, 123456.789f};
  adb__user_state_rec u = {.user = "user-1",
                           .embedding = emb,
                           .dim = 6,
                           .context_json = "{\"country\":\"FR\"}"};
  assert_ok(f->st, f->st->m->user_state_put(f->st, &u));
  adb__user_state_rec out;
  assert_ok(f->st, f->st->m->user_state_get(f->st, "user-1", &out));
  assert_string_equal(out.user, "user-1");
  assert_int_equal(out.dim, 6);
  assert_memory_equal(out.embedding, emb, sizeof emb);
  assert_json_equal(out.context_json, "{\"country\":\"FR\"}");
  assert_true(out.updated_at_ms > 0);
  adb__user_state_rec_free(&out);

  /* Replacing drops the old embedding and context. */
  adb__user_state_rec u2 = {.user = "user-1", .embedding = emb, .dim = 2};
  assert_ok(f->st, f->st->m->user_state_put(f->st, &u2));
  assert_ok(f->st, f->st->m->user_state_get(f->st, "user-1", &out));
  assert_int_equal(out.dim, 2);
  assert_memory_equal(out.embedding, emb, 2 * sizeof *emb);
  assert_null(out.context_json);
  adb__user_state_rec_free(&out);
  assert_int_equal(f->st->m->user_state_get(f->st, "user-2", &out),
                   ADB_ENOTFOUND);
}

static void pattern_roundtrips(void **state) {
  fx *f = *state;
  float emb[3] = {0.25f, -0.5f, 8.0f};
  adb_pattern p = {.id = "p1",
                   .type = "co-watch",
                   .key = "jazz",
                   .value_json = "{\"next\":[\"m1\",\"m2\"],\"lift\":1.5}",
                   .confidence = 0.875,
                   .support = 1234567890123LL,
                   .embedding = emb,
                   .embedding_dim = 3};
  assert_ok(f->st, f->st->m->pattern_put(f->st, "ag", &p));
  adb_pattern out;
  assert_ok(f->st, f->st->m->pattern_get(f->st, "ag", "p1", &out));
  assert_string_equal(out.id, "p1");
  assert_string_equal(out.type, "co-watch");
  assert_string_equal(out.key, "jazz");
  assert_json_equal(out.value_json, p.value_json);
  assert_true(out.confidence == 0.875);
  assert_int_equal(out.support, p.support);
  assert_int_equal(out.embedding_dim, 3);
  assert_memory_equal(out.embedding, emb, sizeof emb);
  assert_true(out.updated_at_ms > 0);
  adb__pattern_free(&out);

  p.confidence = 0.5;
  p.embedding = NULL;
  p.embedding_dim = 0;
  assert_ok(f->st, f->st->m->pattern_put(f->st, "ag", &p));
  assert_ok(f->st, f->st->m->pattern_get(f->st, "ag", "p1", &out));
  assert_true(out.confidence == 0.5);
  assert_int_equal(out.embedding_dim, 0);
  assert_null(out.embedding);
  adb__pattern_free(&out);
  assert_int_equal(f->st->m->pattern_get(f->st, "other", "p1", &out),
                   ADB_ENOTFOUND);
}

/* Only the agent's patterns with the prefix, older than the cut and
 * without an embedding go; "pzm;" sorts right after every "pzm:" id. */
static void pattern_expire_takes_old_bookkeeping_only(void **state) {
  fx *f = *state;
  float emb[2] = {1, 2};
  struct {
    const char *agent, *id;
    int64_t ts;
    int emb, gone;
  } rows[] = {
      {"ag", "pzm:old", 1000, 0, 1},     {"ag", "pzm:new", 5000, 0, 0},
      {"ag", "pzm:old-emb", 1000, 1, 0}, {"ag", "pzr:old", 1000, 0, 0},
      {"ag", "pzm;", 1000, 0, 0},        {"ag", "pzm", 1000, 0, 0},
      {"ag2", "pzm:old", 1000, 0, 0},    {"ag", "pzm:old2", 2999, 0, 1}};
  int n = (int)(sizeof rows / sizeof rows[0]);
  for (int i = 0; i < n; i++) {
    adb_pattern p = {.value_json = "{}", .updated_at_ms = rows[i].ts};
    snprintf(p.id, sizeof p.id, "%s", rows[i].id);
    if (rows[i].emb) p.embedding = emb, p.embedding_dim = 2;
    assert_ok(f->st, f->st->m->pattern_put(f->st, rows[i].agent, &p));
  }
  int64_t deleted = -1;
  assert_ok(f->st,
            f->st->m->pattern_expire(f->st, "ag", "pzm:", 3000, &deleted));
  assert_int_equal(deleted, 2);
  for (int i = 0; i < n; i++) {
    adb_pattern out;
    int rc = f->st->m->pattern_get(f->st, rows[i].agent, rows[i].id, &out);
    assert_int_equal(rc, rows[i].gone ? ADB_ENOTFOUND : ADB_OK);
    if (!rc) adb__pattern_free(&out);
  }
}

/* -------------------------------------------------------------- metrics */

static void metrics_add_up_and_range_is_half_open(void **state) {
  fx *f = *state;
  adb__metrics_delta m[3] = {metrics("ag", H0), metrics("ag", H0 + HOUR),
                             metrics("ag", H0)};
  m[0].decisions = 3, m[0].cache_hits = 2, m[0].cache_misses = 1;
  m[0].latency_p50_us = 120, m[0].latency_p99_us = 900;
  m[1].rewards = 1, m[1].reward_sum = 0.5;
  m[2].decisions = 4, m[2].rewards = 2, m[2].reward_sum = 1.25;
  m[2].latency_p50_us = 100; /* p99 left unset (-1) */
  adb__batch b = {.metrics = m, .n_metrics = 3};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));
  adb__metrics_delta later = metrics("ag", H0 + 2 * HOUR);
  later.decisions = 1;
  b = (adb__batch){.metrics = &later, .n_metrics = 1};
  assert_ok(f->st, f->st->m->write_batch(f->st, &b));

  adb_metrics_row *rows = NULL;
  int n = 0;
  assert_ok(f->st,
            f->st->m->metrics_get(f->st, "ag", H0, H0 + 2 * HOUR, &rows, &n));
  assert_int_equal(n, 2);
  assert_int_equal(rows[0].hour_ms, H0);
  assert_int_equal(rows[0].decisions, 7);
  assert_int_equal(rows[0].rewards, 2);
  assert_near(rows[0].reward_sum, 1.25, 1e-12);
  assert_int_equal(rows[0].cache_hits, 2);
  assert_int_equal(rows[0].cache_misses, 1);
  assert_true(rows[0].latency_p50_us == 100);
  assert_true(rows[0].latency_p99_us == 900);
  assert_int_equal(rows[1].hour_ms, H0 + HOUR);
  assert_int_equal(rows[1].rewards, 1);
  assert_true(rows[1].latency_p50_us == 0); /* never set */
  free(rows);
  assert_ok(f->st, f->st->m->metrics_get(f->st, "ag", 0, H0, &rows, &n));
  assert_int_equal(n, 0);
  free(rows);
}

/* ------------------------------------------------------------ atomicity */

/* A batch whose every part has a row to check. */
typedef struct full_batch {
  adb__decision_rec d;
  adb__reward_rec r[2];
  adb__episode_rec e[2];
  adb__metrics_delta m;
  adb__batch b;
  char sk[ADB_STATE_KEY_LEN + 1];
} full_batch;

static void full_batch_init(full_batch *x, const char *bad_episode) {
  memset(x, 0, sizeof *x);
  state_key(x->sk, 3);
  x->d = decision("ag", "ev-f", "u", "a");
  x->r[0] = reward("ag", "rf1", "u", x->sk, "a", 1);
  x->r[1] = reward("ag", "rf2", "u2", x->sk, "a", 0.5);
  x->e[0] = episode("ag", "ep-ok", NULL, 0);
  x->e[1] = episode("ag", bad_episode ? bad_episode : "ep-2", NULL, 0);
  x->m = metrics("ag", H0);
  x->m.decisions = 1;
  x->b = (adb__batch){.decisions = &x->d,
                      .n_decisions = 1,
                      .rewards = x->r,
                      .n_rewards = 2,
                      .episodes = x->e,
                      .n_episodes = 2,
                      .metrics = &x->m,
                      .n_metrics = 1};
}

/* Nothing of full_batch is in the store. */
static void assert_nothing_written(fx *f, full_batch *x) {
  adb__decision_rec d;
  assert_int_equal(f->st->m->decision_get(f->st, "ag", "ev-f", &d),
                   ADB_ENOTFOUND);
  assert_int_equal(arm(f->st, "ag", "u", x->sk, "a").n, 0);
  assert_int_equal(arm(f->st, "ag", "*", x->sk, "a").n, 0);
  adb_metrics_row *rows = NULL;
  int n = -1;
  assert_ok(f->st,
            f->st->m->metrics_get(f->st, "ag", H0, H0 + HOUR, &rows, &n));
  assert_int_equal(n, 0);
  free(rows);
  assert_int_equal(
      util_store_query_int(f->url, "SELECT count(*) FROM agent_episodes"), 0);
  assert_int_equal(
      util_store_query_int(f->url, "SELECT count(*) FROM reward_signals"), 0);
}

/* After the failure the same rewards are new: they apply on retry. */
static void assert_retry_applies(fx *f, full_batch *x) {
  x->e[1] = episode("ag", "ep-2", NULL, 0);
  assert_ok(f->st, f->st->m->write_batch(f->st, &x->b));
  assert_int_equal(x->r[0].applied, 1);
  assert_int_equal(x->r[1].applied, 1);
  free(x->b.changes);
  assert_int_equal(arm(f->st, "ag", "*", x->sk, "a").n, 2);
}

static void batch_failing_midway_commits_nothing(void **state) {
  fx *f = *state;
  assert_int_equal(
      util_store_fail_insert(f->url, "agent_episodes", "episode_id", "boom"),
      0);
  full_batch x;
  full_batch_init(&x, "boom");
  int rc = f->st->m->write_batch(f->st, &x.b);
  assert_true(rc < 0);
  assert_null(x.b.changes);
  assert_int_equal(x.r[0].applied, 0);
  assert_non_null(strstr(f->st->m->errmsg(f->st), "injected failure"));
  assert_nothing_written(f, &x);
  assert_retry_applies(f, &x);
}

/* The failure comes from the last kind of row a batch writes here. */
static void batch_failing_at_its_metrics_commits_nothing(void **state) {
  fx *f = *state;
  assert_int_equal(util_store_fail_insert(f->url, "performance_metrics",
                                          "agent_id", "boom-agent"),
                   0);
  full_batch x;
  full_batch_init(&x, NULL);
  snprintf(x.m.agent, sizeof x.m.agent, "boom-agent");
  assert_true(f->st->m->write_batch(f->st, &x.b) < 0);
  assert_null(x.b.changes);
  assert_nothing_written(f, &x);
  snprintf(x.m.agent, sizeof x.m.agent, "ag");
  assert_retry_applies(f, &x);
}

static void batch_with_invalid_record_is_rejected_whole(void **state) {
  fx *f = *state;
  full_batch x;
  full_batch_init(&x, NULL);
  x.e[1].dim = 8; /* but no embedding */
  assert_true(f->st->m->write_batch(f->st, &x.b) < 0);
  x.e[1].dim = ADB_MAX_EMBEDDING_DIM + 1;
  assert_true(f->st->m->write_batch(f->st, &x.b) < 0);
  x.e[1].dim = 0;
  x.r[1].reward = NAN;
  assert_true(f->st->m->write_batch(f->st, &x.b) < 0);
  x.r[1].reward = 0.5;
  x.r[0].reward_id[0] = 0; /* empty id */
  assert_true(f->st->m->write_batch(f->st, &x.b) < 0);
  snprintf(x.r[0].reward_id, sizeof x.r[0].reward_id, "rf1");
  assert_nothing_written(f, &x);
  assert_retry_applies(f, &x);
}

static void hostile_ids_are_stored_verbatim(void **state) {
  fx *f = *state;
  const char *evil = "'; DROP TABLE rl_policies; --";
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r = reward("ag", "r\"1", evil, sk, "a'b", 1);
  assert_ok(f->st, write_rewards(f->st, &r, 1));
  assert_int_equal(arm(f->st, "ag", evil, sk, "a'b").n, 1);
  adb_agent_config a;
  assert_int_equal(f->st->m->agent_get(f->st, evil, &a), ADB_ENOTFOUND);
}

/* ---------------------------------------------------------- sqlite only */

static void sqlite_url_creates_parent_directories(void **state) {
  fx *f = *state;
  char path[4096], url[4200];
  assert_int_equal(util_store_sqlite_path(f->url, path, sizeof path), 0);
  *strrchr(path, '/') = 0;
  snprintf(url, sizeof url, "sqlite://%s/a/b/c/x.db?synchronous=normal", path);
  adb__store *st = open_url(url);
  assert_ok(st, st->m->ping(st));
  adb__store_close(st);
  struct stat sb;
  snprintf(url, sizeof url, "%s/a/b/c/x.db", path);
  assert_int_equal(stat(url, &sb), 0);
}

static void sqlite_url_rejects_bad_options(void **state) {
  (void)state;
  adb__store *st = NULL;
  char err[256] = "";
  assert_int_equal(adb__store_open("sqlite:///tmp/x.db?journal=off", NULL, &st,
                                   err, sizeof err),
                   ADB_EURL);
  assert_null(st);
  assert_non_null(strstr(err, "journal=off"));
  assert_int_equal(adb__store_open("sqlite://", NULL, &st, err, sizeof err),
                   ADB_EURL);
  assert_int_equal(adb__store_open("sqlite:///tmp/x.db?synchronous=maybe", NULL,
                                   &st, err, sizeof err),
                   ADB_EURL);
}

static void sqlite_memory_store_is_private_and_works(void **state) {
  (void)state;
  adb__store *a = open_url("sqlite://:memory:");
  adb__store *b = open_url("sqlite://:memory:");
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  adb__reward_rec r = reward("ag", "r", "u", sk, "x", 1);
  assert_int_equal(write_rewards(a, &r, 1), ADB_OK);
  assert_int_equal(arm(a, "ag", "u", sk, "x").n, 1);
  assert_int_equal(arm(b, "ag", "u", sk, "x").n, 0);
  assert_ok(a, a->m->ping(a));
  adb__store_close(a);
  adb__store_close(b);
}

static void sqlite_open_of_a_non_database_file_fails_cleanly(void **state) {
  fx *f = *state;
  char path[4096], url[4200], err[256] = "";
  assert_int_equal(util_store_sqlite_path(f->url, path, sizeof path), 0);
  *strrchr(path, '/') = 0;
  snprintf(url, sizeof url, "%s/junk.db", path);
  FILE *fp = fopen(url, "w");
  assert_non_null(fp);
  for (int i = 0; i < 512; i++)
    fputs("this is not an SQLite file. ", fp);
  fclose(fp);
  snprintf(url, sizeof url, "sqlite://%s/junk.db", path);
  adb__store *st = NULL;
  assert_int_equal(adb__store_open(url, NULL, &st, err, sizeof err),
                   ADB_ESTORE);
  assert_null(st);
  assert_non_null(strstr(err, "not a database"));
}

static int64_t file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

/* A real write failure: the process may not grow files past a limit
 * (RLIMIT_FSIZE, as on a full disk). The batch fails cleanly, the store
 * keeps its committed state and accepts the batch once space returns. */
static void sqlite_disk_full_fails_cleanly_and_recovers(void **state) {
  fx *f = *state;
  char path[4096], wal[4200];
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 1);
  assert_int_equal(util_store_sqlite_path(f->url, path, sizeof path), 0);
  snprintf(wal, sizeof wal, "%s-wal", path);
  adb__reward_rec one = reward("ag", "first", "u", sk, "a", 1);
  assert_ok(f->st, write_rewards(f->st, &one, 1));

  enum { N = 5000 };
  adb__reward_rec *r = calloc(N, sizeof *r);
  assert_non_null(r);
  for (int i = 0; i < N; i++) {
    char id[32];
    snprintf(id, sizeof id, "big-%d", i);
    r[i] = reward("ag", id, "u", sk, "a", 0.5);
  }
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  int64_t sz =
      file_size(path) > file_size(wal) ? file_size(path) : file_size(wal);
  lim = old;
  lim.rlim_cur = (rlim_t)sz + 8192;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  int rc = write_rewards(f->st, r, N);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  assert_true(rc < 0);
  assert_non_null(f->st->m->errmsg(f->st));

  adb__arm_stats s = arm(f->st, "ag", "u", sk, "a");
  assert_int_equal(s.n, 1);
  assert_int_equal(s.version, 1);
  assert_int_equal(util_store_query_int(f->url, "SELECT count(*) FROM"
                                                " pragma_integrity_check WHERE"
                                                " integrity_check <> 'ok'"),
                   0);
  assert_ok(f->st, write_rewards(f->st, r, N));
  assert_int_equal(r[N - 1].applied, 1);
  s = arm(f->st, "ag", "u", sk, "a");
  assert_int_equal(s.n, N + 1);
  free(r);
}

/* The lookups read through the column tables (store_rec.h) answer a miss
 * with ADB_ENOTFOUND, a message naming the last key, and a cleared
 * record. */
static void missing_records_are_not_found_with_their_messages(void **state) {
  fx *f = *state;
  const char *pre = strcmp(g_kind, "sqlite") == 0 ? "sqlite" : "postgresql";
  char want[128];
  adb_agent_config a;
  memset(&a, 0x5a, sizeof a);
  assert_int_equal(f->st->m->agent_get(f->st, "ag-x", &a), ADB_ENOTFOUND);
  snprintf(want, sizeof want, "%s: agent 'ag-x' not found", pre);
  assert_string_equal(f->st->m->errmsg(f->st), want);
  assert_string_equal(a.id, "");
  adb__decision_rec d;
  memset(&d, 0x5a, sizeof d);
  assert_int_equal(f->st->m->decision_get(f->st, "ag-x", "ev-x", &d),
                   ADB_ENOTFOUND);
  snprintf(want, sizeof want, "%s: decision 'ev-x' not found", pre);
  assert_string_equal(f->st->m->errmsg(f->st), want);
  assert_null(d.context_json);
  adb__user_state_rec u;
  memset(&u, 0x5a, sizeof u);
  assert_int_equal(f->st->m->user_state_get(f->st, "u-x", &u), ADB_ENOTFOUND);
  snprintf(want, sizeof want, "%s: user 'u-x' has no state", pre);
  assert_string_equal(f->st->m->errmsg(f->st), want);
  assert_null(u.embedding);
  adb_pattern p;
  memset(&p, 0x5a, sizeof p);
  assert_int_equal(f->st->m->pattern_get(f->st, "ag-x", "p-x", &p),
                   ADB_ENOTFOUND);
  snprintf(want, sizeof want, "%s: pattern 'p-x' not found", pre);
  assert_string_equal(f->st->m->errmsg(f->st), want);
  assert_null(p.value_json);
}

/* ------------------------------------- deferred events and log deletion */

/* An agent with a reward window of window_s and default reward 0.5. */
static void put_window_agent(adb__store *st, const char *id, double window_s) {
  adb_agent_config a;
  adb_agent_config_init(&a);
  snprintf(a.id, sizeof a.id, "%s", id);
  a.reward_window_s = window_s;
  a.default_reward = 0.5;
  assert_ok(st, st->m->agent_put(st, &a));
}

static void write_decision(adb__store *st, adb__decision_rec *d) {
  adb__batch b = {.decisions = d, .n_decisions = 1};
  assert_ok(st, st->m->write_batch(st, &b));
  free(b.changes);
  assert_int_equal(d->inserted, 1);
}

/* One sweep at now; returns how many default rewards it applied and
 * copies their event ids (up to 8) into ev. */
static int sweep(adb__store *st, int64_t now, char ev[8][ADB_ID_MAX + 1]) {
  adb__batch out;
  int64_t expired = 0;
  assert_ok(st, st->m->pending_sweep(st, now, &out, &expired));
  int n = 0;
  for (int i = 0; i < out.n_rewards; i++) {
    if (out.rewards[i].reward_id[0] == '~') {
      assert_true(out.rewards[i].reward == 0.5);
      if (ev && n < 8)
        snprintf(ev[n], ADB_ID_MAX + 1, "%s", out.rewards[i].event_id);
      n++;
    }
    free(out.rewards[i].signals_json);
  }
  free(out.rewards);
  free(out.changes);
  return n;
}

static int defer_state(adb__store *st, const char *agent, const char *ev) {
  int s = -1;
  assert_ok(st, st->m->event_defer(st, agent, ev, ADB__DEFER_GET, T0, &s));
  return s;
}

/* The log's rows by event: outcome and reward (up to 8 rows). */
typedef struct log_seen {
  int n;
  char ev[8][ADB_ID_MAX + 1];
  int outcome[8];
  double reward[8];
} log_seen;

static int log_collect(void *ctx, const adb__log_row *row) {
  log_seen *x = ctx;
  if (x->n < 8) {
    snprintf(x->ev[x->n], ADB_ID_MAX + 1, "%s", row->d->event_id);
    x->outcome[x->n] = row->outcome;
    x->reward[x->n] = row->reward;
  }
  x->n++;
  return 0;
}

static int log_outcome(const log_seen *x, const char *ev) {
  for (int i = 0; i < x->n && i < 8; i++)
    if (!strcmp(x->ev[i], ev)) return x->outcome[i];
  return -1;
}

/* Personalizer's deferActivation: when the window of a decision whose
 * event was marked deferred and never activated ends, the sweep gives it
 * no default reward (an activated one and an unmarked one get theirs),
 * closes it (a later reward is late, not applied), and the log shows it
 * with no outcome. Times are the sweep's arguments, not the clock. */
static void a_never_activated_deferred_event_gets_no_default(void **state) {
  fx *f = *state;
  adb__store *st = f->st;
  put_window_agent(st, "ag", 1);
  assert_int_equal(sweep(st, T0, NULL), 0); /* the watermark: T0 - 6 s */
  int s = -1;
  assert_ok(st,
            st->m->event_defer(st, "ag", "ev-never", ADB__DEFER_MARK, T0, &s));
  assert_int_equal(s, ADB__DEFER_WAITING);
  assert_ok(
      st, st->m->event_defer(st, "ag", "ev-active", ADB__DEFER_MARK, T0, NULL));
  assert_ok(st, st->m->event_defer(st, "ag", "ev-active", ADB__DEFER_ACTIVATE,
                                   T0 + 5, &s));
  assert_int_equal(s, ADB__DEFER_ACTIVE);
  /* Marking again keeps the activation; activating what was never marked
   * marks nothing; another agent's event of the same id is its own. */
  assert_ok(st,
            st->m->event_defer(st, "ag", "ev-active", ADB__DEFER_MARK, T0, &s));
  assert_int_equal(s, ADB__DEFER_ACTIVE);
  assert_ok(st, st->m->event_defer(st, "ag", "ev-plain", ADB__DEFER_ACTIVATE,
                                   T0, &s));
  assert_int_equal(s, ADB__DEFER_NONE);
  assert_int_equal(defer_state(st, "ag", "ev-never"), ADB__DEFER_WAITING);
  assert_int_equal(defer_state(st, "other", "ev-never"), ADB__DEFER_NONE);

  adb__decision_rec d[3] = {decision("ag", "ev-plain", "u1", "a"),
                            decision("ag", "ev-never", "u1", "b"),
                            decision("ag", "ev-active", "u1", "c")};
  for (int i = 0; i < 3; i++)
    write_decision(st, &d[i]);
  char ev[8][ADB_ID_MAX + 1];
  /* Every window ends at T0 + 17 + 1 s; the lag is 5 s more. */
  assert_int_equal(sweep(st, T0 + 17 + 1000 + ADB__DEFAULT_LAG_MS - 1, ev), 0);
  int n = sweep(st, T0 + 17 + 1000 + ADB__DEFAULT_LAG_MS + 1, ev);
  assert_int_equal(n, 2);
  assert_true((!strcmp(ev[0], "ev-plain") && !strcmp(ev[1], "ev-active")) ||
              (!strcmp(ev[1], "ev-plain") && !strcmp(ev[0], "ev-active")));
  assert_int_equal(sweep(st, T0 + 60000, NULL), 0);
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 7);
  assert_int_equal(arm(st, "ag", "u1", sk, "a").n, 1);
  assert_int_equal(arm(st, "ag", "u1", sk, "b").n, 0);
  assert_int_equal(arm(st, "ag", "u1", sk, "c").n, 1);
  assert_int_equal(arm(st, "ag", "*", sk, "b").n, 0);

  /* Closed events forget their marks (the sweep reads only open ones). */
  assert_int_equal(defer_state(st, "ag", "ev-never"), ADB__DEFER_NONE);
  assert_int_equal(defer_state(st, "ag", "ev-active"), ADB__DEFER_NONE);
  /* Activated after its window, then rewarded: closed, the reward late. */
  assert_ok(st, st->m->event_defer(st, "ag", "ev-never", ADB__DEFER_ACTIVATE,
                                   T0 + 60000, NULL));
  adb__reward_rec r = reward("ag", "r-never", "u1", sk, "b", 1);
  snprintf(r.event_id, sizeof r.event_id, "ev-never");
  assert_ok(st, write_rewards(st, &r, 1));
  assert_int_equal(r.late, 1);
  assert_int_equal(r.applied, 0);
  assert_int_equal(arm(st, "ag", "u1", sk, "b").n, 0);

  log_seen x = {0};
  assert_ok(st, st->m->log_scan(st, "ag", 0, INT64_MAX, log_collect, &x));
  assert_int_equal(x.n, 3);
  assert_int_equal(log_outcome(&x, "ev-never"), ADB_LOG_NONE);
  assert_int_equal(log_outcome(&x, "ev-plain"), ADB_LOG_DEFAULT);
  assert_int_equal(log_outcome(&x, "ev-active"), ADB_LOG_DEFAULT);
}

static int lin_count(void *arg, const adb__lin_row *row) {
  (void)row;
  ++*(int *)arg;
  return 0;
}

static int lin_rows(adb__store *st, const char *agent) {
  int n = 0;
  uint64_t snap = 0;
  assert_ok(st, st->m->lin_scan(st, agent, 0, 0, &snap, lin_count, &n));
  return n;
}

/* Personalizer's DELETE logs: the agent's decisions and rewards whose
 * window has ended (bounded by how far the default rewards were swept)
 * go, with their outcomes, marks and features, and so do its direct
 * rewards before that point (whose ids are then forgotten: a resend is
 * applied again). The posteriors, the linear model's rewards, the
 * younger log and another agent's log stay. */
static void log_delete_takes_the_ended_log_and_keeps_the_model(void **state) {
  fx *f = *state;
  adb__store *st = f->st;
  put_window_agent(st, "ag", 1);
  put_window_agent(st, "other", 0);
  int64_t first = 0, last = 0;
  assert_int_equal(st->m->log_range(st, "ag", &first, &last), ADB_ENOTFOUND);
  assert_int_equal(sweep(st, T0, NULL), 0);
  char sk[ADB_STATE_KEY_LEN + 1];
  state_key(sk, 7);
  assert_ok(st,
            st->m->event_defer(st, "ag", "ev-def", ADB__DEFER_MARK, T0, NULL));
  assert_ok(
      st, st->m->event_defer(st, "ag", "ev-orphan", ADB__DEFER_MARK, T0, NULL));
  adb__decision_rec d[5] = {
      decision("ag", "ev-1", "u1", "a"), decision("ag", "ev-2", "u1", "b"),
      decision("ag", "ev-def", "u1", "c"), decision("other", "ev-1", "u1", "a"),
      decision("ag", "ev-young", "u1", "a")};
  d[0].n_features = 8; /* a linear decision: its reward feeds the model */
  memset(d[0].features, 3, 8);
  d[4].ts_ms = T0 + 100000;
  for (int i = 0; i < 5; i++)
    write_decision(st, &d[i]);
  adb__reward_rec r[4] = {reward("ag", "r-1", "u1", sk, "a", 1),
                          reward("ag", "r-direct", "u1", sk, "a", 0.25),
                          reward("other", "r-1", "u1", sk, "a", 1),
                          reward("ag", "r-young", "u1", sk, "a", 1)};
  snprintf(r[0].event_id, sizeof r[0].event_id, "ev-1");
  snprintf(r[2].event_id, sizeof r[2].event_id, "ev-1");
  snprintf(r[3].event_id, sizeof r[3].event_id, "ev-young");
  r[3].ts_ms = T0 + 100001;
  assert_ok(st, write_rewards(st, r, 4));
  /* Defaults for ev-2 (ev-def is never activated); watermark T0 + 18. */
  assert_int_equal(sweep(st, T0 + 17 + 1000 + ADB__DEFAULT_LAG_MS + 1, NULL),
                   1);
  assert_ok(st, st->m->log_range(st, "ag", &first, &last));
  assert_int_equal(first, T0 + 17);
  assert_int_equal(last, T0 + 100000);
  adb__arm_stats before[3] = {arm(st, "ag", "u1", sk, "a"),
                              arm(st, "ag", "u1", sk, "b"),
                              arm(st, "ag", "*", sk, "a")};
  assert_int_equal(before[0].n, 3); /* r-1, r-direct, r-young */
  assert_int_equal(lin_rows(st, "ag"), 1);

  /* Now is long after every window, but the sweep only reached T0 + 18. */
  adb__log_deleted del;
  assert_ok(st, st->m->log_delete(st, "ag", T0 + 200000, &del));
  assert_int_equal(del.upto_ms, T0 + 18);
  assert_int_equal(del.decisions, 3);
  assert_int_equal(del.rewards, 3); /* r-1, r-direct, ev-2's default */

  log_seen x = {0};
  assert_ok(st, st->m->log_scan(st, "ag", 0, INT64_MAX, log_collect, &x));
  assert_int_equal(x.n, 1);
  assert_string_equal(x.ev[0], "ev-young");
  assert_int_equal(x.outcome[0], ADB_LOG_REWARD);
  assert_ok(st, st->m->log_range(st, "ag", &first, &last));
  assert_int_equal(first, T0 + 100000);
  assert_int_equal(last, T0 + 100000);
  adb__decision_rec out;
  assert_int_equal(st->m->decision_get(st, "ag", "ev-1", &out), ADB_ENOTFOUND);
  assert_int_equal(defer_state(st, "ag", "ev-def"), ADB__DEFER_NONE);
  assert_int_equal(defer_state(st, "ag", "ev-orphan"), ADB__DEFER_NONE);
  /* The model is untouched. */
  adb__arm_stats after[3] = {arm(st, "ag", "u1", sk, "a"),
                             arm(st, "ag", "u1", sk, "b"),
                             arm(st, "ag", "*", sk, "a")};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(after[i].n, before[i].n);
    assert_int_equal(after[i].sum_micro, before[i].sum_micro);
  }
  assert_int_equal(lin_rows(st, "ag"), 1);
  /* The other agent's log is untouched. */
  x = (log_seen){0};
  assert_ok(st, st->m->log_scan(st, "other", 0, INT64_MAX, log_collect, &x));
  assert_int_equal(x.n, 1);
  assert_int_equal(x.outcome[0], ADB_LOG_REWARD);
  /* A deleted direct reward's id is forgotten: its resend applies again. */
  adb__reward_rec again = reward("ag", "r-direct", "u1", sk, "a", 0.25);
  assert_ok(st, write_rewards(st, &again, 1));
  assert_int_equal(again.applied, 1);
  assert_int_equal(arm(st, "ag", "u1", sk, "a").n, before[0].n + 1);

  /* Without a window, all but the last lag's decisions go. */
  assert_ok(
      st, st->m->log_delete(st, "other", T0 + 17 + ADB__DEFAULT_LAG_MS, &del));
  assert_int_equal(del.decisions, 0);
  assert_ok(
      st, st->m->log_delete(st, "other", T0 + 18 + ADB__DEFAULT_LAG_MS, &del));
  assert_int_equal(del.decisions, 1);
  assert_int_equal(del.rewards, 1);
  assert_int_equal(st->m->log_range(st, "other", &first, &last), ADB_ENOTFOUND);
  assert_int_equal(st->m->log_delete(st, "nobody", T0, &del), ADB_ENOTFOUND);
}

/* ----------------------------------------------------------------- main */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest conformance[] = {
    T(migrations_are_idempotent_across_reopens),
    T(ping_answers_on_an_open_store),
    T(agent_roundtrips_every_field),
    T(agent_put_again_replaces_config_and_keeps_created),
    T(unknown_agent_is_not_found),
    T(agent_counters_sum_metrics_and_count_actions),
    T(actions_put_and_list_include_disabled),
    T(actions_put_replaces_existing_action),
    T(policy_of_unknown_cell_is_empty),
    T(reward_increments_user_and_agent_wide_rows),
    T(policy_lists_every_arm_sorted_by_action),
    T(duplicate_reward_id_is_not_applied_twice),
    T(reused_reward_id_with_other_body_conflicts),
    T(duplicate_within_one_batch_applies_once),
    T(agent_wide_sum_passes_int64_limits_exactly),
    T(sum_beyond_the_limit_is_refused_changing_nothing),
    T(ten_thousand_rewards_in_one_batch_sum_exactly),
    T(concurrent_batches_on_one_arm_lose_no_update),
    T(decision_roundtrips),
    T(decision_with_known_event_id_keeps_the_first),
    T(episodes_insert_once_with_exact_embedding),
    T(user_state_roundtrips_embedding_bytes_exactly),
    T(pattern_roundtrips),
    T(pattern_expire_takes_old_bookkeeping_only),
    T(metrics_add_up_and_range_is_half_open),
    T(batch_failing_midway_commits_nothing),
    T(batch_failing_at_its_metrics_commits_nothing),
    T(batch_with_invalid_record_is_rejected_whole),
    T(hostile_ids_are_stored_verbatim),
    T(missing_records_are_not_found_with_their_messages),
    T(a_never_activated_deferred_event_gets_no_default),
    T(log_delete_takes_the_ended_log_and_keeps_the_model),
};

/* No statement of the SQLite store reads a table that grows with traffic
 * from end to end: the planner has no statistics (the store never runs
 * ANALYZE), so a join order it picks once holds for every database. The
 * tables that may be scanned stay small: one row per agent, the migrations,
 * the rewards waiting for their decision. The default-reward sweep once
 * scanned every decision, once a second. */
static int small_table(const char *name) {
  static const char *const ok[] = {"schema_migrations",  "agent_metadata",
                                   "default_watermarks", "w",
                                   "pending_rewards",    "p"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    if (!strcmp(name, ok[i])) return 1;
  return 0;
}

static void sqlite_statements_scan_no_growing_table(void **state) {
  fx *f = *state;
  char path[4096];
  assert_int_equal(util_store_sqlite_path(f->url, path, sizeof path), 0);
  sqlite3 *db;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  int checked = 0, scans = 0;
  const char *sql;
  for (int i = 0; (sql = adb__sqlite_stmt_sql(i)); i++) {
    if (!strncmp(sql, "BEGIN", 5) || !strcmp(sql, "COMMIT") ||
        !strcmp(sql, "ROLLBACK"))
      continue;
    char *q = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, q, -1, &st, NULL);
    if (rc != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
      const char *d = (const char *)sqlite3_column_text(st, 3);
      char table[128];
      if (!d || sscanf(d, "SCAN %127s", table) != 1) continue;
      scans++;
      if (!small_table(table)) fail_msg("scans %s: %s", table, sql);
    }
    sqlite3_finalize(st);
    sqlite3_free(q);
    checked++;
  }
  sqlite3_close(db);
  assert_true(checked >= 35); /* the statements were found */
  assert_true(scans > 0);     /* and the check sees a scan when there is one */
}

static const struct CMUnitTest sqlite_only[] = {
    T(sqlite_statements_scan_no_growing_table),
    T(sqlite_url_creates_parent_directories),
    cmocka_unit_test(sqlite_url_rejects_bad_options),
    cmocka_unit_test(sqlite_memory_store_is_private_and_works),
    T(sqlite_open_of_a_non_database_file_fails_cleanly),
    T(sqlite_disk_full_fails_cleanly_and_recovers),
};

int main(void) {
  const char *kinds[4];
  int n = util_store_kinds(kinds, 4), failed = 0;
  for (int i = 0; i < n; i++) {
    char name[64];
    g_kind = kinds[i];
    snprintf(name, sizeof name, "store conformance: %s", g_kind);
    failed += _cmocka_run_group_tests(name, conformance,
                                      sizeof conformance / sizeof *conformance,
                                      NULL, NULL);
  }
  g_kind = "sqlite";
  failed += cmocka_run_group_tests_name("store: sqlite only", sqlite_only, NULL,
                                        NULL);
  return failed ? 1 : 0;
}
