//! The HTTP attack suite: password guessing on both logins, sessions that outlive a logout, a
//! disabled account or a reset password, CSRF, cookie flags behind an HTTPS proxy, security
//! headers on every response, and role and site scope across every kind of API object.
//!
//! Related defences tested elsewhere: `api_auth::roles_and_sites_scope_every_read_and_write`
//! (gateways, devices, rejects, sites; admin-only writes; metrics), `pages::
//! users_of_one_site_see_nothing_of_another_anywhere` (every page, export and admin form of
//! another site), `pages::login_needs_the_csrf_token_and_sets_a_strict_http_only_cookie`,
//! `alarms::the_rules_api_checks_role_site_and_input`, `relays::roles_idempotency_and_anti_chatter`.

use std::net::SocketAddr;

use anyhow::Context;
use headend_e2e::{fixture, raw_request, HttpResponse, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct horse battery staple";
const THROTTLED: &str = "headend_auth_throttled_total{channel=\"login\"}";
const LOGIN_FAILURES: &str = "headend_http_login_failures_total";

async fn user(app: &TestApp, email: &str, role: &str, sites: &[i64]) -> i64 {
    let id = headend::auth::users::create(&app.pool, email, role.parse().unwrap(), PASSWORD)
        .await
        .unwrap();
    for s in sites {
        headend::auth::users::grant_site(&app.pool, id, *s)
            .await
            .unwrap();
    }
    id
}

async fn api_login(app: &TestApp, email: &str, password: &str) -> HttpResponse {
    api_login_with(app, email, password, &[]).await
}

async fn api_login_with(
    app: &TestApp,
    email: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let body = json!({ "email": email, "password": password }).to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    raw_request(app.http, "POST", "/api/v1/auth/login", &headers, &body)
        .await
        .unwrap()
}

fn token_of(login: &HttpResponse) -> String {
    assert_eq!(login.status, 200, "login: {}", login.body);
    login.json()["token"].as_str().unwrap().to_owned()
}

/// The `Set-Cookie` header for cookie `name`, if the response sets it.
fn set_cookie<'a>(r: &'a HttpResponse, name: &str) -> Option<&'a str> {
    r.set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap_or("");
    pair.split_once('=').map_or("", |(_, v)| v)
}

fn is_secure(set_cookie: &str) -> bool {
    set_cookie
        .split(';')
        .skip(1)
        .any(|a| a.trim().eq_ignore_ascii_case("secure"))
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    raw_request(app.http, "GET", path, headers, "")
        .await
        .unwrap()
}

/// A request to `/api/v1/me` with the token as bearer, or as the session cookie.
async fn me(app: &TestApp, token: &str, as_cookie: bool) -> u16 {
    if as_cookie {
        let cookie = format!("headend_session={token}");
        get_with(app, "/api/v1/me", &[("Cookie", &cookie)])
            .await
            .status
    } else {
        app.get("/api/v1/me", token).await.status
    }
}

/// A request from another source address of the loopback network (Linux routes all of
/// 127.0.0.0/8 to `lo`), for what the throttle keys by address. Status line only.
async fn login_from(source: [u8; 4], http: SocketAddr, email: &str) -> anyhow::Result<u16> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = socket.connect(http).await?;
    let body = json!({ "email": email, "password": PASSWORD }).to_string();
    let request = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?)
}

