/*
 * http.c — the HTTP/1.1 server behind `agentdb serve`: request parser,
 * connections, worker event loops, the blocking-call pool and shutdown.
 *
 * Why not evhttp. evhttp allocates per request (the request, a header
 * list with one allocation per header, evbuffers, a decoded URI) and
 * copies the body through evbuffers; the cached decide path wants a few
 * microseconds of server time in total. This server reads with recv()
 * straight into one buffer per connection, parses the head in place,
 * hands the handler pointers into that buffer, and writes every answer of
 * a read batch (pipelining) with one send(). libevent still does what it
 * is good at: readiness and timers, one event_base per worker thread.
 *
 * Threads. Each worker owns a listening socket bound with SO_REUSEPORT, so
 * the kernel spreads new connections over the workers; a connection stays
 * on its worker for life, and nothing on the request path takes a lock or
 * changes thread. A handler that would block (a durable write waits for
 * its group commit) returns ADB__HTTP_DEFER; the request then goes to a
 * pool thread, which calls the handler again and posts the finished job
 * back to the worker through an eventfd. While a job is out, its
 * connection reads nothing more (answers stay in order) and is never
 * freed: a connection closed meanwhile becomes a zombie, freed when the
 * job comes back. A handler on a pool thread may also hand its answer to
 * another thread and return at once (adb__http_later_begin, http.h): a
 * durable reward is answered by the library's completion callback when
 * its group commit is done, so no thread sleeps per write in flight. Such
 * a job comes back when both the handler and the finisher are done with
 * it; the sweep answers 503 for one past its deadline and orphans it (the
 * finisher's late answer is then dropped).
 *
 * Reading a request. Every byte is looked at once: the search for the end
 * of the head resumes where the last read left it, the parsed head's
 * framing is kept in the connection, and a chunked body goes through an
 * incremental decoder (adb__http_chunk_feed, strict RFC 9112 grammar) that
 * decodes in place and drops the framing bytes as it goes. The input
 * buffer grows only as bytes arrive, and never past what the request may
 * hold (in_limit): max_head before the head is complete; then the head,
 * its body and one read. A body over preauth_body (or chunked) still to
 * come is read only once the admit hook (the API key check) has accepted
 * the head; a refusal is answered and the connection closed. At most
 * max_connections are open over all workers; one more gets a canned 503.
 *
 * Time limits are enforced by a sweep every 250 ms instead of a timer per
 * request: a request must arrive completely within request_timeout_ms of
 * its first byte (a client sending one byte a second gets 408), an answer
 * that the client stops reading is dropped after the same time without
 * progress (a send, or the socket's send queue shrinking between sweeps:
 * a slow but steady reader of a long streamed log is not cut off), an
 * idle keep-alive connection is closed after idle_timeout_ms.
 *
 * Shutdown. adb__http_shutdown tells every worker to close its listening
 * socket, close idle connections and answer the requests it holds with
 * "Connection: close"; a worker exits when it has no connection left, or
 * at shutdown_timeout_ms. The caller then closes the library, which drains
 * the write queue. A connection we close after an error lingers (its
 * write side shut, input discarded) so that the client reads the answer
 * instead of a reset.
 */
#define _GNU_SOURCE
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

/* ------------------------------------------------------------- parser */

static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* End of the head (after the empty line) searching from i, or 0. */
static size_t find_head_end(const char *buf, size_t len, size_t i) {
  const char *end = buf + len;
  const char *p = memchr(buf + i, '\n', len - i);
  while (p) {
    const char *q = p + 1;
    if (q < end && *q == '\n') return (size_t)(q + 1 - buf);
    if (q + 1 < end && q[0] == '\r' && q[1] == '\n')
      return (size_t)(q + 2 - buf);
    p = q < end ? memchr(q, '\n', (size_t)(end - q)) : NULL;
  }
  return 0;
}

/* Splits the line at buf[*i..): sets ls and ll to it without CRLF and
 * moves *i past it. 0 when a bare CR is inside. */
static int next_line(const char *buf, size_t end, size_t *i, const char **ls,
                     size_t *ll) {
  const char *s = buf + *i;
  const char *nl = memchr(s, '\n', end - *i);
  if (!nl) return 0;
  size_t n = (size_t)(nl - s);
  if (n && s[n - 1] == '\r') n--;
  if (memchr(s, '\r', n)) return 0;
  *ls = s;
  *ll = n;
  *i = (size_t)(nl + 1 - buf);
  return 1;
}

static int method_id(const char *m, size_t n) {
  static const struct {
    const char *s;
    int id;
  } tab[] = {{"GET", ADB__HTTP_GET},       {"HEAD", ADB__HTTP_HEAD},
             {"POST", ADB__HTTP_POST},     {"PUT", ADB__HTTP_PUT},
             {"DELETE", ADB__HTTP_DELETE}, {"OPTIONS", ADB__HTTP_OPTIONS},
             {"PATCH", ADB__HTTP_PATCH}};
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (strlen(tab[i].s) == n && memcmp(tab[i].s, m, n) == 0) return tab[i].id;
  return ADB__HTTP_OTHER;
}

/* Sets path and query from the request target (origin or absolute form). */
static int split_target(const char *t, size_t n, adb__http_req *req) {
  if (n >= 7 && (strncasecmp(t, "http://", 7) == 0 ||
                 (n >= 8 && strncasecmp(t, "https://", 8) == 0))) {
    const char *a = (const char *)memchr(t, ':', n) + 3;
    const char *slash = memchr(a, '/', n - (size_t)(a - t));
    if (!slash) return 0;
    n -= (size_t)(slash - t);
    t = slash;
  }
  if (n == 0 || t[0] != '/') return 0;
  const char *q = memchr(t, '?', n);
  req->path = t;
  req->path_len = q ? (size_t)(q - t) : n;
  req->query = q ? q + 1 : NULL;
  req->query_len = q ? n - req->path_len - 1 : 0;
  return 1;
}

static int parse_request_line(const char *s, size_t n, adb__http_req *req,
                              const char **why) {
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)s[i]))
    i++;
  if (i == 0 || i > 16 || i >= n || s[i] != ' ') {
    *why = "malformed request line";
    return -400;
  }
  req->method_str = s;
  req->method_len = i;
  req->method = method_id(s, i);
  size_t t0 = ++i;
  while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f)
    i++;
  if (i == t0 || i >= n || s[i] != ' ' || !split_target(s + t0, i - t0, req)) {
    *why = "malformed request target";
    return -400;
  }
  i++;
  if (n - i != 8 || memcmp(s + i, "HTTP/", 5) != 0 || s[i + 6] != '.' ||
      s[i + 5] < '0' || s[i + 5] > '9' || s[i + 7] < '0' || s[i + 7] > '9') {
    *why = "malformed HTTP version";
    return -400;
  }
  if (s[i + 5] != '1') {
    *why = "only HTTP/1.0 and HTTP/1.1 are served";
    return -505;
  }
  req->minor = s[i + 7] - '0';
  return 0;
}

static int name_is(const char *n, size_t nl, const char *want) {
  return strlen(want) == nl && strncasecmp(n, want, nl) == 0;
}

/* True when the comma-separated list v holds token tok. */
static int has_token(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tl && strncasecmp(v + s, tok, tl) == 0) return 1;
  }
  return 0;
}

static int parse_content_length(const char *v, size_t n, adb__http_req *req,
                                const char **why) {
  int64_t x = 0;
  if (n == 0) goto bad;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') goto bad;
    x = x > INT64_MAX / 20 ? INT64_MAX / 2 : x * 10 + (v[i] - '0');
  }
  if (req->content_length >= 0 && req->content_length != x) {
    *why = "conflicting Content-Length headers";
    return -400;
  }
  req->content_length = x;
  return 0;
bad:
  *why = "invalid Content-Length";
  return -400;
}

