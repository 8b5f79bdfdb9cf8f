/*
 * logio.c — `agentdb export` and `agentdb import`: the decision log as a
 * file (issue 10; docs/evaluation.md "Export" and "Import").
 *
 *   agentdb export --agent A [--from T1] [--to T2] [--format dsjson|jsonl|csv]
 *                  [--out FILE]
 *   agentdb import --agent A [--format dsjson] FILE   ("-" = stdin)
 *
 * T is milliseconds since the epoch or an ISO 8601 time; the range is
 * [from, to), everything by default. --store URL (env AGENTDB_STORE). Both
 * open the store alone (no cache, no flush worker): export reads it in
 * keyset pages, import writes batches as the flush worker does. Progress
 * goes to stderr about once a second.
 */
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "agentdb.h"
#include "api.h"
#include "cli.h"
#include "logfmt.h"
#include "logimport.h"
#include "store.h"
#include "util.h"

#define DEFAULT_STORE "sqlite://./data/agentdb.db"

typedef struct args {
  const char *store, *agent, *from, *to, *format, *out, *file;
} args;

static const char *flag_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (!strcmp(argv[*i], name) && *i + 1 < argc) return argv[++*i];
  return NULL;
}

static const char export_help[] =
    "usage: agentdb export --agent A [--from T1] [--to T2] "
    "[--format dsjson|jsonl|csv] [--out FILE] [--store URL]\n"
    "Writes the agent's decisions in [T1, T2), each joined with its rewards\n"
    "(or the default reward), in time order: dsjson (Vowpal Wabbit's --dsjson\n"
    "for --cb_explore_adf; the default), jsonl or csv (docs/evaluation.md).\n"
    "Times: milliseconds since the epoch or ISO-8601. --out: default stdout.\n"
    "--store: env AGENTDB_STORE, default sqlite://./data/agentdb.db.\n";
static const char import_help[] =
    "usage: agentdb import --agent A [--format dsjson] FILE [--store URL]\n"
    "Stores each good DSJSON row of FILE ('-' for stdin) as a decision with\n"
    "its reward, so the agent's models learn from it exactly once (importing\n"
    "a file twice changes nothing); bad rows are reported with their line\n"
    "number and skipped.\n";

static int help_asked(int argc, char **argv, const char *text) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(text, stdout);
      return 1;
    }
  return 0;
}

static int parse(int argc, char **argv, args *a) {
  static const char *const names[] = {"--store", "--agent",  "--from",
                                      "--to",    "--format", "--out"};
  for (int i = 1; i < argc; i++) {
    const char **slot[] = {&a->store, &a->agent,  &a->from,
                           &a->to,    &a->format, &a->out};
    int hit = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names && !hit; k++) {
      const char *v = flag_value(argc, argv, &i, names[k]);
      if (v) {
        *slot[k] = v;
        hit = 1;
      }
    }
    if (hit) continue;
    if (!a->file && (argv[i][0] != '-' || !strcmp(argv[i], "-"))) {
      a->file = argv[i];
      continue;
    }
    fprintf(stderr, "agentdb: unknown argument '%s'\n", argv[i]);
    return 2;
  }
  if (!a->agent || !adb_id_valid(a->agent)) {
    fprintf(stderr, "agentdb: --agent ID is required\n");
    return 2;
  }
  return 0;
}

static adb__store *open_store(const args *a) {
  const char *url = a->store ? a->store : getenv("AGENTDB_STORE");
  adb_config cfg = {.store_url = url && *url ? url : DEFAULT_STORE};
  adb__store *st = NULL;
  char err[1024] = "";
  int rc = adb__store_open(cfg.store_url, &cfg, &st, err, sizeof err);
  if (rc) fprintf(stderr, "agentdb: %s (%s)\n", err, adb_err_name(rc));
  return st;
}

static int time_arg(const char *name, const char *v, int64_t dflt,
                    int64_t *out) {
  *out = dflt;
  if (!v) return 0;
  if (adb__api_parse_time(v, out) == ADB_OK) return 0;
  fprintf(stderr, "agentdb: %s must be milliseconds or ISO 8601, not '%s'\n",
          name, v);
  return 2;
}

/* ---------------------------------------------------------------- export */

typedef struct export_ctx {
  adb__logw *w;
  int64_t rows, next_report_ns, start_ns;
} export_ctx;

static void progress(const char *verb, int64_t rows, int64_t start_ns,
                     int64_t *next_ns, int last) {
  int64_t now = adb__mono_ns();
  if (!last && now < *next_ns) return;
  *next_ns = now + 1000000000;
  double s = (double)(now - start_ns) / 1e9;
  /* On a terminal the line is rewritten in place; in a log, one per line. */
  int tty = isatty(STDERR_FILENO);
  fprintf(stderr, "%sagentdb: %s %" PRId64 " rows, %.1f s, %.0f rows/s%s",
          tty ? "\r" : "", verb, rows, s, s > 0 ? (double)rows / s : 0.0,
          last || !tty ? "\n" : "");
}

