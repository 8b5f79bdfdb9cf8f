/*
 * test_http_parse.c — the HTTP request parser and chunked decoder
 * (src/http.c), API keys (src/auth.c), and the API's time parsing and
 * error-code mapping (src/api.c), without sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"
#include "auth.h"
#include "http.h"

static int parse(const char *s, adb__http_req *r, const char **why) {
  return adb__http_parse_head(s, strlen(s), 16384, r, why);
}

static void test_parses_a_get_with_query(void **state) {
  (void)state;
  adb__http_req r;
  const char *why, *s = "GET /v1/agents/a/policies/u?state_key=ab HTTP/1.1\r\n"
                        "Host: x\r\nAuthorization: Bearer k1 \r\n\r\n";
  assert_int_equal(parse(s, &r, &why), (int)strlen(s));
  assert_int_equal(r.method, ADB__HTTP_GET);
  assert_int_equal(r.path_len, strlen("/v1/agents/a/policies/u"));
  assert_memory_equal(r.path, "/v1/agents/a/policies/u", r.path_len);
  assert_int_equal(r.query_len, strlen("state_key=ab"));
  assert_memory_equal(r.query, "state_key=ab", r.query_len);
  assert_int_equal(r.authorization_len, strlen("Bearer k1"));
  assert_true(r.keep_alive);
  assert_int_equal(r.content_length, -1);
}

static void test_asks_for_more_until_the_empty_line(void **state) {
  (void)state;
  adb__http_req r;
  const char *why, *s = "POST /x HTTP/1.1\r\nContent-Length: 2\r\n";
  assert_int_equal(parse(s, &r, &why), 0);
  assert_int_equal(parse("GET / HTTP/1.1\r\n\r", &r, &why), 0);
  assert_int_equal(parse("", &r, &why), 0);
}

static void test_pipelined_heads_parse_one_at_a_time(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  const char *s = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
  int n = parse(s, &r, &why);
  assert_int_equal(n, 19);
  assert_memory_equal(r.path, "/a", 2);
  assert_int_equal(parse(s + n, &r, &why), 19);
  assert_memory_equal(r.path, "/b", 2);
}

static void test_accepts_bare_lf_line_endings(void **state) {
  (void)state;
  adb__http_req r;
  const char *why, *s = "PUT /x HTTP/1.1\nContent-Length: 3\n\n";
  assert_int_equal(parse(s, &r, &why), (int)strlen(s));
  assert_int_equal(r.method, ADB__HTTP_PUT);
  assert_int_equal(r.content_length, 3);
}

static void test_rejects_content_length_with_transfer_encoding(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  assert_int_equal(parse("POST /x HTTP/1.1\r\nContent-Length: 3\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n",
                         &r, &why),
                   -400);
  assert_int_equal(parse("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 3\r\n\r\n",
                         &r, &why),
                   -400);
}

static void test_rejects_conflicting_content_lengths(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  assert_int_equal(parse("POST /x HTTP/1.1\r\nContent-Length: 3\r\n"
                         "Content-Length: 4\r\n\r\n",
                         &r, &why),
                   -400);
  assert_int_equal(parse("POST /x HTTP/1.1\r\nContent-Length: 3\r\n"
                         "Content-Length: 3\r\n\r\n",
                         &r, &why),
                   (int)strlen("POST /x HTTP/1.1\r\nContent-Length: 3\r\n"
                               "Content-Length: 3\r\n\r\n"));
  assert_int_equal(
      parse("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &r, &why), -400);
  assert_int_equal(
      parse("POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", &r, &why), -400);
}

static void test_rejects_unsupported_transfer_coding(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  assert_int_equal(parse("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, "
                         "chunked\r\n\r\n",
                         &r, &why),
                   -501);
}

static void test_rejects_a_head_over_the_limit(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  size_t n = 20000;
  char *s = malloc(n + 64);
  strcpy(s, "GET / HTTP/1.1\r\nX-Big: ");
  size_t k = strlen(s);
  memset(s + k, 'a', n);
  s[k + n] = '\0';
  /* Incomplete and already too large: 431 without waiting for more. */
  assert_int_equal(adb__http_parse_head(s, strlen(s), 16384, &r, &why), -431);
  strcat(s, "\r\n\r\n");
  assert_int_equal(adb__http_parse_head(s, strlen(s), 16384, &r, &why), -431);
  free(s);
}

