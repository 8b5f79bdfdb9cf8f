/*
 * test_dash.c — the dashboard's per-agent series (src/dash.c): events land
 * in the right minute and hour buckets, stale ring slots are cleared, the
 * cap on tracked agents sends the rest to "_other" (in /metrics too), a
 * reward attaches to its decision in the tail, latency percentiles are
 * within the histogram's factor sqrt(2), and concurrent writers lose no
 * count (also run under TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dash.h"

#define T0 1700000000000LL /* 13 min 20 s into an hour */
#define MIN 60000LL
#define HOUR 3600000LL

static json_t *series(adb__dash *d, const char *agent, int64_t now, int m,
                      int h) {
  adb__buf b = {0};
  assert_int_equal(adb__dash_series_json(d, agent, now, m, h, &b), 1);
  adb__buf_putc(&b, '\0');
  json_error_t e;
  json_t *j = json_loads(b.p, 0, &e);
  if (!j) fail_msg("bad JSON: %s in %s", e.text, b.p);
  adb__buf_free(&b);
  return j;
}

static int64_t at(json_t *j, const char *scale, const char *col, size_t i) {
  json_t *v =
      json_array_get(json_object_get(json_object_get(j, scale), col), i);
  return json_is_null(v) ? -1 : (int64_t)json_number_value(v);
}

static void events_land_in_their_minute_and_hour(void **state) {
  (void)state;
  adb__dash *d = adb__dash_new(10);
  adb__dash_agent *a = adb__dash_agent_of(d, "m");
  int64_t now = T0 + 2 * HOUR;
  /* 3 decisions 2 minutes ago, 1 now; rewards 2 and 4 now. */
  for (int i = 0; i < 3; i++)
    adb__dash_decision(a, now - 2 * MIN, "u", "e", "x", 0.5, 1000);
  adb__dash_decision(a, now, "u", "e2", "x", 0.5, 1000);
  adb__dash_reward(a, now, NULL, "u", "x", 2);
  adb__dash_reward(a, now, NULL, "u", "x", 4);
  json_t *j = series(d, "m", now, 5, 3);
  assert_int_equal(json_array_size(json_object_get(json_object_get(j, "minute"),
                                                   "decisions")),
                   5);
  assert_int_equal(at(j, "minute", "decisions", 2), 3);
  assert_int_equal(at(j, "minute", "decisions", 4), 1);
  assert_int_equal(at(j, "minute", "decisions", 3), 0);
  assert_int_equal(at(j, "minute", "rewards", 4), 2);
  assert_int_equal(at(j, "minute", "mean_reward", 4), 3);
  assert_int_equal(at(j, "minute", "mean_reward", 2), -1); /* null */
  assert_int_equal(at(j, "minute", "t", 4), (now / MIN) * 60);
  assert_int_equal(at(j, "hour", "decisions", 2), 4);
  assert_int_equal(at(j, "hour", "decisions", 1), 0);
  json_decref(j);
  adb__dash_free(d);
}

static void a_stale_ring_slot_is_cleared(void **state) {
  (void)state;
  adb__dash *d = adb__dash_new(10);
  adb__dash_agent *a = adb__dash_agent_of(d, "m");
  adb__dash_decision(a, T0, "u", "e", "x", 1, 1000);
  /* The same minute slot, one ring later. */
  int64_t later = T0 + ADB__DASH_MINUTES * MIN;
  adb__dash_decision(a, later, "u", "e", "x", 1, 1000);
  json_t *j = series(d, "m", later, ADB__DASH_MINUTES, 1);
  int64_t sum = 0;
  for (int i = 0; i < ADB__DASH_MINUTES; i++)
    sum += at(j, "minute", "decisions", (size_t)i);
  assert_int_equal(sum, 1);
  json_decref(j);
  adb__dash_summary s;
  assert_int_equal(adb__dash_summary_of(d, "m", later, &s), 1);
  assert_int_equal(s.decisions, 2);      /* since start */
  assert_int_equal(s.decisions_hour, 1); /* the last hour */
  adb__dash_free(d);
}

static void agents_past_the_cap_count_as_other(void **state) {
  (void)state;
  adb__dash *d = adb__dash_new(2);
  const char *names[] = {"a", "b", "c", "d"};
  for (int i = 0; i < 4; i++)
    adb__dash_decision(adb__dash_agent_of(d, names[i]), T0, "u", "e", "x", 1,
                       1000);
  assert_ptr_equal(adb__dash_agent_of(d, "c"), adb__dash_agent_of(d, "d"));
  assert_ptr_not_equal(adb__dash_agent_of(d, "a"), adb__dash_agent_of(d, "b"));
  adb__buf b = {0};
  adb__dash_render_metrics(d, &b);
  adb__buf_putc(&b, '\0');
  assert_non_null(
      strstr(b.p, "agentdb_agent_decisions_total{agent=\"a\"} 1\n"));
  assert_non_null(
      strstr(b.p, "agentdb_agent_decisions_total{agent=\"b\"} 1\n"));
  assert_non_null(
      strstr(b.p, "agentdb_agent_decisions_total{agent=\"_other\"} 2\n"));
  assert_null(strstr(b.p, "agent=\"c\""));
  assert_non_null(strstr(b.p, "agentdb_dashboard_agents_tracked 2\n"));
  adb__buf_free(&b);
  adb__dash_summary s;
  assert_int_equal(adb__dash_summary_of(d, "c", T0, &s), 0);
  assert_int_equal(adb__dash_summary_of(d, "_other", T0, &s), 1);
  assert_int_equal(s.decisions, 2);
  adb__dash_free(d);
}

