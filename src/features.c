/*
 * features.c — Personalizer's feature objects as linear-model inputs.
 *
 * Personalizer took features as a list of JSON objects, e.g.
 *
 *     [{"user": {"tier": "gold", "visits": 3}}, {"device": "mobile"}]
 *
 * and handed them to Vowpal Wabbit, which hashed every feature into a
 * large weight table. The rule kept here is VW's: a top-level key is a
 * namespace; below it, a string value is a categorical feature (its name
 * is the path and the value, weight 1), a number is a numeric feature (its
 * name is the path, its weight the value), a boolean is categorical
 * ("true"/"false"), null is absent, a nested object extends the path
 * ("user.profile.age") and an array element extends it with its index
 * ("user.tags.0=news"; an array of numbers is a dense vector).
 *
 * The linear model of AgentDB has a small feature space (linear.h: 16 user
 * or context values, 16 action values, crossed by the model), so each
 * feature goes to one of ADB_FEAT_DIM slots with a sign chosen by its hash
 * (the "hashing trick" with signs, so that collisions cancel in
 * expectation rather than add up). Context features fill the user slot u
 * and action features the action slot e: the model's u x e cross is then
 * Personalizer's context x action interaction (VW's -q between context and
 * action namespaces), its e term the action's main effect and its bias
 * per action the rest. A request holding many features shares 16 slots:
 * enough to tell a few dozen categorical values apart, not a wide sparse
 * model (docs/personalizer.md says so).
 */
#include "feature.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct fstate {
  float *out;
  int n;
  char path[512];
} fstate;

uint64_t adb__features_name_hash(const char *name, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)name[i];
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 33; /* murmur3's finaliser: every bit mixes into the low ones */
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

static void add(fstate *s, const char *name, size_t len, double w) {
  if (s->n >= ADB_FEAT_MAX || !isfinite(w) || w == 0) return;
  uint64_t h = adb__features_name_hash(name, len);
  s->out[h % ADB_FEAT_DIM] += (float)((h >> 63) ? -w : w);
  s->n++;
}

static void walk(fstate *s, size_t at, const json_t *v);

/* Extends the path by sep + key, walks v, and restores the path. */
static void child(fstate *s, size_t at, const char *sep, const char *key,
                  const json_t *v) {
  int n =
      snprintf(s->path + at, sizeof s->path - at, "%s%s", at ? sep : "", key);
  if (n < 0 || (size_t)n >= sizeof s->path - at) return; /* too deep */
  walk(s, at + (size_t)n, v);
  s->path[at] = '\0';
}

static void categorical(fstate *s, size_t at, const char *value) {
  char name[768];
  int n = snprintf(name, sizeof name, "%.*s=%s", (int)at, s->path, value);
  if (n > 0)
    add(s, name, (size_t)n < sizeof name ? (size_t)n : sizeof name - 1, 1.0);
}

static void walk(fstate *s, size_t at, const json_t *v) {
  if (json_is_string(v)) {
    categorical(s, at, json_string_value(v));
  } else if (json_is_number(v)) {
    add(s, s->path, at, json_number_value(v));
  } else if (json_is_boolean(v)) {
    categorical(s, at, json_is_true(v) ? "true" : "false");
  } else if (json_is_object(v)) {
    const char *k;
    const json_t *c;
    json_object_foreach((json_t *)v, k, c) child(s, at, ".", k, c);
  } else if (json_is_array(v)) {
    size_t i;
    const json_t *c;
    char idx[24];
    json_array_foreach(v, i, c) {
      snprintf(idx, sizeof idx, "%zu", i);
      child(s, at, ".", idx, c);
    }
  }
}

int adb__features_hash(const json_t *list, float out[ADB_FEAT_DIM], char *bad,
                       size_t badlen) {
  memset(out, 0, ADB_FEAT_DIM * sizeof *out);
  if (!list || json_is_null(list)) return 0;
  if (!json_is_array(list)) {
    snprintf(bad, badlen, "must be a list of JSON objects");
    return -1;
  }
  fstate s = {.out = out};
  size_t i;
  const json_t *o;
  json_array_foreach(list, i, o) {
    if (!json_is_object(o)) {
      snprintf(bad, badlen, "item %zu is not a JSON object", i);
      return -1;
    }
    walk(&s, 0, o);
  }
  return s.n;
}
