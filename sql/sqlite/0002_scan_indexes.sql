-- Indexes for the vector memory's catch-up scans (store.h vectors_scan):
-- rows of each kind in time order, read every second by every replica.
CREATE INDEX agent_episodes_by_time ON agent_episodes (created_at_ms);
CREATE INDEX user_states_by_time ON user_states (updated_at_ms);
CREATE INDEX learned_patterns_by_time ON learned_patterns (updated_at_ms);
