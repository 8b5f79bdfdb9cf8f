/*
 * logfmt.c — writers and the DSJSON reader of the decision log.
 *
 * DSJSON is the format of Vowpal Wabbit's --dsjson reader (the Decision
 * Service's and Personalizer's log), one JSON object per line, read for
 * --cb_explore_adf as: "c" the shared example (its objects namespaces),
 * "c"."_multi" one action example per candidate, the label attached to the
 * action example at "_labelIndex" (0-based; "_label_Action" is the same,
 * 1-based) with cost "_label_cost" and probability "_label_probability",
 * "a" the action indices (1-based, the chosen first) with "p" aligned.
 * VW ignores top-level keys it does not know, so AgentDB's own fields (the
 * state key, model, outcome, the features blob, ...) ride in "_adb" and
 * make the round trip exact. Mapping, field by field: docs/evaluation.md.
 *
 * AgentDB logs the propensity of the chosen action only: p[0] is exact,
 * the other candidates share 1 - p[0] equally (VW learns from the label's
 * probability alone).
 *
 * Speed (docs/performance.md, bench_export): no printf on the row path; a
 * writer remembers the texts of numbers (by their bits) and of catalogue
 * embeddings (by address, checked against the values), which repeat from
 * row to row, and formats a timestamp's seconds once per second. A cached
 * text is always the one the formatter prints for those very values.
 */
#include "logfmt.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "json.h"
#include "linear.h"
#include "log_scan.h"

#define FLUSH_AT 65536
#define NUM_SETS 256  /* numbers' texts remembered: 2-way, a power of two */
#define EMB_CACHE 128 /* catalogue embeddings' texts remembered */
#define EMB_DIM 64    /* ... of at most this dimension */

/* The text of a number (adb__json_num), remembered by its bits:
 * propensities, rewards and costs repeat from row to row. */
typedef struct num_text_slot {
  uint64_t bits;
  uint8_t len, set;
  char s[30];
} num_text_slot;

/* The text of a candidate's catalogue embedding (the same in every row
 * that offers the candidate), found by the vector's address and checked
 * against its values: a hit is always the text of these very values. */
typedef struct emb_text_slot {
  int dim;
  size_t len;
  float v[EMB_DIM];
  char s[EMB_DIM * 16 + 2];
} emb_text_slot;

struct adb__logw {
  int fmt, header_done;
  adb__logw_sink sink;
  void *ctx;
  int64_t rows;
  adb__buf b;
  int at[ADB_MAX_CANDIDATES], order[ADB_MAX_CANDIDATES];
  char ids[ADB_MAX_CANDIDATES * (ADB_ID_MAX + 1)];
  num_text_slot nums[NUM_SETS][2];
  unsigned char num_victim[NUM_SETS];
  emb_text_slot *embs; /* EMB_CACHE slots, or NULL (no memory) */
  int64_t iso_s;       /* the second iso holds (INT64_MIN: none) */
  char iso[32];        /* "YYYY-MM-DDTHH:MM:SS" of iso_s */
};

int adb__logfmt_parse(const char *name) {
  if (!name || !strcmp(name, "dsjson")) return ADB__LOGFMT_DSJSON;
  if (!strcmp(name, "jsonl")) return ADB__LOGFMT_JSONL;
  if (!strcmp(name, "csv")) return ADB__LOGFMT_CSV;
  return -1;
}

const char *adb__logfmt_mime(int fmt) {
  return fmt == ADB__LOGFMT_CSV ? "text/csv; charset=utf-8"
                                : "application/x-ndjson";
}

adb__logw *adb__logw_new(int fmt, adb__logw_sink sink, void *ctx) {
  adb__logw *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->fmt = fmt;
  w->sink = sink;
  w->ctx = ctx;
  w->iso_s = INT64_MIN;
  w->embs = calloc(EMB_CACHE, sizeof *w->embs);
  return w;
}

void adb__logw_free(adb__logw *w) {
  if (!w) return;
  adb__buf_free(&w->b);
  free(w->embs);
  free(w);
}

