-- Revocable sessions: every token (API bearer or page cookie) names one of these rows in its
-- `sid` claim, and every authenticated request checks the row is live in the same query that
-- loads the principal. Logout revokes one row; disabling a user or resetting their password
-- revokes all of theirs. Rows past their expiry are deleted at login time, a bounded batch at
-- a time.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    -- Written at most once a minute per session, so reads do not all become writes.
    last_used_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (expires_at > created_at)
);

-- Revoking all of a user's live sessions.
CREATE INDEX sessions_user_live ON sessions (user_id) WHERE revoked_at IS NULL;
-- The bounded clean-up of expired rows.
CREATE INDEX sessions_expires ON sessions (expires_at);
