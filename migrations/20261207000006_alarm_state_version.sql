-- Issue 16: several instances evaluate alarms on one database. Each caches rule states; the row
-- is the truth. `version` counts the writes of a row, so an instance tells (under the row's lock)
-- whether the state it stepped from is still the one stored, and steps again from the row if not.
-- Expand only: a constant default (no table rewrite); the previous release ignores the column
-- (its writes leave the version as it is, and the newer release compares the state too).
-- At most one open alarm per rule and subject is already enforced by alarms_one_open_idx.
ALTER TABLE alarm_rule_states ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
