//! The interactive charts (uPlot, `static/charts.js`) over the server's SVG: the chart becomes
//! live with the SVG kept for print and no-JS, a hover (mouse) or a tap (touch) shows the value
//! with its unit, the interval and the quality, the previous period is drawn beside, and the
//! power graph zooms by dragging and resets with its button or a double click; at desktop and
//! phone sizes. The page's CSP forbids inline scripts, so a live chart also proves that
//! `charts.js` and the vendored uPlot load from the origin and that the JSON data block parses.

use chrono::TimeZone;
use headend_e2e::browser::{Browser, DESKTOP, PHONE};
use headend_e2e::TestApp;
use serde_json::Value;

use crate::ui::{fits, log_in};

/// Counter documents of `serial` every quarter-hour from `start` for `quarters` quarters,
/// `first_kwh` at the start and 1 kWh more each quarter, without the readings at `skip`.
fn quarter_readings(
    serial: &str,
    start: chrono::DateTime<chrono::Utc>,
    quarters: i64,
    first_kwh: i64,
    skip: &[i64],
) -> Vec<String> {
    let tz = chrono_tz::Europe::Ljubljana;
    (0..=quarters)
        .filter(|q| !skip.contains(q))
        .map(|q| {
            let t = (start + chrono::Duration::minutes(15 * q)).with_timezone(&tz);
            serde_json::json!({
                "header": { "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": serial,
                    "local_time": t.format("%d.%m.%Y %H:%M:%S").to_string(),
                    "resetable_counters": 0, "non_resetable_counters": 1 },
                "counters": { "counter1nr": format!("{}.000 kWh", first_kwh + q) }
            })
            .to_string()
        })
        .collect()
}

