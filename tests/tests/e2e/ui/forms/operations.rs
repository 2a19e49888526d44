//! The operations forms in the browser, at desktop and phone sizes: the alarm-rule editor picks
//! what a rule applies to and the relay it sheds from the site's lists (readable labels, never
//! typed ids), shows a refused value beside its field (422) with the other values kept, and
//! saves a good rule; the converter forms pick the site and the register map from lists; the
//! relay pages switch through clearly labelled buttons; empty pages explain themselves.

use headend_e2e::browser::{Browser, DESKTOP, PHONE};
use headend_e2e::TestApp;
use serde_json::json;

use crate::ui::{log_in, status, texts, value};

/// Ids of what [`seed`] creates.
struct Seeded {
    plant: i64,
    office: i64,
    meter: i64,
    relay: i64,
}

/// Two sites: "Plant" with a panel, a circuit, a named meter and a relay on gateway SG0001;
/// "Office" with a panel of its own.
async fn seed(app: &TestApp) -> Seeded {
    let plant = app.site("Plant", "UTC").await;
    let office = app.site("Office", "UTC").await;
    app.gateway("SG0001", Some(plant), None).await;
    let panel: i64 = sqlx::query_scalar(
        "INSERT INTO panels (site_id, name) VALUES ($1, 'Main panel') RETURNING id",
    )
    .bind(plant)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO circuits (panel_id, name, usage) VALUES ($1, 'Heat pump', 'heating')")
        .bind(panel)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO panels (site_id, name) VALUES ($1, 'Office board')")
        .bind(office)
        .execute(&app.pool)
        .await
        .unwrap();
    let device = |kind: &'static str, port: &'static str, slot: i16, serial: &'static str, name| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO devices (gateway_id, kind, port, slot, serial, name)
                 VALUES ((SELECT id FROM gateways WHERE serial = 'SG0001'), $1, $2, $3, $4, $5)
                 RETURNING id",
            )
            .bind(kind)
            .bind(port)
            .bind(slot)
            .bind(serial)
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let meter = device("meter", "rs485", 1, "MT1234", "Main supply").await;
    let relay = device("relay", "ir", 0, "", "Boiler relay").await;
    Seeded {
        plant,
        office,
        meter,
        relay,
    }
}

