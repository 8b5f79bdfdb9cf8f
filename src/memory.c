/*
 * memory.c — vector memory: episodes, user states and learned patterns
 * searched by similarity, and the public searches over them.
 *
 * Indexes. Each agent has one HNSW index (hnsw.h) of its episodes and one
 * of its learned patterns that carry an embedding; user states, which
 * belong to no agent, have one index per embedding dimension. Every index
 * uses the cosine metric: HNSW stores the vectors normalized and compares
 * by inner product, and a hit's score is its cosine similarity
 * (1 - distance), in [-1, 1], higher is closer. Below the index's
 * exact_threshold (2000 live vectors) a search is an exact scan, above it
 * a graph walk; the index decides.
 *
 * Labels. A vector's label is a 64-bit hash of (agent, id) (of the id for
 * users), and each index keeps a map label -> (id, user, action, reward,
 * time) under a reader-writer lock, from which answers are written. An
 * episode's tag is a hash of its user, so a search for one user's episodes
 * filters during the graph walk (or scans exactly when few match) and
 * still returns k hits when the user has k episodes.
 *
 * Keeping current. Rows come from three places:
 *  - at open, the snapshot (below) or else a full scan of the store
 *    (store->vectors_scan, any backend), with progress on stderr above
 *    100k vectors;
 *  - writes through this handle, added at once: user states and patterns
 *    after the store accepted them, episodes right after they were queued
 *    (after the commit in sync mode, since adb__enqueue waits for it; in
 *    async mode at enqueue, when they are not yet durable — as the
 *    answer itself says);
 *  - a poller thread that scans the store every second for rows whose
 *    time is >= (the newest time it has seen - 5 s), which is how replicas
 *    sharing a store see each other's rows. The overlap covers rows whose
 *    time was taken before an earlier commit than theirs (an episode's
 *    time is set when it is queued). Episodes are immutable, so a label
 *    already present is skipped; users and patterns are replaced only by a
 *    row with a newer time. Re-adding is therefore cheap and never grows
 *    the graph. The poller does not run on a private sqlite://:memory:
 *    store, where no one else can write.
 *
 * Snapshots. With an index directory (adb_config.index_dir, else
 * FILE.index/ beside a sqlite://FILE store) the indexes are saved at
 * close — manifest removed first, then each index as STEM.hnsw
 * (adb__hnsw_save) and STEM.meta (the label map), then a new manifest with
 * a hash of the store URL and the poller's watermarks — and loaded at
 * open, followed by a catch-up scan from the watermarks. Anything
 * missing, corrupt, from another store or inconsistent (a map that does
 * not match its graph) discards the whole snapshot: the indexes are
 * rebuilt from the store. Rows the store deleted (PostgreSQL's retention
 * of old episode partitions) stay in a running index, and in a snapshot,
 * until a rebuild.
 *
 * Cold start (decide.c) asks adb__memory_neighbours for the users nearest
 * to a new user; only users with a positive cosine similarity count as
 * neighbours.
 */
#define _GNU_SOURCE /* memrchr */
#include "memory.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coordinator.h"
#include "hnsw.h"
#include "util.h"
#include "vec.h"

#define MAX_K 1000
#define MAX_USER_DIMS 16
#define POLL_MS 1000
#define OVERLAP_MS 5000
#define PROGRESS_EVERY 100000
#define META_VERSION 1
#define BOM 0x01020304u

static const char *const kind_name[3] = {"episodes", "users", "patterns"};
static const char *const kind_stem[3] = {"ep", "users", "pat"};

/* ------------------------------------------------------ label -> meta */

/* What an answer needs about a vector: strings id\0user\0action\0. */
typedef struct meta {
  int64_t ts;
  double reward;
  uint8_t lid, luser, laction;
  char s[];
} meta;

static meta *meta_new(const char *id, const char *user, const char *action,
                      double reward, int64_t ts) {
  size_t a = strlen(id), b = strlen(user), c = strlen(action);
  if (a > ADB_ID_MAX || b > ADB_ID_MAX || c > ADB_ID_MAX) return NULL;
  meta *m = malloc(sizeof *m + a + b + c + 3);
  if (!m) return NULL;
  m->ts = ts;
  m->reward = reward;
  m->lid = (uint8_t)a;
  m->luser = (uint8_t)b;
  m->laction = (uint8_t)c;
  memcpy(m->s, id, a + 1);
  memcpy(m->s + a + 1, user, b + 1);
  memcpy(m->s + a + b + 2, action, c + 1);
  return m;
}

static const char *meta_user(const meta *m) {
  return m->s + m->lid + 1;
}

static const char *meta_action(const meta *m) {
  return m->s + m->lid + m->luser + 2;
}

/* Open addressing, linear probing; a deleted entry keeps its key with a
 * NULL value (labels are few to delete, and they come back). */
typedef struct u64map {
  size_t cap, len;
  struct u64slot {
    uint64_t k;
    meta *v;
    int used;
  } * s;
} u64map;

static struct u64slot *map_find(const u64map *m, uint64_t k) {
  if (!m->cap) return NULL;
  size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (m->cap - 1);
  while (m->s[i].used) {
    if (m->s[i].k == k) return &m->s[i];
    i = (i + 1) & (m->cap - 1);
  }
  return &m->s[i];
}

static meta *map_get(const u64map *m, uint64_t k) {
  struct u64slot *s = map_find(m, k);
  return s && s->used ? s->v : NULL;
}

