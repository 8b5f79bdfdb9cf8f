/*
 * bench_core.c — the embedded core's benchmarks, seeded and verified:
 *   1. in-process decisions/s, 20 candidates, policies cached, one thread;
 *   1b. the same for cold users (no rewards of their own), whose broad
 *      posteriors need the propensity integral;
 *   2. durable rewards/s into SQLite, durability=sync, 64 and 512 writer
 *      threads (group commit), with the raw durable commit latency (the
 *      Little's-law bound for that many synchronous writers) and the raw
 *      batched insert rate of the same rows as anchors;
 *   2b. the same into PostgreSQL when AGENTDB_TEST_PG_URL names a server
 *      (scripts/bench.sh starts a throwaway one), anchored on a raw
 *      durable commit on that server;
 *   3. resident memory of the process holding 10,000 users x 50 arms of
 *      cached policies.
 * One line per case: "bench <case>: <value> <unit> (target ..., anchor ...)".
 *
 *   bench_core [--quick] [--dir DIR]
 *              [--only memory|decide|decide-cold|rewards|rewards-pg]
 */
#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "anchor_commit.h"
#include "bandit.h"
#include "propmemo.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
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
  adb_config cfg = {
      .store_url = url, .durability = dur, .seed = 1, .queue_capacity = queue};
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

/* The anchor of the decide case, measured in the same run: the bandit
 * core alone (posteriors, Thompson selection, propensity, top-5) over 20
 * arms with the statistics the decide loop sees (none: every user is
 * new, so the posteriors are the agent's prior). */
static double core_ns(int iters) {
  adb_agent_config cfg;
  adb_agent_config_init(&cfg);
  adb__arm_stats zero[40] = {{0}};
  adb__posterior post[20];
  double scores[20], t0 = thread_cpu_s();
  volatile double sink = 0;
  int idx[5];
  adb__rng r;
  adb__rng_seed(&r, 9);
  for (int i = 0; i < iters; i++) {
    for (int c = 0; c < 20; c++)
      adb__posterior_make(&cfg, &zero[c], &zero[20 + c], &post[c]);
    int best = adb__thompson_select(&r, post, 20, NULL, scores);
    sink += adb__propensity(post, 20, NULL, best);
    sink += adb__rank_topk(scores, 20, 5, idx);
  }
  (void)sink;
  return (thread_cpu_s() - t0) / iters * 1e9;
}

/* The decide benchmark's inputs: ids prepared up front so that the loop
 * times adb_decide only. */
#define DEC_USERS 1000
static char dec_uids[DEC_USERS][16], dec_items[50][16];
static const char *dec_lists[30][20];

static void decide_inputs(void) {
  for (int u = 0; u < DEC_USERS; u++)
    snprintf(dec_uids[u], sizeof dec_uids[u], "u%d", u);
  for (int i = 0; i < 50; i++)
    snprintf(dec_items[i], sizeof dec_items[i], "item-%d", i);
  for (int b = 0; b < 30; b++)
    for (int c = 0; c < 20; c++)
      dec_lists[b][c] = dec_items[b + c];
}

/* count decisions, user i (warm-up) or random users; returns the thread's
 * CPU seconds. */
static double decide_loop(adb *db, adb__rng *r, int count, int warmup) {
  adb_kv ctx = {"daypart", "evening"};
  double c0 = thread_cpu_s();
  for (int i = 0; i < count; i++) {
    int u = warmup ? i : (int)(adb__rng_next(r) % DEC_USERS);
    adb_decide_req req = {.agent_id = "bench",
                          .user_id = dec_uids[u],
                          .candidates = dec_lists[adb__rng_next(r) % 30],
                          .n_candidates = 20,
                          .context = &ctx,
                          .n_context = 1};
    adb_decision d;
    d.ranking = NULL;
    d.ranking_cap = 0;
    int rc = adb_decide(db, &req, &d);
    if (rc) die(db, "decide", rc);
  }
  return thread_cpu_s() - c0;
}

/* 1. Decisions over a warm cache. A burst: the decision log drains behind
 * and its backlog grows (every queued decision is fresh memory); then
 * rounds of 10,000 the drain catches up with before the next (the rate a
 * deciding core costs while the log keeps up, its memory reused). */
