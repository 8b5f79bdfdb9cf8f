/*
 * log.h — the structured event log of `agentdb serve`: one line per
 * notable event (start, config, store or cache down and back, a slow
 * request, an error answer, shutdown), as a JSON object
 *   {"ts":"2026-01-02T03:04:05.678Z","level":"info","event":"start",
 *    "msg":"...", <fields>}
 * or, in text format, "TS LEVEL EVENT: MSG key=value ...". Lines are
 * written whole with one fwrite each, so concurrent events do not mix.
 */
#ifndef ADB_LOG_H
#define ADB_LOG_H

#include <stdio.h>

#include "json.h"

typedef struct adb__log {
  FILE *f;  /* NULL: events are dropped */
  int json; /* 1: JSON lines, 0: text */
} adb__log;

/* A field: a string (s != NULL), a number, or raw JSON (raw != NULL; in
 * text format written as is). */
typedef struct adb__logf {
  const char *k, *s;
  double n;
  const char *raw;
} adb__logf;

static inline adb__logf adb__logs(const char *k, const char *v) {
  return (adb__logf){k, v ? v : "", 0, NULL};
}
#define ADB_LOGS(k, v) adb__logs((k), (v))
#define ADB_LOGN(k, v) ((adb__logf){(k), NULL, (double)(v), NULL})
#define ADB_LOGRAW(k, v) ((adb__logf){(k), NULL, 0, (v)})

/* Writes one event line; level is "info", "warn" or "error". */
void adb__log_event(const adb__log *l, const char *level, const char *event,
                    const char *msg, const adb__logf *f, int n);

/* The ISO-8601 UTC time now, with milliseconds, into s. */
void adb__log_now(char *s, size_t n);

#endif /* ADB_LOG_H */
