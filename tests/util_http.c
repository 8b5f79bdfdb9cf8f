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

int util_http_call(util_http_conn *c, const char *method, const char *path,
                   const char *body, const char *hdrs, int timeout_ms,
                   util_http_resp *r) {
  memset(r, 0, sizeof *r);
  r->retry_after = -1;
  int64_t deadline = util_now_ms() + timeout_ms;
  size_t bl = body ? strlen(body) : 0;
  size_t cap = bl + strlen(path) + (hdrs ? strlen(hdrs) : 0) + 256;
  char *req = malloc(cap);
  if (!req) return UTIL_HTTP_GARBLED;
  int n = snprintf(req, cap,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
                   "Content-Type: application/json\r\nContent-Length: %zu"
                   "\r\n\r\n",
                   method, path, hdrs ? hdrs : "", bl);
  if (bl) memcpy(req + n, body, bl);
  int rc = UTIL_HTTP_OK;
  if (c->fd < 0) rc = dial(c, deadline);
  if (!rc) rc = send_all(c->fd, req, (size_t)n + bl, deadline);
  if (!rc) rc = read_answer(c, deadline, r);
  free(req);
  if (rc) {
    util_http_resp_free(r);
    r->retry_after = -1;
    util_http_close(c);
  } else if (r->closes) {
    util_http_close(c);
  }
  return rc;
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
