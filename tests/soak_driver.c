/*
 * soak_driver.c — the chaos soak behind scripts/soak.sh.
 *
 * Two `agentdb serve` replicas over one PostgreSQL (the caller's, started
 * by scripts/pg-test.sh: its folder in AGENTDB_TEST_PG_DIR so that it can
 * be stopped and started again on the same port) and one Redis of the
 * driver's own (util_redis, restartable on its port), both in sync
 * durability, plus a third replica on a SQLite file in a small tmpfs. Client
 * threads send a mix of decide, reward (for a decision, often through the
 * other replica, and direct), episode batches and policy reads, while the
 * main thread injects faults on a schedule: SIGKILL a replica and start it
 * again, restart Redis, SIGSTOP Redis for 5 s, stop PostgreSQL for 10 s,
 * fill the SQLite disk and free it.
 *
 * The ledger. Every reward and episode id sent is recorded with what came
 * back: acknowledged (200, or 202 in the async canary), failed (a definite
 * refusal) or unknown (no answer, 503, reset). At the end, with every
 * service up:
 *   - each acknowledged reward is in the store exactly once and each failed
 *     one not at all (direct SQL on the store, by id);
 *   - unknown rewards are sent again, same id and body, until they get a
 *     definite answer (200: committed; 404 for an event that never became
 *     visible: not); the store then holds exactly the committed ones;
 *   - every posterior row (user and agent-wide '*', per action) holds
 *     n = the number of distinct committed rewards and sum_micro = their
 *     exact sum (rewards are multiples of 0.001, kept as integer
 *     micro-units), in the store and as served by every replica;
 *   - acknowledged episodes are stored exactly once;
 *   - no answer was wrong: a 200 must be well formed and right (the chosen
 *     action among the candidates, applied:true on a first send, ...), and
 *     an error may only be a documented 503 (queue_full, store_unavailable,
 *     shutting_down with Retry-After; timeout) or 429 with Retry-After, or
 *     a refused/closed connection or a client timeout;
 *   - the service recovered by itself after each fault: some write through
 *     every replica of the faulted system succeeded after the fault ended
 *     and before the next one began (the time to it is printed);
 *   - the RSS of each replica stayed flat (see rss_check for the
 *     tolerance, derived from the run's own warm-up noise).
 *
 * --canary runs the same checker against durability=async with replica
 * SIGKILLs: acknowledgements (202) then only mean "queued", and the checker
 * must report lost rewards. It exits 0 only when it does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "util_http.h"
#include "util_redis.h"
#include "util_store.h"

#define USERS 16
#define ACTIONS 4
#define CLIENTS 6
#define MAX_REPLICAS 3
#define MAX_FAULTS 128
#define MAX_SAMPLES 4096

/* ------------------------------------------------------------ options */

static struct {
  int seconds;
  int canary;
  const char *bin;
  const char *src;
  const char *pg_url, *pg_dir;
  char work[256];
  int write_timeout_ms;
  int client_timeout_ms;
} O;

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "soak: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
}

static int64_t T0;
static double secs(int64_t ms) {
  return (double)(ms - T0) / 1000.0;
}

/* ------------------------------------------------------------ replicas */

typedef struct replica {
  _Atomic pid_t pid;
  int port, target;
  _Atomic int generation; /* bumped by each SIGKILL */
  const char *durability;
  char store[512], cache[256], log[300];
  /* RSS samples (KiB) and when they were taken */
  int n_samples;
  int64_t sample_ms[MAX_SAMPLES];
  long rss_kib[MAX_SAMPLES];
  long episodes_at[MAX_SAMPLES]; /* r->episodes when sampled */
  int64_t baseline_from_ms;      /* RSS comparable from here (start/restart) */
  _Atomic long episodes;         /* acknowledged through it since that start */
} replica;

/* A system under test: one store and the replicas over it. */
typedef struct target {
  const char *name;
  char store[512];
  int rep[2], n_rep;
  char sk[65];
} target;

static replica R[MAX_REPLICAS];
static target TG[2];

static const char *target_name(int tg) {
  return TG[tg].name ? TG[tg].name : "?";
}

static int n_replicas;
static int n_targets;
static util_redis redis = {.pid = -1};

static void replica_spawn(replica *r) {
  char port[16];
  snprintf(port, sizeof port, "127.0.0.1:%d", r->port);
  const char *argv[40] = {O.bin,
                          "serve",
                          "--listen",
                          port,
                          "--store",
                          r->store,
                          "--cache",
                          r->cache,
                          "--threads",
                          "2",
                          "--write-threads",
                          "16",
                          "--durability",
                          r->durability,
                          "--queue-capacity",
                          "10000",
                          "--shutdown-timeout-ms",
                          "2000",
                          NULL};
  int n = 18;
  char wt[16];
  snprintf(wt, sizeof wt, "%d", O.write_timeout_ms);
  argv[n++] = "--write-timeout-ms";
  argv[n++] = wt;
  if (O.canary) { /* a second of acknowledged rewards only queued */
    argv[n++] = "--flush-interval-ms";
    argv[n++] = "1000";
    argv[n++] = "--batch-size";
    argv[n++] = "1000000";
  }
  argv[n] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(r->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(O.bin, (char *const *)argv);
    _exit(127);
  }
  atomic_store(&r->pid, pid);
}

static int healthz(int port, int timeout_ms) {
  util_http_conn c;
  util_http_init(&c, port);
  util_http_resp rs;
  int ok = util_http_call(&c, "GET", "/healthz", NULL, NULL, timeout_ms, &rs) ==
               UTIL_HTTP_OK &&
           rs.status == 200;
  util_http_resp_free(&rs);
  util_http_close(&c);
  return ok;
}

/* Starts the replica and waits until it serves (60 s at most). */
static void replica_start(replica *r) {
  replica_spawn(r);
  int64_t deadline = util_now_ms() + 60000;
  while (!healthz(r->port, 1000)) {
    int st;
    if (waitpid(r->pid, &st, WNOHANG) == r->pid)
      die("replica on port %d exited at start; see %s", r->port, r->log);
    if (util_now_ms() > deadline)
      die("replica on port %d does not serve; see %s", r->port, r->log);
    sleep_ms(50);
  }
  r->baseline_from_ms = util_now_ms();
  atomic_store(&r->episodes, 0);
}

static void replica_kill(replica *r) {
  pid_t pid = atomic_load(&r->pid);
  if (pid <= 0) return;
  atomic_fetch_add(&r->generation, 1);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  atomic_store(&r->pid, 0);
}

/* SIGTERM, then SIGKILL after 20 s. Returns the exit status (0: a clean
 * stop; under ASan, LeakSanitizer's report makes it non-zero), -1 when it
 * had to be killed, -2 when it had died before. */
static int replica_stop(replica *r) {
  pid_t pid = atomic_load(&r->pid);
  if (pid <= 0) return 0;
  int st;
  if (waitpid(pid, &st, WNOHANG) == pid) return -2;
  kill(pid, SIGTERM);
  int64_t deadline = util_now_ms() + 20000;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (util_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      atomic_store(&r->pid, 0);
      return -1;
    }
    sleep_ms(20);
  }
  atomic_store(&r->pid, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
  if (f) fclose(f);
  return v;
}

/* -------------------------------------------------------------- ledger */

enum { L_SENT, L_ACKED, L_FAILED, L_UNKNOWN, L_LATE, L_NEVER };

typedef struct lrec {
  uint8_t kind; /* 'r' reward, 'e' episode */
  uint8_t target, user, action, status;
  int32_t micro;
  int thread, seq;
  char *event; /* event_id of a reward for a decision, else NULL */
} lrec;

typedef struct client {
  int id;
  pthread_t th;
  uint64_t rng;
  util_http_conn conn[MAX_REPLICAS];
  lrec *recs;
  size_t n, cap;
  int seq, dseq;
  int last_ri;          /* the last request's replica */
  int64_t last_sent_ms; /* and when it was sent */
} client;

static client C[CLIENTS];

