//! `deploy/grafana/`: both dashboards are valid Grafana dashboards on the data sources the
//! provisioning defines; every SQL query of the energy dashboard (panels and template
//! variables, Grafana's macros expanded as Grafana does) runs as the read-only role
//! `headend_grafana` on a database with real energy and gives the figures the API gives; that
//! role reads nothing but its views and writes nothing; every metric of the operations
//! dashboard is one Headend exports and every PromQL expression parses (`promtool`).

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use headend_e2e::{TestApp, METRICS_TOKEN};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::energy::{counters_doc, heat_pump_circuit, local, publish, settle, two_band_contract};

/// Headend's metric names the operations dashboard may use (issue 18's list; the energy test
/// finds each in `/metrics`), and the histograms, whose `_bucket`, `_sum` and `_count` series
/// PromQL reads.
const METRICS: &str = "headend_journal_pending_records headend_journal_checkpoint \
    headend_journal_last_seq headend_journal_bytes headend_db_errors_total \
    headend_ingest_messages_total headend_ingest_measurement_rows_total \
    headend_ingest_register_readings_total headend_ingest_rejects_total headend_mqtt_connections \
    headend_http_requests_total headend_alarms_raised_total headend_db_pool_connections \
    headend_db_pool_idle headend_profile_backlog_counters headend_profile_backlog_age_seconds \
    headend_gateways headend_alarm_outbox_pending headend_relay_commands_pending \
    headend_modbus_converter_polls_total headend_modbus_converter_poll_failures_total";
const HISTOGRAMS: &str = "headend_db_batch_seconds headend_http_request_duration_seconds \
    headend_profile_step_seconds headend_ingest_lag_seconds";

const GW: &str = "SG000018";

/// A file of `deploy/grafana/`.
fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard(name: &str) -> Value {
    serde_json::from_str(&read(&format!("dashboards/{name}"))).expect("dashboard JSON")
}

/// (uid, type) of every data source in the provisioning file: a line reader for the flat
/// `- name:` / `uid:` / `type:` entries the file has.
fn provisioned_datasources() -> Vec<(String, String)> {
    let text = read("provisioning/datasources/headend.yaml");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("- name:") {
            out.push((String::new(), String::new()));
        } else if let (Some(value), Some(last)) = (line.strip_prefix("uid:"), out.last_mut()) {
            last.0 = value.trim().to_owned();
        } else if let (Some(value), Some(last)) = (line.strip_prefix("type:"), out.last_mut()) {
            last.1 = value.trim().to_owned();
        }
    }
    assert!(out
        .iter()
        .all(|(uid, kind)| !uid.is_empty() && !kind.is_empty()));
    out
}

/// Every panel, row children included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// A `datasource` reference of `plugin` resolves to a provisioned data source: its uid, or
/// `${var}` naming a datasource variable of that plugin whose default is a provisioned uid.
fn check_datasource(dash: &Value, ds: &Value, provisioned: &[(String, String)], plugin: &str) {
    let kind = ds["type"].as_str().expect("datasource type");
    assert_eq!(kind, plugin);
    let uid = ds["uid"].as_str().expect("datasource uid");
    let uid = match uid.strip_prefix("${").and_then(|u| u.strip_suffix('}')) {
        Some(var) => {
            let v = variables(dash)
                .into_iter()
                .find(|v| v["name"] == var)
                .unwrap_or_else(|| panic!("no variable {var}"));
            assert_eq!(v["type"], "datasource", "{var}: not a datasource");
            assert_eq!(v["query"], kind, "{var} lists another plugin");
            v["current"]["value"].as_str().expect("default").to_owned()
        }
        None => uid.to_owned(),
    };
    assert!(
        provisioned.iter().any(|(u, k)| *u == uid && k == kind),
        "datasource {uid} ({kind}) is not provisioned: {provisioned:?}"
    );
}

fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// A dashboard Grafana loads: uid, title, schema version, panels on the 24-column grid with
/// distinct ids, each panel and query on a provisioned data source of `plugin`.
fn check_dashboard(dash: &Value, uid: &str, plugin: &str) {
    let provisioned = provisioned_datasources();
    assert_eq!(dash["uid"], uid);
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["schemaVersion"].as_i64().is_some_and(|v| v >= 36));
    let all = panels(dash);
    assert!(all.len() > 3);
    let ids: HashSet<i64> = all.iter().map(|p| p["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), all.len(), "panel ids are not distinct");
    for p in &all {
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().expect("x"), g["w"].as_i64().expect("w"));
        assert!(g["h"].as_i64().is_some_and(|h| h > 0) && g["y"].as_i64().is_some());
        assert!(x >= 0 && w > 0 && x + w <= 24, "{}", p["title"]);
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        if p["type"] == "row" {
            continue;
        }
        check_datasource(dash, &p["datasource"], &provisioned, plugin);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        let refs: HashSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().expect("refId"))
            .collect();
        assert_eq!(refs.len(), targets.len());
        for t in targets {
            check_datasource(dash, &t["datasource"], &provisioned, plugin);
        }
    }
    for v in variables(dash).into_iter().filter(|v| v["type"] == "query") {
        check_datasource(dash, &v["datasource"], &provisioned, plugin);
    }
}

#[test]
fn dashboards_are_valid_on_the_provisioned_data_sources() {
    for (uid, plugin) in [
        ("headend-operations", "prometheus"),
        ("headend-energy", "grafana-postgresql-datasource"),
    ] {
        check_dashboard(&dashboard(&format!("{uid}.json")), uid, plugin);
    }
    let provider = read("provisioning/dashboards/headend.yaml");
    assert!(provider.contains("type: file") && provider.contains("path:"));
}

/// The `headend_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("headend_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn known_metric(name: &str) -> bool {
    let listed = |list: &str, name: &str| list.split_whitespace().any(|m| m == name);
    listed(METRICS, name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| listed(HISTOGRAMS, base))
        })
}

