//! Headend in a real headless browser (Debian's Chromium through chromedriver).

use std::time::Instant;

use headend_e2e::browser::Browser;
use headend_e2e::TestApp;

use crate::ui::log_in;

/// The JSON a page shows as text (Chromium wraps a JSON response in a `<pre>`).
async fn json_page(browser: &Browser) -> serde_json::Value {
    let text = browser.text("pre").await.expect("JSON text");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_in_the_browser() {
    let began = Instant::now();
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    eprintln!(
        "browser started in {:?} (app and browser together {:?})",
        browser.startup_time(),
        began.elapsed()
    );
    let base = format!("http://{}", app.http);

    browser.goto(&format!("{base}/healthz")).await.unwrap();
    let health = json_page(&browser).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["database"], "ok", "{health}");

    browser
        .goto(&format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap(),
        format!("{base}/api/v1/openapi.json")
    );
    let openapi = json_page(&browser).await;
    assert!(
        openapi["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "{openapi}"
    );
    assert!(
        openapi["paths"].get("/auth/login").is_some()
            || openapi["paths"].get("/api/v1/auth/login").is_some(),
        "no login path in {}",
        openapi["paths"]
    );
    // Scripts run in the page, and the harness reads what they return.
    let title = browser
        .execute("return JSON.parse(document.querySelector('pre').textContent).info.title")
        .await
        .unwrap();
    assert_eq!(title, openapi["info"]["title"]);
    browser.close().await.unwrap();
}

/// The harness itself: forms, clicks, waiting for script-made content, downloads, cookies
/// and screenshots, on pages given as `data:` URLs (no server needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_forms_downloads_and_screenshots() {
    let browser = Browser::start().await;
    let page = r#"<!doctype html><meta charset=utf-8><title>t</title>
        <form id=f onsubmit="event.preventDefault();
            setTimeout(() => { const p = document.createElement('p'); p.id = 'out';
              p.textContent = 'hello ' + this.who.value + ' ' + this.csrf.value;
              document.body.append(p); }, 300)">
          <input name=who><input type=hidden name=csrf value=tok>
          <button type=submit>Go</button>
        </form>
        <a id=dl download="export.csv" href="data:text/csv;charset=utf-8,site%2Ckwh%0AA%2C1.5%0A">CSV</a>
        <ul><li>a</li><li>b</li><li>c</li></ul>"#;
    browser
        .goto(&format!("data:text/html,{}", percent(page)))
        .await
        .unwrap();
    assert_eq!(browser.count("li").await.unwrap(), 3);
    assert_eq!(browser.count("input[name=csrf]").await.unwrap(), 1);
    assert_eq!(browser.count("#out").await.unwrap(), 0);

    browser.fill("input[name=who]", "first").await.unwrap();
    browser.fill("input[name=who]", "world").await.unwrap();
    browser.click("button[type=submit]").await.unwrap();
    // Appears 300 ms after the click: waited for, not slept for.
    assert_eq!(browser.text("#out").await.unwrap(), "hello world tok");

    browser.click("#dl").await.unwrap();
    let file = browser.wait_download().await.unwrap();
    assert_eq!(file.file_name().unwrap(), "export.csv");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "site,kwh\nA,1.5\n");

    let shot = browser.downloads_dir().join("shot.png");
    browser.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    browser.close().await.unwrap();
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b" -_.~=<>/!'();:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Two sessions share nothing: each has its own profile, so its own cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_isolated() {
    let app = TestApp::spawn().await;
    let base = format!("http://{}", app.http);
    let (a, b) = tokio::join!(Browser::start(), Browser::start());
    eprintln!(
        "two browsers started at once in {:?} and {:?}",
        a.startup_time(),
        b.startup_time()
    );
    for browser in [&a, &b] {
        browser.goto(&format!("{base}/healthz")).await.unwrap();
    }
    a.execute("document.cookie = 'probe=1; path=/'; return null")
        .await
        .unwrap();
    let probe = a
        .cookie("probe")
        .await
        .unwrap()
        .expect("cookie set by script");
    assert_eq!(probe.value, "1");
    assert!(!probe.http_only);
    assert_eq!(b.cookie("probe").await.unwrap(), None);
    // Dropping kills the processes and removes the profile.
    drop(a);
    b.close().await.unwrap();
}