int64_t adb__logw_rows(const adb__logw *w) {
  return w->rows;
}

int adb__logw_file_sink(void *ctx, const char *p, size_t n) {
  return fwrite(p, 1, n, ctx) == n ? 0 : ADB_EIO;
}

static int flush(adb__logw *w) {
  if (w->b.oom) return ADB_ENOMEM;
  int rc = w->b.len ? w->sink(w->ctx, w->b.p, w->b.len) : 0;
  w->b.len = 0;
  return rc;
}

void adb__iso_ms(int64_t ms, char out[32]) {
  int64_t s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  time_t t = (time_t)s;
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms - s * 1000) % 1000u);
}

static const char *outcome_name(int o) {
  return o == ADB_LOG_REWARD    ? "reward"
         : o == ADB_LOG_DEFAULT ? "default"
                                : "none";
}

static void floats(adb__buf *b, const float *v, int n) {
  adb__json_floats9(b, v, n);
}

/* A number's text (adb__json_num), from w's cache when it was seen
 * before; its length (out has room for 40 bytes). */
static size_t num_text(adb__logw *w, double x, char *out) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  size_t set = (size_t)((bits * 0x9E3779B97F4A7C15ull) >> 56) % NUM_SETS;
  for (int k = 0; k < 2; k++) {
    num_text_slot *e = &w->nums[set][k];
    if (e->set && e->bits == bits) {
      memcpy(out, e->s, e->len);
      w->num_victim[set] = (unsigned char)!k;
      return e->len;
    }
  }
  adb__buf t = {.p = out, .cap = 40};
  adb__json_num(&t, x);
  num_text_slot *e = &w->nums[set][w->num_victim[set]];
  w->num_victim[set] = (unsigned char)!w->num_victim[set];
  if (t.len < sizeof e->s) {
    e->bits = bits;
    e->len = (uint8_t)t.len;
    e->set = 1;
    memcpy(e->s, out, t.len);
  }
  return t.len;
}

static void num(adb__logw *w, double x) {
  char t[40];
  adb__buf_append(&w->b, t, num_text(w, x, t));
}

/* "Timestamp" text of ms (adb__iso_ms), its seconds formatted once per
 * second; the length. */
static size_t iso_text(adb__logw *w, int64_t ms, char out[32]) {
  int64_t s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  if (s != w->iso_s) {
    adb__iso_ms(s * 1000, w->iso);
    w->iso[19] = 0; /* "YYYY-MM-DDTHH:MM:SS" */
    w->iso_s = strlen(w->iso) == 19 ? s : INT64_MIN;
  }
  if (w->iso_s != s) {
    adb__iso_ms(ms, out);
    return strlen(out);
  }
  unsigned m = (unsigned)(ms - s * 1000) % 1000u;
  memcpy(out, w->iso, 19);
  out[19] = '.';
  out[20] = (char)('0' + m / 100);
  out[21] = (char)('0' + m / 10 % 10);
  out[22] = (char)('0' + m % 10);
  out[23] = 'Z';
  out[24] = 0;
  return 24;
}

/* floats(v, dim) of a catalogue embedding, from w's cache when seen. */
static void cand_floats(adb__logw *w, const float *v, int dim) {
  adb__buf *b = &w->b;
  if (!w->embs || dim <= 0 || dim > EMB_DIM) {
    floats(b, v, dim);
    return;
  }
  uint64_t h = (uint64_t)(uintptr_t)v * 0x9E3779B97F4A7C15ull;
  emb_text_slot *e = &w->embs[(h >> 56) % EMB_CACHE];
  size_t sz = (size_t)dim * sizeof *v;
  if (e->dim == dim && !memcmp(e->v, v, sz)) {
    adb__buf_append(b, e->s, e->len);
    return;
  }
  size_t at = b->len;
  floats(b, v, dim);
  if (b->oom || b->len - at > sizeof e->s) return;
  e->dim = dim;
  memcpy(e->v, v, sz);
  e->len = b->len - at;
  memcpy(e->s, b->p + at, e->len);
}

