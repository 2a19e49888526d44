-- Energy accounting: site structure (panels, circuits), supply contracts, 15-minute interval
-- energy derived from counter readings, and the rollups that answer calendars quickly.
--
-- Intervals are derived data: they can always be rebuilt from counter_readings (the source of
-- truth), which is why the worker may recompute any span at any time.

CREATE TABLE panels (
    id           BIGSERIAL PRIMARY KEY,
    site_id      BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (site_id, name),
    UNIQUE (id, site_id)
);

CREATE TABLE circuits (
    id           BIGSERIAL PRIMARY KEY,
    panel_id     BIGINT NOT NULL REFERENCES panels (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    usage        TEXT NOT NULL DEFAULT 'other' CHECK (usage IN ('heating', 'cooling', 'hot_water',
                     'lighting', 'sockets', 'ventilation', 'process', 'other')),
    description  TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (panel_id, name)
);

-- A supply contract applies from valid_from (a local date of the site) until the next one, so a
-- price change does not restate the cost of earlier periods.
CREATE TABLE contracts (
    id           BIGSERIAL PRIMARY KEY,
    site_id      BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    valid_from   DATE NOT NULL,
    body         JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (site_id, valid_from)
);

-- What a meter measures. NULL measures: not placed yet (counted in the site total only while
-- the site has no meter of its own).
ALTER TABLE devices
    ADD COLUMN name TEXT CHECK (length(name) <= 200),
    ADD COLUMN measures TEXT CHECK (measures IN ('site', 'panel', 'circuit')),
    ADD COLUMN panel_id BIGINT REFERENCES panels (id) ON DELETE SET NULL,
    ADD COLUMN circuit_id BIGINT REFERENCES circuits (id) ON DELETE SET NULL,
    ADD COLUMN usage TEXT CHECK (usage IN ('heating', 'cooling', 'hot_water', 'lighting',
        'sockets', 'ventilation', 'process', 'other')),
    -- Which counter registers hold active import/export and reactive import/export energy;
    -- NULL: the SG convention (counter1nr..counter4nr).
    ADD COLUMN import_register TEXT CHECK (length(import_register) <= 32),
    ADD COLUMN export_register TEXT CHECK (length(export_register) <= 32),
    ADD COLUMN reactive_register TEXT CHECK (length(reactive_register) <= 32);

-- Energy of each UTC quarter-hour per counter register, in the register's milli-unit.
-- quality: 0 measured, 1 estimated (missing intervals have no row).
CREATE TABLE energy_intervals (
    counter_id    BIGINT NOT NULL REFERENCES counters (id) ON DELETE CASCADE,
    start         TIMESTAMPTZ NOT NULL,
    energy_milli  BIGINT NOT NULL CHECK (energy_milli >= 0),
    quality       SMALLINT NOT NULL CHECK (quality IN (0, 1)),
    PRIMARY KEY (counter_id, start)
);

-- Resets, glitches and meter exchanges the interval engine found.
CREATE TABLE counter_events (
    counter_id    BIGINT NOT NULL REFERENCES counters (id) ON DELETE CASCADE,
    ts            TIMESTAMPTZ NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('reset', 'glitch', 'exchange')),
    previous      BIGINT NOT NULL,
    value         BIGINT NOT NULL,
    detected_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (counter_id, ts, kind)
);

-- Work for the profile worker, appended in the same transaction as the data that causes it, so
-- a crash never leaves intervals stale. Append-only (no upsert) so that ingest never waits on a
-- row the worker holds; the worker merges spans per counter and deletes what it has done in
-- the transaction that writes the result. No foreign key: it would cost every ingest batch a
-- lookup, and the worker skips counters that no longer exist.
-- readings: recompute intervals (then rollups) from readings over [from_ts, to_ts];
-- otherwise only the rollups (a contract, zone or placement changed).
CREATE TABLE energy_dirty (
    id          BIGSERIAL PRIMARY KEY,
    counter_id  BIGINT NOT NULL,
    from_ts     TIMESTAMPTZ NOT NULL,
    to_ts       TIMESTAMPTZ NOT NULL,
    readings    BOOLEAN NOT NULL
);

-- Daily rollup per counter on the site's local calendar (day = local date).
-- band_milli[i]: energy in band i of the contract valid that day (empty without a contract);
-- cost_nano: the energy cost (import price, or export credit for an export register) in
-- 1e-9 of the contract currency, rounded once per day from an exact sum.
CREATE TABLE energy_days (
    counter_id    BIGINT NOT NULL REFERENCES counters (id) ON DELETE CASCADE,
    day           DATE NOT NULL,
    energy_milli  BIGINT NOT NULL,
    measured      INTEGER NOT NULL,
    estimated     INTEGER NOT NULL,
    quarters      INTEGER NOT NULL,
    peak_milli    BIGINT NOT NULL,
    peak_start    TIMESTAMPTZ,
    band_milli    BIGINT[] NOT NULL DEFAULT '{}',
    cost_nano     BIGINT,
    currency      TEXT,
    PRIMARY KEY (counter_id, day)
);

-- The site's total import per quarter-hour (its top-level meters summed without double
-- counting), for the site's peak demand, and its daily peak.
CREATE TABLE site_intervals (
    site_id       BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    start         TIMESTAMPTZ NOT NULL,
    energy_milli  BIGINT NOT NULL,
    PRIMARY KEY (site_id, start)
);

CREATE TABLE site_days (
    site_id       BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    day           DATE NOT NULL,
    peak_milli    BIGINT NOT NULL,
    peak_start    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site_id, day)
);

CREATE INDEX devices_panel_idx ON devices (panel_id) WHERE panel_id IS NOT NULL;
CREATE INDEX devices_circuit_idx ON devices (circuit_id) WHERE circuit_id IS NOT NULL;
