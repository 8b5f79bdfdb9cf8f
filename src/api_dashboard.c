/*
 * api_dashboard.c — the dashboard: its page (HTML, JS, CSS compiled into
 * the binary by cmake/embed_web.cmake, served without a key at / and
 * /dashboard/...) and the JSON routes it reads, under /v1/dashboard and
 * behind the API keys like the rest of /v1:
 *   GET /v1/dashboard/overview                       every agent, summed
 *   GET /v1/dashboard/agents/{agent}/series          per-minute and hourly
 *   GET /v1/dashboard/recent                         decisions and rewards
 *   GET /v1/dashboard/agents/{agent}/inspect/{user}  posterior per action
 * The series and the tail come from the in-memory trackers of dash.c,
 * which the decide and reward handlers feed; the inspector reads the
 * stored posterior (adb_policy_get) and adds what a person wants to see:
 * a 95% credible interval and each action's choice probability.
 */
#define _GNU_SOURCE
#include "api_internal.h"
#include "bandit.h"
#include "web_assets.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ assets */

static int put_asset(rctx *x, const char *name) {
  for (int i = 0; i < adb__n_web_assets; i++) {
    const adb__web_asset *a = &adb__web_assets[i];
    if (strcmp(a->name, name) != 0) continue;
    adb__buf_append(x->out, a->data, a->len);
    x->resp->content_type = a->content_type;
    adb__http_resp_header(x->resp, "Cache-Control", "no-cache");
    return 0;
  }
  return adb__api_fail(x, 404, "not_found", NULL, "no asset '%s'", name);
}

int adb__api_dash_index(rctx *x) {
  return put_asset(x, "index.html");
}

int adb__api_dash_asset(rctx *x) {
  return put_asset(x, x->param[0]);
}

/* ---------------------------------------------------------- overview */

static int allowed(rctx *x, const char *agent) {
  return x->key < 0 || adb__auth_allows(x->api->cfg.auth, x->key, agent);
}

static int allow_cb(void *ud, const char *agent) {
  return allowed(ud, agent);
}

static void put_ratio(adb__buf *b, const char *k, double num, double den) {
  adb__api_put_key(b, k, 0);
  if (den > 0)
    adb__json_num9(b, num / den);
  else
    adb__buf_puts(b, "null");
}

static void put_ms(adb__buf *b, const char *k, double v) {
  adb__api_put_key(b, k, 0);
  if (isfinite(v))
    adb__json_num9(b, v);
  else
    adb__buf_puts(b, "null");
}

static void put_summary(adb__buf *b, const adb__dash_summary *s) {
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", s->agent, 1);
  adb__api_put_int(b, "decisions", s->decisions);
  adb__api_put_int(b, "rewards", s->rewards);
  adb__api_put_num(b, "reward_sum", s->reward_sum);
  put_ratio(b, "mean_reward", s->reward_sum, (double)s->rewards);
  adb__api_put_int(b, "decisions_hour", s->decisions_hour);
  adb__api_put_int(b, "rewards_hour", s->rewards_hour);
  put_ratio(b, "mean_reward_hour", s->reward_sum_hour, (double)s->rewards_hour);
  adb__api_put_num(b, "decisions_per_s", s->decisions_per_s);
  adb__api_put_num(b, "rewards_per_s", s->rewards_per_s);
  put_ms(b, "p50_ms", s->p50_ms);
  put_ms(b, "p99_ms", s->p99_ms);
  adb__api_put_int(b, "last_ms", s->last_ms);
  adb__buf_putc(b, '}');
}

typedef struct each_ctx {
  rctx *x;
  int n;
} each_ctx;

static void overview_agent(void *ud, const adb__dash_summary *s) {
  each_ctx *c = ud;
  if (!allowed(c->x, s->agent)) return;
  if (c->n++) adb__buf_putc(c->x->out, ',');
  put_summary(c->x->out, s);
}