/// Every metric the operations dashboard reads is one of Headend's, each selector filters
/// on `$instance`, and `promtool check rules` parses every expression.
#[test]
fn operations_dashboard_uses_headend_metrics_and_valid_promql() {
    let dash = dashboard("headend-operations.json");
    let mut exprs: Vec<String> = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr").to_owned();
            for name in metric_names(&expr) {
                assert!(
                    expr.contains(&format!("{name}{{instance=~\"$instance\"")),
                    "{name} without the $instance filter in {expr}"
                );
            }
            exprs.push(expr);
        }
    }
    let mut used = BTreeSet::new();
    let definitions = variables(&dash)
        .into_iter()
        .filter_map(|v| v["definition"].as_str().map(str::to_owned));
    for expr in exprs.iter().cloned().chain(definitions) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no Headend metric in {expr}");
        for name in names {
            assert!(known_metric(&name), "{name}: not Headend's ({expr})");
            used.insert(name);
        }
    }
    // What the issue asks the dashboard to show is there.
    let wanted = "headend_ingest_lag_seconds_bucket headend_journal_pending_records \
        headend_profile_backlog_counters headend_gateways headend_alarm_outbox_pending \
        headend_relay_commands_pending headend_modbus_converter_poll_failures_total \
        headend_http_requests_total headend_http_request_duration_seconds_bucket \
        headend_db_pool_connections";
    for name in wanted.split_whitespace() {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }

    // Grafana's variables as Grafana fills them in, then one recording rule per expression.
    let mut rules = String::from("groups:\n  - name: headend-operations-dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        assert!(!expr.contains('$'), "unexpanded variable in {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {}\n",
            Value::String(expr)
        ));
    }
    let mut file = tempfile::NamedTempFile::new().expect("rules file");
    file.write_all(rules.as_bytes()).expect("write rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): deploy/install-deps.sh"));
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What Grafana puts in the place of the dashboard's variables and its PostgreSQL macros
/// (`$__timeFilter`, `$__timeFrom`, `$__timeTo`, `$__timeGroup[Alias]`, `$__interval[_ms]`).
struct Expansion {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval_s: i64,
    /// (name, value as Grafana interpolates it: raw for a single value, quoted for a multi).
    vars: Vec<(&'static str, String)>,
}

impl Expansion {
    fn expand(&self, sql: &str) -> String {
        let mut sql = sql
            .replace("$__interval_ms", &(self.interval_s * 1000).to_string())
            .replace("$__interval", &format!("{}s", self.interval_s));
        for (name, value) in &self.vars {
            sql = sql
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        let ts = |t: DateTime<Utc>| format!("'{}'", t.format("%Y-%m-%dT%H:%M:%SZ"));
        while let Some(at) = sql.find("$__") {
            let open = at + sql[at..].find('(').expect("macro arguments");
            let close = open + sql[open..].find(')').expect("closing parenthesis");
            let args: Vec<&str> = sql[open + 1..close].split(',').map(str::trim).collect();
            let group = |col: &str| {
                let s = self.interval_s;
                format!("floor(extract(epoch from {col})/{s})*{s}")
            };
            let replacement = match &sql[at + 3..open] {
                "timeFilter" => {
                    format!("{} BETWEEN {} AND {}", args[0], ts(self.from), ts(self.to))
                }
                "timeFrom" => ts(self.from),
                "timeTo" => ts(self.to),
                "timeGroup" => group(args[0]),
                "timeGroupAlias" => format!("{} AS \"time\"", group(args[0])),
                other => panic!("macro $__{other} is not expanded by this test"),
            };
            sql.replace_range(at..=close, &replacement);
        }
        assert!(!sql.contains('$'), "unexpanded variable in {sql}");
        sql
    }
}

/// Runs `sql` as `headend_grafana` (in a transaction rolled back): a query's rows, each a
/// JSON object by column name, or nothing for a statement (`rows` false).
async fn as_grafana(pool: &PgPool, sql: &str, rows: bool) -> Result<Vec<Value>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL ROLE headend_grafana")
        .execute(&mut *tx)
        .await?;
    let result = if rows {
        sqlx::query_scalar(&format!("SELECT to_jsonb(q) FROM ({sql}) q"))
            .fetch_all(&mut *tx)
            .await
    } else {
        sqlx::query(sql).execute(&mut *tx).await.map(|_| Vec::new())
    };
    tx.rollback().await?;
    result
}

async fn api(app: &TestApp, token: &str, method: &str, path: &str, body: Value) -> Value {
    let r = app.request(method, path, Some(token), Some(body)).await;
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// A site with a main meter (10 kWh an hour) and a heat-pump circuit (4 kWh an hour), a
/// two-band contract (07:00-21:00 weekdays at 0.20 EUR/kWh, else 0.10), hourly readings over
/// Tuesday 17 November 2026 in Ljubljana. Returns (site, other site, circuit).
async fn office_with_heat_pump(app: &TestApp) -> (i64, i64, i64) {
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let site = app.site("Office", "Europe/Ljubljana").await;
    let other = app.site("Depot", "UTC").await;
    let password = app.gateway(GW, Some(site), None).await;
    let (_, circuit) = heat_pump_circuit(app, &admin, site).await;
    let contract = two_band_contract();
    api(
        app,
        &admin,
        "POST",
        &format!("/api/v1/sites/{site}/contracts"),
        contract,
    )
    .await;

    let tz: Tz = "Europe/Ljubljana".parse().expect("zone");
    let start = day_start();
    let readings = |serial: &str, base: i64, per_hour: i64| -> Vec<String> {
        (0..=24)
            .map(|h| {
                let t = start + Duration::hours(h);
                counters_doc(serial, &local(tz, t), base + h * per_hour, 0)
            })
            .collect()
    };
    let mut client = app.gateway_client(GW, &password).await;
    let main = readings("MAIN0001", 1_000_000, 10_000);
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &main).await;
    let pump = readings("PUMP0001", 2_000_000, 4_000);
    publish(&mut client, &format!("sg/{GW}/pub/counters/rs485/1"), &pump).await;
    settle(app, 4 * 25).await;
    let main = json!({ "measures": "site", "name": "Main supply" });
    api(app, &admin, "PATCH", "/api/v1/devices/MAIN0001", main).await;
    let pump = json!({ "circuit_id": circuit });
    api(app, &admin, "PATCH", "/api/v1/devices/PUMP0001", pump).await;
    // The placement queued a rebuild of the rollups and site totals.
    settle(app, 4 * 25).await;
    (site, other, circuit)
}

/// Local midnight starting 17 November 2026 in Ljubljana.
fn day_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-17T00:00:00+01:00")
        .expect("time")
        .with_timezone(&Utc)
}