static int export_row(void *ctx, const adb__log_row *row) {
  export_ctx *x = ctx;
  int rc = adb__logw_row(x->w, row);
  if (!rc && (++x->rows & 1023) == 0)
    progress("exported", x->rows, x->start_ns, &x->next_report_ns, 0);
  return rc;
}

int cli_export(int argc, char **argv) {
  if (help_asked(argc, argv, export_help)) return 0;
  args a = {0};
  int64_t from, to;
  int rc = parse(argc, argv, &a);
  if (!rc) rc = time_arg("--from", a.from, INT64_MIN, &from);
  if (!rc) rc = time_arg("--to", a.to, INT64_MAX, &to);
  int fmt = adb__logfmt_parse(a.format);
  if (!rc && fmt < 0) {
    fprintf(stderr, "agentdb: --format must be dsjson, jsonl or csv\n");
    rc = 2;
  }
  if (rc) {
    fprintf(stderr, "usage: agentdb export --agent A [--from T1] [--to T2] "
                    "[--format dsjson|jsonl|csv] [--out FILE] [--store URL]\n");
    return rc;
  }
  FILE *out = a.out && strcmp(a.out, "-") ? fopen(a.out, "wb") : stdout;
  if (!out) {
    perror(a.out);
    return 1;
  }
  adb__store *st = open_store(&a);
  export_ctx x = {.start_ns = adb__mono_ns()};
  x.w = st ? adb__logw_new(fmt, adb__logw_file_sink, out) : NULL;
  rc = !st ? ADB_EUNAVAIL : !x.w ? ADB_ENOMEM : ADB_OK;
  if (!rc) rc = st->m->log_scan(st, a.agent, from, to, export_row, &x);
  if (!rc) rc = adb__logw_finish(x.w);
  if (out != stdout && fclose(out) && !rc) rc = ADB_EIO;
  if (out == stdout && fflush(out) && !rc) rc = ADB_EIO;
  if (st) progress("exported", x.rows, x.start_ns, &x.next_report_ns, 1);
  if (rc && st)
    fprintf(stderr, "agentdb: export: %s (%s)\n", adb__store_errmsg(st),
            adb_err_name(rc));
  adb__logw_free(x.w);
  adb__store_close(st);
  return rc ? 1 : 0;
}

/* ---------------------------------------------------------------- import */

typedef struct import_ctx {
  adb__log_import *im;
  int64_t rows, next_report_ns, start_ns;
} import_ctx;

static void bad_row(void *ctx, long line, const char *why) {
  (void)ctx;
  fprintf(stderr, "agentdb: import: line %ld skipped: %s\n", line, why);
}

static int import_row(void *ctx, const adb__log_row *row) {
  import_ctx *x = ctx;
  int rc = adb__log_import_row(x->im, row);
  if (!rc && (++x->rows & 1023) == 0)
    progress("read", x->rows, x->start_ns, &x->next_report_ns, 0);
  return rc;
}

int cli_import(int argc, char **argv) {
  if (help_asked(argc, argv, import_help)) return 0;
  args a = {0};
  int rc = parse(argc, argv, &a);
  if (!rc && a.format && strcmp(a.format, "dsjson")) {
    fprintf(stderr, "agentdb: import reads --format dsjson only\n");
    rc = 2;
  }
  if (!rc && !a.file) rc = 2;
  if (rc) {
    fprintf(stderr, "usage: agentdb import --agent A [--format dsjson] FILE "
                    "[--store URL]\n");
    return rc;
  }
  FILE *in = strcmp(a.file, "-") ? fopen(a.file, "rb") : stdin;
  if (!in) {
    perror(a.file);
    return 1;
  }
  adb__store *st = open_store(&a);
  import_ctx x = {.start_ns = adb__mono_ns()};
  rc = st ? adb__log_import_new(st, a.agent, &x.im) : ADB_EUNAVAIL;
  long good = 0, bad = 0;
  if (!rc)
    rc = adb__dsjson_read(in, a.agent, import_row, &x, bad_row, &good, &bad);
  if (!rc) rc = adb__log_import_finish(x.im);
  if (in != stdin) fclose(in);
  if (x.im && rc) {
    fprintf(stderr, "agentdb: import: %s (%s)\n", adb__log_import_errmsg(x.im),
            adb_err_name(rc));
  } else if (x.im) {
    adb__log_import_stats s = adb__log_import_get_stats(x.im);
    progress("read", x.rows, x.start_ns, &x.next_report_ns, 1);
    printf("imported %" PRId64 " decisions and %" PRId64
           " rewards from %ld good rows; %ld bad rows skipped, %" PRId64
           " rows the agent could not key, %" PRId64 " already present\n",
           s.decisions, s.rewards, good, bad, s.skipped,
           good - s.skipped - s.decisions);
  }
  adb__log_import_free(x.im);
  adb__store_close(st);
  return rc ? (rc == ADB_ENOTFOUND ? 3 : 1) : 0;
}
