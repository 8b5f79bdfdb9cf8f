/*
 * cache_redis.c — the Redis cache backends: "redis://host:port/db" (one
 * node) and "redis-cluster://h1:p1,h2:p2,..." (Redis Cluster, routed
 * here), on hiredis' blocking API. docs/redis.md describes the key layout
 * and the guarantees; this comment says how the code gets there.
 *
 * Commands and round trips
 * ------------------------
 * Every method builds a small batch of commands (struct rcmd), each tagged
 * with its key's slot, and hands it to exec_cmds. A round groups the
 * pending commands by node, takes one pooled connection per node (in node
 * order, so two threads never wait on each other), writes every node's
 * pipeline before reading any reply, then reads the replies. A MOVED
 * reply re-routes its command (and schedules a slot map refresh), ASK
 * re-sends it once to the named node behind ASKING, NOSCRIPT re-sends an
 * EVALSHA as EVAL, TRYAGAIN waits briefly; each needs another round, at
 * most MAX_ROUNDS. So a policy_mget costs one round trip (per node, in
 * parallel) unless the cluster is resharding.
 *
 * Failure behaviour
 * -----------------
 * Connections have a connect timeout and a command timeout (socket
 * SO_RCVTIMEO/SO_SNDTIMEO via redisSetTimeout), so a frozen server makes a
 * call fail after the timeout, never hang. A connection that fails is
 * freed. A node whose connect or command failed is marked down for
 * retry_ms: calls that need it fail at once with ADB_ECACHE, and the first
 * call after the pause probes it (connects); others keep failing fast
 * until that probe succeeds. A pooled connection that turns out closed
 * (EOF/reset: the server restarted) is retried once on a new connection.
 *
 * Freshness (the epoch)
 * ---------------------
 * Every policy hash carries the epoch it was written under (field "~e");
 * a read also GETs "adb:epoch" in the same pipeline and only counts an
 * entry as a hit when the two match. A policy_apply that fails leaves the
 * handle "dirty": before its next policy read it sets a new random epoch,
 * which invalidates every policy entry for every replica at once. Failed
 * blob writes and deletes are remembered and replayed as DELs before the
 * handle serves a blob again. See docs/redis.md for the exact guarantee.
 *
 * Tombstones
 * ----------
 * A tombstone (cache.h) is a policy hash with the field "~t" and no "~e",
 * expiring after tombstone_ms (ADB_TOMBSTONE_TTL_MS; a URL option taken
 * out here before the URL is parsed, a hook for tests). Its arm fields
 * have the layout of an entry's; only their versions count. APPLY_LUA
 * writes one on a missing key, merges into one (the higher version wins,
 * TTL restarted), and turns an entry into one on a gap (keeping the
 * entry's own versions, which are committed ones too). PUT_LUA compares
 * the load with every arm field of whatever hash is there, tombstone or
 * entry, of any epoch: versions in Redis are always committed ones, so an
 * entry of an old epoch (invisible, but still receiving applies) also
 * refuses a load older than itself; otherwise a load that raced an apply
 * to such an entry would be cached under the new epoch. policy_mget reads
 * "~t" too and counts a hash holding it as a miss; a blob GET of a hash
 * (policy or tombstone) is a miss as well.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "cache.h"
#include "redis_cluster.h"

#define MAX_ROUNDS 8
#define PENDING_MAX 4096   /* blob keys remembered for invalidation */
#define REFRESH_GAP_MS 100 /* at most one slot map refresh per gap */
#define EPOCH_KEY "adb:epoch"
#define EPOCH_FIELD "~e"
#define TOMB_FIELD "~t"
#define TOMB_OPT "tombstone_ms="
#define TOMB_MS_MAX 86400000 /* a day */

/* --------------------------------------------------------------- scripts */

/* KEYS[1] policy; ARGV: epoch, ttl_ms, then (action, "n sum sq v") pairs.
 * Keeps whatever hash is there (an entry of any epoch, or a tombstone)
 * when it holds an arm newer than the load's (absent = version 0). */
static const char PUT_LUA[] =
    "local k = KEYS[1]\n"
    "local nv = {}\n"
    "for i = 3, #ARGV, 2 do\n"
    "  nv[ARGV[i]] = tonumber(string.match(ARGV[i + 1], '(%S+)$'))\n"
    "end\n"
    "local all = redis.call('HGETALL', k)\n"
    "for i = 1, #all, 2 do\n"
    "  if string.sub(all[i], 1, 1) ~= '~' then\n"
    "    local cv = tonumber(string.match(all[i + 1], '(%S+)$')) or 0\n"
    "    if cv > (nv[all[i]] or 0) then return 0 end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', k)\n"
    "redis.call('HSET', k, '~e', ARGV[1])\n"
    "local i = 3\n"
    "while i <= #ARGV do\n"
    "  local j = math.min(i + 399, #ARGV)\n"
    "  redis.call('HSET', k, unpack(ARGV, i, j))\n"
    "  i = j + 1\n"
    "end\n"
    "redis.call('PEXPIRE', k, ARGV[2])\n"
    "return 1\n";

/* KEYS[1] policy; ARGV: count, tombstone ttl_ms, then (action, dn, dsum,
 * dsq, version) per arm. The per-arm version rule of cache.h, all arms or
 * none: returns 1 (applied or already included), -1 (a gap, or a sum out
 * of range: the entry becomes a tombstone) or 0 (not cached: a tombstone
 * is left, or merged into). tomb() raises each changed arm to at least its
 * new version. Sums (adb__sum in bandit.h) are added as hi * 2^32 + lo
 * with a carry, each part exact in Lua's doubles; written as one decimal
 * below 2^53 in magnitude, else as "hi:lo" (sum_format). */
