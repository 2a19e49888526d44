-- Issue 16, expand step 2 of 2: measurements, counter_readings and energy_intervals become
-- partitioned by month (docs/retention.md). One short transaction and no scan:
-- - each table is renamed <t>_legacy and attached to a new partitioned parent of the old name as
--   the partition (MINVALUE .. boundary); the previous migration validated CHECK (ts < boundary)
--   on it, so ATTACH skips its scan, its primary key index becomes the parent's index partition
--   and its foreign key is taken as the parent's (neither rebuilt nor validated again);
-- - month partitions from the boundary on, three months ahead (the retention task keeps
--   creating them), and a DEFAULT partition so that a row no month partition holds (dated
--   before the oldest kept month, or beyond the newest) never fails an ingest batch.
-- The parents keep the names, columns and keys, so the previous release's SQL (INSERT ... ON
-- CONFLICT (device_id, ts), COPY, joins) runs unchanged against them during a rolling upgrade.

-- Take every lock up front, retrying with a lock timeout: waiting behind a long reader must not
-- queue ingest behind us, and a deadlock with a writer costs a retry, not the migration.
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

ALTER TABLE measurements RENAME TO measurements_legacy;
ALTER TABLE measurements_legacy RENAME CONSTRAINT measurements_pkey TO measurements_legacy_pkey;
CREATE TABLE measurements (
    device_id    BIGINT NOT NULL
        CONSTRAINT measurements_device_id_fkey REFERENCES devices (id) ON DELETE CASCADE,
    ts           TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    flags        SMALLINT NOT NULL DEFAULT 0,
    tariff       SMALLINT,
    frequency    REAL,
    u1 REAL, u2 REAL, u3 REAL,
    u12 REAL, u23 REAL, u31 REAL,
    i1 REAL, i2 REAL, i3 REAL, i_n REAL,
    p REAL, p1 REAL, p2 REAL, p3 REAL,
    q REAL, q1 REAL, q2 REAL, q3 REAL,
    s REAL, s1 REAL, s2 REAL, s3 REAL,
    pf REAL, pf1 REAL, pf2 REAL, pf3 REAL,
    pa REAL, pa1 REAL, pa2 REAL, pa3 REAL,
    temperature REAL,
    thd_i1 REAL, thd_i2 REAL, thd_i3 REAL,
    thd_u1 REAL, thd_u2 REAL, thd_u3 REAL,
    PRIMARY KEY (device_id, ts)
) PARTITION BY RANGE (ts);

ALTER TABLE counter_readings RENAME TO counter_readings_legacy;
ALTER TABLE counter_readings_legacy RENAME CONSTRAINT counter_readings_pkey TO counter_readings_legacy_pkey;
CREATE TABLE counter_readings (
    counter_id   BIGINT NOT NULL
        CONSTRAINT counter_readings_counter_id_fkey REFERENCES counters (id) ON DELETE CASCADE,
    ts           TIMESTAMPTZ NOT NULL,
    value_milli  BIGINT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    flags        SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (counter_id, ts)
) PARTITION BY RANGE (ts);

ALTER TABLE energy_intervals RENAME TO energy_intervals_legacy;
ALTER TABLE energy_intervals_legacy RENAME CONSTRAINT energy_intervals_pkey TO energy_intervals_legacy_pkey;
CREATE TABLE energy_intervals (
    counter_id    BIGINT NOT NULL
        CONSTRAINT energy_intervals_counter_id_fkey REFERENCES counters (id) ON DELETE CASCADE,
    start         TIMESTAMPTZ NOT NULL,
    energy_milli  BIGINT NOT NULL
        CONSTRAINT energy_intervals_energy_milli_check CHECK (energy_milli >= 0),
    quality       SMALLINT NOT NULL
        CONSTRAINT energy_intervals_quality_check CHECK (quality IN (0, 1)),
    PRIMARY KEY (counter_id, start)
) PARTITION BY RANGE (start);

-- The constraints keep the old tables' names, so ATTACH finds them equal and reuses them.
-- Attach the old tables, then the month partitions ahead and the DEFAULT partition (created last:
-- a DEFAULT partition would make every ATTACH scan it).
DO $$
DECLARE
    b RECORD;
    m INT;
    lower TIMESTAMPTZ;