static void test_rejects_malformed_heads(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  assert_int_equal(parse("GET /x HTTP/2.0\r\n\r\n", &r, &why), -505);
  assert_int_equal(parse("GET /x HTTX/1.1\r\n\r\n", &r, &why), -400);
  assert_int_equal(parse("GET x HTTP/1.1\r\n\r\n", &r, &why), -400);
  assert_int_equal(parse("GET  /x HTTP/1.1\r\n\r\n", &r, &why), -400);
  assert_int_equal(parse("GET /x HTTP/1.1\r\nNo colon\r\n\r\n", &r, &why),
                   -400);
  assert_int_equal(parse("GET /x HTTP/1.1\r\nA : b\r\n\r\n", &r, &why), -400);
  assert_int_equal(parse("GET /x HTTP/1.1\r\nA: b\r\n c\r\n\r\n", &r, &why),
                   -400);
  assert_int_equal(parse("GET /x HTTP/1.1\r\nA: b\rc\r\n\r\n", &r, &why), -400);
  assert_int_equal(parse("G\001T /x HTTP/1.1\r\n\r\n", &r, &why), -400);
}

static void test_keep_alive_follows_version_and_connection(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  parse("GET / HTTP/1.0\r\n\r\n", &r, &why);
  assert_false(r.keep_alive);
  parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r, &why);
  assert_true(r.keep_alive);
  parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &r, &why);
  assert_false(r.keep_alive);
  parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &r, &why);
  assert_false(r.keep_alive);
}

static void test_reads_expect_continue(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", &r, &why);
  assert_true(r.expect_continue);
}

static void test_absolute_form_target_keeps_the_path(void **state) {
  (void)state;
  adb__http_req r;
  const char *why;
  assert_true(
      parse("GET http://h:8080/healthz?x=1 HTTP/1.1\r\n\r\n", &r, &why) > 0);
  assert_int_equal(r.path_len, 8);
  assert_memory_equal(r.path, "/healthz", 8);
  assert_memory_equal(r.query, "x=1", 3);
}

static void test_chunked_body_decodes_in_place(void **state) {
  (void)state;
  char s[] = "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
             "0\r\nTrailer: x\r\n\r\nNEXT";
  size_t dec = 0;
  long enc = adb__http_chunked(s, strlen(s), 1 << 20, NULL, &dec);
  assert_int_equal(enc, (long)(strlen(s) - 4));
  assert_int_equal(dec, 23);
  adb__http_chunked(s, (size_t)enc, 1 << 20, s, &dec);
  assert_memory_equal(s, "Wikipedia in\r\n\r\nchunks.", 23);
}

static void test_chunked_body_waits_for_the_last_chunk(void **state) {
  (void)state;
  const char *s = "4\r\nWiki\r\n5\r\npedia\r\n";
  size_t dec;
  for (size_t n = 0; n <= strlen(s); n++)
    assert_int_equal(adb__http_chunked(s, n, 1 << 20, NULL, &dec), 0);
  assert_int_equal(adb__http_chunked("0\r\n", 3, 1 << 20, NULL, &dec), 0);
  assert_int_equal(adb__http_chunked("0\r\n\r\n", 5, 1 << 20, NULL, &dec), 5);
  assert_int_equal(dec, 0);
}

