/*
 * redis_cluster.h — the pure parts of talking to Redis and Redis Cluster:
 * key slots (CRC16 with hash tags), the slot map read from CLUSTER SLOTS,
 * MOVED/ASK redirections and cache URLs. No I/O here: everything takes
 * strings or already parsed hiredis replies, so it is tested without a
 * server. The connections, pools and routing that use it live in
 * cache_redis.c.
 */
#ifndef ADB_REDIS_CLUSTER_H
#define ADB_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "cache.h"

#define ADB__REDIS_SLOTS 16384
#define ADB__REDIS_MAX_NODES 64 /* distinct masters we track */
#define ADB__REDIS_HOST_MAX 255

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum
 * Redis Cluster keys are hashed with. "123456789" -> 0x31C3. */
uint16_t adb__crc16(const void *buf, size_t len);

/* Slot of a key (0..16383): CRC16 of the hash tag if the key has one,
 * else of the whole key, modulo 16384. The hash tag is what lies between
 * the first '{' and the first '}' after it, when that is not empty. */
int adb__redis_key_slot(const char *key, size_t len);

typedef struct adb__redis_addr {
  char host[ADB__REDIS_HOST_MAX + 1];
  int port;
} adb__redis_addr;

/* "host:port" (or "[v6]:port") into *out. ADB_OK or ADB_EINVAL. */
int adb__redis_addr_parse(const char *s, size_t len, adb__redis_addr *out);

/* Which master serves each slot: slot[s] is an index into addrs, or -1. */
typedef struct adb__slot_map {
  int n_addrs;
  adb__redis_addr addrs[ADB__REDIS_MAX_NODES];
  int16_t slot[ADB__REDIS_SLOTS];
} adb__slot_map;

/* Fills *m from a CLUSTER SLOTS reply: an array of [start, end, [host,
 * port, id, ...], replicas...]. A master announced with an empty host (or
 * "?") is taken to be on default_host, the node that answered. Slots not
 * in the reply stay -1. ADB_OK, or ADB_ECORRUPT on a malformed reply. */
int adb__slot_map_parse(const redisReply *r, const char *default_host,
                        adb__slot_map *m);

/* Parses an error reply "MOVED <slot> <host>:<port>" or "ASK <slot>
 * <host>:<port>". *is_ask is 1 for ASK. ADB_OK, or ADB_EINVAL when msg is
 * not a redirection. */
int adb__redis_redirect_parse(const char *msg, size_t len, int *is_ask,
                              int *slot, adb__redis_addr *to);

/* A parsed cache URL:
 *   redis://[[user]:password@]host[:port][/db][?options]
 *   redis-cluster://[[user]:password@]h1:p1,h2:p2,...[?options]
 * options, '&'-separated: connect_timeout_ms (200), timeout_ms (500),
 * pool (connections per node; default cfg->pool_size), retry_ms (how
 * long an unreachable node is left alone before it is probed again, 500).
 * Omitted fields keep the values *u holds on entry. */
typedef struct adb__redis_url {
  int cluster;
  int n_seeds;
  adb__redis_addr seeds[16];
  int db;
  char user[128], password[256];
  int connect_timeout_ms, timeout_ms, pool, retry_ms;
} adb__redis_url;

int adb__redis_url_parse(const char *url, adb__redis_url *u, char *err,
                         size_t errlen);

/* Counters of a Redis cache handle beyond adb__cache_stats, for tests,
 * benchmarks and metrics. All zero for a handle of another backend. */
typedef struct adb__redis_info {
  int64_t moved, ask;   /* redirections followed */
  int64_t epoch_bumps;  /* policy invalidations done by this handle */
  int64_t round_trips;  /* command batches sent */
  int64_t rtt_ns_total; /* their summed wall time */
} adb__redis_info;

void adb__redis_cache_info(adb__cache *c, adb__redis_info *out);

#endif
