/*
 * test_cache.c — the cache conformance suite.
 *
 * The same behaviours are checked against every cache backend available:
 * "mem://" always, plus $AGENTDB_TEST_REDIS_URL (redis://host:port/db) and
 * $AGENTDB_TEST_REDIS_CLUSTER_URL (redis-cluster://h1:p1,h2:p2,...) when
 * set. The tests use only cache.h. Every key carries a prefix unique to the
 * process, run and test, so a shared Redis server can run several suites
 * at once, and every entry written gets a TTL so nothing lingers there.
 *
 * Then come tests of the in-process backend alone: LRU eviction, the entry
 * bound, memory accounting, URL parameters, and a mixed concurrent load.
 *
 * Rules the suite fixes where cache.h is silent:
 *  - each blob get, and each key of a policy_mget, counts one hit or one
 *    miss in stats;
 *  - an empty policy (no arms) is cached: mget finds it, all arms zero;
 *  - del of a missing key is ADB_OK (ADB_ENOTFOUND is tolerated);
 *  - a blob get of a key holding a policy tombstone is ADB_ENOTFOUND;
 *  - every backend takes the URL parameter tombstone_ms=N, the tombstone
 *    TTL (ADB_TOMBSTONE_TTL_MS by default), so that expiry is testable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "hash.h"

#define LONG_TTL_MS 60000 /* every entry a test writes expires */

static const char *g_url; /* the backend the current group runs against */
static unsigned g_run;    /* distinguishes runs of the same pid */
static int g_counter;     /* distinguishes tests of a run */

typedef struct fx {
  adb__cache *c;
  char pre[80]; /* unique id prefix, valid as an agent id */
} fx;

/* splitmix64: the tests' own seeded generator. */
static uint64_t next_rand(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int quick(void) {
  const char *q = getenv("ADB_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static adb__cache *open_url(const char *url, const adb_config *cfg) {
  adb__cache *c = NULL;
  char err[256] = "";
  int rc = adb__cache_open(url, cfg, &c, err, sizeof err);
  if (rc != ADB_OK) fprintf(stderr, "cannot open cache %s: %s\n", url, err);
  return rc == ADB_OK ? c : NULL;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  adb_config cfg = {0};
  if (!f || !(f->c = open_url(g_url, &cfg))) {
    free(f);
    return -1;
  }
  snprintf(f->pre, sizeof f->pre, "t.%d.%08x.%d", (int)getpid(), g_run,
           ++g_counter);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  adb__cache_close(f->c);
  free(f);
  return 0;
}

/* A blob key of this test. */
static void bkey(const fx *f, char *out, size_t cap, const char *name) {
  snprintf(out, cap, "b:{%s}:%s", f->pre, name);
}

/* A policy key of this test, as the coordinator makes them. */
static void pkey(const fx *f, char *out, size_t cap, const char *user) {
  adb__policy_key(out, cap, f->pre, user,
                  "00000000000000000000000000000000"
                  "00000000000000000000000000000001");
}

static adb__arm_stats arm(int64_t n, int64_t sum, double sq, int64_t v) {
  return (adb__arm_stats){.n = n, .sum_micro = sum, .sum_sq = sq, .version = v};
}

static void push(adb__policy *p, const char *id, adb__arm_stats s) {
  assert_int_equal(adb__policy_push(p, id, &s), ADB_OK);
}

static void assert_arm(const adb__arm_stats *s, int64_t n, int64_t sum,
                       double sq, int64_t v) {
  assert_int_equal(s->n, n);
  assert_int_equal(s->sum_micro, sum);
  assert_true(s->sum_sq == sq);
  assert_int_equal(s->version, v);
}

/* mget of one key; returns found. */
static int mget1(adb__cache *c, const char *key, int n, const char *const *ids,
                 adb__arm_stats *st) {
  int found = -1;
  const char *keys[] = {key};
  assert_int_equal(
      c->m->policy_mget(c, 1, keys, &(adb__ids){.n = n, .id = ids}, st, &found),
      ADB_OK);
  assert_true(found == 0 || found == 1);
  return found;
}

static int cached(adb__cache *c, const char *key) {
  adb__arm_stats st;
  const char *ids[] = {"a"};
  return mget1(c, key, 1, ids, &st);
}

static void apply1(adb__cache *c, const char *key, const char *id,
                   adb__arm_stats d) {
  const char *ids[] = {id};
  assert_int_equal(c->m->policy_apply(c, key, 1, ids, &d), ADB_OK);
}

/* A policy of arms a (n=2, v=3) and b (n=5, v=1) under key. */
static void put_ab(adb__cache *c, const char *key) {
  adb__policy p = {0};
  push(&p, "a", arm(2, 1500000, 1.25, 3));
  push(&p, "b", arm(5, 250000, 0.5, 1));
  assert_int_equal(c->m->policy_put(c, key, &p, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&p);
}

/* ------------------------------------------------------------ blobs */

static void blob_set_get_del_roundtrip(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "x");
  assert_int_equal(f->c->m->set(f->c, k, "hello", 5, LONG_TTL_MS), ADB_OK);
  void *v = NULL;
  size_t len = 0;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_OK);
  assert_int_equal(len, 5);
  assert_memory_equal(v, "hello", 5);
  free(v);
  assert_int_equal(f->c->m->del(f->c, k), ADB_OK);
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_ENOTFOUND);
}

static void blob_values_are_binary_safe(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "bin");
  size_t n = 70000;
  unsigned char *buf = malloc(n);
  assert_non_null(buf);
  for (size_t i = 0; i < n; i++)
    buf[i] = (unsigned char)(i * 7 + i / 256);
  buf[0] = 0;
  buf[n - 1] = 0;
  assert_int_equal(f->c->m->set(f->c, k, buf, n, LONG_TTL_MS), ADB_OK);
  void *v = NULL;
  size_t len = 0;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_OK);
  assert_int_equal(len, n);
  assert_memory_equal(v, buf, n);
  free(v);
  free(buf);
}

static void blob_empty_value_roundtrips(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "empty");
  assert_int_equal(f->c->m->set(f->c, k, "", 0, LONG_TTL_MS), ADB_OK);
  void *v = NULL;
  size_t len = 99;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_OK);
  assert_int_equal(len, 0);
  free(v);
}

static void blob_get_missing_is_enotfound(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "never-set");
  void *v = (void *)1;
  size_t len = 1;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_ENOTFOUND);
}

