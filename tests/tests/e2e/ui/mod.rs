//! The pages in a real headless browser, at desktop and phone sizes: one module per part of
//! the product.

mod charts;
mod forms;
mod layout;
mod meter;
mod overview;

use headend_e2e::browser::Browser;
use headend_e2e::{MqttClient, TestApp};
use serde_json::json;

/// The password the harness gives every user it creates.
pub const PASSWORD: &str = "correct horse battery staple";

/// Logs `email` (created by `TestApp::user_token`) in through the login form.
pub async fn log_in(browser: &Browser, base: &str, email: &str) {
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser.fill("input[name=email]", email).await.unwrap();
    browser
        .fill("input[name=password]", PASSWORD)
        .await
        .unwrap();
    browser.click("button[type=submit]").await.unwrap();
    browser.wait_for_path("/").await.unwrap();
}

/// What [`seed`] made.
pub struct Seeded {
    /// The admin's API token (`admin@example.com`, who can also log in to the pages).
    pub admin: String,
    pub site: i64,
    pub rule: i64,
    pub circuit: i64,
    /// The gateway's MQTT session, kept open: the gateway is online.
    pub client: MqttClient,
}

/// A small site with what every page of the navigation shows: a gateway with a meter and a
/// relay (`SG000017`, meter `X0000124`), an alarm rule and its alarm, a panel with a circuit, a
/// converter.
pub async fn seed(app: &TestApp) -> Seeded {
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    let post = |path: &str, body: serde_json::Value| {
        let path = path.to_owned();
        let admin = admin.clone();
        async move {
            let r = app.request("POST", &path, Some(&admin), Some(body)).await;
            assert_eq!(r.status, 201, "{path}: {}", r.body);
            r.json()["id"].as_i64().unwrap()
        }
    };
    let rule = post(
        "/api/v1/alarm-rules",
        json!({
            "site_id": site, "name": "Voltage present", "severity": "warning",
            "target": "site",
            "watch": {"kind": "measurement", "quantity": "u1"},
            "condition": {"op": "above", "threshold": 100.0},
        }),
    )
    .await;
    let client = app.gateway_client("SG000017", &password).await;
    for (topic, fixture) in [
        ("measurements/ir", "measurements-ir.json"),
        ("counters/ir", "counters-ir-manual.json"),
        ("bicom/ir", "bicom-ir.json"),
    ] {
        client
            .publish(
                &format!("sg/SG000017/pub/{topic}"),
                headend_e2e::fixture(fixture),
            )
            .await;
    }
    app.wait_count("SELECT count(*) FROM relay_states", 1).await;
    app.wait_count("SELECT count(*) FROM alarms", 1).await;
    let panel = post(
        &format!("/api/v1/sites/{site}/panels"),
        json!({ "name": "Main panel" }),
    )
    .await;
    let circuit = post(
        &format!("/api/v1/panels/{panel}/circuits"),
        json!({ "name": "Lighting", "usage": "lighting" }),
    )
    .await;
    post(
        "/api/v1/converters",
        json!({
            "name": "conv-1", "host": "127.0.0.1", "port": 1, "site_id": site,
            "devices": [{ "unit": 6, "model": "legrand-046-77" }],
        }),
    )
    .await;
    Seeded {
        admin,
        site,
        rule,
        circuit,
        client,
    }
}

/// The trimmed texts of the elements matching `css`.
pub async fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let found = browser
        .execute_with(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent.trim())",
            vec![json!(css)],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

/// The current value of a form control (a select's chosen option), once it is on the page.
pub async fn value(browser: &Browser, css: &str) -> String {
    browser.wait_for(css).await.unwrap();
    browser
        .execute_with(
            "return document.querySelector(arguments[0]).value",
            vec![json!(css)],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The HTTP status of the page now shown (Chromium reports it on the navigation entry).
pub async fn status(browser: &Browser) -> i64 {
    browser
        .execute("return performance.getEntriesByType('navigation')[0].responseStatus")
        .await
        .unwrap()
        .as_i64()
        .unwrap_or_default()
}

/// Nothing on the page is wider than the window (no sideways scrolling).
pub async fn fits(browser: &Browser, what: &str) {
    let looks = browser
        .execute("return [document.documentElement.scrollWidth, window.innerWidth]")
        .await
        .unwrap();
    let (page, screen) = (looks[0].as_i64().unwrap(), looks[1].as_i64().unwrap());
    assert!(
        page <= screen,
        "{what}: {page} px wide on a {screen} px window"
    );
}
