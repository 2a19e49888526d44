-- Northbound publishing (Home Assistant MQTT discovery): per site, an admin picks one of the
-- brokers named in the configuration (`[[northbound.brokers]]`; credentials stay there), the
-- discovery prefix and the base topic of the site's state and command topics.
-- The publisher writes its connection state back here (connected, last_error), so every
-- instance's pages and API show it, whichever instance holds the `northbound` lease.
CREATE TABLE northbound_sites (
    site_id           BIGINT PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    enabled           BOOLEAN NOT NULL DEFAULT true,
    broker            TEXT NOT NULL CHECK (broker ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- MQTT topic levels of letters, digits, '_' and '-' only: no wildcard, no empty level.
    discovery_prefix  TEXT NOT NULL DEFAULT 'homeassistant'
        CHECK (length(discovery_prefix) <= 100
               AND discovery_prefix ~ '^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$'),
    base_topic        TEXT NOT NULL
        CHECK (length(base_topic) <= 100 AND base_topic ~ '^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$'),
    -- Relays as switches that command through the ledger; false: read-only binary sensors.
    commands          BOOLEAN NOT NULL DEFAULT true,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by        TEXT,
    connected         BOOLEAN NOT NULL DEFAULT false,
    status_at         TIMESTAMPTZ,
    last_error        TEXT CHECK (length(last_error) <= 1000)
);
