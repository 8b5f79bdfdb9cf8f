/*
 * agent_json.c — an agent's settings read from JSON (see agent_json.h).
 * Messages name the field as the HTTP error's "field" does: "prior.alpha",
 * "context_keys[2]".
 */
#include "agent_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const adb__cross_names[4] = {"user_action", "context_action",
                                         "action", "bias"};

static int fail(adb__jerr *e, const char *field, const char *fmt, ...) {
  snprintf(e->field, sizeof e->field, "%s", field);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return ADB_EINVAL;
}

/* o[k], null read as absent. */
static json_t *member(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_null(v) ? NULL : v;
}

static const char *fname(char *buf, size_t n, const char *prefix,
                         const char *k) {
  if (!prefix) return k;
  snprintf(buf, n, "%s.%s", prefix, k);
  return buf;
}

/* Refuses members of o named in neither list. */
static int check_keys(json_t *o, const char *const *a, const char *const *b,
                      const char *prefix, adb__jerr *e) {
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    int ok = 0;
    for (int i = 0; a[i] && !ok; i++)
      ok = strcmp(k, a[i]) == 0;
    for (int i = 0; b && b[i] && !ok; i++)
      ok = strcmp(k, b[i]) == 0;
    char f[96];
    if (!ok)
      return fail(e, fname(f, sizeof f, prefix, k), "unknown field '%s'", k);
  }
  return ADB_OK;
}

static int get_num(json_t *o, const char *k, const char *prefix, double lo,
                   double hi, double *out, adb__jerr *e) {
  json_t *v = member(o, k);
  if (!v) return ADB_OK;
  char buf[96];
  const char *f = fname(buf, sizeof buf, prefix, k);
  if (!json_is_number(v)) return fail(e, f, "'%s' must be a number", f);
  double d = json_number_value(v);
  if (!isfinite(d) || d < lo || d > hi)
    return fail(e, f, "'%s' must be in [%g, %g]", f, lo, hi);
  *out = d;
  return ADB_OK;
}

static int get_int(json_t *o, const char *k, int lo, int hi, int *out,
                   adb__jerr *e) {
  json_t *v = member(o, k);
  if (!v) return ADB_OK;
  if (!json_is_integer(v) || json_integer_value(v) < lo ||
      json_integer_value(v) > hi)
    return fail(e, k, "'%s' must be an integer in [%d, %d]", k, lo, hi);
  *out = (int)json_integer_value(v);
  return ADB_OK;
}

static int read_algorithm(json_t *doc, adb_agent_config *c, adb__jerr *e) {
  json_t *al = member(doc, "algorithm");
  if (!al) return ADB_OK;
  static const char *const names[] = {"beta", "gaussian", "linear"};
  static const adb_algorithm algos[] = {ADB_ALGO_BETA, ADB_ALGO_GAUSSIAN,
                                        ADB_ALGO_LINEAR};
  const char *s = json_is_string(al) ? json_string_value(al) : "";
  for (int i = 0; i < 3; i++)
    if (strcmp(s, names[i]) == 0) {
      c->algorithm = algos[i];
      return ADB_OK;
    }
  return fail(e, "algorithm",
              "'algorithm' must be \"beta\", \"gaussian\" or \"linear\"");
}

static int read_prior(json_t *doc, adb_agent_config *c, adb__jerr *e) {
  json_t *p = member(doc, "prior");
  if (!p) return ADB_OK;
  if (!json_is_object(p)) return fail(e, "prior", "'prior' must be an object");
  static const char *const keys[] = {"alpha", "beta", "mu", "kappa",
                                     "a",     "b",    NULL};
  const double big = 1e300, tiny = 1e-300;
  const char *f = "prior";
  return check_keys(p, keys, NULL, f, e) ||
                 get_num(p, "alpha", f, tiny, big, &c->prior_alpha, e) ||
                 get_num(p, "beta", f, tiny, big, &c->prior_beta, e) ||
                 get_num(p, "mu", f, -big, big, &c->prior_mu, e) ||
                 get_num(p, "kappa", f, tiny, big, &c->prior_kappa, e) ||
                 get_num(p, "a", f, tiny, big, &c->prior_a, e) ||
                 get_num(p, "b", f, tiny, big, &c->prior_b, e)
             ? ADB_EINVAL
             : ADB_OK;
}

