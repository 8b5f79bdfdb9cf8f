/*
 * hnsw.c — Hierarchical Navigable Small World index over float32 vectors.
 *
 * Source: Yu. A. Malkov and D. A. Yashunin, "Efficient and robust
 * approximate nearest neighbor search using Hierarchical Navigable Small
 * World graphs", arXiv:1603.09320 (2016), IEEE TPAMI 42(4), 2020. The
 * algorithm numbers below are the paper's.
 *
 * The graph. Every vector is a node with a random top layer
 * l = floor(-ln(U) * mL), mL = 1 / ln(M) (section 4.1), drawn from a hash
 * of the seed and the node's label, so a given set of labels builds the
 * same layers whatever order threads insert them in. On each layer 0..l the
 * node keeps a list of at most Mmax neighbours: M above layer 0 and
 * Mmax0 = 2 M on layer 0, the paper's recommended values. The layers form
 * an express-lane hierarchy: a query starts at the single entry point on
 * the top layer and descends.
 *
 * Insertion is Algorithm 1 (INSERT): a greedy walk (Algorithm 2 with
 * ef = 1, written as a plain hill climb in greedy()) down to layer l + 1,
 * then on each layer from min(l, L) to 0 a beam search of width
 * ef_construction (Algorithm 2, SEARCH-LAYER), a choice of M neighbours by
 * Algorithm 4 (SELECT-NEIGHBORS-HEURISTIC; extendCandidates off, which the
 * paper finds useful only for extremely clustered data, keepPrunedConnections
 * off, which only pads lists to a fixed length), and links in both
 * directions; a neighbour whose list overflows Mmax is shrunk with
 * Algorithm 4 too. The simple selection of Algorithm 3 is not used: the
 * paper shows the heuristic keeps clustered and high-dimensional data
 * navigable where Algorithm 3 lets the graph split. A search is
 * Algorithm 5 (K-NN-SEARCH): greedy descent to layer 1, a beam search of
 * width ef = max(ef_search, k) on layer 0, then the k nearest of it.
 *
 * SEARCH-LAYER is written two ways. Unfiltered (search_pool) it keeps one
 * array of the ef nearest nodes found so far, sorted, each marked once
 * expanded: a new node enters by binary search and memmove, and the next
 * node to expand is the nearest unexpanded one. This is the paper's pair of
 * sets C and W in one: a candidate that falls out of the ef nearest would
 * never be expanded by Algorithm 2 either (it stops when the nearest
 * candidate is farther than the farthest of W, which only shrinks), and an
 * array of ef is cheaper than two heaps. Filtered (search_filtered) the two
 * sets must differ: W keeps only acceptable nodes (not removed, tag and
 * predicate pass), C keeps every node that could still lead to one. The
 * walk therefore goes on through rejected nodes until W holds ef
 * acceptable ones, which is what "filter during the search, not after it"
 * means: k results come back whenever k acceptable nodes are reachable.
 * When few vectors carry the queried tag the walk would visit most of the
 * graph to find them, so the search scans exactly instead: a walk costs
 * about ef / s expansions for a filter of selectivity s = c / N, a scan of
 * the c matching vectors about c distances (the tags are a dense array),
 * so the scan wins when c^2 < 4 ef N. Below exact_threshold live vectors
 * every search is an exact scan.
 *
 * Deletion marks a node as a tombstone: it stays in the graph and keeps
 * routing searches (removing it would cut paths), but is never returned.
 * Replacing a label adds a new node and tombstones the old one; a search
 * that overlapped the switch may have seen both live, so a counter of
 * replacements, read before and after, tells it to drop the duplicate.
 *
 * Memory layout. Nodes live in segments that never move: segment s holds
 * 32 << s nodes, so an id maps to (segment, offset) with one bit scan and
 * the index grows without copying or stopping readers. A node is one
 * 64-byte aligned block: its vector, then its layer-0 list [count, ids...];
 * higher layers are a separate block per node (few nodes have them).
 * Labels, tags, levels and states are dense per-segment arrays, so the
 * exact filtered scan reads tags sequentially.
 *
 * Concurrency. Searches take no lock. Link lists are read and written with
 * atomic loads (acquire) and stores (release); a writer changes a list
 * only while holding that node's stripe lock, and holds one stripe at a
 * time, so writers cannot deadlock. A node's vector, label, tag and layers
 * are written before its id is stored in any list, so the release/acquire
 * pair on the link hands a reader a fully written node. A reader that
 * races a writer may see a mix of the old and new lists; every slot always
 * holds a valid id (slots start as the node's own id), so the search stays
 * correct and only its path differs. Nodes newer than a search's visited
 * set are skipped by it. The entry point and top layer are one 64-bit
 * atomic word; an insert that raises the top layer holds entry_mu
 * throughout, as only one can win. Labels, tag counts and id allocation
 * sit under map_mu. Adds and removes hold `snap` shared; save holds it
 * exclusive to write a consistent snapshot while searches go on.
 *
 * Snapshot format (version 1, little-endian):
 *   header   "ADBHNSW\0", u32 version, u32 metric, u32 dim, u32 M,
 *            u32 ef_construction, u32 ef_search, i32 exact_threshold,
 *            u64 seed, u64 nodes, u64 entry (level << 32 | id, or ~0)
 *   nodes    u64 label, u64 tag, u8 level, u8 flags (1 = removed),
 *            dim x f32, then per layer 0..level: u32 count, count x u32
 *   trailer  u64 length of everything before the trailer, u32 CRC-32C of
 *            everything before this field, "ADBE"
 * The loader checks length and checksum first, then every field and link
 * (ids in range, lists no longer than Mmax, a link on layer l only to a
 * node that has layer l), so a damaged file is rejected with ADB_ECORRUPT
 * and never read out of bounds.
 */
#include "hnsw.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEG_LOG_B 5 /* segment 0 holds 32 nodes */
#define MAX_SEGS 26 /* 32 * (2^26 - 1) = ADB__HNSW_MAX_NODES */
#define MAX_LEVEL 30
#define N_STRIPES 256
#define EXPANDED 0x80000000u /* pool entry already expanded */
#define ID_MASK 0x7fffffffu
#define ENTRY_NONE UINT64_MAX
#define ST_READY 1u   /* fully inserted */
#define ST_DELETED 2u /* tombstone */
#define DEFAULT_M 16
#define DEFAULT_EFC 200
#define DEFAULT_EF 64
#define DEFAULT_EXACT 2000
#define DEFAULT_SEED 0x5eedULL
#define MAX_M 100

/* A candidate: distance to the query and node id (high bit: expanded). */
typedef struct cand {
  float d;
  uint32_t id;
} cand;

typedef struct seg {
  char *nodes;      /* cap blocks of node_bytes: vector, layer-0 list */
  uint64_t *labels; /* per node */
  uint64_t *tags;   /* per node */
  uint32_t **upper; /* lists of layers 1..level, or NULL */
  uint8_t *level;   /* top layer */
  uint8_t *state;   /* ST_* bits, atomic */
} seg;

/* Open-addressing map from uint64 keys to uint32 values (linear probing,
 * backward-shift deletion). Empty slots hold the value UINT32_MAX. */
typedef struct u64map {
  uint64_t *keys;
  uint32_t *vals;
  size_t cap, len;
} u64map;

/* Scratch of one search or insert, pooled per index. */
typedef struct ctx {
  struct ctx *next;
  uint8_t *marks; /* visited when == gen */
  size_t marks_cap;
  uint8_t gen;
  cand *pool; /* search_pool: ef + 1 */
  int pool_cap;
  cand *res; /* search_filtered: max-heap of ef */
  int res_cap;
  cand *cands; /* search_filtered: min-heap, grows */
  size_t cands_cap;
  cand *tmp;     /* shrinking a list: Mmax0 + 1 */
  uint32_t *ids; /* neighbours to visit / selected: Mmax0 + 1 */
  float *qbuf;   /* the query or new vector, normalized for COSINE */
  size_t bytes;
} ctx;

