/*
 * statekey.c — the state key: which posterior a context maps to. A SHA-256
 * over a canonical byte encoding of the agent's chosen context keys and,
 * optionally, a SimHash bucket of the embedding (the encoding is specified
 * in statekey.h; anything that changes its bytes is a new "adb-state-vN").
 *
 * It runs on every decision, so it allocates nothing in the common case:
 * the encoding streams through a small stack buffer into a SHA-256 context
 * that each thread keeps (freed at thread exit), and the SimHash hyperplanes
 * are a constant bit table built once. Hyperplane i, entry j is -1 when bit
 * (j mod 64) of the (j / 64)-th output of xoshiro256** seeded (through
 * adb__rng_seed) with 0x5EED0000 + i is set, else +1; the table stores, for
 * each entry j, the signs of all 64 planes in one word, so the dot products
 * of all planes advance together, each still summed in double in index
 * order (the sums are exact sums of +-x, identical on every machine).
 */
#include "statekey.h"

#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "bandit.h"
#include "hash.h"
#include "util.h"

#define STATE_MAGIC "adb-state-v1"
#define SIMHASH_TAG "simhash"
#define SIMHASH_SEED 0x5EED0000ULL

/* ------------------------------------------------------------ SimHash */

/* Bit i of plane_signs[j]: entry j of hyperplane i is -1. sign_tab[b]
 * holds the eight entries +-1.0 that a byte b of such signs stands for,
 * as four pairs: x * (+-1.0) is exactly +-x. */
typedef double v2d __attribute__((vector_size(16)));
static uint64_t plane_signs[ADB_MAX_EMBEDDING_DIM];
static v2d sign_tab[256][4];
static pthread_once_t planes_once = PTHREAD_ONCE_INIT;

static void planes_init(void) {
  for (int b = 0; b < 256; b++)
    for (int k = 0; k < 4; k++) {
      v2d v = {(b >> (2 * k)) & 1 ? -1.0 : 1.0,
               (b >> (2 * k + 1)) & 1 ? -1.0 : 1.0};
      sign_tab[b][k] = v;
    }
  for (int i = 0; i < 64; i++) {
    adb__rng r;
    adb__rng_seed(&r, SIMHASH_SEED + (uint64_t)i);
    for (int w = 0; w < ADB_MAX_EMBEDDING_DIM / 64; w++) {
      uint64_t v = adb__rng_next(&r);
      for (int b = 0; b < 64; b++)
        plane_signs[w * 64 + b] |= ((v >> b) & 1) << i;
    }
  }
}

/* The bucket of emb; ADB_EINVAL when a value is not finite (one NaN or
 * infinity makes every sum non-finite, so checking one sum suffices). */
static int simhash_core(const float *emb, int dim, int bits, uint64_t *out) {
  uint64_t h = 0;
  pthread_once(&planes_once, planes_init);
  /* Eight planes at a time, their sums in registers, each plane's still
   * added in index order. */
  for (int i0 = 0; i0 < bits; i0 += 8) {
    v2d s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0;
    for (int j = 0; j < dim; j++) {
      v2d x = {(double)emb[j], (double)emb[j]};
      const v2d *t = sign_tab[(plane_signs[j] >> i0) & 0xFF];
      s0 += x * t[0];
      s1 += x * t[1];
      s2 += x * t[2];
      s3 += x * t[3];
    }
    double s[8] = {s0[0], s0[1], s1[0], s1[1], s2[0], s2[1], s3[0], s3[1]};
    if (!isfinite(s[0])) return ADB_EINVAL;
    for (int k = 0; k < 8 && i0 + k < bits; k++)
      if (s[k] >= 0.0) h |= (uint64_t)1 << (i0 + k);
  }
  *out = h;
  return ADB_OK;
}

static int simhash_args_ok(const float *emb, int dim, int bits) {
  return emb && dim > 0 && dim <= ADB_MAX_EMBEDDING_DIM && bits >= 1 &&
         bits <= 64;
}

uint64_t adb__simhash(const float *emb, int dim, int bits) {
  uint64_t h = 0;
  if (!simhash_args_ok(emb, dim, bits)) return 0;
  return simhash_core(emb, dim, bits, &h) == ADB_OK ? h : 0;
}

/* ------------------------------------------------------------- SHA-256 */

static pthread_once_t sha_once = PTHREAD_ONCE_INIT;
static pthread_key_t sha_key;
static int sha_key_ok;
static const EVP_MD *sha_md;

