//! The look of every page: on a phone nothing scrolls sideways, the menu is collapsed until
//! asked for and every control is big enough for a finger; on a desktop the navigation is
//! just there; dark mode follows the system; the gateways page and the login page read well.

use headend_e2e::browser::{Browser, DESKTOP, PHONE};
use headend_e2e::{MqttClient, TestApp};
use serde_json::{json, Value};

use crate::ui::{log_in, seed, Seeded};

/// The pages of the navigation over the seeded site (see [`seed`]), and the gateway's MQTT
/// session (kept open: the gateway is online).
async fn seeded(app: &TestApp) -> (Vec<String>, MqttClient) {
    let Seeded { site, client, .. } = seed(app).await;
    let pages = [
        "/".to_owned(),
        format!("/sites/{site}"),
        "/meters/X0000124".to_owned(),
        "/relays".to_owned(),
        "/alarms".to_owned(),
        "/alarm-rules".to_owned(),
        "/gateways".to_owned(),
        "/converters".to_owned(),
        "/admin".to_owned(),
        format!("/admin/sites/{site}"),
        format!("/admin/sites/{site}/home-assistant"),
        "/admin/outbox".to_owned(),
    ]
    .into();
    (pages, client)
}

/// `[scrollWidth, innerWidth]` of the page.
async fn widths(browser: &Browser) -> (i64, i64) {
    let v = browser
        .execute("return [document.documentElement.scrollWidth, window.innerWidth]")
        .await
        .unwrap();
    (v[0].as_i64().unwrap(), v[1].as_i64().unwrap())
}

/// Visible controls of the navigation, tabs and forms lower than 40 CSS px (a checkbox or a
/// radio button counts by its label).
const SMALL_TARGETS: &str = "
    const found = [];
    const controls = document.querySelectorAll(
      'header a, header summary, header button, nav a, .tabs a, ' +
      'form a, form button, form select, form input, form summary, form textarea');
    // Links inside a sentence or a heading are text, not controls (WCAG 2.5.8's inline case).
    const inText = (el) => el.tagName === 'A' && !el.classList.contains('button')
        && !!el.parentElement.closest('p, li, h1, h2, h3, h4, small, td, th');
    for (const el of controls) {
      if (el.type === 'hidden' || !el.checkVisibility() || inText(el)) continue;
      let box = el.getBoundingClientRect();
      if ((el.type === 'checkbox' || el.type === 'radio') && el.closest('label')) {
        box = el.closest('label').getBoundingClientRect();
      }
      if (box.width === 0 && box.height === 0) continue;
      if (box.height < 40) {
        found.push(Math.round(box.height) + ' px: ' + el.outerHTML.slice(0, 140));
      }
    }
    return found;";

