//! A meter's commissioning date (`devices.commissioned_at`, set by an admin) bounds its
//! accounting: counter readings dated before it are kept and reported, never turned into
//! intervals; setting, moving or clearing it recomputes the meter's intervals, and the days,
//! months and site totals follow.

use std::time::Duration;

use chrono::{DateTime, DurationRound, NaiveDate, TimeZone, Utc};
use headend_e2e::{eventually, MqttClient, TestApp};
use serde_json::{json, Value};

const GW: &str = "SGCOM1";

/// A UTC site with one gateway on it, and the gateway connected.
async fn app_with_site() -> (TestApp, MqttClient, i64) {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway(GW, Some(site), Some("UTC")).await;
    let client = app.gateway_client(GW, &password).await;
    (app, client, site)
}

/// Midnight (UTC) some days ago: inside the backlog horizon, never in the future.
fn days_ago(days: i64) -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::days(days))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Publishes one counters document per (time, Wh) of meter `serial` and waits for the acks.
async fn publish(client: &mut MqttClient, serial: &str, readings: &[(DateTime<Utc>, i64)]) {
    for (at, wh) in readings {
        let doc = json!({
            "header": {
                "serial_number": serial,
                "local_time": at.format("%d.%m.%Y %H:%M:%S").to_string(),
            },
            "counters": {
                "counter1nr": format!("{}.{:03} kWh", wh / 1000, wh % 1000),
            },
        });
        client
            .publish(
                &format!("sg/{GW}/pub/counters/ir"),
                serde_json::to_vec(&doc).unwrap(),
            )
            .await;
    }
    client.wait_acks(readings.len()).await;
}

