/*
 * serve.c — `agentdb serve`: opens the library, and serves the HTTP/JSON
 * API (src/api.c over src/http.c) until SIGTERM or SIGINT.
 *
 * Every setting is a flag and an AGENTDB_* environment variable (the flag
 * wins); `agentdb serve --help` lists them with their defaults. When it is
 * ready the server prints "agentdb: listening on http://HOST:PORT" on
 * stdout (tests and scripts wait for that line; --listen 127.0.0.1:0 picks
 * a free port).
 *
 * Events (start, config, store or cache down and back, slow requests,
 * error answers, shutdown) go to stderr as structured lines (src/log.h),
 * JSON or text by --log-format; the watcher of src/health.c reports the
 * store and the cache.
 *
 * Shutdown order: stop accepting and finish the requests in flight (every
 * answered write has been acknowledged by the library, i.e. committed in
 * sync mode), then adb_close drains the write queue. A second signal
 * during the drain exits at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agentdb.h"
#include "api.h"
#include "auth.h"
#include "health.h"
#include "http.h"
#include "log.h"

int cli_serve(int argc, char **argv);

enum {
  O_LISTEN,
  O_STORE,
  O_CACHE,
  O_THREADS,
  O_WRITE_THREADS,
  O_POOL_SIZE,
  O_CACHE_TTL,
  O_CACHE_MAX_BYTES,
  O_FLUSH_INTERVAL,
  O_BATCH_SIZE,
  O_QUEUE_CAPACITY,
  O_WRITE_TIMEOUT,
  O_DURABILITY,
  O_MAX_BODY,
  O_MAX_HEADER,
  O_REQUEST_TIMEOUT,
  O_IDLE_TIMEOUT,
  O_SHUTDOWN_TIMEOUT,
  O_MAX_CONNECTIONS,
  O_API_KEYS,
  O_ACCESS_LOG,
  O_SEED,
  O_LOG_FORMAT,
  O_SLOW_MS,
  O_DASH_AGENTS,
  O_DATA_DIR,
  O_CORS,
  O_RATE,
  O_BURST,
  O_PZ_AGENT,
  O_MAX_EVALS,
  N_OPT
};

typedef struct opt_def {
  const char *flag, *env, *def, *arg, *help;
} opt_def;

static const opt_def opts[N_OPT] = {
    [O_LISTEN] = {"listen", "AGENTDB_LISTEN", "127.0.0.1:8080", "HOST:PORT",
                  "address to serve on (port 0: any free port)"},
    [O_STORE] = {"store", "AGENTDB_STORE", "sqlite://./data/agentdb.db", "URL",
                 "store: sqlite://PATH or postgresql://..."},
    [O_CACHE] = {"cache", "AGENTDB_CACHE", "mem://", "URL",
                 "cache: mem://, redis://HOST:PORT/DB, redis-cluster://..."},
    [O_THREADS] = {"threads", "AGENTDB_THREADS", "", "N",
                   "HTTP event-loop threads (default: one per CPU)"},
    [O_WRITE_THREADS] =
        {"write-threads", "AGENTDB_WRITE_THREADS", "64", "N",
         "threads for requests that wait on the store (a durable reward holds "
         "none while its commit is pending)"},
    [O_POOL_SIZE] = {"pool-size", "AGENTDB_POOL_SIZE", "4", "N",
                     "store connections"},
    [O_CACHE_TTL] = {"cache-ttl", "AGENTDB_CACHE_TTL", "3600", "SECONDS",
                     "cache entry time to live"},
    [O_CACHE_MAX_BYTES] = {"cache-max-bytes", "AGENTDB_CACHE_MAX_BYTES", "256m",
                           "BYTES", "in-process cache bound"},
    [O_FLUSH_INTERVAL] = {"flush-interval-ms", "AGENTDB_FLUSH_INTERVAL_MS", "2",
                          "MS",
                          "flush the write queue at least this "
                          "often"},
    [O_BATCH_SIZE] = {"batch-size", "AGENTDB_BATCH_SIZE", "4096", "N",
                      "flush when this many writes wait"},
    [O_QUEUE_CAPACITY] = {"queue-capacity", "AGENTDB_QUEUE_CAPACITY", "100000",
                          "N", "writes waiting before new ones get 503"},
    [O_WRITE_TIMEOUT] = {"write-timeout-ms", "AGENTDB_WRITE_TIMEOUT_MS",
                         "30000", "MS", "a sync write gives up after"},
    [O_DURABILITY] = {"durability", "AGENTDB_DURABILITY", "sync", "sync|async",
                      "sync: answer writes after commit; async: at enqueue "
                      "(202)"},
    [O_MAX_BODY] = {"max-body", "AGENTDB_MAX_BODY", "1m", "BYTES",
                    "largest request body (413 above)"},
    [O_MAX_HEADER] = {"max-header-bytes", "AGENTDB_MAX_HEADER_BYTES", "16k",
                      "BYTES", "largest request line + headers (431 above)"},
    [O_REQUEST_TIMEOUT] = {"request-timeout-ms", "AGENTDB_REQUEST_TIMEOUT_MS",
                           "10000", "MS",
                           "time to receive a request or send an answer "
                           "(408)"},
    [O_IDLE_TIMEOUT] = {"idle-timeout-ms", "AGENTDB_IDLE_TIMEOUT_MS", "60000",
                        "MS",
                        "keep-alive connections idle this long are "
                        "closed"},
    [O_SHUTDOWN_TIMEOUT] = {"shutdown-timeout-ms",
                            "AGENTDB_SHUTDOWN_TIMEOUT_MS", "30000", "MS",
                            "longest wait for in-flight requests on "
                            "SIGTERM"},
    [O_MAX_CONNECTIONS] = {"max-connections", "AGENTDB_MAX_CONNECTIONS", "4096",
                           "N",
                           "open connections at once; beyond, new ones get "
                           "503 and are closed"},
    [O_API_KEYS] = {"api-keys-file", "AGENTDB_API_KEYS_FILE", "", "PATH",
                    "require 'Authorization: Bearer KEY' on /v1 (lines: "
                    "KEY [agent,...])"},
    [O_ACCESS_LOG] = {"access-log", "AGENTDB_ACCESS_LOG", "", "PATH|-",
                      "one line per request ('-' = stdout)"},
    [O_SEED] = {"seed", "AGENTDB_SEED", "0", "N",
                "sampling RNG seed (0: from the OS)"},
    [O_LOG_FORMAT] = {"log-format", "AGENTDB_LOG_FORMAT", "json", "text|json",
                      "events on stderr (start, config, store/cache down "
                      "and back, slow requests, errors, shutdown)"},
    [O_SLOW_MS] = {"slow-request-ms", "AGENTDB_SLOW_REQUEST_MS", "1000", "MS",
                   "log a request slower than this (0: never)"},
    [O_DASH_AGENTS] = {"dashboard-max-agents", "AGENTDB_DASHBOARD_MAX_AGENTS",
                       "100", "N",
                       "agents with their own dashboard and /metrics "
                       "series; more count as agent _other"},
    [O_DATA_DIR] = {"data-dir", "AGENTDB_DATA_DIR", "", "DIR",
                    "where every file goes: the SQLite store DIR/agentdb.db "
                    "(unless --store names one) and the vector index "
                    "snapshots DIR/index (default: next to a SQLite store, "
                    "none for PostgreSQL)"},
    [O_CORS] = {"cors-origins", "AGENTDB_CORS_ORIGINS", "", "LIST",
                "browser origins allowed (comma-separated, '*' = any; "
                "default: CORS off)"},
    [O_RATE] = {"rate-limit", "AGENTDB_RATE_LIMIT", "0", "N",
                "requests a second per API key, on average (0: no limit; "
                "429 with Retry-After above)"},
    [O_MAX_EVALS] = {"max-evaluations", "AGENTDB_MAX_EVALUATIONS", "2", "N",
                     "offline evaluations running at once (429 beyond)"},
    [O_BURST] = {"rate-burst", "AGENTDB_RATE_BURST", "", "N",
                 "requests a key may burst above --rate-limit (default: "
                 "the rate, at least 1)"},
    [O_PZ_AGENT] = {"personalizer-agent", "AGENTDB_PERSONALIZER_AGENT",
                    "personalizer", "ID",
                    "agent of the /personalizer/v1.0 routes for a key not "
                    "scoped to one agent (docs/personalizer.md)"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: agentdb serve [options]\n\n"
             "Serves the AgentDB HTTP/JSON API (docs/openapi.yaml). Each "
             "option may also be\ngiven as the environment variable shown; "
             "the flag wins.\n\n");
  for (int i = 0; i < N_OPT; i++) {
    char left[64];
    snprintf(left, sizeof left, "--%s %s", opts[i].flag, opts[i].arg);
    fprintf(f, "  %-30s %s\n  %-30s   env %s, default %s\n", left, opts[i].help,
            "", opts[i].env,
            opts[i].def[0] ? opts[i].def : (i == O_THREADS ? "CPUs" : "none"));
  }
  fprintf(f, "  %-30s %s\n", "--help", "this text");
}

/* A non-negative integer with an optional k/m/g suffix (sizes). */
static int parse_u64(const char *s, int suffix, long long max, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || v < 0 || errno) return -1;
  long long mul = 1;
  if (suffix && *end) {
    switch (*end | 0x20) {
    case 'k':
      mul = 1LL << 10;
      break;
    case 'm':
      mul = 1LL << 20;
      break;
    case 'g':
      mul = 1LL << 30;
      break;
    default:
      return -1;
    }
    end++;
  }
  if (*end || v > max / mul) return -1;
  *out = v * mul;
  return 0;
}

