-- 0005_write_path.sql — exactly-once for every write of a batch, also when
-- a commit is ambiguous.
--
--  * decisions is partitioned, so its key includes created_at_ms and a
--    decide retried with the same client event_id (a later time) was stored
--    again. decision_ids is the exactly-once gate of client event ids, as
--    reward_ids is for reward ids: the write path inserts there first, ON
--    CONFLICT DO NOTHING RETURNING, and logs only the decisions it returns.
--    (Generated event ids are unique by construction and skip it.)
--  * The connection may die after COMMIT reached the server: the write path
--    then cannot tell whether the batch committed, and retries it. Every
--    batch writes its id into write_batches (and reward_ids/decision_ids
--    rows carry it), so a retry that finds its own id knows the earlier
--    attempt committed and which rows it inserted, and applies their cache
--    increments and metrics exactly once. Rows older than a day are deleted
--    by the hourly maintenance.
--  * decisions.ranking: the ranking answered, for the retried decide.
ALTER TABLE decisions ADD COLUMN ranking TEXT;  -- JSON [["action", score], ...]
ALTER TABLE reward_ids ADD COLUMN batch_id TEXT COLLATE "C";

CREATE TABLE decision_ids (
  agent_id      TEXT COLLATE "C" NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL,
  batch_id      TEXT COLLATE "C" NOT NULL,
  created_at_ms BIGINT NOT NULL,
  PRIMARY KEY (agent_id, event_id)
);

CREATE TABLE write_batches (
  batch_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  created_at_ms BIGINT NOT NULL
);
CREATE INDEX write_batches_by_time ON write_batches (created_at_ms);

-- Rewards whose decision was not visible when they arrived (it may still be
-- in another replica's write queue). Their reward id is taken in reward_ids
-- like any other; the flush worker's sweep (any replica, each row once:
-- DELETE ... RETURNING) moves a row to reward_signals and applies it once
-- its decision is stored, or deletes it at expires_at_ms (created + the
-- agent's reward_window_s), counting it.
CREATE TABLE pending_rewards (
  agent_id      TEXT COLLATE "C" NOT NULL,
  reward_id     TEXT COLLATE "C" NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL,
  reward        DOUBLE PRECISION NOT NULL,
  reward_micro  BIGINT NOT NULL,
  signals       TEXT,
  body_hash     TEXT   NOT NULL,
  created_at_ms BIGINT NOT NULL,
  expires_at_ms BIGINT NOT NULL,
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
  agent_id      TEXT COLLATE "C" NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL,
  outcome       TEXT NOT NULL CHECK (outcome IN ('reward', 'default')),
  created_at_ms BIGINT NOT NULL,
  PRIMARY KEY (agent_id, event_id)
);
CREATE TABLE default_watermarks (
  agent_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  upto_ms  BIGINT NOT NULL
);
CREATE INDEX decisions_by_agent_time ON decisions (agent_id, created_at_ms);
