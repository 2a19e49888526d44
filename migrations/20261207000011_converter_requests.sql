-- Requests for a converter's bus asked on an instance that does not run it (issue 16: each
-- converter is polled by the one instance holding lease `modbus:converter:<id>`). Today: counter
-- resets. The asking instance inserts a 'pending' row, announces it on `headend_modbus`
-- (payload: the converter id) and waits for a final status until `expires_at`; the owner claims
-- it ('pending' → 'running', only before `expires_at`) before writing to the meter, so a reset is
-- written at most once; every transition is conditional on the status it leaves, so the row is
-- the one answer both sides agree on.
CREATE TABLE converter_requests (
    id           BIGSERIAL PRIMARY KEY,
    converter_id BIGINT NOT NULL REFERENCES converters (gateway_id) ON DELETE CASCADE,
    unit         SMALLINT NOT NULL CHECK (unit BETWEEN 1 AND 247),
    counter      TEXT NOT NULL CHECK (length(counter) BETWEEN 1 AND 64),
    status       TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    -- Why it failed; NULL when done.
    detail       TEXT CHECK (length(detail) <= 2000),
    -- The instance that claimed it ('running'), if any.
    claimed_by   TEXT,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at      TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- The owners' look-up: pending requests of their converters.
CREATE INDEX converter_requests_pending_idx ON converter_requests (converter_id)
    WHERE status = 'pending';