typedef struct settings {
  const char *val[N_OPT];
  adb__log log;
  long long slow_ms, dash_agents, max_evals;
  adb_config cfg;
  adb__http_config http;
  int threads;
  double rate, burst;
  char data_dir[PATH_MAX], index_dir[PATH_MAX + 8], store_url[PATH_MAX + 32];
} settings;

static int number(const settings *s, int o, int suffix, long long lo,
                  long long hi, long long *out) {
  if (parse_u64(s->val[o], suffix, hi, out) == 0 && *out >= lo) return 0;
  fprintf(stderr,
          "agentdb serve: --%s (%s) must be %s in [%lld, %lld], "
          "not '%s'\n",
          opts[o].flag, opts[o].env, suffix ? "a size" : "an integer", lo, hi,
          s->val[o]);
  return -1;
}

static int read_args(settings *s, int argc, char **argv) {
  for (int i = 0; i < N_OPT; i++) {
    const char *e = getenv(opts[i].env);
    s->val[i] = e && *e ? e : opts[i].def;
  }
  struct option lo[N_OPT + 2];
  for (int i = 0; i < N_OPT; i++)
    lo[i] = (struct option){opts[i].flag, required_argument, NULL, i};
  lo[N_OPT] = (struct option){"help", no_argument, NULL, 'h'};
  lo[N_OPT + 1] = (struct option){NULL, 0, NULL, 0};
  optind = 1;
  opterr = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    if (c == 'h') {
      usage(stdout);
      return 1;
    }
    if (c < 0 || c >= N_OPT) {
      usage(stderr);
      return -1;
    }
    s->val[c] = optarg;
  }
  if (optind < argc) {
    fprintf(stderr, "agentdb serve: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  return 0;
}

/* --data-dir: the default store and the index snapshots go there, as
 * absolute paths (the working directory then holds nothing of ours). */
static int data_dir(settings *s) {
  const char *d = s->val[O_DATA_DIR];
  if (!d[0]) return 0;
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", d);
  for (char *p = tmp + 1;; p++) { /* mkdir -p */
    if (*p && *p != '/') continue;
    char c = *p;
    *p = 0;
    mkdir(tmp, 0755);
    if (!(*p = c)) break;
  }
  if (!realpath(d, s->data_dir)) {
    fprintf(stderr, "agentdb serve: --data-dir %s: %s\n", d, strerror(errno));
    return -1;
  }
  snprintf(s->index_dir, sizeof s->index_dir, "%s/index", s->data_dir);
  s->cfg.index_dir = s->index_dir;
  if (s->val[O_STORE] == opts[O_STORE].def) {
    snprintf(s->store_url, sizeof s->store_url, "sqlite://%s/agentdb.db",
             s->data_dir);
    s->cfg.store_url = s->store_url;
  }
  return 0;
}

static int convert(settings *s) {
  long long v[N_OPT] = {0};
  const int big = 1 << 30;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (!s->val[O_THREADS][0])
    v[O_THREADS] = ncpu > 0 ? ncpu : 1;
  else if (number(s, O_THREADS, 0, 1, 256, &v[O_THREADS]))
    return -1;
  if (number(s, O_WRITE_THREADS, 0, 1, 4096, &v[O_WRITE_THREADS]) ||
      number(s, O_POOL_SIZE, 0, 1, 1024, &v[O_POOL_SIZE]) ||
      number(s, O_CACHE_TTL, 0, 1, big, &v[O_CACHE_TTL]) ||
      number(s, O_CACHE_MAX_BYTES, 1, 1 << 20, 1LL << 40,
             &v[O_CACHE_MAX_BYTES]) ||
      number(s, O_FLUSH_INTERVAL, 0, 1, 60000, &v[O_FLUSH_INTERVAL]) ||
      number(s, O_BATCH_SIZE, 0, 1, big, &v[O_BATCH_SIZE]) ||
      number(s, O_QUEUE_CAPACITY, 0, 1, big, &v[O_QUEUE_CAPACITY]) ||
      number(s, O_WRITE_TIMEOUT, 0, 1, big, &v[O_WRITE_TIMEOUT]) ||
      number(s, O_MAX_BODY, 1, 1024, 1LL << 30, &v[O_MAX_BODY]) ||
      number(s, O_MAX_HEADER, 1, 1024, 1 << 24, &v[O_MAX_HEADER]) ||
      number(s, O_REQUEST_TIMEOUT, 0, 1, big, &v[O_REQUEST_TIMEOUT]) ||
      number(s, O_IDLE_TIMEOUT, 0, 1, big, &v[O_IDLE_TIMEOUT]) ||
      number(s, O_SHUTDOWN_TIMEOUT, 0, 1, big, &v[O_SHUTDOWN_TIMEOUT]) ||
      number(s, O_MAX_CONNECTIONS, 0, 1, 1 << 24, &v[O_MAX_CONNECTIONS]) ||
      number(s, O_SEED, 0, 0, 0x7fffffffffffffffLL, &v[O_SEED]) ||
      number(s, O_SLOW_MS, 0, 0, big, &s->slow_ms) ||
      number(s, O_DASH_AGENTS, 0, 1, 100000, &s->dash_agents) ||
      number(s, O_RATE, 0, 0, 1000000000, &v[O_RATE]) ||
      number(s, O_MAX_EVALS, 0, 1, 64, &s->max_evals))
    return -1;
  const char *lf = s->val[O_LOG_FORMAT];
  if (strcmp(lf, "text") && strcmp(lf, "json")) {
    fprintf(stderr,
            "agentdb serve: --log-format must be text or json, not "
            "'%s'\n",
            lf);
    return -1;
  }
  s->log = (adb__log){.f = stderr, .json = strcmp(lf, "json") == 0};
  v[O_BURST] = v[O_RATE] > 0 ? v[O_RATE] : 1;
  if (s->val[O_BURST][0] && number(s, O_BURST, 0, 1, 1000000000, &v[O_BURST]))
    return -1;
  s->rate = (double)v[O_RATE];
  s->burst = (double)v[O_BURST];
  const char *d = s->val[O_DURABILITY];
  if (strcmp(d, "sync") && strcmp(d, "async")) {
    fprintf(stderr,
            "agentdb serve: --durability must be sync or async, not "
            "'%s'\n",
            d);
    return -1;
  }
  s->cfg = (adb_config){.store_url = s->val[O_STORE],
                        .cache_url = s->val[O_CACHE],
                        .durability = strcmp(d, "async") ? ADB_DURABILITY_SYNC
                                                         : ADB_DURABILITY_ASYNC,
                        .flush_interval_ms = (int)v[O_FLUSH_INTERVAL],
                        .batch_size = (int)v[O_BATCH_SIZE],
                        .queue_capacity = (int)v[O_QUEUE_CAPACITY],
                        .write_timeout_ms = (int)v[O_WRITE_TIMEOUT],
                        .cache_ttl_s = (int)v[O_CACHE_TTL],
                        .cache_max_bytes = (size_t)v[O_CACHE_MAX_BYTES],
                        .pool_size = (int)v[O_POOL_SIZE],
                        .seed = (uint64_t)v[O_SEED]};
  if (data_dir(s) < 0) return -1;
  s->threads = (int)v[O_THREADS];
  s->http =
      (adb__http_config){.listen = s->val[O_LISTEN],
                         .threads = s->threads,
                         .pool_threads = (int)v[O_WRITE_THREADS],
                         .max_body = (size_t)v[O_MAX_BODY],
                         .max_head = (size_t)v[O_MAX_HEADER],
                         .request_timeout_ms = (int)v[O_REQUEST_TIMEOUT],
                         .idle_timeout_ms = (int)v[O_IDLE_TIMEOUT],
                         .shutdown_timeout_ms = (int)v[O_SHUTDOWN_TIMEOUT],
                         .max_connections = (int)v[O_MAX_CONNECTIONS]};
  return 0;
}

/* Creates the folder of a sqlite:// file, as `make run` expects ./data. */
static void make_store_dir(const char *url) {
  if (strncmp(url, "sqlite://", 9) != 0 || strstr(url, ":memory:")) return;
  char path[4096];
  snprintf(path, sizeof path, "%s", url + 9);
  char *q = strchr(path, '?');
  if (q) *q = '\0';
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    mkdir(path, 0755);
    *p = '/';
  }
}

