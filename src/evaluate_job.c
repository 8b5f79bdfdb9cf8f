/*
 * evaluate_job.c — evaluations in the background, for the HTTP API
 * (POST/GET/DELETE /v1/agents/{agent}/evaluations).
 *
 * Each evaluation runs on its own thread, at the lowest priority the
 * kernel has: SCHED_IDLE (Linux: the thread runs only on a CPU no other
 * runnable thread wants) with nice 19 as well, so a decision thread that
 * becomes runnable takes the CPU from it at once. It yields every
 * ADB_EVAL_YIELD_ROWS rows besides. What it still shares with decisions:
 * memory bandwidth, the store (the log scan is a read transaction on its
 * own connection) and the allocator; bench_http measures decide p50 with
 * and without an evaluation running. At most max_running evaluations run
 * at once (a start beyond is ADB_EFULL: the API's 429); the last
 * ADB_EVAL_KEEP finished ones are kept for GET, older ones forgotten.
 * Cancelling sets a flag the row callback checks: the scan stops at the
 * next row.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "evaluate.h"
#include "util.h"

#define ADB_EVAL_KEEP 64
#define ADB_EVAL_YIELD_ROWS 64

enum { J_RUNNING, J_DONE, J_FAILED, J_CANCELLED };
static const char *const state_names[] = {"running", "done", "failed",
                                          "cancelled"};

typedef struct job {
  char id[33], agent[ADB_ID_MAX + 1];
  adb__eval *ev;
  int64_t from_ms, to_ms, created_ms;
  _Atomic int64_t finished_ms, rows, first_ts, last_ts;
  _Atomic int state, cancel, exited;
  char error[256];
  char *result; /* JSON, once done */
  pthread_t th;
  struct job *next;
  struct adb__eval_jobs *owner;
} job;

struct adb__eval_jobs {
  pthread_mutex_t mu;
  job *head; /* newest first */
  int max_running;
  adb__eval_scan_fn scan;
  void *arg;
};

int adb__eval_jobs_new(int max_running, adb__eval_scan_fn scan, void *arg,
                       adb__eval_jobs **out) {
  adb__eval_jobs *j = calloc(1, sizeof *j);
  if (!j) return ADB_ENOMEM;
  pthread_mutex_init(&j->mu, NULL);
  j->max_running = max_running > 0 ? max_running : 2;
  j->scan = scan ? scan : adb__eval_scan_store;
  j->arg = arg;
  *out = j;
  return ADB_OK;
}

static void job_free(job *jb) {
  pthread_join(jb->th, NULL);
  adb__eval_free(jb->ev);
  free(jb->result);
  free(jb);
}

void adb__eval_jobs_stop(adb__eval_jobs *j) {
  if (!j) return;
  pthread_mutex_lock(&j->mu);
  for (job *jb = j->head; jb; jb = jb->next)
    jb->cancel = 1;
  job *all = j->head;
  j->head = NULL;
  pthread_mutex_unlock(&j->mu);
  while (all) {
    job *next = all->next;
    job_free(all);
    all = next;
  }
}

void adb__eval_jobs_free(adb__eval_jobs *j) {
  if (!j) return;
  adb__eval_jobs_stop(j);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

/* The lowest priority this thread can have (see the top). */
static void lower_priority(void) {
#ifdef SCHED_IDLE
  struct sched_param sp = {0};
  pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
#endif
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
}

static int job_row(void *ctx, const adb__log_row *row) {
  job *jb = ctx;
  if (jb->cancel) return 1;
  int64_t n = atomic_fetch_add(&jb->rows, 1) + 1;
  if (row && row->d) {
    if (n == 1) jb->first_ts = row->d->ts_ms;
    jb->last_ts = row->d->ts_ms;
  }
  if (n % ADB_EVAL_YIELD_ROWS == 0) sched_yield();
  return adb__eval_row(jb->ev, row);
}

static void *job_main(void *arg) {
  job *jb = arg;
  lower_priority();
  int rc = jb->owner->scan(jb->owner->arg, jb->agent, jb->from_ms, jb->to_ms,
                           job_row, jb);
  int st = J_DONE;
  if (jb->cancel)
    st = J_CANCELLED;
  else if (rc == ADB_EINVAL)
    snprintf(jb->error, sizeof jb->error,
             "this build cannot read the store's log (log_scan)"),
        st = J_FAILED;
  else if (rc)
    snprintf(jb->error, sizeof jb->error, "reading the log: %s",
             adb_strerror(rc)),
        st = J_FAILED;
  if (st == J_DONE) {
    adb__eval_result res[ADB_EVAL_MAX_POLICIES];
    adb__eval_summary sum;
    adb__eval_results(jb->ev, res, &sum);
    jb->result = adb__eval_json(res, adb__eval_count(jb->ev), &sum);
  }
  jb->finished_ms = adb__now_ms();
  jb->state = st;
  jb->exited = 1;
  return NULL;
}

/* Forgets finished evaluations beyond the newest ADB_EVAL_KEEP (mu held). */
static void reap(adb__eval_jobs *j) {
  int kept = 0;
  for (job **p = &j->head; *p;) {
    job *jb = *p;
    if (jb->exited && ++kept > ADB_EVAL_KEEP) {
      *p = jb->next;
      job_free(jb);
    } else {
      p = &jb->next;
    }
  }
}

static int running(const adb__eval_jobs *j) {
  int n = 0;
  for (const job *jb = j->head; jb; jb = jb->next)
    n += !jb->exited;
  return n;
}

static void new_id(char id[33]) {
  unsigned char b[16];
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
    uint64_t t = (uint64_t)adb__mono_ns();
    memcpy(b, &t, 8);
    memcpy(b + 8, &t, 8);
  }
  for (int i = 0; i < 16; i++)
    snprintf(id + 2 * i, 3, "%02x", b[i]);
}