static int parse_header(const char *s, size_t n, adb__http_req *req,
                        int *connection, const char **why) {
  size_t i = 0;
  if (n && (s[0] == ' ' || s[0] == '\t')) {
    *why = "obsolete header line folding";
    return -400;
  }
  while (i < n && is_tchar((unsigned char)s[i]))
    i++;
  if (i == 0 || i >= n || s[i] != ':') {
    *why = "malformed header line";
    return -400;
  }
  const char *name = s;
  size_t nl = i++;
  while (i < n && (s[i] == ' ' || s[i] == '\t'))
    i++;
  size_t e = n;
  while (e > i && (s[e - 1] == ' ' || s[e - 1] == '\t'))
    e--;
  for (size_t k = i; k < e; k++) {
    unsigned char c = (unsigned char)s[k];
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      *why = "control character in a header value";
      return -400;
    }
  }
  const char *v = s + i;
  size_t vl = e - i;
  if (name_is(name, nl, "content-length"))
    return parse_content_length(v, vl, req, why);
  if (name_is(name, nl, "transfer-encoding")) {
    if (req->chunked || vl != 7 || strncasecmp(v, "chunked", 7) != 0) {
      *why = "only Transfer-Encoding: chunked is supported";
      return -501;
    }
    req->chunked = 1;
  } else if (name_is(name, nl, "connection")) {
    if (has_token(v, vl, "close"))
      *connection = 1;
    else if (has_token(v, vl, "keep-alive") && *connection == 0)
      *connection = 2;
  } else if (name_is(name, nl, "authorization")) {
    req->authorization = v;
    req->authorization_len = vl;
  } else if (name_is(name, nl, "ocp-apim-subscription-key")) {
    req->subscription_key = v;
    req->subscription_key_len = vl;
  } else if (name_is(name, nl, "x-request-id")) {
    req->request_id = v;
    req->request_id_len = vl;
  } else if (name_is(name, nl, "origin")) {
    req->origin = v;
    req->origin_len = vl;
  } else if (name_is(name, nl, "content-type")) {
    req->content_type = v;
    req->content_type_len = vl;
  } else if (name_is(name, nl, "expect")) {
    req->expect_continue = vl == 12 && strncasecmp(v, "100-continue", 12) == 0;
  }
  return 0;
}