static lrec *ledger_add(client *c, char kind, int tg, int user, int action,
                        int32_t micro, const char *event) {
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 4096;
    c->recs = realloc(c->recs, c->cap * sizeof *c->recs);
    if (!c->recs) die("out of memory");
  }
  lrec *l = &c->recs[c->n++];
  *l = (lrec){.kind = (uint8_t)kind,
              .target = (uint8_t)tg,
              .user = (uint8_t)user,
              .action = (uint8_t)action,
              .status = L_SENT,
              .micro = micro,
              .thread = c->id,
              .seq = c->seq++,
              .event = event ? strdup(event) : NULL};
  return l;
}

static void rec_id(const lrec *l, char *buf, size_t cap) {
  snprintf(buf, cap, "%c%s-t%d-%d", l->kind, O.canary ? "c" : "", l->thread,
           l->seq);
}

/* ------------------------------------------------------ answer tallies */

/* Every answer is counted under a kind: "ok ...", "err ..." (documented
 * during faults) or "WRONG ..." (never acceptable). */
typedef struct kind {
  char name[160];
  long count;
  char example[200];
} kind;

static pthread_mutex_t kinds_mu = PTHREAD_MUTEX_INITIALIZER;
static kind kinds[256];
static int n_kinds;
static _Atomic long n_requests, n_wrong;

static void tally_raw(const char *name, const char *example) {
  pthread_mutex_lock(&kinds_mu);
  int i = 0;
  while (i < n_kinds && strcmp(kinds[i].name, name))
    i++;
  if (i == n_kinds && n_kinds < 256) {
    snprintf(kinds[i].name, sizeof kinds[i].name, "%s", name);
    snprintf(kinds[i].example, sizeof kinds[i].example, "%s",
             example ? example : "");
    n_kinds++;
  }
  if (i < 256) kinds[i].count++;
  pthread_mutex_unlock(&kinds_mu);
  if (!strncmp(name, "WRONG", 5)) atomic_fetch_add(&n_wrong, 1);
}

static const char *target_name(int tg);

/* "WRONG decide ..." on target 1 -> "WRONG sqlite: decide ..." */
static void tally(int tg, const char *name, const char *example) {
  char full[160];
  const char *sp = strchr(name, ' ');
  int k = sp ? (int)(sp - name) : (int)strlen(name);
  snprintf(full, sizeof full, "%.*s %s: %s", k, name, target_name(tg),
           sp ? sp + 1 : "");
  tally_raw(full, example);
}

/* ------------------------------------------------------------- faults */

typedef struct fault {
  char what[64];
  int target;       /* the system it hits; -1: all (Redis serves all) */
  int64_t start_ms; /* injected */
  int64_t end_ms;   /* over (restarted, continued, freed) */
  int64_t next_ms;  /* the next fault's start, or the end of the load */
  _Atomic int64_t first_ok_ms[MAX_REPLICAS]; /* first write 200 after end */
} fault;

static fault F[MAX_FAULTS];
static _Atomic int n_faults;  /* faults begun */
static _Atomic int fault_on;  /* a fault is in progress */
static _Atomic int stop_load; /* clients stop */

/* A write through replica ri answered 200: it may be the first one after
 * the last fault's end. sent_ms: when the request was sent. */
static void note_write_ok(int ri, int64_t sent_ms) {
  int k = atomic_load(&n_faults) - 1;
  if (k < 0 || atomic_load(&fault_on)) return;
  fault *f = &F[k];
  if (!f->end_ms || sent_ms < f->end_ms) return;
  int64_t zero = 0, now = util_now_ms();
  atomic_compare_exchange_strong(&f->first_ok_ms[ri], &zero, now);
}

/* 1 when an answer (arriving now) to a request sent at sent_ms through
 * replica ri falls in a fault's window: from the fault's start until the
 * first write through that replica succeeded after the fault's end. */
static int in_fault_window(int ri, int64_t sent_ms) {
  int nf = atomic_load(&n_faults);
  for (int k = 0; k < nf; k++) {
    fault *f = &F[k];
    if (f->target >= 0 && R[ri].target != f->target) continue;
    int64_t ok = atomic_load(&f->first_ok_ms[ri]);
    if (!f->end_ms || !ok || sent_ms <= ok) return 1;
  }
  return 0;
}

/* ------------------------------------------------------------- checks */

static int is_hex64(const char *s) {
  if (!s || strlen(s) != 64) return 0;
  for (; *s; s++)
    if (!strchr("0123456789abcdef", *s)) return 0;
  return 1;
}

static int action_index(const char *a) {
  if (!a || a[0] != 'a' || a[1] < '0' || a[1] >= '0' + ACTIONS || a[2])
    return -1;
  return a[1] - '0';
}

/* Classifies an answer that is not the expected success to the client's
 * last request: a documented error ("err") only within a fault's window,
 * anything else is WRONG. */
static void classify_error(const client *c, int tg, const char *op, int rc,
                           const util_http_resp *r) {
  char name[128];
  const char *code = rc == UTIL_HTTP_OK ? util_http_err_code(r) : NULL;
  int ok = 0;
  if (rc != UTIL_HTTP_OK) ok = rc != UTIL_HTTP_GARBLED;
  if (rc == UTIL_HTTP_OK && r->status == 503 && code) {
    if (!strcmp(code, "timeout")) ok = 1;
    if ((!strcmp(code, "queue_full") || !strcmp(code, "store_unavailable") ||
         !strcmp(code, "shutting_down")) &&
        r->retry_after >= 0)
      ok = 1;
  }
  if (rc == UTIL_HTTP_OK && r->status == 429 && r->retry_after >= 0) ok = 1;
  int outside = ok && !in_fault_window(c->last_ri, c->last_sent_ms);
  char what[64];
  if (rc != UTIL_HTTP_OK)
    snprintf(what, sizeof what, "%s", util_http_result_name(rc));
  else
    snprintf(what, sizeof what, "%d %s%s", r->status, code ? code : "-",
             (r->status == 503 || r->status == 429) && r->retry_after < 0 &&
                     !(code && !strcmp(code, "timeout"))
                 ? " (no Retry-After)"
                 : "");
  snprintf(name, sizeof name, "%s %s %s%s", ok && !outside ? "err" : "WRONG",
           op, what, outside ? " (outside any fault's window)" : "");
  tally(tg, name, rc == UTIL_HTTP_OK ? r->body : NULL);
  /* a client does as told: wait Retry-After (at most 2 s) before its next
   * request */
  if (rc == UTIL_HTTP_OK && r->retry_after >= 0)
    sleep_ms(1000 * (r->retry_after < 2 ? r->retry_after : 2));
}

static uint64_t rnd(client *c) {
  uint64_t x = c->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return c->rng = x;
}

static int pick_replica(client *c, int tg) {
  return TG[tg].rep[rnd(c) % (uint64_t)TG[tg].n_rep];
}

static int other_replica(client *c, int tg, int ri) {
  if (TG[tg].n_rep < 2) return ri;
  return rnd(c) % 2 ? ri
                    : (TG[tg].rep[0] == ri ? TG[tg].rep[1] : TG[tg].rep[0]);
}

static int call(client *c, int ri, const char *method, const char *path,
                const char *body, util_http_resp *r) {
  atomic_fetch_add(&n_requests, 1);
  c->last_ri = ri;
  c->last_sent_ms = util_now_ms();
  return util_http_call(&c->conn[ri], method, path, body, NULL,
                        O.client_timeout_ms, r);
}

/* A decision answer: event_id, an action among the candidates, propensity
 * in (0, 1], a ranking of k distinct candidates led by the action, and the
 * agent's state key. Returns the action's index, or -1. */
static int check_decision(const util_http_resp *r, int tg, const char **ev) {
  json_t *j = r->json;
  *ev = json_string_value(json_object_get(j, "event_id"));
  const char *act = json_string_value(json_object_get(j, "action"));
  double p = json_number_value(json_object_get(j, "propensity"));
  json_t *rank = json_object_get(j, "ranking");
  const char *sk = json_string_value(json_object_get(j, "state_key"));
  int ai = action_index(act);
  if (!*ev || !**ev || ai < 0 || !(p > 0 && p <= 1) ||
      json_array_size(rank) != 2 || !is_hex64(sk) || strcmp(sk, TG[tg].sk))
    return -1;
  const char *r0 =
      json_string_value(json_object_get(json_array_get(rank, 0), "action"));
  const char *r1 =
      json_string_value(json_object_get(json_array_get(rank, 1), "action"));
  if (!r0 || !r1 || strcmp(r0, act) || action_index(r1) < 0 || !strcmp(r0, r1))
    return -1;
  return ai;
}

