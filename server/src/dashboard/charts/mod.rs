//! Charts as server-rendered SVG: axes, units and local-time labels, readable when printed,
//! and the same numbers as the API and the CSV (they are drawn from the same queries).
//!
//! Every chart is a `<figure class="chart" data-chart="bars|power|share">` holding the SVG (the
//! no-JavaScript and print rendering, with a `<title>` per bar that browsers show on hover) and
//! a `<script type="application/json" class="chart-data">` block with the same numbers, which
//! `static/charts.js` turns into an interactive uPlot chart (tooltips, zoom). A JSON block is
//! data, not script, so the strict CSP allows it.
//!
//! This module holds what every chart shares (escaping, axes, units, tooltip texts, the JSON
//! block and the figure); `bars` (bars beside the period before), `graph` (the power graph of
//! quarter-hours) and `share` (energy by circuit or usage) draw one kind each.

use std::fmt::Write;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::Period;
use serde_json::Value;

use super::units::common_unit;

mod bars;
mod graph;
mod share;

pub use bars::{bar_chart, Bar};
pub use graph::{power_graph, PowerPoint};
pub use share::share_chart;
/// Escapes text for SVG/HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" axis maximum (1, 2, 2.5, 5 × 10^n) at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * base >= v {
            return m * base;
        }
    }
    10.0 * base
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// How a point's value came about, as the tooltip and the SVG title say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// From readings at both ends of the interval.
    Measured,
    /// Interpolated over a gap in the readings or a meter exchange.
    Estimated,
    /// A period with some quarter-hours estimated or missing (or still to come).
    Incomplete,
    /// No value.
    Missing,
    /// No value yet: the period has not begun (the rest of this month, of this year).
    Upcoming,
}

impl Quality {
    pub fn text(self) -> &'static str {
        match self {
            Quality::Measured => "measured",
            Quality::Estimated => "estimated",
            Quality::Incomplete => "incomplete",
            Quality::Missing => "missing",
            Quality::Upcoming => "still to come",
        }
    }
}

impl From<headend_energy::engine::Quality> for Quality {
    fn from(q: headend_energy::engine::Quality) -> Self {
        use headend_energy::engine::Quality as Q;
        match q {
            Q::Measured => Quality::Measured,
            Q::Estimated => Quality::Estimated,
            Q::Missing => Quality::Missing,
        }
    }
}

/// A calendar period as a tooltip says it: "Tue 3 Mar 2026", "March 2026", "2026".
pub fn period_text(start: NaiveDate, by: Period) -> String {
    match by {
        Period::Day => start.format("%a %-d %b %Y").to_string(),
        Period::Month => start.format("%B %Y").to_string(),
        Period::Year => start.format("%Y").to_string(),
    }
}

/// A quarter-hour in the site's zone: "Tue 3 Mar 2026 14:15–14:30 CET" (both zone
/// abbreviations when it spans a DST change: "Sun 29 Mar 2026 01:45 CET–03:00 CEST").
pub fn quarter_text(start: DateTime<Utc>, tz: Tz) -> String {
    let a = start.with_timezone(&tz);
    let b = (start + chrono::Duration::minutes(15)).with_timezone(&tz);
    let (za, zb) = (a.format("%Z").to_string(), b.format("%Z").to_string());
    if za == zb {
        format!(
            "{}–{} {za}",
            a.format("%a %-d %b %Y %H:%M"),
            b.format("%H:%M")
        )
    } else {
        format!(
            "{} {za}–{} {zb}",
            a.format("%a %-d %b %Y %H:%M"),
            b.format("%H:%M")
        )
    }
}

const W: f64 = 900.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 48.0;
const TOP: f64 = 16.0;

fn frame(out: &mut String, max: f64, unit: &str) {
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{W}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        out,
        r##"<text x="12" y="{:.1}" class="axis" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"##,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        esc(unit)
    );
}

/// The unit a chart shows its values in, and the divisor from the unit they are given in:
/// kWh and kW are scaled to the unit of the largest value (MWh, W...); others (a currency) stay.
fn chart_unit(unit: &str, values: impl IntoIterator<Item = f64>) -> (String, f64) {
    match unit {
        "kWh" => {
            let (u, d) = common_unit(values, false);
            (u.to_owned(), d)
        }
        "kW" => {
            let (u, d) = common_unit(values, true);
            (u.to_owned(), d)
        }
        other => (other.to_owned(), 1.0),
    }
}

/// Rounds a value for the JSON (and `data-value`) to what a person can read, without the
/// float noise of the division (12 significant digits).
fn tidy(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = v.abs().log10().floor() as i32;
    let factor = 10f64.powi(11 - mag);
    if factor.is_finite() && factor > 0.0 {
        (v * factor).round() / factor
    } else {
        v
    }
}

