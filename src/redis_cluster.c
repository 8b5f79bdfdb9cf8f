/*
 * redis_cluster.c — key slots, slot maps, redirections and cache URLs for
 * the Redis backends (see redis_cluster.h). Pure functions, no I/O.
 *
 * The slot rules are those of the Redis Cluster specification: a key's
 * slot is CRC16(key) mod 16384, where only the hash tag is hashed when the
 * key has one, so that "p:{agent/user}:s1" and "p:{agent/user}:s2" land on
 * one node and can be read in one pipeline.
 */
#include "redis_cluster.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint16_t adb__crc16(const void *buf, size_t len) {
  const unsigned char *p = buf;
  uint16_t crc = 0;
  for (size_t i = 0; i < len; i++) {
    crc ^= (uint16_t)(p[i] << 8);
    for (int b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                           : (uint16_t)(crc << 1);
  }
  return crc;
}

int adb__redis_key_slot(const char *key, size_t len) {
  const char *open = memchr(key, '{', len);
  if (open) {
    size_t rest = len - (size_t)(open - key) - 1;
    const char *close = memchr(open + 1, '}', rest);
    if (close && close > open + 1) {
      key = open + 1;
      len = (size_t)(close - key);
    }
  }
  return adb__crc16(key, len) & (ADB__REDIS_SLOTS - 1);
}

int adb__redis_addr_parse(const char *s, size_t len, adb__redis_addr *out) {
  const char *colon = NULL;
  for (size_t i = 0; i < len; i++)
    if (s[i] == ':') colon = s + i;
  if (!colon) return ADB_EINVAL;
  const char *h = s;
  size_t hlen = (size_t)(colon - s);
  if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
    h++;
    hlen -= 2;
  }
  size_t plen = len - hlen - (size_t)(h != s ? 2 : 0) - 1;
  if (hlen == 0 || hlen > ADB__REDIS_HOST_MAX || plen == 0 || plen > 5)
    return ADB_EINVAL;
  int port = 0;
  for (const char *p = colon + 1; p < s + len; p++) {
    if (!isdigit((unsigned char)*p)) return ADB_EINVAL;
    port = port * 10 + (*p - '0');
  }
  if (port < 1 || port > 65535) return ADB_EINVAL;
  memcpy(out->host, h, hlen);
  out->host[hlen] = '\0';
  out->port = port;
  return ADB_OK;
}

/* Index of addr in m, added if new; -1 when the table is full. */
static int addr_index(adb__slot_map *m, const adb__redis_addr *a) {
  for (int i = 0; i < m->n_addrs; i++)
    if (m->addrs[i].port == a->port && strcmp(m->addrs[i].host, a->host) == 0)
      return i;
  if (m->n_addrs == ADB__REDIS_MAX_NODES) return -1;
  m->addrs[m->n_addrs] = *a;
  return m->n_addrs++;
}

/* The master [host, port, ...] of one CLUSTER SLOTS range into *a. */
static int master_addr(const redisReply *n, const char *default_host,
                       adb__redis_addr *a) {
  if (n->type != REDIS_REPLY_ARRAY || n->elements < 2) return ADB_ECORRUPT;
  const redisReply *h = n->element[0], *p = n->element[1];
  if (h->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_INTEGER)
    return ADB_ECORRUPT;
  const char *host = h->str;
  if (h->len == 0 || strcmp(host, "?") == 0) host = default_host;
  if (!host || strlen(host) > ADB__REDIS_HOST_MAX) return ADB_ECORRUPT;
  if (p->integer < 1 || p->integer > 65535) return ADB_ECORRUPT;
  snprintf(a->host, sizeof a->host, "%s", host);
  a->port = (int)p->integer;
  return ADB_OK;
}

int adb__slot_map_parse(const redisReply *r, const char *default_host,
                        adb__slot_map *m) {
  m->n_addrs = 0;
  for (int s = 0; s < ADB__REDIS_SLOTS; s++)
    m->slot[s] = -1;
  if (!r || r->type != REDIS_REPLY_ARRAY) return ADB_ECORRUPT;
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) return ADB_ECORRUPT;
    const redisReply *lo = e->element[0], *hi = e->element[1];
    if (lo->type != REDIS_REPLY_INTEGER || hi->type != REDIS_REPLY_INTEGER ||
        lo->integer < 0 || hi->integer < lo->integer ||
        hi->integer >= ADB__REDIS_SLOTS)
      return ADB_ECORRUPT;
    adb__redis_addr a;
    if (master_addr(e->element[2], default_host, &a) != ADB_OK)
      return ADB_ECORRUPT;
    int idx = addr_index(m, &a);
    if (idx < 0) return ADB_ECORRUPT;
    for (long long s = lo->integer; s <= hi->integer; s++)
      m->slot[s] = (int16_t)idx;
  }
  return ADB_OK;
}

int adb__redis_redirect_parse(const char *msg, size_t len, int *is_ask,
                              int *slot, adb__redis_addr *to) {
  size_t skip;
  if (len > 6 && memcmp(msg, "MOVED ", 6) == 0) {
    *is_ask = 0;
    skip = 6;
  } else if (len > 4 && memcmp(msg, "ASK ", 4) == 0) {
    *is_ask = 1;
    skip = 4;
  } else {
    return ADB_EINVAL;
  }
  const char *p = msg + skip, *end = msg + len;
  int s = 0, digits = 0;
  while (p < end && isdigit((unsigned char)*p) && digits < 6) {
    s = s * 10 + (*p++ - '0');
    digits++;
  }
  if (digits == 0 || s >= ADB__REDIS_SLOTS || p >= end || *p != ' ')
    return ADB_EINVAL;
  p++;
  if (adb__redis_addr_parse(p, (size_t)(end - p), to) != ADB_OK)
    return ADB_EINVAL;
  *slot = s;
  return ADB_OK;
}

