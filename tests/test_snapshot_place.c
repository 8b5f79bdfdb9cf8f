/*
 * test_snapshot_place.c — the vector memory's snapshot goes beside the
 * SQLite file (FILE.index/) or where adb_config.index_dir says, never into
 * the working directory (issue 13, defect 6: a bare "index/" appeared in
 * whatever folder the process was in). A real SQLite file, the real
 * library.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agentdb.h"

static void make_tmp(char *dir, size_t n, const char *tag) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, n, "%s/adb-%s-XXXXXX", tmp ? tmp : "/tmp", tag);
  assert_non_null(mkdtemp(dir));
}

static int entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void rm_rf(const char *dir) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* Opens url from the folder `from`, records one episode, moves to the
 * folder `to` and closes (which saves the snapshot). */
static void open_record_close(const char *url, const char *from,
                              const char *to) {
  assert_int_equal(chdir(from), 0);
  adb_config cfg = {.store_url = url, .write_timeout_ms = 5000};
  adb *db = NULL;
  char err[256];
  assert_int_equal(adb_open(&cfg, &db, err, sizeof err), ADB_OK);
  adb_agent_config a;
  adb_agent_config_init(&a);
  snprintf(a.id, sizeof a.id, "snap");
  assert_int_equal(adb_agent_put(db, &a), ADB_OK);
  float v[4] = {1, 0, 0, 0};
  adb_episode e = {.user_id = "u",
                   .action = "x",
                   .reward = 1,
                   .embedding = v,
                   .embedding_dim = 4};
  assert_int_equal(adb_episodes_record(db, "snap", &e, 1), ADB_OK);
  assert_int_equal(chdir(to), 0);
  assert_int_equal(adb_close(db), ADB_OK);
}

static void
test_a_relative_store_keeps_its_snapshot_beside_the_file(void **state) {
  (void)state;
  char home[PATH_MAX], data[PATH_MAX + 8], elsewhere[PATH_MAX], old[PATH_MAX];
  assert_non_null(getcwd(old, sizeof old));
  make_tmp(home, sizeof home, "home");
  make_tmp(elsewhere, sizeof elsewhere, "cwd");
  snprintf(data, sizeof data, "%s/data", home);
  assert_int_equal(mkdir(data, 0755), 0);
  /* A file in the working folder, and one in a subfolder of it. */
  open_record_close("sqlite://agentdb.db", data, elsewhere);
  open_record_close("sqlite://data/other.db", home, elsewhere);
  assert_int_equal(chdir(old), 0);
  assert_int_equal(entries(elsewhere), 0); /* nothing where we closed */
  char p[PATH_MAX + 80];
  snprintf(p, sizeof p, "%s/index", data);
  assert_int_not_equal(access(p, F_OK), 0);
  snprintf(p, sizeof p, "%s/index", home);
  assert_int_not_equal(access(p, F_OK), 0);
  snprintf(p, sizeof p, "%s/agentdb.db.index/manifest", data);
  assert_int_equal(access(p, F_OK), 0);
  snprintf(p, sizeof p, "%s/other.db.index/manifest", data);
  assert_int_equal(access(p, F_OK), 0);
  rm_rf(home);
  rm_rf(elsewhere);
}

static void test_an_in_memory_store_writes_no_snapshot(void **state) {
  (void)state;
  char here[PATH_MAX], old[PATH_MAX];
  assert_non_null(getcwd(old, sizeof old));
  make_tmp(here, sizeof here, "mem");
  open_record_close("sqlite://:memory:", here, here);
  assert_int_equal(chdir(old), 0);
  assert_int_equal(entries(here), 0);
  rm_rf(here);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_a_relative_store_keeps_its_snapshot_beside_the_file),
      cmocka_unit_test(test_an_in_memory_store_writes_no_snapshot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
