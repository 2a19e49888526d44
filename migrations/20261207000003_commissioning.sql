-- When a meter was commissioned, as an admin says (PATCH /api/v1/devices/{serial}); NULL:
-- unknown, no bound. Counter readings dated before it are kept (readings are the truth) but
-- the profile worker never turns them into intervals, and ingest reports them in a partial
-- reject. Not derived from first contact: a gateway's store-and-forward backlog legitimately
-- predates the device row. Changing it queues a recompute of the device's counters.
ALTER TABLE devices ADD COLUMN commissioned_at TIMESTAMPTZ;