static void blob_set_replaces_value(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "r");
  assert_int_equal(f->c->m->set(f->c, k, "first", 5, LONG_TTL_MS), ADB_OK);
  assert_int_equal(f->c->m->set(f->c, k, "2nd", 3, LONG_TTL_MS), ADB_OK);
  void *v = NULL;
  size_t len = 0;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_OK);
  assert_int_equal(len, 3);
  assert_memory_equal(v, "2nd", 3);
  free(v);
}

static void blob_del_missing_key_is_ok(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "absent");
  int rc = f->c->m->del(f->c, k);
  assert_true(rc == ADB_OK || rc == ADB_ENOTFOUND);
}

static void blob_expires_after_ttl(void **state) {
  fx *f = *state;
  char k[160];
  bkey(f, k, sizeof k, "ttl");
  assert_int_equal(f->c->m->set(f->c, k, "v", 1, 100), ADB_OK);
  void *v = NULL;
  size_t len = 0;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_OK);
  free(v);
  sleep_ms(350);
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_ENOTFOUND);
}

/* ttl_ms 0 is the configured default (here cache_ttl_s = 1). */
static void blob_ttl_zero_uses_configured_default(void **state) {
  fx *f = *state;
  adb_config cfg = {.cache_ttl_s = 1};
  adb__cache *c = open_url(g_url, &cfg);
  assert_non_null(c);
  char k[160];
  bkey(f, k, sizeof k, "deflt");
  assert_int_equal(c->m->set(c, k, "v", 1, 0), ADB_OK);
  void *v = NULL;
  size_t len = 0;
  sleep_ms(300);
  assert_int_equal(c->m->get(c, k, &v, &len), ADB_OK);
  free(v);
  sleep_ms(1100);
  assert_int_equal(c->m->get(c, k, &v, &len), ADB_ENOTFOUND);
  adb__cache_close(c);
}

/* --------------------------------------------------------- policies */

static void policy_put_then_mget_returns_stats(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  const char *ids[] = {"b", "a"};
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 5, 250000, 0.5, 1);
  assert_arm(&st[1], 2, 1500000, 1.25, 3);
}

static void policy_mget_absent_arm_is_zero_at_version_0(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  /* Prefixes and extensions of cached ids are other arms. */
  const char *ids[] = {"c", "a", "", "aa", "b.1"};
  adb__arm_stats st[5];
  memset(st, 0x55, sizeof st);
  assert_int_equal(mget1(f->c, k, 5, ids, st), 1);
  assert_arm(&st[0], 0, 0, 0.0, 0);
  assert_arm(&st[1], 2, 1500000, 1.25, 3);
  assert_arm(&st[2], 0, 0, 0.0, 0);
  assert_arm(&st[3], 0, 0, 0.0, 0);
  assert_arm(&st[4], 0, 0, 0.0, 0);
}

static void policy_mget_sets_found_per_key(void **state) {
  fx *f = *state;
  char k1[256], k2[256];
  pkey(f, k1, sizeof k1, "u1");
  pkey(f, k2, sizeof k2, "*");
  put_ab(f->c, k2);
  const char *keys[] = {k1, k2};
  const char *ids[] = {"a"};
  adb__arm_stats st[2];
  int found[2] = {-1, -1};
  memset(st, 0x55, sizeof st);
  assert_int_equal(f->c->m->policy_mget(f->c, 2, keys,
                                        &(adb__ids){.n = 1, .id = ids}, st,
                                        found),
                   ADB_OK);
  assert_int_equal(found[0], 0);
  assert_int_equal(found[1], 1);
  assert_arm(&st[0], 0, 0, 0.0, 0);
  assert_arm(&st[1], 2, 1500000, 1.25, 3);
}

static void policy_mget_reads_several_keys(void **state) {
  fx *f = *state;
  enum { K = 4, A = 3 };
  char k[K][256];
  const char *keys[K];
  const char *ids[A] = {"x", "y", "z"};
  for (int i = 0; i < K; i++) {
    char user[32];
    snprintf(user, sizeof user, "user-%d", i);
    pkey(f, k[i], sizeof k[i], user);
    keys[i] = k[i];
    if (i == 2) continue; /* one key left uncached */
    adb__policy p = {0};
    for (int a = 0; a < A; a++)
      push(&p, ids[a], arm(i * 10 + a, a, 0, i + 1));
    assert_int_equal(f->c->m->policy_put(f->c, k[i], &p, LONG_TTL_MS), ADB_OK);
    adb__policy_free(&p);
  }
  adb__arm_stats st[K * A];
  int found[K];
  assert_int_equal(f->c->m->policy_mget(f->c, K, keys,
                                        &(adb__ids){.n = A, .id = ids}, st,
                                        found),
                   ADB_OK);
  for (int i = 0; i < K; i++) {
    assert_int_equal(found[i], i != 2);
    for (int a = 0; a < A; a++) {
      if (i == 2)
        assert_arm(&st[i * A + a], 0, 0, 0.0, 0);
      else
        assert_arm(&st[i * A + a], i * 10 + a, a, 0.0, i + 1);
    }
  }
  /* The same read with the ids' lengths and hashes given, as a decision
   * passes them, finds the same arms. */
  uint32_t len[A];
  uint64_t h[A];
  for (int a = 0; a < A; a++) {
    len[a] = (uint32_t)strlen(ids[a]);
    h[a] = adb__hash_id(ids[a], len[a]);
  }
  adb__arm_stats st2[K * A];
  int found2[K];
  assert_int_equal(
      f->c->m->policy_mget(f->c, K, keys,
                           &(adb__ids){.n = A, .id = ids, .len = len, .h = h},
                           st2, found2),
      ADB_OK);
  assert_memory_equal(found2, found, sizeof found);
  assert_memory_equal(st2, st, sizeof st);
}

static void policy_empty_is_cached_as_found(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "newcomer");
  adb__policy p = {0};
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  const char *ids[] = {"a", "b"};
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 0, 0, 0.0, 0);
  assert_arm(&st[1], 0, 0, 0.0, 0);
}

static void policy_put_keeps_entry_with_newer_arm(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k); /* a at version 3 */
  adb__policy stale = {0};
  push(&stale, "a", arm(1, 1000000, 1, 2));
  push(&stale, "b", arm(9, 9, 9, 7)); /* newer b does not excuse older a */
  assert_int_equal(f->c->m->policy_put(f->c, k, &stale, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&stale);
  const char *ids[] = {"a", "b"};
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 2, 1500000, 1.25, 3);
  assert_arm(&st[1], 5, 250000, 0.5, 1);
}

