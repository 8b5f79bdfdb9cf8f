/*
 * log_scan.h — helpers the stores' log_scan share (log_scan.c): the
 * catalogue of one scan and the assembly of each adb__log_row.
 */
#ifndef ADB_LOG_SCAN_H
#define ADB_LOG_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "offline.h"
#include "util.h"

/* Rows a backend reads per page (one query, no connection held while the
 * callback runs). */
#define ADB__LOG_PAGE 2000

typedef struct adb__logscan {
  adb__strmap cat; /* action id -> float[cat_dim] (malloc'd) */
  int cat_dim, rc;
  float *cand[ADB_MAX_CANDIDATES];
  int id_at[ADB_MAX_CANDIDATES];
  char ids[ADB_MAX_CANDIDATES * (ADB_ID_MAX + 1)];
  float user[ADB_MAX_EMBEDDING_DIM];
} adb__logscan;

/* The columns of one joined row besides the decision itself; blobs are
 * borrowed (NULL / 0 when SQL NULL). */
typedef struct adb__logscan_cols {
  const void *features;
  size_t features_len;
  const void *user_emb; /* little-endian float32 */
  size_t user_emb_len;
  int64_t n_rewards;
  double reward_sum;
  int64_t first_ms;
  int has_default; /* one of the rewards is the default ('~' id) */
} adb__logscan_cols;

/* The ids of a stored candidates array (["a","b",...]; ids never hold a
 * quote or a backslash), NUL-terminated in ids (room for
 * ADB_MAX_CANDIDATES ids) at offsets at[i]; their count, or -1 when the
 * text is not such an array. */
int adb__cand_ids(const char *json, char *ids, int *at);

/* Loads the agent's catalogue embeddings. x is large: allocate it. */
int adb__logscan_begin(adb__logscan *x, adb__store *st, const char *agent);
void adb__logscan_end(adb__logscan *x);
/* Builds the row of d (whose features get c's blob) and calls fn. */
int adb__logscan_emit(adb__logscan *x, adb__decision_rec *d,
                      const adb__logscan_cols *c, adb__log_fn fn, void *ctx);

#endif
