-- 0003_linear_model.sql — the linear Thompson sampling model (linear.c,
-- policy_linear.c). See sql/sqlite/0003_linear_model.sql for the tables.
ALTER TABLE agent_metadata DROP CONSTRAINT IF EXISTS agent_metadata_algorithm_check;
ALTER TABLE agent_metadata ADD CONSTRAINT agent_metadata_algorithm_check
  CHECK (algorithm IN ('beta', 'gaussian', 'linear'));
ALTER TABLE agent_metadata ADD COLUMN linear_crosses INTEGER NOT NULL DEFAULT 15;
ALTER TABLE agent_metadata ADD COLUMN linear_lambda DOUBLE PRECISION NOT NULL DEFAULT 1;
ALTER TABLE agent_metadata ADD COLUMN linear_v DOUBLE PRECISION NOT NULL DEFAULT 0.1;

CREATE TABLE decision_features (
  agent_id      TEXT COLLATE "C" NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL,
  features      BYTEA   NOT NULL,
  created_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, event_id)
);

-- In PostgreSQL, sequence order is not commit order: two transactions take
-- seqs 5 and 6, and 6 may commit first. So replicas catch up by the
-- transaction id instead: every row with xid below a snapshot's xmin is
-- settled (committed or never will be), and a scan from the previous
-- snapshot's xmin (minus the seqs already applied) misses nothing
-- (policy_linear.c).
CREATE TABLE linear_rewards (
  seq           BIGSERIAL PRIMARY KEY,
  agent_id      TEXT COLLATE "C" NOT NULL,
  reward_id     TEXT COLLATE "C" NOT NULL,
  action_id     TEXT COLLATE "C" NOT NULL,
  reward        DOUBLE PRECISION NOT NULL,
  created_at_ms BIGINT  NOT NULL,
  features      BYTEA   NOT NULL,
  xid           xid8    NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX linear_rewards_by_xid ON linear_rewards (agent_id, xid, seq);
CREATE INDEX linear_rewards_by_seq ON linear_rewards (agent_id, seq);

CREATE FUNCTION adb_linear_rewards_from_reward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.event_id <> '' THEN
    INSERT INTO linear_rewards (agent_id, reward_id, action_id, reward,
                                created_at_ms, features)
    SELECT NEW.agent_id, NEW.reward_id, NEW.action_id, NEW.reward,
           NEW.created_at_ms, f.features
    FROM decision_features f
    WHERE f.agent_id = NEW.agent_id AND f.event_id = NEW.event_id;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER linear_rewards_from_reward AFTER INSERT ON reward_signals
  FOR EACH ROW EXECUTE FUNCTION adb_linear_rewards_from_reward();

CREATE TABLE linear_checkpoints (
  agent_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  config        TEXT    NOT NULL,
  n             BIGINT  NOT NULL,
  after_seq     BIGINT  NOT NULL,
  min_xid       BIGINT  NOT NULL,
  seen          BYTEA,
  state         BYTEA   NOT NULL,
  updated_at_ms BIGINT  NOT NULL
);
