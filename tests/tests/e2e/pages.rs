//! The HTML dashboard over plain HTTP: sessions and CSRF, every page rendered for a user of
//! the site, nothing of another site, HTML escaped. (The browser tests drive the same pages
//! in headless Chromium.)

use headend_e2e::{raw_request, HttpResponse, TestApp};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// A browser-like client: keeps cookies, posts forms with the page's CSRF token.
struct Client<'a> {
    app: &'a TestApp,
    cookies: Vec<(String, String)>,
}

impl<'a> Client<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &HttpResponse) {
        for c in r.set_cookies() {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((n, v)) = pair.split_once('=') {
                self.cookies.retain(|(name, _)| name != n);
                if !v.is_empty() {
                    self.cookies.push((n.to_owned(), v.to_owned()));
                }
            }
        }
    }

    async fn get(&mut self, path: &str) -> HttpResponse {
        let cookie = self.cookie_header();
        let r = raw_request(self.app.http, "GET", path, &[("Cookie", &cookie)], "")
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> HttpResponse {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let cookie = self.cookie_header();
        let r = raw_request(
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

    /// What a refused form shows: the page it redirects to (303), or the form itself
    /// re-rendered with its errors (4xx), as the forms do now.
    async fn shown(&mut self, r: HttpResponse) -> HttpResponse {
        match r.header("location") {
            Some(location) if r.status == 303 => {
                let location = location.to_owned();
                self.get(&location).await
            }
            _ => {
                assert!((400..500).contains(&r.status), "{}: {}", r.status, r.body);
                r
            }
        }
    }

    fn csrf(page: &HttpResponse) -> String {
        let at = page
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        page.body[at..at + 32].to_owned()
    }

    async fn login(&mut self, email: &str) {
        let form = self.get("/login").await;
        assert_eq!(form.status, 200);
        let csrf = Self::csrf(&form);
        let r = self
            .post(
                "/login",
                &[("csrf", &csrf), ("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("/"));
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn user(app: &TestApp, email: &str, role: &str, sites: &[i64]) {
    let id = headend::auth::users::create(&app.pool, email, role.parse().unwrap(), PASSWORD)
        .await
        .unwrap();
    for s in sites {
        headend::auth::users::grant_site(&app.pool, id, *s)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_the_csrf_token_and_sets_a_strict_http_only_cookie() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let mut c = Client::new(&app);
    // Pages need a session.
    let r = c.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    let form = c.get("/login").await;
    assert!(form
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    // Without the token (a cross-site post would have none): refused.
    let r = c
        .post(
            "/login",
            &[
                ("csrf", "0123456789abcdef0123456789abcdef"),
                ("email", "v@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    let csrf = Client::csrf(&form);
    let wrong = c
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "v@example.com"),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("wrong"));
    let r = c
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "v@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("headend_session="))
        .unwrap()
        .to_owned();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert_eq!(c.get("/").await.status, 200);
    // Logging out needs the token too, then the session is gone.
    let page = c.get("/").await;
    let csrf = Client::csrf(&page);
    assert_eq!(c.post("/logout", &[("csrf", "x")]).await.status, 403);
    assert_eq!(c.post("/logout", &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(c.get("/").await.status, 303);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_for_its_site_and_nothing_leaks_to_another() {
    let app = TestApp::spawn().await;
    let site = app
        .site("Plant <script>alert(1)</script>", "Europe/Ljubljana")
        .await;
    let other = app.site("Other plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    let other_password = app.gateway("SG000099", Some(other), None).await;
    let client = app.gateway_client("SG000017", &password).await;
    client
        .publish(
            "sg/SG000017/pub/measurements/ir",
            headend_e2e::fixture("measurements-ir.json"),
        )
        .await;
    client
        .publish(
            "sg/SG000017/pub/counters/ir",
            headend_e2e::fixture("counters-ir-manual.json"),
        )
        .await;
    client
        .publish(
            "sg/SG000017/pub/bicom/ir",
            headend_e2e::fixture("bicom-ir.json"),
        )
        .await;
    let other_client = app.gateway_client("SG000099", &other_password).await;
    other_client
        .publish(
            "sg/SG000099/pub/counters/rs485/2",
            headend_e2e::fixture("counters-rs485-2-wm3m4c.json"),
        )
        .await;
    app.wait_count("SELECT count(*) FROM relay_states", 1).await;
    app.wait_count("SELECT count(DISTINCT device_id) FROM counters", 2)
        .await;
    user(&app, "op@example.com", "operator", &[site]).await;
    user(&app, "admin@example.com", "admin", &[]).await;

    let mut c = Client::new(&app);
    c.login("op@example.com").await;
    let sites = c.get("/").await;
    assert_eq!(sites.status, 200);
    // askama escapes `<` as `&#60;` (or `&lt;`): either way no markup.
    assert!(
        sites.body.contains("Plant &#60;script&#62;")
            || sites.body.contains("Plant &lt;script&gt;"),
        "escaped site name: {}",
        sites.body
    );
    assert!(!sites.body.contains("<script>alert"));
    assert!(!sites.body.contains("Other plant"));
    for by in ["day", "month", "year"] {
        let page = c.get(&format!("/sites/{site}?by={by}")).await;
        assert_eq!(page.status, 200, "{by}: {}", page.body);
        assert!(page.body.contains("id=\"energy-chart\""));
        assert!(page.body.contains("X0000124"), "the meter is in the tree");
    }
    let meter = c.get("/meters/X0000124").await;
    assert_eq!(meter.status, 200, "{}", meter.body);
    assert!(
        meter.body.contains("id=\"power-chart\"") && meter.body.contains("data-bars=\"96\""),
        "24 h of quarters"
    );
    assert!(
        meter.body.contains("the last 24 hours"),
        "by default the power graph is the last 24 hours"
    );
    assert!(meter.body.contains("counter1nr"));
    let relays = c.get("/relays").await;
    assert_eq!(relays.status, 200);
    assert!(
        relays.body.contains("/confirm?action=off"),
        "an operator gets the buttons"
    );
    assert_eq!(c.get("/gateways").await.status, 200);
    // Dates at the ends of the calendar are refused with a reason, never a crash.
    for path in [
        "/meters/X0000124?to=%2B262142-12-31".to_owned(),
        "/meters/X0000124?from=-0001-01-01&to=-0001-01-02".to_owned(),
        format!("/sites/{site}?by=year&date=%2B262142-12-31"),
        format!("/export.csv?site={site}&kind=daily&from=%2B262142-01-01&to=%2B262142-12-31"),
    ] {
        let page = if let Some(api) = path.strip_prefix("/export.csv") {
            c.get(&format!("/api/v1/export.csv{api}")).await
        } else {
            c.get(&path).await
        };
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert!(page.body.contains("2199"), "{path}: {}", page.body);
    }
    // Another site's pages and meters do not exist for this user.
    assert_eq!(c.get(&format!("/sites/{other}")).await.status, 404);
    assert_eq!(c.get("/meters/18230001").await.status, 404);
    assert_eq!(c.get("/admin").await.status, 403);
    // Static assets are served locally.
    assert!(c.get("/static/app.css").await.body.contains("svg.chart"));

    let mut admin = Client::new(&app);
    admin.login("admin@example.com").await;
    let page = admin.get("/admin").await;
    assert_eq!(page.status, 200);
    let csrf = Client::csrf(&page);
    let r = admin
        .post(
            "/admin/sites",
            &[
                ("csrf", &csrf),
                ("name", "New site"),
                ("time_zone", "Asia/Kathmandu"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(admin.get("/admin").await.body.contains("Asia/Kathmandu"));
    // Secrets shown once come in the answer itself, never in a redirect's URL, never cached.
    for (path, form) in [
        (
            "/admin/users",
            vec![
                ("email", "new@example.com"),
                ("role", "viewer"),
                ("sites", ""),
            ],
        ),
        (
            "/admin/gateways",
            vec![("serial", "SG000321"), ("site_id", "")],
        ),
    ] {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        let r = admin.post(path, &fields).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.header("location").is_none(), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert!(r.body.contains("password"), "{path}: {}", r.body);
    }
    drop((client, other_client));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_command_from_the_page_goes_through_the_ledger() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    let client = app.gateway_client("SG000017", &password).await;
    client
        .publish(
            "sg/SG000017/pub/bicom/ir",
            headend_e2e::fixture("bicom-ir.json"),
        )
        .await;
    app.wait_count("SELECT count(*) FROM relay_states", 1).await;
    let relay: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE kind = 'relay'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    user(&app, "op@example.com", "operator", &[site]).await;
    user(&app, "viewer@example.com", "viewer", &[site]).await;

    let mut viewer = Client::new(&app);
    viewer.login("viewer@example.com").await;
    assert!(!viewer
        .get("/relays")
        .await
        .body
        .contains("/confirm?action="));
    assert_eq!(
        viewer
            .get(&format!("/relays/{relay}/confirm?action=off"))
            .await
            .status,
        403
    );

    let mut c = Client::new(&app);
    c.login("op@example.com").await;
    let confirm = c.get(&format!("/relays/{relay}/confirm?action=off")).await;
    assert_eq!(confirm.status, 200);
    let csrf = Client::csrf(&confirm);
    let key_at = confirm
        .body
        .find("name=\"idempotency_key\" value=\"")
        .unwrap()
        + 30;
    let key = confirm.body[key_at..key_at + 24].to_owned();
    let form = [
        ("csrf", csrf.as_str()),
        ("action", "off"),
        ("idempotency_key", key.as_str()),
        ("reason", "maintenance"),
    ];
    let r = c.post(&format!("/relays/{relay}/command"), &form).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").unwrap().to_owned();
    // A double submit makes no second command.
    let again = c.post(&format!("/relays/{relay}/command"), &form).await;
    assert_eq!(again.header("location"), Some(location.as_str()));
    assert_eq!(app.count("SELECT count(*) FROM relay_commands").await, 1);
    let page = c.get(&location).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("maintenance"));
    let command = app
        .request("GET", &format!("/api/v1{location}"), None, None)
        .await;
    assert_eq!(
        command.status, 401,
        "the API wants a token, the page a cookie"
    );
    let stored: (String, Option<String>) =
        sqlx::query_as("SELECT requested_email, reason FROM relay_commands")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        ("op@example.com".to_owned(), Some("maintenance".to_owned()))
    );
    let _ = json!({});
    drop(client);
    app.stop().await;
}

/// A meter that reports only counters, on gateway `gw`, through an MQTT client.
fn counters_doc(serial: &str, kwh: u32) -> String {
    json!({
        "header": { "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": serial,
            "local_time": "01.01.2026 00:00:00",
            "resetable_counters": 0, "non_resetable_counters": 1 },
        "counters": { "counter1nr": format!("{kwh}.000 kWh") }
    })
    .to_string()
}

/// Every page, every form and every export variant, asked by users of site A about site B's
/// objects and about objects of no site: 404 (nothing exists for them), or 403 where the role
/// does not allow the page at all. Admin forms are refused to viewers and operators, and
/// to anyone without the CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_one_site_see_nothing_of_another_anywhere() {
    let app = TestApp::spawn().await;
    let a = app.site("Site A", "Europe/Ljubljana").await;
    let b = app.site("Site B", "UTC").await;
    let pw_a = app.gateway("SG000017", Some(a), None).await;
    let pw_b = app.gateway("SG000099", Some(b), None).await;
    let pw_none = app.gateway("SG000055", None, None).await;
    let client_a = app.gateway_client("SG000017", &pw_a).await;
    client_a
        .publish(
            "sg/SG000017/pub/counters/ir",
            headend_e2e::fixture("counters-ir-manual.json"),
        )
        .await;
    let client_b = app.gateway_client("SG000099", &pw_b).await;
    client_b
        .publish(
            "sg/SG000099/pub/counters/rs485/2",
            headend_e2e::fixture("counters-rs485-2-wm3m4c.json"),
        )
        .await;
    client_b
        .publish(
            "sg/SG000099/pub/bicom/ir",
            headend_e2e::fixture("bicom-ir.json"),
        )
        .await;
    let client_none = app.gateway_client("SG000055", &pw_none).await;
    client_none
        .publish("sg/SG000055/pub/counters/ir", counters_doc("X0000999", 5))
        .await;
    app.wait_count("SELECT count(*) FROM relay_states", 1).await;
    app.wait_count("SELECT count(DISTINCT device_id) FROM counters", 3)
        .await;
    let relay_b: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE kind = 'relay'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    use headend::accounting::{contracts, structure};
    let panel_b = structure::create_panel(
        &app.pool,
        b,
        &structure::PanelInput {
            name: Some("Panel B".into()),
            description: None,
        },
    )
    .await
    .unwrap();
    let circuit_b = structure::create_circuit(
        &app.pool,
        panel_b,
        &structure::CircuitInput {
            name: Some("Circuit B".into()),
            usage: Some("lighting".into()),
            description: None,
        },
    )
    .await
    .unwrap();
    let contract_b = contracts::create(
        &app.pool,
        b,
        chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        &headend_energy::tariff::Contract::example_eur(),
    )
    .await
    .unwrap();
    let admin_token = app.user_token("root@example.com", "admin", &[]).await;
    let created = app
        .request(
            "POST",
            &format!("/api/v1/relays/{relay_b}/commands"),
            Some(&admin_token),
            Some(json!({ "action": "on" })),
        )
        .await;
    assert!(created.status < 300, "{}", created.body);
    let command_b: i64 = sqlx::query_scalar("SELECT id FROM relay_commands")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    user(&app, "viewer@example.com", "viewer", &[a]).await;
    user(&app, "op@example.com", "operator", &[a]).await;

    let foreign_pages = [
        format!("/sites/{b}"),
        format!("/sites/{b}?by=month"),
        format!("/sites/{b}?by=year"),
        format!("/circuits/{circuit_b}"),
        "/meters/18230001".to_owned(),
        "/meters/X0000999".to_owned(),
        "/meters/18230001?from=2026-01-01&to=2026-01-02".to_owned(),
        format!("/relays/{relay_b}"),
        format!("/commands/{command_b}"),
        "/api/v1/devices/18230001/latest".to_owned(),
    ];
    let mut exports = Vec::new();
    for kind in [
        "intervals",
        "daily",
        "monthly",
        "readings",
        "measurements",
        "completeness",
    ] {
        for target in [
            format!("site={b}"),
            format!("circuit={circuit_b}"),
            "meter=18230001".to_owned(),
            "meter=X0000999".to_owned(),
        ] {
            exports.push(format!(
                "/api/v1/export.csv?kind={kind}&{target}&from=2026-01-01&to=2026-01-02"
            ));
        }
    }
    let admin_gets = [
        format!("/admin/sites/{a}"),
        format!("/admin/sites/{b}"),
        format!("/admin/sites/{b}/contract"),
        format!("/admin/sites/{b}/contract?id={contract_b}"),
        format!("/admin/sites/{a}/home-assistant"),
        "/admin".to_owned(),
    ];
    let admin_posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/sites".into(),
            vec![("name", "X"), ("time_zone", "UTC")],
        ),
        (
            "/admin/users".into(),
            vec![("email", "x@example.com"), ("role", "admin")],
        ),
        ("/admin/gateways".into(), vec![("serial", "SG000123")]),
        (
            "/admin/grants".into(),
            vec![("user_id", "1"), ("site_id", "1")],
        ),
        (
            "/admin/gateways/SG000055/site".into(),
            vec![("site_id", "1")],
        ),
        (
            format!("/admin/sites/{a}/settings"),
            vec![("name", "A2"), ("time_zone", "UTC")],
        ),
        (format!("/admin/sites/{a}/panels"), vec![("name", "P")]),
        (
            format!("/admin/sites/{b}/panels/{panel_b}"),
            vec![("name", "P")],
        ),
        (format!("/admin/sites/{b}/panels/{panel_b}/delete"), vec![]),
        (
            format!("/admin/sites/{b}/circuits"),
            vec![("panel_id", "1"), ("name", "C"), ("usage", "other")],
        ),
        (
            format!("/admin/sites/{b}/circuits/{circuit_b}"),
            vec![("name", "C"), ("usage", "other")],
        ),
        (
            format!("/admin/sites/{b}/circuits/{circuit_b}/delete"),
            vec![],
        ),
        (
            format!("/admin/sites/{b}/meters/18230001"),
            vec![
                ("name", ""),
                ("placement", "site"),
                ("usage", ""),
                ("import_register", ""),
                ("export_register", ""),
                ("reactive_register", ""),
            ],
        ),
        (
            format!("/admin/sites/{b}/contract"),
            vec![("valid_from", "2026-02-01"), ("currency", "EUR")],
        ),
        (
            format!("/admin/sites/{b}/contracts/{contract_b}/delete"),
            vec![],
        ),
        (
            format!("/admin/sites/{a}/home-assistant"),
            vec![
                ("broker", "home"),
                ("discovery_prefix", "homeassistant"),
                ("base_topic", "headend/a"),
                ("enabled", "on"),
            ],
        ),
    ];

    for email in ["viewer@example.com", "op@example.com"] {
        let mut c = Client::new(&app);
        c.login(email).await;
        let home = c.get("/").await;
        assert!(home.body.contains("Site A") && !home.body.contains("Site B"));
        let relays = c.get("/relays").await;
        assert!(!relays.body.contains(&format!("/relays/{relay_b}\"")));
        let gateways = c.get("/gateways").await;
        assert!(gateways.body.contains("SG000017"));
        assert!(!gateways.body.contains("SG000099") && !gateways.body.contains("SG000055"));
        for path in foreign_pages.iter().chain(&exports) {
            let r = c.get(path).await;
            assert_eq!(r.status, 404, "{email} GET {path}: {}", r.body);
            assert!(!r.body.contains("Site B") && !r.body.contains("Panel B"));
        }
        // The same exports of their own site work (the 404 above is about the site).
        let own = c
            .get(&format!(
                "/api/v1/export.csv?kind=daily&site={a}&from=2026-01-01&to=2026-01-02"
            ))
            .await;
        assert_eq!(own.status, 200, "{}", own.body);
        let page = c.get("/").await;
        let csrf = Client::csrf(&page);
        // Switching a relay of another site: the relay does not exist for them.
        let confirm = c.get(&format!("/relays/{relay_b}/confirm?action=on")).await;
        let expected = if email.starts_with("viewer") {
            403
        } else {
            404
        };
        assert_eq!(confirm.status, expected, "{email} confirm");
        let r = c
            .post(
                &format!("/relays/{relay_b}/command"),
                &[("csrf", &csrf), ("action", "on")],
            )
            .await;
        assert!(
            matches!(r.status, 403 | 404),
            "{email} command: {}",
            r.status
        );
        for action in ["cancel", "approve"] {
            let r = c
                .post(
                    &format!("/commands/{command_b}/{action}"),
                    &[("csrf", &csrf)],
                )
                .await;
            assert!(
                matches!(r.status, 403 | 404),
                "{email} {action}: {}",
                r.status
            );
        }
        for path in &admin_gets {
            assert_eq!(c.get(path).await.status, 403, "{email} GET {path}");
        }
        for (path, fields) in &admin_posts {
            let mut form = vec![("csrf", csrf.as_str())];
            form.extend(fields.iter().copied());
            let r = c.post(path, &form).await;
            assert_eq!(r.status, 403, "{email} POST {path}: {}", r.body);
        }
    }
    // An admin without the form's token is refused too, and nothing changed.
    let mut admin = Client::new(&app);
    admin.login("root@example.com").await;
    assert_eq!(admin.get(&format!("/admin/sites/{b}")).await.status, 200);
    for (path, fields) in &admin_posts {
        let mut form = vec![("csrf", "0123456789abcdef0123456789abcdef")];
        form.extend(fields.iter().copied());
        let r = admin.post(path, &form).await;
        assert_eq!(r.status, 403, "admin without CSRF: POST {path}");
    }
    assert_eq!(app.count("SELECT count(*) FROM panels").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM circuits").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM contracts").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM sites").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM user_sites").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM gateways WHERE site_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE measures IS NOT NULL")
            .await,
        0
    );
    drop((client_a, client_b, client_none));
    app.stop().await;
}

/// An admin builds a site's structure with the forms: panels, circuits, a meter's placement
/// and a supply contract; refusals come back next to their form, escaped, with what was typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_forms_build_panels_circuits_placement_and_contract() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    let client = app.gateway_client("SG000017", &password).await;
    client
        .publish(
            "sg/SG000017/pub/counters/ir",
            headend_e2e::fixture("counters-ir-manual.json"),
        )
        .await;
    app.wait_count("SELECT count(DISTINCT device_id) FROM counters", 1)
        .await;
    user(&app, "admin@example.com", "admin", &[]).await;
    let mut c = Client::new(&app);
    c.login("admin@example.com").await;
    let page = c.get(&format!("/admin/sites/{site}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("X0000124"), "the meter is listed");
    let csrf = Client::csrf(&page);
    let base = format!("/admin/sites/{site}");

    // Panels: create (the name is escaped where shown), refuse a duplicate next to the form.
    let r = c
        .post(
            &format!("{base}/panels"),
            &[("csrf", &csrf), ("name", "Main <b>board</b>")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().contains("section=panels"));
    let r = c
        .post(
            &format!("{base}/panels"),
            &[("csrf", &csrf), ("name", "Main <b>board</b>")],
        )
        .await;
    let shown = c.shown(r).await;
    assert!(shown.body.contains("class=\"error\""), "{}", shown.body);
    assert!(shown.body.contains("already has a panel"));
    assert!(!shown.body.contains("<b>board"));
    let panel: i64 = sqlx::query_scalar("SELECT id FROM panels")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let r = c
        .post(
            &format!("{base}/panels/{panel}"),
            &[("csrf", &csrf), ("name", "Main board")],
        )
        .await;
    assert_eq!(r.status, 303);

    // A circuit on it, then the meter placed on the circuit.
    let r = c
        .post(
            &format!("{base}/circuits"),
            &[
                ("csrf", &csrf),
                ("panel_id", &panel.to_string()),
                ("name", "Lights"),
                ("usage", "lighting"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let bad = c
        .post(
            &format!("{base}/circuits"),
            &[
                ("csrf", &csrf),
                ("panel_id", &panel.to_string()),
                ("name", "Oven"),
                ("usage", "baking"),
            ],
        )
        .await;
    let shown = c.shown(bad).await;
    assert!(shown.body.contains("is not one of"), "{}", shown.body);
    let circuit: i64 = sqlx::query_scalar("SELECT id FROM circuits")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let place = |placement: String| {
        vec![
            ("name".to_owned(), "Lights meter".to_owned()),
            ("placement".to_owned(), placement),
            ("usage".to_owned(), String::new()),
            ("import_register".to_owned(), String::new()),
            ("export_register".to_owned(), String::new()),
            ("reactive_register".to_owned(), String::new()),
        ]
    };
    fn form<'a>(csrf: &'a str, fields: &'a [(String, String)]) -> Vec<(&'a str, &'a str)> {
        let mut f: Vec<(&str, &str)> = vec![("csrf", csrf)];
        f.extend(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        f
    }
    let fields = place(format!("circuit:{circuit}"));
    let r = c
        .post(&format!("{base}/meters/X0000124"), &form(&csrf, &fields))
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let placed: (Option<String>, Option<i64>, Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT measures, panel_id, circuit_id, name FROM devices WHERE serial = 'X0000124'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        placed,
        (
            Some("circuit".into()),
            Some(panel),
            Some(circuit),
            Some("Lights meter".into())
        )
    );
    // A register name that is not one is refused and shown.
    let mut fields = place("site".into());
    fields[3].1 = "counter 1".into();
    let r = c
        .post(&format!("{base}/meters/X0000124"), &form(&csrf, &fields))
        .await;
    let shown = c.shown(r).await;
    assert!(
        shown.body.contains("is not a counter name"),
        "{}",
        shown.body
    );
    // The site page shows the tree, the circuit page its meter and its export form.
    let site_page = c.get(&format!("/sites/{site}")).await;
    let tree = &site_page.body[site_page.body.find("id=\"tree\"").unwrap()..];
    let (b, l, m) = (
        tree.find("Main board").unwrap(),
        tree.find("Lights</a>").unwrap(),
        tree.find("X0000124").unwrap(),
    );
    assert!(b < l && l < m, "panel, circuit, meter in order");
    assert!(site_page
        .body
        .contains(&format!("name=\"site\" value=\"{site}\"")));
    let circuit_page = c.get(&format!("/circuits/{circuit}")).await;
    assert_eq!(circuit_page.status, 200, "{}", circuit_page.body);
    assert!(circuit_page.body.contains("X0000124"));
    assert!(circuit_page
        .body
        .contains(&format!("name=\"circuit\" value=\"{circuit}\"")));
    assert!(circuit_page.body.contains("id=\"energy-chart\""));
    let meter_page = c.get("/meters/X0000124").await;
    assert!(meter_page
        .body
        .contains("name=\"meter\" value=\"X0000124\""));

    // The contract form: a mistake is shown with what was typed; then saved, listed, edited.
    let contract_page = c.get(&format!("{base}/contract")).await;
    assert_eq!(contract_page.status, 200);
    let mut contract = vec![
        ("csrf", csrf.as_str()),
        ("valid_from", "2026-01-01"),
        ("currency", "EUR"),
        ("default_band", "night"),
        ("band0_name", "day"),
        ("band0_import", "0.142"),
        ("band1_name", "night"),
        ("band1_import", "0.095"),
        ("rule0_band", "dya"),
        ("rule0_days", "mon"),
        ("rule0_days", "tue"),
        ("rule0_from", "06:00"),
        ("rule0_to", "22:00"),
    ];
    let refused = c.post(&format!("{base}/contract"), &contract).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("id=\"contract-error\""));
    assert!(refused.body.contains("dya"), "the typed band is kept");
    assert!(refused.body.contains("value=\"0.142\""));
    contract[8] = ("rule0_band", "day");
    let saved = c.post(&format!("{base}/contract"), &contract).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let listed = c.get(saved.header("location").unwrap()).await;
    assert!(listed.body.contains("2026-01-01") && listed.body.contains("day 0.142"));
    let id: i64 = sqlx::query_scalar("SELECT id FROM contracts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let edit = c.get(&format!("{base}/contract?id={id}")).await;
    assert!(edit.body.contains("value=\"0.095\""));
    assert!(edit
        .body
        .contains("name=\"rule0_days\" value=\"tue\" checked"));
    let id_text = id.to_string();
    let mut changed = contract.clone();
    changed.push(("contract_id", &id_text));
    changed[5] = ("band0_import", "0.15");
    assert_eq!(
        c.post(&format!("{base}/contract"), &changed).await.status,
        303
    );
    assert_eq!(app.count("SELECT count(*) FROM contracts").await, 1);
    let price: String =
        sqlx::query_scalar("SELECT body->'bands'->0->>'import_price' FROM contracts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(price, "0.15");

    // Deleting the circuit unplaces its meter; deleting the panel removes the rest.
    let r = c
        .post(
            &format!("{base}/circuits/{circuit}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
    let measures: Option<String> =
        sqlx::query_scalar("SELECT measures FROM devices WHERE serial = 'X0000124'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(measures, None);
    let r = c
        .post(&format!("{base}/panels/{panel}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let r = c
        .post(&format!("{base}/contracts/{id}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(app.count("SELECT count(*) FROM panels").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM contracts").await, 0);
    // A gateway registered without a site is moved onto it.
    app.gateway("SG000077", None, None).await;
    let r = c
        .post(
            "/admin/gateways/SG000077/site",
            &[("csrf", &csrf), ("site_id", &site.to_string())],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(c
        .get(r.header("location").unwrap())
        .await
        .body
        .contains("SG000077 moved"));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM gateways WHERE serial = 'SG000077' AND site_id = {site}"
        ))
        .await,
        1
    );
    // Access to the site for a viewer created without any.
    user(&app, "late@example.com", "viewer", &[]).await;
    let viewer: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = 'late@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let r = c
        .post(
            "/admin/grants",
            &[
                ("csrf", &csrf),
                ("user_id", &viewer.to_string()),
                ("site_id", &site.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(c
        .get(r.header("location").unwrap())
        .await
        .body
        .contains("Access granted"));
    let mut late = Client::new(&app);
    late.login("late@example.com").await;
    assert_eq!(late.get(&format!("/sites/{site}")).await.status, 200);
    // Another site's objects under this site's path do not exist.
    let other = app.site("Other", "UTC").await;
    assert_eq!(
        c.get(&format!("/admin/sites/{other}/contract?id=999"))
            .await
            .status,
        404
    );
    drop(client);
    app.stop().await;
}

/// The converters page: an admin adds a converter, a device behind it, disables and removes
/// them through the forms; errors come back to the page; viewers and operators (even of the
/// converter's site) are refused, and nothing changes without the CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converter_forms_add_disable_and_remove() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    user(&app, "admin@example.com", "admin", &[]).await;
    user(&app, "op@example.com", "operator", &[site]).await;
    let mut admin = Client::new(&app);
    admin.login("admin@example.com").await;
    let page = admin.get("/converters").await;
    assert_eq!(page.status, 200);
    let csrf = Client::csrf(&page);

    let r = admin
        .post(
            "/converters",
            &[
                ("csrf", &csrf),
                ("name", "conv-<b>"),
                ("host", "127.0.0.1"),
                ("port", "1"),
                ("site_id", &site.to_string()),
            ],
        )
        .await;
    let shown = admin.shown(r).await;
    assert!(shown.body.contains("class=\"error\"") || shown.body.contains("error"));
    assert_eq!(app.count("SELECT count(*) FROM converters").await, 0);

    let r = admin
        .post(
            "/converters",
            &[
                ("csrf", &csrf),
                ("name", "conv-1"),
                ("host", "127.0.0.1"),
                ("port", "1"),
                ("site_id", &site.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.count("SELECT count(*) FROM converters").await, 1);
    let id: i64 = sqlx::query_scalar("SELECT gateway_id FROM converters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // An unknown model is refused with the list of known ones.
    let r = admin
        .post(
            &format!("/converters/{id}/devices"),
            &[("csrf", &csrf), ("unit", "6"), ("model", "no-such-meter")],
        )
        .await;
    let shown = admin.shown(r).await;
    assert!(shown.body.contains("legrand-046-77"), "{}", shown.body);
    let r = admin
        .post(
            &format!("/converters/{id}/devices"),
            &[
                ("csrf", &csrf),
                ("unit", "6"),
                ("model", "legrand-046-77"),
                ("poll_interval_ms", "5000"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(app.count("SELECT count(*) FROM polled_devices").await, 1);
    assert!(admin
        .get("/converters")
        .await
        .body
        .contains("legrand-046-77"));

    // Operators of the site, and anyone without the token, change nothing.
    let mut op = Client::new(&app);
    op.login("op@example.com").await;
    let op_csrf = Client::csrf(&op.get("/").await);
    for (path, form) in [
        (
            "/converters".to_owned(),
            vec![("name", "x"), ("host", "127.0.0.1")],
        ),
        (
            format!("/converters/{id}/devices"),
            vec![("unit", "7"), ("model", "legrand-046-77")],
        ),
        (format!("/converters/{id}/devices/6/remove"), vec![]),
        (format!("/converters/{id}/enabled"), vec![("enabled", "0")]),
    ] {
        let mut fields = vec![("csrf", op_csrf.as_str())];
        fields.extend(form.clone());
        assert_eq!(
            op.post(&path, &fields).await.status,
            403,
            "operator: {path}"
        );
        let mut fields = vec![("csrf", "00000000000000000000000000000000")];
        fields.extend(form);
        assert_eq!(
            admin.post(&path, &fields).await.status,
            403,
            "no CSRF: {path}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM polled_devices").await, 1);

    let r = admin
        .post(
            &format!("/converters/{id}/enabled"),
            &[("csrf", &csrf), ("enabled", "0")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        app.count("SELECT count(*) FROM converters WHERE NOT enabled")
            .await,
        1
    );
    let r = admin
        .post(
            &format!("/converters/{id}/devices/6/remove"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(app.count("SELECT count(*) FROM polled_devices").await, 0);
    app.stop().await;
}

/// The admin page takes access away: revoke a site, disable an account (its session ends at
/// once), reset a password, give a gateway a new MQTT password; secrets come in the answer,
/// never cached; operators cannot use any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revokes_disables_and_resets_credentials() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    app.gateway("SG000042", Some(site), None).await;
    user(&app, "admin@example.com", "admin", &[]).await;
    user(&app, "op@example.com", "operator", &[site]).await;
    let op_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = 'op@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut op = Client::new(&app);
    op.login("op@example.com").await;
    assert_eq!(op.get(&format!("/sites/{site}")).await.status, 200);
    let op_csrf = Client::csrf(&op.get("/").await);
    for path in [
        format!("/admin/users/{op_id}/password"),
        "/admin/gateways/SG000042/password".to_owned(),
    ] {
        assert_eq!(
            op.post(&path, &[("csrf", &op_csrf)]).await.status,
            403,
            "{path}"
        );
    }

    let mut admin = Client::new(&app);
    admin.login("admin@example.com").await;
    let page = admin.get("/admin").await;
    let csrf = Client::csrf(&page);
    assert!(page.body.contains("id=\"revoke-site\""));
    let r = admin
        .post(
            "/admin/revocations",
            &[
                ("csrf", &csrf),
                ("user_id", &op_id.to_string()),
                ("site_id", &site.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(op.get(&format!("/sites/{site}")).await.status, 404);

    for path in [
        format!("/admin/users/{op_id}/password"),
        "/admin/gateways/SG000042/password".to_owned(),
    ] {
        let r = admin.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.body.contains("password"), "{}", r.body);
    }
    let r = admin
        .post(
            &format!("/admin/users/{op_id}/disabled"),
            &[("csrf", &csrf), ("disabled", "1")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(admin.get("/admin").await.body.contains("disabled"));
    let gone = op.get("/").await;
    assert_ne!(gone.status, 200, "a disabled user's session ends at once");
    app.stop().await;
}

/// The overview and site pages explain what is missing: no site (an admin is offered to create
/// one, anyone else is told to ask), no meter placed, no readings, no contract; the quick
/// ranges are plain links, the active one marked for assistive technology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_states_explain_and_quick_ranges_are_marked() {
    let app = TestApp::spawn().await;
    user(&app, "root@example.com", "admin", &[]).await;
    user(&app, "nobody@example.com", "viewer", &[]).await;
    let mut admin = Client::new(&app);
    admin.login("root@example.com").await;
    let home = admin.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("id=\"no-sites\""), "{}", home.body);
    assert!(home.body.contains("href=\"/admin\">Create the first site"));
    let mut nobody = Client::new(&app);
    nobody.login("nobody@example.com").await;
    let home = nobody.get("/").await;
    assert!(home.body.contains("ask an admin to grant you a site"));
    assert!(!home.body.contains("Create the first site"));

    let site = app.site("Empty plant", "Europe/Ljubljana").await;
    app.gateway("SG000017", Some(site), None).await;
    user(&app, "viewer@example.com", "viewer", &[site]).await;
    let home = admin.get("/").await;
    assert!(home.body.contains(&format!("id=\"site-{site}-no-meters\"")));
    assert!(home.body.contains("No meter on this site yet"));
    assert!(home
        .body
        .contains(&format!("href=\"/admin/sites/{site}\">place its meters")));
    assert!(home.body.contains("the gateway has never reported"));

    let page = admin.get(&format!("/sites/{site}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for (needle, why) in [
        ("No meter is placed on this site yet", "no meter"),
        (
            &format!("href=\"/admin/sites/{site}#meters\">place one") as &str,
            "admin link to place one",
        ),
        ("No readings in this period", "no readings"),
        ("No reading has arrived from this site yet", "never"),
        ("No contract: costs need a supply contract", "no contract"),
        (
            &format!("href=\"/admin/sites/{site}/contract\"") as &str,
            "admin link to the contract",
        ),
    ] {
        assert!(page.body.contains(needle), "{why}: {}", page.body);
    }
    // A viewer gets the explanation without the admin links.
    let mut viewer = Client::new(&app);
    viewer.login("viewer@example.com").await;
    let page = viewer.get(&format!("/sites/{site}")).await;
    assert!(page.body.contains("No meter is placed on this site yet"));
    assert!(!page.body.contains(&format!("/admin/sites/{site}")));

    // Each quick range: its link, marked active (and only it), its heading.
    for (key, heading) in [
        ("today", "Today, "),
        ("yesterday", "Yesterday, "),
        ("7d", "Last 7 days, "),
        ("30d", "Last 30 days, "),
        ("month", "This month, "),
        ("year", "This year, "),
    ] {
        let page = viewer.get(&format!("/sites/{site}?range={key}")).await;
        assert_eq!(page.status, 200, "{key}: {}", page.body);
        assert!(
            page.body.contains(&format!(
                "id=\"range-{key}\" href=\"/sites/{site}?range={key}\" class=\"active\" aria-current=\"page\""
            )),
            "{key} marked: {}",
            page.body
        );
        // The range, and Sites in the navigation.
        assert_eq!(
            page.body.matches("aria-current=\"page\"").count(),
            2,
            "{key}: only the range and the section are current"
        );
        assert!(
            page.body
                .contains(&format!("<h2 id=\"period-label\">{heading}")),
            "{key}"
        );
        assert!(page.body.contains("id=\"total-energy\">0.00 kWh<"), "{key}");
    }
    // Earlier from a day is the day before; a range that is not one is refused with the list.
    let day = viewer
        .get(&format!("/sites/{site}?range=day&date=2026-03-29"))
        .await;
    assert!(day.body.contains("Sun 29 Mar 2026"), "{}", day.body);
    assert!(day.body.contains("date=2026-03-28\" rel=\"prev\""));
    assert!(
        day.body.contains("data-bars=\"92\""),
        "a spring-forward day has 92 quarters"
    );
    // The circuit page: its quick ranges, and why it shows nothing.
    use headend::accounting::structure;
    let panel = structure::create_panel(
        &app.pool,
        site,
        &structure::PanelInput {
            name: Some("Main board".into()),
            description: None,
        },
    )
    .await
    .unwrap();
    let circuit = structure::create_circuit(
        &app.pool,
        panel,
        &structure::CircuitInput {
            name: Some("Lights".into()),
            usage: Some("lighting".into()),
            description: None,
        },
    )
    .await
    .unwrap();
    let page = admin.get(&format!("/circuits/{circuit}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"range-month\""));
    assert!(page
        .body
        .contains("class=\"active\" aria-current=\"page\">This month"));
    assert!(page.body.contains("No meter is placed on this circuit"));
    assert!(page
        .body
        .contains(&format!("href=\"/admin/sites/{site}#meters\"")));
    for (key, bars) in [("7d", 7), ("30d", 30), ("year", 12)] {
        let page = viewer
            .get(&format!("/circuits/{circuit}?range={key}"))
            .await;
        assert_eq!(page.status, 200, "{key}: {}", page.body);
        assert!(
            page.body.contains(&format!("id=\"range-{key}\" href=\"/circuits/{circuit}?range={key}\" class=\"active\" aria-current=\"page\"")),
            "{key}: {}",
            page.body
        );
        assert!(
            page.body.contains(&format!("data-bars=\"{bars}\"")),
            "{key}"
        );
        assert!(page.body.contains("id=\"total-energy\">0.00 kWh<"), "{key}");
    }
    let bad = viewer.get(&format!("/sites/{site}?range=week")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("7d, 30d"), "{}", bad.body);
    app.stop().await;
}