static const char APPLY_LUA[] =
    "local k, n = KEYS[1], tonumber(ARGV[1])\n"
    "local B, HMAX = 4294967296, 4503599627370495\n"
    "local function sparse(s)\n"
    "  local h, l = string.match(s, '^(%-?%d+):(%d+)$')\n"
    "  if h then return tonumber(h), tonumber(l) end\n"
    "  local v = tonumber(s)\n"
    "  local hi = math.floor(v / B)\n"
    "  return hi, v - hi * B\n"
    "end\n"
    "local function sfmt(h, l)\n"
    "  if h >= -2097152 and h < 2097152 then\n"
    "    return string.format('%.0f', h * B + l)\n"
    "  end\n"
    "  return string.format('%.0f:%.0f', h, l)\n"
    "end\n"
    "local function ver(s)\n"
    "  return s and tonumber(string.match(s, '(%S+)$')) or 0\n"
    "end\n"
    "local function tomb()\n"
    "  local any = redis.call('EXISTS', k) == 1\n"
    "  for i = 0, n - 1 do\n"
    "    local b = 3 + i * 5\n"
    "    local v = tonumber(ARGV[b + 4])\n"
    "    if v >= 1 and v > ver(redis.call('HGET', k, ARGV[b])) then\n"
    "      redis.call('HSET', k, ARGV[b], '0 0 0 ' .. ARGV[b + 4])\n"
    "      any = true\n"
    "    end\n"
    "  end\n"
    "  if any then\n"
    "    redis.call('HDEL', k, '~e')\n"
    "    redis.call('HSET', k, '~t', '1')\n"
    "    redis.call('PEXPIRE', k, ARGV[2])\n"
    "  end\n"
    "end\n"
    "if redis.call('EXISTS', k) == 0 or\n"
    "   redis.call('HEXISTS', k, '~t') == 1 then\n"
    "  tomb()\n"
    "  return 0\n"
    "end\n"
    "local st, upd = {}, {}\n"
    "for i = 0, n - 1 do\n"
    "  local b = 3 + i * 5\n"
    "  local a, v = ARGV[b], tonumber(ARGV[b + 4])\n"
    "  local s = st[a]\n"
    "  if not s then\n"
    "    s = {0, 0, 0, 0, 0}\n"
    "    local cur = redis.call('HGET', k, a)\n"
    "    if cur then\n"
    "      local n, m, q, cv = string.match(cur,\n"
    "        '^(%S+) (%S+) (%S+) (%S+)$')\n"
    "      local mh, ml = sparse(m)\n"
    "      s = {tonumber(n), ml, tonumber(q), tonumber(cv), mh}\n"
    "    end\n"
    "    st[a] = s\n"
    "  end\n"
    "  if s[4] == v - 1 then\n"
    "    local dh, dl = sparse(ARGV[b + 2])\n"
    "    local l = s[2] + dl\n"
    "    local c = math.floor(l / B)\n"
    "    s[5] = s[5] + dh + c\n"
    "    if s[5] > HMAX or s[5] < -HMAX - 1 then\n"
    "      tomb()\n"
    "      return -1\n"
    "    end\n"
    "    s[1] = s[1] + tonumber(ARGV[b + 1])\n"
    "    s[2] = l - c * B\n"
    "    s[3] = s[3] + tonumber(ARGV[b + 3])\n"
    "    s[4] = v\n"
    "    upd[a] = s\n"
    "  elseif s[4] < v then\n"
    "    tomb()\n"
    "    return -1\n"
    "  end\n"
    "end\n"
    "for a, s in pairs(upd) do\n"
    "  redis.call('HSET', k, a, string.format('%d %s %.17g %d',\n"
    "    s[1], sfmt(s[5], s[2]), s[3], s[4]))\n"
    "end\n"
    "return 1\n";

/* ----------------------------------------------------------------- types */

typedef struct node {
  adb__redis_addr addr;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  redisContext **idle; /* pool_size slots */
  int n_idle;
  int open;                   /* connections idle or lent out */
  _Atomic int64_t down_until; /* monotonic ms; 0 = believed up */
} node;

typedef struct rcache {
  adb__cache base;
  adb__redis_url url;
  int64_t ttl_ms;
  int64_t tomb_ms; /* tombstone TTL */
  struct timeval connect_tv, cmd_tv;
  char put_sha[41], apply_sha[41];

  pthread_mutex_t mu; /* nodes[] growth and the slot map */
  node *nodes[ADB__REDIS_MAX_NODES];
  int n_nodes;
  int16_t slot_node[ADB__REDIS_SLOTS]; /* cluster: node index or -1 */
  atomic_int need_refresh, refreshing;
  _Atomic int64_t refresh_after; /* monotonic ms */

  atomic_int dirty;          /* failed applies not yet covered by a bump */
  pthread_mutex_t settle_mu; /* one bump at a time */

  pthread_mutex_t pend_mu; /* blob keys to DEL before serving blobs */
  char **pending;
  atomic_int n_pending;

  _Atomic int64_t hits, misses, errors, moved, ask, bumps, trips, rtt_ns;

  /* The background prober: settles the epoch and replays invalidations
   * while Redis is away, even when no reads come. */
  pthread_t prober;
  int prober_started, stopping; /* stopping under prober_mu */
  pthread_mutex_t prober_mu;
  pthread_cond_t prober_cv;
  uint64_t id; /* distinct per handle, for thread-local state */
} rcache;

static _Atomic uint64_t next_handle_id = 1;

/* One command of a batch. argv/lens are borrowed; reply is owned. */
typedef struct rcmd {
  int slot;
  int argc, fb_argc;
  const char **argv, **fb_argv; /* fb: EVAL form of an EVALSHA */
  size_t *lens, *fb_lens;
  redisReply *reply;
  int ask;  /* node to send to behind ASKING, or -1 */
  int fb;   /* send the fallback form */
  int node; /* this round's node */
} rcmd;

extern const adb__cache_methods adb__cache_redis;
extern const adb__cache_methods adb__cache_redis_cluster;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timeval ms_tv(int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  return tv;
}

static int fail(rcache *rc) {
  atomic_fetch_add(&rc->errors, 1);
  return ADB_ECACHE;
}

/* ------------------------------------------------------------ the pool */

static node *node_new(const adb__redis_addr *a, int pool) {
  node *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  n->idle = calloc((size_t)pool, sizeof *n->idle);
  if (!n->idle) {
    free(n);
    return NULL;
  }
  n->addr = *a;
  pthread_mutex_init(&n->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&n->cv, &ca);
  pthread_condattr_destroy(&ca);
  return n;
}

static void node_free(node *n) {
  if (!n) return;
  for (int i = 0; i < n->n_idle; i++)
    redisFree(n->idle[i]);
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
  free(n->idle);
  free(n);
}

/* Sends one command on a fresh connection and checks for a status reply. */
static int setup_cmd(redisContext *c, int argc, const char **argv) {
  redisReply *r = redisCommandArgv(c, argc, argv, NULL);
  int ok = r && r->type == REDIS_REPLY_STATUS;
  if (r) freeReplyObject(r);
  return ok ? ADB_OK : ADB_ECACHE;
}

static redisContext *node_connect(rcache *rc, node *n) {
  redisContext *c =
      redisConnectWithTimeout(n->addr.host, n->addr.port, rc->connect_tv);
  if (!c) return NULL;
  if (c->err || redisSetTimeout(c, rc->cmd_tv) != REDIS_OK) goto fail;
  redisEnableKeepAlive(c);
  if (rc->url.password[0]) {
    const char *a[] = {"AUTH", rc->url.user, rc->url.password};
    int argc = rc->url.user[0] ? 3 : 2;
    if (argc == 2) a[1] = rc->url.password;
    if (setup_cmd(c, argc, a) != ADB_OK) goto fail;
  }
  if (!rc->url.cluster && rc->url.db != 0) {
    char db[16];
    snprintf(db, sizeof db, "%d", rc->url.db);
    const char *a[] = {"SELECT", db};
    if (setup_cmd(c, 2, a) != ADB_OK) goto fail;
  }
  return c;
fail:
  redisFree(c);
  return NULL;
}

/* Marks n unreachable for retry_ms and drops its idle connections (they
 * lead to the same dead or frozen server). */