int adb__api_dash_overview(rctx *x) {
  adb_stats st;
  memset(&st, 0, sizeof st);
  adb_stats_get(x->db, &st);
  adb__dash *d = x->api->dash;
  adb__buf *b = x->out;
  int64_t now = adb__api_wall_ms();
  adb__buf_printf(b, "{\"now_ms\":%lld", (long long)now);
  adb__api_put_int(b, "max_agents", adb__dash_max_agents(d));
  adb__api_put_int(b, "queue_depth", st.queue_depth);
  adb__api_put_int(b, "queue_capacity", st.queue_capacity);
  adb__api_put_int(b, "cache_hits", st.cache_hits);
  adb__api_put_int(b, "cache_misses", st.cache_misses);
  put_ratio(b, "cache_hit_rate", (double)st.cache_hits,
            (double)(st.cache_hits + st.cache_misses));
  adb__api_put_int(b, "store_errors", st.store_errors);
  adb__api_put_key(b, "agents", 0);
  adb__buf_putc(b, '[');
  each_ctx c = {x, 0};
  adb__dash_each(d, now, overview_agent, &c);
  adb__buf_puts(b, "]}");
  return 0;
}

/* ------------------------------------------------------------ series */

static int int_param(rctx *x, const char *name, int lo, int hi, int *v) {
  int bad;
  const char *s = adb__api_query_get(x, name, &bad);
  if (!s && !bad) return 0;
  char *end;
  long n = s ? strtol(s, &end, 10) : 0;
  if (bad || !s || *end || end == s || n < lo || n > hi)
    return adb__api_fail(x, 400, "invalid_field", name,
                         "'%s' must be an integer in [%d, %d]", name, lo, hi);
  *v = (int)n;
  return 0;
}

int adb__api_dash_series(rctx *x) {
  int minutes = ADB__DASH_MINUTES, hours = ADB__DASH_HOURS;
  if (int_param(x, "minutes", 1, ADB__DASH_MINUTES, &minutes) ||
      int_param(x, "hours", 1, ADB__DASH_HOURS, &hours))
    return -1;
  adb__dash_summary s;
  int64_t now = adb__api_wall_ms();
  adb__buf *b = x->out;
  if (!adb__dash_summary_of(x->api->dash, x->param[0], now, &s)) {
    /* An agent without traffic since start: its summary is all zeros. */
    memset(&s, 0, sizeof s);
    snprintf(s.agent, sizeof s.agent, "%s", x->param[0]);
    s.p50_ms = s.p99_ms = NAN;
  }
  adb__buf_printf(b, "{\"agent\":");
  adb__json_str(b, x->param[0]);
  adb__buf_printf(b, ",\"now_ms\":%lld,\"summary\":", (long long)now);
  put_summary(b, &s);
  adb__buf_puts(b, ",\"series\":");
  if (!adb__dash_series_json(x->api->dash, x->param[0], now, minutes, hours, b))
    adb__buf_puts(b, "null");
  /* The learning curve's baseline: none is known to the server yet. */
  adb__buf_puts(b, ",\"baseline\":null}");
  return 0;
}

/* ------------------------------------------------------------ recent */

int adb__api_dash_recent(rctx *x) {
  int limit = 50;
  if (int_param(x, "limit", 1, ADB__DASH_TAIL, &limit)) return -1;
  adb__buf_puts(x->out, "{\"events\":");
  adb__dash_recent_json(x->api->dash, limit, allow_cb, x, x->out);
  adb__buf_putc(x->out, '}');
  return 0;
}

/* ----------------------------------------------------------- inspect */

#define CI_DRAWS 4000
#define MAX_EXACT_ARMS 64 /* adb__propensity per arm; Monte Carlo above */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The 2.5% and 97.5% quantiles of CI_DRAWS posterior draws. */
static void credible(adb__rng *r, const adb__posterior *p, double *draws,
                     double *lo, double *hi) {
  int n = 0;
  for (int i = 0; i < CI_DRAWS; i++) {
    double v = adb__posterior_sample(r, p);
    if (isfinite(v)) draws[n++] = v;
  }
  if (!n) {
    *lo = *hi = NAN;
    return;
  }
  qsort(draws, (size_t)n, sizeof *draws, cmp_double);
  *lo = draws[(int)(0.025 * (n - 1))];
  *hi = draws[(int)(0.975 * (n - 1) + 0.5)];
}

