//! Screenshots of a running Headend (normally the demo) for the README: the overview, a site,
//! a meter and the alarms page, at desktop and phone sizes, in light and dark mode where asked.
//!
//! `bash deploy/screenshots.sh` starts the demo and runs this; by hand:
//! `cargo run -p headend-e2e --example screenshots -- http://127.0.0.1:8080 admin@demo.local
//! <password> docs/screenshots`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use headend_e2e::browser::{Browser, DESKTOP, PHONE};

/// The pages pictured: file stem, how to reach it.
enum Target {
    Path(&'static str),
    /// The first site in the overview.
    FirstSite,
    /// The first meter placed on a circuit of the first site.
    FirstMeter,
}

const SHOTS: [(&str, Target); 4] = [
    ("overview", Target::Path("/")),
    ("site", Target::FirstSite),
    ("meter", Target::FirstMeter),
    ("alarms", Target::Path("/alarms")),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, email, password, out] = args.as_slice() else {
        bail!("usage: screenshots <base URL> <email> <password> <output directory>");
    };
    let base = base.trim_end_matches('/');
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;

    let browser = Browser::try_start().await?;
    let result = shoot(&browser, base, email, password, &out).await;
    browser.close().await?;
    result
}

async fn shoot(
    browser: &Browser,
    base: &str,
    email: &str,
    password: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    browser.goto(&format!("{base}/login")).await?;
    browser.fill("input[name=email]", email).await?;
    browser.fill("input[name=password]", password).await?;
    browser.click("button[type=submit]").await?;
    browser.wait_for_path("/").await?;

    let site = first_href(browser, &format!("{base}/"), "a[href^='/sites/']").await?;
    let meter = first_href(
        browser,
        &format!("{base}{site}"),
        "#tree a[href^='/meters/']",
    )
    .await?;

    accounted(browser, base, &site).await?;

    for (size_name, size) in [("desktop", DESKTOP), ("phone", PHONE)] {
        browser.resize(size).await?;
        for (stem, target) in &SHOTS {
            let path = match target {
                Target::Path(p) => (*p).to_owned(),
                Target::FirstSite => site.clone(),
                Target::FirstMeter => meter.clone(),
            };
            browser.goto(&format!("{base}{path}")).await?;
            if *stem == "alarms" {
                alarm_raised(browser, &format!("{base}{path}")).await?;
            }
            settle(browser).await?;
            let file = out.join(format!("{stem}-{size_name}.png"));
            browser.screenshot(&file).await?;
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}

/// Waits until the demo has accounted its year of history (it does so in the background after
/// it starts): last month's days of the site are complete.
async fn accounted(browser: &Browser, base: &str, site: &str) -> anyhow::Result<()> {
    use chrono::{Datelike, Months, Utc};
    let last_month = (Utc::now().date_naive().with_day(1))
        .and_then(|d| d.checked_sub_months(Months::new(1)))
        .context("a date")?;
    let page = format!("{base}{site}?by=day&date={last_month}");
    let started = std::time::Instant::now();
    loop {
        browser.goto(&page).await?;
        let complete = browser.text("#total-complete").await.unwrap_or_default();
        if complete.starts_with("100.0") {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(600) {
            bail!("the demo's history is not accounted after 10 minutes ({complete})");
        }
        // Polling a page that the demo fills in the background: nothing to wait on but time.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Waits until the demo's alarm rule has raised its alarm (within a minute or two of the first
/// live readings), so the alarms picture shows one.
async fn alarm_raised(browser: &Browser, page: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while browser.count("#alarms tr").await.unwrap_or(0) < 2 {
        if started.elapsed() > std::time::Duration::from_secs(300) {
            bail!("no alarm raised on {page} after 5 minutes");
        }
        // The alarm comes from live data: nothing to wait on but time.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        browser.goto(page).await?;
    }
    Ok(())
}

/// The `href` of the first element matching `css` on `page`.
async fn first_href(browser: &Browser, page: &str, css: &str) -> anyhow::Result<String> {
    browser.goto(page).await?;
    browser.wait_for(css).await?;
    browser
        .attr(css, "href")
        .await?
        .with_context(|| format!("no {css} on {page}"))
}

/// Waits until every chart of the page has been drawn by its script (or the page has none),
/// and the fonts are loaded, so the picture shows the page as a person sees it.
async fn settle(browser: &Browser) -> anyhow::Result<()> {
    browser
        .wait_for_js(
            "const charts = document.querySelectorAll('figure.chart');
             const live = document.querySelectorAll('figure.chart.chart-live');
             return document.readyState === 'complete' && document.fonts.status === 'loaded'
                 && (charts.length === live.length || typeof uPlot === 'undefined') ? true : null;",
        )
        .await?;
    Ok(())
}
