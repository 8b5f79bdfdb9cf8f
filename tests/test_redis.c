/*
 * test_redis.c — Redis-specific behaviour of the Redis cache backends:
 * slot hashing, slot maps, redirections and URLs (no server needed);
 * sharing between handles and the Lua scripts (AGENTDB_TEST_REDIS_URL);
 * a slot migration under traffic (AGENTDB_TEST_REDIS_CLUSTER_URL); and
 * failures — Redis killed, frozen, or refusing writes — against a
 * redis-server this program starts itself. The behaviour every cache
 * backend shares is in test_cache.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "redis_cluster.h"
#include "util_redis.h"

/* ---------------------------------------------------------------- helpers */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static int quick(void) {
  const char *q = getenv("ADB_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

static adb__cache *open_cache(const char *url) {
  adb_config cfg = {.cache_ttl_s = 600, .pool_size = 4};
  adb__cache *c = NULL;
  char err[256] = "";
  int rc = adb__cache_open(url, &cfg, &c, err, sizeof err);
  if (rc != ADB_OK) fprintf(stderr, "open %s: %s\n", url, err);
  assert_int_equal(rc, ADB_OK);
  return c;
}

/* A unique key tag per run, so reruns and parallel runs do not collide. */
static void policy_key(char *out, size_t cap, const char *agent,
                       const char *state) {
  char user[64];
  snprintf(user, sizeof user, "u%ld-%lld", (long)getpid(), (long long)now_ms());
  adb__policy_key(out, cap, agent, user, state);
}

static void put_arms(adb__cache *c, const char *key, int n_arms, int64_t n,
                     int64_t version) {
  adb__policy p = {0};
  for (int i = 0; i < n_arms; i++) {
    char a[16];
    snprintf(a, sizeof a, "a%d", i);
    adb__arm_stats s = {.n = n,
                        .sum_micro = n * 500000,
                        .sum_sq = n * 0.25,
                        .version = version};
    assert_int_equal(adb__policy_push(&p, a, &s), ADB_OK);
  }
  assert_int_equal(c->m->policy_put(c, key, &p, 0), ADB_OK);
  adb__policy_free(&p);
}

static const char *const ACTIONS[] = {"a0", "a1", "a2", "a3"};

/* mget of one key, four actions. Returns the call's result. */
static int get4(adb__cache *c, const char *key, adb__arm_stats st[4],
                int *found) {
  const char *keys[] = {key};
  return c->m->policy_mget(c, 1, keys, &(adb__ids){.n = 4, .id = ACTIONS}, st,
                           found);
}

static int apply1(adb__cache *c, const char *key, const char *action,
                  int64_t version) {
  adb__arm_stats d = {
      .n = 1, .sum_micro = 1000000, .sum_sq = 1.0, .version = version};
  const char *acts[] = {action};
  return c->m->policy_apply(c, key, 1, acts, &d);
}

/* A raw hiredis connection for test set-up. */
static redisContext *raw_connect(const char *host, int port) {
  struct timeval tv = {2, 0};
  redisContext *r = redisConnectWithTimeout(host, port, tv);
  assert_non_null(r);
  assert_int_equal(r->err, 0);
  redisSetTimeout(r, tv);
  return r;
}

static redisReply *raw(redisContext *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  if (rep->type == REDIS_REPLY_ERROR) fprintf(stderr, "redis: %s\n", rep->str);
  assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
  return rep;
}

/* -------------------------------------------- a redis-server of our own */

static util_redis own = {.pid = -1};
#define own_pid (own.pid)
#define own_port (own.port)
#define free_port util_free_port
#define pings util_redis_pings

static void own_start(void) {
  assert_int_equal(util_redis_start(&own), 0);
}

static void own_kill(void) {
  util_redis_kill(&own);
}

static int own_teardown(void **state) {
  (void)state;
  util_redis_cleanup(&own);
  return 0;
}

static adb__cache *open_own(void) {
  char url[160];
  snprintf(url, sizeof url,
           "redis://127.0.0.1:%d/0?connect_timeout_ms=200&timeout_ms=300"
           "&retry_ms=200",
           own_port);
  return open_cache(url);
}

#define have_redis_server util_have_redis_server

/* --------------------------------------------------- slots (no server) */

static void test_crc16_known_answers(void **state) {
  assert_int_equal(adb__crc16("123456789", 9), 0x31C3);
  assert_int_equal(adb__crc16("", 0), 0);
  assert_int_equal(adb__crc16("a", 1), 0x7C87);
}

static void test_key_slot_matches_redis(void **state) {
  /* Values from CLUSTER KEYSLOT of Redis 7. */
  assert_int_equal(adb__redis_key_slot("foo", 3), 12182);
  assert_int_equal(adb__redis_key_slot("bar", 3), 5061);
  assert_int_equal(adb__redis_key_slot("123456789", 9), 0x31C3);
}

static int slot_of(const char *k) {
  return adb__redis_key_slot(k, strlen(k));
}

static void test_hash_tag_rules(void **state) {
  /* The tag is hashed alone. */
  assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
  assert_int_equal(slot_of("{user1000}.followers"), slot_of("user1000"));
  /* Only the first {...} counts. */
  assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
  /* An empty first tag means the whole key is hashed. */
  assert_int_equal(slot_of("foo{}{bar}"), adb__crc16("foo{}{bar}", 10) & 16383);
  /* The tag runs to the first '}' after the first '{'. */
  assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
  assert_int_equal(slot_of("foo{bar"), adb__crc16("foo{bar", 7) & 16383);
}

static void test_policy_keys_of_one_user_share_a_slot(void **state) {
  char k1[256], k2[256], k3[256];
  adb__policy_key(k1, sizeof k1, "agent", "alice", "s1");
  adb__policy_key(k2, sizeof k2, "agent", "alice", "s2");
  adb__policy_key(k3, sizeof k3, "agent", "bob", "s1");
  assert_int_equal(slot_of(k1), slot_of(k2));
  assert_int_equal(slot_of(k1), slot_of("agent/alice"));
  assert_int_equal(slot_of(k3), slot_of("agent/bob"));
}

/* Parses RESP bytes into a reply with hiredis' reader. */
static redisReply *resp(const char *bytes) {
  redisReader *rd = redisReaderCreate();
  assert_int_equal(redisReaderFeed(rd, bytes, strlen(bytes)), REDIS_OK);
  void *r = NULL;
  assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
  assert_non_null(r);
  redisReaderFree(rd);
  return r;
}

static void test_slot_map_parse(void **state) {
  /* Two ranges on two masters, the second announced with an empty host
   * and followed by a replica. */
  redisReply *r = resp("*2\r\n"
                       "*3\r\n:0\r\n:8191\r\n"
                       "*3\r\n$8\r\n10.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
                       "*4\r\n:8192\r\n:16383\r\n"
                       "*3\r\n$0\r\n\r\n:7001\r\n$3\r\nid2\r\n"
                       "*3\r\n$8\r\n10.0.0.9\r\n:7009\r\n$3\r\nid9\r\n");
  adb__slot_map *m = malloc(sizeof *m);
  assert_int_equal(adb__slot_map_parse(r, "10.0.0.2", m), ADB_OK);
  assert_int_equal(m->n_addrs, 2);
  assert_int_equal(m->slot[0], m->slot[8191]);
  assert_string_equal(m->addrs[m->slot[0]].host, "10.0.0.1");
  assert_int_equal(m->addrs[m->slot[0]].port, 7000);
  assert_string_equal(m->addrs[m->slot[16383]].host, "10.0.0.2");
  assert_int_equal(m->addrs[m->slot[8192]].port, 7001);
  freeReplyObject(r);
  free(m);
}

static void test_slot_map_leaves_unserved_slots_unknown(void **state) {
  redisReply *r = resp("*1\r\n*3\r\n:100\r\n:199\r\n"
                       "*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n");
  adb__slot_map *m = malloc(sizeof *m);
  assert_int_equal(adb__slot_map_parse(r, "x", m), ADB_OK);
  assert_int_equal(m->slot[99], -1);
  assert_int_equal(m->slot[100], 0);
  assert_int_equal(m->slot[199], 0);
  assert_int_equal(m->slot[200], -1);
  freeReplyObject(r);
  free(m);
}

static void test_slot_map_rejects_malformed_replies(void **state) {
  const char *bad[] = {
      "+OK\r\n",
      "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",     /* lo > hi */
      "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", /* slot range */
      "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",     /* port 0 */
      "*1\r\n*2\r\n:0\r\n:1\r\n",                            /* no master */
  };
  adb__slot_map *m = malloc(sizeof *m);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    redisReply *r = resp(bad[i]);
    assert_int_equal(adb__slot_map_parse(r, "h", m), ADB_ECORRUPT);
    freeReplyObject(r);
  }
  free(m);
}

static void test_redirect_parse(void **state) {
  int ask, slot;
  adb__redis_addr a;
  const char *mv = "MOVED 3999 127.0.0.1:6381";
  assert_int_equal(adb__redis_redirect_parse(mv, strlen(mv), &ask, &slot, &a),
                   ADB_OK);
  assert_int_equal(ask, 0);
  assert_int_equal(slot, 3999);
  assert_string_equal(a.host, "127.0.0.1");
  assert_int_equal(a.port, 6381);
  const char *as = "ASK 16383 [::1]:7002";
  assert_int_equal(adb__redis_redirect_parse(as, strlen(as), &ask, &slot, &a),
                   ADB_OK);
  assert_int_equal(ask, 1);
  assert_int_equal(slot, 16383);
  assert_string_equal(a.host, "::1");
  assert_int_equal(a.port, 7002);
  const char *bad[] = {"ERR unknown", "MOVED 16384 h:1", "MOVED x h:1",
                       "ASK 1 h",     "MOVED 1 h:99999", "MOVED 12"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(
        adb__redis_redirect_parse(bad[i], strlen(bad[i]), &ask, &slot, &a),
        ADB_EINVAL);
}

static void test_url_parse(void **state) {
  char err[256];
  adb__redis_url u = {.timeout_ms = 500, .pool = 4};
  assert_int_equal(adb__redis_url_parse("redis://h:6380/3?timeout_ms=50&pool=9",
                                        &u, err, sizeof err),
                   ADB_OK);
  assert_int_equal(u.cluster, 0);
  assert_int_equal(u.n_seeds, 1);
  assert_string_equal(u.seeds[0].host, "h");
  assert_int_equal(u.seeds[0].port, 6380);
  assert_int_equal(u.db, 3);
  assert_int_equal(u.timeout_ms, 50);
  assert_int_equal(u.pool, 9);
  adb__redis_url v = {0};
  assert_int_equal(adb__redis_url_parse("redis-cluster://:pw@a:1,b:2,c", &v,
                                        err, sizeof err),
                   ADB_OK);
  assert_int_equal(v.cluster, 1);
  assert_int_equal(v.n_seeds, 3);
  assert_int_equal(v.seeds[1].port, 2);
  assert_int_equal(v.seeds[2].port, 6379);
  assert_string_equal(v.password, "pw");
  const char *bad[] = {"redis://",
                       "redis://h:0",
                       "redis://h/x",
                       "redis://a:1,b:2",
                       "redis-cluster://a:1/2",
                       "redis://h?timeout_ms=0",
                       "redis://h?nope=1",
                       "mem://"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    adb__redis_url w = {0};
    assert_int_equal(adb__redis_url_parse(bad[i], &w, err, sizeof err),
                     ADB_EURL);
  }
}

/* tombstone_ms is the cache's own option, taken out before the URL is
 * parsed; the other options are still checked. */
static void test_tombstone_ms_url_option(void **state) {
  (void)state;
  int port = free_port();
  const char *good[] = {"", "?tombstone_ms=50",
                        "?timeout_ms=100&tombstone_ms=50&pool=2",
                        "?pool=2&tombstone_ms=86400000"};
  const char *bad[] = {"?tombstone_ms=", "?tombstone_ms=0", "?tombstone_ms=5s",
                       "?tombstone_ms=86400001", "?tombstone_ms=50&nope=1"};
  char url[128], err[256];
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0%s", port, good[i]);
    adb__cache_close(open_cache(url));
  }
  adb_config cfg = {0};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0%s", port, bad[i]);
    adb__cache *c = (adb__cache *)1;
    err[0] = '\0';
    assert_int_equal(adb__cache_open(url, &cfg, &c, err, sizeof err), ADB_EURL);
    assert_null(c);
    assert_true(err[0] != '\0');
  }
}