static int map_grow(u64map *m) {
  size_t cap = m->cap ? m->cap * 2 : 64;
  struct u64slot *s = calloc(cap, sizeof *s), *old = m->s;
  if (!s) return ADB_ENOMEM;
  u64map n = {cap, 0, s};
  for (size_t i = 0; i < m->cap; i++)
    if (old[i].used) {
      *map_find(&n, old[i].k) = old[i];
      n.len++;
    }
  free(old);
  *m = n;
  return ADB_OK;
}

/* Sets k to v; *old gets the value replaced (NULL if none). */
static int map_put(u64map *m, uint64_t k, meta *v, meta **old) {
  *old = NULL;
  if ((m->len + 1) * 4 > m->cap * 3 && map_grow(m)) return ADB_ENOMEM;
  struct u64slot *s = map_find(m, k);
  if (s->used) {
    *old = s->v;
  } else {
    s->used = 1;
    s->k = k;
    m->len++;
  }
  s->v = v;
  return ADB_OK;
}

static void map_free(u64map *m) {
  for (size_t i = 0; i < m->cap; i++)
    free(m->s[i].v);
  free(m->s);
  memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------ indexes */

typedef struct vindex {
  int kind, dim;
  char name[ADB_ID_MAX + 1]; /* agent; "" for users */
  adb__hnsw *h;
  /* h itself: held shared by adds and searches, exclusively while an
   * erasure rebuilds the graph without the erased vectors. */
  pthread_rwlock_t hmu;
  pthread_rwlock_t mu; /* map */
  u64map map;
} vindex;

struct adb__memory {
  adb *db;
  pthread_mutex_t mu;    /* the registry: agents[], users[] */
  adb__strmap agents[3]; /* [EPISODES], [PATTERNS]: agent -> vindex* */
  vindex *users[MAX_USER_DIMS];
  int n_users;
  int64_t mark[3]; /* newest time seen in the store, per kind */
  int64_t scanned; /* rows seen by the current scan */
  int progress;    /* report the current scan's progress */
  pthread_t poller;
  /* Held by every scan of the store, and by an erasure while it removes
   * vectors: a scan that read rows before the erasure committed cannot
   * add them back after. */
  pthread_mutex_t smu;
  int polling, stop;
  pthread_mutex_t pmu;
  pthread_cond_t pcv;
  char dir[PATH_MAX]; /* snapshot directory, "" = none */
  uint64_t url_hash;
};

static void vindex_free(vindex *vi) {
  if (!vi) return;
  adb__hnsw_destroy(vi->h);
  map_free(&vi->map);
  pthread_rwlock_destroy(&vi->mu);
  pthread_rwlock_destroy(&vi->hmu);
  free(vi);
}

static void vindex_free_void(void *p) {
  vindex_free(p);
}

static vindex *vindex_new(int kind, const char *name, int dim, adb__hnsw *h) {
  vindex *vi = calloc(1, sizeof *vi);
  if (!vi) return NULL;
  adb__hnsw_config c = {.dim = dim, .metric = ADB__METRIC_COSINE};
  if (!h && adb__hnsw_create(&c, &h) != ADB_OK) {
    free(vi);
    return NULL;
  }
  vi->kind = kind;
  vi->dim = dim;
  snprintf(vi->name, sizeof vi->name, "%s", name);
  vi->h = h;
  pthread_rwlock_init(&vi->mu, NULL);
  pthread_rwlock_init(&vi->hmu, NULL);
  return vi;
}

/* The index of (kind, agent) — for users, of dimension dim — created when
 * create is set. NULL when absent (or out of memory, or too many user
 * dimensions). */
static vindex *index_get(adb__memory *m, int kind, const char *agent, int dim,
                         int create) {
  vindex *vi = NULL;
  pthread_mutex_lock(&m->mu);
  if (kind == ADB__VEC_USERS) {
    for (int i = 0; i < m->n_users && !vi; i++)
      if (m->users[i]->dim == dim) vi = m->users[i];
    if (!vi && create && m->n_users < MAX_USER_DIMS &&
        (vi = vindex_new(kind, "", dim, NULL)))
      m->users[m->n_users++] = vi;
  } else {
    vi = adb__strmap_get(&m->agents[kind], agent);
    if (!vi && create && (vi = vindex_new(kind, agent, dim, NULL)) &&
        adb__strmap_put(&m->agents[kind], agent, vi)) {
      vindex_free(vi);
      vi = NULL;
    }
  }
  pthread_mutex_unlock(&m->mu);
  return vi;
}

/* The hash of agent "\x1f" id (labels are kept in snapshots: the bytes
 * hashed must not change; ids are at most ADB_ID_MAX, so nothing is cut). */
static uint64_t label_of(const char *agent, const char *id) {
  char buf[2 * ADB_ID_MAX + 2];
  size_t cap = sizeof buf - 1, na = strnlen(agent, cap), n = na;
  memcpy(buf, agent, na);
  if (n < cap) buf[n++] = '\x1f';
  size_t ni = strnlen(id, cap - n);
  memcpy(buf + n, id, ni);
  return adb__hash64(buf, n + ni);
}

static uint64_t user_tag(const char *user) {
  return adb__hash64(user, strlen(user));
}

/* Adds a row to its index unless the index already holds it (episodes) or
 * a version at least as new (users, patterns). */
static int index_add(vindex *vi, const adb__vec_row *r) {
  uint64_t label = label_of(r->agent, r->id);
  uint64_t tag = r->kind == ADB__VEC_EPISODES ? user_tag(r->user) : 0;
  meta *nm = meta_new(r->id, r->user, r->action, r->reward, r->ts_ms);
  if (!nm) return strlen(r->id) > ADB_ID_MAX ? ADB_OK : ADB_ENOMEM;
  pthread_rwlock_wrlock(&vi->mu);
  meta *cur = map_get(&vi->map, label), *old = NULL;
  int skip = cur && (r->kind == ADB__VEC_EPISODES || cur->ts >= r->ts_ms);
  int rc = skip ? ADB_OK : map_put(&vi->map, label, nm, &old);
  pthread_rwlock_unlock(&vi->mu);
  if (skip || rc) {
    free(nm);
    return rc;
  }
  free(old);
  pthread_rwlock_rdlock(&vi->hmu);
  rc = adb__hnsw_add(vi->h, label, tag, r->embedding);
  pthread_rwlock_unlock(&vi->hmu);
  if (rc == ADB_OK) return ADB_OK;
  /* Not indexable (a zero vector) or out of memory: forget the row. */
  pthread_rwlock_wrlock(&vi->mu);
  map_put(&vi->map, label, NULL, &old);
  pthread_rwlock_unlock(&vi->mu);
  free(old);
  pthread_rwlock_rdlock(&vi->hmu);
  adb__hnsw_remove(vi->h, label);
  pthread_rwlock_unlock(&vi->hmu);
  return rc == ADB_ENOMEM ? rc : ADB_OK;
}

int adb__memory_add(adb__memory *m, const adb__vec_row *r) {
  if (!m || !r->embedding || r->dim < 1 || r->dim > ADB_MAX_EMBEDDING_DIM ||
      r->kind < ADB__VEC_EPISODES || r->kind > ADB__VEC_PATTERNS)
    return ADB_OK;
  vindex *vi = index_get(m, r->kind, r->agent, r->dim, 1);
  if (!vi) return r->kind == ADB__VEC_USERS ? ADB_OK : ADB_ENOMEM;
  if (vi->dim != r->dim) return ADB_OK; /* another dimension: not ours */
  return index_add(vi, r);
}

/* ------------------------------------------------------------- scans */

static int scan_row(void *arg, const adb__vec_row *r) {
  adb__memory *m = arg;
  if (r->ts_ms > m->mark[r->kind]) m->mark[r->kind] = r->ts_ms;
  if (++m->scanned % PROGRESS_EVERY == 0 && m->progress)
    fprintf(stderr, "agentdb: vector memory: %lld %s loaded\n",
            (long long)m->scanned, kind_name[r->kind]);
  return adb__memory_add(m, r);
}

/* Scans every kind from its watermark (minus the overlap). */
static int catch_up(adb__memory *m, int progress) {
  adb__store *st = m->db->store;
  int result = ADB_OK;
  for (int kind = 0; kind < 3; kind++) {
    int64_t since = m->mark[kind] > OVERLAP_MS ? m->mark[kind] - OVERLAP_MS : 0;
    m->scanned = 0;
    m->progress = progress;
    int rc = st->m->vectors_scan(st, kind, since, scan_row, m);
    if (progress && m->scanned >= PROGRESS_EVERY)
      fprintf(stderr, "agentdb: vector memory: %lld %s indexed\n",
              (long long)m->scanned, kind_name[kind]);
    if (rc != ADB_OK && result == ADB_OK) result = rc;
  }
  return result;
}

static void *poll_main(void *arg) {
  adb__memory *m = arg;
  int failing = 0;
  pthread_mutex_lock(&m->pmu);
  while (!m->stop) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    int64_t ns = dl.tv_nsec + (int64_t)POLL_MS * 1000000;
    dl.tv_sec += ns / 1000000000;
    dl.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&m->pcv, &m->pmu, &dl);
    if (m->stop) break;
    pthread_mutex_unlock(&m->pmu);
    pthread_mutex_lock(&m->smu);
    int rc = catch_up(m, 0);
    pthread_mutex_unlock(&m->smu);
    if (rc != ADB_OK && !failing)
      fprintf(stderr, "agentdb: vector memory: polling the store: %s (%s)\n",
              adb__store_errmsg(m->db->store), adb_err_name(rc));
    failing = rc != ADB_OK;
    pthread_mutex_lock(&m->pmu);
  }
  pthread_mutex_unlock(&m->pmu);
  return NULL;
}

