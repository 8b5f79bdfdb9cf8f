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
 * order, so every machine computes the same bucket. Precisely: seed with
 * adb__rng_seed(r, 0x5EED0000 + i); entry j is -1 when bit (j % 64) of the
 * (j / 64)-th output of adb__rng_next is set, else +1.
 *
 * Thread-safe; allocates nothing after each thread's first call (a
 * SHA-256 context kept per thread, freed when the thread exits).
 */
#ifndef ADB_STATEKEY_H
#define ADB_STATEKEY_H

#include <stdint.h>

#include "agentdb.h"

/* Writes the 64-char hex key and its NUL into out. Context keys not in
 * `keys` are ignored; a context key given twice takes its first value.
 * Returns ADB_OK, ADB_ENOMEM (OpenSSL could not allocate), or ADB_EINVAL:
 * simhash_bits outside 0..64; simhash_bits > 0 without an embedding, with
 * dim outside 1..ADB_MAX_EMBEDDING_DIM or a non-finite value; n_keys
 * outside 0..ADB_MAX_CONTEXT_KEYS or a key without a NUL in its array; a
 * NULL key or value in ctx. On error out is "". */
int adb__state_key(const char (*keys)[ADB_ID_MAX + 1], int n_keys,
                   const adb_kv *ctx, int n_ctx, const float *emb, int dim,
                   int simhash_bits, char out[ADB_STATE_KEY_LEN + 1]);

/* The SimHash bucket alone (bits 1..64); 0 for bad arguments. */
uint64_t adb__simhash(const float *emb, int dim, int bits);

/* Hex SHA-256 (lower case) of a buffer, into out (65 bytes); out is ""
 * if OpenSSL fails (out of memory). */
void adb__sha256_hex(const void *data, size_t len, char out[65]);

#endif
