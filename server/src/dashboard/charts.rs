//! Charts as server-rendered SVG: axes, units and local-time labels, readable when printed,
//! and the same numbers as the API and the CSV (they are drawn from the same queries).
//!
//! Every chart is a `<figure class="chart" data-chart="bars|power|share">` holding the SVG (the
//! no-JavaScript and print rendering, with a `<title>` per bar that browsers show on hover) and
//! a `<script type="application/json" class="chart-data">` block with the same numbers, which
//! `static/charts.js` turns into an interactive uPlot chart (tooltips, zoom). A JSON block is
//! data, not script, so the strict CSP allows it.

use std::fmt::Write;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::Period;
use serde_json::{json, Value};

use super::units::{common_unit, digits};
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

/// One bar: its label, its value, an optional comparison (the previous period), and whether
/// the value is incomplete (drawn hatched). The fields after `title` are for the tooltip and
/// have defaults (`..Default::default()`): an empty `interval` falls back to `title`, a
/// `None` quality is derived from `value` and `incomplete`.
#[derive(Debug, Clone, Default)]
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    pub incomplete: bool,
    pub title: String,
    /// The period of the bar as people say it ([`period_text`]).
    pub interval: String,
    /// The period of the previous value; empty: "previous period".
    pub previous_interval: String,
    pub quality: Option<Quality>,
    pub previous_quality: Option<Quality>,
}

impl Bar {
    fn interval_text(&self) -> &str {
        if self.interval.is_empty() {
            if self.title.is_empty() {
                &self.label
            } else {
                &self.title
            }
        } else {
            &self.interval
        }
    }

    fn previous_interval_text(&self) -> String {
        if self.previous_interval.is_empty() {
            self.label.clone()
        } else {
            self.previous_interval.clone()
        }
    }

    fn quality_of_value(&self) -> Quality {
        match (self.value, self.quality) {
            (None, Some(Quality::Upcoming)) => Quality::Upcoming,
            (None, _) => Quality::Missing,
            (Some(_), Some(q)) => q,
            (Some(_), None) if self.incomplete => Quality::Incomplete,
            (Some(_), None) => Quality::Measured,
        }
    }

