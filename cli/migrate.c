/*
 * migrate.c — `agentdb migrate [--store URL]`: applies the store's schema
 * migrations (the ones compiled in from sql/<backend>/) and says, for each,
 * whether this run applied it or found it already there.
 *
 * Opening a store migrates it anyway; this command lets a deployment run
 * migrations once, before the replicas start (e.g. a Kubernetes Job), and
 * shows where a database stands. On PostgreSQL it also runs the partition
 * maintenance (partitions ahead, retention), so it can serve as a cron job.
 * Several runs at once are safe: PostgreSQL serialises them with an
 * advisory lock, SQLite with its write lock.
 *
 * --check applies nothing: it exits 0 when every compiled-in migration is
 * recorded in the store, 3 otherwise (or when the store cannot be reached).
 * --wait SECONDS repeats that check every second until it passes or the
 * time is up: the init container of the Kubernetes Deployment runs it, so
 * that replicas start only once the migration Job has brought the schema
 * up to this binary's version (deploy/kubernetes/).
 */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentdb.h"
#include "cli.h"
#include "migrations.h"
#include "store.h"
#include "store_pg.h"

#define DEFAULT_STORE "sqlite://./data/agentdb.db"

static void usage(FILE *f) {
  fprintf(f, "usage: agentdb migrate [--store URL] [--check | --wait SECONDS]\n"
             "\n"
             "Applies the schema migrations of the store (env AGENTDB_STORE,\n"
             "default " DEFAULT_STORE ") and prints each one with\n"
             "'applied' or 'already applied'. On PostgreSQL it also creates\n"
             "the monthly partitions ahead and applies retention\n"
             "(?retention_months=N or env AGENTDB_RETENTION_MONTHS).\n"
             "\n"
             "  --check          apply nothing; exit 0 if the schema is\n"
             "                   current, 3 if not (or unreachable)\n"
             "  --wait SECONDS   repeat --check every second until it\n"
             "                   passes; exit 3 when the time is up\n");
}

/* The URL with its password replaced by "***", for printing. */
static void redact(const char *url, char *out, size_t len) {
  const char *auth = strstr(url, "://");
  const char *at = auth ? strchr(auth + 3, '@') : NULL;
  const char *colon = auth ? strchr(auth + 3, ':') : NULL;
  if (at && colon && colon < at)
    snprintf(out, len, "%.*s:***%s", (int)(colon - url), url, at);
  else
    snprintf(out, len, "%s", url);
}

static int is_pg(const char *url) {
  return strncmp(url, "postgresql://", 13) == 0 ||
         strncmp(url, "postgres://", 11) == 0;
}

typedef struct tally {
  int applied, present;
} tally;

static void report(void *arg, int version, const char *name, int applied) {
  tally *t = arg;
  printf("  %04d_%-30s %s\n", version, name,
         applied ? "applied" : "already applied");
  if (applied)
    t->applied++;
  else
    t->present++;
}

static int migrate_pg(const char *url) {
  char err[1024] = "";
  tally t = {0};
  char *pgurl = NULL;
  if (strncmp(url, "postgres://", 11) == 0) { /* the alias store.c accepts */
    size_t n = strlen(url) + 3;
    if (!(pgurl = malloc(n))) return 1;
    snprintf(pgurl, n, "postgresql://%s", url + 11);
  }
  int rc =
      adb__pg_migrate(pgurl ? pgurl : url, NULL, report, &t, err, sizeof err);
  free(pgurl);
  if (rc) {
    fprintf(stderr, "agentdb migrate: %s (%s)\n", err, adb_err_name(rc));
    return 1;
  }
  printf("postgresql: %d applied, %d already applied; partitions maintained\n",
         t.applied, t.present);
  return 0;
}

/* The versions recorded in an SQLite file (none if it does not exist). */
static int sqlite_versions(const char *url, char *done, int n) {
  memset(done, 0, (size_t)n);
  const char *p = url + strlen("sqlite://");
  char path[4096];
  size_t len = strcspn(p, "?");
  if (len >= sizeof path) return -1;
  memcpy(path, p, len);
  path[len] = 0;
  if (strcmp(path, ":memory:") == 0 || access(path, F_OK) != 0) return 0;
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT version FROM schema_migrations", -1, &st,
                         NULL) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      int v = sqlite3_column_int(st, 0);
      for (int k = 0; k < n; k++)
        if (adb__migrations_sqlite[k].version == v) done[k] = 1;
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return 0;
}

