/*
 * evaluate.c — `agentdb evaluate`: what if the agent had used policy X?
 *
 *   agentdb evaluate --agent A [--from T] [--to T] [--store URL]
 *                    --policy JSON [--policy JSON ...] [--json] [--seed N]
 *   agentdb evaluate --log FILE.dsjson --policy JSON ... [--json]
 *
 * Replays the agent's logged decisions (the store's log, or an exported
 * DSJSON file) in time order through each candidate policy, an agent
 * config as POST /v1/agents takes it (plus "name"; @FILE reads it from a
 * file), and prints per policy the IPS, self-normalised IPS and doubly
 * robust estimates of its mean reward with 95% intervals and the
 * effective sample size, beside the logged policy's mean reward
 * (src/evaluate.c has the method). A progress line on stderr when it is
 * a terminal; --json prints one JSON object for machines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentdb.h"
#include "api.h"
#include "cli.h"
#include "evaluate.h"

#define DEFAULT_STORE "sqlite://./data/agentdb.db"

typedef struct eargs {
  const char *agent, *log, *store, *from, *to;
  const char *pol[ADB_EVAL_MAX_POLICIES];
  int n_pol, json;
  uint64_t seed;
} eargs;

static void usage(FILE *f) {
  fprintf(f, "usage: agentdb evaluate --agent A [--from T] [--to T] "
             "[--store URL]\n"
             "                        --policy JSON [--policy JSON ...] "
             "[--json] [--seed N]\n"
             "       agentdb evaluate --log FILE.dsjson --policy JSON ... "
             "[--json]\n\n"
             "A policy is an agent config as POST /v1/agents takes it, plus "
             "\"name\",\n"
             "e.g. '{\"name\":\"lin\",\"algorithm\":\"linear\",\"v\":0.2}', "
             "or @FILE.\n"
             "Times: milliseconds since the epoch or ISO-8601. --store: env "
             "AGENTDB_STORE,\ndefault " DEFAULT_STORE ".\n");
}

static const char *flag(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (!strcmp(argv[*i], name) && *i + 1 < argc) return argv[++*i];
  return NULL;
}

static int parse(int argc, char **argv, eargs *a) {
  const char *v;
  for (int i = 1; i < argc; i++) {
    if ((v = flag(argc, argv, &i, "--agent")))
      a->agent = v;
    else if ((v = flag(argc, argv, &i, "--log")))
      a->log = v;
    else if ((v = flag(argc, argv, &i, "--store")))
      a->store = v;
    else if ((v = flag(argc, argv, &i, "--from")))
      a->from = v;
    else if ((v = flag(argc, argv, &i, "--to")))
      a->to = v;
    else if ((v = flag(argc, argv, &i, "--seed")))
      a->seed = strtoull(v, NULL, 10);
    else if ((v = flag(argc, argv, &i, "--policy"))) {
      if (a->n_pol == ADB_EVAL_MAX_POLICIES) {
        fprintf(stderr, "agentdb evaluate: at most %d policies\n",
                ADB_EVAL_MAX_POLICIES);
        return 2;
      }
      a->pol[a->n_pol++] = v;
    } else if (!strcmp(argv[i], "--json"))
      a->json = 1;
    else if (!strcmp(argv[i], "--help")) {
      usage(stdout);
      return 1;
    } else {
      fprintf(stderr, "agentdb evaluate: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (!a->agent == !a->log || !a->n_pol) {
    fprintf(stderr, "agentdb evaluate: give --agent or --log, and at least "
                    "one --policy\n");
    usage(stderr);
    return 2;
  }
  return 0;
}

/* A policy's JSON text: the argument, or the file after '@'. */
static char *policy_text(const char *arg) {
  if (arg[0] != '@') return strdup(arg);
  FILE *f = fopen(arg + 1, "rb");
  if (!f) return NULL;
  char *s = calloc(1, 1 << 16);
  if (s) fread(s, 1, (1 << 16) - 1, f);
  fclose(f);
  return s;
}

static int policies(const eargs *a, adb__eval_policy *pol) {
  for (int k = 0; k < a->n_pol; k++) {
    char err[256] = "cannot read the file", *txt = policy_text(a->pol[k]);
    int rc = txt ? adb__eval_policy_parse(txt, &pol[k], err, sizeof err)
                 : ADB_EINVAL;
    free(txt);
    if (rc) {
      fprintf(stderr, "agentdb evaluate: policy %d (%s): %s\n", k + 1,
              a->pol[k], err);
      return 2;
    }
    if (!pol[k].name[0])
      snprintf(pol[k].name, sizeof pol[k].name, "policy-%d", k + 1);
  }
  return 0;
}

