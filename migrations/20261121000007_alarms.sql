-- Alarms: rules that watch what Headend receives, the alarms they raise with their history, the
-- evaluation state that survives a restart, and the notification outbox.

-- A rule belongs to a site and applies to the whole site, a panel, a circuit or one meter.
-- watch, condition and actions are JSON documents validated by the server (alarms::rules).
CREATE TABLE alarm_rules (
    id          BIGSERIAL PRIMARY KEY,
    site_id     BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    enabled     BOOLEAN NOT NULL DEFAULT true,
    severity    TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    target      TEXT NOT NULL CHECK (target IN ('site', 'panel', 'circuit', 'meter')),
    panel_id    BIGINT REFERENCES panels (id) ON DELETE CASCADE,
    circuit_id  BIGINT REFERENCES circuits (id) ON DELETE CASCADE,
    device_id   BIGINT REFERENCES devices (id) ON DELETE CASCADE,
    watch       JSONB NOT NULL,
    condition   JSONB NOT NULL,
    actions     JSONB NOT NULL,
    created_by  BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((target = 'panel') = (panel_id IS NOT NULL)),
    CHECK ((target = 'circuit') = (circuit_id IS NOT NULL)),
    CHECK ((target = 'meter') = (device_id IS NOT NULL))
);
CREATE INDEX alarm_rules_site_idx ON alarm_rules (site_id);

-- The evaluation state of a rule for one subject ('meter:<device id>', 'gateway:<id>'):
-- pending on-delay, active, clearing off-delay. Written when it changes, so a restart neither
-- forgets an active alarm nor raises it again.
CREATE TABLE alarm_rule_states (
    rule_id     BIGINT NOT NULL REFERENCES alarm_rules (id) ON DELETE CASCADE,
    subject     TEXT NOT NULL CHECK (length(subject) <= 64),
    state       JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, subject)
);

-- An alarm: raised by a rule for a subject; acknowledged (by whom, with a comment); cleared.
-- Open: active, or cleared but not yet acknowledged. At most one open alarm per rule and
-- subject: a value that comes back before anyone acknowledged reopens the same alarm.
-- rule_id is kept NULL when the rule is deleted so that history stays.
CREATE TABLE alarms (
    id              BIGSERIAL PRIMARY KEY,
    rule_id         BIGINT REFERENCES alarm_rules (id) ON DELETE SET NULL,
    rule_name       TEXT NOT NULL,
    site_id         BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    subject         TEXT NOT NULL,
    device_id       BIGINT REFERENCES devices (id) ON DELETE SET NULL,
    gateway_id      BIGINT REFERENCES gateways (id) ON DELETE SET NULL,
    severity        TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message         TEXT NOT NULL,
    active          BOOLEAN NOT NULL DEFAULT true,
    raised_at       TIMESTAMPTZ NOT NULL,
    raised_value    DOUBLE PRECISION,
    raise_count     INTEGER NOT NULL DEFAULT 1,
    cleared_at      TIMESTAMPTZ,
    cleared_value   DOUBLE PRECISION,
    acked_at        TIMESTAMPTZ,
    acked_by        BIGINT REFERENCES users (id) ON DELETE SET NULL,
    acked_email     TEXT,
    ack_comment     TEXT CHECK (length(ack_comment) <= 2000),
    shelved_until   TIMESTAMPTZ,
    shelved_email   TEXT,
    escalated_at    TIMESTAMPTZ,
    -- When Headend raised it (raised_at is the time of the sample, which may be old backlog);
    -- escalation counts from here.
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alarms_one_open_idx ON alarms (rule_id, subject)
    WHERE active OR acked_at IS NULL;
CREATE INDEX alarms_site_idx ON alarms (site_id, raised_at DESC);
CREATE INDEX alarms_escalation_idx ON alarms (created_at) WHERE active AND acked_at IS NULL
    AND escalated_at IS NULL;

CREATE TABLE alarm_events (
    id        BIGSERIAL PRIMARY KEY,
    alarm_id  BIGINT NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    kind      TEXT NOT NULL CHECK (kind IN ('raised', 'reraised', 'cleared', 'acknowledged',
                  'shelved', 'unshelved', 'escalated', 'action_failed')),
    actor     TEXT,
    comment   TEXT,
    value     DOUBLE PRECISION
);
CREATE INDEX alarm_events_alarm_idx ON alarm_events (alarm_id, id);

-- Notifications and actions to carry out, written in the transaction of the alarm change that
-- causes them; the sender marks a row sent in the transaction that holds its lock while it
-- sends, so a restart or an outage loses none. idempotency_key travels with the message
-- (Message-ID, Idempotency-Key header, relay command key).
CREATE TABLE alarm_outbox (
    id               BIGSERIAL PRIMARY KEY,
    alarm_id         BIGINT REFERENCES alarms (id) ON DELETE CASCADE,
    event_id         BIGINT REFERENCES alarm_events (id) ON DELETE CASCADE,
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'webhook', 'mqtt', 'relay')),
    target           TEXT NOT NULL CHECK (length(target) BETWEEN 1 AND 2000),
    payload          JSONB NOT NULL,
    idempotency_key  TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ
);
CREATE INDEX alarm_outbox_due_idx ON alarm_outbox (next_attempt_at) WHERE status = 'pending';
