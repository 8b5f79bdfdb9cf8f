/*
 * bench_http.c — cached decide over HTTP keep-alive against a raw Redis GET,
 * measured in the same run.
 *
 *   bench_http                  the whole case: starts `agentdb serve` on a
 *                               temporary SQLite store and a throwaway
 *                               redis-server, then prints one line per
 *                               concurrency with both and the ratio
 *   bench_http load [options]   the load generator alone, against any URL
 *
 * The load generator is one thread with epoll and N keep-alive connections,
 * each with one request outstanding (like redis-benchmark without -P), so
 * that both sides of the comparison are driven the same way. Latency is
 * taken per request from send to the last byte of the answer; warm-up
 * requests are not counted. The agentdb binary is $ADB_BIN or the
 * `agentdb` next to this program.
 *
 * Durable rewards over HTTP (sync durability, the SQLite store with
 * synchronous=FULL) at 64 and 512 connections, each reward new: rewards/s,
 * latency and rewards per commit (from /metrics), against the anchor of
 * the same run, a raw durable SQLite commit in the same folder: c
 * connections with one reward each in flight cannot pass c / its latency.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anchor_commit.h"

typedef struct result {
  double p50_us, p99_us, rps;
  long ok, errors;
} result;

typedef struct lconn {
  int fd;
  char in[65536];
  size_t in_len;
  int64_t t0;
  long seq;
} lconn;

typedef struct load {
  const char *host;
  int port;
  int conns;
  long requests, warmup;
  const char *method, *path, *extra_header;
  /* Bodies cycled through, one per request. */
  char **bodies;
  int n_bodies;
} load;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int dial(const char *host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, host, &sa.sin_addr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Length of a complete answer at the start of buf, 0 if incomplete, -1 if
 * malformed; *status its status code. */
static long answer_len(const char *buf, size_t len, int *status) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  if (!end) return 0;
  if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(buf + 9);
  long cl = 0;
  for (const char *p = buf; p < end; p++) {
    if (*p == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0) {
      cl = atol(p + 16);
      break;
    }
  }
  long total = (long)(end + 4 - buf) + cl;
  return (size_t)total <= len ? total : 0;
}