static void *second_signal(void *arg) {
  sigset_t *set = arg;
  int sig;
  if (sigwait(set, &sig) == 0) {
    fprintf(stderr, "agentdb: second signal, exiting without draining\n");
    _exit(1);
  }
  return NULL;
}

#define MAX_RELOADS 64

typedef struct running {
  adb *db;
  adb__health *health;
  adb__auth *auth;
  adb__auth *retired[MAX_RELOADS]; /* replaced by SIGHUP, freed at exit */
  int n_retired;
  FILE *access;
  adb__api *api;
  adb__http_server *srv;
} running;

static int open_all(settings *s, running *r) {
  char err[512] = "";
  make_store_dir(s->cfg.store_url);
  int rc = adb_open(&s->cfg, &r->db, err, sizeof err);
  if (rc != ADB_OK) {
    fprintf(stderr, "agentdb serve: %s\n", err[0] ? err : adb_strerror(rc));
    return -1;
  }
  const char *keys = s->val[O_API_KEYS];
  if (keys[0] && adb__auth_load(keys, &r->auth, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "agentdb serve: %s\n", err);
    return -1;
  }
  const char *al = s->val[O_ACCESS_LOG];
  if (al[0]) r->access = strcmp(al, "-") ? fopen(al, "a") : stdout;
  if (al[0] && !r->access) {
    fprintf(stderr, "agentdb serve: cannot open access log %s\n", al);
    return -1;
  }
  adb__api_config ac = {.db = r->db,
                        .durability = s->cfg.durability,
                        .auth = r->auth,
                        .threads = s->threads,
                        .access_log = r->access,
                        .log = &s->log,
                        .slow_ms = s->slow_ms,
                        .dash_max_agents = (int)s->dash_agents,
                        .cors_origins = s->val[O_CORS],
                        .rate_per_s = r->auth ? s->rate : 0,
                        .rate_burst = s->burst,
                        .personalizer_agent = s->val[O_PZ_AGENT],
                        .max_evaluations = (int)s->max_evals};
  if (s->rate > 0 && !r->auth)
    fprintf(stderr, "agentdb serve: --rate-limit is per API key: without "
                    "--api-keys-file it does nothing\n");
  if (adb__api_new(&ac, &r->api) != ADB_OK) {
    fprintf(stderr, "agentdb serve: out of memory\n");
    return -1;
  }
  s->http.handler = adb__api_handle;
  s->http.done = adb__api_done;
  s->http.admit = adb__api_admit;
  s->http.ud = r->api;
  if (adb__http_start(&s->http, &r->srv, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "agentdb serve: %s\n", err);
    return -1;
  }
  adb__api_set_server(r->api, r->srv);
  r->health = adb__health_start(r->db, &s->log, 1000);
  adb__api_set_health(r->api, r->health);
  return 0;
}