/* --------------------------------------------------------- snapshots */

/* The snapshot directory of cfg, or "" when there is none: index_dir, or
 * FILE.index/ beside a sqlite://FILE store (one per store file, never a
 * bare "index/" in the working directory); none for an in-memory SQLite
 * database or PostgreSQL without index_dir. */
static void snapshot_dir(const adb_config *cfg, char *out, size_t cap) {
  out[0] = 0;
  const char *url = cfg->store_url;
  if (cfg->index_dir && cfg->index_dir[0]) {
    snprintf(out, cap, "%s", cfg->index_dir);
    return;
  }
  if (strncmp(url, "sqlite://", 9)) return;
  const char *p = url + 9;
  size_t n = strcspn(p, "?");
  if (n == 0 || memmem(p, n, ":memory:", 8) || strstr(p + n, "mode=memory") ||
      p[n - 1] == '/')
    return;
  snprintf(out, cap, "%.*s.index", (int)n, p);
}

/* Makes a relative directory absolute now, so that a chdir between open
 * and close cannot move the snapshot into another working directory. */
static void absolute_dir(char *dir, size_t cap) {
  char cwd[PATH_MAX], tmp[PATH_MAX];
  if (!dir[0] || dir[0] == '/' || !getcwd(cwd, sizeof cwd)) return;
  if ((size_t)snprintf(tmp, sizeof tmp, "%s/%s", cwd, dir) < cap)
    snprintf(dir, cap, "%s", tmp);
}