/* An arm the load lacks is at version 0 in it: older than any cached. */
static void policy_put_keeps_entry_with_arm_missing_from_load(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  adb__policy stale = {0};
  push(&stale, "a", arm(2, 1500000, 1.25, 3));
  assert_int_equal(f->c->m->policy_put(f->c, k, &stale, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&stale);
  const char *ids[] = {"b"};
  adb__arm_stats st[1];
  assert_int_equal(mget1(f->c, k, 1, ids, st), 1);
  assert_arm(&st[0], 5, 250000, 0.5, 1);
}

static void policy_put_replaces_older_entry(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  adb__policy fresh = {0};
  push(&fresh, "a", arm(3, 1600000, 1.5, 4));
  push(&fresh, "b", arm(5, 250000, 0.5, 1));
  push(&fresh, "c", arm(1, 0, 0, 1));
  assert_int_equal(f->c->m->policy_put(f->c, k, &fresh, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&fresh);
  const char *ids[] = {"a", "b", "c"};
  adb__arm_stats st[3];
  assert_int_equal(mget1(f->c, k, 3, ids, st), 1);
  assert_arm(&st[0], 3, 1600000, 1.5, 4);
  assert_arm(&st[1], 5, 250000, 0.5, 1);
  assert_arm(&st[2], 1, 0, 0.0, 1);
}

static void policy_expires_after_ttl(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  adb__policy p = {0};
  push(&p, "a", arm(1, 1, 0, 1));
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, 100), ADB_OK);
  adb__policy_free(&p);
  assert_int_equal(cached(f->c, k), 1);
  sleep_ms(350);
  assert_int_equal(cached(f->c, k), 0);
}

static void policy_apply_adds_next_version(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  apply1(f->c, k, "a", arm(1, 500000, 0.25, 4));
  const char *ids[] = {"a", "b"};
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 3, 2000000, 1.5, 4);
  assert_arm(&st[1], 5, 250000, 0.5, 1);
}

/* An arm whose sum (micro-units) is v, for the sum tests below. */
static adb__arm_stats arm_sum(int64_t n, adb__sum v, int64_t ver) {
  adb__arm_stats s = arm(n, 0, 0, ver);
  s.sum_micro = v;
  return s;
}

/* Sums past INT64_MAX (the agent-wide row, issue 13) are cached and added
 * exactly, on either side of zero: in Redis as two parts with a carry,
 * each exact in Lua's doubles. */
static void policy_sums_past_int64_are_exact(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "*");
  const adb__sum big = (adb__sum)INT64_MAX - 5;
  const adb__sum huge = ((adb__sum)1 << 70) + 12345;
  adb__policy p = {0};
  push(&p, "a", arm_sum(2, big, 1));
  push(&p, "b", arm_sum(3, huge, 1));
  push(&p, "c", arm_sum(4, -huge, 1));
  push(&p, "d", arm_sum(5, ((adb__sum)1 << 53) - 1, 1));
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&p);
  const char *ids[] = {"a", "b", "c", "d"};
  adb__arm_stats st[4];
  assert_int_equal(mget1(f->c, k, 4, ids, st), 1);
  assert_true(st[0].sum_micro == big && st[1].sum_micro == huge);
  assert_true(st[2].sum_micro == -huge);
  assert_true(st[3].sum_micro == ((adb__sum)1 << 53) - 1);
  adb__arm_stats d[] = {arm_sum(1, INT64_MAX, 2), arm_sum(1, -1, 2),
                        arm_sum(1, INT64_MIN, 2), arm_sum(1, 1, 2)};
  assert_int_equal(f->c->m->policy_apply(f->c, k, 4, ids, d), ADB_OK);
  assert_int_equal(mget1(f->c, k, 4, ids, st), 1);
  assert_true(st[0].sum_micro == big + INT64_MAX);
  assert_true(st[1].sum_micro == huge - 1);
  assert_true(st[2].sum_micro == -huge + INT64_MIN);
  assert_true(st[3].sum_micro == (adb__sum)1 << 53);
  assert_int_equal(st[0].n, 3);
  assert_int_equal(st[0].version, 2);
}

/* The limit every store and cache keeps (adb__sum_ok, [-2^84, 2^84)):
 * reaching it is fine; an increment past it drops the entry (as a gap
 * does), so the next read goes to the store, which refuses such a sum. */
static void policy_apply_past_the_sum_limit_drops_entry(void **state) {
  fx *f = *state;
  const adb__sum top = adb__sum_of(ADB_SUM_HI_MAX, ADB_SUM_LO_BASE - 1);
  const adb__sum bottom = adb__sum_of(ADB_SUM_HI_MIN, 0);
  const char *ids[] = {"a"};
  adb__arm_stats st;
  char k[256], k2[256];
  pkey(f, k, sizeof k, "u1");
  pkey(f, k2, sizeof k2, "u2");
  adb__policy p = {0};
  push(&p, "a", arm_sum(1, top - 10, 1));
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  p.arms[0].s.sum_micro = bottom + 10;
  assert_int_equal(f->c->m->policy_put(f->c, k2, &p, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&p);
  apply1(f->c, k, "a", arm_sum(1, 10, 2)); /* to the top exactly */
  assert_int_equal(mget1(f->c, k, 1, ids, &st), 1);
  assert_true(st.sum_micro == top);
  apply1(f->c, k, "a", arm_sum(1, 1, 3)); /* one past */
  assert_int_equal(mget1(f->c, k, 1, ids, &st), 0);
  apply1(f->c, k2, "a", arm_sum(1, -10, 2));
  assert_int_equal(mget1(f->c, k2, 1, ids, &st), 1);
  assert_true(st.sum_micro == bottom);
  apply1(f->c, k2, "a", arm_sum(1, -1, 3));
  assert_int_equal(mget1(f->c, k2, 1, ids, &st), 0);
}

/* Consecutive changes, in separate calls and within one call (the same
 * arm twice), all land in order. */
static void policy_apply_adds_versions_in_order(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  apply1(f->c, k, "b", arm(1, 1, 0, 2));
  const char *ids[] = {"b", "a", "b"};
  adb__arm_stats d[] = {arm(1, 10, 0, 3), arm(2, 100, 0.5, 4),
                        arm(1, 1000, 0, 4)};
  assert_int_equal(f->c->m->policy_apply(f->c, k, 3, ids, d), ADB_OK);
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 8, 251011, 0.5, 4);
  assert_arm(&st[1], 4, 1500100, 1.75, 4);
}