struct adb__hnsw {
  adb__hnsw_config cfg; /* defaults filled in */
  size_t dim;
  int M, M0;
  double level_mult;
  adb__dist_fn dist;
  size_t node_bytes; /* vector, then layer-0 list; multiple of 64 */
  size_t link0_off;  /* offset of the layer-0 list in a node */
  seg segs[MAX_SEGS];
  int n_segs;         /* under map_mu */
  size_t cap_total;   /* atomic: ids below have storage */
  uint32_t n_alloc;   /* atomic: ids handed out */
  size_t n_tomb;      /* atomic: nodes marked deleted */
  size_t n_live;      /* atomic copy of labels.len */
  uint64_t entry;     /* atomic: level << 32 | id, or ENTRY_NONE */
  size_t upper_bytes; /* atomic */
  uint64_t replaces;  /* atomic: replacements published */
  pthread_mutex_t map_mu;
  u64map labels; /* label -> id of live nodes */
  u64map tagcnt; /* tag -> live nodes carrying it */
  pthread_rwlock_t snap;
  pthread_mutex_t entry_mu;
  pthread_mutex_t ctx_mu;
  ctx *free_ctx;
  pthread_mutex_t stripes[N_STRIPES];
};

/* ------------------------------------------------------------ helpers */

static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static inline uint32_t ld32(const uint32_t *p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void st32(uint32_t *p, uint32_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline int mmax(const adb__hnsw *h, int lc) {
  return lc ? h->M : h->M0;
}

/* Segment of id and its offset there. */
static inline const seg *seg_of(const adb__hnsw *h, uint32_t id, size_t *off) {
  uint64_t t = ((uint64_t)id >> SEG_LOG_B) + 1;
  int s = 63 - __builtin_clzll(t);
  *off = id - ((((uint64_t)1 << s) - 1) << SEG_LOG_B);
  return &h->segs[s];
}

static inline size_t seg_cap(int s) {
  return (size_t)1 << (s + SEG_LOG_B);
}

static inline float *node_vec(const adb__hnsw *h, uint32_t id) {
  size_t off;
  const seg *g = seg_of(h, id, &off);
  return (float *)(g->nodes + off * h->node_bytes);
}

/* The list [count, ids...] of id on layer lc (id must have that layer). */
static inline uint32_t *node_links(const adb__hnsw *h, uint32_t id, int lc) {
  size_t off;
  const seg *g = seg_of(h, id, &off);
  if (lc == 0)
    return (uint32_t *)(g->nodes + off * h->node_bytes + h->link0_off);
  return g->upper[off] + (size_t)(lc - 1) * (h->M + 1);
}

static inline uint8_t node_state(const adb__hnsw *h, uint32_t id) {
  size_t off;
  const seg *g = seg_of(h, id, &off);
  return __atomic_load_n(&g->state[off], __ATOMIC_ACQUIRE);
}

static inline void node_set_state(adb__hnsw *h, uint32_t id, uint8_t bits) {
  size_t off;
  const seg *g = seg_of(h, id, &off);
  __atomic_fetch_or(&g->state[off], bits, __ATOMIC_ACQ_REL);
}

static inline int node_level(const adb__hnsw *h, uint32_t id) {
  size_t off;
  return seg_of(h, id, &off)->level[off];
}

/* True when a search may return id under filter f. */
static inline int node_acceptable(const adb__hnsw *h, uint32_t id,
                                  const adb__vec_filter *f) {
  size_t off;
  const seg *g = seg_of(h, id, &off);
  uint8_t st = __atomic_load_n(&g->state[off], __ATOMIC_ACQUIRE);
  if ((st & (ST_READY | ST_DELETED)) != ST_READY) return 0;
  if (!f) return 1; /* touch tags and labels only when asked to */
  if (f->match_tag && g->tags[off] != f->tag) return 0;
  return !f->accept || f->accept(f->arg, g->labels[off], g->tags[off]);
}

static inline uint64_t node_label(const adb__hnsw *h, uint32_t id) {
  size_t off;
  return seg_of(h, id, &off)->labels[off];
}

static inline void prefetch_vec(const adb__hnsw *h, uint32_t id) {
  __builtin_prefetch(node_vec(h, id));
}

static inline float dist_to(const adb__hnsw *h, const float *q, uint32_t id) {
  return h->dist(q, node_vec(h, id), h->dim);
}

static inline uint64_t entry_make(uint32_t id, int level) {
  return (uint64_t)level << 32 | id;
}

static int random_level(const adb__hnsw *h, uint64_t label) {
  uint64_t x = mix64(h->cfg.seed ^ mix64(label + 0x9e3779b97f4a7c15ULL));
  double u = ((double)(x >> 11) + 1.0) * 0x1.0p-53; /* in (0, 1] */
  double l = -log(u) * h->level_mult;
  return l >= MAX_LEVEL ? MAX_LEVEL : (int)l;
}

/* ------------------------------------------------------------ u64map */

static size_t map_slot(const u64map *m, uint64_t key) {
  return mix64(key) & (m->cap - 1);
}

/* Slot holding key, or SIZE_MAX. */
static size_t map_find(const u64map *m, uint64_t key) {
  if (!m->cap) return SIZE_MAX;
  for (size_t i = map_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
    if (m->vals[i] == UINT32_MAX) return SIZE_MAX;
    if (m->keys[i] == key) return i;
  }
}

static uint32_t map_get(const u64map *m, uint64_t key) {
  size_t i = map_find(m, key);
  return i == SIZE_MAX ? UINT32_MAX : m->vals[i];
}

/* Inserts or replaces; the map must have room (map_reserve). */
static void map_set(u64map *m, uint64_t key, uint32_t val) {
  size_t i = map_slot(m, key);
  while (m->vals[i] != UINT32_MAX && m->keys[i] != key)
    i = (i + 1) & (m->cap - 1);
  if (m->vals[i] == UINT32_MAX) m->len++;
  m->keys[i] = key;
  m->vals[i] = val;
}

/* Makes room for `want` keys at a load factor of at most 1/2. */
static int map_reserve(u64map *m, size_t want) {
  if (want * 2 <= m->cap) return ADB_OK;
  size_t cap = m->cap ? m->cap : 16;
  while (cap < want * 2)
    cap *= 2;
  u64map n = {malloc(cap * sizeof(uint64_t)), malloc(cap * sizeof(uint32_t)),
              cap, 0};
  if (!n.keys || !n.vals) {
    free(n.keys);
    free(n.vals);
    return ADB_ENOMEM;
  }
  memset(n.vals, 0xff, cap * sizeof(uint32_t));
  for (size_t i = 0; i < m->cap; i++)
    if (m->vals[i] != UINT32_MAX) map_set(&n, m->keys[i], m->vals[i]);
  free(m->keys);
  free(m->vals);
  *m = n;
  return ADB_OK;
}

static void map_del(u64map *m, uint64_t key) {
  size_t i = map_find(m, key);
  if (i == SIZE_MAX) return;
  size_t mask = m->cap - 1;
  /* Backward shift: pull later entries of the run into the hole when
   * their home slot does not lie strictly between the hole and them. */
  for (size_t j = (i + 1) & mask; m->vals[j] != UINT32_MAX;
       j = (j + 1) & mask) {
    size_t home = map_slot(m, m->keys[j]);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->keys[i] = m->keys[j];
      m->vals[i] = m->vals[j];
      i = j;
    }
  }
  m->vals[i] = UINT32_MAX;
  m->len--;
}

static void map_free(u64map *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof(*m));
}

static size_t map_bytes(const u64map *m) {
  return m->cap * (sizeof(uint64_t) + sizeof(uint32_t));
}

