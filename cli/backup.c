/*
 * backup.c — `agentdb backup` and `agentdb restore` for the embedded
 * (SQLite) store, online: the server may keep writing meanwhile.
 *
 *   agentdb backup  [--store sqlite://PATH] --to FILE
 *   agentdb restore --from FILE [--store sqlite://PATH]
 *
 * Backup uses SQLite's online backup API (sqlite3_backup_*) in one step
 * (-1: all pages) under a read transaction: in WAL mode that is a
 * consistent snapshot of the last commit before it began, and it never
 * blocks the writers (they append to the WAL meanwhile). A step of a few
 * pages at a time would restart whenever another process commits, and
 * could starve under steady writes, hence one step. Every reward
 * acknowledged before the backup began is in the copy (a sync reward is
 * acknowledged after its commit). The copy is written to FILE.tmp,
 * checked (PRAGMA integrity_check, and its schema_migrations table read),
 * synced and renamed to FILE, so FILE is either absent or whole.
 *
 * Restore copies FILE into the store the same way (as one transaction of
 * the destination); run it with the server stopped, since a running
 * server's caches would not know the store went back in time.
 *
 * PostgreSQL is backed up with its own tools (pg_dump, or base backups and
 * WAL archiving for point-in-time recovery): see docs/operations.md.
 */
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define DEFAULT_STORE "sqlite://./data/agentdb.db"
#define BUSY_MS 10000

static void usage(FILE *f) {
  fprintf(f,
          "usage: agentdb backup [--store URL] --to FILE\n"
          "       agentdb restore --from FILE [--store URL]\n"
          "\n"
          "backup copies a live SQLite store (env AGENTDB_STORE, "
          "default\n" DEFAULT_STORE ") into FILE with SQLite's online\n"
          "backup API: a consistent snapshot, taken while the server keeps\n"
          "writing. restore copies FILE back into the store; stop the server\n"
          "first. For PostgreSQL use pg_dump or base backups with WAL\n"
          "archiving (docs/operations.md).\n");
}

/* The file path of a sqlite:// URL (without its ?options). */
static int sqlite_path(const char *url, char *out, size_t cap) {
  if (strncmp(url, "sqlite://", 9) != 0) {
    fprintf(stderr,
            "agentdb: backup/restore handle sqlite:// stores only, not "
            "'%.40s...'; back PostgreSQL up with pg_dump or WAL archiving "
            "(docs/operations.md)\n",
            url);
    return -1;
  }
  size_t n = strcspn(url + 9, "?");
  if (n == 0 || n >= cap || !strncmp(url + 9, ":memory:", n)) {
    fprintf(stderr, "agentdb: '%s' names no SQLite file\n", url);
    return -1;
  }
  memcpy(out, url + 9, n);
  out[n] = 0;
  return 0;
}

static int open_db(const char *path, int flags, sqlite3 **db) {
  if (sqlite3_open_v2(path, db, flags, NULL) != SQLITE_OK) {
    fprintf(stderr, "agentdb: cannot open %s: %s\n", path,
            *db ? sqlite3_errmsg(*db) : "out of memory");
    return -1;
  }
  sqlite3_busy_timeout(*db, BUSY_MS);
  return 0;
}

/* Copies every page of src into dst as one snapshot; retries while busy. */
static int copy_all(sqlite3 *dst, sqlite3 *src) {
  sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
  if (!b) {
    fprintf(stderr, "agentdb: backup: %s\n", sqlite3_errmsg(dst));
    return -1;
  }
  int rc, tries = 0;
  while ((rc = sqlite3_backup_step(b, -1)) == SQLITE_BUSY ||
         rc == SQLITE_LOCKED) {
    if (++tries > BUSY_MS / 10) break;
    sqlite3_sleep(10);
  }
  int pages = sqlite3_backup_pagecount(b);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    fprintf(stderr, "agentdb: backup: %s\n", sqlite3_errstr(rc));
    return -1;
  }
  return pages;
}

/* integrity_check says "ok" and the schema is AgentDB's. */
static int check_copy(sqlite3 *db, const char *path, long long *migrations) {
  sqlite3_stmt *st = NULL;
  int ok = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) ==
               SQLITE_OK &&
           sqlite3_step(st) == SQLITE_ROW &&
           !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  st = NULL;
  ok = ok &&
       sqlite3_prepare_v2(db, "SELECT count(*) FROM schema_migrations", -1, &st,
                          NULL) == SQLITE_OK &&
       sqlite3_step(st) == SQLITE_ROW;
  if (ok) *migrations = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (!ok) fprintf(stderr, "agentdb: %s is not a sound AgentDB store\n", path);
  return ok ? 0 : -1;
}

