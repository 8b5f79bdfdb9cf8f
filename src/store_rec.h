/*
 * store_rec.h — the records the store backends read and write, described
 * once as tables of columns.
 *
 * A record type (agent config, decision, user state, pattern, metrics row,
 * action) is stored as a row whose columns come in the same order in both
 * backends' SQL. Each is described here by an array of adb__col: the type
 * of a column and where its value lives in the C struct. Each backend has
 * one reader (a row into a struct, column i of the row into cols[i]) and
 * one binder (a struct into statement parameters), switching on the column
 * type with its own client calls (sqlite3_column_* / PQgetvalue); a lookup
 * that finds one row by key is described by an adb__rec_desc, which adds
 * the keys, the messages and the release of a half-read record.
 *
 * Reading rules, the same in both backends: columns that cannot fail
 * (numbers) are always read; a column that can fail (fixed text, malloc'd
 * text, an embedding, the agent's context keys) is skipped once an earlier
 * one failed, and the first failure is the answer (ADB_ECORRUPT for a value
 * that does not fit, ADB_ENOMEM). An algorithm that is no known name ends
 * the read at once with ADB_ECORRUPT.
 */
#ifndef ADB_STORE_REC_H
#define ADB_STORE_REC_H

#include <stddef.h>

#include "store.h"

typedef enum adb__col_type {
  ADB__COL_INT,  /* int */
  ADB__COL_I64,  /* int64_t */
  ADB__COL_F64,  /* double */
  ADB__COL_BOOL, /* int, 1 for true (read only) */
  ADB__COL_ID,   /* char[aux]: fixed buffer; a longer value is corrupt */
  ADB__COL_TEXT, /* char *: malloc'd on read, NULL for SQL NULL */
  ADB__COL_EMB,  /* float *: malloc'd on read; its dimension, an int, at
                    offset aux; stored as little-endian float32 bytes */
  ADB__COL_DIM,  /* int: a byte length / 4, an embedding's dimension (read
                    only) */
  ADB__COL_ALGO, /* adb_algorithm, stored by name */
  ADB__COL_KEYS  /* the agent's context keys as JSON array text; read into
                    the adb_agent_config, bound from the caller's text */
} adb__col_type;

typedef struct adb__col {
  adb__col_type type;
  size_t off; /* of the field in the record */
  size_t aux; /* ID: the buffer's size; EMB: the offset of the dimension */
} adb__col;

/* One record type found by one or two text keys (a SELECT whose
 * parameters are the keys, in order, and whose columns are cols). */
typedef struct adb__rec_desc {
  size_t size;             /* of the record, cleared before the read */
  const adb__col *cols;    /* the SELECT's columns, in order */
  int ncols;               /* how many */
  int nkeys;               /* 1 or 2 */
  size_t key_off[2];       /* where key i is copied in the record... */
  size_t key_size[2];      /* ...a buffer of this size; 0: not copied */
  const char *get, *read;  /* what failed: "get agent", "read agent" */
  const char *item;        /* "agent": "agent 'a1' not found"; the... */
  const char *missing;     /* ...message names the last key */
  void (*release)(void *); /* frees a half-read record; or NULL */
} adb__rec_desc;

/* Agent config: the columns after agent_id. Its insert binds the id, then
 * the first ADB__AGENT_STAMPS columns (context keys from the caller's
 * text), the time (as created and updated), then the columns after the two
 * stamps. */
enum { ADB__AGENT_STAMPS = 17, ADB__AGENT_NCOLS = 22 };
extern const adb__col adb__agent_cols[ADB__AGENT_NCOLS];
extern const adb__rec_desc adb__agent_desc;

/* Decision by (agent, event id); user state by user; pattern by (agent,
 * id). A put of a user state or a pattern binds its keys, then every column
 * but the last (the time, now when not set). */
extern const adb__rec_desc adb__decision_desc;
extern const adb__rec_desc adb__user_state_desc;
extern const adb__rec_desc adb__pattern_desc;

/* A metrics row, all eight columns. */
enum { ADB__METRICS_NCOLS = 8 };
extern const adb__col adb__metrics_cols[ADB__METRICS_NCOLS];

/* An action as listed: id, disabled, embedding bytes (as its dimension);
 * the metadata column that follows is the backend's (copied or borrowed). */
enum { ADB__ACTION_NCOLS = 3 };
extern const adb__col adb__action_cols[ADB__ACTION_NCOLS];

/* Whether a column of this type can fail to read (and so is skipped once
 * an earlier column failed). */
int adb__col_may_fail(adb__col_type t);

/* Parses a stored algorithm name; ADB_ECORRUPT for NULL or an unknown. */
int adb__algo_parse(const char *name, adb_algorithm *out);

/* Copies the lookup keys into the record where desc says. */
void adb__rec_keys(const adb__rec_desc *d, void *rec, const char *const *key);

#endif