/// A site in Ljubljana with the IR meter `X0000124`: all of Tue 3 March 2026 (96 kWh) and
/// Wed 4 March until 06:00 without the 03:00 reading (estimated quarters around it, the rest
/// of the day missing); a second meter with 8 kWh on 3 February, the previous period.
async fn seeded() -> (TestApp, Browser, String, i64) {
    let (app, browser) = tokio::join!(TestApp::spawn(), Browser::start());
    let base = format!("http://{}", app.http);
    let tz = chrono_tz::Europe::Ljubljana;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let password = app.gateway("SG000017", Some(site), None).await;
    app.user_token("viewer@example.com", "viewer", &[site])
        .await;
    let mut client = app.gateway_client("SG000017", &password).await;
    let day = |m, d| {
        tz.with_ymd_and_hms(2026, m, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let march = quarter_readings("X0000124", day(3, 3), 120, 1000, &[108]);
    let february = quarter_readings("X0000125", day(2, 3), 8, 50, &[]);
    let sent = march.len() + february.len();
    for doc in march {
        client.publish("sg/SG000017/pub/counters/ir", doc).await;
    }
    for doc in february {
        client
            .publish("sg/SG000017/pub/counters/rs485/2", doc)
            .await;
    }
    client.wait_acks(sent).await;
    // The profile worker has computed the quarters and the days.
    let ready = headend_e2e::eventually(std::time::Duration::from_secs(60), || async {
        let intervals = app.count("SELECT count(*) FROM energy_intervals").await;
        let dirty = app.count("SELECT count(*) FROM energy_dirty").await;
        let days = app.count("SELECT count(*) FROM energy_days").await;
        (intervals >= 96 + 24 && dirty == 0 && days >= 3).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the profile worker did not finish");
    log_in(&browser, &base, "viewer@example.com").await;
    (app, browser, base, site)
}

/// JavaScript helpers for the checks, prepended to each script: the live chart of the figure
/// around the SVG `#id`, its data block, and pointer events on the chart's plot area.
const HELPERS: &str = r#"
const fig = (id) => document.getElementById(id).closest('figure.chart');
const chartOf = (id) => fig(id).__chart;
const dataOf = (id) => JSON.parse(fig(id).querySelector('script.chart-data').textContent);
const tipOf = (id) => fig(id).querySelector('.chart-tip');
const pointAt = (id, i) => {
  const u = chartOf(id);
  const r = u.over.getBoundingClientRect();
  return { u, x: r.left + u.valToPos(i, 'x'), y: r.top + r.height * 0.8 };
};
// uPlot ignores a move without movement while a button is down (a Chrome quirk): say it moved.
const mouse = (target, type, x, y) => target.dispatchEvent(new MouseEvent(type,
  { clientX: x, clientY: y, bubbles: true, cancelable: true, view: window, button: 0,
    buttons: type === 'mouseup' ? 0 : 1, movementX: type === 'mousemove' ? 5 : 0 }));
const hover = (id, i) => {
  const p = pointAt(id, i);
  mouse(p.u.over, 'mouseenter', p.x, p.y);
  mouse(p.u.over, 'mousemove', p.x, p.y);
};
const tap = (id, i) => {
  const p = pointAt(id, i);
  if (typeof Touch !== 'function' || typeof TouchEvent !== 'function') return 'no touch events';
  const t = new Touch({ identifier: 1, target: p.u.over, clientX: p.x, clientY: p.y });
  const init = { touches: [t], targetTouches: [t], changedTouches: [t], bubbles: true, cancelable: true };
  p.u.over.dispatchEvent(new TouchEvent('touchstart', init));
  p.u.over.dispatchEvent(new TouchEvent('touchmove', init));
  return 'touch';
};
const tipText = (id) => {
  const tip = tipOf(id);
  return tip && getComputedStyle(tip).display !== 'none' ? tip.textContent : '';
};
"#;

async fn js(browser: &Browser, body: &str) -> Value {
    browser
        .execute(&format!("{HELPERS}\n{body}"))
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"))
}

async fn wait_js(browser: &Browser, body: &str) -> Value {
    browser
        .wait_for_js(&format!(
            "{HELPERS}\ntry {{ {body} }} catch (e) {{ return null; }}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"))
}

/// The chart around SVG `#id` became live: a uPlot canvas in the figure, the SVG still there
/// (for print), the data block parsed, the figure labelled.
async fn assert_live(browser: &Browser, id: &str) -> Value {
    wait_js(
        browser,
        &format!("return fig('{id}').classList.contains('chart-live') && !!chartOf('{id}')"),
    )
    .await;
    let state = js(
        browser,
        &format!(
            "const f = fig('{id}');
             return {{
               canvas: f.querySelectorAll('.uplot canvas').length,
               svg: f.querySelectorAll('svg#{id}').length,
               label: f.getAttribute('aria-label'),
               role: tipOf('{id}').getAttribute('role'),
               width: chartOf('{id}').width,
               figure: f.clientWidth,
               series: chartOf('{id}').series.length,
               data: dataOf('{id}'),
             }};"
        ),
    )
    .await;
    assert_eq!(state["canvas"], 1, "{id}: {state}");
    assert_eq!(state["svg"], 1, "{id}: the SVG stays for print: {state}");
    assert!(
        state["label"].as_str().is_some_and(|l| !l.is_empty()),
        "{state}"
    );
    assert_eq!(state["role"], "status", "{state}");
    assert!(
        state["width"].as_i64().unwrap() <= state["figure"].as_i64().unwrap(),
        "{id}: the chart fits its figure: {state}"
    );
    state
}

/// Every chart of the page with something to show became live (bars, power and shares).
async fn all_live(browser: &Browser) {
    let kinds = wait_js(
        browser,
        "const figs = [...document.querySelectorAll('figure.chart')];
         const shown = figs.filter(f => JSON.parse(f.querySelector('script.chart-data').textContent).x.length > 0);
         return shown.length > 0 && shown.every(f => f.classList.contains('chart-live') && f.__chart)
           && shown.map(f => f.dataset.chart)",
    )
    .await;
    assert!(kinds.as_array().is_some_and(|k| !k.is_empty()), "{kinds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_bars_show_value_interval_and_quality_on_hover_and_tap() {
    let (app, browser, base, site) = seeded().await;
    for (size, name) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        if size == PHONE {
            // The live chart follows the window: narrower without a reload.
            browser.resize(size).await.unwrap();
            wait_js(
                &browser,
                "const u = chartOf('energy-chart'); return u.width < 500 && u.width <= fig('energy-chart').clientWidth",
            )
            .await;
        }
        browser.resize(size).await.unwrap();
        browser
            .goto(&format!("{base}/sites/{site}?by=day&date=2026-03-03"))
            .await
            .unwrap();
        let state = assert_live(&browser, "energy-chart").await;
        all_live(&browser).await;
        let data = &state["data"];
        assert_eq!(data["unit"], "kWh", "{data}");
        assert_eq!(data["x"].as_array().unwrap().len(), 31, "{data}");
        // The previous period is a series of its own, beside the current one.
        let previous = &data["series"][0];
        let current = &data["series"][1];
        assert_eq!(previous["role"], "previous");
        assert_eq!(previous["values"][2], 8.0, "{data}");
        assert_eq!(current["values"][2], 96.0, "{data}");
        // All 96 quarters of the 3rd are measured; the page may still call the day incomplete
        // (its own rule), and the tooltip says what the page says.
        let quality = current["quality"][2].as_str().unwrap().to_owned();
        assert!(
            ["measured", "incomplete"].contains(&quality.as_str()),
            "{data}"
        );
        assert_eq!(previous["quality"][2], "measured", "{data}");
        assert_eq!(current["quality"][3], "incomplete", "{data}");
        assert_eq!(current["quality"][10], "missing", "{data}");
        assert!(state["series"].as_i64().unwrap() >= 3, "{state}");

        // The 3rd: this period's and the previous period's values, units, intervals, quality.
        let how = if size == PHONE {
            js(&browser, "return tap('energy-chart', 2)").await
        } else {
            js(&browser, "hover('energy-chart', 2); return 'mouse'").await
        };
        // On the phone a tap (Chromium has touch events even without a touch screen).
        assert_eq!(how, if size == PHONE { "touch" } else { "mouse" });
        let tip = wait_js(&browser, "return tipText('energy-chart')").await;
        let tip = tip.as_str().unwrap();
        let interval = current["intervals"][2].as_str().unwrap();
        assert!(!interval.is_empty(), "{data}");
        assert!(tip.contains(interval), "{name} ({how}): {tip}");
        assert!(
            tip.contains(&format!("96.0 kWh ({quality})")),
            "{name}: {tip}"
        );
        assert!(
            tip.contains("8.00 kWh"),
            "{name}: the previous period: {tip}"
        );
        assert!(
            tip.contains(previous["intervals"][2].as_str().unwrap()),
            "{name}: {tip}"
        );

        // The 4th: incomplete; the 11th: no value at all.
        js(&browser, "hover('energy-chart', 3)").await;
        let tip = wait_js(
            &browser,
            "const t = tipText('energy-chart'); return t.includes('(incomplete)') && t",
        )
        .await;
        assert!(tip.as_str().unwrap().contains("kWh"), "{name}: {tip}");
        js(&browser, "hover('energy-chart', 10)").await;
        let tip = wait_js(
            &browser,
            "const t = tipText('energy-chart'); return t.includes('no value') && t",
        )
        .await;
        assert!(tip.as_str().unwrap().contains("11"), "{name}: {tip}");
        // Leaving the chart hides the tooltip.
        js(
            &browser,
            "const u = chartOf('energy-chart'); u.over.dispatchEvent(new MouseEvent('mouseleave', { bubbles: false }));",
        )
        .await;
        wait_js(&browser, "return tipText('energy-chart') === ''").await;

        // The no-JS fallback says the same in its titles.
        let titles = js(
            &browser,
            "return [...document.querySelectorAll('#energy-chart title')].map(t => t.textContent)",
        )
        .await;
        let titles = titles.to_string();
        assert!(
            titles.contains(&format!("96.0 kWh ({quality})")),
            "{titles}"
        );
        assert!(
            titles.contains("Previous period") && titles.contains("8.00 kWh (measured)"),
            "{titles}"
        );
        fits(&browser, name).await;
    }
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_graph_tooltip_zoom_and_reset() {
    let (app, browser, base, _site) = seeded().await;
    for (size, name) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await.unwrap();
        browser
            .goto(&format!(
                "{base}/meters/X0000124?from=2026-03-04&to=2026-03-05"
            ))
            .await
            .unwrap();
        let state = assert_live(&browser, "power-chart").await;
        all_live(&browser).await;
        let data = &state["data"];
        let series = &data["series"][0];
        assert_eq!(data["unit"], "kW", "{data}");
        assert_eq!(data["x"].as_array().unwrap().len(), 96, "{data}");
        // The x values are the quarters' start in epoch seconds: 4 March 2026 00:00 CET.
        assert_eq!(data["x"][0], 1_772_578_800, "{data}");
        assert_eq!(series["values"][0], 4.0, "{data}");
        assert_eq!(series["quality"][0], "measured", "{data}");
        assert_eq!(series["quality"][50], "missing", "{data}");

        // The first quarter: 4 kW, measured, with its interval in the site's zone.
        if size == PHONE {
            let how = js(&browser, "return tap('power-chart', 0)").await;
            assert_eq!(how, "touch");
        } else {
            js(&browser, "hover('power-chart', 0)").await;
        }
        let tip = wait_js(&browser, "return tipText('power-chart')").await;
        let tip = tip.as_str().unwrap();
        assert!(
            tip.contains("Wed 4 Mar 2026 00:00–00:15 CET"),
            "{name}: {tip}"
        );
        assert!(tip.contains("4.00 kW (measured)"), "{name}: {tip}");
        // Around the missing 03:00 reading: estimated quarters, if the engine interpolated.
        let estimated = series["quality"]
            .as_array()
            .unwrap()
            .iter()
            .position(|q| q == "estimated");
        if let Some(i) = estimated {
            js(&browser, &format!("hover('power-chart', {i})")).await;
            wait_js(
                &browser,
                "return tipText('power-chart').includes('(estimated)')",
            )
            .await;
        }
        js(&browser, "hover('power-chart', 50)").await;
        let tip = wait_js(
            &browser,
            "const t = tipText('power-chart'); return t.includes('(missing)') && t",
        )
        .await;
        assert!(tip.as_str().unwrap().contains("12:30–12:45 CET"), "{tip}");

        // Not zoomed: no reset button.
        assert_eq!(
            js(
                &browser,
                "return fig('power-chart').querySelector('.chart-reset').hidden"
            )
            .await,
            true
        );
        // Drag from the 8th to the 24th quarter: zoomed in on x, the button shows.
        js(
            &browser,
            "const a = pointAt('power-chart', 8), b = pointAt('power-chart', 24);
             mouse(a.u.over, 'mousedown', a.x, a.y);
             mouse(a.u.over, 'mousemove', (a.x + b.x) / 2, a.y);
             mouse(a.u.over, 'mousemove', b.x, a.y);
             mouse(a.u.over, 'mouseup', b.x, a.y);",
        )
        .await;
        let zoomed = wait_js(
            &browser,
            "const s = chartOf('power-chart').scales.x; return s.max - s.min < 30 && [s.min, s.max]",
        )
        .await;
        let (min, max) = (zoomed[0].as_f64().unwrap(), zoomed[1].as_f64().unwrap());
        assert!(
            (6.0..=10.0).contains(&min) && (22.0..=26.0).contains(&max),
            "{name}: {zoomed}"
        );
        wait_js(
            &browser,
            "return !fig('power-chart').querySelector('.chart-reset').hidden",
        )
        .await;
        browser.click("figure.chart .chart-reset").await.unwrap();
        let full = wait_js(
            &browser,
            "const s = chartOf('power-chart').scales.x; return s.min <= 0 && s.max >= 95 && [s.min, s.max]",
        )
        .await;
        assert_eq!(full, serde_json::json!([-0.5, 95.5]), "{name}");
        wait_js(
            &browser,
            "return fig('power-chart').querySelector('.chart-reset').hidden",
        )
        .await;

        // Zoomed through the test hook, a double click resets too.
        js(
            &browser,
            "chartOf('power-chart').setScale('x', { min: 40, max: 60 })",
        )
        .await;
        wait_js(
            &browser,
            "return !fig('power-chart').querySelector('.chart-reset').hidden",
        )
        .await;
        js(
            &browser,
            "const p = pointAt('power-chart', 50); mouse(p.u.over, 'dblclick', p.x, p.y);",
        )
        .await;
        wait_js(
            &browser,
            "const s = chartOf('power-chart').scales.x; return s.min === -0.5 && s.max === 95.5",
        )
        .await;
        wait_js(
            &browser,
            "return fig('power-chart').querySelector('.chart-reset').hidden",
        )
        .await;
        fits(&browser, name).await;
    }
    browser.close().await.unwrap();
    app.stop().await;
}

/// The vendored files are served from the origin, with their types and a cache lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_assets_are_served_from_the_origin() {
    let app = TestApp::spawn().await;
    for (path, kind, needle) in [
        (
            "/static/vendor/uplot/uPlot.iife.min.js",
            "text/javascript",
            "uPlot",
        ),
        ("/static/vendor/uplot/uPlot.min.css", "text/css", ".uplot"),
        ("/static/charts.js", "text/javascript", "figure.chart"),
    ] {
        let r = app.request("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(kind)),
            "{path}: {:?}",
            r.header("content-type")
        );
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=3600"),
            "{path}"
        );
        assert!(r.body.contains(needle), "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    app.stop().await;
}
