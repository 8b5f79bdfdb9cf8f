-- 0005_write_path.sql — the ranking a decision answered, so that a decide
-- retried with the same client event_id answers the stored decision again
-- (action, propensity and ranking) instead of drawing anew. NULL for
-- decisions with a generated event id, which cannot be retried.
ALTER TABLE decisions ADD COLUMN ranking TEXT;  -- JSON [["action", score], ...]

-- Rewards whose decision was not visible when they arrived (it may still
-- be in another process's write queue). The write path refuses a reward id
-- found here or in reward_signals as for any reward, and the flush worker's
-- sweep moves a row to reward_signals (applying it) once its decision is
-- stored, or deletes it at expires_at_ms (created + the agent's
-- reward_window_s), counting it.
CREATE TABLE pending_rewards (
  agent_id      TEXT    NOT NULL,
  reward_id     TEXT    NOT NULL,
  event_id      TEXT    NOT NULL,
  reward        REAL    NOT NULL,
  reward_micro  INTEGER NOT NULL,
  signals       TEXT,
  body_hash     TEXT    NOT NULL,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent_id, reward_id)
);
CREATE INDEX pending_rewards_event ON pending_rewards (agent_id, event_id);
CREATE INDEX pending_rewards_expiry ON pending_rewards (expires_at_ms);

-- Reward window and default reward. The first outcome of a decision wins:
-- its first reward (or awaiting reward) claims event_outcomes 'reward'; the
-- flush worker's sweep, for a decision whose window (agent_metadata
-- reward_window_s, plus a few seconds for decisions still in a queue) has
-- ended, claims 'default' and applies the agent's default_reward as a
-- reward with id '~' || a hash of the event id. The primary key makes the
-- two exclusive (also between replicas and across restarts); a reward that
-- finds 'default' is late: answered as such, never applied. The sweep
-- walks each agent's decisions in time from default_watermarks.upto_ms
-- (set at the first sweep: decisions older than that get no default).
CREATE TABLE event_outcomes (
  agent_id      TEXT NOT NULL,
  event_id      TEXT NOT NULL,
  outcome       TEXT NOT NULL CHECK (outcome IN ('reward', 'default')),
  created_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent_id, event_id)
);
CREATE TABLE default_watermarks (
  agent_id TEXT NOT NULL PRIMARY KEY,
  upto_ms  INTEGER NOT NULL
);
CREATE INDEX decisions_by_agent_time ON decisions (agent_id, created_at_ms);
