/*
 * api_personalizer.c — Azure Personalizer's v1.0 REST API over an agent,
 * so that an application written against Microsoft's SDKs keeps working
 * with only its endpoint and key changed (docs/personalizer.md maps every
 * field and lists every difference).
 *
 * Design
 * ------
 * One Personalizer resource is one agent: the agent a key scoped to
 * exactly one agent names, else the agent of the server setting
 * --personalizer-agent (default "personalizer"), created as a linear agent
 * on first use. The key comes in Ocp-Apim-Subscription-Key (api.c).
 *
 * Rank is a decide: the context features (features.c) become the decision's
 * embedding (the linear model's user/context slot), the actions' features
 * become the catalogue embeddings of the actions (its action slot), written
 * only when they change (a per-process digest per action) and then folded
 * into the model at once. The ranking's probabilities are the chosen
 * action's logged propensity and the rest shared evenly among the other
 * eligible actions; excluded actions come last with probability 0.
 *
 * Ids. Personalizer's event and action ids are up to 256 characters of
 * anything; an id that is not an AgentDB id (1..128 of [A-Za-z0-9._:@-])
 * is stored as "pzh:" + the first 40 hex digits of its SHA-256, and the
 * answers carry the caller's ids.
 *
 * Deferred activation. A rank with deferActivation marks its event in the
 * store (event_defer, table deferred_events) before its decision is made.
 * A reward for a marked event not yet activated is held in the agent's
 * pattern "pzr:<event>", not applied; activation records itself in the
 * mark and then applies a held reward. The reward writes "pzr:" and then
 * reads the mark again, the activation writes the mark and then reads
 * "pzr:": whatever the interleaving, one of them sees the other, and if
 * both apply the reward, its reward id (the event id) makes the second a
 * duplicate — exactly once, as the write path guarantees for any reward.
 * When the reward window of a decision whose event is still not activated
 * ends, the store's sweep closes the event without a default reward, so a
 * never-activated event is not learned from at all (store.h event_defer).
 *
 * Learning modes. Online: the model chooses. Apprentice and LoggingOnly:
 * the baseline (the first non-excluded action) is the only candidate of
 * the decision, so it is returned and logged with propensity 1, and the
 * model learns from its rewards. Apprentice also asks the model what it
 * would have chosen (a decision of the model under the event id
 * "pzp:<event>", never rewarded) so GET .../apprentice can compare.
 *
 * Evaluations are AgentDB's background evaluations (evaluate.h) over the
 * agent's log: policy 0 the agent's current policy, then the request's,
 * each a copy of the agent's config with the VW arguments AgentDB honours
 * (--lambda, --v) applied. What only Personalizer has (names, window,
 * arguments) is kept in memory beside the job, as long as the job.
 *
 * Settings the agent has (reward wait time = reward_window_s, default
 * reward = default_reward) live in its config; the rest of Personalizer's
 * service configuration and the policy are kept in the agent's pattern
 * "pz.service" / "pz.policy" (re-written after a model reset).
 */
#define _GNU_SOURCE
#include "api_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "coordinator.h"
#include "evaluate.h"
#include "feature.h"
#include "policy.h"
#include "statekey.h"

#define PZ_USER "personalizer"
#define PZ_ID_MAX 256

/* ------------------------------------------------------------- errors */

static int pz_fail(rctx *x, int status, const char *code, const char *fmt,
                   const char *arg) {
  return adb__api_fail(x, status, code, NULL, fmt, arg ? arg : "");
}

/* A library failure in Personalizer's codes (statuses as adb__api_status). */
static int pz_fail_adb(rctx *x, int rc) {
  const char *code;
  int retry;
  int status = adb__api_status(rc, &code, &retry);
  const char *msg = adb_errmsg(x->db);
  if (!msg || !*msg) msg = adb_strerror(rc);
  code = status == 400   ? "BadRequest"
         : status == 404 ? "ResourceNotFound"
         : status == 409 ? "BadRequest"
                         : "InternalServerError";
  adb__api_fail(x, status, code, NULL, "%s", msg);
  if (retry) adb__http_resp_header(x->resp, "Retry-After", "1");
  return -1;
}

/* The body as a JSON object (Personalizer's BadRequest otherwise). */
static json_t *pz_body(rctx *x, int allow_empty) {
  if (x->req->body_len == 0 && allow_empty) return x->doc = json_object();
  json_error_t e;
  x->doc =
      json_loadb(x->req->body, x->req->body_len, JSON_REJECT_DUPLICATES, &e);
  if (!x->doc || !json_is_object(x->doc)) {
    adb__api_fail(x, 400, "BadRequest", NULL,
                  "the body must be a JSON object: %s",
                  x->doc ? "not an object" : e.text);
    return NULL;
  }
  return x->doc;
}

static int pz_keys(rctx *x, json_t *o, const char *const *allowed) {
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    int ok = 0;
    for (int i = 0; allowed[i] && !ok; i++)
      ok = !strcmp(k, allowed[i]);
    if (!ok) return pz_fail(x, 400, "BadRequest", "unknown field '%.64s'", k);
  }
  return 0;
}

/* ------------------------------------------------------ agent and ids */

/* The agent of the request's key; NULL after answering 401. */
static const char *pz_agent(rctx *x) {
  const char *def = x->api->cfg.personalizer_agent;
  if (!def || !*def) def = "personalizer";
  if (x->key < 0) return def;
  const char *only = NULL;
  int n = adb__auth_scope(x->auth, x->key, &only);
  if (n == 1 && only) return only;
  if (n == 0 || adb__auth_allows(x->auth, x->key, def)) return def;
  pz_fail(x, 401, "401",
          "this key is scoped to several agents, not to one and not to "
          "'%s': give the Personalizer application a key of its own agent",
          def);
  return NULL;
}

/* The agent's config; a missing agent is created (linear, 16-d features,
 * Personalizer's default wait time of 10 minutes). */
static int pz_ensure(rctx *x, const char *agent, adb_agent_config *c) {
  int rc = adb_agent_get(x->db, agent, c);
  if (rc != ADB_ENOTFOUND) return rc ? pz_fail_adb(x, rc) : 0;
  adb_agent_config_init(c);
  snprintf(c->id, sizeof c->id, "%s", agent);
  c->algorithm = ADB_ALGO_LINEAR;
  c->embedding_dim = ADB_FEAT_DIM;
  c->reward_window_s = 600;
  c->default_reward = 0;
  rc = adb_agent_put(x->db, c);
  return rc ? pz_fail_adb(x, rc) : 0;
}

/* An AgentDB id for a Personalizer id: itself, or prefix + a digest. */
static char *pz_id(rctx *x, const char *prefix, const char *id) {
  size_t pl = strlen(prefix), n = strlen(id);
  char *out = adb__api_alloc(x, ADB_ID_MAX + 1);
  if (!out) return NULL;
  if (pl + n <= ADB_ID_MAX && adb_id_valid(id)) {
    snprintf(out, ADB_ID_MAX + 1, "%s%s", prefix, id);
    return out;
  }
  char hex[65];
  adb__sha256_hex(id, n, hex);
  snprintf(out, ADB_ID_MAX + 1, "%s%s%.40s", prefix, pl ? "" : "pzh:", hex);
  return out;
}

static int pz_check_id(rctx *x, const char *what, const char *id) {
  size_t n = strlen(id);
  if (n < 1 || n > PZ_ID_MAX)
    return pz_fail(x, 400, "BadRequest", "%s must be 1..256 characters", what);
  return 0;
}

/* ---------------------------------------------------- agent's patterns */

/* The JSON value of pattern id, or NULL (absent). *err on a failure. */
static json_t *pat_get(rctx *x, const char *agent, const char *id, int *err) {
  adb_pattern p;
  memset(&p, 0, sizeof p);
  *err = 0;
  int rc = adb_pattern_get(x->db, agent, id, &p);
  if (rc == ADB_ENOTFOUND) return NULL;
  if (rc) {
    *err = rc;
    return NULL;
  }
  json_t *v = p.value_json ? json_loads(p.value_json, 0, NULL) : NULL;
  if (!v) v = json_object();
  adb_free(p.value_json);
  adb_free(p.embedding);
  return v;
}

