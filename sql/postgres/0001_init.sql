-- 0001_init.sql — the AgentDB data model for PostgreSQL 15.
--
-- The tables and column names are those of sql/sqlite/0001_init.sql, so
-- both backends hold the same data; only the types are PostgreSQL's.
--
-- Choices, and why:
--
--  * Times are BIGINT milliseconds since the Unix epoch (UTC), as in SQLite,
--    not TIMESTAMPTZ: the C side deals in int64 ms, both backends return the
--    very same values, and no session time zone can shift anything. For
--    psql, to_timestamp(created_at_ms / 1000.0) gives a timestamp.
--  * JSON is TEXT, not JSONB: the store must give back exactly the bytes it
--    was given (key order, spacing and duplicate keys are all lost by JSONB,
--    and exports and body hashes depend on the exact text). Operators can
--    still query it as context::jsonb ->> 'key' and index such expressions.
--  * Ids are TEXT COLLATE "C": ids are ASCII, byte order is what SQLite and
--    the C code (strcmp) use, so "sorted by key" means the same everywhere,
--    and C comparisons are the fastest.
--  * Embeddings are little-endian float32 BYTEA (pgvector is not packaged in
--    Debian 12; similarity search is done in-process).
--  * Posterior sums are exact BIGINT micro-units (sum_micro), so they add up
--    to the same value in any order.
--
-- decisions, reward_signals and agent_episodes grow without bound and are
-- RANGE-partitioned by month on created_at_ms. Partitions are named
-- <table>_pYYYYMM and created ahead of time by adb_maintain_partitions()
-- (called by AgentDB at start and every hour); a DEFAULT partition catches
-- anything outside them, so an insert never fails for want of a partition.
-- Retention drops whole monthly partitions, which is instant and leaves no
-- bloat (see adb_maintain_partitions).
--
-- A unique constraint on a partitioned table must contain the partition key.
-- So (agent_id, event_id) cannot be unique across the whole decisions
-- table; the keys below include created_at_ms, which makes a retried batch
-- (same rows, same times) a no-op under ON CONFLICT DO NOTHING. Rewards need
-- more: a reward id must be applied exactly once whatever the time of the
-- retry, so the exactly-once memory is a separate, non-partitioned table
-- reward_ids (agent_id, reward_id) PRIMARY KEY, which the write path inserts
-- into with ON CONFLICT DO NOTHING ... RETURNING; only the ids it returns
-- are logged in reward_signals and applied to rl_policies, in the same
-- transaction. It also keeps body_hash and reward, so a retry is answered
-- with the first reward and a reused id with another body is detected
-- without touching the partitions.
--
-- schema_migrations itself is created by the migration runner.

-- One row per agent: its whole configuration (adb_agent_config).
CREATE TABLE agent_metadata (
  agent_id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  algorithm         TEXT    NOT NULL CHECK (algorithm IN ('beta', 'gaussian')),
  prior_alpha       DOUBLE PRECISION NOT NULL,
  prior_beta        DOUBLE PRECISION NOT NULL,
  prior_mu          DOUBLE PRECISION NOT NULL,
  prior_kappa       DOUBLE PRECISION NOT NULL,
  prior_a           DOUBLE PRECISION NOT NULL,
  prior_b           DOUBLE PRECISION NOT NULL,
  context_keys      TEXT    NOT NULL DEFAULT '[]',  -- JSON array of strings
  embedding_dim     INTEGER NOT NULL DEFAULT 0,
  simhash_bits      INTEGER NOT NULL DEFAULT 0,
  weight_watch      DOUBLE PRECISION NOT NULL,
  weight_click      DOUBLE PRECISION NOT NULL,
  weight_rating     DOUBLE PRECISION NOT NULL,
  fallback_strength DOUBLE PRECISION NOT NULL,
  decay_half_life_s DOUBLE PRECISION NOT NULL DEFAULT 0,
  reward_window_s   DOUBLE PRECISION NOT NULL,
  default_reward    DOUBLE PRECISION NOT NULL DEFAULT 0,
  created_at_ms     BIGINT  NOT NULL,
  updated_at_ms     BIGINT  NOT NULL
);