static size_t build_request(const load *L, long seq, char *out, size_t cap) {
  const char *body = L->n_bodies ? L->bodies[seq % L->n_bodies] : NULL;
  size_t bl = body ? strlen(body) : 0;
  int n = snprintf(out, cap,
                   "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%s"
                   "Content-Type: application/json\r\nContent-Length: %zu"
                   "\r\n\r\n",
                   L->method, L->path, L->host,
                   L->extra_header ? L->extra_header : "",
                   L->extra_header ? "\r\n" : "", "", bl);
  if (n < 0 || (size_t)n + bl >= cap) return 0;
  memcpy(out + n, body, bl);
  return (size_t)n + bl;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int start_request(const load *L, lconn *c, long seq) {
  char req[70000];
  size_t n = build_request(L, seq, req, sizeof req);
  c->seq = seq;
  c->t0 = now_ns();
  return n ? send_all(c->fd, req, n) : -1;
}

/* Runs the load; returns 0 and fills *r, or -1. */
static int run_load(const load *L, result *r) {
  long total = L->requests + L->warmup;
  int64_t *lat = calloc((size_t)total, sizeof *lat);
  lconn *cs = calloc((size_t)L->conns, sizeof *cs);
  int ep = epoll_create1(0);
  if (!lat || !cs || ep < 0) return -1;
  long next = 0, done = 0, errors = 0;
  int64_t t_start = now_ns();
  for (int i = 0; i < L->conns; i++) {
    cs[i].fd = dial(L->host, L->port);
    if (cs[i].fd < 0) {
      fprintf(stderr, "bench_http: cannot connect to %s:%d\n", L->host,
              L->port);
      return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    if (next < total) start_request(L, &cs[i], next++);
  }
  struct epoll_event evs[64];
  while (done < total) {
    int n = epoll_wait(ep, evs, 64, 10000);
    if (n <= 0) {
      fprintf(stderr, "bench_http: no answer for 10 s\n");
      return -1;
    }
    for (int i = 0; i < n; i++) {
      lconn *c = evs[i].data.ptr;
      ssize_t k = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
      if (k <= 0) {
        fprintf(stderr, "bench_http: connection closed by the server\n");
        return -1;
      }
      c->in_len += (size_t)k;
      int status = 0;
      long al = answer_len(c->in, c->in_len, &status);
      if (al < 0) return -1;
      if (al == 0) continue;
      int64_t t1 = now_ns();
      memmove(c->in, c->in + al, c->in_len - (size_t)al);
      c->in_len -= (size_t)al;
      if (status < 200 || status > 299) errors++;
      lat[c->seq] = t1 - c->t0;
      done++;
      if (done == L->warmup) t_start = t1;
      if (next < total) start_request(L, c, next++);
    }
  }
  int64_t t_end = now_ns();
  for (int i = 0; i < L->conns; i++)
    close(cs[i].fd);
  close(ep);
  qsort(lat + L->warmup, (size_t)L->requests, sizeof *lat, cmp_i64);
  r->p50_us = (double)lat[L->warmup + L->requests / 2] / 1e3;
  r->p99_us = (double)lat[L->warmup + L->requests * 99 / 100] / 1e3;
  r->rps = (double)L->requests / ((double)(t_end - t_start) / 1e9);
  r->ok = L->requests - errors;
  r->errors = errors;
  free(lat);
  free(cs);
  return 0;
}

/* ---------------------------------------------------- processes and setup */

/* One blocking HTTP exchange; returns the status, the body in out. */
static int http_once(const char *host, int port, const char *method,
                     const char *path, const char *body, char *out,
                     size_t cap) {
  int fd = dial(host, port);
  if (fd < 0) return -1;
  load L = {.host = host, .method = method, .path = path};
  char *b = (char *)(body ? body : "");
  L.bodies = &b;
  L.n_bodies = 1;
  char req[70000];
  size_t n = build_request(&L, 0, req, sizeof req);
  if (send_all(fd, req, n) < 0) {
    close(fd);
    return -1;
  }
  size_t len = 0;
  int status = -1;
  long al = 0;
  static char in[1 << 20];
  while ((al = answer_len(in, len, &status)) == 0) {
    ssize_t k = recv(fd, in + len, sizeof in - len, 0);
    if (k <= 0) break;
    len += (size_t)k;
  }
  close(fd);
  if (al <= 0) return -1;
  if (out) snprintf(out, cap, "%s", strstr(in, "\r\n\r\n") + 4);
  return status;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  socklen_t sl = sizeof sa;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

/* Starts argv with stdout to a pipe (if out_fd) and stderr to log. */
static pid_t spawn(char *const argv[], int *out_fd, const char *log) {
  int p[2] = {-1, -1};
  if (out_fd && pipe(p) < 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench */
    int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (lfd >= 0) dup2(lfd, 2);
    if (out_fd)
      dup2(p[1], 1);
    else if (lfd >= 0)
      dup2(lfd, 1);
    if (out_fd) {
      close(p[0]);
      close(p[1]);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  if (out_fd) {
    close(p[1]);
    *out_fd = p[0];
  }
  return pid;
}

/* Reads the server's "listening on http://host:port" line. */
static int read_port(int fd) {
  char line[512];
  size_t n = 0;
  int64_t deadline = now_ns() + 20 * 1000000000LL;
  while (n < sizeof line - 1 && now_ns() < deadline) {
    ssize_t k = read(fd, line + n, 1);
    if (k <= 0) return -1;
    if (line[n] == '\n') {
      line[n] = '\0';
      const char *u = strstr(line, "http://");
      const char *colon = u ? strchr(u + 7, ':') : NULL;
      if (colon) return atoi(colon + 1);
      n = 0;
      continue;
    }
    n++;
  }
  return -1;
}

static void stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int st;
  waitpid(pid, &st, 0);
}

static void find_agentdb(const char *self, char *out, size_t cap) {
  const char *env = getenv("ADB_BIN");
  if (env && *env) {
    snprintf(out, cap, "%s", env);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    snprintf(exe, sizeof exe, "%s", self);
  else
    exe[n] = '\0';
  snprintf(out, cap, "%s/agentdb", dirname(exe));
}

/* Runs redis-benchmark GET at c connections; 0 on success. */
static int redis_get(int port, int c, long n, result *r) {
  char cmd[256];
  snprintf(cmd, sizeof cmd,
           "redis-benchmark -h 127.0.0.1 -p %d -c %d -n %ld -t set,get "
           "--csv 2>/dev/null",
           port, c, n);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  char line[512];
  int found = 0;
  while (fgets(line, sizeof line, f)) {
    double rps, avg, mn, p50, p95, p99;
    if (sscanf(line, "\"GET\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"",
               &rps, &avg, &mn, &p50, &p95, &p99) == 6) {
      r->rps = rps;
      r->p50_us = p50 * 1000;
      r->p99_us = p99 * 1000;
      found = 1;
    }
  }
  pclose(f);
  return found ? 0 : -1;
}

static char **decide_bodies(int n_users) {
  char **b = calloc((size_t)n_users, sizeof *b);
  for (int u = 0; u < n_users; u++) {
    char buf[2048];
    int k = snprintf(buf, sizeof buf,
                     "{\"user_id\":\"user-%d\",\"candidates\":[", u);
    for (int i = 0; i < 20; i++)
      k += snprintf(buf + k, sizeof buf - (size_t)k, "%s\"item-%d\"",
                    i ? "," : "", i);
    snprintf(buf + k, sizeof buf - (size_t)k,
             "],\"context\":{\"device\":\"tv\"},\"k\":5}");
    b[u] = strdup(buf);
  }
  return b;
}

static int setup_agent(int port) {
  char body[4096];
  int st = http_once("127.0.0.1", port, "PUT", "/v1/agents/bench",
                     "{\"context_keys\":[\"device\"]}", NULL, 0);
  if (st != 200) return -1;
  int k = snprintf(body, sizeof body, "{\"actions\":[");
  for (int i = 0; i < 20; i++)
    k += snprintf(body + k, sizeof body - (size_t)k, "%s{\"id\":\"item-%d\"}",
                  i ? "," : "", i);
  snprintf(body + k, sizeof body - (size_t)k, "]}");
  st = http_once("127.0.0.1", port, "POST", "/v1/agents/bench/actions", body,
                 NULL, 0);
  return st == 200 ? 0 : -1;
}

/* A counter of the server's /metrics, or -1. */
static double metric(int port, const char *name) {
  static char body[1 << 20];
  if (http_once("127.0.0.1", port, "GET", "/metrics", NULL, body,
                sizeof body) != 200)
    return -1;
  char want[128];
  snprintf(want, sizeof want, "\n%s ", name);
  const char *p = strstr(body, want);
  return p ? strtod(p + strlen(want), NULL) : -1;
}

/* Durable rewards at c connections, each with a new id. */
static int reward_case(int port, const char *dir, int c, long n) {
  static long run;
  long total = n + n / 10;
  char **b = calloc((size_t)total, sizeof *b);
  if (!b) return -1;
  run++;
  for (long i = 0; i < total; i++) {
    char buf[192];
    snprintf(buf, sizeof buf,
             "{\"reward_id\":\"r%ld-%ld\",\"user_id\":\"user-%ld\","
             "\"action\":\"item-%ld\",\"reward\":1}",
             run, i, i % 1000, i % 20);
    b[i] = strdup(buf);
  }
  load L = {.host = "127.0.0.1",
            .port = port,
            .conns = c,
            .requests = n,
            .warmup = n / 10,
            .method = "POST",
            .path = "/v1/agents/bench/rewards",
            .bodies = b,
            .n_bodies = total};
  double b0 = metric(port, "agentdb_flush_batches_total");
  result r;
  int rc = run_load(&L, &r);
  double b1 = metric(port, "agentdb_flush_batches_total");
  for (long i = 0; i < total; i++)
    free(b[i]);
  free(b);
  if (rc < 0) return -1;
  double lat = anchor_commit_latency(dir), bound = c / lat;
  printf("http durable reward, c=%-3d           p50 %7.1f us  p99 %7.1f us  "
         "%9.0f req/s | %.1f rewards per commit | anchor: durable commit "
         "%.2f ms, so c/latency = %.0f/s, ratio %.2f%s\n",
         c, r.p50_us, r.p99_us, r.rps, b1 > b0 ? total / (b1 - b0) : 0,
         lat * 1e3, bound, r.rps / bound,
         r.errors ? " (with non-2xx answers)" : "");
  return 0;
}

static void print_line(const char *name, const result *h, const result *rd,
                       int by_latency) {
  double ratio = by_latency ? h->p50_us / rd->p50_us : h->rps / rd->rps;
  printf("%-34s p50 %7.1f us  p99 %7.1f us  %9.0f req/s | redis GET p50 "
         "%7.1f us  p99 %7.1f us  %9.0f req/s | %s %.2f (target %s)\n",
         name, h->p50_us, h->p99_us, h->rps, rd->p50_us, rd->p99_us, rd->rps,
         by_latency ? "p50 ratio" : "throughput ratio", ratio,
         by_latency ? "<= 1.5" : ">= 1");
}

static int run_case(const char *self, int quick) {
  char bin[PATH_MAX], tmp[] = "/tmp/bench_http.XXXXXX";
  find_agentdb(self, bin, sizeof bin);
  if (!mkdtemp(tmp)) return 1;
  char store[PATH_MAX + 32], log[PATH_MAX + 32];
  snprintf(store, sizeof store, "sqlite://%s/bench.db", tmp);
  snprintf(log, sizeof log, "%s/server.log", tmp);
  char *sargv[] = {bin,       "serve", "--listen", "127.0.0.1:0",
                   "--store", store,   NULL};
  int out_fd;
  pid_t srv = spawn(sargv, &out_fd, log);
  int port = srv > 0 ? read_port(out_fd) : -1;
  int rc = 1, rport = free_port();
  pid_t rds = 0;
  if (port <= 0) {
    fprintf(stderr, "bench_http: %s did not start:\n", bin);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "cat %s >&2", log);
    if (system(cmd) != 0) fprintf(stderr, "(no log)\n");
    goto out;
  }
  char rport_s[16];
  snprintf(rport_s, sizeof rport_s, "%d", rport);
  char *rargv[] = {"redis-server", "--port", rport_s, "--bind",
                   "127.0.0.1",    "--save", "",      "--appendonly",
                   "no",           "--dir",  tmp,     NULL};
  rds = spawn(rargv, NULL, log);
  usleep(300000);
  if (setup_agent(port) < 0) {
    fprintf(stderr, "bench_http: agent setup failed\n");
    goto out;
  }
  load L = {.host = "127.0.0.1",
            .port = port,
            .method = "POST",
            .path = "/v1/agents/bench/decide",
            .bodies = decide_bodies(100),
            .n_bodies = 100};
  result h1, h32, r1, r32, z1, z32;
  long n1 = quick ? 5000 : 20000, n32 = quick ? 50000 : 200000;
  L.conns = 1, L.requests = n1, L.warmup = n1 / 10;
  if (run_load(&L, &h1) < 0) goto out;
  L.conns = 32, L.requests = n32, L.warmup = n32 / 20;
  if (run_load(&L, &h32) < 0) goto out;
  /* The HTTP layer alone (no library call), to tell its cost apart. */
  load Z = {
      .host = "127.0.0.1", .port = port, .method = "GET", .path = "/healthz"};
  Z.conns = 1, Z.requests = n1, Z.warmup = n1 / 10;
  if (run_load(&Z, &z1) < 0) goto out;
  Z.conns = 32, Z.requests = n32, Z.warmup = n32 / 20;
  if (run_load(&Z, &z32) < 0) goto out;
  if (redis_get(rport, 1, n1, &r1) < 0 || redis_get(rport, 32, n32, &r32) < 0) {
    fprintf(stderr, "bench_http: redis-benchmark failed (is redis-server "
                    "installed?)\n");
    goto out;
  }
  print_line("http cached decide, 20 cand, c=1", &h1, &r1, 1);
  print_line("http cached decide, 20 cand, c=32", &h32, &r32, 0);
  print_line("(http GET /healthz, c=1)", &z1, &r1, 1);
  print_line("(http GET /healthz, c=32)", &z32, &r32, 0);
  if (h1.errors || h32.errors)
    printf("note: %ld non-2xx answers\n", h1.errors + h32.errors);
  if (reward_case(port, tmp, 64, quick ? 5000 : 20000) < 0 ||
      reward_case(port, tmp, 512, quick ? 10000 : 40000) < 0)
    goto out;
  rc = 0;
out:
  stop(srv);
  stop(rds);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0)
    fprintf(stderr, "bench_http: could not remove %s\n", tmp);
  return rc;
}

static int run_load_cli(int argc, char **argv) {
  load L = {.host = "127.0.0.1",
            .port = 8080,
            .conns = 1,
            .requests = 10000,
            .warmup = 1000,
            .method = "GET",
            .path = "/healthz"};
  char *body = NULL;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--host"))
      L.host = v;
    else if (!strcmp(k, "--port"))
      L.port = atoi(v);
    else if (!strcmp(k, "-c"))
      L.conns = atoi(v);
    else if (!strcmp(k, "-n"))
      L.requests = atol(v);
    else if (!strcmp(k, "--warmup"))
      L.warmup = atol(v);
    else if (!strcmp(k, "--method"))
      L.method = v;
    else if (!strcmp(k, "--path"))
      L.path = v;
    else if (!strcmp(k, "--body"))
      body = (char *)v;
    else if (!strcmp(k, "--header"))
      L.extra_header = v;
    else if (!strcmp(k, "--decide")) {
      L.method = "POST";
      L.path = v;
      L.bodies = decide_bodies(100);
      L.n_bodies = 100;
    } else {
      fprintf(stderr, "bench_http load: unknown option %s\n", k);
      return 2;
    }
  }
  if (body) {
    L.bodies = &body;
    L.n_bodies = 1;
  }
  result r;
  if (run_load(&L, &r) < 0) return 1;
  printf("%s %s c=%d: p50 %.1f us  p99 %.1f us  %.0f req/s  errors %ld\n",
         L.method, L.path, L.conns, r.p50_us, r.p99_us, r.rps, r.errors);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && !strcmp(argv[1], "load")) return run_load_cli(argc, argv);
  int quick = argc == 2 && !strcmp(argv[1], "--quick");
  if (argc > 1 && !quick) {
    fprintf(stderr,
            "usage: bench_http [--quick]  run the decide-vs-Redis case\n"
            "       bench_http load [--host H] [--port P] [-c N] [-n N]\n"
            "                  [--warmup N] [--method M] [--path P]\n"
            "                  [--body JSON] [--header 'K: v'] [--decide P]\n");
    return 2;
  }
  return run_case(argv[0], quick);
}
