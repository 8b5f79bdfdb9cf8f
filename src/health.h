/*
 * health.h — a watcher thread of `agentdb serve` that asks the store and
 * looks at the cache's error counter once an interval, logs an event
 * when either goes down or comes back (store_down, store_up, cache_down,
 * cache_up), and keeps the state for /metrics (agentdb_store_up,
 * agentdb_cache_up).
 *
 * The store is down when a read that must reach it (an unknown agent, as
 * /readyz does) fails with store_unavailable or timeout, or when batches
 * failed to commit and none succeeded during the interval. The cache is
 * down when its error counter rose during the interval; up again after an
 * interval without a new error.
 */
#ifndef ADB_HEALTH_H
#define ADB_HEALTH_H

#include "agentdb.h"
#include "log.h"

typedef struct adb__health adb__health;

/* Starts the watcher; db and log must outlive it. NULL when out of
 * memory or when the thread cannot start. */
adb__health *adb__health_start(adb *db, const adb__log *log, int interval_ms);
/* Stops and frees; NULL is a no-op. */
void adb__health_stop(adb__health *h);
/* 1 while up (also before the first check). */
int adb__health_store_up(const adb__health *h);
int adb__health_cache_up(const adb__health *h);

#endif /* ADB_HEALTH_H */