static void node_mark_down(rcache *rc, node *n) {
  pthread_mutex_lock(&n->mu);
  n->down_until = mono_ms() + rc->url.retry_ms;
  int k = n->n_idle;
  redisContext *drop[k > 0 ? k : 1];
  memcpy(drop, n->idle, (size_t)k * sizeof *drop);
  n->n_idle = 0;
  n->open -= k;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  for (int i = 0; i < k; i++)
    redisFree(drop[i]);
  if (rc->url.cluster) atomic_store(&rc->need_refresh, 1);
}

/* Drops idle connections of n without marking it down. */
static void node_drain(node *n) {
  pthread_mutex_lock(&n->mu);
  int k = n->n_idle;
  redisContext *drop[k > 0 ? k : 1];
  memcpy(drop, n->idle, (size_t)k * sizeof *drop);
  n->n_idle = 0;
  n->open -= k;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  for (int i = 0; i < k; i++)
    redisFree(drop[i]);
}

/* Set while policy_apply runs: a committed change that reaches no entry
 * and leaves no tombstone can let another replica cache a stale load, so
 * an apply probes a node believed down instead of failing fast. */
static _Thread_local int tl_probe_always;

/* Takes a connection to n: an idle one, a new one while fewer than pool
 * are open, or waits (up to the command timeout) for one to come back.
 * *fresh is 1 for a new connection. Fails at once while n is down (but
 * for policy_apply, see tl_probe_always). */
static int node_acquire(rcache *rc, node *n, redisContext **out, int *fresh) {
  int64_t deadline = mono_ms() + rc->url.timeout_ms;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    int64_t now = mono_ms();
    if (n->down_until > now && !tl_probe_always) break;
    if (n->n_idle > 0) {
      *out = n->idle[--n->n_idle];
      *fresh = 0;
      pthread_mutex_unlock(&n->mu);
      return ADB_OK;
    }
    if (n->open < rc->url.pool) {
      n->open++;
      /* While probing a node that was down, others keep failing fast. */
      if (n->down_until) n->down_until = now + rc->url.retry_ms;
      pthread_mutex_unlock(&n->mu);
      *out = node_connect(rc, n);
      *fresh = 1;
      pthread_mutex_lock(&n->mu);
      if (*out)
        n->down_until = 0;
      else
        n->open--;
      pthread_cond_broadcast(&n->cv);
      pthread_mutex_unlock(&n->mu);
      if (!*out) node_mark_down(rc, n);
      return *out ? ADB_OK : ADB_ECACHE;
    }
    if (now >= deadline) break;
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    pthread_cond_timedwait(&n->cv, &n->mu, &ts);
  }
  pthread_mutex_unlock(&n->mu);
  return ADB_ECACHE;
}

/* Returns a connection; a broken one is freed. */
static void node_release(node *n, redisContext *c, int broken) {
  pthread_mutex_lock(&n->mu);
  if (broken)
    n->open--;
  else
    n->idle[n->n_idle++] = c;
  pthread_cond_signal(&n->cv);
  pthread_mutex_unlock(&n->mu);
  if (broken) redisFree(c);
}

/* -------------------------------------------------------------- routing */

/* Index of the node at addr, created if new (under rc->mu); -1 if full. */
static int node_index_locked(rcache *rc, const adb__redis_addr *a) {
  for (int i = 0; i < rc->n_nodes; i++)
    if (rc->nodes[i]->addr.port == a->port &&
        strcmp(rc->nodes[i]->addr.host, a->host) == 0)
      return i;
  if (rc->n_nodes == ADB__REDIS_MAX_NODES) return -1;
  node *n = node_new(a, rc->url.pool);
  if (!n) return -1;
  rc->nodes[rc->n_nodes] = n;
  return rc->n_nodes++;
}

static int node_index(rcache *rc, const adb__redis_addr *a) {
  pthread_mutex_lock(&rc->mu);
  int i = node_index_locked(rc, a);
  pthread_mutex_unlock(&rc->mu);
  return i;
}

static node *node_at(rcache *rc, int i) {
  pthread_mutex_lock(&rc->mu);
  node *n = rc->nodes[i];
  pthread_mutex_unlock(&rc->mu);
  return n;
}

/* Node for a slot: the slot map's, else (unknown slot) the first node that
 * is not down, which will redirect us. */
static int route_slot(rcache *rc, int slot) {
  if (!rc->url.cluster) return 0;
  pthread_mutex_lock(&rc->mu);
  int i = rc->slot_node[slot];
  if (i < 0) {
    atomic_store(&rc->need_refresh, 1);
    int64_t now = mono_ms();
    i = 0;
    for (int j = 0; j < rc->n_nodes; j++)
      if (rc->nodes[j]->down_until <= now) {
        i = j;
        break;
      }
  }
  pthread_mutex_unlock(&rc->mu);
  return i;
}

/* Reads CLUSTER SLOTS from node i into the slot map. */
static int refresh_from(rcache *rc, int i) {
  node *n = node_at(rc, i);
  redisContext *c;
  int fresh;
  if (node_acquire(rc, n, &c, &fresh) != ADB_OK) return ADB_ECACHE;
  redisReply *r = redisCommand(c, "CLUSTER SLOTS");
  node_release(n, c, r == NULL);
  if (!r) {
    node_mark_down(rc, n);
    return ADB_ECACHE;
  }
  adb__slot_map *m = malloc(sizeof *m);
  int ok = m && adb__slot_map_parse(r, n->addr.host, m) == ADB_OK;
  freeReplyObject(r);
  if (ok) {
    int16_t idx[ADB__REDIS_MAX_NODES];
    pthread_mutex_lock(&rc->mu);
    for (int a = 0; a < m->n_addrs; a++)
      idx[a] = (int16_t)node_index_locked(rc, &m->addrs[a]);
    for (int s = 0; s < ADB__REDIS_SLOTS; s++)
      rc->slot_node[s] = m->slot[s] < 0 ? -1 : idx[m->slot[s]];
    pthread_mutex_unlock(&rc->mu);
  }
  free(m);
  return ok ? ADB_OK : ADB_ECACHE;
}

/* Refreshes the slot map when asked for and not done in the last
 * REFRESH_GAP_MS, by one thread at a time, from the first node that
 * answers. */
static void maybe_refresh(rcache *rc) {
  if (!rc->url.cluster || !atomic_load(&rc->need_refresh)) return;
  int64_t now = mono_ms();
  if (now < atomic_load(&rc->refresh_after)) return;
  if (atomic_exchange(&rc->refreshing, 1)) return;
  atomic_store(&rc->need_refresh, 0);
  atomic_store(&rc->refresh_after, now + REFRESH_GAP_MS);
  pthread_mutex_lock(&rc->mu);
  int nn = rc->n_nodes;
  pthread_mutex_unlock(&rc->mu);
  int ok = 0;
  for (int i = 0; i < nn && !ok; i++)
    ok = refresh_from(rc, i) == ADB_OK;
  if (!ok) atomic_store(&rc->need_refresh, 1);
  atomic_store(&rc->refreshing, 0);
}

/* ------------------------------------------------------------ execution */