/* A reward answer for a first send. */
static int check_reward_answer(const util_http_resp *r, const char *id,
                               int32_t micro, int first, const char **why) {
  json_t *j = r->json;
  const char *rid = json_string_value(json_object_get(j, "reward_id"));
  json_t *v = json_object_get(j, "reward"), *ap = json_object_get(j, "applied");
  *why = "malformed";
  if (!rid || strcmp(rid, id) || !json_is_number(v)) return 0;
  if (llround(json_number_value(v) * 1e6) != micro) {
    *why = "wrong reward value";
    return 0;
  }
  if (r->status == 202 && !O.canary) {
    *why = "202 without pending and awaiting_decision";
    return json_is_true(json_object_get(j, "pending")) &&
           json_is_true(json_object_get(j, "awaiting_decision"));
  }
  if (O.canary) {
    *why = "202 without pending:true";
    return r->status != 202 || json_is_true(json_object_get(j, "pending"));
  }
  if (!json_is_boolean(ap)) return 0;
  if (first && !json_is_true(ap)) {
    *why = "applied:false on the first send of a reward id";
    return 0;
  }
  return 1;
}

/* 200: committed; 202: queued (async canary) or, in sync mode, a reward
 * for a decision not visible yet, stored durably and joined when the
 * decision arrives ("awaiting_decision": true). */
static int acked_status(int status) {
  return status == 200 || status == 202;
}

/* Sends one reward and records it. ev: event_id or NULL (direct). */
static void send_reward(client *c, int tg, int ri, int user, int action,
                        const char *ev, int decided_ri, int decided_gen) {
  int32_t micro = (int32_t)(rnd(c) % 1001) * 1000;
  lrec *l = ledger_add(c, 'r', tg, user, action, micro, ev);
  char id[64], body[512], path[128];
  rec_id(l, id, sizeof id);
  if (ev)
    snprintf(body, sizeof body,
             "{\"reward_id\":\"%s\",\"event_id\":\"%s\",\"reward\":%.3f}", id,
             ev, micro / 1e6);
  else
    snprintf(body, sizeof body,
             "{\"reward_id\":\"%s\",\"user_id\":\"u%d\",\"action\":\"a%d\","
             "\"reward\":%.3f}",
             id, user, action, micro / 1e6);
  snprintf(path, sizeof path, "/v1/agents/soak/rewards");
  util_http_resp r;
  int64_t sent = util_now_ms();
  int rc = call(c, ri, "POST", path, body, &r);
  const char *op = ev ? "reward(event)" : "reward(direct)";
  if (rc == UTIL_HTTP_OK && acked_status(r.status)) {
    const char *why;
    if (check_reward_answer(&r, id, micro, 1, &why)) {
      l->status = L_ACKED;
      tally(tg, ev ? "ok reward(event)" : "ok reward(direct)", NULL);
      note_write_ok(ri, sent);
    } else {
      char name[96];
      snprintf(name, sizeof name, "WRONG %s 200: %s", op, why);
      tally(tg, name, r.body);
      l->status = L_UNKNOWN; /* resolved at the end */
    }
  } else if (rc == UTIL_HTTP_OK && r.status == 404 && ev &&
             (atomic_load(&R[decided_ri].generation) != decided_gen)) {
    /* the decision was answered by a replica SIGKILLed since */
    tally(tg, "err reward(event) 404 after the deciding replica was killed",
          r.body);
    l->status = L_FAILED;
  } else if (rc == UTIL_HTTP_OK && r.status >= 400 && r.status < 500 &&
             r.status != 429 && r.status != 408) {
    char name[96];
    snprintf(name, sizeof name, "WRONG %s %d %s%s", op, r.status,
             util_http_err_code(&r) ? util_http_err_code(&r) : "-",
             ev && ri != decided_ri ? " (decided on the other replica)"
             : ev                   ? " (decided on the same replica)"
                                    : "");
    tally(tg, name, r.body);
    l->status = L_FAILED;
  } else {
    classify_error(c, tg, op, rc, &r);
    l->status = L_UNKNOWN;
  }
  util_http_resp_free(&r);
}

/* Same decision? (a retried or repeated decide with the client's event_id
 * must return the stored one: action, propensity and ranking) */
static int same_decision(const util_http_resp *a, const util_http_resp *b) {
  json_t *x = a->json, *y = b->json;
  const char *xa = json_string_value(json_object_get(x, "action"));
  const char *ya = json_string_value(json_object_get(y, "action"));
  json_t *xr = json_object_get(x, "ranking"),
         *yr = json_object_get(y, "ranking");
  if (!xa || !ya || strcmp(xa, ya) ||
      json_number_value(json_object_get(x, "propensity")) !=
          json_number_value(json_object_get(y, "propensity")) ||
      json_array_size(xr) != json_array_size(yr))
    return 0;
  for (size_t i = 0; i < json_array_size(xr); i++) {
    const char *p =
        json_string_value(json_object_get(json_array_get(xr, i), "action"));
    const char *q =
        json_string_value(json_object_get(json_array_get(yr, i), "action"));
    if (!p || !q || strcmp(p, q)) return 0;
  }
  return 1;
}

/* A decision, then a reward for it (through either replica). Half the
 * decisions carry the client's own event_id; those are retried (same id)
 * when no answer came, as a client would, and one in ten is sent a second
 * time after its answer, which must then be the same decision. The reward
 * credits the action the client got (and would have shown): should a
 * retry have drawn another action than the stored decision, the posterior
 * check sees the wrong credit. */
static void op_decide_reward(client *c, int tg) {
  int ri = pick_replica(c, tg), user = (int)(rnd(c) % USERS);
  int own_id = rnd(c) % 2;
  char body[320], evid[64] = "";
  if (own_id)
    snprintf(evid, sizeof evid, "d%s-t%d-%d", O.canary ? "c" : "", c->id,
             c->dseq++);
  snprintf(body, sizeof body,
           "{\"user_id\":\"u%d\",\"candidates\":[\"a0\",\"a1\",\"a2\","
           "\"a3\"],\"k\":2%s%s%s}",
           user, own_id ? ",\"event_id\":\"" : "", evid, own_id ? "\"" : "");
  int gen = atomic_load(&R[ri].generation);
  util_http_resp r;
  int rc = 0;
  for (int attempt = 0; attempt < (own_id ? 4 : 1); attempt++) {
    if (attempt) {
      sleep_ms(300);
      util_http_resp_free(&r);
      gen = atomic_load(&R[ri].generation);
    }
    rc = call(c, ri, "POST", "/v1/agents/soak/decide", body, &r);
    if (rc == UTIL_HTTP_OK && r.status == 200) break;
    classify_error(c, tg, "decide", rc, &r);
    if (rc == UTIL_HTTP_OK && r.status != 503 && r.status != 429) break;
  }
  if (rc != UTIL_HTTP_OK || r.status != 200) {
    util_http_resp_free(&r);
    return;
  }
  const char *ev;
  int ai = check_decision(&r, tg, &ev);
  if (ai < 0 || (own_id && strcmp(ev, evid))) {
    tally(tg, "WRONG decide 200: malformed or wrong decision", r.body);
    util_http_resp_free(&r);
    return;
  }
  tally(tg, "ok decide", NULL);
  if (own_id && rnd(c) % 10 == 0) {
    util_http_resp r2;
    int rc2 = call(c, ri, "POST", "/v1/agents/soak/decide", body, &r2);
    if (rc2 == UTIL_HTTP_OK && r2.status == 200) {
      if (same_decision(&r, &r2)) {
        tally(tg, "ok decide repeated (same event_id): same decision", NULL);
      } else {
        /* The client would show this one while the store keeps the first:
         * no reward is sent for it, so that the posterior checks stay
         * about the write path (the wrong answer is counted here). */
        tally(tg, "WRONG decide repeated (same event_id): another decision",
              r2.body);
        util_http_resp_free(&r2);
        util_http_resp_free(&r);
        return;
      }
    } else {
      classify_error(c, tg, "decide", rc2, &r2);
    }
    util_http_resp_free(&r2);
  }
  char evb[160];
  snprintf(evb, sizeof evb, "%s", ev);
  util_http_resp_free(&r);
  send_reward(c, tg, other_replica(c, tg, ri), user, ai, evb, ri, gen);
}

