//! Field rules every ingest path shares (SG JSON, MiSmart XML, Modbus snapshots): measurement
//! values in column order, the backlog horizon of counter readings, text cut to fit.

use chrono::{DateTime, Duration, Utc};
use sg_wire::message as wire;

use super::{GatewayUpdate, MEASUREMENT_COLUMNS};
use crate::ingest::clock::BEYOND_HORIZON;

/// Normalised measurements as the `measurements` row's values, in the order of
/// [`MEASUREMENT_COLUMNS`] (shared by every ingest path that carries SG measurements).
pub(in crate::ingest) fn measurement_values(
    m: &wire::Measurements,
) -> [Option<f32>; MEASUREMENT_COLUMNS.len()] {
    let v = |x: Option<f64>| x.map(|x| x as f32);
    [
        v(m.frequency_hz),
        v(m.u1),
        v(m.u2),
        v(m.u3),
        v(m.u12),
        v(m.u23),
        v(m.u31),
        v(m.i1),
        v(m.i2),
        v(m.i3),
        v(m.i_n),
        v(m.p_total),
        v(m.p1),
        v(m.p2),
        v(m.p3),
        v(m.q_total),
        v(m.q1),
        v(m.q2),
        v(m.q3),
        v(m.s_total),
        v(m.s1),
        v(m.s2),
        v(m.s3),
        v(m.pf_total),
        v(m.pf1),
        v(m.pf2),
        v(m.pf3),
        v(m.pa_total),
        v(m.pa1),
        v(m.pa2),
        v(m.pa3),
        v(m.temperature_c),
        v(m.thd_i1),
        v(m.thd_i2),
        v(m.thd_i3),
        v(m.thd_u1),
        v(m.thd_u2),
        v(m.thd_u3),
        None,
    ]
}

/// [`BEYOND_HORIZON`] when counter readings dated `ts` lie more than `horizon` before their
/// receive time (else 0), with the reason in `issues` when `any` reading is concerned.
///
/// Decided from the record alone (its receive time, not the clock of the writer), so a replay
/// flags exactly the same readings. Such a reading is kept (it is what the meter said) but the
/// profile worker never turns it into intervals: a reading dated 1900 would otherwise make the
/// engine fill 126 years of quarter-hours.
pub(in crate::ingest) fn beyond_horizon(
    ts: DateTime<Utc>,
    received_at: DateTime<Utc>,
    horizon: Duration,
    any: bool,
    issues: &mut Vec<String>,
) -> i16 {
    let Some(limit) = received_at.checked_sub_signed(horizon) else {
        return 0;
    };
    if ts >= limit {
        return 0;
    }
    if any {
        issues.push(format!(
            "counter readings dated {} are more than {} days before the receive time {} \
             (energy.backlog_horizon_days): stored with flag {BEYOND_HORIZON} and not turned \
             into energy intervals",
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            horizon.num_days(),
            received_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    BEYOND_HORIZON
}

pub(in crate::ingest) fn bump_seen(update: &mut GatewayUpdate, at: DateTime<Utc>) {
    if update.last_seen_at.is_none_or(|seen| seen < at) {
        update.last_seen_at = Some(at);
    }
}

/// The reason recorded when a text is cut to fit: the stored value is the cut one, the
/// original is the reject's verbatim payload.
pub(in crate::ingest) fn cut_issue(field: &str, len: usize, max: usize) -> String {
    format!(
        "{field}: cut from {len} to {max} bytes to fit (stored cut; the original is this \
         reject's payload)"
    )
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
