//! Headend in a real headless browser (Debian's Chromium through chromedriver).

use std::time::Instant;

use headend_e2e::browser::Browser;
use headend_e2e::TestApp;

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
#[ignore = "waits for the dashboard pages"]
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
