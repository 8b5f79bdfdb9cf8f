/*
 * dash.c — per-agent series for the dashboard and /metrics (see dash.h).
 *
 * Design. The decide handler records into its agent's tracker, so the cost
 * on the hot path is one lock-free table lookup and one uncontended mutex
 * per agent (two workers contend only when deciding for the same agent at
 * the same instant, for the ~100 ns of an update). Readers (the dashboard
 * routes, /metrics) copy what they need under that mutex and format
 * outside it, so a dashboard refresh holds an agent for a memcpy, never
 * for JSON writing.
 *
 * Time is bucketed by ring index = (minute or hour number) mod ring size,
 * each bucket stamped with its number: a bucket with an old stamp is
 * stale and is cleared when written, and shown as zero when read. The
 * latency histogram has 2 buckets per doubling from 1 us to ~1 s (upper
 * bounds 2^(i/2) us); percentiles interpolate geometrically inside a
 * bucket, so they are within a factor sqrt(2) of the truth, and the
 * Prometheus histogram takes every 4th bound (1, 4, 16 ... 1048576 us).
 *
 * The agent table is open addressing over atomic pointers: entries are
 * only added (under a mutex, published with release) and never removed, so
 * lookups take no lock.
 */
#define _GNU_SOURCE
#include "dash.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N_LAT 42 /* bucket i: <= 2^(i/2) us; the last: above 2^20 us */
#define N_SEC 64
#define RATE_WINDOW_S 10

typedef struct bucket {
  int64_t stamp; /* minute or hour number; -1: empty */
  uint32_t dec, rew;
  double rsum;
  uint32_t lat[N_LAT];
} bucket;

typedef struct sec_bucket {
  int64_t stamp;
  uint32_t dec, rew;
} sec_bucket;

typedef struct tail_ent {
  int64_t ts_ms, reward_ms;
  int kind; /* 0: decision, 1: reward without a decision in the tail */
  int has_reward;
  double propensity, reward;
  char user[ADB_ID_MAX + 1], event[ADB_ID_MAX + 1], action[ADB_ID_MAX + 1];
} tail_ent;

struct adb__dash_agent {
  char name[ADB_ID_MAX + 1];
  pthread_mutex_t mu;
  int64_t dec, rew, last_ms;
  double rsum, lat_sum_s;
  uint64_t lat_all[N_LAT];
  sec_bucket secs[N_SEC];
  bucket min[ADB__DASH_MINUTES], hour[ADB__DASH_HOURS];
  tail_ent tail[ADB__DASH_TAIL];
  int tail_n, tail_next;
};

struct adb__dash {
  int max_agents, n; /* n: tracked agents (atomic) */
  size_t mask;
  adb__dash_agent **slot; /* atomic pointers */
  adb__dash_agent **order;
  adb__dash_agent *other;
  pthread_mutex_t mu; /* adding agents */
};

/* ------------------------------------------------------------- table */

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static adb__dash_agent *agent_new(const char *name) {
  adb__dash_agent *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  snprintf(a->name, sizeof a->name, "%s", name);
  pthread_mutex_init(&a->mu, NULL);
  for (int i = 0; i < N_SEC; i++)
    a->secs[i].stamp = -1;
  for (int i = 0; i < ADB__DASH_MINUTES; i++)
    a->min[i].stamp = -1;
  for (int i = 0; i < ADB__DASH_HOURS; i++)
    a->hour[i].stamp = -1;
  return a;
}

static void agent_free(adb__dash_agent *a) {
  if (!a) return;
  pthread_mutex_destroy(&a->mu);
  free(a);
}

adb__dash *adb__dash_new(int max_agents) {
  adb__dash *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->max_agents = max_agents > 0 ? max_agents : 100;
  size_t cap = 4;
  while (cap < (size_t)d->max_agents * 2)
    cap <<= 1;
  d->mask = cap - 1;
  d->slot = calloc(cap, sizeof *d->slot);
  d->order = calloc((size_t)d->max_agents, sizeof *d->order);
  d->other = agent_new(ADB__DASH_OTHER);
  pthread_mutex_init(&d->mu, NULL);
  if (!d->slot || !d->order || !d->other) {
    adb__dash_free(d);
    return NULL;
  }
  return d;
}

