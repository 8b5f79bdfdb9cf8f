/*
 * metrics.c — per-worker request counters and latency histograms, and the
 * Prometheus text rendering of them plus the library's statistics (see
 * metrics.h).
 */
#define _GNU_SOURCE
#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef ADB_BUILD_COMMIT
#define ADB_BUILD_COMMIT "unknown"
#endif

static const int statuses[] = {200, 201, 202, 204, 400, 401, 403, 404, 405, 408,
                               409, 413, 415, 429, 431, 500, 501, 503, 505};
#define N_STATUS (int)(sizeof statuses / sizeof statuses[0] + 1) /* + other */

/* Upper bounds of the latency buckets, in seconds. */
static const double bucket_s[] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
#define N_BUCKET (int)(sizeof bucket_s / sizeof bucket_s[0] + 1) /* + Inf */

typedef struct shard {
  uint64_t *count;  /* [route][N_STATUS] */
  uint64_t *hist;   /* [route][N_BUCKET], not cumulative */
  uint64_t *sum_ns; /* [route] */
} shard;

struct adb__metrics {
  int n_shards, n_routes;
  const char *const *names;
  const char *const *methods;
  int64_t bucket_ns[N_BUCKET - 1];
  shard *shards;
};

adb__metrics *adb__metrics_new(int n_shards, int n_routes,
                               const char *const *route_names,
                               const char *const *route_methods) {
  adb__metrics *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->n_shards = n_shards;
  m->n_routes = n_routes;
  m->names = route_names;
  m->methods = route_methods;
  for (int b = 0; b < N_BUCKET - 1; b++)
    m->bucket_ns[b] = (int64_t)(bucket_s[b] * 1e9 + 0.5);
  m->shards = calloc((size_t)n_shards, sizeof *m->shards);
  if (!m->shards) goto fail;
  for (int s = 0; s < n_shards; s++) {
    shard *sh = &m->shards[s];
    sh->count = calloc((size_t)n_routes * N_STATUS, sizeof(uint64_t));
    sh->hist = calloc((size_t)n_routes * N_BUCKET, sizeof(uint64_t));
    sh->sum_ns = calloc((size_t)n_routes, sizeof(uint64_t));
    if (!sh->count || !sh->hist || !sh->sum_ns) goto fail;
  }
  return m;
fail:
  adb__metrics_free(m);
  return NULL;
}

void adb__metrics_free(adb__metrics *m) {
  if (!m) return;
  if (m->shards)
    for (int s = 0; s < m->n_shards; s++) {
      free(m->shards[s].count);
      free(m->shards[s].hist);
      free(m->shards[s].sum_ns);
    }
  free(m->shards);
  free(m);
}

static int status_index(int status) {
  for (int i = 0; i < N_STATUS - 1; i++)
    if (statuses[i] == status) return i;
  return N_STATUS - 1;
}

