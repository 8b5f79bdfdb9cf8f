-- Posterior sums with headroom (issue 13): the agent-wide row ('*') adds
-- every user's rewards, and past INT64_MAX micro-units SQLite turned the
-- sum into a REAL. A sum is now sum_hi * 2^32 + sum_micro with
-- 0 <= sum_micro < 2^32; writers add a delta's two parts and carry in the
-- same statement (sum_micro = (sum_micro + d) & 0xffffffff, sum_hi =
-- sum_hi + dh + ((sum_micro + d) >> 32)), still an increment, never a
-- read-modify-write. sum_hi is kept within +-2^52 (so the Redis cache adds
-- it exactly in Lua's doubles): a sum leaving [-2^84, 2^84) fails the
-- batch with "CHECK constraint failed: sum_in_range" and changes nothing,
-- the same limit on every store and cache (see adb__sum in bandit.h).
ALTER TABLE rl_policies ADD COLUMN sum_hi INTEGER NOT NULL DEFAULT 0
  CONSTRAINT sum_in_range
  CHECK (sum_hi BETWEEN -4503599627370496 AND 4503599627370495);
UPDATE rl_policies SET sum_hi = sum_micro >> 32,
                       sum_micro = sum_micro & 4294967295
 WHERE sum_micro < 0 OR sum_micro > 4294967295;