static void tag_add(u64map *m, uint64_t tag, int delta) {
  uint32_t c = map_get(m, tag);
  c = (c == UINT32_MAX ? 0 : c) + delta;
  if (c)
    map_set(m, tag, c);
  else
    map_del(m, tag);
}

/* ------------------------------------------------------------ config */

static int config_fill(const adb__hnsw_config *in, adb__hnsw_config *out) {
  *out = *in;
  if (in->dim < 1 || in->dim > ADB_MAX_EMBEDDING_DIM) return ADB_EINVAL;
  if (!adb__vec_metric_valid(in->metric)) return ADB_EINVAL;
  if (in->M < 0 || in->M == 1 || in->M > MAX_M) return ADB_EINVAL;
  if (in->ef_construction < 0 || in->ef_construction > ADB__HNSW_MAX_EF)
    return ADB_EINVAL;
  if (in->ef_search < 0 || in->ef_search > ADB__HNSW_MAX_EF) return ADB_EINVAL;
  if (!out->M) out->M = DEFAULT_M;
  if (!out->ef_construction) out->ef_construction = DEFAULT_EFC;
  if (!out->ef_search) out->ef_search = DEFAULT_EF;
  if (!out->exact_threshold) out->exact_threshold = DEFAULT_EXACT;
  if (out->exact_threshold < 0) out->exact_threshold = -1;
  if (!out->seed) out->seed = DEFAULT_SEED;
  return ADB_OK;
}

void adb__hnsw_get_config(const adb__hnsw *h, adb__hnsw_config *out) {
  *out = h->cfg;
}

/* ------------------------------------------------------------ lifecycle */

int adb__hnsw_create(const adb__hnsw_config *cfg, adb__hnsw **out) {
  if (!out) return ADB_EINVAL;
  *out = NULL;
  if (!cfg) return ADB_EINVAL;
  adb__hnsw *h = calloc(1, sizeof(*h));
  if (!h) return ADB_ENOMEM;
  int rc = config_fill(cfg, &h->cfg);
  if (rc != ADB_OK) {
    free(h);
    return rc;
  }
  h->dim = (size_t)h->cfg.dim;
  h->M = h->cfg.M;
  h->M0 = 2 * h->cfg.M;
  h->level_mult = 1.0 / log((double)h->M);
  h->dist = adb__vec_index_kernel(adb__vec_kernels_active(), h->cfg.metric);
  h->link0_off = h->dim * sizeof(float);
  h->node_bytes = (h->link0_off + (1 + (size_t)h->M0) * 4 + 63) & ~(size_t)63;
  h->entry = ENTRY_NONE;
  pthread_mutex_init(&h->map_mu, NULL);
  /* Writer-preferring, so that a stream of adds cannot starve a save. */
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra,
                                PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&h->snap, &ra);
  pthread_rwlockattr_destroy(&ra);
  pthread_mutex_init(&h->entry_mu, NULL);
  pthread_mutex_init(&h->ctx_mu, NULL);
  for (int i = 0; i < N_STRIPES; i++)
    pthread_mutex_init(&h->stripes[i], NULL);
  *out = h;
  return ADB_OK;
}

static void ctx_free(ctx *c) {
  if (!c) return;
  free(c->marks);
  free(c->pool);
  free(c->res);
  free(c->cands);
  free(c->tmp);
  free(c->ids);
  free(c->qbuf);
  free(c);
}

static void seg_free(seg *g, size_t cap) {
  if (g->upper)
    for (size_t i = 0; i < cap; i++)
      free(g->upper[i]);
  free(g->nodes);
  free(g->labels);
  free(g->tags);
  free(g->upper);
  free(g->level);
  free(g->state);
  memset(g, 0, sizeof(*g));
}

void adb__hnsw_destroy(adb__hnsw *h) {
  if (!h) return;
  for (int s = 0; s < h->n_segs; s++)
    seg_free(&h->segs[s], seg_cap(s));
  map_free(&h->labels);
  map_free(&h->tagcnt);
  while (h->free_ctx) {
    ctx *c = h->free_ctx;
    h->free_ctx = c->next;
    ctx_free(c);
  }
  pthread_mutex_destroy(&h->map_mu);
  pthread_rwlock_destroy(&h->snap);
  pthread_mutex_destroy(&h->entry_mu);
  pthread_mutex_destroy(&h->ctx_mu);
  for (int i = 0; i < N_STRIPES; i++)
    pthread_mutex_destroy(&h->stripes[i]);
  free(h);
}

/* Allocates segment s (under map_mu). */
static int seg_alloc(adb__hnsw *h, int s) {
  size_t cap = seg_cap(s);
  seg g = {0};
  if (posix_memalign((void **)&g.nodes, 64, cap * h->node_bytes)) g.nodes = 0;
  g.labels = malloc(cap * sizeof(uint64_t));
  g.tags = malloc(cap * sizeof(uint64_t));
  g.upper = calloc(cap, sizeof(uint32_t *));
  g.level = calloc(cap, 1);
  g.state = calloc(cap, 1);
  if (!g.nodes || !g.labels || !g.tags || !g.upper || !g.level || !g.state) {
    seg_free(&g, 0);
    return ADB_ENOMEM;
  }
  h->segs[s] = g;
  h->n_segs = s + 1;
  __atomic_store_n(&h->cap_total, h->cap_total + cap, __ATOMIC_RELEASE);
  return ADB_OK;
}

/* Storage for id n_alloc (under map_mu). */
static int reserve_storage(adb__hnsw *h) {
  size_t n = h->n_alloc;
  if (n >= ADB__HNSW_MAX_NODES) return ADB_EFULL;
  if (n < h->cap_total) return ADB_OK;
  return seg_alloc(h, h->n_segs);
}

/* ------------------------------------------------------------ scratch */

/* Grows *p to hold n elements of size sz (contents kept). */
static int grow(void *pp, size_t *cap, size_t n, size_t sz, size_t *bytes) {
  void **p = pp;
  if (n <= *cap) return ADB_OK;
  void *q = realloc(*p, n * sz);
  if (!q) return ADB_ENOMEM;
  *bytes += (n - *cap) * sz;
  *p = q;
  *cap = n;
  return ADB_OK;
}

static int grow_int(void *pp, int *cap, size_t n, size_t sz, size_t *bytes) {
  size_t c = (size_t)*cap;
  int rc = grow(pp, &c, n, sz, bytes);
  *cap = (int)c;
  return rc;
}

/* Makes c fit searches of width ef on the index as it is now. */
static int ctx_fit(adb__hnsw *h, ctx *c, int ef) {
  size_t nodes = __atomic_load_n(&h->cap_total, __ATOMIC_ACQUIRE);
  if (c->marks_cap < nodes) {
    uint8_t *m = calloc(nodes, 1);
    if (!m) return ADB_ENOMEM;
    free(c->marks);
    c->bytes += nodes - c->marks_cap;
    c->marks = m;
    c->marks_cap = nodes;
    c->gen = 0;
  }
  size_t m0 = (size_t)h->M0 + 1, e = (size_t)ef + 1, tc = 0, ic = 0, qc = 0;
  if (c->tmp) tc = ic = m0;
  if (c->qbuf) qc = h->dim;
  if (grow_int(&c->pool, &c->pool_cap, e, sizeof(cand), &c->bytes) ||
      grow_int(&c->res, &c->res_cap, e, sizeof(cand), &c->bytes) ||
      grow(&c->cands, &c->cands_cap, 2 * e + m0, sizeof(cand), &c->bytes) ||
      grow(&c->tmp, &tc, m0, sizeof(cand), &c->bytes) ||
      grow(&c->ids, &ic, m0, sizeof(uint32_t), &c->bytes) ||
      grow(&c->qbuf, &qc, h->dim, sizeof(float), &c->bytes))
    return ADB_ENOMEM;
  return ADB_OK;
}

