/*
 * bench_redis.c — micro-benchmark of the Redis cache backend against the
 * throwaway Redis of $AGENTDB_TEST_REDIS_URL (scripts/redis-test.sh), in
 * one run:
 *  - the anchors: raw GET p50 from `redis-benchmark -c 1 -t get`, and from
 *    a raw hiredis GET loop on one connection;
 *  - the backend's cached policy lookup, policy_mget of 2 keys (the user's
 *    policy and the agent-wide '*') x 20 actions, p50, with its ratio to
 *    each anchor (target <= 1.5x);
 *  - a seeded Zipf user workload through the cache alone (mget; on a miss,
 *    put a synthetic policy as the store would): the hit rate after
 *    warm-up, beside the seed's claims (2.8 ms p50, 78 % hit rate).
 * Usage: bench_redis [--quick] [--seed N]. Skips when the URL is unset.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "redis_cluster.h"

#define ACTIONS 20

static uint64_t next_rand(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double uniform(uint64_t *x) {
  return ((double)(next_rand(x) >> 11) + 0.5) / 9007199254740992.0;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double p50(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* p50 in microseconds of redis-benchmark's GET on one connection, or NAN. */
static double redis_benchmark_p50(const adb__redis_addr *a, int n) {
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "redis-benchmark -h %s -p %d -c 1 -n %d -t get --csv 2>/dev/null",
           a->host, a->port, n);
  FILE *f = popen(cmd, "r");
  if (!f) return NAN;
  char line[512];
  double p = NAN;
  while (fgets(line, sizeof line, f)) {
    /* "GET","rps","avg","min","p50",... */
    if (strncmp(line, "\"GET\"", 5) != 0) continue;
    char *s = line;
    for (int field = 0; field < 4 && s; field++)
      s = strchr(s + 1, ',');
    if (s) p = strtod(s + 2, NULL) * 1000.0;
  }
  pclose(f);
  return p;
}

/* p50 in microseconds of GET of a 100-byte value on one hiredis
 * connection, or NAN. */
static double hiredis_get_p50(const adb__redis_url *u, int n) {
  struct timeval tv = {2, 0};
  redisContext *c =
      redisConnectWithTimeout(u->seeds[0].host, u->seeds[0].port, tv);
  if (!c || c->err) {
    if (c) redisFree(c);
    return NAN;
  }
  redisReply *r = redisCommand(c, "SELECT %d", u->db);
  if (r) freeReplyObject(r);
  char val[101];
  memset(val, 'x', 100);
  val[100] = '\0';
  r = redisCommand(c, "SET adb:bench:get %s PX 600000", val);
  if (r) freeReplyObject(r);
  double *lat = malloc((size_t)n * sizeof *lat), res = NAN;
  int ok = lat != NULL;
  for (int i = 0; ok && i < n + n / 10; i++) {
    double t0 = now_us();
    r = redisCommand(c, "GET adb:bench:get");
    double dt = now_us() - t0;
    ok = r && r->type == REDIS_REPLY_STRING;
    if (r) freeReplyObject(r);
    if (i >= n / 10) lat[i - n / 10] = dt; /* the first tenth warms up */
  }
  if (ok) res = p50(lat, n);
  free(lat);
  redisFree(c);
  return res;
}

static void synth_policy(adb__policy *p, uint64_t *rng, int arms) {
  p->n = 0;
  for (int i = 0; i < arms; i++) {
    char a[16];
    snprintf(a, sizeof a, "item%d", i);
    int64_t n = (int64_t)(next_rand(rng) % 1000);
    adb__arm_stats s = {.n = n, .sum_micro = n * 400000, .version = n};
    adb__policy_push(p, a, &s);
  }
}

/* p50 in microseconds of policy_mget(2 keys x 20 actions), both cached. */
static double mget_p50(adb__cache *c, const char *run, uint64_t *rng, int n) {
  char k1[256], k2[256], user[64];
  snprintf(user, sizeof user, "%s-u1", run);
  adb__policy_key(k1, sizeof k1, "bench", user, "state");
  snprintf(user, sizeof user, "%s-*", run);
  adb__policy_key(k2, sizeof k2, "bench", user, "state");
  const char *keys[] = {k1, k2}, *acts[ACTIONS];
  char names[ACTIONS][16];
  for (int i = 0; i < ACTIONS; i++) {
    snprintf(names[i], sizeof names[i], "item%d", i * 2);
    acts[i] = names[i];
  }
  adb__arm_stats st[2 * ACTIONS];
  int found[2];
  adb__policy p = {0};
  c->m->policy_mget(c, 2, keys, &(adb__ids){.n = ACTIONS, .id = acts}, st,
                    found);
  synth_policy(&p, rng, 50);
  int bad = c->m->policy_put(c, k1, &p, 600000) != ADB_OK ||
            c->m->policy_put(c, k2, &p, 600000) != ADB_OK;
  adb__policy_free(&p);
  double *lat = malloc((size_t)n * sizeof *lat), res = NAN;
  for (int i = 0; !bad && lat && i < n + n / 10; i++) {
    double t0 = now_us();
    bad = c->m->policy_mget(c, 2, keys, &(adb__ids){.n = ACTIONS, .id = acts},
                            st, found) != ADB_OK ||
          !found[0] || !found[1];
    if (i >= n / 10) lat[i - n / 10] = now_us() - t0;
  }
  if (!bad && lat) res = p50(lat, n);
  free(lat);
  return res;
}

