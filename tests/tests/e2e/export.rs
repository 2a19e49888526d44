//! CSV export end to end: readings published over MQTT, exported as CSV, parsed back and
//! compared value by value with the JSON API; formats, quoting, scope, DST, and a download
//! that breaks after it started.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use headend_e2e::{eventually, HttpResponse, MqttClient, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GW: &str = "SG000017";
const HEADER: &str =
    "start_local,end_local,start_utc,site,meter,meter_name,register,value,unit,quality,band,cost,currency";

/// A counters document with the two active registers given in mWh (exact, 6 kWh decimals).
fn counters_doc(serial: &str, local: &str, import_mwh: i64, export_mwh: i64) -> String {
    let kwh = |m: i64| format!("{}.{:06} kWh", m / 1_000_000, m % 1_000_000);
    json!({
        "header": {
            "cmd": "get_energy_counters",
            "model": "IE38MD",
            "serial_number": serial,
            "local_time": local,
            "resetable_counters": 0,
            "non_resetable_counters": 2
        },
        "counters": { "counter1nr": kwh(import_mwh), "counter2nr": kwh(export_mwh) },
    })
    .to_string()
}

fn local(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%d.%m.%Y %H:%M:%S").to_string()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Waits until ingest has committed `readings` counter readings and the profile worker has
/// done the work they queued.
async fn settle(app: &TestApp, readings: i64) {
    app.wait_count("SELECT count(*) FROM counter_readings", readings)
        .await;
    let idle = eventually(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "profile worker did not finish its queue");
}

async fn publish(client: &mut MqttClient, topic: &str, docs: &[String]) {
    for doc in docs {
        client.publish(topic, doc.clone()).await;
    }
    client.wait_acks(docs.len()).await;
}

/// An RFC 4180 reader, strict: CRLF row ends, quotes only around whole fields, every row as
/// wide as the header.
fn parse_csv(text: &str, sep: char) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut was_quoted) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => (quoted, was_quoted) = (true, true),
            '"' => panic!("a quote inside an unquoted field: {field:?}"),
            _ if c == sep => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                was_quoted = false;
            }
            '\n' => panic!("a bare LF ends a row"),
            _ if was_quoted => panic!("text after a closing quote: {c:?}"),
            _ => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote");
    assert!(
        field.is_empty() && row.is_empty(),
        "the last row has no CRLF"
    );
    if let Some(width) = rows.first().map(Vec::len) {
        for r in &rows {
            assert_eq!(r.len(), width, "{r:?}");
        }
    }
    rows
}

/// Rows as maps from the header's names.
fn records(text: &str, sep: char) -> Vec<HashMap<String, String>> {
    let rows = parse_csv(text, sep);
    let (header, rows) = rows.split_first().expect("a header row");
    rows.iter()
        .map(|r| header.iter().cloned().zip(r.iter().cloned()).collect())
        .collect()
}

/// An exact decimal as an integer of 10^-`scale`.
fn scaled(text: &str, scale: u32) -> i128 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(
        frac.len() <= scale as usize,
        "{text} has more than {scale} decimals"
    );
    let digits = format!("{int}{frac:0<width$}", width = scale as usize);
    digits.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Rounded half away from zero from 10^-`from` to 10^-`to` decimals.
fn round(v: i128, from: u32, to: u32) -> i128 {
    let unit = 10i128.pow(from - to);
    if v >= 0 {
        (v + unit / 2) / unit
    } else {
        (v - unit / 2) / unit
    }
}

async fn export(app: &TestApp, token: &str, query: &str) -> HttpResponse {
    app.get(&format!("/api/v1/export.csv?{query}"), token).await
}

async fn export_ok(app: &TestApp, token: &str, query: &str) -> String {
    let r = export(app, token, query).await;
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    let head = r.headers.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/csv; charset=utf-8"),
        "{}",
        r.headers
    );
    assert!(
        head.contains("content-disposition: attachment; filename=\"headend-"),
        "{}",
        r.headers
    );
    r.body
}