int adb__http_parse_head(const char *buf, size_t len, size_t max_head,
                         adb__http_req *req, const char **why) {
  memset(req, 0, sizeof *req);
  req->content_length = -1;
  *why = "";
  size_t i = 0;
  while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
    i++;
  size_t end = find_head_end(buf, len, i);
  if (end == 0 || end > max_head) {
    if (len <= max_head && end == 0) return 0;
    *why = "request head too large";
    return -431;
  }
  const char *ls;
  size_t ll;
  if (!next_line(buf, end, &i, &ls, &ll)) goto bad_line;
  int rc = parse_request_line(ls, ll, req, why);
  if (rc) return rc;
  int connection = 0; /* 1 close, 2 keep-alive */
  for (;;) {
    if (!next_line(buf, end, &i, &ls, &ll)) goto bad_line;
    if (ll == 0) break;
    rc = parse_header(ls, ll, req, &connection, why);
    if (rc) return rc;
  }
  if (req->chunked && req->content_length >= 0) {
    *why = "Content-Length and Transfer-Encoding together";
    return -400;
  }
  req->keep_alive = req->minor >= 1 ? connection != 1 : connection == 2;
  req->head_len = end;
  return (int)end;
bad_line:
  *why = "malformed line ending";
  return -400;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The chunked decoder's states: where the next byte falls. */
enum {
  CK_SIZE0,    /* first hex digit of a chunk size */
  CK_SIZE,     /* more hex digits, or what follows them */
  CK_BWS,      /* white space before ';' */
  CK_NAME0,    /* first character of an extension name */
  CK_NAME,     /* extension name, or what follows it */
  CK_NAME_BWS, /* white space after a name: '=' or ';' */
  CK_VAL0,     /* first character of an extension value */
  CK_VAL,      /* token value, or what follows it */
  CK_QS,       /* inside a quoted-string */
  CK_QS_ESC,   /* after a backslash in a quoted-string */
  CK_VAL_END,  /* after a quoted-string */
  CK_SIZE_LF,  /* LF closing the size line */
  CK_DATA,     /* chunk data */
  CK_DATA_CR,  /* CR after chunk data */
  CK_DATA_LF,  /* LF after chunk data */
  CK_TR0,      /* start of a trailer line (or the closing empty line) */
  CK_TR_NAME,  /* trailer field name */
  CK_TR_VAL,   /* trailer field value */
  CK_TR_LF,    /* LF closing a trailer line */
  CK_END_LF,   /* LF of the closing empty line */
  CK_DONE,
  CK_ERROR
};

#define CK_MAX_LINE 4096    /* a chunk-size line with its extensions */
#define CK_MAX_TRAILER 8192 /* the whole trailer section */

static int qdtext(unsigned char c) {
  return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
         (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

static int ows(unsigned char c) {
  return c == ' ' || c == '\t';
}

/* The state after byte c of a size line in state st, or CK_ERROR. */
static int size_line_step(adb__http_chunker *k, int st, unsigned char c) {
  int h = hexval((char)c);
  switch (st) {
  case CK_SIZE0:
  case CK_SIZE:
    if (h >= 0) {
      if (k->left > (UINT64_MAX >> 4)) return CK_ERROR;
      k->left = k->left * 16 + (uint64_t)h;
      return CK_SIZE;
    }
    if (st == CK_SIZE0) return CK_ERROR;
    /* fall through */
  case CK_VAL:
    if (st == CK_VAL && is_tchar(c)) return CK_VAL;
    /* fall through */
  case CK_BWS:
  case CK_VAL_END:
    if (c == ';') return CK_NAME0;
    if (ows(c)) return CK_BWS;
    if (c == '\r' && st != CK_BWS) return CK_SIZE_LF;
    return CK_ERROR;
  case CK_NAME0:
    if (ows(c)) return CK_NAME0;
    return is_tchar(c) ? CK_NAME : CK_ERROR;
  case CK_NAME:
    if (is_tchar(c)) return CK_NAME;
    if (c == '\r') return CK_SIZE_LF;
    /* fall through */
  case CK_NAME_BWS:
    if (c == '=') return CK_VAL0;
    if (c == ';') return CK_NAME0;
    return ows(c) ? CK_NAME_BWS : CK_ERROR;
  case CK_VAL0:
    if (ows(c)) return CK_VAL0;
    if (c == '"') return CK_QS;
    return is_tchar(c) ? CK_VAL : CK_ERROR;
  case CK_QS:
    if (c == '"') return CK_VAL_END;
    if (c == '\\') return CK_QS_ESC;
    return qdtext(c) ? CK_QS : CK_ERROR;
  case CK_QS_ESC:
    return c == '\t' || (c >= 0x20 && c != 0x7f) ? CK_QS : CK_ERROR;
  }
  return CK_ERROR;
}

/* The state after byte c of the trailer section in state st. */
static int trailer_step(int st, unsigned char c) {
  switch (st) {
  case CK_TR0:
    if (c == '\r') return CK_END_LF;
    return is_tchar(c) ? CK_TR_NAME : CK_ERROR;
  case CK_TR_NAME:
    if (c == ':') return CK_TR_VAL;
    return is_tchar(c) ? CK_TR_NAME : CK_ERROR;
  case CK_TR_VAL:
    if (c == '\r') return CK_TR_LF;
    return (c < 0x20 && c != '\t') || c == 0x7f ? CK_ERROR : CK_TR_VAL;
  case CK_TR_LF:
    return c == '\n' ? CK_TR0 : CK_ERROR;
  case CK_END_LF:
    return c == '\n' ? CK_DONE : CK_ERROR;
  }
  return CK_ERROR;
}

/* Takes the chunk data available at in[*i..len). */
static int take_data(adb__http_chunker *k, const char *in, size_t len,
                     size_t *i, char *out) {
  size_t n = len - *i;
  if ((uint64_t)n > k->left) n = (size_t)k->left;
  if (out) memmove(out + k->decoded, in + *i, n);
  k->decoded += n;
  k->left -= n;
  *i += n;
  return k->left ? CK_DATA : CK_DATA_CR;
}

int adb__http_chunk_feed(adb__http_chunker *k, const char *in, size_t len,
                         char *out, size_t max_body, size_t *used) {
  size_t i = 0;
  int st = k->state;
  while (i < len && st != CK_DONE && st != CK_ERROR) {
    if (st == CK_DATA) {
      st = take_data(k, in, len, &i, out);
      continue;
    }
    unsigned char c = (unsigned char)in[i++];
    if (st <= CK_VAL_END) {
      if (++k->line > CK_MAX_LINE) {
        st = CK_ERROR;
        break;
      }
      st = size_line_step(k, st, c);
      if (st == CK_SIZE && k->left > max_body - k->decoded) {
        k->state = CK_ERROR;
        *used = i;
        return -413;
      }
    } else if (st == CK_SIZE_LF) {
      if (c != '\n') {
        st = CK_ERROR;
      } else {
        k->line = 0;
        st = k->left ? CK_DATA : CK_TR0;
      }
    } else if (st == CK_DATA_CR) {
      st = c == '\r' ? CK_DATA_LF : CK_ERROR;
    } else if (st == CK_DATA_LF) {
      st = c == '\n' ? CK_SIZE0 : CK_ERROR;
    } else {
      st = ++k->line > CK_MAX_TRAILER ? CK_ERROR : trailer_step(st, c);
    }
  }
  k->state = st;
  *used = i;
  if (st == CK_ERROR) return -400;
  return st == CK_DONE;
}

long adb__http_chunked(const char *buf, size_t len, size_t max_body, char *out,
                       size_t *decoded) {
  adb__http_chunker k = {0};
  size_t used = 0;
  int rc = adb__http_chunk_feed(&k, buf, len, out, max_body, &used);
  if (rc < 0) return rc;
  if (rc == 0) return 0;
  *decoded = k.decoded;
  return (long)used;
}

const char *adb__http_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 411:
    return "Length Required";
  case 413:
    return "Content Too Large";
  case 415:
    return "Unsupported Media Type";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 503:
    return "Service Unavailable";
  case 505:
    return "HTTP Version Not Supported";
  }
  return "Unknown";
}

void adb__http_resp_header(adb__http_resp *resp, const char *name,
                           const char *value) {
  size_t room = sizeof resp->headers - resp->headers_len;
  int n = snprintf(resp->headers + resp->headers_len, room, "%s: %s\r\n", name,
                   value);
  if (n > 0 && (size_t)n < room)
    resp->headers_len += (size_t)n;
  else
    resp->headers[resp->headers_len] = '\0';
}

/* ------------------------------------------------------------- server */

typedef struct worker worker;
typedef struct job job;

typedef struct conn {
  worker *w;
  int fd;
  struct event *ev_read, *ev_write;
  struct conn *prev, *next;
  char *in;
  size_t in_len, in_off, in_cap;
  adb__buf out;
  size_t out_off;
  adb__http_req req;    /* the request out on a pool thread */
  size_t req_total;     /* its bytes in the input buffer */
  char saved;           /* input byte overwritten by the body's NUL */
  int64_t req_start_ms; /* first byte of an unfinished request, or 0 */
  int64_t idle_since_ms, write_since_ms, linger_since_ms;
  int out_queued; /* bytes in the socket's send queue at the last sweep */
  /* The request being received, kept between reads so that no byte is
   * looked at twice: how far the head has been searched, then, once the
   * head is parsed, its length, the body's framing and the chunked
   * decoder's place (encoded bytes taken are compacted away, the decoded
   * body stays at in_off + head_len). */
  size_t head_scan, head_len, body_len, ck_in;
  adb__http_chunker ck;
  unsigned have_head : 1;
  unsigned chunked : 1;
  unsigned pending : 1;     /* a job is out: read nothing, free nothing */
  unsigned zombie : 1;      /* closed while pending */
  unsigned close_after : 1; /* close once the output is written */
  unsigned lingering : 1;   /* write side shut, discarding input */
  unsigned want_write : 1;
  unsigned reading : 1; /* ev_read is added */
  unsigned sent_continue : 1;
  unsigned peer_closed : 1;
  job *job; /* the job out (pending), for its stream */
} conn;

/* A streamed answer (adb__http_stream_begin): the pool thread appends
 * framed chunks to q under mu; the worker swaps q with the connection's
 * drained output and signals cv. */
struct adb__http_stream {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  adb__buf q;
  job *j;
  worker *w;
  int started, closed, failed, raw, closing, head;
};

struct job {
  job *next;
  conn *c; /* NULL once a later answer timed out (the job is orphaned) */
  adb__http_resp resp;
  adb__buf body;
  int64_t t0_ns;
  adb__http_stream stream;
  job *pump_next; /* in the worker's pump list */
  int in_pump;
  /* adb__http_later: the job is posted when both the pool thread's
   * handler and the finisher let go of it (refs 2 -> 0); handed is set once
   * the handler returned, after which the worker's sweep may answer a
   * timeout. fill and arg are the finisher's. */
  int later;
  int later_refs, later_handed; /* atomic */
  int64_t later_deadline_ms;
  char later_msg[256];
  adb__http_fill fill;
  void *fill_arg;
};

struct worker {
  adb__http_server *srv;
  int idx;
  pthread_t thread;
  int started;
  struct event_base *base;
  int lfd, efd;
  struct event *ev_listen, *ev_notify, *ev_sweep, *ev_resume;
  conn *conns;
  int n_conns;
  adb__buf scratch;   /* answer bodies of inline handlers */
  pthread_mutex_t mu; /* guards done_* and shutdown_req */
  job *done_head, *done_tail;
  job *pump_head; /* jobs whose stream has bytes for the socket */
  int shutdown_req;
  int draining;
  int64_t drain_deadline_ms;
  char date[64]; /* "Date: ...\r\n" */
  size_t date_len;
  time_t date_sec;
};

struct adb__http_server {
  adb__http_config cfg;
  char addr[128];
  worker *workers;
  int n_workers;
  pthread_t *pool;
  int n_pool, pool_started;
  pthread_mutex_t pool_mu;
  pthread_cond_t pool_cv;
  job *q_head, *q_tail;
  int pool_stop;
  int draining;
  int n_open;     /* connections open over all workers (atomic) */
  long n_refused; /* connections refused at the cap (atomic) */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void update_date(worker *w) {
  time_t t = time(NULL);
  if (t == w->date_sec) return;
  struct tm tm;
  gmtime_r(&t, &tm);
  w->date_len = strftime(w->date, sizeof w->date,
                         "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  w->date_sec = t;
}

static void conn_free(conn *c) {
  if (c->ev_read) event_free(c->ev_read);
  if (c->ev_write) event_free(c->ev_write);
  free(c->in);
  adb__buf_free(&c->out);
  free(c);
}

static void maybe_exit(worker *w) {
  if (w->draining && w->n_conns == 0) event_base_loopexit(w->base, NULL);
}

/* Closes the socket; the memory goes now, or when the pending job is
 * back. */
static void conn_close(conn *c) {
  worker *w = c->w;
  if (c->fd < 0) return;
  event_del(c->ev_read);
  event_del(c->ev_write);
  close(c->fd);
  c->fd = -1;
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  w->n_conns--;
  __atomic_sub_fetch(&w->srv->n_open, 1, __ATOMIC_RELAXED);
  if (c->job) {
    adb__http_stream *st = &c->job->stream;
    pthread_mutex_lock(&st->mu);
    st->closed = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
  }
  if (c->pending)
    c->zombie = 1;
  else
    conn_free(c);
  maybe_exit(w);
}

/* Shuts the write side and discards input until EOF or a timeout, so the
 * client reads our last answer rather than a reset. */
static void conn_linger(conn *c) {
  if (c->peer_closed) {
    conn_close(c);
    return;
  }
  shutdown(c->fd, SHUT_WR);
  c->lingering = 1;
  c->linger_since_ms = now_ms();
  if (!c->reading) {
    event_add(c->ev_read, NULL);
    c->reading = 1;
  }
}

/* Writes what it can; 0, or -1 when the connection was closed. */
static int conn_flush(conn *c) {
  while (c->out_off < c->out.len) {
    ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                     MSG_NOSIGNAL);
    if (n > 0) {
      c->out_off += (size_t)n;
      /* a slow reader that keeps reading is not a stalled one */
      if (c->want_write) c->write_since_ms = now_ms();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->want_write) {
        event_add(c->ev_write, NULL);
        c->want_write = 1;
        c->write_since_ms = now_ms();
        c->out_queued = INT_MAX;
      }
      return 0;
    }
    conn_close(c);
    return -1;
  }
  c->out.len = c->out_off = 0;
  if (c->out.cap > 65536) adb__buf_free(&c->out);
  if (c->want_write) {
    event_del(c->ev_write);
    c->want_write = 0;
  }
  if (c->close_after && !c->pending) {
    conn_linger(c);
    return -1;
  }
  return 0;
}

static char *put(char *o, const void *src, size_t n) {
  memcpy(o, src, n);
  return o + n;
}

static char *put_uint(char *o, uint64_t u) {
  char tmp[24], *e = tmp + sizeof tmp, *s = e;
  do {
    *--s = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  memcpy(o, s, (size_t)(e - s));
  return o + (e - s);
}

/* Appends status line, headers and body to the output. */
static void put_answer(conn *c, const adb__http_req *req,
                       const adb__http_resp *resp, int closing) {
  const char *reason = adb__http_reason(resp->status);
  const char *ctype =
      resp->content_type ? resp->content_type : "application/json";
  size_t blen = resp->body ? resp->body->len : 0;
  size_t need = 64 + strlen(reason) + c->w->date_len + strlen(ctype) +
                resp->headers_len + 64 + blen;
  if (adb__buf_reserve(&c->out, need) != ADB_OK) {
    c->close_after = 1;
    return;
  }
  char *o = c->out.p + c->out.len;
  o = put(o, "HTTP/1.1 ", 9);
  o = put_uint(o, (uint64_t)resp->status);
  *o++ = ' ';
  o = put(o, reason, strlen(reason));
  o = put(o, "\r\n", 2);
  o = put(o, c->w->date, c->w->date_len);
  o = put(o, "Content-Type: ", 14);
  o = put(o, ctype, strlen(ctype));
  o = put(o, "\r\nContent-Length: ", 18);
  o = put_uint(o, blen);
  o = put(o, "\r\n", 2);
  if (closing)
    o = put(o, "Connection: close\r\n", 19);
  else if (req->minor == 0)
    o = put(o, "Connection: keep-alive\r\n", 24);
  o = put(o, resp->headers, resp->headers_len);
  o = put(o, "\r\n", 2);
  if (blen && req->method != ADB__HTTP_HEAD) o = put(o, resp->body->p, blen);
  c->out.len = (size_t)(o - c->out.p);
}

static void http_error_body(adb__buf *b, int status, const char *why) {
  const char *code = status == 408   ? "request_timeout"
                     : status == 413 ? "body_too_large"
                     : status == 431 ? "headers_too_large"
                     : status == 501 ? "not_implemented"
                     : status == 505 ? "http_version_not_supported"
                                     : "bad_request";
  b->len = 0;
  adb__buf_puts(b, "{\"error\":{\"code\":\"");
  adb__buf_puts(b, code);
  adb__buf_puts(b, "\",\"message\":");
  adb__json_str(b, why);
  adb__buf_puts(b, "}}");
}

static void notify_done(worker *w, const adb__http_req *req,
                        const adb__http_resp *resp, int64_t t0) {
  const adb__http_config *cfg = &w->srv->cfg;
  if (cfg->done) cfg->done(cfg->ud, req, resp, now_ns() - t0);
}

/* Forgets the request being received (answered, or refused). */
static void reset_request(conn *c) {
  c->have_head = c->chunked = 0;
  c->head_scan = c->head_len = c->body_len = c->ck_in = 0;
  memset(&c->ck, 0, sizeof c->ck);
}

/* Answers an error of the HTTP layer itself and closes after it. */
static void conn_error(conn *c, adb__http_req *req, int status,
                       const char *why) {
  worker *w = c->w;
  adb__http_resp resp = {.status = status, .body = &w->scratch};
  http_error_body(&w->scratch, status, why);
  resp.error_code = "http";
  put_answer(c, req, &resp, 1);
  c->close_after = 1;
  c->in_off = c->in_len; /* the rest of the input is not ours to read */
  reset_request(c);
  notify_done(w, req, &resp, now_ns());
}

static void finish(conn *c, adb__http_req *req, adb__http_resp *resp,
                   size_t total, int64_t t0) {
  worker *w = c->w;
  c->in[c->in_off + total] = c->saved;
  int closing = !req->keep_alive || w->draining || c->close_after;
  put_answer(c, req, resp, closing);
  c->in_off += total;
  c->req_start_ms = 0;
  c->sent_continue = 0;
  if (closing) {
    c->close_after = 1;
    c->in_off = c->in_len;
  }
  notify_done(w, req, resp, t0);
}

/* --------------------------------------------------- streamed answers */

static void stream_init(adb__http_stream *st, job *j, worker *w) {
  pthread_mutex_init(&st->mu, NULL);
  pthread_cond_init(&st->cv, NULL);
  st->j = j;
  st->w = w;
}

static void wake(worker *w);
static void post_job(worker *w, job *j);
static int later_expired(conn *c, int64_t now);

/* On the worker: moves the stream's queued bytes to the connection once
 * its output is drained, and wakes the producer. */
static void stream_pump(conn *c) {
  job *j = c->job;
  if (c->fd < 0 || !j || c->out.len) return;
  adb__http_stream *st = &j->stream;
  pthread_mutex_lock(&st->mu);
  adb__buf t = c->out;
  c->out = st->q;
  st->q = t;
  c->out_off = 0;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  conn_flush(c);
}

/* On the producer: asks the worker to pump (once until it has). */
static void stream_post(adb__http_stream *st) {
  worker *w = st->w;
  pthread_mutex_lock(&w->mu);
  int post = !st->j->in_pump;
  if (post) {
    st->j->in_pump = 1;
    st->j->pump_next = w->pump_head;
    w->pump_head = st->j;
  }
  pthread_mutex_unlock(&w->mu);
  if (post) wake(w);
}

int adb__http_stream_begin(adb__http_stream *st, const adb__http_resp *resp) {
  const adb__http_req *req = &st->j->c->req; /* the pool thread's own */
  char date[64];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  st->raw = req->minor == 0;
  st->head = req->method == ADB__HTTP_HEAD;
  st->closing = !req->keep_alive || st->raw ||
                __atomic_load_n(&st->w->srv->draining, __ATOMIC_RELAXED);
  const char *ctype =
      resp->content_type ? resp->content_type : "application/json";
  char status[16];
  snprintf(status, sizeof status, "%d ", resp->status);
  pthread_mutex_lock(&st->mu);
  adb__buf *b = &st->q;
  adb__buf_puts(b, "HTTP/1.1 ");
  adb__buf_puts(b, status);
  adb__buf_puts(b, adb__http_reason(resp->status));
  adb__buf_puts(b, "\r\n");
  adb__buf_puts(b, date);
  adb__buf_puts(b, "Content-Type: ");
  adb__buf_puts(b, ctype);
  adb__buf_puts(b, st->raw ? "\r\n" : "\r\nTransfer-Encoding: chunked\r\n");
  if (st->closing) adb__buf_puts(b, "Connection: close\r\n");
  adb__buf_append(b, resp->headers, resp->headers_len);
  adb__buf_puts(b, "\r\n");
  st->started = 1;
  int rc = st->closed ? -1 : 0;
  pthread_mutex_unlock(&st->mu);
  stream_post(st);
  return rc;
}

int adb__http_stream_write(adb__http_stream *st, const void *p, size_t n) {
  if (st->head) return -1;
  if (!n) return 0;
  pthread_mutex_lock(&st->mu);
  while (!st->closed && st->q.len > ADB__HTTP_STREAM_QUEUE)
    pthread_cond_wait(&st->cv, &st->mu);
  if (st->closed) {
    pthread_mutex_unlock(&st->mu);
    return -1;
  }
  int was_empty = st->q.len == 0;
  char size[24];
  snprintf(size, sizeof size, "%zx\r\n", n);
  if (!st->raw) adb__buf_puts(&st->q, size);
  adb__buf_append(&st->q, p, n);
  if (!st->raw) adb__buf_puts(&st->q, "\r\n");
  pthread_mutex_unlock(&st->mu);
  if (was_empty) stream_post(st);
  return 0;
}

void adb__http_stream_fail(adb__http_stream *st) {
  st->failed = 1;
}

/* On the worker, when the handler of a streamed answer has returned: the
 * rest of the queue and the last chunk. */
static void finish_stream(conn *c, job *j) {
  adb__http_stream *st = &j->stream;
  c->in[c->in_off + c->req_total] = c->saved;
  if (st->q.len) adb__buf_append(&c->out, st->q.p, st->q.len);
  st->q.len = 0;
  if (!st->failed && !st->raw && !st->head) adb__buf_puts(&c->out, "0\r\n\r\n");
  c->in_off += c->req_total;
  c->req_start_ms = 0;
  c->sent_continue = 0;
  if (st->closing || st->failed || c->w->draining) {
    c->close_after = 1;
    c->in_off = c->in_len;
  }
  notify_done(c->w, &c->req, &j->resp, j->t0_ns);
}

/* Appends j to the list head..tail (its lock held). */
static void job_append(job **head, job **tail, job *j) {
  if (*tail)
    (*tail)->next = j;
  else
    *head = j;
  *tail = j;
}

static void pool_submit(adb__http_server *s, job *j) {
  pthread_mutex_lock(&s->pool_mu);
  job_append(&s->q_head, &s->q_tail, j);
  pthread_cond_signal(&s->pool_cv);
  pthread_mutex_unlock(&s->pool_mu);
}

static void dispatch(conn *c, adb__http_req *req, size_t total) {
  worker *w = c->w;
  adb__http_config *cfg = &w->srv->cfg;
  int64_t t0 = now_ns();
  req->worker = w->idx;
  req->in_pool = 0;
  req->stream = NULL;
  w->scratch.len = 0;
  adb__http_resp resp = {.status = 200, .body = &w->scratch};
  int rc = cfg->handler(cfg->ud, req, &resp);
  if (rc == ADB__HTTP_DEFER && w->srv->n_pool > 0) {
    job *j = calloc(1, sizeof *j);
    if (j) {
      c->req = *req;
      c->req_total = total;
      c->pending = 1;
      if (c->reading) {
        event_del(c->ev_read);
        c->reading = 0;
      }
      j->c = c;
      j->t0_ns = t0;
      j->resp.status = 200;
      j->resp.body = &j->body;
      stream_init(&j->stream, j, w);
      c->job = j;
      pool_submit(w->srv, j);
      return;
    }
  }
  if (rc == ADB__HTTP_DEFER) {
    req->in_pool = 1;
    cfg->handler(cfg->ud, req, &resp);
  }
  finish(c, req, &resp, total, t0);
  if (w->scratch.cap > (1u << 20)) adb__buf_free(&w->scratch);
}

/* Makes room for `need` bytes in the input buffer. */
static int in_reserve(conn *c, size_t need) {
  if (need + 1 <= c->in_cap) return 0;
  size_t cap = c->in_cap ? c->in_cap : 4096;
  while (cap < need + 1)
    cap *= 2;
  char *p = realloc(c->in, cap);
  if (!p) return -1;
  c->in = p;
  c->in_cap = cap;
  return 0;
}

static void send_continue(conn *c, adb__http_req *req) {
  if (!req->expect_continue || c->sent_continue || req->minor == 0) return;
  adb__buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
  c->sent_continue = 1;
}

/* True when p[from..n) holds the empty line that ends a head. */
static int head_may_end(const char *p, size_t n, size_t from) {
  const char *s = p + from, *e = p + n;
  while (s < e && (s = memchr(s, '\n', (size_t)(e - s))) != NULL) {
    s++;
    if (s < e && (*s == '\n' || (*s == '\r' && s + 1 < e && s[1] == '\n')))
      return 1;
  }
  return 0;
}

/* Asks the admit hook about a request whose large body is still to come;
 * 0 to go on reading, -1 when refused (answered). */
static int admit(conn *c, adb__http_req *req) {
  worker *w = c->w;
  adb__http_config *cfg = &w->srv->cfg;
  if (!cfg->admit) return 0;
  w->scratch.len = 0;
  adb__http_resp resp = {.status = 200, .body = &w->scratch};
  int64_t t0 = now_ns();
  if (!cfg->admit(cfg->ud, req, &resp)) return 0;
  put_answer(c, req, &resp, 1);
  c->close_after = 1;
  c->in_off = c->in_len;
  reset_request(c);
  notify_done(w, req, &resp, t0);
  return -1;
}

/* Parses the head of the request at the start of the unread input, once.
 * Returns 1 when parsed (req filled), 0 for more bytes, -1 on an error
 * (answered). */
static int take_head(conn *c, adb__http_req *req) {
  adb__http_config *cfg = &c->w->srv->cfg;
  char *p = c->in + c->in_off;
  size_t avail = c->in_len - c->in_off;
  const char *why;
  size_t from = c->head_scan > 3 ? c->head_scan - 3 : 0;
  if (avail <= cfg->max_head && !head_may_end(p, avail, from)) {
    c->head_scan = avail;
    return 0;
  }
  int h = adb__http_parse_head(p, avail, cfg->max_head, req, &why);
  if (h < 0) {
    conn_error(c, req, -h, why);
    return -1;
  }
  if (h == 0) {
    c->head_scan = avail;
    return 0;
  }
  if (!req->chunked && req->content_length > (int64_t)cfg->max_body) {
    conn_error(c, req, 413, "request body too large");
    return -1;
  }
  c->have_head = 1;
  c->head_len = (size_t)h;
  c->chunked = (unsigned)req->chunked;
  c->body_len = req->content_length > 0 ? (size_t)req->content_length : 0;
  c->ck_in = (size_t)h;
  memset(&c->ck, 0, sizeof c->ck);
  size_t have = avail - (size_t)h;
  if ((req->chunked || c->body_len > have) &&
      (req->chunked || c->body_len > cfg->preauth_body) && admit(c, req) < 0)
    return -1;
  return 1;
}

/* Decodes the chunked body bytes that arrived since the last call, in
 * place. Returns the request's length in the buffer when the body is
 * complete (the pipelined rest moved to follow it), 0 for more, -1 on an
 * error (answered). */
static long take_chunks(conn *c, adb__http_req *req) {
  adb__http_config *cfg = &c->w->srv->cfg;
  char *p = c->in + c->in_off;
  size_t avail = c->in_len - c->in_off, used = 0;
  char *body = p + c->head_len;
  int rc = adb__http_chunk_feed(&c->ck, p + c->ck_in, avail - c->ck_in, body,
                                cfg->max_body, &used);
  if (rc < 0) {
    conn_error(c, req, -rc,
               rc == -413 ? "request body too large" : "malformed chunk");
    return -1;
  }
  /* Drop the encoded bytes taken: what is left follows the decoded body. */
  size_t end = c->head_len + c->ck.decoded;
  size_t rest = avail - c->ck_in - used;
  memmove(p + end, p + c->ck_in + used, rest);
  c->in_len = c->in_off + end + rest;
  c->ck_in = end;
  return rc == 1 ? (long)end : 0;
}

/* Handles one request at the start of the unread input; 1 when another
 * may follow, 0 to stop. The head is parsed once; when the body arrives
 * over later reads, the head is parsed again when it is complete, to point
 * req into the buffer as it is then. */
static int process_one(conn *c) {
  adb__http_config *cfg = &c->w->srv->cfg;
  adb__http_req req;
  const char *why;
  int fresh = 0;
  if (!c->have_head) {
    int rc = take_head(c, &req);
    if (rc <= 0) return 0;
    fresh = 1;
  }
  size_t total;
  if (c->chunked) {
    long t = take_chunks(c, &req);
    if (t < 0) return 0;
    if (t == 0) {
      if (fresh) send_continue(c, &req);
      return 0;
    }
    total = (size_t)t;
  } else {
    size_t avail = c->in_len - c->in_off;
    if (avail - c->head_len < c->body_len) {
      if (fresh) send_continue(c, &req);
      return 0;
    }
    total = c->head_len + c->body_len;
  }
  char *p = c->in + c->in_off;
  if (!fresh &&
      adb__http_parse_head(p, c->head_len, cfg->max_head, &req, &why) <= 0) {
    conn_error(c, &req, 400, "request head changed"); /* cannot happen */
    return 0;
  }
  req.body = p + c->head_len;
  req.body_len = c->chunked ? c->ck.decoded : c->body_len;
  reset_request(c);
  c->saved = p[total];
  req.body[req.body_len] = '\0';
  dispatch(c, &req, total);
  return !c->pending && !c->close_after;
}

/* The most input a connection may hold in its state: a head up to
 * max_head; then the head and its body (compacted as it is decoded) and
 * one read's worth of what follows. */
static size_t in_limit(const conn *c, const adb__http_config *cfg) {
  if (!c->have_head) return cfg->max_head + 1;
  if (c->chunked) return c->head_len + c->ck.decoded + 65536;
  return c->head_len + c->body_len + cfg->max_head + 1;
}

static void conn_process(conn *c) {
  while (c->fd >= 0 && !c->pending && !c->close_after &&
         c->in_off < c->in_len && c->out.len - c->out_off < (1u << 20)) {
    if (!process_one(c)) break;
  }
  if (c->pending) return;
  if (c->in_off == c->in_len) {
    c->in_off = c->in_len = 0;
    c->req_start_ms = 0;
    c->idle_since_ms = now_ms();
    if (c->in_cap > 65536) {
      free(c->in);
      c->in = NULL;
      c->in_cap = 0;
    }
  } else {
    if (c->in_off) {
      memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
      c->in_len -= c->in_off;
      c->in_off = 0;
    }
    if (!c->req_start_ms) c->req_start_ms = now_ms();
  }
}

/* Resumes reading once nothing is out and the output has room. */
static void conn_resume(conn *c) {
  int want = !c->pending && !c->close_after && !c->lingering &&
             !c->peer_closed && c->out.len - c->out_off < (1u << 20);
  if (want && !c->reading) {
    event_add(c->ev_read, NULL);
    c->reading = 1;
  } else if (!want && c->reading && !c->lingering) {
    event_del(c->ev_read);
    c->reading = 0;
  }
}

static void after_io(conn *c) {
  if (conn_flush(c) < 0) return;
  if (c->peer_closed && !c->pending && c->out.len == 0) {
    conn_close(c);
    return;
  }
  if (c->w->draining && !c->pending && c->out.len == 0 && c->in_len == 0) {
    conn_close(c);
    return;
  }
  conn_resume(c);
}

static void discard_input(conn *c) {
  char tmp[4096];
  for (;;) {
    ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    conn_close(c);
    return;
  }
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  (void)what;
  if (c->lingering) {
    discard_input(c);
    return;
  }
  const adb__http_config *cfg = &c->w->srv->cfg;
  for (;;) {
    /* Read no more than the request may hold: process_one then answers,
     * or frees room, and the level-triggered event brings us back. */
    if (c->in_len >= c->in_off + in_limit(c, cfg)) break;
    if (c->in_cap - c->in_len < 2048 && in_reserve(c, c->in_len + 4096) < 0)
      break;
    size_t room = c->in_cap - c->in_len - 1;
    size_t want = c->in_off + in_limit(c, cfg) - c->in_len;
    if (room > want) room = want;
    ssize_t n = recv(fd, c->in + c->in_len, room, 0);
    if (n > 0) {
      c->in_len += (size_t)n;
      if ((size_t)n < room) break;
      continue;
    }
    if (n == 0) {
      c->peer_closed = 1;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    conn_close(c);
    return;
  }
  conn_process(c);
  if (c->peer_closed && !c->pending && !c->close_after &&
      c->in_off < c->in_len) {
    adb__http_req req;
    memset(&req, 0, sizeof req);
    req.minor = 1;
    conn_error(c, &req, 400, "the connection closed inside a request");
  }
  if (c->peer_closed && c->reading) {
    event_del(c->ev_read);
    c->reading = 0;
  }
  after_io(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  (void)fd;
  (void)what;
  if (conn_flush(c) < 0) return;
  if (c->job) stream_pump(c);
  if (c->fd < 0) return;
  if (!c->pending && !c->close_after && c->in_off < c->in_len) {
    conn_process(c);
    if (conn_flush(c) < 0) return;
  }
  after_io(c);
}

static void conn_new(worker *w, int fd) {
  conn *c = calloc(1, sizeof *c);
  if (!c) {
    close(fd);
    return;
  }
  c->w = w;
  c->fd = fd;
  c->ev_read = event_new(w->base, fd, EV_READ | EV_PERSIST, on_read, c);
  c->ev_write = event_new(w->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
  if (!c->ev_read || !c->ev_write) {
    close(fd);
    c->fd = -1;
    conn_free(c);
    return;
  }
  c->next = w->conns;
  if (w->conns) w->conns->prev = c;
  w->conns = c;
  w->n_conns++;
  __atomic_add_fetch(&w->srv->n_open, 1, __ATOMIC_RELAXED);
  c->idle_since_ms = now_ms();
  event_add(c->ev_read, NULL);
  c->reading = 1;
}

/* Over the connection cap: a best-effort 503 and close, so that the
 * client learns why instead of waiting in the listen backlog. */
static void refuse(worker *w, int fd) {
  static const char msg[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Retry-After: 1\r\nConnection: close\r\nContent-Length: 92\r\n\r\n"
      "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the "
      "server's connection cap is reached\"}}";
  ssize_t n = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)n;
  close(fd);
  __atomic_add_fetch(&w->srv->n_refused, 1, __ATOMIC_RELAXED);
}

static void on_accept(evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)what;
  for (int i = 0; i < 64; i++) {
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        /* Out of descriptors: pause accepting for a moment. */
        struct timeval tv = {0, 100000};
        event_del(w->ev_listen);
        event_add(w->ev_resume, &tv);
      }
      return;
    }
    if (__atomic_load_n(&w->srv->n_open, __ATOMIC_RELAXED) >=
        w->srv->cfg.max_connections) {
      refuse(w, cfd);
      continue;
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_new(w, cfd);
  }
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)fd;
  (void)what;
  if (!w->draining && w->ev_listen) event_add(w->ev_listen, NULL);
}

/* Whether the client has read from a blocked answer since the last sweep:
 * the socket's send queue shrank. (A send that succeeds is progress too,
 * but the kernel reports a full queue writable only once a third of it is
 * free: a slow, steady reader behind megabytes of queue may go seconds
 * without one.) */
static int reader_progressed(conn *c) {
  int q;
  if (ioctl(c->fd, SIOCOUTQ, &q) != 0 || q >= c->out_queued) return 0;
  c->out_queued = q;
  return 1;
}

static void sweep_conn(conn *c, int64_t now, const adb__http_config *cfg) {
  if (c->lingering) {
    if (now - c->linger_since_ms > 2000) conn_close(c);
    return;
  }
  if (c->want_write && reader_progressed(c)) c->write_since_ms = now;
  if (c->want_write && now - c->write_since_ms > cfg->request_timeout_ms) {
    conn_close(c);
    return;
  }
  if (c->pending && later_expired(c, now)) {
    conn_process(c);
    after_io(c);
    return;
  }
  if (c->pending) return;
  if (c->req_start_ms && now - c->req_start_ms > cfg->request_timeout_ms) {
    adb__http_req req;
    memset(&req, 0, sizeof req);
    req.minor = 1;
    conn_error(c, &req, 408, "request not received in time");
    after_io(c);
    return;
  }
  if (!c->req_start_ms && c->out.len == 0 && c->in_len == 0 &&
      now - c->idle_since_ms > cfg->idle_timeout_ms)
    conn_close(c);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)fd;
  (void)what;
  int64_t now = now_ms();
  update_date(w);
  conn *c = w->conns;
  while (c) {
    conn *next = c->next; /* sweep_conn may free c */
    if (w->draining && now > w->drain_deadline_ms)
      conn_close(c);
    else
      sweep_conn(c, now, &w->srv->cfg);
    c = next;
  }
  maybe_exit(w);
}

static void start_draining(worker *w) {
  if (w->draining) return;
  w->draining = 1;
  w->drain_deadline_ms = now_ms() + w->srv->cfg.shutdown_timeout_ms;
  if (w->ev_listen) {
    event_free(w->ev_listen);
    w->ev_listen = NULL;
  }
  event_del(w->ev_resume);
  if (w->lfd >= 0) close(w->lfd);
  w->lfd = -1;
  conn *c = w->conns;
  while (c) {
    conn *next = c->next;
    if (!c->pending && c->out.len == 0 && c->in_len == 0) conn_close(c);
    c = next;
  }
  maybe_exit(w);
}

static void job_free(job *j) {
  if (j->fill) j->fill(NULL, j->fill_arg); /* an answer nobody wants */
  adb__buf_free(&j->body);
  adb__buf_free(&j->stream.q);
  pthread_mutex_destroy(&j->stream.mu);
  pthread_cond_destroy(&j->stream.cv);
  free(j);
}

static void complete_job(job *j) {
  conn *c = j->c;
  if (!c) { /* a later answer that timed out: already answered */
    job_free(j);
    return;
  }
  if (j->fill && !c->zombie) {
    j->fill(&j->resp, j->fill_arg);
    j->fill = NULL;
  }
  c->pending = 0;
  c->job = NULL;
  if (c->zombie) {
    conn_free(c);
  } else {
    if (j->stream.started)
      finish_stream(c, j);
    else
      finish(c, &c->req, &j->resp, c->req_total, j->t0_ns);
    conn_process(c);
    after_io(c);
  }
  job_free(j);
}

static void on_notify(evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)what;
  uint64_t v;
  if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN) return;
  pthread_mutex_lock(&w->mu);
  job *j = w->done_head;
  w->done_head = w->done_tail = NULL;
  job *pumps = w->pump_head;
  w->pump_head = NULL;
  for (job *p = pumps; p; p = p->pump_next)
    p->in_pump = 0;
  int stop = w->shutdown_req;
  pthread_mutex_unlock(&w->mu);
  update_date(w);
  /* Before the done jobs: a job in both lists is freed by its completion. */
  while (pumps) {
    job *next = pumps->pump_next;
    stream_pump(pumps->c);
    pumps = next;
  }
  while (j) {
    job *next = j->next;
    complete_job(j);
    j = next;
  }
  if (stop) start_draining(w);
  maybe_exit(w);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  event_base_dispatch(w->base);
  while (w->conns)
    conn_close(w->conns);
  return NULL;
}

