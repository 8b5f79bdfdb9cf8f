/*
 * test_statekey.c — the state key and its SimHash bucket: canonical (order
 * of the context and of the configured keys does not matter), sensitive
 * (values, absence vs empty, the bucket), a known answer computed here
 * from the byte encoding documented in statekey.h, and SimHash locality.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bandit.h"
#include "statekey.h"

typedef char ckey[ADB_ID_MAX + 1];

static void set_keys(ckey *k, const char *const *names, int n) {
  memset(k, 0, sizeof(ckey) * ADB_MAX_CONTEXT_KEYS);
  for (int i = 0; i < n; i++)
    snprintf(k[i], sizeof k[i], "%s", names[i]);
}

static void key_of(const char *const *names, int nk, const adb_kv *ctx, int nc,
                   char out[65]) {
  ckey k[ADB_MAX_CONTEXT_KEYS];
  set_keys(k, names, nk);
  assert_int_equal(adb__state_key(k, nk, ctx, nc, NULL, 0, 0, out), ADB_OK);
  assert_int_equal(strlen(out), 64);
}

static const char *const k3[] = {"genre", "device", "daypart"};

/* ---------------------------------------------------- canonical encoding */

static void same_context_in_any_order_gives_same_key(void **state) {
  (void)state;
  adb_kv a[] = {{"genre", "drama"}, {"device", "tv"}, {"daypart", "night"}};
  adb_kv b[] = {{"daypart", "night"}, {"genre", "drama"}, {"device", "tv"}};
  char ka[65], kb[65];
  key_of(k3, 3, a, 3, ka);
  key_of(k3, 3, b, 3, kb);
  assert_string_equal(ka, kb);
  const char *const k3r[] = {"daypart", "genre", "device"};
  key_of(k3r, 3, a, 3, kb); /* configured order does not matter either */
  assert_string_equal(ka, kb);
}

static void different_value_gives_different_key(void **state) {
  (void)state;
  adb_kv a[] = {{"genre", "drama"}, {"device", "tv"}, {"daypart", "night"}};
  adb_kv b[] = {{"genre", "drama"}, {"device", "tv"}, {"daypart", "day"}};
  char ka[65], kb[65];
  key_of(k3, 3, a, 3, ka);
  key_of(k3, 3, b, 3, kb);
  assert_string_not_equal(ka, kb);
}

static void missing_and_empty_values_differ(void **state) {
  (void)state;
  adb_kv a[] = {{"genre", "drama"}, {"device", ""}};
  adb_kv b[] = {{"genre", "drama"}};
  char ka[65], kb[65];
  key_of(k3, 3, a, 2, ka);
  key_of(k3, 3, b, 1, kb);
  assert_string_not_equal(ka, kb);
}

/* Length prefixes keep ("ab", "c") and ("a", "bc") apart. */
static void boundaries_between_values_are_encoded(void **state) {
  (void)state;
  const char *const k2[] = {"a", "b"};
  adb_kv x[] = {{"a", "xy"}, {"b", "z"}};
  adb_kv y[] = {{"a", "x"}, {"b", "yz"}};
  char kx[65], ky[65];
  key_of(k2, 2, x, 2, kx);
  key_of(k2, 2, y, 2, ky);
  assert_string_not_equal(kx, ky);
}

static void unconfigured_context_keys_are_ignored(void **state) {
  (void)state;
  adb_kv a[] = {{"genre", "drama"}, {"session", "s-123"}};
  adb_kv b[] = {{"genre", "drama"}, {"session", "s-456"}, {"x", "y"}};
  char ka[65], kb[65];
  key_of(k3, 1, a, 2, ka);
  key_of(k3, 1, b, 3, kb);
  assert_string_equal(ka, kb);
}

static void repeated_context_key_takes_first_value(void **state) {
  (void)state;
  adb_kv a[] = {{"genre", "drama"}, {"genre", "comedy"}};
  adb_kv b[] = {{"genre", "drama"}};
  char ka[65], kb[65];
  key_of(k3, 1, a, 2, ka);
  key_of(k3, 1, b, 1, kb);
  assert_string_equal(ka, kb);
}

/* ------------------------------------------------------- known answers */

static void put_u32(unsigned char **p, uint32_t v) {
  for (int i = 3; i >= 0; i--)
    *(*p)++ = (unsigned char)(v >> (8 * i));
}

static void put_str(unsigned char **p, const char *s) {
  put_u32(p, (uint32_t)strlen(s));
  memcpy(*p, s, strlen(s));
  *p += strlen(s);
}