fn close(value: &Value, want: f64, what: &str) {
    let got = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {value}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got}, expected {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_dashboard_queries_run_as_the_read_only_role() {
    let app = TestApp::spawn().await;
    let (site, other, circuit) = office_with_heat_pump(&app).await;
    let dash = dashboard("headend-energy.json");
    let from = day_start();
    let mut expansion = Expansion {
        from,
        to: from + Duration::days(1) - Duration::seconds(1),
        interval_s: 3600,
        vars: vec![("site", site.to_string())],
    };

    // Template variables first, as Grafana does: the sites, then the site's circuits.
    let vars = variables(&dash);
    let query_of = |name: &str| -> String {
        let v = vars.iter().find(|v| v["name"] == name).expect("variable");
        v["query"].as_str().expect("SQL variable query").to_owned()
    };
    let sites = as_grafana(&app.pool, &expansion.expand(&query_of("site")), true)
        .await
        .expect("site variable");
    assert_eq!(
        sites,
        vec![
            json!({ "__value": other, "__text": "Depot" }),
            json!({ "__value": site, "__text": "Office" })
        ]
    );
    let circuits = as_grafana(&app.pool, &expansion.expand(&query_of("circuit")), true)
        .await
        .expect("circuit variable");
    assert_eq!(
        circuits,
        vec![json!({ "__value": circuit, "__text": "Main board / Heat pump" })]
    );
    // "All" of a multi-value variable: every value, quoted.
    let all: Vec<String> = circuits
        .iter()
        .map(|c| format!("'{}'", c["__value"]))
        .collect();
    expansion.vars.push(("circuit", all.join(",")));

    // The single-row panels' rows: 14 h at 0.20 and 10 h at 0.10 EUR/kWh are 38 EUR on the
    // site's 10 kWh an hour, 15.2 EUR on the circuit's 4 kWh.
    let heat_pump = "Main board / Heat pump";
    let single = json!({
        "Site daily energy": { "Import": 240.0, "Export": 0.0 },
        "Site daily energy cost": { "Cost": 38.0 },
        "Site energy and cost by day":
            { "Day": "2026-11-17", "Import (kWh)": 240.0, "Cost": 38.0, "Currency": "EUR" },
        "Circuit daily energy": { "metric": heat_pump, "value": 96.0 },
        "Circuit daily energy cost": { "metric": heat_pump, "value": 15.2 },
        "Circuits over the time range":
            { "Circuit": heat_pump, "Import (kWh)": 96.0, "Cost": 15.2, "Currency": "EUR" },
    });
    let all = panels(&dash);
    assert_eq!(
        all.len(),
        single.as_object().expect("object").len() + 1,
        "a panel without expected values"
    );
    for p in all {
        let title = p["title"].as_str().expect("title");
        let sql = p["targets"][0]["rawSql"].as_str().expect("rawSql");
        let rows = as_grafana(&app.pool, &expansion.expand(sql), true)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
        if title == "Site power" {
            // 10 kWh an hour is a mean 10 kW in each of the day's 24 hours.
            assert_eq!(rows.len(), 24, "{rows:?}");
            for (h, row) in rows.iter().enumerate() {
                let t = from + Duration::hours(h as i64);
                close(&row["time"], t.timestamp() as f64, "hour");
                close(&row["Power"], 10.0, title);
            }
            continue;
        }
        let want = &single[title];
        assert_eq!(rows.len(), 1, "{title}: {rows:?}");
        let want = want
            .as_object()
            .unwrap_or_else(|| panic!("{title}: no expected values"));
        for (column, value) in want {
            match value.as_f64() {
                Some(v) => close(&rows[0][column], v, &format!("{title}: {column}")),
                None => assert_eq!(&rows[0][column], value, "{title}: {column}"),
            }
        }
    }

    // The other site has no energy: its panels are empty, not an error.
    expansion.vars[0].1 = other.to_string();
    let power = panels(&dash)[0]["targets"][0]["rawSql"]
        .as_str()
        .expect("sql");
    let rows = as_grafana(&app.pool, &expansion.expand(power), true).await;
    assert_eq!(rows.expect("other site").len(), 0);

    // Without its site meter the site is the unplaced main meter plus the circuit: the views'
    // twin of the topology gives the API's total.
    let admin = app.user_token("admin2@example.com", "admin", &[]).await;
    let unplace = json!({ "measures": null });
    api(&app, &admin, "PATCH", "/api/v1/devices/MAIN0001", unplace).await;
    settle(&app, 4 * 25).await;
    let path = format!("/api/v1/sites/{site}/consumption?from=2026-11-17&to=2026-11-18&by=day");
    let total = app.get(&path, &admin).await.json()["periods"][0]["total"].clone();
    assert_eq!(total["import_wh"], 336_000.0);
    let sql = format!("SELECT * FROM grafana.site_energy_days WHERE site_id = {site}");
    let rows = as_grafana(&app.pool, &sql, true).await.expect("site days");
    let row = &rows[0];
    assert_eq!(rows.len(), 1, "{rows:?}");
    close(&row["import_kwh"], 336.0, "import without a site meter");
    close(
        &row["cost"],
        total["energy_cost"].as_f64().expect("cost"),
        "cost",
    );

    read_only_role_reads_only_its_views(&app.pool).await;

    // Every metric the operations dashboard may use is in this build's /metrics (but the
    // per-converter ones, there from a converter's first poll on: `metrics::` polls one).
    let metrics = app
        .request("GET", "/metrics", Some(METRICS_TOKEN), None)
        .await;
    let names = METRICS
        .split_whitespace()
        .chain(HISTOGRAMS.split_whitespace());
    for name in names.filter(|n| !n.contains("_converter_")) {
        assert!(
            metrics.body.contains(&format!("# TYPE {name} ")),
            "{name} not in /metrics"
        );
    }
    app.stop().await;
}

/// `headend_grafana` logs in nowhere, reads only the granted views (none exposing a
/// secret), nothing in `public`, and writes nothing.
async fn read_only_role_reads_only_its_views(pool: &PgPool) {
    // NOLOGIN, and no privilege on anything outside its schema.
    let confined: bool = sqlx::query_scalar(
        "SELECT NOT r.rolcanlogin AND NOT EXISTS (
             SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN unnest('{SELECT,INSERT,UPDATE,DELETE}'::text[]) p
             WHERE n.nspname NOT IN ('grafana', 'pg_catalog', 'information_schema')
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
               AND has_table_privilege(r.oid, c.oid, p))
         FROM pg_roles r WHERE r.rolname = 'headend_grafana'",
    )
    .fetch_one(pool)
    .await
    .expect("role");
    assert!(
        confined,
        "headend_grafana logs in or has privileges outside its views"
    );
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname || '.' || a.attname FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'grafana' AND a.attnum > 0
           AND has_table_privilege('headend_grafana', c.oid, 'SELECT')",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    assert!(columns.len() > 10);
    for col in &columns {
        for secret in ["password", "hash", "token", "credential", "email", "mac"] {
            assert!(!col.contains(secret), "{col} in a view Grafana reads");
        }
    }

    for statement in [
        "SELECT * FROM public.users",
        "SELECT * FROM public.sessions",
        "SELECT * FROM public.gateways",
        "SELECT * FROM public.sites",
        "SELECT * FROM public.energy_days",
        "SELECT * FROM grafana.meter_registers",
        "SELECT * FROM grafana.site_top_meters",
        "SELECT * FROM grafana.meter_days",
        "INSERT INTO grafana.sites (name, time_zone) VALUES ('x', 'UTC')",
        "UPDATE grafana.sites SET name = 'x'",
        "DELETE FROM grafana.site_power",
        "DELETE FROM public.energy_days",
        "CREATE TABLE grafana.scratch (a int)",
        "CREATE TABLE public.scratch (a int)",
    ] {
        match as_grafana(pool, statement, false).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
            other => panic!("{statement}: expected permission denied, got {other:?}"),
        }
    }
}