static void key(adb__buf *b, const char *k) {
  adb__buf_puts(b, k);
}

/* The candidates' ids of row into w->ids; their count (0 if unreadable). */
static int cands(adb__logw *w, const adb__log_row *r) {
  const char *c = r->d->candidates_json;
  int n = c ? adb__cand_ids(c, w->ids, w->at) : 0;
  return n < 0 ? 0 : n;
}

static int cand_index(const adb__logw *w, int n, const char *id) {
  for (int i = 0; i < n; i++)
    if (!strcmp(w->ids + w->at[i], id)) return i;
  return -1;
}

/* w->order: the chosen index, then the ranking answered (when stored),
 * then the other candidates in request order. */
static void rank_order(adb__logw *w, const adb__log_row *r, int n, int chosen) {
  unsigned char used[ADB_MAX_CANDIDATES] = {0};
  int k = 0;
  w->order[k++] = chosen;
  used[chosen] = 1;
  json_t *rk = r->d->ranking_json
                   ? json_loads(r->d->ranking_json, JSON_DECODE_ANY, NULL)
                   : NULL;
  size_t i;
  json_t *e;
  json_array_foreach(rk, i, e) {
    int j = cand_index(w, n, json_string_value(json_array_get(e, 0)) ?: "");
    if (j >= 0 && !used[j]) {
      used[j] = 1;
      w->order[k++] = j;
    }
  }
  json_decref(rk);
  for (int j = 0; j < n; j++)
    if (!used[j]) w->order[k++] = j;
}

static void adb_fields(adb__logw *w, const adb__log_row *r) {
  adb__buf *b = &w->b;
  const adb__decision_rec *d = r->d;
  key(b, ",\"_adb\":{\"user\":");
  adb__json_str(b, d->user);
  key(b, ",\"state_key\":");
  adb__json_str(b, d->state_key);
  key(b, ",\"model\":");
  adb__json_str(b, d->model);
  key(b, ",\"ts_ms\":");
  adb__json_int(b, d->ts_ms);
  key(b, ",\"outcome\":");
  adb__json_str(b, outcome_name(r->outcome));
  key(b, ",\"n_rewards\":");
  adb__json_int(b, r->n_rewards);
  key(b, ",\"reward\":");
  num(w, r->reward);
  key(b, ",\"reward_ts_ms\":");
  adb__json_int(b, r->reward_ts_ms);
  if (d->n_features > 0) {
    key(b, ",\"features\":\"");
    adb__b64_encode(b, d->features, (size_t)d->n_features);
    adb__buf_putc(b, '"');
  }
  if (d->ranking_json) {
    key(b, ",\"ranking\":");
    adb__buf_puts(b, d->ranking_json);
  }
  adb__buf_putc(b, '}');
}

static void ds_shared(adb__buf *b, const adb__log_row *r) {
  key(b, ",\"c\":{\"user\":{\"id\":");
  adb__json_str(b, r->d->user);
  adb__buf_putc(b, '}');
  if (r->user_emb && r->user_dim > 0) {
    key(b, ",\"user_embedding\":");
    floats(b, r->user_emb, r->user_dim);
  }
  key(b, ",\"context\":");
  adb__buf_puts(b, r->d->context_json ? r->d->context_json : "{}");
}

static void ds_multi(adb__logw *w, const adb__log_row *r, int n) {
  adb__buf *b = &w->b;
  key(b, ",\"_multi\":[");
  for (int i = 0; i < n; i++) {
    key(b, i ? ",{\"action\":{\"id\":" : "{\"action\":{\"id\":");
    adb__json_str(b, w->ids + w->at[i]);
    adb__buf_putc(b, '}');
    const float *e = i < r->n_cand && r->cand_emb ? r->cand_emb[i] : NULL;
    if (e && r->cand_dim > 0) {
      key(b, ",\"embedding\":");
      cand_floats(w, e, r->cand_dim);
    }
    adb__buf_putc(b, '}');
  }
  key(b, "]}");
}