static void wake(worker *w) {
  uint64_t one = 1;
  ssize_t n = write(w->efd, &one, sizeof one);
  (void)n;
}

static void *pool_main(void *arg) {
  adb__http_server *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->pool_mu);
    while (!s->q_head && !s->pool_stop)
      pthread_cond_wait(&s->pool_cv, &s->pool_mu);
    job *j = s->q_head;
    if (j) {
      s->q_head = j->next;
      if (!s->q_head) s->q_tail = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (!j) return NULL;
    j->next = NULL;
    conn *c = j->c;
    c->req.in_pool = 1;
    c->req.stream = &j->stream;
    worker *w = c->w; /* c is not ours once a later job is handed on */
    int rc = s->cfg.handler(s->cfg.ud, &c->req, &j->resp);
    if (rc == ADB__HTTP_LATER && j->later) {
      __atomic_store_n(&j->later_handed, 1, __ATOMIC_RELEASE);
      if (__atomic_sub_fetch(&j->later_refs, 1, __ATOMIC_ACQ_REL)) continue;
    } else {
      j->later = 0; /* a handle not handed on is dropped */
    }
    post_job(w, j);
  }
}

/* Hands a finished job to its worker. Only the first job of an empty list
 * writes the eventfd: the worker takes the whole list when it wakes, so a
 * later one rides on that wake-up (one write a batch of answers, not one
 * each). */