static void sha256_hex_ref(const unsigned char *buf, size_t len, char *hex) {
  unsigned char md[32];
  unsigned int n = 0;
  assert_int_equal(EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL), 1);
  assert_int_equal(n, 32);
  for (int i = 0; i < 32; i++)
    sprintf(hex + 2 * i, "%02x", md[i]);
}

static void sha256_hex_of_abc_is_the_fips_vector(void **state) {
  (void)state;
  char out[65];
  adb__sha256_hex("abc", 3, out);
  assert_string_equal(
      out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* The hand-built encoding of k3 up to device's value: the magic, then the
 * keys sorted byte-wise ("daypart" < "device" < "genre"), daypart absent. */
static unsigned char *ref_begin(unsigned char *buf) {
  unsigned char *p = buf;
  memcpy(p, "adb-state-v1", 12);
  p += 12;
  put_str(&p, "daypart");
  put_u32(&p, 0xFFFFFFFFu);
  put_str(&p, "device");
  return p;
}

static void state_key_matches_hand_built_encoding(void **state) {
  (void)state;
  unsigned char buf[256], *p = ref_begin(buf);
  put_str(&p, "tv");
  put_str(&p, "genre");
  put_str(&p, "");
  char want[65], got[65];
  sha256_hex_ref(buf, (size_t)(p - buf), want);
  adb_kv ctx[] = {{"genre", ""}, {"device", "tv"}, {"other", "1"}};
  key_of(k3, 3, ctx, 3, got);
  assert_string_equal(got, want);
}

/* The per-thread memo of short encodings (statekey.c) must never answer
 * another context's key: 600 lookups over 24 contexts (three times the
 * memo's slots, so hits, misses and evictions), among them values long
 * enough to bypass it (300 bytes) and to overflow the encoding's buffer
 * (700), each checked against the digest of its hand-built encoding. */
static void state_keys_through_the_memo_match_hand_built_encodings(void **s) {
  (void)s;
  static char vals[24][701];
  for (int v = 0; v < 24; v++) {
    size_t len = v == 5 ? 300 : v == 7 ? 700 : (size_t)(1 + v % 5);
    for (size_t i = 0; i < len; i++)
      vals[v][i] = (char)('a' + (v + (int)i) % 26);
    vals[v][len] = '\0';
  }
  adb__rng r;
  adb__rng_seed(&r, 3);
  for (int t = 0; t < 600; t++) {
    int v = (int)(adb__rng_next(&r) % 24);
    unsigned char buf[1024], *p = ref_begin(buf);
    put_str(&p, vals[v]);
    put_str(&p, "genre");
    put_u32(&p, 0xFFFFFFFFu);
    char want[65], got[65];
    sha256_hex_ref(buf, (size_t)(p - buf), want);
    adb_kv ctx[] = {{"device", vals[v]}};
    key_of(k3, 3, ctx, 1, got);
    assert_string_equal(got, want);
  }
}

/* Hyperplane i: entry j is -1 when bit j%64 of output j/64 of xoshiro256**
 * seeded with 0x5EED0000 + i is set; dot products in double, index order. */
static uint64_t simhash_ref(const float *v, int dim, int bits) {
  uint64_t h = 0;
  for (int i = 0; i < bits; i++) {
    adb__rng r;
    adb__rng_seed(&r, 0x5EED0000ULL + (uint64_t)i);
    uint64_t word = 0;
    double dot = 0.0;
    for (int j = 0; j < dim; j++) {
      if (j % 64 == 0) word = adb__rng_next(&r);
      dot += ((word >> (j % 64)) & 1) ? -(double)v[j] : (double)v[j];
    }
    if (dot >= 0.0) h |= (uint64_t)1 << i;
  }
  return h;
}

static void fill_gauss(adb__rng *r, float *v, int dim) {
  for (int j = 0; j < dim; j++)
    v[j] = (float)adb__rng_normal(r);
}

static void simhash_matches_reference_planes(void **state) {
  (void)state;
  static const int dims[] = {1, 63, 64, 65, 128, 1000, ADB_MAX_EMBEDDING_DIM};
  static float v[ADB_MAX_EMBEDDING_DIM];
  adb__rng r;
  adb__rng_seed(&r, 1);
  for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
    fill_gauss(&r, v, dims[d]);
    for (int bits = 1; bits <= 64; bits += 21)
      assert_int_equal(adb__simhash(v, dims[d], bits),
                       simhash_ref(v, dims[d], bits));
    assert_int_equal(adb__simhash(v, dims[d], 64), simhash_ref(v, dims[d], 64));
  }
}

static void state_key_with_simhash_matches_hand_built_encoding(void **state) {
  (void)state;
  float v[16];
  adb__rng r;
  adb__rng_seed(&r, 2);
  fill_gauss(&r, v, 16);
  uint64_t bucket = simhash_ref(v, 16, 12);
  unsigned char buf[256], *p = buf;
  memcpy(p, "adb-state-v1", 12);
  p += 12;
  put_str(&p, "genre");
  put_str(&p, "drama");
  memcpy(p, "simhash", 7);
  p += 7;
  *p++ = 12;
  for (int i = 7; i >= 0; i--)
    *p++ = (unsigned char)(bucket >> (8 * i));
  char want[65], got[65];
  sha256_hex_ref(buf, (size_t)(p - buf), want);
  ckey k[ADB_MAX_CONTEXT_KEYS];
  set_keys(k, k3, 1);
  adb_kv ctx[] = {{"genre", "drama"}};
  assert_int_equal(adb__state_key(k, 1, ctx, 1, v, 16, 12, got), ADB_OK);
  assert_string_equal(got, want);
}

/* --------------------------------------------------------------- SimHash */

static void simhash_is_stable_and_scale_invariant(void **state) {
  (void)state;
  float v[128], w[128];
  adb__rng r;
  adb__rng_seed(&r, 3);
  fill_gauss(&r, v, 128);
  for (int j = 0; j < 128; j++)
    w[j] = 4.0f * v[j]; /* exact in float */
  uint64_t h = adb__simhash(v, 128, 64);
  assert_int_equal(adb__simhash(v, 128, 64), h);
  assert_int_equal(adb__simhash(w, 128, 64), h);
  assert_int_equal(adb__simhash(v, 128, 16), h & 0xFFFF); /* prefix */
}

/* A random hyperplane separates two vectors at angle t with probability
 * t / pi (Charikar 2002). y = x + 0.1 z has t ~ atan(0.1) = 0.0997, so
 * about 2.0 of 64 bits differ on average; unrelated vectors differ in 32
 * (sd 4). Averages over 200 pairs: SE below 0.15 resp. 0.3. */
static void simhash_nearby_vectors_share_more_bits(void **state) {
  (void)state;
  enum { DIM = 96, PAIRS = 200 };
  float x[DIM], y[DIM], z[DIM];
  adb__rng r;
  adb__rng_seed(&r, 4);
  double near = 0, far = 0;
  for (int p = 0; p < PAIRS; p++) {
    fill_gauss(&r, x, DIM);
    fill_gauss(&r, z, DIM);
    for (int j = 0; j < DIM; j++)
      y[j] = x[j] + 0.1f * (float)adb__rng_normal(&r);
    uint64_t hx = adb__simhash(x, DIM, 64);
    near += __builtin_popcountll(hx ^ adb__simhash(y, DIM, 64));
    far += __builtin_popcountll(hx ^ adb__simhash(z, DIM, 64));
  }
  near /= PAIRS;
  far /= PAIRS;
  assert_true(fabs(near - 64 * 0.0997 / M_PI) < 1.0);
  assert_true(fabs(far - 32) < 1.5);
}

static void different_bucket_gives_different_key(void **state) {
  (void)state;
  float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w[8];
  for (int j = 0; j < 8; j++)
    w[j] = -v[j]; /* every bit flips */
  char kv[65], kw[65];
  assert_int_equal(adb__state_key(NULL, 0, NULL, 0, v, 8, 8, kv), ADB_OK);
  assert_int_equal(adb__state_key(NULL, 0, NULL, 0, w, 8, 8, kw), ADB_OK);
  assert_string_not_equal(kv, kw);
}

/* ------------------------------------------------------------- rejects */

static void bad_arguments_are_einval(void **state) {
  (void)state;
  ckey k[ADB_MAX_CONTEXT_KEYS];
  set_keys(k, k3, 3);
  float v[4] = {1, 2, 3, 4}, bad[4] = {1, NAN, 3, 4},
        inf[4] = {1, 2, INFINITY, 0};
  adb_kv ctx[] = {{"genre", "drama"}}, nullv[] = {{"genre", NULL}};
  char out[65];
  assert_int_equal(adb__state_key(k, 3, ctx, 1, v, 4, 65, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, ctx, 1, v, 4, -1, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, ctx, 1, NULL, 4, 8, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, ctx, 1, v, 0, 8, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, ctx, 1, bad, 4, 8, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, ctx, 1, inf, 4, 8, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 17, ctx, 1, NULL, 0, 0, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, nullv, 1, NULL, 0, 0, out), ADB_EINVAL);
  assert_int_equal(adb__state_key(k, 3, NULL, 1, NULL, 0, 0, out), ADB_EINVAL);
  memset(k[1], 'x', sizeof k[1]); /* no terminator */
  assert_int_equal(adb__state_key(k, 3, ctx, 1, NULL, 0, 0, out), ADB_EINVAL);
  assert_int_equal(adb__simhash(v, 4, 0), 0);
  assert_int_equal(adb__simhash(NULL, 4, 8), 0);
}

/* Each thread keeps its own digest context (freed when it exits, which
 * the leak checker sees): concurrent keys equal the single-threaded ones. */
enum { KT_THREADS = 4, KT_KEYS = 200 };
static char kt_want[KT_KEYS][65];

static void kt_key(int i, char out[65]) {
  ckey k[ADB_MAX_CONTEXT_KEYS];
  set_keys(k, k3, 2);
  char v[32];
  snprintf(v, sizeof v, "v%d", i);
  adb_kv ctx[] = {{"genre", v}, {"device", "tv"}};
  float e[8] = {(float)i, 1, -2, 3, (float)-i, 5, 6, 7};
  if (adb__state_key(k, 2, ctx, 2, e, 8, 8, out) != ADB_OK) out[0] = '\0';
}

static void *kt_thread(void *arg) {
  long bad = 0;
  for (int rep = 0; rep < 5; rep++)
    for (int i = 0; i < KT_KEYS; i++) {
      char out[65];
      kt_key(i, out);
      bad += strcmp(out, kt_want[i]) != 0;
    }
  return (void *)bad;
  (void)arg;
}

static void state_key_is_thread_safe(void **state) {
  (void)state;
  for (int i = 0; i < KT_KEYS; i++)
    kt_key(i, kt_want[i]);
  pthread_t t[KT_THREADS];
  for (int i = 0; i < KT_THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, kt_thread, NULL), 0);
  for (int i = 0; i < KT_THREADS; i++) {
    void *bad;
    assert_int_equal(pthread_join(t[i], &bad), 0);
    assert_true(bad == NULL);
  }
}

