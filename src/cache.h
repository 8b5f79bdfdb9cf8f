/*
 * cache.h — the cache interface (in-process "mem://", Redis "redis://",
 * Redis Cluster "redis-cluster://").
 *
 * The cache is disposable: the store always holds the truth. Two kinds of
 * entry:
 *  - blobs: opaque bytes under a key, with a TTL (user states, sessions,
 *    decisions awaiting their reward, agent configs);
 *  - policies: the arms of one (agent, user, state_key), each with its
 *    statistics and row version, so that stale loads and committed
 *    increments are reconciled (see policy_put and policy_apply).
 *
 * Every method is thread-safe. A miss is ADB_ENOTFOUND (blobs) or found=0
 * (policies); ADB_ECACHE means the cache failed (the caller falls back to
 * the store).
 */
#ifndef ADB_CACHE_H
#define ADB_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "agentdb.h"
#include "bandit.h"
#include "store.h"

typedef struct adb__cache adb__cache;

/* Action ids, with their lengths and adb__hash_id hashes (hash.h) when the
 * caller has them (a decision hashes its candidates once); len and h may
 * be NULL. */
typedef struct adb__ids {
  int n;
  const char *const *id;
  const uint32_t *len;
  const uint64_t *h;
} adb__ids;

/* How long a tombstone outlives its policy_apply (see policy_apply): longer
 * than any store read that could have started before it. */
#define ADB_TOMBSTONE_TTL_MS 60000

typedef struct adb__cache_stats {
  int64_t hits, misses, errors, evictions, entries, bytes;
} adb__cache_stats;

typedef struct adb__cache_methods {
  int version;        /* 1 */
  const char *scheme; /* "mem", "redis", "redis-cluster" */
  int (*open)(const char *url, const adb_config *cfg, adb__cache **out,
              char *err, size_t errlen);
  void (*close)(adb__cache *c);

  /* Blobs. get: *val malloc'd (free()), *len its size. ttl_ms 0 = the
   * configured default TTL. */
  int (*get)(adb__cache *c, const char *key, void **val, size_t *len);
  int (*set)(adb__cache *c, const char *key, const void *val, size_t len,
             int64_t ttl_ms);
  int (*del)(adb__cache *c, const char *key);

  /* Policies. For each of n_keys keys, the stats of each of the n
   * actions into stats[k * n + a] (zeros, version 0, for an arm the cached
   * policy lacks) and found[k] = 1 when key k is cached, else 0. One
   * round trip for a remote cache. */
  int (*policy_mget)(adb__cache *c, int n_keys, const char *const *keys,
                     const adb__ids *actions, adb__arm_stats *stats,
                     int *found);
  /* Caches a policy loaded from the store. If an entry exists and any arm
   * in it has a higher version than the same arm in p (a newer state was
   * cached meanwhile), the entry is kept and p dropped. */
  int (*policy_put)(adb__cache *c, const char *key, const adb__policy *p,
                    int64_t ttl_ms);
  /* Applies committed increments to a cached policy, if cached, atomically:
   * per arm, when cached version == change version - 1 the increment is
   * added and the version set; when cached version >= change version it
   * is already included and skipped; otherwise (a gap: an update was
   * missed) the whole entry is deleted. actions[i] with deltas[i].
   *
   * When the key is not cached (or was just deleted for a gap), apply
   * leaves a TOMBSTONE for it instead, recording each changed arm's new
   * version (merged with an existing tombstone's: the higher wins), with a
   * TTL of ADB_TOMBSTONE_TTL_MS. A tombstone is a miss for policy_mget
   * (found = 0) and for policy_apply (changes are merged into it, never
   * added), and policy_put refuses a policy that has any arm older than
   * the tombstone's version of that arm; a policy at least as new replaces
   * it. This closes the stale-load race: a loader that read version v from
   * the store while v+1 committed (and its apply found no entry) cannot
   * cache v afterwards — on any replica sharing the cache.
   *
   * When apply fails (ADB_ECACHE), the backend must hide every policy it
   * holds before it serves a policy again (the Redis backends change the
   * epoch), since the caller acknowledges the writes anyway and skips the
   * rest of the batch. */
  int (*policy_apply)(adb__cache *c, const char *key, int n,
                      const char *const *actions, const adb__arm_stats *deltas);
  void (*stats)(adb__cache *c, adb__cache_stats *out);
} adb__cache_methods;

struct adb__cache {
  const adb__cache_methods *m;
};

int adb__cache_open(const char *url, const adb_config *cfg, adb__cache **out,
                    char *err, size_t errlen);
void adb__cache_close(adb__cache *c);

/* Key of a policy entry: "p:{<agent>/<user>}:<state_key>". The braces are a
 * Redis Cluster hash tag: all states of one agent+user share a slot. */
void adb__policy_key(char *out, size_t cap, const char *agent, const char *user,
                     const char *state_key);

#endif
