/*
 * api_json.c — reading requests and writing answers for the route files:
 * typed field readers that answer a precise 400 themselves (the field named
 * in dotted/indexed form, e.g. "actions[3].embedding"), compact JSON
 * writers, query parameters and times, and a small string set for
 * uniqueness checks.
 */
#define _GNU_SOURCE
#include "api_internal.h"
#include "feature.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ----------------------------------------------------- JSON helpers */

const char *adb__api_fname(rctx *x, const char *prefix, const char *name) {
  if (!prefix) return name;
  size_t n = strlen(prefix) + strlen(name) + 2;
  char *s = adb__api_alloc(x, n);
  if (!s) return name;
  snprintf(s, n, "%s.%s", prefix, name);
  return s;
}

const char *adb__api_fidx(rctx *x, const char *name, size_t i) {
  size_t n = strlen(name) + 24;
  char *s = adb__api_alloc(x, n);
  if (!s) return name;
  snprintf(s, n, "%s[%zu]", name, i);
  return s;
}

/* The body as a JSON object; an empty body is {} when allow_empty. */
json_t *adb__api_parse_body(rctx *x, int allow_empty) {
  adb__http_req *r = x->req;
  size_t i = 0;
  while (i < r->body_len && isspace((unsigned char)r->body[i]))
    i++;
  if (i == r->body_len && allow_empty) return x->doc = json_object();
  if (i == r->body_len) {
    adb__api_fail(x, 400, "invalid_json", NULL,
                  "the request needs a JSON body");
    return NULL;
  }
  char err[256];
  x->doc = adb__json_parse(r->body, r->body_len, err, sizeof err);
  if (!x->doc) adb__api_fail(x, 400, "invalid_json", NULL, "%s", err);
  return x->doc;
}

/* Rejects members of o not in allowed (NULL-terminated). */
int adb__api_check_keys(rctx *x, json_t *o, const char *const *allowed,
                        const char *prefix) {
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    int ok = 0;
    for (int i = 0; allowed[i]; i++)
      ok |= strcmp(k, allowed[i]) == 0;
    if (!ok)
      return adb__api_fail(x, 400, "invalid_field",
                           adb__api_fname(x, prefix, k), "unknown field '%s'",
                           k);
  }
  return 0;
}

/* o[k], treating null as absent. */
json_t *adb__api_member(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_null(v) ? NULL : v;
}

int adb__api_get_id(rctx *x, json_t *o, const char *k, const char *prefix,
                    int required, const char **out) {
  json_t *v = adb__api_member(o, k);
  const char *f = adb__api_fname(x, prefix, k);
  *out = NULL;
  if (!v)
    return required ? adb__api_fail(x, 400, "missing_field", f,
                                    "'%s' is required", f)
                    : 0;
  if (!json_is_string(v))
    return adb__api_fail(x, 400, "invalid_field", f, "'%s' must be a string",
                         f);
  const char *s = json_string_value(v);
  if (strlen(s) != json_string_length(v) || !adb_id_valid(s))
    return adb__api_fail(x, 400, "invalid_field", f,
                         "'%s' must be 1..128 characters of [A-Za-z0-9._:@-]",
                         f);
  *out = s;
  return 0;
}

int adb__api_get_num(rctx *x, json_t *o, const char *k, const char *prefix,
                     double lo, double hi, double *out, int *present) {
  json_t *v = adb__api_member(o, k);
  const char *f = adb__api_fname(x, prefix, k);
  if (present) *present = v != NULL;
  if (!v) return 0;
  if (!json_is_number(v))
    return adb__api_fail(x, 400, "invalid_field", f, "'%s' must be a number",
                         f);
  double d = json_number_value(v);
  if (!isfinite(d) || d < lo || d > hi)
    return adb__api_fail(x, 400, "invalid_field", f, "'%s' must be in [%g, %g]",
                         f, lo, hi);
  *out = d;
  return 0;
}

int adb__api_get_int(rctx *x, json_t *o, const char *k, const char *prefix,
                     int64_t lo, int64_t hi, int64_t *out, int *present) {
  json_t *v = adb__api_member(o, k);
  const char *f = adb__api_fname(x, prefix, k);
  if (present) *present = v != NULL;
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo ||
      json_integer_value(v) > hi)
    return adb__api_fail(x, 400, "invalid_field", f,
                         "'%s' must be an integer in [%lld, %lld]", f,
                         (long long)lo, (long long)hi);
  *out = json_integer_value(v);
  return 0;
}

