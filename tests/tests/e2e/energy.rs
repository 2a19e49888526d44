//! Energy accounting end to end: counter readings published over MQTT become 15-minute
//! intervals, local-calendar totals, costs and peaks that add up exactly.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use headend_e2e::{eventually, MqttClient, TestApp};
use serde_json::{json, Value};

const GW: &str = "SG000017";

/// A counters document as the SG publishes it, for the IR meter or an RS485 slot.
pub(crate) fn counters_doc(serial: &str, local: &str, import_wh: i64, export_wh: i64) -> String {
    json!({
        "header": {
            "cmd": "get_energy_counters",
            "model": "IE38MD",
            "serial_number": serial,
            "local_time": local,
            "resetable_counters": 0,
            "non_resetable_counters": 2
        },
        "counters": {
            "counter1nr": format!("{}.{:03} kWh", import_wh / 1000, import_wh % 1000),
            "counter2nr": format!("{}.{:03} kWh", export_wh / 1000, export_wh % 1000),
        },
        "settings": { "tariff1nr": "1 2 3 4 ", "tariff2nr": "1 2 3 4 " }
    })
    .to_string()
}

pub(crate) fn local(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%d.%m.%Y %H:%M:%S").to_string()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Waits until ingest has committed `readings` counter readings and the profile worker has
/// done all the work they queued.
pub(crate) async fn settle(app: &TestApp, readings: i64) {
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

/// Recomputing every counter from all its readings gives the same intervals and rollups as
/// the incremental path did: the worker's windows are exact.
async fn full_rebuild_changes_nothing(app: &TestApp) {
    async fn snapshot(
        app: &TestApp,
    ) -> (
        Vec<(i64, DateTime<Utc>, i64, i16)>,
        Vec<(i64, chrono::NaiveDate, i64, i32, i32, i64)>,
    ) {
        let intervals = sqlx::query_as(
            "SELECT counter_id, start, energy_milli, quality FROM energy_intervals ORDER BY 1, 2",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let days = sqlx::query_as(
            "SELECT counter_id, day, energy_milli, measured, estimated, peak_milli FROM energy_days ORDER BY 1, 2",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        (intervals, days)
    }
    let before = snapshot(app).await;
    assert!(!before.0.is_empty());
    sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT counter_id, min(ts), max(ts), true FROM counter_readings GROUP BY counter_id",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let readings = app.count("SELECT count(*) FROM counter_readings").await;
    settle(app, readings).await;
    assert_eq!(snapshot(app).await, before);
    // The monthly rollup (kept by triggers) is exactly the sum of its days.
    let months_from_days = "SELECT counter_id, (day - (EXTRACT(DAY FROM day)::int - 1)),
                sum(energy_milli)::int8, sum(measured)::int8, sum(estimated)::int8,
                sum(cost_nano)::int8, count(cost_nano)::int4, count(*)::int4, max(peak_milli)
         FROM energy_days GROUP BY 1, 2";
    let months = "SELECT counter_id, month, energy_milli, measured, estimated, cost_nano,
                priced_days, days, peak_milli FROM energy_months";
    assert!(app.count("SELECT count(*) FROM energy_months").await > 0);
    for (a, b) in [(months, months_from_days), (months_from_days, months)] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM ({a} EXCEPT {b}) x"))
                .await,
            0,
            "energy_months differs from its days"
        );
    }
}

/// A "Main board" panel with a "Heat pump" circuit on `site`: (panel, circuit).
pub(crate) async fn heat_pump_circuit(app: &TestApp, admin: &str, site: i64) -> (i64, i64) {
    let created = |r: headend_e2e::HttpResponse| {
        r.json()["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id: {} {}", r.status, r.body))
    };
    let panel = created(
        app.request(
            "POST",
            &format!("/api/v1/sites/{site}/panels"),
            Some(admin),
            Some(json!({ "name": "Main board" })),
        )
        .await,
    );
    let circuit = created(
        app.request(
            "POST",
            &format!("/api/v1/panels/{panel}/circuits"),
            Some(admin),
            Some(json!({ "name": "Heat pump", "usage": "heating" })),
        )
        .await,
    );
    (panel, circuit)
}

/// The body of `POST /sites/{id}/contracts`: from 2026, day (07:00-21:00 weekdays) at 0.20 EUR/kWh,
/// night at 0.10.
pub(crate) fn two_band_contract() -> Value {
    let contract = json!({
        "currency": "EUR",
        "bands": [
            { "name": "high", "import_price": "0.20" },
            { "name": "low", "import_price": "0.10" }
        ],
        "default_band": "low",
        "schedule": [
            { "band": "high", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "21:00" }
        ],
        "holidays": []
    });
    json!({ "valid_from": "2026-01-01", "contract": contract })
}

pub(crate) async fn publish(client: &mut MqttClient, topic: &str, docs: &[String]) {
    for doc in docs {
        client.publish(topic, doc.clone()).await;
    }
    client.wait_acks(docs.len()).await;
}

fn profile_energies(profile: &Value, register: &str) -> Vec<(String, Option<f64>, String)> {
    profile["registers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == register)
        .unwrap_or_else(|| panic!("no register {register} in {profile}"))["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["start"].as_str().unwrap().to_owned(),
                i["energy"].as_f64(),
                i["quality"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A spring-forward day in Ljubljana: 92 quarter-hours, each with the energy between the
/// readings at its boundaries, and a day total equal to the counter difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_forward_day_has_92_exact_quarters() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let token = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;
    let mut client = app.gateway_client(GW, &password).await;

    // A reading every 15 minutes from local midnight to the next midnight, aligned, with a
    // load that varies per quarter so that a misplaced interval shows.
    let start = tz
        .from_local_datetime(
            &NaiveDateTime::parse_from_str("2026-03-29 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        )
        .unwrap()
        .with_timezone(&Utc);
    let end = tz
        .from_local_datetime(
            &NaiveDateTime::parse_from_str("2026-03-30 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        )
        .unwrap()
        .with_timezone(&Utc);
    let quarters = (end - start).num_minutes() / 15;
    assert_eq!(quarters, 92);
    let mut value = 1_000_000_000i64; // 1 GWh in Wh: large values stay exact
    let mut docs = Vec::new();
    let mut expected = Vec::new();
    for q in 0..=quarters {
        let t = start + chrono::Duration::minutes(15 * q);
        docs.push(counters_doc("X0000124", &local(tz, t), value, 5_000));
        let step = 250 + (q * 37) % 400;
        if q < quarters {
            expected.push(step);
        }
        value += step;
    }
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &docs).await;
    settle(&app, 2 * docs.len() as i64).await;

    let profile = app
        .get(
            "/api/v1/devices/X0000124/profile?from=2026-03-29T00:00:00%2B01:00&to=2026-03-30T00:00:00%2B02:00",
            &token,
        )
        .await;
    assert_eq!(profile.status, 200, "{}", profile.body);
    let profile = profile.json();
    let intervals = profile_energies(&profile, "counter1nr");
    assert_eq!(intervals.len(), 92);
    for ((_, energy, quality), want) in intervals.iter().zip(&expected) {
        assert_eq!(*energy, Some(*want as f64));
        assert_eq!(quality, "measured");
    }
    full_rebuild_changes_nothing(&app).await;
    // Local labels skip the missing hour.
    let first = &profile["registers"][0]["intervals"][8];
    assert_eq!(first["start_local"], "2026-03-29T03:00:00+02:00");

    let day = app
        .get(
            &format!("/api/v1/sites/{site}/consumption?from=2026-03-29&to=2026-03-30&by=day"),
            &token,
        )
        .await;
    assert_eq!(day.status, 200, "{}", day.body);
    let day = day.json();
    let period = &day["periods"][0];
    assert_eq!(period["start"], "2026-03-29");
    assert_eq!(
        period["total"]["import_wh"].as_f64().unwrap(),
        expected.iter().sum::<i64>() as f64
    );
    assert_eq!(period["total"]["completeness"]["expected"], 92);
    assert_eq!(period["total"]["completeness"]["measured"], 92);
    assert_eq!(period["total"]["completeness"]["missing"], 0);
    // No contract: energy, no cost.
    assert!(period["total"]["cost"].is_null());
    // The peak is the largest quarter, as mean power.
    let peak = *expected.iter().max().unwrap();
    assert_eq!(
        period["total"]["peak"]["power_w"].as_f64().unwrap(),
        (peak * 4) as f64
    );
    drop(client);
    app.stop().await;
}

/// A reading a week late lands between its neighbours: only the intervals around it change,
/// the day total does not, and a re-delivery changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reading_refines_only_its_gap() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Asia/Kathmandu".parse().unwrap();
    let site = app.site("Kathmandu", "Asia/Kathmandu").await;
    let password = app.gateway(GW, Some(site), None).await;
    let token = app.user_token("v@example.com", "viewer", &[site]).await;
    let mut client = app.gateway_client(GW, &password).await;
    let topic = format!("sg/{GW}/pub/counters/ir");

    // Quarter-hourly readings for one local day (+05:45), but none between 05:00 and 08:00.
    let day_start = utc("2026-11-10T00:00:00+05:45");
    let value_at = |minutes: i64| 50_000_000 + minutes * 100; // 6 kW steady load
    let mut docs = Vec::new();
    for q in (0..=96).filter(|q| !(21..32).contains(q)) {
        let t = day_start + chrono::Duration::minutes(15 * q);
        docs.push(counters_doc("X0000124", &local(tz, t), value_at(q * 15), 0));
    }
    publish(&mut client, &topic, &docs).await;
    settle(&app, 2 * docs.len() as i64).await;

    let path = "/api/v1/devices/X0000124/profile?from=2026-11-10T00:00:00%2B05:45&to=2026-11-11T00:00:00%2B05:45&register=counter1nr";
    let before = profile_energies(&app.get(path, &token).await.json(), "counter1nr");
    assert_eq!(before.len(), 96);
    // Inside the gap the intervals are estimated, yet the steady load makes them exact.
    assert!(before[20..32]
        .iter()
        .all(|(_, e, q)| q == "estimated" && *e == Some(1500.0)));
    assert!(before[..20]
        .iter()
        .chain(&before[32..])
        .all(|(_, _, q)| q == "measured"));
    let total: f64 = before.iter().map(|(_, e, _)| e.unwrap()).sum();
    assert_eq!(total, 24.0 * 6000.0);

    // The late reading says the load was not steady: nothing in 05:00-06:00, all of it later.
    let late_t = day_start + chrono::Duration::hours(6);
    let late = counters_doc("X0000124", &local(tz, late_t), value_at(5 * 60), 0);
    publish(&mut client, &topic, std::slice::from_ref(&late)).await;
    settle(&app, 2 * (docs.len() as i64 + 1)).await;
    let after = profile_energies(&app.get(path, &token).await.json(), "counter1nr");
    for (i, ((_, b, _), (_, a, _))) in before.iter().zip(&after).enumerate() {
        let in_gap = (20..32).contains(&i);
        if !in_gap {
            assert_eq!(a, b, "interval {i} outside the gap changed");
        }
    }
    assert!(
        after[20..24].iter().all(|(_, e, _)| *e == Some(0.0)),
        "{:?}",
        &after[20..24]
    );
    assert!(
        after[24..32].iter().all(|(_, e, _)| *e == Some(2250.0)),
        "{:?}",
        &after[24..32]
    );
    let total_after: f64 = after.iter().map(|(_, e, _)| e.unwrap()).sum();
    assert_eq!(total_after, total);

    // Redelivered: no new reading, no change.
    publish(&mut client, &topic, &[late]).await;
    settle(&app, 2 * (docs.len() as i64 + 1)).await;
    let again = profile_energies(&app.get(path, &token).await.json(), "counter1nr");
    assert_eq!(again, after);
    full_rebuild_changes_nothing(&app).await;
    drop(client);
    app.stop().await;
}

/// A site with a main meter and a sub-metered circuit, a two-band contract: consumption by
/// circuit and by usage adds up to the main meter without double counting, and the cost is
/// the energy of each band at its price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structure_contract_and_cost() {
    let app = TestApp::spawn().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let created = app
        .request(
            "POST",
            "/api/v1/sites",
            Some(&admin),
            Some(json!({ "name": "Office", "timezone": "Europe/Ljubljana" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let site = created.json()["id"].as_i64().unwrap();
    let other_site = app.site("Elsewhere", "UTC").await;
    let password = app.gateway(GW, None, None).await;
    let patched = app
        .request(
            "PATCH",
            &format!("/api/v1/gateways/{GW}"),
            Some(&admin),
            Some(json!({ "site_id": site })),
        )
        .await;
    assert_eq!(patched.status, 204, "{}", patched.body);

    let (panel, circuit) = heat_pump_circuit(&app, &admin, site).await;
    let c = app
        .request(
            "POST",
            &format!("/api/v1/sites/{site}/contracts"),
            Some(&admin),
            Some(two_band_contract()),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);

    // Two meters: the main one (IR) and the heat pump (RS485 slot 1), hourly on a Tuesday.
    let mut client = app.gateway_client(GW, &password).await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let day_start = utc("2026-11-17T00:00:00+01:00");
    let mut main = Vec::new();
    let mut pump = Vec::new();
    for h in 0..=24 {
        let t = day_start + chrono::Duration::hours(h);
        // Main: 10 kWh per hour; heat pump: 4 kWh per hour.
        main.push(counters_doc(
            "MAIN0001",
            &local(tz, t),
            1_000_000 + h * 10_000,
            0,
        ));
        pump.push(counters_doc(
            "PUMP0001",
            &local(tz, t),
            2_000_000 + h * 4_000,
            0,
        ));
    }
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &main).await;
    publish(&mut client, &format!("sg/{GW}/pub/counters/rs485/1"), &pump).await;
    settle(&app, 4 * 25).await;

    for (serial, body) in [
        (
            "MAIN0001",
            json!({ "measures": "site", "name": "Main supply" }),
        ),
        ("PUMP0001", json!({ "circuit_id": circuit })),
    ] {
        let r = app
            .request(
                "PATCH",
                &format!("/api/v1/devices/{serial}"),
                Some(&admin),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    // Placement queued a rebuild of the rollups.
    settle(&app, 4 * 25).await;

    let viewer = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;
    let get = |group: &str| {
        let path = format!(
            "/api/v1/sites/{site}/consumption?from=2026-11-17&to=2026-11-18&by=day&group={group}"
        );
        let (app, viewer) = (&app, viewer.clone());
        async move {
            let r = app.get(&path, &viewer).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
        }
    };
    let by_circuit = get("circuit").await;
    let period = &by_circuit["periods"][0];
    assert_eq!(period["total"]["import_wh"], 240_000.0);
    // 14 h high at 0.20 and 10 h low at 0.10, on 10 kWh per hour: 28 + 10 = 38 EUR.
    assert_eq!(period["total"]["energy_cost"], 38.0);
    assert_eq!(period["total"]["cost"], 38.0);
    assert_eq!(by_circuit["currency"], "EUR");
    let groups = period["groups"].as_array().unwrap();
    let find = |key: &str| {
        groups
            .iter()
            .find(|g| g["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {groups:?}"))
            .clone()
    };
    assert_eq!(find(&format!("circuit:{circuit}"))["import_wh"], 96_000.0);
    assert_eq!(find("site:rest")["import_wh"], 144_000.0);
    let sum: f64 = groups
        .iter()
        .map(|g| g["import_wh"].as_f64().unwrap())
        .sum();
    assert_eq!(sum, 240_000.0);

    let by_usage = get("usage").await;
    let groups = by_usage["periods"][0]["groups"].as_array().unwrap().clone();
    let heating = groups.iter().find(|g| g["key"] == "heating").unwrap();
    assert_eq!(heating["import_wh"], 96_000.0);
    let sum: f64 = groups
        .iter()
        .map(|g| g["import_wh"].as_f64().unwrap())
        .sum();
    assert_eq!(sum, 240_000.0);

    let by_meter = get("meter").await;
    let groups = by_meter["periods"][0]["groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 2);
    let pump_row = groups.iter().find(|g| g["key"] == "PUMP0001").unwrap();
    // 14 h × 4 kWh × 0.20 + 10 h × 4 kWh × 0.10 = 11.2 + 4 = 15.2 EUR.
    assert_eq!(pump_row["energy_cost"], 15.2);
    assert_eq!(pump_row["peak_w"], 4000.0);

    // Monthly view: the same day inside November.
    let month = app
        .get(
            &format!("/api/v1/sites/{site}/consumption?from=2026-11-01&to=2026-12-01&by=month"),
            &viewer,
        )
        .await
        .json();
    assert_eq!(month["periods"][0]["start"], "2026-11-01");
    assert_eq!(month["periods"][0]["total"]["import_wh"], 240_000.0);
    // Completeness counts the site meter's quarters of the month that have ended so far.
    // Hourly readings: every quarter is interpolated inside its hour, hence estimated.
    assert_eq!(
        month["periods"][0]["total"]["completeness"]["estimated"],
        96
    );

    // Site scope: a viewer of another site sees none of it.
    let stranger = app
        .user_token("s@example.com", "viewer", &[other_site])
        .await;
    for path in [
        format!("/api/v1/sites/{site}/consumption?from=2026-11-17&to=2026-11-18"),
        format!("/api/v1/sites/{site}/panels"),
        format!("/api/v1/panels/{panel}"),
        format!("/api/v1/circuits/{circuit}"),
        format!("/api/v1/sites/{site}/contracts"),
        "/api/v1/devices/MAIN0001/profile?from=2026-11-17&to=2026-11-18".to_owned(),
    ] {
        assert_eq!(app.get(&path, &stranger).await.status, 404, "{path}");
    }
    // Only admins change structure.
    let r = app
        .request(
            "POST",
            &format!("/api/v1/sites/{site}/panels"),
            Some(&viewer),
            Some(json!({ "name": "X" })),
        )
        .await;
    assert_eq!(r.status, 403);
    // A bad contract says what is wrong.
    let r = app
        .request(
            "POST",
            &format!("/api/v1/sites/{site}/contracts"),
            Some(&admin),
            Some(json!({ "valid_from": "2027-01-01", "contract": { "currency": "EUR", "bands": [], "default_band": "x", "schedule": [], "holidays": [] } })),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    drop(client);
    app.stop().await;
}

/// A meter exchange (the counter restarts low and stays low) and a lone zero glitch give no
/// negative or huge interval, and are recorded as events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_and_glitch_are_events_not_spikes() {
    let app = TestApp::spawn().await;
    let tz: Tz = "UTC".parse().unwrap();
    let site = app.site("S", "UTC").await;
    let password = app.gateway(GW, Some(site), None).await;
    let token = app.user_token("v@example.com", "viewer", &[site]).await;
    let mut client = app.gateway_client(GW, &password).await;
    let t0 = utc("2026-11-01T00:00:00Z");
    let values = [
        5_000_000, 5_001_000, 0, 5_003_000, 5_004_000, // lone zero: a glitch
        10, 1_010, 2_010, 3_010, // new meter
    ];
    let docs: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            counters_doc(
                "X0000124",
                &local(tz, t0 + chrono::Duration::minutes(15 * i as i64)),
                *v,
                0,
            )
        })
        .collect();
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &docs).await;
    settle(&app, 2 * docs.len() as i64).await;
    let profile = app
        .get("/api/v1/devices/X0000124/profile?from=2026-11-01T00:00:00Z&to=2026-11-01T02:00:00Z&register=counter1nr", &token)
        .await
        .json();
    let intervals = profile_energies(&profile, "counter1nr");
    for (_, e, _) in &intervals[..8] {
        let e = e.expect("present");
        assert!((0.0..=1000.0).contains(&e), "{intervals:?}");
    }
    let kinds: Vec<&str> = profile["registers"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["glitch", "exchange"]);
    drop(client);
    app.stop().await;
}

/// The companion firmware's simulated meter integrates power exactly; readings published on
/// the quarter-hour boundaries give intervals equal to the simulator's truth, to the mWh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_match_the_simulators_truth() {
    use sg_gateway_core::sim::{Energy, Profile, SimMeter};
    use sg_wire::value::format_counter;

    let app = TestApp::spawn().await;
    let site = app.site("Sim", "UTC").await;
    let password = app.gateway(GW, Some(site), None).await;
    let token = app.user_token("v@example.com", "viewer", &[site]).await;
    let mut client = app.gateway_client(GW, &password).await;

    let mut meter = SimMeter::new(42, 3, Profile::Office);
    let start = NaiveDateTime::parse_from_str("2026-11-16 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let mut docs = Vec::new();
    for q in 0..=96 {
        let wall = start + chrono::Duration::minutes(15 * q);
        meter.advance_to(wall);
        let registers = meter.counters();
        let counters: serde_json::Map<String, Value> = registers
            .iter()
            .filter(|r| !r.resettable)
            .map(|r| {
                (
                    format!("counter{}nr", r.index),
                    Value::String(format_counter(r.value_milli, r.unit)),
                )
            })
            .collect();
        docs.push(
            json!({
                "header": {
                    "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": "SIM00042",
                    "local_time": wall.format("%d.%m.%Y %H:%M:%S").to_string(),
                    "resetable_counters": 0, "non_resetable_counters": counters.len()
                },
                "counters": counters,
            })
            .to_string(),
        );
    }
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &docs).await;
    settle(&app, 4 * docs.len() as i64).await;

    let profile = app
        .get(
            "/api/v1/devices/SIM00042/profile?from=2026-11-16T00:00:00Z&to=2026-11-17T00:00:00Z",
            &token,
        )
        .await;
    assert_eq!(profile.status, 200, "{}", profile.body);
    let profile = profile.json();
    for (register, energy) in [
        ("counter1nr", Energy::ActiveImport),
        ("counter3nr", Energy::ReactiveImport),
    ] {
        let intervals = profile_energies(&profile, register);
        assert_eq!(intervals.len(), 96);
        for (q, (_, got, quality)) in intervals.iter().enumerate() {
            let b = start + chrono::Duration::minutes(15 * q as i64);
            let truth = meter.energy_truth_mwh(energy, b, b + chrono::Duration::minutes(15));
            assert_eq!(quality, "measured");
            let got_milli = (got.expect("present") * 1000.0).round() as i64;
            assert_eq!(got_milli, truth, "{register} quarter {q}");
        }
    }
    drop(client);
    app.stop().await;
}

/// A fall-back day in Ljubljana has 100 quarter-hours. The repeated hour cannot be told apart
/// in an SG `local_time`, so the gateway's readings in it are left out here: the intervals
/// across it are estimated, and the day total is still the exact counter difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fall_back_day_has_100_quarters_and_an_exact_total() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let token = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;
    let mut client = app.gateway_client(GW, &password).await;

    let start = utc("2026-10-25T00:00:00+02:00");
    let end = utc("2026-10-26T00:00:00+01:00");
    assert_eq!((end - start).num_minutes() / 15, 100);
    let value_at = |t: DateTime<Utc>| 7_000_000 + (t - start).num_minutes() * 50; // 3 kW
    let mut docs = Vec::new();
    let mut t = start;
    while t <= end {
        let wall = t.with_timezone(&tz);
        // 02:00-02:59 local happens twice: skip both.
        if wall.format("%H").to_string() != "02" {
            docs.push(counters_doc("X0000124", &local(tz, t), value_at(t), 0));
        }
        t += chrono::Duration::minutes(15);
    }
    publish(&mut client, &format!("sg/{GW}/pub/counters/ir"), &docs).await;
    settle(&app, 2 * docs.len() as i64).await;

    let day = app
        .get(
            &format!("/api/v1/sites/{site}/consumption?from=2026-10-25&to=2026-10-26&by=day"),
            &token,
        )
        .await
        .json();
    let total = &day["periods"][0]["total"];
    assert_eq!(
        total["import_wh"].as_f64().unwrap(),
        (value_at(end) - value_at(start)) as f64
    );
    assert_eq!(total["completeness"]["expected"], 100);
    assert_eq!(total["completeness"]["missing"], 0);
    // 01:45 CEST to 03:00 CET: 2 h 15 min without readings.
    assert_eq!(total["completeness"]["estimated"], 9, "{total}");
    let profile = app
        .get(
            "/api/v1/devices/X0000124/profile?from=2026-10-25&to=2026-10-26&register=counter1nr",
            &token,
        )
        .await
        .json();
    let intervals = profile_energies(&profile, "counter1nr");
    assert_eq!(intervals.len(), 100);
    // A steady load: every quarter, measured or estimated, holds 750 Wh.
    assert!(
        intervals.iter().all(|(_, e, _)| *e == Some(750.0)),
        "{intervals:?}"
    );
    let labels: Vec<&str> = profile["registers"][0]["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["start_local"].as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"2026-10-25T02:30:00+02:00")
            && labels.contains(&"2026-10-25T02:30:00+01:00")
    );
    drop(client);
    app.stop().await;
}

/// By month and by year over a range with partial first and last months (whole months come
/// from the monthly rollup, the edge days from the daily one), every period equals the sum of
/// its days, per meter as in total, and the circuit groups add up to the total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn months_and_years_add_up_across_partial_months() {
    let app = TestApp::spawn().await;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let viewer = app.user_token("v@example.com", "viewer", &[site]).await;
    let (_, circuit) = heat_pump_circuit(&app, &admin, site).await;
    // Two readings per meter create the devices and their counters.
    let mut client = app.gateway_client(GW, &password).await;
    let t0 = utc("2026-11-17T00:00:00+01:00");
    for (topic, serial) in [("ir", "MAIN0001"), ("rs485/1", "PUMP0001")] {
        let docs: Vec<String> = (0..2)
            .map(|h| {
                let t = t0 + chrono::Duration::hours(h);
                counters_doc(serial, &local(tz, t), 1_000_000 + h * 1_000, 0)
            })
            .collect();
        publish(&mut client, &format!("sg/{GW}/pub/counters/{topic}"), &docs).await;
    }
    settle(&app, 8).await;
    for (serial, body) in [
        ("MAIN0001", json!({ "measures": "site" })),
        ("PUMP0001", json!({ "circuit_id": circuit })),
    ] {
        let r = app
            .request(
                "PATCH",
                &format!("/api/v1/devices/{serial}"),
                Some(&admin),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    settle(&app, 8).await;

    // Days of 2026-01-10 .. 2026-04-20 for every register (no readings there, so the worker
    // leaves them alone); the statement triggers keep `energy_months`.
    sqlx::query(
        "INSERT INTO energy_days (counter_id, day, energy_milli, measured, estimated, quarters,
                                  peak_milli)
         SELECT c.id, day::date,
                (EXTRACT(DOY FROM day)::int8 * 1000 + c.id * 7) * 1000
                    * (1 + (d.serial = 'MAIN0001')::int * 3),
                90, 6, 96, EXTRACT(DOY FROM day)::int8 * 10 + c.id
         FROM counters c JOIN devices d ON d.id = c.device_id,
              generate_series('2026-01-10'::date, '2026-04-20'::date, '1 day') AS day",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let get = |query: String| {
        let (app, viewer) = (&app, viewer.clone());
        async move {
            let r = app
                .get(
                    &format!("/api/v1/sites/{site}/consumption?{query}"),
                    &viewer,
                )
                .await;
            assert_eq!(r.status, 200, "{query}: {}", r.body);
            r.json()
        }
    };
    let f = |v: &Value| v.as_f64().unwrap();
    for (from, to) in [
        ("2026-01-15", "2026-04-10"),
        ("2026-01-01", "2026-05-01"),
        ("2026-02-05", "2026-02-21"),
        ("2026-02-01", "2026-03-01"),
    ] {
        let range = format!("from={from}&to={to}");
        let days = get(format!("{range}&by=day&group=meter")).await;
        // Per month: (import total, per meter import, per meter peak, measured quarters).
        let mut expected: std::collections::BTreeMap<String, (f64, Value, Value, u64)> =
            Default::default();
        for p in days["periods"].as_array().unwrap() {
            let month = format!("{}-01", &p["start"].as_str().unwrap()[..7]);
            let e = expected
                .entry(month)
                .or_insert((0.0, json!({}), json!({}), 0));
            e.0 += f(&p["total"]["import_wh"]);
            e.3 += p["total"]["completeness"]["measured"].as_u64().unwrap();
            for g in p["groups"].as_array().unwrap() {
                let key = g["key"].as_str().unwrap();
                let sum = e.1[key].as_f64().unwrap_or(0.0) + f(&g["import_wh"]);
                e.1[key] = json!(sum);
                let peak = e.2[key].as_f64().unwrap_or(0.0).max(f(&g["peak_w"]));
                e.2[key] = json!(peak);
            }
        }
        let months = get(format!("{range}&by=month&group=meter")).await;
        let periods = months["periods"].as_array().unwrap();
        assert_eq!(periods.len(), expected.len(), "{range}");
        for (p, (month, (import, meters, peaks, measured))) in periods.iter().zip(&expected) {
            assert_eq!(p["start"], *month, "{range}");
            assert_eq!(f(&p["total"]["import_wh"]), *import, "{range} {month}");
            assert_eq!(
                p["total"]["completeness"]["measured"].as_u64().unwrap(),
                *measured,
                "{range} {month}"
            );
            for g in p["groups"].as_array().unwrap() {
                let key = g["key"].as_str().unwrap();
                assert_eq!(g["import_wh"], meters[key], "{range} {month} {key}");
                assert_eq!(g["peak_w"], peaks[key], "{range} {month} {key}");
            }
        }
        let by_circuit = get(format!("{range}&by=month&group=circuit")).await;
        for p in by_circuit["periods"].as_array().unwrap() {
            let groups: f64 = p["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| f(&g["import_wh"]))
                .sum();
            assert_eq!(groups, f(&p["total"]["import_wh"]), "{range}");
        }
        let year = get(format!("{range}&by=year")).await;
        let total: f64 = expected.values().map(|e| e.0).sum();
        assert_eq!(
            f(&year["periods"][0]["total"]["import_wh"]),
            total,
            "{range}"
        );
    }
    drop(client);
    app.stop().await;
}
