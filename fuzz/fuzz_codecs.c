/*
 * fuzz_codecs.c — libFuzzer target: the request body decoders below the
 * routes (src/json.c): the strict JSON parser, the jansson float-array
 * reader, the float-array fast path (adb__jlex_floats, what the decide
 * fast path uses), base64 and base64-of-float32.
 *
 * Checks, beyond the sanitizers: what the parser accepts prints back to
 * text it accepts again as an equal value; the fast float path and the
 * jansson one accept the same arrays with the same values; base64 decode
 * of an encoding gives the bytes back; decoded floats are finite.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json.h"

#define CAP 256

static void check_json(const char *s, size_t n) {
  char err[128];
  json_t *v = adb__json_parse(s, n, err, sizeof err);
  if (!v) return;
  adb__buf b = {0};
  adb__json_value(&b, v);
  if (b.oom) abort();
  json_t *w = adb__json_parse(b.p, b.len, err, sizeof err);
  if (!w || !json_equal(v, w)) abort();
  json_decref(w);
  json_decref(v);
  adb__buf_free(&b);
}

static void check_floats(const char *s, size_t n) {
  float fast[CAP], slow[CAP];
  int nf = 0, ns = 0;
  adb__jlex l = {s, s + n};
  int ok_fast = adb__jlex_floats(&l, fast, CAP, &nf);
  if (ok_fast && adb__jlex_peek(&l) != -1) ok_fast = 0; /* trailing bytes */
  /* The reference: the full path's parser, as the array of a body. */
  char *w = malloc(n + 8);
  memcpy(w, "{\"v\":", 5);
  memcpy(w + 5, s, n);
  w[n + 5] = '}';
  char err[128];
  json_t *doc = adb__json_parse(w, n + 6, err, sizeof err);
  free(w);
  json_t *arr = doc ? json_object_get(doc, "v") : NULL;
  int ok_slow = json_is_array(arr) &&
                adb__json_floats(arr, slow, CAP, &ns, err, sizeof err) == 0;
  json_decref(doc);
  if (ok_fast) {
    for (int i = 0; i < nf; i++)
      if (!isfinite(fast[i])) abort();
    /* The fast path is stricter (no escapes...), never looser. */
    if (!ok_slow || nf != ns) abort();
    for (int i = 0; i < nf; i++)
      if (fast[i] != slow[i]) abort();
  }
}

static void check_b64(const uint8_t *d, size_t n) {
  unsigned char *out = malloc((n / 4 + 1) * 3 + 3);
  long m = adb__b64_decode((const char *)d, n, out);
  if (m > (long)((n / 4 + 1) * 3)) abort();
  free(out);
  adb__buf b = {0};
  adb__b64_encode(&b, d, n);
  if (b.oom) abort();
  unsigned char *back = malloc((b.len / 4 + 1) * 3 + 3);
  if (adb__b64_decode(b.p, b.len, back) != (long)n || memcmp(back, d, n))
    abort();
  free(back);
  adb__buf_free(&b);
  float f[CAP];
  int dim = 0;
  char err[128];
  if (adb__b64_floats((const char *)d, n, f, CAP, &dim, err, sizeof err) == 0) {
    if (dim < 0 || dim > CAP) abort();
    for (int i = 0; i < dim; i++)
      if (!isfinite(f[i])) abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
  check_json((const char *)data, len);
  check_floats((const char *)data, len);
  check_b64(data, len);
  return 0;
}