static int pat_put(rctx *x, const char *agent, const char *id, json_t *v) {
  adb_pattern p;
  memset(&p, 0, sizeof p);
  snprintf(p.id, sizeof p.id, "%s", id);
  snprintf(p.type, sizeof p.type, "personalizer");
  char *text = json_dumps(v, JSON_COMPACT);
  p.value_json = text;
  int rc = text ? adb_pattern_put(x->db, agent, &p) : ADB_ENOMEM;
  free(text);
  return rc;
}

/* ----------------------------------------------- ISO 8601 and settings */

/* "P1DT2H30M", "PT10M", "PT0.5S", "P1W" -> seconds; -1 when malformed. */
static double duration_s(const char *s) {
  if (!s || *s++ != 'P' || !*s) return -1;
  double total = 0;
  int in_time = 0, any = 0;
  while (*s) {
    if (*s == 'T') {
      if (in_time || !s[1]) return -1;
      in_time = 1;
      s++;
      continue;
    }
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0 || *s == '-' || *s == '+') return -1;
    static const char dunits[] = "YMWD", tunits[] = "HMS";
    static const double dsec[] = {31536000, 2592000, 604800, 86400},
                        tsec[] = {3600, 60, 1};
    const char *u = strchr(in_time ? tunits : dunits, *end);
    if (!*end || !u) return -1;
    total += v * (in_time ? tsec[u - tunits] : dsec[u - dunits]);
    any = 1;
    s = end + 1;
  }
  return any ? total : -1;
}

static void put_duration(adb__buf *b, double s) {
  char t[64];
  long long d = (long long)(s / 86400), r = (long long)fmod(s, 86400);
  double frac = s - floor(s);
  int n = snprintf(t, sizeof t, "P");
  if (d) n += snprintf(t + n, sizeof t - (size_t)n, "%lldD", d);
  if (r || frac > 0 || !d) {
    n += snprintf(t + n, sizeof t - (size_t)n, "T");
    if (r / 3600) n += snprintf(t + n, sizeof t - (size_t)n, "%lldH", r / 3600);
    if (r / 60 % 60)
      n += snprintf(t + n, sizeof t - (size_t)n, "%lldM", r / 60 % 60);
    if (r % 60 || frac > 0 || r == 0)
      snprintf(t + n, sizeof t - (size_t)n, "%gS", (double)(r % 60) + frac);
  }
  adb__json_str(b, t);
}

static void put_date(adb__buf *b, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char s[40];
  strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  adb__json_str(b, s);
}

/* The stored service settings, with Personalizer's defaults filled in. */
static json_t *service_of(rctx *x, const char *agent, int *err) {
  json_t *s = pat_get(x, agent, "pz.service", err);
  if (*err) return NULL;
  if (!s) s = json_object();
  static const char *const dflt =
      "{\"rewardAggregation\":\"earliest\",\"explorationPercentage\":0.2,"
      "\"modelExportFrequency\":\"PT5M\",\"logMirrorEnabled\":false,"
      "\"logRetentionDays\":90,\"learningMode\":\"Online\","
      "\"isAutoOptimizationEnabled\":false,"
      "\"autoOptimizationFrequency\":\"P7D\"}";
  json_t *d = json_loads(dflt, 0, NULL);
  json_object_update_missing(s, d);
  json_decref(d);
  return s;
}

static const char *learning_mode(json_t *service) {
  const char *m = json_string_value(json_object_get(service, "learningMode"));
  return m ? m : "Online";
}

/* ---------------------------------------------------------- actions */

/* Process-wide digests of the action features written, so a rank writes
 * an action only when its features change. */
static pthread_mutex_t feat_mu = PTHREAD_MUTEX_INITIALIZER;
static adb__strmap feat_seen;

static uint64_t feat_digest(const float *e) {
  return adb__features_name_hash((const char *)e, ADB_FEAT_DIM * sizeof *e) | 1;
}

static int feat_known(const char *agent, const char *action, uint64_t d) {
  char key[2 * ADB_ID_MAX + 2];
  snprintf(key, sizeof key, "%s\x1f%s", agent, action);
  pthread_mutex_lock(&feat_mu);
  int known = (uint64_t)(uintptr_t)adb__strmap_get(&feat_seen, key) == d;
  pthread_mutex_unlock(&feat_mu);
  return known;
}

static void feat_remember(const char *agent, const char *action, uint64_t d) {
  char key[2 * ADB_ID_MAX + 2];
  snprintf(key, sizeof key, "%s\x1f%s", agent, action);
  pthread_mutex_lock(&feat_mu);
  adb__strmap_put(&feat_seen, key, (void *)(uintptr_t)d);
  pthread_mutex_unlock(&feat_mu);
}

static void feat_forget_all(void) {
  pthread_mutex_lock(&feat_mu);
  adb__strmap_free(&feat_seen, NULL);
  memset(&feat_seen, 0, sizeof feat_seen);
  pthread_mutex_unlock(&feat_mu);
}

/* Writes the actions whose features changed, then folds them into the
 * model so this very decision sees them. */
static int put_features(rctx *x, const char *agent, const char **ids,
                        float (*e)[ADB_FEAT_DIM], int n) {
  adb_action *acts = adb__api_alloc(x, (size_t)n * sizeof *acts);
  uint64_t *dg = adb__api_alloc(x, (size_t)n * sizeof *dg);
  if (!acts || !dg) return pz_fail(x, 500, "InternalServerError", "%s", "oom");
  int m = 0;
  for (int i = 0; i < n; i++) {
    dg[i] = feat_digest(e[i]);
    if (feat_known(agent, ids[i], dg[i])) continue;
    acts[m++] = (adb_action){
        .id = ids[i], .embedding = e[i], .embedding_dim = ADB_FEAT_DIM};
  }
  if (!m) return 0;
  int rc = adb_actions_put(x->db, agent, acts, m);
  if (!rc) rc = adb__linear_sync(x->db, agent);
  if (rc) return pz_fail_adb(x, rc);
  for (int i = 0; i < n; i++)
    feat_remember(agent, ids[i], dg[i]);
  return 0;
}

/* --------------------------------------------------------------- rank */

typedef struct rank_in {
  int n;
  const char **ext; /* the caller's action ids */
  const char **ids; /* AgentDB ids */
  float (*e)[ADB_FEAT_DIM];
  uint8_t *excluded;
  float ctx[ADB_FEAT_DIM];
  const char *event; /* caller's event id or NULL */
  int defer;
} rank_in;

static int read_features(rctx *x, json_t *list, float *out, const char *what) {
  char bad[128];
  if (adb__features_hash(list, out, bad, sizeof bad) < 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s %s", what, bad);
    return pz_fail(x, 400, "BadRequest", "%s", msg);
  }
  return 0;
}