/* True when the bound address ("host:port", "[v6]:port") is loopback. */
static int is_loopback(const char *addr) {
  return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]:", 6) == 0 ||
         strncmp(addr, "[::ffff:127.", 12) == 0;
}

/* Stops in order: HTTP (in-flight requests finish), then the library
 * (the write queue drains). Returns the drain result. */
/* SIGHUP: the keys file again. A file that does not load leaves the keys
 * in force unchanged. */
static void reload_keys(const settings *s, running *r) {
  const char *path = s->val[O_API_KEYS];
  if (!path[0] || !r->auth) {
    fprintf(stderr, "agentdb: SIGHUP: no --api-keys-file, nothing to reload\n");
    return;
  }
  if (r->n_retired == MAX_RELOADS) {
    fprintf(stderr,
            "agentdb: SIGHUP: %d reloads already; restart to reload "
            "again\n",
            MAX_RELOADS);
    return;
  }
  char err[512] = "";
  adb__auth *a = NULL;
  if (adb__auth_load(path, &a, err, sizeof err) != ADB_OK) {
    fprintf(stderr, "agentdb: SIGHUP: %s; the keys in force stay\n", err);
    return;
  }
  adb__api_set_auth(r->api, a);
  r->retired[r->n_retired++] = r->auth;
  r->auth = a;
  fprintf(stderr, "agentdb: SIGHUP: %d API keys loaded from %s\n",
          adb__auth_count(a), path);
}

