/*
 * hash.h — fast 64-bit hashes of bytes for in-memory tables (the caches,
 * the string map, a decision's candidates). Not stable across versions:
 * never store them (adb__hash64 is the stable one).
 */
#ifndef ADB_HASH_H
#define ADB_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ADB__ID_SEED 0xbb67ae8584caa73bULL

static inline uint64_t adb__rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t adb__mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

static inline uint64_t adb__load64(const unsigned char *b) {
  uint64_t w;
  memcpy(&w, b, 8);
  return w;
}

static inline uint32_t adb__load32(const unsigned char *b) {
  uint32_t w;
  memcpy(&w, b, 4);
  return w;
}

/* The last 1..7 bytes of a string shorter than 8 bytes (with its length
 * hashed separately, overlapping loads still identify the bytes). */
static inline uint64_t adb__load_short(const unsigned char *b, size_t n) {
  if (n >= 4) return adb__load32(b) | (uint64_t)adb__load32(b + n - 4) << 32;
  return b[0] | (uint64_t)b[n >> 1] << 8 | (uint64_t)b[n - 1] << 16;
}

static inline uint64_t adb__round64(uint64_t h, uint64_t w) {
  return adb__rotl(h ^ (w * 0x9e3779b97f4a7c15ULL), 29) * 0xbf58476d1ce4e5b9ULL;
}

/* Two independent lanes over 16-byte blocks, then 8-byte words, then the
 * tail (the last 8 bytes, overlapping, or a short load), then a full
 * avalanche. Fixed-size loads only: no call to memcpy or memcmp. */
static inline uint64_t adb__hash_bytes(const void *p, size_t n, uint64_t seed) {
  const unsigned char *b = p, *end = b + n;
  uint64_t h = seed ^ (n * 0xc2b2ae3d27d4eb4fULL);
  if (n >= 16) {
    uint64_t h2 = ~seed;
    for (; end - b >= 16; b += 16) {
      h = adb__round64(h, adb__load64(b));
      h2 = adb__round64(h2, adb__load64(b + 8));
    }
    h ^= adb__rotl(h2, 31) * 0x94d049bb133111ebULL;
  }
  for (; end - b >= 8; b += 8)
    h = adb__round64(h, adb__load64(b));
  if (b < end)
    h = adb__round64(h, n >= 8 ? adb__load64(end - 8) : adb__load_short(b, n));
  return adb__mix64(h);
}

/* Hash of an action id. Ids are short (a 1..16-byte id is two loads and
 * two multiplies; the bytes are confirmed after a hash match anyway), and
 * this runs for every candidate of every decision. */
static inline uint64_t adb__hash_id(const char *id, size_t n) {
  const unsigned char *b = (const unsigned char *)id;
  uint64_t x, y;
  if (n > 16) return adb__hash_bytes(id, n, ADB__ID_SEED);
  if (n >= 8) {
    x = adb__load64(b);
    y = adb__load64(b + n - 8);
  } else if (n) {
    x = adb__load_short(b, n);
    y = 0;
  } else {
    x = y = 0;
  }
  uint64_t h = ((x ^ ADB__ID_SEED) * 0x9e3779b97f4a7c15ULL) ^
               adb__rotl((y + n) * 0xc2b2ae3d27d4eb4fULL, 32);
  h ^= h >> 32;
  h *= 0xbf58476d1ce4e5b9ULL;
  return h ^ (h >> 29);
}

/* a[0..len) == b[0..len), for short ids, without a library call. */
static inline int adb__bytes_equal(const char *a, const char *b, uint32_t len) {
  const unsigned char *x = (const unsigned char *)a;
  const unsigned char *y = (const unsigned char *)b;
  for (; len >= 8; len -= 8, x += 8, y += 8)
    if (adb__load64(x) != adb__load64(y)) return 0;
  if (len >= 4)
    return adb__load32(x) == adb__load32(y) &&
           adb__load32(x + len - 4) == adb__load32(y + len - 4);
  for (uint32_t i = 0; i < len; i++)
    if (x[i] != y[i]) return 0;
  return 1;
}

#endif
