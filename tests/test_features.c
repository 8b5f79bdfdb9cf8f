/*
 * test_features.c — Personalizer's feature objects flattened and hashed
 * (src/features.c): the names each value becomes, weights and signs, and
 * bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <math.h>

#include "feature.h"

/* The vector of the given (name, weight) features, built by hand. */
static void expect(const char *const *names, const double *w, int n,
                   float out[ADB_FEAT_DIM]) {
  memset(out, 0, ADB_FEAT_DIM * sizeof *out);
  for (int i = 0; i < n; i++) {
    uint64_t h = adb__features_name_hash(names[i], strlen(names[i]));
    out[h % ADB_FEAT_DIM] += (float)((h >> 63) ? -w[i] : w[i]);
  }
}

static void hash_text(const char *text, float out[ADB_FEAT_DIM], int *n) {
  json_t *v = json_loads(text, 0, NULL);
  assert_non_null(v);
  char bad[128];
  *n = adb__features_hash(v, out, bad, sizeof bad);
  json_decref(v);
}

static void test_namespaces_paths_and_values_name_the_features(void **state) {
  (void)state;
  float got[ADB_FEAT_DIM], want[ADB_FEAT_DIM];
  int n;
  hash_text("[{\"user\":{\"tier\":\"gold\",\"visits\":3,\"vip\":true,"
            "\"tags\":[\"a\",2.5],\"none\":null}},{\"device\":\"tv\"}]",
            got, &n);
  static const char *const names[] = {"user.tier=gold", "user.visits",
                                      "user.vip=true",  "user.tags.0=a",
                                      "user.tags.1",    "device=tv"};
  static const double w[] = {1, 3, 1, 1, 2.5, 1};
  expect(names, w, 6, want);
  assert_int_equal(n, 6);
  for (int i = 0; i < ADB_FEAT_DIM; i++)
    assert_float_equal(got[i], want[i], 1e-6);
}

static void test_other_values_give_other_vectors(void **state) {
  (void)state;
  float a[ADB_FEAT_DIM], b[ADB_FEAT_DIM];
  int n;
  hash_text("[{\"genre\":\"jazz\"}]", a, &n);
  hash_text("[{\"genre\":\"rock\"}]", b, &n);
  assert_memory_not_equal(a, b, sizeof a);
  hash_text("[{\"genre\":\"jazz\"}]", b, &n); /* and the same, the same */
  assert_memory_equal(a, b, sizeof a);
}

static void test_empty_and_null_are_zeros(void **state) {
  (void)state;
  float z[ADB_FEAT_DIM] = {0}, got[ADB_FEAT_DIM];
  int n;
  hash_text("[]", got, &n);
  assert_int_equal(n, 0);
  assert_memory_equal(got, z, sizeof z);
  char bad[64];
  assert_int_equal(adb__features_hash(NULL, got, bad, sizeof bad), 0);
  assert_memory_equal(got, z, sizeof z);
}

static void test_rejects_what_is_not_a_list_of_objects(void **state) {
  (void)state;
  float got[ADB_FEAT_DIM];
  int n;
  hash_text("{\"a\":1}", got, &n);
  assert_int_equal(n, -1);
  hash_text("[{\"a\":1},\"b\"]", got, &n);
  assert_int_equal(n, -1);
}

static void test_deep_nesting_is_cut_not_crashed(void **state) {
  (void)state;
  char text[8192];
  size_t at = 0;
  at += (size_t)snprintf(text + at, sizeof text - at, "[");
  for (int i = 0; i < 400; i++)
    at += (size_t)snprintf(text + at, sizeof text - at, "{\"k\":");
  at += (size_t)snprintf(text + at, sizeof text - at, "\"v\"");
  for (int i = 0; i < 400; i++)
    at += (size_t)snprintf(text + at, sizeof text - at, "}");
  snprintf(text + at, sizeof text - at, "]");
  float got[ADB_FEAT_DIM];
  int n;
  hash_text(text, got, &n);
  assert_true(n >= 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_namespaces_paths_and_values_name_the_features),
      cmocka_unit_test(test_other_values_give_other_vectors),
      cmocka_unit_test(test_empty_and_null_are_zeros),
      cmocka_unit_test(test_rejects_what_is_not_a_list_of_objects),
      cmocka_unit_test(test_deep_nesting_is_cut_not_crashed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
