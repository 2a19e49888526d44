-- Issue 17: the foreign keys of measurements, counter_readings and energy_intervals checked once
-- per statement instead of once per row.
--
-- A foreign key costs an RI trigger per inserted row (a SELECT ... FOR KEY SHARE on the parent
-- for each one): about two thousand per ingest batch. They are replaced by statement-level
-- triggers that keep the same guarantee, no reading without its device or counter, for every
-- writer (this release's, the previous release's during a rolling upgrade, COPY, retention):
--
-- - AFTER INSERT, once per statement: the distinct parents of the inserted rows (the
--   statement's transition table) are locked FOR KEY SHARE, as the RI trigger would, and a
--   parent that does not exist fails the statement with foreign_key_violation (23503). The lock
--   makes a concurrent delete of the parent wait for the inserting transaction, and the insert
--   wait for a delete in flight (then fail, the parent being gone).
-- - AFTER DELETE on devices and counters, once per statement: their readings are deleted (the
--   former ON DELETE CASCADE). In READ COMMITTED each statement of the function sees what was
--   committed before it, so the rows of an insert that held the parent's lock until its commit
--   are seen and deleted. Under REPEATABLE READ or SERIALIZABLE the deleting transaction's
--   snapshot could miss them (PostgreSQL's own cascade checks that with a cross-check snapshot,
--   which PL/pgSQL has not), so such a delete is refused rather than leaving orphans: devices
--   and counters are deleted by hand, rarely, and READ COMMITTED is the default.
--
-- The triggers are on the partitioned parents: they fire for every insert through the parent
-- (the only way rows are written: ingest, retention's move of the default partition). Same
-- table names, columns and keys as before, so the previous release's SQL runs unchanged.

DO $$
DECLARE
    attempt INT := 0;
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '2s', true);
            LOCK TABLE devices, counters IN SHARE ROW EXCLUSIVE MODE;
            LOCK TABLE measurements, counter_readings, energy_intervals IN ACCESS EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            attempt := attempt + 1;
            IF attempt >= 60 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.2);
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', '0', true);
END
$$;

-- The inserted rows' devices exist, and stay until this transaction ends.
CREATE FUNCTION readings_devices_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted BIGINT;
    locked BIGINT;
    missing BIGINT;
BEGIN
    SELECT count(DISTINCT device_id) INTO wanted FROM added;
    SELECT count(*) INTO locked FROM (
        SELECT 1 FROM devices d WHERE d.id IN (SELECT device_id FROM added)
        ORDER BY d.id FOR KEY SHARE
    ) l;
    IF locked < wanted THEN
        SELECT a.device_id INTO missing FROM added a
        WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = a.device_id) LIMIT 1;
        RAISE EXCEPTION 'insert on table "%": device % does not exist', TG_TABLE_NAME, missing
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

-- The inserted rows' counters exist, and stay until this transaction ends.
CREATE FUNCTION readings_counters_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted BIGINT;
    locked BIGINT;
    missing BIGINT;
BEGIN
    SELECT count(DISTINCT counter_id) INTO wanted FROM added;
    SELECT count(*) INTO locked FROM (
        SELECT 1 FROM counters c WHERE c.id IN (SELECT counter_id FROM added)
        ORDER BY c.id FOR KEY SHARE
    ) l;
    IF locked < wanted THEN
        SELECT a.counter_id INTO missing FROM added a
        WHERE NOT EXISTS (SELECT 1 FROM counters c WHERE c.id = a.counter_id) LIMIT 1;
        RAISE EXCEPTION 'insert on table "%": counter % does not exist', TG_TABLE_NAME, missing
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION readings_cascade_isolation() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'devices and counters are deleted in a READ COMMITTED transaction'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Their readings are deleted by a trigger, which under '
                      || current_setting('transaction_isolation')
                      || ' could miss readings committed since the transaction began.';
    END IF;
END
$$;

CREATE FUNCTION devices_delete_readings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM readings_cascade_isolation();
    DELETE FROM measurements WHERE device_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$;

CREATE FUNCTION counters_delete_readings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM readings_cascade_isolation();
    DELETE FROM counter_readings WHERE counter_id IN (SELECT id FROM gone);
    DELETE FROM energy_intervals WHERE counter_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$;

CREATE TRIGGER measurements_devices_exist AFTER INSERT ON measurements
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION readings_devices_exist();
CREATE TRIGGER counter_readings_counters_exist AFTER INSERT ON counter_readings
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION readings_counters_exist();
CREATE TRIGGER energy_intervals_counters_exist AFTER INSERT ON energy_intervals
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION readings_counters_exist();
CREATE TRIGGER devices_delete_readings AFTER DELETE ON devices
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION devices_delete_readings();
CREATE TRIGGER counters_delete_readings AFTER DELETE ON counters
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION counters_delete_readings();

-- Dropped on the parents, so on every partition (the legacy ones' keys were merged into them).
ALTER TABLE measurements DROP CONSTRAINT measurements_device_id_fkey;
ALTER TABLE counter_readings DROP CONSTRAINT counter_readings_counter_id_fkey;
ALTER TABLE energy_intervals DROP CONSTRAINT energy_intervals_counter_id_fkey;