static int ctx_get(adb__hnsw *h, int ef, ctx **out) {
  pthread_mutex_lock(&h->ctx_mu);
  ctx *c = h->free_ctx;
  if (c) h->free_ctx = c->next;
  pthread_mutex_unlock(&h->ctx_mu);
  if (!c && !(c = calloc(1, sizeof(*c)))) return ADB_ENOMEM;
  int rc = ctx_fit(h, c, ef);
  if (rc != ADB_OK) {
    ctx_free(c);
    return rc;
  }
  *out = c;
  return ADB_OK;
}

static void ctx_put(adb__hnsw *h, ctx *c) {
  pthread_mutex_lock(&h->ctx_mu);
  c->next = h->free_ctx;
  h->free_ctx = c;
  pthread_mutex_unlock(&h->ctx_mu);
}

/* Starts a new visited set. */
static void ctx_new_visit(ctx *c) {
  if (++c->gen == 0) {
    memset(c->marks, 0, c->marks_cap);
    c->gen = 1;
  }
}

/* Marks id visited; false when it already was, or is newer than the set. */
static inline int ctx_visit(ctx *c, uint32_t id) {
  if (id >= c->marks_cap || c->marks[id] == c->gen) return 0;
  c->marks[id] = c->gen;
  return 1;
}

/* Unvisited neighbours of id on layer lc into c->ids, marked and
 * prefetched; returns their number. */
static int gather(const adb__hnsw *h, ctx *c, uint32_t id, int lc) {
  const uint32_t *ll = node_links(h, id, lc);
  uint32_t cnt = ld32(ll);
  uint32_t lim = (uint32_t)mmax(h, lc);
  int u = 0;
  if (cnt > lim) cnt = lim;
  for (uint32_t j = 1; j <= cnt; j++) {
    uint32_t x = ld32(ll + j);
    if (!ctx_visit(c, x)) continue;
    prefetch_vec(h, x);
    c->ids[u++] = x;
  }
  return u;
}

/* ------------------------------------------------------------ search */

/* Greedy descent on layer lc (Algorithm 2 with ef = 1). */
static void greedy(const adb__hnsw *h, const float *q, uint32_t *ep, float *dep,
                   int lc) {
  for (int changed = 1; changed;) {
    changed = 0;
    const uint32_t *ll = node_links(h, *ep, lc);
    uint32_t cnt = ld32(ll);
    if (cnt > (uint32_t)h->M) cnt = (uint32_t)h->M;
    for (uint32_t j = 1; j <= cnt; j++) {
      uint32_t x = ld32(ll + j);
      float d = dist_to(h, q, x);
      if (d < *dep) {
        *dep = d;
        *ep = x;
        changed = 1;
      }
    }
  }
}

/* Inserts (d, id) into the sorted pool p of *n (at most ef) entries, the
 * farthest dropping out when full. Returns its position. */
static inline int pool_insert(cand *p, int *n, int ef, float d, uint32_t id) {
  int lo = 0, hi = *n;
  while (lo < hi) {
    int mid = (lo + hi) >> 1;
    if (p[mid].d <= d)
      lo = mid + 1;
    else
      hi = mid;
  }
  int move = *n - lo - (*n == ef);
  if (move > 0) memmove(p + lo + 1, p + lo, (size_t)move * sizeof(cand));
  p[lo].d = d;
  p[lo].id = id;
  if (*n < ef) (*n)++;
  return lo;
}

/* SEARCH-LAYER (Algorithm 2) without a filter, from ep on layer lc: leaves
 * the ef nearest found in c->pool, sorted, and returns their number. */
static int search_pool(const adb__hnsw *h, ctx *c, const float *q, uint32_t ep,
                       float dep, int ef, int lc) {
  cand *p = c->pool;
  int n = 1, cur = 0;
  p[0].d = dep;
  p[0].id = ep;
  ctx_new_visit(c);
  ctx_visit(c, ep);
  while (cur < n) {
    uint32_t id = p[cur].id;
    p[cur].id |= EXPANDED;
    int best = n, u = gather(h, c, id, lc);
    for (int j = 0; j < u; j++) {
      if (j + 1 < u) prefetch_vec(h, c->ids[j + 1]);
      float d = dist_to(h, q, c->ids[j]);
      if (n == ef && d >= p[n - 1].d) continue;
      int pos = pool_insert(p, &n, ef, d, c->ids[j]);
      if (pos < best) best = pos;
    }
    cur = best <= cur ? best : cur + 1;
    while (cur < n && (p[cur].id & EXPANDED))
      cur++;
  }
  return n;
}

/* Binary heaps of cand: the min-heap (s = +1, nearest on top) and the
 * max-heap (s = -1, farthest on top) share one implementation. */
static inline int heap_before(const cand *a, const cand *b, int s) {
  return s > 0 ? a->d < b->d : a->d > b->d;
}

static void heap_push(cand *hp, size_t *n, cand x, int s) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_before(&x, &hp[p], s)) break;
    hp[i] = hp[p];
    i = p;
  }
  hp[i] = x;
}

static cand heap_pop(cand *hp, size_t *n, int s) {
  cand top = hp[0], x = hp[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t k = 2 * i + 1;
    if (k >= *n) break;
    if (k + 1 < *n && heap_before(&hp[k + 1], &hp[k], s)) k++;
    if (!heap_before(&hp[k], &x, s)) break;
    hp[i] = hp[k];
    i = k;
  }
  if (*n) hp[i] = x;
  return top;
}

/* Pushes onto the candidate min-heap, growing it. */
static int cands_push(ctx *c, size_t *n, float d, uint32_t id) {
  if (*n == c->cands_cap &&
      grow(&c->cands, &c->cands_cap, 2 * c->cands_cap, sizeof(cand), &c->bytes))
    return ADB_ENOMEM;
  heap_push(c->cands, n, (cand){d, id}, 1);
  return ADB_OK;
}

/* Considers node x at distance d for the filtered search's sets. */
static int filtered_offer(const adb__hnsw *h, ctx *c, size_t *nc, size_t *nr,
                          int ef, const adb__vec_filter *f, uint32_t x,
                          float d) {
  if ((int)*nr == ef && d >= c->res[0].d) return ADB_OK;
  if (cands_push(c, nc, d, x)) return ADB_ENOMEM;
  if (!node_acceptable(h, x, f)) return ADB_OK;
  heap_push(c->res, nr, (cand){d, x}, -1);
  if ((int)*nr > ef) heap_pop(c->res, nr, -1);
  return ADB_OK;
}

/* SEARCH-LAYER (Algorithm 2) on layer 0 where W admits only nodes that are
 * live and pass f, while C admits any node nearer than W's farthest.
 * Leaves W in c->res as a max-heap and its size in *nr. */
static int search_filtered(const adb__hnsw *h, ctx *c, const float *q,
                           uint32_t ep, float dep, int ef,
                           const adb__vec_filter *f, size_t *nr) {
  size_t nc = 0;
  *nr = 0;
  ctx_new_visit(c);
  ctx_visit(c, ep);
  if (filtered_offer(h, c, &nc, nr, ef, f, ep, dep)) return ADB_ENOMEM;
  while (nc > 0) {
    cand cur = heap_pop(c->cands, &nc, 1);
    if ((int)*nr == ef && cur.d > c->res[0].d) break;
    int u = gather(h, c, cur.id, 0);
    for (int j = 0; j < u; j++) {
      if (j + 1 < u) prefetch_vec(h, c->ids[j + 1]);
      float d = dist_to(h, q, c->ids[j]);
      if (filtered_offer(h, c, &nc, nr, ef, f, c->ids[j], d)) return ADB_ENOMEM;
    }
  }
  return ADB_OK;
}