/// Waits until `readings` counter readings are committed and the worker drained its queue.
async fn settle(app: &TestApp, readings: i64) {
    app.wait_count("SELECT count(*) FROM counter_readings", readings)
        .await;
    let idle = eventually(Duration::from_secs(30), || async {
        (app.count("SELECT count(*) FROM energy_dirty").await == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "profile worker did not finish its queue");
}

async fn patch(app: &TestApp, token: &str, serial: &str, body: Value) -> (u16, String) {
    let response = app
        .request(
            "PATCH",
            &format!("/api/v1/devices/{serial}"),
            Some(token),
            Some(body),
        )
        .await;
    (response.status, response.body.clone())
}

type Snapshot = (
    Vec<(DateTime<Utc>, i64, i16)>,
    Vec<(NaiveDate, i64, i32)>,
    Vec<(NaiveDate, i64)>,
    Vec<(DateTime<Utc>, i64)>,
);

/// Intervals, days, months and site totals.
async fn snapshot(app: &TestApp) -> Snapshot {
    let intervals =
        sqlx::query_as("SELECT start, energy_milli, quality FROM energy_intervals ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let days = sqlx::query_as("SELECT day, energy_milli, measured FROM energy_days ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let months = sqlx::query_as("SELECT month, energy_milli FROM energy_months ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let site = sqlx::query_as("SELECT start, energy_milli FROM site_intervals ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    (intervals, days, months, site)
}

/// The monthly rollup is exactly the sum of its days.
async fn months_are_their_days(app: &TestApp) {
    let from_days = "SELECT counter_id, (day - (EXTRACT(DAY FROM day)::int - 1)),
                            sum(energy_milli)::int8 FROM energy_days GROUP BY 1, 2";
    let months = "SELECT counter_id, month, energy_milli FROM energy_months";
    for (a, b) in [(months, from_days), (from_days, months)] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM ({a} EXCEPT {b}) x"))
                .await,
            0,
            "energy_months differs from its days"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_before_commissioning_are_stored_reported_and_not_accounted() {
    let (app, mut client, _) = app_with_site().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let t0 = days_ago(3);
    let commissioned = t0 + chrono::Duration::hours(1);
    // The meter exists once it has reported; then an admin says when it was commissioned.
    publish(
        &mut client,
        "M1",
        &[(t0 + chrono::Duration::hours(2), 100_000)],
    )
    .await;
    settle(&app, 1).await;
    let (status, body) = patch(
        &app,
        &admin,
        "M1",
        json!({ "commissioned_at": rfc3339(commissioned) }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let devices = app.get("/api/v1/devices", &admin).await.json();
    assert_eq!(
        devices[0]["commissioned_at"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(commissioned),
        "{devices}"
    );

    // A backlog from before commissioning arrives with readings after it.
    let m = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    publish(
        &mut client,
        "M1",
        &[
            (m(0), 90_000),
            (m(15), 91_000),
            (m(30), 92_000),
            (m(135), 101_000),
            (m(150), 102_500),
        ],
    )
    .await;
    settle(&app, 6).await;

    // Stored (readings are the truth), each early message reported as a partial reject.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM counter_readings WHERE ts < '{}'",
            rfc3339(commissioned)
        ))
        .await,
        3
    );
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%commissioning%'",
        3,
    )
    .await;
    let rejects: Vec<(String, bool)> = sqlx::query_as(
        "SELECT reason, partial FROM ingest_rejects WHERE reason LIKE '%commissioning%'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (reason, partial) in &rejects {
        assert!(*partial, "the readings are stored: {reason}");
        assert!(reason.contains(&rfc3339(commissioned)), "{reason}");
        assert!(
            reason.contains("not turned into energy intervals"),
            "{reason}"
        );
    }
    // The readings after commissioning are not reported.
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 3);

    // Only the quarter-hours after commissioning are accounted: 2:00 to 2:30.
    let (intervals, days, _, _) = snapshot(&app).await;
    let starts: Vec<DateTime<Utc>> = intervals.iter().map(|i| i.0).collect();
    assert_eq!(starts, [m(120), m(135)], "{intervals:?}");
    let total: i64 = intervals.iter().map(|i| i.1).sum();
    assert_eq!(total, 2_500_000);
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].1, 2_500_000);
    months_are_their_days(&app).await;

    // Recomputing everything from the readings gives the same (the bound is in the data).
    let before = snapshot(&app).await;
    sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT counter_id, min(ts), max(ts), true FROM counter_readings GROUP BY counter_id",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    settle(&app, 6).await;
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commissioning_after_the_data_removes_earlier_intervals_and_clearing_brings_them_back() {
    let (app, mut client, _) = app_with_site().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    // Readings every quarter-hour from 23:00 on day 1 to 01:00 on day 2; on the first and
    // the last day of a month when the test runs then, which the month check also covers.
    let midnight = days_ago(5);
    let readings: Vec<(DateTime<Utc>, i64)> = (0..9)
        .map(|n| {
            (
                midnight + chrono::Duration::minutes(15 * n - 60),
                50_000 + 250 * n * (n + 1),
            )
        })
        .collect();
    publish(&mut client, "MAIN1", &readings).await;
    settle(&app, 9).await;
    // The meter measures the site: its import makes the site totals.
    let (status, body) = patch(&app, &admin, "MAIN1", json!({ "measures": "site" })).await;
    assert_eq!(status, 204, "{body}");
    settle(&app, 9).await;
    let full = snapshot(&app).await;
    assert_eq!(full.0.len(), 8, "{:?}", full.0);
    assert_eq!(full.1.len(), 2, "two days: {:?}", full.1);
    assert_eq!(full.3.len(), 8, "site totals: {:?}", full.3);
    months_are_their_days(&app).await;

    // Commissioned at midnight: day 1 disappears from intervals, days, months and the site.
    let (status, body) = patch(
        &app,
        &admin,
        "MAIN1",
        json!({ "commissioned_at": rfc3339(midnight) }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    settle(&app, 9).await;
    let (intervals, days, months, site) = snapshot(&app).await;
    assert_eq!(intervals, full.0[4..].to_vec());
    assert!(intervals.iter().all(|i| i.0 >= midnight));
    assert_eq!(days.len(), 1, "{days:?}");
    assert_eq!(days[0].0, midnight.date_naive());
    assert_eq!(days[0].1, intervals.iter().map(|i| i.1).sum::<i64>());
    assert_eq!(site, full.3[4..].to_vec());
    assert_eq!(
        months.iter().map(|m| m.1).sum::<i64>(),
        days[0].1,
        "{months:?}"
    );
    months_are_their_days(&app).await;

    // Moved later, by the API's date form (local midnight of the site, UTC here): nothing left
    // before it either.
    let later = midnight + chrono::Duration::days(1);
    let (status, body) = patch(
        &app,
        &admin,
        "MAIN1",
        json!({ "commissioned_at": later.format("%Y-%m-%d").to_string() }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    settle(&app, 9).await;
    let (intervals, days, months, site) = snapshot(&app).await;
    assert!(intervals.is_empty() && days.is_empty() && months.is_empty() && site.is_empty());

    // Cleared: unknown again, no bound; everything comes back as it was.
    let (status, body) = patch(&app, &admin, "MAIN1", json!({ "commissioned_at": null })).await;
    assert_eq!(status, 204, "{body}");
    settle(&app, 9).await;
    assert_eq!(snapshot(&app).await, full);
    months_are_their_days(&app).await;
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE commissioned_at IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_sets_commissioning_and_bad_dates_are_400() {
    let app = TestApp::spawn().await;
    let site = app.site("Lj", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let mut client = app.gateway_client(GW, &password).await;
    publish(&mut client, "M9", &[(days_ago(1), 1_000)]).await;
    app.wait_count("SELECT count(*) FROM devices", 1).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let operator = app.user_token("op@example.com", "operator", &[site]).await;
    let viewer = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;

    for token in [&operator, &viewer] {
        let (status, body) = patch(
            &app,
            token,
            "M9",
            json!({ "commissioned_at": "2026-01-01T00:00:00Z" }),
        )
        .await;
        assert_eq!(status, 403, "{body}");
    }
    let tomorrow_and_more = rfc3339(Utc::now() + chrono::Duration::hours(26));
    for bad in [
        json!("yesterday"),
        json!("1989-12-31T23:59:59Z"),
        json!("1989-12-31"),
        json!(tomorrow_and_more),
        json!("2026-13-01"),
        json!("2026-02-30T00:00:00Z"),
        json!(""),
    ] {
        let (status, body) = patch(&app, &admin, "M9", json!({ "commissioned_at": bad })).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE commissioned_at IS NOT NULL")
            .await,
        0,
        "nothing refused was stored"
    );

    // A date is local midnight in the meter's zone (its site's).
    let (status, body) = patch(
        &app,
        &admin,
        "M9",
        json!({ "commissioned_at": "2026-01-15" }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let stored: DateTime<Utc> =
        sqlx::query_scalar("SELECT commissioned_at FROM devices WHERE serial = 'M9'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let expected = chrono_tz::Europe::Ljubljana
        .with_ymd_and_hms(2026, 1, 15, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(stored, expected);
    // Exactly 1990 and a few hours ahead (today somewhere east) are accepted.
    for ok in [
        "1990-01-01T00:00:00Z".to_owned(),
        rfc3339(Utc::now() + chrono::Duration::hours(20)),
    ] {
        let (status, body) = patch(&app, &admin, "M9", json!({ "commissioned_at": ok })).await;
        assert_eq!(status, 204, "{ok}: {body}");
    }
}

/// A browser session on the pages: cookies kept, forms posted with the CSRF token.
struct Browser<'a> {
    app: &'a TestApp,
    cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    async fn login(app: &'a TestApp, email: &str) -> Self {
        let mut b = Self {
            app,
            cookies: Vec::new(),
        };
        let form = b.get("/login").await;
        let csrf = csrf(&form.body);
        let r = b
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", email),
                    ("password", "correct horse battery staple"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        b
    }

    fn keep(&mut self, r: &headend_e2e::HttpResponse) {
        for c in r.set_cookies() {
            if let Some((n, v)) = c.split(';').next().unwrap_or("").split_once('=') {
                self.cookies.retain(|(name, _)| name != n);
                self.cookies.push((n.to_owned(), v.to_owned()));
            }
        }
    }

    fn cookie(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> headend_e2e::HttpResponse {
        let cookie = self.cookie();
        let r = headend_e2e::raw_request(self.app.http, "GET", path, &[("Cookie", &cookie)], "")
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> headend_e2e::HttpResponse {
        let body = form
            .iter()
            .map(|(k, v)| {
                let v: String = v
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join("&");
        let cookie = self.cookie();
        let r = headend_e2e::raw_request(
            self.app.http,
            "POST",
            path,
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &body,
        )
        .await
        .unwrap();
        self.keep(&r);
        r
    }
}

fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    body[at..at + 32].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_admin_meter_form_sets_and_clears_the_commissioning_date() {
    let (app, mut client, site) = app_with_site().await;
    publish(&mut client, "F1", &[(days_ago(1), 1_000)]).await;
    app.wait_count("SELECT count(*) FROM devices", 1).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    app.user_token("op@example.com", "operator", &[site]).await;
    let device: i64 = sqlx::query_scalar("SELECT id FROM devices")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let stored = || async {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>("SELECT commissioned_at FROM devices")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let path = format!("/admin/sites/{site}/meters/F1?device={device}");

    let mut browser = Browser::login(&app, "admin@example.com").await;
    let page = browser.get(&format!("/admin/sites/{site}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"name="commissioned_at" min="1990-01-01" value="""#),
        "{}",
        page.body
    );
    let token = csrf(&page.body);
    let form = |date: &str| -> Vec<(String, String)> {
        [
            ("csrf", token.as_str()),
            ("name", "Main"),
            ("placement", "site"),
            ("usage", ""),
            ("import_register", ""),
            ("export_register", ""),
            ("reactive_register", ""),
            ("commissioned_at", date),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    // An instant set through the API shows as its local date; saving that date keeps it.
    let instant = days_ago(10) + chrono::Duration::minutes(630);
    let (status, body) = patch(
        &app,
        &admin,
        "F1",
        json!({ "commissioned_at": rfc3339(instant) }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let page = browser.get(&format!("/admin/sites/{site}")).await;
    let shown = instant.format("%Y-%m-%d").to_string();
    assert!(
        page.body.contains(&format!("value=\"{shown}\"")),
        "{}",
        page.body
    );
    for (date, expected) in [
        (shown.clone(), Some(instant)),
        // Another date: local midnight of the site (UTC).
        (
            days_ago(20).format("%Y-%m-%d").to_string(),
            Some(days_ago(20)),
        ),
        // Refused, shown on the form, nothing changed.
        ("1980-01-01".to_owned(), Some(days_ago(20))),
        // Empty: cleared.
        (String::new(), None),
    ] {
        let form = form(&date);
        let fields: Vec<(&str, &str)> =
            form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = browser.post(&path, &fields).await;
        if date.starts_with("1980") {
            // Refused: the form again (422), the message beside the date, the date kept.
            assert_eq!(r.status, 422, "{date}: {}", r.body);
            assert!(
                r.body.contains(&format!(
                    r#"<p class="field-error" id="meter-{device}-commissioned_at-error">"#
                )),
                "{}",
                r.body
            );
            assert!(r.body.contains(r#"value="1980-01-01" aria-invalid="true""#));
        } else {
            assert_eq!(r.status, 303, "{date}: {}", r.body);
            let location = r.header("location").unwrap_or_default().to_owned();
            assert!(!location.contains("error="), "{date}: {location}");
        }
        assert_eq!(stored().await, expected, "{date}");
    }

    // An operator gets no form and cannot post one.
    let mut operator = Browser::login(&app, "op@example.com").await;
    let page = operator.get(&format!("/admin/sites/{site}")).await;
    assert_eq!(page.status, 403);
    // The CSRF token is the `headend_csrf` cookie's value.
    let token = operator
        .cookies
        .iter()
        .find(|(n, _)| n == "headend_csrf")
        .map(|(_, v)| v.clone())
        .expect("a CSRF cookie");
    let r = operator
        .post(
            &path,
            &[
                ("csrf", &token),
                ("name", ""),
                ("placement", ""),
                ("usage", ""),
                ("import_register", ""),
                ("export_register", ""),
                ("reactive_register", ""),
                ("commissioned_at", "2026-01-01"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(stored().await, None);
}