static void sha_ctx_free(void *p) {
  EVP_MD_CTX_free(p);
}

static void sha_init(void) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  /* An explicit fetch once; EVP_sha256() would be looked up per call. */
  sha_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#endif
  if (!sha_md) sha_md = EVP_sha256();
  sha_key_ok = pthread_key_create(&sha_key, sha_ctx_free) == 0;
}

/* This thread's digest context, or a fresh one that *owned says the caller
 * must free. NULL when out of memory. */
static EVP_MD_CTX *sha_ctx(int *owned) {
  pthread_once(&sha_once, sha_init);
  *owned = 0;
  EVP_MD_CTX *c = sha_key_ok ? pthread_getspecific(sha_key) : NULL;
  if (c) return c;
  c = EVP_MD_CTX_new();
  if (c && !(sha_key_ok && pthread_setspecific(sha_key, c) == 0)) *owned = 1;
  return c;
}

static void hex_lower(const unsigned char *md, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 15];
  }
  out[64] = '\0';
}

/* The encoding streams through buf into the digest. A lazy encoding (the
 * state key's) starts the digest only when buf overflows: an input that
 * fits is digested at the end, through the memo below. */
typedef struct enc {
  EVP_MD_CTX *ctx;
  int owned, err;
  size_t n;
  unsigned char buf[512];
} enc;

static int enc_start(enc *e) {
  e->ctx = sha_ctx(&e->owned);
  if (!e->ctx) return ADB_ENOMEM;
  if (EVP_DigestInit_ex(e->ctx, sha_md, NULL) != 1) e->err = 1;
  return ADB_OK;
}

static int enc_begin(enc *e) {
  e->n = 0;
  e->err = 0;
  return enc_start(e);
}

static void enc_begin_lazy(enc *e) {
  e->n = 0;
  e->err = e->owned = 0;
  e->ctx = NULL;
}

/* Feeds buf to the digest, starting the digest first if it is lazy. */
static void enc_flush(enc *e) {
  if (!e->ctx && !e->err && enc_start(e) != ADB_OK) e->err = 1;
  if (e->n && !e->err && EVP_DigestUpdate(e->ctx, e->buf, e->n) != 1)
    e->err = 1;
  e->n = 0;
}

/* The digests of this thread's last few short state-key encodings: a
 * service sees the same few contexts (dayparts, devices) over and over,
 * and one SHA-256 through OpenSSL costs more than the rest of the key.
 * Direct-mapped by a hash of the bytes, confirmed by comparing them. */
#define MEMO_SLOTS 8
#define MEMO_MAX 256
typedef struct memo_slot {
  size_t n;
  unsigned char in[MEMO_MAX];
  char hex[65];
} memo_slot;
static _Thread_local memo_slot memo[MEMO_SLOTS];

static memo_slot *memo_find(const unsigned char *in, size_t n, int *hit) {
  memo_slot *m = &memo[adb__hash_bytes(in, n, 0) % MEMO_SLOTS];
  *hit = m->n == n && !memcmp(m->in, in, n);
  return m;
}

static void enc_put(enc *e, const void *p, size_t len) {
  if (e->n + len > sizeof e->buf) {
    enc_flush(e);
    if (len > sizeof e->buf) {
      if (!e->err && EVP_DigestUpdate(e->ctx, p, len) != 1) e->err = 1;
      return;
    }
  }
  memcpy(e->buf + e->n, p, len);
  e->n += len;
}

static void enc_u32(enc *e, uint32_t v) {
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 8), (unsigned char)v};
  enc_put(e, b, 4);
}

static void enc_u64(enc *e, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(v >> (56 - 8 * i));
  enc_put(e, b, 8);
}

/* Finishes the digest into out (64 hex chars and a NUL). */
static int enc_end(enc *e, char *out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  memo_slot *m = NULL;
  if (!e->ctx && e->n > 0 && e->n <= MEMO_MAX) { /* lazy, all in buf */
    int hit;
    m = memo_find(e->buf, e->n, &hit);
    if (hit) {
      memcpy(out, m->hex, sizeof m->hex);
      return ADB_OK;
    }
    memcpy(m->in, e->buf, e->n);
    m->n = 0; /* not valid until the digest is in */
  }
  size_t n = e->n;
  enc_flush(e);
  if (!e->err && (EVP_DigestFinal_ex(e->ctx, md, &len) != 1 || len != 32))
    e->err = 1;
  if (e->owned) EVP_MD_CTX_free(e->ctx);
  if (e->err) return ADB_ENOMEM; /* OpenSSL fails only for want of memory */
  hex_lower(md, out);
  if (m) {
    memcpy(m->hex, out, sizeof m->hex);
    m->n = n;
  }
  return ADB_OK;
}