static void post_job(worker *w, job *j) {
  pthread_mutex_lock(&w->mu);
  int was_empty = !w->done_head;
  job_append(&w->done_head, &w->done_tail, j);
  pthread_mutex_unlock(&w->mu);
  if (was_empty) wake(w);
}

adb__http_later *adb__http_later_begin(adb__http_req *req, int timeout_ms,
                                       const char *timeout_msg) {
  if (!req->in_pool || !req->stream) return NULL;
  job *j = req->stream->j;
  j->later = 1;
  j->later_refs = 2;
  j->later_deadline_ms = now_ms() + timeout_ms;
  snprintf(j->later_msg, sizeof j->later_msg, "%s", timeout_msg);
  return (adb__http_later *)j;
}

void adb__http_later_done(adb__http_later *l, adb__http_fill fill, void *arg) {
  job *j = (job *)l;
  j->fill = fill;
  j->fill_arg = arg;
  worker *w = j->stream.w;
  if (__atomic_sub_fetch(&j->later_refs, 1, __ATOMIC_ACQ_REL) == 0)
    post_job(w, j);
}

/* On the worker: a later answer past its deadline is answered 503 here and
 * its job orphaned (freed when the finisher posts it); the connection goes
 * on with its next request. */
static int later_expired(conn *c, int64_t now) {
  job *j = c->job;
  if (!j || !__atomic_load_n(&j->later_handed, __ATOMIC_ACQUIRE) ||
      now <= j->later_deadline_ms)
    return 0;
  j->c = NULL;
  c->pending = 0;
  c->job = NULL;
  adb__buf *b = &j->body;
  b->len = 0;
  adb__buf_puts(b, "{\"error\":{\"code\":\"timeout\",\"message\":");
  adb__json_str(b, j->later_msg);
  adb__buf_puts(b, "}}");
  j->resp.status = 503;
  j->resp.error_code = "timeout";
  j->resp.body = b;
  finish(c, &c->req, &j->resp, c->req_total, j->t0_ns);
  return 1;
}

