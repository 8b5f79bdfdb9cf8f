/*
 * util_server.c — see util_server.h.
 */
#define _GNU_SOURCE
#include "util_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t tsrv_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_port(int fd) {
  char line[1024];
  size_t n = 0;
  int64_t deadline = tsrv_now_ms() + 60000;
  while (n < sizeof line - 1) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - tsrv_now_ms())) <= 0) return -1;
    if (read(fd, line + n, 1) != 1) return -1;
    if (line[n] != '\n') {
      n++;
      continue;
    }
    line[n] = '\0';
    const char *u = strstr(line, "http://");
    const char *c = u ? strchr(u + 7, ':') : NULL;
    if (c) return atoi(c + 1);
    n = 0;
  }
  return -1;
}

int tsrv_start(tsrv *s, const char *const *extra) {
  if (!s->dir[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/adb-srv-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) return -1;
  }
  const char *bin = getenv("ADB_BIN");
  if (!bin) return -1;
  char store[400];
  snprintf(store, sizeof store, "sqlite://%s/agentdb.db", s->dir);
  snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
  const char *argv[48] = {bin,         "serve", "--store",         store,
                          "--threads", "2",     "--write-threads", "8"};
  int n = 8, listen = 0;
  for (int i = 0; extra && extra[i] && n < 44; i++) {
    if (strcmp(extra[i], "--listen") == 0) listen = 1;
    argv[n++] = extra[i];
  }
  if (!listen) {
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
  }
  argv[n] = NULL;
  int p[2];
  if (pipe(p) != 0) return -1;
  s->pid = fork();
  if (s->pid < 0) return -1;
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    int lfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(p[1], 1);
    if (lfd >= 0) dup2(lfd, 2);
    close(p[0]);
    close(p[1]);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  close(p[1]);
  s->port = read_port(p[0]);
  close(p[0]);
  if (s->port > 0) return 0;
  fprintf(stderr, "server did not start; log in %s\n", s->log);
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
  return -1;
}

int tsrv_stop(tsrv *s, int sig) {
  if (s->pid <= 0) return -1;
  kill(s->pid, sig);
  int st = 0;
  int64_t deadline = tsrv_now_ms() + 60000;
  while (waitpid(s->pid, &st, WNOHANG) == 0) {
    if (tsrv_now_ms() > deadline) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &st, 0);
      s->pid = 0;
      return -1;
    }
    usleep(10000);
  }
  s->pid = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void tsrv_cleanup(tsrv *s) {
  if (s->pid > 0) tsrv_stop(s, SIGTERM);
  if (s->dir[0]) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", s->dir);
  }
  s->dir[0] = '\0';
}

const char *tsrv_keys(tsrv *s, const char *text) {
  static char path[400];
  if (!s->dir[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/adb-srv-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) return NULL;
  }
  snprintf(path, sizeof path, "%s/keys", s->dir);
  FILE *f = fopen(path, "w");
  if (!f) return NULL;
  fputs(text, f);
  fclose(f);
  return path;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap + 1);
  size_t k;
  while ((k = fread(b + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap) {
      cap *= 2;
      b = realloc(b, cap + 1);
    }
  }
  fclose(f);
  b[n] = '\0';
  return b;
}

char *tsrv_log(const tsrv *s) {
  return slurp(s->log);
}

long tsrv_cpu_ticks(const tsrv *s) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)s->pid);
  char *t = slurp(path);
  const char *p = strrchr(t, ')');
  long ut = -1, st = -1;
  /* fields after the name: state(3) ... utime(14) stime(15) */
  if (p)
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut,
           &st);
  free(t);
  return ut < 0 ? -1 : ut + st;
}

long tsrv_vmdata_kb(const tsrv *s) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
  char *t = slurp(path);
  const char *p = strstr(t, "VmData:");
  long kb = p ? atol(p + 7) : -1;
  free(t);
  return kb;
}

int tsrv_dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

int tsrv_send_all(int fd, const void *data, size_t n) {
  const char *p = data;
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

void tresp_free(tresp *r) {
  free(r->body);
  json_decref(r->json);
  memset(r, 0, sizeof *r);
}

/* Reads byte by byte up to the end of the head: simple, and leaves any
 * following answer in the socket. */
int tresp_read(int fd, tresp *r) {
  memset(r, 0, sizeof *r);
  for (;;) {
    size_t n = 0;
    while (n < sizeof r->head - 1) {
      ssize_t k = recv(fd, r->head + n, 1, 0);
      if (k <= 0) return -1;
      n++;
      if (n >= 4 && memcmp(r->head + n - 4, "\r\n\r\n", 4) == 0) break;
    }
    r->head[n] = '\0';
    r->status = atoi(r->head + 9);
    const char *cl = strcasestr(r->head, "\r\ncontent-length:");
    size_t want = cl ? (size_t)atol(cl + 17) : 0, have = 0;
    r->body = malloc(want + 1);
    while (have < want) {
      ssize_t k = recv(fd, r->body + have, want - have, 0);
      if (k <= 0) {
        free(r->body);
        r->body = NULL;
        return -1;
      }
      have += (size_t)k;
    }
    r->body[want] = '\0';
    if (r->status == 100) {
      free(r->body);
      r->body = NULL;
      continue;
    }
    json_error_t e;
    r->json = json_loadb(r->body, want, 0, &e);
    return 0;
  }
}

tresp tsrv_call(const tsrv *s, const char *method, const char *path,
                const char *body, const char *hdrs) {
  tresp r;
  memset(&r, 0, sizeof r);
  size_t bl = body ? strlen(body) : 0;
  char *req = malloc(bl + 4096);
  int n = snprintf(req, 4096,
                   "%s %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n",
                   method, path, hdrs ? hdrs : "", bl);
  memcpy(req + n, body ? body : "", bl);
  int fd = tsrv_dial(s->port);
  int ok = fd >= 0 && tsrv_send_all(fd, req, (size_t)n + bl) == 0 &&
           tresp_read(fd, &r) == 0;
  if (fd >= 0) close(fd);
  free(req);
  if (!ok) r.status = -1;
  return r;
}

const char *tresp_code(const tresp *r) {
  json_t *e = json_object_get(r->json, "error");
  const char *c = json_string_value(json_object_get(e, "code"));
  return c ? c : "";
}

char *tsrv_raw(int port, const char *data, size_t n, int timeout_ms) {
  int fd = tsrv_dial(port);
  if (fd < 0) return strdup("");
  tsrv_send_all(fd, data, n);
  size_t cap = 1 << 16, len = 0;
  char *out = calloc(1, cap + 1);
  int64_t deadline = tsrv_now_ms() + timeout_ms;
  while (len < cap) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int left = (int)(deadline - tsrv_now_ms());
    if (left <= 0 || poll(&p, 1, left) <= 0) break;
    ssize_t k = recv(fd, out + len, cap - len, 0);
    if (k <= 0) break;
    len += (size_t)k;
  }
  close(fd);
  return out;
}
