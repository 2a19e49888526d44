-- Monthly rollup of energy_days per counter, so a year by month (with a grouping by circuit or
-- meter) reads 12 rows per counter instead of 365.
--
-- Kept by statement-level triggers on energy_days, so every path that rewrites days (the
-- profile worker, a time-zone change) keeps the months true in the same transaction. A month
-- is recomputed whole from its days: the rollup can never drift from them.
CREATE TABLE energy_months (
    counter_id    BIGINT NOT NULL REFERENCES counters (id) ON DELETE CASCADE,
    -- First day of the site-local month.
    month         DATE NOT NULL CHECK (EXTRACT(DAY FROM month) = 1),
    energy_milli  BIGINT NOT NULL,
    measured      BIGINT NOT NULL,
    estimated     BIGINT NOT NULL,
    -- Sum over the priced days; priced_days = days when every day had a price.
    cost_nano     BIGINT,
    priced_days   INTEGER NOT NULL,
    days          INTEGER NOT NULL,
    peak_milli    BIGINT NOT NULL,
    currency      TEXT,
    PRIMARY KEY (counter_id, month)
);

CREATE FUNCTION energy_months_recompute(counters BIGINT[], months DATE[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM energy_months m
    USING UNNEST(counters, months) AS k(c, mo)
    WHERE m.counter_id = k.c AND m.month = k.mo;
    INSERT INTO energy_months (counter_id, month, energy_milli, measured, estimated, cost_nano,
                               priced_days, days, peak_milli, currency)
    SELECT d.counter_id, k.mo, sum(d.energy_milli)::int8, sum(d.measured)::int8,
           sum(d.estimated)::int8, sum(d.cost_nano)::int8, count(d.cost_nano)::int4,
           count(*)::int4, max(d.peak_milli), max(d.currency)
    FROM UNNEST(counters, months) AS k(c, mo)
    JOIN energy_days d ON d.counter_id = k.c AND d.day >= k.mo
                      AND d.day < (k.mo + INTERVAL '1 month')::date
    GROUP BY d.counter_id, k.mo
    ON CONFLICT (counter_id, month) DO UPDATE SET
        energy_milli = EXCLUDED.energy_milli, measured = EXCLUDED.measured,
        estimated = EXCLUDED.estimated, cost_nano = EXCLUDED.cost_nano,
        priced_days = EXCLUDED.priced_days, days = EXCLUDED.days,
        peak_milli = EXCLUDED.peak_milli, currency = EXCLUDED.currency;
END
$$;

CREATE FUNCTION energy_months_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM energy_months_recompute(array_agg(c), array_agg(mo))
    FROM (SELECT DISTINCT counter_id AS c, (day - (EXTRACT(DAY FROM day)::int - 1)) AS mo
          FROM inserted_days) k;
    RETURN NULL;
END
$$;

CREATE FUNCTION energy_months_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM energy_months_recompute(array_agg(c), array_agg(mo))
    FROM (SELECT DISTINCT counter_id AS c, (day - (EXTRACT(DAY FROM day)::int - 1)) AS mo
          FROM deleted_days) k;
    RETURN NULL;
END
$$;

CREATE TRIGGER energy_days_months_insert AFTER INSERT ON energy_days
    REFERENCING NEW TABLE AS inserted_days
    FOR EACH STATEMENT EXECUTE FUNCTION energy_months_after_insert();
CREATE TRIGGER energy_days_months_delete AFTER DELETE ON energy_days
    REFERENCING OLD TABLE AS deleted_days
    FOR EACH STATEMENT EXECUTE FUNCTION energy_months_after_delete();
CREATE TRIGGER energy_days_months_update AFTER UPDATE ON energy_days
    REFERENCING NEW TABLE AS inserted_days
    FOR EACH STATEMENT EXECUTE FUNCTION energy_months_after_insert();

-- Months of the days already there.
INSERT INTO energy_months (counter_id, month, energy_milli, measured, estimated, cost_nano,
                           priced_days, days, peak_milli, currency)
SELECT counter_id, (day - (EXTRACT(DAY FROM day)::int - 1)), sum(energy_milli)::int8, sum(measured)::int8,
       sum(estimated)::int8, sum(cost_nano)::int8, count(cost_nano)::int4, count(*)::int4,
       max(peak_milli), max(currency)
FROM energy_days
GROUP BY 1, 2;