static int read_actions(rctx *x, json_t *acts, rank_in *in) {
  if (!json_is_array(acts) || json_array_size(acts) == 0 ||
      json_array_size(acts) > ADB_MAX_CANDIDATES)
    return pz_fail(x, 400, "BadRequest",
                   "'actions' must be a list of 1..1000 actions%s", NULL);
  in->n = (int)json_array_size(acts);
  in->ext = adb__api_alloc(x, (size_t)in->n * sizeof *in->ext);
  in->ids = adb__api_alloc(x, (size_t)in->n * sizeof *in->ids);
  in->e = adb__api_alloc(x, (size_t)in->n * sizeof *in->e);
  in->excluded = adb__api_alloc(x, (size_t)in->n);
  adb__api_strset seen;
  if (!in->ext || !in->ids || !in->e || !in->excluded ||
      adb__api_strset_init(x, &seen, (size_t)in->n))
    return pz_fail(x, 500, "InternalServerError", "out of memory%s", NULL);
  memset(in->excluded, 0, (size_t)in->n);
  for (int i = 0; i < in->n; i++) {
    json_t *a = json_array_get(acts, (size_t)i);
    const char *id = json_string_value(json_object_get(a, "id"));
    if (!json_is_object(a) || !id)
      return pz_fail(x, 400, "BadRequest",
                     "every action needs an 'id' string%s", NULL);
    static const char *const keys[] = {"id", "features", NULL};
    if (pz_keys(x, a, keys) || pz_check_id(x, "an action id", id)) return -1;
    if (!adb__api_strset_add(&seen, id))
      return pz_fail(x, 400, "InvalidRankRequest",
                     "action id '%.64s' is given twice", id);
    in->ext[i] = id;
    if (!(in->ids[i] = pz_id(x, "", id)) ||
        read_features(x, json_object_get(a, "features"), in->e[i],
                      "an action's 'features'"))
      return -1;
  }
  return 0;
}

static int read_rank(rctx *x, rank_in *in) {
  json_t *doc = pz_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"contextFeatures", "actions",
                                     "excludedActions", "eventId",
                                     "deferActivation", NULL};
  if (pz_keys(x, doc, keys) ||
      read_actions(x, json_object_get(doc, "actions"), in) ||
      read_features(x, adb__api_member(doc, "contextFeatures"), in->ctx,
                    "'contextFeatures'"))
    return -1;
  json_t *ex = adb__api_member(doc, "excludedActions"), *v;
  size_t i;
  if (ex && !json_is_array(ex))
    return pz_fail(x, 400, "BadRequest",
                   "'excludedActions' must be a list of action ids%s", NULL);
  json_array_foreach(ex, i, v) {
    if (!json_is_string(v))
      return pz_fail(x, 400, "BadRequest",
                     "'excludedActions' must be a list of action ids%s", NULL);
    for (int a = 0; a < in->n; a++)
      if (!strcmp(in->ext[a], json_string_value(v))) in->excluded[a] = 1;
  }
  json_t *ev = adb__api_member(doc, "eventId");
  if (ev && !json_is_string(ev))
    return pz_fail(x, 400, "BadRequest", "'eventId' must be a string%s", NULL);
  in->event = ev ? json_string_value(ev) : NULL;
  if (in->event && pz_check_id(x, "'eventId'", in->event)) return -1;
  json_t *d = adb__api_member(doc, "deferActivation");
  if (d && !json_is_boolean(d))
    return pz_fail(x, 400, "BadRequest",
                   "'deferActivation' must be a boolean%s", NULL);
  in->defer = d && json_is_true(d);
  return 0;
}

/* A new event id as Personalizer made them: 32 hex digits. */
static char *new_event(rctx *x) {
  uint8_t r[16];
  char *s = adb__api_alloc(x, 33);
  if (!s) return NULL;
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
    uint64_t t = (uint64_t)adb__now_ms() ^ (uint64_t)(uintptr_t)s;
    memcpy(r, &t, 8);
    memcpy(r + 8, &t, 8);
  }
  for (int i = 0; i < 16; i++)
    snprintf(s + 2 * i, 3, "%02x", r[i]);
  return s;
}

static void put_ranking(rctx *x, const rank_in *in, const adb_decision *d,
                        const char *event) {
  adb__buf *b = x->out;
  int n_elig = 0, chosen = -1;
  for (int i = 0; i < in->n; i++) {
    n_elig += !in->excluded[i];
    if (!in->excluded[i] && !strcmp(in->ids[i], d->action)) chosen = i;
  }
  double p = d->propensity, rest = n_elig > 1 ? (1 - p) / (n_elig - 1) : 0;
  uint8_t *done = adb__api_alloc(x, (size_t)in->n);
  if (done) memset(done, 0, (size_t)in->n);
  adb__buf_puts(b, "{\"ranking\":[");
  int first = 1;
  /* The chosen action, then the model's order, then the others. */
  for (int pass = 0; pass < 3; pass++)
    for (int r = 0; r < (pass == 1 ? d->n_ranking : in->n); r++) {
      int i = r;
      if (pass == 1) {
        for (i = 0; i < in->n && strcmp(in->ids[i], d->ranking[r].action); i++)
          ;
        if (i == in->n) continue;
      }
      if ((pass == 0 && i != chosen) || !done || done[i]) continue;
      if (pass < 2 && in->excluded[i]) continue;
      done[i] = 1;
      adb__buf_puts(b, first ? "{" : ",{");
      adb__api_put_str(b, "id", in->ext[i], 1);
      adb__api_put_num(b, "probability",
                       in->excluded[i] ? 0
                       : i == chosen   ? p
                                       : rest);
      adb__buf_putc(b, '}');
      first = 0;
    }
  adb__buf_puts(b, "]");
  adb__api_put_str(b, "eventId", event, 0);
  adb__api_put_str(b, "rewardActionId", chosen >= 0 ? in->ext[chosen] : "", 0);
  adb__buf_putc(b, '}');
}

/* Apprentice mode's comparison, per agent, since this process started:
 * events ranked, those where the model's own choice was the baseline,
 * and the rewards applied to them. */
typedef struct appr {
  int64_t events, matches, rewarded, rewarded_match;
  double r_sum, r_match_sum;
  int64_t expired_ms; /* when this process last expired the agent's marks */
} appr;

static pthread_mutex_t appr_mu = PTHREAD_MUTEX_INITIALIZER;
static adb__strmap appr_map;

/* The agent's counters (appr_mu held); NULL on ENOMEM. */
static appr *appr_of(const char *agent) {
  appr *a = adb__strmap_get(&appr_map, agent);
  if (a) return a;
  a = calloc(1, sizeof *a);
  if (a && adb__strmap_put(&appr_map, agent, a)) {
    free(a);
    a = NULL;
  }
  return a;
}

/* What the model would have chosen among cands (the policy's own choice,
 * not logged): 1 when it is the baseline cands[0], 0 when not, -1 when
 * the model could not say. */
static int model_agrees(rctx *x, const char *agent, adb_decide_req r,
                        const char **cands, int n) {
  adb__agent *a = NULL;
  if (adb__agent_acquire(x->db, agent, &a) != ADB_OK) return -1;
  uint8_t *elig = adb__api_alloc(x, (size_t)n);
  uint8_t feats[ADB__FEATURES_MAX];
  int nf = 0, hits = 0, rc = elig ? ADB_OK : ADB_ENOMEM;
  adb_decision d;
  memset(&d, 0, sizeof d);
  if (elig) memset(elig, 1, (size_t)n);
  r.candidates = cands;
  r.n_candidates = n;
  r.k = 1;
  if (!rc)
    rc = adb__policy_model_of(a->cfg.algorithm)
             ->decide(x->db, a, &r,
                      &(adb__cands){.ids = {.n = n, .id = cands},
                                    .eligible = elig,
                                    .n_eligible = n},
                      &d, feats, &nf, &hits);
  adb__agent_release(a);
  return rc ? -1 : !strcmp(d.action, cands[0]);
}

/* The per-event patterns ("pzm:" apprentice marks, "pzr:" held rewards)
 * serve only until the event's reward wait time ends: a reward after it is
 * too late to be applied, and a deferred event is closed by then. Every
 * wait time (at most every minute) per process and agent, those last
 * written more than two wait times ago are deleted, so the table holds
 * the open events' only. */
static void expire_event_patterns(rctx *x, const char *agent, double window_s,
                                  int64_t now_ms) {
  int64_t window_ms = (int64_t)(1000 * (window_s > 0 ? window_s : 86400));
  pthread_mutex_lock(&appr_mu);
  appr *a = appr_of(agent);
  int due =
      a && now_ms - a->expired_ms >= (window_ms < 60000 ? window_ms : 60000);
  if (due) a->expired_ms = now_ms;
  pthread_mutex_unlock(&appr_mu);
  if (!due) return;
  adb__pattern_expire(x->db, agent, "pzm:", now_ms - 2 * window_ms, NULL);
  adb__pattern_expire(x->db, agent, "pzr:", now_ms - 2 * window_ms, NULL);
}

