/*
 * migrations.h — the SQL migrations compiled into the library.
 *
 * Each backend's numbered files sql/<backend>/NNNN_name.sql are embedded at
 * build time by cmake/embed_sql.cmake into gen/migrations_<backend>.c, as a
 * table sorted by version. A backend applies, at open and in order, every
 * migration whose version is not yet in its schema_migrations table, each
 * in its own transaction with the row recording it, so that applying them
 * is idempotent. Migrations are append-only: never edit a released file,
 * add the next number.
 */
#ifndef ADB_MIGRATIONS_H
#define ADB_MIGRATIONS_H

typedef struct adb__migration {
  int version;      /* NNNN of the file name, > 0 */
  const char *name; /* the file name's "name" part, static */
  const char *sql;  /* the file's text, static, NUL-terminated */
} adb__migration;

/* adb__migrations_X[0 .. adb__n_migrations_X - 1], ascending versions. */
extern const adb__migration adb__migrations_sqlite[];
extern const int adb__n_migrations_sqlite;
extern const adb__migration adb__migrations_postgres[];
extern const int adb__n_migrations_postgres;

#endif
