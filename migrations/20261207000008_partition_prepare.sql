-- no-transaction
-- Issue 16, expand step 1 of 2: prepare measurements, counter_readings and energy_intervals for
-- monthly partitioning without blocking ingest (docs/retention.md).
--
-- Each table gets a CHECK (ts < boundary) constraint, boundary = the first day (UTC) of the month
-- after next. It is added NOT VALID (a brief lock, no scan), then validated in its own
-- transaction: VALIDATE CONSTRAINT holds only SHARE UPDATE EXCLUSIVE, so reads and writes go on
-- during the scan. Writes never carry a time past the boundary (the clock tolerance caps
-- ingest times at the receive time plus seconds), so the constraint holds. The next migration
-- attaches each table as the partition (MINVALUE .. boundary) of a new partitioned parent;
-- with this validated constraint that attach does not scan.
--
-- Not in one transaction: sqlx runs the file as one multi-statement query, and each BEGIN ..
-- COMMIT below is its own transaction, so the scans never run under the brief exclusive lock.
-- Every step is idempotent: a run that died half way is run again whole at the next start.

BEGIN;
CREATE TABLE IF NOT EXISTS partition_legacy_bounds (
    table_name  TEXT PRIMARY KEY,
    boundary    TIMESTAMPTZ NOT NULL
);
INSERT INTO partition_legacy_bounds (table_name, boundary)
SELECT t, (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months') AT TIME ZONE 'UTC'
FROM unnest(ARRAY['measurements', 'counter_readings', 'energy_intervals']) AS t
ON CONFLICT (table_name) DO NOTHING;
COMMIT;

-- Add the constraints NOT VALID, one table per transaction: ALTER TABLE takes ACCESS EXCLUSIVE
-- for an instant; a lock timeout with retries keeps a long reader (an export) from queueing
-- every writer behind us.
BEGIN;
CREATE OR REPLACE FUNCTION pg_temp.add_legacy_bound(t TEXT, col TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    attempt INT := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = t::regclass AND conname = t || '_legacy_bound') THEN
        RETURN;
    END IF;
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '2s', true);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I < %L) NOT VALID',
                t, t || '_legacy_bound', col,
                (SELECT boundary FROM partition_legacy_bounds WHERE table_name = t));
            RETURN;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt >= 60 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.2);
        END;
    END LOOP;
END
$$;
COMMIT;
BEGIN;
SELECT pg_temp.add_legacy_bound('measurements', 'ts');
COMMIT;
BEGIN;
SELECT pg_temp.add_legacy_bound('counter_readings', 'ts');
COMMIT;
BEGIN;
SELECT pg_temp.add_legacy_bound('energy_intervals', 'start');
COMMIT;

-- The scans: SHARE UPDATE EXCLUSIVE only, ingest goes on.
BEGIN;
ALTER TABLE measurements VALIDATE CONSTRAINT measurements_legacy_bound;
COMMIT;
BEGIN;
ALTER TABLE counter_readings VALIDATE CONSTRAINT counter_readings_legacy_bound;
COMMIT;
BEGIN;
ALTER TABLE energy_intervals VALIDATE CONSTRAINT energy_intervals_legacy_bound;
COMMIT;
