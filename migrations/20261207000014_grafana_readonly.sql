-- Read-only views for Grafana (deploy/grafana/), in their own schema, and the role that may
-- read them and nothing else.
--
-- Grafana's PostgreSQL data source logs in as a role that is a member of `headend_grafana`
-- (deploy/grafana/README.md). The views run with their owner's rights, so the role needs no
-- privilege on the tables: it sees energy, power, site and circuit names, never users,
-- sessions, gateways or their credentials. New objects only: nothing existing changes.
--
-- Energy is shown in kWh, power in kW and cost in the contract's currency: the views are for
-- charts (float8); the API and CSV exports stay the exact source.

CREATE SCHEMA grafana;

-- Sites, for the $site template variable and the local calendar of the daily views.
CREATE VIEW grafana.sites AS
SELECT s.id AS site_id, s.name, s.time_zone
FROM sites s;

-- Circuits with their panel and site, for the $circuit template variable.
CREATE VIEW grafana.circuits AS
SELECT c.id AS circuit_id, p.site_id, p.id AS panel_id, p.name AS panel_name,
       c.name AS circuit_name, p.name || ' / ' || c.name AS name, c.usage
FROM circuits c
JOIN panels p ON p.id = c.panel_id;

-- Every meter register of a site with what it means for billing: the SQL twin of
-- accounting::roles::role_of (a device may name its import/export/reactive registers, else
-- the SG convention counter1nr..counter3nr) and of the panel a meter lies in
-- (accounting::topology::Placement::panel).
CREATE VIEW grafana.meter_registers AS
SELECT g.site_id, d.id AS device_id, d.measures, d.panel_id, d.circuit_id,
       CASE d.measures
           WHEN 'panel' THEN d.panel_id
           WHEN 'circuit' THEN COALESCE(c.panel_id, d.panel_id)
       END AS in_panel,
       k.id AS counter_id,
       CASE
           WHEN k.name = COALESCE(d.import_register, 'counter1nr') THEN 'import'
           WHEN k.name = COALESCE(d.export_register, 'counter2nr') THEN 'export'
           WHEN k.name = COALESCE(d.reactive_register, 'counter3nr') THEN 'reactive'
           ELSE 'other'
       END AS role
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
JOIN counters k ON k.device_id = d.id
LEFT JOIN circuits c ON c.id = d.circuit_id
WHERE d.kind = 'meter' AND g.site_id IS NOT NULL;

-- The meters whose sum is the site total, without double counting: the SQL twin of
-- accounting::topology::top_level (site meters when the site has any; else panel meters,
-- circuit meters of panels without a meter of their own, and meters not placed).
CREATE VIEW grafana.site_top_meters AS
WITH m AS (
    SELECT DISTINCT site_id, device_id, measures, panel_id, in_panel
    FROM grafana.meter_registers
)
SELECT m.site_id, m.device_id
FROM m
WHERE CASE
    WHEN EXISTS (SELECT 1 FROM m s WHERE s.site_id = m.site_id AND s.measures = 'site')
        THEN m.measures IS NOT DISTINCT FROM 'site'
    WHEN m.measures = 'circuit'
        THEN m.in_panel IS NULL OR NOT EXISTS (
            SELECT 1 FROM m p
            WHERE p.site_id = m.site_id AND p.measures = 'panel' AND p.panel_id = m.in_panel)
    ELSE true
END;

-- The site's mean import power per UTC quarter-hour (its top-level meters, as the profile
-- worker sums them into site_intervals): energy in mWh × 4 per hour = mW, / 1e6 = kW.
CREATE VIEW grafana.site_power AS
SELECT i.site_id, i.start, i.energy_milli * 4 / 1e6::float8 AS power_kw
FROM site_intervals i;