static void bench_decide(const char *dir, int quick) {
  char url[512];
  snprintf(url, sizeof url, "sqlite://%s/decide.db?synchronous=normal", dir);
  int n = quick ? 200000 : 1000000;
  adb *db = open_store(url, ADB_DURABILITY_ASYNC, n + DEC_USERS + 10);
  make_agent(db, 50);
  decide_inputs();
  adb__rng r;
  adb__rng_seed(&r, 7);
  decide_loop(db, &r, DEC_USERS, 1);
  double t0 = now_s(), cpu = decide_loop(db, &r, n, 0), dt = now_s() - t0;
  double t1 = now_s();
  adb_flush(db);
  double drain = now_s() - t1;
  adb_stats st;
  adb_stats_get(db, &st);
  double core = core_ns(n / 4), per = cpu / n * 1e9;
  printf("bench decide_inprocess: %.0f decisions/s per core (thread CPU "
         "time; %.0f/s wall clock on a shared machine), 20 candidates, "
         "cached (hit rate %.1f%%) (target >= 500000/s; anchor: the "
         "bandit core alone on the same posteriors %.0f ns = %.0f/s, "
         "ratio %.2f; %.0f ns per decision outside the core)\n",
         n / cpu, n / dt,
         100.0 * st.cache_hits / (st.cache_hits + st.cache_misses), core,
         1e9 / core, core / per, per - core);
  printf("bench decide_logged: %.0f decisions/s including the decision log "
         "drained into SQLite (log drain %.2f s after the loop)\n",
         n / (dt + drain), drain);
  double steady = 0;
  for (int done = 0; done < n; done += 10000) {
    steady += decide_loop(db, &r, 10000, 0);
    adb_flush(db);
  }
  per = steady / n * 1e9;
  printf("bench decide_steady: %.0f decisions/s per core in rounds of 10000 "
         "the log drains between (target >= 500000/s; anchor: the bandit "
         "core %.0f ns, ratio %.2f; %.0f ns per decision outside it)\n",
         n / steady, core, core / per, per - core);
  adb_close(db);
}

static int cold_rewards; /* reward ids, in a fresh file every run */

/* A direct reward from warm user w<user> to item <item>, 1 with
 * probability item / 100 (so the '*' rows' means differ by item). */
static void cold_reward(adb *db, adb__rng *r, int user, int item,
                        const adb_kv *ctx) {
  char uid[32], rid[32];
  snprintf(uid, sizeof uid, "w%d", user);
  snprintf(rid, sizeof rid, "c%d", cold_rewards++);
  adb_reward_req rw = {.agent_id = "bench",
                       .reward_id = rid,
                       .user_id = uid,
                       .action = dec_items[item],
                       .context = ctx,
                       .n_context = 1,
                       .has_reward = 1,
                       .reward = adb__rng_uniform(r) < 0.01 * item};
  adb_reward_result res;
  int rc = adb_reward(db, &rw, &res);
  if (rc) die(db, "reward", rc);
}

/* Times n decisions of the cold users (ns each, adb_decide alone), a
 * direct reward from a warm user to a random item after every
 * `reward_every`-th (0: none). */
static double cold_loop(adb *db, adb__rng *r, int n, int reward_every,
                        const char *daypart) {
  adb_kv ctx = {"daypart", daypart};
  double spent = 0;
  for (int i = 0; i < n; i++) {
    adb_decide_req req = {.agent_id = "bench",
                          .user_id = dec_uids[adb__rng_next(r) % DEC_USERS],
                          .candidates = dec_lists[adb__rng_next(r) % 30],
                          .n_candidates = 20,
                          .context = &ctx,
                          .n_context = 1};
    adb_decision d = {0};
    double t0 = now_s();
    int rc = adb_decide(db, &req, &d);
    spent += now_s() - t0;
    if (rc) die(db, "decide", rc);
    if (reward_every && i % reward_every == 0) {
      int item = (int)(adb__rng_next(r) % 50);
      cold_reward(db, r, (int)(adb__rng_next(r) % 200), item, &ctx);
    }
  }
  return spent / n * 1e9;
}

/* The memo's share of the calling thread's integrals since *h / *m. */
static double memo_rate(uint64_t *h, uint64_t *m) {
  uint64_t h1, m1;
  adb__propmemo_counts(&h1, &m1);
  double n = (double)(h1 - *h + m1 - *m), rate = n ? (h1 - *h) / n : 0;
  *h = h1;
  *m = m1;
  return 100.0 * rate;
}