static int reply_starts(const redisReply *r, const char *prefix) {
  size_t n = strlen(prefix);
  return r->type == REDIS_REPLY_ERROR && r->len >= n &&
         memcmp(r->str, prefix, n) == 0;
}

/* Decides what a reply means for its command: final (kept), or pending
 * again after a redirection, NOSCRIPT or TRYAGAIN. */
static void take_reply(rcache *rc, rcmd *c, redisReply *r) {
  int is_ask, slot;
  adb__redis_addr to;
  c->ask = -1;
  if (r->type == REDIS_REPLY_ERROR &&
      adb__redis_redirect_parse(r->str, r->len, &is_ask, &slot, &to) ==
          ADB_OK) {
    int i = node_index(rc, &to);
    if (i >= 0) {
      if (is_ask) {
        c->ask = i;
        atomic_fetch_add(&rc->ask, 1);
      } else {
        pthread_mutex_lock(&rc->mu);
        rc->slot_node[slot] = (int16_t)i;
        pthread_mutex_unlock(&rc->mu);
        atomic_store(&rc->need_refresh, 1);
        atomic_fetch_add(&rc->moved, 1);
      }
      freeReplyObject(r);
      return;
    }
  } else if (c->fb_argv && !c->fb && reply_starts(r, "NOSCRIPT")) {
    c->fb = 1;
    freeReplyObject(r);
    return;
  } else if (reply_starts(r, "TRYAGAIN")) {
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
    freeReplyObject(r);
    return;
  }
  c->reply = r;
}

static int append_cmd(redisContext *ctx, const rcmd *c) {
  if (c->ask >= 0 && redisAppendCommand(ctx, "ASKING") != REDIS_OK)
    return REDIS_ERR;
  if (c->fb)
    return redisAppendCommandArgv(ctx, c->fb_argc, c->fb_argv, c->fb_lens);
  return redisAppendCommandArgv(ctx, c->argc, c->argv, c->lens);
}

static int flush_out(redisContext *ctx) {
  int done = 0;
  while (!done)
    if (redisBufferWrite(ctx, &done) != REDIS_OK) return REDIS_ERR;
  return REDIS_OK;
}

/* Connection failure kinds: a closed pooled connection is retried on a new
 * one; anything else (timeout, refused) marks the node down. */
enum { OK_CONN = 0, STALE_CONN = 1, DEAD_CONN = 2 };

static int classify(redisContext *ctx, int err_no, int fresh) {
  int closed =
      ctx->err == REDIS_ERR_EOF ||
      (ctx->err == REDIS_ERR_IO && (err_no == ECONNRESET || err_no == EPIPE));
  return closed && !fresh ? STALE_CONN : DEAD_CONN;
}

/* Reads the replies of node j's commands this round. */
static int read_node(rcache *rc, redisContext *ctx, rcmd *cmds, int n, int j,
                     int fresh) {
  for (int i = 0; i < n; i++) {
    rcmd *c = &cmds[i];
    if (c->reply || c->node != j) continue;
    redisReply *r = NULL;
    if (c->ask >= 0) {
      if (redisGetReply(ctx, (void **)&r) != REDIS_OK)
        return classify(ctx, errno, fresh);
      freeReplyObject(r);
    }
    if (redisGetReply(ctx, (void **)&r) != REDIS_OK)
      return classify(ctx, errno, fresh);
    take_reply(rc, c, r);
  }
  return OK_CONN;
}

/* One round: every pending command to its node, all written before any
 * reply is read. Returns OK_CONN, STALE_CONN or DEAD_CONN (worst seen). */
static int run_round(rcache *rc, rcmd *cmds, int n) {
  int used[ADB__REDIS_MAX_NODES] = {0}, nodes[ADB__REDIS_MAX_NODES], nn = 0;
  for (int i = 0; i < n; i++)
    if (!cmds[i].reply) used[cmds[i].node] = 1;
  for (int j = 0; j < ADB__REDIS_MAX_NODES; j++)
    if (used[j]) nodes[nn++] = j;
  redisContext *ctx[ADB__REDIS_MAX_NODES];
  int fresh[ADB__REDIS_MAX_NODES], state[ADB__REDIS_MAX_NODES];
  node *nd[ADB__REDIS_MAX_NODES];
  int got = 0;
  for (; got < nn; got++) {
    nd[got] = node_at(rc, nodes[got]);
    if (node_acquire(rc, nd[got], &ctx[got], &fresh[got]) != ADB_OK) break;
  }
  if (got < nn) { /* unreachable node: nothing was sent */
    for (int k = 0; k < got; k++)
      node_release(nd[k], ctx[k], 0);
    return DEAD_CONN;
  }
  for (int k = 0; k < nn; k++) {
    state[k] = OK_CONN;
    for (int i = 0; i < n && state[k] == OK_CONN; i++)
      if (!cmds[i].reply && cmds[i].node == nodes[k] &&
          append_cmd(ctx[k], &cmds[i]) != REDIS_OK)
        state[k] = DEAD_CONN;
    if (state[k] == OK_CONN && flush_out(ctx[k]) != REDIS_OK)
      state[k] = classify(ctx[k], errno, fresh[k]);
  }
  int worst = OK_CONN;
  for (int k = 0; k < nn; k++) {
    if (state[k] == OK_CONN)
      state[k] = read_node(rc, ctx[k], cmds, n, nodes[k], fresh[k]);
    node_release(nd[k], ctx[k], state[k] != OK_CONN);
    if (state[k] == STALE_CONN) node_drain(nd[k]);
    if (state[k] == DEAD_CONN) node_mark_down(rc, nd[k]);
    if (state[k] > worst) worst = state[k];
  }
  return worst;
}

static void free_replies(rcmd *cmds, int n) {
  for (int i = 0; i < n; i++) {
    if (cmds[i].reply) freeReplyObject(cmds[i].reply);
    cmds[i].reply = NULL;
  }
}

/* Runs a batch to completion: ADB_OK with every cmds[i].reply set (error
 * replies included), or ADB_ECACHE with none. */
static int exec_cmds(rcache *rc, rcmd *cmds, int n) {
  int64_t t0 = mono_ns();
  for (int i = 0; i < n; i++) {
    cmds[i].reply = NULL;
    cmds[i].ask = -1;
    cmds[i].fb = 0;
  }
  int rc_ = ADB_ECACHE, stale_retried = 0;
  for (int round = 0; round < MAX_ROUNDS; round++) {
    int pending = 0;
    for (int i = 0; i < n; i++)
      if (!cmds[i].reply) {
        cmds[i].node =
            cmds[i].ask >= 0 ? cmds[i].ask : route_slot(rc, cmds[i].slot);
        pending++;
      }
    if (!pending) {
      rc_ = ADB_OK;
      break;
    }
    int st = run_round(rc, cmds, n);
    if (st == DEAD_CONN || (st == STALE_CONN && stale_retried++)) break;
  }
  maybe_refresh(rc);
  if (rc_ != ADB_OK) free_replies(cmds, n);
  atomic_fetch_add(&rc->trips, 1);
  atomic_fetch_add(&rc->rtt_ns, mono_ns() - t0);
  return rc_;
}

