/*
 * test_slow_reader.c — the server's write-side time limit over real
 * sockets (`agentdb serve --request-timeout-ms 300`), on a streamed
 * answer larger than the socket buffers (the decision log of an agent,
 * GET /v1/agents/{agent}/log, several MB):
 *   - a client that reads steadily but slowly, taking several times the
 *     limit in all, gets the whole answer (the limit counts from the last
 *     progress, not from the first blocked send);
 *   - a client that stops reading is disconnected after about the limit
 *     (bounded wait), and the server goes on answering others.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agentdb.h"
#include "util_http.h"
#include "util_server.h"

#define N_ITEMS 20
#define TIMEOUT_MS 300
/* The slow reader: CHUNK bytes, then a PAUSE_MS pause (about 0.5 MB/s,
 * so megabytes of socket queue drain for seconds with the kernel saying
 * nothing: a limit counted from the first blocked send, or from the last
 * successful send, cuts it off). */
#define CHUNK (32 << 10)
#define PAUSE_MS 60

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n decisions of agent A over 20 candidates, stored. */
static void fill(const char *url, int n) {
  adb_config cfg = {.store_url = url, .durability = ADB_DURABILITY_ASYNC};
  adb *db = NULL;
  char err[256];
  assert_int_equal(adb_open(&cfg, &db, err, sizeof err), ADB_OK);
  adb_agent_config a;
  adb_agent_config_init(&a);
  snprintf(a.id, sizeof a.id, "A");
  assert_int_equal(adb_agent_put(db, &a), ADB_OK);
  char ids[N_ITEMS][32];
  const char *cands[N_ITEMS];
  for (int i = 0; i < N_ITEMS; i++) {
    snprintf(ids[i], sizeof ids[i], "a-rather-long-item-id-%02d", i);
    cands[i] = ids[i];
  }
  adb_kv ctx[] = {{"daypart", "evening"}, {"device", "television"}};
  for (int t = 0; t < n; t++) {
    char user[32];
    snprintf(user, sizeof user, "user-%d", t % 97);
    adb_decide_req rq = {.agent_id = "A",
                         .user_id = user,
                         .candidates = cands,
                         .n_candidates = N_ITEMS,
                         .context = ctx,
                         .n_context = 2};
    adb_decision d = {0};
    int rc;
    while ((rc = adb_decide(db, &rq, &d)) == ADB_EFULL)
      adb_flush(db);
    assert_int_equal(rc, ADB_OK);
  }
  assert_int_equal(adb_flush(db), ADB_OK);
  adb_close(db);
}

static int connect_small(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int small = 8192;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const char *req = "GET /v1/agents/A/log?format=jsonl HTTP/1.1\r\n"
                    "Host: x\r\nConnection: close\r\n\r\n";
  assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
  return fd;
}

/* Reads until EOF: the bytes, and whether the answer ended with the last
 * chunk. Pauses pause_ms after every `every` bytes. */
static size_t read_all(int fd, size_t every, int pause_ms, int *complete) {
  char buf[8192], tail[5] = {0};
  size_t total = 0, since = 0;
  for (;;) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 60000), 1);
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    total += (size_t)n;
    since += (size_t)n;
    size_t k = (size_t)n < 5 ? (size_t)n : 5;
    memmove(tail, tail + k, 5 - k);
    memcpy(tail + 5 - k, buf + n - k, k);
    if (every && since >= every) {
      usleep((useconds_t)pause_ms * 1000);
      since = 0;
    }
  }
  *complete = memcmp(tail, "0\r\n\r\n", 5) == 0;
  return total;
}

static void slow_and_stalled_readers(void **state) {
  (void)state;
  tsrv srv = {0};
  char dir[] = "/tmp/adb_slowread_XXXXXX", url[300];
  assert_non_null(mkdtemp(dir));
  snprintf(url, sizeof url, "sqlite://%s/s.db", dir);
  fill(url, 8000);
  char tmo[16];
  snprintf(tmo, sizeof tmo, "%d", TIMEOUT_MS);
  const char *extra[] = {"--store", url, "--request-timeout-ms", tmo, NULL};
  assert_int_equal(tsrv_start(&srv, extra), 0);

  /* The size at full speed, for scale. */
  int complete;
  int fd = connect_small(srv.port);
  size_t full = read_all(fd, 0, 0, &complete);
  close(fd);
  assert_true(complete);
  printf("    the log: %zu bytes\n", full);
  assert_true(full > 4u << 20); /* beyond the socket buffers */

  /* Steady but slow: its pauses alone outlast many limits. */
  double t0 = now_s();
  fd = connect_small(srv.port);
  size_t got = read_all(fd, CHUNK, PAUSE_MS, &complete);
  close(fd);
  printf("    slow reader: %zu bytes in %.1f s (limit %.1f s), %s\n", got,
         now_s() - t0, TIMEOUT_MS / 1e3, complete ? "complete" : "CUT OFF");
  assert_true(complete);
  assert_int_equal(got, full);

  /* Stalled: reads the head, then nothing; the server lets go. */
  fd = connect_small(srv.port);
  char head[17];
  assert_int_equal(recv(fd, head, sizeof head, MSG_WAITALL), 17);
  usleep(4 * TIMEOUT_MS * 1000 + 500000); /* beyond the limit + sweep */
  got = read_all(fd, 0, 0, &complete);
  close(fd);
  printf("    stalled reader: cut off after %zu more bytes\n", got);
  assert_false(complete);
  assert_true(got < full);

  /* The server answers as before. */
  util_http_resp r;
  assert_int_equal(
      util_http_once(srv.port, "GET", "/healthz", NULL, NULL, 10000, &r), 0);
  assert_int_equal(r.status, 200);
  util_http_resp_free(&r);
  tsrv_cleanup(&srv);
  char rm[400];
  snprintf(rm, sizeof rm, "rm -rf %s", dir);
  assert_int_equal(system(rm), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(slow_and_stalled_readers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
