/*
 * store_pg.h — what the PostgreSQL backend offers beyond store.h: running
 * its migrations alone (for `agentdb migrate`) and its tests' hooks.
 */
#ifndef ADB_STORE_PG_H
#define ADB_STORE_PG_H

#include <stddef.h>

#include "agentdb.h"

/* Told about each embedded migration in order: applied = 1 if this call
 * applied it, 0 if it was already recorded in schema_migrations. */
typedef void (*adb__pg_migrate_fn)(void *arg, int version, const char *name,
                                   int applied);

/* Connects to the postgresql:// URL, applies the missing migrations under
 * the migration advisory lock (waiting for another process that holds it)
 * and runs the partition maintenance, as opening the store does. fn may be
 * NULL. Returns ADB_OK, ADB_EURL, ADB_EUNAVAIL or ADB_ESTORE with the
 * reason in err. */
int adb__pg_migrate(const char *url, const adb_config *cfg,
                    adb__pg_migrate_fn fn, void *arg, char *err, size_t errlen);

/* Test hook (fault injection): the next n batch COMMITs succeed on the
 * server but are reported to the caller as a lost connection (the answer
 * is read, then the connection is dropped), which is exactly what a client
 * sees when the connection dies after COMMIT reached the server. Returns
 * how many of the previous setting had not fired yet. */
int adb__pg_fault_lose_commit_answers(int n);

#endif