static void cmd_init(rcmd *c, const char *key, int argc, const char **argv,
                     size_t *lens) {
  memset(c, 0, sizeof *c);
  c->slot = key ? adb__redis_key_slot(key, strlen(key)) : 0;
  c->argc = argc;
  c->argv = argv;
  c->lens = lens;
}

/* Runs one command; *out is its reply (an error reply is ADB_ECACHE). */
static int exec_one(rcache *rc, const char *key, int argc, const char **argv,
                    size_t *lens, redisReply **out) {
  rcmd c;
  cmd_init(&c, key, argc, argv, lens);
  int r = exec_cmds(rc, &c, 1);
  if (r != ADB_OK) return r;
  if (c.reply->type == REDIS_REPLY_ERROR) {
    freeReplyObject(c.reply);
    return ADB_ECACHE;
  }
  *out = c.reply;
  return ADB_OK;
}

/* ---------------------------------------------------------- the epoch */

static uint64_t parse_u64(const char *s) {
  return s ? strtoull(s, NULL, 10) : 0;
}

static uint64_t new_epoch(void) {
  uint64_t x = 0;
  if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
    x = (uint64_t)mono_ns() * 0x9E3779B97F4A7C15ull;
  x &= 0x7FFFFFFFFFFFFFFFull;
  return x ? x : 1;
}

/* A dirty handle (a policy_apply failed) sets a new epoch before it reads
 * a policy again; until that succeeds its policy reads fail. dirty counts
 * failures: one that happens while a bump is in flight is not cleared by
 * it, so every failure is followed by a bump sent after it. */
static int settle_epoch(rcache *rc) {
  if (!atomic_load(&rc->dirty)) return ADB_OK;
  pthread_mutex_lock(&rc->settle_mu);
  int r = ADB_OK, seen = atomic_load(&rc->dirty);
  if (seen) {
    uint64_t e = new_epoch();
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, e);
    const char *argv[] = {"SET", EPOCH_KEY, buf};
    redisReply *rep;
    r = exec_one(rc, EPOCH_KEY, 3, argv, NULL, &rep);
    if (r == ADB_OK) {
      freeReplyObject(rep);
      atomic_compare_exchange_strong(&rc->dirty, &seen, 0);
      atomic_fetch_add(&rc->bumps, 1);
    }
  }
  pthread_mutex_unlock(&rc->settle_mu);
  return r;
}

/* The epoch a put writes under is the one THIS thread's last policy read
 * saw: the coordinator reads (a miss), loads from the store, then puts, on
 * one thread. An entry put under an epoch that has changed since is
 * invisible, so a load that straddles an epoch change or a Redis restart
 * cannot be served. A read that failed (Redis down) allows no put until
 * the next successful read; a Redis without an epoch (new, or restarted)
 * gets a random one first, and the read that found none allows no put. */
static _Thread_local uint64_t tl_seen_id;    /* the handle's id */
static _Thread_local uint64_t tl_seen_epoch; /* 0: put nothing */

static void seen_epoch(const rcache *rc, uint64_t epoch) {
  tl_seen_id = rc->id;
  tl_seen_epoch = epoch;
}

/* SET adb:epoch <random> NX GET: a Redis without an epoch gets one.
 * Returns the epoch now in place (ours or a concurrent writer's), 0 on
 * failure. */
static uint64_t init_epoch(rcache *rc) {
  uint64_t mine = new_epoch(), now = 0;
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRIu64, mine);
  const char *argv[] = {"SET", EPOCH_KEY, buf, "NX", "GET"};
  redisReply *r;
  if (exec_one(rc, EPOCH_KEY, 5, argv, NULL, &r) != ADB_OK) return 0;
  if (r->type == REDIS_REPLY_NIL) now = mine;
  if (r->type == REDIS_REPLY_STRING) now = parse_u64(r->str);
  freeReplyObject(r);
  return now;
}

/* ------------------------------------------------------------ policies */

/* A sum as APPLY_LUA writes it: one decimal below 2^53 in magnitude (exact
 * in Lua), else "hi:lo" (adb__sum_hi, adb__sum_lo). */
static void sum_format(char *buf, size_t cap, adb__sum v) {
  const adb__sum lim = (adb__sum)1 << 53;
  if (v > -lim && v < lim)
    snprintf(buf, cap, "%" PRId64, (int64_t)v);
  else
    snprintf(buf, cap, "%" PRId64 ":%" PRId64, adb__sum_hi(v), adb__sum_lo(v));
}

static adb__sum sum_parse(char *p, char **end) {
  int64_t v = strtoll(p, &p, 10);
  if (*p == ':') {
    int64_t lo = strtoll(p + 1, &p, 10);
    *end = p;
    return adb__sum_of(v, lo);
  }
  *end = p;
  return v;
}

#define ARM_BUF 128 /* "n sum sq version", at most 20 + 32 + 24 + 20 + 3 */
static void arm_format(char *buf, size_t cap, const adb__arm_stats *s) {
  char sum[48];
  sum_format(sum, sizeof sum, s->sum_micro);
  snprintf(buf, cap, "%" PRId64 " %s %.17g %" PRId64, s->n, sum, s->sum_sq,
           s->version);
}

static void arm_parse(const redisReply *r, adb__arm_stats *s) {
  memset(s, 0, sizeof *s);
  if (r->type != REDIS_REPLY_STRING) return;
  char *p = r->str;
  s->n = strtoll(p, &p, 10);
  s->sum_micro = sum_parse(p, &p);
  s->sum_sq = strtod(p, &p);
  s->version = strtoll(p, &p, 10);
}

/* Fills stats/found of key k from its HMGET reply [~e, ~t, arm...]: a
 * hit is an entry of the current epoch that is not a tombstone. */
static void take_policy(rcache *rc, const redisReply *r, const char *epoch,
                        int n_actions, adb__arm_stats *stats, int *found) {
  memset(stats, 0, (size_t)n_actions * sizeof *stats);
  *found = r->type == REDIS_REPLY_ARRAY &&
           r->elements == (size_t)n_actions + 2 &&
           r->element[0]->type == REDIS_REPLY_STRING &&
           strcmp(r->element[0]->str, epoch) == 0 &&
           r->element[1]->type == REDIS_REPLY_NIL;
  if (*found)
    for (int a = 0; a < n_actions; a++)
      arm_parse(r->element[a + 2], &stats[a]);
  atomic_fetch_add(*found ? &rc->hits : &rc->misses, 1);
}