void adb__sha256_hex(const void *data, size_t len, char out[65]) {
  enc e;
  out[0] = '\0';
  if (enc_begin(&e) != ADB_OK) return;
  enc_put(&e, data, len);
  if (enc_end(&e, out) != ADB_OK) out[0] = '\0';
}

/* ----------------------------------------------------------- state key */

/* Insertion sort of at most ADB_MAX_CONTEXT_KEYS pointers, byte-wise
 * (strcmp compares as unsigned char). */
static void sort_keys(const char **k, int n) {
  for (int i = 1; i < n; i++) {
    const char *v = k[i];
    int j = i;
    while (j > 0 && strcmp(k[j - 1], v) > 0) {
      k[j] = k[j - 1];
      j--;
    }
    k[j] = v;
  }
}

/* The first value of key in ctx, or NULL when absent. */
static const char *ctx_lookup(const adb_kv *ctx, int n, const char *key) {
  for (int i = 0; i < n; i++)
    if (strcmp(ctx[i].key, key) == 0) return ctx[i].value;
  return NULL;
}

static int args_ok(const char (*keys)[ADB_ID_MAX + 1], int n_keys,
                   const adb_kv *ctx, int n_ctx, int simhash_bits) {
  if (n_keys < 0 || n_keys > ADB_MAX_CONTEXT_KEYS || (n_keys && !keys))
    return 0;
  if (n_ctx < 0 || (n_ctx && !ctx) || simhash_bits < 0 || simhash_bits > 64)
    return 0;
  for (int i = 0; i < n_keys; i++)
    if (memchr(keys[i], '\0', ADB_ID_MAX + 1) == NULL) return 0;
  for (int i = 0; i < n_ctx; i++)
    if (!ctx[i].key || !ctx[i].value) return 0;
  return 1;
}

static void encode_pair(enc *e, const char *key, const char *value) {
  size_t kl = strlen(key);
  enc_u32(e, (uint32_t)kl);
  enc_put(e, key, kl);
  if (!value) {
    enc_u32(e, 0xFFFFFFFFu);
    return;
  }
  size_t vl = strlen(value);
  enc_u32(e, (uint32_t)vl);
  enc_put(e, value, vl);
}

int adb__state_key(const char (*keys)[ADB_ID_MAX + 1], int n_keys,
                   const adb_kv *ctx, int n_ctx, const float *emb, int dim,
                   int simhash_bits, char out[ADB_STATE_KEY_LEN + 1]) {
  if (!out) return ADB_EINVAL;
  out[0] = '\0';
  if (!args_ok(keys, n_keys, ctx, n_ctx, simhash_bits)) return ADB_EINVAL;
  uint64_t bucket = 0;
  if (simhash_bits > 0) {
    if (!simhash_args_ok(emb, dim, simhash_bits)) return ADB_EINVAL;
    if (simhash_core(emb, dim, simhash_bits, &bucket) != ADB_OK)
      return ADB_EINVAL;
  }
  const char *sorted[ADB_MAX_CONTEXT_KEYS];
  for (int i = 0; i < n_keys; i++)
    sorted[i] = keys[i];
  sort_keys(sorted, n_keys);
  for (int i = 0; i < n_ctx; i++) /* a value must fit its u32 length */
    if (strlen(ctx[i].value) >= 0xFFFFFFFFu) return ADB_EINVAL;
  enc e;
  enc_begin_lazy(&e);
  enc_put(&e, STATE_MAGIC, sizeof STATE_MAGIC - 1);
  for (int i = 0; i < n_keys; i++)
    encode_pair(&e, sorted[i], ctx_lookup(ctx, n_ctx, sorted[i]));
  if (simhash_bits > 0) {
    unsigned char b = (unsigned char)simhash_bits;
    enc_put(&e, SIMHASH_TAG, sizeof SIMHASH_TAG - 1);
    enc_put(&e, &b, 1);
    enc_u64(&e, bucket);
  }
  return enc_end(&e, out);
}