static int migrate_other(const char *url) {
  int n = adb__n_migrations_sqlite;
  int sqlite = strncmp(url, "sqlite://", 9) == 0;
  char *done = calloc((size_t)n + 1, 1);
  if (!done) return 1;
  if (sqlite && sqlite_versions(url, done, n)) {
    fprintf(stderr, "agentdb migrate: path too long\n");
    free(done);
    return 1;
  }
  adb__store *st = NULL;
  char err[1024] = "";
  int rc = adb__store_open(url, NULL, &st, err, sizeof err);
  if (rc) {
    fprintf(stderr, "agentdb migrate: %s (%s)\n", err, adb_err_name(rc));
    free(done);
    return 1;
  }
  adb__store_close(st);
  tally t = {0};
  for (int k = 0; sqlite && k < n; k++)
    report(&t, adb__migrations_sqlite[k].version,
           adb__migrations_sqlite[k].name, !done[k]);
  printf("%s: %d applied, %d already applied\n", sqlite ? "sqlite" : "store",
         t.applied, t.present);
  free(done);
  return 0;
}

/* Versions recorded in PostgreSQL's schema_migrations; -1 if unreachable. */
static int pg_versions(const char *url, char *done, int n) {
  memset(done, 0, (size_t)n);
  char conn[4096];
  /* libpq takes postgresql:// and postgres:// URLs as they are. */
  snprintf(conn, sizeof conn, "%s", url);
  PGconn *c = PQconnectdb(conn);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "agentdb migrate: %s", PQerrorMessage(c));
    PQfinish(c);
    return -1;
  }
  PGresult *r = PQexec(c, "SELECT version FROM schema_migrations");
  for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r);
       i++) {
    int v = atoi(PQgetvalue(r, i, 0));
    for (int k = 0; k < n; k++)
      if (adb__migrations_postgres[k].version == v) done[k] = 1;
  }
  PQclear(r);
  PQfinish(c);
  return 0;
}

/* 0 when every compiled-in migration is recorded, 3 otherwise. */
static int check(const char *url, int quiet) {
  int pg = is_pg(url),
      n = pg ? adb__n_migrations_postgres : adb__n_migrations_sqlite;
  if (!pg && strncmp(url, "sqlite://", 9) != 0) return 0; /* nothing to do */
  char *done = calloc((size_t)n + 1, 1);
  if (!done) return 3;
  int rc = pg ? pg_versions(url, done, n) : sqlite_versions(url, done, n);
  int pending = 0;
  for (int k = 0; rc == 0 && k < n; k++)
    pending += !done[k];
  free(done);
  if (!quiet || rc || pending)
    printf("schema: %s\n", rc        ? "unreachable"
                           : pending ? "migrations pending"
                                     : "current");
  fflush(stdout);
  return rc || pending ? 3 : 0;
}

static int wait_current(const char *url, long seconds) {
  for (long s = 0;; s++) {
    if (check(url, 1) == 0) {
      printf("schema: current\n");
      return 0;
    }
    if (s >= seconds) break;
    sleep(1);
  }
  fprintf(stderr, "agentdb migrate: schema not current after %lds\n", seconds);
  return 3;
}

int cli_migrate(int argc, char **argv) {
  const char *url = getenv("AGENTDB_STORE");
  long wait = -1;
  int only_check = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--check")) {
      only_check = 1;
    } else if (!strcmp(argv[i], "--wait") && i + 1 < argc) {
      char *end;
      wait = strtol(argv[++i], &end, 10);
      if (*end || wait < 0) {
        fprintf(stderr, "agentdb migrate: --wait takes seconds\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--store") && i + 1 < argc) {
      url = argv[++i];
    } else if (!strncmp(argv[i], "--store=", 8)) {
      url = argv[i] + 8;
    } else {
      fprintf(stderr, "agentdb migrate: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (!url || !*url) url = DEFAULT_STORE;
  if (only_check) return check(url, 0);
  if (wait >= 0) return wait_current(url, wait);
  char shown[1024];
  redact(url, shown, sizeof shown);
  printf("migrating %s\n", shown);
  fflush(stdout);
  return is_pg(url) ? migrate_pg(url) : migrate_other(url);
}