static int policy_mget(adb__cache *c, int n_keys, const char *const *keys,
                       const adb__ids *ids, adb__arm_stats *stats, int *found) {
  rcache *rc = (rcache *)c;
  if (n_keys <= 0) return ADB_OK;
  int n_actions = ids ? ids->n : 0;
  const char *const *actions = ids ? ids->id : NULL;
  if (settle_epoch(rc) != ADB_OK) return fail(rc);
  int per = n_actions + 4; /* HMGET key ~e ~t actions... */
  size_t nargs = (size_t)n_keys * (size_t)per;
  const char **argv = malloc(nargs * sizeof *argv);
  rcmd *cmds = malloc((size_t)(n_keys + 1) * sizeof *cmds);
  if (!argv || !cmds) {
    free(argv);
    free(cmds);
    return fail(rc);
  }
  static const char *get_epoch[] = {"GET", EPOCH_KEY};
  cmd_init(&cmds[0], EPOCH_KEY, 2, get_epoch, NULL);
  for (int k = 0; k < n_keys; k++) {
    const char **a = argv + (size_t)k * (size_t)per;
    a[0] = "HMGET";
    a[1] = keys[k];
    a[2] = EPOCH_FIELD;
    a[3] = TOMB_FIELD;
    for (int i = 0; i < n_actions; i++)
      a[4 + i] = actions[i];
    cmd_init(&cmds[k + 1], keys[k], per, a, NULL);
  }
  int r = exec_cmds(rc, cmds, n_keys + 1);
  if (r == ADB_OK && cmds[0].reply->type != REDIS_REPLY_STRING &&
      cmds[0].reply->type != REDIS_REPLY_NIL)
    r = ADB_ECACHE;
  for (int k = 1; r == ADB_OK && k <= n_keys; k++)
    if (cmds[k].reply->type != REDIS_REPLY_ARRAY) r = ADB_ECACHE;
  seen_epoch(rc, 0);
  if (r == ADB_OK) {
    const redisReply *e = cmds[0].reply;
    const char *epoch = e->type == REDIS_REPLY_STRING ? e->str : "0";
    /* A Redis without an epoch is new or restarted: this read came after
     * that, so the load that follows may be cached under a new epoch. */
    seen_epoch(rc,
               e->type == REDIS_REPLY_NIL ? init_epoch(rc) : parse_u64(epoch));
    for (int k = 0; k < n_keys; k++)
      take_policy(rc, cmds[k + 1].reply, epoch, n_actions,
                  stats + (size_t)k * (size_t)n_actions, &found[k]);
  }
  free_replies(cmds, n_keys + 1);
  free(cmds);
  free(argv);
  return r == ADB_OK ? ADB_OK : fail(rc);
}

/* Runs a script by EVALSHA, falling back to EVAL on NOSCRIPT. args are the
 * script's ARGV. *out gets the reply (ADB_ECACHE on an error reply). */
static int run_script(rcache *rc, const char *sha, const char *lua,
                      const char *key, int nargs, const char **args,
                      size_t *lens, redisReply **out) {
  int argc = nargs + 4; /* EVALSHA sha 1 key args... */
  const char **argv = malloc(2 * (size_t)argc * sizeof *argv);
  size_t *alen = malloc(2 * (size_t)argc * sizeof *alen);
  if (!argv || !alen) {
    free(argv);
    free(alen);
    return ADB_ECACHE;
  }
  const char **fb = argv + argc;
  size_t *fblen = alen + argc;
  argv[0] = "EVALSHA", argv[1] = sha, fb[0] = "EVAL", fb[1] = lua;
  argv[2] = fb[2] = "1";
  argv[3] = fb[3] = key;
  for (int i = 0; i < 4; i++) {
    alen[i] = strlen(argv[i]);
    fblen[i] = strlen(fb[i]);
  }
  for (int i = 0; i < nargs; i++) {
    argv[4 + i] = fb[4 + i] = args[i];
    alen[4 + i] = fblen[4 + i] = lens ? lens[i] : strlen(args[i]);
  }
  rcmd c;
  cmd_init(&c, key, argc, argv, alen);
  c.fb_argv = fb;
  c.fb_lens = fblen;
  c.fb_argc = argc;
  int r = exec_cmds(rc, &c, 1);
  free(argv);
  free(alen);
  if (r != ADB_OK) return r;
  if (c.reply->type == REDIS_REPLY_ERROR) {
    freeReplyObject(c.reply);
    return ADB_ECACHE;
  }
  *out = c.reply;
  return ADB_OK;
}

/* For a put on a thread that has read no policy through rc (direct use of
 * the cache): the current epoch, made if missing. */
static int put_epoch(rcache *rc, char out[24]) {
  uint64_t e = tl_seen_epoch;
  if (tl_seen_id != rc->id) {
    const char *argv[] = {"GET", EPOCH_KEY};
    redisReply *r;
    if (exec_one(rc, EPOCH_KEY, 2, argv, NULL, &r) != ADB_OK) return ADB_ECACHE;
    e = parse_u64(r->type == REDIS_REPLY_STRING ? r->str : NULL);
    freeReplyObject(r);
    if (!e && !(e = init_epoch(rc))) return ADB_ECACHE;
  }
  snprintf(out, 24, "%" PRIu64, e);
  return e ? ADB_OK : ADB_ENOTFOUND;
}

static int policy_put(adb__cache *c, const char *key, const adb__policy *p,
                      int64_t ttl_ms) {
  rcache *rc = (rcache *)c;
  char epoch[24];
  int pe = put_epoch(rc, epoch);
  if (pe == ADB_ENOTFOUND) return ADB_OK; /* no safe epoch: cache nothing */
  if (pe != ADB_OK) return fail(rc);
  int nargs = 2 + 2 * p->n;
  const char **args = malloc((size_t)nargs * sizeof *args);
  char *bufs = malloc((size_t)p->n * ARM_BUF + 24);
  if (!args || !bufs) {
    free(args);
    free(bufs);
    return fail(rc);
  }
  char *ttl = bufs + (size_t)p->n * ARM_BUF;
  snprintf(ttl, 24, "%" PRId64, ttl_ms > 0 ? ttl_ms : rc->ttl_ms);
  args[0] = epoch;
  args[1] = ttl;
  for (int i = 0; i < p->n; i++) {
    arm_format(bufs + (size_t)i * ARM_BUF, ARM_BUF, &p->arms[i].s);
    args[2 + 2 * i] = p->arms[i].action;
    args[3 + 2 * i] = bufs + (size_t)i * ARM_BUF;
  }
  redisReply *r = NULL;
  int rv = run_script(rc, rc->put_sha, PUT_LUA, key, nargs, args, NULL, &r);
  if (r) freeReplyObject(r);
  free(args);
  free(bufs);
  return rv == ADB_OK ? ADB_OK : fail(rc);
}