/// The JSON data block for `charts.js`, safe inside HTML: no `<`, `>` or `&` can end the
/// element or start markup (they are written as `\u003c`... which JSON.parse reads back).
pub fn json_block(data: &Value) -> String {
    let text = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(r#"<script type="application/json" class="chart-data">"#);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push_str("</script>");
    out
}

/// The figure around a chart: the SVG fallback and the data for the interactive chart.
fn figure(kind: &str, title: &str, svg: &str, data: &Value) -> String {
    format!(
        r#"<figure class="chart" data-chart="{kind}" aria-label="{}">{svg}{}</figure>"#,
        esc(title),
        json_block(data)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_points_counted() {
        let svg = bar_chart(
            "c",
            "<t>",
            "kWh",
            &[
                Bar {
                    label: "<script>".into(),
                    value: Some(1.0),
                    previous: Some(2.0),
                    incomplete: false,
                    title: "a&b".into(),
                    ..Bar::default()
                },
                Bar {
                    label: "x".into(),
                    value: None,
                    previous: None,
                    incomplete: false,
                    title: String::new(),
                    ..Bar::default()
                },
            ],
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains(r#"data-points="1""#));
        assert!(svg.contains(r#"data-bars="2""#));
    }

    #[test]
    fn share_rows_are_escaped_and_scaled() {
        let svg = share_chart(
            "s",
            "By circuit",
            "kWh",
            &[("<b>Lights</b>".into(), 5.0), ("Rest".into(), -0.1)],
        );
        assert!(!svg.contains("<b>"));
        assert!(svg.contains(r#"data-bars="2""#));
        // 5 kWh on an axis of 5: the whole bar width; the negative remainder: none.
        assert!(svg.contains(r#"width="490.0" height="18.2" class="bar" data-value="5""#));
        assert!(svg.contains(r#"width="0.0""#));
    }

    #[test]
    fn nice_axis() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2.2), 2.5);
    }

    #[test]
    fn json_block_cannot_be_ended_by_a_label() {
        let html = bar_chart(
            "c",
            "</script><script>alert(1)</script>",
            "kWh",
            &[Bar {
                label: "</SCRIPT><!--".into(),
                value: Some(1.5),
                interval: "a & b > c".into(),
                ..Bar::default()
            }],
        );
        let start = html
            .find(r#"<script type="application/json" class="chart-data">"#)
            .unwrap();
        let block = &html[start..];
        // The block ends at its own closing tag, which is the only one in the whole output.
        let body_end = block.find("</script>").unwrap();
        assert_eq!(
            body_end + "</script>".len(),
            block.len() - "</figure>".len()
        );
        assert_eq!(html.matches("</script>").count(), 1);
        assert_eq!(html.to_ascii_lowercase().matches("<script").count(), 1);
        let json = &block[block.find('>').unwrap() + 1..body_end];
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        let data: Value = serde_json::from_str(json).unwrap();
        assert_eq!(data["title"], "</script><script>alert(1)</script>");
        assert_eq!(data["x"][0], "</SCRIPT><!--");
        assert_eq!(data["series"][1]["values"][0], 1.5);
        assert_eq!(data["series"][1]["intervals"][0], "a & b > c");
        assert_eq!(data["series"][1]["quality"][0], "measured");
        assert!(html
            .starts_with(r#"<figure class="chart" data-chart="bars" aria-label="&lt;/script&gt;"#));
    }

    #[test]
    fn a_chart_shows_one_unit_chosen_for_its_largest_value() {
        let bars = [
            Bar {
                label: "1".into(),
                value: Some(12_000.0),
                previous: Some(500.0),
                incomplete: true,
                interval: "March 2026".into(),
                ..Bar::default()
            },
            Bar {
                label: "2".into(),
                ..Bar::default()
            },
        ];
        let html = bar_chart("e", "Energy", "kWh", &bars);
        assert!(html.contains(r#"data-value="12""#), "{html}");
        assert!(
            html.contains("<title>March 2026: 12.0 MWh (incomplete)</title>"),
            "{html}"
        );
        assert!(
            html.contains("<title>Previous period, 1: 0.500 MWh (measured)</title>"),
            "{html}"
        );
        assert!(
            html.contains("<title>2: no value (missing)</title>"),
            "{html}"
        );
        assert!(html.contains(r#""unit":"MWh""#));
        assert!(html.contains(r#""values":[12.0,null]"#), "{html}");

        let start = chrono::DateTime::from_timestamp(1_774_744_200, 0).unwrap(); // 00:30 UTC
        let tz = chrono_tz::Europe::Ljubljana;
        let points = [
            PowerPoint {
                label: "01:45".into(),
                power_w: Some(800.0),
                estimated: true,
                start: Some(start),
                interval: quarter_text(start, tz),
                ..PowerPoint::default()
            },
            PowerPoint {
                label: "03:00".into(),
                power_w: None,
                estimated: false,
                start: Some(start + chrono::Duration::minutes(15)),
                ..PowerPoint::default()
            },
        ];
        let html = power_graph("p", "Power", &points);
        assert!(html.starts_with(r#"<figure class="chart" data-chart="power""#));
        assert!(
            html.contains("<title>Sun 29 Mar 2026 01:30–01:45 CET: 800 W (estimated)</title>"),
            "{html}"
        );
        assert!(html.contains(r#""unit":"W""#), "{html}");
        assert!(html.contains(r#""x":[1774744200,1774745100]"#), "{html}");
        assert!(
            html.contains(r#""quality":["estimated","missing"]"#),
            "{html}"
        );
        assert!(
            html.contains(r#"class="bar incomplete" data-value="800""#),
            "{html}"
        );
    }

    #[test]
    fn intervals_read_like_a_calendar() {
        let tz = chrono_tz::Europe::Ljubljana;
        // 2026-03-29 00:45 UTC is 01:45 CET, and 15 minutes later it is 03:00 CEST.
        let t = chrono::DateTime::from_timestamp(1_774_745_100, 0).unwrap();
        assert_eq!(quarter_text(t, tz), "Sun 29 Mar 2026 01:45 CET–03:00 CEST");
        let t = chrono::DateTime::from_timestamp(1_772_543_700, 0).unwrap();
        assert_eq!(quarter_text(t, tz), "Tue 3 Mar 2026 14:15–14:30 CET");
        let d = NaiveDate::from_ymd_opt(2026, 3, 3).unwrap();
        assert_eq!(period_text(d, Period::Day), "Tue 3 Mar 2026");
        assert_eq!(period_text(d, Period::Month), "March 2026");
        assert_eq!(period_text(d, Period::Year), "2026");
    }
}
