/*
 * json.c — output buffer and JSON writer, the strict fast-path lexer, float
 * array codecs (JSON and base64 float32 LE) and the request arena used by
 * the HTTP server. See json.h for the contracts.
 *
 * Numbers. Reading: the lexer checks the JSON grammar itself, then converts
 * exactly when the decimal mantissa fits 53 bits and the power of ten is at
 * most 22 (both exact doubles, so one multiplication or division rounds
 * correctly: Clinger's fast path); otherwise it hands the validated token to
 * strtod. Writing: adb__json_num prints the shortest of %.15g/%.16g/%.17g
 * that reads back exactly (an integer below 1e15 by integer arithmetic: the
 * same text); adb__json_num9 prints nine significant digits by integer
 * arithmetic, which is what the decide answer's scores need and is several
 * times faster than printf; adb__json_floats9 writes a whole array of them
 * into one reservation (the log export writes ~90 a row).
 */
#include "json.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ buffer */

int adb__buf_reserve(adb__buf *b, size_t n) {
  if (b->len + n + 1 <= b->cap) return ADB_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + n + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return ADB_ENOMEM;
  }
  b->p = p;
  b->cap = cap;
  return ADB_OK;
}

void adb__buf_append(adb__buf *b, const void *p, size_t n) {
  if (adb__buf_reserve(b, n) != ADB_OK) return;
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void adb__buf_puts(adb__buf *b, const char *s) {
  adb__buf_append(b, s, strlen(s));
}

void adb__buf_putc(adb__buf *b, char c) {
  if (adb__buf_reserve(b, 1) != ADB_OK) return;
  b->p[b->len++] = c;
  b->p[b->len] = '\0';
}

void adb__buf_printf(adb__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    adb__buf_append(b, tmp, (size_t)n);
    return;
  }
  if (adb__buf_reserve(b, (size_t)n) != ADB_OK) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void adb__buf_free(adb__buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------ writer */

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629: no
 * overlongs, surrogates or code points past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
  if (s[0] < 0xc2 || s[0] > 0xf4 || n < len) return 0;
  for (size_t k = 1; k < len; k++)
    if ((s[k] & 0xc0) != 0x80) return 0;
  if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
      (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
    return 0;
  return len;
}

void adb__json_strn(adb__buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (adb__buf_reserve(b, n * 6 + 2) != ADB_OK) return;
  char *o = b->p + b->len;
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x80) {
      /* Text echoed from input (a parser's message) may hold broken
       * UTF-8: each byte of it becomes U+FFFD, so the answer stays JSON
       * (found by fuzz_api). */
      size_t k = utf8_seq((const unsigned char *)s + i, n - i);
      if (k) {
        memcpy(o, s + i, k);
        o += k;
        i += k - 1;
      } else {
        memcpy(o, "\\ufffd", 6);
        o += 6;
      }
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') {
      *o++ = (char)c;
      continue;
    }
    *o++ = '\\';
    switch (c) {
    case '"':
      *o++ = '"';
      break;
    case '\\':
      *o++ = '\\';
      break;
    case '\n':
      *o++ = 'n';
      break;
    case '\r':
      *o++ = 'r';
      break;
    case '\t':
      *o++ = 't';
      break;
    default:
      *o++ = 'u';
      *o++ = '0';
      *o++ = '0';
      *o++ = hex[c >> 4];
      *o++ = hex[c & 15];
    }
  }
  *o++ = '"';
  b->len = (size_t)(o - b->p);
  b->p[b->len] = '\0';
}

void adb__json_str(adb__buf *b, const char *s) {
  adb__json_strn(b, s, strlen(s));
}

void adb__json_num(adb__buf *b, double x) {
  if (!isfinite(x)) {
    adb__buf_append(b, "null", 4);
    return;
  }
  if (fabs(x) < 1e15 && x == (double)(int64_t)x) { /* what %.15g prints */
    if (x == 0 && signbit(x))
      adb__buf_append(b, "-0", 2);
    else
      adb__json_int(b, (int64_t)x);
    return;
  }
  char tmp[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, x);
    if (prec == 17 || strtod(tmp, NULL) == x) break;
  }
  adb__buf_puts(b, tmp);
}

