-- 0007_retention_gates.sql — retention also trims the per-event gates.
--
-- decision_ids (the exactly-once gate of client event ids), event_outcomes
-- (which of a decision's reward and its default reward came first) and
-- deferred_events (Personalizer's deferred activation marks) hold one row
-- per logged decision and grew without bound when retention dropped the
-- decisions themselves. When decision partitions are dropped, their rows
-- as old as the dropped decisions go too (each row is written at or after
-- its decision's time, so none of a kept decision's rows is older). As for
-- reward_ids: a decide retried with the same client event_id after the
-- retention period would be logged again.
CREATE OR REPLACE FUNCTION adb_maintain_partitions(ahead integer, keep_months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
  cutoff     bigint;
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
      cutoff := adb_month_ms((this_month - make_interval(months => keep_months))::date);
      IF parent = 'reward_signals' AND dropped > 0 THEN
        -- Forget reward ids as old as the dropped rewards (a retry older
        -- than the retention period would be applied again).
        DELETE FROM reward_ids WHERE created_at_ms < cutoff;
      END IF;
      IF parent = 'decisions' AND dropped > 0 THEN
        DELETE FROM decision_ids WHERE created_at_ms < cutoff;
        DELETE FROM event_outcomes WHERE created_at_ms < cutoff;
        DELETE FROM deferred_events WHERE created_at_ms < cutoff;
      END IF;
    END IF;
  END LOOP;
  RETURN n;
END $$;