static int close_all(running *r) {
  if (r->srv) {
    adb__http_shutdown(r->srv);
    adb__http_wait(r->srv);
  }
  /* Once no loop runs: a /metrics in flight reads the watcher's state. */
  if (r->api) adb__api_set_health(r->api, NULL);
  adb__health_stop(r->health);
  adb__api_stop_evaluations(r->api); /* they read through the handle */
  int rc = adb_close(r->db);
  /* After the library: rewards still waiting for their commit when the
   * loops stopped are answered into the server (adb__http_later_done)
   * until adb_close has drained them. */
  adb__http_free(r->srv);
  adb__api_free(r->api);
  adb__auth_free(r->auth);
  for (int i = 0; i < r->n_retired; i++)
    adb__auth_free(r->retired[i]);
  if (r->access && r->access != stdout) fclose(r->access);
  return rc;
}

/* The store URL without a password (postgresql://user:PASS@host). */
static void redact_url(const char *url, char *out, size_t n) {
  const char *at = strchr(url, '@'), *sch = strstr(url, "://");
  const char *colon =
      sch && at ? memchr(sch + 3, ':', (size_t)(at - sch - 3)) : NULL;
  if (!colon) {
    snprintf(out, n, "%s", url);
    return;
  }
  snprintf(out, n, "%.*s:***%s", (int)(colon - url), url, at);
}

