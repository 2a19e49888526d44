//! The power graph: the mean power of each quarter-hour (or hour, or day) as a step bar.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{bar_chart, chart_unit, figure, tidy, Bar, Quality};

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
