//! The administration forms in the browser, at desktop and phone sizes: every form picks its
//! objects from lists with readable labels (only the site's own panels, circuits and meters),
//! a refused form comes back (422) with the message beside its field and what was typed kept,
//! a good one saves and redirects with a notice, and empty sections say what to do next.

use headend_e2e::browser::{Browser, DESKTOP, PHONE};
use headend_e2e::TestApp;
use serde_json::json;

use crate::ui::{log_in, status, texts, value};

/// Ids of what [`seed`] creates.
struct Seeded {
    plant: i64,
    office: i64,
    panel: i64,
    meter: i64,
}

/// "Plant" (Ljubljana) with gateway SG0001, a panel, a circuit and meter MT1234 on RS485 port
/// 1; "Office" (UTC) with its own gateway, panel, circuit and meter; an admin and a viewer.
async fn seed(app: &TestApp) -> Seeded {
    let plant = app.site("Plant", "Europe/Ljubljana").await;
    let office = app.site("Office", "UTC").await;
    app.gateway("SG0001", Some(plant), None).await;
    app.gateway("SG0002", Some(office), None).await;
    let panel_of = |site: i64, name: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO panels (site_id, name) VALUES ($1, $2) RETURNING id",
            )
            .bind(site)
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let panel = panel_of(plant, "Main panel").await;
    let office_panel = panel_of(office, "Office board").await;
    for (panel, name, usage) in [
        (panel, "Heat pump", "heating"),
        (office_panel, "Office lights", "lighting"),
    ] {
        sqlx::query("INSERT INTO circuits (panel_id, name, usage) VALUES ($1, $2, $3)")
            .bind(panel)
            .bind(name)
            .bind(usage)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let meter_on = |gateway: &'static str, serial: &'static str, name: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO devices (gateway_id, kind, port, slot, serial, name)
                 VALUES ((SELECT id FROM gateways WHERE serial = $1), 'meter', 'rs485', 1, $2, $3)
                 RETURNING id",
            )
            .bind(gateway)
            .bind(serial)
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let meter = meter_on("SG0001", "MT1234", "Main supply").await;
    meter_on("SG0002", "OF0001", "Office supply").await;
    app.user_token("admin@example.com", "admin", &[]).await;
    app.user_token("viewer@example.com", "viewer", &[plant])
        .await;
    Seeded {
        plant,
        office,
        panel,
        meter,
    }
}