static void posterior_of(const adb_arm_posterior *a, adb_algorithm algo,
                         adb__posterior *p) {
  *p = (adb__posterior){.algo = algo,
                        .alpha = a->alpha,
                        .beta = a->beta,
                        .mu = a->mu,
                        .kappa = a->kappa,
                        .a = a->a,
                        .b = a->b};
}

/* The state key from ?state_key= or ?context={json}, or the empty
 * context's. */
static int inspect_state(rctx *x, char *key) {
  int bad;
  const char *sk = adb__api_query_get(x, "state_key", &bad);
  if (bad || (sk && !adb__api_is_state_key(sk)))
    return adb__api_fail(x, 400, "invalid_field", "state_key",
                         "'state_key' must be 64 lowercase hex characters");
  if (sk) {
    memcpy(key, sk, ADB_STATE_KEY_LEN + 1);
    return 0;
  }
  const char *cs = adb__api_query_get(x, "context", &bad);
  adb_kv *kv = NULL;
  int n = 0;
  if (bad) return adb__api_fail(x, 400, "invalid_field", "context", "bad");
  if (cs) {
    json_t *c = json_loads(cs, JSON_REJECT_DUPLICATES, NULL);
    x->doc = json_object();
    if (!c || !x->doc || json_object_set_new(x->doc, "context", c))
      return adb__api_fail(x, 400, "invalid_field", "context",
                           "'context' must be a JSON object");
    if (adb__api_get_context(x, x->doc, "context", &kv, &n)) return -1;
  }
  int rc = adb_state_key(x->db, x->param[0], kv, n, NULL, 0, key);
  return rc == ADB_OK ? 0 : adb__api_fail_adb(x, rc, "context");
}

static int fetch_arms(rctx *x, const char *sk, adb_arm_posterior **arms,
                      int *n) {
  int cap = 256;
  for (;;) {
    *arms = adb__api_alloc(x, (size_t)cap * sizeof **arms);
    if (!*arms) return adb__api_fail(x, 500, "internal", NULL, "no memory");
    int rc = adb_policy_get(x->db, x->param[0], x->param[1], sk, *arms, cap, n);
    if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
    if (*n <= cap) return 0;
    cap = *n;
  }
}

static void put_inspected(adb__buf *b, const adb_arm_posterior *a, double lo,
                          double hi, double p) {
  adb__buf_puts(b, "{\"action\":");
  adb__json_str(b, a->action);
  adb__api_put_int(b, "n", a->n);
  adb__api_put_num(b, "mean", a->mean);
  put_ms(b, "ci_low", lo);
  put_ms(b, "ci_high", hi);
  adb__api_put_num(b, "choice_probability", p);
  adb__buf_putc(b, '}');
}

int adb__api_dash_inspect(rctx *x) {
  adb_agent_config cfg;
  int rc = adb_agent_get(x->db, x->param[0], &cfg);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  char sk[ADB_STATE_KEY_LEN + 1];
  adb_arm_posterior *arms;
  int n;
  if (inspect_state(x, sk) || fetch_arms(x, sk, &arms, &n)) return -1;
  adb__posterior *post = adb__api_alloc(x, (size_t)(n ? n : 1) * sizeof *post);
  double *draws = adb__api_alloc(x, CI_DRAWS * sizeof *draws);
  if (!post || !draws)
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  for (int i = 0; i < n; i++)
    posterior_of(&arms[i], cfg.algorithm, &post[i]);
  adb__rng rng;
  adb__rng_seed(&rng, 12345); /* the same answer for the same posterior */
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "agent", x->param[0], 1);
  adb__api_put_str(b, "user_id", x->param[1], 0);
  adb__api_put_str(b, "state_key", sk, 0);
  adb__api_put_str(b, "algorithm", adb__api_algo_name(cfg.algorithm), 0);
  adb__api_put_key(b, "arms", 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    double lo, hi;
    credible(&rng, &post[i], draws, &lo, &hi);
    double p = n <= MAX_EXACT_ARMS
                   ? adb__propensity(post, n, NULL, i)
                   : adb__propensity_mc(&rng, post, n, NULL, i, 2000);
    if (i) adb__buf_putc(b, ',');
    put_inspected(b, &arms[i], lo, hi, p);
  }
  adb__buf_puts(b, "]}");
  return 0;
}