/// A browser: keeps cookies, posts forms, can send extra headers (a proxy's).
struct Browser<'a> {
    app: &'a TestApp,
    cookies: Vec<(String, String)>,
    extra: Vec<(&'static str, &'static str)>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: Vec::new(),
            extra: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    fn header(&self) -> String {
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
                self.set(n, v);
            }
        }
    }

    async fn get(&mut self, path: &str) -> HttpResponse {
        let cookie = self.header();
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend(self.extra.iter().copied());
        let r = raw_request(self.app.http, "GET", path, &headers, "")
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> HttpResponse {
        let body: String = form
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let cookie = self.header();
        let mut headers = vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        headers.extend(self.extra.iter().copied());
        let r = raw_request(self.app.http, "POST", path, &headers, &body)
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    fn csrf_of(page: &HttpResponse) -> String {
        let at = page
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        page.body[at..at + 32].to_owned()
    }

    async fn login_with(&mut self, email: &str, password: &str) -> HttpResponse {
        let form = self.get("/login").await;
        assert_eq!(form.status, 200);
        let csrf = Self::csrf_of(&form);
        self.post(
            "/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    async fn login(&mut self, email: &str) -> HttpResponse {
        let r = self.login_with(email, PASSWORD).await;
        assert_eq!(r.status, 303, "{}", r.body);
        r
    }

    async fn logout(&mut self) -> HttpResponse {
        let page = self.get("/").await;
        assert_eq!(page.status, 200);
        let csrf = Self::csrf_of(&page);
        self.post("/logout", &[("csrf", &csrf)]).await
    }
}

// ---- 1. brute force --------------------------------------------------------------------------

/// Guessing one account's password: each wrong password costs two of its ten attempts, then
/// every attempt, even with the right password, is refused with 429 and `Retry-After` before
/// any password is checked; another account from the same address is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_an_accounts_password_is_throttled_with_retry_after() {
    let app = TestApp::spawn().await;
    user(&app, "target@example.com", "viewer", &[]).await;
    user(&app, "bystander@example.com", "viewer", &[]).await;
    assert_eq!(app.metric(THROTTLED).await, Some(0.0));
    let mut refused = None;
    // The account regains one attempt every 6 s: on a slow machine it may have regained one
    // between the guesses and the right password, so guess again (bounded).
    for _ in 0..5 {
        for guess in 0..20 {
            let r = api_login(&app, "target@example.com", &format!("guess {guess}")).await;
            if r.status == 429 {
                break;
            }
            assert_eq!(r.status, 401, "{}", r.body);
        }
        let failures = app.metric(LOGIN_FAILURES).await;
        let r = api_login(&app, "target@example.com", PASSWORD).await;
        if r.status == 429 {
            assert_eq!(
                app.metric(LOGIN_FAILURES).await,
                failures,
                "a throttled attempt checks no password"
            );
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let refused = refused.expect("the account was throttled");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        refused.body.contains("too many attempts"),
        "{}",
        refused.body
    );
    assert!(app.metric(THROTTLED).await.unwrap() >= 1.0);
    assert_eq!(
        api_login(&app, "bystander@example.com", PASSWORD)
            .await
            .status,
        200,
        "the throttle is per account"
    );
    app.stop().await;
}

/// One address spraying guesses over many accounts is refused as a whole; the same user from
/// another address still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_spraying_many_accounts_is_throttled_and_other_sources_are_not() {
    let app = TestApp::spawn().await;
    user(&app, "real@example.com", "viewer", &[]).await;
    let mut proven = false;
    for round in 0..5 {
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..60 {
            let http = app.http;
            burst.spawn(async move {
                let body =
                    json!({ "email": format!("sprayed{round}-{i}@example.com"), "password": "guess" })
                        .to_string();
                raw_request(
                    http,
                    "POST",
                    "/api/v1/auth/login",
                    &[("Content-Type", "application/json")],
                    &body,
                )
                .await
                .unwrap()
            });
        }
        let mut statuses = Vec::new();
        while let Some(r) = burst.join_next().await {
            let r = r.unwrap();
            if r.status == 429 {
                assert!(r.header("retry-after").is_some());
            } else {
                assert_eq!(r.status, 401, "{}", r.body);
            }
            statuses.push(r.status);
        }
        assert!(statuses.contains(&429), "the burst was throttled");
        // The real user from the sprayed address waits; from another address they log in.
        let here = login_from([127, 0, 0, 1], app.http, "real@example.com")
            .await
            .unwrap();
        if here != 429 {
            continue; // the address regained attempts in between (slow machine)
        }
        let elsewhere = login_from([127, 0, 0, 2], app.http, "real@example.com")
            .await
            .unwrap();
        assert_eq!(elsewhere, 200, "another address is not throttled");
        proven = true;
        break;
    }
    assert!(proven, "the spraying address was never refused");
    assert!(app.metric(THROTTLED).await.unwrap() >= 1.0);
    app.stop().await;
}

/// The page login refuses the same way and says how long to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_says_how_long_to_wait() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let mut b = Browser::new(&app);
    let mut throttled = None;
    for guess in 0..40 {
        let r = b
            .login_with("v@example.com", &format!("guess {guess}"))
            .await;
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("E-mail or password is wrong."));
    }
    let r = throttled.expect("the page login was throttled");
    let retry = r.header("retry-after").unwrap().to_owned();
    assert!(
        r.body.contains("Too many login attempts")
            && r.body.contains(&format!("Wait {retry} second")),
        "{}",
        r.body
    );
    // Still a login form, with its CSRF token.
    assert!(r.body.contains("name=\"csrf\""));
    assert!(app.metric(THROTTLED).await.unwrap() >= 1.0);
    app.stop().await;
}

// ---- 2. sessions -----------------------------------------------------------------------------