static void test_chunked_body_over_the_limit_is_413(void **state) {
  (void)state;
  size_t dec;
  const char *s = "10\r\n0123456789abcdef\r\n0\r\n\r\n";
  assert_int_equal(adb__http_chunked(s, strlen(s), 15, NULL, &dec), -413);
  assert_int_equal(
      adb__http_chunked("fffffffffffffffff\r\n", 19, 15, NULL, &dec), -413);
}

static void test_chunked_body_malformed_is_400(void **state) {
  (void)state;
  size_t dec;
  assert_int_equal(adb__http_chunked("x\r\n", 3, 100, NULL, &dec), -400);
  assert_int_equal(adb__http_chunked("2\r\nabX\r\n", 8, 100, NULL, &dec), -400);
}

/* Random bytes and random edits of a valid request never crash the parser
 * and always give a result in its documented range. */
static void test_random_input_never_breaks_the_parser(void **state) {
  (void)state;
  const char *good = "POST /v1/agents/a/decide HTTP/1.1\r\nHost: h\r\n"
                     "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n";
  uint64_t seed = 42;
  int rounds = getenv("ADB_TEST_QUICK") ? 20000 : 200000;
  char buf[256];
  for (int i = 0; i < rounds; i++) {
    size_t n = strlen(good);
    memcpy(buf, good, n);
    for (int k = 0; k < 3; k++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      buf[(seed >> 33) % n] = (char)(seed >> 20);
    }
    n = (seed >> 40) % (n + 1);
    adb__http_req r;
    const char *why;
    int rc = adb__http_parse_head(buf, n, 128, &r, &why);
    assert_true(rc == 0 || rc == -400 || rc == -431 || rc == -501 ||
                rc == -505 || (rc > 0 && (size_t)rc <= n));
    size_t dec;
    long c = adb__http_chunked(buf, n, 64, NULL, &dec);
    assert_true(c == 0 || c == -400 || c == -413 || (c > 0 && (size_t)c <= n));
  }
}

