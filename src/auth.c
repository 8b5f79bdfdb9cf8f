/*
 * auth.c — API keys file parsing and constant-time key checks (see
 * auth.h).
 *
 * A presented key is hashed with SHA-256 and the digest compared with every
 * stored digest by CRYPTO_memcmp, without stopping at a match: the time
 * depends only on the number of keys, and since only digests are compared
 * a timing difference could reveal digest bytes, never key bytes.
 */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "agentdb.h"

typedef struct auth_key {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  char **agents; /* NULL: every agent */
  int n_agents;
} auth_key;

struct adb__auth {
  auth_key *keys;
  int n, cap;
};

void adb__auth_free(adb__auth *a) {
  if (!a) return;
  for (int i = 0; i < a->n; i++) {
    for (int j = 0; j < a->keys[i].n_agents; j++)
      free(a->keys[i].agents[j]);
    free(a->keys[i].agents);
  }
  free(a->keys);
  free(a);
}

int adb__auth_count(const adb__auth *a) {
  return a ? a->n : 0;
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

/* Parses "a,b,c" into k's agent list. */
static int parse_scope(auth_key *k, const char *s, size_t n, int line,
                       char *err, size_t errlen) {
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && s[j] != ',')
      j++;
    size_t b = i, e = j;
    while (b < e && is_space(s[b]))
      b++;
    while (e > b && is_space(s[e - 1]))
      e--;
    char id[ADB_ID_MAX + 2];
    if (e - b > ADB_ID_MAX) goto bad;
    memcpy(id, s + b, e - b);
    id[e - b] = '\0';
    if (!adb_id_valid(id)) goto bad;
    char **ag = realloc(k->agents, (size_t)(k->n_agents + 1) * sizeof *ag);
    if (!ag) return ADB_ENOMEM;
    k->agents = ag;
    if (!(ag[k->n_agents] = strdup(id))) return ADB_ENOMEM;
    k->n_agents++;
    i = j + 1;
  }
  return ADB_OK;
bad:
  snprintf(err, errlen, "keys file line %d: invalid agent id in scope", line);
  return ADB_EINVAL;
}

static int add_key(adb__auth *a, const char *key, size_t kl, const char *scope,
                   size_t sl, int line, char *err, size_t errlen) {
  if (a->n == a->cap) {
    int cap = a->cap ? a->cap * 2 : 8;
    auth_key *k = realloc(a->keys, (size_t)cap * sizeof *k);
    if (!k) return ADB_ENOMEM;
    a->keys = k;
    a->cap = cap;
  }
  auth_key *k = &a->keys[a->n++];
  memset(k, 0, sizeof *k);
  SHA256((const unsigned char *)key, kl, k->digest);
  return sl ? parse_scope(k, scope, sl, line, err, errlen) : ADB_OK;
}

/* One line: key, then optional whitespace and a comma-separated scope. */
static int parse_line(adb__auth *a, const char *s, size_t n, int line,
                      char *err, size_t errlen) {
  size_t i = 0;
  while (i < n && is_space(s[i]))
    i++;
  if (i == n || s[i] == '#') return ADB_OK;
  size_t k0 = i;
  while (i < n && !is_space(s[i]))
    i++;
  size_t kl = i - k0;
  while (i < n && is_space(s[i]))
    i++;
  size_t e = n;
  while (e > i && is_space(s[e - 1]))
    e--;
  return add_key(a, s + k0, kl, s + i, e - i, line, err, errlen);
}

int adb__auth_parse(const char *text, adb__auth **out, char *err,
                    size_t errlen) {
  *out = NULL;
  adb__auth *a = calloc(1, sizeof *a);
  if (!a) return ADB_ENOMEM;
  int line = 0, rc = ADB_OK;
  const char *p = text;
  while (*p && rc == ADB_OK) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    rc = parse_line(a, p, n, ++line, err, errlen);
    p += n + (nl ? 1 : 0);
  }
  if (rc == ADB_OK && a->n == 0) {
    snprintf(err, errlen, "the keys file holds no key");
    rc = ADB_EINVAL;
  }
  if (rc != ADB_OK) {
    if (rc == ADB_ENOMEM) snprintf(err, errlen, "out of memory");
    adb__auth_free(a);
    return rc;
  }
  *out = a;
  return ADB_OK;
}

int adb__auth_load(const char *path, adb__auth **out, char *err,
                   size_t errlen) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open keys file %s", path);
    return ADB_EIO;
  }
  char *text = NULL;
  size_t len = 0, cap = 0;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    if (len + n + 1 > cap) {
      cap = (len + n + 1) * 2;
      char *t = realloc(text, cap);
      if (!t) {
        free(text);
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return ADB_ENOMEM;
      }
      text = t;
    }
    memcpy(text + len, buf, n);
    len += n;
  }
  fclose(f);
  if (!text) text = calloc(1, 1);
  if (!text) return ADB_ENOMEM;
  text[len] = '\0';
  int rc = adb__auth_parse(text, out, err, errlen);
  OPENSSL_cleanse(text, len);
  free(text);
  return rc;
}

int adb__auth_check(const adb__auth *a, const char *hdr, size_t len) {
  if (!hdr || len < 7 || strncasecmp(hdr, "Bearer ", 7) != 0) return -1;
  hdr += 7;
  len -= 7;
  while (len && *hdr == ' ')
    hdr++, len--;
  if (len == 0) return -1;
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)hdr, len, d);
  int found = -1;
  for (int i = 0; i < a->n; i++) {
    int eq = CRYPTO_memcmp(d, a->keys[i].digest, sizeof d) == 0;
    found = eq ? i : found;
  }
  return found;
}

int adb__auth_allows(const adb__auth *a, int k, const char *agent) {
  if (k < 0 || k >= a->n) return 0;
  const auth_key *key = &a->keys[k];
  if (!key->agents) return 1;
  for (int i = 0; i < key->n_agents; i++)
    if (strcmp(key->agents[i], agent) == 0) return 1;
  return 0;
}

int adb__auth_scope(const adb__auth *a, int k, const char **only) {
  *only = NULL;
  if (k < 0 || k >= a->n) return -1;
  const auth_key *key = &a->keys[k];
  if (!key->agents) return 0;
  if (key->n_agents == 1) *only = key->agents[0];
  return key->n_agents;
}
