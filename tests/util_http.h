/*
 * util_http.h — a small blocking HTTP/1.1 client for the tests and the soak
 * driver: one keep-alive connection to a loopback port, a deadline per
 * call, and answers read whole (Content-Length bodies, as `agentdb serve`
 * sends) and parsed as JSON. What went wrong on the wire is told apart
 * (refused, closed or reset, timed out) because a fault test counts each.
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

/* error.code of an error answer, or NULL. */
const char *util_http_err_code(const util_http_resp *r);

/* Name of a util_http_call result for reports ("refused", "closed", ...). */
const char *util_http_result_name(int rc);

#endif