static int cand_cmp(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

/* Exact scan of every live node that f keeps. */
static void exact_scan(const adb__hnsw *h, const float *q, int k,
                       const adb__vec_filter *f, adb__vec_hit *out,
                       int *n_out) {
  adb__topk t;
  adb__topk_init(&t, out, k);
  size_t n = __atomic_load_n(&h->n_alloc, __ATOMIC_ACQUIRE);
  for (int s = 0; (size_t)s < MAX_SEGS && n > 0; s++) {
    const seg *g = &h->segs[s];
    size_t m = n < seg_cap(s) ? n : seg_cap(s);
    for (size_t i = 0; i < m; i++) {
      uint8_t st = __atomic_load_n(&g->state[i], __ATOMIC_ACQUIRE);
      if ((st & (ST_READY | ST_DELETED)) != ST_READY) continue;
      if (!adb__vec_filter_keep(f, g->labels[i], g->tags[i])) continue;
      float d =
          h->dist(q, (const float *)(g->nodes + i * h->node_bytes), h->dim);
      adb__topk_push(&t, g->labels[i], d);
    }
    n -= m;
  }
  *n_out = adb__topk_finish(&t);
}

/* K-NN-SEARCH (Algorithm 5). */
static int graph_search(adb__hnsw *h, ctx *c, const float *q, int k, int ef,
                        const adb__vec_filter *f, adb__vec_hit *out,
                        int *n_out) {
  uint64_t e = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
  if (e == ENTRY_NONE) return ADB_OK;
  uint32_t ep = (uint32_t)e;
  float dep = dist_to(h, q, ep);
  for (int lc = (int)(e >> 32); lc > 0; lc--)
    greedy(h, q, &ep, &dep, lc);
  int r = 0;
  if (!f && __atomic_load_n(&h->n_tomb, __ATOMIC_ACQUIRE) == 0) {
    int n = search_pool(h, c, q, ep, dep, ef, 0);
    for (int i = 0; i < n && r < k; i++) {
      uint32_t id = c->pool[i].id & ID_MASK;
      if (!node_acceptable(h, id, NULL)) continue;
      out[r].label = node_label(h, id);
      out[r++].dist = c->pool[i].d;
    }
  } else {
    size_t nr;
    if (search_filtered(h, c, q, ep, dep, ef, f, &nr)) return ADB_ENOMEM;
    qsort(c->res, nr, sizeof(cand), cand_cmp);
    for (; r < (int)nr && r < k; r++) {
      out[r].label = node_label(h, c->res[r].id);
      out[r].dist = c->res[r].d;
    }
  }
  *n_out = r;
  return ADB_OK;
}

/* Live vectors carrying tag. */
static size_t tag_count(adb__hnsw *h, uint64_t tag) {
  pthread_mutex_lock(&h->map_mu);
  uint32_t c = map_get(&h->tagcnt, tag);
  pthread_mutex_unlock(&h->map_mu);
  return c == UINT32_MAX ? 0 : c;
}

/* Whether an AUTO query should scan exactly (see the essay). */
static int want_exact(adb__hnsw *h, int ef, const adb__vec_filter *f) {
  size_t live = __atomic_load_n(&h->n_live, __ATOMIC_ACQUIRE);
  if (h->cfg.exact_threshold >= 0 && live < (size_t)h->cfg.exact_threshold)
    return 1;
  if (!f || !f->match_tag) return 0;
  double c = (double)tag_count(h, f->tag);
  return c * c < 4.0 * ef * (double)live;
}

static int query_valid(const adb__hnsw *h, const adb__hnsw_query *q,
                       const adb__vec_hit *out) {
  if (!q || !q->vec || q->k < 0 || q->k > ADB__HNSW_MAX_EF) return 0;
  if (q->ef < 0 || q->ef > ADB__HNSW_MAX_EF || (q->k > 0 && !out)) return 0;
  if (q->mode < ADB__HNSW_AUTO || q->mode > ADB__HNSW_EXACT) return 0;
  return adb__vec_finite(q->vec, h->dim);
}

/* Copies v into c->qbuf, normalized for COSINE. */
static int load_query(const adb__hnsw *h, ctx *c, const float *v) {
  memcpy(c->qbuf, v, h->dim * sizeof(float));
  if (h->cfg.metric != ADB__METRIC_COSINE) return ADB_OK;
  return adb__vec_normalize(c->qbuf, h->dim);
}

static int hit_by_label(const void *a, const void *b) {
  const adb__vec_hit *x = a, *y = b;
  if (x->label != y->label) return x->label < y->label ? -1 : 1;
  return (x->dist > y->dist) - (x->dist < y->dist);
}

static int hit_by_dist(const void *a, const void *b) {
  const adb__vec_hit *x = a, *y = b;
  if (x->dist != y->dist) return x->dist < y->dist ? -1 : 1;
  return (x->label > y->label) - (x->label < y->label);
}

/* Keeps the nearest hit of each label. */
static void dedupe(adb__vec_hit *out, int *n) {
  int r = 0;
  qsort(out, *n, sizeof(*out), hit_by_label);
  for (int i = 0; i < *n; i++)
    if (r == 0 || out[r - 1].label != out[i].label) out[r++] = out[i];
  qsort(out, r, sizeof(*out), hit_by_dist);
  *n = r;
}

int adb__hnsw_search(adb__hnsw *h, const adb__hnsw_query *q, adb__vec_hit *out,
                     int *n_out) {
  if (n_out) *n_out = 0;
  if (!h || !n_out || !query_valid(h, q, out)) return ADB_EINVAL;
  if (q->k == 0) return ADB_OK;
  int ef = q->ef ? q->ef : h->cfg.ef_search;
  if (ef < q->k) ef = q->k;
  ctx *c;
  int rc = ctx_get(h, ef, &c);
  if (rc != ADB_OK) return rc;
  rc = load_query(h, c, q->vec);
  uint64_t replaces = __atomic_load_n(&h->replaces, __ATOMIC_ACQUIRE);
  if (rc == ADB_OK) {
    int exact = q->mode == ADB__HNSW_EXACT ||
                (q->mode == ADB__HNSW_AUTO && want_exact(h, ef, q->filter));
    if (exact)
      exact_scan(h, c->qbuf, q->k, q->filter, out, n_out);
    else
      rc = graph_search(h, c, c->qbuf, q->k, ef, q->filter, out, n_out);
  }
  if (__atomic_load_n(&h->replaces, __ATOMIC_ACQUIRE) != replaces)
    dedupe(out, n_out);
  ctx_put(h, c);
  return rc;
}

/* ------------------------------------------------------------ insert */

/* SELECT-NEIGHBORS-HEURISTIC (Algorithm 4): from candidates w sorted by
 * distance to the base vector, keeps up to m, each nearer the base than to
 * every one already kept. Skips `self`. */
static int select_neighbors(const adb__hnsw *h, const cand *w, int n, int m,
                            uint32_t self, uint32_t *out) {
  int r = 0;
  for (int i = 0; i < n && r < m; i++) {
    uint32_t id = w[i].id & ID_MASK;
    if (id == self) continue;
    const float *v = node_vec(h, id);
    int good = 1;
    for (int j = 0; j < r && good; j++)
      if (h->dist(v, node_vec(h, out[j]), h->dim) < w[i].d) good = 0;
    if (good) out[r++] = id;
  }
  return r;
}

/* Adds link e -> q on layer lc, shrinking e's list with Algorithm 4 when
 * it overflows. */
static void add_link(adb__hnsw *h, ctx *c, uint32_t e, uint32_t q, int lc) {
  pthread_mutex_t *mu = &h->stripes[e % N_STRIPES];
  pthread_mutex_lock(mu);
  uint32_t *ll = node_links(h, e, lc);
  uint32_t cnt = ld32(ll), lim = (uint32_t)mmax(h, lc);
  int dup = 0;
  for (uint32_t j = 1; j <= cnt && !dup; j++)
    dup = ll[j] == q;
  if (dup) {
    /* already linked */
  } else if (cnt < lim) {
    st32(ll + 1 + cnt, q);
    st32(ll, cnt + 1);
  } else {
    const float *ev = node_vec(h, e);
    for (uint32_t j = 0; j < cnt; j++)
      c->tmp[j] =
          (cand){h->dist(ev, node_vec(h, ll[j + 1]), h->dim), ll[j + 1]};
    c->tmp[cnt] = (cand){h->dist(ev, node_vec(h, q), h->dim), q};
    qsort(c->tmp, cnt + 1, sizeof(cand), cand_cmp);
    int r = select_neighbors(h, c->tmp, (int)cnt + 1, (int)lim, e, c->ids);
    for (int j = 0; j < r; j++)
      st32(ll + 1 + j, c->ids[j]);
    st32(ll, (uint32_t)r);
  }
  pthread_mutex_unlock(mu);
}

/* INSERT (Algorithm 1) of node q, whose storage is written, at level. */
static void insert_links(adb__hnsw *h, ctx *c, uint32_t q, int level) {
  const float *qv = node_vec(h, q);
  uint64_t e = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
  int top = e == ENTRY_NONE || level > (int)(e >> 32);
  if (top) {
    pthread_mutex_lock(&h->entry_mu);
    e = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
    top = e == ENTRY_NONE || level > (int)(e >> 32);
    if (!top) pthread_mutex_unlock(&h->entry_mu);
  }
  if (e != ENTRY_NONE) {
    uint32_t ep = (uint32_t)e, sel[2 * MAX_M + 1];
    int L = (int)(e >> 32);
    float dep = dist_to(h, qv, ep);
    for (int lc = L; lc > level; lc--)
      greedy(h, qv, &ep, &dep, lc);
    for (int lc = level < L ? level : L; lc >= 0; lc--) {
      int n = search_pool(h, c, qv, ep, dep, h->cfg.ef_construction, lc);
      int m = select_neighbors(h, c->pool, n, h->M, q, sel);
      for (int j = 0; j < m; j++)
        add_link(h, c, q, sel[j], lc);
      for (int j = 0; j < m; j++)
        add_link(h, c, sel[j], q, lc);
      ep = c->pool[0].id & ID_MASK;
      dep = c->pool[0].d;
    }
  }
  if (top) {
    __atomic_store_n(&h->entry, entry_make(q, level), __ATOMIC_RELEASE);
    pthread_mutex_unlock(&h->entry_mu);
  }
}

/* Writes the data of node id: vector, label, tag and its empty state
 * (under map_mu, so that remove and get, which find the node through the
 * label map, see them; a remove that comes before the insert finishes
 * leaves its tombstone bit for publish to keep). */
static void node_set_data(adb__hnsw *h, uint32_t id, uint64_t label,
                          uint64_t tag, const float *v) {
  size_t off;
  seg *g = (seg *)seg_of(h, id, &off);
  memcpy(g->nodes + off * h->node_bytes, v, h->dim * sizeof(float));
  g->labels[off] = label;
  g->tags[off] = tag;
  __atomic_store_n(&g->state[off], 0, __ATOMIC_RELEASE);
}

/* Writes the empty lists of node id (before anyone can reach it). */
static void node_init(adb__hnsw *h, uint32_t id, int level, uint32_t *upper) {
  size_t off;
  seg *g = (seg *)seg_of(h, id, &off);
  uint32_t *ll = (uint32_t *)(g->nodes + off * h->node_bytes + h->link0_off);
  ll[0] = 0;
  for (int j = 1; j <= h->M0; j++)
    ll[j] = id;
  for (int l = 0; l < level; l++) {
    uint32_t *u = upper + (size_t)l * (h->M + 1);
    u[0] = 0;
    for (int j = 1; j <= h->M; j++)
      u[j] = id;
  }
  g->level[off] = (uint8_t)level;
  g->upper[off] = upper;
}

/* Under map_mu: an id for label, storage and map room for it; *old is the
 * node it replaces or UINT32_MAX. */
static int reserve_node(adb__hnsw *h, uint64_t label, uint64_t tag,
                        const float *v, uint32_t *id, uint32_t *old) {
  int rc = reserve_storage(h);
  if (rc == ADB_OK) rc = map_reserve(&h->labels, h->labels.len + 1);
  if (rc == ADB_OK) rc = map_reserve(&h->tagcnt, h->tagcnt.len + 1);
  if (rc != ADB_OK) return rc;
  *id = h->n_alloc;
  *old = map_get(&h->labels, label);
  if (*old != UINT32_MAX) {
    size_t off;
    tag_add(&h->tagcnt, seg_of(h, *old, &off)->tags[off], -1);
  }
  node_set_data(h, *id, label, tag, v);
  map_set(&h->labels, label, *id);
  tag_add(&h->tagcnt, tag, +1);
  __atomic_store_n(&h->n_live, h->labels.len, __ATOMIC_RELEASE);
  __atomic_store_n(&h->n_alloc, *id + 1, __ATOMIC_RELEASE);
  return ADB_OK;
}

/* Makes id searchable, retiring the node it replaces. A search that ran
 * meanwhile may have found the old node live and then the new one: the
 * counter, raised before either flips, tells it to drop the duplicate. */
static void publish(adb__hnsw *h, uint32_t id, uint32_t old) {
  pthread_mutex_lock(&h->map_mu);
  if (old != UINT32_MAX) {
    __atomic_fetch_add(&h->replaces, 1, __ATOMIC_ACQ_REL);
    node_set_state(h, old, ST_DELETED);
    __atomic_fetch_add(&h->n_tomb, 1, __ATOMIC_ACQ_REL);
  }
  node_set_state(h, id, ST_READY);
  pthread_mutex_unlock(&h->map_mu);
}

int adb__hnsw_add(adb__hnsw *h, uint64_t label, uint64_t tag,
                  const float *vec) {
  if (!h || !vec || !adb__vec_finite(vec, h->dim)) return ADB_EINVAL;
  ctx *c;
  int rc = ctx_get(h, h->cfg.ef_construction, &c);
  if (rc != ADB_OK) return rc;
  int level = random_level(h, label);
  uint32_t *upper = NULL, id, old;
  if ((rc = load_query(h, c, vec)) != ADB_OK) goto done;
  size_t ub = (size_t)level * (h->M + 1) * sizeof(uint32_t);
  if (level > 0 && !(upper = malloc(ub))) {
    rc = ADB_ENOMEM;
    goto done;
  }
  pthread_rwlock_rdlock(&h->snap);
  pthread_mutex_lock(&h->map_mu);
  rc = reserve_node(h, label, tag, c->qbuf, &id, &old);
  pthread_mutex_unlock(&h->map_mu);
  if (rc == ADB_OK) {
    __atomic_fetch_add(&h->upper_bytes, ub, __ATOMIC_RELAXED);
    node_init(h, id, level, upper);
    upper = NULL;
    insert_links(h, c, id, level);
    publish(h, id, old);
  }
  pthread_rwlock_unlock(&h->snap);
done:
  free(upper);
  ctx_put(h, c);
  return rc;
}

int adb__hnsw_remove(adb__hnsw *h, uint64_t label) {
  if (!h) return ADB_EINVAL;
  pthread_rwlock_rdlock(&h->snap);
  pthread_mutex_lock(&h->map_mu);
  uint32_t id = map_get(&h->labels, label);
  if (id != UINT32_MAX) {
    size_t off;
    tag_add(&h->tagcnt, seg_of(h, id, &off)->tags[off], -1);
    map_del(&h->labels, label);
    __atomic_store_n(&h->n_live, h->labels.len, __ATOMIC_RELEASE);
    node_set_state(h, id, ST_DELETED);
    __atomic_fetch_add(&h->n_tomb, 1, __ATOMIC_ACQ_REL);
  }
  pthread_mutex_unlock(&h->map_mu);
  pthread_rwlock_unlock(&h->snap);
  return id == UINT32_MAX ? ADB_ENOTFOUND : ADB_OK;
}

int adb__hnsw_contains(adb__hnsw *h, uint64_t label) {
  if (!h) return 0;
  pthread_mutex_lock(&h->map_mu);
  uint32_t id = map_get(&h->labels, label);
  pthread_mutex_unlock(&h->map_mu);
  return id != UINT32_MAX;
}

int adb__hnsw_get(adb__hnsw *h, uint64_t label, float *vec, uint64_t *tag) {
  if (!h) return ADB_EINVAL;
  pthread_mutex_lock(&h->map_mu);
  uint32_t id = map_get(&h->labels, label);
  if (id != UINT32_MAX) {
    size_t off;
    if (vec) memcpy(vec, node_vec(h, id), h->dim * sizeof(float));
    if (tag) *tag = seg_of(h, id, &off)->tags[off];
  }
  pthread_mutex_unlock(&h->map_mu);
  return id == UINT32_MAX ? ADB_ENOTFOUND : ADB_OK;
}

/* ------------------------------------------------------------ stats */

void adb__hnsw_stats_get(adb__hnsw *h, adb__hnsw_stats *out) {
  memset(out, 0, sizeof(*out));
  out->max_level = -1;
  if (!h) return;
  pthread_mutex_lock(&h->map_mu);
  size_t cap = h->cap_total, vec = h->dim * sizeof(float);
  out->live = h->labels.len;
  out->deleted = h->n_alloc - h->labels.len;
  out->bytes_vectors = cap * vec;
  out->bytes_links = cap * (h->node_bytes - vec) +
                     __atomic_load_n(&h->upper_bytes, __ATOMIC_RELAXED);
  out->bytes_other = cap * (3 * sizeof(uint64_t) + 2) + map_bytes(&h->labels) +
                     map_bytes(&h->tagcnt) + sizeof(*h);
  pthread_mutex_unlock(&h->map_mu);
  pthread_mutex_lock(&h->ctx_mu);
  for (ctx *c = h->free_ctx; c; c = c->next)
    out->bytes_other += sizeof(*c) + c->bytes;
  pthread_mutex_unlock(&h->ctx_mu);
  uint64_t e = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
  if (e != ENTRY_NONE) out->max_level = (int)(e >> 32);
  out->bytes_total = out->bytes_vectors + out->bytes_links + out->bytes_other;
}

/* ------------------------------------------------------------ snapshot */

#define SNAP_MAGIC "ADBHNSW" /* 8 bytes with the NUL */
#define SNAP_END "ADBE"      /* 4 bytes, no NUL */
#define SNAP_VERSION 1u
#define SNAP_HEADER 60  /* bytes */
#define SNAP_TRAILER 16 /* bytes */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc_table[i] = c;
  }
}