int adb__api_get_bool(rctx *x, json_t *o, const char *k, const char *prefix,
                      int *out) {
  json_t *v = adb__api_member(o, k);
  if (!v) return 0;
  if (json_is_boolean(v))
    *out = json_is_true(v);
  else if (json_is_integer(v) &&
           (json_integer_value(v) == 0 || json_integer_value(v) == 1))
    *out = (int)json_integer_value(v);
  else
    return adb__api_fail(x, 400, "invalid_field", adb__api_fname(x, prefix, k),
                         "'%s' must be a boolean", k);
  return 0;
}

/* Compact JSON text of v in the arena. */
char *adb__api_dump(rctx *x, const json_t *v) {
  adb__buf b = {0};
  adb__json_value(&b, v);
  char *s = b.oom ? NULL : adb__api_strndup(x, b.p ? b.p : "null", b.len);
  adb__buf_free(&b);
  return s;
}

/* An optional JSON object member as compact text (NULL when absent). */
int adb__api_get_object_text(rctx *x, json_t *o, const char *k,
                             const char *prefix, char **out) {
  json_t *v = adb__api_member(o, k);
  *out = NULL;
  if (!v) return 0;
  if (!json_is_object(v))
    return adb__api_fail(x, 400, "invalid_field", adb__api_fname(x, prefix, k),
                         "'%s' must be a JSON object", k);
  if (!(*out = adb__api_dump(x, v)))
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  return 0;
}

/* "embedding" (array) or "embedding_b64" (base64 float32 LE). */
int adb__api_get_embedding(rctx *x, json_t *o, const char *prefix, int required,
                           float **emb, int *dim) {
  json_t *a = adb__api_member(o, "embedding"),
         *b = adb__api_member(o, "embedding_b64");
  const char *fa = adb__api_fname(x, prefix, "embedding");
  const char *fb = adb__api_fname(x, prefix, "embedding_b64");
  *emb = NULL;
  *dim = 0;
  if (a && b)
    return adb__api_fail(x, 400, "invalid_field", fb,
                         "give 'embedding' or 'embedding_b64', not both");
  if (!a && !b)
    return required ? adb__api_fail(x, 400, "missing_field", fa,
                                    "'%s' (or 'embedding_b64') is required", fa)
                    : 0;
  /* Room for what was sent, up to the limit (the decoders reject more). */
  size_t cap = a ? json_array_size(a) : (json_string_length(b) * 3 / 4 + 3) / 4;
  if (cap > ADB_MAX_EMBEDDING_DIM) cap = ADB_MAX_EMBEDDING_DIM;
  float *v = adb__api_alloc(x, cap * sizeof(float) + 8);
  if (!v) return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  char err[128];
  int rc;
  if (a) {
    rc = adb__json_floats(a, v, (int)cap, dim, err, sizeof err);
  } else if (!json_is_string(b)) {
    snprintf(err, sizeof err, "expected a base64 string");
    rc = ADB_EINVAL;
  } else {
    rc = adb__b64_floats(json_string_value(b), json_string_length(b), v,
                         (int)cap, dim, err, sizeof err);
  }
  if (rc == ADB_OK && *dim == 0) {
    snprintf(err, sizeof err, "an embedding needs at least one value");
    rc = ADB_EINVAL;
  }
  if (rc != ADB_OK)
    return adb__api_fail(x, 400, "invalid_field", a ? fa : fb, "'%s': %s",
                         a ? fa : fb, err);
  *emb = v;
  return 0;
}

/* A context {key: string|number|boolean} as key/value pairs. */
int adb__api_get_context(rctx *x, json_t *o, const char *k, adb_kv **kv,
                         int *n) {
  json_t *c = adb__api_member(o, k);
  *kv = NULL;
  *n = 0;
  if (!c) return 0;
  if (!json_is_object(c) || json_object_size(c) > MAX_CONTEXT)
    return adb__api_fail(x, 400, "invalid_field", k,
                         "'%s' must be an object of at most %d entries", k,
                         MAX_CONTEXT);
  adb_kv *out = adb__api_alloc(x, json_object_size(c) * sizeof *out);
  if (!out) return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  const char *key;
  json_t *v;
  int i = 0;
  json_object_foreach(c, key, v) {
    const char *f = adb__api_fname(x, k, key);
    if (!adb_id_valid(key))
      return adb__api_fail(x, 400, "invalid_field", f,
                           "context keys must be 1..128 characters of "
                           "[A-Za-z0-9._:@-]");
    char tmp[40];
    const char *s = NULL;
    if (json_is_string(v)) {
      s = json_string_value(v);
    } else if (json_is_integer(v)) {
      snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
      s = tmp;
    } else if (json_is_real(v)) {
      adb__buf b = {0};
      adb__json_num(&b, json_real_value(v));
      snprintf(tmp, sizeof tmp, "%s", b.p ? b.p : "0");
      adb__buf_free(&b);
      s = tmp;
    } else if (json_is_boolean(v)) {
      s = json_is_true(v) ? "true" : "false";
    } else if (json_is_null(v)) {
      continue;
    } else {
      return adb__api_fail(
          x, 400, "invalid_field", f,
          "context values must be strings, numbers or booleans");
    }
    if (strlen(s) > 1024)
      return adb__api_fail(x, 400, "invalid_field", f,
                           "context values hold at most 1024 bytes");
    out[i].key = key;
    out[i].value = adb__api_strndup(x, s, strlen(s));
    if (!out[i].value)
      return adb__api_fail(x, 500, "internal", NULL, "out of memory");
    i++;
  }
  *kv = out;
  *n = i;
  return 0;
}

