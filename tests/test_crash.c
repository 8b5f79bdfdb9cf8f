/*
 * test_crash.c — the ledger checker under SIGKILL.
 *
 * A child process writes rewards through the library from 4 threads and
 * reports each acknowledged reward id on a pipe; the parent kills it with
 * SIGKILL at a random moment, 20 times over one store. Then the parent
 * re-sends every id the child sent or may have sent (same body): an id
 * that was acknowledged must come back as a duplicate (applied = 0), and
 * the posterior must then hold exactly one application of every distinct
 * id, with an exact sum (rewards are kept as integer micro-units).
 *
 * The canary runs the same checker against durability=async, where an
 * acknowledgement means only "queued": it must report losses, which shows
 * the checker can see one.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agentdb.h"
#include "util_store.h"

#define THREADS 4
#define MAX_CYCLES 20

typedef struct ledger {
  int cycles;
  int acked[MAX_CYCLES][THREADS]; /* ids 0..acked-1 acknowledged */
} ledger;

static double reward_of(int cycle, int t, int i) {
  return ((cycle * 7 + t * 13 + i) % 1000) / 1000.0;
}

static void reward_id(char *buf, size_t cap, int cycle, int t, int i) {
  snprintf(buf, cap, "c%d-t%d-%d", cycle, t, i);
}

static const char *g_sk;

static adb_reward_req make_req(const char *id, double r) {
  return (adb_reward_req){.agent_id = "crash",
                          .reward_id = id,
                          .user_id = "u",
                          .action = "a0",
                          .state_key = g_sk,
                          .has_reward = 1,
                          .reward = r};
}

typedef struct writer {
  adb *db;
  int cycle, t, fd, pace_us;
} writer;

static void *write_loop(void *p) {
  writer *w = p;
  for (int i = 0;; i++) {
    char id[64];
    reward_id(id, sizeof id, w->cycle, w->t, i);
    adb_reward_req rr = make_req(id, reward_of(w->cycle, w->t, i));
    if (adb_reward(w->db, &rr, NULL) != ADB_OK) {
      i--; /* retry the same id (e.g. queue full) */
      continue;
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%d %d\n", w->t, i);
    if (write(w->fd, line, (size_t)n) != n) _exit(3);
    if (w->pace_us) usleep(w->pace_us);
  }
  return NULL;
}

static void child(const char *url, adb_durability dur, int cycle, int fd) {
  adb_config cfg = {.store_url = url,
                    .durability = dur,
                    .flush_interval_ms = dur == ADB_DURABILITY_ASYNC ? 200 : 0,
                    .batch_size = dur == ADB_DURABILITY_ASYNC ? 1000000 : 0,
                    .queue_capacity = 1000000};
  adb *db;
  if (adb_open(&cfg, &db, NULL, 0) != ADB_OK) _exit(2);
  if (write(fd, "ready\n", 6) != 6) _exit(3);
  writer w[THREADS];
  pthread_t th[THREADS];
  for (int t = 0; t < THREADS; t++) {
    /* async acks at enqueue: pace it so the ledger stays small */
    w[t] = (writer){db, cycle, t, fd, dur == ADB_DURABILITY_ASYNC ? 200 : 0};
    pthread_create(&th[t], NULL, write_loop, &w[t]);
  }
  for (;;)
    pause();
}

/* Reads "t i" lines until the deadline; records the highest i per t. */
static void read_acks(int fd, int64_t deadline_ms, int *acked) {
  char buf[4096], line[64];
  size_t ll = 0;
  for (;;) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int wait = deadline_ms < 0 ? 1000 : (int)(deadline_ms - now);
    if (deadline_ms >= 0 && wait <= 0) return;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, wait) <= 0) {
      if (deadline_ms < 0) return;
      continue;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return;
    for (ssize_t k = 0; k < n; k++) {
      if (buf[k] != '\n') {
        if (ll < sizeof line - 1) line[ll++] = buf[k];
        continue;
      }
      line[ll] = 0;
      ll = 0;
      int t, i;
      if (sscanf(line, "%d %d", &t, &i) == 2 && t >= 0 && t < THREADS &&
          i + 1 > acked[t])
        acked[t] = i + 1;
    }
  }
}

/* Waits (at most 60 s) for the child's "ready" line, written once its
 * handle is open: the kill point is counted from there, so a slow open on
 * a loaded machine cannot leave a cycle with nothing written. */
static void wait_ready(int fd) {
  char c = 0;
  struct pollfd p = {fd, POLLIN, 0};
  while (c != '\n') {
    assert_true(poll(&p, 1, 60000) == 1);
    assert_int_equal(read(fd, &c, 1), 1);
  }
}

static void run_cycles(const char *url, adb_durability dur, int cycles,
                       ledger *lg, uint64_t seed) {
  srand((unsigned)seed);
  lg->cycles = cycles;
  for (int c = 0; c < cycles; c++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      child(url, dur, c, fds[1]);
    }
    close(fds[1]);
    wait_ready(fds[0]);
    int delay = 100 + rand() % 400; /* random kill point, ms */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    memset(lg->acked[c], 0, sizeof lg->acked[c]);
    read_acks(fds[0], now + delay, lg->acked[c]);
    kill(pid, SIGKILL);
    read_acks(fds[0], -1, lg->acked[c]); /* what was written before death */
    int st;
    waitpid(pid, &st, 0);
    close(fds[0]);
    assert_true(WIFSIGNALED(st));
  }
}