/* CRC-32C (Castagnoli), continuing from crc (0 to start). */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) {
  pthread_once(&crc_once, crc_init);
  crc = ~crc;
  while (n--)
    crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

typedef struct wbuf {
  FILE *f;
  uint32_t crc;
  uint64_t total;
  size_t n;
  int err;
  uint8_t b[1 << 16];
} wbuf;

static void w_flush(wbuf *w) {
  if (w->n && fwrite(w->b, 1, w->n, w->f) != w->n) w->err = 1;
  w->crc = crc32c(w->crc, w->b, w->n);
  w->n = 0;
}

static void w_bytes(wbuf *w, const void *p, size_t n) {
  const uint8_t *s = p;
  while (n) {
    if (w->n == sizeof(w->b)) w_flush(w);
    size_t k = sizeof(w->b) - w->n < n ? sizeof(w->b) - w->n : n;
    memcpy(w->b + w->n, s, k);
    w->n += k;
    w->total += k;
    s += k;
    n -= k;
  }
}

static void w_u32(wbuf *w, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                  (uint8_t)(v >> 24)};
  w_bytes(w, b, 4);
}

static void w_u64(wbuf *w, uint64_t v) {
  w_u32(w, (uint32_t)v);
  w_u32(w, (uint32_t)(v >> 32));
}

