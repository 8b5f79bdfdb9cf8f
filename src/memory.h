/*
 * memory.h — the vector memory of an adb handle: HNSW indexes (hnsw.h) of
 * episodes (one per agent), learned patterns with embeddings (one per
 * agent) and user states (one per embedding dimension), kept current from
 * the store and searched by cosine similarity. The public searches
 * (adb_episode_similar, adb_user_similar, adb_pattern_search) live in
 * memory.c; the design essay is at its top.
 */
#ifndef ADB_MEMORY_H
#define ADB_MEMORY_H

#include <stdint.h>

#include "agentdb.h"
#include "store.h"

typedef struct adb__memory adb__memory;

/* Creates the memory of db (whose store is open): loads the snapshot of
 * the index directory if there is a usable one, else rebuilds from the
 * store, catches up from the store and starts the poller that picks up
 * rows written by other handles. Store errors while loading are reported
 * on stderr and retried by the poller; only ADB_ENOMEM fails (with the
 * reason in err). */
int adb__memory_open(adb *db, adb__memory **out, char *err, size_t errlen);

/* Stops the poller, saves the snapshot (if there is an index directory)
 * and frees everything. NULL is a no-op. No search or add may run. */
void adb__memory_close(adb__memory *m);

/* Adds (or, for a newer time, replaces) one row written through this
 * handle, so that it is searchable at once; the poller would find it
 * later anyway. Rows without an embedding or with a zero one are ignored.
 * Returns ADB_OK or ADB_ENOMEM (the poller retries nothing: the row then
 * waits for a restart). m may be NULL. */
int adb__memory_add(adb__memory *m, const adb__vec_row *row);

/* Erasure: removes from the indexes every vector of agent (its episodes
 * and patterns) when agent is not NULL, else every vector of user (its
 * state and its episodes in every agent), rebuilding each index that lost
 * one so that no copy stays in memory, and deletes the on-disk snapshot.
 * Call after the rows are gone from the store: scans of the store wait
 * meanwhile, so none re-adds them. Returns how many vectors were removed
 * or a negative ADB_E* code. m may be NULL. */
int adb__memory_forget(adb__memory *m, const char *agent, const char *user);

/* Cold start: the ids of up to k users (k <= 1000) nearest to emb (dim
 * floats) — or, when emb is NULL, to the user's own stored state — with a
 * positive cosine similarity, excluding the user itself, nearest first,
 * into out[0..). Returns how many (0 when there is no such index or
 * vector) or a negative ADB_E* code. */
int adb__memory_neighbours(adb__memory *m, const char *user, const float *emb,
                           int dim, int k, char (*out)[ADB_ID_MAX + 1]);

#endif