static void policy_apply_skips_included_change(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);                       /* a at 3, b at 1 */
  apply1(f->c, k, "a", arm(1, 1, 1, 3)); /* equal: already included */
  apply1(f->c, k, "b", arm(1, 1, 1, 1));
  apply1(f->c, k, "a", arm(1, 1, 1, 2)); /* older */
  const char *ids[] = {"a", "b"};
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 2, 1500000, 1.25, 3);
  assert_arm(&st[1], 5, 250000, 0.5, 1);
}

static void policy_apply_deletes_entry_on_gap(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  apply1(f->c, k, "a", arm(1, 1, 0, 5)); /* version 4 was missed */
  assert_int_equal(cached(f->c, k), 0);
}

/* A gap on one arm drops the entry even when other changes fit. */
static void policy_apply_gap_drops_whole_entry(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  const char *ids[] = {"a", "b"};
  adb__arm_stats d[] = {arm(1, 1, 0, 4), arm(1, 1, 0, 3)};
  assert_int_equal(f->c->m->policy_apply(f->c, k, 2, ids, d), ADB_OK);
  assert_int_equal(cached(f->c, k), 0);
}

static void policy_apply_adds_absent_arm_at_version_1(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  apply1(f->c, k, "new-arm", arm(1, 700000, 0.49, 1));
  const char *ids[] = {"new-arm", "a", "b"};
  adb__arm_stats st[3];
  assert_int_equal(mget1(f->c, k, 3, ids, st), 1);
  assert_arm(&st[0], 1, 700000, 0.49, 1);
  assert_arm(&st[1], 2, 1500000, 1.25, 3);
  assert_arm(&st[2], 5, 250000, 0.5, 1);
}

static void policy_apply_absent_arm_past_version_1_is_gap(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);
  apply1(f->c, k, "c", arm(1, 1, 0, 2));
  assert_int_equal(cached(f->c, k), 0);
}

/* Arms appended one by one to an empty policy, beyond any initial room. */
static void policy_apply_appends_many_arms(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  adb__policy p = {0};
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  enum { N = 300 };
  char names[N][32];
  const char *ids[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "arm-%d", i);
    ids[i] = names[i];
    apply1(f->c, k, ids[i], arm(1, i, 0, 1));
    if (i % 2) apply1(f->c, k, ids[i], arm(1, 1, 0, 2));
  }
  adb__arm_stats st[N];
  assert_int_equal(mget1(f->c, k, N, ids, st), 1);
  for (int i = 0; i < N; i++)
    assert_arm(&st[i], 1 + i % 2, i + i % 2, 0.0, 1 + i % 2);
}

/* Not cached: apply leaves a tombstone, which is a miss. */
static void policy_apply_on_uncached_key_caches_nothing(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "a", arm(1, 1, 0, 1));
  assert_int_equal(cached(f->c, k), 0);
}

/* ------------------------------------------------------ tombstones */

/* The current backend with tombstones that expire after ms. */
static adb__cache *open_tombstone_ms(int ms) {
  char url[600];
  snprintf(url, sizeof url, "%s%ctombstone_ms=%d", g_url,
           strchr(g_url, '?') ? '&' : '?', ms);
  adb_config cfg = {0};
  adb__cache *c = open_url(url, &cfg);
  assert_non_null(c);
  return c;
}

/* The stale-load race: a loader read arm a at version 3 from the store,
 * then version 4 committed and was applied while the key was not cached;
 * the load arrives last. */
static void policy_apply_on_uncached_key_refuses_older_put(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "a", arm(1, 1, 0, 4));
  put_ab(f->c, k); /* a at version 3 */
  assert_int_equal(cached(f->c, k), 0);
}

/* An arm the load lacks is at version 0: older than the tombstone's. */
static void policy_apply_on_uncached_key_refuses_put_lacking_arm(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "c", arm(1, 1, 0, 1));
  put_ab(f->c, k);
  assert_int_equal(cached(f->c, k), 0);
}

/* A load of the version the apply recorded is what the store holds. */
static void policy_put_at_least_as_new_replaces_tombstone(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "a", arm(1, 1, 0, 3));
  put_ab(f->c, k); /* a at version 3, b at 1 */
  const char *ids[] = {"a", "b"};
  adb__arm_stats st[2];
  assert_int_equal(mget1(f->c, k, 2, ids, st), 1);
  assert_arm(&st[0], 2, 1500000, 1.25, 3);
  assert_arm(&st[1], 5, 250000, 0.5, 1);
}

static void policy_apply_gap_leaves_tombstone(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);                       /* a at version 3 */
  apply1(f->c, k, "a", arm(1, 1, 0, 5)); /* version 4 was missed */
  assert_int_equal(cached(f->c, k), 0);
  put_ab(f->c, k); /* a load from before version 5 */
  assert_int_equal(cached(f->c, k), 0);
  adb__policy p = {0};
  push(&p, "a", arm(4, 3000000, 2.5, 5));
  push(&p, "b", arm(5, 250000, 0.5, 1));
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&p);
  const char *ids[] = {"a"};
  adb__arm_stats st[1];
  assert_int_equal(mget1(f->c, k, 1, ids, st), 1);
  assert_arm(&st[0], 4, 3000000, 2.5, 5);
}

/* Beyond cache.h: the tombstone left by a gap also keeps the versions of
 * the entry it replaces (committed versions too), so a load older than
 * what the dropped entry held is refused as well. */
static void policy_gap_tombstone_keeps_dropped_entry_versions(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  put_ab(f->c, k);                       /* a at 3, b at 1 */
  apply1(f->c, k, "a", arm(1, 1, 0, 5)); /* gap */
  adb__policy p = {0};
  push(&p, "a", arm(4, 3000000, 2.5, 5)); /* b absent: version 0 */
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&p);
  assert_int_equal(cached(f->c, k), 0);
}

