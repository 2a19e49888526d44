//! Sparklines: a small inline SVG of a day's power for the overview cards. No script, no
//! style attribute (strict CSP): presentation attributes only, so it draws without the CSS too.

use std::fmt::Write;

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const W: f64 = 192.0;
const H: f64 = 40.0;
const PAD: f64 = 2.0;

/// A sparkline of `values` over `slots` equal steps (a whole day, so the line stops where the
/// day has got to). Gaps (`None`) break the line. `label` is the accessible description.
/// `data-points` counts the values drawn (for tests).
pub fn sparkline(id: &str, label: &str, values: &[Option<f64>], slots: usize) -> String {
    let slots = slots.max(values.len()).max(2);
    let max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { max } else { 1.0 };
    let step = (W - 2.0 * PAD) / (slots - 1) as f64;
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * v.max(0.0) / scale;
    let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v.filter(|v| v.is_finite()) {
            Some(v) => current.push((PAD + step * i as f64, y(v))),
            None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    let drawn = values.iter().filter(|v| v.is_some()).count();
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg id="{}" class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" preserveAspectRatio="none" role="img" aria-label="{}" data-points="{drawn}" xmlns="http://www.w3.org/2000/svg"><title>{}</title><line x1="{PAD}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#d5dbe1" stroke-width="1" vector-effect="non-scaling-stroke"/>"##,
        esc(id),
        esc(label),
        esc(label),
        H - PAD,
        W - PAD,
        H - PAD,
    );
    for seg in &segments {
        if seg.len() == 1 {
            let (x, y) = seg[0];
            let _ = write!(
                out,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="1.5" fill="#2c6fad"/>"##
            );
            continue;
        }
        let points: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        // The area under the line, then the line.
        let _ = write!(
            out,
            r##"<polygon class="area" points="{:.1},{:.1} {} {:.1},{:.1}" fill="#e3eef8" stroke="none"/>"##,
            seg[0].0,
            H - PAD,
            points.join(" "),
            seg[seg.len() - 1].0,
            H - PAD,
        );
        let _ = write!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#2c6fad" stroke-width="1.5" stroke-linejoin="round" vector-effect="non-scaling-stroke"/>"##,
            points.join(" ")
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_break_the_line_and_text_is_escaped() {
        let svg = sparkline(
            "s<1>",
            "Power <today>",
            &[Some(1.0), Some(2.0), None, Some(4.0), Some(0.0)],
            96,
        );
        assert!(!svg.contains("<today>") && svg.contains("&lt;today&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 0);
        assert!(svg.contains(r#"data-points="4""#));
        assert!(!svg.contains("style"));
        // The highest value touches the top, zero the baseline.
        assert!(svg.contains(",2.0"));
        assert!(svg.contains(",38.0"));
    }

    #[test]
    fn an_empty_day_is_only_the_baseline() {
        let svg = sparkline("s", "none", &[None, None], 96);
        assert!(!svg.contains("polyline"));
        assert!(svg.contains(r#"data-points="0""#));
        let one = sparkline("s", "one", &[Some(3.0)], 96);
        assert!(one.contains("<circle"));
    }
}
