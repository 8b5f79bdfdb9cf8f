/*
 * api_memory.c — the vector memory routes: episodes (record, search),
 * user states (put, get, search) and learned patterns (put, get, search).
 */
#define _GNU_SOURCE
#include "api_internal.h"

#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------- episodes */

static int episode_from_json(rctx *x, json_t *o, const char *p,
                             adb_episode *e) {
  static const char *const keys[] = {
      "episode_id", "user_id", "session_id", "embedding", "embedding_b64",
      "action",     "reward",  "context",    NULL};
  if (!json_is_object(o))
    return adb__api_fail(x, 400, "invalid_field", p, "an episode is an object");
  float *emb;
  int dim, has_r;
  char *ctx;
  if (adb__api_check_keys(x, o, keys, p) ||
      adb__api_get_id(x, o, "episode_id", p, 0, &e->episode_id) ||
      adb__api_get_id(x, o, "user_id", p, 1, &e->user_id) ||
      adb__api_get_id(x, o, "session_id", p, 0, &e->session_id) ||
      adb__api_get_id(x, o, "action", p, 1, &e->action) ||
      adb__api_get_num(x, o, "reward", p, -1e300, 1e300, &e->reward, &has_r) ||
      adb__api_get_embedding(x, o, p, 1, &emb, &dim) ||
      adb__api_get_object_text(x, o, "context", p, &ctx))
    return -1;
  if (!has_r)
    return adb__api_fail(x, 400, "missing_field",
                         adb__api_fname(x, p, "reward"),
                         "'reward' is required");
  e->embedding = emb;
  e->embedding_dim = dim;
  e->context_json = ctx;
  return 0;
}

int adb__api_episodes(rctx *x) {
  json_t *arr;
  size_t n;
  if (adb__api_bulk(x, "episodes", &arr, &n)) return -1;
  adb_episode *es = adb__api_alloc(x, n * sizeof *es);
  adb__api_strset ids;
  if (!es || adb__api_strset_init(x, &ids, n))
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  for (size_t i = 0; i < n; i++) {
    memset(&es[i], 0, sizeof es[i]);
    const char *p = adb__api_fidx(x, "episodes", i);
    if (episode_from_json(x, json_array_get(arr, i), p, &es[i])) return -1;
    /* A repeated id would be stored once but counted twice: refused, so
     * that "inserted" is the number of episodes the batch adds. */
    if (es[i].episode_id && !adb__api_strset_add(&ids, es[i].episode_id))
      return adb__api_fail(
          x, 400, "invalid_field", adb__api_fname(x, p, "episode_id"),
          "episode_id '%s' appears twice in the batch", es[i].episode_id);
  }
  int rc = adb_episodes_record(x->db, x->param[0], es, (int)n);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_printf(x->out, "{\"inserted\":%zu", n);
  if (x->api->cfg.durability == ADB_DURABILITY_ASYNC) {
    adb__buf_puts(x->out, ",\"pending\":true");
    x->resp->status = 202;
  }
  adb__buf_putc(x->out, '}');
  return 0;
}

/* ----------------------------------------------------- vector search */

#define MAX_HITS 1000

/* {embedding|embedding_b64, k, user_id?} of the three searches. */
static int search_in(rctx *x, int with_user, float **emb, int *dim, int *k,
                     const char **user) {
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"embedding", "embedding_b64", "k",
                                     "user_id", NULL};
  static const char *const keys_nouser[] = {"embedding", "embedding_b64", "k",
                                            NULL};
  int64_t kk = 10;
  int has_k = 0;
  *user = NULL;
  if (adb__api_check_keys(x, doc, with_user ? keys : keys_nouser, NULL) ||
      adb__api_get_embedding(x, doc, NULL, 1, emb, dim) ||
      adb__api_get_int(x, doc, "k", NULL, 1, MAX_HITS, &kk, &has_k) ||
      (with_user && adb__api_get_id(x, doc, "user_id", NULL, 0, user)))
    return -1;
  *k = (int)kk;
  return 0;
}