int adb__eval_job_start(adb__eval_jobs *j, const char *agent,
                        const adb__eval_policy *pols, int n, int64_t from_ms,
                        int64_t to_ms, char id[33]) {
  job *jb = calloc(1, sizeof *jb);
  if (!jb) return ADB_ENOMEM;
  int rc = adb__eval_new(pols, n, 1, &jb->ev);
  if (rc) {
    free(jb);
    return rc;
  }
  snprintf(jb->agent, sizeof jb->agent, "%s", agent);
  new_id(jb->id);
  jb->from_ms = from_ms;
  jb->to_ms = to_ms;
  jb->created_ms = adb__now_ms();
  jb->owner = j;
  pthread_mutex_lock(&j->mu);
  reap(j);
  if (running(j) >= j->max_running)
    rc = ADB_EFULL;
  else if (pthread_create(&jb->th, NULL, job_main, jb))
    rc = ADB_ENOMEM;
  if (rc == ADB_OK) {
    jb->next = j->head;
    j->head = jb;
    memcpy(id, jb->id, 33);
  }
  pthread_mutex_unlock(&j->mu);
  if (rc) {
    adb__eval_free(jb->ev);
    free(jb);
  }
  return rc;
}

int adb__eval_jobs_max(const adb__eval_jobs *j) {
  return j->max_running;
}

static void job_json(const job *jb, adb__sbuf *b) {
  int st = jb->state;
  adb__sbuf_printf(b, "{\"id\":\"%s\",\"agent\":", jb->id);
  adb__sbuf_json_str(b, jb->agent);
  adb__sbuf_printf(b, ",\"status\":\"%s\",\"created_at_ms\":%lld",
                   state_names[st], (long long)jb->created_ms);
  if (jb->from_ms > 0)
    adb__sbuf_printf(b, ",\"from\":%lld", (long long)jb->from_ms);
  if (jb->to_ms < INT64_MAX)
    adb__sbuf_printf(b, ",\"to\":%lld", (long long)jb->to_ms);
  /* Progress: rows read, and how far through the window the last one is. */
  int64_t rows = jb->rows, first = jb->first_ts, last = jb->last_ts;
  int64_t end = jb->to_ms < INT64_MAX ? jb->to_ms : jb->created_ms;
  int64_t start = jb->from_ms > 0 ? jb->from_ms : first;
  double f = st == J_DONE ? 1
             : rows && end > start
                 ? (double)(last - start) / (double)(end - start)
                 : 0;
  adb__sbuf_printf(b, ",\"progress\":{\"rows\":%lld,\"fraction\":%.4f}",
                   (long long)rows,
                   f < 0   ? 0
                   : f > 1 ? 1
                           : f);
  if (st != J_RUNNING)
    adb__sbuf_printf(b, ",\"finished_at_ms\":%lld", (long long)jb->finished_ms);
  if (st == J_FAILED) {
    adb__sbuf_puts(b, ",\"error\":");
    adb__sbuf_json_str(b, jb->error);
  }
  if (st == J_DONE && jb->result)
    adb__sbuf_printf(b, ",\"result\":%s", jb->result);
  adb__sbuf_puts(b, "}");
}

static job *find(adb__eval_jobs *j, const char *agent, const char *id) {
  for (job *jb = j->head; jb; jb = jb->next)
    if (!strcmp(jb->id, id) && !strcmp(jb->agent, agent)) return jb;
  return NULL;
}

int adb__eval_job_get(adb__eval_jobs *j, const char *agent, const char *id,
                      adb__sbuf *out) {
  pthread_mutex_lock(&j->mu);
  job *jb = find(j, agent, id);
  if (jb) job_json(jb, out);
  pthread_mutex_unlock(&j->mu);
  return jb ? ADB_OK : ADB_ENOTFOUND;
}

int adb__eval_job_list(adb__eval_jobs *j, const char *agent, adb__sbuf *out) {
  pthread_mutex_lock(&j->mu);
  adb__sbuf_printf(out, "{\"max_running\":%d,\"evaluations\":[",
                   j->max_running);
  int n = 0;
  for (job *jb = j->head; jb; jb = jb->next)
    if (!strcmp(jb->agent, agent)) {
      if (n++) adb__sbuf_puts(out, ",");
      job_json(jb, out);
    }
  adb__sbuf_puts(out, "]}");
  pthread_mutex_unlock(&j->mu);
  return ADB_OK;
}

int adb__eval_job_cancel(adb__eval_jobs *j, const char *agent, const char *id,
                         adb__sbuf *out) {
  pthread_mutex_lock(&j->mu);
  job *jb = find(j, agent, id);
  job **p = &j->head;
  while (jb && *p != jb)
    p = &(*p)->next;
  if (jb) {
    jb->cancel = 1;
    *p = jb->next;
  }
  pthread_mutex_unlock(&j->mu);
  if (!jb) return ADB_ENOTFOUND;
  job_free(jb); /* the scan stops at its next row */
  adb__sbuf_printf(out, "{\"id\":\"%s\",\"status\":\"cancelled\"}", id);
  return ADB_OK;
}