/// Every `label.check` shows its box beside its text, not over it, and fits the window.
async fn checkboxes_clear_of_their_text(browser: &Browser, what: &str) {
    let overlaps = browser
        .execute(
            "const bad = [];
             for (const label of document.querySelectorAll('label.check')) {
               const box = label.querySelector('input').getBoundingClientRect();
               const range = document.createRange();
               range.selectNodeContents(label);
               range.setStartAfter(label.querySelector('input'));
               const text = range.getBoundingClientRect();
               if (box.right > text.left + 0.5 || box.width > 40 || text.right > window.innerWidth + 0.5) {
                 bad.push(label.textContent.trim() + ' box ' + box.left + '-' + box.right + ' text ' + text.left);
               }
             }
             return bad;",
        )
        .await
        .unwrap();
    assert_eq!(overlaps, json!([]), "{what}: checkbox over its label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_form_picks_objects_shows_errors_beside_fields_and_saves() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let s = seed(&app).await;
    app.user_token("admin@example.com", "admin", &[]).await;
    log_in(&browser, &base, "admin@example.com").await;

    // No rule yet: the page says what a rule is and gives a first example.
    browser.goto(&format!("{base}/alarm-rules")).await.unwrap();
    assert!(browser
        .text("#no-rules")
        .await
        .unwrap()
        .contains("first example"));
    // Every site the user may see, grouped by site.
    let groups = browser
        .execute(
            "return Array.from(document.querySelectorAll('#rule-target optgroup')).map(g => g.label)",
        )
        .await
        .unwrap();
    for group in [
        "Plant · Panels",
        "Plant · Circuits",
        "Plant · Meters",
        "Office · Panels",
    ] {
        assert!(
            groups.as_array().unwrap().contains(&json!(group)),
            "{group}: {groups}"
        );
    }

    for (size, name) in [(DESKTOP, "Main supply overload"), (PHONE, "Phone overload")] {
        browser.resize(size).await.unwrap();
        // Narrowed to the chosen site: its panels, circuits, meters and relays by name.
        browser
            .goto(&format!("{base}/alarm-rules?site_id={}", s.plant))
            .await
            .unwrap();
        let groups = browser
            .execute(
                "return Array.from(document.querySelectorAll('#rule-target optgroup')).map(g => g.label)",
            )
            .await
            .unwrap();
        assert_eq!(groups, json!(["Panels", "Circuits", "Meters"]), "{size:?}");
        let targets = texts(&browser, "#rule-target option").await;
        for label in [
            "Main panel",
            "Main panel › Heat pump (heating)",
            "Main supply — MT1234 (gateway SG0001)",
        ] {
            assert!(targets.iter().any(|t| t == label), "{label}: {targets:?}");
        }
        assert!(
            !targets.iter().any(|t| t.contains("Office board")),
            "{targets:?}"
        );
        let relays = texts(&browser, "#rule-relay option").await;
        assert!(
            relays.contains(&"Boiler relay — IR relay (gateway SG0001)".to_owned()),
            "{relays:?}"
        );
        let quantities = texts(&browser, "#rule-quantity option").await;
        assert!(
            quantities.contains(&"Active power (kW)".to_owned()),
            "{quantities:?}"
        );
        assert!(
            quantities.contains(&"Voltage L1 (V)".to_owned()),
            "{quantities:?}"
        );
        assert_eq!(value(&browser, "#rule-site").await, s.plant.to_string());
        checkboxes_clear_of_their_text(&browser, &format!("{size:?}")).await;

        // A threshold that is not a number: the message beside it, the rest kept, 422.
        browser.fill("#rule-name", name).await.unwrap();
        browser
            .set_value("#rule-target", &format!("meter:{}", s.meter))
            .await
            .unwrap();
        browser.set_value("#rule-quantity", "p").await.unwrap();
        browser.fill("#rule-threshold", "lots").await.unwrap();
        browser
            .fill("#rule-email", "facility@example.com")
            .await
            .unwrap();
        browser
            .set_value("#rule-relay", &s.relay.to_string())
            .await
            .unwrap();
        browser
            .click("#rule-form button[type=submit]")
            .await
            .unwrap();
        let message = browser.text("#threshold-error").await.unwrap();
        assert!(message.contains("not a number"), "{message}");
        assert_eq!(status(&browser).await, 422);
        assert_eq!(
            browser
                .attr("#rule-threshold", "aria-invalid")
                .await
                .unwrap()
                .as_deref(),
            Some("true")
        );
        assert_eq!(
            browser
                .attr("#rule-threshold", "aria-describedby")
                .await
                .unwrap()
                .as_deref(),
            Some("threshold-error")
        );
        let kept = browser
            .execute(
                "return ['#rule-name', '#rule-target', '#rule-quantity', '#rule-threshold', '#rule-email', '#rule-relay']
                   .map(s => document.querySelector(s).value)",
            )
            .await
            .unwrap();
        assert_eq!(
            kept,
            json!([
                name,
                format!("meter:{}", s.meter),
                "p",
                "lots",
                "facility@example.com",
                s.relay.to_string()
            ])
        );
        assert_eq!(browser.count(".field-error").await.unwrap(), 1);

        // Corrected: saved, with a notice, in SI units.
        browser.fill("#rule-threshold", "2.5").await.unwrap();
        browser
            .click("#rule-form button[type=submit]")
            .await
            .unwrap();
        browser.wait_for_text(".notice", "saved").await.unwrap();
        let (threshold, device, relay): (f64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (condition->>'threshold')::float8, device_id, (actions->>'shed_relay')::int8
             FROM alarm_rules WHERE name = $1",
        )
        .bind(name)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(
            (threshold, device, relay),
            (2500.0, Some(s.meter), Some(s.relay))
        );
        // The editor shows it back in kW, the target and relay selected.
        assert_eq!(
            browser
                .attr("#rule-threshold", "value")
                .await
                .unwrap()
                .as_deref(),
            Some("2.5")
        );
        assert!(browser
            .text("#rule-target option:checked")
            .await
            .unwrap()
            .contains("Main supply"));
    }
    // The list says it in words.
    browser.goto(&format!("{base}/alarm-rules")).await.unwrap();
    let row = browser.text("#alarm-rules tbody tr").await.unwrap();
    assert!(
        row.contains("Main supply — MT1234")
            && row.contains("Active power (kW)")
            && row.contains("above 2.5 kW"),
        "{row}"
    );
    let _ = s.office;
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converter_forms_pick_the_site_and_register_map_and_empty_pages_explain() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let s = seed(&app).await;
    app.user_token("admin@example.com", "admin", &[]).await;
    log_in(&browser, &base, "admin@example.com").await;

    // Empty states that explain.
    browser.goto(&format!("{base}/alarms")).await.unwrap();
    assert!(browser.text("#no-alarms").await.unwrap().contains("rule"));
    assert_eq!(
        browser
            .count("#no-alarms a[href='/alarm-rules']")
            .await
            .unwrap(),
        1
    );
    browser.goto(&format!("{base}/admin/outbox")).await.unwrap();
    assert!(browser
        .text("#no-notifications")
        .await
        .unwrap()
        .contains("alarm"));

    for (size, name) in [(DESKTOP, "plant-rs485-1"), (PHONE, "plant-rs485-2")] {
        browser.resize(size).await.unwrap();
        browser.goto(&format!("{base}/converters")).await.unwrap();
        if name.ends_with('1') {
            assert!(browser
                .text("#no-converters")
                .await
                .unwrap()
                .contains("unit id"));
        }
        let sites = texts(&browser, "#converter-site option").await;
        assert_eq!(sites, ["No site yet", "Office", "Plant"], "{size:?}");
        // A port out of range: beside the field, the rest kept, 422.
        browser.fill("#converter-name", name).await.unwrap();
        browser.fill("#converter-host", "127.0.0.1").await.unwrap();
        browser.fill("#converter-port", "99999").await.unwrap();
        browser
            .set_value("#converter-site", &s.plant.to_string())
            .await
            .unwrap();
        browser
            .click("#converter-form button[type=submit]")
            .await
            .unwrap();
        assert!(browser.text("#port-error").await.unwrap().contains("65535"));
        assert_eq!(status(&browser).await, 422);
        assert_eq!(
            browser
                .attr("#converter-port", "aria-invalid")
                .await
                .unwrap()
                .as_deref(),
            Some("true")
        );
        let kept = browser
            .execute("return ['#converter-name', '#converter-host', '#converter-site'].map(s => document.querySelector(s).value)")
            .await
            .unwrap();
        assert_eq!(kept, json!([name, "127.0.0.1", s.plant.to_string()]));
        browser.fill("#converter-port", "1502").await.unwrap();
        browser
            .click("#converter-form button[type=submit]")
            .await
            .unwrap();
        browser.wait_for_text(".notice", name).await.unwrap();
        let id: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE serial = $1")
            .bind(name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(browser
            .text(&format!("#converter-{id} h2"))
            .await
            .unwrap()
            .contains("Plant"));
        // The register map from a list with what each reads; a bad unit id beside its field.
        let maps = texts(&browser, &format!("#model-{id} option")).await;
        assert!(
            maps.iter()
                .any(|m| m.starts_with("legrand-046-77 — Legrand 0 046 77 single-phase meter")),
            "{maps:?}"
        );
        browser.fill(&format!("#unit-{id}"), "0").await.unwrap();
        browser
            .set_value(&format!("#model-{id}"), "legrand-046-77")
            .await
            .unwrap();
        browser
            .click(&format!("#device-form-{id} button[type=submit]"))
            .await
            .unwrap();
        assert!(browser
            .text("#unit-error")
            .await
            .unwrap()
            .contains("1 to 247"));
        assert_eq!(status(&browser).await, 422);
        assert_eq!(
            value(&browser, &format!("#model-{id}")).await,
            "legrand-046-77"
        );
        browser.fill(&format!("#unit-{id}"), "6").await.unwrap();
        browser
            .click(&format!("#device-form-{id} button[type=submit]"))
            .await
            .unwrap();
        browser
            .wait_for_text(".notice", "Unit 6 added")
            .await
            .unwrap();
        checkboxes_clear_of_their_text(&browser, &format!("{size:?}")).await;
    }
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pages_switch_through_labelled_buttons() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let s = seed(&app).await;
    app.user_token("op@example.com", "operator", &[s.plant])
        .await;
    app.user_token("office@example.com", "operator", &[s.office])
        .await;

    // Nothing to switch on the office site: the page says where relays come from.
    log_in(&browser, &base, "office@example.com").await;
    browser.goto(&format!("{base}/relays")).await.unwrap();
    assert!(browser
        .text("#no-relays")
        .await
        .unwrap()
        .contains("when a gateway reports one"));
    sqlx::query("UPDATE devices SET min_switch_interval_s = 0 WHERE kind = 'relay'")
        .execute(&app.pool)
        .await
        .unwrap();

    log_in(&browser, &base, "op@example.com").await;
    for (size, reason) in [(DESKTOP, "desktop test"), (PHONE, "phone test")] {
        browser.resize(size).await.unwrap();
        browser.goto(&format!("{base}/relays")).await.unwrap();
        let buttons = texts(&browser, &format!("tr[data-relay='{}'] a.button", s.relay)).await;
        assert_eq!(buttons, ["Switch on", "Switch off", "Toggle"], "{size:?}");
        browser
            .click(&format!("a[href='/relays/{}/confirm?action=off']", s.relay))
            .await
            .unwrap();
        assert_eq!(
            browser.text("h1").await.unwrap(),
            "Switch off Boiler relay?"
        );
        assert_eq!(browser.text("#confirm").await.unwrap(), "Yes, switch off");
        browser.fill("#reason", reason).await.unwrap();
        browser.click("#confirm").await.unwrap();
        // The gateway is offline: the command waits in the queue, and the page says so.
        browser.wait_for_text("#status", "queued").await.unwrap();
        assert!(browser.html().await.unwrap().contains("waiting to be sent"));
        // Cancel it so the next size starts from a quiet relay.
        browser.click("button.danger").await.unwrap();
        browser.wait_for_text("#status", "cancelled").await.unwrap();
        // The relay page: the same buttons and the history.
        browser
            .goto(&format!("{base}/relays/{}", s.relay))
            .await
            .unwrap();
        let buttons = texts(&browser, "#relay-actions a.button").await;
        assert_eq!(buttons, ["Switch on", "Switch off", "Toggle"]);
        assert!(browser.text("#history").await.unwrap().contains(reason));
    }
    // A command the ledger refuses (another one is in flight): the confirmation again, 422,
    // the reason kept and why beside it.
    sqlx::query("UPDATE relay_commands SET status = 'sent', sent_at = now() WHERE id = (SELECT max(id) FROM relay_commands)")
        .execute(&app.pool)
        .await
        .unwrap();
    browser
        .click(&format!("a[href='/relays/{}/confirm?action=on']", s.relay))
        .await
        .unwrap();
    browser.fill("#reason", "again").await.unwrap();
    browser.click("#confirm").await.unwrap();
    assert!(browser
        .text("#command-error")
        .await
        .unwrap()
        .contains("in flight"));
    assert_eq!(status(&browser).await, 422);
    assert_eq!(value(&browser, "#reason").await, "again");
    browser.close().await.unwrap();
    app.stop().await;
}
