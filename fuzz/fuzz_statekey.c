/*
 * fuzz_statekey.c — libFuzzer target: the state-key encoder
 * (src/statekey.c), with context keys, context pairs, an embedding and
 * SimHash bits taken from the input.
 *
 * Input: byte 0 the SimHash bits (0..64 and a few beyond), byte 1 how many
 * of the first strings are the agent's context keys; then NUL-separated
 * strings: keys, then context key/value pairs; the last 4*k bytes, when
 * the bits ask for one, an embedding. Checks, beyond the sanitizers: the
 * answer is ADB_OK with 64 lowercase hex digits or an error with "";
 * the same input gives the same key; with distinct context keys their
 * order does not matter.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agentdb.h"
#include "statekey.h"

#define MAX_STR 40

static int hex64(const char *s) {
  if (strlen(s) != ADB_STATE_KEY_LEN) return 0;
  for (int i = 0; i < ADB_STATE_KEY_LEN; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
  if (len < 2) return 0;
  int bits = data[0] % 70, nk = data[1] % (ADB_MAX_CONTEXT_KEYS + 2);
  data += 2, len -= 2;
  int dim = 0;
  float emb[16];
  if (bits && len >= 4) {
    dim = (int)((len / 4) < 16 ? len / 4 : 16) / 2;
    if (dim < 1) dim = 1;
    memcpy(emb, data + len - 4 * (size_t)dim, 4 * (size_t)dim);
    len -= 4 * (size_t)dim;
  }
  char *copy = malloc(len + 1);
  memcpy(copy, data, len);
  copy[len] = 0;
  const char *str[MAX_STR];
  int ns = 0;
  for (size_t i = 0; i <= len && ns < MAX_STR;) {
    str[ns++] = copy + i;
    i += strlen(copy + i) + 1;
  }
  if (nk > ns) nk = ns;
  char(*keys)[ADB_ID_MAX + 1] = calloc((size_t)nk + 1, ADB_ID_MAX + 1);
  for (int i = 0; i < nk; i++)
    strncpy(keys[i], str[i], ADB_ID_MAX);
  adb_kv ctx[MAX_STR / 2], rev[MAX_STR / 2];
  int nc = 0;
  for (int i = nk; i + 1 < ns; i += 2, nc++)
    ctx[nc] = (adb_kv){str[i], str[i + 1]};
  for (int i = 0; i < nc; i++)
    rev[i] = ctx[nc - 1 - i];
  char a[ADB_STATE_KEY_LEN + 1], b[ADB_STATE_KEY_LEN + 1],
      c[ADB_STATE_KEY_LEN + 1];
  int ra = adb__state_key((const char(*)[ADB_ID_MAX + 1]) keys, nk, ctx, nc,
                          dim ? emb : NULL, dim, bits, a);
  int rb = adb__state_key((const char(*)[ADB_ID_MAX + 1]) keys, nk, ctx, nc,
                          dim ? emb : NULL, dim, bits, b);
  if (ra != rb || strcmp(a, b)) abort();
  if (ra == ADB_OK ? !hex64(a) : a[0] != 0) abort();
  int distinct = 1;
  for (int i = 0; i < nc && distinct; i++)
    for (int j = i + 1; j < nc; j++)
      if (!strcmp(ctx[i].key, ctx[j].key)) distinct = 0;
  if (distinct) {
    int rc = adb__state_key((const char(*)[ADB_ID_MAX + 1]) keys, nk, rev, nc,
                            dim ? emb : NULL, dim, bits, c);
    if (rc != ra || strcmp(a, c)) abort();
  }
  free(keys);
  free(copy);
  return 0;
}
