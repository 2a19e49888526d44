-- Several `headend serve` instances share one database (issue 16).

-- Leases: one owner at a time for work that must not run twice (a converter's poller, the alarm
-- timers, the outbox sender, the profile worker, retention). An owner renews its lease well
-- before `expires_at`; another instance takes it over only after it expired. `token` increases
-- at every change of owner: it fences a late holder (work that writes checks its token in the
-- same transaction).
CREATE TABLE leases (
    name         TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    owner        TEXT NOT NULL CHECK (length(owner) BETWEEN 1 AND 200),
    token        BIGINT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);

-- The instances that are (or were recently) alive. Each renews `expires_at`; one past it is dead:
-- the MQTT sessions it held are closed for everyone else.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    http_addr     TEXT,
    mqtt_addr     TEXT,
    version       TEXT
);

-- Which instance holds a gateway's MQTT session (NULL: none, or the release before this one).
ALTER TABLE gateways ADD COLUMN session_instance TEXT;
