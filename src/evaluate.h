/*
 * evaluate.h — offline evaluation (issue 10): replays logged decisions
 * (adb__log_row, offline.h) in time order through candidate policies
 * built from AgentDB's own models, and estimates each one's mean reward
 * by IPS, self-normalised IPS and doubly robust estimators. The design
 * essay is at the top of evaluate.c.
 *
 * Feeding it: adb__eval_row is an adb__log_fn, so a store's log_scan or
 * the DSJSON reader calls it directly with the evaluator as ctx.
 */
#ifndef ADB_EVALUATE_H
#define ADB_EVALUATE_H

#include <stddef.h>
#include <stdint.h>

#include "agentdb.h"
#include "offline.h"

#define ADB_EVAL_MAX_POLICIES 16
#define ADB_EVAL_MAX_CANDS ADB_MAX_CANDIDATES

/* A candidate policy: an agent config as POST /v1/agents takes it, and a
 * name for the tables ("name" in the JSON; else "policy-<i>"). */
typedef struct adb__eval_policy {
  char name[64];
  adb_agent_config cfg;
} adb__eval_policy;

/* Parses one policy from JSON text: an agent config, read and checked as
 * PUT /v1/agents/{agent} reads it (agent_json.c; the replay uses
 * algorithm, prior, context_keys, simhash_bits, fallback_strength,
 * decay_half_life_s, crosses, lambda, v), plus "name". ADB_OK, or
 * ADB_EINVAL with a message in err. */
int adb__eval_policy_parse(const char *json, adb__eval_policy *p, char *err,
                           size_t errlen);

/* One candidate's learner, alone (the simulator's logging policy uses it
 * too): pi over a row's candidates, then the update with the logged
 * action. */
typedef struct adb__eval_learner adb__eval_learner;
int adb__eval_learner_new(const adb_agent_config *cfg, uint64_t seed,
                          adb__eval_learner **out);
void adb__eval_learner_free(adb__eval_learner *l);
/* Fills pi[0..n_cand) (sums to 1) for the row's candidates. ADB_OK,
 * ADB_EINVAL (row unreadable: message in err), ADB_ENOMEM. */
int adb__eval_learner_dist(adb__eval_learner *l, const adb__log_row *row,
                           double *pi, char *err, size_t errlen);
/* Learns the row's logged action and reward. */
int adb__eval_learner_update(adb__eval_learner *l, const adb__log_row *row,
                             char *err, size_t errlen);

typedef struct adb__eval_interval {
  double est, lo, hi; /* estimate and its 95% interval */
} adb__eval_interval;

typedef struct adb__eval_result {
  char name[64];
  adb__eval_interval ips, snips, dr;
  double ess;   /* (sum w)^2 / sum w^2 */
  double max_w; /* largest importance weight */
  /* With a truth function (simulation): (1/T) sum_t sum_a pi_t(a) mu. */
  double truth;
} adb__eval_result;

typedef struct adb__eval_summary {
  int64_t rows;              /* rows evaluated */
  int64_t pending;           /* skipped: no reward yet */
  int64_t bad;               /* skipped: unreadable (see last_error) */
  adb__eval_interval logged; /* the logged policy's mean reward */
  char last_error[256];
} adb__eval_summary;

typedef struct adb__eval adb__eval;

/* An evaluator of n policies (1..ADB_EVAL_MAX_POLICIES); seed makes the
 * linear candidates' posterior draws reproducible. */
int adb__eval_new(const adb__eval_policy *pols, int n, uint64_t seed,
                  adb__eval **out);
void adb__eval_free(adb__eval *ev);
/* For simulations: mu(ctx, row, i) is the expected reward of candidate i. */
void adb__eval_set_truth(adb__eval *ev,
                         double (*mu)(void *ctx, const adb__log_row *row,
                                      int i),
                         void *ctx);
/* Replays one row (an adb__log_fn; ctx is the adb__eval). Rows without a
 * reward yet, or unreadable ones, are counted and skipped; returns
 * nonzero only on ADB_ENOMEM. */
int adb__eval_row(void *ctx, const adb__log_row *row);
/* Results so far: out[0..n) and the summary. */
void adb__eval_results(const adb__eval *ev, adb__eval_result *out,
                       adb__eval_summary *sum);
int adb__eval_count(const adb__eval *ev);

/* Writes results as JSON ({"rows":..,"logged":{..},"policies":[..]}) or
 * as a terminal table into a malloc'd string (NULL on ENOMEM). */
char *adb__eval_json(const adb__eval_result *r, int n,
                     const adb__eval_summary *s);
char *adb__eval_table(const adb__eval_result *r, int n,
                      const adb__eval_summary *s);

/* Where evaluations read an agent's log: calls fn(ctx, row) for each row
 * of the agent with from_ms <= ts < to_ms, in time order; returns ADB_OK,
 * fn's nonzero return, or an ADB_E* code. */
typedef int (*adb__eval_scan_fn)(void *arg, const char *agent, int64_t from_ms,
                                 int64_t to_ms, adb__log_fn fn, void *ctx);
/* The store's log (arg is the adb handle): its store's log_scan. Until
 * that method is merged (issue 10, export), ADB_EINVAL. */
int adb__eval_scan_store(void *arg, const char *agent, int64_t from_ms,
                         int64_t to_ms, adb__log_fn fn, void *ctx);

/* Evaluations in the background (evaluate_job.c; design there): at most
 * max_running at once (<= 0: 2), each on its own lowest-priority thread,
 * reading through scan(arg, ...) (NULL: adb__eval_scan_store, arg the
 * adb handle). stop cancels and joins every evaluation (call it before
 * the handle closes); free stops, then frees (NULL is a no-op). */
typedef struct adb__eval_jobs adb__eval_jobs;
int adb__eval_jobs_new(int max_running, adb__eval_scan_fn scan, void *arg,
                       adb__eval_jobs **out);
void adb__eval_jobs_stop(adb__eval_jobs *j);
void adb__eval_jobs_free(adb__eval_jobs *j);
int adb__eval_jobs_max(const adb__eval_jobs *j);
/* Starts one: ADB_OK and its id (32 hex digits), ADB_EFULL when
 * max_running run already, ADB_EINVAL for bad policies, ADB_ENOMEM. */
int adb__eval_job_start(adb__eval_jobs *j, const char *agent,
                        const adb__eval_policy *pols, int n, int64_t from_ms,
                        int64_t to_ms, char id[33]);
/* Its status, progress and (when done) result as JSON appended to out;
 * ADB_ENOTFOUND for an unknown id (or one of another agent). */
struct adb__sbuf;
int adb__eval_job_get(adb__eval_jobs *j, const char *agent, const char *id,
                      struct adb__sbuf *out);
/* {"max_running":N,"evaluations":[...]} of the agent, newest first. */
int adb__eval_job_list(adb__eval_jobs *j, const char *agent,
                       struct adb__sbuf *out);
/* Cancels (a running one stops at its next row) and forgets it. */
int adb__eval_job_cancel(adb__eval_jobs *j, const char *agent, const char *id,
                         struct adb__sbuf *out);
#endif
