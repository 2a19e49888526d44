//! Shares: energy by circuit or by usage, one horizontal bar per name.

use std::fmt::Write;

use serde_json::json;

use super::{chart_unit, esc, figure, fmt_num, nice_max, tidy, W};

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
