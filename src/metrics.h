/*
 * metrics.h — Prometheus metrics of `agentdb serve`: HTTP requests by route
 * and status, latency histograms, and the library's counters
 * (adb_stats_get) rendered in the text exposition format.
 *
 * Each worker thread records into its own shard with plain stores (one
 * writer per shard), so observing costs no lock and no shared cache line;
 * rendering sums the shards.
 */
#ifndef ADB_METRICS_H
#define ADB_METRICS_H

#include <stdint.h>

#include "agentdb.h"
#include "json.h"

typedef struct adb__metrics adb__metrics;

/* Routes are numbered 0..n_routes-1 (0 is conventionally "unmatched");
 * route_names and route_methods label them and must outlive m. */
adb__metrics *adb__metrics_new(int n_shards, int n_routes,
                               const char *const *route_names,
                               const char *const *route_methods);
void adb__metrics_free(adb__metrics *m);

/* Records one answered request; shard is the calling worker's index, and
 * only that worker may use it. */
void adb__metrics_observe(adb__metrics *m, int shard, int route, int status,
                          int64_t latency_ns);

/* Appends the exposition text; db may be NULL. draining is reported as
 * agentdb_draining. */
void adb__metrics_render(adb__metrics *m, adb *db, int draining, adb__buf *out);

/* Appends agentdb_build_info and the process_* series (CPU, resident and
 * virtual memory, open and max fds, start time) read from /proc. */
void adb__metrics_render_process(adb__buf *out);

/* Totals across shards, for tests: requests of route with status (0 = any
 * status). */
uint64_t adb__metrics_count(adb__metrics *m, int route, int status);

#endif /* ADB_METRICS_H */