/* 1b. Cold users: users with no rewards of their own, over the same 30
 * lists, once the agent-wide '*' rows have learned from 200 warm users
 * (20,000 rewards). Their posteriors are the prior plus at most
 * fallback_strength borrowed observations, broad and overlapping, and
 * their propensity needs the integral; cold users of a state share them,
 * which the propensity memo (src/propmemo.c) uses. Printed: with the memo
 * and no rewards arriving, without the memo, and with a reward after
 * every 10th decision applied to the '*' rows (adb_flush) after every
 * 1000 or 100 decisions: a server applies rewards every flush interval (2
 * ms), so that is 500k or 50k cold decisions a second over these lists.
 * The anchor: the same users' decision in a state no reward has reached
 * (every arm at the prior: P = 1/20 with no integral). */
static void bench_decide_cold(const char *dir, int quick) {
  char url[512];
  snprintf(url, sizeof url, "rm -f '%s'/cold.db*", dir);
  if (system(url) != 0) exit(1);
  snprintf(url, sizeof url, "sqlite://%s/cold.db?synchronous=normal", dir);
  int n = quick ? 20000 : 100000;
  adb *db = open_store(url, ADB_DURABILITY_ASYNC, 4 * n + 40000);
  make_agent(db, 50);
  decide_inputs();
  adb__rng r;
  adb__rng_seed(&r, 11);
  for (int i = 0; i < 20000; i++) { /* the '*' rows learn */
    adb_kv ctx = {"daypart", "evening"};
    cold_reward(db, &r, i % 200, i % 50, &ctx);
  }
  adb_flush(db);
  decide_loop(db, &r, DEC_USERS, 1); /* the cold users' empty rows cached */
  adb_flush(db);
  uint64_t h = 0, m = 0;
  memo_rate(&h, &m);
  /* the anchor: the same users in a state with no rewards anywhere, whose
   * arms all have the prior (P = 1/20 without an integral) */
  cold_loop(db, &r, DEC_USERS, 0, "morning");
  double warm = cold_loop(db, &r, n, 0, "morning");
  memo_rate(&h, &m);
  double still = cold_loop(db, &r, n, 0, "evening"),
         still_rate = memo_rate(&h, &m);
  double flow[2], flow_rate[2];
  for (int k = 0; k < 2; k++) {
    int round = k ? 100 : 1000;
    flow[k] = 0;
    for (int done = 0; done < n; done += round) {
      flow[k] += cold_loop(db, &r, round, 10, "evening") * round / n;
      adb_flush(db); /* the rewards reach the '*' rows */
    }
    flow_rate[k] = memo_rate(&h, &m);
  }
  adb__propmemo_enable(0);
  double off = cold_loop(db, &r, n, 0, "evening");
  adb__propmemo_enable(1);
  printf("bench decide_cold: %.0f ns a decision (wall clock around "
         "adb_decide), %.1f%% of integrals from "
         "the memo (anchor: the same users in a state no reward has "
         "reached, every arm at the prior, %.0f ns; ratio %.2f; target <= "
         "2; 20 candidates, 30 lists; without the memo %.0f ns, ratio "
         "%.2f)\n",
         still, still_rate, warm, still / warm, off, off / warm);
  for (int k = 0; k < 2; k++)
    printf("bench decide_cold_rewarded_%d: %.0f ns a decision, %.1f%% of "
           "integrals from the memo, ratio %.2f to the anchor (a reward "
           "every 10 decisions, applied to the '*' rows after every %d)\n",
           k ? 100 : 1000, flow[k], flow_rate[k], flow[k] / warm,
           k ? 100 : 1000);
  adb_close(db);
}

/* Reward ids are new in every run: a PostgreSQL server (and its tables)
 * outlives one run, and duplicates would skip the posterior updates. */