static void op_episodes(client *c, int tg) {
  int ri = pick_replica(c, tg);
  char body[1024], ids[2][64];
  int user = (int)(rnd(c) % USERS);
  size_t at = c->n; /* ledger_add may move the records: kept by index */
  int act[2];
  for (int k = 0; k < 2; k++) {
    act[k] = (int)(rnd(c) % ACTIONS);
    rec_id(ledger_add(c, 'e', tg, user, act[k], 0, NULL), ids[k],
           sizeof ids[k]);
  }
  double e[4];
  for (int k = 0; k < 4; k++)
    e[k] = (double)(rnd(c) % 1000) / 1000.0 + 0.001;
  snprintf(body, sizeof body,
           "{\"episodes\":[{\"episode_id\":\"%s\",\"user_id\":\"u%d\","
           "\"action\":\"a%d\",\"reward\":0.5,\"embedding\":[%.3f,%.3f,%.3f,"
           "%.3f]},{\"episode_id\":\"%s\",\"user_id\":\"u%d\",\"action\":"
           "\"a%d\",\"reward\":1,\"embedding\":[%.3f,%.3f,%.3f,%.3f]}]}",
           ids[0], user, act[0], e[0], e[1], e[2], e[3], ids[1], user, act[1],
           e[3], e[2], e[1], e[0]);
  util_http_resp r;
  int64_t sent = util_now_ms();
  int rc = call(c, ri, "POST", "/v1/agents/soak/episodes", body, &r);
  int st = L_UNKNOWN;
  if (rc == UTIL_HTTP_OK && acked_status(r.status)) {
    json_t *ins = json_object_get(r.json, "inserted");
    if (O.canary || (json_is_integer(ins) && json_integer_value(ins) == 2)) {
      tally(tg, "ok episodes", NULL);
      atomic_fetch_add(&R[ri].episodes, 2);
      st = L_ACKED;
      note_write_ok(ri, sent);
    } else {
      tally(tg, "WRONG episodes 200: inserted != 2", r.body);
    }
  } else if (rc == UTIL_HTTP_OK && r.status >= 400 && r.status < 500 &&
             r.status != 429 && r.status != 408) {
    char name[96];
    snprintf(name, sizeof name, "WRONG episodes %d %s", r.status,
             util_http_err_code(&r) ? util_http_err_code(&r) : "-");
    tally(tg, name, r.body);
    st = L_FAILED;
  } else {
    classify_error(c, tg, "episodes", rc, &r);
  }
  c->recs[at].status = c->recs[at + 1].status = (uint8_t)st;
  util_http_resp_free(&r);
}

static void op_policy(client *c, int tg) {
  int ri = pick_replica(c, tg), user = (int)(rnd(c) % USERS);
  char path[128];
  snprintf(path, sizeof path, "/v1/agents/soak/policies/u%d", user);
  util_http_resp r;
  int rc = call(c, ri, "GET", path, NULL, &r);
  if (rc == UTIL_HTTP_OK && r.status == 200) {
    json_t *arms = json_object_get(r.json, "arms"), *a;
    size_t i;
    int ok = json_is_array(arms);
    json_array_foreach(arms, i, a) {
      double n = json_number_value(json_object_get(a, "n"));
      double s = json_number_value(json_object_get(a, "sum"));
      if (action_index(json_string_value(json_object_get(a, "action"))) < 0 ||
          n < 0 || s < -1e-9 || s > n + 1e-9)
        ok = 0;
    }
    tally(tg, ok ? "ok policy" : "WRONG policy 200: malformed",
          ok ? NULL : r.body);
  } else {
    classify_error(c, tg, "policy", rc, &r);
  }
  util_http_resp_free(&r);
}

static void *client_loop(void *p) {
  client *c = p;
  while (!atomic_load(&stop_load)) {
    /* four in five operations on the PostgreSQL pair */
    int tg = n_targets > 1 && rnd(c) % 5 == 0 ? 1 : 0;
    /* the canary: direct rewards only, acknowledged at enqueue, so that a
     * SIGKILL finds up to a flush interval of them queued */
    int op = O.canary ? 50 : (int)(rnd(c) % 100);
    if (O.canary) sleep_ms(2); /* about 3,000 a second: the queue never fills */
    if (op < 40)
      op_decide_reward(c, tg);
    else if (op < 75)
      send_reward(c, tg, pick_replica(c, tg), (int)(rnd(c) % USERS),
                  (int)(rnd(c) % ACTIONS), NULL, 0, 0);
    else if (op < 87)
      op_episodes(c, tg);
    else
      op_policy(c, tg);
  }
  return NULL;
}

/* ------------------------------------------------------------ sampler */

static void *sampler_loop(void *p) {
  (void)p;
  while (!atomic_load(&stop_load)) {
    for (int i = 0; i < n_replicas; i++) {
      replica *r = &R[i];
      pid_t pid = atomic_load(&r->pid);
      long v = pid > 0 ? rss_kib(pid) : -1;
      if (v > 0 && r->n_samples < MAX_SAMPLES) {
        r->sample_ms[r->n_samples] = util_now_ms();
        r->episodes_at[r->n_samples] = atomic_load(&r->episodes);
        r->rss_kib[r->n_samples++] = v;
      }
    }
    sleep_ms(250);
  }
  return NULL;
}

/* ------------------------------------------------------------- faults */

static char tmpfs_dir[300];
static int have_tmpfs;

static int pg_ctl(const char *cmd) {
  char line[1024];
  snprintf(line, sizeof line, "'%s/scripts/pg-test.sh' %s '%s' >/dev/null",
           O.src, cmd, O.pg_dir);
  return system(line);
}

/* Fills the tmpfs until ENOSPC; returns the filler's path length (0 when
 * the filesystem could not be filled). */
static int fill_disk(char *filler, size_t cap) {
  snprintf(filler, cap, "%s/filler", tmpfs_dir);
  int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return 0;
  static char chunk[1 << 20];
  memset(chunk, 'x', sizeof chunk);
  size_t sz = sizeof chunk;
  while (sz >= 512) {
    ssize_t k = write(fd, chunk, sz);
    if (k < 0 && errno == ENOSPC)
      sz /= 2;
    else if (k <= 0)
      break;
  }
  close(fd);
  struct statvfs sv;
  if (statvfs(tmpfs_dir, &sv) == 0)
    printf("#            the disk is full: %llu KiB free\n",
           (unsigned long long)sv.f_bavail * sv.f_frsize / 1024);
  return 1;
}

static fault *fault_begin(const char *what, int tg) {
  int k = atomic_load(&n_faults);
  if (k >= MAX_FAULTS) die("too many faults");
  fault *f = &F[k];
  snprintf(f->what, sizeof f->what, "%s", what);
  f->target = tg;
  atomic_store(&fault_on, 1);
  f->start_ms = util_now_ms();
  if (k > 0) F[k - 1].next_ms = f->start_ms;
  atomic_store(&n_faults, k + 1);
  printf("# %7.1f s  fault %d: %s\n", secs(f->start_ms), k + 1, what);
  fflush(stdout);
  return f;
}

static void fault_end(fault *f) {
  f->end_ms = util_now_ms();
  atomic_store(&fault_on, 0);
}

