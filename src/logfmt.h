/*
 * logfmt.h — the decision log on the wire (issue 10): writers of
 * adb__log_row in DSJSON (Vowpal Wabbit's --dsjson, for --cb_explore_adf),
 * JSON lines and CSV, and a DSJSON reader that turns each good line back
 * into an adb__log_row and reports each bad one with its line number.
 * The mapping is documented in docs/evaluation.md ("Export").
 */
#ifndef ADB_LOGFMT_H
#define ADB_LOGFMT_H

#include <stdint.h>
#include <stdio.h>

#include "offline.h"

enum { ADB__LOGFMT_DSJSON = 0, ADB__LOGFMT_JSONL = 1, ADB__LOGFMT_CSV = 2 };

/* "dsjson", "jsonl", "csv" -> ADB__LOGFMT_*, else -1. */
int adb__logfmt_parse(const char *name);
/* The MIME type of a format (for HTTP answers). */
const char *adb__logfmt_mime(int fmt);

/* Where a writer's bytes go: returns 0, or nonzero to stop (that value is
 * returned by the writer's calls). */
typedef int (*adb__logw_sink)(void *ctx, const char *p, size_t n);

typedef struct adb__logw adb__logw;

/* A writer that buffers up to about 64 KiB before calling sink. NULL on
 * ENOMEM. The CSV header is written with the first row (or by finish). */
adb__logw *adb__logw_new(int fmt, adb__logw_sink sink, void *ctx);
/* Writes one row; usable as an adb__log_fn with the writer as ctx. */
int adb__logw_row(void *w, const adb__log_row *row);
/* Flushes what is buffered. */
int adb__logw_finish(adb__logw *w);
int64_t adb__logw_rows(const adb__logw *w);
void adb__logw_free(adb__logw *w);

/* A sink writing to a FILE * (ctx). */
int adb__logw_file_sink(void *ctx, const char *p, size_t n);

/* ISO 8601 UTC with milliseconds, "2026-12-02T15:20:01.123Z" (25 bytes). */
void adb__iso_ms(int64_t ms, char out[32]);

/* Reads DSJSON lines from f: for each good line calls fn with the row
 * (agent = agent; valid during the call), for each bad one calls bad (may
 * be NULL) with its 1-based line number and the reason, and goes on. Blank
 * lines are skipped. Returns ADB_OK at the end of input, a nonzero return
 * of fn, or ADB_EIO / ADB_ENOMEM. *good and *bad_n (may be NULL) get the
 * counts. */
int adb__dsjson_read(FILE *f, const char *agent, adb__log_fn fn, void *ctx,
                     void (*bad)(void *ctx, long line, const char *why),
                     long *good, long *bad_n);
/* Parses one DSJSON line into the row of a caller-provided scratch (freed
 * with adb__dsjson_row_free); ADB_EINVAL with the reason in why. */
typedef struct adb__dsjson_row {
  adb__log_row row;
  adb__decision_rec d;
  float *user_emb;
  float **cand;
  float *cand_store;
} adb__dsjson_row;
int adb__dsjson_parse(const char *line, size_t len, const char *agent,
                      adb__dsjson_row *out, char *why, size_t whylen);
void adb__dsjson_row_free(adb__dsjson_row *r);

#endif
