/*
 * bench_core.c — the embedded core's benchmarks, seeded and verified:
 *   1. in-process decisions/s, 20 candidates, policies cached, one thread;
 *   2. durable rewards/s into SQLite, durability=sync, 64 writer threads
 *      (group commit), with the raw SQLite insert rate of the same rows as
 *      the anchor;
 *   3. resident memory of the process holding 10,000 users x 50 arms of
 *      cached policies.
 * One line per case: "bench <case>: <value> <unit> (target ..., anchor ...)".
 *
 *   bench_core [--quick] [--dir DIR]
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "bandit.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

static void die(adb *db, const char *what, int rc) {
  fprintf(stderr, "bench_core: %s: %s (%s)\n", what, adb_strerror(rc),
          db ? adb_errmsg(db) : "");
  exit(1);
}

static adb *open_store(const char *url, adb_durability dur, int queue) {
  adb_config cfg = {.store_url = url, .durability = dur, .seed = 1,
                    .queue_capacity = queue};
  adb *db;
  char err[512];
  if (adb_open(&cfg, &db, err, sizeof err)) {
    fprintf(stderr, "bench_core: %s\n", err);
    exit(1);
  }
  return db;
}

static void make_agent(adb *db, int n_actions) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  snprintf(cfg.id, sizeof cfg.id, "bench");
  cfg.n_context_keys = 1;
  snprintf(cfg.context_keys[0], sizeof cfg.context_keys[0], "daypart");
  int rc = adb_agent_put(db, &cfg);
  if (rc) die(db, "agent", rc);
  adb_action acts[64];
  char ids[64][16];
  for (int i = 0; i < n_actions; i++) {
    snprintf(ids[i], sizeof ids[i], "item-%d", i);
    acts[i] = (adb_action){.id = ids[i]};
  }
  if ((rc = adb_actions_put(db, "bench", acts, n_actions)))
    die(db, "actions", rc);
}

/* 1. Decisions over a warm cache; the decision log drains behind. */
static void bench_decide(const char *dir, int quick) {
  char url[512];
  snprintf(url, sizeof url, "sqlite://%s/decide.db?synchronous=normal", dir);
  int n = quick ? 200000 : 1000000, users = 1000;
  adb *db = open_store(url, ADB_DURABILITY_ASYNC, n + users + 10);
  make_agent(db, 50);
  adb__rng r;
  adb__rng_seed(&r, 7);
  char uid[16], ids[20][16];
  const char *cands[20];
  adb_kv ctx = {"daypart", "evening"};
  for (int pass = 0; pass < 2; pass++) {
    int count = pass ? n : users;
    double t0 = now_s();
    for (int i = 0; i < count; i++) {
      snprintf(uid, sizeof uid, "u%d", pass ? (int)(adb__rng_next(&r) % users)
                                            : i);
      int base = (int)(adb__rng_next(&r) % 30);
      for (int c = 0; c < 20; c++) {
        snprintf(ids[c], sizeof ids[c], "item-%d", base + c);
        cands[c] = ids[c];
      }
      adb_decide_req req = {.agent_id = "bench", .user_id = uid,
                            .candidates = cands, .n_candidates = 20,
                            .context = &ctx, .n_context = 1};
      adb_decision d;
      d.ranking = NULL;
      d.ranking_cap = 0;
      int rc = adb_decide(db, &req, &d);
      if (rc) die(db, "decide", rc);
    }
    double dt = now_s() - t0;
    if (!pass) continue;
    double t1 = now_s();
    adb_flush(db);
    double drain = now_s() - t1;
    adb_stats st;
    adb_stats_get(db, &st);
    printf("bench decide_inprocess: %.0f decisions/s, 20 candidates, cached "
           "(hit rate %.1f%%), 1 thread (target >= 500000/s)\n",
           n / dt, 100.0 * st.cache_hits / (st.cache_hits + st.cache_misses));
    printf("bench decide_logged: %.0f decisions/s including the decision log "
           "drained into SQLite (log drain %.2f s after the loop)\n",
           n / (dt + drain), drain);
  }
  adb_close(db);
}

typedef struct rw_arg {
  adb *db;
  int t;
  double until;
  long done;
} rw_arg;

static void *reward_writer(void *p) {
  rw_arg *a = p;
  char sk[65];
  adb_state_key(a->db, "bench", NULL, 0, NULL, 0, sk);
  for (long i = 0; now_s() < a->until; i++) {
    char id[48], user[16], act[16];
    snprintf(id, sizeof id, "w%d-%ld", a->t, i);
    snprintf(user, sizeof user, "u%ld", (a->t * 7919 + i) % 1000);
    snprintf(act, sizeof act, "item-%ld", i % 50);
    adb_reward_req rr = {.agent_id = "bench", .reward_id = id,
                         .user_id = user, .action = act, .state_key = sk,
                         .has_reward = 1, .reward = (i % 10) / 10.0};
    if (adb_reward(a->db, &rr, NULL) == ADB_OK) a->done++;
  }
  return NULL;
}

/* Anchor: the same number of reward rows inserted by raw SQLite, batched
 * in one transaction per 4096 rows, synchronous=full. */
