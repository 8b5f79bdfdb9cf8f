/*
 * logimport.h — logged decisions stored into an agent as if they had
 * happened (logimport.c): the core of `agentdb import`.
 */
#ifndef ADB_LOGIMPORT_H
#define ADB_LOGIMPORT_H

#include <stdint.h>

#include "offline.h"

typedef struct adb__log_import adb__log_import;

typedef struct adb__log_import_stats {
  int64_t decisions; /* newly stored (an event id already stored: 0) */
  int64_t rewards;   /* newly applied */
  int64_t skipped;   /* rows the agent could not key */
} adb__log_import_stats;

/* Starts an import into the existing agent (its config decides the state
 * keys and features). On failure (ADB_ENOTFOUND for an unknown agent) *out
 * is still set, for adb__log_import_errmsg; free it. */
int adb__log_import_new(adb__store *st, const char *agent,
                        adb__log_import **out);
/* An adb__log_fn (ctx = the import): queues the row, writing a batch every
 * 500 rows. */
int adb__log_import_row(void *ctx, const adb__log_row *row);
/* Writes what is queued. */
int adb__log_import_finish(adb__log_import *im);
adb__log_import_stats adb__log_import_get_stats(const adb__log_import *im);
const char *adb__log_import_errmsg(const adb__log_import *im);
void adb__log_import_free(adb__log_import *im);

#endif