/* Notes an apprentice event: counted now, its match kept for its reward. */
static void appr_event(rctx *x, const char *agent, const char *event,
                       int match) {
  pthread_mutex_lock(&appr_mu);
  appr *a = appr_of(agent);
  if (a) {
    a->events++;
    a->matches += match;
  }
  pthread_mutex_unlock(&appr_mu);
  json_t *v = json_pack("{s:b}", "match", match);
  if (v) pat_put(x, agent, pz_id(x, "pzm:", event), v);
  json_decref(v);
}

/* Counts an applied reward of an apprentice event. */
static void appr_reward(rctx *x, const char *agent, const char *event,
                        double v) {
  int err;
  json_t *m = pat_get(x, agent, pz_id(x, "pzm:", event), &err);
  if (!m) return;
  int match = json_is_true(json_object_get(m, "match"));
  json_decref(m);
  pthread_mutex_lock(&appr_mu);
  appr *a = appr_of(agent);
  if (a) {
    a->rewarded++;
    a->r_sum += v;
    a->rewarded_match += match;
    a->r_match_sum += match ? v : 0;
  }
  pthread_mutex_unlock(&appr_mu);
}

int adb__api_pz_rank(rctx *x) {
  rank_in in;
  memset(&in, 0, sizeof in);
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || read_rank(x, &in) || pz_ensure(x, agent, &cfg)) return -1;
  int err;
  json_t *svc = service_of(x, agent, &err);
  if (!svc) return pz_fail_adb(x, err);
  int online = !strcmp(learning_mode(svc), "Online"),
      apprentice = !strcmp(learning_mode(svc), "Apprentice");
  json_decref(svc);
  int linear = cfg.algorithm == ADB_ALGO_LINEAR;
  if (linear && put_features(x, agent, in.ids, in.e, in.n)) return -1;
  const char **cands = adb__api_alloc(x, (size_t)in.n * sizeof *cands);
  int nc = 0;
  for (int i = 0; cands && i < in.n; i++)
    if (!in.excluded[i]) cands[nc++] = in.ids[i];
  if (!nc)
    return pz_fail(x, 400, "InvalidRankRequest", "every action is excluded%s",
                   NULL);
  const char *event = in.event;
  if (!event && (in.defer || !online)) event = new_event(x);
  const char *eid = event ? pz_id(x, "", event) : NULL;
  if (in.defer) {
    int rc = adb__event_defer(x->db, agent, eid, ADB__DEFER_MARK, NULL);
    if (rc) return pz_fail_adb(x, rc);
  }
  adb_decide_req r = {.agent_id = agent,
                      .user_id = PZ_USER,
                      .candidates = cands,
                      .n_candidates = online ? nc : 1,
                      .embedding = linear ? in.ctx : NULL,
                      .embedding_dim = linear ? ADB_FEAT_DIM : 0,
                      .k = online ? nc : 1,
                      .event_id = eid};
  adb_ranked *rk = adb__api_alloc(x, (size_t)nc * sizeof *rk);
  adb_decision d = {.ranking = rk, .ranking_cap = rk ? nc : 0};
  int rc = adb_decide(x->db, &r, &d);
  if (rc) return pz_fail_adb(x, rc);
  if (apprentice && linear) {
    int m = model_agrees(x, agent, r, cands, nc);
    if (m >= 0) appr_event(x, agent, event, m);
  }
  expire_event_patterns(x, agent, cfg.reward_window_s, adb__api_wall_ms());
  adb__dash_decision(adb__dash_agent_of(x->api->dash, agent),
                     adb__api_wall_ms(), PZ_USER, d.event_id, d.action,
                     d.propensity, 0);
  x->resp->status = 201;
  put_ranking(x, &in, &d, event ? event : d.event_id);
  return 0;
}

/* ------------------------------------------------- reward and activate */

static int apply_reward(rctx *x, const char *agent, const char *eid, double v,
                        const char *aggregation) {
  char *rid = (char *)eid;
  if (aggregation && !strcmp(aggregation, "sum")) {
    char key[ADB_ID_MAX + 40];
    snprintf(key, sizeof key, "%s#%.17g", eid, v);
    rid = pz_id(x, "pzs:", key);
    char hex[65];
    adb__sha256_hex(key, strlen(key), hex);
    if (rid) snprintf(rid, ADB_ID_MAX + 1, "pzs:%.40s", hex);
  }
  adb_reward_req r = {.agent_id = agent,
                      .reward_id = rid,
                      .event_id = eid,
                      .has_reward = 1,
                      .reward = v};
  adb_reward_result out;
  memset(&out, 0, sizeof out);
  int rc = adb_reward(x->db, &r, &out);
  if (rc == ADB_OK && out.applied) appr_reward(x, agent, eid, v);
  if (rc == ADB_OK && (out.applied || out.pending))
    adb__dash_reward(adb__dash_agent_of(x->api->dash, agent),
                     adb__api_wall_ms(), eid, PZ_USER, NULL, out.reward);
  if (rc == ADB_ECONFLICT)
    rc = ADB_OK; /* "earliest": a later one is kept out */
  return rc;
}

#define PZ_HELD_MAX 100 /* rewards held for one deferred event */

/* Holds a reward of a deferred event not yet active: the first one
 * ("earliest"), or each one up to PZ_HELD_MAX ("sum"). */
static int hold(rctx *x, const char *agent, const char *event, double v,
                const char *agg) {
  int rc;
  const char *id = pz_id(x, "pzr:", event);
  json_t *h = pat_get(x, agent, id, &rc);
  if (rc) return rc;
  if (!h) h = json_object();
  json_t *vals = json_object_get(h, "values");
  if (!json_is_array(vals)) {
    vals = json_array();
    json_object_set_new(h, "values", vals);
  }
  size_t n = json_array_size(vals);
  if (n == 0 || (agg && !strcmp(agg, "sum") && n < PZ_HELD_MAX)) {
    json_array_append_new(vals, json_real(v));
    rc = pat_put(x, agent, id, h);
  }
  json_decref(h);
  return rc;
}

static int read_value(rctx *x, double *v) {
  json_t *doc = pz_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"value", NULL};
  if (pz_keys(x, doc, keys)) return -1;
  json_t *val = json_object_get(doc, "value");
  if (!json_is_number(val) || !isfinite(json_number_value(val)))
    return pz_fail(x, 400, "InvalidRewardRequest",
                   "'value' must be a finite number%s", NULL);
  *v = json_number_value(val);
  return 0;
}

int adb__api_pz_reward(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  double v = 0;
  if (!agent || pz_check_id(x, "the event id", x->param[0]) ||
      read_value(x, &v) || pz_ensure(x, agent, &cfg))
    return -1;
  const char *eid = pz_id(x, "", x->param[0]);
  int err;
  json_t *svc = service_of(x, agent, &err);
  if (!svc) return pz_fail_adb(x, err);
  const char *agg =
      json_string_value(json_object_get(svc, "rewardAggregation"));
  int st = ADB__DEFER_NONE;
  int rc = adb__event_defer(x->db, agent, eid, ADB__DEFER_GET, &st);
  if (!rc && st == ADB__DEFER_WAITING) { /* deferred, not active: hold it */
    rc = hold(x, agent, x->param[0], v, agg);
    if (!rc) rc = adb__event_defer(x->db, agent, eid, ADB__DEFER_GET, &st);
  }
  if (!rc && st != ADB__DEFER_WAITING) rc = apply_reward(x, agent, eid, v, agg);
  json_decref(svc);
  if (rc) return pz_fail_adb(x, rc);
  x->resp->status = 204;
  return 0;
}

