/*
 * hnsw.h — an in-memory approximate nearest-neighbour index (Hierarchical
 * Navigable Small World graphs, Malkov & Yashunin) over float32 vectors,
 * with an exact scan for small or narrowly filtered sets, tombstone
 * deletion, filtered search during graph traversal, and an on-disk
 * snapshot. The design essay is at the top of hnsw.c.
 *
 * Each vector is identified by a uint64 label chosen by the caller and
 * carries a uint64 tag (e.g. a hash of the owning user or agent) that
 * filtered searches can match during traversal.
 *
 * Threads: every function is thread-safe on one index. Searches run
 * concurrently with each other and with adds and removes; adds run
 * concurrently with each other. adb__hnsw_save waits for adds and removes
 * in progress and holds new ones back while it writes, but not searches.
 */
#ifndef ADB_HNSW_H
#define ADB_HNSW_H

#include <stddef.h>
#include <stdint.h>

#include "agentdb.h"
#include "vec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct adb__hnsw adb__hnsw;

/* Zero fields mean the default in brackets. */
typedef struct adb__hnsw_config {
  int dim;             /* required: 1..ADB_MAX_EMBEDDING_DIM */
  adb__metric metric;  /* [L2]; COSINE vectors are stored normalized */
  int M;               /* links per node above layer 0 [16]; 2..100;
                          layer 0 keeps 2 M */
  int ef_construction; /* candidate list while inserting [200]; >= 1 */
  int ef_search;       /* candidate list of a query that gives none [64] */
  int exact_threshold; /* below this many live vectors, searches scan
                          exactly [2000]; negative = never */
  uint64_t seed;       /* seeds the level of each label [0x5eed] */
} adb__hnsw_config;

/* Largest k or ef a query may ask for. */
#define ADB__HNSW_MAX_EF 100000
/* Most vectors one index can hold (ids are 31-bit). */
#define ADB__HNSW_MAX_NODES (((size_t)1 << 31) - 32)

/* Creates an empty index; *out is NULL on failure. ADB_EINVAL for a config
 * out of range, ADB_ENOMEM. */
int adb__hnsw_create(const adb__hnsw_config *cfg, adb__hnsw **out);
/* Frees the index; NULL is a no-op. No other call may be in progress. */
void adb__hnsw_destroy(adb__hnsw *h);

/* The configuration in effect (defaults filled in). */
void adb__hnsw_get_config(const adb__hnsw *h, adb__hnsw_config *out);

/* Adds vec (dim floats, copied) under label with tag. An existing label is
 * replaced: the old vector becomes a tombstone once the new one is linked.
 * ADB_EINVAL for non-finite values or, with COSINE, a zero vector;
 * ADB_EFULL when the index holds ADB__HNSW_MAX_NODES vectors; ADB_ENOMEM.
 * The index is unchanged on failure. */
int adb__hnsw_add(adb__hnsw *h, uint64_t label, uint64_t tag, const float *vec);

/* Marks label deleted: searches never return it again, but its node stays
 * in the graph for navigation until the index is rebuilt. ADB_ENOTFOUND
 * when label is not present. */
int adb__hnsw_remove(adb__hnsw *h, uint64_t label);

/* True when label is present (and not removed). */
int adb__hnsw_contains(adb__hnsw *h, uint64_t label);

/* Copies the stored vector of label (normalized under COSINE) to vec (dim
 * floats) and its tag to *tag (either may be NULL). ADB_ENOTFOUND. */
int adb__hnsw_get(adb__hnsw *h, uint64_t label, float *vec, uint64_t *tag);

typedef enum adb__hnsw_mode {
  ADB__HNSW_AUTO = 0,  /* exact scan for small or narrowly filtered sets */
  ADB__HNSW_GRAPH = 1, /* always walk the graph */
  ADB__HNSW_EXACT = 2  /* always scan every vector */
} adb__hnsw_mode;

/* One query; fill with designated initializers. */
typedef struct adb__hnsw_query {
  const float *vec;              /* dim floats */
  int k;                         /* hits wanted, 0..ADB__HNSW_MAX_EF */
  int ef;                        /* candidate list [config ef_search];
                                    raised to k when smaller */
  const adb__vec_filter *filter; /* NULL = every vector */
  adb__hnsw_mode mode;
} adb__hnsw_query;

/* Writes up to q->k hits to out (room for q->k), nearest first, and their
 * number to *n_out. Removed vectors and vectors the filter rejects are
 * never returned; the filter is applied while walking the graph, so k hits
 * come back whenever k acceptable vectors exist and the graph reaches them
 * (an exact scan is used instead when few vectors carry the filter's tag).
 * Distances are those of vec.h (squared L2; 1 - dot; cosine distance).
 * ADB_EINVAL for a bad query (NULL, k or ef out of range, non-finite
 * values, a zero vector under COSINE); ADB_ENOMEM. */
int adb__hnsw_search(adb__hnsw *h, const adb__hnsw_query *q, adb__vec_hit *out,
                     int *n_out);

typedef struct adb__hnsw_stats {
  size_t live;          /* vectors searches can return */
  size_t deleted;       /* tombstones still in the graph */
  int max_level;        /* top layer; -1 when empty */
  size_t bytes_vectors; /* vector storage */
  size_t bytes_links;   /* link lists, layer 0 and above */
  size_t bytes_other;   /* labels, tags, maps, search scratch */
  size_t bytes_total;   /* all heap memory the index holds */
} adb__hnsw_stats;

void adb__hnsw_stats_get(adb__hnsw *h, adb__hnsw_stats *out);

/* Writes a snapshot to path (through path.tmp, fsync'd, then renamed, so a
 * crash leaves the old file or the new one). ADB_EIO, ADB_ENOMEM. */
int adb__hnsw_save(adb__hnsw *h, const char *path);
/* Loads a snapshot written by adb__hnsw_save. ADB_ENOTFOUND when path
 * does not exist, ADB_EIO when it cannot be read, ADB_ECORRUPT when it is
 * not a valid snapshot of a supported version (bad magic, length,
 * checksum or structure), ADB_ENOMEM. */
int adb__hnsw_load(const char *path, adb__hnsw **out);
/* The same from len bytes at buf (borrowed). */
int adb__hnsw_load_buf(const void *buf, size_t len, adb__hnsw **out);

#ifdef __cplusplus
}
#endif

#endif
