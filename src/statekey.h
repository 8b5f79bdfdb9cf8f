/*
 * statekey.h — the state key: which posterior a context maps to.
 *
 * key = hex(SHA-256(encoding)), where encoding is, in bytes:
 *   "adb-state-v1"
 *   for each configured context key, in byte-wise sorted order:
 *     u32be len(key), key, then u32be len(value), value
 *     (a key absent from the context is written with len 0xFFFFFFFF and no
 *      value, so "absent" and "empty" differ)
 *   if simhash_bits > 0: "simhash", u8 bits, u64be bucket
 * The SimHash bucket has bit i set when the embedding's dot product with
 * hyperplane i is >= 0; hyperplane i has entries +1/-1 drawn from
 * xoshiro256** seeded with (0x5EED0000 + i), summed in double in index
 * order, so every machine computes the same bucket.
 */
#ifndef ADB_STATEKEY_H
#define ADB_STATEKEY_H

#include <stdint.h>

#include "agentdb.h"

/* Writes the 64-char hex key and its NUL into out. Context keys not in
 * `keys` are ignored; a context key given twice takes its first value.
 * Returns ADB_OK or ADB_EINVAL (bad simhash_bits, dim mismatch). */
int adb__state_key(const char (*keys)[ADB_ID_MAX + 1], int n_keys,
                   const adb_kv *ctx, int n_ctx, const float *emb, int dim,
                   int simhash_bits, char out[ADB_STATE_KEY_LEN + 1]);

/* The SimHash bucket alone (bits 1..64). */
uint64_t adb__simhash(const float *emb, int dim, int bits);

/* Hex SHA-256 of a buffer, into out (65 bytes). */
void adb__sha256_hex(const void *data, size_t len, char out[65]);

#endif
