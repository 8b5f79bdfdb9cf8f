-- 0003_linear_model.sql — the linear Thompson sampling model (linear.c,
-- policy_linear.c).
--
-- agent_metadata: 'linear' joins the algorithms, with its settings (the
-- CHECK constraint is part of the table, so SQLite needs a rebuild).
CREATE TABLE agent_metadata_0003 (
  agent_id          TEXT    NOT NULL PRIMARY KEY,
  algorithm         TEXT    NOT NULL
                    CHECK (algorithm IN ('beta', 'gaussian', 'linear')),
  prior_alpha       REAL    NOT NULL,
  prior_beta        REAL    NOT NULL,
  prior_mu          REAL    NOT NULL,
  prior_kappa       REAL    NOT NULL,
  prior_a           REAL    NOT NULL,
  prior_b           REAL    NOT NULL,
  context_keys      TEXT    NOT NULL DEFAULT '[]',
  embedding_dim     INTEGER NOT NULL DEFAULT 0,
  simhash_bits      INTEGER NOT NULL DEFAULT 0,
  weight_watch      REAL    NOT NULL,
  weight_click      REAL    NOT NULL,
  weight_rating     REAL    NOT NULL,
  fallback_strength REAL    NOT NULL,
  decay_half_life_s REAL    NOT NULL DEFAULT 0,
  reward_window_s   REAL    NOT NULL,
  default_reward    REAL    NOT NULL DEFAULT 0,
  created_at_ms     INTEGER NOT NULL,
  updated_at_ms     INTEGER NOT NULL,
  linear_crosses    INTEGER NOT NULL DEFAULT 15,  -- bit set, linear.h
  linear_lambda     REAL    NOT NULL DEFAULT 1,
  linear_v          REAL    NOT NULL DEFAULT 0.1
);
INSERT INTO agent_metadata_0003 (agent_id, algorithm, prior_alpha, prior_beta,
  prior_mu, prior_kappa, prior_a, prior_b, context_keys, embedding_dim,
  simhash_bits, weight_watch, weight_click, weight_rating, fallback_strength,
  decay_half_life_s, reward_window_s, default_reward, created_at_ms,
  updated_at_ms)
SELECT agent_id, algorithm, prior_alpha, prior_beta, prior_mu, prior_kappa,
  prior_a, prior_b, context_keys, embedding_dim, simhash_bits, weight_watch,
  weight_click, weight_rating, fallback_strength, decay_half_life_s,
  reward_window_s, default_reward, created_at_ms, updated_at_ms
FROM agent_metadata;
DROP TABLE agent_metadata;
ALTER TABLE agent_metadata_0003 RENAME TO agent_metadata;

-- The features a linear decision used (linear.h ADB_LIN_BLOB), logged in
-- the decision's batch, so that its reward updates the model with what the
-- decision saw and the log can be replayed.
CREATE TABLE decision_features (
  agent_id      TEXT    NOT NULL,
  event_id      TEXT    NOT NULL,
  features      BLOB    NOT NULL,
  created_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent_id, event_id)
) WITHOUT ROWID;

-- The linear model's increments: one row per applied reward of a decision
-- with features, written by the trigger below in the reward's own
-- transaction (so exactly once, with the reward row). seq is the catch-up
-- watermark: SQLite commits one writer at a time, so seq order is commit
-- order.
CREATE TABLE linear_rewards (
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id      TEXT    NOT NULL,
  reward_id     TEXT    NOT NULL,
  action_id     TEXT    NOT NULL,
  reward        REAL    NOT NULL,
  created_at_ms INTEGER NOT NULL,
  features      BLOB    NOT NULL
);
CREATE INDEX linear_rewards_by_agent ON linear_rewards (agent_id, seq);

CREATE TRIGGER linear_rewards_from_reward AFTER INSERT ON reward_signals
WHEN NEW.event_id <> ''
BEGIN
  INSERT INTO linear_rewards (agent_id, reward_id, action_id, reward,
                              created_at_ms, features)
  SELECT NEW.agent_id, NEW.reward_id, NEW.action_id, NEW.reward,
         NEW.created_at_ms, f.features
  FROM decision_features f
  WHERE f.agent_id = NEW.agent_id AND f.event_id = NEW.event_id;
END;

-- Checkpoints of a replica's model (sums, and the watermark they include).
CREATE TABLE linear_checkpoints (
  agent_id      TEXT    NOT NULL PRIMARY KEY,
  config        TEXT    NOT NULL,   -- the model settings the sums are for
  n             INTEGER NOT NULL,   -- rewards in the sums
  after_seq     INTEGER NOT NULL,
  min_xid       INTEGER NOT NULL,
  seen          BLOB,               -- seqs at or above min_xid already in
  state         BLOB    NOT NULL,   -- linear.c adb__lin_save
  updated_at_ms INTEGER NOT NULL
);
