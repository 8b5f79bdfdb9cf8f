/*
 * util_server.c — see util_server.h.
 */
#define _GNU_SOURCE
#include "util_server.h"

#include "util_http.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int read_port(int fd) {
  char line[1024];
  size_t n = 0;
  int64_t deadline = util_now_ms() + 60000;
  while (n < sizeof line - 1) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - util_now_ms())) <= 0) return -1;
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
  int64_t deadline = util_now_ms() + 60000;
  while (waitpid(s->pid, &st, WNOHANG) == 0) {
    if (util_now_ms() > deadline) {
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