/// Logout ends that session on the server: its token stops working as a bearer token, as a
/// cookie and on the pages, while the user's other sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_everywhere_and_only_that_one() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let first = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    let second = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    assert_eq!(me(&app, &first, false).await, 200);
    assert_eq!(me(&app, &first, true).await, 200);
    let cookie = format!("headend_session={first}");
    assert_eq!(
        get_with(&app, "/", &[("Cookie", &cookie)]).await.status,
        200
    );

    let out = app
        .request("POST", "/api/v1/auth/logout", Some(&first), None)
        .await;
    assert_eq!(out.status, 204);
    let cleared = set_cookie(&out, "headend_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(me(&app, &first, false).await, 401, "a stolen copy is dead");
    assert_eq!(me(&app, &first, true).await, 401);
    let page = get_with(&app, "/", &[("Cookie", &cookie)]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    assert_eq!(me(&app, &second, false).await, 200, "other sessions go on");
    // Logging out again changes nothing.
    assert_eq!(
        app.request("POST", "/api/v1/auth/logout", Some(&first), None)
            .await
            .status,
        204
    );
    // A browser script logs out with the cookie alone.
    let third = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    let cookie = format!("headend_session={third}");
    let out = raw_request(
        app.http,
        "POST",
        "/api/v1/auth/logout",
        &[("Cookie", &cookie)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(out.status, 204);
    assert_eq!(me(&app, &third, true).await, 401);

    // The page logout too: a copy of the cookie taken before is refused after.
    let mut b = Browser::new(&app);
    b.login("v@example.com").await;
    let copied = b.cookie("headend_session").unwrap().to_owned();
    assert_eq!(b.get("/").await.status, 200);
    assert_eq!(b.logout().await.status, 303);
    let cookie = format!("headend_session={copied}");
    assert_eq!(
        get_with(&app, "/", &[("Cookie", &cookie)]).await.status,
        303
    );
    assert_eq!(me(&app, &copied, false).await, 401);
    assert_eq!(me(&app, &second, false).await, 200);
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        3
    );
    app.stop().await;
}

/// Resetting a password or disabling an account (API or admin page) ends every session of
/// the user; enabling the account again does not bring them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_or_disabling_ends_every_session_of_the_user() {
    let app = TestApp::spawn().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let id = user(&app, "v@example.com", "viewer", &[]).await;
    let api = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    let mut page = Browser::new(&app);
    page.login("v@example.com").await;
    assert_eq!(page.get("/").await.status, 200);

    let reset = app
        .request(
            "PATCH",
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({ "reset_password": true })),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let new_password = reset.json()["password"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &api, false).await, 401, "the API session ended");
    assert_eq!(page.get("/").await.status, 303, "the page session ended");
    assert_eq!(me(&app, &admin, false).await, 200, "others are untouched");

    // Disabled from the admin page: the session opened with the new password ends.
    let fresh = token_of(&api_login(&app, "v@example.com", &new_password).await);
    assert_eq!(me(&app, &fresh, false).await, 200);
    let mut admin_page = Browser::new(&app);
    admin_page.login("admin@example.com").await;
    let csrf = Browser::csrf_of(&admin_page.get("/admin").await);
    let r = admin_page
        .post(
            &format!("/admin/users/{id}/disabled"),
            &[("csrf", &csrf), ("disabled", "1")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(me(&app, &fresh, false).await, 401);
    let enable = app
        .request(
            "PATCH",
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({ "disabled": false })),
        )
        .await;
    assert_eq!(enable.status, 200, "{}", enable.body);
    assert_eq!(me(&app, &fresh, false).await, 401, "revoked stays revoked");
    assert_eq!(me(&app, &api, false).await, 401);
    let again = token_of(&api_login(&app, "v@example.com", &new_password).await);
    assert_eq!(me(&app, &again, false).await, 200);

    // The admin page's password reset ends the sessions too.
    let csrf = Browser::csrf_of(&admin_page.get("/admin").await);
    let r = admin_page
        .post(&format!("/admin/users/{id}/password"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(me(&app, &again, false).await, 401);
    app.stop().await;
}

/// A session past its expiry is refused even while its token's own expiry is ahead, and
/// expired rows are deleted at the next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused_and_cleaned_up_at_login() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let token = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    assert_eq!(me(&app, &token, false).await, 200);
    // Use is recorded, at most once a minute.
    sqlx::query("UPDATE sessions SET last_used_at = now() - interval '5 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(me(&app, &token, false).await, 200);
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE last_used_at > now() - interval '1 minute'")
            .await,
        1
    );
    sqlx::query(
        "UPDATE sessions SET created_at = now() - interval '13 hours',
                             expires_at = now() - interval '1 hour'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(me(&app, &token, false).await, 401);
    let next = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE expires_at < now()")
            .await,
        0,
        "the expired row was deleted"
    );
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 1);
    assert_eq!(me(&app, &next, false).await, 200);
    // Tokens are opaque to the client: one naming no session row is refused.
    sqlx::query("DELETE FROM sessions")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(me(&app, &next, false).await, 401);
    app.stop().await;
}

// ---- 3. CSRF -----------------------------------------------------------------------------------

/// Logging in on the page sets a new CSRF token: one an attacker planted (or read) before the
/// login is refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_login_rotates_the_csrf_token() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let planted = "0123456789abcdef0123456789abcdef";
    let mut b = Browser::new(&app);
    b.set("headend_csrf", planted);
    let form = b.get("/login").await;
    assert_eq!(Browser::csrf_of(&form), planted, "the form uses the cookie");
    let login = b
        .post(
            "/login",
            &[
                ("csrf", planted),
                ("email", "v@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(login.status, 303, "{}", login.body);
    let rotated = cookie_value(set_cookie(&login, "headend_csrf").expect("a new CSRF cookie"));
    assert_ne!(rotated, planted);
    assert!(rotated.len() == 32 && rotated.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(b.cookie("headend_csrf"), Some(rotated));
    // The planted token no longer matches; the page's new one does.
    assert_eq!(b.post("/logout", &[("csrf", planted)]).await.status, 403);
    let page = b.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(Browser::csrf_of(&page), rotated);
    assert_eq!(b.post("/logout", &[("csrf", rotated)]).await.status, 303);
    app.stop().await;
}

/// A state-changing form without the token, with a wrong one, or with the token but not the
/// cookie is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_forms_without_the_matching_csrf_token_change_nothing() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    let pw = app.gateway("SGCSRF", Some(site), None).await;
    let c = app.gateway_client("SGCSRF", &pw).await;
    c.publish("sg/SGCSRF/pub/bicom/ir", fixture("bicom-ir.json"))
        .await;
    app.wait_count("SELECT count(*) FROM relay_states", 1).await;
    let relay: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE kind = 'relay'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    user(&app, "op@example.com", "operator", &[site]).await;
    user(&app, "admin@example.com", "admin", &[]).await;
    let viewer = user(&app, "v@example.com", "viewer", &[site]).await;

    let mut op = Browser::new(&app);
    op.login("op@example.com").await;
    let csrf = Browser::csrf_of(&op.get("/").await);
    let command = format!("/relays/{relay}/command");
    let mut admin = Browser::new(&app);
    admin.login("admin@example.com").await;
    let admin_csrf = Browser::csrf_of(&admin.get("/admin").await);
    let disable = format!("/admin/users/{viewer}/disabled");
    let wrong = "ffffffffffffffffffffffffffffffff";
    for (what, form) in [
        ("no token", vec![("action", "off")]),
        ("empty token", vec![("csrf", ""), ("action", "off")]),
        ("wrong token", vec![("csrf", wrong), ("action", "off")]),
    ] {
        let r = op.post(&command, &form).await;
        assert!(matches!(r.status, 403 | 422), "{what}: {}", r.status);
    }
    for form in [
        vec![("disabled", "1")],
        vec![("csrf", wrong), ("disabled", "1")],
    ] {
        let r = admin.post(&disable, &form).await;
        assert!(matches!(r.status, 403 | 422), "{}", r.status);
    }
    // A cross-site form carries the session cookie (were SameSite not there) but cannot read
    // the CSRF cookie: the right token without its cookie is refused.
    let session = op.cookie("headend_session").unwrap().to_owned();
    let r = raw_request(
        app.http,
        "POST",
        &command,
        &[
            ("Cookie", &format!("headend_session={session}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}&action=off"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(app.count("SELECT count(*) FROM relay_commands").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE disabled").await,
        0
    );
    // With the token: done.
    let r = op
        .post(&command, &[("csrf", &csrf), ("action", "off")])
        .await;
    assert!(r.status < 400, "{}", r.body);
    assert_eq!(app.count("SELECT count(*) FROM relay_commands").await, 1);
    let r = admin
        .post(&disable, &[("csrf", &admin_csrf), ("disabled", "1")])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE disabled").await,
        1
    );
    drop(c);
    app.stop().await;
}

/// The session cookie reads the API but never writes through it: a state-changing API call
/// must carry the token in a header, which a cross-site form cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_the_session_cookie_for_writes() {
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    let viewer = user(&app, "v@example.com", "viewer", &[]).await;
    user(&app, "admin@example.com", "admin", &[]).await;
    let login = api_login(&app, "admin@example.com", PASSWORD).await;
    let session = cookie_value(set_cookie(&login, "headend_session").unwrap()).to_owned();
    let cookie = format!("headend_session={session}");
    assert_eq!(
        get_with(&app, "/api/v1/users", &[("Cookie", &cookie)])
            .await
            .status,
        200,
        "reads work with the cookie"
    );
    let writes = [
        (
            "POST",
            "/api/v1/sites".to_owned(),
            json!({ "name": "X", "timezone": "UTC" }),
        ),
        (
            "PATCH",
            format!("/api/v1/sites/{site}"),
            json!({ "name": "Renamed" }),
        ),
        ("DELETE", format!("/api/v1/sites/{site}"), Value::Null),
        (
            "PUT",
            format!("/api/v1/users/{viewer}/sites/{site}"),
            Value::Null,
        ),
        (
            "PATCH",
            format!("/api/v1/users/{viewer}"),
            json!({ "disabled": true }),
        ),
        (
            "POST",
            "/api/v1/users".to_owned(),
            json!({ "email": "new@example.com", "role": "admin" }),
        ),
        (
            "POST",
            "/api/v1/gateways".to_owned(),
            json!({ "serial": "SGNEW" }),
        ),
    ];
    for (method, path, body) in &writes {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let r = raw_request(
            app.http,
            method,
            path,
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            &body,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401, "{method} {path} with the cookie: {}", r.body);
    }
    assert_eq!(app.count("SELECT count(*) FROM sites").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM sites WHERE name = 'Plant'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM user_sites").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE disabled").await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM gateways").await, 0);
    app.stop().await;
}

// ---- 4. Secure cookies -------------------------------------------------------------------------

/// Behind a TLS-terminating proxy (`X-Forwarded-Proto: https`) every cookie is `Secure`; over
/// plain HTTP without `secure_cookies` none is (a browser would drop them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_an_https_proxy() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let https = [("X-Forwarded-Proto", "https")];

    let plain = get_with(&app, "/login", &[]).await;
    assert!(!is_secure(set_cookie(&plain, "headend_csrf").unwrap()));
    let login = api_login(&app, "v@example.com", PASSWORD).await;
    assert!(!is_secure(set_cookie(&login, "headend_session").unwrap()));

    let proxied = get_with(&app, "/login", &https).await;
    assert!(is_secure(set_cookie(&proxied, "headend_csrf").unwrap()));
    let login = api_login_with(&app, "v@example.com", PASSWORD, &https).await;
    let session = set_cookie(&login, "headend_session").unwrap();
    assert!(is_secure(session), "{session}");
    let token = token_of(&login);
    let out = raw_request(
        app.http,
        "POST",
        "/api/v1/auth/logout",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Forwarded-Proto", "https"),
        ],
        "",
    )
    .await
    .unwrap();
    assert!(is_secure(set_cookie(&out, "headend_session").unwrap()));

    let mut b = Browser::new(&app);
    b.extra.push(("X-Forwarded-Proto", "https"));
    let login = b.login("v@example.com").await;
    for name in ["headend_session", "headend_csrf"] {
        let c = set_cookie(&login, name).unwrap();
        assert!(is_secure(c) && c.contains("HttpOnly"), "{c}");
    }
    app.stop().await;
}

/// `http.secure_cookies` marks every cookie `Secure` whatever the request says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_setting_marks_every_cookie() {
    let app = TestApp::spawn_with(|c| c.http.secure_cookies = true).await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let form = get_with(&app, "/login", &[]).await;
    assert!(is_secure(set_cookie(&form, "headend_csrf").unwrap()));
    let login = api_login(&app, "v@example.com", PASSWORD).await;
    let session = set_cookie(&login, "headend_session").unwrap();
    assert!(is_secure(session), "{session}");
    assert_eq!(
        session.matches("Secure").count(),
        1,
        "marked once: {session}"
    );
    let mut b = Browser::new(&app);
    let login = b.login("v@example.com").await;
    assert!(is_secure(set_cookie(&login, "headend_csrf").unwrap()));
    assert!(is_secure(set_cookie(&login, "headend_session").unwrap()));
    app.stop().await;
}

// ---- 5. headers on every response --------------------------------------------------------------

/// API, pages, static files, redirects, errors and 404s all carry `nosniff`, a same-origin
/// referrer policy and a CSP that forbids framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    user(&app, "v@example.com", "viewer", &[]).await;
    let token = token_of(&api_login(&app, "v@example.com", PASSWORD).await);
    let bearer = format!("Bearer {token}");
    let session = format!("headend_session={token}");
    let json = ("Content-Type", "application/json");
    let cases: Vec<(&str, &str, Vec<(&str, &str)>, &str, u16)> = vec![
        ("GET", "/no/such/page", vec![], "", 404),
        ("GET", "/api/v1/no-such-route", vec![], "", 404),
        ("GET", "/api/v1/me", vec![], "", 401),
        (
            "GET",
            "/api/v1/me",
            vec![("Authorization", &bearer)],
            "",
            200,
        ),
        (
            "GET",
            "/api/v1/sites/not-a-number",
            vec![("Authorization", &bearer)],
            "",
            400,
        ),
        ("POST", "/api/v1/auth/login", vec![json], "{not json", 400),
        ("GET", "/api/v1/openapi.json", vec![], "", 200),
        ("GET", "/static/app.css", vec![], "", 200),
        ("GET", "/static/live.js", vec![], "", 200),
        ("GET", "/login", vec![], "", 200),
        ("GET", "/", vec![], "", 303),
        ("GET", "/", vec![("Cookie", &session)], "", 200),
        ("GET", "/sites/999999", vec![("Cookie", &session)], "", 404),
        (
            "GET",
            "/sites/not-a-number",
            vec![("Cookie", &session)],
            "",
            400,
        ),
        ("POST", "/logout", vec![("Cookie", &session)], "csrf=x", 403),
        ("GET", "/healthz", vec![], "", 200),
        ("GET", "/metrics", vec![], "", 401),
        ("DELETE", "/healthz", vec![], "", 405),
    ];
    for (method, path, headers, body, status) in &cases {
        let mut headers = headers.clone();
        if method == &"POST" && path == &"/logout" {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let r = raw_request(app.http, method, path, &headers, body)
            .await
            .unwrap();
        assert_eq!(r.status, *status, "{method} {path}: {}", r.body);
        let what = format!("{method} {path} ({})", r.status);
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{what}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"),
            "{what}: {csp:?}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    }
    app.stop().await;
}

// ---- 6. role and site scope ----------------------------------------------------------------------

/// Whether `v` holds an object of site `site` anywhere (`site_id` field).
fn mentions_site(v: &Value, site: i64) -> bool {
    match v {
        Value::Object(map) => {
            map.get("site_id").and_then(Value::as_i64) == Some(site)
                || map.values().any(|v| mentions_site(v, site))
        }
        Value::Array(items) => items.iter().any(|v| mentions_site(v, site)),
        _ => false,
    }
}

/// A viewer and an operator of site A, against every kind of site B's objects through the API:
/// reads are 404 (no existence leak), writes 403 or 404, lists leave them out, and nothing
/// changes; the same requests on site A's objects work, so the refusals are about the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_a_users_can_neither_see_nor_touch_site_b() {
    let app = TestApp::spawn().await;
    let a = app.site("Site A", "UTC").await;
    let b = app.site("Site B", "UTC").await;
    // Both registered before either publishes (ingest loads the registry when it starts).
    let passwords = [
        ("SGA", app.gateway("SGA", Some(a), None).await),
        ("SGB", app.gateway("SGB", Some(b), None).await),
    ];
    let mut clients = Vec::new();
    for (serial, pw) in &passwords {
        let mut c = app.gateway_client(serial, pw).await;
        let mut doc: Value =
            serde_json::from_slice(&fixture("measurements-rs485-manual.json")).unwrap();
        doc["header"]["serial_number"] = Value::from(format!("M-{serial}"));
        c.publish(
            &format!("sg/{serial}/pub/measurements/rs485/1"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .await;
        c.publish(
            &format!("sg/{serial}/pub/bicom/ir"),
            fixture("bicom-ir.json"),
        )
        .await;
        c.wait_acks(2).await;
        clients.push(c);
    }
    app.wait_count("SELECT count(*) FROM measurements", 2).await;
    app.wait_count("SELECT count(*) FROM relay_states", 2).await;
    let relay = |serial: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
                 WHERE g.serial = $1 AND d.kind = 'relay'",
            )
            .bind(serial)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (relay_a, relay_b) = (relay("SGA").await, relay("SGB").await);
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let viewer = app.user_token("viewer@example.com", "viewer", &[a]).await;
    let operator = app.user_token("op@example.com", "operator", &[a]).await;
    let viewer_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind("viewer@example.com")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // A command, an alarm rule and an alarm on each site.
    let mut command = std::collections::HashMap::new();
    let mut rule = std::collections::HashMap::new();
    let mut alarm = std::collections::HashMap::new();
    for (site, relay) in [(a, relay_a), (b, relay_b)] {
        let r = app
            .request(
                "POST",
                &format!("/api/v1/relays/{relay}/commands"),
                Some(&admin),
                Some(json!({ "action": "on" })),
            )
            .await;
        assert!(r.status < 300, "{}", r.body);
        command.insert(site, r.json()["id"].as_i64().unwrap());
        let r = app
            .request(
                "POST",
                "/api/v1/alarm-rules",
                Some(&admin),
                Some(json!({
                    "site_id": site, "name": "Low PF", "severity": "info", "target": "site",
                    "watch": {"kind": "measurement", "quantity": "pf"},
                    "condition": {"op": "below", "threshold": 0.9, "hysteresis": 0.02},
                })),
            )
            .await;
        assert!(r.status < 300, "{}", r.body);
        rule.insert(site, r.json()["id"].as_i64().unwrap());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alarms (rule_name, site_id, subject, severity, message, raised_at)
             VALUES ('planted', $1, 'test', 'warning', 'planted alarm', now()) RETURNING id",
        )
        .bind(site)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        alarm.insert(site, id);
    }
    let hash_b: String =
        sqlx::query_scalar("SELECT password_hash FROM gateways WHERE serial = 'SGB'")
            .fetch_one(&app.pool)
            .await
            .unwrap();

    // Reads: 404 on site B's objects, 200 on site A's, for both roles.
    let reads = |site: i64, serial: &str| {
        let (relay, command, rule, alarm) = (
            if site == a { relay_a } else { relay_b },
            command[&site],
            rule[&site],
            alarm[&site],
        );
        vec![
            format!("/api/v1/sites/{site}"),
            format!("/api/v1/sites/{site}/consumption?from=2026-01-01&to=2026-01-02"),
            format!("/api/v1/sites/{site}/panels"),
            format!("/api/v1/sites/{site}/circuits"),
            format!("/api/v1/sites/{site}/contracts"),
            format!("/api/v1/gateways/SG{serial}"),
            format!("/api/v1/devices/M-SG{serial}/latest"),
            format!("/api/v1/devices/M-SG{serial}/counters"),
            format!("/api/v1/relays/{relay}"),
            format!("/api/v1/relays/{relay}/commands"),
            format!("/api/v1/commands/{command}"),
            format!("/api/v1/alarms/{alarm}"),
            format!("/api/v1/alarm-rules/{rule}"),
            format!("/api/v1/export.csv?kind=daily&site={site}&from=2026-01-01&to=2026-01-02"),
            format!("/api/v1/export.csv?kind=measurements&meter=M-SG{serial}&from=2026-01-01&to=2026-01-02"),
        ]
    };
    for (who, token) in [("viewer", &viewer), ("operator", &operator)] {
        for (own, foreign) in reads(a, "A").iter().zip(reads(b, "B")) {
            let r = app.get(own, token).await;
            assert_eq!(r.status, 200, "{who} GET {own}: {}", r.body);
            let r = app.get(&foreign, token).await;
            assert_eq!(r.status, 404, "{who} GET {foreign}: {}", r.body);
            assert!(!r.body.contains("Site B") && !r.body.contains("M-SGB"));
        }
        for list in [
            "/api/v1/sites",
            "/api/v1/gateways",
            "/api/v1/devices",
            "/api/v1/relays",
            "/api/v1/alarms",
            "/api/v1/alarm-rules",
        ] {
            let r = app.get(list, token).await;
            assert_eq!(r.status, 200, "{who} GET {list}: {}", r.body);
            assert!(
                !r.body.contains("M-SGB")
                    && !r.body.contains("\"SGB\"")
                    && !r.body.contains("Site B"),
                "{who} GET {list}: {}",
                r.body
            );
            assert!(!mentions_site(&r.json(), b), "{who} GET {list}: {}", r.body);
        }
        let r = app
            .get(&format!("/api/v1/alarms/history.csv?site_id={b}"), token)
            .await;
        assert!(
            matches!(r.status, 403 | 404) || !r.body.contains("planted alarm"),
            "{who} alarm history of B: {}",
            r.body
        );
    }
    // The admin sees site B's objects: the 404s above are about scope, not existence.
    for path in reads(b, "B") {
        let r = app.get(&path, &admin).await;
        assert_eq!(r.status, 200, "admin GET {path}: {}", r.body);
    }

    // Writes on site B: refused (403 for the role, else 404 for the site).
    let rule_body = json!({
        "site_id": b, "name": "Hijacked", "severity": "critical", "target": "site",
        "watch": {"kind": "measurement", "quantity": "pf"},
        "condition": {"op": "below", "threshold": 0.5, "hysteresis": 0.02},
    });
    let writes: Vec<(&str, String, Value)> = vec![
        (
            "PATCH",
            format!("/api/v1/sites/{b}"),
            json!({ "name": "Hijacked" }),
        ),
        ("DELETE", format!("/api/v1/sites/{b}"), Value::Null),
        (
            "POST",
            format!("/api/v1/sites/{b}/panels"),
            json!({ "name": "P" }),
        ),
        (
            "PATCH",
            "/api/v1/gateways/SGB".into(),
            json!({ "site_id": a }),
        ),
        ("POST", "/api/v1/gateways/SGB/password".into(), Value::Null),
        ("PUT", "/api/v1/gateways/SGB/xml-push".into(), json!({})),
        (
            "PATCH",
            "/api/v1/devices/M-SGB".into(),
            json!({ "name": "Hijacked" }),
        ),
        (
            "PATCH",
            format!("/api/v1/relays/{relay_b}"),
            json!({ "min_switch_interval_s": 0 }),
        ),
        (
            "POST",
            format!("/api/v1/relays/{relay_b}/commands"),
            json!({ "action": "off" }),
        ),
        (
            "POST",
            format!("/api/v1/commands/{}/cancel", command[&b]),
            Value::Null,
        ),
        (
            "POST",
            format!("/api/v1/commands/{}/approve", command[&b]),
            Value::Null,
        ),
        (
            "POST",
            format!("/api/v1/alarms/{}/acknowledge", alarm[&b]),
            json!({}),
        ),
        (
            "POST",
            format!("/api/v1/alarms/{}/shelve", alarm[&b]),
            json!({ "minutes": 60 }),
        ),
        (
            "PUT",
            format!("/api/v1/alarm-rules/{}", rule[&b]),
            rule_body.clone(),
        ),
        (
            "DELETE",
            format!("/api/v1/alarm-rules/{}", rule[&b]),
            Value::Null,
        ),
        ("POST", "/api/v1/alarm-rules".into(), rule_body),
        (
            "PUT",
            format!("/api/v1/users/{viewer_id}/sites/{b}"),
            Value::Null,
        ),
        (
            "PATCH",
            format!("/api/v1/users/{viewer_id}"),
            json!({ "reset_password": true }),
        ),
        (
            "POST",
            "/api/v1/users".into(),
            json!({ "email": "x@example.com", "role": "admin" }),
        ),
    ];
    for (who, token) in [("viewer", &viewer), ("operator", &operator)] {
        for (method, path, body) in &writes {
            let body = (!body.is_null()).then(|| body.clone());
            let r = app.request(method, path, Some(token), body).await;
            assert!(
                matches!(r.status, 403 | 404),
                "{who} {method} {path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    // The operator's own site works: the refusals above are about site B.
    let r = app
        .request(
            "POST",
            &format!("/api/v1/alarms/{}/acknowledge", alarm[&a]),
            Some(&operator),
            Some(json!({})),
        )
        .await;
    assert!(r.status < 300, "{}", r.body);
    let r = app
        .request(
            "POST",
            &format!("/api/v1/relays/{relay_a}/commands"),
            Some(&operator),
            Some(json!({ "action": "off" })),
        )
        .await;
    // Past role and site: the ledger's own rules answer (the admin's command is in flight).
    assert!(
        r.status < 300 || (r.status == 409 && r.body.contains("in flight")),
        "{}",
        r.body
    );

    // Nothing of site B changed.
    let one = |sql: &'static str| {
        let app = &app;
        async move { app.count(sql).await }
    };
    assert_eq!(
        one("SELECT count(*) FROM sites WHERE name = 'Site B'").await,
        1
    );
    assert_eq!(one("SELECT count(*) FROM panels").await, 0);
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT site_id FROM gateways WHERE serial = 'SGB'")
            .fetch_one(&app.pool)
            .await
            .unwrap(),
        b
    );
    assert_eq!(
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM gateways WHERE serial = 'SGB'")
            .fetch_one(&app.pool)
            .await
            .unwrap(),
        hash_b
    );
    let b_commands: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT status, approved_by FROM relay_commands WHERE device_id = $1")
            .bind(relay_b)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(b_commands.len(), 1, "no command was added on site B");
    assert_ne!(b_commands[0].0, "cancelled");
    assert_eq!(b_commands[0].1, None);
    let (acked, shelved): (bool, bool) = sqlx::query_as(
        "SELECT acked_at IS NOT NULL, shelved_until IS NOT NULL FROM alarms WHERE id = $1",
    )
    .bind(alarm[&b])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!acked && !shelved);
    assert_eq!(
        one("SELECT count(*) FROM alarm_rules WHERE name = 'Low PF'").await,
        2
    );
    assert_eq!(one("SELECT count(*) FROM alarm_rules").await, 2);
    assert_eq!(one("SELECT count(*) FROM user_sites").await, 2);
    assert_eq!(one("SELECT count(*) FROM users").await, 3);
    drop(clients);
    app.stop().await;
}