static void inject(int kind, int cycle) {
  fault *f;
  switch (kind) {
  case 0: { /* SIGKILL a replica of the PostgreSQL pair, start it again */
    int ri = TG[0].rep[1]; /* replica 0 lives through the whole run */
    (void)cycle;
    char what[64];
    snprintf(what, sizeof what, "SIGKILL replica %d, restart", ri);
    f = fault_begin(what, 0);
    replica_kill(&R[ri]);
    sleep_ms(500);
    replica_start(&R[ri]);
    fault_end(f);
    break;
  }
  case 1: /* restart Redis */
    f = fault_begin("restart Redis", -1);
    util_redis_kill(&redis);
    sleep_ms(500);
    if (util_redis_start(&redis)) die("Redis did not come back");
    fault_end(f);
    break;
  case 2: /* freeze Redis for 5 s */
    f = fault_begin("SIGSTOP Redis 5 s", -1);
    kill(redis.pid, SIGSTOP);
    sleep_ms(5000);
    kill(redis.pid, SIGCONT);
    fault_end(f);
    break;
  case 3: /* stop PostgreSQL for 10 s */
    f = fault_begin("stop PostgreSQL 10 s", 0);
    if (pg_ctl("stop")) fprintf(stderr, "soak: pg-test.sh stop failed\n");
    sleep_ms(10000);
    if (pg_ctl("start")) die("PostgreSQL did not start again");
    fault_end(f);
    break;
  case 4: { /* fill the SQLite disk for 8 s (longer than a write's timeout) */
    char filler[400];
    f = fault_begin("fill the SQLite disk 8 s", 1);
    if (!fill_disk(filler, sizeof filler))
      fprintf(stderr, "soak: could not fill %s\n", tmpfs_dir);
    sleep_ms(8000);
    unlink(filler);
    fault_end(f);
    break;
  }
  }
}

/* The schedule: a warm-up, then cycles of the faults, each followed by a
 * recovery gap of at least 10 s (a bound on recovering by itself, not a
 * performance target: PostgreSQL reconnects and Redis retries are well
 * under a second when things work). */
static void run_schedule(int64_t end_ms, int warm_ms) {
  int kinds_n = O.canary ? 1 : have_tmpfs ? 5 : 4;
  /* the faults' own durations, roughly (restart 1 s, Redis 1 s, ...) */
  static const int dur[] = {1500, 1000, 5000, 10500, 8000};
  int cycle_dur = 0;
  for (int k = 0; k < kinds_n; k++)
    cycle_dur += dur[k];
  int64_t t = util_now_ms() + warm_ms;
  int avail = (int)(end_ms - t);
  int cycles = avail / (cycle_dur + kinds_n * 10000);
  if (cycles < 1) cycles = 1;
  if (O.canary) cycles = cycles < 3 ? cycles : 3;
  int gap = (avail / cycles - cycle_dur) / kinds_n;
  if (gap < 10000) gap = 10000;
  printf("# schedule: %d s warm-up, %d cycle(s) of %d fault(s), %.1f s "
         "recovery gap after each\n",
         warm_ms / 1000, cycles, kinds_n, gap / 1000.0);
  /* faults take longer than dur[] on a loaded machine: none is begun that
   * would not end, recovery gap included, before end_ms (the first cycle is
   * always run whole) */
  for (int cy = 0; cy < cycles; cy++)
    for (int k = 0; k < kinds_n; k++) {
      while (util_now_ms() < t)
        sleep_ms(50);
      if (cy > 0 && util_now_ms() + dur[k] + gap > end_ms) goto done;
      inject(k, cy);
      t = util_now_ms() + gap;
    }
done:
  while (util_now_ms() < t || util_now_ms() < end_ms)
    sleep_ms(50);
  int k = atomic_load(&n_faults);
  if (k > 0) F[k - 1].next_ms = util_now_ms();
}

/* ------------------------------------------------------------ checking */

static int failures;

static void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "  ok  " : "  FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (!ok) failures++;
}