/// Logging in through the dashboard's form: the session cookie is HttpOnly and SameSite=Strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_the_form() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let email = "ops@example.com";
    // Creates the user with this password (and logs in over the API, which is not used here).
    app.user_token(email, "admin", &[]).await;
    let password = "correct horse battery staple";

    browser.goto(&format!("{base}/login")).await.unwrap();
    assert_eq!(browser.count("input[name=csrf]").await.unwrap(), 1);
    let csrf = browser.attr("input[name=csrf]", "value").await.unwrap();
    assert!(csrf.is_some_and(|v| !v.is_empty()), "empty CSRF token");
    browser.fill("input[name=email]", email).await.unwrap();
    browser
        .fill("input[name=password]", password)
        .await
        .unwrap();
    browser.click("button[type=submit]").await.unwrap();

    browser.wait_for_path("/").await.unwrap();
    browser.wait_for_text("h1", "Sites").await.unwrap();
    let session = browser
        .cookie("headend_session")
        .await
        .unwrap()
        .expect("a headend_session cookie after login");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    // HttpOnly: scripts in the page cannot read it.
    let visible = browser.execute("return document.cookie").await.unwrap();
    assert!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("headend_session"),
        "{visible}"
    );
    browser.close().await.unwrap();
}

/// The meter page's power graph on a spring-forward day has one bar per quarter-hour: 92.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_graph_of_a_dst_day_has_92_quarters() {
    use chrono::{TimeZone, Utc};
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let tz = chrono_tz::Europe::Ljubljana;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    let mut client = app.gateway_client("SG000017", &password).await;
    let start = tz
        .with_ymd_and_hms(2026, 3, 29, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    for q in 0..=92_i64 {
        let t = (start + chrono::Duration::minutes(15 * q)).with_timezone(&tz);
        let doc = serde_json::json!({
            "header": { "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": "X0000124",
                "local_time": t.format("%d.%m.%Y %H:%M:%S").to_string(),
                "resetable_counters": 0, "non_resetable_counters": 1 },
            "counters": { "counter1nr": format!("{}.000 kWh", 1000 + q) }
        });
        client
            .publish("sg/SG000017/pub/counters/ir", doc.to_string())
            .await;
    }
    client.wait_acks(93).await;
    app.wait_count("SELECT count(*) FROM energy_intervals", 92)
        .await;

    log_in(&browser, &base, "viewer@example.com").await;
    browser
        .goto(&format!(
            "{base}/meters/X0000124?from=2026-03-29&to=2026-03-30"
        ))
        .await
        .unwrap();
    browser.wait_for("#power-chart").await.unwrap();
    assert_eq!(browser.count("#power-chart rect.bar").await.unwrap(), 92);
    assert_eq!(
        browser
            .attr("#power-chart", "data-bars")
            .await
            .unwrap()
            .as_deref(),
        Some("92")
    );
    // 1 kWh per quarter-hour is a mean power of 4 kW on every bar.
    let values = browser
        .execute("return [...document.querySelectorAll('#power-chart rect.bar')].map(r => r.getAttribute('data-value'))")
        .await
        .unwrap();
    assert!(
        values.as_array().unwrap().iter().all(|v| v == "4"),
        "{values}"
    );
    browser.close().await.unwrap();
    app.stop().await;
}

/// An operator presses OFF on the relays page, confirms, and sees the command confirmed by
/// the simulated relay of the companion firmware.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_button_to_confirmed_command() {
    use headend_e2e::firmware::SgGateway;
    let (app, browser) = tokio::join!(
        TestApp::spawn_with(|c| c.commands.state_poll_secs = 1),
        Browser::start()
    );
    let base = format!("http://{}", app.http);
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SGBRW0001", Some(site), None).await;
    app.user_token("op@example.com", "operator", &[site]).await;
    let _gateway = SgGateway::simulated("SGBRW0001", &password, app.mqtt.unwrap(), &[]);
    app.wait_count(
        "SELECT count(DISTINCT d.id) FROM devices d JOIN relay_states r ON r.device_id = d.id WHERE d.port = 'ir'",
        1,
    )
    .await;
    sqlx::query("UPDATE devices SET min_switch_interval_s = 0 WHERE kind = 'relay'")
        .execute(&app.pool)
        .await
        .unwrap();

    log_in(&browser, &base, "op@example.com").await;
    browser.goto(&format!("{base}/relays")).await.unwrap();
    browser
        .click("a[href$='/confirm?action=off']")
        .await
        .unwrap();
    browser.wait_for("#confirm").await.unwrap();
    browser
        .fill("input[name=reason]", "browser test")
        .await
        .unwrap();
    browser.click("#confirm").await.unwrap();
    browser.wait_for("#status").await.unwrap();
    // The command page refreshes itself until the relay's reported state settles it.
    browser.wait_for_text("#status", "confirmed").await.unwrap();
    browser.goto(&format!("{base}/relays")).await.unwrap();
    assert!(browser
        .text("#relays .state")
        .await
        .unwrap()
        .starts_with("OFF"));
    browser.close().await.unwrap();
    app.stop().await;
}