static int mkdirs(const char *dir) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", dir);
  for (char *p = buf + 1;; p++) {
    if (*p && *p != '/') continue;
    char c = *p;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return ADB_EIO;
    if (!(*p = c)) break;
  }
  return ADB_OK;
}

static void stem_of(const vindex *vi, char *out, size_t cap) {
  if (vi->kind == ADB__VEC_USERS)
    snprintf(out, cap, "users-%d", vi->dim);
  else
    snprintf(out, cap, "%s-%s", kind_stem[vi->kind], vi->name);
}

static void path_of(const adb__memory *m, const char *stem, const char *ext,
                    char *out, size_t cap) {
  snprintf(out, cap, "%s/%s%s", m->dir, stem, ext);
}

static void put_u32(adb__sbuf *b, uint32_t v) {
  adb__sbuf_add(b, (const char *)&v, 4);
}

static void put_u64(adb__sbuf *b, uint64_t v) {
  adb__sbuf_add(b, (const char *)&v, 8);
}

/* Writes buf to path through path.tmp, fsync'd, then renamed. */
static int write_file(const char *path, const void *buf, size_t len) {
  char tmp[PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return ADB_EIO;
  int ok =
      fwrite(buf, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok &= fclose(f) == 0;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return ADB_EIO;
  }
  return ADB_OK;
}

/* The label map of vi as STEM.meta: header, entries, then a hash of all
 * bytes before it. Host byte order, marked by BOM. */
static int meta_save(vindex *vi, const char *path) {
  adb__sbuf b = {0};
  adb__sbuf_add(&b, "ADBVMETA", 8);
  put_u32(&b, META_VERSION);
  put_u32(&b, BOM);
  put_u32(&b, (uint32_t)vi->kind);
  put_u32(&b, (uint32_t)vi->dim);
  put_u32(&b, (uint32_t)strlen(vi->name));
  adb__sbuf_add(&b, vi->name, strlen(vi->name));
  uint64_t n = 0;
  for (size_t i = 0; i < vi->map.cap; i++)
    n += vi->map.s[i].used && vi->map.s[i].v;
  put_u64(&b, n);
  for (size_t i = 0; i < vi->map.cap; i++) {
    const meta *e = vi->map.s[i].v;
    if (!vi->map.s[i].used || !e) continue;
    put_u64(&b, vi->map.s[i].k);
    put_u64(&b, (uint64_t)e->ts);
    adb__sbuf_add(&b, (const char *)&e->reward, 8);
    uint8_t l[3] = {e->lid, e->luser, e->laction};
    adb__sbuf_add(&b, (const char *)l, 3);
    adb__sbuf_add(&b, e->s, (size_t)e->lid + e->luser + e->laction + 3);
  }
  if (b.oom) {
    free(b.p);
    return ADB_ENOMEM;
  }
  put_u64(&b, adb__hash64(b.p, b.len));
  int rc = b.oom ? ADB_ENOMEM : write_file(path, b.p, b.len);
  free(b.p);
  return rc;
}

static int read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? ADB_ENOTFOUND : ADB_EIO;
  struct stat sb;
  char *p = NULL;
  int rc = fstat(fileno(f), &sb) == 0 ? ADB_OK : ADB_EIO;
  if (!rc && !(p = malloc((size_t)sb.st_size + 1))) rc = ADB_ENOMEM;
  if (!rc && fread(p, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size)
    rc = ADB_EIO;
  fclose(f);
  if (rc) {
    free(p);
    return rc;
  }
  p[sb.st_size] = 0;
  *buf = p;
  *len = (size_t)sb.st_size;
  return ADB_OK;
}

/* A bounds-checked reader of a buffer. */
typedef struct rd {
  const char *p;
  size_t left;
  int bad;
} rd;

static void take(rd *r, void *dst, size_t n) {
  if (r->bad || r->left < n) {
    r->bad = 1;
    memset(dst, 0, n);
    return;
  }
  memcpy(dst, r->p, n);
  r->p += n;
  r->left -= n;
}

static uint32_t take_u32(rd *r) {
  uint32_t v;
  take(r, &v, 4);
  return v;
}

static uint64_t take_u64(rd *r) {
  uint64_t v;
  take(r, &v, 8);
  return v;
}

/* One entry of a meta file into vi's map. */
static int meta_entry(rd *r, vindex *vi) {
  uint64_t label = take_u64(r);
  int64_t ts = (int64_t)take_u64(r);
  double reward;
  take(r, &reward, 8);
  uint8_t l[3];
  take(r, l, 3);
  char s[3][ADB_ID_MAX + 1];
  for (int i = 0; i < 3; i++) {
    take(r, s[i], (size_t)l[i] + 1);
    if (r->bad || l[i] > ADB_ID_MAX || s[i][l[i]] || strlen(s[i]) != l[i])
      return ADB_ECORRUPT;
  }
  meta *e = meta_new(s[0], s[1], s[2], reward, ts), *old;
  if (!e) return ADB_ENOMEM;
  if (map_put(&vi->map, label, e, &old)) {
    free(e);
    return ADB_ENOMEM;
  }
  int dup = old != NULL;
  free(old);
  return dup ? ADB_ECORRUPT : ADB_OK;
}

/* Loads STEM.hnsw and STEM.meta into a new index; checks that they agree
 * with each other. */
static int index_load(adb__memory *m, const char *stem, vindex **out) {
  char path[PATH_MAX + 512], *buf = NULL;
  size_t len = 0;
  adb__hnsw *h = NULL;
  path_of(m, stem, ".hnsw", path, sizeof path);
  int rc = adb__hnsw_load(path, &h);
  path_of(m, stem, ".meta", path, sizeof path);
  if (!rc) rc = read_file(path, &buf, &len);
  if (rc) {
    adb__hnsw_destroy(h);
    return rc;
  }
  rd r = {buf, len, 0};
  char magic[8], name[ADB_ID_MAX + 1] = "";
  take(&r, magic, 8);
  uint32_t ver = take_u32(&r), bom = take_u32(&r), kind = take_u32(&r);
  uint32_t dim = take_u32(&r), nlen = take_u32(&r);
  if (nlen <= ADB_ID_MAX) take(&r, name, nlen);
  uint64_t n = take_u64(&r);
  adb__hnsw_config hc;
  adb__hnsw_get_config(h, &hc);
  uint64_t sum = 0;
  if (len >= 8) memcpy(&sum, buf + len - 8, 8);
  rc = len < 8 || memcmp(magic, "ADBVMETA", 8) || ver != META_VERSION ||
               bom != BOM || kind > ADB__VEC_PATTERNS || nlen > ADB_ID_MAX ||
               (int)dim != hc.dim || hc.metric != ADB__METRIC_COSINE || r.bad ||
               adb__hash64(buf, len - 8) != sum
           ? ADB_ECORRUPT
           : ADB_OK;
  vindex *vi = rc ? NULL : vindex_new((int)kind, name, (int)dim, h);
  if (!rc && !vi) rc = ADB_ENOMEM;
  if (vi) h = NULL;
  r.left = r.left >= 8 ? r.left - 8 : 0;
  for (uint64_t i = 0; !rc && i < n; i++)
    rc = meta_entry(&r, vi);
  adb__hnsw_stats hs = {0};
  if (vi) adb__hnsw_stats_get(vi->h, &hs);
  if (!rc && (r.left || hs.live != n)) rc = ADB_ECORRUPT;
  for (size_t i = 0; !rc && i < vi->map.cap; i++)
    if (vi->map.s[i].used && !adb__hnsw_contains(vi->h, vi->map.s[i].k))
      rc = ADB_ECORRUPT;
  free(buf);
  adb__hnsw_destroy(h);
  if (rc) {
    vindex_free(vi);
    return rc;
  }
  *out = vi;
  return ADB_OK;
}

static int register_index(adb__memory *m, vindex *vi) {
  if (vi->kind == ADB__VEC_USERS) {
    if (m->n_users == MAX_USER_DIMS) return ADB_ECORRUPT;
    m->users[m->n_users++] = vi;
    return ADB_OK;
  }
  if (adb__strmap_get(&m->agents[vi->kind], vi->name)) return ADB_ECORRUPT;
  return adb__strmap_put(&m->agents[vi->kind], vi->name, vi);
}

static void drop_all(adb__memory *m) {
  adb__strmap_free(&m->agents[ADB__VEC_EPISODES], vindex_free_void);
  adb__strmap_free(&m->agents[ADB__VEC_PATTERNS], vindex_free_void);
  for (int i = 0; i < m->n_users; i++)
    vindex_free(m->users[i]);
  m->n_users = 0;
  memset(m->mark, 0, sizeof m->mark);
}

/* Loads the manifest and every index it names; all or nothing. */
static int snapshot_load(adb__memory *m) {
  char path[PATH_MAX + 512], *buf = NULL;
  size_t len;
  path_of(m, "manifest", "", path, sizeof path);
  int rc = read_file(path, &buf, &len);
  if (rc) return rc;
  unsigned long long hash = 0;
  long long mk[3];
  int used = 0;
  if (sscanf(buf, "agentdb-vectors 1\nstore %llx\nmark %lld %lld %lld\n%n",
             &hash, &mk[0], &mk[1], &mk[2], &used) != 4 ||
      !used || hash != m->url_hash)
    rc = ADB_ECORRUPT;
  for (char *line = buf + used; !rc && *line;) {
    char *end = strchr(line, '\n');
    if (!end || strncmp(line, "index ", 6)) {
      rc = ADB_ECORRUPT;
      break;
    }
    *end = 0;
    vindex *vi = NULL;
    rc = index_load(m, line + 6, &vi);
    if (!rc && (rc = register_index(m, vi))) vindex_free(vi);
    line = end + 1;
  }
  free(buf);
  if (rc) {
    drop_all(m);
    return rc;
  }
  for (int k = 0; k < 3; k++)
    m->mark[k] = mk[k];
  return ADB_OK;
}

static int save_one(adb__memory *m, vindex *vi, adb__sbuf *manifest) {
  char stem[ADB_ID_MAX + 16], path[PATH_MAX + 512];
  stem_of(vi, stem, sizeof stem);
  path_of(m, stem, ".hnsw", path, sizeof path);
  int rc = adb__hnsw_save(vi->h, path);
  path_of(m, stem, ".meta", path, sizeof path);
  if (!rc) rc = meta_save(vi, path);
  adb__sbuf_printf(manifest, "index %s\n", stem);
  return rc;
}

static int snapshot_save(adb__memory *m) {
  char path[PATH_MAX + 512];
  if (mkdirs(m->dir)) return ADB_EIO;
  path_of(m, "manifest", "", path, sizeof path);
  if (unlink(path) != 0 && errno != ENOENT) return ADB_EIO;
  adb__sbuf b = {0};
  adb__sbuf_printf(&b, "agentdb-vectors 1\nstore %llx\nmark %lld %lld %lld\n",
                   (unsigned long long)m->url_hash, (long long)m->mark[0],
                   (long long)m->mark[1], (long long)m->mark[2]);
  int rc = ADB_OK;
  for (int k = 0; k < 3; k += 2)
    for (size_t i = 0; !rc && i < m->agents[k].cap; i++)
      if (m->agents[k].slots[i].key)
        rc = save_one(m, m->agents[k].slots[i].val, &b);
  for (int i = 0; !rc && i < m->n_users; i++)
    rc = save_one(m, m->users[i], &b);
  if (!rc) rc = b.oom ? ADB_ENOMEM : write_file(path, b.p, b.len);
  free(b.p);
  return rc;
}

/* ---------------------------------------------------------- open/close */

int adb__memory_open(adb *db, adb__memory **out, char *err, size_t errlen) {
  *out = NULL;
  adb__memory *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(err, errlen, "out of memory");
    return ADB_ENOMEM;
  }
  m->db = db;
  pthread_mutex_init(&m->mu, NULL);
  pthread_mutex_init(&m->pmu, NULL);
  pthread_mutex_init(&m->smu, NULL);
  pthread_cond_init(&m->pcv, NULL);
  snapshot_dir(&db->cfg, m->dir, sizeof m->dir);
  absolute_dir(m->dir, sizeof m->dir);
  m->url_hash = adb__hash64(db->cfg.store_url, strlen(db->cfg.store_url));
  if (!db->store->m->vectors_scan) {
    *out = m; /* a backend without scans: indexes fill from local writes */
    return ADB_OK;
  }
  int rc = m->dir[0] ? snapshot_load(m) : ADB_ENOTFOUND;
  if (rc != ADB_OK && rc != ADB_ENOTFOUND)
    fprintf(stderr,
            "agentdb: vector memory: snapshot in %s unusable (%s); "
            "rebuilding from the store\n",
            m->dir, adb_err_name(rc));
  rc = catch_up(m, 1);
  if (rc == ADB_ENOMEM) {
    adb__memory_close(m);
    snprintf(err, errlen, "vector memory: out of memory");
    return rc;
  }
  if (rc != ADB_OK)
    fprintf(stderr,
            "agentdb: vector memory: loading from the store: %s; "
            "the poller retries\n",
            adb__store_errmsg(db->store));
  if (strncmp(db->cfg.store_url, "sqlite://:memory:", 17) &&
      pthread_create(&m->poller, NULL, poll_main, m) == 0)
    m->polling = 1;
  *out = m;
  return ADB_OK;
}

