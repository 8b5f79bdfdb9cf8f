/*
 * util_server.h — starting the real `agentdb serve` ($ADB_BIN) on a free
 * loopback port over a temporary SQLite store, for suites that drive the
 * server over real sockets (with the client of util_http.h).
 */
#ifndef ADB_UTIL_SERVER_H
#define ADB_UTIL_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tsrv {
  pid_t pid;
  int port;
  char dir[256];
  char log[300];
} tsrv;

/* Starts the server on s->dir (made if empty) with extra arguments (NULL
 * terminated; may replace --listen). Returns 0, or -1 with the log's
 * name on stderr. */
int tsrv_start(tsrv *s, const char *const *extra);
/* Sends sig and waits (60 s at most, then SIGKILL); the exit status or -1. */
int tsrv_stop(tsrv *s, int sig);
/* Stops (SIGTERM) if running and removes the folder. */
void tsrv_cleanup(tsrv *s);
/* Writes an API keys file in s->dir; returns its path (static). */
const char *tsrv_keys(tsrv *s, const char *text);
/* The server's stderr so far (malloc'd). */
char *tsrv_log(const tsrv *s);
/* CPU time (user + system) of the server in clock ticks, and its VmData
 * in KiB, from /proc. */
long tsrv_cpu_ticks(const tsrv *s);
long tsrv_vmdata_kb(const tsrv *s);

#endif