/* ---------------------------------------------------- JSON output */

void adb__api_put_key(adb__buf *b, const char *k, int first) {
  if (!first) adb__buf_putc(b, ',');
  adb__buf_putc(b, '"');
  adb__buf_puts(b, k);
  adb__buf_puts(b, "\":");
}

void adb__api_put_str(adb__buf *b, const char *k, const char *v, int first) {
  adb__api_put_key(b, k, first);
  adb__json_str(b, v);
}

void adb__api_put_num(adb__buf *b, const char *k, double v) {
  adb__api_put_key(b, k, 0);
  adb__json_num(b, v);
}

void adb__api_put_int(adb__buf *b, const char *k, int64_t v) {
  adb__api_put_key(b, k, 0);
  adb__json_int(b, v);
}

void adb__api_put_floats(adb__buf *b, const char *k, const float *v, int n) {
  adb__api_put_key(b, k, 0);
  adb__buf_putc(b, '[');
  for (int i = 0; i < n; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__json_num9(b, v[i]);
  }
  adb__buf_putc(b, ']');
}

/* Raw JSON text from the store, or fallback when absent. */
void adb__api_put_raw(adb__buf *b, const char *k, const char *json,
                      const char *fallback) {
  adb__api_put_key(b, k, 0);
  adb__buf_puts(b, json && *json ? json : fallback);
}

const char *adb__api_algo_name(adb_algorithm a) {
  return a == ADB_ALGO_GAUSSIAN ? "gaussian"
         : a == ADB_ALGO_LINEAR ? "linear"
                                : "beta";
}

int adb__api_strset_init(rctx *x, adb__api_strset *s, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n)
    cap *= 2;
  s->slot = adb__api_alloc(x, cap * sizeof *s->slot);
  if (!s->slot) return -1;
  memset(s->slot, 0, cap * sizeof *s->slot);
  s->mask = cap - 1;
  return 0;
}

/* Adds k; returns 0 if it was already there. */
int adb__api_strset_add(adb__api_strset *s, const char *k) {
  uint64_t h = 1469598103934665603ull;
  for (const char *p = k; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ull;
  for (size_t i = h & s->mask;; i = (i + 1) & s->mask) {
    if (!s->slot[i]) {
      s->slot[i] = k;
      return 1;
    }
    if (strcmp(s->slot[i], k) == 0) return 0;
  }
}

int adb__api_is_state_key(const char *s) {
  if (strlen(s) != ADB_STATE_KEY_LEN) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

/* ------------------------------------------------------------ query */

static int hexv(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..n) into the arena; NULL when malformed or when it
 * decodes to a NUL byte. */
char *adb__api_pct_decode(rctx *x, const char *s, size_t n) {
  char *o = adb__api_alloc(x, n + 1), *p = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      *p++ = s[i];
      continue;
    }
    int h = i + 2 < n ? hexv(s[i + 1]) : -1, l = h >= 0 ? hexv(s[i + 2]) : -1;
    if (l < 0 || (h == 0 && l == 0)) return NULL;
    *p++ = (char)(h * 16 + l);
    i += 2;
  }
  *p = '\0';
  return o;
}

/* The decoded value of query parameter name, or NULL; *bad when the
 * query holds it but malformed. */