/* ----------------------------------------------------- listening sockets */

static int split_listen(const char *spec, char *host, size_t hl, char *port,
                        size_t pl) {
  const char *colon;
  if (spec[0] == '[') {
    const char *rb = strchr(spec, ']');
    if (!rb || rb[1] != ':') return -1;
    snprintf(host, hl, "%.*s", (int)(rb - spec - 1), spec + 1);
    colon = rb + 1;
  } else {
    colon = strrchr(spec, ':');
    if (!colon) return -1;
    snprintf(host, hl, "%.*s", (int)(colon - spec), spec);
  }
  snprintf(port, pl, "%s", colon + 1);
  return port[0] ? 0 : -1;
}

static int bind_one(const struct addrinfo *ai, int reuseport, const char *addr,
                    char *err, size_t errlen) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0) goto fail;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    goto fail;
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) goto fail;
  if (listen(fd, 1024) < 0) goto fail;
  return fd;
fail:
  snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
  if (fd >= 0) close(fd);
  return -1;
}

static void set_port(struct sockaddr *sa, int port) {
  if (sa->sa_family == AF_INET)
    ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

static int bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) return -1;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Binds one listening socket per worker. A plain bind first claims the
 * port, so that a second server on the same port fails instead of silently
 * sharing it through SO_REUSEPORT; if SO_REUSEPORT is unavailable the
 * workers share one socket. */