async fn api(app: &TestApp, token: &str, method: &str, path: &str, body: Value) -> Value {
    let r = app.request(method, path, Some(token), Some(body)).await;
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {}",
        r.body
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Two meters, a contract, a Tuesday of readings (with a gap and a missing last hour): the
/// interval, daily and monthly CSV agree value by value with the profile and consumption
/// APIs, and interval costs add up exactly to the stored daily cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_round_trip_matches_the_api() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let site = app.site("Plant; \"North\"", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let viewer = app.user_token("v@example.com", "viewer", &[site]).await;
    // Weekdays 07:00-21:00 "high", else "low"; export paid only in "high".
    api(
        &app,
        &admin,
        "POST",
        &format!("/api/v1/sites/{site}/contracts"),
        json!({ "valid_from": "2026-01-01", "contract": {
            "currency": "EUR",
            "bands": [
                { "name": "high", "import_price": "0.2013", "export_price": "0.0711" },
                { "name": "low", "import_price": "0.1007" }
            ],
            "default_band": "low",
            "schedule": [{ "band": "high", "days": ["mon", "tue", "wed", "thu", "fri"],
                           "from": "07:00", "to": "21:00" }],
            "holidays": []
        }}),
    )
    .await;

    let mut client = app.gateway_client(GW, &password).await;
    let day = utc("2026-11-17T00:00:00+01:00");
    let (mut imp, mut exp) = (1_000_000_123i64, 5_000_000i64);
    let mut main = Vec::new();
    let mut pump = Vec::new();
    let mut steps = Vec::new();
    // Quarter-hourly until 23:00 (the last four quarters stay missing), none 10:15-10:45
    // (those intervals are estimated). Loads with mWh fractions.
    for q in 0..=92i64 {
        let t = day + chrono::Duration::minutes(15 * q);
        if !(41..44).contains(&q) {
            main.push(counters_doc("MAIN0001", &local(tz, t), imp, exp));
            pump.push(counters_doc(
                "PUMP0001",
                &local(tz, t),
                2_000_000 + q * 1_234_567,
                0,
            ));
        }
        let step = 250_123 + (q * 37_011) % 400_000;
        steps.push(step);
        imp += step;
        exp += (q % 5) * 1_001;
    }
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &main).await;
    publish(&mut client, &format!("sg/{GW}/pub/counters/rs485/1"), &pump).await;
    settle(&app, 2 * (main.len() + pump.len()) as i64).await;

    // Intervals of one meter against its profile.
    let text = export_ok(
        &app,
        &viewer,
        "kind=intervals&meter=MAIN0001&from=2026-11-17&to=2026-11-18",
    )
    .await;
    assert!(text.starts_with(&format!("{HEADER}\r\n")));
    let rows = records(&text, ',');
    assert_eq!(rows.len(), 2 * 96);
    let profile = app
        .get(
            "/api/v1/devices/MAIN0001/profile?from=2026-11-17&to=2026-11-18",
            &viewer,
        )
        .await;
    assert_eq!(profile.status, 200, "{}", profile.body);
    let profile = profile.json();
    let mut compared = 0;
    let mut pico_sums: HashMap<String, i128> = HashMap::new();
    for register in profile["registers"].as_array().unwrap() {
        let name = register["name"].as_str().unwrap();
        let csv_rows: Vec<&HashMap<String, String>> =
            rows.iter().filter(|r| r["register"] == name).collect();
        let intervals = register["intervals"].as_array().unwrap();
        assert_eq!(csv_rows.len(), intervals.len(), "{name}");
        for (row, interval) in csv_rows.iter().zip(intervals) {
            assert_eq!(row["start_utc"], interval["start"].as_str().unwrap());
            assert_eq!(
                row["start_local"],
                interval["start_local"].as_str().unwrap()
            );
            assert_eq!(row["site"], "Plant; \"North\"");
            assert_eq!(row["meter"], "MAIN0001");
            assert_eq!(row["unit"], "Wh");
            assert_eq!(row["quality"], interval["quality"].as_str().unwrap());
            assert_eq!(row["band"], interval["band"].as_str().unwrap_or_default());
            match interval["energy"].as_f64() {
                Some(e) => assert_eq!(row["value"].parse::<f64>().unwrap(), e, "{row:?}"),
                None => assert_eq!(row["value"], ""),
            }
            match interval["cost"].as_f64() {
                Some(c) => {
                    let pico = scaled(&row["cost"], 12);
                    assert_eq!(round(pico, 12, 6) as f64 / 1e6, c, "{row:?}");
                    assert_eq!(row["currency"], "EUR");
                    *pico_sums.entry(name.to_owned()).or_default() += pico;
                }
                None => assert_eq!(row["cost"], ""),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 192);
    // Exact to the mWh: the first import interval is the first step, not a float of it.
    let first = rows.iter().find(|r| r["register"] == "counter1nr").unwrap();
    assert_eq!(first["value"], "250.123");
    assert_eq!(first["start_local"], "2026-11-17T00:00:00+01:00");
    assert_eq!(first["end_local"], "2026-11-17T00:15:00+01:00");
    assert_eq!(first["start_utc"], "2026-11-16T23:00:00Z");
    assert_eq!(first["band"], "low");
    // 250.123 Wh at 0.1007 EUR/kWh, exactly.
    assert_eq!(first["cost"], "0.0251873861");
    let import_rows: Vec<_> = rows
        .iter()
        .filter(|r| r["register"] == "counter1nr")
        .collect();
    assert_eq!(import_rows[41]["quality"], "estimated");
    assert!(import_rows[92..].iter().all(|r| r["quality"] == "missing"));

    // Days of the whole site against the consumption API, and the stored daily cost against
    // the sum of the exact interval costs.
    let text = export_ok(
        &app,
        &viewer,
        &format!("kind=daily&site={site}&from=2026-11-17&to=2026-11-18"),
    )
    .await;
    let days = records(&text, ',');
    assert_eq!(days.len(), 4, "{text}");
    let consumption = app
        .get(
            &format!(
                "/api/v1/sites/{site}/consumption?from=2026-11-17&to=2026-11-18&by=day&group=meter"
            ),
            &viewer,
        )
        .await
        .json();
    let period = &consumption["periods"][0];
    let mut total_import = 0i128;
    for group in period["groups"].as_array().unwrap() {
        let serial = group["key"].as_str().unwrap();
        let find = |register: &str| {
            days.iter()
                .find(|r| r["meter"] == serial && r["register"] == register)
                .unwrap_or_else(|| panic!("{serial} {register} in {days:?}"))
        };
        let (import, export) = (find("counter1nr"), find("counter2nr"));
        assert_eq!(import["start_local"], "2026-11-17T00:00:00+01:00");
        assert_eq!(import["end_local"], "2026-11-18T00:00:00+01:00");
        assert_eq!(import["quality"], "partial");
        assert_eq!(
            import["value"].parse::<f64>().unwrap(),
            group["import_wh"].as_f64().unwrap()
        );
        assert_eq!(
            export["value"].parse::<f64>().unwrap(),
            group["export_wh"].as_f64().unwrap()
        );
        let cost = scaled(&import["cost"], 9) - scaled(&export["cost"], 9);
        assert_eq!(
            round(cost, 9, 6) as f64 / 1e6,
            group["energy_cost"].as_f64().unwrap(),
            "{serial}"
        );
        total_import += scaled(&import["value"], 3);
        if serial == "MAIN0001" {
            for (register, row) in [("counter1nr", import), ("counter2nr", export)] {
                assert_eq!(
                    scaled(&row["cost"], 9),
                    round(pico_sums[register], 12, 9),
                    "{register}: the day's cost is the sum of its intervals' exact costs"
                );
            }
        }
    }
    assert_eq!(
        total_import as f64 / 1000.0,
        period["total"]["import_wh"].as_f64().unwrap()
    );

    // The month holds the same day: same energy and cost, partial.
    let text = export_ok(
        &app,
        &viewer,
        "kind=monthly&meter=MAIN0001&from=2026-11-01&to=2026-12-01",
    )
    .await;
    let months = records(&text, ',');
    assert_eq!(months.len(), 2);
    let day_import = days
        .iter()
        .find(|r| r["meter"] == "MAIN0001" && r["register"] == "counter1nr")
        .unwrap();
    assert_eq!(months[0]["start_local"], "2026-11-01T00:00:00+01:00");
    assert_eq!(months[0]["end_local"], "2026-12-01T00:00:00+01:00");
    assert_eq!(months[0]["value"], day_import["value"]);
    assert_eq!(months[0]["cost"], day_import["cost"]);
    assert_eq!(months[0]["quality"], "partial");

    // Raw readings, exact.
    let text = export_ok(
        &app,
        &viewer,
        "kind=readings&meter=MAIN0001&from=2026-11-17&to=2026-11-18&register=counter1nr",
    )
    .await;
    let readings = records(&text, ',');
    assert_eq!(readings.len(), main.len());
    assert_eq!(readings[0]["value"], "1000000.123");
    assert_eq!(readings[0]["quality"], "ok");
    assert_eq!(readings[0]["start_local"], "2026-11-17T00:00:00+01:00");

    // Completeness for audits: 96 expected, 4 estimated (the hour around the gap), 4 missing
    // (after the last reading).
    let text = export_ok(
        &app,
        &viewer,
        "kind=completeness&meter=MAIN0001&from=2026-11-17&to=2026-11-18&register=counter1nr",
    )
    .await;
    let summary = records(&text, ',');
    assert_eq!(summary.len(), 1, "{text}");
    let s = &summary[0];
    assert_eq!(
        (
            &s["expected"][..],
            &s["measured"][..],
            &s["estimated"][..],
            &s["missing"][..]
        ),
        ("96", "88", "4", "4")
    );
    assert_eq!(s["measured_percent"], "91.67");
    assert_eq!(s["estimated_percent"], "4.17");
    assert_eq!(s["missing_percent"], "4.17");
    assert_eq!(
        scaled(&s["energy"], 3),
        steps[..92].iter().sum::<i64>() as i128
    );
    drop(client);
    app.stop().await;
}

/// `sep`, `decimal` and `bom`, RFC 4180 quoting of a hostile meter name, measurements, and
/// clear 400s for bad parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_quoting_and_bad_requests() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let site = app.site("Office", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let viewer = app.user_token("v@example.com", "viewer", &[site]).await;
    let mut client = app.gateway_client(GW, &password).await;
    let t0 = utc("2026-11-17T08:00:00+01:00");
    let docs: Vec<String> = (0..5)
        .map(|q| {
            counters_doc(
                "X0000124",
                &local(tz, t0 + chrono::Duration::minutes(15 * q)),
                7_000_000 + q * 1_234_567,
                0,
            )
        })
        .collect();
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &docs).await;
    let measurements = json!({
        "header": { "cmd": "get_measurements", "model": "IE38MD", "serial_number": "X0000124",
                    "local_time": local(tz, t0) },
        "measurements": { "U1": "230.1 V", "P0": "1234.5 W", "tariff": 2 }
    })
    .to_string();
    publish(
        &mut client,
        &format!("sg/{GW}/pub/measurements/ir"),
        &[measurements],
    )
    .await;
    settle(&app, 10).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;

    let name = "Boiler \"North\"; hall 2, east";
    api(
        &app,
        &admin,
        "PATCH",
        "/api/v1/devices/X0000124",
        json!({ "name": name }),
    )
    .await;
    let query = "kind=intervals&meter=X0000124&from=2026-11-17T08:00:00%2B01:00&to=2026-11-17T09:00:00%2B01:00&register=counter1nr";

    // Defaults: comma, point, no BOM.
    let text = export_ok(&app, &viewer, query).await;
    assert!(text.starts_with("start_local,"));
    assert!(text.contains(",X0000124,\"Boiler \"\"North\"\"; hall 2, east\",counter1nr,1234.567,Wh,measured,,,\r\n"), "{text}");
    let rows = records(&text, ',');
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["meter_name"] == name));

    // Excel in most of Europe: semicolons, decimal commas, a BOM.
    let text = export_ok(
        &app,
        &viewer,
        &format!("{query}&sep=semicolon&decimal=comma&bom=true"),
    )
    .await;
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or_else(|| panic!("no BOM: {text:?}"));
    assert!(text.starts_with("start_local;end_local;start_utc;"));
    assert!(
        text.contains(";\"Boiler \"\"North\"\"; hall 2, east\";counter1nr;1234,567;Wh;"),
        "{text}"
    );
    let rows = records(text, ';');
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["meter_name"] == name));
    assert_eq!(rows[0]["value"], "1234,567");

    // A decimal comma with the comma separator: numbers are quoted.
    let text = export_ok(&app, &viewer, &format!("{query}&decimal=comma")).await;
    assert!(text.contains(",\"1234,567\",Wh,"), "{text}");
    assert_eq!(records(&text, ',')[0]["value"], "1234,567");

    // Names cannot hold line breaks through the API ...
    let r = app
        .request(
            "PATCH",
            "/api/v1/devices/X0000124",
            Some(&admin),
            Some(json!({ "name": "two\nlines" })),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // ... but whatever is stored is quoted: CR and LF inside a quoted field.
    let multiline = "Line 1\r\nLine 2, \"quoted\"; done";
    sqlx::query("UPDATE devices SET name = $1 WHERE serial = 'X0000124'")
        .bind(multiline)
        .execute(&app.pool)
        .await
        .unwrap();
    let text = export_ok(&app, &viewer, query).await;
    assert!(
        text.contains("\"Line 1\r\nLine 2, \"\"quoted\"\"; done\""),
        "{text}"
    );
    let rows = records(&text, ',');
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["meter_name"] == multiline));

    // Measurements: one row per quantity, PostgreSQL's float4 text, units.
    let text = export_ok(
        &app,
        &viewer,
        "kind=measurements&meter=X0000124&from=2026-11-17&to=2026-11-18&decimal=comma&sep=semicolon",
    )
    .await;
    assert!(text.starts_with(
        "start_local;end_local;start_utc;site;meter;meter_name;quantity;value;unit;quality;"
    ));
    let rows = records(&text, ';');
    let by: HashMap<&str, (&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["quantity"].as_str(),
                (r["value"].as_str(), r["unit"].as_str()),
            )
        })
        .collect();
    assert_eq!(by["u1"], ("230,1", "V"));
    assert_eq!(by["p"], ("1234,5", "W"));
    assert_eq!(by["tariff"], ("2", ""));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["start_local"], "2026-11-17T08:00:00+01:00");

    // Bad requests say what is wrong.
    for (q, says) in [
        ("meter=X0000124&from=2026-11-17&to=2026-11-18", "`kind`"),
        (
            "kind=hourly&meter=X0000124&from=2026-11-17&to=2026-11-18",
            "intervals",
        ),
        ("kind=daily&from=2026-11-17&to=2026-11-18", "exactly one"),
        (
            &format!("kind=daily&site={site}&meter=X0000124&from=2026-11-17&to=2026-11-18"),
            "exactly one",
        ),
        (
            "kind=daily&meter=X0000124&from=2026-11-18&to=2026-11-17",
            "after",
        ),
        (
            "kind=daily&meter=X0000124&from=yesterday&to=2026-11-17",
            "RFC 3339",
        ),
        (
            "kind=daily&meter=X0000124&from=2026-11-17&to=2026-11-18&sep=tab",
            "semicolon",
        ),
        (
            "kind=daily&meter=X0000124&from=2026-11-17&to=2026-11-18&decimal=dot",
            "point",
        ),
        (
            "kind=daily&meter=X0000124&from=2026-11-17&to=2026-11-18&bom=yes",
            "true",
        ),
        (
            "kind=daily&meter=X0000124&from=2026-11-17&to=2026-11-18&regster=counter1nr",
            "regster",
        ),
        (
            "kind=daily&meter=X0000124&from=2026-11-17&to=2026-11-18&register=counter9nr",
            "counter9nr",
        ),
        (
            "kind=measurements&meter=X0000124&from=2026-11-17&to=2026-11-18&register=volts",
            "volts",
        ),
        (
            &format!("kind=intervals&site={site}&from=2026-01-01&to=2027-01-03"),
            "366 days",
        ),
        (
            "kind=intervals&meter=X0000124&from=2023-01-01&to=2026-11-18",
            "1100 days",
        ),
        (
            "kind=measurements&meter=X0000124&from=2026-10-01&to=2026-11-18",
            "31 days",
        ),
    ] {
        let r = export(&app, &viewer, q).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(says), "{q}: {error}");
    }
    // A year of a site's intervals is allowed.
    let r = export(
        &app,
        &viewer,
        &format!("kind=intervals&site={site}&from=2026-01-01&to=2027-01-01&register=counter2nr"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(records(&r.body, ',').len(), 365 * 96);
    drop(client);
    app.stop().await;
}

/// A viewer of site A never sees site B: B's meter, site and circuit are 404, and A's site
/// export holds no row of B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_hides_other_sites() {
    let app = TestApp::spawn().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let site_a = app.site("A", "UTC").await;
    let site_b = app.site("B", "UTC").await;
    let pw_a = app.gateway("SGA00001", Some(site_a), None).await;
    let pw_b = app.gateway("SGB00001", Some(site_b), None).await;
    let viewer_a = app.user_token("a@example.com", "viewer", &[site_a]).await;
    let t0 = utc("2026-11-17T00:00:00Z");
    for (gw, pw, serial) in [
        ("SGA00001", &pw_a, "METERA01"),
        ("SGB00001", &pw_b, "METERB01"),
    ] {
        let mut client = app.gateway_client(gw, pw).await;
        let docs: Vec<String> = (0..9)
            .map(|q| {
                counters_doc(
                    serial,
                    &local(chrono_tz::UTC, t0 + chrono::Duration::minutes(15 * q)),
                    1_000_000 + q * 100_000,
                    0,
                )
            })
            .collect();
        publish(&mut client, &format!("sg/{gw}/pub/counters/ir"), &docs).await;
    }
    settle(&app, 36).await;
    let panel = api(
        &app,
        &admin,
        "POST",
        &format!("/api/v1/sites/{site_b}/panels"),
        json!({ "name": "Main" }),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let circuit = api(
        &app,
        &admin,
        "POST",
        &format!("/api/v1/panels/{panel}/circuits"),
        json!({ "name": "Pump" }),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    api(
        &app,
        &admin,
        "PATCH",
        "/api/v1/devices/METERB01",
        json!({ "circuit_id": circuit }),
    )
    .await;
    settle(&app, 36).await;

    let period = "from=2026-11-17&to=2026-11-18";
    for kind in ["intervals", "daily", "readings", "completeness"] {
        for target in [
            "meter=METERB01".to_owned(),
            format!("site={site_b}"),
            format!("circuit={circuit}"),
        ] {
            let q = format!("kind={kind}&{target}&{period}");
            let r = export(&app, &viewer_a, &q).await;
            assert_eq!(r.status, 404, "{q}: {}", r.body);
            assert!(!r.body.contains("METERB01"));
        }
        let text = export_ok(
            &app,
            &viewer_a,
            &format!("kind={kind}&site={site_a}&{period}"),
        )
        .await;
        let rows = records(&text, ',');
        assert!(!rows.is_empty(), "{kind}");
        assert!(
            rows.iter()
                .all(|r| r["meter"] == "METERA01" && r["site"] == "A"),
            "{kind}: {text}"
        );
        assert!(!text.contains("METERB01"));
    }
    // The admin sees B, and the circuit export holds the meter placed on it.
    let text = export_ok(
        &app,
        &admin,
        &format!("kind=intervals&circuit={circuit}&{period}&register=counter1nr"),
    )
    .await;
    let rows = records(&text, ',');
    assert_eq!(rows.len(), 96);
    assert!(rows
        .iter()
        .all(|r| r["meter"] == "METERB01" && r["site"] == "B"));
    assert_eq!(rows[0]["value"], "100");
    // Without a session: 401.
    let r = app
        .request(
            "GET",
            &format!("/api/v1/export.csv?kind=daily&site={site_a}&{period}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    app.stop().await;
}

/// 2026-03-29 in Ljubljana: 92 quarter-hours, and the local columns jump from +01:00 to
/// +02:00 at 02:00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_forward_day_shows_the_jump() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let viewer = app.user_token("v@example.com", "viewer", &[site]).await;
    let mut client = app.gateway_client(GW, &password).await;
    let start = tz
        .with_ymd_and_hms(2026, 3, 29, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let docs: Vec<String> = (0..=92)
        .map(|q| {
            counters_doc(
                "X0000124",
                &local(tz, start + chrono::Duration::minutes(15 * q)),
                9_000_000 + q * 500_000,
                0,
            )
        })
        .collect();
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &docs).await;
    settle(&app, 2 * docs.len() as i64).await;

    let text = export_ok(
        &app,
        &viewer,
        "kind=intervals&meter=X0000124&from=2026-03-29&to=2026-03-30&register=counter1nr",
    )
    .await;
    let rows = records(&text, ',');
    assert_eq!(rows.len(), 92);
    assert!(rows
        .iter()
        .all(|r| r["value"] == "500" && r["quality"] == "measured"));
    assert_eq!(rows[0]["start_local"], "2026-03-29T00:00:00+01:00");
    assert_eq!(rows[0]["start_utc"], "2026-03-28T23:00:00Z");
    assert_eq!(rows[7]["start_local"], "2026-03-29T01:45:00+01:00");
    assert_eq!(rows[7]["end_local"], "2026-03-29T03:00:00+02:00");
    assert_eq!(rows[8]["start_local"], "2026-03-29T03:00:00+02:00");
    assert_eq!(rows[8]["start_utc"], "2026-03-29T01:00:00Z");
    assert_eq!(rows[91]["end_local"], "2026-03-30T00:00:00+02:00");

    let text = export_ok(
        &app,
        &viewer,
        "kind=daily&meter=X0000124&from=2026-03-29&to=2026-03-30&register=counter1nr&sep=semicolon&decimal=comma",
    )
    .await;
    let days = records(&text, ';');
    assert_eq!(days.len(), 1);
    assert_eq!(days[0]["start_local"], "2026-03-29T00:00:00+01:00");
    assert_eq!(days[0]["end_local"], "2026-03-30T00:00:00+02:00");
    assert_eq!(days[0]["value"], "46000");
    assert_eq!(days[0]["quality"], "measured");
    let text = export_ok(
        &app,
        &viewer,
        "kind=completeness&meter=X0000124&from=2026-03-29&to=2026-03-30&register=counter1nr",
    )
    .await;
    let summary = records(&text, ',');
    assert_eq!(summary[0]["expected"], "92");
    assert_eq!(summary[0]["measured_percent"], "100");
    drop(client);
    app.stop().await;
}

/// The database connection of a running export dies: the client gets a truncated chunked
/// body (no final chunk), never a complete-looking short file; the next export works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_stream_is_a_truncated_download() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway(GW, Some(site), None).await;
    let viewer = app.user_token("v@example.com", "viewer", &[site]).await;
    let mut client = app.gateway_client(GW, &password).await;
    let t0 = utc("2026-11-17T00:00:00Z");
    publish(
        &mut client,
        &format!("sg/{GW}/pub/counters/ir"),
        &[
            counters_doc("X0000124", &local(chrono_tz::UTC, t0), 1_000_000, 0),
            counters_doc(
                "X0000124",
                &local(chrono_tz::UTC, t0 + chrono::Duration::minutes(15)),
                1_100_000,
                0,
            ),
        ],
    )
    .await;
    settle(&app, 4).await;
    // Three years of intervals for both registers, written directly: about 30 MB of CSV,
    // more than the socket buffers hold.
    sqlx::query(
        "INSERT INTO energy_intervals (counter_id, start, energy_milli, quality)
         SELECT c.id, s, 1234, 0 FROM counters c,
                generate_series('2024-01-01T00:00:00Z'::timestamptz,
                                '2026-12-31T23:45:00Z', interval '15 minutes') s
         ON CONFLICT DO NOTHING",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let path = "/api/v1/export.csv?kind=intervals&meter=X0000124&from=2024-01-01&to=2027-01-01";
    let mut stream = tokio::net::TcpStream::connect(app.http).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {viewer}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while raw.len() < 256 * 1024 {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..raw.len().min(1024)]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // Kill the export's database session while the client is not reading.
    let killed = eventually(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE '%FROM energy_intervals%ORDER BY start%'
               AND datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    assert!(killed.is_some(), "no export session found");
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection")
        .ok();
    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &raw[body_start..];
    assert!(
        !body.ends_with(b"\r\n0\r\n\r\n"),
        "a broken export must not end like a complete one"
    );
    let rows = body.windows(2).filter(|w| w == b"\r\n").count();
    assert!(
        rows < 2 * 105_216,
        "{rows} line ends: the export was not cut"
    );

    // The pool recovered: the next export is complete.
    let text = export_ok(
        &app,
        &viewer,
        "kind=intervals&meter=X0000124&from=2026-11-17&to=2026-11-18&register=counter1nr",
    )
    .await;
    assert_eq!(records(&text, ',').len(), 96);
    drop(client);
    app.stop().await;
}

/// Nothing is dropped silently: a stored contract made invalid behind the API's back (direct
/// SQL) refuses an interval export of a period it is in force in, with a 409 that names it
/// and says why, instead of costing those days with the contract before it. Periods it does
/// not cover, and exports without costs, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stored_contract_is_reported_not_dropped() {
    let app = TestApp::spawn().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let site = app.site("Works", "Europe/Ljubljana").await;
    app.gateway(GW, Some(site), None).await;
    let viewer = app.user_token("v@example.com", "viewer", &[site]).await;
    let contract = json!({
        "currency": "EUR",
        "bands": [{ "name": "flat", "import_price": "0.15" }],
        "default_band": "flat",
        "schedule": [],
        "holidays": []
    });
    let mut ids = Vec::new();
    for from in ["2026-01-01", "2026-06-01"] {
        let created = api(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/sites/{site}/contracts"),
            json!({ "valid_from": from, "contract": contract }),
        )
        .await;
        ids.push(created["id"].as_i64().unwrap());
    }
    sqlx::query("UPDATE contracts SET body = '{\"currency\": \"euro\"}' WHERE id = $1")
        .bind(ids[1])
        .execute(&app.pool)
        .await
        .unwrap();

    let refused = export(
        &app,
        &viewer,
        &format!("kind=intervals&site={site}&from=2026-05-31&to=2026-06-02"),
    )
    .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains(&format!(
            "contract {} of site {site} (valid from 2026-06-01) is not valid",
            ids[1]
        )),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("contract JSON"), "{}", refused.body);

    // Before the bad contract starts, and without costs, the export goes on.
    export_ok(
        &app,
        &viewer,
        &format!("kind=intervals&site={site}&from=2026-05-01&to=2026-05-02"),
    )
    .await;
    export_ok(
        &app,
        &viewer,
        &format!("kind=daily&site={site}&from=2026-06-01&to=2026-06-02"),
    )
    .await;

    // Fixed through the API, the period exports again.
    api(
        &app,
        &admin,
        "PUT",
        &format!("/api/v1/contracts/{}", ids[1]),
        json!({ "contract": contract }),
    )
    .await;
    export_ok(
        &app,
        &viewer,
        &format!("kind=intervals&site={site}&from=2026-05-31&to=2026-06-02"),
    )
    .await;
    app.stop().await;
}
