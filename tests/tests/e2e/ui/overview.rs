//! The overview (`/`) and the site page's quick ranges, in Chromium at desktop and phone
//! sizes: sparklines, today and this month against the same period last year, alarms,
//! offline gateways, the scope rule and the empty states.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use headend::dashboard::units;
use headend_e2e::browser::{Browser, DESKTOP, PHONE};
use headend_e2e::{eventually, TestApp};
use headend_energy::calendar::{self, Period};
use serde_json::json;

use super::log_in;

/// A site meter on `gateway` with an import counter; returns the counter id.
async fn site_meter(app: &TestApp, gateway: &str, serial: &str) -> i64 {
    sqlx::query_scalar(
        "WITH d AS (
             INSERT INTO devices (gateway_id, kind, port, slot, serial, measures)
             SELECT id, 'meter', 'rs485', 1, $2, 'site' FROM gateways WHERE serial = $1
             RETURNING id)
         INSERT INTO counters (device_id, name, idx, resettable, unit)
         SELECT id, 'counter1nr', 1, false, 'Wh' FROM d RETURNING id",
    )
    .bind(gateway)
    .bind(serial)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// `quarters + 1` readings 15 minutes apart from `start`, `step_wh` apart, queued for the
/// profile worker as ingest would.
async fn readings(
    app: &TestApp,
    counter: i64,
    start: DateTime<Utc>,
    quarters: i64,
    first_wh: i64,
    step_wh: i64,
) {
    sqlx::query(
        "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
         SELECT $1, $2 + make_interval(mins => 15 * g), ($3 + $4 * g) * 1000, now()
         FROM generate_series(0, $5::int4) g",
    )
    .bind(counter)
    .bind(start)
    .bind(first_wh)
    .bind(step_wh)
    .bind(quarters as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         VALUES ($1, $2, $2 + make_interval(mins => 15 * $3::int4), true)",
    )
    .bind(counter)
    .bind(start)
    .bind(quarters as i32)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// Waits until the profile worker has done all the work queued.
async fn settle(app: &TestApp) {
    let idle = eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "profile worker did not finish its queue");
}

/// The site's quarter-hours of today so far (the readings stop at the last whole one).
fn today_quarters(tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, i64) {
    let today = calendar::local_date(now, tz);
    let (start, _) = calendar::period_bounds(tz, today, Period::Day);
    let n = (calendar::floor_quarter(now) - start).num_minutes() / 15;
    (start, n)
}

fn a_year_before(d: NaiveDate) -> NaiveDate {
    d.with_year(d.year() - 1)
        .or_else(|| NaiveDate::from_ymd_opt(d.year() - 1, d.month(), 28))
        .unwrap()
}

struct Seeded {
    app: TestApp,
    alpha: i64,
    bravo: i64,
    charlie: i64,
    /// Quarter-hours of today at Alpha and Bravo.
    n_alpha: i64,
    n_bravo: i64,
}

