-- Remote relay control: a ledger of commands tracked until the relay's reported state proves
-- them, with every transition kept.

ALTER TABLE devices
    -- Switching a critical relay off needs a second operator's approval.
    ADD COLUMN critical BOOLEAN NOT NULL DEFAULT false,
    -- Rated mechanical operations (10 000 for the meter relays in the seeds).
    ADD COLUMN rated_operations INTEGER NOT NULL DEFAULT 10000 CHECK (rated_operations > 0),
    -- Anti-chatter: commands closer together than this are refused.
    ADD COLUMN min_switch_interval_s INTEGER NOT NULL DEFAULT 10 CHECK (min_switch_interval_s >= 0),
    -- Confirmed switchings counted by Headend.
    ADD COLUMN operations BIGINT NOT NULL DEFAULT 0;

CREATE TABLE relay_commands (
    id                BIGSERIAL PRIMARY KEY,
    device_id         BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    action            TEXT NOT NULL CHECK (action IN ('on', 'off', 'toggle')),
    -- The state to reach: from the action, or for a toggle once the current state is read.
    target            SMALLINT CHECK (target IN (0, 1)),
    status            TEXT NOT NULL CHECK (status IN ('awaiting_approval', 'queued', 'sent',
                          'confirmed', 'failed', 'expired', 'cancelled')),
    idempotency_key   TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    requested_by      BIGINT REFERENCES users (id) ON DELETE SET NULL,
    requested_email   TEXT NOT NULL,
    requested_from    TEXT,
    reason            TEXT CHECK (length(reason) <= 1000),
    approved_by       BIGINT REFERENCES users (id) ON DELETE SET NULL,
    approved_email    TEXT,
    -- Not delivered by then: expired. Delivered but not confirmed by then: expired too.
    expires_at        TIMESTAMPTZ NOT NULL,
    -- A critical off waits for approval until then.
    approval_deadline TIMESTAMPTZ,
    -- After sending: a reported state different from the target after this is a failure.
    confirm_deadline  TIMESTAMPTZ,
    -- The relay's last reported state when the command was sent (an operation is counted
    -- when the confirmed state differs from it).
    state_before      SMALLINT,
    -- A state query was sent then (toggle read, or confirmation poll).
    state_asked_at    TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at           TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    detail            TEXT,
    UNIQUE (device_id, idempotency_key)
);
CREATE INDEX relay_commands_open_idx ON relay_commands (status)
    WHERE status IN ('awaiting_approval', 'queued', 'sent');
CREATE INDEX relay_commands_device_idx ON relay_commands (device_id, created_at DESC);

CREATE TABLE relay_command_transitions (
    command_id  BIGINT NOT NULL REFERENCES relay_commands (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    status      TEXT NOT NULL,
    detail      TEXT,
    PRIMARY KEY (command_id, at, status)
);
