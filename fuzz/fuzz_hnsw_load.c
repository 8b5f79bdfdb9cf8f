/*
 * fuzz_hnsw_load.c — libFuzzer target: the HNSW snapshot loader
 * (adb__hnsw_load_buf in src/hnsw.c), the file a restart trusts.
 *
 * The input is a snapshot's body; the target appends a valid trailer
 * (length, CRC-32C, end marker) so that the fuzzer reaches the field and
 * graph checks instead of stopping at the checksum (the checksum itself is
 * checked once per input on the raw bytes too). A snapshot that loads
 * must answer a search, take an add and save again.
 *
 * Seeds: ADB_FUZZ_WRITE_SEEDS=DIR writes a few real snapshots' bodies to
 * DIR and exits (scripts/fuzz.sh uses it when the corpus is empty).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentdb.h"
#include "hnsw.h"

static uint32_t crc32c(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  while (n--) {
    c ^= *p++;
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
  }
  return ~c;
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void write_seeds(const char *dir) {
  int dims[] = {1, 3, 8};
  for (int s = 0; s < 3; s++) {
    adb__hnsw_config cfg = {.dim = dims[s],
                            .M = 4,
                            .metric =
                                s == 2 ? ADB__METRIC_COSINE : ADB__METRIC_L2};
    adb__hnsw *h;
    if (adb__hnsw_create(&cfg, &h)) exit(1);
    for (int i = 0; i < 20 * s; i++) {
      float v[8];
      for (int d = 0; d < dims[s]; d++)
        v[d] = (float)((i * 7 + d * 3) % 11) - 5.0f + 0.5f;
      adb__hnsw_add(h, (uint64_t)i * 977, (uint64_t)i % 3, v);
      if (i % 7 == 3) adb__hnsw_remove(h, (uint64_t)(i - 1) * 977);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/.tmp.hnsw", dir);
    if (adb__hnsw_save(h, path)) exit(1);
    adb__hnsw_destroy(h);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) exit(1);
    fclose(f);
    remove(path);
    snprintf(path, sizeof path, "%s/seed-%d", dir, s);
    f = fopen(path, "wb");
    fwrite(b, 1, (size_t)n - 16, f); /* the body: the target adds a trailer */
    fclose(f);
    free(b);
  }
  exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *dir = getenv("ADB_FUZZ_WRITE_SEEDS");
  if (dir) write_seeds(dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
  adb__hnsw *h = NULL;
  if (adb__hnsw_load_buf(data, len, &h) == ADB_OK) /* raw: rarely valid */
    adb__hnsw_destroy(h);
  uint8_t *b = malloc(len + 16);
  memcpy(b, data, len);
  put_u64(b + len, len);
  uint32_t crc = crc32c(b, len + 8);
  memcpy(b + len + 8, &crc, 4); /* little-endian host, as the writer */
  memcpy(b + len + 12, "ADBE", 4);
  int rc = adb__hnsw_load_buf(b, len + 16, &h);
  free(b);
  if (rc != ADB_OK) {
    if (h) abort();
    return 0;
  }
  adb__hnsw_config cfg;
  adb__hnsw_get_config(h, &cfg);
  float *q = calloc((size_t)cfg.dim, sizeof *q);
  q[0] = 1;
  adb__vec_hit hits[8];
  int n = 0;
  adb__hnsw_query query = {.vec = q, .k = 8};
  if (adb__hnsw_search(h, &query, hits, &n) == ADB_OK && (n < 0 || n > 8))
    abort();
  adb__hnsw_add(h, 123456789, 1, q);
  query.mode = ADB__HNSW_GRAPH;
  adb__hnsw_search(h, &query, hits, &n);
  free(q);
  adb__hnsw_destroy(h);
  return 0;
}
