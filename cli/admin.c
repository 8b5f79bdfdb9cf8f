/*
 * admin.c — `agentdb agents list|show|delete|reset` and `agentdb users
 * show|erase`: the admin calls of the library (src/admin.c), the same the
 * HTTP routes make, on a store opened by this process.
 *
 *   agentdb agents list [--limit N] [--after ID]   one id per line, then
 *                                                  "next: ID" when more
 *   agentdb agents show AGENT                      config and counters
 *   agentdb agents delete AGENT --yes              everything of the agent
 *   agentdb agents reset AGENT --yes               its learning only
 *   agentdb users show USER                        rows per table
 *   agentdb users erase USER --yes                 every trace of the user
 *
 * Common flags: --store URL (env AGENTDB_STORE), --cache URL (env
 * AGENTDB_CACHE), --index-dir DIR (env AGENTDB_INDEX_DIR). Destructive
 * commands want --yes. With servers running on the same PostgreSQL, prefer
 * the HTTP routes: a server's in-process cache and vector indexes are only
 * cleaned by the process that runs the call (docs/admin.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentdb.h"
#include "cli.h"

#define DEFAULT_STORE "sqlite://./data/agentdb.db"

typedef struct args {
  const char *store, *cache, *index_dir, *after, *target;
  int limit, yes;
} args;

static void usage(FILE *f, const char *cmd) {
  if (!strcmp(cmd, "agents"))
    fprintf(f, "usage: agentdb agents list [--limit N] [--after ID]\n"
               "       agentdb agents show AGENT\n"
               "       agentdb agents delete AGENT --yes\n"
               "       agentdb agents reset AGENT --yes\n");
  else
    fprintf(f, "usage: agentdb users show USER\n"
               "       agentdb users erase USER --yes\n");
  fprintf(f, "\noptions: --store URL (env AGENTDB_STORE, default " DEFAULT_STORE
             ")\n         --cache URL (env AGENTDB_CACHE, default mem://)\n"
             "         --index-dir DIR (env AGENTDB_INDEX_DIR)\n");
}

static const char *flag_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (!strcmp(argv[*i], name) && *i + 1 < argc) return argv[++*i];
  return NULL;
}

/* 0, or the exit code of a bad command line. */
static int parse(int argc, char **argv, int from, args *a) {
  const char *v;
  for (int i = from; i < argc; i++) {
    if ((v = flag_value(argc, argv, &i, "--store"))) {
      a->store = v;
    } else if ((v = flag_value(argc, argv, &i, "--cache"))) {
      a->cache = v;
    } else if ((v = flag_value(argc, argv, &i, "--index-dir"))) {
      a->index_dir = v;
    } else if ((v = flag_value(argc, argv, &i, "--after"))) {
      a->after = v;
    } else if ((v = flag_value(argc, argv, &i, "--limit"))) {
      char *end;
      long n = strtol(v, &end, 10);
      if (*end || n < 1 || n > 1000) {
        fprintf(stderr, "agentdb: --limit must be 1..1000, not '%s'\n", v);
        return 2;
      }
      a->limit = (int)n;
    } else if (!strcmp(argv[i], "--yes")) {
      a->yes = 1;
    } else if (argv[i][0] != '-' && !a->target) {
      a->target = argv[i];
    } else {
      fprintf(stderr, "agentdb: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  return 0;
}

static adb *open_store(const args *a) {
  const char *store = a->store ? a->store : getenv("AGENTDB_STORE");
  const char *cache = a->cache ? a->cache : getenv("AGENTDB_CACHE");
  const char *idx = a->index_dir ? a->index_dir : getenv("AGENTDB_INDEX_DIR");
  adb_config cfg = {.store_url = store && *store ? store : DEFAULT_STORE,
                    .cache_url = cache && *cache ? cache : NULL,
                    .index_dir = idx && *idx ? idx : NULL};
  adb *db = NULL;
  char err[1024] = "";
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) fprintf(stderr, "agentdb: %s (%s)\n", err, adb_err_name(rc));
  return db;
}

static int fail(adb *db, int rc) {
  fprintf(stderr, "agentdb: %s (%s)\n", adb_errmsg(db), adb_err_name(rc));
  return rc == ADB_ENOTFOUND ? 3 : 1;
}

static int agents_list(adb *db, const args *a) {
  int limit = a->limit ? a->limit : 100, n = 0;
  char(*ids)[ADB_ID_MAX + 1] = calloc((size_t)limit, sizeof *ids);
  if (!ids) return 1;
  int rc = adb_agents_list(db, a->after, limit, ids, &n);
  if (rc) {
    free(ids);
    return fail(db, rc);
  }
  for (int i = 0; i < n; i++)
    printf("%s\n", ids[i]);
  if (n == limit) printf("next: %s\n", ids[n - 1]);
  free(ids);
  return 0;
}

static int agents_show(adb *db, const char *id) {
  adb_agent_config c;
  adb_agent_counters k;
  int rc = adb_agent_get(db, id, &c);
  if (!rc) rc = adb_agent_counters_get(db, id, &k);
  if (rc) return fail(db, rc);
  printf("agent:         %s\nalgorithm:     %s\n", c.id,
         c.algorithm == ADB_ALGO_GAUSSIAN ? "gaussian" : "beta");
  printf("context_keys: ");
  for (int i = 0; i < c.n_context_keys; i++)
    printf(" %s", c.context_keys[i]);
  printf("\nembedding_dim: %d\nactions:       %lld\ndecisions:     %lld\n"
         "rewards:       %lld\nreward_sum:    %g\n",
         c.embedding_dim, (long long)k.actions, (long long)k.decisions,
         (long long)k.rewards, k.reward_sum);
  return 0;
}

static void print_summary(const char *user, const adb_user_summary *s,
                          const char *verb) {
  printf("user:        %s%s\ndecisions:   %lld\nrewards:     %lld\n"
         "episodes:    %lld\npolicy_rows: %lld\nsessions:    %lld\n"
         "state:       %s\nagents:     ",
         user, verb, (long long)s->decisions, (long long)s->rewards,
         (long long)s->episodes, (long long)s->policy_rows,
         (long long)s->sessions, s->has_state ? "yes" : "no");
  for (int i = 0; i < s->n_agents; i++)
    printf(" %s", s->agents[i]);
  printf("\n");
}

static int need(const args *a, const char *cmd, const char *what, int yes) {
  if (!a->target) {
    fprintf(stderr, "agentdb %s: which %s?\n", cmd, what);
    return 2;
  }
  if (yes && !a->yes) {
    fprintf(stderr,
            "agentdb %s: this deletes data for good; add --yes to go on\n",
            cmd);
    return 2;
  }
  return 0;
}

static int run_agents(adb *db, const char *sub, const args *a) {
  int rc;
  if (!strcmp(sub, "list")) return agents_list(db, a);
  if (!strcmp(sub, "show")) {
    if ((rc = need(a, "agents show", "agent", 0))) return rc;
    return agents_show(db, a->target);
  }
  if (!strcmp(sub, "delete")) {
    if ((rc = need(a, "agents delete", "agent", 1))) return rc;
    if ((rc = adb_agent_delete(db, a->target))) return fail(db, rc);
    printf("agent %s deleted\n", a->target);
    return 0;
  }
  if ((rc = need(a, "agents reset", "agent", 1))) return rc;
  if ((rc = adb_agent_reset(db, a->target))) return fail(db, rc);
  printf("agent %s reset: config and catalogue kept\n", a->target);
  return 0;
}

static int run_users(adb *db, const char *sub, const args *a) {
  int erase = !strcmp(sub, "erase");
  int rc = need(a, erase ? "users erase" : "users show", "user", erase);
  if (rc) return rc;
  adb_user_summary s;
  rc = erase ? adb_user_erase(db, a->target, &s)
             : adb_user_summary_get(db, a->target, &s);
  if (rc) return fail(db, rc);
  print_summary(a->target, &s, erase ? " (erased)" : "");
  adb_free(s.agents);
  return 0;
}

static int known(const char *cmd, const char *sub) {
  static const char *const ag[] = {"list", "show", "delete", "reset", NULL};
  static const char *const us[] = {"show", "erase", NULL};
  const char *const *v = !strcmp(cmd, "agents") ? ag : us;
  for (; *v; v++)
    if (!strcmp(*v, sub)) return 1;
  return 0;
}

static int admin_main(const char *cmd, int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout, cmd);
    return argc < 2 ? 2 : 0;
  }
  if (!known(cmd, argv[1])) {
    fprintf(stderr, "agentdb %s: unknown subcommand '%s'\n", cmd, argv[1]);
    usage(stderr, cmd);
    return 2;
  }
  args a = {0};
  int rc = parse(argc, argv, 2, &a);
  if (rc) return rc;
  adb *db = open_store(&a);
  if (!db) return 1;
  rc = !strcmp(cmd, "agents") ? run_agents(db, argv[1], &a)
                              : run_users(db, argv[1], &a);
  int crc = adb_close(db);
  return rc ? rc : crc ? 1 : 0;
}

int cli_agents(int argc, char **argv) {
  return admin_main("agents", argc, argv);
}

int cli_users(int argc, char **argv) {
  return admin_main("users", argc, argv);
}