static int dsjson_row(adb__logw *w, const adb__log_row *r) {
  adb__buf *b = &w->b;
  const adb__decision_rec *d = r->d;
  int n = cands(w, r);
  int k = cand_index(w, n, d->action);
  if (k < 0) return ADB_ECORRUPT; /* chosen action not among candidates */
  rank_order(w, r, n, k);
  char prop[40], rest[40];
  size_t pl = num_text(w, d->propensity, prop);
  size_t rl = n > 1 ? num_text(w, (1 - d->propensity) / (n - 1), rest) : 0;
  key(b, "{\"_label_cost\":");
  num(w, r->outcome == ADB_LOG_NONE ? 0.0 : -r->reward);
  key(b, ",\"_label_probability\":");
  adb__buf_append(b, prop, pl);
  key(b, ",\"_label_Action\":");
  adb__json_int(b, k + 1);
  key(b, ",\"_labelIndex\":");
  adb__json_int(b, k);
  if (r->outcome == ADB_LOG_NONE) key(b, ",\"_skipLearn\":true");
  char ts[32];
  size_t tl = iso_text(w, d->ts_ms, ts);
  key(b, ",\"Timestamp\":\"");
  adb__buf_append(b, ts, tl);
  key(b, "\",\"Version\":\"1\",\"EventId\":");
  adb__json_str(b, d->event_id);
  key(b, ",\"a\":[");
  for (int i = 0; i < n; i++) {
    if (i) adb__buf_putc(b, ',');
    adb__json_int(b, w->order[i] + 1);
  }
  key(b, "]");
  ds_shared(b, r);
  ds_multi(w, r, n);
  key(b, ",\"p\":[");
  adb__buf_append(b, prop, pl);
  for (int i = 1; i < n; i++) {
    adb__buf_putc(b, ',');
    adb__buf_append(b, rest, rl);
  }
  adb__buf_putc(b, ']');
  adb_fields(w, r);
  key(b, "}\n");
  return ADB_OK;
}

static int jsonl_row(adb__logw *w, const adb__log_row *r) {
  adb__buf *b = &w->b;
  const adb__decision_rec *d = r->d;
  char ts[32];
  size_t tl = iso_text(w, d->ts_ms, ts);
  key(b, "{\"event_id\":");
  adb__json_str(b, d->event_id);
  key(b, ",\"timestamp\":\"");
  adb__buf_append(b, ts, tl);
  key(b, "\",\"ts_ms\":");
  adb__json_int(b, d->ts_ms);
  key(b, ",\"user\":");
  adb__json_str(b, d->user);
  key(b, ",\"state_key\":");
  adb__json_str(b, d->state_key);
  key(b, ",\"action\":");
  adb__json_str(b, d->action);
  key(b, ",\"propensity\":");
  num(w, d->propensity);
  key(b, ",\"model\":");
  adb__json_str(b, d->model);
  key(b, ",\"context\":");
  adb__buf_puts(b, d->context_json ? d->context_json : "{}");
  key(b, ",\"candidates\":");
  adb__buf_puts(b, d->candidates_json ? d->candidates_json : "[]");
  key(b, ",\"outcome\":");
  adb__json_str(b, outcome_name(r->outcome));
  key(b, ",\"n_rewards\":");
  adb__json_int(b, r->n_rewards);
  key(b, ",\"reward\":");
  num(w, r->reward);
  key(b, ",\"reward_ts_ms\":");
  adb__json_int(b, r->reward_ts_ms);
  if (d->n_features > 0) {
    key(b, ",\"features\":\"");
    adb__b64_encode(b, d->features, (size_t)d->n_features);
    adb__buf_putc(b, '"');
  }
  if (r->user_emb && r->user_dim > 0) {
    key(b, ",\"user_embedding\":");
    floats(b, r->user_emb, r->user_dim);
  }
  if (r->cand_emb && r->n_cand > 0) {
    key(b, ",\"candidate_embeddings\":[");
    for (int i = 0; i < r->n_cand; i++) {
      if (i) adb__buf_putc(b, ',');
      if (r->cand_emb[i])
        cand_floats(w, r->cand_emb[i], r->cand_dim);
      else
        key(b, "null");
    }
    adb__buf_putc(b, ']');
  }
  key(b, "}\n");
  return ADB_OK;
}