static int policy_apply(adb__cache *c, const char *key, int n,
                        const char *const *actions,
                        const adb__arm_stats *deltas) {
  rcache *rc = (rcache *)c;
  int nargs = 2 + 5 * n;
  const char **args = malloc((size_t)nargs * sizeof *args);
  char *bufs = malloc((size_t)n * 4 * 32 + 48);
  if (!args || !bufs) {
    free(args);
    free(bufs);
    atomic_fetch_add(&rc->dirty, 1);
    return fail(rc);
  }
  char *cnt = bufs + (size_t)n * 4 * 32, *tomb_ttl = cnt + 16;
  snprintf(cnt, 16, "%d", n);
  snprintf(tomb_ttl, 32, "%" PRId64, rc->tomb_ms);
  args[0] = cnt;
  args[1] = tomb_ttl;
  for (int i = 0; i < n; i++) {
    char *b = bufs + (size_t)i * 4 * 32;
    const adb__arm_stats *d = &deltas[i];
    snprintf(b, 32, "%" PRId64, d->n);
    sum_format(b + 32, 32, d->sum_micro);
    snprintf(b + 64, 32, "%.17g", d->sum_sq);
    snprintf(b + 96, 32, "%" PRId64, d->version);
    args[2 + 5 * i] = actions[i];
    for (int f = 0; f < 4; f++)
      args[3 + 5 * i + f] = b + 32 * f;
  }
  redisReply *r = NULL;
  tl_probe_always = 1;
  int rv = run_script(rc, rc->apply_sha, APPLY_LUA, key, nargs, args, NULL, &r);
  tl_probe_always = 0;
  if (r) freeReplyObject(r);
  free(args);
  free(bufs);
  if (rv == ADB_OK) return ADB_OK;
  atomic_fetch_add(&rc->dirty, 1);
  return fail(rc);
}

/* --------------------------------------------------------------- blobs */

/* Remembers a blob key whose write or delete failed. */
static void pending_add(rcache *rc, const char *key) {
  pthread_mutex_lock(&rc->pend_mu);
  int n = atomic_load(&rc->n_pending);
  char *k = n < PENDING_MAX ? strdup(key) : NULL;
  if (k) {
    rc->pending[n] = k;
    atomic_store(&rc->n_pending, n + 1);
  }
  pthread_mutex_unlock(&rc->pend_mu);
}

/* Deletes the remembered keys (one pipeline); the blob methods run this
 * first, and fail while it fails. */
static int pending_flush(rcache *rc) {
  if (atomic_load(&rc->n_pending) == 0) return ADB_OK;
  pthread_mutex_lock(&rc->pend_mu);
  int n = atomic_load(&rc->n_pending), r = ADB_ENOMEM;
  const char **argv = malloc(2 * (size_t)n * sizeof *argv);
  rcmd *cmds = malloc((size_t)n * sizeof *cmds);
  if (argv && cmds) {
    for (int i = 0; i < n; i++) {
      argv[2 * i] = "DEL";
      argv[2 * i + 1] = rc->pending[i];
      cmd_init(&cmds[i], rc->pending[i], 2, argv + 2 * i, NULL);
    }
    r = exec_cmds(rc, cmds, n);
    for (int i = 0; r == ADB_OK && i < n; i++)
      if (cmds[i].reply->type != REDIS_REPLY_INTEGER) r = ADB_ECACHE;
    if (r == ADB_OK) free_replies(cmds, n);
  }
  if (r == ADB_OK) {
    for (int i = 0; i < n; i++)
      free(rc->pending[i]);
    atomic_store(&rc->n_pending, 0);
  }
  pthread_mutex_unlock(&rc->pend_mu);
  free(argv);
  free(cmds);
  return r == ADB_OK ? ADB_OK : ADB_ECACHE;
}

static int blob_get(adb__cache *c, const char *key, void **val, size_t *len) {
  rcache *rc = (rcache *)c;
  if (pending_flush(rc) != ADB_OK) return fail(rc);
  const char *argv[] = {"GET", key};
  rcmd cmd;
  cmd_init(&cmd, key, 2, argv, NULL);
  if (exec_cmds(rc, &cmd, 1) != ADB_OK) return fail(rc);
  redisReply *r = cmd.reply;
  int rv = ADB_ENOTFOUND; /* also a policy hash or tombstone (WRONGTYPE) */
  if (r->type == REDIS_REPLY_STRING) {
    *val = malloc(r->len ? r->len : 1);
    if (*val) {
      memcpy(*val, r->str, r->len);
      *len = r->len;
      rv = ADB_OK;
    } else {
      rv = ADB_ENOMEM;
    }
  } else if (r->type != REDIS_REPLY_NIL && !reply_starts(r, "WRONGTYPE")) {
    rv = ADB_ECACHE;
  }
  freeReplyObject(r);
  if (rv == ADB_ECACHE) return fail(rc);
  if (rv != ADB_ENOMEM)
    atomic_fetch_add(rv == ADB_OK ? &rc->hits : &rc->misses, 1);
  return rv;
}

static int blob_set(adb__cache *c, const char *key, const void *val, size_t len,
                    int64_t ttl_ms) {
  rcache *rc = (rcache *)c;
  char px[24];
  snprintf(px, sizeof px, "%" PRId64, ttl_ms > 0 ? ttl_ms : rc->ttl_ms);
  const char *argv[] = {"SET", key, val ? (const char *)val : "", "PX", px};
  size_t lens[] = {3, strlen(key), val ? len : 0, 2, strlen(px)};
  redisReply *r = NULL;
  int rv = pending_flush(rc);
  if (rv == ADB_OK) rv = exec_one(rc, key, 5, argv, lens, &r);
  if (r) freeReplyObject(r);
  if (rv == ADB_OK) return ADB_OK;
  pending_add(rc, key);
  return fail(rc);
}

static int blob_del(adb__cache *c, const char *key) {
  rcache *rc = (rcache *)c;
  const char *argv[] = {"DEL", key};
  redisReply *r = NULL;
  int rv = pending_flush(rc);
  if (rv == ADB_OK) rv = exec_one(rc, key, 2, argv, NULL, &r);
  if (r) freeReplyObject(r);
  if (rv == ADB_OK) return ADB_OK;
  pending_add(rc, key);
  return fail(rc);
}

/* ------------------------------------------------------- open and close */

static void sha1_hex(const char *s, char out[41]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL);
  for (unsigned int i = 0; i < n && i < 20; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
  out[40] = '\0';
}

/* Every retry_ms (at least 50 ms): settle the epoch and replay blob
 * invalidations if either is owed. */
static void *prober_main(void *arg) {
  rcache *rc = arg;
  int64_t gap = rc->url.retry_ms > 50 ? rc->url.retry_ms : 50;
  pthread_mutex_lock(&rc->prober_mu);
  while (!rc->stopping) {
    int64_t t = mono_ms() + gap;
    struct timespec ts = {t / 1000, (t % 1000) * 1000000};
    pthread_cond_timedwait(&rc->prober_cv, &rc->prober_mu, &ts);
    if (rc->stopping) break;
    pthread_mutex_unlock(&rc->prober_mu);
    settle_epoch(rc);
    pending_flush(rc);
    pthread_mutex_lock(&rc->prober_mu);
  }
  pthread_mutex_unlock(&rc->prober_mu);
  return NULL;
}