static void policy_tombstones_merge_higher_version_wins(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "a", arm(1, 1, 0, 5));
  apply1(f->c, k, "a", arm(1, 1, 0, 3)); /* lower: a stays at 5 */
  apply1(f->c, k, "b", arm(1, 1, 0, 2));
  static const int64_t va[] = {4, 5, 5}, vb[] = {2, 1, 2};
  for (int i = 0; i < 3; i++) {
    adb__policy p = {0};
    push(&p, "a", arm(7, 7, 0, va[i]));
    push(&p, "b", arm(8, 8, 0, vb[i]));
    assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
    adb__policy_free(&p);
    assert_int_equal(cached(f->c, k), i == 2); /* only a >= 5 and b >= 2 */
  }
}

/* Increments are never added to a tombstone: a later load brings them. */
static void policy_apply_merges_into_tombstone_without_adding(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "a", arm(1, 100, 0, 1));
  apply1(f->c, k, "a", arm(1, 100, 0, 2)); /* next version of a */
  assert_int_equal(cached(f->c, k), 0);
  adb__policy p = {0};
  push(&p, "a", arm(7, 700, 0, 2));
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  adb__policy_free(&p);
  const char *ids[] = {"a"};
  adb__arm_stats st[1];
  assert_int_equal(mget1(f->c, k, 1, ids, st), 1);
  assert_arm(&st[0], 7, 700, 0.0, 2);
}

static void policy_tombstone_is_not_a_blob(void **state) {
  fx *f = *state;
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(f->c, k, "a", arm(1, 1, 0, 1));
  void *v = NULL;
  size_t len = 0;
  assert_int_equal(f->c->m->get(f->c, k, &v, &len), ADB_ENOTFOUND);
  assert_null(v);
}

static void policy_tombstone_expires_after_its_ttl(void **state) {
  fx *f = *state;
  adb__cache *c = open_tombstone_ms(150);
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(c, k, "a", arm(1, 1, 0, 9));
  put_ab(c, k);
  assert_int_equal(cached(c, k), 0);
  sleep_ms(500);
  put_ab(c, k);
  assert_int_equal(cached(c, k), 1);
  adb__cache_close(c);
}

/* The TTL counts from the latest apply merged into the tombstone. */
static void policy_apply_restarts_tombstone_ttl(void **state) {
  fx *f = *state;
  adb__cache *c = open_tombstone_ms(600);
  char k[256];
  pkey(f, k, sizeof k, "u1");
  apply1(c, k, "a", arm(1, 1, 0, 9));
  sleep_ms(400);
  apply1(c, k, "c", arm(1, 1, 0, 1));
  sleep_ms(400); /* 800 ms after the first apply, 400 after the second */
  put_ab(c, k);
  assert_int_equal(cached(c, k), 0);
  sleep_ms(700);
  put_ab(c, k);
  assert_int_equal(cached(c, k), 1);
  adb__cache_close(c);
}

enum { THREADS = 8 };

typedef struct apply_job {
  adb__cache *c;
  const char *key;
  int arm, iters;
  int *stop;
  int bad;    /* readers: inconsistent snapshots seen */
  int errors; /* calls that failed */
} apply_job;

static void *apply_worker(void *arg) {
  apply_job *j = arg;
  char id[32];
  snprintf(id, sizeof id, "arm-%d", j->arm);
  const char *ids[] = {id};
  for (int v = 1; v <= j->iters; v++) {
    adb__arm_stats d = arm(1, j->arm + 1, 0.25, v);
    if (j->c->m->policy_apply(j->c, j->key, 1, ids, &d) != ADB_OK) j->errors++;
  }
  return NULL;
}

/* Each change adds n = 1 and sum = arm + 1, so a consistent snapshot of
 * an arm has n == version and sum == n * (arm + 1). */
static void *apply_reader(void *arg) {
  apply_job *j = arg;
  char names[THREADS][32];
  const char *ids[THREADS];
  for (int a = 0; a < THREADS; a++) {
    snprintf(names[a], sizeof names[a], "arm-%d", a);
    ids[a] = names[a];
  }
  while (!__atomic_load_n(j->stop, __ATOMIC_ACQUIRE)) {
    adb__arm_stats st[THREADS];
    int found = 0;
    const char *keys[] = {j->key};
    if (j->c->m->policy_mget(j->c, 1, keys,
                             &(adb__ids){.n = THREADS, .id = ids}, st,
                             &found) != ADB_OK) {
      j->errors++;
      continue;
    }
    if (!found) {
      j->bad++;
      continue;
    }
    for (int a = 0; a < THREADS; a++)
      if (st[a].n != st[a].version || st[a].sum_micro != st[a].n * (a + 1))
        j->bad++;
  }
  return NULL;
}

static void policy_apply_concurrent_threads_sum_exactly(void **state) {
  fx *f = *state;
  /* This checks exact sums under contention, not latency: over Redis the
   * nine threads share the cache's pool, and on a loaded machine a call
   * that waits past the default 500 ms command timeout failed it (CI
   * rehearsal, Redis Cluster). Its own handle waits up to 10 s. */
  adb__cache *shared = f->c;
  if (strncmp(g_url, "redis", 5) == 0) {
    char url[1024];
    snprintf(url, sizeof url, "%s%stimeout_ms=10000", g_url,
             strchr(g_url, '?') ? "&" : "?");
    adb_config cfg = {0};
    assert_non_null(f->c = open_url(url, &cfg));
  }
  char k[256];
  pkey(f, k, sizeof k, "*");
  adb__policy p = {0};
  assert_int_equal(f->c->m->policy_put(f->c, k, &p, LONG_TTL_MS), ADB_OK);
  int iters = quick() ? 200 : 2000;
  int stop = 0;
  apply_job jobs[THREADS + 1];
  pthread_t th[THREADS + 1];
  for (int t = 0; t <= THREADS; t++) {
    jobs[t] = (apply_job){
        .c = f->c, .key = k, .arm = t, .iters = iters, .stop = &stop};
    assert_int_equal(pthread_create(&th[t], NULL,
                                    t < THREADS ? apply_worker : apply_reader,
                                    &jobs[t]),
                     0);
  }
  for (int t = 0; t < THREADS; t++)
    pthread_join(th[t], NULL);
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  pthread_join(th[THREADS], NULL);
  for (int t = 0; t <= THREADS; t++) {
    if (jobs[t].bad || jobs[t].errors)
      fprintf(stderr, "    thread %d: %d inconsistent snapshots, %d errors\n",
              t, jobs[t].bad, jobs[t].errors);
    assert_int_equal(jobs[t].bad, 0);
    assert_int_equal(jobs[t].errors, 0);
  }
  char names[THREADS][32];
  const char *ids[THREADS];
  for (int a = 0; a < THREADS; a++) {
    snprintf(names[a], sizeof names[a], "arm-%d", a);
    ids[a] = names[a];
  }
  adb__arm_stats st[THREADS];
  assert_int_equal(mget1(f->c, k, THREADS, ids, st), 1);
  for (int a = 0; a < THREADS; a++)
    assert_arm(&st[a], iters, (int64_t)iters * (a + 1), 0.25 * iters, iters);
  if (f->c != shared) adb__cache_close(f->c);
  f->c = shared;
}