int adb__api_pz_activate(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_check_id(x, "the event id", x->param[0]) ||
      pz_ensure(x, agent, &cfg))
    return -1;
  json_t *held = NULL;
  const char *eid = pz_id(x, "", x->param[0]);
  int st = ADB__DEFER_NONE;
  int rc = adb__event_defer(x->db, agent, eid, ADB__DEFER_ACTIVATE, &st);
  if (!rc && st == ADB__DEFER_ACTIVE)
    held = pat_get(x, agent, pz_id(x, "pzr:", x->param[0]), &rc);
  if (!rc && held) {
    json_t *svc = service_of(x, agent, &rc), *vals, *v;
    const char *agg =
        json_string_value(json_object_get(svc, "rewardAggregation"));
    size_t i;
    vals = json_object_get(held, "values");
    json_array_foreach(vals, i, v) {
      if (rc || !svc) break;
      rc = apply_reward(x, agent, eid, json_number_value(v), agg);
    }
    json_decref(svc);
  }
  json_decref(held);
  if (rc) return pz_fail_adb(x, rc);
  x->resp->status = 204;
  return 0;
}

/* ------------------------------------------------------ configurations */

static void put_service(rctx *x, const adb_agent_config *c, json_t *svc,
                        int64_t edited_ms) {
  adb__buf *b = x->out;
  b->len = 0;
  adb__buf_puts(b, "{\"rewardWaitTime\":");
  put_duration(b, c->reward_window_s);
  adb__api_put_num(b, "defaultReward", c->default_reward);
  json_object_del(svc, "rewardWaitTime");
  json_object_del(svc, "defaultReward");
  json_object_del(svc, "lastConfigurationEditDate");
  const char *k;
  json_t *v;
  json_object_foreach(svc, k, v) {
    char *t =
        json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    adb__api_put_raw(b, k, t, "null");
    free(t);
  }
  adb__api_put_key(b, "lastConfigurationEditDate", 0);
  put_date(b, edited_ms > 0 ? edited_ms : c->updated_at_ms);
  adb__buf_putc(b, '}');
}

int adb__api_pz_service_get(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  int err;
  json_t *svc = service_of(x, agent, &err);
  if (!svc) return pz_fail_adb(x, err);
  json_t *ed = json_object_get(svc, "lastConfigurationEditDate");
  put_service(x, &cfg, svc, json_is_integer(ed) ? json_integer_value(ed) : 0);
  json_decref(svc);
  return 0;
}

/* Validates a PUT configurations/service body into svc and cfg. */
static int read_service(rctx *x, json_t *doc, json_t *svc,
                        adb_agent_config *cfg) {
  static const char *const keys[] = {"rewardWaitTime",
                                     "defaultReward",
                                     "rewardAggregation",
                                     "explorationPercentage",
                                     "modelExportFrequency",
                                     "logMirrorEnabled",
                                     "logMirrorSasUri",
                                     "logRetentionDays",
                                     "lastConfigurationEditDate",
                                     "learningMode",
                                     "isAutoOptimizationEnabled",
                                     "autoOptimizationFrequency",
                                     "autoOptimizationStartDate",
                                     NULL};
  if (pz_keys(x, doc, keys)) return -1;
  static const char *const required[] = {
      "rewardWaitTime",        "defaultReward",        "rewardAggregation",
      "explorationPercentage", "modelExportFrequency", "logRetentionDays"};
  for (size_t i = 0; i < sizeof required / sizeof *required; i++)
    if (!adb__api_member(doc, required[i]))
      return pz_fail(x, 400, "InvalidServiceConfiguration", "'%s' is required",
                     required[i]);
  double w =
      duration_s(json_string_value(json_object_get(doc, "rewardWaitTime")));
  if (!(w > 0) || w > 366 * 86400.0)
    return pz_fail(x, 400, "InvalidRewardWaitTime",
                   "'rewardWaitTime' must be an ISO 8601 duration of up to a "
                   "year, e.g. PT10M%s",
                   NULL);
  json_t *dr = json_object_get(doc, "defaultReward"),
         *ep = json_object_get(doc, "explorationPercentage"),
         *lr = json_object_get(doc, "logRetentionDays"),
         *ra = json_object_get(doc, "rewardAggregation"),
         *lm = adb__api_member(doc, "learningMode");
  if (!json_is_number(dr) || !(fabs(json_number_value(dr)) <= 1))
    return pz_fail(x, 400, "InvalidServiceConfiguration",
                   "'defaultReward' must be a number in [-1, 1]%s", NULL);
  if (!json_is_number(ep) || !(json_number_value(ep) >= 0) ||
      !(json_number_value(ep) <= 1))
    return pz_fail(x, 400, "InvalidServiceConfiguration",
                   "'explorationPercentage' must be a number in [0, 1]%s",
                   NULL);
  if (!json_is_integer(lr) || json_integer_value(lr) < -1)
    return pz_fail(x, 400, "InvalidLogRetentionDays",
                   "'logRetentionDays' must be an integer >= -1%s", NULL);
  const char *agg = json_string_value(ra);
  if (!agg || (strcmp(agg, "earliest") && strcmp(agg, "sum")))
    return pz_fail(x, 400, "InvalidServiceConfiguration",
                   "'rewardAggregation' must be 'earliest' or 'sum'%s", NULL);
  const char *mode = lm ? json_string_value(lm) : "Online";
  if (!mode || (strcmp(mode, "Online") && strcmp(mode, "Apprentice") &&
                strcmp(mode, "LoggingOnly")))
    return pz_fail(x, 400, "InvalidLearningModeServiceConfiguration",
                   "'learningMode' must be Online, Apprentice or "
                   "LoggingOnly%s",
                   NULL);
  if (duration_s(
          json_string_value(json_object_get(doc, "modelExportFrequency"))) < 0)
    return pz_fail(x, 400, "InvalidServiceConfiguration",
                   "'modelExportFrequency' must be an ISO 8601 duration%s",
                   NULL);
  cfg->reward_window_s = w;
  cfg->default_reward = json_number_value(dr);
  json_object_update(svc, doc);
  json_object_set_new(svc, "learningMode", json_string(mode));
  json_object_set_new(svc, "lastConfigurationEditDate",
                      json_integer(adb__now_ms()));
  return 0;
}

int adb__api_pz_service_put(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  json_t *doc = agent ? pz_body(x, 0) : NULL;
  if (!doc || pz_ensure(x, agent, &cfg)) return -1;
  int err;
  json_t *svc = service_of(x, agent, &err);
  if (!svc) return pz_fail_adb(x, err);
  int rc = read_service(x, doc, svc, &cfg) ? -2 : adb_agent_put(x->db, &cfg);
  if (!rc) rc = pat_put(x, agent, "pz.service", svc);
  if (rc == ADB_OK)
    put_service(
        x, &cfg, svc,
        json_integer_value(json_object_get(svc, "lastConfigurationEditDate")));
  json_decref(svc);
  if (rc == -2) return -1;
  return rc ? pz_fail_adb(x, rc) : 0;
}

static void put_policy(rctx *x, const adb_agent_config *c, json_t *pol) {
  adb__buf *b = x->out;
  b->len = 0;
  char args[256];
  snprintf(args, sizeof args, "--lambda %g --v %g", c->linear_lambda,
           c->linear_v);
  const char *name = json_string_value(json_object_get(pol, "name"));
  const char *a = json_string_value(json_object_get(pol, "arguments"));
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "name", name ? name : "linear-ts", 1);
  adb__api_put_str(b, "arguments", a ? a : args, 0);
  adb__buf_putc(b, '}');
}

int adb__api_pz_policy_get(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  int err;
  json_t *pol = pat_get(x, agent, "pz.policy", &err);
  if (err) return pz_fail_adb(x, err);
  put_policy(x, &cfg, pol);
  json_decref(pol);
  return 0;
}

/* "--lambda X" and "--v X" set the linear model's settings; the rest of
 * a VW command line is kept as given. */
