//! The pages in a real headless browser, at desktop and phone sizes: one module per part of
//! the product.

mod charts;
mod forms;
mod layout;
mod meter;
mod overview;

use headend_e2e::browser::Browser;

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
