-- A gateway's verified-credential record: HMAC-SHA256(key, serial, password_hash, password)
-- under a key kept in the data directory (never here), written after one argon2 verification
-- so that a fleet reconnecting after a restart is checked without argon2. Bound to
-- password_hash: a rotated password invalidates it. See docs/security.md.
ALTER TABLE gateways
    ADD COLUMN credential_mac bytea CHECK (octet_length(credential_mac) = 32);
