/*
 * cache_mem.c — the in-process cache backend ("mem://").
 *
 * URL: mem://[?ttl_s=N&max_bytes=N&max_entries=N&shards=N&tombstone_ms=N].
 * Defaults come from adb_config (cache_ttl_s, 3600 s; cache_max_bytes,
 * 256 MiB), the URL overrides them; max_entries 0 means no entry bound;
 * shards (a power of two, 1..64) is normally chosen automatically;
 * tombstone_ms (default ADB_TOMBSTONE_TTL_MS) is the tombstone TTL, a
 * hook for tests.
 *
 * Design
 * ------
 * The cache is a hash map split into shards (up to 64) by the top bits of
 * a 64-bit hash of the key. Each shard has its own mutex, a chained hash
 * table, an LRU list (head = most recently used), its share of the byte and
 * entry bounds, and its own counters, so that threads working on different
 * keys rarely meet and no counter is a shared, contended cache line. Small
 * bounds get fewer shards (each keeps at least 1 MiB and 1024 entries when
 * bounded) so that eviction stays close to a true LRU.
 *
 * An entry is one allocation (links, hash, expiry, key bytes) pointing to
 * its value: a blob (the bytes) or a policy (below). Bytes are accounted
 * with malloc_usable_size, entry + value + the shard's bucket array, so
 * the figure is what the allocator really handed out (less its per-chunk
 * header). Work that needs no lock — hashing, building values, copying
 * input, freeing what was removed — is done outside the critical section;
 * removed entries are collected on a local list and freed after unlock.
 *
 * Expiry uses the coarse monotonic clock (a few ms resolution, ~5 ns per
 * read). An expired entry is a miss and is unlinked when found; inserts
 * also sweep two buckets each (a clock hand), and stats() sweeps whole
 * shards, so expired entries do not linger in an idle cache.
 *
 * Policy values and the hot path
 * -------------------------------
 * policy_mget runs on every decision (2 keys x ~20 candidates), so a
 * policy is one compact block laid out for lookup by action id:
 *
 *   pol header | uint64 hash[cap] | adb__arm_stats st[cap] |
 *   uint32 off[cap + 1] | uint16 slot[mask + 1] | char ids[]
 *
 * Ids are packed back to back (arm i is ids[off[i] .. off[i+1])), never
 * fixed 129-byte buffers. slot[] is an open-addressing index (linear
 * probing, load <= 1/2) from hash bits to arm index + 1 (0 = empty), so a
 * lookup is: one slot read, compare the 64-bit hash, confirm the id bytes.
 * mget hashes each candidate id once per call (on the stack, no malloc for
 * up to 1024 candidates) and then, per key, holds the shard lock only for
 * the probes and the copy of the stats. About 60 bytes per arm plus its id.
 *
 * Versions (see cache.h): policy_put keeps an existing entry when any of
 * its arms has a higher version than the same arm of the new policy (an
 * arm absent from the new one counts as version 0). policy_apply applies
 * per arm under the shard lock: cached == change - 1 adds, cached >=
 * change skips, anything else (a gap) drops the entry, leaving a
 * tombstone (below) in its place; an absent arm is at version 0, so a
 * change at version 1 appends the arm (the value is rebuilt, under the
 * lock, only in that case).
 *
 * Tombstones (see cache.h) are entries of their own kind, KIND_TOMB,
 * whose value is a policy block like any other in which only the versions
 * count (the other statistics are zero). mget and get look for KIND_POLICY
 * and KIND_BLOB, so a tombstone is a miss for them at no cost on the hot
 * path; policy_put tests a tombstone exactly as a cached policy
 * (pol_has_newer), so a load is refused by either when it has an arm
 * older than theirs, and replaces a tombstone it is at least as new as.
 * policy_apply on a tombstone raises its arms' versions (the higher
 * wins, absent arms are appended) and restarts its TTL; on a missing key
 * it creates one. On a gap, the entry is turned into a tombstone in place:
 * it keeps the versions of the arms it had (those are committed versions
 * too) besides the new ones of the changes, a superset of what cache.h
 * asks, which also refuses a load older than what the dropped entry held.
 * Tombstones are bounded, evicted and counted (entries, bytes) like any
 * entry; one that is evicted early protects no more, as on Redis.
 * The rare paths (a value that grows, a new tombstone) allocate under the
 * shard lock.
 *
 * Limits: a value larger than its shard's whole byte bound is not kept
 * (and the key's previous value is dropped with it); a policy of more than
 * MAX_ARMS arms is refused (ADB_EINVAL); if policy_apply cannot grow a
 * value (out of memory, or past MAX_ARMS) it turns the entry into a
 * tombstone as for a gap (and returns ADB_ENOMEM), so the cache never
 * serves a policy that missed a committed change. A tombstone that cannot
 * grow records the versions of the arms it has and returns ADB_ENOMEM.
 */
#define _GNU_SOURCE
#include "cache.h"
#include "hash.h"

#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SHARDS 64
#define SHARD_MIN_BYTES ((size_t)1 << 20)
#define SHARD_MIN_ENTRIES 1024
#define INITIAL_BUCKETS 16
#define SWEEP_BUCKETS 2
#define MAX_ARMS 32767 /* slot[] holds index + 1 in 16 bits */
#define STACK_ACTIONS 1024
#define DEFAULT_TTL_S 3600
#define DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define KEY_SEED 0x6a09e667f3bcc908ULL

