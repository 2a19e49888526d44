-- Counters the profile worker set aside because recomputing them failed on their own (see
-- server/src/profiles/worker.rs). While active, the counter's energy_dirty rows stay queued
-- but are skipped by batches, so one bad counter cannot stall the accounting of the others.
-- An admin releases it (POST /api/v1/energy/quarantine/{counter_id}/retry): active = false,
-- released_at set; failing again makes it active again with attempts + 1.
CREATE TABLE energy_quarantine (
    counter_id   BIGINT PRIMARY KEY REFERENCES counters (id) ON DELETE CASCADE,
    reason       TEXT NOT NULL,
    since        TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts     INTEGER NOT NULL DEFAULT 1,
    active       BOOLEAN NOT NULL DEFAULT true,
    released_at  TIMESTAMPTZ
);
CREATE INDEX energy_quarantine_active_idx ON energy_quarantine (counter_id) WHERE active;