/* A CSV field (RFC 4180): quoted, quotes doubled. */
static void csv_str(adb__buf *b, const char *s) {
  adb__buf_putc(b, '"');
  for (const char *q; (q = strchr(s, '"')); s = q + 1) {
    adb__buf_append(b, s, (size_t)(q - s) + 1);
    adb__buf_putc(b, '"');
  }
  adb__buf_puts(b, s);
  adb__buf_putc(b, '"');
}

static int csv_row(adb__logw *w, const adb__log_row *r) {
  adb__buf *b = &w->b;
  if (!w->header_done) {
    key(b, "event_id,timestamp,ts_ms,user,state_key,action,propensity,model,"
           "outcome,n_rewards,reward,reward_ts_ms,context,candidates\r\n");
    w->header_done = 1;
  }
  if (!r) return ADB_OK;
  const adb__decision_rec *d = r->d;
  char ts[32];
  size_t tl = iso_text(w, d->ts_ms, ts);
  csv_str(b, d->event_id);
  adb__buf_putc(b, ',');
  adb__buf_append(b, ts, tl);
  adb__buf_putc(b, ',');
  adb__json_int(b, d->ts_ms);
  adb__buf_putc(b, ',');
  csv_str(b, d->user);
  adb__buf_putc(b, ',');
  csv_str(b, d->state_key);
  adb__buf_putc(b, ',');
  csv_str(b, d->action);
  adb__buf_putc(b, ',');
  num(w, d->propensity);
  adb__buf_putc(b, ',');
  csv_str(b, d->model);
  adb__buf_printf(b, ",%s,%d,", outcome_name(r->outcome), r->n_rewards);
  num(w, r->reward);
  adb__buf_putc(b, ',');
  adb__json_int(b, r->reward_ts_ms);
  adb__buf_putc(b, ',');
  csv_str(b, d->context_json ? d->context_json : "{}");
  adb__buf_putc(b, ',');
  csv_str(b, d->candidates_json ? d->candidates_json : "[]");
  key(b, "\r\n");
  return ADB_OK;
}

int adb__logw_row(void *w_, const adb__log_row *r) {
  adb__logw *w = w_;
  int rc = w->fmt == ADB__LOGFMT_DSJSON  ? dsjson_row(w, r)
           : w->fmt == ADB__LOGFMT_JSONL ? jsonl_row(w, r)
                                         : csv_row(w, r);
  if (rc) return rc;
  w->rows++;
  return w->b.len >= FLUSH_AT || w->b.oom ? flush(w) : 0;
}

int adb__logw_finish(adb__logw *w) {
  if (w->fmt == ADB__LOGFMT_CSV && !w->header_done) csv_row(w, NULL);
  return flush(w);
}

/* ---------------------------------------------------------------- reader */

static int why_fail(char *why, size_t n, const char *fmt, const char *arg) {
  snprintf(why, n, fmt, arg);
  return ADB_EINVAL;
}

/* An id string member (obj.name), or NULL. */
static const char *id_of(const json_t *v) {
  const char *s = json_string_value(v);
  return s && adb_id_valid(s) ? s : NULL;
}

/* A float array member into a malloc'd vector; 0 when absent. */
static int float_vec(const json_t *arr, float **out, int *n, char *why,
                     size_t wl) {
  *out = NULL;
  *n = 0;
  if (!arr) return ADB_OK;
  size_t k = json_array_size(arr);
  if (!json_is_array(arr) || k > ADB_MAX_EMBEDDING_DIM)
    return why_fail(why, wl, "%s is not an array of numbers", "an embedding");
  if (k == 0) return ADB_OK;
  if (!(*out = malloc(k * sizeof **out))) return ADB_ENOMEM;
  if (adb__json_floats(arr, *out, (int)k, n, why, wl)) return ADB_EINVAL;
  return ADB_OK;
}