static const double pow10_tab[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Writes u's decimal digits ending at end; returns the start. */
static char *utoa_back(char *end, uint64_t u) {
  do {
    *--end = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  return end;
}

void adb__json_int(adb__buf *b, int64_t x) {
  char tmp[24], *end = tmp + sizeof tmp;
  uint64_t u = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
  char *s = utoa_back(end, u);
  if (x < 0) *--s = '-';
  adb__buf_append(b, s, (size_t)(end - s));
}

static const double neg_pow10_tab[] = {1e0,  1e-1, 1e-2, 1e-3,
                                       1e-4, 1e-5, 1e-6, 1e-7};

/* Nine significant digits of |x| in [1e-6, 1e9), as digits and decimal
 * exponent e10 (x ~ d.dddddddd * 10^e10). (1e-k is 1 / 1e+k exactly: both
 * are the double nearest to 10^-k.) */
static void nine_digits(double ax, uint64_t *digits, int *e10) {
  int e = 0;
  if (ax >= 1) {
    while (e < 8 && ax >= pow10_tab[e + 1])
      e++;
  } else {
    e = -1;
    while (e > -7 && ax < neg_pow10_tab[-e])
      e--;
  }
  int shift = 8 - e; /* 0..14 */
  uint64_t d = (uint64_t)(ax * pow10_tab[shift] + 0.5);
  if (d >= 1000000000u) { /* rounded up past nine digits */
    d /= 10;
    e++;
  }
  *digits = d;
  *e10 = e;
}

static const char two_digits[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536"
    "37383940414243444546474849505152535455565758596061626364656667686970717273"
    "7475767778798081828384858687888990919293949596979899";

/* The nine digits of d (< 10^9) into dig[0..9). */
static void nine_out(char *dig, uint32_t d) {
  dig[8] = (char)('0' + d % 10);
  d /= 10;
  for (int i = 6; i >= 0; i -= 2) {
    memcpy(dig + i, two_digits + 2 * (d % 100), 2);
    d /= 100;
  }
}

/* Writes x as adb__json_num9 does at o (room for 32 bytes); returns the
 * end. */
static char *num9_put(char *o, double x) {
  double ax = fabs(x);
  if (!isfinite(x)) {
    memcpy(o, "null", 4);
    return o + 4;
  }
  if (ax == 0) {
    *o = '0';
    return o + 1;
  }
  if (ax < 1e-6 || ax >= 1e9) return o + snprintf(o, 32, "%.9g", x);
  uint64_t d;
  int e;
  nine_digits(ax, &d, &e);
  char dig[9];
  nine_out(dig, (uint32_t)d);
  int nd = 9;
  while (nd > 1 && dig[nd - 1] == '0')
    nd--;
  if (x < 0) *o++ = '-';
  if (e < 0) {
    *o++ = '0';
    *o++ = '.';
    for (int i = -1; i > e; i--)
      *o++ = '0';
    memcpy(o, dig, (size_t)nd);
    return o + nd;
  }
  for (int i = 0; i <= e; i++)
    *o++ = i < nd ? dig[i] : '0';
  if (nd > e + 1) {
    *o++ = '.';
    memcpy(o, dig + e + 1, (size_t)(nd - e - 1));
    o += nd - e - 1;
  }
  return o;
}

void adb__json_num9(adb__buf *b, double x) {
  if (adb__buf_reserve(b, 32) != ADB_OK) return;
  b->len = (size_t)(num9_put(b->p + b->len, x) - b->p);
  b->p[b->len] = '\0';
}

static int dump_cb(const char *s, size_t n, void *ud) {
  adb__buf *b = ud;
  adb__buf_append(b, s, n);
  return b->oom ? -1 : 0;
}

void adb__json_value(adb__buf *b, const json_t *v) {
  if (!v) {
    adb__buf_append(b, "null", 4);
    return;
  }
  json_dump_callback(v, dump_cb, b,
                     JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
}

/* ------------------------------------------------------------- parse */

json_t *adb__json_parse(const char *s, size_t n, char *err, size_t errlen) {
  json_error_t je;
  json_t *v = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
  if (!v) {
    snprintf(err, errlen, "%s (at byte %d)", je.text, je.position);
    return NULL;
  }
  if (!json_is_object(v)) {
    snprintf(err, errlen, "the body must be a JSON object");
    json_decref(v);
    return NULL;
  }
  return v;
}

int adb__jlex_peek(adb__jlex *l) {
  while (l->p < l->end) {
    /* unsigned: a byte 0xff is not the end (-1); found by fuzz_codecs */
    unsigned char c = (unsigned char)*l->p;
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return c;
    l->p++;
  }
  return -1;
}

int adb__jlex_eat(adb__jlex *l, char c) {
  if (adb__jlex_peek(l) != c) return 0;
  l->p++;
  return 1;
}

int adb__jlex_string(adb__jlex *l, const char **s, size_t *n) {
  if (!adb__jlex_eat(l, '"')) return 0;
  const char *start = l->p;
  while (l->p < l->end) {
    unsigned char c = (unsigned char)*l->p;
    if (c == '"') {
      *s = start;
      *n = (size_t)(l->p - start);
      l->p++;
      return 1;
    }
    if (c < 0x20 || c > 0x7e || c == '\\') return 0;
    l->p++;
  }
  return 0;
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* Validates the JSON number grammar at l->p; collects up to 19 significant
 * digits into *mant with the decimal exponent adjustment in *exp10. */
static int scan_number(adb__jlex *l, uint64_t *mant, int *exp10, int *ndig,
                       int *is_int, int *neg) {
  const char *p = l->p, *e = l->end;
  uint64_t m = 0;
  int nd = 0, adj = 0, intlit = 1;
  *neg = p < e && *p == '-';
  if (*neg) p++;
  if (p >= e || !is_digit(*p)) return 0;
  if (*p == '0') {
    p++;
  } else {
    for (; p < e && is_digit(*p); p++) {
      if (nd < 19)
        m = m * 10 + (uint64_t)(*p - '0'), nd++;
      else
        adj++, nd++;
    }
  }
  if (p < e && *p == '.') {
    intlit = 0;
    p++;
    if (p >= e || !is_digit(*p)) return 0;
    for (; p < e && is_digit(*p); p++) {
      if (m == 0 && *p == '0') { /* leading zeros are not significant */
        adj--;
        continue;
      }
      if (nd < 19)
        m = m * 10 + (uint64_t)(*p - '0'), nd++, adj--;
      else
        nd++;
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    intlit = 0;
    p++;
    int eneg = 0, ev = 0;
    if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    if (p >= e || !is_digit(*p)) return 0;
    for (; p < e && is_digit(*p); p++)
      if (ev < 100000) ev = ev * 10 + (*p - '0');
    adj += eneg ? -ev : ev;
  }
  *mant = m;
  *exp10 = adj;
  *ndig = nd;
  *is_int = intlit;
  l->p = p;
  return 1;
}

int adb__jlex_number(adb__jlex *l, double *d, int *is_int, int64_t *ival) {
  if (adb__jlex_peek(l) < 0) return 0;
  const char *start = l->p;
  uint64_t m;
  int e10, nd, neg;
  if (!scan_number(l, &m, &e10, &nd, is_int, &neg)) return 0;
  if (*is_int && nd > 18) return 0; /* let jansson judge big integers */
  if (*is_int) *ival = neg ? -(int64_t)m : (int64_t)m;
  if (nd <= 19 && m < ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
    double v = (double)m;
    v = e10 < 0 ? v / pow10_tab[-e10] : v * pow10_tab[e10];
    *d = neg ? -v : v;
    return 1;
  }
  /* The token is valid JSON, which strtod reads the same way. */
  char tmp[64];
  size_t len = (size_t)(l->p - start);
  if (len >= sizeof tmp) return 0;
  memcpy(tmp, start, len);
  tmp[len] = '\0';
  errno = 0;
  double v = strtod(tmp, NULL);
  if (!isfinite(v) || errno == ERANGE) return 0;
  *d = v;
  return 1;
}

int adb__jlex_floats(adb__jlex *l, float *out, int cap, int *n) {
  if (!adb__jlex_eat(l, '[')) return 0;
  int k = 0;
  if (adb__jlex_eat(l, ']')) {
    *n = 0;
    return 1;
  }
  for (;;) {
    double d;
    int is_int;
    int64_t iv;
    if (k >= cap || !adb__jlex_number(l, &d, &is_int, &iv)) return 0;
    if (fabs(d) > FLT_MAX) return 0;
    out[k++] = (float)d;
    if (adb__jlex_eat(l, ']')) break;
    if (!adb__jlex_eat(l, ',')) return 0;
  }
  *n = k;
  return 1;
}

/* ------------------------------------------------------ float arrays */

int adb__json_floats(const json_t *arr, float *out, int cap, int *n, char *err,
                     size_t errlen) {
  if (!json_is_array(arr)) {
    snprintf(err, errlen, "expected an array of numbers");
    return ADB_EINVAL;
  }
  size_t len = json_array_size(arr);
  if (len > (size_t)cap) {
    snprintf(err, errlen, "at most %d values, not %zu", cap, len);
    return ADB_EINVAL;
  }
  for (size_t i = 0; i < len; i++) {
    const json_t *v = json_array_get(arr, i);
    if (!json_is_number(v)) {
      snprintf(err, errlen, "element %zu is not a number", i);
      return ADB_EINVAL;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || fabs(d) > FLT_MAX) {
      snprintf(err, errlen, "element %zu is not a finite float32", i);
      return ADB_EINVAL;
    }
    out[i] = (float)d;
  }
  *n = (int)len;
  return ADB_OK;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void adb__b64_encode(adb__buf *b, const unsigned char *p, size_t n) {
  if (adb__buf_reserve(b, (n + 2) / 3 * 4) != ADB_OK) return;
  char *o = b->p + b->len;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = b64_alphabet[v >> 18];
    *o++ = b64_alphabet[(v >> 12) & 63];
    *o++ = b64_alphabet[(v >> 6) & 63];
    *o++ = b64_alphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    *o++ = b64_alphabet[v >> 18];
    *o++ = b64_alphabet[(v >> 12) & 63];
    *o++ = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
  b->len = (size_t)(o - b->p);
  b->p[b->len] = '\0';
}

static int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

long adb__b64_decode(const char *s, size_t n, unsigned char *out) {
  if (n % 4 == 0 && n >= 2 && s[n - 1] == '=') n -= s[n - 2] == '=' ? 2 : 1;
  if (n % 4 == 1) return -1;
  long k = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64_val((unsigned char)s[i]);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[k++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return -1; /* non-canonical trailing bits */
  return k;
}

int adb__b64_floats(const char *s, size_t n, float *out, int cap, int *dim,
                    char *err, size_t errlen) {
  size_t m = n; /* without padding: m * 3 / 4 bytes when valid */
  while (m > 0 && n - m < 2 && s[m - 1] == '=')
    m--;
  if (m / 4 * 3 + m % 4 * 3 / 4 > (size_t)cap * 4) {
    snprintf(err, errlen, "more than %d float32 values", cap);
    return ADB_EINVAL;
  }
  long k = adb__b64_decode(s, n, (unsigned char *)out);
  if (k < 0) {
    snprintf(err, errlen, "invalid base64");
    return ADB_EINVAL;
  }
  if (k % 4 != 0 || k / 4 > cap) {
    snprintf(err, errlen,
             "%ld bytes is not a whole number of float32 "
             "values (at most %d)",
             k, cap);
    return ADB_EINVAL;
  }
  const unsigned char *p = (const unsigned char *)out;
  for (long i = 0; i < k / 4; i++) {
    uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                 (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
    float f;
    memcpy(&f, &u, 4);
    if (!isfinite(f)) {
      snprintf(err, errlen, "value %ld is not finite", i);
      return ADB_EINVAL;
    }
    out[i] = f;
  }
  *dim = (int)(k / 4);
  return ADB_OK;
}

void adb__b64_put_floats(adb__buf *b, const float *v, int n) {
  unsigned char tmp[192];
  adb__buf_putc(b, '"');
  /* 48 floats (192 bytes, a multiple of 3) per round keep the encoding
   * free of padding between rounds. */
  for (int i = 0; i < n; i += 48) {
    int m = n - i < 48 ? n - i : 48;
    for (int j = 0; j < m; j++) {
      uint32_t u;
      memcpy(&u, &v[i + j], 4);
      tmp[4 * j] = (unsigned char)u;
      tmp[4 * j + 1] = (unsigned char)(u >> 8);
      tmp[4 * j + 2] = (unsigned char)(u >> 16);
      tmp[4 * j + 3] = (unsigned char)(u >> 24);
    }
    adb__b64_encode(b, tmp, (size_t)m * 4);
  }
  adb__buf_putc(b, '"');
}

/* ------------------------------------------------------------- arena */

typedef struct arena_block {
  struct arena_block *next;
} arena_block;

struct adb__arena {
  char *base;
  size_t used, cap;
  arena_block *extra; /* oversize or overflow blocks, freed on reset */
};

adb__arena *adb__arena_new(size_t chunk) {
  adb__arena *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->base = malloc(chunk);
  if (!a->base) {
    free(a);
    return NULL;
  }
  a->cap = chunk;
  return a;
}

void *adb__arena_alloc(adb__arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n <= a->cap - a->used) {
    void *p = a->base + a->used;
    a->used += n;
    return p;
  }
  arena_block *b = malloc(sizeof(arena_block) + 16 + n);
  if (!b) return NULL;
  b->next = a->extra;
  a->extra = b;
  return (char *)b + 16;
}

void adb__arena_reset(adb__arena *a) {
  while (a->extra) {
    arena_block *b = a->extra;
    a->extra = b->next;
    free(b);
  }
  a->used = 0;
}

void adb__arena_free(adb__arena *a) {
  if (!a) return;
  adb__arena_reset(a);
  free(a->base);
  free(a);
}

void adb__json_floats9(adb__buf *b, const float *v, int n) {
  if (n < 0) n = 0;
  if (adb__buf_reserve(b, 33 * (size_t)n + 2) != ADB_OK) return;
  char *o = b->p + b->len;
  *o++ = '[';
  for (int i = 0; i < n; i++) {
    if (i) *o++ = ',';
    o = num9_put(o, v[i]);
  }
  *o++ = ']';
  b->len = (size_t)(o - b->p);
  b->p[b->len] = '\0';
}
