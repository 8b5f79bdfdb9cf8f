/*
 * test_slab.c — the memory of queued decisions (src/slab.c): blocks from
 * several threads are aligned, distinct and keep what was written into
 * them until freed, by any thread; a chunk whose blocks are all freed is
 * reused; a block too large for a chunk is refused (the caller mallocs).
 * Run under ThreadSanitizer too (scripts/test.sh).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "slab.h"

#define THREADS 4
#define BLOCKS 20000 /* per thread: ~6 MiB, several chunks each */
#define CHUNK ((uintptr_t)2 << 20)

#if defined(__SANITIZE_ADDRESS__)
#define PLAIN_MALLOC 1 /* slab.c hands out malloc blocks under ASan */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PLAIN_MALLOC 1
#endif
#endif

typedef struct block {
  unsigned char *p;
  size_t n;
} block;

typedef struct worker {
  int id;
  block b[BLOCKS];
} worker;

static worker workers[THREADS];

static size_t size_of(int t, int i) {
  return 1 + (size_t)((i * 131 + t * 17) % 600);
}

static void *carve(void *arg) {
  worker *w = arg;
  for (int i = 0; i < BLOCKS; i++) {
    size_t n = size_of(w->id, i);
    unsigned char *p = adb__slab_alloc(n);
    if (!p) return (void *)1;
    memset(p, (w->id * 31 + i) & 0xff, n);
    w->b[i] = (block){p, n};
  }
  return NULL;
}

static int intact(const block *b, int t, int i) {
  for (size_t k = 0; k < b->n; k++)
    if (b->p[k] != ((t * 31 + i) & 0xff)) return 0;
  return 1;
}

/* Frees every other block of every thread, from this thread, then the
 * rest; all must be intact when freed. */
static void free_all(void) {
  for (int pass = 0; pass < 2; pass++)
    for (int t = 0; t < THREADS; t++)
      for (int i = pass; i < BLOCKS; i += 2) {
        assert_true(intact(&workers[t].b[i], t, i));
        adb__slab_free(workers[t].b[i].p);
      }
}

static void carve_in_threads(void) {
  pthread_t th[THREADS];
  for (int t = 0; t < THREADS; t++) {
    workers[t].id = t;
    assert_int_equal(pthread_create(&th[t], NULL, carve, &workers[t]), 0);
  }
  for (int t = 0; t < THREADS; t++) {
    void *r;
    assert_int_equal(pthread_join(th[t], &r), 0);
    assert_null(r);
  }
}

static void blocks_are_aligned_distinct_and_kept(void **state) {
  (void)state;
  carve_in_threads();
  for (int t = 0; t < THREADS; t++)
    for (int i = 0; i < BLOCKS; i++) {
      assert_int_equal((uintptr_t)workers[t].b[i].p % 16, 0);
      assert_true(intact(&workers[t].b[i], t, i));
    }
  free_all();
}

static void *one_block(void *arg) {
  void **out = arg;
  *out = adb__slab_alloc(100);
  return NULL;
}

static uintptr_t chunks[THREADS * BLOCKS];

static void freed_chunks_are_reused(void **state) {
  (void)state;
  carve_in_threads();
  int n = 0;
  for (int t = 0; t < THREADS; t++)
    for (int i = 0; i < BLOCKS; i++)
      chunks[n++] = (uintptr_t)workers[t].b[i].p & ~(CHUNK - 1);
  free_all(); /* the carving threads have exited: every chunk is free */
  void *p = NULL;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, one_block, &p), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_non_null(p);
#ifndef PLAIN_MALLOC
  int reused = 0;
  for (int i = 0; i < n && !reused; i++)
    reused = chunks[i] == ((uintptr_t)p & ~(CHUNK - 1));
  assert_true(reused);
#endif
  adb__slab_free(p);
}

static void a_block_larger_than_a_chunk_is_refused(void **state) {
  (void)state;
#ifndef PLAIN_MALLOC
  assert_null(adb__slab_alloc((size_t)CHUNK));
#endif
  void *p = adb__slab_alloc((size_t)CHUNK / 2);
  assert_non_null(p);
  memset(p, 1, (size_t)CHUNK / 2);
  adb__slab_free(p);
  adb__slab_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(blocks_are_aligned_distinct_and_kept),
      cmocka_unit_test(freed_chunks_are_reused),
      cmocka_unit_test(a_block_larger_than_a_chunk_is_refused),
  };
  return cmocka_run_group_tests_name("slab", tests, NULL, NULL);
}
