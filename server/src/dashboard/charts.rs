//! Charts as server-rendered SVG: axes, units and local-time labels, readable when printed,
//! and the same numbers as the API and the CSV (they are drawn from the same queries).

use std::fmt::Write;

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

/// One bar: its label, its value, an optional comparison (the previous period), and whether
/// the value is incomplete (drawn hatched).
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    pub incomplete: bool,
    pub title: String,
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

/// A bar chart; `data-points` on the root says how many bars carry a value (for tests).
pub fn bar_chart(id: &str, title: &str, unit: &str, bars: &[Bar]) -> String {
    let max = nice_max(
        bars.iter()
            .flat_map(|b| [b.value, b.previous])
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
        if let Some(p) = b.previous {
            let h = plot_h * p / max;
            let _ = write!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" class="prev"><title>previous: {} {}</title></rect>"##,
                x + slot * 0.1,
                TOP + plot_h - h,
                slot * 0.35,
                fmt_num(p),
                esc(unit)
            );
        }
        match b.value {
            Some(v) => {
                let h = plot_h * v.max(0.0) / max;
                let _ = write!(
                    out,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" class="bar{}" data-value="{v}"><title>{}: {} {}</title></rect>"##,
                    x + slot * if b.previous.is_some() { 0.45 } else { 0.15 },
                    TOP + plot_h - h,
                    slot * if b.previous.is_some() { 0.45 } else { 0.7 },
                    if b.incomplete { " incomplete" } else { "" },
                    esc(&b.title),
                    fmt_num(v),
                    esc(unit)
                );
            }
            None => {
                let _ = write!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" class="missing" text-anchor="middle">–</text>"##,
                    x + slot / 2.0,
                    TOP + plot_h - 4.0
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
    out
}

/// One quarter-hour of the power graph.
pub struct PowerPoint {
    pub label: String,
    pub power_w: Option<f64>,
    pub estimated: bool,
}

/// The power graph: the mean power of each quarter-hour as a step bar, estimated quarters
/// hatched, missing ones left empty and marked on the axis.
pub fn power_graph(id: &str, title: &str, points: &[PowerPoint]) -> String {
    let bars: Vec<Bar> = points
        .iter()
        .map(|p| Bar {
            label: p.label.clone(),
            value: p.power_w.map(|w| w / 1000.0),
            previous: None,
            incomplete: p.estimated,
            title: format!(
                "{}{}",
                p.label,
                if p.estimated { " (estimated)" } else { "" }
            ),
        })
        .collect();
    bar_chart(id, title, "kW", &bars)
}

/// A horizontal bar chart of shares (energy by circuit or usage): one row per name, the
/// value written beside its bar, so long names stay readable on a phone and on paper.
pub fn share_chart(id: &str, title: &str, unit: &str, rows: &[(String, f64)]) -> String {
    const ROW: f64 = 26.0;
    const NAME_W: f64 = 300.0;
    const VALUE_W: f64 = 110.0;
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
        let name: String = if name.chars().count() > 42 {
            name.chars().take(41).chain(['…']).collect()
        } else {
            name.clone()
        };
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" class="axis label" text-anchor="end">{}</text><rect x="{NAME_W}" y="{:.1}" width="{w:.1}" height="{:.1}" class="bar" data-value="{value}"><title>{}: {} {}</title></rect><text x="{:.1}" y="{:.1}" class="axis">{} {}</text>"##,
            NAME_W - 8.0,
            y + ROW * 0.62,
            esc(&name),
            y + ROW * 0.15,
            ROW * 0.7,
            esc(&name),
            fmt_num(*value),
            esc(unit),
            NAME_W + w + 6.0,
            y + ROW * 0.62,
            fmt_num(*value),
            esc(unit)
        );
    }
    out.push_str("</svg>");
    out
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
                },
                Bar {
                    label: "x".into(),
                    value: None,
                    previous: None,
                    incomplete: false,
                    title: String::new(),
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
}