/* ------------------------------------------------------------- URLs */

static int parse_int_opt(const char *v, size_t n, int lo, int hi, int *out) {
  char buf[16];
  if (n == 0 || n >= sizeof buf) return ADB_EINVAL;
  memcpy(buf, v, n);
  buf[n] = '\0';
  char *end;
  long x = strtol(buf, &end, 10);
  if (*end || x < lo || x > hi) return ADB_EINVAL;
  *out = (int)x;
  return ADB_OK;
}

/* One "name=value" of the query string. */
static int parse_option(const char *s, size_t n, adb__redis_url *u) {
  const char *eq = memchr(s, '=', n);
  if (!eq) return ADB_EINVAL;
  size_t kl = (size_t)(eq - s), vl = n - kl - 1;
  static const struct {
    const char *name;
    size_t off;
    int lo, hi;
  } opts[] = {
      {"connect_timeout_ms", offsetof(adb__redis_url, connect_timeout_ms), 1,
       600000},
      {"timeout_ms", offsetof(adb__redis_url, timeout_ms), 1, 600000},
      {"pool", offsetof(adb__redis_url, pool), 1, 1024},
      {"retry_ms", offsetof(adb__redis_url, retry_ms), 0, 600000},
  };
  for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
    if (strlen(opts[i].name) == kl && memcmp(opts[i].name, s, kl) == 0)
      return parse_int_opt(eq + 1, vl, opts[i].lo, opts[i].hi,
                           (int *)((char *)u + opts[i].off));
  return ADB_EINVAL;
}

static int parse_query(const char *q, adb__redis_url *u, char *err,
                       size_t errlen) {
  while (*q) {
    size_t n = strcspn(q, "&");
    if (n && parse_option(q, n, u) != ADB_OK) {
      snprintf(err, errlen, "bad Redis URL option '%.*s'", (int)n, q);
      return ADB_EURL;
    }
    q += n + (q[n] == '&');
  }
  return ADB_OK;
}

/* "[user]:password@" before the hosts, if present. */
static int parse_userinfo(const char **p, const char *end, adb__redis_url *u) {
  const char *at = memchr(*p, '@', (size_t)(end - *p));
  if (!at) return ADB_OK;
  const char *colon = memchr(*p, ':', (size_t)(at - *p));
  if (!colon) return ADB_EINVAL; /* "user@" without a password */
  size_t ul = (size_t)(colon - *p), pl = (size_t)(at - colon - 1);
  if (ul >= sizeof u->user || pl >= sizeof u->password) return ADB_EINVAL;
  memcpy(u->user, *p, ul);
  u->user[ul] = '\0';
  memcpy(u->password, colon + 1, pl);
  u->password[pl] = '\0';
  *p = at + 1;
  return ADB_OK;
}

static int parse_hosts(const char *p, const char *end, adb__redis_url *u) {
  u->n_seeds = 0;
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *e = comma ? comma : end;
    if (u->n_seeds == (int)(sizeof u->seeds / sizeof *u->seeds))
      return ADB_EINVAL;
    adb__redis_addr *a = &u->seeds[u->n_seeds];
    if (adb__redis_addr_parse(p, (size_t)(e - p), a) != ADB_OK) {
      /* A host without a port: 6379. */
      size_t n = (size_t)(e - p);
      if (n == 0 || n > ADB__REDIS_HOST_MAX || memchr(p, ':', n))
        return ADB_EINVAL;
      memcpy(a->host, p, n);
      a->host[n] = '\0';
      a->port = 6379;
    }
    u->n_seeds++;
    p = comma ? comma + 1 : end;
  }
  return u->n_seeds > 0 ? ADB_OK : ADB_EINVAL;
}

int adb__redis_url_parse(const char *url, adb__redis_url *u, char *err,
                         size_t errlen) {
  const char *p;
  if (strncmp(url, "redis://", 8) == 0) {
    u->cluster = 0;
    p = url + 8;
  } else if (strncmp(url, "redis-cluster://", 16) == 0) {
    u->cluster = 1;
    p = url + 16;
  } else {
    snprintf(err, errlen, "not a Redis URL: '%s'", url);
    return ADB_EURL;
  }
  const char *q = strchr(p, '?');
  const char *end = q ? q : p + strlen(p);
  const char *slash = memchr(p, '/', (size_t)(end - p));
  if (slash) {
    if (u->cluster && slash + 1 < end) {
      snprintf(err, errlen, "Redis Cluster has no databases: '%s'", url);
      return ADB_EURL;
    }
    if (slash + 1 < end && parse_int_opt(slash + 1, (size_t)(end - slash - 1),
                                         0, 1 << 20, &u->db) != ADB_OK) {
      snprintf(err, errlen, "bad database number in '%s'", url);
      return ADB_EURL;
    }
    end = slash;
  }
  if (parse_userinfo(&p, end, u) != ADB_OK ||
      parse_hosts(p, end, u) != ADB_OK || (!u->cluster && u->n_seeds != 1)) {
    snprintf(err, errlen, "bad host list in Redis URL '%s'", url);
    return ADB_EURL;
  }
  return q ? parse_query(q + 1, u, err, errlen) : ADB_OK;
}