/* The start and config events: the address, then every setting. */
static void log_start(settings *s, running *r) {
  adb__logf f[] = {ADB_LOGS("address", adb__http_address(r->srv)),
                   ADB_LOGS("version", ADB_VERSION)};
  adb__log_event(&s->log, "info", "start", "serving", f, 2);
  adb__logf c[N_OPT];
  char store[1024], cache[1024], threads[16];
  int n = 0;
  snprintf(threads, sizeof threads, "%d", s->threads);
  for (int i = 0; i < N_OPT; i++) {
    const char *v = i == O_THREADS ? threads : s->val[i];
    if (i == O_STORE) redact_url(v, store, sizeof store), v = store;
    if (i == O_CACHE) redact_url(v, cache, sizeof cache), v = cache;
    c[n++] = ADB_LOGS(opts[i].flag, v);
  }
  adb__log_event(&s->log, "info", "config", "settings in effect", c, n);
}

int cli_serve(int argc, char **argv) {
  settings s;
  memset(&s, 0, sizeof s);
  int rc = read_args(&s, argc, argv);
  if (rc != 0) return rc > 0 ? 0 : 2;
  if (convert(&s) < 0) return 2;
  /* Signals are taken by sigwait in this thread only: block them before
   * any thread (the library's flush worker included) starts. */
  static sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  static sigset_t with_hup;
  with_hup = set;
  sigaddset(&with_hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &with_hup, NULL);
  signal(SIGPIPE, SIG_IGN);
  running r;
  memset(&r, 0, sizeof r);
  if (open_all(&s, &r) < 0) {
    close_all(&r);
    return 1;
  }
  printf("agentdb: listening on http://%s (store %s, cache %s, durability "
         "%s, %d threads)\n",
         adb__http_address(r.srv), s.cfg.store_url, s.cfg.cache_url,
         s.val[O_DURABILITY], s.threads);
  fflush(stdout);
  log_start(&s, &r);
  if (!r.auth && !is_loopback(adb__http_address(r.srv)))
    fprintf(stderr,
            "agentdb: WARNING: listening on %s beyond loopback with no API "
            "keys: anyone who can reach this address can read and change "
            "every agent (set --api-keys-file)\n",
            adb__http_address(r.srv));
  int sig = 0;
  while (sigwait(&with_hup, &sig) == 0 && sig == SIGHUP)
    reload_keys(&s, &r);
  adb__logf f[] = {ADB_LOGS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM")};
  adb__log_event(&s.log, "info", "shutdown",
                 "finishing in-flight requests, then draining the write "
                 "queue",
                 f, 1);
  pthread_t t;
  if (pthread_create(&t, NULL, second_signal, &set) == 0) pthread_detach(t);
  rc = close_all(&r);
  adb__logf g[] = {ADB_LOGS("result", rc == ADB_OK ? "ok" : adb_strerror(rc))};
  adb__log_event(&s.log, rc == ADB_OK ? "info" : "error", "stopped",
                 rc == ADB_OK ? "stopped cleanly"
                              : "draining the write queue failed",
                 g, 1);
  return rc == ADB_OK ? 0 : 1;
}
