-- Modbus TCP polling of RS485/IP converters. A converter is a gateway row (kind 'converter'), so
-- site scoping, relays, profiles, dashboards and exports join devices → gateways as for an SG;
-- it never logs in over MQTT (its password hash is unusable and the MQTT policy refuses it).
-- Its devices are ordinary `devices` rows (port 'modbus', slot = unit id).

ALTER TABLE gateways
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'sg' CHECK (kind IN ('sg', 'converter'));

CREATE TABLE converters (
    gateway_id   BIGINT PRIMARY KEY REFERENCES gateways (id) ON DELETE CASCADE,
    host         TEXT NOT NULL CHECK (length(host) BETWEEN 1 AND 253),
    port         INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    -- NULL: the `[modbus]` default of the configuration.
    gap_ms       INTEGER CHECK (gap_ms BETWEEN 0 AND 10000),
    timeout_ms   INTEGER CHECK (timeout_ms BETWEEN 10 AND 60000),
    retries      SMALLINT CHECK (retries BETWEEN 0 AND 5),
    enabled      BOOLEAN NOT NULL DEFAULT true,
    -- 'config': declared in the configuration file (re-applied at every start).
    source       TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    -- Why the TCP link last failed (online state: gateways.online).
    last_error   TEXT,
    last_error_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What is polled behind a converter, and how its communication goes.
CREATE TABLE polled_devices (
    id                   BIGSERIAL PRIMARY KEY,
    gateway_id           BIGINT NOT NULL REFERENCES converters (gateway_id) ON DELETE CASCADE,
    unit_id              SMALLINT NOT NULL CHECK (unit_id BETWEEN 1 AND 247),
    kind                 TEXT NOT NULL CHECK (kind IN ('meter', 'relay')),
    -- A register map name (built in, or from `modbus.maps_dir`).
    model                TEXT NOT NULL CHECK (length(model) BETWEEN 1 AND 100),
    -- The meter's nameplate serial; '' when not known.
    serial               TEXT NOT NULL DEFAULT '' CHECK (length(serial) <= 64),
    poll_interval_ms     INTEGER NOT NULL CHECK (poll_interval_ms BETWEEN 100 AND 86400000),
    enabled              BOOLEAN NOT NULL DEFAULT true,
    last_ok_at           TIMESTAMPTZ,
    last_error_at        TIMESTAMPTZ,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    backoff_until        TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, unit_id)
);

-- Counter resets written to meters by admins: who, when, why, and how it went. The counter is
-- resettable, so energy accounting takes the drop as a reset, not a glitch or an exchange.
CREATE TABLE counter_resets (
    id               BIGSERIAL PRIMARY KEY,
    device_id        BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    counter          TEXT NOT NULL CHECK (length(counter) BETWEEN 1 AND 64),
    requested_by     BIGINT REFERENCES users (id) ON DELETE SET NULL,
    requested_email  TEXT NOT NULL,
    reason           TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    requested_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    status           TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    detail           TEXT
);
CREATE INDEX counter_resets_device_idx ON counter_resets (device_id, requested_at DESC);