void adb__memory_close(adb__memory *m) {
  if (!m) return;
  if (m->polling) {
    pthread_mutex_lock(&m->pmu);
    m->stop = 1;
    pthread_cond_signal(&m->pcv);
    pthread_mutex_unlock(&m->pmu);
    pthread_join(m->poller, NULL);
  }
  if (m->dir[0] && m->db->store->m->vectors_scan) {
    int rc = snapshot_save(m);
    if (rc)
      fprintf(stderr,
              "agentdb: vector memory: cannot save the snapshot in "
              "%s (%s); the next open rebuilds\n",
              m->dir, adb_err_name(rc));
  }
  drop_all(m);
  pthread_mutex_destroy(&m->mu);
  pthread_mutex_destroy(&m->pmu);
  pthread_mutex_destroy(&m->smu);
  pthread_cond_destroy(&m->pcv);
  free(m);
}

/* ------------------------------------------------------------ erasure */

typedef int (*doomed_fn)(const meta *e, const void *arg);

/* Removes from vi every vector whose meta doomed() selects and, when any
 * was, rebuilds the graph from the vectors left: a removed HNSW node keeps
 * its vector for navigation (hnsw.h), and an erased vector must not stay
 * in memory or reach a snapshot. Adds and searches of vi wait meanwhile.
 * Returns how many were removed, or a negative ADB_E* code. */