typedef struct resend {
  adb *db;
  const ledger *lg;
  _Atomic long next; /* index into the flattened (cycle, thread, i) list */
  _Atomic int lost;
  _Atomic int64_t distinct, sum_micro;
} resend;

/* Maps a flat index to (cycle, thread, i) over acked + 1 ids per thread. */
static int locate(const ledger *lg, long k, int *c, int *t, int *i) {
  for (*c = 0; *c < lg->cycles; (*c)++)
    for (*t = 0; *t < THREADS; (*t)++) {
      long span = lg->acked[*c][*t] + 1;
      if (k < span) {
        *i = (int)k;
        return 1;
      }
      k -= span;
    }
  return 0;
}

static void *resend_loop(void *p) {
  resend *rs = p;
  int c, t, i;
  while (locate(rs->lg, atomic_fetch_add(&rs->next, 1), &c, &t, &i)) {
    char id[64];
    reward_id(id, sizeof id, c, t, i);
    double r = reward_of(c, t, i);
    adb_reward_req rr = make_req(id, r);
    adb_reward_result res;
    if (adb_reward(rs->db, &rr, &res) != ADB_OK) {
      fprintf(stderr, "resend %s: %s\n", id, adb_errmsg(rs->db));
      atomic_fetch_add(&rs->lost, 1000000); /* fails the test loudly */
      continue;
    }
    if (i < rs->lg->acked[c][t] && res.applied) atomic_fetch_add(&rs->lost, 1);
    atomic_fetch_add(&rs->distinct, 1);
    atomic_fetch_add(&rs->sum_micro, (int64_t)llround(r * 1e6));
  }
  return NULL;
}

/* Re-sends every id sent or maybe sent (acked + the one in flight per
 * thread), from 32 threads so that group commit keeps it quick. Returns
 * the number of acknowledged ids that were missing (lost) and checks
 * exactly-once on the posterior. */
static int check_ledger(const char *url, const ledger *lg) {
  adb_config cfg = {.store_url = url};
  static resend rs;
  memset(&rs, 0, sizeof rs);
  assert_int_equal(adb_open(&cfg, &rs.db, NULL, 0), ADB_OK);
  rs.lg = lg;
  pthread_t th[32];
  for (int k = 0; k < 32; k++)
    pthread_create(&th[k], NULL, resend_loop, &rs);
  for (int k = 0; k < 32; k++)
    pthread_join(th[k], NULL);
  adb_arm_posterior arms[4];
  int n = 0;
  assert_int_equal(adb_policy_get(rs.db, "crash", "u", g_sk, arms, 4, &n),
                   ADB_OK);
  assert_int_equal(n, 1);
  assert_int_equal(arms[0].n, rs.distinct);
  assert_int_equal((int64_t)llround(arms[0].sum * 1e6), rs.sum_micro);
  adb_close(rs.db);
  return rs.lost;
}

static char g_skbuf[65];

static char *prepare(const char *kind) {
  char *url = util_store_fresh_url(kind);
  assert_non_null(url);
  adb_config cfg = {.store_url = url};
  adb *db;
  assert_int_equal(adb_open(&cfg, &db, NULL, 0), ADB_OK);
  adb_agent_config ac;
  adb_agent_config_init(&ac);
  snprintf(ac.id, sizeof ac.id, "crash");
  assert_int_equal(adb_agent_put(db, &ac), ADB_OK);
  assert_int_equal(adb_state_key(db, "crash", NULL, 0, NULL, 0, g_skbuf),
                   ADB_OK);
  g_sk = g_skbuf;
  adb_close(db);
  return url;
}

static void sigkill_in_sync_mode_loses_no_acknowledged_reward(void **state) {
  char *url = prepare(*state);
  static ledger lg;
  int cycles = getenv("ADB_TEST_QUICK") ? 5 : 20;
  run_cycles(url, ADB_DURABILITY_SYNC, cycles, &lg, 1);
  int acked = 0;
  for (int c = 0; c < cycles; c++)
    for (int t = 0; t < THREADS; t++)
      acked += lg.acked[c][t];
  printf("# %d kills, %d acknowledged rewards\n", cycles, acked);
  assert_true(acked > 0);
  assert_int_equal(check_ledger(url, &lg), 0);
  util_store_drop(url);
}

static void canary_async_mode_loss_is_detected(void **state) {
  char *url = prepare(*state);
  static ledger lg;
  run_cycles(url, ADB_DURABILITY_ASYNC, 3, &lg, 2);
  int lost = check_ledger(url, &lg);
  printf("# canary (async): %d acknowledged rewards lost\n", lost);
  assert_true(lost > 0);
  util_store_drop(url);
}

int main(void) {
  const char *kinds[4];
  int nk = util_store_kinds(kinds, 4), failed = 0;
  for (int k = 0; k < nk; k++) {
    struct CMUnitTest t[] = {
        cmocka_unit_test_prestate(
            sigkill_in_sync_mode_loses_no_acknowledged_reward,
            (void *)kinds[k]),
        cmocka_unit_test_prestate(canary_async_mode_loss_is_detected,
                                  (void *)kinds[k]),
    };
    char name[64];
    snprintf(name, sizeof name, "crash/%s", kinds[k]);
    failed += _cmocka_run_group_tests(name, t, 2, NULL, NULL);
  }
  return failed;
}
