-- Headend schema, first slice: sites, users, gateways, devices and what gateways send.
-- Never edit a merged migration: add a new one.

CREATE TABLE sites (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    time_zone   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    email          TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    disabled       BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Which sites a non-admin user may see (admins see every site).
CREATE TABLE user_sites (
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    site_id  BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, site_id)
);

CREATE TABLE gateways (
    id                BIGSERIAL PRIMARY KEY,
    serial            TEXT NOT NULL UNIQUE CHECK (length(serial) BETWEEN 1 AND 32),
    site_id           BIGINT REFERENCES sites (id) ON DELETE SET NULL,
    -- Zone of local_time when the gateway belongs to no site (a site's zone wins).
    time_zone         TEXT NOT NULL,
    password_hash     TEXT NOT NULL,
    topic_root        TEXT NOT NULL,
    topic_pub         TEXT NOT NULL,
    topic_sub         TEXT NOT NULL,
    model             TEXT,
    firmware_version  TEXT,
    hardware_version  TEXT,
    -- An MQTT session of the gateway is open (as of online_changed_at).
    online            BOOLEAN NOT NULL DEFAULT false,
    online_changed_at TIMESTAMPTZ,
    last_hello_at     TIMESTAMPTZ,
    last_seen_at      TIMESTAMPTZ,
    -- Gateway clock minus receive time, seconds, from the newest message received.
    clock_skew_s      DOUBLE PRECISION,
    clock_faults      BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (topic_root, topic_pub)
);

-- A device is a slot of a gateway: the left IR meter, the right IR relay, or an RS485 slot.
CREATE TABLE devices (
    id              BIGSERIAL PRIMARY KEY,
    gateway_id      BIGINT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('meter', 'relay')),
    port            TEXT NOT NULL CHECK (port IN ('ir', 'rs485')),
    slot            SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 16),
    serial          TEXT NOT NULL DEFAULT '',
    -- NULL: never reported. A message that omits a field leaves the stored value alone.
    model           TEXT,
    modbus_addr     INTEGER,
    phases          SMALLINT,
    description     TEXT,
    location        TEXT,
    sg_description  TEXT,
    first_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, kind, port, slot)
);
CREATE INDEX devices_serial_idx ON devices (serial) WHERE serial <> '';

-- Instantaneous measurements: one typed wide row per message. SI units (V, A, W, var, VA, Hz,
-- degrees, degrees C, %). float4 holds the 4-5 significant digits meters send; energy is never
-- stored here (counters are exact integers below).
-- flags: 1 clock fault (ts is the receive time), 2 ambiguous local time (DST repeat),
--        4 local time inside a DST gap.
CREATE TABLE measurements (
    device_id    BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
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
    -- Power factor: inductive positive, capacitive negative.
    pf REAL, pf1 REAL, pf2 REAL, pf3 REAL,
    pa REAL, pa1 REAL, pa2 REAL, pa3 REAL,
    temperature REAL,
    thd_i1 REAL, thd_i2 REAL, thd_i3 REAL,
    thd_u1 REAL, thd_u2 REAL, thd_u3 REAL,
    PRIMARY KEY (device_id, ts)
);

-- An energy register of a meter.
CREATE TABLE counters (
    id          BIGSERIAL PRIMARY KEY,
    device_id   BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    idx         SMALLINT NOT NULL,
    resettable  BOOLEAN NOT NULL,
    unit        TEXT NOT NULL CHECK (unit IN ('Wh', 'varh', 'VAh')),
    phase       TEXT,
    tariffs     SMALLINT[] NOT NULL DEFAULT '{}',
    UNIQUE (device_id, name)
);

-- Counter readings, exact: value in milli-units of the counter's unit (mWh, mvarh, mVAh).
CREATE TABLE counter_readings (
    counter_id   BIGINT NOT NULL REFERENCES counters (id) ON DELETE CASCADE,
    ts           TIMESTAMPTZ NOT NULL,
    value_milli  BIGINT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    flags        SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (counter_id, ts)
);

-- Relay (Bicom) states as reported: 1 on, 0 off, -1 unknown.
CREATE TABLE relay_states (
    device_id    BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    ts           TIMESTAMPTZ NOT NULL,
    state        SMALLINT NOT NULL CHECK (state IN (-1, 0, 1)),
    received_at  TIMESTAMPTZ NOT NULL,
    flags        SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, ts)
);

-- Hellos, status replies, log and error lines. (journal_epoch, journal_seq) makes replays idempotent.
CREATE TABLE gateway_events (
    id             BIGSERIAL PRIMARY KEY,
    gateway_id     BIGINT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('hello', 'status', 'log', 'error', 'connect', 'disconnect')),
    received_at    TIMESTAMPTZ NOT NULL,
    body           TEXT NOT NULL,
    journal_epoch  BIGINT NOT NULL,
    journal_seq    BIGINT NOT NULL,
    UNIQUE (journal_epoch, journal_seq)
);
CREATE INDEX gateway_events_gateway_idx ON gateway_events (gateway_id, received_at DESC);

-- Everything refused, kept verbatim with the reason. partial: the valid part was stored.
CREATE TABLE ingest_rejects (
    id              BIGSERIAL PRIMARY KEY,
    received_at     TIMESTAMPTZ NOT NULL,
    source          TEXT NOT NULL,
    topic           TEXT NOT NULL,
    client          TEXT NOT NULL DEFAULT '',
    gateway_id      BIGINT REFERENCES gateways (id) ON DELETE SET NULL,
    reason          TEXT NOT NULL,
    partial         BOOLEAN NOT NULL DEFAULT false,
    payload         BYTEA NOT NULL,
    payload_size    INTEGER NOT NULL,
    journal_epoch   BIGINT NOT NULL,
    journal_seq     BIGINT NOT NULL,
    UNIQUE (journal_epoch, journal_seq)
);
CREATE INDEX ingest_rejects_received_idx ON ingest_rejects (received_at DESC);