-- The catalogue an agent chooses from.
CREATE TABLE actions (
  agent_id      TEXT COLLATE "C" NOT NULL,
  action_id     TEXT COLLATE "C" NOT NULL,
  embedding     BYTEA,
  metadata      TEXT,                          -- JSON object or NULL
  disabled      BOOLEAN NOT NULL DEFAULT false,
  updated_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, action_id)
);

-- Posterior sufficient statistics per (agent, user, state, action);
-- user_id '*' is the agent-wide row. Only ever incremented, in key order.
-- Small and hot: leave room on each page for HOT updates.
CREATE TABLE rl_policies (
  agent_id      TEXT COLLATE "C" NOT NULL,
  user_id       TEXT COLLATE "C" NOT NULL,
  state_key     TEXT COLLATE "C" NOT NULL,
  action_id     TEXT COLLATE "C" NOT NULL,
  n             BIGINT  NOT NULL DEFAULT 0,
  sum_micro     BIGINT  NOT NULL DEFAULT 0,
  sum_sq        DOUBLE PRECISION NOT NULL DEFAULT 0,
  version       BIGINT  NOT NULL DEFAULT 0,
  updated_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, user_id, state_key, action_id)
) WITH (fillfactor = 80);

-- Every decision, with its propensity (off-policy evaluation joins rewards
-- on event_id). The primary key serves decision_get (agent_id, event_id)
-- and the per-agent count.
CREATE TABLE decisions (
  id            BIGSERIAL,
  agent_id      TEXT COLLATE "C" NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL,
  user_id       TEXT COLLATE "C" NOT NULL,
  state_key     TEXT COLLATE "C" NOT NULL,
  context       TEXT    NOT NULL DEFAULT '{}',  -- JSON object
  candidates    TEXT    NOT NULL DEFAULT '[]',  -- JSON array of action ids
  action_id     TEXT COLLATE "C" NOT NULL,
  propensity    DOUBLE PRECISION NOT NULL,
  model         TEXT    NOT NULL,
  created_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, event_id, created_at_ms)
) PARTITION BY RANGE (created_at_ms);
CREATE TABLE decisions_default PARTITION OF decisions DEFAULT;

-- Exactly-once memory of reward ids (see the header). Not partitioned, so
-- the key needs no time; retention deletes rows older than the dropped
-- reward_signals partitions.
CREATE TABLE reward_ids (
  agent_id      TEXT COLLATE "C" NOT NULL,
  reward_id     TEXT COLLATE "C" NOT NULL,
  body_hash     TEXT    NOT NULL,
  reward        DOUBLE PRECISION NOT NULL,
  created_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, reward_id)
);

-- Every applied reward (once per reward id, guarded by reward_ids).
CREATE TABLE reward_signals (
  id            BIGSERIAL,
  agent_id      TEXT COLLATE "C" NOT NULL,
  reward_id     TEXT COLLATE "C" NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL DEFAULT '',  -- '' for a direct reward
  user_id       TEXT COLLATE "C" NOT NULL,
  state_key     TEXT COLLATE "C" NOT NULL,
  action_id     TEXT COLLATE "C" NOT NULL,
  reward        DOUBLE PRECISION NOT NULL,
  reward_micro  BIGINT  NOT NULL,
  signals       TEXT,                           -- JSON object or NULL
  body_hash     TEXT    NOT NULL,
  created_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, reward_id, created_at_ms)
) PARTITION BY RANGE (created_at_ms);
CREATE TABLE reward_signals_default PARTITION OF reward_signals DEFAULT;
CREATE INDEX reward_signals_event ON reward_signals (agent_id, event_id)
  WHERE event_id <> '';