/* ------------------------------------------- unreachable (no server) */

static void test_unreachable_redis_fails_fast(void **state) {
  char url[96];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/0?retry_ms=500", free_port());
  adb__cache *c = open_cache(url);
  adb__arm_stats st[4];
  int found;
  for (int i = 0; i < 20; i++) {
    int64_t t0 = now_ms();
    assert_int_equal(get4(c, "p:{a/u}:s", st, &found), ADB_ECACHE);
    assert_true(now_ms() - t0 < 100);
  }
  void *v;
  size_t n;
  assert_int_equal(c->m->get(c, "k", &v, &n), ADB_ECACHE);
  adb__cache_stats s;
  c->m->stats(c, &s);
  assert_int_equal(s.errors, 21);
  adb__cache_close(c);
}

static void test_connect_timeout_bounds_a_blackholed_address(void **state) {
  /* A non-routable address: either the connect times out or the network
   * refuses at once; both must end within the connect timeout. */
  adb__cache *c =
      open_cache("redis://10.255.255.1:6379/0?connect_timeout_ms=200");
  adb__arm_stats st[4];
  int found;
  int64_t t0 = now_ms();
  assert_int_equal(get4(c, "p:{a/u}:s", st, &found), ADB_ECACHE);
  assert_true(now_ms() - t0 < 1000);
  adb__cache_close(c);
}

