/*
 * propmemo.c — a per-thread memo of the propensities that needed an
 * integral.
 *
 * Why. A mature arm's propensity is settled by the bounds pass over the
 * arms (about 0.7 us for 20); broad, overlapping posteriors need the
 * integral of adb__propensity (bandit.c), 10 to 20 times that. Those are
 * the cold users: a user with no rewards of their own in a state decides
 * over posteriors made of the agent's prior and the agent-wide '*' rows
 * alone, so every cold user of that state who is offered the same
 * candidates asks for the very same integral, until a reward changes the
 * '*' row of one of those candidates. The memo keeps the answers.
 *
 * Exact. A set is found only when n, the eligibility of every arm and the
 * posterior of every eligible arm (adb__same_posterior: the fields the
 * propensity reads, compared with ==) are equal to the stored ones, so a
 * hit returns a number computed for these very arguments (no randomness,
 * no other input). A hash of those fields picks the slot; it only has to
 * spread sets, never to identify them.
 *
 * Shape. Per thread, MEMO_SETS slots in pairs (two-way set-associative:
 * a set may sit in either slot of the pair its hash picks, and a new one
 * replaces the pair's less recently used). A slot holds one candidate
 * set's posteriors and the propensity of each choice computed so far (-1
 * for not yet), so the choices of one set share one slot. Sets of more
 * than MEMO_MAX_ARMS arms are not kept. At most MEMO_SETS * MEMO_MAX_ARMS
 * * 65 bytes (532 kB; 166 kB for 20 candidates) a thread, allocated on
 * first use, freed when the thread exits; a thread whose decisions never
 * need an integral allocates nothing.
 *
 * Cost. A lookup hashes and compares the set (about 0.1 to 0.2 us for 20
 * arms), paid only after the bounds pass has decided that an integral is
 * needed, never on the mature path.
 *
 * Arms. A set the memo has not seen is most often made of arms it has
 * (bandit.c, design note 5): the thread also keeps MEMO_ARMS Beta arms'
 * CDFs and densities at the nodes of a fixed grid (adb__armgrid, 2 kB
 * each), in groups of four by a hash of (a, b, level); the hashes of a
 * set's arms are compared first and a match confirmed by the shapes and
 * level, so a value is only ever read for the arm it was computed for.
 * The arms of one set are looked up together and hold their entries
 * until the next lookup: an arm whose group is full of the set's own gets
 * one of ARM_SPARE spare entries, not kept. The arms add 286 kB a thread
 * to the sets' slots (pages touched as entries are used).
 */
#include "propmemo.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define MEMO_SETS 128
#define MEMO_MAX_ARMS 64
/* MEMO_ARMS armgrid entries in groups of ARM_WAYS (set-associative), and
 * ARM_SPARE spares (arm_find) */
#define MEMO_ARMS 128
#define ARM_WAYS 4
#define ARM_SPARE 8

typedef struct memo_set {
  uint64_t h, used; /* the hash; when last used (memo.clock) */
  int n, cap;
  adb__posterior *arms; /* [cap] */
  uint8_t *in;          /* [cap]: eligible */
  double *p;            /* [cap]: propensity of each choice, -1 unknown */
} memo_set;

typedef struct arm_key {
  uint64_t tag;  /* the arm's hash: compared first */
  uint64_t used; /* 0: empty */
  double a, b;
  int level;
} arm_key;

typedef struct memo {
  memo_set set[MEMO_SETS]; /* MEMO_SETS / 2 pairs */
  arm_key key[MEMO_ARMS];  /* apart from the values: 2 lines a lookup */
  adb__armgrid arm[MEMO_ARMS];
  adb__armgrid spare[ARM_SPARE]; /* see arm_find */
  int spares;
  uint64_t clock, hits, misses;
} memo;

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t memo_key;
static _Thread_local memo *tl_memo;
static _Thread_local int tl_off;

static void memo_free(void *v) {
  memo *m = v;
  if (m == tl_memo) tl_memo = NULL;
  for (int i = 0; i < MEMO_SETS; i++) {
    free(m->set[i].arms);
    free(m->set[i].in);
    free(m->set[i].p);
  }
  free(m);
}

static void make_key(void) {
  pthread_key_create(&memo_key, memo_free);
}

static memo *memo_get(void) {
  if (tl_memo) return tl_memo;
  pthread_once(&key_once, make_key);
  tl_memo = calloc(1, sizeof *tl_memo);
  if (tl_memo) pthread_setspecific(memo_key, tl_memo);
  return tl_memo;
}

/* The bits of a double, with -0.0 as 0.0 (they compare equal). */
static inline uint64_t dbits(double d) {
  d += 0.0;
  uint64_t w;
  memcpy(&w, &d, sizeof w);
  return w;
}

static inline int is_in(const uint8_t *eligible, int j) {
  return !eligible || eligible[j];
}

static uint64_t set_hash(const adb__posterior *arms, int n,
                         const uint8_t *eligible) {
  uint64_t h = ADB__ID_SEED ^ (uint64_t)n;
  for (int j = 0; j < n; j++) {
    const adb__posterior *a = &arms[j];
    if (!is_in(eligible, j))
      h = adb__round64(h, 0x5bd1e995u);
    else if (a->algo == ADB_ALGO_GAUSSIAN)
      h = adb__round64(adb__round64(h, dbits(a->mu) ^ dbits(a->kappa)),
                       dbits(a->a) ^ adb__rotl(dbits(a->b), 17));
    else
      h = adb__round64(h, dbits(a->alpha) ^ adb__rotl(dbits(a->beta), 17));
  }
  return adb__mix64(h);
}