static int read_context_keys(json_t *doc, adb_agent_config *c, adb__jerr *e) {
  json_t *a = member(doc, "context_keys");
  if (!a) return ADB_OK;
  if (!json_is_array(a) || json_array_size(a) > ADB_MAX_CONTEXT_KEYS)
    return fail(e, "context_keys",
                "'context_keys' must be an array of at most %d ids",
                ADB_MAX_CONTEXT_KEYS);
  for (size_t i = 0; i < json_array_size(a); i++) {
    json_t *v = json_array_get(a, i);
    char f[48];
    snprintf(f, sizeof f, "context_keys[%zu]", i);
    if (!json_is_string(v) || !adb_id_valid(json_string_value(v)))
      return fail(e, f,
                  "context keys must be 1..128 characters of "
                  "[A-Za-z0-9._:@-]");
    for (size_t j = 0; j < i; j++)
      if (strcmp(c->context_keys[j], json_string_value(v)) == 0)
        return fail(e, f, "duplicate context key '%s'", json_string_value(v));
    snprintf(c->context_keys[i], sizeof c->context_keys[i], "%s",
             json_string_value(v));
  }
  c->n_context_keys = (int)json_array_size(a);
  return ADB_OK;
}

static int read_weights(json_t *doc, adb_agent_config *c, adb__jerr *e) {
  json_t *w = member(doc, "reward_weights");
  if (!w) return ADB_OK;
  if (!json_is_object(w))
    return fail(e, "reward_weights", "'reward_weights' must be an object");
  static const char *const keys[] = {"watch", "click", "rating", NULL};
  const char *f = "reward_weights";
  adb_reward_weights *rw = &c->reward_weights;
  return check_keys(w, keys, NULL, f, e) ||
                 get_num(w, "watch", f, 0, 1e300, &rw->watch, e) ||
                 get_num(w, "click", f, 0, 1e300, &rw->click, e) ||
                 get_num(w, "rating", f, 0, 1e300, &rw->rating, e)
             ? ADB_EINVAL
             : ADB_OK;
}

static int read_crosses(json_t *doc, adb_agent_config *c, adb__jerr *e) {
  json_t *a = member(doc, "crosses");
  if (!a) return ADB_OK;
  if (!json_is_array(a))
    return fail(e, "crosses",
                "'crosses' must be an array of \"user_action\", "
                "\"context_action\", \"action\", \"bias\"");
  int bits = 0;
  for (size_t i = 0; i < json_array_size(a); i++) {
    json_t *v = json_array_get(a, i);
    int k = 0;
    while (k < 4 && !(json_is_string(v) &&
                      strcmp(json_string_value(v), adb__cross_names[k]) == 0))
      k++;
    char f[48];
    snprintf(f, sizeof f, "crosses[%zu]", i);
    if (k == 4)
      return fail(e, f,
                  "a cross is \"user_action\", \"context_action\", "
                  "\"action\" or \"bias\"");
    bits |= 1 << k;
  }
  if (!bits)
    return fail(e, "crosses", "'crosses' must name at least one cross");
  c->linear_crosses = bits;
  return ADB_OK;
}

int adb__agent_from_json(json_t *doc, const char *const *extra,
                         adb_agent_config *c, adb__jerr *e) {
  static const char *const keys[] = {"id",
                                     "algorithm",
                                     "prior",
                                     "context_keys",
                                     "embedding_dim",
                                     "simhash_bits",
                                     "reward_weights",
                                     "fallback_strength",
                                     "decay_half_life_s",
                                     "reward_window_s",
                                     "default_reward",
                                     "crosses",
                                     "lambda",
                                     "v",
                                     "created_at_ms",
                                     "updated_at_ms",
                                     "counters",
                                     NULL};
  const double big = 1e300;
  return check_keys(doc, keys, extra, NULL, e) || read_algorithm(doc, c, e) ||
                 read_prior(doc, c, e) || read_context_keys(doc, c, e) ||
                 read_weights(doc, c, e) ||
                 get_int(doc, "embedding_dim", 0, ADB_MAX_EMBEDDING_DIM,
                         &c->embedding_dim, e) ||
                 get_int(doc, "simhash_bits", 0, 64, &c->simhash_bits, e) ||
                 get_num(doc, "fallback_strength", NULL, -big, big,
                         &c->fallback_strength, e) ||
                 get_num(doc, "decay_half_life_s", NULL, 0, big,
                         &c->decay_half_life_s, e) ||
                 get_num(doc, "reward_window_s", NULL, 0, big,
                         &c->reward_window_s, e) ||
                 get_num(doc, "default_reward", NULL, -big, big,
                         &c->default_reward, e) ||
                 read_crosses(doc, c, e) ||
                 get_num(doc, "lambda", NULL, 1e-6, 1e6, &c->linear_lambda,
                         e) ||
                 get_num(doc, "v", NULL, 1e-6, 1e3, &c->linear_v, e)
             ? ADB_EINVAL
             : ADB_OK;
}