static int label_index(const json_t *doc, int n, char *why, size_t wl) {
  json_t *li = json_object_get(doc, "_labelIndex");
  json_t *la = json_object_get(doc, "_label_Action");
  json_t *a = json_object_get(doc, "a");
  long k;
  if (json_is_integer(li))
    k = (long)json_integer_value(li);
  else if (json_is_integer(la))
    k = (long)json_integer_value(la) - 1;
  else if (json_is_integer(json_array_get(a, 0)))
    k = (long)json_integer_value(json_array_get(a, 0)) - 1;
  else
    return why_fail(why, wl, "%s", "missing chosen action (_labelIndex)");
  if (k < 0 || k >= n)
    return why_fail(why, wl, "%s", "unknown action: label index out of range");
  return (int)k;
}

/* The action id of one _multi entry: action.id, _tag, id (AgentDB writes
 * the first; Personalizer's exports carry the id as a feature "id" in a
 * namespace, or a _tag). */
static const char *multi_id(const json_t *m) {
  const char *s = id_of(json_object_get(json_object_get(m, "action"), "id"));
  if (!s) s = id_of(json_object_get(m, "_tag"));
  if (!s) s = id_of(json_object_get(m, "id"));
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)m, k, v) {
    if (s) break;
    if (json_is_object(v)) s = id_of(json_object_get(v, "id"));
  }
  return s;
}

static int parse_candidates(const json_t *multi, adb__dsjson_row *o, char *why,
                            size_t wl) {
  int n = (int)json_array_size(multi);
  if (n == 0 || n > ADB_MAX_CANDIDATES)
    return why_fail(why, wl, "%s", "c._multi must hold 1..1000 actions");
  adb__sbuf s = {0};
  adb__sbuf_add(&s, "[", 1);
  int dim = 0;
  for (int i = 0; i < n; i++) {
    const json_t *m = json_array_get(multi, (size_t)i);
    const char *id = multi_id(m);
    if (!id) {
      free(s.p);
      snprintf(why, wl, "unknown action: c._multi[%d] has no valid id", i);
      return ADB_EINVAL;
    }
    if (i) adb__sbuf_add(&s, ",", 1);
    adb__sbuf_json_str(&s, id);
    size_t k = json_array_size(json_object_get(m, "embedding"));
    if ((int)k > dim) dim = (int)k;
  }
  adb__sbuf_add(&s, "]", 1);
  if (!(o->d.candidates_json = adb__sbuf_take(&s))) return ADB_ENOMEM;
  if (dim == 0 || dim > ADB_MAX_EMBEDDING_DIM) return ADB_OK;
  o->cand = calloc((size_t)n, sizeof *o->cand);
  o->cand_store = malloc((size_t)n * (size_t)dim * sizeof(float));
  if (!o->cand || !o->cand_store) return ADB_ENOMEM;
  for (int i = 0; i < n; i++) {
    json_t *e = json_object_get(json_array_get(multi, (size_t)i), "embedding");
    int got = 0;
    if (!e) continue;
    if ((int)json_array_size(e) != dim ||
        adb__json_floats(e, o->cand_store + (size_t)i * (size_t)dim, dim, &got,
                         why, wl))
      return why_fail(why, wl, "%s", "c._multi embeddings differ in size");
    o->cand[i] = o->cand_store + (size_t)i * (size_t)dim;
  }
  o->row.cand_emb = (const float *const *)o->cand;
  o->row.n_cand = n;
  o->row.cand_dim = dim;
  return ADB_OK;
}