static int index_purge(vindex *vi, doomed_fn doomed, const void *arg) {
  pthread_rwlock_wrlock(&vi->hmu);
  pthread_rwlock_wrlock(&vi->mu);
  int n = 0;
  for (size_t i = 0; i < vi->map.cap; i++) {
    struct u64slot *sl = &vi->map.s[i];
    if (!sl->used || !sl->v || !doomed(sl->v, arg)) continue;
    free(sl->v);
    sl->v = NULL;
    n++;
  }
  int rc = ADB_OK;
  adb__hnsw *nh = NULL;
  adb__hnsw_config hc;
  adb__hnsw_get_config(vi->h, &hc);
  float *v = n ? malloc((size_t)vi->dim * sizeof *v) : NULL;
  if (n) rc = v ? adb__hnsw_create(&hc, &nh) : ADB_ENOMEM;
  for (size_t i = 0; n && !rc && i < vi->map.cap; i++) {
    struct u64slot *sl = &vi->map.s[i];
    uint64_t tag = 0;
    if (!sl->used || !sl->v) continue;
    if (adb__hnsw_get(vi->h, sl->k, v, &tag) == ADB_OK)
      rc = adb__hnsw_add(nh, sl->k, tag, v);
  }
  if (n && !rc) {
    adb__hnsw_destroy(vi->h);
    vi->h = nh;
    nh = NULL;
  }
  adb__hnsw_destroy(nh);
  free(v);
  pthread_rwlock_unlock(&vi->mu);
  pthread_rwlock_unlock(&vi->hmu);
  return rc ? rc : n;
}

static int doomed_all(const meta *e, const void *arg) {
  (void)e, (void)arg;
  return 1;
}

static int doomed_user(const meta *e, const void *arg) {
  return !strcmp(meta_user(e), arg);
}