/* Single writer per shard: a relaxed load and store, no locked add. */
static void bump(uint64_t *p, uint64_t by) {
  __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + by,
                   __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void adb__metrics_observe(adb__metrics *m, int shard_i, int route, int status,
                          int64_t latency_ns) {
  if (!m || shard_i < 0 || shard_i >= m->n_shards) return;
  if (route < 0 || route >= m->n_routes) route = 0;
  shard *sh = &m->shards[shard_i];
  bump(&sh->count[route * N_STATUS + status_index(status)], 1);
  int b = 0;
  while (b < N_BUCKET - 1 && latency_ns > m->bucket_ns[b])
    b++;
  bump(&sh->hist[route * N_BUCKET + b], 1);
  bump(&sh->sum_ns[route], latency_ns > 0 ? (uint64_t)latency_ns : 0);
}

uint64_t adb__metrics_count(adb__metrics *m, int route, int status) {
  uint64_t n = 0;
  for (int s = 0; s < m->n_shards; s++)
    for (int i = 0; i < N_STATUS; i++)
      if (status == 0 || (i < N_STATUS - 1 && statuses[i] == status))
        n += get(&m->shards[s].count[route * N_STATUS + i]);
  return n;
}

static void labels(adb__buf *b, adb__metrics *m, int r) {
  adb__buf_printf(b, "route=\"%s\",method=\"%s\"", m->names[r], m->methods[r]);
}

static void render_requests(adb__metrics *m, adb__buf *b) {
  adb__buf_puts(b, "# HELP agentdb_http_requests_total HTTP requests "
                   "answered, by route and status.\n"
                   "# TYPE agentdb_http_requests_total counter\n");
  for (int r = 0; r < m->n_routes; r++)
    for (int i = 0; i < N_STATUS; i++) {
      uint64_t n = 0;
      for (int s = 0; s < m->n_shards; s++)
        n += get(&m->shards[s].count[r * N_STATUS + i]);
      if (!n) continue;
      adb__buf_puts(b, "agentdb_http_requests_total{");
      labels(b, m, r);
      if (i < N_STATUS - 1)
        adb__buf_printf(b, ",status=\"%d\"} %llu\n", statuses[i],
                        (unsigned long long)n);
      else
        adb__buf_printf(b, ",status=\"other\"} %llu\n", (unsigned long long)n);
    }
}

static void render_histogram(adb__metrics *m, adb__buf *b, int r) {
  uint64_t cum = 0, sum = 0;
  for (int s = 0; s < m->n_shards; s++)
    sum += get(&m->shards[s].sum_ns[r]);
  for (int k = 0; k < N_BUCKET; k++) {
    for (int s = 0; s < m->n_shards; s++)
      cum += get(&m->shards[s].hist[r * N_BUCKET + k]);
    adb__buf_puts(b, "agentdb_http_request_duration_seconds_bucket{");
    labels(b, m, r);
    if (k < N_BUCKET - 1)
      adb__buf_printf(b, ",le=\"%g\"} ", bucket_s[k]);
    else
      adb__buf_puts(b, ",le=\"+Inf\"} ");
    adb__buf_printf(b, "%llu\n", (unsigned long long)cum);
  }
  adb__buf_puts(b, "agentdb_http_request_duration_seconds_sum{");
  labels(b, m, r);
  adb__buf_printf(b, "} %.9f\n", (double)sum / 1e9);
  adb__buf_puts(b, "agentdb_http_request_duration_seconds_count{");
  labels(b, m, r);
  adb__buf_printf(b, "} %llu\n", (unsigned long long)cum);
}

static void render_latency(adb__metrics *m, adb__buf *b) {
  adb__buf_puts(b, "# HELP agentdb_http_request_duration_seconds Time from "
                   "a complete request to its queued answer.\n"
                   "# TYPE agentdb_http_request_duration_seconds histogram\n");
  for (int r = 0; r < m->n_routes; r++)
    if (adb__metrics_count(m, r, 0)) render_histogram(m, b, r);
}

static void metric(adb__buf *b, const char *name, const char *type,
                   const char *help, double v) {
  adb__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name,
                  type, name, v);
}