static int parse_label(const json_t *doc, adb__dsjson_row *o, char *why,
                       size_t wl) {
  json_t *p = json_object_get(doc, "_label_probability");
  if (!p) p = json_array_get(json_object_get(doc, "p"), 0);
  if (!json_is_number(p))
    return why_fail(why, wl, "%s", "missing propensity (_label_probability)");
  double prob = json_number_value(p);
  if (!(prob > 0 && prob <= 1) || !isfinite(prob))
    return why_fail(why, wl, "%s", "propensity outside (0,1]");
  o->d.propensity = prob;
  json_t *adb = json_object_get(doc, "_adb");
  if (json_is_true(json_object_get(doc, "_skipLearn"))) {
    o->row.outcome = ADB_LOG_NONE;
    return ADB_OK;
  }
  json_t *c = json_object_get(doc, "_label_cost");
  if (!json_is_number(c) || !isfinite(json_number_value(c)))
    return why_fail(why, wl, "%s", "missing cost (_label_cost)");
  o->row.reward = -json_number_value(c);
  if (o->row.reward == 0) o->row.reward = 0; /* not -0 */
  const char *oc = json_string_value(json_object_get(adb, "outcome"));
  o->row.outcome = oc && !strcmp(oc, "default") ? ADB_LOG_DEFAULT
                   : oc && !strcmp(oc, "none")  ? ADB_LOG_NONE
                                                : ADB_LOG_REWARD;
  json_t *nr = json_object_get(adb, "n_rewards");
  o->row.n_rewards = json_is_integer(nr) ? (int)json_integer_value(nr) : 1;
  json_t *rt = json_object_get(adb, "reward_ts_ms");
  o->row.reward_ts_ms =
      json_is_integer(rt) ? json_integer_value(rt) : o->d.ts_ms;
  return ADB_OK;
}

static int parse_adb(const json_t *adb, adb__dsjson_row *o, char *why,
                     size_t wl) {
  const char *sk = json_string_value(json_object_get(adb, "state_key"));
  const char *model = json_string_value(json_object_get(adb, "model"));
  const char *feat = json_string_value(json_object_get(adb, "features"));
  json_t *ts = json_object_get(adb, "ts_ms");
  json_t *rk = json_object_get(adb, "ranking");
  if (sk && strlen(sk) < sizeof o->d.state_key)
    memcpy(o->d.state_key, sk, strlen(sk) + 1);
  if (model) snprintf(o->d.model, sizeof o->d.model, "%s", model);
  if (json_is_integer(ts)) o->d.ts_ms = json_integer_value(ts);
  if (rk && !(o->d.ranking_json = json_dumps(rk, JSON_COMPACT)))
    return ADB_ENOMEM;
  if (feat) {
    size_t n = strlen(feat);
    unsigned char tmp[(ADB__FEATURES_MAX / 3 + 2) * 4];
    long got = n <= (ADB__FEATURES_MAX + 2) / 3 * 4
                   ? adb__b64_decode(feat, n, tmp)
                   : -1;
    if (got <= 0 || got > ADB__FEATURES_MAX)
      return why_fail(why, wl, "%s", "_adb.features is not a features blob");
    memcpy(o->d.features, tmp, (size_t)got);
    o->d.n_features = (int)got;
  }
  return ADB_OK;
}

static int parse_head(const json_t *doc, const char *agent, adb__dsjson_row *o,
                      char *why, size_t wl) {
  const char *eid = id_of(json_object_get(doc, "EventId"));
  if (!eid) return why_fail(why, wl, "%s", "missing or invalid EventId");
  snprintf(o->d.agent, sizeof o->d.agent, "%s", agent);
  snprintf(o->d.event_id, sizeof o->d.event_id, "%s", eid);
  const char *ts = json_string_value(json_object_get(doc, "Timestamp"));
  if (!ts || adb__api_parse_time(ts, &o->d.ts_ms))
    return why_fail(why, wl, "%s", "missing or invalid Timestamp");
  snprintf(o->d.model, sizeof o->d.model, "dsjson");
  json_t *c = json_object_get(doc, "c");
  if (!json_is_object(c)) return why_fail(why, wl, "%s", "missing c");
  const char *user =
      json_string_value(json_object_get(json_object_get(doc, "_adb"), "user"));
  if (!user)
    user = json_string_value(json_object_get(json_object_get(c, "user"), "id"));
  if (!user || !adb_id_valid(user)) user = "anonymous";
  snprintf(o->d.user, sizeof o->d.user, "%s", user);
  json_t *ctx = json_object_get(c, "context");
  o->d.context_json =
      ctx && json_is_object(ctx) ? json_dumps(ctx, JSON_COMPACT) : strdup("{}");
  return o->d.context_json ? ADB_OK : ADB_ENOMEM;
}