static unsigned long run_nonce;

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
    snprintf(id, sizeof id, "w%lx-%d-%ld", run_nonce, a->t, i);
    snprintf(user, sizeof user, "u%ld", (a->t * 7919 + i) % 1000);
    snprintf(act, sizeof act, "item-%ld", i % 50);
    adb_reward_req rr = {.agent_id = "bench",
                         .reward_id = id,
                         .user_id = user,
                         .action = act,
                         .state_key = sk,
                         .has_reward = 1,
                         .reward = (i % 10) / 10.0};
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
  sqlite3_exec(s,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE r(agent TEXT, id TEXT, usr TEXT, act TEXT,"
               " reward REAL, PRIMARY KEY(agent, id))",
               0, 0, 0);
  sqlite3_stmt *st;
  sqlite3_prepare_v2(s,
                     "INSERT INTO r VALUES('bench',?,?,?,?) ON CONFLICT "
                     "DO NOTHING",
                     -1, &st, 0);
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

/* Anchor for PostgreSQL: latency of one autocommitted single-row INSERT
 * over libpq on the same server. */
static double pg_commit_latency(const char *url) {
  PGconn *c = PQconnectdb(url);
  if (PQstatus(c) != CONNECTION_OK) {
    PQfinish(c);
    return -1;
  }
  PQclear(PQexec(c, "CREATE TABLE IF NOT EXISTS bench_commit(x int)"));
  int n = 200;
  double t0 = now_s();
  for (int i = 0; i < n; i++)
    PQclear(PQexec(c, "INSERT INTO bench_commit VALUES (1)"));
  double lat = (now_s() - t0) / n;
  PQclear(PQexec(c, "DROP TABLE bench_commit"));
  PQfinish(c);
  return lat;
}

/* CPU seconds the PostgreSQL server at url has used so far, when it runs
 * on this machine (its postmaster, its live processes and those it has
 * reaped): the server's share of a durable reward, which this process's
 * clocks do not see. -1 when it cannot be read (another host, no rights). */
static double pg_server_cpu_s(const char *url) {
  PGconn *c = PQconnectdb(url);
  PGresult *r = PQstatus(c) == CONNECTION_OK
                    ? PQexec(c, "SELECT current_setting('data_directory')")
                    : NULL;
  char path[1024] = "";
  if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    snprintf(path, sizeof path, "%s/postmaster.pid", PQgetvalue(r, 0, 0));
  PQclear(r);
  PQfinish(c);
  FILE *f = *path ? fopen(path, "r") : NULL;
  long pm = 0;
  if (!f || fscanf(f, "%ld", &pm) != 1) pm = 0;
  if (f) fclose(f);
  if (pm <= 0) return -1;
  double tick = (double)sysconf(_SC_CLK_TCK), total = 0;
  int seen_pm = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char line[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *sf =
        e->d_name[0] >= '0' && e->d_name[0] <= '9' ? fopen(path, "r") : NULL;
    if (!sf) continue;
    char *r2 = fgets(line, sizeof line, sf) ? strrchr(line, ')') : NULL;
    long ppid = 0, pid = atol(e->d_name);
    unsigned long ut = 0, st = 0;
    long cut = 0, cst = 0;
    if (r2 && sscanf(r2 + 2,
                     "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu "
                     "%lu %ld %ld",
                     &ppid, &ut, &st, &cut, &cst) == 5) {
      if (pid == pm) {
        total += (double)(ut + st + (unsigned long)cut + (unsigned long)cst);
        seen_pm = 1;
      } else if (ppid == pm) {
        total += (double)(ut + st);
      }
    }
    fclose(sf);
  }
  if (d) closedir(d);
  return seen_pm ? total / tick : -1;
}

/* CPU seconds of this process's threads named `comm` (the flush worker
 * "adb-flush", the waker "adb-wake"), from /proc. */
static double threads_cpu_s(const char *comm) {
  char path[512], line[512];
  double s = 0, tick = (double)sysconf(_SC_CLK_TCK);
  snprintf(path, sizeof path, "/proc/%d/task", (int)getpid());
  DIR *dir = opendir(path);
  struct dirent *e;
  while (dir && (e = readdir(dir))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/%d/task/%s/stat", (int)getpid(),
             e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(line, sizeof line, f)) {
      char *l = strchr(line, '('), *r = strrchr(line, ')');
      unsigned long ut = 0, stt = 0;
      if (l && r && (size_t)(r - l - 1) == strlen(comm) &&
          !strncmp(l + 1, comm, strlen(comm)) &&
          sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                 &ut, &stt) == 2)
        s += (ut + stt) / tick;
    }
    fclose(f);
  }
  if (dir) closedir(dir);
  return s;
}

static double process_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Bytes this process has passed to write(2) and its kind (/proc/self/io
 * "wchar"): for the SQLite bench, the WAL frames and the checkpoints'
 * pages. */
