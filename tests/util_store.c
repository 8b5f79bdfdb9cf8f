/*
 * util_store.c — fresh stores per test and direct SQL on them, for the
 * store conformance suite (see util_store.h). SQLite stores live in a new
 * directory under $TMPDIR (or /tmp); PostgreSQL stores are new databases on
 * the server of AGENTDB_TEST_PG_URL, named after the process and a counter
 * so that test programs running at the same time do not meet.
 */
#define _XOPEN_SOURCE 700
#include "util_store.h"

#include <ftw.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_ENV "AGENTDB_TEST_PG_URL"
#define SQLITE_PREFIX "sqlite://"

static atomic_int pg_counter;

int util_store_kinds(const char **kinds, int cap) {
  int n = 0;
  if (n < cap) kinds[n++] = "sqlite";
  const char *pg = getenv(PG_ENV);
  if (pg && *pg && n < cap) kinds[n++] = "postgresql";
  return n;
}

static int is_sqlite(const char *url) {
  return strncmp(url, SQLITE_PREFIX, strlen(SQLITE_PREFIX)) == 0;
}

int util_store_sqlite_path(const char *url, char *buf, size_t len) {
  if (!is_sqlite(url)) return -1;
  const char *p = url + strlen(SQLITE_PREFIX);
  size_t n = strcspn(p, "?");
  if (n >= len) return -1;
  memcpy(buf, p, n);
  buf[n] = 0;
  return 0;
}

/* ---------------------------------------------------------------- sqlite */

static char *sqlite_fresh(void) {
  const char *tmp = getenv("TMPDIR");
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/adb-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("util_store: mkdtemp");
    return NULL;
  }
  size_t len = strlen(dir) + 64;
  char *url = malloc(len);
  if (url) snprintf(url, len, SQLITE_PREFIX "%s/store.db", dir);
  return url;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

/* Removes the directory holding the database file, with everything in it. */
static void sqlite_drop(const char *url) {
  char path[4096];
  if (util_store_sqlite_path(url, path, sizeof path)) return;
  char *slash = strrchr(path, '/');
  if (!slash || !strstr(path, "/adb-store-")) return; /* not ours */
  *slash = 0;
  nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static sqlite3 *sqlite_connect(const char *url) {
  char path[4096];
  sqlite3 *db = NULL;
  if (util_store_sqlite_path(url, path, sizeof path) ||
      sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
    fprintf(stderr, "util_store: cannot open %s: %s\n", url,
            db ? sqlite3_errmsg(db) : "bad URL");
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_busy_timeout(db, 10000);
  return db;
}

static int sqlite_exec(const char *url, const char *sql) {
  sqlite3 *db = sqlite_connect(url);
  if (!db) return -1;
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    fprintf(stderr, "util_store: %s: %s\n", sql, msg ? msg : "?");
  sqlite3_free(msg);
  sqlite3_close(db);
  return rc == SQLITE_OK ? 0 : -1;
}

static int64_t sqlite_query_int(const char *url, const char *sql) {
  sqlite3 *db = sqlite_connect(url);
  if (!db) return INT64_MIN;
  sqlite3_stmt *st = NULL;
  int64_t v = INT64_MIN;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else
    fprintf(stderr, "util_store: %s: %s\n", sql, sqlite3_errmsg(db));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* ------------------------------------------------------------ postgresql */

/* The base URL with its database name replaced by db (malloc'd). */
static char *pg_url_with_db(const char *base, const char *db) {
  const char *auth = strstr(base, "://");
  if (!auth) return NULL;
  const char *slash = strchr(auth + 3, '/');
  const char *query = strchr(auth + 3, '?');
  if (slash && query && slash > query) slash = NULL;
  size_t head = slash ? (size_t)(slash - base)
                      : (query ? (size_t)(query - base) : strlen(base));
  const char *tail = query ? query : "";
  size_t len = head + strlen(db) + strlen(tail) + 2;
  char *url = malloc(len);
  if (url) snprintf(url, len, "%.*s/%s%s", (int)head, base, db, tail);
  return url;
}

/* The database name of a URL made by pg_url_with_db. */
static int pg_db_name(const char *url, char *buf, size_t len) {
  const char *auth = strstr(url, "://");
  const char *slash = auth ? strchr(auth + 3, '/') : NULL;
  if (!slash) return -1;
  size_t n = strcspn(slash + 1, "?");
  if (n == 0 || n >= len) return -1;
  memcpy(buf, slash + 1, n);
  buf[n] = 0;
  return 0;
}

static void pg_quiet(void *arg, const char *msg) {
  (void)arg;
  (void)msg;
}

static PGconn *pg_connect(const char *url) {
  PGconn *c = PQconnectdb(url);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "util_store: cannot connect to %s: %s\n", url,
            PQerrorMessage(c));
    PQfinish(c);
    return NULL;
  }
  PQsetNoticeProcessor(c, pg_quiet, NULL);
  return c;
}

static int pg_exec(const char *url, const char *sql) {
  PGconn *c = pg_connect(url);
  if (!c) return -1;
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
           PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) fprintf(stderr, "util_store: %s: %s\n", sql, PQerrorMessage(c));
  PQclear(r);
  PQfinish(c);
  return ok ? 0 : -1;
}

