/*
 * json.h — what the HTTP server needs around jansson: a growable output
 * buffer with a compact JSON writer, a strict little lexer for the fast
 * request paths, float-array decoding (JSON arrays and little-endian float32
 * base64), and a request-scoped scratch arena.
 *
 * Documents are parsed with jansson (adb__json_parse); the lexer only serves
 * fast paths that accept a strict subset of JSON and bail out (return 0) on
 * anything else, so that the caller falls back to jansson, which then gives
 * the precise error. A fast path therefore never changes what is accepted.
 */
#ifndef ADB_JSON_H
#define ADB_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "agentdb.h"

/* ------------------------------------------------------------ buffer */

/* A growable byte buffer; {0} is an empty buffer. p is NUL-terminated
 * whenever len > 0 or after any append. */
typedef struct adb__buf {
  char *p;
  size_t len, cap;
  int oom; /* an append failed; the content is truncated */
} adb__buf;

/* Ensures room for n more bytes (plus a NUL). ADB_OK or ADB_ENOMEM. */
int adb__buf_reserve(adb__buf *b, size_t n);
void adb__buf_append(adb__buf *b, const void *p, size_t n);
void adb__buf_puts(adb__buf *b, const char *s);
void adb__buf_putc(adb__buf *b, char c);
void adb__buf_printf(adb__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void adb__buf_free(adb__buf *b);

/* ------------------------------------------------------------ writer */

/* A JSON string literal of s (n bytes), escaped. */
void adb__json_strn(adb__buf *b, const char *s, size_t n);
void adb__json_str(adb__buf *b, const char *s);
/* The shortest decimal text that reads back as x; null when not finite. */
void adb__json_num(adb__buf *b, double x);
/* x with about 9 significant digits, fast (for scores and propensities);
 * null when not finite. */
void adb__json_num9(adb__buf *b, double x);
/* [v0,v1,...], each as adb__json_num9 prints it. */
void adb__json_floats9(adb__buf *b, const float *v, int n);
void adb__json_int(adb__buf *b, int64_t x);
/* Appends a jansson value, compact. */
void adb__json_value(adb__buf *b, const json_t *v);

/* ------------------------------------------------------------- parse */

/* Parses a whole request body as one JSON object: duplicate keys, NUL in
 * strings, non-finite numbers and nesting deeper than jansson's limit are
 * rejected. On failure returns NULL and writes a message to err. */
json_t *adb__json_parse(const char *s, size_t n, char *err, size_t errlen);

/* Strict lexer over [p, end). */
typedef struct adb__jlex {
  const char *p, *end;
} adb__jlex;

/* Skips whitespace; returns the next byte, or -1 at the end. */
int adb__jlex_peek(adb__jlex *l);
/* Consumes byte c after whitespace; 1 if it was there, else 0. */
int adb__jlex_eat(adb__jlex *l, char c);
/* A string of printable ASCII without escapes; *s points at its first byte
 * in the input. 0 when the next token is anything else. */
int adb__jlex_string(adb__jlex *l, const char **s, size_t *n);
/* A JSON number that is finite as a double. *is_int is 1 for an integer
 * literal that fits int64 (then *ival holds it). */
int adb__jlex_number(adb__jlex *l, double *d, int *is_int, int64_t *ival);
/* An array of numbers, each finite as float32, into out[0..cap). */
int adb__jlex_floats(adb__jlex *l, float *out, int cap, int *n);

/* ------------------------------------------------------ float arrays */

/* From a jansson array: every element a number, finite as float32, at most
 * cap of them. ADB_OK or ADB_EINVAL with a message in err. */
int adb__json_floats(const json_t *arr, float *out, int cap, int *n, char *err,
                     size_t errlen);

/* Base64 (RFC 4648, padding optional, no whitespace) of little-endian
 * float32 values. ADB_OK or ADB_EINVAL (bad base64, a length that is not a
 * multiple of 4 bytes, more than cap values, a value that is not finite). */
int adb__b64_floats(const char *s, size_t n, float *out, int cap, int *dim,
                    char *err, size_t errlen);
/* Appends the base64 of the little-endian float32 encoding of v. */
void adb__b64_put_floats(adb__buf *b, const float *v, int n);
/* Plain codec; decode returns the byte count or -1 when invalid. out must
 * hold (n / 4 + 1) * 3 bytes. */
void adb__b64_encode(adb__buf *b, const unsigned char *p, size_t n);
long adb__b64_decode(const char *s, size_t n, unsigned char *out);

/* ------------------------------------------------------------- arena */

/* A bump allocator reset after each request; blocks over the first chunk
 * are malloc'd and freed on reset. Memory is 16-byte aligned. */
typedef struct adb__arena adb__arena;
adb__arena *adb__arena_new(size_t chunk);
void *adb__arena_alloc(adb__arena *a, size_t n); /* NULL on OOM */
void adb__arena_reset(adb__arena *a);
void adb__arena_free(adb__arena *a);

#endif /* ADB_JSON_H */
