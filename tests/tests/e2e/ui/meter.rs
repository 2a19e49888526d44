//! The meter page in the browser: counters with names people understand (the wire name small
//! beside), values in readable units, quick ranges on the power graph, live values that keep
//! the server's formatting, and the empty states; at desktop and phone sizes.

use chrono::{Duration, Utc};
use headend_e2e::browser::{Browser, DESKTOP, PHONE};
use headend_e2e::TestApp;
use serde_json::{json, Value};

use crate::ui::{fits, log_in};

/// A measurements document of the IR meter `X0000124`, measured `ago_s` seconds ago.
fn measurement(ago_s: i64, changes: &[(&str, Value)]) -> String {
    let mut doc: Value =
        serde_json::from_slice(&headend_e2e::fixture("measurements-ir.json")).unwrap();
    let at = Utc::now() - Duration::seconds(ago_s);
    doc["header"]["local_time"] = at.format("%d.%m.%Y %H:%M:%S").to_string().into();
    for (k, v) in changes {
        doc["measurements"][*k] = v.clone();
    }
    doc.to_string()
}

/// A counters document of `X0000124` at `at` (UTC: the sites here are in UTC).
fn counters(at: chrono::DateTime<Utc>, counters: Value, settings: Value) -> String {
    json!({
        "header": { "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": "X0000124",
            "local_time": at.format("%d.%m.%Y %H:%M:%S").to_string(),
            "resetable_counters": 2, "non_resetable_counters": 4 },
        "counters": counters,
        "settings": settings,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_show_human_names_and_readable_units() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    let client = app.gateway_client("SG000017", &password).await;
    let all = "1 2 3 4 ";
    client
        .publish(
            "sg/SG000017/pub/counters/ir",
            counters(
                Utc::now() - Duration::minutes(5),
                json!({
                    "counter1nr": "184233.125 kWh",
                    "counter2nr": "12.500 Wh",
                    "counter3nr": "20000.5 kvarh",
                    "counter4nr": "3.000 kvarh",
                    "counter5": "1.5 kWh",
                    "counter7": "0.0 kvarh",
                }),
                json!({
                    "phase1nr": "Total", "phase2nr": "Total", "phase3nr": "", "phase4nr": "",
                    "phase5": "L1", "phase7": "",
                    "tariff1nr": all, "tariff2nr": all, "tariff3nr": all, "tariff4nr": all,
                    "tariff5": "2 ", "tariff7": all,
                }),
            ),
        )
        .await;
    client
        .publish("sg/SG000017/pub/measurements/ir", measurement(60, &[]))
        .await;
    app.wait_count("SELECT count(*) FROM counter_readings", 6)
        .await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;

    log_in(&browser, &base, "viewer@example.com").await;
    for size in [DESKTOP, PHONE] {
        browser.resize(size).await.unwrap();
        browser
            .goto(&format!("{base}/meters/X0000124"))
            .await
            .unwrap();
        let rows = browser
            .execute(
                "return [...document.querySelectorAll('#counters tr[data-counter]')].map(tr => [
                    tr.querySelector('.counter-name').textContent,
                    tr.querySelector('small.wire').textContent,
                    tr.querySelector('td.num').textContent,
                    tr.querySelector('td.num').getAttribute('title')])",
            )
            .await
            .unwrap();
        assert_eq!(
            rows,
            json!([
                [
                    "Active energy import",
                    "counter1nr",
                    "184 MWh",
                    "184233.125 kWh"
                ],
                [
                    "Active energy export",
                    "counter2nr",
                    "12.5 Wh",
                    "0.0125 kWh"
                ],
                [
                    "Reactive energy import (inductive)",
                    "counter3nr",
                    "20.0 Mvarh",
                    "20000.5 kvarh"
                ],
                [
                    "Reactive energy export (capacitive)",
                    "counter4nr",
                    "3.00 kvarh",
                    "3 kvarh"
                ],
                [
                    "Counter 5 L1, tariff 2, resettable",
                    "counter5",
                    "1.50 kWh",
                    "1.5 kWh"
                ],
                ["Counter 7, resettable", "counter7", "0.00 kvarh", "0 kvarh"],
            ]),
            "{size:?}"
        );
        // The wire name is smaller than the name people read.
        let sizes = browser
            .execute(
                "const tr = document.querySelector('#counters tr[data-counter]');
                 return [parseFloat(getComputedStyle(tr.querySelector('.counter-name')).fontSize),
                         parseFloat(getComputedStyle(tr.querySelector('small.wire')).fontSize)]",
            )
            .await
            .unwrap();
        assert!(
            sizes[1].as_f64().unwrap() < sizes[0].as_f64().unwrap(),
            "{sizes}"
        );
        // Measurements with their units.
        for (key, text) in [
            ("u1", "229.5 V"),
            ("i1", "4.31 A"),
            ("p", "2.82 kW"),
            ("p1", "0.942 kW"),
            ("q", "-0.312 kvar"),
            ("s", "2.85 kVA"),
            ("frequency", "49.99 Hz"),
            ("temperature", "30.7 °C"),
            ("thd_u1", "2.5 %"),
            ("tariff", "T1"),
        ] {
            assert_eq!(
                browser.text(&format!("td[data-key={key}]")).await.unwrap(),
                text,
                "{key} at {size:?}"
            );
        }
        fits(&browser, &format!("the meter page at {size:?}")).await;
    }
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_ranges_show_their_range_and_are_marked_current() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    let mut client = app.gateway_client("SG000017", &password).await;
    // 1 kWh per quarter-hour over the last two hours: a mean of 4 kW whatever the bucket.
    let now = Utc::now().timestamp();
    let last = now - now.rem_euclid(900) - 900;
    for q in 0..=8_i64 {
        let at = chrono::DateTime::from_timestamp(last - (8 - q) * 900, 0).unwrap();
        client
            .publish(
                "sg/SG000017/pub/counters/ir",
                counters(
                    at,
                    json!({ "counter1nr": format!("{}.000 kWh", 1000 + q) }),
                    json!({}),
                ),
            )
            .await;
    }
    client.wait_acks(9).await;
    app.wait_count("SELECT count(*) FROM energy_intervals", 8)
        .await;

    log_in(&browser, &base, "viewer@example.com").await;
    let today = Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| d.format("%-d %b %Y").to_string();
    let span = |from: chrono::NaiveDate| {
        if from == today {
            day(today)
        } else {
            format!("{} – {}", day(from), day(today))
        }
    };
    let first_of_month = today - Duration::days(i64::from(chrono::Datelike::day(&today)) - 1);
    let first_of_year =
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&today), 1, 1).unwrap();
    let year_days = (today - first_of_year).num_days() + 1;
    let month_days = (today - first_of_month).num_days() + 1;
    let bucket = |days: i64| {
        if days <= 3 {
            ("15-minute means", days * 96)
        } else if days <= 31 {
            ("hourly means", days * 24)
        } else {
            ("daily means", days)
        }
    };
    let cases = [
        (
            "24h",
            "Last 24 hours",
            "the last 24 hours".to_owned(),
            bucket(1),
        ),
        ("today", "Today", day(today), bucket(1)),
        (
            "yesterday",
            "Yesterday",
            day(today - Duration::days(1)),
            bucket(1),
        ),
        ("7d", "7 days", span(today - Duration::days(6)), bucket(7)),
        (
            "30d",
            "30 days",
            span(today - Duration::days(29)),
            bucket(30),
        ),
        (
            "month",
            "This month",
            span(first_of_month),
            bucket(month_days),
        ),
        ("year", "This year", span(first_of_year), bucket(year_days)),
    ];
    for size in [DESKTOP, PHONE] {
        browser.resize(size).await.unwrap();
        browser
            .goto(&format!("{base}/meters/X0000124"))
            .await
            .unwrap();
        for (key, label, shown, (means, bars)) in &cases {
            let link = format!("#quick-ranges a[href$='range={key}']");
            assert_eq!(browser.text(&link).await.unwrap(), *label);
            browser.click(&link).await.unwrap();
            browser
                .wait_for(&format!("{link}[aria-current=page]"))
                .await
                .unwrap();
            assert_eq!(
                browser
                    .count("#quick-ranges a[aria-current=page]")
                    .await
                    .unwrap(),
                1,
                "{key}"
            );
            let heading = browser.text("#power-heading").await.unwrap();
            assert!(
                heading.contains(shown.as_str()) && heading.contains(means),
                "{key} at {size:?}: {heading}"
            );
            assert_eq!(
                browser
                    .attr("#power-chart", "data-bars")
                    .await
                    .unwrap()
                    .unwrap(),
                bars.to_string(),
                "{key}"
            );
            {
                // Every bar with a value is the 4 kW mean, whatever the bucket.
                let values = browser
                    .execute("return [...document.querySelectorAll('#power-chart rect.bar')].map(r => r.getAttribute('data-value'))")
                    .await
                    .unwrap();
                assert!(
                    values.as_array().unwrap().iter().all(|v| v == "4"),
                    "{key}: {values}"
                );
            }
            if *key != "24h" {
                // The custom form shows the range's days.
                let from = browser
                    .execute("return document.querySelector('#period-form input[name=from]').value")
                    .await
                    .unwrap();
                let title = browser.attr(&link, "title").await.unwrap().unwrap();
                assert_eq!(&title, shown, "{key}");
                assert!(from.as_str().is_some_and(|f| f.len() == 10), "{from}");
            }
            fits(&browser, &format!("range {key} at {size:?}")).await;
        }
    }
    // The custom range keeps working, and a range that equals a quick one is marked.
    browser.resize(DESKTOP).await.unwrap();
    browser
        .goto(&format!(
            "{base}/meters/X0000124?from={}&to={}",
            today,
            today + Duration::days(1)
        ))
        .await
        .unwrap();
    browser
        .wait_for("#quick-ranges a[href$='range=today'][aria-current=page]")
        .await
        .unwrap();
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_refresh_keeps_the_server_formatting() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    let client = app.gateway_client("SG000017", &password).await;
    client
        .publish("sg/SG000017/pub/measurements/ir", measurement(120, &[]))
        .await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    log_in(&browser, &base, "viewer@example.com").await;
    for (n, size) in [DESKTOP, PHONE].into_iter().enumerate() {
        browser.resize(size).await.unwrap();
        browser
            .goto(&format!("{base}/meters/X0000124"))
            .await
            .unwrap();
        browser
            .execute("window.headendMarker = 42; return null")
            .await
            .unwrap();
        let (u1, p, expect_u1, expect_p) = if n == 0 {
            ("231.7 V", "12345.6 kW", "231.7 V", "12.3 MW")
        } else {
            ("20.55 kV", "-812.5 W", "20.6 kV", "-0.813 kW")
        };
        client
            .publish(
                "sg/SG000017/pub/measurements/ir",
                measurement(
                    60 - n as i64 * 30,
                    &[("U1", json!(u1)), ("P0", json!(p)), ("tariff", json!(2))],
                ),
            )
            .await;
        app.wait_count("SELECT count(*) FROM measurements", 2 + n as i64)
            .await;
        browser
            .wait_for_js(&format!(
                "return document.querySelector('td[data-key=u1]').textContent === '{expect_u1}'
                    && document.querySelector('td[data-key=p]').textContent === '{expect_p}'"
            ))
            .await
            .unwrap();
        assert_eq!(
            browser
                .execute("return window.headendMarker")
                .await
                .unwrap(),
            json!(42),
            "the values changed in this very page"
        );
        // A reload shows the very same text (the stamp was refreshed with the cells).
        let script =
            "return [...document.querySelectorAll('td[data-key], #live-ts')].map(e => e.textContent)";
        let live = browser.execute(script).await.unwrap();
        assert!(
            live.to_string().contains("\"measured "),
            "the stamp says when: {live}"
        );
        browser
            .goto(&format!("{base}/meters/X0000124"))
            .await
            .unwrap();
        let served = browser.execute(script).await.unwrap();
        assert_eq!(live, served, "{size:?}");
    }
    // The script's formatting is the server's for the same numbers.
    let samples: Vec<(&str, f64)> = vec![
        ("u1", 229.5),
        ("u2", 0.05),
        ("u3", 10_000.0),
        ("i1", 0.125),
        ("i2", 99.995),
        ("i_n", 123.45),
        ("i3", 25_000.0),
        ("p", 0.0),
        ("p", -0.4),
        ("p1", 942.1),
        ("p", 9_999_499.0),
        ("p", 1_234_567_890.0),
        ("q", -312.4),
        ("s", 2851.0),
        ("pf", 0.9874),
        ("pf2", -0.8984),
        ("pa1", 17.82),
        ("frequency", 49.995),
        ("temperature", -0.04),
        ("thd_i3", 14.02),
        ("thd_u1", 2.5),
    ];
    let js = browser
        .execute_with(
            "return arguments[0].map(([k, v]) => window.headendMeasurementText(k, v))",
            vec![json!(samples)],
        )
        .await
        .unwrap();
    let rust: Vec<String> = samples
        .iter()
        .map(|(k, v)| headend::web::pages::meter::measurement_text(k, Some(*v)))
        .collect();
    assert_eq!(js, json!(rust));
    // And so is the time of the measurements, in the site's zone (DST and odd offsets too).
    let times = [
        "2026-03-29T00:59:59Z",
        "2026-03-29T01:00:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:30:00Z",
        "2026-12-31T23:05:09Z",
        "2026-07-01T09:03:00Z",
    ];
    for zone in [
        "Europe/Ljubljana",
        "Asia/Kathmandu",
        "America/New_York",
        "UTC",
    ] {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let js = browser
            .execute_with(
                "return arguments[0].map(t => window.headendMeasuredText(t, arguments[1]))",
                vec![json!(times), json!(zone)],
            )
            .await
            .unwrap();
        let rust: Vec<String> = times
            .iter()
            .map(|t| {
                headend::web::pages::meter::measured_text(
                    t.parse::<chrono::DateTime<Utc>>().unwrap(),
                    tz,
                )
            })
            .collect();
        assert_eq!(js, json!(rust), "{zone}");
    }
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_states_explain() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    let second = app.gateway("SG000018", Some(site), None).await;
    app.user_token("admin@example.com", "admin", &[]).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    // An old reading only: nothing in the graph's range.
    let client = app.gateway_client("SG000017", &password).await;
    client
        .publish(
            "sg/SG000017/pub/counters/ir",
            headend_e2e::fixture("counters-ir-manual.json"),
        )
        .await;
    // The same serial on a second gateway: the serial alone is ambiguous.
    let other = app.gateway_client("SG000018", &second).await;
    other
        .publish(
            "sg/SG000018/pub/counters/ir",
            headend_e2e::fixture("counters-ir-manual.json"),
        )
        .await;
    app.wait_count("SELECT count(DISTINCT device_id) FROM counters", 2)
        .await;
    // A meter known (e.g. configured) but never heard from.
    let pool = sqlx::PgPool::connect(&app.database_url()).await.unwrap();
    let never: i64 = sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial, model)
         SELECT id, 'meter', 'rs485', 3, 'NEVER001', 'WM3M4C' FROM gateways WHERE serial = 'SG000017'
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (one, _two): (i64, i64) =
        sqlx::query_as("SELECT min(id), max(id) FROM devices WHERE serial = 'X0000124'")
            .fetch_one(&pool)
            .await
            .unwrap();

    for (email, admin) in [("admin@example.com", true), ("viewer@example.com", false)] {
        log_in(&browser, &base, email).await;
        for size in [DESKTOP, PHONE] {
            browser.resize(size).await.unwrap();
            // Never reported.
            browser
                .goto(&format!("{base}/meters/NEVER001?device={never}"))
                .await
                .unwrap();
            let text = browser.text("#meter-empty").await.unwrap();
            assert!(
                text.contains(
                    "This meter has not reported yet: check the gateway SG000017 is online"
                ),
                "{text}"
            );
            assert_eq!(
                browser
                    .attr("#meter-empty a", "href")
                    .await
                    .unwrap()
                    .as_deref(),
                Some("/gateways")
            );
            assert_eq!(browser.count("#power-empty").await.unwrap(), 0);
            fits(&browser, "never reported").await;
            // Reported long ago: no power in the range, and when the last reading came.
            browser
                .goto(&format!("{base}/meters/X0000124?device={one}"))
                .await
                .unwrap();
            let text = browser.text("#power-empty").await.unwrap();
            assert!(
                text.starts_with("No readings between ")
                    && text.contains("; the last reading arrived "),
                "{text}"
            );
            let arrived = Utc::now().format("%-d %b %Y").to_string();
            assert!(text.contains(&arrived), "{text}");
            assert_eq!(browser.count("#meter-empty").await.unwrap(), 0);
            // Not placed: admins get the link to place it.
            let text = browser.text("#meter-placement").await.unwrap();
            assert!(text.contains("not placed"), "{text}");
            let links = browser.count("#meter-placement a").await.unwrap();
            if admin {
                assert_eq!(
                    browser
                        .attr("#meter-placement a", "href")
                        .await
                        .unwrap()
                        .as_deref(),
                    Some(format!("/admin/sites/{site}").as_str())
                );
            } else {
                assert_eq!(links, 0, "{text}");
                assert!(text.contains("An administrator can place it"), "{text}");
            }
            fits(&browser, "no data").await;
            // The chooser: one clear entry per meter, each a link to its page.
            browser
                .goto(&format!("{base}/meters/X0000124"))
                .await
                .unwrap();
            assert_eq!(
                browser
                    .count("#meter-candidates li[data-device] a[href^='/meters/X0000124?device=']")
                    .await
                    .unwrap(),
                2
            );
            let text = browser.text("#meter-candidates").await.unwrap();
            assert!(
                text.contains("SG000017")
                    && text.contains("SG000018")
                    && text.contains("infrared port"),
                "{text}"
            );
            fits(&browser, "chooser").await;
            browser
                .click(&format!("#meter-candidates li[data-device='{one}'] a"))
                .await
                .unwrap();
            browser.wait_for("#power-chart").await.unwrap();
        }
        browser.client().delete_all_cookies().await.unwrap();
    }
    // A meter whose gateway belongs to no site: an admin is sent to assign it.
    let lone = app.gateway("SG000019", None, None).await;
    let lone = app.gateway_client("SG000019", &lone).await;
    let mut doc: Value =
        serde_json::from_slice(&headend_e2e::fixture("counters-rs485-2-wm3m4c.json")).unwrap();
    doc["header"]["local_time"] = Utc::now().format("%d.%m.%Y %H:%M:%S").to_string().into();
    lone.publish("sg/SG000019/pub/counters/rs485/2", doc.to_string())
        .await;
    app.wait_count("SELECT count(DISTINCT device_id) FROM counters", 3)
        .await;
    log_in(&browser, &base, "admin@example.com").await;
    browser
        .goto(&format!("{base}/meters/18230001"))
        .await
        .unwrap();
    let text = browser.text("#meter-placement").await.unwrap();
    assert!(text.contains("belongs to no site"), "{text}");
    assert_eq!(
        browser
            .attr("#meter-placement a", "href")
            .await
            .unwrap()
            .as_deref(),
        Some("/admin")
    );
    // Its counters by the fixture's settings.
    assert_eq!(
        browser
            .text("tr[data-counter=counter1nr] .counter-name")
            .await
            .unwrap(),
        "Active energy import"
    );
    browser.close().await.unwrap();
    drop((client, other, lone));
    app.stop().await;
}
