/*
 * bench_cache.c — micro-benchmark of the in-process cache ("mem://").
 *
 * Prints one line per case, no assertions:
 *  - ns per policy_mget of 2 keys (the user's policy and the agent-wide
 *    '*') x 20 candidate actions, both keys cached (the decision hot path;
 *    the budget is well under 500 ns of a ~2 us decision);
 *  - the cache's accounted bytes, and the process RSS growth, for 10,000
 *    users x 50 arms of cached policies (target <= 40 MB).
 * Seeded: the same ids and statistics every run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

#define STATE_KEY                                                              \
  "5f1d3c9a0b7e4d2c8a6f1e3b5d7c9a0b2e4f6a8c0d1b3e5f7a9c2d4e6f8a0b1c"
#define CATALOGUE 5000
#define ARMS 50
#define CANDIDATES 20

static uint64_t next_rand(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long rss_kb(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 50 distinct catalogue ids from `first` on, as movie:NNNNNN. */
static void arm_id(char *out, size_t cap, int first, int a) {
  snprintf(out, cap, "movie:%06d", (first + a * 101) % CATALOGUE);
}

static int put_policy(adb__cache *c, const char *user, int first,
                      uint64_t *seed) {
  adb__policy p = {0};
  int rc = ADB_OK;
  for (int a = 0; a < ARMS && rc == ADB_OK; a++) {
    char id[32];
    arm_id(id, sizeof id, first, a);
    int64_t n = (int64_t)(next_rand(seed) % 100);
    adb__arm_stats s = {.n = n, .sum_micro = n * 400000, .version = n + 1};
    rc = adb__policy_push(&p, id, &s);
  }
  char key[256];
  adb__policy_key(key, sizeof key, "media-agent", user, STATE_KEY);
  if (rc == ADB_OK) rc = c->m->policy_put(c, key, &p, 0);
  adb__policy_free(&p);
  return rc;
}

static adb__cache *open_mem(void) {
  adb_config cfg = {0};
  adb__cache *c = NULL;
  char err[256];
  if (adb__cache_open("mem://", &cfg, &c, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "bench_cache: %s\n", err);
    return NULL;
  }
  return c;
}

static int bench_mget(void) {
  adb__cache *c = open_mem();
  if (!c) return 1;
  uint64_t seed = 1;
  int first = 17;
  if (put_policy(c, "user-1", first, &seed) != ADB_OK ||
      put_policy(c, "*", first, &seed) != ADB_OK)
    return 1;
  char ids[CANDIDATES][32], keys[2][256];
  const char *cand[CANDIDATES], *kp[2] = {keys[0], keys[1]};
  for (int i = 0; i < CANDIDATES; i++) { /* 20 of the 50 arms, shuffled */
    arm_id(ids[i], sizeof ids[i], first, (int)((i * 7 + 3) % ARMS));
    cand[i] = ids[i];
  }
  adb__policy_key(keys[0], sizeof keys[0], "media-agent", "user-1", STATE_KEY);
  adb__policy_key(keys[1], sizeof keys[1], "media-agent", "*", STATE_KEY);
  adb__arm_stats st[2 * CANDIDATES];
  int found[2];
  long iters = 200000;
  double best = 1e9;
  int64_t check = 0;
  for (int round = 0; round < 7; round++) {
    double t0 = now_s();
    for (long i = 0; i < iters; i++) {
      c->m->policy_mget(c, 2, kp, &(adb__ids){.n = CANDIDATES, .id = cand}, st,
                        found);
      check += st[i % (2 * CANDIDATES)].n + found[1];
    }
    double ns = (now_s() - t0) * 1e9 / (double)iters;
    if (ns < best) best = ns;
  }
  printf("cache_mem policy_mget 2 keys x %d actions (hits): %.0f ns/op "
         "(best of 7 x %ld; checksum %lld)\n",
         CANDIDATES, best, iters, (long long)check);
  adb__cache_close(c);
  return 0;
}

static int bench_memory(void) {
  long rss0 = rss_kb();
  adb__cache *c = open_mem();
  if (!c) return 1;
  uint64_t seed = 2;
  enum { USERS = 10000 };
  for (int u = 0; u < USERS; u++) {
    char user[32];
    snprintf(user, sizeof user, "user-%d", u);
    if (put_policy(c, user, (int)(next_rand(&seed) % CATALOGUE), &seed))
      return 1;
  }
  adb__cache_stats s;
  c->m->stats(c, &s);
  long rss1 = rss_kb();
  printf("cache_mem %d users x %d arms: %.1f MB accounted (%.1f bytes/arm), "
         "RSS +%.1f MB, %lld entries\n",
         USERS, ARMS, (double)s.bytes / 1e6, (double)s.bytes / (USERS * ARMS),
         (double)(rss1 - rss0) / 1e3, (long long)s.entries);
  adb__cache_close(c);
  return 0;
}

int main(void) {
  return bench_mget() || bench_memory();
}