/// Fields of RFC 4180 text with separator `sep` (quoted fields may hold `sep`, `"` and
/// line breaks).
fn parse_csv(text: &str, sep: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) if c == sep => row.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Counter readings of meter `serial` every quarter-hour from `start` (local midnight in
/// Ljubljana), 1 kWh apart.
fn quarter_readings(
    serial: &str,
    start: chrono::DateTime<chrono::Utc>,
    quarters: i64,
    first_kwh: i64,
) -> Vec<String> {
    let tz = chrono_tz::Europe::Ljubljana;
    (0..=quarters)
        .map(|q| {
            let t = (start + chrono::Duration::minutes(15 * q)).with_timezone(&tz);
            serde_json::json!({
                "header": { "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": serial,
                    "local_time": t.format("%d.%m.%Y %H:%M:%S").to_string(),
                    "resetable_counters": 0, "non_resetable_counters": 1 },
                "counters": { "counter1nr": format!("{}.000 kWh", first_kwh + q) }
            })
            .to_string()
        })
        .collect()
}

/// An admin builds the site's structure with the forms (a panel, a circuit, the meter placed
/// on it), sees it in the site's tree with the bar charts of this and the previous period,
/// downloads a CSV from the page's export form, and the file says what the API says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_forms_site_page_and_csv_download() {
    use chrono::TimeZone;
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let tz = chrono_tz::Europe::Ljubljana;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    let token = app.user_token("admin@example.com", "admin", &[]).await;
    let mut client = app.gateway_client("SG000017", &password).await;
    let day = |y, m, d| {
        tz.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    // The spring-forward day (92 quarter-hours) on the IR meter; the 1st of the month before
    // on a second meter, so the previous period has a bar too.
    for doc in quarter_readings("X0000124", day(2026, 3, 29), 92, 1000) {
        client.publish("sg/SG000017/pub/counters/ir", doc).await;
    }
    for doc in quarter_readings("X0000125", day(2026, 2, 1), 8, 50) {
        client
            .publish("sg/SG000017/pub/counters/rs485/2", doc)
            .await;
    }
    client.wait_acks(93 + 9).await;
    app.wait_count("SELECT count(*) FROM energy_intervals", 92 + 8)
        .await;

    log_in(&browser, &base, "admin@example.com").await;
    browser
        .goto(&format!("{base}/admin/sites/{site}"))
        .await
        .unwrap();
    browser
        .fill("#new-panel input[name=name]", "Main board")
        .await
        .unwrap();
    browser.click("#new-panel button").await.unwrap();
    browser
        .wait_for_text("#panels .notice", "Panel created")
        .await
        .unwrap();
    browser
        .fill("#new-circuit input[name=name]", "Lights")
        .await
        .unwrap();
    browser
        .set_value("#new-circuit select[name=usage]", "lighting")
        .await
        .unwrap();
    browser.click("#new-circuit button").await.unwrap();
    browser
        .wait_for_text("#circuits .notice", "Circuit created")
        .await
        .unwrap();
    let circuit: i64 = sqlx::query_scalar("SELECT id FROM circuits")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let form = "form[data-serial=X0000124]";
    browser
        .set_value(
            &format!("{form} select[name=placement]"),
            &format!("circuit:{circuit}"),
        )
        .await
        .unwrap();
    browser
        .fill(&format!("{form} input[name=name]"), "Lights meter")
        .await
        .unwrap();
    browser
        .click(&format!("{form} button[type=submit]"))
        .await
        .unwrap();
    browser
        .wait_for_text("#meters .notice", "X0000124 saved")
        .await
        .unwrap();

    browser
        .goto(&format!("{base}/sites/{site}?by=day&date=2026-03-29"))
        .await
        .unwrap();
    let tree = browser.text("#tree").await.unwrap();
    let at = |needle: &str| {
        tree.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {tree}"))
    };
    assert!(at("Main board") < at("Lights") && at("Lights") < at("Lights meter"));
    assert!(
        tree.contains("X0000125"),
        "the other meter, not placed: {tree}"
    );
    // One bar per day of March, with data on the 29th; the previous month's bar beside it.
    assert_eq!(
        browser
            .attr("#energy-chart", "data-bars")
            .await
            .unwrap()
            .as_deref(),
        Some("31")
    );
    let values = browser
        .execute("return [...document.querySelectorAll('#energy-chart rect.bar')].map(r => r.getAttribute('data-value'))")
        .await
        .unwrap();
    assert_eq!(values, serde_json::json!(["92"]), "92 kWh on the 29th");
    assert_eq!(browser.count("#energy-chart rect.prev").await.unwrap(), 1);
    let prev = browser
        .execute("return document.querySelector('#energy-chart rect.prev title').textContent")
        .await
        .unwrap();
    assert!(prev.as_str().unwrap().contains("8.00 kWh"), "{prev}");
    assert!(browser
        .text("#by-circuit")
        .await
        .unwrap()
        .contains("Lights"));
    // The breakdown charts draw the same numbers: the circuit's 92 kWh, lighting's 92 kWh.
    for chart in ["#circuit-chart", "#usage-chart"] {
        let values = browser
            .execute(&format!(
                "return [...document.querySelectorAll('{chart} rect.bar')].map(r => r.getAttribute('data-value'))"
            ))
            .await
            .unwrap();
        assert!(
            values.as_array().unwrap().iter().any(|v| v == "92"),
            "{chart}: {values}"
        );
    }

    // The CSV from the page's form, in the spreadsheet dialect: `;`, decimal comma, BOM.
    browser
        .set_value("#export-form select[name=kind]", "intervals")
        .await
        .unwrap();
    browser
        .set_value("#export-form input[name=from]", "2026-03-29")
        .await
        .unwrap();
    browser
        .set_value("#export-form input[name=to]", "2026-03-30")
        .await
        .unwrap();
    browser
        .set_value("#export-form select[name=sep]", "semicolon")
        .await
        .unwrap();
    browser
        .set_value("#export-form select[name=decimal]", "comma")
        .await
        .unwrap();
    browser.click("#export-form input[name=bom]").await.unwrap();
    browser
        .click("#export-form button[type=submit]")
        .await
        .unwrap();
    let file = browser.wait_download().await.unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with("\u{feff}".as_bytes()), "BOM asked for");
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let rows = parse_csv(&text, ';');
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    let (meter, start, value, quality) =
        (col("meter"), col("start_utc"), col("value"), col("quality"));
    let ours: Vec<&Vec<String>> = rows[1..]
        .iter()
        .filter(|r| r[meter] == "X0000124")
        .collect();
    assert_eq!(ours.len(), 92, "one row per quarter-hour of the DST day");

    let profile = app
        .get(
            "/api/v1/devices/X0000124/profile?from=2026-03-29&to=2026-03-30&register=counter1nr",
            &token,
        )
        .await;
    assert_eq!(profile.status, 200, "{}", profile.body);
    let profile = profile.json();
    let intervals = profile["registers"][0]["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 92);
    for (row, interval) in ours.iter().zip(intervals) {
        let api_start: chrono::DateTime<chrono::Utc> =
            interval["start"].as_str().unwrap().parse().unwrap();
        let csv_start: chrono::DateTime<chrono::Utc> = row[start].parse().unwrap();
        assert_eq!(csv_start, api_start);
        let csv_wh: f64 = row[value].replace(',', ".").parse().unwrap();
        assert_eq!(Some(csv_wh), interval["energy"].as_f64(), "{row:?}");
        assert_eq!(row[quality], interval["quality"].as_str().unwrap());
    }

    // On a phone: no page wider than the screen (wide tables scroll inside their card).
    browser.client().set_window_size(390, 844).await.unwrap();
    for path in [
        format!("/sites/{site}?by=day&date=2026-03-29"),
        "/meters/X0000124".to_owned(),
        format!("/admin/sites/{site}"),
        format!("/admin/sites/{site}/contract"),
        format!("/admin/sites/{site}/home-assistant"),
        "/admin".to_owned(),
        "/".to_owned(),
    ] {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        browser.wait_for("main").await.unwrap();
        let fits = browser
            .execute("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await
            .unwrap();
        let (page, screen) = (fits[0].as_i64().unwrap(), fits[1].as_i64().unwrap());
        assert!(screen <= 400, "the window is phone-sized: {screen}");
        assert!(
            page <= screen,
            "{path}: {page} px wide on a {screen} px screen"
        );
    }
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

/// The meter page's live values follow new measurements without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_live_values_refresh() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    let client = app.gateway_client("SG000017", &password).await;
    let measurement = |u1: &str, ago_s: i64, tariff: u8| {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&headend_e2e::fixture("measurements-ir.json")).unwrap();
        let at = chrono::Utc::now() - chrono::Duration::seconds(ago_s);
        doc["header"]["local_time"] = at.format("%d.%m.%Y %H:%M:%S").to_string().into();
        doc["measurements"]["U1"] = u1.into();
        doc["measurements"]["tariff"] = tariff.into();
        doc.to_string()
    };
    client
        .publish(
            "sg/SG000017/pub/measurements/ir",
            measurement("229.5 V", 120, 1),
        )
        .await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;

    log_in(&browser, &base, "viewer@example.com").await;
    browser
        .goto(&format!("{base}/meters/X0000124"))
        .await
        .unwrap();
    assert_eq!(browser.text("td[data-key=u1]").await.unwrap(), "229.5 V");
    assert_eq!(browser.text("td[data-key=tariff]").await.unwrap(), "T1");
    // A marker that a reload would lose: the values must change in this very page.
    browser
        .execute("window.headendMarker = 42; return null")
        .await
        .unwrap();
    client
        .publish(
            "sg/SG000017/pub/measurements/ir",
            measurement("231.7 V", 5, 2),
        )
        .await;
    app.wait_count("SELECT count(*) FROM measurements", 2).await;
    browser
        .wait_for_text("td[data-key=u1]", "231.7 V")
        .await
        .unwrap();
    browser
        .wait_for_text("td[data-key=tariff]", "T2")
        .await
        .unwrap();
    assert_eq!(
        browser
            .execute("return window.headendMarker")
            .await
            .unwrap(),
        serde_json::json!(42)
    );
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

/// Every page Headend serves, opened in Chromium as an admin: it renders (a heading in `main`,
/// no error page), its links to local assets load under the Content-Security-Policy (the
/// stylesheet applies), and on a phone-sized window nothing is wider than the screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_in_the_browser() {
    use serde_json::json;
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let crate::ui::Seeded {
        admin,
        site,
        rule,
        circuit,
        client,
    } = crate::ui::seed(&app).await;
    let alarm: i64 = sqlx::query_scalar("SELECT id FROM alarms")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let relay = app.get("/api/v1/relays", &admin).await.json()[0]["id"]
        .as_i64()
        .unwrap();
    let command = app
        .request(
            "POST",
            &format!("/api/v1/relays/{relay}/commands"),
            Some(&admin),
            Some(json!({ "action": "on", "reason": "browser check" })),
        )
        .await;
    assert!(
        command.status == 201 || command.status == 202,
        "{}",
        command.body
    );
    let command = command.json()["id"].as_i64().unwrap();

    log_in(&browser, &base, "admin@example.com").await;
    let pages = [
        "/".to_owned(),
        format!("/sites/{site}"),
        format!("/sites/{site}?by=month"),
        format!("/sites/{site}?by=year"),
        "/meters/X0000124".to_owned(),
        format!("/circuits/{circuit}"),
        "/relays".to_owned(),
        format!("/relays/{relay}"),
        format!("/relays/{relay}/confirm?action=off"),
        format!("/commands/{command}"),
        "/alarms".to_owned(),
        format!("/alarms/{alarm}"),
        "/alarm-rules".to_owned(),
        format!("/alarm-rules/{rule}"),
        "/gateways".to_owned(),
        "/converters".to_owned(),
        "/admin".to_owned(),
        format!("/admin/sites/{site}"),
        format!("/admin/sites/{site}/contract"),
        format!("/admin/sites/{site}/home-assistant"),
    ];
    for (width, height) in [(1280, 900), (390, 844)] {
        browser
            .client()
            .set_window_size(width, height)
            .await
            .unwrap();
        for path in &pages {
            browser.goto(&format!("{base}{path}")).await.unwrap();
            let heading = browser.text("main h1").await.unwrap_or_default();
            assert!(!heading.trim().is_empty(), "{path}: no heading");
            let looks = browser
                .execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth,
                             getComputedStyle(document.body).fontFamily]",
                )
                .await
                .unwrap();
            let (page, screen) = (looks[0].as_i64().unwrap(), looks[1].as_i64().unwrap());
            assert!(
                page <= screen,
                "{path}: {page} px wide on a {screen} px window"
            );
            // app.css sets the body font: anything else means it did not load (or the CSP
            // refused it).
            let font = looks[2].as_str().unwrap_or_default();
            assert!(
                font.contains("system-ui"),
                "{path}: the stylesheet did not apply ({font})"
            );
        }
    }
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}