/* -------------------------------------------- the shared single Redis */

static const char *single_url(void) {
  return getenv("AGENTDB_TEST_REDIS_URL");
}

#define NEED_SINGLE()                                                          \
  do {                                                                         \
    if (!single_url() || !*single_url()) skip();                               \
  } while (0)

static void test_apply_through_one_handle_is_seen_by_another(void **state) {
  NEED_SINGLE();
  adb__cache *a = open_cache(single_url()), *b = open_cache(single_url());
  char key[256];
  policy_key(key, sizeof key, "share", "s");
  adb__arm_stats st[4];
  int found;
  /* Warm B's view of the epoch, as a read before a load would. */
  assert_int_equal(get4(b, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  put_arms(a, key, 2, 1, 1);
  assert_int_equal(get4(b, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_int_equal(st[0].version, 1);
  assert_int_equal(apply1(a, key, "a0", 2), ADB_OK);
  assert_int_equal(get4(b, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_int_equal(st[0].n, 2);
  assert_int_equal(st[0].sum_micro, 1500000);
  assert_int_equal(st[0].version, 2);
  assert_int_equal(st[1].version, 1);
  assert_int_equal(st[2].version, 0); /* not cached: zeros */
  adb__cache_close(a);
  adb__cache_close(b);
}

static void test_mget_of_many_keys_is_one_round_trip(void **state) {
  NEED_SINGLE();
  adb__cache *c = open_cache(single_url());
  char k1[256], k2[256];
  policy_key(k1, sizeof k1, "rt", "s1");
  policy_key(k2, sizeof k2, "rt2", "s2");
  adb__arm_stats st[8];
  int found[2];
  const char *keys[] = {k1, k2};
  assert_int_equal(c->m->policy_mget(c, 2, keys,
                                     &(adb__ids){.n = 4, .id = ACTIONS}, st,
                                     found),
                   ADB_OK); /* connects */
  adb__redis_info before, after;
  adb__redis_cache_info(c, &before);
  assert_int_equal(c->m->policy_mget(c, 2, keys,
                                     &(adb__ids){.n = 4, .id = ACTIONS}, st,
                                     found),
                   ADB_OK);
  adb__redis_cache_info(c, &after);
  assert_int_equal(after.round_trips - before.round_trips, 1);
  adb__cache_close(c);
}

static void test_apply_keeps_sum_sq_exact(void **state) {
  NEED_SINGLE();
  adb__cache *c = open_cache(single_url());
  char key[256];
  policy_key(key, sizeof key, "sq", "s");
  adb__policy p = {0};
  adb__arm_stats s = {.n = 1, .sum_micro = 1, .sum_sq = 0.1, .version = 1};
  assert_int_equal(adb__policy_push(&p, "a0", &s), ADB_OK);
  assert_int_equal(c->m->policy_put(c, key, &p, 0), ADB_OK);
  adb__policy_free(&p);
  adb__arm_stats d = {.n = 1, .sum_micro = 2, .sum_sq = 0.2, .version = 2};
  const char *acts[] = {"a0"};
  assert_int_equal(c->m->policy_apply(c, key, 1, acts, &d), ADB_OK);
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_true(st[0].sum_sq == 0.1 + 0.2); /* the same double as in C */
  assert_int_equal(st[0].sum_micro, 3);
  adb__cache_close(c);
}

static void test_entry_of_another_epoch_is_a_miss(void **state) {
  NEED_SINGLE();
  adb__cache *c = open_cache(single_url());
  char key[256];
  policy_key(key, sizeof key, "ep", "s");
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  put_arms(c, key, 1, 1, 1);
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  /* Another replica that failed an apply sets a new epoch. */
  adb__redis_url u = {0};
  char err[128];
  assert_int_equal(adb__redis_url_parse(single_url(), &u, err, sizeof err),
                   ADB_OK);
  redisContext *r = raw_connect(u.seeds[0].host, u.seeds[0].port);
  freeReplyObject(raw(r, "SELECT %d", u.db));
  freeReplyObject(raw(r, "INCR adb:epoch"));
  redisFree(r);
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  put_arms(c, key, 1, 1, 1); /* under the new epoch */
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  adb__cache_close(c);
}

static void test_blob_values_are_binary_safe(void **state) {
  NEED_SINGLE();
  adb__cache *c = open_cache(single_url());
  char key[256];
  policy_key(key, sizeof key, "blob", "s");
  unsigned char val[300];
  for (size_t i = 0; i < sizeof val; i++)
    val[i] = (unsigned char)(i * 7);
  val[5] = 0;
  val[6] = '\r';
  val[7] = '\n';
  assert_int_equal(c->m->set(c, key, val, sizeof val, 60000), ADB_OK);
  void *got = NULL;
  size_t n = 0;
  assert_int_equal(c->m->get(c, key, &got, &n), ADB_OK);
  assert_int_equal(n, sizeof val);
  assert_memory_equal(got, val, sizeof val);
  free(got);
  assert_int_equal(c->m->del(c, key), ADB_OK);
  assert_int_equal(c->m->get(c, key, &got, &n), ADB_ENOTFOUND);
  adb__cache_close(c);
}

/* --------------------------------------------------------- tombstones */

/* A raw connection to the shared single Redis, on its database. */
static redisContext *raw_single(void) {
  adb__redis_url u = {0};
  char err[128];
  assert_int_equal(adb__redis_url_parse(single_url(), &u, err, sizeof err),
                   ADB_OK);
  redisContext *r = raw_connect(u.seeds[0].host, u.seeds[0].port);
  freeReplyObject(raw(r, "SELECT %d", u.db));
  return r;
}

/* A replica's apply on an uncached key refuses another replica's load of
 * an older version. */
static void test_tombstone_is_shared_between_handles(void **state) {
  NEED_SINGLE();
  adb__cache *a = open_cache(single_url()), *b = open_cache(single_url());
  char key[256];
  policy_key(key, sizeof key, "tomb", "s");
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4(b, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  assert_int_equal(apply1(a, key, "a0", 3), ADB_OK);
  put_arms(b, key, 2, 1, 2); /* B read version 2 before A's commit */
  assert_int_equal(get4(b, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  assert_int_equal(get4(a, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  put_arms(b, key, 2, 1, 3);
  assert_int_equal(get4(a, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_int_equal(st[0].version, 3);
  adb__cache_close(a);
  adb__cache_close(b);
}

/* The layout docs/redis.md gives: "~t", no "~e", each changed arm at its
 * version, the tombstone's own TTL; a load replaces all of it. */
static void test_tombstone_hash_layout(void **state) {
  NEED_SINGLE();
  char url[512];
  snprintf(url, sizeof url, "%s%ctombstone_ms=5000", single_url(),
           strchr(single_url(), '?') ? '&' : '?');
  adb__cache *c = open_cache(url);
  char key[256];
  policy_key(key, sizeof key, "layout", "s");
  assert_int_equal(apply1(c, key, "a1", 3), ADB_OK);
  redisContext *r = raw_single();
  redisReply *rep = raw(r, "HGET %s ~t", key);
  assert_int_equal(rep->type, REDIS_REPLY_STRING);
  freeReplyObject(rep);
  rep = raw(r, "HEXISTS %s ~e", key);
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  rep = raw(r, "HGET %s a1", key);
  assert_int_equal(rep->type, REDIS_REPLY_STRING);
  assert_string_equal(rep->str, "0 0 0 3");
  freeReplyObject(rep);
  rep = raw(r, "PTTL %s", key);
  assert_true(rep->integer > 0 && rep->integer <= 5000);
  freeReplyObject(rep);
  put_arms(c, key, 2, 1, 3);
  rep = raw(r, "HEXISTS %s ~t", key);
  assert_int_equal(rep->integer, 0);
  freeReplyObject(rep);
  rep = raw(r, "PTTL %s", key);
  assert_true(rep->integer > 5000); /* the policy TTL, 600 s */
  freeReplyObject(rep);
  redisFree(r);
  adb__cache_close(c);
}

/* An entry of an old epoch is invisible but still takes applies; a load
 * older than it must not be cached under the new epoch either. */
static void test_old_epoch_entry_refuses_older_load(void **state) {
  NEED_SINGLE();
  adb__cache *c = open_cache(single_url());
  char key[256];
  policy_key(key, sizeof key, "oldep", "s");
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  put_arms(c, key, 1, 1, 1);
  redisContext *r = raw_single();
  freeReplyObject(raw(r, "INCR adb:epoch"));
  redisFree(r);
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  assert_int_equal(apply1(c, key, "a0", 2), ADB_OK); /* to the old entry */
  put_arms(c, key, 1, 1, 1); /* a load from before version 2 */
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 0);
  put_arms(c, key, 1, 2, 2);
  assert_int_equal(get4(c, key, st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_int_equal(st[0].version, 2);
  adb__cache_close(c);
}

/* ------------------------------------------- failures, own redis-server */

#define NEED_REDIS_SERVER()                                                    \
  do {                                                                         \
    if (!have_redis_server()) skip();                                          \
  } while (0)

/* Retries mget until Redis answers again (at most 5 s). */
static int get4_until_ok(adb__cache *c, const char *key, adb__arm_stats *st,
                         int *found) {
  int64_t end = now_ms() + 5000;
  int rc;
  while ((rc = get4(c, key, st, found)) != ADB_OK && now_ms() < end)
    sleep_ms(50);
  return rc;
}

static void test_killed_redis_fails_fast_then_recovers_fresh(void **state) {
  NEED_REDIS_SERVER();
  own_start();
  adb__cache *c = open_own();
  adb__arm_stats st[4];
  int found;
  put_arms(c, "p:{k/u}:s", 1, 1, 1);
  assert_int_equal(get4(c, "p:{k/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 1);
  own_kill();
  int64_t t0 = now_ms();
  assert_int_equal(apply1(c, "p:{k/u}:s", "a0", 2), ADB_ECACHE);
  assert_true(now_ms() - t0 < 400); /* refused: no timeout to wait */
  for (int i = 0; i < 10; i++) {
    t0 = now_ms();
    assert_int_equal(get4(c, "p:{k/u}:s", st, &found), ADB_ECACHE);
    assert_true(now_ms() - t0 < 400);
  }
  own_start(); /* same port, empty */
  assert_int_equal(get4_until_ok(c, "p:{k/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 0);
  adb__redis_info info;
  adb__redis_cache_info(c, &info);
  assert_int_equal(info.epoch_bumps, 1); /* the failed apply */
  put_arms(c, "p:{k/u}:s", 1, 2, 2);
  assert_int_equal(get4(c, "p:{k/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_int_equal(st[0].version, 2);
  adb__cache_close(c);
}

typedef struct frozen_call {
  adb__cache *c;
  int rc;
  int64_t ms;
} frozen_call;

static void *frozen_reader(void *arg) {
  frozen_call *f = arg;
  adb__arm_stats st[4];
  int found;
  int64_t t0 = now_ms();
  f->rc = get4(f->c, "p:{f/u}:s", st, &found);
  f->ms = now_ms() - t0;
  return NULL;
}

static void test_frozen_redis_times_out_then_recovers(void **state) {
  NEED_REDIS_SERVER();
  own_start();
  adb__cache *c = open_own(); /* timeout_ms=300 */
  put_arms(c, "p:{f/u}:s", 2, 3, 3);
  kill(own_pid, SIGSTOP);
  frozen_call calls[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    calls[i].c = c;
    pthread_create(&th[i], NULL, frozen_reader, &calls[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(calls[i].rc, ADB_ECACHE);
    /* one command timeout, plus a pool wait of at most another */
    assert_true(calls[i].ms < 1000);
  }
  kill(own_pid, SIGCONT);
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4_until_ok(c, "p:{f/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 1); /* nothing failed to apply: still valid */
  assert_int_equal(st[1].n, 3);
  adb__cache_close(c);
}

static void test_failed_apply_invalidates_policies_for_all(void **state) {
  NEED_REDIS_SERVER();
  own_start();
  adb__cache *a = open_own(), *b = open_own();
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4(a, "p:{e/u}:s", st, &found), ADB_OK);
  put_arms(a, "p:{e/u}:s", 1, 1, 1);
  assert_int_equal(get4(b, "p:{e/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 1);
  /* Redis refuses writes for a while: A's apply of version 2 fails. */
  redisContext *r = raw_connect("127.0.0.1", own_port);
  freeReplyObject(raw(r, "CLIENT PAUSE 1200 WRITE"));
  int64_t paused = now_ms();
  assert_int_equal(apply1(a, "p:{e/u}:s", "a0", 2), ADB_ECACHE);
  while (now_ms() - paused < 1400)
    sleep_ms(50);
  /* Once A is back, neither A nor B serves the entry lacking version 2. */
  assert_int_equal(get4_until_ok(a, "p:{e/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 0);
  assert_int_equal(get4(b, "p:{e/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 0);
  /* A reload from the store is served again. */
  put_arms(a, "p:{e/u}:s", 1, 2, 2);
  assert_int_equal(get4(b, "p:{e/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 1);
  assert_int_equal(st[0].version, 2);
  redisFree(r);
  adb__cache_close(a);
  adb__cache_close(b);
}

static void test_failed_apply_is_settled_without_reads(void **state) {
  NEED_REDIS_SERVER();
  own_start();
  adb__cache *a = open_own(), *b = open_own();
  adb__arm_stats st[4];
  int found;
  put_arms(a, "p:{q/u}:s", 1, 1, 1);
  redisContext *r = raw_connect("127.0.0.1", own_port);
  freeReplyObject(raw(r, "CLIENT PAUSE 600 WRITE"));
  int64_t paused = now_ms();
  assert_int_equal(apply1(a, "p:{q/u}:s", "a0", 2), ADB_ECACHE);
  /* A serves nothing more; its prober settles the epoch on its own. */
  int64_t end = paused + 5000;
  adb__redis_info info = {0};
  while (info.epoch_bumps == 0 && now_ms() < end) {
    sleep_ms(50);
    adb__redis_cache_info(a, &info);
  }
  assert_int_equal(info.epoch_bumps, 1);
  assert_int_equal(get4(b, "p:{q/u}:s", st, &found), ADB_OK);
  assert_int_equal(found, 0);
  redisFree(r);
  adb__cache_close(a);
  adb__cache_close(b);
}

/* ---------------------------------------------------------- the cluster */

static const char *cluster_url(void) {
  return getenv("AGENTDB_TEST_REDIS_CLUSTER_URL");
}

#define NEED_CLUSTER()                                                         \
  do {                                                                         \
    if (!cluster_url() || !*cluster_url()) skip();                             \
  } while (0)

static void test_cluster_mget_across_nodes(void **state) {
  NEED_CLUSTER();
  adb__cache *c = open_cache(cluster_url());
  enum { N = 24 };
  char keys[N][256];
  const char *kp[N];
  for (int i = 0; i < N; i++) {
    char agent[32];
    snprintf(agent, sizeof agent, "spread%d", i);
    policy_key(keys[i], sizeof keys[i], agent, "s");
    kp[i] = keys[i];
  }
  adb__arm_stats st[N * 4];
  int found[N];
  assert_int_equal(c->m->policy_mget(
                       c, N, kp, &(adb__ids){.n = 4, .id = ACTIONS}, st, found),
                   ADB_OK);
  for (int i = 0; i < N; i++)
    put_arms(c, keys[i], 4, i + 1, 1);
  adb__redis_info before, after;
  adb__redis_cache_info(c, &before);
  assert_int_equal(c->m->policy_mget(
                       c, N, kp, &(adb__ids){.n = 4, .id = ACTIONS}, st, found),
                   ADB_OK);
  adb__redis_cache_info(c, &after);
  assert_int_equal(after.round_trips - before.round_trips, 1);
  for (int i = 0; i < N; i++) {
    assert_int_equal(found[i], 1);
    assert_int_equal(st[i * 4 + 3].n, i + 1);
  }
  adb__cache_close(c);
}

enum { MIG_KEYS = 6 };

typedef struct mig_traffic {
  adb__cache *c;
  char keys[MIG_KEYS][256];
  atomic_int stop;
  int64_t ops, failures, wrong;
  int64_t version[MIG_KEYS][4];
} mig_traffic;

/* Applies increments round-robin over keys and arms and checks every read
 * against what it applied: nothing failed, nothing lost. */
static void *mig_worker(void *arg) {
  mig_traffic *t = arg;
  const char *kp[MIG_KEYS];
  for (int i = 0; i < MIG_KEYS; i++)
    kp[i] = t->keys[i];
  adb__arm_stats st[MIG_KEYS * 4];
  int found[MIG_KEYS];
  for (int64_t i = 0; !atomic_load(&t->stop); i++) {
    int k = (int)(i % MIG_KEYS), a = (int)((i / MIG_KEYS) % 4);
    int64_t v = t->version[k][a] + 1;
    if (apply1(t->c, t->keys[k], ACTIONS[a], v) == ADB_OK)
      t->version[k][a] = v;
    else
      t->failures++;
    if (t->c->m->policy_mget(t->c, MIG_KEYS, kp,
                             &(adb__ids){.n = 4, .id = ACTIONS}, st,
                             found) != ADB_OK) {
      t->failures++;
    } else {
      for (int j = 0; j < MIG_KEYS * 4; j++)
        if (!found[j / 4] || st[j].version != t->version[j / 4][j % 4])
          t->wrong++;
    }
    t->ops += 2;
  }
  return NULL;
}

/* The node id ("CLUSTER MYID") of a raw connection. */
static void node_id(redisContext *r, char *out, size_t cap) {
  redisReply *rep = raw(r, "CLUSTER MYID");
  snprintf(out, cap, "%s", rep->str);
  freeReplyObject(rep);
}

static void test_cluster_slot_migration_under_traffic(void **state) {
  NEED_CLUSTER();
  adb__redis_url u = {0};
  char err[128];
  assert_int_equal(adb__redis_url_parse(cluster_url(), &u, err, sizeof err),
                   ADB_OK);
  assert_true(u.n_seeds >= 2);
  mig_traffic *t = calloc(1, sizeof *t);
  for (int i = 0; i < MIG_KEYS; i++) {
    char state_key[16];
    snprintf(state_key, sizeof state_key, "s%d", i);
    policy_key(t->keys[i], sizeof t->keys[i], "migrate", state_key);
  }
  int slot = slot_of(t->keys[0]);
  /* Who serves the slot now, and who gets it. */
  redisContext *seed = raw_connect(u.seeds[0].host, u.seeds[0].port);
  redisReply *slots = raw(seed, "CLUSTER SLOTS");
  adb__slot_map *m = malloc(sizeof *m);
  assert_int_equal(adb__slot_map_parse(slots, u.seeds[0].host, m), ADB_OK);
  freeReplyObject(slots);
  redisFree(seed);
  adb__redis_addr src = m->addrs[m->slot[slot]], dst = src;
  for (int i = 0; i < u.n_seeds; i++)
    if (u.seeds[i].port != src.port || strcmp(u.seeds[i].host, src.host))
      dst = u.seeds[i];
  free(m);
  assert_true(dst.port != src.port || strcmp(dst.host, src.host) != 0);
  redisContext *rs = raw_connect(src.host, src.port);
  redisContext *rd = raw_connect(dst.host, dst.port);
  char src_id[64], dst_id[64];
  node_id(rs, src_id, sizeof src_id);
  node_id(rd, dst_id, sizeof dst_id);

  t->c = open_cache(cluster_url());
  adb__arm_stats st[4];
  int found;
  assert_int_equal(get4(t->c, t->keys[0], st, &found), ADB_OK);
  for (int i = 0; i < MIG_KEYS; i++)
    put_arms(t->c, t->keys[i], 4, 0, 0);
  pthread_t th;
  pthread_create(&th, NULL, mig_worker, t);
  sleep_ms(50);

  freeReplyObject(raw(rd, "CLUSTER SETSLOT %d IMPORTING %s", slot, src_id));
  freeReplyObject(raw(rs, "CLUSTER SETSLOT %d MIGRATING %s", slot, dst_id));
  for (;;) { /* one key at a time, with traffic in between (ASK) */
    redisReply *ks = raw(rs, "CLUSTER GETKEYSINSLOT %d 1", slot);
    size_t n = ks->elements;
    if (n == 1) {
      freeReplyObject(raw(rs, "MIGRATE %s %d %s 0 5000", dst.host, dst.port,
                          ks->element[0]->str));
    }
    freeReplyObject(ks);
    if (n == 0) break;
    sleep_ms(40);
  }
  freeReplyObject(raw(rd, "CLUSTER SETSLOT %d NODE %s", slot, dst_id));
  freeReplyObject(raw(rs, "CLUSTER SETSLOT %d NODE %s", slot, dst_id));
  sleep_ms(100); /* traffic after the move (MOVED) */
  atomic_store(&t->stop, 1);
  pthread_join(th, NULL);

  adb__redis_info info;
  adb__redis_cache_info(t->c, &info);
  fprintf(stderr, "migration of slot %d: %lld ops, %lld ASK, %lld MOVED\n",
          slot, (long long)t->ops, (long long)info.ask, (long long)info.moved);
  assert_int_equal(t->failures, 0);
  assert_int_equal(t->wrong, 0);
  assert_true(info.ask > 0);
  assert_true(info.moved > 0);
  /* Every increment arrived exactly once. */
  for (int k = 0; k < MIG_KEYS; k++) {
    assert_int_equal(get4(t->c, t->keys[k], st, &found), ADB_OK);
    assert_int_equal(found, 1);
    for (int a = 0; a < 4; a++)
      assert_int_equal(st[a].n, t->version[k][a]);
  }
  redisFree(rs);
  redisFree(rd);
  adb__cache_close(t->c);
  free(t);
}

int main(void) {
  (void)quick;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc16_known_answers),
      cmocka_unit_test(test_key_slot_matches_redis),
      cmocka_unit_test(test_hash_tag_rules),
      cmocka_unit_test(test_policy_keys_of_one_user_share_a_slot),
      cmocka_unit_test(test_slot_map_parse),
      cmocka_unit_test(test_slot_map_leaves_unserved_slots_unknown),
      cmocka_unit_test(test_slot_map_rejects_malformed_replies),
      cmocka_unit_test(test_redirect_parse),
      cmocka_unit_test(test_url_parse),
      cmocka_unit_test(test_tombstone_ms_url_option),
      cmocka_unit_test(test_unreachable_redis_fails_fast),
      cmocka_unit_test(test_connect_timeout_bounds_a_blackholed_address),
      cmocka_unit_test(test_apply_through_one_handle_is_seen_by_another),
      cmocka_unit_test(test_mget_of_many_keys_is_one_round_trip),
      cmocka_unit_test(test_apply_keeps_sum_sq_exact),
      cmocka_unit_test(test_entry_of_another_epoch_is_a_miss),
      cmocka_unit_test(test_blob_values_are_binary_safe),
      cmocka_unit_test(test_tombstone_is_shared_between_handles),
      cmocka_unit_test(test_tombstone_hash_layout),
      cmocka_unit_test(test_old_epoch_entry_refuses_older_load),
      cmocka_unit_test_teardown(
          test_killed_redis_fails_fast_then_recovers_fresh, own_teardown),
      cmocka_unit_test_teardown(test_frozen_redis_times_out_then_recovers,
                                own_teardown),
      cmocka_unit_test_teardown(test_failed_apply_invalidates_policies_for_all,
                                own_teardown),
      cmocka_unit_test_teardown(test_failed_apply_is_settled_without_reads,
                                own_teardown),
      cmocka_unit_test(test_cluster_mget_across_nodes),
      cmocka_unit_test(test_cluster_slot_migration_under_traffic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
