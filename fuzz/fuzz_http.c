/*
 * fuzz_http.c — libFuzzer target: the HTTP request head parser and the
 * incremental chunked-body decoder (src/http.c).
 *
 * Input: byte 0 picks how the rest is cut into reads for the decoder; the
 * rest is a request head and whatever follows it. Checks, beyond the
 * sanitizers: the parser's result is in its documented range and its
 * pointers stay inside the input; the chunked decoder gives the same
 * answer and the same decoded bytes whether it is fed everything at once
 * or in pieces (the server feeds it read by read).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define MAX_BODY 4096

static void inside(const char *p, size_t n, const uint8_t *buf, size_t len) {
  if (p && ((const uint8_t *)p < buf || (const uint8_t *)p + n > buf + len))
    abort();
}

static void check_head(const uint8_t *data, size_t len) {
  adb__http_req r;
  const char *why = NULL;
  int rc = adb__http_parse_head((const char *)data, len, 1024, &r, &why);
  if (!(rc == 0 || rc == -400 || rc == -431 || rc == -501 || rc == -505 ||
        (rc > 0 && (size_t)rc <= len && rc <= 1024)))
    abort();
  if (rc < 0 && (!why || !*why)) abort();
  if (rc <= 0) return;
  inside(r.path, r.path_len, data, len);
  inside(r.query, r.query_len, data, len);
  inside(r.authorization, r.authorization_len, data, len);
  inside(r.content_type, r.content_type_len, data, len);
  if (r.chunked && r.content_length >= 0) abort();
}

/* Feeds in[0..n) in pieces of `step` bytes (the server's reads); returns
 * the decoder's last answer and the bytes taken. */
static int feed(const char *in, size_t n, size_t step, char *out,
                adb__http_chunker *k, size_t *taken) {
  size_t off = 0, used = 0;
  int rc = 0;
  while (off < n && rc == 0) {
    size_t m = n - off < step ? n - off : step;
    rc = adb__http_chunk_feed(k, in + off, m, out, MAX_BODY, &used);
    off += used;
  }
  *taken = off;
  return rc;
}

static void check_chunks(const uint8_t *data, size_t len, size_t step) {
  char *a = malloc(len + 1), *b = malloc(len + 1);
  if (!a || !b) abort();
  adb__http_chunker ka = {0}, kb = {0};
  size_t ta, tb;
  int ra = feed((const char *)data, len, len ? len : 1, a, &ka, &ta);
  int rb = feed((const char *)data, len, step, b, &kb, &tb);
  if (ra != rb || ka.decoded != kb.decoded) abort();
  if (ra == 1 && (ta != tb || memcmp(a, b, ka.decoded) != 0)) abort();
  if (ka.decoded > MAX_BODY || ka.decoded > len) abort();
  /* The one-shot form agrees, and decodes in place as the server does. */
  size_t dec = 0;
  long enc = adb__http_chunked((const char *)data, len, MAX_BODY, NULL, &dec);
  if ((enc > 0) != (ra == 1) || (enc < 0 && enc != ra)) abort();
  if (enc > 0) {
    memcpy(b, data, len);
    if (adb__http_chunked(b, (size_t)enc, MAX_BODY, b, &dec) != enc ||
        dec != ka.decoded || memcmp(a, b, dec) != 0)
      abort();
  }
  free(a);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
  if (len < 1) return 0;
  size_t step = (size_t)(data[0] % 17) + 1;
  data++, len--;
  check_head(data, len);
  adb__http_req r;
  const char *why;
  int h = adb__http_parse_head((const char *)data, len, 1024, &r, &why);
  if (h > 0 && r.chunked)
    check_chunks(data + h, len - (size_t)h, step);
  else
    check_chunks(data, len, step);
  return 0;
}
