-- 0001_init.sql — the AgentDB data model for SQLite.
--
-- Conventions: times are integer milliseconds since the Unix epoch (UTC),
-- embeddings are little-endian float32 BLOBs (length = 4 * dimension),
-- JSON is stored as text. Posterior sums are exact integers (micro-units)
-- so that they add up the same in any order.
-- schema_migrations itself is created by the migration runner.

-- One row per agent: its whole configuration (adb_agent_config).
CREATE TABLE agent_metadata (
  agent_id          TEXT    NOT NULL PRIMARY KEY,
  algorithm         TEXT    NOT NULL CHECK (algorithm IN ('beta', 'gaussian')),
  prior_alpha       REAL    NOT NULL,
  prior_beta        REAL    NOT NULL,
  prior_mu          REAL    NOT NULL,
  prior_kappa       REAL    NOT NULL,
  prior_a           REAL    NOT NULL,
  prior_b           REAL    NOT NULL,
  context_keys      TEXT    NOT NULL DEFAULT '[]',  -- JSON array of strings
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
  updated_at_ms     INTEGER NOT NULL
);

-- The catalogue an agent chooses from.
CREATE TABLE actions (
  agent_id      TEXT    NOT NULL,
  action_id     TEXT    NOT NULL,
  embedding     BLOB,
  metadata      TEXT,                          -- JSON object or NULL
  disabled      INTEGER NOT NULL DEFAULT 0,
  updated_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent_id, action_id)
) WITHOUT ROWID;

-- Posterior sufficient statistics per (agent, user, state, action);
-- user_id '*' is the agent-wide row. Only ever incremented.
CREATE TABLE rl_policies (
  agent_id      TEXT    NOT NULL,
  user_id       TEXT    NOT NULL,
  state_key     TEXT    NOT NULL,
  action_id     TEXT    NOT NULL,
  n             INTEGER NOT NULL DEFAULT 0,
  sum_micro     INTEGER NOT NULL DEFAULT 0,
  sum_sq        REAL    NOT NULL DEFAULT 0,
  version       INTEGER NOT NULL DEFAULT 0,
  updated_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent_id, user_id, state_key, action_id)
) WITHOUT ROWID;

-- Every decision, with its propensity (off-policy evaluation joins rewards
-- on event_id).
CREATE TABLE decisions (
  id            INTEGER PRIMARY KEY,
  agent_id      TEXT    NOT NULL,
  event_id      TEXT    NOT NULL,
  user_id       TEXT    NOT NULL,
  state_key     TEXT    NOT NULL,
  context       TEXT    NOT NULL DEFAULT '{}',  -- JSON object
  candidates    TEXT    NOT NULL DEFAULT '[]',  -- JSON array of action ids
  action_id     TEXT    NOT NULL,
  propensity    REAL    NOT NULL,
  model         TEXT    NOT NULL,
  created_at_ms INTEGER NOT NULL,
  UNIQUE (agent_id, event_id)
);

-- Every reward, once per reward id; body_hash detects a reused id.
CREATE TABLE reward_signals (
  id            INTEGER PRIMARY KEY,
  agent_id      TEXT    NOT NULL,
  reward_id     TEXT    NOT NULL,
  event_id      TEXT    NOT NULL DEFAULT '',    -- '' for a direct reward
  user_id       TEXT    NOT NULL,
  state_key     TEXT    NOT NULL,
  action_id     TEXT    NOT NULL,
  reward        REAL    NOT NULL,
  reward_micro  INTEGER NOT NULL,
  signals       TEXT,                           -- JSON object or NULL
  body_hash     TEXT    NOT NULL,
  created_at_ms INTEGER NOT NULL,
  UNIQUE (agent_id, reward_id)
);
CREATE INDEX reward_signals_event ON reward_signals (agent_id, event_id)
  WHERE event_id <> '';

-- Episodes for similarity search; id is a monotonic watermark for loaders.
CREATE TABLE agent_episodes (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id      TEXT    NOT NULL,
  episode_id    TEXT    NOT NULL,
  user_id       TEXT    NOT NULL,
  session_id    TEXT    NOT NULL DEFAULT '',
  embedding     BLOB,
  action_id     TEXT    NOT NULL,
  reward        REAL    NOT NULL,
  context       TEXT,                           -- JSON object or NULL
  created_at_ms INTEGER NOT NULL,
  UNIQUE (agent_id, episode_id)
);

CREATE TABLE user_states (
  user_id       TEXT    NOT NULL PRIMARY KEY,
  embedding     BLOB,
  context       TEXT,                           -- JSON object or NULL
  updated_at_ms INTEGER NOT NULL
);

CREATE TABLE learned_patterns (
  agent_id      TEXT    NOT NULL,
  pattern_id    TEXT    NOT NULL,
  type          TEXT    NOT NULL DEFAULT '',
  key           TEXT    NOT NULL DEFAULT '',
  value         TEXT,                           -- JSON
  confidence    REAL    NOT NULL DEFAULT 0,
  support       INTEGER NOT NULL DEFAULT 0,
  embedding     BLOB,
  updated_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent_id, pattern_id)
) WITHOUT ROWID;

-- Hourly rollups; counts and sums are only ever incremented.
CREATE TABLE performance_metrics (
  agent_id       TEXT    NOT NULL,
  hour_ms        INTEGER NOT NULL,
  decisions      INTEGER NOT NULL DEFAULT 0,
  rewards        INTEGER NOT NULL DEFAULT 0,
  reward_sum     REAL    NOT NULL DEFAULT 0,
  cache_hits     INTEGER NOT NULL DEFAULT 0,
  cache_misses   INTEGER NOT NULL DEFAULT 0,
  latency_p50_us REAL    NOT NULL DEFAULT 0,
  latency_p99_us REAL    NOT NULL DEFAULT 0,
  PRIMARY KEY (agent_id, hour_ms)
) WITHOUT ROWID;
