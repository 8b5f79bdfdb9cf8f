/*
 * util_redis.c — a redis-server of the test's own; see util_redis.h.
 */
#include "util_redis.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int util_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

int util_redis_pings(int port) {
  struct timeval tv = {0, 200000};
  redisContext *r = redisConnectWithTimeout("127.0.0.1", port, tv);
  int ok = 0;
  if (r && !r->err) {
    redisSetTimeout(r, tv);
    redisReply *rep = redisCommand(r, "PING");
    ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (rep) freeReplyObject(rep);
  }
  if (r) redisFree(r);
  return ok;
}

int util_have_redis_server(void) {
  return system("command -v redis-server >/dev/null 2>&1") == 0;
}

int util_redis_start(util_redis *r) {
  if (!r->port) {
    r->port = util_free_port();
    const char *t = getenv("TMPDIR");
    snprintf(r->dir, sizeof r->dir, "%s/adb-redis-XXXXXX", t ? t : "/tmp");
    if (r->port < 0 || !mkdtemp(r->dir)) {
      perror("util_redis_start");
      return -1;
    }
  }
  char port[16];
  snprintf(port, sizeof port, "%d", r->port);
  r->pid = fork();
  if (r->pid < 0) return -1;
  if (r->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execlp("redis-server", "redis-server", "--port", port, "--bind",
           "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r->dir,
           (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 100 && !util_redis_pings(r->port); i++) {
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
  }
  if (util_redis_pings(r->port)) return 0;
  fprintf(stderr, "util_redis_start: no answer on port %d\n", r->port);
  return -1;
}

void util_redis_kill(util_redis *r) {
  if (r->pid > 0) {
    kill(r->pid, SIGCONT);
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
  }
  r->pid = -1;
}

void util_redis_cleanup(util_redis *r) {
  util_redis_kill(r);
  if (r->dir[0]) {
    char p[300];
    snprintf(p, sizeof p, "%s/dump.rdb", r->dir);
    unlink(p);
    rmdir(r->dir);
  }
  r->port = 0;
  r->dir[0] = '\0';
}