static void stats_count_hits_and_misses(void **state) {
  fx *f = *state;
  char b[160], k1[256], k2[256];
  bkey(f, b, sizeof b, "s");
  pkey(f, k1, sizeof k1, "u1");
  pkey(f, k2, sizeof k2, "u2");
  assert_int_equal(f->c->m->set(f->c, b, "v", 1, LONG_TTL_MS), ADB_OK);
  put_ab(f->c, k1);
  adb__cache_stats s0, s1;
  f->c->m->stats(f->c, &s0);
  void *v = NULL;
  size_t len;
  assert_int_equal(f->c->m->get(f->c, b, &v, &len), ADB_OK);
  free(v);
  bkey(f, b, sizeof b, "missing");
  assert_int_equal(f->c->m->get(f->c, b, &v, &len), ADB_ENOTFOUND);
  const char *keys[] = {k1, k2};
  const char *ids[] = {"a"};
  adb__arm_stats st[2];
  int found[2];
  assert_int_equal(f->c->m->policy_mget(f->c, 2, keys,
                                        &(adb__ids){.n = 1, .id = ids}, st,
                                        found),
                   ADB_OK);
  f->c->m->stats(f->c, &s1);
  assert_int_equal(s1.hits - s0.hits, 2);
  assert_int_equal(s1.misses - s0.misses, 2);
  assert_int_equal(s1.errors - s0.errors, 0);
}

/* ---------------------------------------------------- mem:// only */

static adb__cache *open_mem(const char *url) {
  adb_config cfg = {0};
  adb__cache *c = open_url(url, &cfg);
  assert_non_null(c);
  return c;
}

static void set_blob(adb__cache *c, const char *key, size_t n) {
  static const char buf[4096];
  assert_true(n <= sizeof buf);
  assert_int_equal(c->m->set(c, key, buf, n, LONG_TTL_MS), ADB_OK);
}

static int has_blob(adb__cache *c, const char *key) {
  void *v = NULL;
  size_t len;
  int rc = c->m->get(c, key, &v, &len);
  free(v);
  assert_true(rc == ADB_OK || rc == ADB_ENOTFOUND);
  return rc == ADB_OK;
}

static void mem_lru_eviction_keeps_recently_used(void **state) {
  (void)state;
  size_t bound = 256 * 1024;
  adb__cache *c = open_mem("mem://?max_bytes=262144");
  set_blob(c, "hot", 200);
  set_blob(c, "first-cold", 200);
  char k[32];
  for (int i = 0; i < 5000; i++) { /* ~1.5 MB written into 256 KiB */
    snprintf(k, sizeof k, "cold-%d", i);
    set_blob(c, k, 200);
    if (i % 50 == 0) assert_true(has_blob(c, "hot"));
  }
  assert_true(has_blob(c, "hot"));
  assert_false(has_blob(c, "first-cold"));
  assert_false(has_blob(c, "cold-0"));
  assert_true(has_blob(c, "cold-4999"));
  adb__cache_stats s;
  c->m->stats(c, &s);
  assert_true(s.evictions > 3000);
  assert_true(s.bytes <= (int64_t)bound + 4096); /* + the handle itself */
  assert_int_equal(s.entries + s.evictions, 5002);
  adb__cache_close(c);
}

static void mem_entry_bound_evicts_oldest(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://?max_entries=100");
  char k[32];
  for (int i = 0; i < 150; i++) {
    snprintf(k, sizeof k, "k%d", i);
    set_blob(c, k, 8);
  }
  adb__cache_stats s;
  c->m->stats(c, &s);
  assert_int_equal(s.entries, 100);
  assert_int_equal(s.evictions, 50);
  assert_false(has_blob(c, "k49"));
  assert_true(has_blob(c, "k50"));
  assert_true(has_blob(c, "k149"));
  adb__cache_close(c);
}

/* A value bigger than the whole bound is not kept, and does not leave
 * the previous value of its key behind. */
static void mem_oversize_value_replaces_and_is_dropped(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://?max_bytes=2048");
  set_blob(c, "big", 100);
  set_blob(c, "big", 4000);
  assert_false(has_blob(c, "big"));
  adb__cache_close(c);
}

static void mem_bytes_return_to_baseline_after_delete(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://");
  adb__cache_stats s0, s1, s2;
  c->m->stats(c, &s0);
  adb__policy p = {0};
  for (int a = 0; a < 50; a++) {
    char id[32];
    snprintf(id, sizeof id, "item-%d", a);
    push(&p, id, arm(a, a, 0, 1));
  }
  char k[32];
  for (int i = 0; i < 100; i++) {
    snprintf(k, sizeof k, "p%d", i);
    assert_int_equal(c->m->policy_put(c, k, &p, 0), ADB_OK);
    snprintf(k, sizeof k, "b%d", i);
    set_blob(c, k, 300);
  }
  c->m->stats(c, &s1);
  assert_int_equal(s1.entries, 200);
  assert_true(s1.bytes - s0.bytes > 100 * 50 * 40 + 100 * 300);
  for (int i = 0; i < 100; i++) {
    snprintf(k, sizeof k, "p%d", i);
    assert_int_equal(c->m->del(c, k), ADB_OK);
    snprintf(k, sizeof k, "b%d", i);
    assert_int_equal(c->m->del(c, k), ADB_OK);
  }
  c->m->stats(c, &s2);
  assert_int_equal(s2.entries, 0);
  assert_int_equal(s2.bytes, s0.bytes);
  adb__policy_free(&p);
  adb__cache_close(c);
}

