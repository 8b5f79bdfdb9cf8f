/*
 * util.h — small shared helpers: clocks, 64-bit string hashing, a growable
 * string buffer with JSON escaping, and a string-keyed hash map.
 */
#ifndef ADB_UTIL_H
#define ADB_UTIL_H

#include <stddef.h>
#include <stdint.h>

int64_t adb__now_ms(void);  /* wall clock, ms since the epoch */
int64_t adb__mono_ns(void); /* monotonic clock, ns */
uint64_t adb__hash64(const char *s, size_t len); /* FNV-1a, then mixed */

/* 1 when url is "scheme://...". */
int adb__url_has_scheme(const char *url, const char *scheme);

/* 1 when the NUL-terminated s is well-formed UTF-8 (RFC 3629: shortest
 * form, no surrogates, at most U+10FFFF), as PostgreSQL requires of text;
 * NULL is valid (absent). */
int adb__utf8_valid(const char *s);

/* Growable NUL-terminated buffer. On OOM `oom` is set and appends stop. */
typedef struct adb__sbuf {
  char *p;
  size_t len, cap;
  int oom;
} adb__sbuf;

void adb__sbuf_add(adb__sbuf *b, const char *s, size_t n);
void adb__sbuf_puts(adb__sbuf *b, const char *s);
void adb__sbuf_printf(adb__sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void adb__sbuf_json_str(adb__sbuf *b, const char *s); /* quoted, escaped */
/* Takes the string out (caller frees); NULL after OOM. */
char *adb__sbuf_take(adb__sbuf *b);

/* String-keyed hash map (open addressing); keys are copied. */
typedef struct adb__strmap {
  size_t cap, len;
  struct adb__strmap_slot {
    uint64_t h;
    size_t len; /* of key */
    char *key;
    void *val;
  } * slots;
} adb__strmap;

void *adb__strmap_get(const adb__strmap *m, const char *key);
/* The same, with len = strlen(key) and h = adb__hash_id(key, len) known. */
void *adb__strmap_get_h(const adb__strmap *m, const char *key, size_t len,
                        uint64_t h);
/* Returns ADB_OK or ADB_ENOMEM; replaces an existing value. */
int adb__strmap_put(adb__strmap *m, const char *key, void *val);
/* Removes and returns the value, or NULL. */
void *adb__strmap_del(adb__strmap *m, const char *key);
/* Frees the map, calling free_val on each value (may be NULL). */
void adb__strmap_free(adb__strmap *m, void (*free_val)(void *));

#endif
