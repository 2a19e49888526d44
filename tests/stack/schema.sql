-- What a careful user writes for the Node-RED flows (tests/stack/flow-*.json): the same wide
-- measurements row as Headend's, counter readings one row per counter, both keyed so that a
-- redelivered message (QoS 1 is at least once) is skipped by ON CONFLICT DO NOTHING. Meters
-- are named by serial; there is no meter registry, so no foreign keys (Headend has them).
DROP TABLE IF EXISTS measurements, counter_readings;
CREATE TABLE measurements (
    meter        TEXT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    tariff       SMALLINT,
    frequency    REAL,
    u1 REAL, u2 REAL, u3 REAL,
    u12 REAL, u23 REAL, u31 REAL,
    i1 REAL, i2 REAL, i3 REAL, i_n REAL,
    p REAL, p1 REAL, p2 REAL, p3 REAL,
    q REAL, q1 REAL, q2 REAL, q3 REAL,
    s REAL, s1 REAL, s2 REAL, s3 REAL,
    pf REAL, pf1 REAL, pf2 REAL, pf3 REAL,
    pa REAL, pa1 REAL, pa2 REAL, pa3 REAL,
    temperature REAL,
    thd_i1 REAL, thd_i2 REAL, thd_i3 REAL,
    thd_u1 REAL, thd_u2 REAL, thd_u3 REAL,
    PRIMARY KEY (meter, ts)
);
CREATE TABLE counter_readings (
    meter        TEXT NOT NULL,
    counter      TEXT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    value_wh     DOUBLE PRECISION NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (meter, counter, ts)
);