async fn small_targets(browser: &Browser) -> Vec<String> {
    let v = browser.execute(SMALL_TARGETS).await.unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Checkbox labels whose box covers their own text (the alarm-rule form had that bug).
const OVERLAPPING_CHECKS: &str = "
    const bad = [];
    for (const label of document.querySelectorAll('label.check')) {
      const input = label.querySelector('input');
      if (!input || !label.checkVisibility()) continue;
      const b = input.getBoundingClientRect();
      for (const node of label.childNodes) {
        if (node.nodeType !== Node.TEXT_NODE || !node.textContent.trim()) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        for (const t of range.getClientRects()) {
          if (t.width > 1 && t.left < b.right - 1 && t.right > b.left + 1
              && t.top < b.bottom - 1 && t.bottom > b.top + 1) {
            bad.push(label.textContent.trim());
          }
        }
      }
    }
    return bad;";

async fn overlapping_checks(browser: &Browser) -> Vec<String> {
    let v = browser.execute(OVERLAPPING_CHECKS).await.unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Whether the main navigation's links can be seen (not inside a closed menu).
const NAV_VISIBLE: &str = "
    const links = [...document.querySelectorAll('#main-nav a')];
    return links.length > 0 && links.every(a => a.checkVisibility()
        && a.getBoundingClientRect().height >= 40);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_every_page_fits_its_menu_folds_and_targets_are_big() {
    // A northbound broker configured (never connected: no site is published), so the Home
    // Assistant page shows its form.
    let app = TestApp::spawn_with(|c| {
        c.northbound.brokers = vec![headend::config::northbound::BrokerConfig {
            name: "home".into(),
            url: "mqtt://127.0.0.1:1".into(),
            username: None,
            password: None,
            ca_file: None,
            client_id_prefix: "headend".into(),
        }];
    });
    let (app, browser) = tokio::join!(app, Browser::start());
    let base = format!("http://{}", app.http);
    let (pages, client) = seeded(&app).await;
    browser.resize(PHONE).await.unwrap();

    // Logged out: the welcome page fits too, with no menu to open.
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser.wait_for("main h1").await.unwrap();
    let (page, screen) = widths(&browser).await;
    assert!(page <= screen, "/login: {page} px wide on {screen} px");
    assert_eq!(browser.count("#menu").await.unwrap(), 0);
    let small = small_targets(&browser).await;
    assert!(small.is_empty(), "/login: small targets {small:#?}");

    log_in(&browser, &base, "admin@example.com").await;
    let mut failures = Vec::new();
    for path in &pages {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        browser.wait_for("main h1").await.unwrap();
        let (page, screen) = widths(&browser).await;
        assert!(screen <= 400, "a phone-sized window: {screen}");
        if page > screen {
            failures.push(format!("{path}: {page} px wide on a {screen} px screen"));
        }
        // The menu is folded: its links are not shown until the summary is pressed.
        let folded = browser
            .execute(
                "const m = document.getElementById('menu');
                 return !!m && !m.open && [...document.querySelectorAll('#main-nav a')]
                     .every(a => !a.checkVisibility());",
            )
            .await
            .unwrap();
        if folded != Value::Bool(true) {
            failures.push(format!("{path}: the menu is not folded on a phone"));
        }
        for small in small_targets(&browser).await {
            failures.push(format!("{path}: {small}"));
        }
        for label in overlapping_checks(&browser).await {
            failures.push(format!("{path}: the checkbox covers its text {label:?}"));
        }
        browser.click("#menu > summary").await.unwrap();
        browser.wait_for_js(NAV_VISIBLE).await.unwrap_or_else(|e| {
            panic!("{path}: the menu does not open on a click: {e:#}");
        });
        // Opened, it lies over the page: still nothing sideways, and its controls are big.
        let (page, screen) = widths(&browser).await;
        if page > screen {
            failures.push(format!("{path}: {page} px wide with the menu open"));
        }
        for small in small_targets(&browser).await {
            failures.push(format!("{path} (menu open): {small}"));
        }
        // The logout button is in the open menu.
        let logout = browser
            .execute("return document.querySelector('#menu form[action=\"/logout\"] button').checkVisibility()")
            .await
            .unwrap();
        if logout != Value::Bool(true) {
            failures.push(format!("{path}: no visible logout in the open menu"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_desktop_the_navigation_is_shown_and_marks_the_section() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let (pages, client) = seeded(&app).await;
    browser.resize(DESKTOP).await.unwrap();
    log_in(&browser, &base, "admin@example.com").await;
    for path in &pages {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        browser.wait_for("main h1").await.unwrap();
        let (page, screen) = widths(&browser).await;
        assert!(page <= screen, "{path}: {page} px wide on {screen} px");
        // No click needed, and no "Menu" button in the way.
        assert_eq!(
            browser.execute(NAV_VISIBLE).await.unwrap(),
            Value::Bool(true),
            "{path}: the navigation is not shown"
        );
        let summary = browser
            .execute("return document.querySelector('#menu > summary').checkVisibility()")
            .await
            .unwrap();
        assert_eq!(
            summary,
            Value::Bool(false),
            "{path}: a Menu button on a desktop"
        );
        let small = small_targets(&browser).await;
        assert!(small.is_empty(), "{path}: small targets {small:#?}");
        let overlapping = overlapping_checks(&browser).await;
        assert!(
            overlapping.is_empty(),
            "{path}: checkboxes over their text {overlapping:?}"
        );
    }
    // The current section is marked for assistive technology (and drawn so).
    for (path, link) in [
        ("/", "Sites"),
        ("/relays", "Relays"),
        ("/alarms", "Alarms"),
        ("/alarm-rules", "Alarms"),
        ("/gateways", "Gateways"),
        ("/converters", "Converters"),
        ("/admin", "Admin"),
        ("/admin/outbox", "Admin"),
    ] {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        let current = browser
            .execute(
                "return [...document.querySelectorAll('#main-nav a[aria-current=page]')]
                     .map(a => a.textContent.trim())",
            )
            .await
            .unwrap();
        assert_eq!(current, json!([link]), "{path}");
    }
    // A skip link leads past the header, shown when focused.
    assert_eq!(
        browser.attr("a.skip", "href").await.unwrap().as_deref(),
        Some("#main")
    );
    assert_eq!(browser.count("main#main").await.unwrap(), 1);
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

/// Relative luminance (0 black … 1 white) of a CSS `rgb()`/`rgba()` colour.
fn luminance(css: &str) -> f64 {
    let inner = css
        .trim()
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')');
    let c: Vec<f64> = inner
        .split([',', ' ', '/'])
        .filter(|s| !s.is_empty())
        .take(3)
        .map(|s| s.parse::<f64>().unwrap_or_else(|_| panic!("colour {css}")) / 255.0)
        .collect();
    let lin = |v: f64| {
        if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
}

/// `[body background, body colour, a card's background, --chart-1]`.
const COLOURS: &str = "
    const b = getComputedStyle(document.body);
    const card = document.querySelector('.card, .site-card, .empty');
    return [b.backgroundColor, b.color, card ? getComputedStyle(card).backgroundColor : '',
            getComputedStyle(document.documentElement).getPropertyValue('--chart-1').trim()];";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_mode_follows_the_system() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let (pages, client) = seeded(&app).await;
    log_in(&browser, &base, "admin@example.com").await;

    browser.goto(&format!("{base}/gateways")).await.unwrap();
    assert_eq!(
        browser
            .attr("meta[name=color-scheme]", "content")
            .await
            .unwrap()
            .as_deref(),
        Some("light dark")
    );
    let light = browser.execute(COLOURS).await.unwrap();
    assert!(
        luminance(light[0].as_str().unwrap()) > 0.8,
        "light background: {light}"
    );
    assert!(
        luminance(light[1].as_str().unwrap()) < 0.1,
        "dark text: {light}"
    );

    browser.emulate_dark_mode().await.unwrap();
    for path in &pages {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        browser.wait_for("main h1").await.unwrap();
        let dark = browser.execute(COLOURS).await.unwrap();
        let (bg, fg) = (dark[0].as_str().unwrap(), dark[1].as_str().unwrap());
        assert!(luminance(bg) < 0.05, "{path}: background {bg} is not dark");
        assert!(luminance(fg) > 0.6, "{path}: text {fg} is not light");
        if let Some(card) = dark[2].as_str().filter(|c| !c.is_empty()) {
            assert!(luminance(card) < 0.05, "{path}: card {card} is not dark");
        }
        assert_ne!(
            dark[3], light[3],
            "{path}: the chart colours follow the theme"
        );
    }
    // The server-drawn charts take the dark palette too (bars and grid lines).
    browser.goto(&format!("{base}{}", pages[1])).await.unwrap();
    let chart = browser
        .execute(
            "const grid = document.querySelector('svg.chart .grid');
             return grid ? getComputedStyle(grid).stroke : '';",
        )
        .await
        .unwrap();
    if let Some(stroke) = chart.as_str().filter(|s| !s.is_empty()) {
        assert!(
            luminance(stroke) < 0.1,
            "grid lines {stroke} on a dark card"
        );
    }
    browser.close().await.unwrap();
    drop(client);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_page_says_online_offline_and_how_long_ago() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    app.user_token("admin@example.com", "admin", &[]).await;

    // No gateway yet: the page says what to do.
    log_in(&browser, &base, "admin@example.com").await;
    browser.goto(&format!("{base}/gateways")).await.unwrap();
    let empty = browser.text("#gateways-empty").await.unwrap();
    assert!(empty.contains("No gateway yet"), "{empty}");
    assert!(empty.contains("mqtt://"), "{empty}");
    assert_eq!(
        browser
            .attr("#gateways-empty a.button", "href")
            .await
            .unwrap()
            .as_deref(),
        Some("/admin")
    );

    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.gateway("SG000018", Some(site), None).await;
    let client = app.gateway_client("SG000017", &password).await;
    client
        .publish(
            "sg/SG000017/pub/measurements/ir",
            headend_e2e::fixture("measurements-ir.json"),
        )
        .await;
    app.wait_count(
        "SELECT count(*) FROM gateways WHERE serial = 'SG000017' AND online AND last_seen_at IS NOT NULL",
        1,
    )
    .await;
    browser.goto(&format!("{base}/gateways")).await.unwrap();
    let online = browser
        .text("#gateways tr[data-serial=SG000017] .state")
        .await
        .unwrap();
    assert_eq!(online.trim(), "online");
    let offline = browser
        .text("#gateways tr[data-serial=SG000018] .state")
        .await
        .unwrap();
    assert_eq!(offline.trim(), "offline");
    let seen = browser
        .text("#gateways tr[data-serial=SG000017] .seen time")
        .await
        .unwrap();
    assert!(
        seen == "just now" || seen.ends_with(" s ago") || seen.ends_with(" min ago"),
        "{seen}"
    );
    // The exact moment, in the site's zone, on hover.
    let exact = browser
        .attr("#gateways tr[data-serial=SG000017] .seen time", "title")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(exact.ends_with("CET") || exact.ends_with("CEST"), "{exact}");
    assert!(browser
        .text("#gateways tr[data-serial=SG000018] .seen")
        .await
        .unwrap()
        .contains("never"));
    let summary = browser.text("#gateway-summary").await.unwrap();
    assert!(
        summary.contains("2 gateways")
            && summary.contains("1 online")
            && summary.contains("1 offline"),
        "{summary}"
    );
    assert!(browser
        .text("#gateways tr[data-serial=SG000017]")
        .await
        .unwrap()
        .contains("Plant"));
    drop(client);
    browser.close().await.unwrap();
    app.stop().await;
}