static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* The folder of path, synced so that a rename in it is durable. */
static void fsync_dir_of(const char *path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    dir[1] = 0;
  else if (slash)
    *slash = 0;
  else
    snprintf(dir, sizeof dir, ".");
  fsync_path(dir);
}

/* src -> tmp (a fresh rollback-journal file), checked, synced, renamed. */
static int backup_to(const char *src_path, const char *to) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", to);
  unlink(tmp);
  sqlite3 *src = NULL, *dst = NULL;
  int pages = -1;
  long long migrations = 0;
  if (open_db(src_path, SQLITE_OPEN_READONLY, &src) == 0 &&
      open_db(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst) == 0)
    pages = copy_all(dst, src);
  sqlite3_close(src);
  /* The copy keeps WAL mode in its header; make it a self-contained file. */
  if (pages >= 0 &&
      (sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", 0, 0, 0) != SQLITE_OK ||
       check_copy(dst, tmp, &migrations)))
    pages = -1;
  sqlite3_close(dst);
  if (pages < 0 || fsync_path(tmp) || rename(tmp, to)) {
    if (pages >= 0) perror("agentdb: backup: writing the copy");
    unlink(tmp);
    return 1;
  }
  fsync_dir_of(to);
  printf("backup: %s -> %s (%d pages, %lld migrations)\n", src_path, to, pages,
         migrations);
  return 0;
}

static int restore_from(const char *from, const char *dst_path) {
  sqlite3 *src = NULL, *dst = NULL;
  long long migrations = 0;
  int pages = -1;
  if (open_db(from, SQLITE_OPEN_READONLY, &src) == 0 &&
      check_copy(src, from, &migrations) == 0 &&
      open_db(dst_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst) == 0)
    pages = copy_all(dst, src);
  /* The store runs in WAL mode; the copy came in rollback-journal mode. */
  if (pages >= 0 &&
      sqlite3_exec(dst, "PRAGMA journal_mode=WAL", 0, 0, 0) != SQLITE_OK)
    pages = -1;
  sqlite3_close(src);
  sqlite3_close(dst);
  if (pages < 0) return 1;
  printf("restore: %s -> %s (%d pages, %lld migrations)\n", from, dst_path,
         pages, migrations);
  return 0;
}

typedef struct args {
  const char *store, *file;
} args;

/* --store URL and --to/--from FILE (flag is "--to" or "--from"). */
static int parse(int argc, char **argv, const char *flag, args *a) {
  a->store = getenv("AGENTDB_STORE");
  a->file = NULL;
  size_t fl = strlen(flag);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 1;
    } else if (!strcmp(argv[i], "--store") && i + 1 < argc) {
      a->store = argv[++i];
    } else if (!strncmp(argv[i], "--store=", 8)) {
      a->store = argv[i] + 8;
    } else if (!strcmp(argv[i], flag) && i + 1 < argc) {
      a->file = argv[++i];
    } else if (!strncmp(argv[i], flag, fl) && argv[i][fl] == '=') {
      a->file = argv[i] + fl + 1;
    } else {
      fprintf(stderr, "agentdb: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return -1;
    }
  }
  if (!a->store || !*a->store) a->store = DEFAULT_STORE;
  if (!a->file || !*a->file) {
    fprintf(stderr, "agentdb: %s FILE is required\n", flag);
    usage(stderr);
    return -1;
  }
  return 0;
}

int cli_backup(int argc, char **argv) {
  args a;
  char path[4096];
  int rc = parse(argc, argv, "--to", &a);
  if (rc) return rc > 0 ? 0 : 2;
  if (sqlite_path(a.store, path, sizeof path)) return 2;
  if (access(path, R_OK) != 0) {
    fprintf(stderr, "agentdb backup: no store at %s\n", path);
    return 1;
  }
  return backup_to(path, a.file);
}

int cli_restore(int argc, char **argv) {
  args a;
  char path[4096];
  int rc = parse(argc, argv, "--from", &a);
  if (rc) return rc > 0 ? 0 : 2;
  if (sqlite_path(a.store, path, sizeof path)) return 2;
  return restore_from(a.file, path);
}