static void w_u8(wbuf *w, uint8_t v) {
  w_bytes(w, &v, 1);
}

static void w_f32s(wbuf *w, const float *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    w_u32(w, u);
  }
}

static void w_header(wbuf *w, const adb__hnsw *h, size_t n) {
  w_bytes(w, SNAP_MAGIC, 8);
  w_u32(w, SNAP_VERSION);
  w_u32(w, (uint32_t)h->cfg.metric);
  w_u32(w, (uint32_t)h->cfg.dim);
  w_u32(w, (uint32_t)h->cfg.M);
  w_u32(w, (uint32_t)h->cfg.ef_construction);
  w_u32(w, (uint32_t)h->cfg.ef_search);
  w_u32(w, (uint32_t)h->cfg.exact_threshold);
  w_u64(w, h->cfg.seed);
  w_u64(w, n);
  w_u64(w, h->entry);
}

static void w_node(wbuf *w, const adb__hnsw *h, uint32_t id) {
  size_t off;
  const seg *g = seg_of(h, id, &off);
  int level = g->level[off];
  w_u64(w, g->labels[off]);
  w_u64(w, g->tags[off]);
  w_u8(w, (uint8_t)level);
  w_u8(w, (node_state(h, id) & ST_DELETED) ? 1 : 0);
  w_f32s(w, node_vec(h, id), h->dim);
  for (int lc = 0; lc <= level; lc++) {
    const uint32_t *ll = node_links(h, id, lc);
    uint32_t cnt = ld32(ll);
    w_u32(w, cnt);
    for (uint32_t j = 1; j <= cnt; j++)
      w_u32(w, ld32(ll + j));
  }
}

/* Writes the whole snapshot to f. */
static int write_snapshot(adb__hnsw *h, FILE *f) {
  wbuf *w = calloc(1, sizeof(*w));
  if (!w) return ADB_ENOMEM;
  w->f = f;
  size_t n = h->n_alloc;
  w_header(w, h, n);
  for (size_t id = 0; id < n; id++)
    w_node(w, h, (uint32_t)id);
  w_u64(w, w->total);
  w_flush(w); /* w->crc now covers everything before the CRC field */
  w_u32(w, w->crc);
  w_bytes(w, SNAP_END, 4);
  w_flush(w);
  int err = w->err;
  free(w);
  return err ? ADB_EIO : ADB_OK;
}

int adb__hnsw_save(adb__hnsw *h, const char *path) {
  if (!h || !path) return ADB_EINVAL;
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 5);
  if (!tmp) return ADB_ENOMEM;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  int rc = ADB_EIO;
  pthread_rwlock_wrlock(&h->snap);
  FILE *f = fopen(tmp, "wb");
  if (f) {
    rc = write_snapshot(h, f);
    if ((fflush(f) != 0 || fsync(fileno(f)) != 0) && rc == ADB_OK) rc = ADB_EIO;
    if (fclose(f) != 0 && rc == ADB_OK) rc = ADB_EIO;
  }
  pthread_rwlock_unlock(&h->snap);
  if (rc == ADB_OK && rename(tmp, path) != 0) rc = ADB_EIO;
  if (rc != ADB_OK) remove(tmp);
  free(tmp);
  return rc;
}

/* A bounds-checked little-endian reader; `bad` sticks once set. */
typedef struct rbuf {
  const uint8_t *p;
  size_t n, i;
  int bad;
} rbuf;

static const uint8_t *r_take(rbuf *r, size_t k) {
  if (r->bad || r->n - r->i < k) {
    r->bad = 1;
    return NULL;
  }
  r->i += k;
  return r->p + r->i - k;
}

static uint32_t get_u32(const uint8_t *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}

static uint64_t get_u64(const uint8_t *b) {
  return (uint64_t)get_u32(b) | (uint64_t)get_u32(b + 4) << 32;
}

static uint32_t r_u32(rbuf *r) {
  const uint8_t *b = r_take(r, 4);
  return b ? get_u32(b) : 0;
}

