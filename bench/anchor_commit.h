/*
 * anchor_commit.h — the durable-write anchor shared by bench_core and
 * bench_http: the latency of one durable single-row SQLite commit (WAL,
 * synchronous=FULL) in dir. By Little's law W synchronous writers, each
 * with one write in flight, cannot exceed W / latency writes a second.
 */
#ifndef ADB_BENCH_ANCHOR_COMMIT_H
#define ADB_BENCH_ANCHOR_COMMIT_H

#include <sqlite3.h>
#include <stdio.h>
#include <time.h>

static double anchor_commit_latency(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/commit.db", dir);
  sqlite3 *s;
  sqlite3_open(path, &s);
  sqlite3_exec(s,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE t(x INTEGER)",
               0, 0, 0);
  int n = 200;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++)
    sqlite3_exec(s, "INSERT INTO t VALUES(1)", 0, 0, 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  sqlite3_close(s);
  return ((double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9) / n;
}

#endif