static int policy_args(rctx *x, const char *args, adb_agent_config *c) {
  char buf[1100];
  snprintf(buf, sizeof buf, "%s", args);
  char *save = NULL, *prev = NULL;
  for (char *t = strtok_r(buf, " \t", &save); t;
       prev = t, t = strtok_r(NULL, " \t", &save)) {
    if (!prev || (strcmp(prev, "--lambda") && strcmp(prev, "--v"))) continue;
    char *end;
    double v = strtod(t, &end);
    if (*end || !(v > 0) || !isfinite(v))
      return pz_fail(x, 400, "InvalidPolicyConfiguration",
                     "'%s' needs a positive number", prev);
    if (!strcmp(prev, "--lambda"))
      c->linear_lambda = v;
    else
      c->linear_v = v;
  }
  return 0;
}

int adb__api_pz_policy_put(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  json_t *doc = agent ? pz_body(x, 0) : NULL;
  if (!doc || pz_ensure(x, agent, &cfg)) return -1;
  static const char *const keys[] = {"name", "arguments", NULL};
  const char *name = json_string_value(json_object_get(doc, "name"));
  const char *args = json_string_value(json_object_get(doc, "arguments"));
  if (pz_keys(x, doc, keys)) return -1;
  if (!name || !args || !*name || strlen(name) > 256 || strlen(args) > 1024)
    return pz_fail(x, 400, "InvalidPolicyContract",
                   "'name' (1..256 characters) and 'arguments' (up to 1024) "
                   "are required%s",
                   NULL);
  if (policy_args(x, args, &cfg)) return -1;
  int rc = adb_agent_put(x->db, &cfg);
  if (!rc) rc = pat_put(x, agent, "pz.policy", doc);
  if (rc) return pz_fail_adb(x, rc);
  put_policy(x, &cfg, doc);
  return 0;
}

int adb__api_pz_policy_delete(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg, d;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  adb_agent_config_init(&d);
  cfg.linear_lambda = d.linear_lambda;
  cfg.linear_v = d.linear_v;
  json_t *none = json_object();
  int rc = adb_agent_put(x->db, &cfg);
  if (!rc) rc = pat_put(x, agent, "pz.policy", none);
  json_decref(none);
  if (rc) return pz_fail_adb(x, rc);
  put_policy(x, &cfg, NULL);
  return 0;
}

/* ------------------------------------------------------- model and logs */

int adb__api_pz_model_get(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  adb_agent_counters n;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  int rc = adb_agent_counters_get(x->db, agent, &n);
  if (rc) return pz_fail_adb(x, rc);
  adb__buf_puts(x->out, "{\"format\":\"agentdb-agent/1\",\"agent\":");
  adb__api_put_agent(x->out, &cfg, &n);
  adb__buf_putc(x->out, '}');
  x->resp->content_type = "application/octet-stream";
  return 0;
}

int adb__api_pz_model_properties(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  adb__buf_puts(x->out, "{\"creationTime\":");
  put_date(x->out, cfg.created_at_ms);
  adb__buf_puts(x->out, ",\"lastModifiedTime\":");
  put_date(x->out, cfg.updated_at_ms);
  adb__buf_putc(x->out, '}');
  return 0;
}

/* Resets the learning (decisions, rewards, model), keeping the settings. */
int adb__api_pz_model_delete(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  int e1, e2;
  json_t *svc = pat_get(x, agent, "pz.service", &e1),
         *pol = pat_get(x, agent, "pz.policy", &e2);
  int rc = e1 ? e1 : e2;
  if (!rc) rc = adb_agent_reset(x->db, agent);
  feat_forget_all();
  if (!rc && svc) rc = pat_put(x, agent, "pz.service", svc);
  if (!rc && pol) rc = pat_put(x, agent, "pz.policy", pol);
  json_decref(svc);
  json_decref(pol);
  if (rc) return pz_fail_adb(x, rc);
  x->resp->status = 204;
  return 0;
}

/* Personalizer's "Delete all logs": the logged decisions and rewards whose
 * reward window has ended go; the model (posteriors, the linear model's
 * rewards and checkpoints), settings and catalogue stay (store.h
 * log_delete). */
int adb__api_pz_logs_delete(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  adb__log_deleted n;
  int rc = adb__log_delete(x->db, agent, &n);
  if (rc) return pz_fail_adb(x, rc);
  x->resp->status = 204;
  return 0;
}

/* The span of the logged decisions: from the first one's second to the
 * second after the last one's, so that [from, to) holds them all. */
int adb__api_pz_logs_properties(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  int64_t from, to;
  int rc = adb__log_range(x->db, agent, &from, &to);
  if (rc == ADB_ENOTFOUND)
    return pz_fail(x, 404, "LogsPropertiesNotFound", "no decision is logged%s",
                   NULL);
  if (rc) return pz_fail_adb(x, rc);
  adb__buf_puts(x->out, "{\"dateRange\":{\"from\":");
  put_date(x->out, from);
  adb__buf_puts(x->out, ",\"to\":");
  put_date(x->out, (to / 1000 + 1) * 1000);
  adb__buf_puts(x->out, "}}");
  return 0;
}

/* ---------------------------------------------------------- evaluations */

/* Personalizer's evaluations are AgentDB's background evaluations
 * (evaluate.h) over the agent's log. The job keeps the estimates; what
 * only Personalizer has (the evaluation's name, window, and each policy's
 * name, arguments and source) is kept beside it here, by agent and job id,
 * for as long as the job lives (this process). Policy 0 is always the
 * agent's current policy ("Online"); the request's policies follow. */
static pthread_mutex_t eval_mu = PTHREAD_MUTEX_INITIALIZER;
static adb__strmap eval_meta; /* agent \x1f id -> malloc'd JSON text */

static void meta_key(char *key, size_t n, const char *agent, const char *id) {
  snprintf(key, n, "%s\x1f%s", agent, id);
}

static int meta_put(const char *agent, const char *id, json_t *m) {
  char key[ADB_ID_MAX + 40], *text = json_dumps(m, JSON_COMPACT);
  meta_key(key, sizeof key, agent, id);
  pthread_mutex_lock(&eval_mu);
  int rc = text ? adb__strmap_put(&eval_meta, key, text) : -1;
  pthread_mutex_unlock(&eval_mu);
  if (rc) free(text);
  return rc ? ADB_ENOMEM : ADB_OK;
}

/* The metadata of a Personalizer evaluation, or NULL. */
static json_t *meta_get(const char *agent, const char *id) {
  char key[ADB_ID_MAX + 40];
  meta_key(key, sizeof key, agent, id);
  pthread_mutex_lock(&eval_mu);
  const char *text = adb__strmap_get(&eval_meta, key);
  json_t *m = text ? json_loads(text, 0, NULL) : NULL;
  pthread_mutex_unlock(&eval_mu);
  return m;
}

static void meta_del(const char *agent, const char *id) {
  char key[ADB_ID_MAX + 40];
  meta_key(key, sizeof key, agent, id);
  pthread_mutex_lock(&eval_mu);
  free(adb__strmap_del(&eval_meta, key));
  pthread_mutex_unlock(&eval_mu);
}

static double num(json_t *o, const char *k1, const char *k2) {
  json_t *v = json_object_get(o, k1);
  if (k2) v = json_object_get(v, k2);
  return json_is_number(v) ? json_number_value(v) : 0;
}

/* One PolicyResultSummary over the whole window (docs/personalizer.md):
 * N rows, IPS = sum(w r)/N, SNIPS = sum(w r)/sum(w), averageReward the
 * SNIPS estimate with its interval's half width; AgentDB's estimates,
 * doubly robust included, under "agentdb". */