static int64_t q_int(const char *url, const char *fmt, ...) {
  char sql[65536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  return util_store_query_int(url, sql);
}

/* Resends an unknown reward until a definite answer (bounded). */
static void resolve(client *c, lrec *l) {
  char id[64], body[512];
  rec_id(l, id, sizeof id);
  if (l->event)
    snprintf(body, sizeof body,
             "{\"reward_id\":\"%s\",\"event_id\":\"%s\",\"reward\":%.3f}", id,
             l->event, l->micro / 1e6);
  else
    snprintf(body, sizeof body,
             "{\"reward_id\":\"%s\",\"user_id\":\"u%d\",\"action\":\"a%d\","
             "\"reward\":%.3f}",
             id, l->user, l->action, l->micro / 1e6);
  for (int attempt = 0; attempt < 60; attempt++) {
    int ri = TG[l->target].rep[attempt % TG[l->target].n_rep];
    util_http_resp r;
    int rc = util_http_call(&c->conn[ri], "POST", "/v1/agents/soak/rewards",
                            body, NULL, O.client_timeout_ms, &r);
    int st = rc == UTIL_HTTP_OK ? r.status : 0;
    const char *why;
    if (acked_status(st) && !check_reward_answer(&r, id, l->micro, 0, &why))
      tally(l->target, "WRONG resend 200: malformed", r.body);
    util_http_resp_free(&r);
    if (acked_status(st)) {
      l->status = L_LATE;
      return;
    }
    if (st == 404 && l->event) {
      l->status = L_NEVER;
      return;
    }
    sleep_ms(500);
  }
  tally(l->target, "WRONG resend: no definite answer after 60 tries", id);
}

typedef struct expect {
  int64_t n[USERS + 1][ACTIONS], micro[USERS + 1][ACTIONS];
} expect;

/* Ids of records of a kind and statuses, as SQL IN lists of at most 400;
 * each list is checked with one query. */
static void check_ids(int tg, char kind, uint8_t s1, uint8_t s2, int want_each,
                      const char *what, long *bad_out, long *total_out) {
  const char *table = kind == 'r' ? "reward_signals" : "agent_episodes";
  const char *col = kind == 'r' ? "reward_id" : "episode_id";
  char *sql = malloc(400 * 80 + 512);
  long bad = 0, total = 0;
  size_t len = 0;
  int in_list = 0;
  for (int t = 0; t <= CLIENTS; t++) {
    for (size_t i = 0; t < CLIENTS && i < C[t].n; i++) {
      lrec *l = &C[t].recs[i];
      if (l->kind != kind || l->target != tg ||
          (l->status != s1 && l->status != s2))
        continue;
      char id[64];
      rec_id(l, id, sizeof id);
      len += (size_t)sprintf(sql + len, "%s'%s'", in_list ? "," : "", id);
      in_list++;
      total++;
      if (in_list < 400) continue;
      int64_t got = q_int(TG[tg].store,
                          "SELECT count(*) FROM %s WHERE agent_id = 'soak' "
                          "AND %s IN (%s)",
                          table, col, sql);
      bad += llabs(got - (int64_t)in_list * want_each);
      len = 0;
      in_list = 0;
    }
    if (t == CLIENTS && in_list) {
      int64_t got = q_int(TG[tg].store,
                          "SELECT count(*) FROM %s WHERE agent_id = 'soak' "
                          "AND %s IN (%s)",
                          table, col, sql);
      bad += llabs(got - (int64_t)in_list * want_each);
    }
  }
  free(sql);
  *bad_out = bad;
  *total_out = total;
  (void)what;
}

/* Posterior rows in the store and as served through each replica. */
static long check_posteriors(int tg, const expect *e) {
  long bad = 0;
  for (int u = 0; u <= USERS; u++) {
    char user[8];
    snprintf(user, sizeof user, u == USERS ? "*" : "u%d", u);
    for (int a = 0; a < ACTIONS; a++) {
      int64_t n = q_int(TG[tg].store,
                        "SELECT COALESCE(sum(n),0) FROM rl_policies WHERE "
                        "agent_id='soak' AND user_id='%s' AND state_key='%s' "
                        "AND action_id='a%d'",
                        user, TG[tg].sk, a);
      int64_t m =
          q_int(TG[tg].store,
                "SELECT COALESCE(sum(sum_hi * 4294967296 + sum_micro),0) "
                "FROM rl_policies "
                "WHERE agent_id='soak' AND user_id='%s' AND "
                "state_key='%s' AND action_id='a%d'",
                user, TG[tg].sk, a);
      if (n != e->n[u][a] || m != e->micro[u][a]) {
        if (bad < 5)
          printf("#   store %s/%s a%d: n=%lld sum_micro=%lld, expected "
                 "%lld, %lld\n",
                 TG[tg].name, user, a, (long long)n, (long long)m,
                 (long long)e->n[u][a], (long long)e->micro[u][a]);
        bad++;
      }
    }
  }
  return bad;
}

static long check_served(int tg, const expect *e) {
  long bad = 0;
  for (int k = 0; k < TG[tg].n_rep; k++) {
    int ri = TG[tg].rep[k];
    util_http_conn c;
    util_http_init(&c, R[ri].port);
    for (int u = 0; u <= USERS; u++) {
      char path[160];
      if (u == USERS)
        snprintf(path, sizeof path, "/v1/agents/soak/policies/*");
      else
        snprintf(path, sizeof path, "/v1/agents/soak/policies/u%d", u);
      util_http_resp r;
      int rc = util_http_call(&c, "GET", path, NULL, NULL, 10000, &r);
      int64_t got_n[ACTIONS] = {0}, got_m[ACTIONS] = {0};
      if (rc == UTIL_HTTP_OK && r.status == 200) {
        json_t *arms = json_object_get(r.json, "arms"), *a;
        size_t i;
        json_array_foreach(arms, i, a) {
          int ai =
              action_index(json_string_value(json_object_get(a, "action")));
          if (ai < 0) continue;
          got_n[ai] = (int64_t)json_number_value(json_object_get(a, "n"));
          got_m[ai] =
              llround(json_number_value(json_object_get(a, "sum")) * 1e6);
        }
      } else {
        printf("#   replica %d %s: %d %s\n", ri, path, rc ? rc : r.status,
               r.body ? r.body : "");
        bad++;
      }
      for (int a = 0; a < ACTIONS; a++)
        if (got_n[a] != e->n[u][a] || got_m[a] != e->micro[u][a]) {
          if (bad < 5)
            printf("#   replica %d serves %s a%d: n=%lld sum_micro=%lld, "
                   "expected %lld, %lld\n",
                   ri, path, a, (long long)got_n[a], (long long)got_m[a],
                   (long long)e->n[u][a], (long long)e->micro[u][a]);
          bad++;
        }
      util_http_resp_free(&r);
    }
    util_http_close(&c);
  }
  return bad;
}

typedef struct resolver {
  int tg;
  _Atomic size_t next;
} resolver;

typedef struct resolver_arg {
  resolver *rv;
  client c;
} resolver_arg;

static void *resolve_loop(void *p) {
  resolver_arg *ra = p;
  resolver *rv = ra->rv;
  for (;;) {
    size_t k = atomic_fetch_add(&rv->next, 1);
    size_t t = 0;
    while (t < CLIENTS && k >= C[t].n) {
      k -= C[t].n;
      t++;
    }
    if (t == CLIENTS) return NULL;
    lrec *l = &C[t].recs[k];
    if (l->kind == 'r' && l->target == rv->tg && l->status == L_UNKNOWN)
      resolve(&ra->c, l);
  }
}

/* Marks L_NEVER the acknowledged rewards with an event that still wait in
 * pending_rewards (their decision was never stored) and returns how many.
 * One query per 400 ids, and per id only inside a batch that has one: a
 * connection per query makes one query per reward take many minutes. */
static int is_pending(int tg, const char *ids) {
  return q_int(TG[tg].store,
               "SELECT count(*) FROM pending_rewards WHERE agent_id='soak' "
               "AND reward_id IN (%s)",
               ids) > 0;
}

typedef struct orphan_batch {
  lrec *l[400];
  int n;
  size_t len;
  char sql[400 * 80 + 512];
} orphan_batch;

/* Checks a batch: one query for all, then one per id if any is pending. */
static long orphan_flush(int tg, orphan_batch *b) {
  long orphans = 0;
  if (b->n && is_pending(tg, b->sql))
    for (int k = 0; k < b->n; k++) {
      char id[64], one[80];
      rec_id(b->l[k], id, sizeof id);
      snprintf(one, sizeof one, "'%s'", id);
      if (is_pending(tg, one)) {
        b->l[k]->status = L_NEVER;
        orphans++;
      }
    }
  b->n = 0;
  b->len = 0;
  return orphans;
}

static long mark_orphans(int tg) {
  static orphan_batch b;
  long orphans = 0;
  b.n = 0;
  b.len = 0;
  for (int t = 0; t < CLIENTS; t++)
    for (size_t i = 0; i < C[t].n; i++) {
      lrec *l = &C[t].recs[i];
      if (l->kind != 'r' || l->target != tg || !l->event ||
          (l->status != L_ACKED && l->status != L_LATE))
        continue;
      char id[64];
      rec_id(l, id, sizeof id);
      b.len += (size_t)sprintf(b.sql + b.len, "%s'%s'", b.n ? "," : "", id);
      b.l[b.n++] = l;
      if (b.n == 400) orphans += orphan_flush(tg, &b);
    }
  return orphans + orphan_flush(tg, &b);
}

/* Returns the number of acknowledged rewards missing or doubled. */
static long check_target(int tg) {
  target *T = &TG[tg];
  printf("# checking %s\n", T->name);
  long bad, total, lost;
  /* unknown: send again with the same id until a definite answer */
  static resolver rv;
  static resolver_arg ra[4];
  rv.tg = tg;
  atomic_store(&rv.next, 0);
  pthread_t th[4];
  for (int k = 0; k < 4; k++) {
    ra[k].rv = &rv;
    for (int i = 0; i < n_replicas; i++)
      util_http_init(&ra[k].c.conn[i], R[i].port);
    pthread_create(&th[k], NULL, resolve_loop, &ra[k]);
  }
  for (int k = 0; k < 4; k++) {
    pthread_join(th[k], NULL);
    for (int i = 0; i < n_replicas; i++)
      util_http_close(&ra[k].c.conn[i]);
  }
  /* after the resends: a reward acknowledged with 202 awaiting_decision
   * is joined when its decision commits, which may be after the load:
   * wait (30 s at most) until none is pending (no such table before the
   * fix for defect 4: nothing to wait for) */
  for (int k = 0; k < 300; k++) {
    int64_t p = q_int(T->store, "SELECT count(*) FROM pending_rewards p "
                                "WHERE agent_id='soak' AND EXISTS (SELECT 1 "
                                "FROM decisions d WHERE d.agent_id = "
                                "p.agent_id AND d.event_id = p.event_id)");
    if (p <= 0) break;
    sleep_ms(100);
  }
  /* A reward accepted 202 awaiting_decision (first send or resend) whose
   * decision was never stored (its replica was SIGKILLed after answering
   * the decide, before the decision log committed) waits until its window
   * ends and then expires, as documented: it is not expected in the store. */
  if (q_int(T->store, "SELECT count(*) FROM pending_rewards p WHERE "
                      "agent_id='soak' AND NOT EXISTS (SELECT 1 FROM "
                      "decisions d WHERE d.agent_id = p.agent_id AND "
                      "d.event_id = p.event_id)") > 0) {
    long orphans = mark_orphans(tg);
    printf("# %s: %ld rewards await a decision that was never stored (they "
           "expire at the end of their window)\n",
           T->name, orphans);
  }
  check_ids(tg, 'r', L_ACKED, L_ACKED, 1, "acked", &bad, &total);
  lost = bad;
  check(bad == 0,
        "%s: each of %ld acknowledged rewards stored exactly once "
        "(%ld missing or doubled)",
        T->name, total, bad);
  check_ids(tg, 'r', L_FAILED, L_FAILED, 0, "failed", &bad, &total);
  check(bad == 0, "%s: none of %ld refused rewards stored (%ld stored)",
        T->name, total, bad);
  long late = 0, never = 0, committed = 0;
  int64_t sum = 0;
  static expect e;
  memset(&e, 0, sizeof e);
  for (int t = 0; t < CLIENTS; t++)
    for (size_t i = 0; i < C[t].n; i++) {
      lrec *l = &C[t].recs[i];
      if (l->kind != 'r' || l->target != tg) continue;
      late += l->status == L_LATE;
      never += l->status == L_NEVER;
      if (l->status != L_ACKED && l->status != L_LATE) continue;
      committed++;
      sum += l->micro;
      e.n[l->user][l->action]++;
      e.micro[l->user][l->action] += l->micro;
      e.n[USERS][l->action]++;
      e.micro[USERS][l->action] += l->micro;
    }
  printf("# %s: unknown rewards resolved by resending: %ld committed then, "
         "%ld never (their decision was not stored)\n",
         T->name, late, never);
  check_ids(tg, 'r', L_ACKED, L_LATE, 1, "committed", &bad, &total);
  check(bad == 0, "%s: each of %ld committed rewards stored exactly once",
        T->name, total);
  int64_t rows = q_int(T->store, "SELECT count(*) FROM reward_signals WHERE "
                                 "agent_id='soak'");
  int64_t micro = q_int(T->store, "SELECT COALESCE(sum(reward_micro),0) FROM "
                                  "reward_signals WHERE agent_id='soak'");
  check(rows == committed && micro == sum,
        "%s: reward rows %lld (ledger %ld), sum %lld micro (ledger %lld)",
        T->name, (long long)rows, committed, (long long)micro, (long long)sum);
  long pb = check_posteriors(tg, &e);
  check(pb == 0,
        "%s: every stored posterior (16 users and '*', 4 actions) = prior + "
        "its distinct committed rewards, exactly (%ld rows off)",
        T->name, pb);
  long sb = check_served(tg, &e);
  check(sb == 0, "%s: every replica serves those posteriors (%ld off)", T->name,
        sb);
  check_ids(tg, 'e', L_ACKED, L_ACKED, 1, "episodes", &bad, &total);
  check(bad == 0,
        "%s: each of %ld acknowledged episodes stored exactly once (%ld off)",
        T->name, total, bad);
  int64_t dup =
      q_int(T->store, "SELECT count(*) - count(DISTINCT episode_id) FROM "
                      "agent_episodes WHERE agent_id='soak'");
  check(dup == 0, "%s: no episode stored twice (%lld doubled)", T->name,
        (long long)dup);
  return lost;
}

/* RSS: the baseline is the median of the samples in the last quarter of
 * the warm-up (the run's warm-up after the first start, 15 s after a
 * restart, when the replica only refills its caches); the end value is the
 * median of the last 8 samples under load. Tolerance, in KiB:
 *   4 x the peak-to-peak spread seen in the baseline window (what the
 *     allocator moves by under this very load),
 * + 1 per episode acknowledged through the replica after the baseline
 *     (its vector index keeps 4 floats, 3 short ids and at most 32 graph
 *     links of 4 bytes each),
 * + 2048: glibc keeps up to M_TRIM_THRESHOLD (128 KiB) free at the top of
 *     each of its up to 8 x cores arenas (16 here) before giving it back,
 * + for a SQLite replica, its page caches, which fill as the file grows:
 *     16 MiB for the writer (WRITER_CACHE_KIB) and SQLite's default 2 MiB
 *     for each of the 4 readers. */
static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

static long median(const long *v, int n) {
  long *t = malloc((size_t)n * sizeof *t);
  memcpy(t, v, (size_t)n * sizeof *t);
  qsort(t, (size_t)n, sizeof *t, cmp_long);
  long m = t[n / 2];
  free(t);
  return m;
}

static void rss_check(int warm_ms) {
  for (int i = 0; i < n_replicas; i++) {
    replica *r = &R[i];
    int w = atomic_load(&r->generation) ? 15000 : warm_ms;
    int64_t b0 = r->baseline_from_ms + w * 3 / 4, b1 = r->baseline_from_ms + w;
    int from = -1, to = -1;
    for (int k = 0; k < r->n_samples; k++) {
      if (r->sample_ms[k] >= b0 && from < 0) from = k;
      if (r->sample_ms[k] <= b1) to = k;
    }
    if (from < 0 || to - from < 2 || r->n_samples - to < 16) {
      printf("# replica %d: too few RSS samples after its last start to "
             "judge (restarted late)\n",
             i);
      continue;
    }
    long base = median(r->rss_kib + from, to - from + 1);
    long lo = r->rss_kib[from], hi = lo;
    for (int k = from; k <= to; k++) {
      if (r->rss_kib[k] < lo) lo = r->rss_kib[k];
      if (r->rss_kib[k] > hi) hi = r->rss_kib[k];
    }
    long end = median(r->rss_kib + r->n_samples - 8, 8);
    long sqlite = strncmp(r->store, "sqlite:", 7) ? 0 : 16384 + 4 * 2048;
    long eps = r->episodes_at[r->n_samples - 1] - r->episodes_at[to];
    long tol = 4 * (hi - lo) + eps + 2048 + sqlite;
    check(end - base <= tol,
          "replica %d RSS flat over its last %.0f s: %ld KiB after warm-up, "
          "%ld KiB at the end (%+ld KiB; tolerance %ld KiB: 4 x %ld noise + "
          "%ld episodes + 2048 + %ld page cache)",
          i, (r->sample_ms[r->n_samples - 1] - b1) / 1000.0, base, end,
          end - base, tol, hi - lo, eps, sqlite);
  }
}

/* -------------------------------------------------------------- setup */

static void setup_agent(target *T) {
  util_http_conn c;
  util_http_init(&c, R[T->rep[0]].port);
  util_http_resp r;
  const char *steps[][3] = {
      {"PUT", "/v1/agents/soak", "{\"embedding_dim\":4}"},
      {"POST", "/v1/agents/soak/actions",
       "{\"actions\":[{\"id\":\"a0\"},{\"id\":\"a1\"},{\"id\":\"a2\"},"
       "{\"id\":\"a3\"}]}"},
      {"POST", "/v1/agents/soak/decide",
       "{\"user_id\":\"setup\",\"candidates\":[\"a0\",\"a1\"]}"}};
  for (int k = 0; k < 3; k++) {
    int rc = util_http_call(&c, steps[k][0], steps[k][1], steps[k][2], NULL,
                            30000, &r);
    if (rc || r.status != 200)
      die("setup %s %s: %d %s", steps[k][0], steps[k][1], rc ? rc : r.status,
          r.body ? r.body : "");
    if (k == 2) {
      const char *sk = json_string_value(json_object_get(r.json, "state_key"));
      if (!is_hex64(sk)) die("setup decide: no state_key");
      snprintf(T->sk, sizeof T->sk, "%s", sk);
    }
    util_http_resp_free(&r);
  }
  util_http_close(&c);
}

static void add_replica(int tg, const char *store) {
  replica *r = &R[n_replicas];
  r->target = tg;
  r->port = util_free_port();
  r->durability = O.canary ? "async" : "sync";
  snprintf(r->store, sizeof r->store, "%s", store);
  snprintf(r->cache, sizeof r->cache,
           "redis://127.0.0.1:%d/0?connect_timeout_ms=200&timeout_ms=300"
           "&retry_ms=200",
           redis.port);
  snprintf(r->log, sizeof r->log, "%s/replica%d.log", O.work, n_replicas);
  TG[tg].rep[TG[tg].n_rep++] = n_replicas;
  n_replicas++;
  replica_start(r);
}

static void setup(void) {
  if (util_redis_start(&redis)) die("could not start Redis");
  setenv("AGENTDB_TEST_PG_URL", O.pg_url, 1);
  char *pg = util_store_fresh_url("postgresql");
  if (!pg) die("could not make a PostgreSQL database");
  TG[0].name = "postgresql";
  snprintf(TG[0].store, sizeof TG[0].store, "%s", pg);
  free(pg);
  n_targets = 1;
  add_replica(0, TG[0].store);
  add_replica(0, TG[0].store);
  setup_agent(&TG[0]);
  if (O.canary) return;
  snprintf(tmpfs_dir, sizeof tmpfs_dir, "%s/sqlite-disk", O.work);
  mkdir(tmpfs_dir, 0755);
  if (mount("tmpfs", tmpfs_dir, "tmpfs", 0, "size=256m,mode=0755") == 0) {
    have_tmpfs = 1;
  } else {
    printf("# SKIPPED fault 'fill the SQLite disk': cannot mount a tmpfs "
           "(%s; needs root / CAP_SYS_ADMIN); the SQLite replica runs on %s "
           "without it\n",
           strerror(errno), tmpfs_dir);
  }
  TG[1].name = "sqlite";
  snprintf(TG[1].store, sizeof TG[1].store, "sqlite://%s/soak.db", tmpfs_dir);
  n_targets = 2;
  add_replica(1, TG[1].store);
  setup_agent(&TG[1]);
}

static void teardown(void) {
  for (int i = 0; i < n_replicas; i++) {
    int st = replica_stop(&R[i]);
    check(st == 0, "replica %d stopped cleanly on SIGTERM: %s (log: %s)", i,
          st == 0    ? "exit 0"
          : st == -2 ? "it had died by itself"
          : st == -1 ? "it had to be killed"
                     : "non-zero exit (a LeakSanitizer report?)",
          R[i].log);
  }
  util_redis_cleanup(&redis);
  if (n_targets > 0) {
    char *pg = strdup(TG[0].store);
    util_store_drop(pg);
  }
  if (have_tmpfs) umount2(tmpfs_dir, MNT_DETACH);
}

/* --------------------------------------------------------------- main */

static void print_kinds(void) {
  printf("\n# answers by kind (ok = success, err = documented error during a "
         "fault, WRONG = never acceptable)\n");
  for (int i = 0; i < n_kinds; i++) {
    printf("  %8ld  %s\n", kinds[i].count, kinds[i].name);
    if (!strncmp(kinds[i].name, "WRONG", 5) && kinds[i].example[0])
      printf("            e.g. %.180s\n", kinds[i].example);
  }
}

static void report(int warm_ms) {
  printf("\n# recovery after each fault (first acknowledged write through "
         "each replica of the faulted system after the fault ended)\n");
  int nf = atomic_load(&n_faults);
  for (int k = 0; k < nf; k++) {
    fault *f = &F[k];
    char buf[256];
    size_t len = 0;
    int ok = 1;
    for (int ri = 0; ri < n_replicas; ri++) {
      if (f->target >= 0 && R[ri].target != f->target) continue;
      int64_t t = atomic_load(&f->first_ok_ms[ri]);
      if (!t || t > f->next_ms) {
        ok = 0;
        len += (size_t)snprintf(buf + len, sizeof buf - len,
                                " replica %d: none before the next fault;", ri);
      } else {
        len += (size_t)snprintf(buf + len, sizeof buf - len,
                                " replica %d: %.2f s;", ri,
                                (t - f->end_ms) / 1000.0);
      }
    }
    check(ok, "fault %d at %.1f s (%s, lasted %.1f s): recovered by itself:%s",
          k + 1, secs(f->start_ms), f->what, (f->end_ms - f->start_ms) / 1000.0,
          buf);
  }
  (void)warm_ms;
}

static void usage(void) {
  fprintf(stderr, "usage: soak_driver [--seconds N] [--canary]\n"
                  "env: ADB_BIN (agentdb binary), ADB_SOURCE_DIR (the repo), "
                  "AGENTDB_TEST_PG_URL and AGENTDB_TEST_PG_DIR (from "
                  "scripts/pg-test.sh), SOAK_SECONDS\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *s = getenv("SOAK_SECONDS");
  O.seconds = s ? atoi(s) : 90;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
      O.seconds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--canary"))
      O.canary = 1;
    else
      usage();
  }
  O.bin = getenv("ADB_BIN");
  O.src = getenv("ADB_SOURCE_DIR");
  O.pg_url = getenv("AGENTDB_TEST_PG_URL");
  O.pg_dir = getenv("AGENTDB_TEST_PG_DIR");
  if (!O.bin || !O.src || !O.pg_url || !O.pg_dir || O.seconds < 20) usage();
  O.write_timeout_ms = 5000;
  O.client_timeout_ms = O.write_timeout_ms + 5000;
  signal(SIGPIPE, SIG_IGN);
  const char *tmp = getenv("TMPDIR");
  snprintf(O.work, sizeof O.work, "%s/adb-soak-XXXXXX", tmp ? tmp : "/tmp");
  if (!mkdtemp(O.work)) die("mkdtemp: %s", strerror(errno));
  chmod(O.work, 0755);
  printf("# soak%s: %d s, %d client threads, logs in %s\n",
         O.canary ? " CANARY (durability=async)" : "", O.seconds, CLIENTS,
         O.work);
  T0 = util_now_ms();
  setup();
  int warm_ms = O.seconds * 1000 / 8;
  if (warm_ms < 8000) warm_ms = 8000;
  for (int i = 0; i < CLIENTS; i++) {
    C[i].id = i;
    C[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) ^ (uint64_t)T0;
    for (int k = 0; k < n_replicas; k++)
      util_http_init(&C[i].conn[k], R[k].port);
    pthread_create(&C[i].th, NULL, client_loop, &C[i]);
  }
  pthread_t sampler;
  pthread_create(&sampler, NULL, sampler_loop, NULL);
  for (int i = 0; i < n_replicas; i++)
    R[i].baseline_from_ms = util_now_ms();
  int64_t end = T0 + (int64_t)O.seconds * 1000;
  run_schedule(end, warm_ms);
  atomic_store(&stop_load, 1);
  for (int i = 0; i < CLIENTS; i++)
    pthread_join(C[i].th, NULL);
  pthread_join(sampler, NULL);
  int64_t load_end = util_now_ms();
  printf("# %7.1f s  load stopped\n", secs(load_end));
  for (int i = 0; i < CLIENTS; i++)
    for (int k = 0; k < n_replicas; k++)
      util_http_close(&C[i].conn[k]);

  long acked = 0, acked_ep = 0, failed = 0, unknown = 0;
  for (int t = 0; t < CLIENTS; t++)
    for (size_t i = 0; i < C[t].n; i++) {
      lrec *l = &C[t].recs[i];
      acked += l->kind == 'r' && l->status == L_ACKED;
      acked_ep += l->kind == 'e' && l->status == L_ACKED;
      failed += l->kind == 'r' && l->status == L_FAILED;
      unknown += l->kind == 'r' && l->status == L_UNKNOWN;
    }
  report(warm_ms);
  printf("\n# checks\n");
  long lost = 0;
  for (int tg = 0; tg < n_targets; tg++)
    lost += check_target(tg);
  check(atomic_load(&n_wrong) == 0, "no wrong answer (%ld)",
        atomic_load(&n_wrong));
  print_kinds();
#if defined(__SANITIZE_ADDRESS__)
  /* ASan's quarantine holds freed memory (256 MB by default): RSS says
   * nothing here; LeakSanitizer judges each replica at its clean stop. */
  printf("# RSS not judged under ASan; LeakSanitizer checks the replicas "
         "when they stop\n");
  (void)rss_check;
#else
  if (!O.canary) rss_check(warm_ms);
#endif
  printf("\n# figures: %.0f s of load, %ld requests, %ld rewards "
         "acknowledged (%ld refused, %ld unknown at the time), %ld episodes "
         "acknowledged, %d faults injected, %ld wrong answers, %ld "
         "acknowledged rewards lost or doubled\n",
         (load_end - T0) / 1000.0, atomic_load(&n_requests), acked, failed,
         unknown, acked_ep, atomic_load(&n_faults), atomic_load(&n_wrong),
         lost);
  teardown();
  for (int t = 0; t < CLIENTS; t++) {
    for (size_t i = 0; i < C[t].n; i++)
      free(C[t].recs[i].event);
    free(C[t].recs);
  }
  if (O.canary) {
    printf("# canary: the checker %s acknowledged (202) rewards lost with "
           "durability=async and replica SIGKILLs\n",
           lost > 0 ? "saw" : "did NOT see");
    return lost > 0 ? 0 : 1;
  }
  printf("# soak %s: %d check(s) failed\n", failures ? "FAILED" : "passed",
         failures);
  return failures ? 1 : 0;
}
