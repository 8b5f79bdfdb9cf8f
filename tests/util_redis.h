/*
 * util_redis.h — a redis-server of the test's own, on a free loopback port
 * in a temporary folder, for tests that kill, freeze or restart Redis
 * (the shared servers of scripts/redis-test.sh must stay up for others).
 */
#ifndef ADB_UTIL_REDIS_H
#define ADB_UTIL_REDIS_H

#include <sys/types.h>

typedef struct util_redis {
  pid_t pid; /* -1 when not running */
  int port;  /* chosen on the first start, kept across restarts */
  char dir[256];
} util_redis;

/* A loopback TCP port that was free a moment ago. */
int util_free_port(void);
/* 1 when a Redis on 127.0.0.1:port answers PING within 200 ms. */
int util_redis_pings(int port);
/* 1 when redis-server is on PATH. */
int util_have_redis_server(void);
/* Starts (or restarts, on the same port) the server and waits for it.
 * Returns 0, or -1 with the reason on stderr. */
int util_redis_start(util_redis *r);
/* SIGKILL (after SIGCONT, in case it was frozen) and reap. */
void util_redis_kill(util_redis *r);
/* Kills it and removes its folder; r is reset for a new start. */
void util_redis_cleanup(util_redis *r);

#endif