static int set_equal(const memo_set *s, const adb__posterior *arms, int n,
                     const uint8_t *eligible) {
  if (s->n != n) return 0;
  for (int j = 0; j < n; j++) {
    int in = is_in(eligible, j) != 0;
    if (s->in[j] != in) return 0;
    if (in && !adb__same_posterior(&s->arms[j], &arms[j])) return 0;
  }
  return 1;
}

static int set_store(memo_set *s, uint64_t h, const adb__posterior *arms, int n,
                     const uint8_t *eligible) {
  if (s->cap < n) {
    free(s->arms);
    free(s->in);
    free(s->p);
    s->arms = malloc(n * sizeof *s->arms);
    s->in = malloc(n);
    s->p = malloc(n * sizeof *s->p);
    s->cap = (s->arms && s->in && s->p) ? n : 0;
    if (!s->cap) {
      s->n = 0;
      return -1;
    }
  }
  s->h = h;
  s->n = n;
  memcpy(s->arms, arms, n * sizeof *arms);
  for (int j = 0; j < n; j++) {
    s->in[j] = is_in(eligible, j) != 0;
    s->p[j] = -1.0;
  }
  return 0;
}

static int found(const memo_set *s, uint64_t h, const adb__posterior *arms,
                 int n, const uint8_t *eligible) {
  return s->n && s->h == h && set_equal(s, arms, n, eligible);
}

double *adb__propmemo_cell(const adb__posterior *arms, int n,
                           const uint8_t *eligible, int chosen) {
  if (tl_off || n > MEMO_MAX_ARMS || chosen < 0 || chosen >= n) return NULL;
  memo *m = memo_get();
  if (!m) return NULL;
  uint64_t h = set_hash(arms, n, eligible);
  memo_set *s = &m->set[h % (MEMO_SETS / 2) * 2];
  if (!found(s, h, arms, n, eligible)) {
    if (found(s + 1, h, arms, n, eligible)) {
      s++;
    } else {
      if (s[1].used < s->used) s++; /* replace the pair's older set */
      if (set_store(s, h, arms, n, eligible)) return NULL;
    }
  }
  s->used = ++m->clock;
  if (s->p[chosen] >= 0.0)
    m->hits++;
  else
    m->misses++;
  return &s->p[chosen];
}

/* One arm's entry. The ways' hashes are compared without branches
 * (which way holds an arm is as good as random: a branch on it was
 * mispredicted often), then the one that matches is confirmed. An entry
 * this batch uses (stamp) is never replaced: an arm whose group is full
 * of them gets a spare entry, kept only until the next batch (NULL when
 * the ARM_SPARE spares are taken). */
static adb__armgrid *arm_find(memo *m, const adb__armref *key, uint64_t h,
                              uint64_t stamp) {
  int g = (int)(h % (MEMO_ARMS / ARM_WAYS)) * ARM_WAYS, e;
  unsigned hit = 0;
  for (int i = 0; i < ARM_WAYS; i++)
    hit |= (unsigned)(m->key[g + i].tag == h) << i;
  if (hit) { /* the shapes and level confirm it (empty entries: a = 0) */
    e = g + __builtin_ctz(hit);
    const arm_key *k = &m->key[e];
    if (k->a == key->a && k->b == key->b && k->level == key->level) {
      m->key[e].used = stamp;
      return &m->arm[e];
    }
  }
  e = g; /* the group's least recently used entry is replaced */
  for (int i = g + 1; i < g + ARM_WAYS; i++)
    if (m->key[i].used < m->key[e].used) e = i;
  adb__armgrid *a;
  if (m->key[e].used == stamp) {
    if (m->spares == ARM_SPARE) return NULL;
    a = &m->spare[m->spares++];
  } else {
    m->key[e] = (arm_key){h, stamp, key->a, key->b, key->level};
    a = &m->arm[e];
  }
  a->base = key->base;
  a->has_cdf = a->has_pdf = 0;
  return a;
}

int adb__propmemo_arms(adb__armref *arm, int k) {
  memo *m = tl_off ? NULL : memo_get();
  if (!m || k > 2 * MEMO_MAX_ARMS) return -1;
  uint64_t h[2 * MEMO_MAX_ARMS], stamp = ++m->clock;
  for (int i = 0; i < k; i++) /* all hashes first: they overlap */
    h[i] = adb__mix64(dbits(arm[i].a) ^ adb__rotl(dbits(arm[i].b), 17) ^
                      (uint64_t)arm[i].level);
  m->spares = 0;
  for (int i = 0; i < k; i++)
    if (!(arm[i].e = arm_find(m, &arm[i], h[i], stamp))) return -1;
  return 0;
}

void adb__propmemo_enable(int on) {
  tl_off = !on;
}

void adb__propmemo_counts(uint64_t *hits, uint64_t *misses) {
  *hits = tl_memo ? tl_memo->hits : 0;
  *misses = tl_memo ? tl_memo->misses : 0;
}