/// The field `id` is marked invalid and described by its message, which contains `needle`.
async fn refused_beside(browser: &Browser, id: &str, needle: &str, what: &str) {
    let message = browser
        .wait_for_text(&format!("p.field-error#{id}-error"), needle)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(message.contains(needle), "{what}: {message}");
    assert_eq!(status(browser).await, 422, "{what}");
    let css = format!("#{id}");
    assert_eq!(
        browser.attr(&css, "aria-invalid").await.unwrap().as_deref(),
        Some("true"),
        "{what}"
    );
    assert_eq!(
        browser
            .attr(&css, "aria-describedby")
            .await
            .unwrap()
            .as_deref(),
        Some(format!("{id}-error").as_str()),
        "{what}"
    );
    // The message fits the window (phones included).
    let fits = browser
        .execute_with(
            "const r = document.getElementById(arguments[0]).getBoundingClientRect();
             return r.right <= window.innerWidth + 0.5 && r.width > 0;",
            vec![json!(format!("{id}-error"))],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "{what}: the message is off screen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_forms_pick_the_sites_own_objects_and_refuse_beside_the_field() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let s = seed(&app).await;
    let empty = app.site("Empty", "UTC").await;
    log_in(&browser, &base, "admin@example.com").await;

    // A site with nothing yet explains what to do next.
    browser
        .goto(&format!("{base}/admin/sites/{empty}"))
        .await
        .unwrap();
    assert!(browser
        .text("#no-panels")
        .await
        .unwrap()
        .contains("Add a panel, then its circuits"));
    assert!(browser
        .text("#no-unplaced")
        .await
        .unwrap()
        .contains("No gateway is on this site"));
    assert!(browser
        .text("#no-contracts")
        .await
        .unwrap()
        .contains("add one"));

    let page = format!("{base}/admin/sites/{}", s.plant);
    let meter = format!("#meter-{}", s.meter);
    for (size, tag) in [(DESKTOP, "desk"), (PHONE, "phone")] {
        let what = format!("{size:?}");
        browser.resize(size).await.unwrap();
        browser.goto(&page).await.unwrap();
        // The time zone is a picker of IANA zones grouped by region, the site's selected.
        assert_eq!(value(&browser, "#site-time_zone").await, "Europe/Ljubljana");
        let regions = texts(&browser, "#site-time_zone optgroup").await;
        assert!(
            browser
                .count("#site-time_zone optgroup[label=Europe] option")
                .await
                .unwrap()
                > 30
        );
        assert!(regions.len() >= 9, "{what}: {}", regions.len());
        // Only this site's panels for a new circuit; only its meters, with readable labels.
        assert_eq!(
            texts(&browser, "#new-circuit-panel_id option").await,
            ["Main panel"],
            "{what}"
        );
        assert_eq!(browser.count("form.meter-form").await.unwrap(), 1, "{what}");
        let heading = browser.text(&format!("{meter} h3")).await.unwrap();
        assert!(
            heading.contains("Main supply — MT1234 (gateway SG0001, RS485 port 1)"),
            "{what}: {heading}"
        );
        let places = texts(&browser, &format!("{meter} select[name=placement] option")).await;
        for label in [
            "Not placed yet",
            "The whole site (main supply meter)",
            "Main panel (the whole panel)",
            "Main panel › Heat pump (heating)",
        ] {
            assert!(
                places.iter().any(|p| p == label),
                "{what}: {label} in {places:?}"
            );
        }
        assert!(
            !places.iter().any(|p| p.contains("Office")),
            "{what}: {places:?}"
        );
        let usages = texts(&browser, "#new-circuit-usage option").await;
        assert!(
            usages.contains(&"Hot water".to_owned()),
            "{what}: {usages:?}"
        );

        // A circuit name the panel already has: beside the name, the rest kept, 422.
        browser
            .set_value("#new-circuit-panel_id", &s.panel.to_string())
            .await
            .unwrap();
        browser
            .fill("#new-circuit-name", "Heat pump")
            .await
            .unwrap();
        browser
            .set_value("#new-circuit-usage", "hot_water")
            .await
            .unwrap();
        browser.click("#new-circuit button").await.unwrap();
        refused_beside(&browser, "new-circuit-name", "Heat pump", &what).await;
        assert_eq!(value(&browser, "#new-circuit-name").await, "Heat pump");
        assert_eq!(value(&browser, "#new-circuit-usage").await, "hot_water");
        assert!(browser
            .text("#form-error")
            .await
            .unwrap()
            .contains("Nothing was saved"));

        // The site's name taken by another site: beside the name, the new zone kept.
        browser.fill("#site-name", "Office").await.unwrap();
        browser
            .set_value("#site-time_zone", "Asia/Kathmandu")
            .await
            .unwrap();
        browser.click("#site button[type=submit]").await.unwrap();
        refused_beside(&browser, "site-name", "already exists", &what).await;
        assert_eq!(value(&browser, "#site-name").await, "Office");
        assert_eq!(value(&browser, "#site-time_zone").await, "Asia/Kathmandu");
        let zone: String = sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1")
            .bind(s.plant)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(zone, "Europe/Ljubljana", "{what}: nothing saved");

        // Good: a circuit, then the meter placed on it from the picker.
        browser.goto(&page).await.unwrap();
        let name = format!("Lights {tag}");
        browser.fill("#new-circuit-name", &name).await.unwrap();
        browser
            .set_value("#new-circuit-usage", "lighting")
            .await
            .unwrap();
        browser.click("#new-circuit button").await.unwrap();
        browser
            .wait_for_text("#circuits .notice", "Circuit created")
            .await
            .unwrap();
        let circuit: i64 = sqlx::query_scalar("SELECT id FROM circuits WHERE name = $1")
            .bind(&name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let places = texts(&browser, &format!("{meter} select[name=placement] option")).await;
        let label = format!("Main panel › {name} (lighting)");
        assert!(places.contains(&label), "{what}: {label} in {places:?}");
        browser
            .set_value(&format!("{meter}-placement"), &format!("circuit:{circuit}"))
            .await
            .unwrap();
        browser
            .click(&format!("{meter} button[type=submit]"))
            .await
            .unwrap();
        browser
            .wait_for_text("#meters .notice", "MT1234 saved")
            .await
            .unwrap();
        assert_eq!(
            value(&browser, &format!("{meter}-placement")).await,
            format!("circuit:{circuit}"),
            "{what}"
        );
        let placed: Option<i64> =
            sqlx::query_scalar("SELECT circuit_id FROM devices WHERE id = $1")
                .bind(s.meter)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(placed, Some(circuit), "{what}");
        // Placed, the meter is listed under the placed ones; nothing is left to place.
        assert!(browser
            .text("#no-unplaced")
            .await
            .unwrap()
            .contains("Every meter is placed"));
    }

    // The other site's page lists its own objects only.
    browser
        .goto(&format!("{base}/admin/sites/{}", s.office))
        .await
        .unwrap();
    assert_eq!(
        texts(&browser, "#new-circuit-panel_id option").await,
        ["Office board"]
    );
    let headings = texts(&browser, "form.meter-form h3").await;
    assert_eq!(headings.len(), 1);
    assert!(headings[0].contains("OF0001"), "{headings:?}");
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_forms_pick_sites_users_and_zones_and_keep_what_was_typed() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let s = seed(&app).await;
    let viewer: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = 'viewer@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    log_in(&browser, &base, "admin@example.com").await;

    for (size, tag) in [(DESKTOP, "desk"), (PHONE, "phone")] {
        let what = format!("{size:?}");
        browser.resize(size).await.unwrap();
        browser.goto(&format!("{base}/admin")).await.unwrap();
        // Sites by name everywhere a site is chosen, in order; users with their role (admins
        // see every site: not offered); zones grouped, the default selected.
        let sites = texts(&browser, "#new-gateway-site_id option").await;
        assert_eq!(sites[0], "No site yet", "{what}");
        let mut sorted = sites[1..].to_vec();
        sorted.sort();
        assert_eq!(sites[1..], sorted[..], "{what}");
        assert!(sites.contains(&"Office".to_owned()) && sites.contains(&"Plant".to_owned()));
        assert_eq!(texts(&browser, "#grant-site_id option").await, sites[1..]);
        assert_eq!(texts(&browser, "#new-user-sites label").await, sites[1..]);
        let users = texts(&browser, "#grant-user_id option").await;
        assert!(
            users.contains(&"viewer@example.com (viewer)".to_owned()),
            "{users:?}"
        );
        assert!(
            !users.iter().any(|u| u.contains("admin")),
            "{what}: {users:?}"
        );
        assert_eq!(
            value(&browser, "#new-site-time_zone").await,
            "Europe/Ljubljana"
        );

        // A user whose e-mail exists: beside the e-mail, role and ticked site kept.
        browser
            .fill("#new-user-email", "viewer@example.com")
            .await
            .unwrap();
        browser
            .set_value("#new-user-role", "operator")
            .await
            .unwrap();
        browser
            .click(&format!("#new-user-sites input[value='{}']", s.office))
            .await
            .unwrap();
        browser
            .click("#new-user button[type=submit]")
            .await
            .unwrap();
        refused_beside(&browser, "new-user-email", "already exists", &what).await;
        assert_eq!(value(&browser, "#new-user-role").await, "operator");
        assert_eq!(
            browser
                .execute_with(
                    "return document.querySelector(arguments[0]).checked",
                    vec![json!(format!(
                        "#new-user-sites input[value='{}']",
                        s.office
                    ))],
                )
                .await
                .unwrap(),
            json!(true),
            "{what}"
        );

        // A gateway serial already registered: beside the serial, the site kept.
        browser.fill("#new-gateway-serial", "SG0001").await.unwrap();
        browser
            .set_value("#new-gateway-site_id", &s.office.to_string())
            .await
            .unwrap();
        browser
            .click("#new-gateway button[type=submit]")
            .await
            .unwrap();
        refused_beside(&browser, "new-gateway-serial", "already exists", &what).await;
        assert_eq!(
            value(&browser, "#new-gateway-site_id").await,
            s.office.to_string()
        );

        // Granting a site the viewer already has: beside the site.
        browser
            .set_value("#grant-user_id", &viewer.to_string())
            .await
            .unwrap();
        browser
            .set_value("#grant-site_id", &s.plant.to_string())
            .await
            .unwrap();
        browser
            .click("#grant-site button[type=submit]")
            .await
            .unwrap();
        refused_beside(&browser, "grant-site_id", "already sees", &what).await;

        // A site named like another: beside the name, the chosen zone kept.
        browser.fill("#new-site-name", "Plant").await.unwrap();
        browser
            .set_value("#new-site-time_zone", "America/New_York")
            .await
            .unwrap();
        browser
            .click("#new-site button[type=submit]")
            .await
            .unwrap();
        refused_beside(&browser, "new-site-name", "already exists", &what).await;
        assert_eq!(
            value(&browser, "#new-site-time_zone").await,
            "America/New_York"
        );

        // Good: the site is created with the picked zone; its page comes next, with a notice.
        let name = format!("Warehouse {tag}");
        browser.fill("#new-site-name", &name).await.unwrap();
        browser
            .click("#new-site button[type=submit]")
            .await
            .unwrap();
        browser
            .wait_for_text("#panels .notice", "Site created")
            .await
            .unwrap();
        let zone: String = sqlx::query_scalar("SELECT time_zone FROM sites WHERE name = $1")
            .bind(&name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(zone, "America/New_York", "{what}");

        // Good: a user with a ticked site; the password is shown once.
        browser.goto(&format!("{base}/admin")).await.unwrap();
        let email = format!("op-{tag}@example.com");
        browser.fill("#new-user-email", &email).await.unwrap();
        browser
            .set_value("#new-user-role", "operator")
            .await
            .unwrap();
        browser
            .click(&format!("#new-user-sites input[value='{}']", s.plant))
            .await
            .unwrap();
        browser
            .click("#new-user button[type=submit]")
            .await
            .unwrap();
        browser.wait_for_text(".notice", "password").await.unwrap();
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM user_sites us JOIN users u ON u.id = us.user_id
                 WHERE u.email = '{email}' AND us.site_id = {} AND u.role = 'operator'",
                s.plant
            ))
            .await,
            1,
            "{what}"
        );
    }
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_form_picks_currency_and_bands_and_marks_the_mistaken_field() {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let s = seed(&app).await;
    log_in(&browser, &base, "admin@example.com").await;
    let form = format!("{base}/admin/sites/{}/contract", s.plant);

    for (size, from) in [(DESKTOP, "2026-01-01"), (PHONE, "2026-02-01")] {
        let what = format!("{size:?}");
        browser.resize(size).await.unwrap();
        browser.goto(&form).await.unwrap();
        assert_eq!(value(&browser, "#currency").await, "EUR");
        let currencies = texts(&browser, "#currency option").await;
        assert!(
            currencies.contains(&"CHF — Swiss franc".to_owned()),
            "{currencies:?}"
        );
        // Months are ticked, not typed.
        assert_eq!(
            browser
                .count("#rule0_months input[type=checkbox]")
                .await
                .unwrap(),
            12
        );

        browser.set_value("#valid_from", from).await.unwrap();
        browser.set_value("#currency", "CHF").await.unwrap();
        browser.fill("#band0_name", "day").await.unwrap();
        browser.fill("#band0_import", "0.142").await.unwrap();
        browser.fill("#band1_name", "night").await.unwrap();
        browser.fill("#band1_import", "0.095").await.unwrap();
        browser.fill("#default_band", "night").await.unwrap();
        browser.fill("#rule0_band", "dya").await.unwrap();
        browser.click("#rule0_days input[value=mon]").await.unwrap();
        browser.set_value("#rule0_from", "06:00").await.unwrap();
        browser.fill("#rule0_to", "22:00").await.unwrap();
        browser
            .click("#rule0_months input[value='12']")
            .await
            .unwrap();
        browser.click("#save-contract").await.unwrap();
        refused_beside(&browser, "rule0_band", "dya", &what).await;
        // Everything typed is kept; the summary links to the field; the band picker offers
        // the bands given.
        assert_eq!(value(&browser, "#rule0_band").await, "dya");
        assert_eq!(value(&browser, "#band0_import").await, "0.142");
        assert_eq!(value(&browser, "#currency").await, "CHF");
        assert_eq!(
            browser
                .attr("#contract-error a", "href")
                .await
                .unwrap()
                .as_deref(),
            Some("#rule0_band")
        );
        assert_eq!(
            browser
                .count("#band-names option[value=day]")
                .await
                .unwrap(),
            1
        );
        for checked in [
            "#rule0_days input[value=mon]",
            "#rule0_months input[value='12']",
        ] {
            assert_eq!(
                browser
                    .execute_with(
                        "return document.querySelector(arguments[0]).checked",
                        vec![json!(checked)],
                    )
                    .await
                    .unwrap(),
                json!(true),
                "{what}: {checked}"
            );
        }
        // Fixed, it saves and the site's page lists it.
        browser.fill("#rule0_band", "day").await.unwrap();
        browser.click("#save-contract").await.unwrap();
        browser
            .wait_for_text("#contracts .notice", "saved")
            .await
            .unwrap();
        let stored: (String, String) = sqlx::query_as(
            "SELECT body->>'currency', body->'schedule'->0->>'months' FROM contracts
             WHERE valid_from = $1::date",
        )
        .bind(from)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(stored, ("CHF".to_owned(), "[12]".to_owned()), "{what}");
    }
    browser.close().await.unwrap();
    app.stop().await;
}