/* Hit rate of the user's policy over `measured` requests after `warm`
 * requests, users drawn from Zipf(s) over n_users (rank 1 most likely). */
static double zipf_hit_rate(adb__cache *c, const char *run, uint64_t *rng,
                            int n_users, double s, int warm, int measured) {
  double *cdf = malloc((size_t)n_users * sizeof *cdf), total = 0;
  if (!cdf) return NAN;
  for (int i = 0; i < n_users; i++)
    cdf[i] = total += pow(i + 1, -s);
  const char *acts[ACTIONS];
  char names[ACTIONS][16];
  for (int i = 0; i < ACTIONS; i++) {
    snprintf(names[i], sizeof names[i], "item%d", i);
    acts[i] = names[i];
  }
  adb__arm_stats st[2 * ACTIONS];
  adb__policy p = {0};
  int64_t hits = 0, errors = 0;
  char k1[256], k2[256], user[64];
  snprintf(user, sizeof user, "%s-*", run);
  adb__policy_key(k2, sizeof k2, "zipf", user, "state");
  for (int i = 0; i < warm + measured; i++) {
    double x = uniform(rng) * total;
    int lo = 0, hi = n_users - 1;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (cdf[mid] < x)
        lo = mid + 1;
      else
        hi = mid;
    }
    snprintf(user, sizeof user, "%s-%d", run, lo);
    adb__policy_key(k1, sizeof k1, "zipf", user, "state");
    const char *keys[] = {k1, k2};
    int found[2];
    if (c->m->policy_mget(c, 2, keys, &(adb__ids){.n = ACTIONS, .id = acts}, st,
                          found) != ADB_OK) {
      errors++;
      continue;
    }
    if (found[0]) {
      hits += i >= warm;
      continue;
    }
    synth_policy(&p, rng, ACTIONS); /* the store's answer */
    if (c->m->policy_put(c, k1, &p, 600000) != ADB_OK) errors++;
    if (!found[1] && c->m->policy_put(c, k2, &p, 600000) != ADB_OK) errors++;
  }
  adb__policy_free(&p);
  free(cdf);
  return errors ? NAN : (double)hits / measured;
}

int main(int argc, char **argv) {
  int quick = getenv("BENCH_QUICK") != NULL;
  uint64_t seed = 42;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      quick = 1;
    else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 10);
  }
  const char *url = getenv("AGENTDB_TEST_REDIS_URL");
  if (!url || !*url) {
    printf("bench_redis: skipped (AGENTDB_TEST_REDIS_URL is not set; "
           "see scripts/redis-test.sh)\n");
    return 0;
  }
  adb__redis_url u = {0};
  char err[256];
  if (adb__redis_url_parse(url, &u, err, sizeof err) != ADB_OK || u.cluster) {
    fprintf(stderr, "bench_redis: need a redis:// URL: %s\n", err);
    return 1;
  }
  adb_config cfg = {.pool_size = 1, .cache_ttl_s = 600};
  adb__cache *c;
  if (adb__cache_open(url, &cfg, &c, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "bench_redis: %s\n", err);
    return 1;
  }
  uint64_t rng = seed;
  char run[32];
  snprintf(run, sizeof run, "b%ld", (long)getpid());
  int n = quick ? 5000 : 50000;

  double rb = redis_benchmark_p50(&u.seeds[0], quick ? 10000 : 100000);
  double hg = hiredis_get_p50(&u, n);
  double mg = mget_p50(c, run, &rng, n);
  printf("redis raw GET p50, redis-benchmark -c 1:      %8.1f us  (anchor)\n",
         rb);
  printf("redis raw GET p50, hiredis loop, 1 conn:      %8.1f us  (anchor)\n",
         hg);
  printf("policy_mget 2 keys x %d actions p50, redis:   %8.1f us  "
         "ratio %.2fx vs redis-benchmark, %.2fx vs hiredis "
         "(target <= 1.5x; seed claimed 2800 us per decision)\n",
         ACTIONS, mg, mg / rb, mg / hg);
  int users = quick ? 10000 : 100000, warm = quick ? 20000 : 200000;
  int measured = quick ? 10000 : 100000;
  double hr = zipf_hit_rate(c, run, &rng, users, 1.0, warm, measured);
  printf("zipf(s=1.0) hit rate after warm-up, redis:   %8.1f %%   "
         "(%d users, %d warm-up, %d measured, seed %llu; seed claimed "
         "78 %%)\n",
         hr * 100, users, warm, measured, (unsigned long long)seed);
  adb__cache_close(c);
  return 0;
}