void adb__dsjson_row_free(adb__dsjson_row *r) {
  free(r->d.context_json);
  free(r->d.candidates_json);
  free(r->d.ranking_json);
  free(r->user_emb);
  free(r->cand);
  free(r->cand_store);
  memset(r, 0, sizeof *r);
}

int adb__dsjson_parse(const char *line, size_t len, const char *agent,
                      adb__dsjson_row *o, char *why, size_t wl) {
  memset(o, 0, sizeof *o);
  o->row.d = &o->d;
  json_error_t je;
  json_t *doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
  if (!json_is_object(doc)) {
    json_decref(doc);
    return why_fail(why, wl, "not a JSON object: %s", je.text);
  }
  json_t *c = json_object_get(doc, "c");
  int rc = parse_head(doc, agent, o, why, wl);
  if (!rc) rc = parse_candidates(json_object_get(c, "_multi"), o, why, wl);
  if (!rc) rc = parse_adb(json_object_get(doc, "_adb"), o, why, wl);
  if (!rc) rc = parse_label(doc, o, why, wl);
  int k =
      rc ? -1
         : label_index(doc,
                       o->row.n_cand
                           ? o->row.n_cand
                           : (int)json_array_size(json_object_get(c, "_multi")),
                       why, wl);
  if (!rc && k < 0) rc = ADB_EINVAL;
  if (!rc) {
    int at[ADB_MAX_CANDIDATES];
    static _Thread_local char ids[ADB_MAX_CANDIDATES * (ADB_ID_MAX + 1)];
    adb__cand_ids(o->d.candidates_json, ids, at);
    snprintf(o->d.action, sizeof o->d.action, "%s", ids + at[k]);
    int dim = 0;
    rc = float_vec(json_object_get(c, "user_embedding"), &o->user_emb, &dim,
                   why, wl);
    o->row.user_emb = o->user_emb;
    o->row.user_dim = dim;
  }
  json_decref(doc);
  if (rc) adb__dsjson_row_free(o);
  return rc;
}

int adb__dsjson_read(FILE *f, const char *agent, adb__log_fn fn, void *ctx,
                     void (*bad)(void *ctx, long line, const char *why),
                     long *good, long *bad_n) {
  char *line = NULL;
  size_t cap = 0;
  long no = 0, ng = 0, nb = 0;
  int rc = ADB_OK;
  adb__dsjson_row *r = malloc(sizeof *r);
  if (!r) return ADB_ENOMEM;
  ssize_t n;
  while (!rc && (n = getline(&line, &cap, f)) >= 0) {
    no++;
    if (strspn(line, " \t\r\n") == (size_t)n) continue;
    char why[256];
    int prc = adb__dsjson_parse(line, (size_t)n, agent, r, why, sizeof why);
    if (prc == ADB_ENOMEM) rc = prc;
    if (prc) {
      nb++;
      if (bad && prc != ADB_ENOMEM) bad(ctx, no, why);
      continue;
    }
    ng++;
    rc = fn(ctx, &r->row);
    adb__dsjson_row_free(r);
  }
  if (!rc && ferror(f)) rc = ADB_EIO;
  free(line);
  free(r);
  if (good) *good = ng;
  if (bad_n) *bad_n = nb;
  return rc;
}
