-- 0006_personalizer.sql — deferred activation (Azure Personalizer's
-- deferActivation, src/api_personalizer.c).
--
-- A rank with deferActivation marks its event here before its decision is
-- made; activation sets activated_at_ms. When the decision's reward window
-- ends, the flush worker's sweep (pending_sweep) claims the event's outcome
-- like any other's, but applies no default reward to a decision whose
-- event is marked and not activated: a never-activated event is not
-- learned from, and a reward after its window is late as for any event.
-- The same sweep then deletes the marks of the decisions it closed, so the
-- table holds the open deferred events only (and marks of ranks whose
-- decision was never stored, until the log is deleted). A mark is written
-- before its decision and read only through its event id, so activation and
-- marking never depend on the order of commits.
CREATE TABLE deferred_events (
  agent_id        TEXT    NOT NULL,
  event_id        TEXT    NOT NULL,
  created_at_ms   INTEGER NOT NULL,
  activated_at_ms INTEGER,                  -- NULL until activated
  PRIMARY KEY (agent_id, event_id)
) WITHOUT ROWID;
