-- Posterior sums with headroom (issue 13): the agent-wide row ('*') adds
-- every user's rewards, and past INT64_MAX micro-units the increment
-- raised "bigint out of range". A sum is now sum_hi * 2^32 + sum_micro
-- with 0 <= sum_micro < 2^32; writers add a delta's two parts and carry in
-- the same statement (sum_micro = (sum_micro + d) & 0xffffffff, sum_hi =
-- sum_hi + dh + ((sum_micro + d) >> 32)), still an increment, never a
-- read-modify-write. sum_hi is kept within +-2^52 (so the Redis cache adds
-- it exactly in Lua's doubles): a sum leaving [-2^84, 2^84) fails the
-- batch with a check violation of sum_in_range and changes nothing, the
-- same limit on every store and cache (see adb__sum in bandit.h).
ALTER TABLE rl_policies ADD COLUMN sum_hi BIGINT NOT NULL DEFAULT 0
  CONSTRAINT sum_in_range
  CHECK (sum_hi BETWEEN -4503599627370496 AND 4503599627370495);
UPDATE rl_policies SET sum_hi = sum_micro >> 32,
                       sum_micro = sum_micro & 4294967295
 WHERE sum_micro < 0 OR sum_micro > 4294967295;

-- apply_reward (0001) with the carry.
CREATE OR REPLACE FUNCTION apply_reward(p_agent text, p_user text,
                                        p_state_key text, p_action text,
                                        p_reward double precision)
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
                                  sum_micro, sum_hi, sum_sq, version,
                                  updated_at_ms)
    VALUES (p_agent, u, p_state_key, p_action, 1, micro & 4294967295,
            micro >> 32, p_reward * p_reward, 1, now_ms)
    ON CONFLICT (agent_id, user_id, state_key, action_id) DO UPDATE
      SET n = p.n + 1,
          sum_micro = (p.sum_micro + (micro & 4294967295)) & 4294967295,
          sum_hi = p.sum_hi + (micro >> 32)
                   + ((p.sum_micro + (micro & 4294967295)) >> 32),
          sum_sq = p.sum_sq + p_reward * p_reward, version = p.version + 1,
          updated_at_ms = now_ms
    RETURNING version INTO v;
  END LOOP;
  RETURN v;
END $$;
