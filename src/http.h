/*
 * http.h — a lean HTTP/1.1 server on libevent, and its request parser.
 *
 * The parser does no I/O (bytes in, a parsed request head out), so it is
 * unit-tested and fuzzed without sockets. The server runs one event loop
 * per worker thread, each with its own listening socket on the same port
 * (SO_REUSEPORT), keep-alive and pipelining, limits on head and body size,
 * timeouts for slow and idle clients, and a graceful shutdown. Handlers run
 * on the worker thread; a handler that would block for long (a durable
 * write) asks for a pool thread instead by returning ADB__HTTP_DEFER.
 */
#ifndef ADB_HTTP_H
#define ADB_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

typedef enum adb__http_method {
  ADB__HTTP_OTHER = 0,
  ADB__HTTP_GET,
  ADB__HTTP_HEAD,
  ADB__HTTP_POST,
  ADB__HTTP_PUT,
  ADB__HTTP_DELETE,
  ADB__HTTP_OPTIONS,
  ADB__HTTP_PATCH
} adb__http_method;

/* A parsed request. Pointers point into the connection's input buffer and
 * are valid until the handler's answer has been queued. */
typedef struct adb__http_req {
  int method; /* adb__http_method */
  const char *method_str;
  size_t method_len;
  const char *path; /* request target up to '?' (origin form) */
  size_t path_len;
  const char *query; /* after '?', or NULL */
  size_t query_len;
  int minor;                 /* HTTP/1.<minor> */
  const char *authorization; /* header value or NULL */
  size_t authorization_len;
  const char *origin; /* Origin header value or NULL (CORS) */
  size_t origin_len;
  const char *content_type;
  size_t content_type_len;
  const char *request_id; /* X-Request-Id header value or NULL */
  size_t request_id_len;
  int64_t content_length; /* -1 when absent */
  int chunked, keep_alive, expect_continue;
  size_t head_len; /* bytes of request line and headers */
  char *body;      /* NUL-terminated, mutable, body_len bytes */
  size_t body_len;
  int in_pool; /* set when called again on a pool thread */
  int worker;  /* index of the worker thread */
  /* Ocp-Apim-Subscription-Key header value or NULL (the Personalizer
   * routes' API key, api_personalizer.c) */
  const char *subscription_key;
  size_t subscription_key_len;
  /* On a pool thread: the answer may be streamed through it (below);
   * NULL on the worker thread. */
  struct adb__http_stream *stream;
} adb__http_req;

/* Parses a request head at buf[0..len). Returns its length (> 0) when
 * complete, 0 when more bytes are needed, or minus an HTTP status on error
 * (-400 malformed, -431 head over max_head, -501 unsupported transfer
 * coding, -505 version); *why then says why. */
int adb__http_parse_head(const char *buf, size_t len, size_t max_head,
                         adb__http_req *req, const char **why);

/* An incremental decoder of a chunked body (RFC 9112 section 7.1). Bytes
 * are fed as they arrive; the decoder keeps its place between calls, so
 * every byte is looked at once whatever the size of the reads. The grammar
 * is strict, so that a proxy in front cannot frame the stream differently:
 *
 *   chunk-size [ *(BWS ";" BWS token [BWS "=" BWS (token|quoted-string)]) ]
 *   CRLF, the data, CRLF; the last chunk (size 0) is followed by trailer
 *   field lines and an empty line, every line ending in CRLF.
 *
 * `0x10`, `1 zz`, a bare LF, a size line over 4 KiB, a trailer section over
 * 8 KiB are malformed. Zero it to start. */
typedef struct adb__http_chunker {
  int state;
  uint64_t left;  /* chunk size being read, then data bytes still to come */
  size_t line;    /* bytes of the current size line or trailer section */
  size_t decoded; /* data bytes written to out so far */
} adb__http_chunker;

/* Feeds in[0..len) to k; chunk data is appended at out + k->decoded (out
 * may point into the same buffer before in: decoded data is never longer
 * than its encoding). Returns 1 when the body ended (*used = bytes of in
 * taken, up to and including the final CRLF), 0 when all of in was taken
 * and more is needed, -400 when malformed, -413 when the decoded size
 * passes max_body. */
int adb__http_chunk_feed(adb__http_chunker *k, const char *in, size_t len,
                         char *out, size_t max_body, size_t *used);

/* One-shot form over a whole buffer: returns the encoded length (trailers
 * included) when complete, 0 when more bytes are needed, -400 when
 * malformed, -413 when the decoded size passes max_body. When out is not
 * NULL the chunk data is also copied to out (which may be buf). *decoded
 * is the decoded length. */
long adb__http_chunked(const char *buf, size_t len, size_t max_body, char *out,
                       size_t *decoded);

/* Reason phrase of a status; "Unknown" for one not in the table. */
const char *adb__http_reason(int status);

/* ------------------------------------------------------------- server */

/* The answer a handler fills. body starts empty; content_type NULL means
 * application/json. headers holds extra header lines ("Name: v\r\n"). */
typedef struct adb__http_resp {
  int status;
  adb__buf *body;
  const char *content_type;
  char headers[512];
  size_t headers_len;
  int route;              /* the handler's route id, for the done hook */
  char request_id[72];    /* the handler's request id, for logs; or "" */
  const char *error_code; /* stable error code, for logs; or NULL */
} adb__http_resp;