static void a_reward_attaches_to_its_decision(void **state) {
  (void)state;
  adb__dash *d = adb__dash_new(10);
  adb__dash_agent *a = adb__dash_agent_of(d, "m");
  adb__dash_decision(a, T0, "u1", "ev1", "x", 0.25, 1000);
  adb__dash_decision(a, T0 + 1, "u2", "ev2", "y", 0.75, 1000);
  adb__dash_reward(a, T0 + 5, "ev1", NULL, NULL, 0.5);
  adb__dash_reward(a, T0 + 6, NULL, "u3", "z", 1); /* no decision */
  adb__buf b = {0};
  adb__dash_recent_json(d, 10, NULL, NULL, &b);
  adb__buf_putc(&b, '\0');
  json_t *j = json_loads(b.p, 0, NULL);
  assert_non_null(j);
  assert_int_equal(json_array_size(j), 3);
  json_t *r0 = json_array_get(j, 0), *r2 = json_array_get(j, 2);
  assert_string_equal(json_string_value(json_object_get(r0, "kind")), "reward");
  assert_string_equal(json_string_value(json_object_get(r0, "action")), "z");
  assert_string_equal(json_string_value(json_object_get(r2, "event_id")),
                      "ev1");
  assert_true(json_number_value(json_object_get(r2, "reward")) == 0.5);
  assert_int_equal(json_integer_value(json_object_get(r2, "reward_ts_ms")),
                   T0 + 5);
  assert_true(json_is_null(json_object_get(json_array_get(j, 1), "reward")));
  json_decref(j);
  adb__buf_free(&b);
  adb__dash_free(d);
}

static void latency_percentiles_within_sqrt2(void **state) {
  (void)state;
  adb__dash *d = adb__dash_new(10);
  adb__dash_agent *a = adb__dash_agent_of(d, "m");
  for (int i = 0; i < 98; i++)
    adb__dash_decision(a, T0, "u", "e", "x", 1, 100000); /* 100 us */
  for (int i = 0; i < 2; i++)
    adb__dash_decision(a, T0, "u", "e", "x", 1, 50000000); /* 50 ms */
  adb__dash_summary s;
  adb__dash_summary_of(d, "m", T0, &s);
  assert_true(s.p50_ms >= 0.1 / sqrt(2) && s.p50_ms <= 0.1 * sqrt(2));
  /* p99 is the 99th of 100: one of the 50 ms ones. */
  assert_true(s.p99_ms >= 50 / sqrt(2) && s.p99_ms <= 50 * sqrt(2));
  adb__dash_free(d);
}

#define THREADS 4
#define PER_THREAD 20000

static void *writer(void *arg) {
  adb__dash *d = arg;
  char name[16];
  for (int i = 0; i < PER_THREAD; i++) {
    snprintf(name, sizeof name, "ag%d", i % 8);
    adb__dash_agent *a = adb__dash_agent_of(d, name);
    adb__dash_decision(a, T0 + i, "u", "e", "x", 1, 1000);
    adb__dash_reward(a, T0 + i, "e", "u", "x", 1);
  }
  return NULL;
}

static void concurrent_writers_lose_nothing(void **state) {
  (void)state;
  adb__dash *d = adb__dash_new(100);
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++)
    pthread_create(&t[i], NULL, writer, d);
  /* A reader at the same time, as the dashboard would be. */
  for (int k = 0; k < 50; k++) {
    adb__buf b = {0};
    adb__dash_render_metrics(d, &b);
    adb__dash_recent_json(d, 20, NULL, NULL, &b);
    adb__buf_free(&b);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  int64_t dec = 0, rew = 0;
  for (int i = 0; i < 8; i++) {
    char name[16];
    snprintf(name, sizeof name, "ag%d", i);
    adb__dash_summary s;
    assert_int_equal(adb__dash_summary_of(d, name, T0 + PER_THREAD, &s), 1);
    dec += s.decisions;
    rew += s.rewards;
  }
  assert_int_equal(dec, THREADS * PER_THREAD);
  assert_int_equal(rew, THREADS * PER_THREAD);
  adb__dash_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(events_land_in_their_minute_and_hour),
      cmocka_unit_test(a_stale_ring_slot_is_cleared),
      cmocka_unit_test(agents_past_the_cap_count_as_other),
      cmocka_unit_test(a_reward_attaches_to_its_decision),
      cmocka_unit_test(latency_percentiles_within_sqrt2),
      cmocka_unit_test(concurrent_writers_lose_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