-- Per meter and local day: import and export energy and cost from the daily rollup (the
-- site's local calendar). `priced`: the import has a price, and the export too unless it is 0
-- (as the consumption API decides).
CREATE VIEW grafana.meter_days AS
SELECT r.site_id, r.device_id, r.measures, r.circuit_id, d.day,
       sum(d.energy_milli) FILTER (WHERE r.role = 'import') AS import_milli,
       sum(d.energy_milli) FILTER (WHERE r.role = 'export') AS export_milli,
       sum(d.cost_nano) FILTER (WHERE r.role = 'import') AS import_cost_nano,
       sum(d.cost_nano) FILTER (WHERE r.role = 'export') AS export_cost_nano,
       bool_and(d.cost_nano IS NOT NULL OR (r.role = 'export' AND d.energy_milli = 0)) AS priced,
       max(d.currency) AS currency
FROM grafana.meter_registers r
JOIN energy_days d ON d.counter_id = r.counter_id
WHERE r.role IN ('import', 'export')
GROUP BY r.site_id, r.device_id, r.measures, r.circuit_id, d.day;

-- Daily energy and cost per site, from its top-level meters. `day_start` is the local
-- midnight that starts the day (for $__timeFilter); cost is the energy cost (import minus
-- export credit) in `currency`, NULL unless the whole day is `priced`.
CREATE VIEW grafana.site_energy_days AS
SELECT m.site_id, m.day, (m.day::timestamp AT TIME ZONE s.time_zone) AS day_start,
       sum(m.import_milli) / 1e6::float8 AS import_kwh,
       COALESCE(sum(m.export_milli), 0) / 1e6::float8 AS export_kwh,
       CASE WHEN bool_and(m.priced) THEN (COALESCE(sum(m.import_cost_nano), 0)
            - COALESCE(sum(m.export_cost_nano), 0)) / 1e9::float8 END AS cost,
       max(m.currency) AS currency, bool_and(m.priced) AS priced
FROM grafana.meter_days m
JOIN grafana.site_top_meters t ON t.device_id = m.device_id
JOIN sites s ON s.id = m.site_id
GROUP BY m.site_id, m.day, s.time_zone;

-- Daily energy and cost per circuit (the meters placed on it), as grafana.site_energy_days.
CREATE VIEW grafana.circuit_energy_days AS
SELECT c.circuit_id, c.site_id, c.name, m.day,
       (m.day::timestamp AT TIME ZONE s.time_zone) AS day_start,
       sum(m.import_milli) / 1e6::float8 AS import_kwh,
       COALESCE(sum(m.export_milli), 0) / 1e6::float8 AS export_kwh,
       CASE WHEN bool_and(m.priced) THEN (COALESCE(sum(m.import_cost_nano), 0)
            - COALESCE(sum(m.export_cost_nano), 0)) / 1e9::float8 END AS cost,
       max(m.currency) AS currency, bool_and(m.priced) AS priced
FROM grafana.circuits c
JOIN grafana.meter_days m ON m.circuit_id = c.circuit_id AND m.measures = 'circuit'
JOIN sites s ON s.id = c.site_id
GROUP BY c.circuit_id, c.site_id, c.name, m.day, s.time_zone;

-- The role. Roles belong to the cluster while migrations run in each database (every test
-- database on one cluster), so it is created only when missing and a concurrent creation is
-- not an error. A migration user without CREATEROLE (a plain database owner) creates none and
-- warns; an administrator then creates the role and makes these grants by hand
-- (deploy/grafana/README.md). When the role exists, the grants are made here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'headend_grafana') THEN
        IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            BEGIN
                CREATE ROLE headend_grafana NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        ELSE
            RAISE WARNING 'role headend_grafana not created: % lacks CREATEROLE '
                '(deploy/grafana/README.md)', current_user;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'headend_grafana') THEN
        GRANT USAGE ON SCHEMA grafana TO headend_grafana;
        -- The views Grafana reads; the helper views stay private.
        GRANT SELECT ON grafana.sites, grafana.circuits, grafana.site_power,
            grafana.site_energy_days, grafana.circuit_energy_days TO headend_grafana;
    END IF;
END
$$;
