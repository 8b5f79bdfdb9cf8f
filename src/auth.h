/*
 * auth.h — API keys for `agentdb serve`.
 *
 * The keys file holds one key per line, optionally followed by the agents
 * it may touch:
 *
 *     # comment
 *     s3cr3t-admin-key
 *     s3cr3t-player-key  player,player-kids
 *
 * A key without a list may touch every agent. Keys are kept only as
 * SHA-256 digests and compared in constant time.
 */
#ifndef ADB_AUTH_H
#define ADB_AUTH_H

#include <stddef.h>

typedef struct adb__auth adb__auth;

/* Loads a keys file. ADB_OK, or ADB_EIO / ADB_EINVAL / ADB_ENOMEM with the
 * reason in err (an empty file is ADB_EINVAL: it would lock everyone
 * out). */
int adb__auth_load(const char *path, adb__auth **out, char *err, size_t errlen);
/* Same, from the file's text. */
int adb__auth_parse(const char *text, adb__auth **out, char *err,
                    size_t errlen);
void adb__auth_free(adb__auth *a);
int adb__auth_count(const adb__auth *a);

/* The index (>= 0) of the key carried by an Authorization header value
 * ("Bearer <key>", hdr not NUL-terminated), or -1. The time taken does not
 * depend on which key, if any, matches. */
int adb__auth_check(const adb__auth *a, const char *hdr, size_t len);

/* 1 when key k may touch agent, else 0. */
int adb__auth_allows(const adb__auth *a, int k, const char *agent);

/* How many agents key k is scoped to: 0 for a key that may touch every
 * agent, -1 for no such key. *only is the agent when there is exactly one,
 * else NULL. */
int adb__auth_scope(const adb__auth *a, int k, const char **only);

#endif /* ADB_AUTH_H */