static void rcache_free(rcache *rc) {
  if (rc->prober_started) {
    pthread_mutex_lock(&rc->prober_mu);
    rc->stopping = 1;
    pthread_cond_signal(&rc->prober_cv);
    pthread_mutex_unlock(&rc->prober_mu);
    pthread_join(rc->prober, NULL);
  }
  pthread_mutex_destroy(&rc->prober_mu);
  pthread_cond_destroy(&rc->prober_cv);
  pthread_mutex_destroy(&rc->settle_mu);
  for (int i = 0; i < rc->n_nodes; i++)
    node_free(rc->nodes[i]);
  int np = atomic_load(&rc->n_pending);
  for (int i = 0; i < np; i++)
    free(rc->pending[i]);
  free(rc->pending);
  pthread_mutex_destroy(&rc->mu);
  pthread_mutex_destroy(&rc->pend_mu);
  free(rc);
}

static void redis_close(adb__cache *c) {
  if (c) rcache_free((rcache *)c);
}

/* hiredis writes with write(2): a server that went away would kill a
 * process that still has the default SIGPIPE action. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* Parses the value of tombstone_ms: 1..TOMB_MS_MAX. */
static int parse_tomb_ms(const char *v, size_t n, int64_t *ms) {
  int64_t x = 0;
  if (n == 0 || n > 9) return ADB_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return ADB_EINVAL;
    x = x * 10 + (v[i] - '0');
  }
  if (x < 1 || x > TOMB_MS_MAX) return ADB_EINVAL;
  *ms = x;
  return ADB_OK;
}

/* Copies url into *out (malloc'd) without the option tombstone_ms=N,
 * which is this file's business (the tombstone TTL, a hook for tests),
 * and sets *ms from it. The other options are left to the URL parser. */
static int take_tomb_opt(const char *url, char **out, int64_t *ms, char *err,
                         size_t errlen) {
  size_t len = strlen(url), k = strlen(TOMB_OPT);
  const char *q = strchr(url, '?');
  size_t head = q ? (size_t)(q - url) : len, w = head;
  char *o = malloc(len + 1);
  if (!o) return ADB_ENOMEM;
  memcpy(o, url, head);
  for (const char *p = q ? q + 1 : url + len; *p;) {
    size_t n = strcspn(p, "&");
    if (n >= k && memcmp(p, TOMB_OPT, k) == 0) {
      if (parse_tomb_ms(p + k, n - k, ms) != ADB_OK) {
        snprintf(err, errlen, "bad Redis URL option '%.*s' (1..%d)", (int)n, p,
                 TOMB_MS_MAX);
        free(o);
        return ADB_EURL;
      }
    } else if (n) {
      o[w] = w == head ? '?' : '&';
      memcpy(o + w + 1, p, n);
      w += n + 1;
    }
    p += n + (p[n] == '&');
  }
  o[w] = '\0';
  *out = o;
  return ADB_OK;
}

static int redis_open(const char *url, const adb_config *cfg, adb__cache **out,
                      char *err, size_t errlen) {
  *out = NULL;
  rcache *rc = calloc(1, sizeof *rc);
  if (rc) rc->id = atomic_fetch_add(&next_handle_id, 1);
  if (!rc) return ADB_ENOMEM;
  rc->url.connect_timeout_ms = 200;
  rc->url.timeout_ms = 500;
  rc->url.retry_ms = 500;
  rc->url.pool = cfg && cfg->pool_size > 0 ? cfg->pool_size : 4;
  rc->tomb_ms = ADB_TOMBSTONE_TTL_MS;
  char *rest = NULL;
  int r = take_tomb_opt(url, &rest, &rc->tomb_ms, err, errlen);
  if (r == ADB_OK) r = adb__redis_url_parse(rest, &rc->url, err, errlen);
  free(rest);
  if (r != ADB_OK) {
    free(rc);
    return r;
  }
  rc->base.m = rc->url.cluster ? &adb__cache_redis_cluster : &adb__cache_redis;
  rc->ttl_ms =
      (int64_t)(cfg && cfg->cache_ttl_s > 0 ? cfg->cache_ttl_s : 3600) * 1000;
  rc->connect_tv = ms_tv(rc->url.connect_timeout_ms);
  rc->cmd_tv = ms_tv(rc->url.timeout_ms);
  sha1_hex(PUT_LUA, rc->put_sha);
  sha1_hex(APPLY_LUA, rc->apply_sha);
  pthread_mutex_init(&rc->mu, NULL);
  pthread_mutex_init(&rc->pend_mu, NULL);
  pthread_mutex_init(&rc->settle_mu, NULL);
  pthread_mutex_init(&rc->prober_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&rc->prober_cv, &ca);
  pthread_condattr_destroy(&ca);
  for (int s = 0; s < ADB__REDIS_SLOTS; s++)
    rc->slot_node[s] = -1;
  rc->pending = calloc(PENDING_MAX, sizeof *rc->pending);
  int seeded = 1;
  for (int i = 0; i < rc->url.n_seeds && seeded; i++)
    seeded = node_index_locked(rc, &rc->url.seeds[i]) >= 0;
  if (!rc->pending || !seeded) {
    rcache_free(rc);
    return ADB_ENOMEM;
  }
  ignore_sigpipe();
  if (pthread_create(&rc->prober, NULL, prober_main, rc) != 0) {
    rcache_free(rc);
    return ADB_ENOMEM;
  }
  rc->prober_started = 1;
  /* Unreachable now is not an error: calls fail with ADB_ECACHE (and the
   * store serves) until Redis answers. */
  atomic_store(&rc->need_refresh, 1);
  maybe_refresh(rc);
  *out = &rc->base;
  return ADB_OK;
}

static void redis_stats(adb__cache *c, adb__cache_stats *out) {
  rcache *rc = (rcache *)c;
  memset(out, 0, sizeof *out);
  out->hits = atomic_load(&rc->hits);
  out->misses = atomic_load(&rc->misses);
  out->errors = atomic_load(&rc->errors);
}

void adb__redis_cache_info(adb__cache *c, adb__redis_info *out) {
  memset(out, 0, sizeof *out);
  if (!c || (c->m != &adb__cache_redis && c->m != &adb__cache_redis_cluster))
    return;
  rcache *rc = (rcache *)c;
  out->moved = atomic_load(&rc->moved);
  out->ask = atomic_load(&rc->ask);
  out->epoch_bumps = atomic_load(&rc->bumps);
  out->round_trips = atomic_load(&rc->trips);
  out->rtt_ns_total = atomic_load(&rc->rtt_ns);
}

const adb__cache_methods adb__cache_redis = {
    .version = 1,
    .scheme = "redis",
    .open = redis_open,
    .close = redis_close,
    .get = blob_get,
    .set = blob_set,
    .del = blob_del,
    .policy_mget = policy_mget,
    .policy_put = policy_put,
    .policy_apply = policy_apply,
    .stats = redis_stats,
};

const adb__cache_methods adb__cache_redis_cluster = {
    .version = 1,
    .scheme = "redis-cluster",
    .open = redis_open,
    .close = redis_close,
    .get = blob_get,
    .set = blob_set,
    .del = blob_del,
    .policy_mget = policy_mget,
    .policy_put = policy_put,
    .policy_apply = policy_apply,
    .stats = redis_stats,
};