static void put_summary(adb__buf *b, json_t *meta, json_t *pr, double rows) {
  double ips = num(pr, "ips", "estimate"), snips = num(pr, "snips", "estimate");
  double nume = ips * rows, den = snips != 0 ? nume / snips : rows;
  const char *end = json_string_value(json_object_get(meta, "endTime"));
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "timeStamp", end ? end : "", 1);
  adb__api_put_num(b, "ipsEstimatorNumerator", nume);
  adb__api_put_num(b, "ipsEstimatorDenominator", rows);
  adb__api_put_num(b, "snipsEstimatorDenominator", den);
  adb__buf_puts(b, ",\"aggregateTimeWindow\":");
  put_duration(b, num(meta, "windowMs", NULL) / 1000);
  adb__api_put_num(b, "confidenceInterval",
                   (num(pr, "snips", "hi") - num(pr, "snips", "lo")) / 2);
  adb__api_put_num(b, "averageReward", snips);
  adb__buf_puts(b, ",\"agentdb\":{");
  static const char *const est[] = {"ips", "snips", "dr"};
  for (int i = 0; i < 3; i++) {
    adb__buf_puts(b, i ? ",\"" : "\"");
    adb__buf_puts(b, est[i]);
    adb__buf_puts(b, "\":");
    char *t = json_dumps(json_object_get(pr, est[i]), JSON_COMPACT);
    adb__buf_puts(b, t ? t : "null");
    free(t);
  }
  adb__api_put_num(b, "ess", num(pr, "ess", NULL));
  adb__api_put_num(b, "maxWeight", num(pr, "max_weight", NULL));
  adb__buf_puts(b, "}}");
}

static void put_policy_results(adb__buf *b, json_t *meta, json_t *res) {
  json_t *pols = json_object_get(meta, "policies"),
         *prs = json_object_get(res, "policies");
  double rows = num(res, "rows", NULL);
  adb__buf_puts(b, ",\"policyResults\":[");
  for (size_t i = 0; res && i < json_array_size(pols); i++) {
    json_t *p = json_array_get(pols, i), *pr = json_array_get(prs, i);
    if (i) adb__buf_putc(b, ',');
    adb__buf_putc(b, '{');
    adb__api_put_str(b, "name", json_string_value(json_object_get(p, "name")),
                     1);
    adb__api_put_str(b, "arguments",
                     json_string_value(json_object_get(p, "arguments")), 0);
    adb__api_put_str(b, "policySource",
                     json_string_value(json_object_get(p, "policySource")), 0);
    adb__buf_puts(b, ",\"summary\":[");
    put_summary(b, meta, pr, rows);
    adb__buf_puts(b, "],\"totalSummary\":");
    put_summary(b, meta, pr, rows);
    adb__buf_putc(b, '}');
  }
  adb__buf_putc(b, ']');
}

/* Personalizer's Evaluation from the job's JSON and the metadata. Status:
 * running is "pending", done "completed", failed "failed" (the spec's
 * EvaluationJobStatus has no "running"). */
static void put_evaluation(adb__buf *b, json_t *job, json_t *meta) {
  const char *id = json_string_value(json_object_get(job, "id")),
             *st = json_string_value(json_object_get(job, "status"));
  const char *status = !st                      ? "failed"
                       : !strcmp(st, "done")    ? "completed"
                       : !strcmp(st, "running") ? "pending"
                                                : "failed";
  json_t *res = json_object_get(job, "result");
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "id", id ? id : "", 1);
  static const char *const keys[] = {"name", "startTime", "endTime"};
  for (int i = 0; i < 3; i++)
    adb__api_put_str(b, keys[i],
                     json_string_value(json_object_get(meta, keys[i])), 0);
  adb__api_put_str(b, "jobId", id ? id : "", 0);
  adb__api_put_str(b, "status", status, 0);
  adb__api_put_str(b, "evaluationType", "Manual", 0);
  adb__buf_puts(b, ",\"creationTime\":");
  put_date(b, (int64_t)num(job, "created_at_ms", NULL));
  adb__buf_puts(b, ",\"featureImportance\":[]");
  put_policy_results(b, meta, res);
  adb__buf_puts(b, ",\"agentdb\":{");
  adb__api_put_str(b, "jobStatus", st ? st : "", 1);
  adb__api_put_num(b, "rows",
                   res ? num(res, "rows", NULL) : num(job, "progress", "rows"));
  adb__api_put_num(b, "pending", num(res, "pending", NULL));
  adb__api_put_num(b, "bad", num(res, "bad", NULL));
  adb__api_put_num(b, "progress", num(job, "progress", "fraction"));
  if (res) {
    char *t = json_dumps(json_object_get(res, "logged"), JSON_COMPACT);
    adb__buf_puts(b, ",\"logged\":");
    adb__buf_puts(b, t ? t : "null");
    free(t);
  }
  const char *err = json_string_value(json_object_get(job, "error"));
  if (err) adb__api_put_str(b, "error", err, 0);
  adb__buf_puts(b, "}}");
}

/* The job's JSON (NULL: unknown, or not a Personalizer evaluation). */
static json_t *job_of(rctx *x, const char *agent, const char *id,
                      json_t **meta) {
  adb__sbuf s = {0};
  json_t *job = NULL;
  *meta = meta_get(agent, id);
  if (*meta && !adb__eval_job_get(x->api->evals, agent, id, &s) && s.p)
    job = json_loads(s.p, 0, NULL);
  free(s.p);
  if (!job && *meta) meta_del(agent, id); /* the job was forgotten */
  if (!job) {
    json_decref(*meta);
    *meta = NULL;
  }
  return job;
}

/* A policy's name and arguments: the VW arguments AgentDB honours
 * (--lambda, --v) set the linear model's settings of a copy of the
 * agent's config; the rest are kept as given and ignored. */
static int eval_policy(rctx *x, json_t *p, const adb_agent_config *cfg,
                       adb__eval_policy *out) {
  static const char *const keys[] = {"name", "arguments", NULL};
  const char *name = json_string_value(json_object_get(p, "name"));
  const char *args = json_string_value(json_object_get(p, "arguments"));
  if (!json_is_object(p) || pz_keys(x, p, keys)) {
    if (!json_is_object(p))
      pz_fail(x, 400, "InvalidPolicyContract",
              "every policy must be an object with 'name' and "
              "'arguments'%s",
              NULL);
    return -1;
  }
  if (!name || !args || !*name || strlen(name) > 256 || strlen(args) > 1024)
    return pz_fail(x, 400, "InvalidPolicyContract",
                   "a policy's 'name' (1..256 characters) and 'arguments' "
                   "(up to 1024) are required%s",
                   NULL);
  memset(out, 0, sizeof *out);
  out->cfg = *cfg;
  snprintf(out->name, sizeof out->name, "%s", name);
  return policy_args(x, args, &out->cfg);
}

static int eval_time(rctx *x, json_t *doc, const char *k, int64_t *ms) {
  const char *s = json_string_value(json_object_get(doc, k));
  if (!s || adb__api_parse_time(s, ms))
    return pz_fail(x, 400, "InvalidEvaluationContract",
                   "'%s' must be an ISO-8601 time", k);
  return 0;
}

/* Policy 0 (the agent's current policy) and the request's; the metadata. */
static int eval_policies(rctx *x, const char *agent,
                         const adb_agent_config *cfg, json_t *list,
                         adb__eval_policy *pol, int *n, json_t *mp) {
  int err;
  json_t *cur = pat_get(x, agent, "pz.policy", &err);
  if (err) return pz_fail_adb(x, err);
  put_policy(x, cfg, cur); /* the current policy's name and arguments */
  json_decref(cur);
  json_t *now = json_loadb(x->out->p, x->out->len, 0, NULL);
  x->out->len = 0;
  if (!now) return pz_fail(x, 500, "InternalServerError", "%s", "oom");
  json_object_set_new(now, "policySource", json_string("Online"));
  json_array_append_new(mp, now);
  memset(&pol[0], 0, sizeof pol[0]);
  pol[0].cfg = *cfg;
  snprintf(pol[0].name, sizeof pol[0].name, "%s",
           json_string_value(json_object_get(now, "name")));
  *n = 1;
  json_t *p;
  size_t i;
  json_array_foreach(list, i, p) {
    if (eval_policy(x, p, cfg, &pol[*n])) return -1;
    json_t *m = json_pack("{s:O,s:O,s:s}", "name", json_object_get(p, "name"),
                          "arguments", json_object_get(p, "arguments"),
                          "policySource", "Custom");
    json_array_append_new(mp, m);
    (*n)++;
  }
  return 0;
}