static int64_t pg_query_int(const char *url, const char *sql) {
  PGconn *c = pg_connect(url);
  if (!c) return INT64_MIN;
  PGresult *r = PQexec(c, sql);
  int64_t v = INT64_MIN;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
    v = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  else
    fprintf(stderr, "util_store: %s: %s\n", sql, PQerrorMessage(c));
  PQclear(r);
  PQfinish(c);
  return v;
}

static char *pg_fresh(void) {
  const char *base = getenv(PG_ENV);
  char db[64], sql[128];
  snprintf(db, sizeof db, "adb_store_%ld_%d", (long)getpid(),
           atomic_fetch_add(&pg_counter, 1));
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
  if (pg_exec(base, sql)) return NULL;
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
  if (pg_exec(base, sql)) return NULL;
  return pg_url_with_db(base, db);
}

static void pg_drop(const char *url) {
  char db[64], sql[128];
  if (pg_db_name(url, db, sizeof db) || strncmp(db, "adb_store_", 10) != 0)
    return; /* not ours */
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
  pg_exec(getenv(PG_ENV), sql);
}

/* ---------------------------------------------------------------- common */

char *util_store_fresh_url(const char *kind) {
  if (strcmp(kind, "sqlite") == 0) return sqlite_fresh();
  if (strcmp(kind, "postgresql") == 0 && getenv(PG_ENV)) return pg_fresh();
  fprintf(stderr, "util_store: no backend '%s' to test\n", kind);
  return NULL;
}

void util_store_drop(char *url) {
  if (!url) return;
  if (is_sqlite(url))
    sqlite_drop(url);
  else
    pg_drop(url);
  free(url);
}

int util_store_exec(const char *url, const char *sql) {
  return is_sqlite(url) ? sqlite_exec(url, sql) : pg_exec(url, sql);
}

int64_t util_store_query_int(const char *url, const char *sql) {
  return is_sqlite(url) ? sqlite_query_int(url, sql) : pg_query_int(url, sql);
}

int util_store_fail_insert(const char *url, const char *table,
                           const char *column, const char *value) {
  static atomic_int n;
  int id = atomic_fetch_add(&n, 1);
  char sql[1024];
  if (is_sqlite(url))
    snprintf(sql, sizeof sql,
             "CREATE TRIGGER adb_test_fail_%d BEFORE INSERT ON %s"
             " WHEN NEW.%s = '%s'"
             " BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
             id, table, column, value);
  else
    snprintf(sql, sizeof sql,
             "CREATE FUNCTION adb_test_fail_%d() RETURNS trigger"
             " LANGUAGE plpgsql AS $f$ BEGIN IF NEW.%s = '%s' THEN"
             " RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW;"
             " END $f$; CREATE TRIGGER adb_test_fail_%d BEFORE INSERT ON %s"
             " FOR EACH ROW EXECUTE FUNCTION adb_test_fail_%d()",
             id, column, value, id, table, id);
  return util_store_exec(url, sql);
}