const char *adb__api_query_get(rctx *x, const char *name, int *bad) {
  const char *q = x->req->query;
  size_t n = x->req->query_len, nl = strlen(name), i = 0;
  *bad = 0;
  while (q && i < n) {
    size_t j = i;
    while (j < n && q[j] != '&')
      j++;
    const char *eq = memchr(q + i, '=', j - i);
    size_t kl = eq ? (size_t)(eq - (q + i)) : j - i;
    if (kl == nl && memcmp(q + i, name, nl) == 0) {
      const char *v = eq ? eq + 1 : q + j;
      char *d = adb__api_pct_decode(x, v, (size_t)(q + j - v));
      *bad = d == NULL;
      return d;
    }
    i = j + 1;
  }
  return NULL;
}

/* ---------------------------------------------------------- metrics */

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

/* "Z", "+HH:MM", "+HHMM", "-HH:MM" or nothing, into seconds east. */
static int parse_zone(const char *s, int *off) {
  *off = 0;
  if (!*s || ((s[0] == 'Z' || s[0] == 'z') && !s[1])) return 0;
  int sign = s[0] == '+' ? 1 : s[0] == '-' ? -1 : 0, h, m;
  if (!sign || digits(s + 1, 2, &h) < 0) return -1;
  s += 3;
  if (*s == ':') s++;
  if (digits(s, 2, &m) < 0 || s[2] || h > 23 || m > 59) return -1;
  *off = sign * (h * 3600 + m * 60);
  return 0;
}

int adb__api_parse_time(const char *s, int64_t *ms) {
  size_t n = strlen(s);
  if (n && strspn(s + (s[0] == '-'), "0123456789") == n - (s[0] == '-')) {
    if (n > 18) return ADB_EINVAL;
    *ms = strtoll(s, NULL, 10);
    return ADB_OK;
  }
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  int y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0, off;
  if (n < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
      s[7] != '-' || digits(s + 8, 2, &d))
    return ADB_EINVAL;
  const char *p = s + 10;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    if (digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &mi))
      return ADB_EINVAL;
    p += 6;
    if (*p == ':') {
      if (digits(p + 1, 2, &sec)) return ADB_EINVAL;
      p += 3;
      if (*p == '.') {
        int k = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, k++)
          if (k < 3) frac_ms = frac_ms * 10 + (*p - '0');
        if (k == 0) return ADB_EINVAL;
        for (; k < 3; k++)
          frac_ms *= 10;
      }
    }
  }
  if (parse_zone(p, &off) < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
      h > 23 || mi > 59 || sec > 60)
    return ADB_EINVAL;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *ms = ((int64_t)timegm(&tm) - off) * 1000 + frac_ms;
  return ADB_OK;
}

int64_t adb__api_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int adb__api_time_param(rctx *x, const char *name, int64_t *ms) {
  int bad;
  const char *v = adb__api_query_get(x, name, &bad);
  if (!v && !bad) return 0;
  if (bad || adb__api_parse_time(v, ms) != ADB_OK)
    return adb__api_fail(
        x, 400, "invalid_field", name,
        "'%s' must be milliseconds since the epoch or an ISO-8601 "
        "time",
        name);
  return 0;
}

/* The body of a bulk route: {name: [1..MAX_BULK items]}; *arr and *n get the
 * array and its length. */
int adb__api_bulk(rctx *x, const char *name, json_t **arr, size_t *n) {
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  const char *const keys[] = {name, NULL};
  if (adb__api_check_keys(x, doc, keys, NULL)) return -1;
  *arr = adb__api_member(doc, name);
  if (!*arr)
    return adb__api_fail(x, 400, "missing_field", name, "'%s' is required",
                         name);
  *n = json_is_array(*arr) ? json_array_size(*arr) : 0;
  if (*n == 0 || *n > MAX_BULK)
    return adb__api_fail(x, 400, "invalid_field", name,
                         "'%s' must be an array of 1..%d %s", name, MAX_BULK,
                         name);
  return 0;
}

int adb__api_get_features(rctx *x, json_t *o, const char *k, const char *prefix,
                          float **emb, int *dim) {
  json_t *v = adb__api_member(o, k);
  if (!v) return 0;
  const char *f = adb__api_fname(x, prefix, k);
  if (*emb)
    return adb__api_fail(x, 400, "invalid_field", f,
                         "give '%s' or an embedding, not both", k);
  char bad[128];
  float *e = adb__api_alloc(x, ADB_FEAT_DIM * sizeof *e);
  if (!e) return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  if (adb__features_hash(v, e, bad, sizeof bad) < 0)
    return adb__api_fail(x, 400, "invalid_field", f, "'%s' %s", k, bad);
  *emb = e;
  *dim = ADB_FEAT_DIM;
  return 0;
}