/* Answers a search's library failure, naming the field of an EINVAL. */
static int search_fail(rctx *x, int rc) {
  const char *msg = adb_errmsg(x->db);
  if (rc == ADB_EINVAL && !adb__api_guess_field(msg))
    return adb__api_fail_adb(x, rc, strncmp(msg, "k ", 2) ? "embedding" : "k");
  return adb__api_fail_adb(x, rc, NULL);
}

enum { SEARCH_EPISODES, SEARCH_USERS, SEARCH_PATTERNS };

/* The three searches: same input, one library call each, and the fields of
 * their hits (adb_hit in agentdb.h says what each holds per kind). */
static int search(rctx *x, int kind) {
  float *emb;
  int dim, k, n = 0;
  const char *user;
  if (search_in(x, kind == SEARCH_EPISODES, &emb, &dim, &k, &user)) return -1;
  adb_hit *hits = adb__api_alloc(x, (size_t)k * sizeof *hits);
  if (!hits) return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  int rc =
      kind == SEARCH_EPISODES
          ? adb_episode_similar(x->db, x->param[0], emb, dim, k, user, hits, &n)
      : kind == SEARCH_USERS
          ? adb_user_similar(x->db, emb, dim, k, hits, &n)
          : adb_pattern_search(x->db, x->param[0], emb, dim, k, hits, &n);
  if (rc != ADB_OK) return search_fail(x, rc);
  static const char *const id_field[] = {"episode_id", "user_id", "pattern_id"};
  adb__buf *b = x->out;
  adb__buf_puts(b, "{\"hits\":[");
  for (int i = 0; i < n; i++) {
    adb__buf_puts(b, i ? ",{" : "{");
    adb__api_put_str(b, id_field[kind], hits[i].id, 1);
    adb__api_put_num(b, "score", hits[i].score);
    if (kind == SEARCH_EPISODES) {
      adb__api_put_str(b, "user_id", hits[i].user_id, 0);
      adb__api_put_str(b, "action", hits[i].action, 0);
      adb__api_put_num(b, "reward", hits[i].reward);
    } else if (kind == SEARCH_PATTERNS) {
      adb__api_put_str(b, "key", hits[i].action, 0);
      adb__api_put_num(b, "confidence", hits[i].reward);
    }
    adb__buf_putc(b, '}');
  }
  adb__buf_puts(b, "]}");
  return 0;
}

int adb__api_episodes_search(rctx *x) {
  return search(x, SEARCH_EPISODES);
}

int adb__api_users_search(rctx *x) {
  return search(x, SEARCH_USERS);
}

int adb__api_patterns_search(rctx *x) {
  return search(x, SEARCH_PATTERNS);
}

/* ------------------------------------------------------- user state */

int adb__api_user_put(rctx *x) {
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {"embedding", "embedding_b64", "context",
                                     NULL};
  float *emb;
  int dim;
  char *ctx;
  if (adb__api_check_keys(x, doc, keys, NULL) ||
      adb__api_get_embedding(x, doc, NULL, 1, &emb, &dim) ||
      adb__api_get_object_text(x, doc, "context", NULL, &ctx))
    return -1;
  int rc = adb_user_state_put(x->db, x->param[0], emb, dim, ctx);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf_putc(x->out, '{');
  adb__api_put_str(x->out, "user_id", x->param[0], 1);
  adb__api_put_int(x->out, "embedding_dim", dim);
  adb__buf_putc(x->out, '}');
  return 0;
}

int adb__api_user_get(rctx *x) {
  adb_user_state st;
  memset(&st, 0, sizeof st);
  int rc = adb_user_state_get(x->db, x->param[0], &st);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "user_id", x->param[0], 1);
  adb__api_put_floats(b, "embedding", st.embedding, st.embedding_dim);
  adb__api_put_raw(b, "context", st.context_json, "{}");
  adb__api_put_int(b, "updated_at_ms", st.updated_at_ms);
  adb__buf_putc(b, '}');
  adb_free(st.embedding);
  adb_free(st.context_json);
  return 0;
}

/* --------------------------------------------------------- patterns */

