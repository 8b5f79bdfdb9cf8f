/*
 * util_http.c — a small blocking HTTP/1.1 client; see util_http.h.
 */
#define _GNU_SOURCE
#include "util_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int64_t util_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void util_http_init(util_http_conn *c, int port) {
  c->port = port;
  c->fd = -1;
  c->len = 0;
}

void util_http_close(util_http_conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->len = 0;
}

static int wait_fd(int fd, short ev, int64_t deadline) {
  for (;;) {
    int left = (int)(deadline - util_now_ms());
    if (left <= 0) return UTIL_HTTP_TIMEOUT;
    struct pollfd p = {.fd = fd, .events = ev};
    int k = poll(&p, 1, left);
    if (k > 0) return UTIL_HTTP_OK;
    if (k < 0 && errno != EINTR) return UTIL_HTTP_CLOSED;
  }
}

/* A non-blocking connect bounded by the deadline. */
static int dial(util_http_conn *c, int64_t deadline) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return UTIL_HTTP_REFUSED;
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)c->port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc < 0 && errno == EINPROGRESS) {
    int err = 0;
    socklen_t el = sizeof err;
    if (wait_fd(fd, POLLOUT, deadline) != UTIL_HTTP_OK) {
      close(fd);
      return UTIL_HTTP_TIMEOUT;
    }
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    rc = err ? -1 : 0;
  }
  if (rc < 0) {
    close(fd);
    return UTIL_HTTP_REFUSED;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  c->len = 0;
  return UTIL_HTTP_OK;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline) {
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EAGAIN) {
      int rc = wait_fd(fd, POLLOUT, deadline);
      if (rc) return rc;
      continue;
    }
    if (k <= 0) return UTIL_HTTP_CLOSED;
    p += k;
    n -= (size_t)k;
  }
  return UTIL_HTTP_OK;
}

/* Reads more bytes into dst (up to cap) before the deadline. */
static int recv_some(int fd, char *dst, size_t cap, int64_t deadline,
                     size_t *got) {
  for (;;) {
    ssize_t k = recv(fd, dst, cap, 0);
    if (k > 0) {
      *got = (size_t)k;
      return UTIL_HTTP_OK;
    }
    if (k == 0) return UTIL_HTTP_CLOSED;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return UTIL_HTTP_CLOSED;
    int rc = wait_fd(fd, POLLIN, deadline);
    if (rc) return rc;
  }
}

static long header_long(const char *head, const char *name, long dflt) {
  char pat[64];
  snprintf(pat, sizeof pat, "\r\n%s:", name);
  const char *h = strcasestr(head, pat);
  return h ? strtol(h + strlen(pat), NULL, 10) : dflt;
}

static int read_answer(util_http_conn *c, int64_t deadline, util_http_resp *r) {
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) {
      if (c->len == sizeof c->buf) return UTIL_HTTP_GARBLED;
      size_t got = 0;
      int rc = recv_some(c->fd, c->buf + c->len, sizeof c->buf - c->len,
                         deadline, &got);
      if (rc) return rc;
      c->len += got;
      continue;
    }
    size_t hl = (size_t)(end + 4 - c->buf);
    if (hl >= sizeof r->head || strncmp(c->buf, "HTTP/1.1 ", 9))
      return UTIL_HTTP_GARBLED;
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    r->status = atoi(r->head + 9);
    long want = header_long(r->head, "content-length", 0);
    if (want < 0 || want > (64L << 20)) return UTIL_HTTP_GARBLED;
    r->retry_after = (int)header_long(r->head, "retry-after", -1);
    r->closes = strcasestr(r->head, "\r\nconnection: close") != NULL;
    r->body = malloc((size_t)want + 1);
    if (!r->body) return UTIL_HTTP_GARBLED;
    size_t have = c->len - hl < (size_t)want ? c->len - hl : (size_t)want;
    memcpy(r->body, c->buf + hl, have);
    memmove(c->buf, c->buf + hl + have, c->len - hl - have);
    c->len -= hl + have;
    while (have < (size_t)want) {
      size_t got = 0;
      int rc =
          recv_some(c->fd, r->body + have, (size_t)want - have, deadline, &got);
      if (rc) return rc;
      have += got;
    }
    r->body[want] = '\0';
    r->body_len = (size_t)want;
    if (r->status == 100) { /* interim: the final answer follows */
      free(r->body);
      r->body = NULL;
      continue;
    }
    r->json = json_loadb(r->body, r->body_len, 0, NULL);
    return UTIL_HTTP_OK;
  }
}

size_t util_http_format(char *out, size_t cap, const char *method,
                        const char *path, const char *body, const char *hdrs) {
  size_t bl = body ? strlen(body) : 0;
  const char *h = hdrs ? hdrs : "";
  int typed = strcasestr(h, "content-type:") != NULL;
  int n = snprintf(out, cap,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s"
                   "Content-Length: %zu\r\n\r\n",
                   method, path, h,
                   typed ? "" : "Content-Type: application/json\r\n", bl);
  if (n < 0 || (size_t)n + bl >= cap) return 0;
  if (bl) memcpy(out + n, body, bl);
  out[(size_t)n + bl] = '\0';
  return (size_t)n + bl;
}