static int bind_all(adb__http_server *s, char *err, size_t errlen) {
  char host[96], port[16];
  if (split_listen(s->cfg.listen, host, sizeof host, port, sizeof port) < 0) {
    snprintf(err, errlen, "listen address must be host:port, not '%s'",
             s->cfg.listen);
    return -1;
  }
  char *end = NULL;
  long pn = strtol(port, &end, 10);
  if (!isdigit((unsigned char)port[0]) || *end || pn < 0 || pn > 65535) {
    snprintf(err, errlen,
             "listen address '%s': the port must be a number 0..65535 "
             "(0: any free port)",
             s->cfg.listen);
    return -1;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve '%s': %s", s->cfg.listen,
             gai_strerror(rc));
    return -1;
  }
  int probe = bind_one(ai, 0, s->cfg.listen, err, errlen);
  int p = probe >= 0 ? bound_port(probe) : -1;
  if (probe >= 0) close(probe);
  rc = -1;
  if (p < 0) goto out;
  set_port(ai->ai_addr, p);
  for (int i = 0; i < s->n_workers; i++) {
    worker *w = &s->workers[i];
    w->lfd = bind_one(ai, 1, s->cfg.listen, err, errlen);
    if (w->lfd < 0 && i > 0) w->lfd = dup(s->workers[0].lfd);
    if (w->lfd < 0 && i == 0)
      w->lfd = bind_one(ai, 0, s->cfg.listen, err, errlen);
    if (w->lfd < 0) goto out;
  }
  char hbuf[64];
  getnameinfo(ai->ai_addr, ai->ai_addrlen, hbuf, sizeof hbuf, NULL, 0,
              NI_NUMERICHOST);
  snprintf(s->addr, sizeof s->addr,
           ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", hbuf, p);
  rc = 0;
out:
  freeaddrinfo(ai);
  return rc;
}