static void mem_expired_entries_are_reclaimed(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://");
  adb__cache_stats s0, s1;
  c->m->stats(c, &s0);
  char k[32];
  for (int i = 0; i < 200; i++) {
    snprintf(k, sizeof k, "e%d", i);
    assert_int_equal(c->m->set(c, k, "xyz", 3, 50), ADB_OK);
  }
  sleep_ms(200);
  c->m->stats(c, &s1);
  assert_int_equal(s1.entries, 0);
  assert_int_equal(s1.bytes, s0.bytes);
  assert_int_equal(s1.evictions, 0);
  adb__cache_close(c);
}

/* Tombstones are entries: counted, accounted, and reclaimed on expiry,
 * including those grown from a policy on a gap. */
static void mem_tombstone_bytes_return_to_baseline_after_expiry(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://?tombstone_ms=50");
  adb__cache_stats s0, s1, s2;
  c->m->stats(c, &s0);
  char k[32], id[32];
  for (int i = 0; i < 100; i++) {
    snprintf(k, sizeof k, "t%d", i);
    const char *ids[3];
    adb__arm_stats d[3];
    char names[3][32];
    for (int a = 0; a < 3; a++) {
      snprintf(names[a], sizeof names[a], "arm-%d-%d", i, a);
      ids[a] = names[a];
      d[a] = arm(1, 1, 0, 1 + a);
    }
    assert_int_equal(c->m->policy_apply(c, k, 3, ids, d), ADB_OK);
    snprintf(k, sizeof k, "g%d", i);
    put_ab(c, k);
    snprintf(id, sizeof id, "new-%d", i); /* absent, past version 1: gap */
    apply1(c, k, id, arm(1, 1, 0, 4));
  }
  c->m->stats(c, &s1);
  assert_int_equal(s1.entries, 200);
  assert_true(s1.bytes - s0.bytes > 200 * 100);
  sleep_ms(200);
  c->m->stats(c, &s2);
  assert_int_equal(s2.entries, 0);
  assert_int_equal(s2.bytes, s0.bytes);
  assert_int_equal(s2.evictions, 0);
  adb__cache_close(c);
}

static void mem_url_parameters_are_validated(void **state) {
  (void)state;
  static const char *good[] = {
      "mem://",
      "mem:///",
      "mem://?",
      "mem://?ttl_s=5",
      "mem://?max_bytes=1048576&max_entries=10&shards=4&ttl_s=1",
      "mem://?ttl_s=2&tombstone_ms=50"};
  static const char *bad[] = {"mem://host",
                              "mem://?bogus=1",
                              "mem://?ttl_s=0",
                              "mem://?ttl_s=",
                              "mem://?ttl_s=-5",
                              "mem://?max_bytes=1k",
                              "mem://?shards=3",
                              "mem://?shards=128",
                              "mem://?max_bytes",
                              "mem://?ttl_s=99999999999999999999",
                              "mem://?tombstone_ms=0",
                              "mem://?tombstone_ms=5s"};
  adb_config cfg = {0};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    adb__cache *c = open_url(good[i], &cfg);
    assert_non_null(c);
    adb__cache_close(c);
  }
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    adb__cache *c = (adb__cache *)1;
    char err[256] = "";
    assert_int_equal(adb__cache_open(bad[i], &cfg, &c, err, sizeof err),
                     ADB_EURL);
    assert_null(c);
    assert_true(err[0] != 0);
  }
}

static void mem_rejects_bad_arguments(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://");
  assert_int_equal(c->m->set(c, "k", "v", 1, -1), ADB_EINVAL);
  assert_int_equal(c->m->set(c, NULL, "v", 1, 0), ADB_EINVAL);
  adb__policy p = {.n = -1};
  assert_int_equal(c->m->policy_put(c, "k", &p, 0), ADB_EINVAL);
  int found;
  assert_int_equal(c->m->policy_mget(c, -1, NULL,
                                     &(adb__ids){.n = 0, .id = NULL}, NULL,
                                     &found),
                   ADB_EINVAL);
  adb__cache_close(c);
}

/* The embedded memory target: 10,000 users x 50 arms of cached policies
 * in well under 100 MB for the whole process; the cache's share <= 40 MB. */
static void mem_10k_policies_of_50_arms_fit_in_40MB(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://");
  adb__cache_stats s0, s1;
  c->m->stats(c, &s0);
  enum { USERS = 10000, ARMS = 50, CATALOGUE = 5000 };
  uint64_t seed = 42;
  for (int u = 0; u < USERS; u++) {
    adb__policy p = {0};
    int first = (int)(next_rand(&seed) % CATALOGUE);
    for (int a = 0; a < ARMS; a++) { /* 50 distinct ids of the catalogue */
      char id[32];
      snprintf(id, sizeof id, "movie:%06d", (first + a * 101) % CATALOGUE);
      int64_t n = (int64_t)(next_rand(&seed) % 100);
      push(&p, id, arm(n, n * 400000, 0, 1 + n));
    }
    char user[32], k[256];
    snprintf(user, sizeof user, "user-%d", u);
    adb__policy_key(k, sizeof k, "media-agent", user,
                    "5f1d3c9a0b7e4d2c8a6f1e3b5d7c9a0b"
                    "2e4f6a8c0d1b3e5f7a9c2d4e6f8a0b1c");
    assert_int_equal(c->m->policy_put(c, k, &p, 0), ADB_OK);
    adb__policy_free(&p);
  }
  c->m->stats(c, &s1);
  double mb = (double)s1.bytes / 1e6;
  printf("mem cache: %d policies x %d arms: %lld entries, %.1f MB "
         "(%.1f bytes/arm)\n",
         USERS, ARMS, (long long)s1.entries, mb,
         (double)(s1.bytes - s0.bytes) / (USERS * ARMS));
  assert_int_equal(s1.entries, USERS);
  assert_int_equal(s1.evictions, 0);
  assert_true(s1.bytes < 40 * 1000 * 1000);
  adb__cache_close(c);
}

/* Random put/mget/apply/set/get/del from 4 threads on a small cache that
 * evicts all the time; run under TSan this is the data-race check. */
typedef struct mixed_job {
  adb__cache *c;
  uint64_t seed;
  int iters, bad;
} mixed_job;

