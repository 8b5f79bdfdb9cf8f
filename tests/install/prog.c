/*
 * prog.c — a program built against the *installed* libagentdb by
 * tests/install/test_install.sh, with nothing but pkg-config: it opens an
 * SQLite store, decides, rewards twice with one id and checks the posterior.
 */
#include <agentdb.h>
#include <stdio.h>
#include <string.h>

static int fail(adb *db, const char *what, int rc) {
  fprintf(stderr, "prog: %s: %s (%s)\n", what, adb_strerror(rc),
          db ? adb_errmsg(db) : "");
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  char url[4096], err[256] = "";
  snprintf(url, sizeof url, "sqlite://%s", argv[1]);
  adb_config cfg = {.store_url = url, .cache_url = "mem://"};
  adb *db = NULL;
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) return fprintf(stderr, "prog: open: %s\n", err), 1;
  adb_agent_config ag;
  adb_agent_config_init(&ag);
  snprintf(ag.id, sizeof ag.id, "tv");
  if ((rc = adb_agent_put(db, &ag))) return fail(db, "agent_put", rc);
  const char *cands[] = {"a", "b", "c"};
  adb_decide_req q = {.agent_id = "tv",
                      .user_id = "alice",
                      .candidates = cands,
                      .n_candidates = 3};
  adb_decision d = {0};
  if ((rc = adb_decide(db, &q, &d))) return fail(db, "decide", rc);
  adb_reward_req r = {.agent_id = "tv",
                      .reward_id = "r1",
                      .user_id = "alice",
                      .action = d.action,
                      .state_key = d.state_key,
                      .has_reward = 1,
                      .reward = 0.75};
  adb_reward_result res[2];
  for (int i = 0; i < 2; i++)
    if ((rc = adb_reward(db, &r, &res[i]))) return fail(db, "reward", rc);
  adb_arm_posterior arms[3];
  int n = 0;
  rc = adb_policy_get(db, "tv", "alice", d.state_key, arms, 3, &n);
  if (rc) return fail(db, "policy_get", rc);
  if (n != 1 || strcmp(arms[0].action, d.action) || arms[0].n != 1 ||
      arms[0].sum != 0.75 || !res[0].applied || res[1].applied)
    return fprintf(stderr, "prog: wrong posterior\n"), 1;
  if ((rc = adb_close(db))) return fail(NULL, "close", rc);
  printf("libagentdb %s: chose %s, n=%lld sum=%.2f\n", ADB_VERSION, d.action,
         (long long)arms[0].n, arms[0].sum);
  return 0;
}
