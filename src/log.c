/*
 * log.c — structured event lines (see log.h).
 */
#define _GNU_SOURCE
#include "log.h"

#include <math.h>
#include <string.h>
#include <time.h>

void adb__log_now(char *s, size_t n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t k = strftime(s, n, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(s + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void put_json(adb__buf *b, const char *ts, const char *level,
                     const char *event, const char *msg, const adb__logf *f,
                     int n) {
  adb__buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":", ts, level);
  adb__json_str(b, event);
  adb__buf_puts(b, ",\"msg\":");
  adb__json_str(b, msg ? msg : "");
  for (int i = 0; i < n; i++) {
    adb__buf_putc(b, ',');
    adb__json_str(b, f[i].k);
    adb__buf_putc(b, ':');
    if (f[i].raw)
      adb__buf_puts(b, f[i].raw);
    else if (f[i].s)
      adb__json_str(b, f[i].s);
    else if (isfinite(f[i].n))
      adb__json_num9(b, f[i].n);
    else
      adb__buf_puts(b, "null");
  }
  adb__buf_puts(b, "}\n");
}

/* A text value: bare when it has no space, quote or '=', else quoted. */
static void put_text_value(adb__buf *b, const char *s) {
  if (*s && !strpbrk(s, " \"=\t\n")) {
    adb__buf_puts(b, s);
    return;
  }
  adb__json_str(b, s);
}

static void put_text(adb__buf *b, const char *ts, const char *level,
                     const char *event, const char *msg, const adb__logf *f,
                     int n) {
  adb__buf_printf(b, "%s %s %s: %s", ts, level, event, msg ? msg : "");
  for (int i = 0; i < n; i++) {
    adb__buf_printf(b, " %s=", f[i].k);
    if (f[i].raw)
      adb__buf_puts(b, f[i].raw);
    else if (f[i].s)
      put_text_value(b, f[i].s);
    else
      adb__buf_printf(b, "%.9g", f[i].n);
  }
  adb__buf_putc(b, '\n');
}

void adb__log_event(const adb__log *l, const char *level, const char *event,
                    const char *msg, const adb__logf *f, int n) {
  if (!l || !l->f) return;
  char ts[40];
  adb__log_now(ts, sizeof ts);
  adb__buf b = {0};
  if (l->json)
    put_json(&b, ts, level, event, msg, f, n);
  else
    put_text(&b, ts, level, event, msg, f, n);
  if (!b.oom) {
    fwrite(b.p, 1, b.len, l->f);
    fflush(l->f);
  }
  adb__buf_free(&b);
}
