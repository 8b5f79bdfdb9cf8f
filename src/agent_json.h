/*
 * agent_json.h — an agent's settings read from JSON, one reader for the
 * agents route (PUT /v1/agents/{agent}) and for the candidate policies of
 * offline evaluation (agentdb evaluate, POST .../evaluations), so the two
 * accept the same fields with the same checks and messages.
 */
#ifndef ADB_AGENT_JSON_H
#define ADB_AGENT_JSON_H

#include <jansson.h>

#include "agentdb.h"

/* What was wrong: the field (e.g. "prior.alpha", "context_keys[2]") and
 * a message for a person. */
typedef struct adb__jerr {
  char field[96];
  char msg[256];
} adb__jerr;

/* Reads doc's members into c (members absent or null leave c as it is).
 * Accepts the agent's fields as GET /v1/agents/{agent} writes them (id,
 * the read-only created_at_ms, updated_at_ms and counters are accepted and
 * not read) plus the names in extra (NULL-terminated, or NULL), which the
 * caller reads. ADB_OK, or ADB_EINVAL with *e filled. */
int adb__agent_from_json(json_t *doc, const char *const *extra,
                         adb_agent_config *c, adb__jerr *e);

/* The linear model's crosses by bit (ADB_CROSS_*), as the API names them. */
extern const char *const adb__cross_names[4];

#endif