    fn quality_of_previous(&self) -> Quality {
        match (self.previous, self.previous_quality) {
            (None, _) => Quality::Missing,
            (Some(_), Some(q)) => q,
            (Some(_), None) => Quality::Measured,
        }
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

/// A bar chart; `data-points` on the SVG says how many bars carry a value (for tests). Values
/// are given in `unit`; kWh and kW are shown in the unit that suits the largest value.
pub fn bar_chart(id: &str, title: &str, unit: &str, bars: &[Bar]) -> String {
    let (unit, div) = chart_unit(
        unit,
        bars.iter().flat_map(|b| [b.value, b.previous]).flatten(),
    );
    let unit = unit.as_str();
    let scaled = |v: Option<f64>| v.map(|v| tidy(v / div));
    let max = nice_max(
        bars.iter()
            .flat_map(|b| [scaled(b.value), scaled(b.previous)])
            .flatten()
            .fold(0.0, f64::max),
    );
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / bars.len().max(1) as f64;
    let with_value = bars.iter().filter(|b| b.value.is_some()).count();
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg id="{}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" data-points="{with_value}" data-bars="{}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"##,
        esc(id),
        esc(title),
        bars.len(),
        esc(title)
    );
    out.push_str(r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#9cc3e6"/><line x1="0" y1="0" x2="0" y2="6" stroke="#2c6fad" stroke-width="3"/></pattern></defs>"##);
    frame(&mut out, max, unit);
    let label_every = (bars.len() / 16).max(1);
    for (i, b) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64;
        if let Some(p) = scaled(b.previous) {
            let h = plot_h * p.max(0.0) / max;
            let _ = write!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" class="prev"><title>Previous period, {}: {} {} ({})</title></rect>"##,
                x + slot * 0.1,
                TOP + plot_h - h,
                slot * 0.35,
                esc(&b.previous_interval_text()),
                digits(p),
                esc(unit),
                b.quality_of_previous().text()
            );
        }
        match scaled(b.value) {
            Some(v) => {
                let h = plot_h * v.max(0.0) / max;
                let _ = write!(
                    out,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" class="bar{}" data-value="{v}"><title>{}: {} {} ({})</title></rect>"##,
                    x + slot * if b.previous.is_some() { 0.45 } else { 0.15 },
                    TOP + plot_h - h,
                    slot * if b.previous.is_some() { 0.45 } else { 0.7 },
                    if b.incomplete { " incomplete" } else { "" },
                    esc(b.interval_text()),
                    digits(v),
                    esc(unit),
                    b.quality_of_value().text()
                );
            }
            // A period still to come is left blank, not marked as missing.
            None if b.quality_of_value() == Quality::Upcoming => {}
            None => {
                let _ = write!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" class="missing" text-anchor="middle">–<title>{}: no value (missing)</title></text>"##,
                    x + slot / 2.0,
                    TOP + plot_h - 4.0,
                    esc(b.interval_text())
                );
            }
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text>"##,
                x + slot / 2.0,
                H - BOTTOM + 16.0,
                esc(&b.label)
            );
        }
    }
    out.push_str("</svg>");
    let data = json!({
        "title": title,
        "unit": unit,
        "x": bars.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(),
        "series": [
            {
                "label": "Previous period",
                "role": "previous",
                "unit": unit,
                "values": bars.iter().map(|b| scaled(b.previous)).collect::<Vec<_>>(),
                "intervals": bars.iter().map(Bar::previous_interval_text).collect::<Vec<_>>(),
                "quality": bars.iter().map(|b| b.quality_of_previous().text()).collect::<Vec<_>>(),
            },
            {
                "label": "This period",
                "role": "current",
                "unit": unit,
                "values": bars.iter().map(|b| scaled(b.value)).collect::<Vec<_>>(),
                "intervals": bars.iter().map(Bar::interval_text).collect::<Vec<_>>(),
                "quality": bars.iter().map(|b| b.quality_of_value().text()).collect::<Vec<_>>(),
            }
        ],
    });
    figure("bars", title, &out, &data)
}

/// One quarter-hour of the power graph. The fields after `estimated` are for the tooltip and
/// the time axis, with defaults (`..Default::default()`): without `start` the interactive
/// graph falls back to the labels; an empty `interval` falls back to `label`; a `None`
/// quality is derived from `power_w` and `estimated`.
#[derive(Debug, Clone, Default)]
pub struct PowerPoint {
    pub label: String,
    pub power_w: Option<f64>,
    pub estimated: bool,
    /// The start of the quarter-hour.
    pub start: Option<DateTime<Utc>>,
    /// The quarter-hour as people say it ([`quarter_text`]).
    pub interval: String,
    pub quality: Option<Quality>,
}

impl PowerPoint {
    fn quality_of_value(&self) -> Quality {
        match (self.power_w, self.quality) {
            // A quarter-hour that has not ended yet (the rest of today).
            (None, _)
                if self
                    .start
                    .is_some_and(|s| s + chrono::Duration::minutes(15) > chrono::Utc::now()) =>
            {
                Quality::Upcoming
            }
            (None, _) => Quality::Missing,
            (Some(_), Some(q)) => q,
            (Some(_), None) if self.estimated => Quality::Estimated,
            (Some(_), None) => Quality::Measured,
        }
    }
}

