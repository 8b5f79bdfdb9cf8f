/*
 * dash.h — what the dashboard and the per-agent Prometheus series show:
 * for each agent the server has seen, counters since start, per-second
 * counts (the last minute), per-minute buckets (the last 3 hours), hourly
 * rollups (the last 7 days), decide latency histograms, and a tail of its
 * recent decisions with the reward each got once it arrived. In memory
 * only: a restart starts them again (the store's hourly rollups, GET
 * /v1/agents/{agent}/metrics, are the durable record).
 *
 * Cardinality is bounded: at most max_agents agents are tracked by name;
 * events of any further agent are counted under the agent "_other" (so
 * /metrics has at most max_agents + 1 agent label values).
 */
#ifndef ADB_DASH_H
#define ADB_DASH_H

#include <stdint.h>

#include "agentdb.h"
#include "json.h"

#define ADB__DASH_MINUTES 180 /* per-minute buckets kept */
#define ADB__DASH_HOURS 168   /* hourly rollups kept */
#define ADB__DASH_TAIL 64     /* recent decisions kept per agent */
#define ADB__DASH_OTHER "_other"

typedef struct adb__dash adb__dash;
typedef struct adb__dash_agent adb__dash_agent;

/* max_agents <= 0 means the default, 100. */
adb__dash *adb__dash_new(int max_agents);
void adb__dash_free(adb__dash *d);
int adb__dash_max_agents(const adb__dash *d);

/* The agent's tracker (created on first sight; the "_other" one past the
 * cap). Never NULL unless d is. Lock-free after the first call. */
adb__dash_agent *adb__dash_agent_of(adb__dash *d, const char *agent);

/* Records a decision and how long the handler took. */
void adb__dash_decision(adb__dash_agent *a, int64_t now_ms, const char *user,
                        const char *event_id, const char *action,
                        double propensity, int64_t latency_ns);
/* Records an applied reward; attaches it to the decision in the tail when
 * event_id names one there, else adds a reward entry to the tail. */
void adb__dash_reward(adb__dash_agent *a, int64_t now_ms, const char *event_id,
                      const char *user, const char *action, double reward);

/* One agent's summary, as the overview shows it. */
typedef struct adb__dash_summary {
  char agent[ADB_ID_MAX + 1];
  int64_t decisions, rewards;
  double reward_sum;
  int64_t decisions_hour, rewards_hour;
  double reward_sum_hour;
  double decisions_per_s, rewards_per_s; /* over the last 10 s */
  double p50_ms, p99_ms;                 /* decide latency, last hour */
  int64_t last_ms;                       /* last event, ms since epoch */
} adb__dash_summary;

/* Calls fn for every tracked agent (and "_other" once it has events), in
 * order of first sight. */
void adb__dash_each(adb__dash *d, int64_t now_ms,
                    void (*fn)(void *ud, const adb__dash_summary *s), void *ud);
/* The summary of one agent; 0 when it was never seen (nothing written). */
int adb__dash_summary_of(adb__dash *d, const char *agent, int64_t now_ms,
                         adb__dash_summary *out);

/* Writes {"minute":{...},"hour":{...}} for the agent: the last `minutes`
 * minutes and `hours` hours as column arrays t (seconds since the epoch,
 * bucket start), decisions, rewards, reward_sum, mean_reward (null
 * without rewards), p50_ms, p99_ms (null without decisions). Returns 0
 * when the agent was never seen. */
int adb__dash_series_json(adb__dash *d, const char *agent, int64_t now_ms,
                          int minutes, int hours, adb__buf *out);

/* Writes a JSON array of up to limit recent tail entries, newest first,
 * of the agents for which allow(ud, agent) is true (allow NULL: all). */
void adb__dash_recent_json(adb__dash *d, int limit,
                           int (*allow)(void *ud, const char *agent), void *ud,
                           adb__buf *out);

/* Appends the per-agent Prometheus series: agentdb_agent_decisions_total,
 * agentdb_agent_rewards_total, agentdb_agent_reward_accumulated,
 * agentdb_agent_decide_duration_seconds (histogram) and
 * agentdb_dashboard_agents_tracked / _max. */
void adb__dash_render_metrics(adb__dash *d, adb__buf *out);

#endif /* ADB_DASH_H */
