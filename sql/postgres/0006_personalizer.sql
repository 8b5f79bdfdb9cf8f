-- 0006_personalizer.sql — deferred activation (Azure Personalizer's
-- deferActivation). See sql/sqlite/0006_personalizer.sql for the table.
CREATE TABLE deferred_events (
  agent_id        TEXT COLLATE "C" NOT NULL,
  event_id        TEXT COLLATE "C" NOT NULL,
  created_at_ms   BIGINT NOT NULL,
  activated_at_ms BIGINT,
  PRIMARY KEY (agent_id, event_id)
);