static uint64_t r_u64(rbuf *r) {
  const uint8_t *b = r_take(r, 8);
  return b ? get_u64(b) : 0;
}

static uint8_t r_u8(rbuf *r) {
  const uint8_t *b = r_take(r, 1);
  return b ? b[0] : 0;
}

/* Reads the header into a config, node count and entry word. */
static int r_header(rbuf *r, adb__hnsw_config *cfg, uint64_t *n,
                    uint64_t *entry) {
  const uint8_t *m = r_take(r, 8);
  if (!m || memcmp(m, SNAP_MAGIC, 8) != 0) return ADB_ECORRUPT;
  if (r_u32(r) != SNAP_VERSION) return ADB_ECORRUPT;
  memset(cfg, 0, sizeof(*cfg));
  cfg->metric = (adb__metric)r_u32(r);
  cfg->dim = (int)r_u32(r);
  cfg->M = (int)r_u32(r);
  cfg->ef_construction = (int)r_u32(r);
  cfg->ef_search = (int)r_u32(r);
  cfg->exact_threshold = (int)r_u32(r);
  cfg->seed = r_u64(r);
  *n = r_u64(r);
  *entry = r_u64(r);
  if (r->bad || cfg->dim < 1 || cfg->dim > ADB_MAX_EMBEDDING_DIM)
    return ADB_ECORRUPT;
  /* Every node takes at least 22 bytes and its vector: a cheap bound that
   * stops a crafted count from allocating much. */
  if (*n > ADB__HNSW_MAX_NODES || *n > (r->n - r->i) / (22 + 4 * cfg->dim))
    return ADB_ECORRUPT;
  return ADB_OK;
}

/* Reads the lists of node id (level layers) into its storage. */
static int r_links(rbuf *r, adb__hnsw *h, uint32_t id, int level, uint64_t n) {
  for (int lc = 0; lc <= level; lc++) {
    uint32_t *ll = node_links(h, id, lc), cnt = r_u32(r);
    if (cnt > (uint32_t)mmax(h, lc)) return ADB_ECORRUPT;
    for (uint32_t j = 1; j <= cnt; j++) {
      uint32_t x = r_u32(r);
      if (x >= n) return ADB_ECORRUPT;
      ll[j] = x;
    }
    ll[0] = cnt;
  }
  return r->bad ? ADB_ECORRUPT : ADB_OK;
}

/* Reads node id; v is scratch for its vector. */
static int r_node(rbuf *r, adb__hnsw *h, uint32_t id, uint64_t n, float *v) {
  int rc = reserve_storage(h);
  if (rc != ADB_OK) return rc;
  uint64_t label = r_u64(r), tag = r_u64(r);
  int level = r_u8(r), deleted = r_u8(r);
  if (level > MAX_LEVEL || deleted > 1) return ADB_ECORRUPT;
  for (size_t i = 0; i < h->dim; i++) {
    uint32_t u = r_u32(r);
    memcpy(&v[i], &u, 4);
  }
  if (r->bad || !adb__vec_finite(v, h->dim)) return ADB_ECORRUPT;
  uint32_t *upper = NULL;
  size_t ub = (size_t)level * (h->M + 1) * sizeof(uint32_t);
  if (level > 0 && !(upper = malloc(ub))) return ADB_ENOMEM;
  h->upper_bytes += ub;
  node_set_data(h, id, label, tag, v);
  node_init(h, id, level, upper);
  h->n_alloc = id + 1;
  if ((rc = r_links(r, h, id, level, n)) != ADB_OK) return rc;
  if (deleted) {
    h->n_tomb++;
    node_set_state(h, id, ST_READY | ST_DELETED);
    return ADB_OK;
  }
  if (map_get(&h->labels, label) != UINT32_MAX) return ADB_ECORRUPT;
  if (map_reserve(&h->labels, h->labels.len + 1) ||
      map_reserve(&h->tagcnt, h->tagcnt.len + 1))
    return ADB_ENOMEM;
  map_set(&h->labels, label, id);
  tag_add(&h->tagcnt, tag, +1);
  node_set_state(h, id, ST_READY);
  return ADB_OK;
}

/* Every link on layer l leads to a node that has layer l; the entry point
 * is a node of the level it claims. */
static int check_graph(const adb__hnsw *h, uint64_t entry) {
  size_t n = h->n_alloc;
  if (entry == ENTRY_NONE) return n == 0 ? ADB_OK : ADB_ECORRUPT;
  if ((uint32_t)entry >= n ||
      (int)(entry >> 32) != node_level(h, (uint32_t)entry))
    return ADB_ECORRUPT;
  for (uint32_t id = 0; id < n; id++) {
    int level = node_level(h, id);
    for (int lc = 1; lc <= level; lc++) {
      const uint32_t *ll = node_links(h, id, lc);
      for (uint32_t j = 1; j <= ll[0]; j++)
        if (node_level(h, ll[j]) < lc) return ADB_ECORRUPT;
    }
  }
  return ADB_OK;
}

/* Length, end marker and checksum of the whole buffer. */
static int check_envelope(const uint8_t *b, size_t len) {
  if (len < SNAP_HEADER + SNAP_TRAILER) return ADB_ECORRUPT;
  size_t body = len - SNAP_TRAILER;
  if (memcmp(b + len - 4, SNAP_END, 4) != 0) return ADB_ECORRUPT;
  if (get_u64(b + body) != body) return ADB_ECORRUPT;
  if (crc32c(0, b, body + 8) != get_u32(b + body + 8)) return ADB_ECORRUPT;
  return ADB_OK;
}

static int load_nodes(rbuf *r, adb__hnsw *h, uint64_t n, uint64_t entry) {
  float *v = malloc(h->dim * sizeof(float));
  if (!v) return ADB_ENOMEM;
  int rc = ADB_OK;
  for (uint64_t id = 0; id < n && rc == ADB_OK; id++)
    rc = r_node(r, h, (uint32_t)id, n, v);
  free(v);
  if (rc == ADB_OK && r->i != r->n) rc = ADB_ECORRUPT;
  if (rc == ADB_OK) rc = check_graph(h, entry);
  if (rc != ADB_OK) return rc;
  h->entry = entry;
  h->n_live = h->labels.len;
  return ADB_OK;
}

int adb__hnsw_load_buf(const void *buf, size_t len, adb__hnsw **out) {
  if (!out) return ADB_EINVAL;
  *out = NULL;
  if (!buf) return ADB_EINVAL;
  int rc = check_envelope(buf, len);
  if (rc != ADB_OK) return rc;
  rbuf r = {buf, len - SNAP_TRAILER, 0, 0};
  adb__hnsw_config cfg;
  uint64_t n, entry;
  if ((rc = r_header(&r, &cfg, &n, &entry)) != ADB_OK) return rc;
  adb__hnsw *h;
  rc = adb__hnsw_create(&cfg, &h);
  if (rc != ADB_OK) return rc == ADB_EINVAL ? ADB_ECORRUPT : rc;
  if ((rc = load_nodes(&r, h, n, entry)) != ADB_OK) {
    adb__hnsw_destroy(h);
    return rc;
  }
  *out = h;
  return ADB_OK;
}

int adb__hnsw_load(const char *path, adb__hnsw **out) {
  if (!out) return ADB_EINVAL;
  *out = NULL;
  if (!path) return ADB_EINVAL;
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? ADB_ENOTFOUND : ADB_EIO;
  long len = -1;
  if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
  uint8_t *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
  int rc = len < 0 ? ADB_EIO : buf ? ADB_OK : ADB_ENOMEM;
  if (rc == ADB_OK && (fseek(f, 0, SEEK_SET) != 0 ||
                       fread(buf, 1, (size_t)len, f) != (size_t)len))
    rc = ADB_EIO;
  fclose(f);
  if (rc == ADB_OK) rc = adb__hnsw_load_buf(buf, (size_t)len, out);
  free(buf);
  return rc;
}
