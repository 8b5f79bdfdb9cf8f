/*
 * health.c — the store and cache watcher (see health.h).
 */
#define _GNU_SOURCE
#include "health.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct adb__health {
  adb *db;
  const adb__log *log;
  int interval_ms;
  int store_up, cache_up; /* atomic */
  int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  adb_stats last;
};

static int probe_store(adb__health *h, const adb_stats *now, char *why,
                       size_t n) {
  adb_agent_config cfg;
  int rc = adb_agent_get(h->db, "adb.health.probe", &cfg);
  if (rc == ADB_EUNAVAIL || rc == ADB_ETIMEDOUT) {
    snprintf(why, n, "%s", adb_errmsg(h->db));
    return 0;
  }
  if (now->flush_errors > h->last.flush_errors &&
      now->flush_batches == h->last.flush_batches) {
    snprintf(why, n, "%lld batch commits failed, none succeeded",
             (long long)(now->flush_errors - h->last.flush_errors));
    return 0;
  }
  return 1;
}

static void transition(adb__health *h, int *state, int up, const char *what,
                       const char *why, const adb_stats *st) {
  if (__atomic_load_n(state, __ATOMIC_RELAXED) == up) return;
  __atomic_store_n(state, up, __ATOMIC_RELAXED);
  char ev[32], msg[64];
  snprintf(ev, sizeof ev, "%s_%s", what, up ? "up" : "down");
  snprintf(msg, sizeof msg, "the %s is %s", what,
           up ? "reachable again" : "unreachable");
  adb__logf f[] = {ADB_LOGS("reason", why),
                   ADB_LOGN("queue_depth", st->queue_depth),
                   ADB_LOGN("store_errors", st->store_errors),
                   ADB_LOGN("cache_errors", st->cache_errors)};
  adb__log_event(h->log, up ? "info" : "error", ev, msg, f, 4);
}

static void check(adb__health *h) {
  adb_stats st;
  memset(&st, 0, sizeof st);
  adb_stats_get(h->db, &st);
  char why[256] = "";
  int store = probe_store(h, &st, why, sizeof why);
  transition(h, &h->store_up, store, "store", store ? "" : why, &st);
  int cache = st.cache_errors == h->last.cache_errors;
  snprintf(why, sizeof why, "%lld cache errors in %d ms",
           (long long)(st.cache_errors - h->last.cache_errors), h->interval_ms);
  transition(h, &h->cache_up, cache, "cache", cache ? "" : why, &st);
  h->last = st;
}

static void *run(void *arg) {
  adb__health *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (long long)h->interval_ms * 1000000LL;
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    int rc = 0;
    while (!h->stop && rc != ETIMEDOUT)
      rc = pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    if (h->stop) break;
    pthread_mutex_unlock(&h->mu);
    check(h);
    pthread_mutex_lock(&h->mu);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

adb__health *adb__health_start(adb *db, const adb__log *log, int interval_ms) {
  adb__health *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->db = db;
  h->log = log;
  h->interval_ms = interval_ms > 0 ? interval_ms : 1000;
  h->store_up = h->cache_up = 1;
  adb_stats_get(db, &h->last);
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  if (pthread_create(&h->thread, NULL, run, h) != 0) {
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
    return NULL;
  }
  return h;
}

void adb__health_stop(adb__health *h) {
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->stop = 1;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->thread, NULL);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  free(h);
}

int adb__health_store_up(const adb__health *h) {
  return !h || __atomic_load_n(&h->store_up, __ATOMIC_RELAXED);
}

int adb__health_cache_up(const adb__health *h) {
  return !h || __atomic_load_n(&h->cache_up, __ATOMIC_RELAXED);
}