/// The power graph: the mean power of each quarter-hour as a step bar, estimated quarters
/// hatched, missing ones left empty and marked on the axis.
pub fn power_graph(id: &str, title: &str, points: &[PowerPoint]) -> String {
    let (unit, div) = chart_unit(
        "kW",
        points.iter().filter_map(|p| p.power_w).map(|w| w / 1000.0),
    );
    let bars: Vec<Bar> = points
        .iter()
        .map(|p| Bar {
            label: p.label.clone(),
            value: p.power_w.map(|w| w / 1000.0),
            previous: None,
            incomplete: p.quality_of_value() == Quality::Estimated,
            title: p.label.clone(),
            interval: p.interval.clone(),
            quality: Some(p.quality_of_value()),
            ..Bar::default()
        })
        .collect();
    let chart = bar_chart(id, title, "kW", &bars);
    // The SVG of the bar chart, with the power graph's own data block.
    let svg_start = chart.find("<svg").unwrap_or(0);
    let svg_end = chart
        .find("</svg>")
        .map_or(chart.len(), |i| i + "</svg>".len());
    let svg = &chart[svg_start..svg_end];
    let time = !points.is_empty() && points.iter().all(|p| p.start.is_some());
    let x: Vec<Value> = if time {
        points
            .iter()
            .map(|p| json!(p.start.map_or(0, |t| t.timestamp())))
            .collect()
    } else {
        (0..points.len()).map(|i| json!(i)).collect()
    };
    // The points' spacing: quarter-hours, or hourly / daily means on long ranges.
    let step = points
        .windows(2)
        .filter_map(|w| Some((w[1].start? - w[0].start?).num_seconds()))
        .filter(|s| *s > 0)
        .min()
        .unwrap_or(900);
    let data = json!({
        "title": title,
        "unit": unit,
        "time": time,
        "step": step,
        "x": x,
        "labels": points.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(),
        "series": [
            {
                "label": "Mean power",
                "role": "current",
                "unit": unit,
                "values": points.iter().map(|p| p.power_w.map(|w| tidy(w / 1000.0 / div))).collect::<Vec<_>>(),
                "intervals": bars.iter().map(Bar::interval_text).collect::<Vec<_>>(),
                "quality": points.iter().map(|p| p.quality_of_value().text()).collect::<Vec<_>>(),
            }
        ],
    });
    figure("power", title, svg, &data)
}

/// A horizontal bar chart of shares (energy by circuit or usage): one row per name, the
/// value written beside its bar, so long names stay readable on a phone and on paper.
pub fn share_chart(id: &str, title: &str, unit: &str, rows: &[(String, f64)]) -> String {
    const ROW: f64 = 26.0;
    const NAME_W: f64 = 300.0;
    const VALUE_W: f64 = 110.0;
    let (unit, div) = chart_unit(unit, rows.iter().map(|r| r.1));
    let unit = unit.as_str();
    let rows: Vec<(String, f64)> = rows
        .iter()
        .map(|(n, v)| (n.clone(), tidy(v / div)))
        .collect();
    let max = nice_max(rows.iter().map(|r| r.1).fold(0.0, f64::max));
    let h = ROW * rows.len().max(1) as f64 + 8.0;
    let bar_w = W - NAME_W - VALUE_W;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg id="{}" class="chart share" viewBox="0 0 {W} {h}" role="img" aria-label="{}" data-bars="{}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"##,
        esc(id),
        esc(title),
        rows.len(),
        esc(title)
    );
    for (i, (name, value)) in rows.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        // A remainder can be slightly negative (meter tolerances): drawn as nothing.
        let w = bar_w * value.max(0.0) / max;
        let short: String = if name.chars().count() > 42 {
            name.chars().take(41).chain(['…']).collect()
        } else {
            name.clone()
        };
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" class="axis label" text-anchor="end">{}</text><rect x="{NAME_W}" y="{:.1}" width="{w:.1}" height="{:.1}" class="bar" data-value="{value}"><title>{}: {} {}</title></rect><text x="{:.1}" y="{:.1}" class="axis">{} {}</text>"##,
            NAME_W - 8.0,
            y + ROW * 0.62,
            esc(&short),
            y + ROW * 0.15,
            ROW * 0.7,
            esc(name),
            fmt_num(*value),
            esc(unit),
            NAME_W + w + 6.0,
            y + ROW * 0.62,
            fmt_num(*value),
            esc(unit)
        );
    }
    out.push_str("</svg>");
    let data = json!({
        "title": title,
        "unit": unit,
        "x": rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        "series": [
            {
                "label": title,
                "role": "current",
                "unit": unit,
                "values": rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                "intervals": rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
                "quality": rows.iter().map(|_| "").collect::<Vec<_>>(),
            }
        ],
    });
    figure("share", title, &out, &data)
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