static int get_text(rctx *x, json_t *o, const char *k, int id, char *out,
                    size_t cap) {
  json_t *v = adb__api_member(o, k);
  if (!v)
    return adb__api_fail(x, 400, "missing_field", k, "'%s' is required", k);
  const char *s = json_is_string(v) ? json_string_value(v) : NULL;
  size_t n = s ? strlen(s) : 0;
  int ok = s && n == json_string_length(v) && n >= 1 && n < cap &&
           (!id || adb_id_valid(s));
  for (size_t i = 0; ok && i < n; i++)
    ok = (unsigned char)s[i] >= 0x20;
  if (!ok)
    return adb__api_fail(
        x, 400, "invalid_field", k,
        id ? "'%s' must be 1..128 characters of [A-Za-z0-9._:@-]"
           : "'%s' must be a string of 1..128 printable bytes",
        k);
  memcpy(out, s, n + 1);
  return 0;
}

int adb__api_pattern_put(rctx *x) {
  json_t *doc = adb__api_parse_body(x, 0);
  if (!doc) return -1;
  static const char *const keys[] = {
      "type",      "key",           "value", "confidence",    "support",
      "embedding", "embedding_b64", "id",    "updated_at_ms", NULL};
  adb_pattern p;
  memset(&p, 0, sizeof p);
  snprintf(p.id, sizeof p.id, "%s", x->param[1]);
  int64_t support = 0;
  json_t *id = adb__api_member(doc, "id");
  if (adb__api_check_keys(x, doc, keys, NULL)) return -1;
  if (id && (!json_is_string(id) || strcmp(json_string_value(id), p.id)))
    return adb__api_fail(x, 400, "invalid_field", "id",
                         "'id' must match the pattern in the path");
  json_t *v = json_object_get(doc, "value");
  if (!v)
    return adb__api_fail(x, 400, "missing_field", "value",
                         "'value' is required");
  if (get_text(x, doc, "type", 1, p.type, sizeof p.type) ||
      get_text(x, doc, "key", 0, p.key, sizeof p.key) ||
      adb__api_get_num(x, doc, "confidence", NULL, 0, 1, &p.confidence, NULL) ||
      adb__api_get_int(x, doc, "support", NULL, 0, INT64_MAX, &support, NULL) ||
      adb__api_get_embedding(x, doc, NULL, 0, &p.embedding, &p.embedding_dim))
    return -1;
  p.support = support;
  if (!(p.value_json = adb__api_dump(x, v)))
    return adb__api_fail(x, 500, "internal", NULL, "out of memory");
  int rc = adb_pattern_put(x->db, x->param[0], &p);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "id", p.id, 1);
  adb__api_put_str(b, "type", p.type, 0);
  adb__api_put_str(b, "key", p.key, 0);
  adb__api_put_raw(b, "value", p.value_json, "null");
  adb__api_put_num(b, "confidence", p.confidence);
  adb__api_put_int(b, "support", p.support);
  adb__api_put_int(b, "embedding_dim", p.embedding_dim);
  adb__buf_putc(b, '}');
  return 0;
}

int adb__api_pattern_get(rctx *x) {
  adb_pattern p;
  memset(&p, 0, sizeof p);
  int rc = adb_pattern_get(x->db, x->param[0], x->param[1], &p);
  if (rc != ADB_OK) return adb__api_fail_adb(x, rc, NULL);
  adb__buf *b = x->out;
  adb__buf_putc(b, '{');
  adb__api_put_str(b, "id", p.id[0] ? p.id : x->param[1], 1);
  adb__api_put_str(b, "type", p.type, 0);
  adb__api_put_str(b, "key", p.key, 0);
  adb__api_put_raw(b, "value", p.value_json, "null");
  adb__api_put_num(b, "confidence", p.confidence);
  adb__api_put_int(b, "support", p.support);
  if (p.embedding && p.embedding_dim > 0)
    adb__api_put_floats(b, "embedding", p.embedding, p.embedding_dim);
  adb__api_put_int(b, "updated_at_ms", p.updated_at_ms);
  adb__buf_putc(b, '}');
  adb_free(p.value_json);
  adb_free(p.embedding);
  return 0;
}