static double raw_sqlite_rate(const char *dir, long rows) {
  char path[512];
  snprintf(path, sizeof path, "%s/raw.db", dir);
  sqlite3 *s;
  sqlite3_open(path, &s);
  sqlite3_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                  "CREATE TABLE r(agent TEXT, id TEXT, usr TEXT, act TEXT,"
                  " reward REAL, PRIMARY KEY(agent, id))",
               0, 0, 0);
  sqlite3_stmt *st;
  sqlite3_prepare_v2(s, "INSERT INTO r VALUES('bench',?,?,?,?) ON CONFLICT "
                        "DO NOTHING", -1, &st, 0);
  double t0 = now_s();
  for (long i = 0; i < rows; i++) {
    if (i % 4096 == 0) sqlite3_exec(s, "BEGIN", 0, 0, 0);
    char id[32], user[16], act[16];
    snprintf(id, sizeof id, "w%ld", i);
    snprintf(user, sizeof user, "u%ld", i % 1000);
    snprintf(act, sizeof act, "item-%ld", i % 50);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, act, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 4, (i % 10) / 10.0);
    sqlite3_step(st);
    sqlite3_reset(st);
    if (i % 4096 == 4095 || i == rows - 1) sqlite3_exec(s, "COMMIT", 0, 0, 0);
  }
  double dt = now_s() - t0;
  sqlite3_finalize(st);
  sqlite3_close(s);
  return rows / dt;
}

/* 2. Durable rewards: sync mode, many writers, group commit. */
static void bench_rewards(const char *dir, int quick) {
  char url[512];
  snprintf(url, sizeof url, "sqlite://%s/rewards.db", dir);
  adb *db = open_store(url, ADB_DURABILITY_SYNC, 0);
  make_agent(db, 50);
  enum { W = 64 };
  pthread_t th[W];
  rw_arg args[W];
  double secs = quick ? 1.5 : 4.0, t0 = now_s();
  for (int t = 0; t < W; t++) {
    args[t] = (rw_arg){db, t, t0 + secs, 0};
    pthread_create(&th[t], NULL, reward_writer, &args[t]);
  }
  long total = 0;
  for (int t = 0; t < W; t++) {
    pthread_join(th[t], NULL);
    total += args[t].done;
  }
  double dt = now_s() - t0;
  adb_stats st;
  adb_stats_get(db, &st);
  adb_close(db);
  double raw = raw_sqlite_rate(dir, total);
  printf("bench rewards_durable_sqlite: %.0f rewards/s, sync, %d writers, "
         "%.0f per commit (target >= 50000/s; anchor raw batched SQLite "
         "insert %.0f rows/s, ratio %.2f)\n",
         total / dt, W, (double)st.rewards_applied / (st.flush_batches + 1e-9),
         raw, total / dt / raw);
}

/* 3. RSS with 10,000 users x 50 arms cached. */
static void bench_memory(const char *dir, int quick) {
  char url[512];
  snprintf(url, sizeof url, "sqlite://%s/memory.db?synchronous=normal", dir);
  int users = quick ? 2000 : 10000, arms = 50;
  long before = rss_kb();
  adb *db = open_store(url, ADB_DURABILITY_ASYNC, users * arms + 10);
  make_agent(db, arms);
  char sk[65];
  adb_state_key(db, "bench", NULL, 0, NULL, 0, sk);
  for (int u = 0; u < users; u++)
    for (int a = 0; a < arms; a++) {
      char id[48], user[16], act[16];
      snprintf(id, sizeof id, "m%d-%d", u, a);
      snprintf(user, sizeof user, "u%d", u);
      snprintf(act, sizeof act, "item-%d", a);
      adb_reward_req rr = {.agent_id = "bench", .reward_id = id,
                           .user_id = user, .action = act, .state_key = sk,
                           .has_reward = 1, .reward = 0.5};
      int rc = adb_reward(db, &rr, NULL);
      if (rc) die(db, "reward", rc);
      if ((u * arms + a) % 5000 == 4999) adb_flush(db); /* bound the queue */
    }
  adb_flush(db);
  const char *cands[50];
  char ids[50][16];
  for (int a = 0; a < arms; a++) {
    snprintf(ids[a], sizeof ids[a], "item-%d", a);
    cands[a] = ids[a];
  }
  for (int u = 0; u < users; u++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", u);
    adb_decide_req req = {.agent_id = "bench", .user_id = user,
                          .candidates = cands, .n_candidates = arms};
    adb_decision d = {0};
    int rc = adb_decide(db, &req, &d);
    if (rc) die(db, "decide", rc);
  }
  adb_flush(db);
  adb_stats st;
  adb_stats_get(db, &st);
  long after = rss_kb();
  printf("bench memory_embedded: %.1f MB resident with %d users x %d arms "
         "cached (%lld cache entries, %.1f MB accounted by the cache; "
         "%.1f MB before open) (target <= 100 MB)\n",
         after / 1024.0, users, arms, (long long)st.cache_entries,
         st.cache_bytes / 1048576.0, before / 1024.0);
  adb_close(db);
}

int main(int argc, char **argv) {
  int quick = 0;
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
  }
  char tmpl[] = "/tmp/agentdb-bench.XXXXXX";
  if (!dir && !(dir = mkdtemp(tmpl))) return 1;
  printf("# bench_core: %s\n", quick ? "quick" : "full");
  bench_memory(dir, quick); /* first: a clean process for RSS */
  bench_decide(dir, quick);
  bench_rewards(dir, quick);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (dir == tmpl && system(cmd) != 0) return 1;
  return 0;
}
