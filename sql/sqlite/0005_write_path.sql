-- 0005_write_path.sql — the ranking a decision answered, so that a decide
-- retried with the same client event_id answers the stored decision again
-- (action, propensity and ranking) instead of drawing anew. NULL for
-- decisions with a generated event id, which cannot be retried.
ALTER TABLE decisions ADD COLUMN ranking TEXT;  -- JSON [["action", score], ...]