/// Alpha (Ljubljana, flat contract at 0.20 EUR/kWh): 1 kWh per quarter-hour today, 0.5 kWh a
/// year ago (so +100 %), one critical and one warning alarm open, its gateway online.
/// Bravo (New York, no contract): 2 kWh per quarter-hour today, 4 kWh a year ago, its
/// gateway offline. Charlie (UTC): a gateway, no meter, last heard of three days ago.
async fn seed() -> Seeded {
    let app = TestApp::spawn().await;
    let alpha = app.site("Alpha plant", "Europe/Ljubljana").await;
    let bravo = app.site("Bravo depot", "America/New_York").await;
    let charlie = app.site("Charlie yard", "UTC").await;
    app.gateway("SGA00001", Some(alpha), None).await;
    app.gateway("SGB00001", Some(bravo), None).await;
    app.gateway("SGC00001", Some(charlie), None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let contract = json!({
        "currency": "EUR",
        "bands": [{ "name": "flat", "import_price": "0.20" }],
        "default_band": "flat",
        "schedule": [],
        "holidays": []
    });
    let r = app
        .request(
            "POST",
            &format!("/api/v1/sites/{alpha}/contracts"),
            Some(&admin),
            Some(json!({ "valid_from": "2020-01-01", "contract": contract })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    let now = Utc::now();
    let mut ns = Vec::new();
    for (gateway, serial, zone, today_wh, year_ago_wh) in [
        ("SGA00001", "MA000001", "Europe/Ljubljana", 1000, 500),
        ("SGB00001", "MB000001", "America/New_York", 2000, 4000),
    ] {
        let tz: Tz = zone.parse().unwrap();
        let counter = site_meter(&app, gateway, serial).await;
        let (start, n) = today_quarters(tz, now);
        let ly = a_year_before(calendar::local_date(now, tz));
        let (ly_start, _) = calendar::period_bounds(tz, ly, Period::Day);
        readings(&app, counter, ly_start, 96, 1_000_000, year_ago_wh).await;
        readings(&app, counter, start, n, 5_000_000, today_wh).await;
        ns.push(n);
    }
    settle(&app).await;

    sqlx::query(
        "INSERT INTO alarms (rule_name, site_id, subject, severity, message, raised_at)
         VALUES ('Overload', $1, 'MA000001', 'critical', 'P above 40 kW', now()),
                ('Cos phi', $1, 'MA000001', 'warning', 'PF below 0.9', now())",
    )
    .bind(alpha)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        // MQTT gateways (their session state is known: `online_changed_at` set), one online.
        "UPDATE gateways SET online = (serial = 'SGA00001'),
                online_changed_at = now() - interval '1 hour',
                last_seen_at = CASE serial WHEN 'SGC00001' THEN now() - interval '3 days'
                                           ELSE now() END",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    Seeded {
        app,
        alpha,
        bravo,
        charlie,
        n_alpha: ns[0],
        n_bravo: ns[1],
    }
}

fn kwh(v: f64) -> String {
    units::energy_kwh(v).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_cards_compare_with_last_year_at_desktop_and_phone() {
    let (s, browser) = tokio::join!(seed(), Browser::start());
    let base = format!("http://{}", s.app.http);
    log_in(&browser, &base, "admin@example.com").await;
    for size in [DESKTOP, PHONE] {
        browser.resize(size).await.unwrap();
        browser.goto(&format!("{base}/")).await.unwrap();
        browser.wait_for("#sites").await.unwrap();
        assert_eq!(browser.count(".site-card").await.unwrap(), 3, "{size:?}");

        // Alpha: the sparkline of today, 1 kWh a quarter against 0.5 kWh a year ago.
        let a = s.alpha;
        let points: usize = browser
            .attr(&format!("#spark-{a}"), "data-points")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(points as i64, s.n_alpha, "a point per quarter-hour so far");
        if s.n_alpha > 1 {
            assert_eq!(
                browser
                    .count(&format!("#spark-{a} polyline"))
                    .await
                    .unwrap(),
                1
            );
        }
        let row = |site: i64, key: &str| format!("#site-{site}-{key}");
        let today = browser.text(&row(a, "today-energy")).await.unwrap();
        assert!(
            today.contains(&kwh(s.n_alpha as f64)),
            "{size:?} today: {today}"
        );
        let cost = browser.text(&row(a, "today-cost")).await.unwrap();
        assert!(
            cost.contains(&units::money(0.2 * s.n_alpha as f64, "EUR")),
            "{size:?} cost: {cost}"
        );
        let month = browser.text(&row(a, "month-energy")).await.unwrap();
        assert!(month.contains("kWh") || month.contains("Wh"), "{month}");
        if s.n_alpha >= 2 {
            // A quarter-hour may end between seeding and the page: last year's cut moves by one.
            let ly = browser
                .text(&format!("{} .last-year", row(a, "today-energy")))
                .await
                .unwrap();
            assert!(
                ly == kwh(s.n_alpha as f64 * 0.5) || ly == kwh((s.n_alpha + 1) as f64 * 0.5),
                "{size:?} last year: {ly}"
            );
            for key in ["today-energy", "today-cost", "month-energy"] {
                let delta = format!("{} .delta", row(a, key));
                let class = browser.attr(&delta, "class").await.unwrap().unwrap();
                assert!(class.contains("up"), "{key}: {class}");
                let change = browser.text(&delta).await.unwrap();
                assert!(
                    change.starts_with('+') && change.ends_with('%'),
                    "{key}: {change}"
                );
            }
        }
        // Bravo: less than a year ago, and no contract for costs.
        let b = s.bravo;
        let today_b = browser.text(&row(b, "today-energy")).await.unwrap();
        assert!(today_b.contains(&kwh(2.0 * s.n_bravo as f64)), "{today_b}");
        if s.n_bravo >= 2 {
            let delta = format!("{} .delta", row(b, "today-energy"));
            let class = browser.attr(&delta, "class").await.unwrap().unwrap();
            assert!(class.contains("down"), "{class}");
            let change = browser.text(&delta).await.unwrap();
            assert!(change.starts_with('−'), "{change}");
        }
        let cost_b = browser.text(&row(b, "today-cost")).await.unwrap();
        assert!(cost_b.contains("needs a supply contract"), "{cost_b}");

        // Alarms by severity, linked to the alarms of the site.
        let alarms = browser.text(&row(a, "alarms")).await.unwrap();
        assert!(alarms.contains("2 open alarms"), "{alarms}");
        assert!(
            alarms.contains("1 critical") && alarms.contains("1 warning"),
            "{alarms}"
        );
        let href = browser
            .attr(&format!("{} a", row(a, "alarms")), "href")
            .await
            .unwrap();
        assert_eq!(
            href.as_deref(),
            Some(format!("/alarms?site_id={a}").as_str())
        );
        assert!(browser
            .text(&row(b, "alarms"))
            .await
            .unwrap()
            .contains("No open alarm"));
        // Offline gateways by name.
        let gw_b = browser.text(&row(b, "gateways")).await.unwrap();
        assert!(
            gw_b.contains("1 gateway offline") && gw_b.contains("SGB00001"),
            "{gw_b}"
        );
        assert!(browser
            .text(&row(a, "gateways"))
            .await
            .unwrap()
            .contains("1 gateway online"));
        // Charlie: no meter, nothing today, and since when.
        let c = s.charlie;
        let empty = browser.text(&row(c, "no-meters")).await.unwrap();
        assert!(empty.contains("No meter on this site yet"), "{empty}");
        assert_eq!(
            browser
                .attr(&format!("{} a", row(c, "no-meters")), "href")
                .await
                .unwrap()
                .as_deref(),
            Some(format!("/admin/sites/{c}").as_str())
        );
        let no_data = browser.text(&row(c, "no-data")).await.unwrap();
        assert!(
            no_data.contains("the gateway has not reported since"),
            "{no_data}"
        );
        // Nothing overflows the phone's width.
        let overflow = browser
            .execute("return document.documentElement.scrollWidth > window.innerWidth + 1")
            .await
            .unwrap();
        let wide = browser
            .execute(
                "return [...document.querySelectorAll('body *')]
                   .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                   .slice(0, 5)
                   .map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))",
            )
            .await
            .unwrap();
        assert_eq!(
            overflow,
            json!(false),
            "{size:?}: the page scrolls sideways: {wide}"
        );
    }
    browser.close().await.unwrap();
    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_only_their_sites_and_a_user_without_one_is_told_why() {
    let (s, browser) = tokio::join!(seed(), Browser::start());
    let base = format!("http://{}", s.app.http);
    s.app
        .user_token("viewer@example.com", "viewer", &[s.alpha])
        .await;
    s.app.user_token("nobody@example.com", "viewer", &[]).await;
    log_in(&browser, &base, "viewer@example.com").await;
    browser
        .wait_for(&format!("#site-{}", s.alpha))
        .await
        .unwrap();
    assert_eq!(browser.count(".site-card").await.unwrap(), 1);
    let page = browser.text("main").await.unwrap();
    assert!(page.contains("Alpha plant"));
    assert!(
        !page.contains("Bravo") && !page.contains("Charlie"),
        "{page}"
    );
    // A viewer is not offered the admin pages.
    assert!(!page.contains("place its meters"));

    browser.resize(PHONE).await.unwrap();
    let browser2 = Browser::start().await;
    log_in(&browser2, &base, "nobody@example.com").await;
    let empty = browser2
        .wait_for_text("#no-sites", "ask an admin")
        .await
        .unwrap();
    assert!(
        empty.contains("ask an admin to grant you a site"),
        "{empty}"
    );
    assert_eq!(browser2.count(".site-card").await.unwrap(), 0);
    browser2.close().await.unwrap();
    browser.close().await.unwrap();
    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_quick_ranges_are_links_marked_active_with_scaled_totals() {
    let (s, browser) = tokio::join!(seed(), Browser::start());
    let base = format!("http://{}", s.app.http);
    log_in(&browser, &base, "admin@example.com").await;
    let a = s.alpha;
    let tz: Tz = "Europe/Ljubljana".parse().unwrap();
    let today = calendar::local_date(Utc::now(), tz);
    browser.goto(&format!("{base}/sites/{a}")).await.unwrap();
    // By default: this month, day by day.
    browser
        .wait_for("#range-month[aria-current=page]")
        .await
        .unwrap();
    for size in [DESKTOP, PHONE] {
        browser.resize(size).await.unwrap();
        for (key, label) in [
            ("today", format!("Today, {}", today.format("%a %-d %b %Y"))),
            (
                "yesterday",
                format!(
                    "Yesterday, {}",
                    today.pred_opt().unwrap().format("%a %-d %b %Y")
                ),
            ),
            ("7d", "Last 7 days".to_owned()),
            ("30d", "Last 30 days".to_owned()),
            ("month", format!("This month, {}", today.format("%B %Y"))),
            ("year", format!("This year, {}", today.format("%Y"))),
        ] {
            // A plain link: it works without script.
            let href = browser
                .attr(&format!("#range-{key}"), "href")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(href, format!("/sites/{a}?range={key}"));
            browser.click(&format!("#range-{key}")).await.unwrap();
            browser
                .wait_for(&format!("#range-{key}[aria-current=page]"))
                .await
                .unwrap();
            assert_eq!(
                browser.count(".quick a[aria-current]").await.unwrap(),
                1,
                "{key}: one active range"
            );
            let heading = browser.text("#period-label").await.unwrap();
            assert!(heading.starts_with(&label), "{key}: {heading}");
            let title = browser.execute("return document.title").await.unwrap();
            assert!(
                title.as_str().unwrap_or_default().contains(&label),
                "{key}: {title}"
            );
            let energy = browser.text("#total-energy").await.unwrap();
            assert!(
                ["Wh", "kWh", "MWh"].iter().any(|u| energy.ends_with(u)),
                "{key}: {energy}"
            );
            let cost = browser.text("#total-cost").await.unwrap();
            assert!(cost.ends_with("EUR") || cost == "–", "{key}: {cost}");
            if matches!(key, "today" | "yesterday") {
                assert_eq!(browser.count("#power-chart").await.unwrap(), 1, "{key}");
            } else {
                assert_eq!(browser.count("#energy-chart").await.unwrap(), 1, "{key}");
            }
        }
    }
    // Today's energy is the sum of today's quarter-hours.
    browser
        .goto(&format!("{base}/sites/{a}?range=today"))
        .await
        .unwrap();
    let energy = browser.text("#total-energy").await.unwrap();
    assert_eq!(energy, kwh(s.n_alpha as f64));
    browser.close().await.unwrap();
    s.app.stop().await;
}
