/*
 * slab.c — memory for queued decisions.
 *
 * A burst of decisions outruns the log's drain, so each queued decision is
 * memory its thread touches for the first time. In this project's virtual
 * machines a first touch costs about 3 ns a byte — a page fault per 4 KiB,
 * more than the rest of the decision (docs/performance.md). So queued
 * decisions are carved out of 2 MiB chunks, aligned so that the kernel can
 * back each with one huge page (MADV_HUGEPAGE: one fault per chunk where
 * transparent huge pages are enabled, as "madvise" or "always"), and the
 * chunks whose items have all been freed are kept for reuse (up to
 * SLAB_KEEP of them), so that while the log keeps up no page is new.
 *
 * Each thread bumps through a chunk of its own (no lock on the way in). A
 * chunk counts its live items plus one for the thread carving it; whoever
 * drops the count to zero (the last free, or the thread moving on to a new
 * chunk or exiting) puts it back in the pool. An item finds its chunk by
 * rounding its address down to the chunk size.
 *
 * Under AddressSanitizer items are plain malloc blocks, so that it still
 * sees an overrun of one.
 */
#include "slab.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define CHUNK ((size_t)2 << 20)
#define SLAB_KEEP 16 /* chunks kept for reuse: 32 MiB */
#define ALIGN 16

/* AddressSanitizer: GCC defines the macro, clang (the fuzzers) has the
 * feature test. Its leak checker does not read mmap'd chunks, so it would
 * also lose sight of what queued items point to. */
#if defined(__SANITIZE_ADDRESS__)
#define SLAB_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_MALLOC 1
#endif
#endif

#ifdef SLAB_MALLOC

void *adb__slab_alloc(size_t n) {
  return malloc(n);
}

void adb__slab_free(void *p) {
  free(p);
}

#else

typedef struct chunk {
  _Atomic long refs;  /* live items + 1 while a thread carves it */
  size_t used;        /* bytes carved, the header included */
  struct chunk *next; /* in the pool */
} chunk;

#define HEADER ((sizeof(chunk) + ALIGN - 1) & ~(size_t)(ALIGN - 1))

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static chunk *pool;
static int pool_n;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t cur_key;
static _Thread_local chunk *cur;

/* A fresh 2 MiB-aligned chunk from the kernel, or NULL. */
static chunk *chunk_map(void) {
  char *p = mmap(NULL, 2 * CHUNK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  char *c = (char *)(((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1));
  if (c > p) munmap(p, (size_t)(c - p));
  if (c + CHUNK < p + 2 * CHUNK)
    munmap(c + CHUNK, (size_t)(p + 2 * CHUNK - (c + CHUNK)));
  madvise(c, CHUNK, MADV_HUGEPAGE); /* a hint: no huge pages is fine */
  return (chunk *)(void *)c;
}

static chunk *chunk_get(void) {
  pthread_mutex_lock(&pool_mu);
  chunk *c = pool;
  if (c) {
    pool = c->next;
    pool_n--;
  }
  pthread_mutex_unlock(&pool_mu);
  if (!c && !(c = chunk_map())) return NULL;
  atomic_store(&c->refs, 1);
  c->used = HEADER;
  return c;
}

static void chunk_put(chunk *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  pthread_mutex_lock(&pool_mu);
  int keep = pool_n < SLAB_KEEP;
  if (keep) {
    c->next = pool;
    pool = c;
    pool_n++;
  }
  pthread_mutex_unlock(&pool_mu);
  if (!keep) munmap(c, CHUNK);
}

/* A thread that exits gives up the chunk it was carving. */
static void thread_done(void *c) {
  if (c == cur) cur = NULL;
  chunk_put(c);
}

static void make_key(void) {
  pthread_key_create(&cur_key, thread_done);
}

void *adb__slab_alloc(size_t n) {
  n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  if (n > CHUNK - HEADER) return NULL;
  if (!cur || cur->used + n > CHUNK) {
    pthread_once(&key_once, make_key);
    chunk *c = chunk_get();
    if (!c) return NULL;
    if (cur) chunk_put(cur);
    cur = c;
    pthread_setspecific(cur_key, c);
  }
  void *p = (char *)cur + cur->used;
  cur->used += n;
  atomic_fetch_add(&cur->refs, 1);
  return p;
}

void adb__slab_free(void *p) {
  if (p) chunk_put((chunk *)((uintptr_t)p & ~(uintptr_t)(CHUNK - 1)));
}

#endif