-- Episodes for similarity search; id is a watermark for loaders (note:
-- sequence order, not commit order).
CREATE TABLE agent_episodes (
  id            BIGSERIAL,
  agent_id      TEXT COLLATE "C" NOT NULL,
  episode_id    TEXT COLLATE "C" NOT NULL,
  user_id       TEXT COLLATE "C" NOT NULL,
  session_id    TEXT COLLATE "C" NOT NULL DEFAULT '',
  embedding     BYTEA,
  action_id     TEXT COLLATE "C" NOT NULL,
  reward        DOUBLE PRECISION NOT NULL,
  context       TEXT,                           -- JSON object or NULL
  created_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, episode_id, created_at_ms)
) PARTITION BY RANGE (created_at_ms);
CREATE TABLE agent_episodes_default PARTITION OF agent_episodes DEFAULT;
CREATE INDEX agent_episodes_agent_id ON agent_episodes (agent_id, id);

CREATE TABLE user_states (
  user_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  embedding     BYTEA,
  context       TEXT,                           -- JSON object or NULL
  updated_at_ms BIGINT  NOT NULL
);

CREATE TABLE learned_patterns (
  agent_id      TEXT COLLATE "C" NOT NULL,
  pattern_id    TEXT COLLATE "C" NOT NULL,
  type          TEXT    NOT NULL DEFAULT '',
  key           TEXT    NOT NULL DEFAULT '',
  value         TEXT,                           -- JSON
  confidence    DOUBLE PRECISION NOT NULL DEFAULT 0,
  support       BIGINT  NOT NULL DEFAULT 0,
  embedding     BYTEA,
  updated_at_ms BIGINT  NOT NULL,
  PRIMARY KEY (agent_id, pattern_id)
);

-- Hourly rollups; counts and sums are only ever incremented.
CREATE TABLE performance_metrics (
  agent_id       TEXT COLLATE "C" NOT NULL,
  hour_ms        BIGINT  NOT NULL,
  decisions      BIGINT  NOT NULL DEFAULT 0,
  rewards        BIGINT  NOT NULL DEFAULT 0,
  reward_sum     DOUBLE PRECISION NOT NULL DEFAULT 0,
  cache_hits     BIGINT  NOT NULL DEFAULT 0,
  cache_misses   BIGINT  NOT NULL DEFAULT 0,
  latency_p50_us DOUBLE PRECISION NOT NULL DEFAULT 0,
  latency_p99_us DOUBLE PRECISION NOT NULL DEFAULT 0,
  PRIMARY KEY (agent_id, hour_ms)
);

-- ------------------------------------------------------------ partitions

-- Milliseconds since the epoch of a UTC month start.
CREATE FUNCTION adb_month_ms(m date) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS
$$ SELECT (extract(epoch FROM date_trunc('month', m)::timestamp) * 1000)::bigint $$;

-- Creates <parent>_pYYYYMM for the month holding `month` unless it exists.
-- Rows of that month already in the DEFAULT partition (a far-future time,
-- say) are moved into it first, since PostgreSQL refuses to create a
-- partition whose rows sit in the default one. Returns true if created.
CREATE FUNCTION adb_create_partition(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  m    date   := date_trunc('month', month)::date;
  part text   := format('%s_p%s', parent, to_char(m, 'YYYYMM'));
  lo   bigint := adb_month_ms(m);
  hi   bigint := adb_month_ms((m + interval '1 month')::date);
BEGIN
  IF to_regclass(part) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
  EXECUTE format('WITH moved AS (DELETE FROM %I WHERE created_at_ms >= %s '
                 'AND created_at_ms < %s RETURNING *) '
                 'INSERT INTO %I SELECT * FROM moved',
                 parent || '_default', lo, hi, part);
  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                 parent, part, lo, hi);
  RETURN true;
END $$;

