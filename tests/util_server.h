/*
 * util_server.h — starting the real `agentdb serve` ($ADB_BIN) on a free
 * loopback port over a temporary SQLite store, and a small HTTP/1.1
 * client, for suites that drive the server over real sockets.
 */
#ifndef ADB_UTIL_SERVER_H
#define ADB_UTIL_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

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

int64_t tsrv_now_ms(void);
/* A connected socket to the server (receive timeout 20 s), or -1. */
int tsrv_dial(int port);
int tsrv_send_all(int fd, const void *p, size_t n);

typedef struct tresp {
  int status;
  char head[4096];
  char *body;
  json_t *json;
} tresp;

void tresp_free(tresp *r);
/* Reads one answer from fd (skipping 100 Continue); 0 or -1. */
int tresp_read(int fd, tresp *r);
/* One request on a fresh connection; hdrs holds extra "K: v\r\n" lines.
 * status -1 when no answer came. */
tresp tsrv_call(const tsrv *s, const char *method, const char *path,
                const char *body, const char *hdrs);
/* The "error"."code" of an answer, or "". */
const char *tresp_code(const tresp *r);
/* Sends raw bytes and returns what comes back until the server closes or
 * timeout_ms passes (malloc'd, NUL-terminated). */
char *tsrv_raw(int port, const char *data, size_t n, int timeout_ms);

#endif