static void mixed_op(adb__cache *c, uint64_t *r, int *bad) {
  char k[32], id[32];
  snprintf(k, sizeof k, "k%d", (int)(next_rand(r) % 400));
  snprintf(id, sizeof id, "a%d", (int)(next_rand(r) % 20));
  const char *ids[] = {id, "a1", "a2"};
  adb__arm_stats d = arm(1, 1, 0, 1 + (int64_t)(next_rand(r) % 3));
  int op = (int)(next_rand(r) % 6), rc = ADB_OK;
  void *v = NULL;
  size_t len;
  adb__policy p = {0};
  if (op == 0) {
    for (int a = 0; a < 20; a++) {
      snprintf(id, sizeof id, "a%d", a);
      push(&p, id, arm(a, a, 0, 1));
    }
    rc = c->m->policy_put(c, k, &p, 0);
    adb__policy_free(&p);
  } else if (op == 1) {
    const char *keys[] = {k, "k0"};
    adb__arm_stats st2[6];
    int f2[2];
    rc = c->m->policy_mget(c, 2, keys, &(adb__ids){.n = 3, .id = ids}, st2, f2);
  } else if (op == 2) {
    rc = c->m->policy_apply(c, k, 1, ids, &d);
  } else if (op == 3) {
    rc = c->m->set(c, k, "0123456789", 1 + next_rand(r) % 10, 0);
  } else if (op == 4) {
    rc = c->m->get(c, k, &v, &len);
    free(v);
    if (rc == ADB_ENOTFOUND) rc = ADB_OK;
  } else {
    rc = c->m->del(c, k);
  }
  if (rc != ADB_OK) (*bad)++;
}

static void *mixed_worker(void *arg) {
  mixed_job *j = arg;
  uint64_t r = j->seed;
  for (int i = 0; i < j->iters; i++)
    mixed_op(j->c, &r, &j->bad);
  return NULL;
}

static void mem_concurrent_mixed_operations_stay_consistent(void **state) {
  (void)state;
  adb__cache *c = open_mem("mem://?max_bytes=65536&max_entries=100");
  enum { T = 4 };
  mixed_job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    jobs[t] =
        (mixed_job){.c = c, .seed = 100 + t, .iters = quick() ? 5000 : 50000};
    assert_int_equal(pthread_create(&th[t], NULL, mixed_worker, &jobs[t]), 0);
  }
  for (int t = 0; t < T; t++)
    pthread_join(th[t], NULL);
  for (int t = 0; t < T; t++)
    assert_int_equal(jobs[t].bad, 0);
  adb__cache_stats s;
  c->m->stats(c, &s);
  assert_true(s.entries <= 100);
  assert_true(s.bytes <= 65536 + 4096);
  assert_true(s.evictions > 0);
  adb__cache_close(c);
}

/* ------------------------------------------------------------ runner */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest conformance[] = {
    T(blob_set_get_del_roundtrip),
    T(blob_values_are_binary_safe),
    T(blob_empty_value_roundtrips),
    T(blob_get_missing_is_enotfound),
    T(blob_set_replaces_value),
    T(blob_del_missing_key_is_ok),
    T(blob_expires_after_ttl),
    T(blob_ttl_zero_uses_configured_default),
    T(policy_put_then_mget_returns_stats),
    T(policy_mget_absent_arm_is_zero_at_version_0),
    T(policy_mget_sets_found_per_key),
    T(policy_mget_reads_several_keys),
    T(policy_empty_is_cached_as_found),
    T(policy_put_keeps_entry_with_newer_arm),
    T(policy_put_keeps_entry_with_arm_missing_from_load),
    T(policy_put_replaces_older_entry),
    T(policy_expires_after_ttl),
    T(policy_apply_adds_next_version),
    T(policy_sums_past_int64_are_exact),
    T(policy_apply_past_the_sum_limit_drops_entry),
    T(policy_apply_adds_versions_in_order),
    T(policy_apply_skips_included_change),
    T(policy_apply_deletes_entry_on_gap),
    T(policy_apply_gap_drops_whole_entry),
    T(policy_apply_adds_absent_arm_at_version_1),
    T(policy_apply_absent_arm_past_version_1_is_gap),
    T(policy_apply_appends_many_arms),
    T(policy_apply_on_uncached_key_caches_nothing),
    T(policy_apply_on_uncached_key_refuses_older_put),
    T(policy_apply_on_uncached_key_refuses_put_lacking_arm),
    T(policy_put_at_least_as_new_replaces_tombstone),
    T(policy_apply_gap_leaves_tombstone),
    T(policy_gap_tombstone_keeps_dropped_entry_versions),
    T(policy_tombstones_merge_higher_version_wins),
    T(policy_apply_merges_into_tombstone_without_adding),
    T(policy_tombstone_is_not_a_blob),
    T(policy_tombstone_expires_after_its_ttl),
    T(policy_apply_restarts_tombstone_ttl),
    T(policy_apply_concurrent_threads_sum_exactly),
    T(stats_count_hits_and_misses),
};

static const struct CMUnitTest mem_only[] = {
    cmocka_unit_test(mem_lru_eviction_keeps_recently_used),
    cmocka_unit_test(mem_entry_bound_evicts_oldest),
    cmocka_unit_test(mem_oversize_value_replaces_and_is_dropped),
    cmocka_unit_test(mem_bytes_return_to_baseline_after_delete),
    cmocka_unit_test(mem_expired_entries_are_reclaimed),
    cmocka_unit_test(mem_tombstone_bytes_return_to_baseline_after_expiry),
    cmocka_unit_test(mem_url_parameters_are_validated),
    cmocka_unit_test(mem_rejects_bad_arguments),
    cmocka_unit_test(mem_10k_policies_of_50_arms_fit_in_40MB),
    cmocka_unit_test(mem_concurrent_mixed_operations_stay_consistent),
};

static int run_conformance(const char *url) {
  char name[512];
  snprintf(name, sizeof name, "cache conformance: %s", url);
  printf("== %s\n", name);
  g_url = url;
  return cmocka_run_group_tests_name(name, conformance, NULL, NULL);
}

int main(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  g_run = (unsigned)(ts.tv_nsec ^ (ts.tv_sec << 20));
  int failed = run_conformance("mem://");
  const char *env[] = {"AGENTDB_TEST_REDIS_URL",
                       "AGENTDB_TEST_REDIS_CLUSTER_URL"};
  for (int i = 0; i < 2; i++) {
    const char *url = getenv(env[i]);
    if (url && *url)
      failed += run_conformance(url);
    else
      printf("[ SKIPPED  ] %s not set\n", env[i]);
  }
  printf("== mem:// backend only\n");
  failed += cmocka_run_group_tests_name("mem:// backend", mem_only, NULL, NULL);
  return failed ? 1 : 0;
}