static void test_auth_accepts_known_keys_only(void **state) {
  (void)state;
  adb__auth *a;
  char err[128];
  assert_int_equal(adb__auth_parse("# keys\n\nadmin-key\n  scoped-key  shop, "
                                   "kids\n",
                                   &a, err, sizeof err),
                   ADB_OK);
  assert_int_equal(adb__auth_count(a), 2);
  const char *h1 = "Bearer admin-key", *h2 = "bearer scoped-key";
  assert_int_equal(adb__auth_check(a, h1, strlen(h1)), 0);
  assert_int_equal(adb__auth_check(a, h2, strlen(h2)), 1);
  const char *bad[] = {"Bearer admin-ke", "Bearer admin-key2", "admin-key",
                       "Basic admin-key", "Bearer ",           ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(adb__auth_check(a, bad[i], strlen(bad[i])), -1);
  assert_int_equal(adb__auth_check(a, NULL, 0), -1);
  adb__auth_free(a);
}

static void test_auth_scopes_keys_to_agents(void **state) {
  (void)state;
  adb__auth *a;
  char err[128];
  assert_int_equal(
      adb__auth_parse("admin\nscoped shop,kids\n", &a, err, sizeof err),
      ADB_OK);
  assert_true(adb__auth_allows(a, 0, "anything"));
  assert_true(adb__auth_allows(a, 1, "shop"));
  assert_true(adb__auth_allows(a, 1, "kids"));
  assert_false(adb__auth_allows(a, 1, "shop2"));
  assert_false(adb__auth_allows(a, -1, "shop"));
  adb__auth_free(a);
}

static void test_auth_rejects_empty_and_bad_files(void **state) {
  (void)state;
  adb__auth *a;
  char err[128];
  assert_int_equal(adb__auth_parse("# nothing\n\n", &a, err, sizeof err),
                   ADB_EINVAL);
  assert_null(a);
  assert_int_equal(adb__auth_parse("k a/b\n", &a, err, sizeof err), ADB_EINVAL);
  assert_int_equal(adb__auth_load("/nonexistent/keys", &a, err, sizeof err),
                   ADB_EIO);
}

static void test_times_parse_as_ms_or_iso8601(void **state) {
  (void)state;
  int64_t ms;
  assert_int_equal(adb__api_parse_time("1700000000123", &ms), ADB_OK);
  assert_int_equal(ms, 1700000000123LL);
  assert_int_equal(adb__api_parse_time("1970-01-02", &ms), ADB_OK);
  assert_int_equal(ms, 86400000LL);
  assert_int_equal(adb__api_parse_time("2024-05-01T12:00:00Z", &ms), ADB_OK);
  assert_int_equal(ms, 1714564800000LL);
  assert_int_equal(adb__api_parse_time("2024-05-01T14:00:00.250+02:00", &ms),
                   ADB_OK);
  assert_int_equal(ms, 1714564800250LL);
  assert_int_equal(adb__api_parse_time("2024-05-01T12:00", &ms), ADB_OK);
  assert_int_equal(ms, 1714564800000LL);
  const char *bad[] = {"",
                       "yesterday",
                       "2024-13-01",
                       "2024-05-01T25:00",
                       "2024-05-01T12:00:00+2",
                       "2024-05-01X",
                       "12345678901234567890"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(adb__api_parse_time(bad[i], &ms), ADB_EINVAL);
}

static void test_error_codes_map_to_http_statuses(void **state) {
  (void)state;
  const char *code;
  int retry;
  struct {
    int err, status, retry;
    const char *code;
  } tab[] = {{ADB_EINVAL, 400, 0, "invalid_field"},
             {ADB_ENOTFOUND, 404, 0, "not_found"},
             {ADB_ECONFLICT, 409, 0, "conflict"},
             {ADB_EFULL, 503, 1, "queue_full"},
             {ADB_EUNAVAIL, 503, 1, "store_unavailable"},
             {ADB_ETIMEDOUT, 503, 0, "timeout"},
             {ADB_ESTORE, 500, 0, "internal"},
             {ADB_ENOMEM, 500, 0, "internal"},
             {ADB_ECORRUPT, 500, 0, "internal"}};
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
    assert_int_equal(adb__api_status(tab[i].err, &code, &retry), tab[i].status);
    assert_string_equal(code, tab[i].code);
    assert_int_equal(retry > 0, tab[i].retry);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parses_a_get_with_query),
      cmocka_unit_test(test_asks_for_more_until_the_empty_line),
      cmocka_unit_test(test_pipelined_heads_parse_one_at_a_time),
      cmocka_unit_test(test_accepts_bare_lf_line_endings),
      cmocka_unit_test(test_rejects_content_length_with_transfer_encoding),
      cmocka_unit_test(test_rejects_conflicting_content_lengths),
      cmocka_unit_test(test_rejects_unsupported_transfer_coding),
      cmocka_unit_test(test_rejects_a_head_over_the_limit),
      cmocka_unit_test(test_rejects_malformed_heads),
      cmocka_unit_test(test_keep_alive_follows_version_and_connection),
      cmocka_unit_test(test_reads_expect_continue),
      cmocka_unit_test(test_absolute_form_target_keeps_the_path),
      cmocka_unit_test(test_chunked_body_decodes_in_place),
      cmocka_unit_test(test_chunked_body_waits_for_the_last_chunk),
      cmocka_unit_test(test_chunked_body_over_the_limit_is_413),
      cmocka_unit_test(test_chunked_body_malformed_is_400),
      cmocka_unit_test(test_random_input_never_breaks_the_parser),
      cmocka_unit_test(test_auth_accepts_known_keys_only),
      cmocka_unit_test(test_auth_scopes_keys_to_agents),
      cmocka_unit_test(test_auth_rejects_empty_and_bad_files),
      cmocka_unit_test(test_times_parse_as_ms_or_iso8601),
      cmocka_unit_test(test_error_codes_map_to_http_statuses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
