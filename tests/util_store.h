/*
 * util_store.h — fresh stores for the store conformance suite, and direct
 * SQL on a store's database (behind the backend's back) for inspection and
 * fault injection.
 *
 * A "kind" is a URL scheme: "sqlite" (always available) or "postgresql"
 * (when env AGENTDB_TEST_PG_URL names a server, e.g.
 * postgresql://postgres@127.0.0.1:5432/postgres; each fresh store is then a
 * new database on it, dropped afterwards).
 */
#ifndef ADB_UTIL_STORE_H
#define ADB_UTIL_STORE_H

#include <stddef.h>
#include <stdint.h>

/* The kinds to test, into kinds[0..cap); returns how many. */
int util_store_kinds(const char **kinds, int cap);

/* URL of a new, empty store of the kind (malloc'd), or NULL with the reason
 * on stderr. */
char *util_store_fresh_url(const char *kind);

/* Removes what util_store_fresh_url made (files, database) and frees url.
 * NULL is a no-op. */
void util_store_drop(char *url);

/* Runs SQL (one or more statements) on the store's database through a
 * connection of its own. Returns 0, or -1 with the reason on stderr. */
int util_store_exec(const char *url, const char *sql);

/* The first column of the first row of a query as an integer (NULL = 0);
 * INT64_MIN on error, with the reason on stderr. */
int64_t util_store_query_int(const char *url, const char *sql);

/* Makes every later INSERT into `table` whose `column` equals `value` fail
 * (a trigger raising an error), so that a batch fails part-way. table,
 * column and value must be plain identifiers / literals of the test. */
int util_store_fail_insert(const char *url, const char *table,
                           const char *column, const char *value);

/* For sqlite URLs: the database file's path in buf. Returns 0 or -1. */
int util_store_sqlite_path(const char *url, char *buf, size_t len);

#endif