/* Rows pass through here for the progress line. */
typedef struct prog {
  adb__eval *ev;
  int tty;
  int64_t rows, from_ms, to_ms;
  time_t last;
} prog;

static int on_row(void *ctx, const adb__log_row *row) {
  prog *p = ctx;
  int rc = adb__eval_row(p->ev, row);
  if (p->tty && ++p->rows % 256 == 0 && time(NULL) != p->last) {
    p->last = time(NULL);
    double span = (double)(p->to_ms - p->from_ms);
    double f = row->d && span > 0 && span < 1e15
                   ? (double)(row->d->ts_ms - p->from_ms) / span
                   : -1;
    if (f >= 0 && f <= 1) {
      int bar = (int)(f * 30);
      fprintf(stderr, "\revaluate: [%.*s%*s] %3.0f%%  %lld rows", bar,
              "##############################", 30 - bar, "", 100 * f,
              (long long)p->rows);
    } else {
      fprintf(stderr, "\revaluate: %lld rows", (long long)p->rows);
    }
  }
  return rc;
}

/* INTEGRATION: the DSJSON reader of issue 10 (export side) goes here: read
 * FILE and call fn(ctx, row) for each good row in order, reporting bad
 * rows with their line number on stderr. */
static int scan_dsjson(const char *path, adb__log_fn fn, void *ctx) {
  (void)fn, (void)ctx;
  fprintf(stderr,
          "agentdb evaluate: --log %s: this build has no DSJSON reader yet "
          "(issue 10, export)\n",
          path);
  return ADB_EINVAL;
}

static int scan_store(const eargs *a, prog *p) {
  const char *url = a->store ? a->store : getenv("AGENTDB_STORE");
  adb_config cfg = {.store_url = url && *url ? url : DEFAULT_STORE};
  adb *db = NULL;
  char err[512];
  int rc = adb_open(&cfg, &db, err, sizeof err);
  if (rc) {
    fprintf(stderr, "agentdb evaluate: %s\n", err);
    return rc;
  }
  adb_agent_config ac;
  rc = adb_agent_get(db, a->agent, &ac);
  if (rc)
    fprintf(stderr, "agentdb evaluate: agent '%s': %s\n", a->agent,
            adb_errmsg(db));
  if (rc == ADB_OK) {
    rc = adb__eval_scan_store(db, a->agent, p->from_ms, p->to_ms, on_row, p);
    if (rc == ADB_EINVAL)
      fprintf(stderr, "agentdb evaluate: this build cannot read the store's "
                      "log yet (log_scan, issue 10 export)\n");
    else if (rc)
      fprintf(stderr, "agentdb evaluate: reading the log: %s\n",
              adb_errmsg(db));
  }
  adb_close(db);
  return rc;
}

static int times(const eargs *a, prog *p) {
  p->from_ms = 0;
  p->to_ms = INT64_MAX;
  if ((a->from && adb__api_parse_time(a->from, &p->from_ms)) ||
      (a->to && adb__api_parse_time(a->to, &p->to_ms))) {
    fprintf(stderr, "agentdb evaluate: --from/--to take milliseconds since "
                    "the epoch or ISO-8601\n");
    return 2;
  }
  return 0;
}

static void print(const eargs *a, const adb__eval *ev) {
  int n = adb__eval_count(ev);
  adb__eval_result res[ADB_EVAL_MAX_POLICIES];
  adb__eval_summary sum;
  adb__eval_results(ev, res, &sum);
  char *s =
      a->json ? adb__eval_json(res, n, &sum) : adb__eval_table(res, n, &sum);
  if (s) fputs(s, stdout);
  if (s && a->json) fputc('\n', stdout);
  free(s);
}

int cli_evaluate(int argc, char **argv) {
  eargs a = {.seed = 1};
  int rc = parse(argc, argv, &a);
  if (rc) return rc == 1 ? 0 : rc;
  adb__eval_policy pol[ADB_EVAL_MAX_POLICIES];
  if (policies(&a, pol)) return 2;
  prog p = {.tty = isatty(2)};
  if (times(&a, &p)) return 2;
  if (adb__eval_new(pol, a.n_pol, a.seed, &p.ev)) return 1;
  rc = a.log ? scan_dsjson(a.log, on_row, &p) : scan_store(&a, &p);
  if (p.tty && p.rows >= 256) fprintf(stderr, "\n");
  if (rc == ADB_OK) print(&a, p.ev);
  adb__eval_free(p.ev);
  return rc ? 1 : 0;
}