void adb__dash_free(adb__dash *d) {
  if (!d) return;
  for (int i = 0; d->order && i < d->n; i++)
    agent_free(d->order[i]);
  agent_free(d->other);
  free(d->slot);
  free(d->order);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

int adb__dash_max_agents(const adb__dash *d) {
  return d ? d->max_agents : 0;
}

/* The slot index holding name, or of the empty slot where it would go. */
static size_t probe(adb__dash *d, const char *name, adb__dash_agent **found) {
  size_t i = hash(name) & d->mask;
  for (;;) {
    adb__dash_agent *a = __atomic_load_n(&d->slot[i], __ATOMIC_ACQUIRE);
    if (!a || strcmp(a->name, name) == 0) {
      *found = a;
      return i;
    }
    i = (i + 1) & d->mask;
  }
}

static adb__dash_agent *lookup(adb__dash *d, const char *name) {
  adb__dash_agent *a;
  probe(d, name, &a);
  return a;
}

adb__dash_agent *adb__dash_agent_of(adb__dash *d, const char *agent) {
  if (!d) return NULL;
  adb__dash_agent *a = lookup(d, agent);
  if (a) return a;
  pthread_mutex_lock(&d->mu);
  size_t i = probe(d, agent, &a);
  if (!a && d->n < d->max_agents && strcmp(agent, ADB__DASH_OTHER) != 0 &&
      (a = agent_new(agent)) != NULL) {
    d->order[d->n] = a;
    __atomic_store_n(&d->n, d->n + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&d->slot[i], a, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&d->mu);
  return a ? a : d->other;
}

/* ----------------------------------------------------------- writing */

static int lat_index(int64_t ns) {
  double us = (double)ns / 1000.0;
  if (us <= 1) return 0;
  int i = (int)ceil(2 * log2(us) - 1e-9);
  return i < N_LAT - 1 ? i : N_LAT - 1;
}

static bucket *bucket_at(bucket *ring, int n, int64_t stamp) {
  bucket *b = &ring[stamp % n];
  if (b->stamp != stamp) {
    memset(b, 0, sizeof *b);
    b->stamp = stamp;
  }
  return b;
}

static sec_bucket *sec_at(adb__dash_agent *a, int64_t s) {
  sec_bucket *b = &a->secs[s % N_SEC];
  if (b->stamp != s) *b = (sec_bucket){.stamp = s};
  return b;
}

static void copy_id(char *dst, const char *src) {
  snprintf(dst, ADB_ID_MAX + 1, "%s", src ? src : "");
}

static tail_ent *tail_push(adb__dash_agent *a) {
  tail_ent *e = &a->tail[a->tail_next];
  a->tail_next = (a->tail_next + 1) % ADB__DASH_TAIL;
  if (a->tail_n < ADB__DASH_TAIL) a->tail_n++;
  memset(e, 0, offsetof(tail_ent, user));
  return e;
}

void adb__dash_decision(adb__dash_agent *a, int64_t now_ms, const char *user,
                        const char *event_id, const char *action,
                        double propensity, int64_t latency_ns) {
  if (!a) return;
  int li = lat_index(latency_ns);
  int64_t s = now_ms / 1000;
  pthread_mutex_lock(&a->mu);
  a->dec++;
  a->last_ms = now_ms;
  a->lat_all[li]++;
  a->lat_sum_s += (double)latency_ns / 1e9;
  sec_at(a, s)->dec++;
  bucket *m = bucket_at(a->min, ADB__DASH_MINUTES, s / 60);
  bucket *h = bucket_at(a->hour, ADB__DASH_HOURS, s / 3600);
  m->dec++, m->lat[li]++;
  h->dec++, h->lat[li]++;
  tail_ent *e = tail_push(a);
  e->ts_ms = now_ms;
  e->propensity = propensity;
  copy_id(e->user, user);
  copy_id(e->event, event_id);
  copy_id(e->action, action);
  pthread_mutex_unlock(&a->mu);
}

/* The tail entry of event_id, newest first; NULL when it left the tail. */
static tail_ent *tail_find(adb__dash_agent *a, const char *event_id) {
  for (int k = 1; k <= a->tail_n; k++) {
    tail_ent *e =
        &a->tail[(a->tail_next - k + ADB__DASH_TAIL) % ADB__DASH_TAIL];
    if (e->kind == 0 && strcmp(e->event, event_id) == 0) return e;
  }
  return NULL;
}

void adb__dash_reward(adb__dash_agent *a, int64_t now_ms, const char *event_id,
                      const char *user, const char *action, double reward) {
  if (!a) return;
  int64_t s = now_ms / 1000;
  pthread_mutex_lock(&a->mu);
  a->rew++;
  a->rsum += reward;
  a->last_ms = now_ms;
  sec_at(a, s)->rew++;
  bucket *m = bucket_at(a->min, ADB__DASH_MINUTES, s / 60);
  bucket *h = bucket_at(a->hour, ADB__DASH_HOURS, s / 3600);
  m->rew++, m->rsum += reward;
  h->rew++, h->rsum += reward;
  tail_ent *e = event_id ? tail_find(a, event_id) : NULL;
  if (!e) {
    e = tail_push(a);
    e->kind = 1;
    e->ts_ms = now_ms;
    copy_id(e->user, user);
    copy_id(e->event, event_id);
    copy_id(e->action, action);
  }
  e->has_reward = 1;
  e->reward = reward;
  e->reward_ms = now_ms;
  pthread_mutex_unlock(&a->mu);
}

/* ----------------------------------------------------------- reading */

/* The q-quantile of a latency histogram in ms; NaN when it is empty. */
static double lat_quantile(const uint64_t *h, double q) {
  uint64_t total = 0;
  for (int i = 0; i < N_LAT; i++)
    total += h[i];
  if (!total) return NAN;
  double want = q * (double)total, cum = 0;
  for (int i = 0; i < N_LAT; i++) {
    if (!h[i] || cum + (double)h[i] < want) {
      cum += (double)h[i];
      continue;
    }
    double hi = pow(2, i / 2.0), lo = i ? pow(2, (i - 1) / 2.0) : 0.5;
    double f = (want - cum) / (double)h[i];
    return lo * pow(hi / lo, f) / 1000.0;
  }
  return pow(2, (N_LAT - 1) / 2.0) / 1000.0;
}

static int fresh(int64_t stamp, int64_t now, int64_t span) {
  return stamp >= 0 && stamp > now - span && stamp <= now;
}

static void summarize(adb__dash_agent *a, int64_t now_ms,
                      adb__dash_summary *s) {
  memset(s, 0, sizeof *s);
  uint64_t lat[N_LAT] = {0};
  int64_t now_s = now_ms / 1000, now_m = now_s / 60;
  pthread_mutex_lock(&a->mu);
  snprintf(s->agent, sizeof s->agent, "%s", a->name);
  s->decisions = a->dec;
  s->rewards = a->rew;
  s->reward_sum = a->rsum;
  s->last_ms = a->last_ms;
  for (int i = 0; i < ADB__DASH_MINUTES; i++) {
    const bucket *b = &a->min[i];
    if (!fresh(b->stamp, now_m, 60)) continue;
    s->decisions_hour += b->dec;
    s->rewards_hour += b->rew;
    s->reward_sum_hour += b->rsum;
    for (int k = 0; k < N_LAT; k++)
      lat[k] += b->lat[k];
  }
  uint64_t dec = 0, rew = 0;
  for (int i = 0; i < N_SEC; i++)
    if (fresh(a->secs[i].stamp, now_s, RATE_WINDOW_S))
      dec += a->secs[i].dec, rew += a->secs[i].rew;
  pthread_mutex_unlock(&a->mu);
  s->decisions_per_s = (double)dec / RATE_WINDOW_S;
  s->rewards_per_s = (double)rew / RATE_WINDOW_S;
  s->p50_ms = lat_quantile(lat, 0.5);
  s->p99_ms = lat_quantile(lat, 0.99);
}

static int n_tracked(adb__dash *d) {
  return __atomic_load_n(&d->n, __ATOMIC_ACQUIRE);
}

static int has_events(adb__dash_agent *a) {
  pthread_mutex_lock(&a->mu);
  int r = a->dec || a->rew;
  pthread_mutex_unlock(&a->mu);
  return r;
}

void adb__dash_each(adb__dash *d, int64_t now_ms,
                    void (*fn)(void *ud, const adb__dash_summary *s),
                    void *ud) {
  adb__dash_summary s;
  int n = n_tracked(d);
  for (int i = 0; i < n; i++) {
    summarize(d->order[i], now_ms, &s);
    fn(ud, &s);
  }
  if (has_events(d->other)) {
    summarize(d->other, now_ms, &s);
    fn(ud, &s);
  }
}

static adb__dash_agent *find(adb__dash *d, const char *agent) {
  if (strcmp(agent, ADB__DASH_OTHER) == 0) return d->other;
  return lookup(d, agent);
}

int adb__dash_summary_of(adb__dash *d, const char *agent, int64_t now_ms,
                         adb__dash_summary *out) {
  adb__dash_agent *a = find(d, agent);
  if (!a) return 0;
  summarize(a, now_ms, out);
  return 1;
}

/* ------------------------------------------------------------ series */

static void num_or_null(adb__buf *b, double v) {
  if (isfinite(v))
    adb__json_num9(b, v);
  else
    adb__buf_puts(b, "null");
}

typedef double (*col_fn)(const bucket *b);
static double c_dec(const bucket *b) {
  return b->dec;
}
static double c_rew(const bucket *b) {
  return b->rew;
}
static double c_rsum(const bucket *b) {
  return b->rsum;
}
static double c_mean(const bucket *b) {
  return b->rew ? b->rsum / b->rew : NAN;
}
static double c_p50(const bucket *b) {
  uint64_t h[N_LAT];
  for (int i = 0; i < N_LAT; i++)
    h[i] = b->lat[i];
  return lat_quantile(h, 0.5);
}
static double c_p99(const bucket *b) {
  uint64_t h[N_LAT];
  for (int i = 0; i < N_LAT; i++)
    h[i] = b->lat[i];
  return lat_quantile(h, 0.99);
}

/* Writes the columns of the n buckets ending at stamp `last`; bs[] holds
 * them oldest first (stale ones zeroed by the caller). */
static void put_columns(adb__buf *out, const bucket *bs, int n, int64_t last,
                        int step_s) {
  static const char *const names[] = {"decisions",   "rewards", "reward_sum",
                                      "mean_reward", "p50_ms",  "p99_ms"};
  static const col_fn fns[] = {c_dec, c_rew, c_rsum, c_mean, c_p50, c_p99};
  adb__buf_printf(out, "{\"step_s\":%d,\"t\":[", step_s);
  for (int i = 0; i < n; i++)
    adb__buf_printf(out, "%s%lld", i ? "," : "",
                    (long long)((last - n + 1 + i) * step_s));
  adb__buf_putc(out, ']');
  for (int c = 0; c < 6; c++) {
    adb__buf_printf(out, ",\"%s\":[", names[c]);
    for (int i = 0; i < n; i++) {
      if (i) adb__buf_putc(out, ',');
      num_or_null(out, fns[c](&bs[i]));
    }
    adb__buf_putc(out, ']');
  }
  adb__buf_putc(out, '}');
}

/* Copies the n buckets ending at `last` out of ring (under a->mu). */
static void take(const bucket *ring, int size, int64_t last, int n,
                 bucket *dst) {
  for (int i = 0; i < n; i++) {
    int64_t st = last - n + 1 + i;
    const bucket *b = &ring[st % size];
    if (b->stamp == st)
      dst[i] = *b;
    else
      memset(&dst[i], 0, sizeof dst[i]);
  }
}

int adb__dash_series_json(adb__dash *d, const char *agent, int64_t now_ms,
                          int minutes, int hours, adb__buf *out) {
  adb__dash_agent *a = find(d, agent);
  if (!a) return 0;
  if (minutes < 1 || minutes > ADB__DASH_MINUTES) minutes = ADB__DASH_MINUTES;
  if (hours < 1 || hours > ADB__DASH_HOURS) hours = ADB__DASH_HOURS;
  bucket *m = malloc((size_t)(minutes + hours) * sizeof *m);
  if (!m) {
    out->oom = 1;
    return 1;
  }
  bucket *h = m + minutes;
  int64_t now_m = now_ms / 60000, now_h = now_ms / 3600000;
  pthread_mutex_lock(&a->mu);
  take(a->min, ADB__DASH_MINUTES, now_m, minutes, m);
  take(a->hour, ADB__DASH_HOURS, now_h, hours, h);
  pthread_mutex_unlock(&a->mu);
  adb__buf_puts(out, "{\"minute\":");
  put_columns(out, m, minutes, now_m, 60);
  adb__buf_puts(out, ",\"hour\":");
  put_columns(out, h, hours, now_h, 3600);
  adb__buf_putc(out, '}');
  free(m);
  return 1;
}

/* ------------------------------------------------------------ recent */

typedef struct rec {
  const char *agent;
  tail_ent e;
} rec;

static int rec_newer(const void *x, const void *y) {
  const rec *a = x, *b = y;
  return (a->e.ts_ms < b->e.ts_ms) - (a->e.ts_ms > b->e.ts_ms);
}

/* Copies up to limit newest entries of a into r; returns how many. */
static int take_tail(adb__dash_agent *a, int limit, rec *r) {
  pthread_mutex_lock(&a->mu);
  int n = a->tail_n < limit ? a->tail_n : limit;
  for (int k = 0; k < n; k++) {
    r[k].agent = a->name;
    r[k].e =
        a->tail[(a->tail_next - 1 - k + 2 * ADB__DASH_TAIL) % ADB__DASH_TAIL];
  }
  pthread_mutex_unlock(&a->mu);
  return n;
}

static void put_rec(adb__buf *b, const rec *r) {
  adb__buf_puts(b, "{\"agent\":");
  adb__json_str(b, r->agent);
  adb__buf_printf(b, ",\"kind\":\"%s\",\"ts_ms\":%lld",
                  r->e.kind ? "reward" : "decision", (long long)r->e.ts_ms);
  adb__buf_puts(b, ",\"user_id\":");
  adb__json_str(b, r->e.user);
  adb__buf_puts(b, ",\"event_id\":");
  if (r->e.event[0])
    adb__json_str(b, r->e.event);
  else
    adb__buf_puts(b, "null");
  adb__buf_puts(b, ",\"action\":");
  adb__json_str(b, r->e.action);
  adb__buf_puts(b, ",\"propensity\":");
  if (r->e.kind == 0)
    adb__json_num9(b, r->e.propensity);
  else
    adb__buf_puts(b, "null");
  adb__buf_puts(b, ",\"reward\":");
  if (r->e.has_reward) {
    adb__json_num9(b, r->e.reward);
    adb__buf_printf(b, ",\"reward_ts_ms\":%lld", (long long)r->e.reward_ms);
  } else {
    adb__buf_puts(b, "null,\"reward_ts_ms\":null");
  }
  adb__buf_putc(b, '}');
}

void adb__dash_recent_json(adb__dash *d, int limit,
                           int (*allow)(void *ud, const char *agent), void *ud,
                           adb__buf *out) {
  if (limit < 1) limit = 1;
  if (limit > ADB__DASH_TAIL) limit = ADB__DASH_TAIL;
  int n_ag = n_tracked(d);
  rec *r = malloc((size_t)(n_ag + 1) * (size_t)limit * sizeof *r);
  if (!r) {
    out->oom = 1;
    return;
  }
  int n = 0;
  for (int i = 0; i <= n_ag; i++) {
    adb__dash_agent *a = i < n_ag ? d->order[i] : d->other;
    if (allow && !allow(ud, a->name)) continue;
    n += take_tail(a, limit, r + n);
  }
  qsort(r, (size_t)n, sizeof *r, rec_newer);
  adb__buf_putc(out, '[');
  for (int i = 0; i < n && i < limit; i++) {
    if (i) adb__buf_putc(out, ',');
    put_rec(out, &r[i]);
  }
  adb__buf_putc(out, ']');
  free(r);
}

/* ----------------------------------------------------------- metrics */

typedef struct prom_row {
  int64_t dec, rew;
  double rsum, lat_sum_s;
  uint64_t lat[N_LAT];
} prom_row;

static void row_of(adb__dash_agent *a, prom_row *r) {
  pthread_mutex_lock(&a->mu);
  r->dec = a->dec;
  r->rew = a->rew;
  r->rsum = a->rsum;
  r->lat_sum_s = a->lat_sum_s;
  memcpy(r->lat, a->lat_all, sizeof r->lat);
  pthread_mutex_unlock(&a->mu);
}

static void put_label(adb__buf *b, const char *metric, const char *agent) {
  adb__buf_printf(b, "%s{agent=\"%s\"", metric, agent);
}

static void put_hist(adb__buf *b, const char *agent, const prom_row *r) {
  const char *m = "agentdb_agent_decide_duration_seconds";
  uint64_t cum = 0;
  for (int i = 0; i < N_LAT; i++) {
    cum += r->lat[i];
    if (i % 4 != 0 && i != N_LAT - 1) continue;
    adb__buf_printf(b, "%s_bucket{agent=\"%s\",le=\"", m, agent);
    if (i == N_LAT - 1)
      adb__buf_printf(b, "+Inf\"} %llu\n", (unsigned long long)cum);
    else
      adb__buf_printf(b, "%g\"} %llu\n", pow(2, i / 2.0) / 1e6,
                      (unsigned long long)cum);
  }
  adb__buf_printf(b, "%s_sum{agent=\"%s\"} %.9f\n", m, agent, r->lat_sum_s);
  adb__buf_printf(b, "%s_count{agent=\"%s\"} %llu\n", m, agent,
                  (unsigned long long)cum);
}

static void header(adb__buf *b, const char *name, const char *type,
                   const char *help) {
  adb__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void adb__dash_render_metrics(adb__dash *d, adb__buf *out) {
  if (!d) return;
  int n = n_tracked(d);
  prom_row *rows = calloc((size_t)n + 1, sizeof *rows);
  if (!rows) return;
  adb__dash_agent **ag = d->order;
  int other = has_events(d->other);
  for (int i = 0; i < n; i++)
    row_of(ag[i], &rows[i]);
  if (other) row_of(d->other, &rows[n]);
  int total = n + other;
#define NAME(i) ((i) < n ? ag[i]->name : ADB__DASH_OTHER)
  header(out, "agentdb_dashboard_agents_tracked", "gauge",
         "Agents with their own per-agent series.");
  adb__buf_printf(out, "agentdb_dashboard_agents_tracked %d\n", n);
  header(out, "agentdb_dashboard_agents_max", "gauge",
         "Agents tracked by name at most; later ones count as agent "
         "_other.");
  adb__buf_printf(out, "agentdb_dashboard_agents_max %d\n", d->max_agents);
  header(out, "agentdb_agent_decisions_total", "counter",
         "Decisions answered, by agent.");
  for (int i = 0; i < total; i++) {
    put_label(out, "agentdb_agent_decisions_total", NAME(i));
    adb__buf_printf(out, "} %lld\n", (long long)rows[i].dec);
  }
  header(out, "agentdb_agent_rewards_total", "counter",
         "Rewards applied, by agent.");
  for (int i = 0; i < total; i++) {
    put_label(out, "agentdb_agent_rewards_total", NAME(i));
    adb__buf_printf(out, "} %lld\n", (long long)rows[i].rew);
  }
  header(out, "agentdb_agent_reward_accumulated", "gauge",
         "Sum of the rewards applied, by agent (may fall: rewards may be "
         "negative).");
  for (int i = 0; i < total; i++) {
    put_label(out, "agentdb_agent_reward_accumulated", NAME(i));
    adb__buf_printf(out, "} %.17g\n", rows[i].rsum);
  }
  header(out, "agentdb_agent_decide_duration_seconds", "histogram",
         "Time in the decide handler (parse, sample, log), by agent.");
  for (int i = 0; i < total; i++)
    put_hist(out, NAME(i), &rows[i]);
#undef NAME
  free(rows);
}