-- Drops the monthly partitions of `parent` whose whole month lies before
-- the month `keep_months` months before the current one, and deletes the
-- rows of the DEFAULT partition older than that. Returns partitions dropped.
CREATE FUNCTION adb_drop_partitions(parent text, keep_months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  cutoff date := (date_trunc('month', now() AT TIME ZONE 'UTC')
                  - make_interval(months => keep_months))::date;
  part   text;
  n      integer := 0;
BEGIN
  FOR part IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent::regclass
      AND c.relname ~ ('^' || parent || '_p[0-9]{6}$')
    ORDER BY c.relname
  LOOP
    IF to_date(right(part, 6), 'YYYYMM') < cutoff THEN
      EXECUTE format('DROP TABLE %I', part);
      n := n + 1;
    END IF;
  END LOOP;
  EXECUTE format('DELETE FROM %I WHERE created_at_ms < %s',
                 parent || '_default', adb_month_ms(cutoff));
  RETURN n;
END $$;

-- The maintenance AgentDB runs at start and every hour (and an operator may
-- run from cron): partitions for the current month and `ahead` more, and,
-- when keep_months > 0, retention. Serialised across replicas by a
-- transaction-scoped advisory lock. Returns partitions created + dropped.
CREATE FUNCTION adb_maintain_partitions(ahead integer, keep_months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
  parent     text;
  k          integer;
  n          integer := 0;
  dropped    integer;
BEGIN
  PERFORM pg_advisory_xact_lock(4703525, 2);  -- 'AgentDB' partitions
  FOREACH parent IN ARRAY ARRAY['decisions', 'reward_signals', 'agent_episodes']
  LOOP
    FOR k IN 0 .. greatest(ahead, 0) LOOP
      IF adb_create_partition(parent, (this_month + make_interval(months => k))::date) THEN
        n := n + 1;
      END IF;
    END LOOP;
    IF keep_months > 0 THEN
      dropped := adb_drop_partitions(parent, keep_months);
      n := n + dropped;
      IF parent = 'reward_signals' AND dropped > 0 THEN
        -- Forget reward ids as old as the dropped rewards (a retry older
        -- than the retention period would be applied again).
        DELETE FROM reward_ids WHERE created_at_ms <
          adb_month_ms((this_month - make_interval(months => keep_months))::date);
      END IF;
    END IF;
  END LOOP;
  RETURN n;
END $$;

-- ------------------------------------------------------------- operators

-- Applies one reward to a posterior by hand, as the write path does for a
-- new reward id: the (agent, user, state, action) row and the agent-wide
-- row (user '*') get n + 1, sum_micro + reward in micro-units (rounded half
-- away from zero: llround(reward * 1e6), like adb__reward_to_micro) and sum_sq + reward^2, and
-- their version + 1; missing rows are created. Rows are touched in key
-- order ('*' sorts before every id), like the write path, so it cannot
-- deadlock with it. Returns the user row's new version. Caches see the
-- change when their entry expires.
--   SELECT apply_reward('agent', 'user', '<state key>', 'action', 0.8);
CREATE FUNCTION apply_reward(p_agent text, p_user text, p_state_key text,
                             p_action text, p_reward double precision)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  x      double precision;
  micro  bigint;
  now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  u      text;
  v      bigint;
BEGIN
  IF p_reward IS NULL OR p_reward = 'NaN'::float8
     OR p_reward IN ('Infinity'::float8, '-Infinity'::float8) THEN
    RAISE EXCEPTION 'apply_reward: reward must be a finite number, not %', p_reward;
  END IF;
  -- llround(reward * 1e6): the fraction x - trunc(x) is exact in float8.
  x := p_reward * 1000000;
  micro := trunc(x)::bigint
           + CASE WHEN abs(x - trunc(x)) >= 0.5 THEN sign(x)::bigint ELSE 0 END;
  FOREACH u IN ARRAY CASE WHEN p_user = '*' THEN ARRAY['*']
                          ELSE ARRAY['*', p_user] END
  LOOP
    INSERT INTO rl_policies AS p (agent_id, user_id, state_key, action_id, n,
                                  sum_micro, sum_sq, version, updated_at_ms)
    VALUES (p_agent, u, p_state_key, p_action, 1, micro, p_reward * p_reward,
            1, now_ms)
    ON CONFLICT (agent_id, user_id, state_key, action_id) DO UPDATE
      SET n = p.n + 1, sum_micro = p.sum_micro + micro,
          sum_sq = p.sum_sq + p_reward * p_reward, version = p.version + 1,
          updated_at_ms = now_ms
    RETURNING version INTO v;
  END LOOP;
  RETURN v;
END $$;