/* ---------------------------------------------------------- lifecycle */

static void config_defaults(adb__http_config *c) {
  if (!c->listen) c->listen = "127.0.0.1:8080";
  if (c->threads <= 0) c->threads = 1;
  if (c->pool_threads < 0)
    c->pool_threads = 0;
  else if (c->pool_threads == 0)
    c->pool_threads = 16;
  if (!c->max_body) c->max_body = 1 << 20;
  if (!c->max_head) c->max_head = 16384;
  if (c->request_timeout_ms <= 0) c->request_timeout_ms = 10000;
  if (c->idle_timeout_ms <= 0) c->idle_timeout_ms = 60000;
  if (c->shutdown_timeout_ms <= 0) c->shutdown_timeout_ms = 30000;
  if (c->max_connections <= 0) c->max_connections = 4096;
  if (!c->preauth_body) c->preauth_body = 16384;
}

static int worker_init(worker *w, char *err, size_t errlen) {
  struct event_config *ec = event_config_new();
  if (!ec) goto fail;
  event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
  w->base = event_base_new_with_config(ec);
  event_config_free(ec);
  w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!w->base || w->efd < 0) goto fail;
  struct timeval sweep = {0, 250000};
  w->ev_listen = event_new(w->base, w->lfd, EV_READ | EV_PERSIST, on_accept, w);
  w->ev_notify = event_new(w->base, w->efd, EV_READ | EV_PERSIST, on_notify, w);
  w->ev_sweep = event_new(w->base, -1, EV_PERSIST, on_sweep, w);
  w->ev_resume = evtimer_new(w->base, on_resume_accept, w);
  if (!w->ev_listen || !w->ev_notify || !w->ev_sweep || !w->ev_resume)
    goto fail;
  event_add(w->ev_listen, NULL);
  event_add(w->ev_notify, NULL);
  event_add(w->ev_sweep, &sweep);
  update_date(w);
  return 0;
fail:
  snprintf(err, errlen, "cannot create an event loop");
  return -1;
}

int adb__http_start(const adb__http_config *cfg, adb__http_server **out,
                    char *err, size_t errlen) {
  *out = NULL;
  adb__http_server *s = calloc(1, sizeof *s);
  if (!s) return ADB_ENOMEM;
  s->cfg = *cfg;
  config_defaults(&s->cfg);
  pthread_mutex_init(&s->pool_mu, NULL);
  pthread_cond_init(&s->pool_cv, NULL);
  s->n_workers = s->cfg.threads;
  s->workers = calloc((size_t)s->n_workers, sizeof *s->workers);
  s->pool = calloc((size_t)s->cfg.pool_threads + 1, sizeof *s->pool);
  if (!s->workers || !s->pool) goto nomem;
  for (int i = 0; i < s->n_workers; i++) {
    s->workers[i].srv = s;
    s->workers[i].idx = i;
    s->workers[i].lfd = s->workers[i].efd = -1;
    pthread_mutex_init(&s->workers[i].mu, NULL);
  }
  if (bind_all(s, err, errlen) < 0) goto fail;
  for (int i = 0; i < s->n_workers; i++)
    if (worker_init(&s->workers[i], err, errlen) < 0) goto fail;
  for (int i = 0; i < s->cfg.pool_threads; i++) {
    if (pthread_create(&s->pool[i], NULL, pool_main, s) != 0) break;
    s->n_pool++;
  }
  for (int i = 0; i < s->n_workers; i++) {
    worker *w = &s->workers[i];
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      snprintf(err, errlen, "cannot start worker threads");
      adb__http_shutdown(s);
      adb__http_wait(s);
      adb__http_free(s);
      return ADB_ENOMEM;
    }
    w->started = 1;
  }
  *out = s;
  return ADB_OK;
nomem:
  snprintf(err, errlen, "out of memory");
fail:
  adb__http_free(s);
  return ADB_EIO;
}

const char *adb__http_address(const adb__http_server *s) {
  return s->addr;
}

void adb__http_shutdown(adb__http_server *s) {
  __atomic_store_n(&s->draining, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < s->n_workers; i++) {
    worker *w = &s->workers[i];
    pthread_mutex_lock(&w->mu);
    w->shutdown_req = 1;
    pthread_mutex_unlock(&w->mu);
    if (w->efd >= 0) wake(w);
  }
}

int adb__http_draining(const adb__http_server *s) {
  return __atomic_load_n(&s->draining, __ATOMIC_RELAXED);
}

void adb__http_wait(adb__http_server *s) {
  for (int i = 0; i < s->n_workers; i++) {
    if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
    s->workers[i].started = 0;
  }
  pthread_mutex_lock(&s->pool_mu);
  s->pool_stop = 1;
  pthread_cond_broadcast(&s->pool_cv);
  pthread_mutex_unlock(&s->pool_mu);
  for (int i = 0; i < s->n_pool; i++)
    pthread_join(s->pool[i], NULL);
  s->n_pool = 0;
}

static void worker_free(worker *w) {
  while (w->conns)
    conn_close(w->conns);
  job *j = w->done_head;
  while (j) {
    job *next = j->next;
    if (j->c && j->c->zombie) conn_free(j->c);
    job_free(j);
    j = next;
  }
  if (w->ev_listen) event_free(w->ev_listen);
  if (w->ev_notify) event_free(w->ev_notify);
  if (w->ev_sweep) event_free(w->ev_sweep);
  if (w->ev_resume) event_free(w->ev_resume);
  if (w->base) event_base_free(w->base);
  if (w->lfd >= 0) close(w->lfd);
  if (w->efd >= 0) close(w->efd);
  adb__buf_free(&w->scratch);
  pthread_mutex_destroy(&w->mu);
}

void adb__http_free(adb__http_server *s) {
  if (!s) return;
  if (s->workers)
    for (int i = 0; i < s->n_workers; i++)
      worker_free(&s->workers[i]);
  free(s->workers);
  free(s->pool);
  pthread_mutex_destroy(&s->pool_mu);
  pthread_cond_destroy(&s->pool_cv);
  free(s);
}
