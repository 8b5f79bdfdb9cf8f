/*
 * cache.c — cache backend selection by URL scheme, and policy keys.
 */
#include "cache.h"

#include "util.h"

#include <stdio.h>
#include <string.h>

extern const adb__cache_methods adb__cache_mem;
extern const adb__cache_methods adb__cache_redis;
extern const adb__cache_methods adb__cache_redis_cluster;

/* One line per backend. */
static const adb__cache_methods *const backends[] = {
    &adb__cache_mem,
    &adb__cache_redis,
    &adb__cache_redis_cluster,
};

int adb__cache_open(const char *url, const adb_config *cfg, adb__cache **out,
                    char *err, size_t errlen) {
  *out = NULL;
  for (size_t i = 0; i < sizeof backends / sizeof *backends; i++)
    if (adb__url_has_scheme(url, backends[i]->scheme))
      return backends[i]->open(url, cfg, out, err, errlen);
  snprintf(err, errlen,
           "unsupported cache URL '%s': the schemes are mem://, "
           "redis://HOST:PORT/DB and redis-cluster://HOST:PORT,HOST:PORT,...",
           url ? url : "(null)");
  return ADB_EURL;
}

void adb__cache_close(adb__cache *c) {
  if (c) c->m->close(c);
}

/* On every decision, twice: plain copies, no printf. */
void adb__policy_key(char *out, size_t cap, const char *agent, const char *user,
                     const char *state_key) {
  size_t la = strlen(agent), lu = strlen(user), ls = strlen(state_key);
  if (la + lu + ls + 6 > cap) {
    snprintf(out, cap, "p:{%s/%s}:%s", agent, user, state_key);
    return;
  }
  char *p = out;
  memcpy(p, "p:{", 3);
  p += 3;
  memcpy(p, agent, la);
  p += la;
  *p++ = '/';
  memcpy(p, user, lu);
  p += lu;
  memcpy(p, "}:", 2);
  p += 2;
  memcpy(p, state_key, ls + 1);
}
