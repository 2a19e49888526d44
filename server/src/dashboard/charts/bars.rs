//! Bar charts: one bar per quarter-hour, day, month or year, beside the period before.

use std::fmt::Write;

use serde_json::json;

use super::super::units::digits;
use super::{chart_unit, esc, figure, frame, nice_max, tidy, Quality, BOTTOM, H, LEFT, TOP, W};

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
    pub(super) fn interval_text(&self) -> &str {
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