BEGIN
    FOR b IN SELECT table_name, boundary FROM partition_legacy_bounds ORDER BY table_name LOOP
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
            b.table_name, b.table_name || '_legacy', b.boundary);
        FOR m IN 0..2 LOOP
            -- Month arithmetic on UTC wall time: a session zone with DST must not shift it.
            lower := ((b.boundary AT TIME ZONE 'UTC') + make_interval(months => m)) AT TIME ZONE 'UTC';
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                b.table_name || '_p' || to_char(lower AT TIME ZONE 'UTC', 'YYYYMM'),
                b.table_name, lower,
                ((lower AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC');
        END LOOP;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT',
            b.table_name || '_default', b.table_name);
    END LOOP;
END
$$;

-- Raw measurements older than retention.measurements_days are downsampled here, per device and
-- UTC quarter-hour, before their partition is dropped. Per quantity: how many samples had it
-- (<q>_n, so that late rows merge into an existing quarter-hour as an exact weighted mean), and
-- its min, mean and max; samples = rows. Kept forever.
CREATE TABLE measurements_15min (
    device_id  BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    start      TIMESTAMPTZ NOT NULL,
    samples    INTEGER NOT NULL,
    frequency_n INTEGER NOT NULL DEFAULT 0, frequency_min REAL, frequency_mean REAL, frequency_max REAL,
    u1_n INTEGER NOT NULL DEFAULT 0, u1_min REAL, u1_mean REAL, u1_max REAL,
    u2_n INTEGER NOT NULL DEFAULT 0, u2_min REAL, u2_mean REAL, u2_max REAL,
    u3_n INTEGER NOT NULL DEFAULT 0, u3_min REAL, u3_mean REAL, u3_max REAL,
    u12_n INTEGER NOT NULL DEFAULT 0, u12_min REAL, u12_mean REAL, u12_max REAL,
    u23_n INTEGER NOT NULL DEFAULT 0, u23_min REAL, u23_mean REAL, u23_max REAL,
    u31_n INTEGER NOT NULL DEFAULT 0, u31_min REAL, u31_mean REAL, u31_max REAL,
    i1_n INTEGER NOT NULL DEFAULT 0, i1_min REAL, i1_mean REAL, i1_max REAL,
    i2_n INTEGER NOT NULL DEFAULT 0, i2_min REAL, i2_mean REAL, i2_max REAL,
    i3_n INTEGER NOT NULL DEFAULT 0, i3_min REAL, i3_mean REAL, i3_max REAL,
    i_n_n INTEGER NOT NULL DEFAULT 0, i_n_min REAL, i_n_mean REAL, i_n_max REAL,
    p_n INTEGER NOT NULL DEFAULT 0, p_min REAL, p_mean REAL, p_max REAL,
    p1_n INTEGER NOT NULL DEFAULT 0, p1_min REAL, p1_mean REAL, p1_max REAL,
    p2_n INTEGER NOT NULL DEFAULT 0, p2_min REAL, p2_mean REAL, p2_max REAL,
    p3_n INTEGER NOT NULL DEFAULT 0, p3_min REAL, p3_mean REAL, p3_max REAL,
    q_n INTEGER NOT NULL DEFAULT 0, q_min REAL, q_mean REAL, q_max REAL,
    q1_n INTEGER NOT NULL DEFAULT 0, q1_min REAL, q1_mean REAL, q1_max REAL,
    q2_n INTEGER NOT NULL DEFAULT 0, q2_min REAL, q2_mean REAL, q2_max REAL,
    q3_n INTEGER NOT NULL DEFAULT 0, q3_min REAL, q3_mean REAL, q3_max REAL,
    s_n INTEGER NOT NULL DEFAULT 0, s_min REAL, s_mean REAL, s_max REAL,
    s1_n INTEGER NOT NULL DEFAULT 0, s1_min REAL, s1_mean REAL, s1_max REAL,
    s2_n INTEGER NOT NULL DEFAULT 0, s2_min REAL, s2_mean REAL, s2_max REAL,
    s3_n INTEGER NOT NULL DEFAULT 0, s3_min REAL, s3_mean REAL, s3_max REAL,
    pf_n INTEGER NOT NULL DEFAULT 0, pf_min REAL, pf_mean REAL, pf_max REAL,
    pf1_n INTEGER NOT NULL DEFAULT 0, pf1_min REAL, pf1_mean REAL, pf1_max REAL,
    pf2_n INTEGER NOT NULL DEFAULT 0, pf2_min REAL, pf2_mean REAL, pf2_max REAL,
    pf3_n INTEGER NOT NULL DEFAULT 0, pf3_min REAL, pf3_mean REAL, pf3_max REAL,
    pa_n INTEGER NOT NULL DEFAULT 0, pa_min REAL, pa_mean REAL, pa_max REAL,
    pa1_n INTEGER NOT NULL DEFAULT 0, pa1_min REAL, pa1_mean REAL, pa1_max REAL,
    pa2_n INTEGER NOT NULL DEFAULT 0, pa2_min REAL, pa2_mean REAL, pa2_max REAL,
    pa3_n INTEGER NOT NULL DEFAULT 0, pa3_min REAL, pa3_mean REAL, pa3_max REAL,
    temperature_n INTEGER NOT NULL DEFAULT 0, temperature_min REAL, temperature_mean REAL, temperature_max REAL,
    thd_i1_n INTEGER NOT NULL DEFAULT 0, thd_i1_min REAL, thd_i1_mean REAL, thd_i1_max REAL,
    thd_i2_n INTEGER NOT NULL DEFAULT 0, thd_i2_min REAL, thd_i2_mean REAL, thd_i2_max REAL,
    thd_i3_n INTEGER NOT NULL DEFAULT 0, thd_i3_min REAL, thd_i3_mean REAL, thd_i3_max REAL,
    thd_u1_n INTEGER NOT NULL DEFAULT 0, thd_u1_min REAL, thd_u1_mean REAL, thd_u1_max REAL,
    thd_u2_n INTEGER NOT NULL DEFAULT 0, thd_u2_min REAL, thd_u2_mean REAL, thd_u2_max REAL,
    thd_u3_n INTEGER NOT NULL DEFAULT 0, thd_u3_min REAL, thd_u3_mean REAL, thd_u3_max REAL,
    PRIMARY KEY (device_id, start)
);