/* On a failure the connection is closed (the next call dials again). */
static int done(util_http_conn *c, int rc, util_http_resp *r) {
  if (rc) {
    if (r) {
      util_http_resp_free(r);
      r->retry_after = -1;
    }
    util_http_close(c);
  } else if (r && r->closes) {
    util_http_close(c);
  }
  return rc;
}

int util_http_connect(util_http_conn *c, int timeout_ms) {
  if (c->fd >= 0) return UTIL_HTTP_OK;
  return dial(c, util_now_ms() + timeout_ms);
}

int util_http_send(util_http_conn *c, const void *data, size_t n,
                   int timeout_ms) {
  int64_t deadline = util_now_ms() + timeout_ms;
  int rc = c->fd < 0 ? dial(c, deadline) : UTIL_HTTP_OK;
  if (!rc) rc = send_all(c->fd, data, n, deadline);
  return done(c, rc, NULL);
}

int util_http_read(util_http_conn *c, int timeout_ms, util_http_resp *r) {
  memset(r, 0, sizeof *r);
  r->retry_after = -1;
  int rc = c->fd < 0 ? UTIL_HTTP_CLOSED
                     : read_answer(c, util_now_ms() + timeout_ms, r);
  return done(c, rc, r);
}

int util_http_recv(util_http_conn *c, void *dst, size_t n, int timeout_ms) {
  int64_t deadline = util_now_ms() + timeout_ms;
  char *d = dst;
  size_t have = c->len < n ? c->len : n;
  memcpy(d, c->buf, have);
  memmove(c->buf, c->buf + have, c->len - have);
  c->len -= have;
  int rc = c->fd < 0 ? UTIL_HTTP_CLOSED : UTIL_HTTP_OK;
  while (!rc && have < n) {
    size_t got = 0;
    rc = recv_some(c->fd, d + have, n - have, deadline, &got);
    have += got;
  }
  return done(c, rc, NULL);
}

int util_http_call(util_http_conn *c, const char *method, const char *path,
                   const char *body, const char *hdrs, int timeout_ms,
                   util_http_resp *r) {
  memset(r, 0, sizeof *r);
  r->retry_after = -1;
  int64_t deadline = util_now_ms() + timeout_ms;
  size_t cap = (body ? strlen(body) : 0) + strlen(path) +
               (hdrs ? strlen(hdrs) : 0) + 256;
  char *req = malloc(cap);
  if (!req) return UTIL_HTTP_GARBLED;
  size_t n = util_http_format(req, cap, method, path, body, hdrs);
  int rc = UTIL_HTTP_OK;
  if (c->fd < 0) rc = dial(c, deadline);
  if (!rc) rc = send_all(c->fd, req, n, deadline);
  if (!rc) rc = read_answer(c, deadline, r);
  free(req);
  return done(c, rc, r);
}

int util_http_once(int port, const char *method, const char *path,
                   const char *body, const char *hdrs, int timeout_ms,
                   util_http_resp *r) {
  util_http_conn *c = malloc(sizeof *c);
  if (!c) {
    memset(r, 0, sizeof *r);
    r->status = -1;
    return UTIL_HTTP_GARBLED;
  }
  util_http_init(c, port);
  int rc = util_http_call(c, method, path, body, hdrs, timeout_ms, r);
  util_http_close(c);
  free(c);
  if (rc) r->status = -1;
  return rc;
}

char *util_http_raw(int port, const void *data, size_t n, int shut,
                    int timeout_ms) {
  size_t cap = 1 << 16, len = 0;
  char *out = calloc(1, cap + 1);
  util_http_conn *c = malloc(sizeof *c);
  if (!out || !c) {
    free(c);
    return out;
  }
  util_http_init(c, port);
  int64_t deadline = util_now_ms() + timeout_ms;
  if (dial(c, deadline) == UTIL_HTTP_OK) {
    /* A server that answers early (413) and stops reading fails the send;
     * its answer is still read. */
    send_all(c->fd, data, n, deadline);
    if (shut) shutdown(c->fd, SHUT_WR);
    deadline = util_now_ms() + timeout_ms;
    size_t got = 0;
    while (len < cap &&
           recv_some(c->fd, out + len, cap - len, deadline, &got) == 0)
      len += got;
  }
  util_http_close(c);
  free(c);
  return out;
}

void util_http_resp_free(util_http_resp *r) {
  free(r->body);
  json_decref(r->json);
  r->body = NULL;
  r->json = NULL;
  r->body_len = 0;
}

const char *util_http_err_code(const util_http_resp *r) {
  json_t *e = json_object_get(r->json, "error");
  return json_string_value(json_object_get(e, "code"));
}

const char *util_http_err_field(const util_http_resp *r) {
  json_t *e = json_object_get(r->json, "error");
  return json_string_value(json_object_get(e, "field"));
}

const char *util_http_result_name(int rc) {
  switch (rc) {
  case UTIL_HTTP_OK:
    return "answer";
  case UTIL_HTTP_REFUSED:
    return "refused";
  case UTIL_HTTP_CLOSED:
    return "closed";
  case UTIL_HTTP_TIMEOUT:
    return "client_timeout";
  default:
    return "garbled";
  }
}