/* Not an assertion on time: a line for the log. */
static void report_state_key_cost(void **state) {
  (void)state;
  ckey k[ADB_MAX_CONTEXT_KEYS];
  set_keys(k, k3, 3);
  adb_kv ctx[] = {{"genre", "drama"}, {"device", "tv"}, {"daypart", "night"}};
  float v[128];
  adb__rng r;
  adb__rng_seed(&r, 5);
  fill_gauss(&r, v, 128);
  char out[65];
  int n = getenv("ADB_TEST_QUICK") ? 2000 : 100000;
  struct timespec t0, t1, t2;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++)
    adb__state_key(k, 3, ctx, 3, NULL, 0, 0, out);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (int i = 0; i < n; i++)
    adb__state_key(k, 3, ctx, 3, v, 128, 16, out);
  clock_gettime(CLOCK_MONOTONIC, &t2);
  double a = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
  double b = ((t2.tv_sec - t1.tv_sec) * 1e9 + (t2.tv_nsec - t1.tv_nsec)) / n;
  printf("state key: %.0f ns (3 context keys), %.0f ns (+ 16-bit SimHash of "
         "128 floats)\n",
         a, b);
  assert_int_equal(strlen(out), 64);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(same_context_in_any_order_gives_same_key),
      cmocka_unit_test(different_value_gives_different_key),
      cmocka_unit_test(missing_and_empty_values_differ),
      cmocka_unit_test(boundaries_between_values_are_encoded),
      cmocka_unit_test(unconfigured_context_keys_are_ignored),
      cmocka_unit_test(repeated_context_key_takes_first_value),
      cmocka_unit_test(sha256_hex_of_abc_is_the_fips_vector),
      cmocka_unit_test(state_key_matches_hand_built_encoding),
      cmocka_unit_test(state_keys_through_the_memo_match_hand_built_encodings),
      cmocka_unit_test(simhash_matches_reference_planes),
      cmocka_unit_test(state_key_with_simhash_matches_hand_built_encoding),
      cmocka_unit_test(simhash_is_stable_and_scale_invariant),
      cmocka_unit_test(simhash_nearby_vectors_share_more_bits),
      cmocka_unit_test(different_bucket_gives_different_key),
      cmocka_unit_test(bad_arguments_are_einval),
      cmocka_unit_test(state_key_is_thread_safe),
      cmocka_unit_test(report_state_key_cost),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
