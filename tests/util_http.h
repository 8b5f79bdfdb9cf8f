/*
 * util_http.h — the one HTTP/1.1 client of the tests and the soak driver:
 * one keep-alive connection to a loopback port, a deadline per call, and
 * answers read whole (Content-Length bodies, as `agentdb serve` sends) and
 * parsed as JSON. What went wrong on the wire is told apart (refused,
 * closed or reset, timed out) because a fault test counts each. Besides
 * whole calls it sends raw bytes and reads answers one at a time, for the
 * tests of pipelining, Expect: 100-continue and malformed requests.
 *
 * Requests carry "Host: 127.0.0.1", "Content-Type: application/json"
 * (unless hdrs name a Content-Type) and Content-Length.
 */
#ifndef ADB_UTIL_HTTP_H
#define ADB_UTIL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* util_http_call results (an HTTP answer of any status is UTIL_HTTP_OK). */
enum {
  UTIL_HTTP_OK = 0,
  UTIL_HTTP_REFUSED = -1, /* connect failed: nobody listens */
  UTIL_HTTP_CLOSED = -2,  /* closed or reset before the whole answer */
  UTIL_HTTP_TIMEOUT = -3, /* no whole answer within the deadline */
  UTIL_HTTP_GARBLED = -4  /* bytes that are not an HTTP/1.1 answer */
};

typedef struct util_http_conn {
  int port;
  int fd; /* -1 when not connected */
  size_t len;
  char buf[1 << 16]; /* bytes read past the last answer */
} util_http_conn;

typedef struct util_http_resp {
  int status;
  int retry_after; /* seconds of Retry-After, -1 when absent */
  int closes;      /* the answer had Connection: close */
  char head[8192];
  char *body;
  size_t body_len;
  json_t *json; /* NULL when the body is not JSON */
} util_http_resp;

int64_t util_now_ms(void);

void util_http_init(util_http_conn *c, int port);
void util_http_close(util_http_conn *c);

/* Sends one request on c (connecting first when needed) and reads the
 * answer within timeout_ms. On anything but UTIL_HTTP_OK the connection is
 * closed (the next call dials again) and r holds no answer. body may be
 * NULL; hdrs are extra "Name: value\r\n" lines or NULL. */
int util_http_call(util_http_conn *c, const char *method, const char *path,
                   const char *body, const char *hdrs, int timeout_ms,
                   util_http_resp *r);

void util_http_resp_free(util_http_resp *r);

/* One request on a fresh connection, closed after. On anything but
 * UTIL_HTTP_OK r->status is -1 and r holds no answer. */
int util_http_once(int port, const char *method, const char *path,
                   const char *body, const char *hdrs, int timeout_ms,
                   util_http_resp *r);

/* A request as util_http_call sends it, into out (NUL-terminated); its
 * length, or 0 when it does not fit in cap bytes. */
size_t util_http_format(char *out, size_t cap, const char *method,
                        const char *path, const char *body, const char *hdrs);

/* The pieces of a call, for tests that shape the bytes themselves: dial
 * now; send raw bytes (dialling first when needed); read the next answer
 * (interim 100 answers skipped); read exactly n raw bytes. Each closes c on
 * a failure, like util_http_call. */
int util_http_connect(util_http_conn *c, int timeout_ms);
int util_http_send(util_http_conn *c, const void *data, size_t n,
                   int timeout_ms);
int util_http_read(util_http_conn *c, int timeout_ms, util_http_resp *r);
int util_http_recv(util_http_conn *c, void *dst, size_t n, int timeout_ms);

/* Sends raw bytes on a fresh connection (then shuts its write side if
 * shut) and returns all the server sends back until it closes or
 * timeout_ms passes: malloc'd, NUL-terminated, "" when nobody listens. */
char *util_http_raw(int port, const void *data, size_t n, int shut,
                    int timeout_ms);

/* error.code / error.field of an error answer, or NULL. */
const char *util_http_err_code(const util_http_resp *r);
const char *util_http_err_field(const util_http_resp *r);

/* Name of a util_http_call result for reports ("refused", "closed", ...). */
const char *util_http_result_name(int rc);

#endif
