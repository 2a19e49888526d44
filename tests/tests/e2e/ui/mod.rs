//! The pages in a real headless browser, at desktop and phone sizes: one module per part of
//! the product.

mod charts;
mod forms;
mod layout;
mod meter;
mod overview;

use headend_e2e::browser::Browser;
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