static int doomed_id(const meta *e, const void *arg) {
  return !strcmp(e->s, arg);
}

/* Removes the snapshot from disk: the manifest first (so a crash midway
 * leaves an unusable, hence rebuilt, snapshot), then every index file. The
 * next close writes a new one. */
static void snapshot_discard(adb__memory *m) {
  char path[PATH_MAX + 512];
  if (!m->dir[0]) return;
  path_of(m, "manifest", "", path, sizeof path);
  unlink(path);
  DIR *d = opendir(m->dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l < 6 || (strcmp(de->d_name + l - 5, ".hnsw") &&
                  strcmp(de->d_name + l - 5, ".meta")))
      continue;
    snprintf(path, sizeof path, "%s/%s", m->dir, de->d_name);
    unlink(path);
  }
  if (d) closedir(d);
}

/* Every index of kind (agents) into out (at most cap). */
static int agent_indexes(adb__memory *m, int kind, vindex **out, int cap) {
  int n = 0;
  for (size_t i = 0; i < m->agents[kind].cap && n < cap; i++)
    if (m->agents[kind].slots[i].key) out[n++] = m->agents[kind].slots[i].val;
  return n;
}

int adb__memory_forget(adb__memory *m, const char *agent, const char *user) {
  if (!m) return 0;
  pthread_mutex_lock(&m->smu);
  int total = 0, rc = ADB_OK;
  pthread_mutex_lock(&m->mu);
  size_t cap = m->agents[0].len + m->agents[2].len + MAX_USER_DIMS + 1;
  vindex **v = malloc(cap * sizeof *v);
  int n = 0;
  if (v && agent) {
    vindex *e = adb__strmap_get(&m->agents[ADB__VEC_EPISODES], agent);
    vindex *p = adb__strmap_get(&m->agents[ADB__VEC_PATTERNS], agent);
    if (e) v[n++] = e;
    if (p) v[n++] = p;
  } else if (v) {
    n = agent_indexes(m, ADB__VEC_EPISODES, v, (int)cap);
    for (int i = 0; i < m->n_users; i++)
      v[n++] = m->users[i];
  }
  pthread_mutex_unlock(&m->mu);
  if (!v) rc = ADB_ENOMEM;
  for (int i = 0; !rc && i < n; i++) {
    int r = agent ? index_purge(v[i], doomed_all, NULL)
            : v[i]->kind == ADB__VEC_USERS
                ? index_purge(v[i], doomed_id, user)
                : index_purge(v[i], doomed_user, user);
    if (r < 0)
      rc = r;
    else
      total += r;
  }
  free(v);
  /* Even with nothing removed here, the snapshot may hold vectors this
   * handle never loaded: it goes. */
  snapshot_discard(m);
  pthread_mutex_unlock(&m->smu);
  return rc ? rc : total;
}

/* ------------------------------------------------------------ searches */

static int check_query(adb *db, const float *v, int dim, int k) {
  if (!v || dim < 1 || dim > ADB_MAX_EMBEDDING_DIM)
    return adb__fail(db, ADB_EINVAL, "embedding must have 1..%d values",
                     ADB_MAX_EMBEDDING_DIM);
  int nonzero = 0;
  for (int i = 0; i < dim; i++) {
    if (!isfinite(v[i]))
      return adb__fail(db, ADB_EINVAL, "embedding[%d] is not a finite number",
                       i);
    nonzero |= v[i] != 0;
  }
  if (!nonzero)
    return adb__fail(db, ADB_EINVAL,
                     "embedding must not be all zeros (no direction)");
  if (k < 1 || k > MAX_K)
    return adb__fail(db, ADB_EINVAL, "k must be 1..%d, not %d", MAX_K, k);
  return ADB_OK;
}

static int dim_mismatch(adb *db, int want, int dim) {
  return adb__fail(db, ADB_EINVAL, "expected %d dimensions, not %d", want, dim);
}

/* Searches vi and writes the hits with their stored details. */
static int search(adb *db, vindex *vi, const float *q, int k,
                  const adb__vec_filter *f, adb_hit *hits, int *n_out) {
  adb__vec_hit vh[MAX_K];
  int n = 0;
  adb__hnsw_query hq = {.vec = q, .k = k, .filter = f};
  pthread_rwlock_rdlock(&vi->hmu);
  int rc = adb__hnsw_search(vi->h, &hq, vh, &n);
  pthread_rwlock_unlock(&vi->hmu);
  if (rc)
    return adb__fail(db, rc, "vector search failed: %s", adb_strerror(rc));
  int out = 0;
  pthread_rwlock_rdlock(&vi->mu);
  for (int i = 0; i < n; i++) {
    const meta *e = map_get(&vi->map, vh[i].label);
    if (!e) continue; /* being replaced or forgotten right now */
    adb_hit *h = &hits[out++];
    memcpy(h->id, e->s, (size_t)e->lid + 1);
    memcpy(h->user_id, meta_user(e), (size_t)e->luser + 1);
    memcpy(h->action, meta_action(e), (size_t)e->laction + 1);
    h->reward = e->reward;
    h->score = 1.0 - (double)vh[i].dist;
  }
  pthread_rwlock_unlock(&vi->mu);
  *n_out = out;
  return ADB_OK;
}

/* The index of an agent's kind for a query of dim, after checking the
 * agent exists and the dimension is its own. *vi NULL: nothing stored. */