static int eval_create(rctx *x, const char *agent) {
  adb_agent_config cfg;
  json_t *doc = pz_body(x, 0);
  if (!doc || pz_ensure(x, agent, &cfg)) return -1;
  static const char *const keys[] = {"name",
                                     "startTime",
                                     "endTime",
                                     "policies",
                                     "enableOfflineExperimentation",
                                     NULL};
  const char *name = json_string_value(json_object_get(doc, "name"));
  json_t *list = json_object_get(doc, "policies"),
         *exp = json_object_get(doc, "enableOfflineExperimentation");
  int64_t from, to;
  if (pz_keys(x, doc, keys)) return -1;
  if (!name || !*name || strlen(name) > 256)
    return pz_fail(x, 400, "InvalidEvaluationContract",
                   "'name' (1..256 characters) is required%s", NULL);
  if (eval_time(x, doc, "startTime", &from) ||
      eval_time(x, doc, "endTime", &to))
    return -1;
  if (to <= from)
    return pz_fail(x, 400, "InvalidEvaluationContract",
                   "'endTime' must be after 'startTime'%s", NULL);
  if (!json_is_array(list) || json_array_size(list) > ADB_EVAL_MAX_POLICIES - 1)
    return pz_fail(x, 400, "InvalidEvaluationContract",
                   "'policies' must be a list of up to 15 policies%s", NULL);
  if (exp && !json_is_boolean(exp))
    return pz_fail(x, 400, "InvalidEvaluationContract",
                   "'enableOfflineExperimentation' must be a boolean%s", NULL);
  adb__eval_policy pol[ADB_EVAL_MAX_POLICIES];
  int n = 0;
  json_t *mp = json_array();
  json_t *meta = json_pack("{s:s,s:O,s:O,s:I,s:o}", "name", name, "startTime",
                           json_object_get(doc, "startTime"), "endTime",
                           json_object_get(doc, "endTime"), "windowMs",
                           (json_int_t)(to - from), "policies", mp);
  if (!meta || eval_policies(x, agent, &cfg, list, pol, &n, mp)) {
    json_decref(meta);
    return meta ? -1 : pz_fail(x, 500, "InternalServerError", "%s", "oom");
  }
  char id[33];
  int rc = adb__eval_job_start(x->api->evals, agent, pol, n, from, to, id);
  if (!rc && (rc = meta_put(agent, id, meta)) != ADB_OK) {
    adb__sbuf s = {0};
    adb__eval_job_cancel(x->api->evals, agent, id, &s);
    free(s.p);
  }
  json_decref(meta);
  if (rc == ADB_EFULL) {
    adb__http_resp_header(x->resp, "Retry-After", "10");
    return pz_fail(x, 429, "TooManyRequests",
                   "as many evaluations as the server's --max-evaluations "
                   "are running; retry when one has finished%s",
                   NULL);
  }
  if (rc) return pz_fail_adb(x, rc);
  json_t *m, *job = job_of(x, agent, id, &m);
  if (!job) return pz_fail(x, 500, "InternalServerError", "%s", "lost");
  put_evaluation(x->out, job, m);
  json_decref(job);
  json_decref(m);
  char loc[80];
  snprintf(loc, sizeof loc, "/personalizer/v1.0/evaluations/%s", id);
  adb__http_resp_header(x->resp, "Location", loc);
  x->resp->status = 201;
  return 0;
}

static int eval_list(rctx *x, const char *agent) {
  adb__sbuf s = {0};
  adb__eval_job_list(x->api->evals, agent, &s);
  json_t *all = s.p ? json_loads(s.p, 0, NULL) : NULL;
  free(s.p);
  if (!all) return pz_fail(x, 500, "InternalServerError", "%s", "oom");
  json_t *j;
  size_t i;
  int first = 1;
  adb__buf_putc(x->out, '[');
  json_array_foreach(json_object_get(all, "evaluations"), i, j) {
    json_t *m = meta_get(agent, json_string_value(json_object_get(j, "id")));
    if (!m) continue; /* AgentDB's own evaluations of the agent */
    if (!first) adb__buf_putc(x->out, ',');
    first = 0;
    put_evaluation(x->out, j, m);
    json_decref(m);
  }
  adb__buf_putc(x->out, ']');
  json_decref(all);
  return 0;
}

static int eval_get(rctx *x, const char *agent, const char *id) {
  json_t *m, *job = job_of(x, agent, id, &m);
  if (!job)
    return pz_fail(x, 404, "ResourceNotFound", "unknown evaluation '%.64s'",
                   id);
  put_evaluation(x->out, job, m);
  json_decref(job);
  json_decref(m);
  return 0;
}

static int eval_delete(rctx *x, const char *agent, const char *id) {
  json_t *m = meta_get(agent, id);
  adb__sbuf s = {0};
  int rc = m ? adb__eval_job_cancel(x->api->evals, agent, id, &s) : -1;
  free(s.p);
  json_decref(m);
  meta_del(agent, id);
  if (rc)
    return pz_fail(x, 404, "ResourceNotFound", "unknown evaluation '%.64s'",
                   id);
  x->resp->status = 204;
  return 0;
}

int adb__api_pz_evaluations(rctx *x) {
  const char *agent = pz_agent(x);
  if (!agent) return -1;
  int one = strstr(x->rt->pattern, "{evaluationId}") != NULL;
  if (x->rt->method == ADB__HTTP_POST) return eval_create(x, agent);
  if (!one) return eval_list(x, agent);
  if (x->rt->method == ADB__HTTP_DELETE)
    return eval_delete(x, agent, x->param[0]);
  return eval_get(x, agent, x->param[0]);
}

/* ------------------------------------------------------------ apprentice */

/* GET /personalizer/v1.0/apprentice (an AgentDB addition): over the events
 * ranked in Apprentice mode, how often the model's own choice matched the
 * baseline, and the rewards of the baseline where it did and did not. */
int adb__api_pz_apprentice(rctx *x) {
  const char *agent = pz_agent(x);
  adb_agent_config cfg;
  if (!agent || pz_ensure(x, agent, &cfg)) return -1;
  int err;
  json_t *svc = service_of(x, agent, &err);
  if (!svc) return pz_fail_adb(x, err);
  appr a = {0};
  pthread_mutex_lock(&appr_mu);
  appr *p = adb__strmap_get(&appr_map, agent);
  if (p) a = *p;
  pthread_mutex_unlock(&appr_mu);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "learningMode", learning_mode(svc), 1);
  json_decref(svc);
  adb__api_put_int(b, "events", a.events);
  adb__api_put_int(b, "matches", a.matches);
  adb__api_put_num(b, "matchRate", a.events ? (double)a.matches / a.events : 0);
  adb__api_put_int(b, "rewardedEvents", a.rewarded);
  adb__api_put_num(b, "baselineMeanReward",
                   a.rewarded ? a.r_sum / a.rewarded : 0);
  /* The model's value from the log (logged propensity 1): IPS counts an
   * event where the model disagreed as reward 0 (a lower bound for
   * rewards >= 0); the self-normalised estimate averages the agreeing. */
  adb__api_put_num(b, "modelIpsReward",
                   a.rewarded ? a.r_match_sum / a.rewarded : 0);
  adb__api_put_num(b, "modelMatchedMeanReward",
                   a.rewarded_match ? a.r_match_sum / a.rewarded_match : 0);
  adb__buf_putc(b, '}');
  return 0;
}