enum { KIND_BLOB = 1, KIND_POLICY = 2, KIND_TOMB = 3 };

/* ------------------------------------------------------------ helpers */

static size_t usable(void *p, size_t requested) {
#ifdef __GLIBC__
  (void)requested;
  return p ? malloc_usable_size(p) : 0;
#else
  return p ? requested : 0;
#endif
}

static int64_t now_ms(void) {
  struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
  clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t align8(size_t n) {
  return (n + 7) & ~(size_t)7;
}

/* ------------------------------------------------------ policy values */

typedef struct pol {
  uint32_t n, cap;                     /* arms filled, arms room */
  uint32_t mask;                       /* slots - 1 */
  uint32_t ids_cap;                    /* room for packed id bytes */
  uint32_t o_st, o_off, o_slot, o_ids; /* byte offsets of the arrays */
} pol;

static inline uint64_t *pol_hash(pol *p) {
  return (uint64_t *)(p + 1);
}
static inline adb__arm_stats *pol_st(pol *p) {
  return (adb__arm_stats *)((char *)p + p->o_st);
}
static inline uint32_t *pol_off(pol *p) {
  return (uint32_t *)((char *)p + p->o_off);
}
static inline uint16_t *pol_slot(pol *p) {
  return (uint16_t *)((char *)p + p->o_slot);
}
static inline char *pol_ids(pol *p) {
  return (char *)p + p->o_ids;
}

static size_t pol_size(const pol *p) {
  return align8((size_t)p->o_ids + p->ids_cap);
}

/* An empty policy with room for cap arms and ids_cap id bytes. */
static pol *pol_alloc(uint32_t cap, size_t ids_cap, size_t *bytes) {
  if (cap > MAX_ARMS || ids_cap > UINT32_MAX / 2) return NULL;
  uint32_t slots = 1;
  while (slots < 2 * cap)
    slots <<= 1;
  size_t o_st = sizeof(pol) + (size_t)cap * sizeof(uint64_t);
  size_t o_off = o_st + (size_t)cap * sizeof(adb__arm_stats);
  size_t o_slot = o_off + ((size_t)cap + 1) * sizeof(uint32_t);
  size_t o_ids = o_slot + (size_t)slots * sizeof(uint16_t);
  size_t size = align8(o_ids + ids_cap);
  pol *p = malloc(size);
  if (!p) return NULL;
  *p = (pol){.cap = cap,
             .mask = slots - 1,
             .ids_cap = (uint32_t)ids_cap,
             .o_st = (uint32_t)o_st,
             .o_off = (uint32_t)o_off,
             .o_slot = (uint32_t)o_slot,
             .o_ids = (uint32_t)o_ids};
  pol_off(p)[0] = 0;
  memset(pol_slot(p), 0, (size_t)slots * sizeof(uint16_t));
  *bytes = usable(p, size);
  return p;
}

/* Index of the arm with id[0..len) (hash h), or -1. */
static inline int pol_find(pol *p, uint64_t h, const char *id, uint32_t len) {
  const uint64_t *hash = pol_hash(p);
  const uint32_t *off = pol_off(p);
  const uint16_t *slot = pol_slot(p);
  const char *ids = pol_ids(p);
  uint32_t i = (uint32_t)h & p->mask;
  for (;;) {
    uint32_t s = slot[i];
    if (!s) return -1;
    s--;
    if (hash[s] == h && off[s + 1] - off[s] == len &&
        adb__bytes_equal(ids + off[s], id, len))
      return (int)s;
    i = (i + 1) & p->mask;
  }
}

/* Appends an arm known to be absent; the caller sized p for it. */
static void pol_push(pol *p, uint64_t h, const char *id, uint32_t len,
                     const adb__arm_stats *st) {
  uint32_t a = p->n++;
  uint32_t *off = pol_off(p);
  uint16_t *slot = pol_slot(p);
  uint32_t i = (uint32_t)h & p->mask;
  while (slot[i])
    i = (i + 1) & p->mask;
  slot[i] = (uint16_t)(a + 1);
  pol_hash(p)[a] = h;
  pol_st(p)[a] = *st;
  memcpy(pol_ids(p) + off[a], id, len);
  off[a + 1] = off[a] + len;
}

/* Builds the value of a store policy. A duplicated action keeps the arm
 * with the higher version. */
static int pol_from_policy(const adb__policy *src, pol **out, size_t *bytes) {
  size_t ids = 0;
  for (int i = 0; i < src->n; i++)
    ids += strnlen(src->arms[i].action, ADB_ID_MAX);
  pol *p = pol_alloc((uint32_t)src->n, ids, bytes);
  if (!p) return ADB_ENOMEM;
  for (int i = 0; i < src->n; i++) {
    const adb__policy_arm *a = &src->arms[i];
    uint32_t len = (uint32_t)strnlen(a->action, ADB_ID_MAX);
    uint64_t h = adb__hash_id(a->action, len);
    int j = pol_find(p, h, a->action, len);
    if (j < 0)
      pol_push(p, h, a->action, len, &a->s);
    else if (a->s.version > pol_st(p)[j].version)
      pol_st(p)[j] = a->s;
  }
  *out = p;
  return ADB_OK;
}

/* A copy of p with room for `more` arms and `more_ids` id bytes more. */
static pol *pol_grow(pol *p, uint32_t more, size_t more_ids, size_t *bytes) {
  size_t ids = pol_off(p)[p->n] + more_ids;
  if ((size_t)p->n + more > MAX_ARMS) return NULL;
  pol *q = pol_alloc(p->n + more, ids, bytes);
  if (!q) return NULL;
  for (uint32_t a = 0; a < p->n; a++) {
    const uint32_t *off = pol_off(p);
    pol_push(q, pol_hash(p)[a], pol_ids(p) + off[a], off[a + 1] - off[a],
             &pol_st(p)[a]);
  }
  return q;
}

/* True when some arm of old is newer than the same arm of neu (absent =
 * version 0): then a cached entry must not be replaced by neu. */
static int pol_has_newer(pol *old, pol *neu) {
  const uint32_t *off = pol_off(old);
  for (uint32_t a = 0; a < old->n; a++) {
    int64_t v = pol_st(old)[a].version;
    if (v <= 0) continue;
    int j = pol_find(neu, pol_hash(old)[a], pol_ids(old) + off[a],
                     off[a + 1] - off[a]);
    if (j < 0 || pol_st(neu)[j].version < v) return 1;
  }
  return 0;
}

/* -------------------------------------------------------- entries */

typedef struct ent {
  struct ent *next; /* hash chain; the dead list once removed */
  struct ent *lru_prev, *lru_next;
  uint64_t hash;
  int64_t expires_ms; /* monotonic */
  void *val;          /* blob bytes or pol */
  size_t len;         /* blob length */
  size_t bytes;       /* accounted: entry + value */
  uint32_t klen;
  uint8_t kind;
  char key[];
} ent;

static ent *ent_new(const char *key, size_t klen, uint64_t h, int kind) {
  size_t size = sizeof(ent) + klen + 1;
  ent *e = malloc(size);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->hash = h;
  e->klen = (uint32_t)klen;
  e->kind = (uint8_t)kind;
  memcpy(e->key, key, klen + 1);
  e->bytes = usable(e, size);
  return e;
}

static void dead_free(ent *d) {
  while (d) {
    ent *next = d->next;
    free(d->val);
    free(d);
    d = next;
  }
}

/* ---------------------------------------------------------- shards */

typedef struct shard {
  _Alignas(64) pthread_mutex_t mu;
  ent **tab;
  size_t mask;      /* buckets - 1 */
  size_t n;         /* entries */
  size_t sweep;     /* next bucket the clock hand inspects */
  ent *head, *tail; /* LRU: head most recent */
  size_t bytes, max_bytes, max_entries;
  int64_t hits, misses, errors, evictions;
} shard;

typedef struct mem_cache {
  adb__cache base;
  int64_t default_ttl_ms;
  int64_t tomb_ttl_ms;
  unsigned shard_bits;
  unsigned n_shards;
  shard *shards;
  size_t fixed_bytes; /* the handle and the shard array */
} mem_cache;

static inline shard *shard_of(mem_cache *m, uint64_t h) {
  return m->shard_bits ? &m->shards[h >> (64 - m->shard_bits)] : &m->shards[0];
}

static void lru_remove(shard *s, ent *e) {
  if (e->lru_prev)
    e->lru_prev->lru_next = e->lru_next;
  else
    s->head = e->lru_next;
  if (e->lru_next)
    e->lru_next->lru_prev = e->lru_prev;
  else
    s->tail = e->lru_prev;
  e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(shard *s, ent *e) {
  e->lru_prev = NULL;
  e->lru_next = s->head;
  if (s->head)
    s->head->lru_prev = e;
  else
    s->tail = e;
  s->head = e;
}

static inline void lru_touch(shard *s, ent *e) {
  if (s->head == e) return;
  lru_remove(s, e);
  lru_push_front(s, e);
}

static inline ent *shard_find(shard *s, uint64_t h, const char *key,
                              size_t klen) {
  for (ent *e = s->tab[h & s->mask]; e; e = e->next)
    if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
      return e;
  return NULL;
}

/* Unlinks e from the table and the LRU onto *dead. */
static void shard_unlink(shard *s, ent *e, ent **dead) {
  ent **pp = &s->tab[e->hash & s->mask];
  while (*pp != e)
    pp = &(*pp)->next;
  *pp = e->next;
  lru_remove(s, e);
  s->n--;
  s->bytes -= e->bytes;
  e->next = *dead;
  *dead = e;
}

/* The live entry under key, or NULL; an expired one is unlinked. */
static inline ent *shard_get(shard *s, uint64_t h, const char *key, size_t klen,
                             int64_t now, ent **dead) {
  ent *e = shard_find(s, h, key, klen);
  if (e && e->expires_ms <= now) {
    shard_unlink(s, e, dead);
    return NULL;
  }
  return e;
}

/* Reclaims expired entries of `count` buckets from the clock hand on. */
static void shard_sweep(shard *s, size_t count, int64_t now, ent **dead) {
  for (size_t i = 0; i < count; i++) {
    size_t b = s->sweep++ & s->mask;
    ent *e = s->tab[b];
    while (e) {
      ent *next = e->next;
      if (e->expires_ms <= now) shard_unlink(s, e, dead);
      e = next;
    }
  }
}

/* Doubles the bucket array; on OOM the chains just grow longer. */
static void shard_grow(shard *s) {
  size_t nb = (s->mask + 1) * 2;
  ent **tab = calloc(nb, sizeof *tab);
  if (!tab) return;
  for (size_t b = 0; b <= s->mask; b++) {
    ent *e = s->tab[b];
    while (e) {
      ent *next = e->next;
      e->next = tab[e->hash & (nb - 1)];
      tab[e->hash & (nb - 1)] = e;
      e = next;
    }
  }
  s->bytes -= usable(s->tab, (s->mask + 1) * sizeof *tab);
  s->bytes += usable(tab, nb * sizeof *tab);
  free(s->tab);
  s->tab = tab;
  s->mask = nb - 1;
}

/* Evicts least recently used entries, never `keep`, until within bounds. */
static void shard_evict(shard *s, const ent *keep, ent **dead) {
  while (
      s->tail && s->tail != keep &&
      (s->bytes > s->max_bytes || (s->max_entries && s->n > s->max_entries))) {
    shard_unlink(s, s->tail, dead);
    s->evictions++;
  }
}

/* Stores e (key absent from the table) as the most recent entry. */
static void shard_link(shard *s, ent *e, int64_t now, ent **dead) {
  if (s->n >= s->mask + 1) shard_grow(s);
  ent **b = &s->tab[e->hash & s->mask];
  e->next = *b;
  *b = e;
  lru_push_front(s, e);
  s->n++;
  s->bytes += e->bytes;
  shard_sweep(s, SWEEP_BUCKETS, now, dead);
  shard_evict(s, e, dead);
}

/* Replaces whatever is under e's key by e. A value larger than the
 * shard's whole bound is not kept (counted as evicted at once). */
static void shard_store(shard *s, ent *e, int64_t now, ent **dead) {
  ent *old = shard_find(s, e->hash, e->key, e->klen);
  if (old) shard_unlink(s, old, dead);
  if (e->bytes > s->max_bytes) {
    s->evictions++;
    e->next = *dead;
    *dead = e;
    return;
  }
  shard_link(s, e, now, dead);
}

static int shard_init(shard *s, size_t max_bytes, size_t max_entries) {
  memset(s, 0, sizeof *s);
  s->tab = calloc(INITIAL_BUCKETS, sizeof *s->tab);
  if (!s->tab) return ADB_ENOMEM;
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    free(s->tab);
    return ADB_ENOMEM;
  }
  s->mask = INITIAL_BUCKETS - 1;
  s->bytes = usable(s->tab, INITIAL_BUCKETS * sizeof *s->tab);
  s->max_bytes = max_bytes;
  s->max_entries = max_entries;
  return ADB_OK;
}

static void shard_destroy(shard *s) {
  ent *e = s->head;
  while (e) {
    ent *next = e->lru_next;
    free(e->val);
    free(e);
    e = next;
  }
  free(s->tab);
  pthread_mutex_destroy(&s->mu);
}

/* ------------------------------------------------------------ URL */

typedef struct mem_opts {
  int64_t ttl_s, tomb_ms;
  size_t max_bytes, max_entries;
  unsigned shards; /* 0 = automatic */
} mem_opts;

/* Parses a decimal count in [lo, hi] from s[0..len). */
static int parse_count(const char *s, size_t len, uint64_t lo, uint64_t hi,
                       uint64_t *out) {
  uint64_t v = 0;
  if (len == 0 || len > 19) return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_param(mem_opts *o, const char *p, size_t len, char *err,
                       size_t errlen) {
  const char *eq = memchr(p, '=', len);
  size_t nlen = eq ? (size_t)(eq - p) : len;
  const char *v = eq ? eq + 1 : p + len;
  size_t vlen = len - nlen - (eq ? 1 : 0);
  uint64_t x = 0;
  int bad;
  if (nlen == 5 && !memcmp(p, "ttl_s", 5)) {
    bad = parse_count(v, vlen, 1, INT64_MAX / 1000, &x);
    o->ttl_s = (int64_t)x;
  } else if (nlen == 9 && !memcmp(p, "max_bytes", 9)) {
    bad = parse_count(v, vlen, 1, SIZE_MAX, &x);
    o->max_bytes = (size_t)x;
  } else if (nlen == 11 && !memcmp(p, "max_entries", 11)) {
    bad = parse_count(v, vlen, 0, SIZE_MAX, &x);
    o->max_entries = (size_t)x;
  } else if (nlen == 12 && !memcmp(p, "tombstone_ms", 12)) {
    bad = parse_count(v, vlen, 1, INT64_MAX / 2, &x);
    o->tomb_ms = (int64_t)x;
  } else if (nlen == 6 && !memcmp(p, "shards", 6)) {
    bad = parse_count(v, vlen, 1, MAX_SHARDS, &x) || (x & (x - 1));
    o->shards = (unsigned)x;
  } else {
    snprintf(err, errlen,
             "mem:// cache: unknown parameter '%.*s' (expected ttl_s, "
             "max_bytes, max_entries, shards or tombstone_ms)",
             (int)nlen, p);
    return ADB_EURL;
  }
  if (bad) {
    snprintf(err, errlen, "mem:// cache: bad value '%.*s' for %.*s", (int)vlen,
             v, (int)nlen, p);
    return ADB_EURL;
  }
  return ADB_OK;
}

static int parse_url(const char *url, mem_opts *o, char *err, size_t errlen) {
  const char *q = strstr(url, "://");
  q = q ? q + 3 : url;
  if (*q == '/') q++; /* mem:///?... */
  if (*q && *q != '?') {
    snprintf(err, errlen,
             "mem:// cache takes no host or path, only ?parameters: '%s'", url);
    return ADB_EURL;
  }
  if (*q == '?') q++;
  while (*q) {
    size_t len = strcspn(q, "&");
    if (len) {
      int rc = parse_param(o, q, len, err, errlen);
      if (rc) return rc;
    }
    q += len;
    if (*q == '&') q++;
  }
  return ADB_OK;
}

static unsigned auto_shards(const mem_opts *o) {
  unsigned n = MAX_SHARDS;
  while (n > 1 && (o->max_bytes / n < SHARD_MIN_BYTES ||
                   (o->max_entries && o->max_entries / n < SHARD_MIN_ENTRIES)))
    n /= 2;
  return n;
}

/* ------------------------------------------------------------ methods */

extern const adb__cache_methods adb__cache_mem;
static void mem_close(adb__cache *c);

static int mem_open(const char *url, const adb_config *cfg, adb__cache **out,
                    char *err, size_t errlen) {
  mem_opts o = {
      .ttl_s = cfg && cfg->cache_ttl_s > 0 ? cfg->cache_ttl_s : DEFAULT_TTL_S,
      .tomb_ms = ADB_TOMBSTONE_TTL_MS,
      .max_bytes = cfg && cfg->cache_max_bytes ? cfg->cache_max_bytes
                                               : DEFAULT_MAX_BYTES,
  };
  *out = NULL;
  int rc = parse_url(url, &o, err, errlen);
  if (rc) return rc;
  unsigned n = o.shards ? o.shards : auto_shards(&o);
  mem_cache *m = calloc(1, sizeof *m);
  size_t sbytes = ((size_t)n * sizeof(shard) + 63) & ~(size_t)63;
  shard *sh = m ? aligned_alloc(64, sbytes) : NULL;
  if (!sh) {
    free(m);
    snprintf(err, errlen, "mem:// cache: out of memory");
    return ADB_ENOMEM;
  }
  m->base.m = &adb__cache_mem;
  m->default_ttl_ms = o.ttl_s * 1000;
  m->tomb_ttl_ms = o.tomb_ms;
  m->shards = sh;
  while ((1u << m->shard_bits) < n)
    m->shard_bits++;
  m->fixed_bytes = usable(m, sizeof *m) + usable(sh, sbytes);
  size_t per_bytes = o.max_bytes / n ? o.max_bytes / n : 1;
  size_t per_entries = o.max_entries ? (o.max_entries + n - 1) / n : 0;
  for (; m->n_shards < n; m->n_shards++) {
    if (shard_init(&sh[m->n_shards], per_bytes, per_entries) != ADB_OK) {
      mem_close(&m->base);
      snprintf(err, errlen, "mem:// cache: out of memory");
      return ADB_ENOMEM;
    }
  }
  *out = &m->base;
  return ADB_OK;
}

static void mem_close(adb__cache *c) {
  mem_cache *m = (mem_cache *)c;
  if (!m) return;
  for (unsigned i = 0; i < m->n_shards; i++)
    shard_destroy(&m->shards[i]);
  free(m->shards);
  free(m);
}

static int64_t expiry(mem_cache *m, int64_t ttl_ms, int64_t now) {
  int64_t ttl = ttl_ms ? ttl_ms : m->default_ttl_ms;
  return ttl > INT64_MAX - now ? INT64_MAX : now + ttl;
}

static int mem_get(adb__cache *c, const char *key, void **val, size_t *len) {
  mem_cache *m = (mem_cache *)c;
  if (!m || !key || !val || !len) return ADB_EINVAL;
  *val = NULL;
  *len = 0;
  size_t klen = strlen(key);
  uint64_t h = adb__hash_bytes(key, klen, KEY_SEED);
  shard *s = shard_of(m, h);
  int64_t now = now_ms();
  ent *dead = NULL;
  int rc = ADB_OK;
  pthread_mutex_lock(&s->mu);
  ent *e = shard_get(s, h, key, klen, now, &dead);
  if (!e || e->kind != KIND_BLOB) {
    s->misses++;
    rc = ADB_ENOTFOUND;
  } else if (!(*val = malloc(e->len ? e->len : 1))) {
    s->errors++;
    rc = ADB_ENOMEM;
  } else {
    memcpy(*val, e->val, e->len);
    *len = e->len;
    s->hits++;
    lru_touch(s, e);
  }
  pthread_mutex_unlock(&s->mu);
  dead_free(dead);
  return rc;
}

/* Takes ownership of e (and its value) whatever happens. */
static void store_entry(mem_cache *m, ent *e, int64_t now) {
  shard *s = shard_of(m, e->hash);
  ent *dead = NULL;
  pthread_mutex_lock(&s->mu);
  shard_store(s, e, now, &dead);
  pthread_mutex_unlock(&s->mu);
  dead_free(dead);
}

static void count_error(mem_cache *m, uint64_t h) {
  shard *s = shard_of(m, h);
  pthread_mutex_lock(&s->mu);
  s->errors++;
  pthread_mutex_unlock(&s->mu);
}

static int mem_set(adb__cache *c, const char *key, const void *val, size_t len,
                   int64_t ttl_ms) {
  mem_cache *m = (mem_cache *)c;
  if (!m || !key || (!val && len) || ttl_ms < 0) return ADB_EINVAL;
  size_t klen = strlen(key);
  uint64_t h = adb__hash_bytes(key, klen, KEY_SEED);
  ent *e = ent_new(key, klen, h, KIND_BLOB);
  void *copy = e ? malloc(len ? len : 1) : NULL;
  if (!copy) {
    free(e);
    count_error(m, h);
    return ADB_ENOMEM;
  }
  if (len) memcpy(copy, val, len);
  e->val = copy;
  e->len = len;
  e->bytes += usable(copy, len ? len : 1);
  int64_t now = now_ms();
  e->expires_ms = expiry(m, ttl_ms, now);
  store_entry(m, e, now);
  return ADB_OK;
}

static int mem_del(adb__cache *c, const char *key) {
  mem_cache *m = (mem_cache *)c;
  if (!m || !key) return ADB_EINVAL;
  size_t klen = strlen(key);
  uint64_t h = adb__hash_bytes(key, klen, KEY_SEED);
  shard *s = shard_of(m, h);
  ent *dead = NULL;
  pthread_mutex_lock(&s->mu);
  ent *e = shard_find(s, h, key, klen);
  if (e) shard_unlink(s, e, &dead);
  pthread_mutex_unlock(&s->mu);
  dead_free(dead);
  return ADB_OK;
}

/* Candidate ids hashed once per call. */
typedef struct probe {
  uint64_t h;
  uint32_t len;
} probe;

static void hash_actions(int n, const char *const *actions, probe *pr) {
  for (int a = 0; a < n; a++) {
    size_t len = strlen(actions[a]);
    pr[a].len = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
    pr[a].h = adb__hash_id(actions[a], pr[a].len);
  }
}

/* Copies the stats of n candidates out of one key's policy. */
static int mget_one(mem_cache *m, const char *key, int n,
                    const char *const *actions, const probe *pr,
                    adb__arm_stats *st, int64_t now) {
  size_t klen = strlen(key);
  uint64_t h = adb__hash_bytes(key, klen, KEY_SEED);
  shard *s = shard_of(m, h);
  ent *dead = NULL;
  int found = 0;
  pthread_mutex_lock(&s->mu);
  ent *e = shard_get(s, h, key, klen, now, &dead);
  if (e && e->kind == KIND_POLICY) {
    pol *p = e->val;
    const adb__arm_stats *ps = pol_st(p);
    for (int a = 0; a < n; a++) {
      int i = pol_find(p, pr[a].h, actions[a], pr[a].len);
      if (i >= 0)
        st[a] = ps[i];
      else
        memset(&st[a], 0, sizeof st[a]);
    }
    s->hits++;
    lru_touch(s, e);
    found = 1;
  } else {
    s->misses++;
  }
  pthread_mutex_unlock(&s->mu);
  if (!found && n) memset(st, 0, (size_t)n * sizeof *st);
  dead_free(dead);
  return found;
}

static int mem_policy_mget(adb__cache *c, int n_keys, const char *const *keys,
                           const adb__ids *ids, adb__arm_stats *stats,
                           int *found) {
  mem_cache *m = (mem_cache *)c;
  int n = ids ? ids->n : 0;
  const char *const *id = ids ? ids->id : NULL;
  if (!m || n_keys < 0 || n < 0 || (n_keys && (!keys || !found)) ||
      (n_keys && n && (!id || !stats)))
    return ADB_EINVAL;
  probe local[STACK_ACTIONS];
  probe *pr = local;
  if (n > STACK_ACTIONS && !(pr = malloc((size_t)n * sizeof *pr)))
    return ADB_ENOMEM;
  if (n && ids->h && ids->len)
    for (int a = 0; a < n; a++)
      pr[a] = (probe){.h = ids->h[a], .len = ids->len[a]};
  else
    hash_actions(n, id, pr);
  int64_t now = now_ms();
  for (int k = 0; k < n_keys; k++)
    found[k] =
        mget_one(m, keys[k], n, id, pr, stats + (size_t)k * (size_t)n, now);
  if (pr != local) free(pr);
  return ADB_OK;
}

static int mem_policy_put(adb__cache *c, const char *key, const adb__policy *p,
                          int64_t ttl_ms) {
  mem_cache *m = (mem_cache *)c;
  if (!m || !key || !p || p->n < 0 || (p->n && !p->arms) || ttl_ms < 0)
    return ADB_EINVAL;
  if (p->n > MAX_ARMS) return ADB_EINVAL;
  size_t klen = strlen(key);
  uint64_t h = adb__hash_bytes(key, klen, KEY_SEED);
  ent *e = ent_new(key, klen, h, KIND_POLICY);
  size_t vbytes = 0;
  pol *v = NULL;
  if (!e || pol_from_policy(p, &v, &vbytes) != ADB_OK) {
    free(e);
    count_error(m, h);
    return ADB_ENOMEM;
  }
  e->val = v;
  e->bytes += vbytes;
  int64_t now = now_ms();
  e->expires_ms = expiry(m, ttl_ms, now);
  shard *s = shard_of(m, h);
  ent *dead = NULL;
  pthread_mutex_lock(&s->mu);
  ent *old = shard_get(s, h, key, klen, now, &dead);
  if (old && old->kind != KIND_BLOB && pol_has_newer(old->val, v)) {
    e->next = dead; /* a stale load: keep the entry or tombstone */
    dead = e;
  } else {
    shard_store(s, e, now, &dead);
  }
  pthread_mutex_unlock(&s->mu);
  dead_free(dead);
  return ADB_OK;
}

/* True for a change that appends its arm when the arm is absent: one at
 * version 1 for a policy (anything later is a gap), one at any version
 * for a tombstone. */
static inline int adds_arm(const adb__arm_stats *d, int tomb) {
  return tomb ? d->version >= 1 : d->version == 1;
}

/* Arms that the changes will append (absent from p, counted once each),
 * and their id bytes. */
static uint32_t count_new_arms(pol *p, int n, const char *const *actions,
                               const probe *pr, const adb__arm_stats *d,
                               int tomb, size_t *ids) {
  uint32_t more = 0;
  *ids = 0;
  for (int i = 0; i < n; i++) {
    if (!adds_arm(&d[i], tomb) ||
        pol_find(p, pr[i].h, actions[i], pr[i].len) >= 0)
      continue;
    int dup = 0;
    for (int j = 0; j < i && !dup; j++)
      dup = adds_arm(&d[j], tomb) && pr[j].h == pr[i].h &&
            pr[j].len == pr[i].len && !strcmp(actions[j], actions[i]);
    if (dup) continue;
    more++;
    *ids += pr[i].len;
  }
  return more;
}

/* Appends the arms count_new_arms finds (zero stats, version 0) to a
 * grown copy of e's value; *old_val gets the value replaced. Returns 0,
 * or -1 when out of memory. */
static int append_new_arms(shard *s, ent *e, int n, const char *const *actions,
                           const probe *pr, const adb__arm_stats *d, int tomb,
                           void **old_val) {
  pol *p = e->val;
  size_t ids;
  uint32_t more = count_new_arms(p, n, actions, pr, d, tomb, &ids);
  if (!more) return 0;
  size_t qbytes, pbytes = usable(p, pol_size(p));
  pol *q = pol_grow(p, more, ids, &qbytes);
  if (!q) return -1;
  static const adb__arm_stats zero;
  for (int i = 0; i < n; i++)
    if (adds_arm(&d[i], tomb) &&
        pol_find(q, pr[i].h, actions[i], pr[i].len) < 0)
      pol_push(q, pr[i].h, actions[i], pr[i].len, &zero);
  e->val = q;
  e->bytes = e->bytes - pbytes + qbytes;
  s->bytes = s->bytes - pbytes + qbytes;
  *old_val = p;
  return 0;
}

/* Applies the changes in order; returns 0, or -1 on a version gap or a
 * sum out of the range every backend keeps (adb__sum_ok): the entry then
 * becomes a tombstone, and reads go to the store, which refuses such a
 * sum itself. */
static int apply_changes(pol *p, int n, const char *const *actions,
                         const probe *pr, const adb__arm_stats *d) {
  adb__arm_stats *st = pol_st(p);
  for (int i = 0; i < n; i++) {
    int a = pol_find(p, pr[i].h, actions[i], pr[i].len);
    int64_t cv = a >= 0 ? st[a].version : 0;
    if (cv >= d[i].version) continue;
    if (a < 0 || cv != d[i].version - 1) return -1;
    if (!adb__sum_ok(st[a].sum_micro + d[i].sum_micro)) return -1;
    st[a].n += d[i].n;
    st[a].sum_micro += d[i].sum_micro;
    st[a].sum_sq += d[i].sum_sq;
    st[a].version = d[i].version;
  }
  return 0;
}

/* Raises the versions of p's arms to the changes' (the higher wins). */
static void tomb_raise(pol *p, int n, const char *const *actions,
                       const probe *pr, const adb__arm_stats *d) {
  adb__arm_stats *st = pol_st(p);
  for (int i = 0; i < n; i++) {
    int a = pol_find(p, pr[i].h, actions[i], pr[i].len);
    if (a >= 0 && st[a].version < d[i].version) st[a].version = d[i].version;
  }
}

/* Merges the changes' versions into e, which becomes (or stays) a
 * tombstone, as the most recent entry with its TTL restarted. Returns
 * ADB_OK, or ADB_ENOMEM when absent arms could not be appended (the
 * versions of the others are recorded all the same). */
static int tomb_merge(mem_cache *m, shard *s, ent *e, int n,
                      const char *const *actions, const probe *pr,
                      const adb__arm_stats *d, int64_t now, void **old_val) {
  int rc = append_new_arms(s, e, n, actions, pr, d, 1, old_val) ? ADB_ENOMEM
                                                                : ADB_OK;
  pol *p = e->val;
  if (e->kind != KIND_TOMB) { /* only the versions count from now on */
    adb__arm_stats *st = pol_st(p);
    for (uint32_t a = 0; a < p->n; a++)
      st[a] = (adb__arm_stats){.version = st[a].version};
    e->kind = KIND_TOMB;
  }
  tomb_raise(p, n, actions, pr, d);
  e->expires_ms = expiry(m, m->tomb_ttl_ms, now);
  lru_touch(s, e);
  return rc;
}

/* A new tombstone holding the changes' versions into *out; NULL when no
 * change has a version to record. ADB_OK or ADB_ENOMEM. */
static int tomb_new(mem_cache *m, const char *key, size_t klen, uint64_t h,
                    int n, const char *const *actions, const probe *pr,
                    const adb__arm_stats *d, int64_t now, ent **out) {
  size_t ids = 0, vbytes = 0;
  uint32_t arms = 0;
  *out = NULL;
  for (int i = 0; i < n; i++)
    if (adds_arm(&d[i], 1)) {
      arms++;
      ids += pr[i].len;
    }
  if (!arms) return ADB_OK;
  ent *e = ent_new(key, klen, h, KIND_TOMB);
  pol *p = e ? pol_alloc(arms, ids, &vbytes) : NULL;
  if (!p) {
    free(e);
    return ADB_ENOMEM;
  }
  static const adb__arm_stats zero;
  for (int i = 0; i < n; i++)
    if (adds_arm(&d[i], 1) && pol_find(p, pr[i].h, actions[i], pr[i].len) < 0)
      pol_push(p, pr[i].h, actions[i], pr[i].len, &zero);
  tomb_raise(p, n, actions, pr, d);
  e->val = p;
  e->bytes += vbytes;
  e->expires_ms = expiry(m, m->tomb_ttl_ms, now);
  *out = e;
  return ADB_OK;
}

/* Applies the changes to the cached policy e. When it cannot (a gap, or
 * no memory to append an arm) e becomes a tombstone instead, so that no
 * load older than the changes is cached after it. old[0..1] get values
 * replaced (freed by the caller after unlock). */
static int apply_entry(mem_cache *m, shard *s, ent *e, int n,
                       const char *const *actions, const probe *pr,
                       const adb__arm_stats *d, int64_t now, void **old,
                       ent **dead) {
  int rc = ADB_OK;
  if (append_new_arms(s, e, n, actions, pr, d, 0, &old[0]) != 0) {
    rc = ADB_ENOMEM;
  } else if (apply_changes(e->val, n, actions, pr, d) == 0) {
    if (old[0]) shard_evict(s, e, dead);
    return ADB_OK;
  }
  int r2 = tomb_merge(m, s, e, n, actions, pr, d, now, &old[1]);
  shard_evict(s, e, dead);
  return rc != ADB_OK ? rc : r2;
}

static int apply_locked(mem_cache *m, const char *key, int n,
                        const char *const *actions, const probe *pr,
                        const adb__arm_stats *d) {
  size_t klen = strlen(key);
  uint64_t h = adb__hash_bytes(key, klen, KEY_SEED);
  shard *s = shard_of(m, h);
  ent *dead = NULL, *t = NULL;
  void *old[2] = {NULL, NULL};
  int rc;
  int64_t now = now_ms();
  pthread_mutex_lock(&s->mu);
  ent *e = shard_get(s, h, key, klen, now, &dead);
  if (e && e->kind == KIND_POLICY) {
    rc = apply_entry(m, s, e, n, actions, pr, d, now, old, &dead);
  } else if (e && e->kind == KIND_TOMB) {
    rc = tomb_merge(m, s, e, n, actions, pr, d, now, &old[0]);
    if (old[0]) shard_evict(s, e, &dead);
  } else { /* not cached: leave a tombstone */
    rc = tomb_new(m, key, klen, h, n, actions, pr, d, now, &t);
    if (t) shard_store(s, t, now, &dead);
  }
  if (rc != ADB_OK) s->errors++;
  pthread_mutex_unlock(&s->mu);
  free(old[0]);
  free(old[1]);
  dead_free(dead);
  return rc;
}

static int mem_policy_apply(adb__cache *c, const char *key, int n,
                            const char *const *actions,
                            const adb__arm_stats *deltas) {
  mem_cache *m = (mem_cache *)c;
  if (!m || !key || n < 0 || (n && (!actions || !deltas))) return ADB_EINVAL;
  probe local[STACK_ACTIONS];
  probe *pr = local;
  if (n > STACK_ACTIONS && !(pr = malloc((size_t)n * sizeof *pr)))
    return ADB_ENOMEM;
  hash_actions(n, actions, pr);
  int rc = apply_locked(m, key, n, actions, pr, deltas);
  if (pr != local) free(pr);
  return rc;
}

static void mem_stats(adb__cache *c, adb__cache_stats *out) {
  mem_cache *m = (mem_cache *)c;
  memset(out, 0, sizeof *out);
  if (!m) return;
  int64_t now = now_ms();
  out->bytes = (int64_t)m->fixed_bytes;
  for (unsigned i = 0; i < m->n_shards; i++) {
    shard *s = &m->shards[i];
    ent *dead = NULL;
    pthread_mutex_lock(&s->mu);
    shard_sweep(s, s->mask + 1, now, &dead);
    out->hits += s->hits;
    out->misses += s->misses;
    out->errors += s->errors;
    out->evictions += s->evictions;
    out->entries += (int64_t)s->n;
    out->bytes += (int64_t)s->bytes;
    pthread_mutex_unlock(&s->mu);
    dead_free(dead);
  }
}

const adb__cache_methods adb__cache_mem = {
    .version = 1,
    .scheme = "mem",
    .open = mem_open,
    .close = mem_close,
    .get = mem_get,
    .set = mem_set,
    .del = mem_del,
    .policy_mget = mem_policy_mget,
    .policy_put = mem_policy_put,
    .policy_apply = mem_policy_apply,
    .stats = mem_stats,
};