static int agent_index(adb *db, int kind, const char *agent, int dim,
                       vindex **vi) {
  adb__agent *a = NULL;
  *vi = NULL;
  int rc = adb__agent_acquire(db, agent, &a);
  if (rc) return rc;
  int want = a->cfg.embedding_dim;
  adb__agent_release(a);
  if (want && want != dim) return dim_mismatch(db, want, dim);
  *vi = db->mem ? index_get(db->mem, kind, agent, dim, 0) : NULL;
  if (*vi && (*vi)->dim != dim) return dim_mismatch(db, (*vi)->dim, dim);
  return ADB_OK;
}

int adb_episode_similar(adb *db, const char *agent_id, const float *emb,
                        int dim, int k, const char *user_id, adb_hit *hits,
                        int *n_out) {
  if (n_out) *n_out = 0;
  if (!hits || !n_out) return adb__fail(db, ADB_EINVAL, "no output buffer");
  int rc = check_query(db, emb, dim, k);
  if (!rc && user_id) rc = adb__check_id(db, "user_id", user_id);
  vindex *vi = NULL;
  if (!rc) rc = agent_index(db, ADB__VEC_EPISODES, agent_id, dim, &vi);
  if (rc || !vi) return rc;
  adb__vec_filter f = {.match_tag = 1, .tag = user_id ? user_tag(user_id) : 0};
  return search(db, vi, emb, k, user_id ? &f : NULL, hits, n_out);
}

int adb_pattern_search(adb *db, const char *agent_id, const float *emb, int dim,
                       int k, adb_hit *hits, int *n_out) {
  if (n_out) *n_out = 0;
  if (!hits || !n_out) return adb__fail(db, ADB_EINVAL, "no output buffer");
  int rc = check_query(db, emb, dim, k);
  vindex *vi = NULL;
  if (!rc) rc = agent_index(db, ADB__VEC_PATTERNS, agent_id, dim, &vi);
  if (rc || !vi) return rc;
  return search(db, vi, emb, k, NULL, hits, n_out);
}

/* The user index of dim; EINVAL naming the stored dimension when users
 * are stored with another one only. *vi NULL: no users stored. */
static int user_index(adb *db, int dim, vindex **vi) {
  adb__memory *m = db->mem;
  *vi = m ? index_get(m, ADB__VEC_USERS, "", dim, 0) : NULL;
  if (*vi || !m) return ADB_OK;
  pthread_mutex_lock(&m->mu);
  int other = m->n_users == 1 ? m->users[0]->dim : 0;
  pthread_mutex_unlock(&m->mu);
  return other ? dim_mismatch(db, other, dim) : ADB_OK;
}

int adb_user_similar(adb *db, const float *emb, int dim, int k, adb_hit *hits,
                     int *n_out) {
  if (n_out) *n_out = 0;
  if (!hits || !n_out) return adb__fail(db, ADB_EINVAL, "no output buffer");
  int rc = check_query(db, emb, dim, k);
  vindex *vi = NULL;
  if (!rc) rc = user_index(db, dim, &vi);
  if (rc || !vi) return rc;
  return search(db, vi, emb, k, NULL, hits, n_out);
}

/* ---------------------------------------------------------- cold start */

static int not_label(void *arg, uint64_t label, uint64_t tag) {
  (void)tag;
  return label != *(const uint64_t *)arg;
}

/* The index and stored vector of user (into buf of ADB_MAX_EMBEDDING_DIM
 * floats), or NULL. */
static vindex *own_vector(adb__memory *m, uint64_t label, float *buf) {
  vindex *found = NULL;
  pthread_mutex_lock(&m->mu);
  for (int i = 0; i < m->n_users && !found; i++) {
    vindex *vi = m->users[i];
    pthread_rwlock_rdlock(&vi->hmu);
    if (adb__hnsw_get(vi->h, label, buf, NULL) == ADB_OK) found = vi;
    pthread_rwlock_unlock(&vi->hmu);
  }
  pthread_mutex_unlock(&m->mu);
  return found;
}

int adb__memory_neighbours(adb__memory *m, const char *user, const float *emb,
                           int dim, int k, char (*out)[ADB_ID_MAX + 1]) {
  if (!m || k < 1) return 0;
  if (k > MAX_K) k = MAX_K;
  uint64_t self = label_of("", user);
  float *own = NULL;
  vindex *vi;
  if (emb) {
    vi = index_get(m, ADB__VEC_USERS, "", dim, 0);
  } else {
    /* No user vector anywhere (the common cold start without
     * embeddings): nothing to look up. */
    pthread_mutex_lock(&m->mu);
    int none = m->n_users == 0;
    pthread_mutex_unlock(&m->mu);
    if (none) return 0;
    if (!(own = malloc(ADB_MAX_EMBEDDING_DIM * sizeof *own))) return ADB_ENOMEM;
    vi = own_vector(m, self, own);
    emb = own;
  }
  int n = 0;
  adb__vec_hit vh[MAX_K];
  adb__vec_filter f = {.accept = not_label, .arg = &self};
  adb__hnsw_query q = {.vec = emb, .k = k, .filter = &f};
  int rc = ADB_OK;
  if (vi) {
    pthread_rwlock_rdlock(&vi->hmu);
    rc = adb__hnsw_search(vi->h, &q, vh, &n);
    pthread_rwlock_unlock(&vi->hmu);
  }
  free(own);
  if (rc || !vi) return rc;
  int out_n = 0;
  pthread_rwlock_rdlock(&vi->mu);
  for (int i = 0; i < n && vh[i].dist < 1.0f; i++) {
    const meta *e = map_get(&vi->map, vh[i].label);
    if (e) memcpy(out[out_n++], e->s, (size_t)e->lid + 1);
  }
  pthread_rwlock_unlock(&vi->mu);
  return out_n;
}
