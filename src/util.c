/*
 * util.c — clocks, hashing, string buffers and the string hash map.
 */
#include "util.h"
#include "hash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentdb.h"

int64_t adb__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t adb__mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t adb__hash64(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

int adb__url_has_scheme(const char *url, const char *scheme) {
  size_t n = strlen(scheme);
  return url && strncmp(url, scheme, n) == 0 && strncmp(url + n, "://", 3) == 0;
}

static int sbuf_grow(adb__sbuf *b, size_t extra) {
  if (b->oom) return -1;
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

void adb__sbuf_add(adb__sbuf *b, const char *s, size_t n) {
  if (sbuf_grow(b, n)) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

void adb__sbuf_puts(adb__sbuf *b, const char *s) {
  adb__sbuf_add(b, s, strlen(s));
}

void adb__sbuf_printf(adb__sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || sbuf_grow(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void adb__sbuf_json_str(adb__sbuf *b, const char *s) {
  adb__sbuf_add(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
    case '"':
      adb__sbuf_add(b, "\\\"", 2);
      break;
    case '\\':
      adb__sbuf_add(b, "\\\\", 2);
      break;
    case '\n':
      adb__sbuf_add(b, "\\n", 2);
      break;
    case '\r':
      adb__sbuf_add(b, "\\r", 2);
      break;
    case '\t':
      adb__sbuf_add(b, "\\t", 2);
      break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        adb__sbuf_add(b, esc, 6);
      } else {
        adb__sbuf_add(b, (const char *)p, 1);
      }
    }
  }
  adb__sbuf_add(b, "\"", 1);
}

char *adb__sbuf_take(adb__sbuf *b) {
  char *p = b->oom ? NULL : b->p;
  if (b->oom) free(b->p);
  if (p == NULL && !b->oom) p = calloc(1, 1);
  b->p = NULL;
  b->len = b->cap = 0;
  b->oom = 0;
  return p;
}

static struct adb__strmap_slot *find_slot(const adb__strmap *m, const char *key,
                                          size_t len, uint64_t h) {
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    struct adb__strmap_slot *s = &m->slots[i];
    if (!s->key || (s->h == h && s->len == len &&
                    adb__bytes_equal(s->key, key, (uint32_t)len)))
      return s;
  }
}

void *adb__strmap_get_h(const adb__strmap *m, const char *key, size_t len,
                        uint64_t h) {
  if (!m->cap) return NULL;
  struct adb__strmap_slot *s = find_slot(m, key, len, h);
  return s->key ? s->val : NULL;
}

void *adb__strmap_get(const adb__strmap *m, const char *key) {
  size_t len = strlen(key);
  return adb__strmap_get_h(m, key, len, adb__hash_id(key, len));
}

static int strmap_resize(adb__strmap *m, size_t cap) {
  struct adb__strmap_slot *old = m->slots;
  size_t oldcap = m->cap;
  m->slots = calloc(cap, sizeof *m->slots);
  if (!m->slots) {
    m->slots = old;
    return ADB_ENOMEM;
  }
  m->cap = cap;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].key) *find_slot(m, old[i].key, old[i].len, old[i].h) = old[i];
  free(old);
  return ADB_OK;
}

int adb__strmap_put(adb__strmap *m, const char *key, void *val) {
  if ((m->len + 1) * 2 > m->cap &&
      strmap_resize(m, m->cap ? m->cap * 2 : 16) != ADB_OK)
    return ADB_ENOMEM;
  size_t len = strlen(key);
  uint64_t h = adb__hash_id(key, len);
  struct adb__strmap_slot *s = find_slot(m, key, len, h);
  if (!s->key) {
    if (!(s->key = strdup(key))) return ADB_ENOMEM;
    s->h = h;
    s->len = len;
    m->len++;
  }
  s->val = val;
  return ADB_OK;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
void *adb__strmap_del(adb__strmap *m, const char *key) {
  if (!m->cap) return NULL;
  size_t len = strlen(key);
  struct adb__strmap_slot *s = find_slot(m, key, len, adb__hash_id(key, len));
  if (!s->key) return NULL;
  void *val = s->val;
  free(s->key);
  size_t mask = m->cap - 1, i = (size_t)(s - m->slots);
  for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
    size_t home = m->slots[j].h & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = NULL;
  m->len--;
  return val;
}

void adb__strmap_free(adb__strmap *m, void (*free_val)(void *)) {
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->slots[i].key) continue;
    free(m->slots[i].key);
    if (free_val) free_val(m->slots[i].val);
  }
  free(m->slots);
  memset(m, 0, sizeof *m);
}

int adb__utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (p && *p) {
    unsigned c = *p;
    int n = c < 0x80                 ? 0
            : c >= 0xC2 && c <= 0xDF ? 1
            : c >= 0xE0 && c <= 0xEF ? 2
            : c >= 0xF0 && c <= 0xF4 ? 3
                                     : -1;
    if (n < 0) return 0;
    /* The second byte's range excludes overlongs, surrogates and values
     * above U+10FFFF. */
    unsigned lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    p++;
    for (int i = 0; i < n; i++, p++) {
      if (*p < lo || *p > hi) return 0;
      lo = 0x80;
      hi = 0xBF;
    }
  }
  return 1;
}
