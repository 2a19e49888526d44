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
    assert!(meter.body.contains("counter1nr"));
    let relays = c.get("/relays").await;
    assert_eq!(relays.status, 200);
    assert!(
        relays.body.contains("/confirm?action=off"),
        "an operator gets the buttons"
    );
    assert_eq!(c.get("/gateways").await.status, 200);
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