static void render_stats(adb *db, adb__buf *b) {
  adb_stats st;
  memset(&st, 0, sizeof st);
  adb_stats_get(db, &st);
  metric(b, "agentdb_decisions_total", "counter", "Decisions made.",
         (double)st.decisions);
  metric(b, "agentdb_rewards_applied_total", "counter",
         "Rewards applied to a posterior.", (double)st.rewards_applied);
  metric(b, "agentdb_rewards_duplicate_total", "counter",
         "Rewards received again under a known reward id.",
         (double)st.rewards_duplicate);
  metric(b, "agentdb_rewards_awaiting_total", "counter",
         "Rewards accepted before their decision was visible.",
         (double)st.rewards_awaiting);
  metric(b, "agentdb_rewards_joined_total", "counter",
         "Awaiting rewards joined to their decision and applied (by this "
         "process).",
         (double)st.rewards_joined);
  metric(b, "agentdb_rewards_expired_total", "counter",
         "Awaiting rewards dropped: no decision within the reward window.",
         (double)st.rewards_expired);
  metric(b, "agentdb_rewards_defaulted_total", "counter",
         "Default rewards applied: a decision's reward window closed with no "
         "reward (by this process).",
         (double)st.rewards_defaulted);
  metric(b, "agentdb_rewards_late_total", "counter",
         "Rewards refused because their decision's default reward was "
         "applied first.",
         (double)st.rewards_late);
  metric(b, "agentdb_write_queue_depth", "gauge", "Writes waiting.",
         (double)st.queue_depth);
  metric(b, "agentdb_write_queue_capacity", "gauge",
         "Writes that may wait before new ones are refused.",
         (double)st.queue_capacity);
  metric(b, "agentdb_flush_batches_total", "counter", "Batches committed.",
         (double)st.flush_batches);
  metric(b, "agentdb_flush_errors_total", "counter",
         "Batch commits that failed (and were retried).",
         (double)st.flush_errors);
  metric(b, "agentdb_store_errors_total", "counter", "Store errors.",
         (double)st.store_errors);
  metric(b, "agentdb_cache_hits_total", "counter", "Cache hits.",
         (double)st.cache_hits);
  metric(b, "agentdb_cache_misses_total", "counter", "Cache misses.",
         (double)st.cache_misses);
  int64_t lookups = st.cache_hits + st.cache_misses;
  metric(b, "agentdb_cache_hit_ratio", "gauge",
         "Cache hits over lookups since start.",
         lookups ? (double)st.cache_hits / (double)lookups : 0);
  metric(b, "agentdb_cache_errors_total", "counter", "Cache errors.",
         (double)st.cache_errors);
  metric(b, "agentdb_cache_evictions_total", "counter", "Cache evictions.",
         (double)st.cache_evictions);
  metric(b, "agentdb_cache_entries", "gauge", "Cache entries.",
         (double)st.cache_entries);
  metric(b, "agentdb_cache_bytes", "gauge", "Cache bytes.",
         (double)st.cache_bytes);
}

void adb__metrics_render(adb__metrics *m, adb *db, int draining,
                         adb__buf *out) {
  metric(out, "agentdb_up", "gauge", "1 while the server runs.", 1);
  metric(out, "agentdb_draining", "gauge",
         "1 once a graceful shutdown has started.", draining ? 1 : 0);
  if (m) {
    render_requests(m, out);
    render_latency(m, out);
  }
  if (db) render_stats(db, out);
}

/* ----------------------------------------------------------- process */

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own fd */
}

/* The boot time, seconds since the epoch (/proc/stat btime). */
static long long boot_time(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return 0;
  char line[256];
  long long bt = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "btime %lld", &bt) == 1) break;
  fclose(f);
  return bt;
}

/* utime, stime, starttime (ticks), vsize (bytes), rss (pages) of
 * /proc/self/stat; 0 on success. */
static int self_stat(double *cpu_s, double *start_s, double *vsize,
                     double *rss) {
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return -1;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ut, st, start, vs;
  long long rs;
  if (!p || sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                   "%*d %*d %*d %*d %*d %*d %llu %llu %lld",
                   &ut, &st, &start, &vs, &rs) != 5)
    return -1;
  double hz = (double)sysconf(_SC_CLK_TCK);
  *cpu_s = (double)(ut + st) / hz;
  *start_s = (double)boot_time() + (double)start / hz;
  *vsize = (double)vs;
  *rss = (double)rs * (double)sysconf(_SC_PAGESIZE);
  return 0;
}

void adb__metrics_render_process(adb__buf *out) {
  adb__buf_printf(out,
                  "# HELP agentdb_build_info The running build: version and "
                  "git commit.\n# TYPE agentdb_build_info gauge\n"
                  "agentdb_build_info{version=\"%s\",commit=\"%s\"} 1\n",
                  ADB_VERSION, ADB_BUILD_COMMIT);
  double cpu, start, vsize, rss;
  if (self_stat(&cpu, &start, &vsize, &rss) == 0) {
    metric(out, "process_cpu_seconds_total", "counter",
           "User and system CPU time spent, in seconds.", cpu);
    metric(out, "process_start_time_seconds", "gauge",
           "Start time of the process since the epoch, in seconds.", start);
    metric(out, "process_virtual_memory_bytes", "gauge",
           "Virtual memory size in bytes.", vsize);
    metric(out, "process_resident_memory_bytes", "gauge",
           "Resident memory size in bytes.", rss);
  }
  int fds = open_fds();
  if (fds >= 0)
    metric(out, "process_open_fds", "gauge", "Open file descriptors.", fds);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    metric(out, "process_max_fds", "gauge", "Limit on open file descriptors.",
           (double)rl.rlim_cur);
}