/* Appends a header line to resp (silently dropped when it does not fit). */
void adb__http_resp_header(adb__http_resp *resp, const char *name,
                           const char *value);

enum { ADB__HTTP_DONE = 0, ADB__HTTP_DEFER = 1, ADB__HTTP_LATER = 2 };

/* Handles one request: fills resp and returns ADB__HTTP_DONE, or returns
 * ADB__HTTP_DEFER (without touching resp) to be called again with
 * req->in_pool = 1 on a pool thread; there it may also return
 * ADB__HTTP_LATER (below). */
typedef int (*adb__http_handler)(void *ud, adb__http_req *req,
                                 adb__http_resp *resp);
/* Called on the worker thread after each answer has been queued (also for
 * errors the server answers itself, with route 0). */
typedef void (*adb__http_done)(void *ud, const adb__http_req *req,
                               const adb__http_resp *resp, int64_t latency_ns);

/* Called when a request head has arrived whose body is larger than
 * preauth_body (or chunked) and not all here, before any more of it is
 * read: returns 0 to go on, or fills resp (as a handler does) and returns
 * nonzero to refuse; the refusal is answered and the connection closed.
 * This is where an API key is checked before a large body is buffered. */
typedef int (*adb__http_admit)(void *ud, const adb__http_req *req,
                               adb__http_resp *resp);

typedef struct adb__http_config {
  const char *listen;      /* "host:port", "[v6]:port"; port 0 = any */
  int threads;             /* event loops; default 1 */
  int pool_threads;        /* for deferred handlers; default 16 */
  size_t max_body;         /* default 1 MiB */
  size_t max_head;         /* request line + headers; default 16 KiB */
  int request_timeout_ms;  /* to receive a request / send an answer;
                              default 10000 */
  int idle_timeout_ms;     /* keep-alive idle; default 60000 */
  int shutdown_timeout_ms; /* to finish in-flight work; default 30000 */
  int max_connections;     /* open at once over all workers; beyond, a new
                              connection gets 503 and is closed; default
                              4096 */
  size_t preauth_body;     /* bodies up to this are read before admit is
                              asked; default 16 KiB */
  adb__http_handler handler;
  adb__http_admit admit; /* optional */
  adb__http_done done;   /* optional */
  void *ud;
} adb__http_config;

typedef struct adb__http_server adb__http_server;

/* A streamed answer, for a handler on a pool thread (req->stream). begin
 * sends the status line and headers of resp (status, content_type,
 * headers; its body is ignored) with Transfer-Encoding: chunked (HTTP/1.0:
 * no framing, the connection closes at the end); each write sends one
 * chunk. A write blocks while more than ADB__HTTP_STREAM_QUEUE bytes wait
 * for the socket, and wakes as the worker thread drains them, so memory
 * stays bounded whatever the size of the answer. A write returns -1 once
 * the client has gone (or stalled past request_timeout_ms), or for HEAD:
 * the producer then stops. When the handler returns the last chunk is
 * sent; after adb__http_stream_fail the answer ends without it and the
 * connection closes, so that the client sees a truncated answer. */
typedef struct adb__http_stream adb__http_stream;
enum { ADB__HTTP_STREAM_QUEUE = 256 * 1024 };
int adb__http_stream_begin(adb__http_stream *s, const adb__http_resp *resp);
int adb__http_stream_write(adb__http_stream *s, const void *p, size_t n);
void adb__http_stream_fail(adb__http_stream *s);

/* An answer given later by another thread, with no thread waiting for it
 * (a durable write answered when its group commit is done). On a pool
 * thread a handler takes a handle with adb__http_later, sets what it wants
 * of resp that is not the answer itself (route, request id, headers),
 * hands the handle to whoever finishes the work and returns
 * ADB__HTTP_LATER, touching resp no more. The finisher calls
 * adb__http_later_done once, from any thread: fill(resp, arg) then runs on
 * the connection's worker thread and writes the answer (status, body), or
 * fill(NULL, arg) runs only to release arg when the answer is no longer
 * wanted: the client went away, or timeout_ms passed first, when the
 * server answered 503 {"error":{"code":"timeout","message":timeout_msg}}
 * itself. A handle taken but not handed on is dropped by returning
 * anything else. adb__http_later_begin returns NULL off a pool thread.
 * Finishers may call adb__http_later_done until adb__http_free. */
typedef struct adb__http_later adb__http_later;
typedef void (*adb__http_fill)(adb__http_resp *resp, void *arg);
adb__http_later *adb__http_later_begin(adb__http_req *req, int timeout_ms,
                                       const char *timeout_msg);
void adb__http_later_done(adb__http_later *l, adb__http_fill fill, void *arg);

/* Binds and starts serving. On failure writes the reason to err. */
int adb__http_start(const adb__http_config *cfg, adb__http_server **out,
                    char *err, size_t errlen);
/* The bound address, "host:port". */
const char *adb__http_address(const adb__http_server *s);
/* Starts a graceful shutdown: stop accepting, finish in-flight requests,
 * close idle connections. Returns at once; thread-safe (not
 * async-signal-safe). */
void adb__http_shutdown(adb__http_server *s);
/* True once a shutdown has started. */
int adb__http_draining(const adb__http_server *s);
/* Waits until every worker has finished (after adb__http_shutdown). */
void adb__http_wait(adb__http_server *s);
/* Frees a stopped server; NULL is a no-op. */
void adb__http_free(adb__http_server *s);

#endif /* ADB_HTTP_H */