static double written_bytes(void) {
  FILE *f = fopen("/proc/self/io", "r");
  char line[128];
  double v = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "wchar: %lf", &v) == 1) break;
  if (f) fclose(f);
  return v;
}

/* The disk's synced write bandwidth in dir, bytes/s: 256 KiB writes each
 * followed by fdatasync, about what one commit of a batch writes to the
 * WAL. The other durable-write anchor: a reward that makes the store
 * write B bytes cannot be committed faster than this / B. */
static double synced_write_bw(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/bandwidth.bin", dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  static char buf[256 * 1024];
  memset(buf, 1, sizeof buf);
  int n = 200;
  double t0 = now_s();
  for (int i = 0; i < n && fd >= 0; i++)
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd))
      break;
  double dt = now_s() - t0;
  if (fd >= 0) close(fd);
  unlink(path);
  return n * (double)sizeof buf / dt;
}

/* 2. Durable rewards: sync mode, W writers, group commit. */
static void bench_rewards(const char *dir, int quick, int writers,
                          const char *pg_url) {
  char url[1024];
  if (pg_url)
    snprintf(url, sizeof url, "%s", pg_url);
  else
    snprintf(url, sizeof url, "sqlite://%s/rewards-%d.db", dir, writers);
  adb *db = open_store(url, ADB_DURABILITY_SYNC, 0);
  make_agent(db, 50);
  pthread_t *th = calloc((size_t)writers, sizeof *th);
  rw_arg *args = calloc((size_t)writers, sizeof *args);
  adb_stats st0, st;
  adb_stats_get(db, &st0);
  run_nonce = (unsigned long)(now_s() * 1e6) ^ ((unsigned long)getpid() << 40);
  double secs = quick ? 1.5 : 4.0, t0 = now_s(), cpu0 = process_cpu_s();
  double wk0 = threads_cpu_s("adb-flush"), wa0 = threads_cpu_s("adb-wake");
  double w0 = written_bytes();
  double srv0 = pg_url ? pg_server_cpu_s(pg_url) : -1;
  for (int t = 0; t < writers; t++) {
    args[t] = (rw_arg){db, t, t0 + secs, 0};
    pthread_create(&th[t], NULL, reward_writer, &args[t]);
  }
  long total = 0;
  for (int t = 0; t < writers; t++) {
    pthread_join(th[t], NULL);
    total += args[t].done;
  }
  double dt = now_s() - t0, cpu = process_cpu_s() - cpu0;
  double wk = threads_cpu_s("adb-flush") - wk0;
  double wa = threads_cpu_s("adb-wake") - wa0;
  double wbytes = (written_bytes() - w0) / (total + 1e-9);
  double srv1 = pg_url ? pg_server_cpu_s(pg_url) : -1;
  adb_stats_get(db, &st);
  adb_close(db);
  free(th);
  free(args);
  long commits = st.flush_batches - st0.flush_batches;
  double per_commit = (double)total / (commits + 1e-9);
  /* Where the CPU went, per reward: the flush worker (store calls, cache,
   * bookkeeping), the waker (writer wake-ups), and the rest (the writers:
   * building, hashing, queueing, sleeping and waking). */
  char cpu_txt[256];
  snprintf(
      cpu_txt, sizeof cpu_txt,
      "%ld new, %ld commits, %.0f rewards per commit, %.1f ms per commit; CPU "
      "per reward %.1f us: worker %.1f, waker %.1f, writers %.1f",
      (long)(st.rewards_applied - st0.rewards_applied), commits, per_commit,
      dt * 1e3 / (commits + 1e-9), cpu * 1e6 / (total + 1e-9),
      wk * 1e6 / (total + 1e-9), wa * 1e6 / (total + 1e-9),
      (cpu - wk - wa) * 1e6 / (total + 1e-9));
  if (pg_url) {
    double lat = pg_commit_latency(pg_url);
    char srv[160] = "; the server's CPU not readable from here";
    if (srv0 >= 0 && srv1 >= srv0)
      snprintf(
          srv, sizeof srv,
          "; server CPU %.1f us a reward (all its processes: backends, WAL "
          "writer, checkpointer, autovacuum), %.0f/s a server core",
          (srv1 - srv0) * 1e6 / (total + 1e-9),
          (total + 1e-9) / (srv1 - srv0 + 1e-9));
    printf("bench rewards_durable_pg: %.0f rewards/s, sync, %d writers "
           "(target >= %d/s; anchor: raw durable commit %.2f ms on the same "
           "server, so %d synchronous writers one commit at a time are "
           "bounded by %.0f/s, ratio %.2f; %s%s)\n",
           total / dt, writers, writers >= 512 ? 50000 : 20000, lat * 1e3,
           writers, writers / lat, total / dt / (writers / lat), cpu_txt, srv);
    return;
  }
  double lat = anchor_commit_latency(dir);
  double raw = raw_sqlite_rate(dir, total), bw = synced_write_bw(dir);
  printf("bench rewards_durable_sqlite: %.0f rewards/s, sync, %d writers "
         "(target >= 50000/s; anchors: raw durable commit %.2f ms, so %d "
         "writers are bounded by %.0f/s, ratio %.2f; synced writes %.0f MB/s "
         "and %.1f kB written a reward (WAL and checkpoints), so at most "
         "%.0f/s, ratio %.2f; raw batched insert %.0f rows/s; %s)\n",
         total / dt, writers, lat * 1e3, writers, writers / lat,
         total / dt / (writers / lat), bw / 1e6, wbytes / 1e3, bw / wbytes,
         total / dt / (bw / wbytes), raw, cpu_txt);
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
      adb_reward_req rr = {.agent_id = "bench",
                           .reward_id = id,
                           .user_id = user,
                           .action = act,
                           .state_key = sk,
                           .has_reward = 1,
                           .reward = 0.5};
      int rc = adb_reward(db, &rr, NULL);
      if (rc) die(db, "reward", rc);
      if ((u * arms + a) % 5000 == 4999) adb_flush(db); /* bound the queue */
    }
  adb_flush(db);
  long loaded = rss_kb();
  const char *cands[50];
  char ids[50][16];
  for (int a = 0; a < arms; a++) {
    snprintf(ids[a], sizeof ids[a], "item-%d", a);
    cands[a] = ids[a];
  }
  for (int u = 0; u < users; u++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", u);
    adb_decide_req req = {.agent_id = "bench",
                          .user_id = user,
                          .candidates = cands,
                          .n_candidates = arms};
    adb_decision d = {0};
    int rc = adb_decide(db, &req, &d);
    if (rc) die(db, "decide", rc);
  }
  adb_flush(db);
  adb_stats st;
  adb_stats_get(db, &st);
  long untrimmed = rss_kb();
  malloc_trim(0); /* what the allocator holds but no longer uses */
  long after = rss_kb();
  fprintf(stderr,
          "# memory: %.1f MB after the 500k-reward load, %.1f MB "
          "before malloc_trim\n",
          loaded / 1024.0, untrimmed / 1024.0);
  printf("bench memory_embedded: %.1f MB resident with %d users x %d arms "
         "cached (%lld cache entries, %.1f MB accounted by the cache; "
         "%.1f MB before open) (target <= 100 MB)\n",
         after / 1024.0, users, arms, (long long)st.cache_entries,
         st.cache_bytes / 1048576.0, before / 1024.0);
  adb_close(db);
}

int main(int argc, char **argv) {
  int quick = 0;
  const char *dir = NULL, *only = "";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
  }
  char tmpl[] = "/tmp/agentdb-bench.XXXXXX";
  if (!dir && !(dir = mkdtemp(tmpl))) return 1;
  printf("# bench_core: %s\n", quick ? "quick" : "full");
  /* memory first: a clean process for RSS */
  if (!*only || !strcmp(only, "memory")) bench_memory(dir, quick);
  if (!*only || !strcmp(only, "decide")) bench_decide(dir, quick);
  if (!*only || !strcmp(only, "decide-cold")) bench_decide_cold(dir, quick);
  if (!*only || !strcmp(only, "rewards")) {
    bench_rewards(dir, quick, 64, NULL);
    bench_rewards(dir, quick, 512, NULL);
  }
  const char *pg = getenv("AGENTDB_TEST_PG_URL"); /* set by scripts/bench.sh */
  if (pg && (!*only || !strcmp(only, "rewards-pg"))) {
    bench_rewards(dir, quick, 64, pg);
    bench_rewards(dir, quick, 512, pg);
  }
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (dir == tmpl && system(cmd) != 0) return 1;
  return 0;
}
