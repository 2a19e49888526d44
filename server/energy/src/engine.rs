//! Quarter-hour interval energy from cumulative counter readings.
//!
//! A register (active energy, reactive energy, apparent energy) is read now and then as a
//! cumulative counter in milli-units (mWh, mvarh, mVAh). [`compute`] turns the time-sorted
//! readings of one register into the energy of every UTC quarter-hour (`start % 900 s == 0`)
//! they cover, a quality flag per quarter-hour, and the events it detected on the way. It is a
//! pure function of its inputs and only does integer arithmetic, so a result can be recomputed
//! and compared at any time.
//!
//! # Judging readings
//!
//! A counter only goes up, so every *drop* (a reading below the reading just before it) needs an
//! explanation. On a **resettable** register a drop is a reset: the counter started again from
//! zero, so the energy between the two readings is the new value ([`EventKind::Reset`]). On a
//! **non-resettable** register the drop at reading `d` (value `v[d] < v[d-1]`) is explained by
//! the first of these rules that applies (each one needs the readings it names to exist):
//!
//! 1. *Lone high*: `v[d] >= v[d-2]`; reading `d-1` is a glitch (it is above both neighbours,
//!    which agree with each other). Tried first because it is decided by readings already seen,
//!    so a drop that it explains never waits. The price: a shallow dip that stays at or above
//!    the reading two before (`v[d-2] <= v[d] < v[d-1]`) is blamed on the higher reading
//!    instead, which shifts at most `v[d-1] - v[d-2]` between neighbouring quarter-hours and
//!    changes no total.
//! 2. *Undecided*: `d` is the newest reading. It is set aside (in [`Outcome::ignored`], no event)
//!    until the next reading tells a glitch from an exchange; intervals after the previous
//!    reading stay missing until then.
//! 3. *Lone low*: `v[d+1] >= v[d-1]`; reading `d` is a glitch. A reading of 0 for one sample on
//!    a counter at 5 000 000 is one.
//! 4. *Double low*: `v[d+2] >= v[d-1]`; readings `d` and `d+1` are both glitches (e.g. a meter
//!    reporting 0 twice while it restarts).
//! 5. Otherwise a *meter exchange* at `d`: the next reading stays below the old level
//!    (`v[d+1] < v[d-1]`), so a new meter is counting from `v[d]`. The energy between the old meter's last reading and the new
//!    meter's first is unknown and counted as 0, and the quarter-hours overlapping that gap are
//!    estimated ([`EventKind::Exchange`]).
//!
//! Glitches are ignored and reported ([`EventKind::Glitch`], `previous` being the last reading
//! kept before it). Rule 4 needs the reading after next: until it arrives the drop is judged an
//! exchange on the strength of the next reading, and the recomputation that the reading after
//! next triggers withdraws the exchange if that reading is back at the old level. The first
//! reading of a series (or of a window, see below) has no reading before it, so it is never
//! judged a glitch: a drop right after it is a lone low of the second reading or an exchange.
//! Longer bursts of bad readings are not recognised as glitches; whatever is left, any kept
//! reading below the kept reading before it is an exchange, so nothing can ever produce a
//! negative interval.
//!
//! # From readings to intervals
//!
//! The kept (*effective*) readings form a non-decreasing *adjusted cumulative* series
//! `A = value + offset`, where the offset absorbs resets (`+ previous value`) and exchanges
//! (`+ previous value - new value`). The counter at a quarter-hour boundary `b` is `A` of a
//! reading exactly at `b`, or the linear interpolation between the effective readings `p` and `q`
//! around it: `B(b) = A(p) + round(ΔA · (b − t_p) / (t_q − t_p))`, computed exactly in 128-bit
//! integers and rounded half up, which for the non-negative increment interpolated here is the
//! same as half away from zero. The energy of `[b, b + 15 min)` is `B(b + 15 min) − B(b)`, so
//! sums telescope exactly, and `B` never decreases, so no energy is negative. Only quarter-hours
//! whose both boundaries lie within `[first, last]` effective reading are emitted; the others
//! are missing ([`Quality::Missing`] is for the API layer, `compute` never emits it).
//!
//! Across a gap between two consecutive effective readings longer than the *maximum
//! interpolation gap* ([`compute_bounded`]; Headend's `energy.max_interpolation_gap_hours`)
//! nothing is interpolated: the quarter-hours that overlap the gap are missing (not emitted),
//! exactly as before the first reading, and the series goes on from the reading after the gap.
//! The energy across the gap stays unattributed (the next intervals do not absorb it), so no
//! hostile reading far from the others can make the engine emit, say, a century of
//! quarter-hours. Whether a gap is too long depends only on the two readings around it, so
//! the locality below is unchanged.
//!
//! A boundary is *measured* when an effective reading (on either side) lies within
//! [`Params::tolerance_ms`] of it, inclusive: its value is then known up to the energy of at most
//! that long, whatever the interpolation does on the far side. A quarter-hour is
//! [`Quality::Measured`] when both its boundaries are measured and it does not overlap the gap of
//! a meter exchange, otherwise [`Quality::Estimated`].
//!
//! # Locality and recomputation
//!
//! Whether a reading is kept depends only on the readings up to 3 positions either side of it
//! (the rules above look at `d-2..=d+2` for the drops at `k-1..=k+1`), and at most 3 readings
//! in a row are ever dropped (a double low followed by a lone high). An interval therefore
//! depends on the readings from 3 before the last effective reading at or before its start, i.e.
//! 6 before the last reading at or before its start, to 6 after the first reading at or after its
//! end; the previous-reading values in events reach one position further (an exchange right after
//! three glitches). Hence [`CONTEXT`] = 7: computing a window `readings[i..j]` gives exactly the
//! intervals, events and ignored readings of the full series between `readings[i + CONTEXT].ts`
//! and `readings[j - 1 - CONTEXT].ts` (and from the start, or up to the end, when the window
//! starts at the first reading or ends at the last). By the same argument, inserting a reading
//! at position `m` changes nothing outside `readings[m - CONTEXT].ts ..= readings[m + CONTEXT].ts`
//! (positions in the series after the insertion). So after inserting late readings at positions
//! `m1..=m2`, recompute the window `m1 - 2·CONTEXT ..= m2 + 2·CONTEXT` and replace what lies
//! between `readings[m1 - CONTEXT].ts` and `readings[m2 + CONTEXT].ts` (clamped to the series).
//! Both properties are property-tested below.

use std::borrow::Cow;

/// Length of a quarter-hour in milliseconds.
pub const QUARTER_MS: i64 = 900_000;

/// Readings each side of a changed span that a recomputation must load so that every interval
/// inside the span comes out exactly as a computation over the full series would give it.
///
/// 7 = 3 (how far a keep/ignore decision looks) + 3 (the longest run of ignored readings) + 1
/// (the previous value of an exchange event after such a run); see the module docs.
pub const CONTEXT: usize = 7;

/// One counter reading: time in milliseconds since the Unix epoch, value in milli-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub ts_ms: i64,
    pub value: i64,
}

/// What the engine needs to know about a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    /// The meter may set this register back to zero (a drop is a reset, never a glitch).
    pub resettable: bool,
}

/// Tuning of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// How far (inclusive) an effective reading may be from a quarter-hour boundary for the
    /// boundary value to count as measured. Negative values act as 0.
    pub tolerance_ms: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tolerance_ms: 120_000,
        }
    }
}

/// Quality of an interval's energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Both boundaries have an effective reading within the tolerance.
    Measured,
    /// Interpolated across a gap in the readings, or overlapping a meter exchange.
    Estimated,
    /// No value. Never emitted by [`compute`]; the API layer uses it for absent intervals.
    Missing,
}

impl Quality {
    /// The database code: 0 measured, 1 estimated, 2 missing.
    pub fn code(self) -> i16 {
        match self {
            Quality::Measured => 0,
            Quality::Estimated => 1,
            Quality::Missing => 2,
        }
    }

    /// Inverse of [`Quality::code`].
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            0 => Some(Quality::Measured),
            1 => Some(Quality::Estimated),
            2 => Some(Quality::Missing),
            _ => None,
        }
    }
}

/// The energy of the quarter-hour `[start_ms, start_ms + QUARTER_MS)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start_ms: i64,
    /// Milli-units, never negative.
    pub energy: i64,
    pub quality: Quality,
}

/// What happened to the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A resettable register went down: it restarted from zero.
    Reset,
    /// A reading contradicted by its neighbours; it is ignored.
    Glitch,
    /// A confirmed drop on a non-resettable register: a new meter.
    Exchange,
}

impl EventKind {
    /// The snake_case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Reset => "reset",
            EventKind::Glitch => "glitch",
            EventKind::Exchange => "exchange",
        }
    }
}

/// An event detected at the reading `ts_ms` with value `value`; `previous` is the value of the
/// last effective reading before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub ts_ms: i64,
    pub kind: EventKind,
    pub previous: i64,
    pub value: i64,
}

/// The result of [`compute`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Consecutive quarter-hours, ascending.
    pub intervals: Vec<Interval>,
    /// Ascending by time.
    pub events: Vec<Event>,
    /// Timestamps of readings not used (glitches, and an undecided newest reading), ascending.
    pub ignored: Vec<i64>,
}

/// Start of the quarter-hour containing `ts_ms`.
pub fn floor_quarter(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(QUARTER_MS)
}

/// The first quarter-hour boundary at or after `ts_ms`.
pub fn ceil_quarter(ts_ms: i64) -> i64 {
    let floor = floor_quarter(ts_ms);
    if floor == ts_ms {
        ts_ms
    } else {
        floor + QUARTER_MS
    }
}

/// True when `readings` are strictly increasing in time (sorted, unique timestamps).
pub fn is_normalized(readings: &[Reading]) -> bool {
    readings.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms)
}

/// Sorts by time and keeps one reading per timestamp, as the database does. Should two readings
/// share a timestamp with different values (the database cannot store that), the lower value
/// is kept, so the result does not depend on the input order.
pub fn normalize(readings: &mut Vec<Reading>) {
    readings.sort_unstable_by_key(|r| (r.ts_ms, r.value));
    readings.dedup_by_key(|r| r.ts_ms);
}

/// Interval energies, events and ignored readings of one register; see the module docs.
///
/// `readings` must be sorted by time with unique timestamps (the database guarantees both;
/// checked by a debug assertion). In release builds unsorted input is normalised with
/// [`normalize`] first.
pub fn compute(readings: &[Reading], register: Register, params: &Params) -> Outcome {
    compute_bounded(readings, register, params, i64::MAX)
}

/// [`compute`], interpolating across gaps between effective readings of at most
/// `max_gap_ms` only: the quarter-hours overlapping a longer gap are missing (see the module
/// docs). `i64::MAX` interpolates every gap, as [`compute`] does.
pub fn compute_bounded(
    readings: &[Reading],
    register: Register,
    params: &Params,
    max_gap_ms: i64,
) -> Outcome {
    debug_assert!(
        is_normalized(readings),
        "readings must be sorted by time with unique timestamps"
    );
    let readings: Cow<'_, [Reading]> = if is_normalized(readings) {
        Cow::Borrowed(readings)
    } else {
        let mut owned = readings.to_vec();
        normalize(&mut owned);
        Cow::Owned(owned)
    };
    compute_normalized(&readings, register, params, max_gap_ms.max(0))
}

fn compute_normalized(
    r: &[Reading],
    register: Register,
    params: &Params,
    max_gap_ms: i64,
) -> Outcome {
    let (Some(first), Some(last)) = (r.first(), r.last()) else {
        return Outcome::default();
    };
    let span = i128::from(last.ts_ms) - i128::from(first.ts_ms);
    // An upper bound of the intervals to come, capped so a wild gap cannot reserve gigabytes.
    let expected = usize::try_from(span / i128::from(QUARTER_MS)).unwrap_or(usize::MAX);
    let mut sink = IntervalSink::new(
        params.tolerance_ms.max(0),
        max_gap_ms,
        expected.min(1 << 12),
    );
    let mut events = Vec::new();
    let mut ignored = Vec::new();
    // The last effective reading and its adjusted cumulative value.
    let mut prev: Option<(Reading, i128)> = None;

    for (k, &reading) in r.iter().enumerate() {
        let status = if register.resettable {
            Status::Effective
        } else {
            status(r, k)
        };
        match status {
            Status::Effective => {
                let (adjusted, gap_unknown) = match prev {
                    None => (i128::from(reading.value), false),
                    Some((p, a)) if reading.value >= p.value => {
                        (a + (i128::from(reading.value) - i128::from(p.value)), false)
                    }
                    Some((p, a)) => {
                        let kind = if register.resettable {
                            EventKind::Reset
                        } else {
                            EventKind::Exchange
                        };
                        events.push(Event {
                            ts_ms: reading.ts_ms,
                            kind,
                            previous: p.value,
                            value: reading.value,
                        });
                        if register.resettable {
                            // Counted again from zero: the new value is the energy since the
                            // reset (a negative value, which no meter sends, counts as none).
                            (a + i128::from(reading.value.max(0)), false)
                        } else {
                            // A new meter: what happened between the two is unknown.
                            (a, true)
                        }
                    }
                };
                sink.point(reading.ts_ms, adjusted, gap_unknown);
                prev = Some((reading, adjusted));
            }
            Status::Glitch => {
                // Index 0 is never a glitch, so an effective reading precedes every glitch.
                let previous = prev.map_or(reading.value, |(p, _)| p.value);
                events.push(Event {
                    ts_ms: reading.ts_ms,
                    kind: EventKind::Glitch,
                    previous,
                    value: reading.value,
                });
                ignored.push(reading.ts_ms);
            }
            Status::Undecided => ignored.push(reading.ts_ms),
        }
    }
    Outcome {
        intervals: sink.intervals,
        events,
        ignored,
    }
}

/// How a reading of a non-resettable register is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Effective,
    Glitch,
    /// The newest reading, a drop that only the next reading can explain.
    Undecided,
}

/// The explanation of a drop `r[d] < r[d - 1]` (rules 1 to 5 of the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Explanation {
    /// `r[d - 1]` is a lone high glitch.
    High,
    /// `r[d]` is the newest reading and not yet explained.
    Undecided,
    /// `r[d]` is a lone low glitch.
    Low,
    /// `r[d]` and `r[d + 1]` are low glitches.
    DoubleLow,
    /// A meter exchange at `r[d]`.
    Unexplained,
}

/// The explanation of the drop at `d`, or `None` when `r[d]` is not below `r[d - 1]`.
/// Reads `r[d - 2..=d + 2]` at most.
fn drop_at(r: &[Reading], d: usize) -> Option<Explanation> {
    if d == 0 || d >= r.len() || r[d].value >= r[d - 1].value {
        return None;
    }
    let v = |i: usize| r[i].value;
    Some(if d >= 2 && v(d) >= v(d - 2) {
        Explanation::High
    } else if d + 1 == r.len() {
        Explanation::Undecided
    } else if v(d + 1) >= v(d - 1) {
        Explanation::Low
    } else if d + 2 < r.len() && v(d + 2) >= v(d - 1) {
        Explanation::DoubleLow
    } else {
        Explanation::Unexplained
    })
}

/// Whether the reading `r[k]` of a non-resettable register is kept. Reads `r[k - 3..=k + 3]`
/// at most, which is what makes results local.
fn status(r: &[Reading], k: usize) -> Status {
    if drop_at(r, k + 1) == Some(Explanation::High) {
        return Status::Glitch;
    }
    match drop_at(r, k) {
        Some(Explanation::Low | Explanation::DoubleLow) => return Status::Glitch,
        Some(Explanation::Undecided) => return Status::Undecided,
        _ => {}
    }
    if k >= 1 && drop_at(r, k - 1) == Some(Explanation::DoubleLow) {
        return Status::Glitch;
    }
    Status::Effective
}

/// Builds the intervals while the effective readings stream by, so nothing but the output is
/// allocated.
struct IntervalSink {
    tolerance_ms: i64,
    /// Longer gaps between effective readings are not interpolated.
    max_gap_ms: i64,
    /// The previous effective reading: time and adjusted cumulative value.
    prev: Option<(i64, i128)>,
    /// The latest boundary passed: time, counter value, measured.
    boundary: Option<(i64, i128, bool)>,
    /// End of the latest exchange gap before the current one.
    exchange_end: Option<i64>,
    intervals: Vec<Interval>,
}

impl IntervalSink {
    fn new(tolerance_ms: i64, max_gap_ms: i64, capacity: usize) -> Self {
        IntervalSink {
            tolerance_ms,
            max_gap_ms,
            prev: None,
            boundary: None,
            exchange_end: None,
            intervals: Vec::with_capacity(capacity),
        }
    }

    /// The next effective reading; `gap_unknown` when the energy since the previous one is
    /// unknown (a meter exchange).
    fn point(&mut self, ts: i64, adjusted: i128, gap_unknown: bool) {
        let Some((p_ts, p_adj)) = self.prev else {
            if floor_quarter(ts) == ts {
                self.boundary = Some((ts, adjusted, true));
            }
            self.prev = Some((ts, adjusted));
            return;
        };
        debug_assert!(p_ts < ts && p_adj <= adjusted);
        if i128::from(ts) - i128::from(p_ts) > i128::from(self.max_gap_ms) {
            // Too long to interpolate: the quarter-hours over the gap are missing, and the
            // series starts again from this reading as from a first one.
            self.boundary = (floor_quarter(ts) == ts).then_some((ts, adjusted, true));
            if gap_unknown {
                self.exchange_end = Some(ts);
            }
            self.prev = Some((ts, adjusted));
            return;
        }
        let span = u128::try_from(i128::from(ts) - i128::from(p_ts)).unwrap_or(0);
        let delta = u128::try_from(adjusted - p_adj).unwrap_or(0);
        // Every boundary in (p_ts, ts]; the boundaries before were handled by earlier gaps, so
        // `self.boundary`, when set, is the one just before `b`.
        let mut b = floor_quarter(p_ts) + QUARTER_MS;
        while b <= ts {
            let from_prev = u128::try_from(i128::from(b) - i128::from(p_ts)).unwrap_or(0);
            let value = p_adj + interpolate(delta, from_prev, span);
            let measured = (b - p_ts).min(ts - b) <= self.tolerance_ms;
            if let Some((start, start_value, start_measured)) = self.boundary {
                debug_assert_eq!(start + QUARTER_MS, b);
                // Overlaps this gap (if an exchange) or the latest exchange gap before it?
                let exchange = gap_unknown || self.exchange_end.is_some_and(|end| end > start);
                let quality = if start_measured && measured && !exchange {
                    Quality::Measured
                } else {
                    Quality::Estimated
                };
                let energy = value - start_value;
                self.intervals.push(Interval {
                    start_ms: start,
                    energy: i64::try_from(energy).unwrap_or(i64::MAX),
                    quality,
                });
            }
            self.boundary = Some((b, value, measured));
            b += QUARTER_MS;
        }
        if gap_unknown {
            self.exchange_end = Some(ts);
        }
        self.prev = Some((ts, adjusted));
    }
}

/// `round(delta · x / span)`, half up, exactly, for `0 <= x <= span` and `span > 0`.
///
/// Splitting `delta = q·span + rem` keeps every product below `span²`, which fits in 128 bits
/// for any pair of `i64` timestamps.
fn interpolate(delta: u128, x: u128, span: u128) -> i128 {
    if span == 0 {
        return i128::try_from(delta).unwrap_or(i128::MAX);
    }
    let (q, rem) = (delta / span, delta % span);
    let num = rem * x;
    let (whole, frac) = (num / span, num % span);
    let round_up = u128::from(frac >= span - frac);
    i128::try_from(q * x + whole + round_up).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::collections::{BTreeMap, BTreeSet};

    /// A quarter-hour boundary in November 2023.
    const T0: i64 = 1_699_999_200_000;
    const Q: i64 = QUARTER_MS;
    const MIN: i64 = 60_000;
    const NON_RESETTABLE: Register = Register { resettable: false };
    const RESETTABLE: Register = Register { resettable: true };

    fn rd(ts_ms: i64, value: i64) -> Reading {
        Reading { ts_ms, value }
    }

    /// Readings every quarter-hour from T0.
    fn quarterly(values: &[i64]) -> Vec<Reading> {
        values
            .iter()
            .enumerate()
            .map(|(k, &v)| rd(T0 + k as i64 * Q, v))
            .collect()
    }

    fn run(readings: &[Reading], register: Register) -> Outcome {
        compute(readings, register, &Params::default())
    }

    fn iv(start_ms: i64, energy: i64, quality: Quality) -> Interval {
        Interval {
            start_ms,
            energy,
            quality,
        }
    }

    fn ev(ts_ms: i64, kind: EventKind, previous: i64, value: i64) -> Event {
        Event {
            ts_ms,
            kind,
            previous,
            value,
        }
    }

    use Quality::{Estimated as E, Measured as M};

    #[test]
    fn t0_is_a_boundary() {
        assert_eq!(floor_quarter(T0), T0);
    }

    #[test]
    fn quarter_helpers_floor_and_ceil() {
        assert_eq!(floor_quarter(T0 + 1), T0);
        assert_eq!(floor_quarter(T0 + Q - 1), T0);
        assert_eq!(ceil_quarter(T0), T0);
        assert_eq!(ceil_quarter(T0 + 1), T0 + Q);
        assert_eq!(floor_quarter(-1), -Q);
        assert_eq!(ceil_quarter(-1), 0);
        assert_eq!(ceil_quarter(0), 0);
        assert_eq!(floor_quarter(-Q), -Q);
    }

    #[test]
    fn quality_codes_and_names() {
        for q in [Quality::Measured, Quality::Estimated, Quality::Missing] {
            assert_eq!(Quality::from_code(q.code()), Some(q));
        }
        assert_eq!(Quality::from_code(3), None);
        assert_eq!(Quality::from_code(-1), None);
        assert_eq!(
            serde_json::to_string(&Quality::Estimated).unwrap(),
            "\"estimated\""
        );
        assert_eq!(
            serde_json::from_str::<Quality>("\"missing\"").unwrap(),
            Quality::Missing
        );
        for k in [EventKind::Reset, EventKind::Glitch, EventKind::Exchange] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(Params::default().tolerance_ms, 120_000);
    }

    #[test]
    fn empty_and_single_reading_give_nothing() {
        assert_eq!(run(&[], NON_RESETTABLE), Outcome::default());
        assert_eq!(run(&[rd(T0, 5)], NON_RESETTABLE), Outcome::default());
        assert_eq!(
            run(&[rd(T0, 5), rd(T0 + Q - 1, 9)], RESETTABLE),
            Outcome::default()
        );
    }

    #[test]
    fn reset_mid_interval_counts_the_new_value() {
        let r = [
            rd(T0, 1000),
            rd(T0 + 5 * MIN, 1100),
            rd(T0 + 10 * MIN, 50),
            rd(T0 + 15 * MIN, 150),
            rd(T0 + 30 * MIN, 250),
        ];
        let o = run(&r, RESETTABLE);
        assert_eq!(o.intervals, [iv(T0, 250, M), iv(T0 + Q, 100, M)]);
        assert_eq!(o.events, [ev(T0 + 10 * MIN, EventKind::Reset, 1100, 50)]);
        assert!(o.ignored.is_empty());
    }

    #[test]
    fn reset_right_on_a_boundary() {
        let r = [
            rd(T0, 900),
            rd(T0 + 10 * MIN, 1000),
            rd(T0 + Q, 20),
            rd(T0 + 2 * Q, 120),
        ];
        let o = run(&r, RESETTABLE);
        assert_eq!(o.intervals, [iv(T0, 120, M), iv(T0 + Q, 100, M)]);
        assert_eq!(o.events, [ev(T0 + Q, EventKind::Reset, 1000, 20)]);
        // A reset reading of exactly zero adds nothing.
        let r = [rd(T0, 900), rd(T0 + Q, 0), rd(T0 + 2 * Q, 100)];
        let o = run(&r, RESETTABLE);
        assert_eq!(o.intervals, [iv(T0, 0, M), iv(T0 + Q, 100, M)]);
    }

    #[test]
    fn resettable_register_takes_every_drop_as_a_reset() {
        // By contract a resettable register has no glitches: a lone zero is a reset.
        let o = run(&quarterly(&[500, 600, 0, 700]), RESETTABLE);
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Reset, 600, 0)]);
        let energies: Vec<i64> = o.intervals.iter().map(|i| i.energy).collect();
        assert_eq!(energies, [100, 0, 700]);
    }

    #[test]
    fn lone_zero_is_a_glitch() {
        let o = run(
            &quarterly(&[5_000_000, 5_000_100, 0, 5_000_300, 5_000_400]),
            NON_RESETTABLE,
        );
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Glitch, 5_000_100, 0)]);
        assert_eq!(o.ignored, [T0 + 2 * Q]);
        assert_eq!(
            o.intervals,
            [
                iv(T0, 100, M),
                iv(T0 + Q, 100, E),
                iv(T0 + 2 * Q, 100, E),
                iv(T0 + 3 * Q, 100, M),
            ]
        );
    }

    #[test]
    fn lone_high_times_1000_is_a_glitch() {
        let high = 5_000_100 * 1000;
        let o = run(
            &quarterly(&[5_000_000, 5_000_100, high, 5_000_300, 5_000_400]),
            NON_RESETTABLE,
        );
        assert_eq!(
            o.events,
            [ev(T0 + 2 * Q, EventKind::Glitch, 5_000_100, high)]
        );
        assert_eq!(o.ignored, [T0 + 2 * Q]);
        let energies: Vec<i64> = o.intervals.iter().map(|i| i.energy).collect();
        assert_eq!(energies, [100, 100, 100, 100]);
    }

    #[test]
    fn lone_high_takes_precedence_over_lone_low() {
        // 105 < 110 could be a low 105 or a high 110; 105 >= 100 makes it a high 110.
        let o = run(&quarterly(&[100, 110, 105, 120]), NON_RESETTABLE);
        assert_eq!(o.events, [ev(T0 + Q, EventKind::Glitch, 100, 110)]);
        // Below the reading two before, only a low explains it.
        let o = run(&quarterly(&[100, 110, 95, 120]), NON_RESETTABLE);
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Glitch, 110, 95)]);
    }

    #[test]
    fn low_glitch_next_to_high_glitch() {
        let o = run(
            &quarterly(&[1000, 0, 9_999_999, 1100, 1200]),
            NON_RESETTABLE,
        );
        assert_eq!(o.ignored, [T0 + Q, T0 + 2 * Q]);
        assert_eq!(o.events.len(), 2);
        let total: i64 = o.intervals.iter().map(|i| i.energy).sum();
        assert_eq!(total, 200);
        assert!(o.intervals.iter().all(|i| i.energy <= 100));
    }

    #[test]
    fn meter_exchange_confirmed_by_the_next_reading() {
        let o = run(&quarterly(&[1000, 1100, 200, 250, 300]), NON_RESETTABLE);
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Exchange, 1100, 200)]);
        assert!(o.ignored.is_empty());
        assert_eq!(
            o.intervals,
            [
                iv(T0, 100, M),
                iv(T0 + Q, 0, E),
                iv(T0 + 2 * Q, 50, M),
                iv(T0 + 3 * Q, 50, M),
            ]
        );
    }

    #[test]
    fn first_reading_is_never_a_glitch() {
        // No reading before it to contradict it: the drop after it is an exchange.
        let o = run(&quarterly(&[10_000, 100, 110, 120]), NON_RESETTABLE);
        assert_eq!(o.events, [ev(T0 + Q, EventKind::Exchange, 10_000, 100)]);
        assert_eq!(
            o.intervals,
            [iv(T0, 0, E), iv(T0 + Q, 10, M), iv(T0 + 2 * Q, 10, M)]
        );
    }

    #[test]
    fn undecided_drop_then_exchange() {
        let mut r = quarterly(&[1000, 1100, 200]);
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(o.ignored, [T0 + 2 * Q]);
        assert!(o.events.is_empty());
        assert_eq!(o.intervals, [iv(T0, 100, M)]);

        r.push(rd(T0 + 3 * Q, 250));
        let o = run(&r, NON_RESETTABLE);
        assert!(o.ignored.is_empty());
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Exchange, 1100, 200)]);
        assert_eq!(
            o.intervals,
            [iv(T0, 100, M), iv(T0 + Q, 0, E), iv(T0 + 2 * Q, 50, M)]
        );
    }

    #[test]
    fn undecided_drop_then_glitch() {
        let mut r = quarterly(&[1000, 1100, 200]);
        assert_eq!(run(&r, NON_RESETTABLE).ignored, [T0 + 2 * Q]);

        r.push(rd(T0 + 3 * Q, 1160));
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(o.ignored, [T0 + 2 * Q]);
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Glitch, 1100, 200)]);
        assert_eq!(
            o.intervals,
            [iv(T0, 100, M), iv(T0 + Q, 30, E), iv(T0 + 2 * Q, 30, E)]
        );
    }

    #[test]
    fn drop_explained_by_a_lone_high_is_decided_at_once() {
        let o = run(&quarterly(&[1000, 1100, 9000, 1200]), NON_RESETTABLE);
        assert_eq!(o.ignored, [T0 + 2 * Q]);
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Glitch, 1100, 9000)]);
        assert_eq!(o.intervals.len(), 3);
    }

    #[test]
    fn double_zero_is_an_exchange_until_the_counter_comes_back() {
        let mut r = quarterly(&[1000, 1100, 0, 0]);
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(o.events, [ev(T0 + 2 * Q, EventKind::Exchange, 1100, 0)]);
        assert_eq!(
            o.intervals,
            [iv(T0, 100, M), iv(T0 + Q, 0, E), iv(T0 + 2 * Q, 0, M)]
        );

        r.push(rd(T0 + 4 * Q, 1400));
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(
            o.events,
            [
                ev(T0 + 2 * Q, EventKind::Glitch, 1100, 0),
                ev(T0 + 3 * Q, EventKind::Glitch, 1100, 0),
            ]
        );
        assert_eq!(o.ignored, [T0 + 2 * Q, T0 + 3 * Q]);
        assert_eq!(
            o.intervals,
            [
                iv(T0, 100, M),
                iv(T0 + Q, 100, E),
                iv(T0 + 2 * Q, 100, E),
                iv(T0 + 3 * Q, 100, E),
            ]
        );
    }

    #[test]
    fn gap_of_three_days_is_estimated_and_exact() {
        let day = 96 * Q;
        let gain = 1_000_003;
        let r = [
            rd(T0, 0),
            rd(T0 + Q, 100),
            rd(T0 + 2 * Q, 200),
            rd(T0 + 2 * Q + 3 * day, 200 + gain),
            rd(T0 + 3 * Q + 3 * day, 300 + gain),
        ];
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(o.intervals.len(), 2 + 3 * 96 + 1);
        let gap = &o.intervals[2..2 + 3 * 96];
        assert!(gap.iter().all(|i| i.quality == E));
        assert_eq!(gap.iter().map(|i| i.energy).sum::<i64>(), gain);
        // Rounded interpolation spreads the gain evenly.
        let even = gain / (3 * 96);
        assert!(gap.iter().all(|i| i.energy == even || i.energy == even + 1));
        assert_eq!(o.intervals[0].quality, M);
        assert_eq!(o.intervals[1].quality, M);
        assert_eq!(o.intervals.last().unwrap().quality, M);
        let total: i64 = o.intervals.iter().map(|i| i.energy).sum();
        assert_eq!(total, 300 + gain);
    }

    #[test]
    fn readings_every_minute_are_all_measured() {
        let mut value = 7_000_000;
        let r: Vec<Reading> = (0..180)
            .map(|k| {
                value += (k * 37) % 101;
                rd(T0 + 7_000 + k * MIN, value)
            })
            .collect();
        let o = run(&r, NON_RESETTABLE);
        // From T0 + 15 min (the first boundary after 00:07) to T0 + 165 min.
        assert_eq!(o.intervals.len(), 10);
        assert!(o.intervals.iter().all(|i| i.quality == M));
        assert_eq!(o.intervals[0].start_ms, T0 + Q);
        assert!(o.events.is_empty() && o.ignored.is_empty());
    }

    #[test]
    fn quarterly_readings_jittered_by_5s_are_measured() {
        let r: Vec<Reading> = (0..40)
            .map(|k| {
                rd(
                    T0 + k * Q + [-5_000, 0, 5_000, 3_000][k as usize % 4],
                    1000 + k * k,
                )
            })
            .collect();
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(o.intervals.len(), 39);
        assert!(o.intervals.iter().all(|i| i.quality == M));
        // The boundary values stay within the energy of 5 s either side of the readings.
        assert!(o.intervals.iter().all(|i| i.energy >= 0));
    }

    #[test]
    fn a_reading_exactly_on_a_boundary() {
        let r = [
            rd(T0 - 7 * MIN, 1000),
            rd(T0, 1100),
            rd(T0 + 20 * MIN, 1500),
        ];
        let o = run(&r, NON_RESETTABLE);
        // B(T0) is the reading itself; B(T0 + 15 min) = 1100 + 400 * 15 / 20 = 1400.
        assert_eq!(o.intervals, [iv(T0, 300, E)]);
        let o = compute(
            &r,
            NON_RESETTABLE,
            &Params {
                tolerance_ms: 5 * MIN,
            },
        );
        assert_eq!(o.intervals, [iv(T0, 300, M)]);
    }

    #[test]
    fn boundary_values_round_half_up() {
        // 1/3 -> 0, 2/3 -> 1.
        let o = run(&[rd(T0, 0), rd(T0 + 3 * Q, 1)], NON_RESETTABLE);
        let energies: Vec<i64> = o.intervals.iter().map(|i| i.energy).collect();
        assert_eq!(energies, [0, 1, 0]);
        // 1/2 -> 1.
        let o = run(&[rd(T0, 0), rd(T0 + 2 * Q, 1)], NON_RESETTABLE);
        let energies: Vec<i64> = o.intervals.iter().map(|i| i.energy).collect();
        assert_eq!(energies, [1, 0]);
    }

    #[test]
    fn large_values_do_not_overflow() {
        let base = 999_999_999_999_000; // ~1e12 Wh in mWh
        let r = quarterly(&[
            base,
            base + 1_234_567,
            0,
            base + 2_000_000,
            base + 9_999_999,
        ]);
        let o = run(&r, NON_RESETTABLE);
        assert_eq!(o.ignored, [T0 + 2 * Q]);
        let total: i64 = o.intervals.iter().map(|i| i.energy).sum();
        assert_eq!(total, 9_999_999);

        // The whole i64 range over ten years, and back down (an exchange).
        let ten_years = 10 * 365 * 96 * Q;
        let r = [
            rd(T0, i64::MIN),
            rd(T0 + ten_years, i64::MAX),
            rd(T0 + ten_years + Q, 0),
            rd(T0 + ten_years + 2 * Q, i64::MAX),
        ];
        let o = run(&r, NON_RESETTABLE);
        assert!(o.intervals.iter().all(|i| i.energy >= 0));
        let total: i128 = o.intervals.iter().map(|i| i128::from(i.energy)).sum();
        assert_eq!(total, 2 * i128::from(i64::MAX) + 1);
        let o = run(&r, RESETTABLE);
        assert_eq!(o.events.len(), 1);
        assert!(o.intervals.iter().all(|i| i.energy >= 0));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "sorted"))]
    fn unsorted_input_is_normalised_in_release() {
        let sorted = quarterly(&[10, 20, 30, 40]);
        let mut shuffled = vec![sorted[2], sorted[0], sorted[3], sorted[1], sorted[0]];
        assert_eq!(run(&shuffled, NON_RESETTABLE), run(&sorted, NON_RESETTABLE));
        normalize(&mut shuffled);
        assert_eq!(shuffled, sorted);
    }

    /// Decisions look at most 3 readings either side, and at most 3 readings in a row are
    /// glitches: the two facts `CONTEXT` rests on, checked on every sequence of 9 values
    /// drawn from 4 (which covers every order pattern of the 7 readings a decision sees).
    #[test]
    fn exhaustive_decisions_are_local_and_glitch_runs_short() {
        const N: usize = 9;
        let mut r: Vec<Reading> = (0..N).map(|k| rd(k as i64 * Q, 0)).collect();
        for code in 0..4u32.pow(N as u32) {
            let mut c = code;
            for reading in r.iter_mut() {
                reading.value = i64::from(c % 4);
                c /= 4;
            }
            let mut run = 0;
            for k in 0..N {
                let s = status(&r, k);
                let (lo, hi) = (k.saturating_sub(3), (k + 4).min(N));
                assert_eq!(s, status(&r[lo..hi], k - lo), "{r:?} at {k}");
                run = if s == Status::Glitch { run + 1 } else { 0 };
                assert!(run <= 3, "{r:?} at {k}");
            }
            assert_eq!(status(&r, 0), Status::Effective);
        }
    }

    // ----- property tests ---------------------------------------------------------------

    /// One step of a generated series: the time to the next reading, whether that reading is
    /// snapped to a boundary, the counter increase, and maybe an anomaly.
    #[derive(Debug, Clone, Copy)]
    struct Step {
        gap_ms: i64,
        align: bool,
        inc: i64,
        anomaly: u8,
        aux: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        let gap = prop_oneof![
            3 => 1_000i64..60_000,
            4 => 60_000i64..1_200_000,
            3 => Just(QUARTER_MS),
            1 => 3_600_000i64..86_400_000,
            1 => 86_400_000i64..=3 * 86_400_000,
        ];
        let inc = prop_oneof![2 => Just(0i64), 3 => 0i64..1_000, 2 => 0i64..10_000_000];
        (gap, prop::bool::weighted(0.3), inc, 0u8..100, any::<u64>()).prop_map(
            |(gap_ms, align, inc, anomaly, aux)| Step {
                gap_ms,
                align,
                inc,
                anomaly,
                aux,
            },
        )
    }

    /// A realistic series: a counter with random increments (zero included) and gaps from
    /// seconds to days, readings on and off boundaries, and with probability `anomaly_pct`
    /// per reading a lone low glitch (often 0), a lone high glitch (often ×1000) or a restart
    /// at a low value (a reset on a resettable register, an exchange otherwise).
    fn build(start_ts: i64, start: i64, steps: &[Step], anomaly_pct: u8) -> Vec<Reading> {
        let mut ts = start_ts;
        let mut counter = start;
        let mut out = vec![rd(ts, counter)];
        let third = anomaly_pct / 3;
        for s in steps {
            ts += s.gap_ms;
            if s.align {
                ts = ceil_quarter(ts);
            }
            counter += s.inc;
            let aux = s.aux as i64 & i64::MAX;
            let value = if s.anomaly < third {
                if aux % 2 == 0 {
                    0
                } else {
                    aux % counter.max(1)
                }
            } else if s.anomaly < 2 * third {
                if aux % 2 == 0 {
                    counter.max(1) * 1000
                } else {
                    counter + 1 + aux % 100_000_000
                }
            } else if s.anomaly < anomaly_pct {
                counter = aux % 1_000_000;
                counter
            } else {
                counter
            };
            out.push(rd(ts, value));
        }
        out
    }

    fn series(
        len: std::ops::Range<usize>,
        anomaly_pct: u8,
    ) -> impl Strategy<Value = (Register, Vec<Reading>)> {
        (
            any::<bool>(),
            -5 * QUARTER_MS..5 * QUARTER_MS,
            prop_oneof![Just(0i64), 0i64..=1_000_000_000_000],
            prop::collection::vec(step(), len),
        )
            .prop_map(move |(resettable, offset, start, steps)| {
                let readings = build(T0 + offset, start, &steps, anomaly_pct);
                (Register { resettable }, readings)
            })
    }

    /// Structural checks and invariant 2: between any two effective readings on boundaries the
    /// interval energies add up exactly to the adjusted counter difference, recomputed here
    /// independently from the readings, the ignored list and the events.
    fn check_outcome(readings: &[Reading], register: Register, o: &Outcome) {
        // Invariant 1.
        assert!(o.intervals.iter().all(|i| i.energy >= 0), "{o:?}");
        assert!(o.intervals.iter().all(|i| i.quality != Quality::Missing));
        assert!(o
            .intervals
            .windows(2)
            .all(|w| w[0].start_ms + Q == w[1].start_ms));
        assert!(o.events.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
        assert!(o.ignored.windows(2).all(|w| w[0] < w[1]));
        let ignored: BTreeSet<i64> = o.ignored.iter().copied().collect();
        let events: BTreeMap<i64, Event> = o.events.iter().map(|e| (e.ts_ms, *e)).collect();
        let effective: Vec<Reading> = readings
            .iter()
            .filter(|r| !ignored.contains(&r.ts_ms))
            .copied()
            .collect();
        assert_eq!(effective.len() + ignored.len(), readings.len());
        if register.resettable {
            assert!(ignored.is_empty());
        }
        for r in readings.iter().filter(|r| ignored.contains(&r.ts_ms)) {
            if let Some(e) = events.get(&r.ts_ms) {
                assert_eq!((e.kind, e.value), (EventKind::Glitch, r.value));
            }
        }

        // Emitted exactly from the first to the last effective reading.
        match (effective.first(), effective.last()) {
            (Some(first), Some(last))
                if floor_quarter(last.ts_ms) - ceil_quarter(first.ts_ms) >= Q =>
            {
                assert_eq!(o.intervals[0].start_ms, ceil_quarter(first.ts_ms));
                assert_eq!(
                    o.intervals.last().unwrap().start_ms + Q,
                    floor_quarter(last.ts_ms)
                );
            }
            _ => assert!(o.intervals.is_empty()),
        }

        // The adjusted counter at each effective reading.
        let mut cumulative = Vec::with_capacity(effective.len());
        let mut acc = 0i128;
        for (k, r) in effective.iter().enumerate() {
            if k > 0 {
                let prev = effective[k - 1].value;
                let event = events.get(&r.ts_ms).map(|e| e.kind);
                if r.value >= prev {
                    assert_eq!(event, None);
                    acc += i128::from(r.value) - i128::from(prev);
                } else if register.resettable {
                    assert_eq!(event, Some(EventKind::Reset));
                    acc += i128::from(r.value.max(0));
                } else {
                    assert_eq!(event, Some(EventKind::Exchange));
                }
            }
            cumulative.push(acc);
        }

        // Energy summed from the first interval up to each boundary minus the adjusted
        // counter there must be the same constant at every effective reading on a boundary.
        let Some(first) = o.intervals.first() else {
            return;
        };
        let mut prefix = 0i128;
        let mut next = 0;
        let mut constant = None;
        for (r, c) in effective.iter().zip(&cumulative) {
            if floor_quarter(r.ts_ms) != r.ts_ms || r.ts_ms < first.start_ms {
                continue;
            }
            while next < o.intervals.len() && o.intervals[next].start_ms < r.ts_ms {
                prefix += i128::from(o.intervals[next].energy);
                next += 1;
            }
            let d = prefix - c;
            assert_eq!(*constant.get_or_insert(d), d, "sum mismatch at {}", r.ts_ms);
        }
    }

    /// A series, and the same readings shuffled with some of them repeated.
    fn messy_series() -> impl Strategy<Value = (Register, Vec<Reading>, Vec<Reading>)> {
        series(1..60, 15)
            .prop_flat_map(|(register, r)| {
                let dups = prop::collection::vec(0..r.len(), 0..20);
                (Just(register), Just(r), dups)
            })
            .prop_flat_map(|(register, r, dups)| {
                let mut messy = r.clone();
                messy.extend(dups.iter().map(|&d| r[d]));
                (Just(register), Just(r), Just(messy).prop_shuffle())
            })
    }

    /// Items of `o` whose time lies in `[lo, hi]` (intervals entirely).
    fn restrict(o: &Outcome, lo: i64, hi: i64) -> Outcome {
        Outcome {
            intervals: o
                .intervals
                .iter()
                .filter(|i| i.start_ms >= lo && i.start_ms + Q <= hi)
                .copied()
                .collect(),
            events: o
                .events
                .iter()
                .filter(|e| e.ts_ms >= lo && e.ts_ms <= hi)
                .copied()
                .collect(),
            ignored: o
                .ignored
                .iter()
                .filter(|&&t| t >= lo && t <= hi)
                .copied()
                .collect(),
        }
    }

    #[test]
    fn no_interval_across_a_gap_longer_than_the_maximum() {
        let day = 96 * Q;
        let month = 31 * 24 * 3_600_000;
        // Quarter-hourly, then nothing for 40 days, then quarter-hourly again.
        let mut r = quarterly(&[0, 10, 20]);
        r.extend([
            rd(T0 + 2 * Q + 40 * day, 1_000),
            rd(T0 + 3 * Q + 40 * day, 1_010),
        ]);
        let params = Params::default();
        let bounded = compute_bounded(&r, NON_RESETTABLE, &params, month);
        assert_eq!(
            bounded.intervals,
            [
                iv(T0, 10, M),
                iv(T0 + Q, 10, M),
                iv(T0 + 2 * Q + 40 * day, 10, M)
            ]
        );
        // Unbounded, the 40 days are interpolated.
        let unbounded = compute(&r, NON_RESETTABLE, &params);
        assert_eq!(unbounded.intervals.len(), 3 + 40 * 96);
        // A hostile reading a century before the others costs nothing.
        let mut hostile = vec![rd(T0 - 100 * 365 * day, 0)];
        hostile.extend(quarterly(&[5, 6]));
        let o = compute_bounded(&hostile, NON_RESETTABLE, &params, month);
        assert_eq!(o.intervals, [iv(T0, 1, M)]);
        // A gap of exactly the maximum is still interpolated.
        let r = vec![rd(T0, 0), rd(T0 + 4 * Q, 40)];
        assert_eq!(
            compute_bounded(&r, RESETTABLE, &params, 4 * Q)
                .intervals
                .len(),
            4
        );
        assert!(compute_bounded(&r, RESETTABLE, &params, 4 * Q - 1)
            .intervals
            .is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// With a maximum gap, a window still gives the full series' results inside its
        /// CONTEXT margins, and no interval overlaps a gap longer than the maximum.
        #[test]
        fn prop_bounded_window_matches_full_series(
            (register, r) in series(1..90, 25),
            a in any::<Index>(),
            b in any::<Index>(),
            max_gap in prop_oneof![Just(QUARTER_MS), Just(3_600_000i64), Just(86_400_000i64)],
        ) {
            let n = r.len();
            let (i, j) = {
                let (x, y) = (a.index(n + 1), b.index(n + 1));
                (x.min(y), x.max(y))
            };
            prop_assume!(j > i);
            let lo = if i == 0 { i64::MIN } else if i + CONTEXT < j { r[i + CONTEXT].ts_ms } else { i64::MAX };
            let hi = if j == n { i64::MAX } else if j > i + CONTEXT + 1 { r[j - 1 - CONTEXT].ts_ms } else { i64::MIN };
            prop_assume!(lo <= hi);
            let params = Params::default();
            let full = compute_bounded(&r, register, &params, max_gap);
            let window = compute_bounded(&r[i..j], register, &params, max_gap);
            prop_assert_eq!(restrict(&window, lo, hi), restrict(&full, lo, hi));
            prop_assert!(full.intervals.iter().all(|iv| iv.energy >= 0));
            let ignored: BTreeSet<i64> = full.ignored.iter().copied().collect();
            let effective: Vec<i64> =
                r.iter().map(|x| x.ts_ms).filter(|t| !ignored.contains(t)).collect();
            for w in effective.windows(2) {
                if w[1] - w[0] > max_gap {
                    prop_assert!(full
                        .intervals
                        .iter()
                        .all(|iv| iv.start_ms + Q <= w[0] || iv.start_ms >= w[1]));
                }
            }
        }

        /// Invariants 1 and 2 on series with occasional anomalies.
        #[test]
        fn prop_energy_non_negative_and_sums_exact((register, r) in series(1..80, 8)) {
            let o = compute(&r, register, &Params::default());
            check_outcome(&r, register, &o);
        }

        /// Invariants 1 and 2 again where anomalies are dense and adjacent.
        #[test]
        fn prop_invariants_hold_on_dense_anomalies((register, r) in series(1..60, 45)) {
            let o = compute(&r, register, &Params::default());
            check_outcome(&r, register, &o);
        }

        /// Invariant 3: a window gives the full series' results inside its CONTEXT margins.
        #[test]
        fn prop_window_matches_full_series(
            (register, r) in series(1..90, 25),
            a in any::<Index>(),
            b in any::<Index>(),
        ) {
            let n = r.len();
            let (i, j) = {
                let (x, y) = (a.index(n + 1), b.index(n + 1));
                (x.min(y), x.max(y))
            };
            prop_assume!(j > i);
            let lo = if i == 0 { i64::MIN } else if i + CONTEXT < j { r[i + CONTEXT].ts_ms } else { i64::MAX };
            let hi = if j == n { i64::MAX } else if j > i + CONTEXT + 1 { r[j - 1 - CONTEXT].ts_ms } else { i64::MIN };
            prop_assume!(lo <= hi);
            let params = Params::default();
            let full = compute(&r, register, &params);
            let window = compute(&r[i..j], register, &params);
            check_outcome(&r[i..j], register, &window);
            prop_assert_eq!(restrict(&window, lo, hi), restrict(&full, lo, hi));
        }

        /// A late reading at position m changes nothing outside readings m ± CONTEXT.
        #[test]
        fn prop_late_reading_changes_only_its_neighbourhood(
            (register, r) in series(2..90, 25),
            m in any::<Index>(),
        ) {
            let n = r.len();
            let m = m.index(n);
            let mut before = r.clone();
            before.remove(m);
            let params = Params::default();
            let old = compute(&before, register, &params);
            let new = compute(&r, register, &params);
            let lo = m.checked_sub(CONTEXT).map_or(i64::MIN, |k| r[k].ts_ms);
            let hi = r.get(m + CONTEXT).map_or(i64::MAX, |x| x.ts_ms);
            prop_assert_eq!(restrict(&old, i64::MIN, lo), restrict(&new, i64::MIN, lo));
            prop_assert_eq!(restrict(&old, hi, i64::MAX), restrict(&new, hi, i64::MAX));
        }

        /// Invariant 4: shuffled and duplicated input, normalised as the database does, gives
        /// the same outcome.
        #[test]
        fn prop_order_and_duplicates_do_not_matter((register, r, mut messy) in messy_series()) {
            normalize(&mut messy);
            prop_assert_eq!(&messy, &r);
            let params = Params::default();
            prop_assert_eq!(compute(&messy, register, &params), compute(&r, register, &params));
        }

        /// Invariant 5: lone low, lone high and double low glitches injected into a clean series
        /// (at least three readings from each other and from the ends) change no interval.
        #[test]
        fn prop_injected_glitches_change_no_interval(
            (_, clean) in series(8..70, 0),
            spots in prop::collection::vec((any::<Index>(), 0u8..3, any::<u64>(), any::<u64>()), 1..5),
        ) {
            let clean: Vec<Reading> = clean;
            let n = clean.len();
            let mut chosen: BTreeMap<usize, (u8, u64, u64)> = BTreeMap::new();
            for (idx, kind, a, b) in spots {
                // Insert after clean reading g, between g and g + 1, with 2 <= g <= n - 3.
                let g = 2 + idx.index(n - 4);
                if chosen.keys().all(|&h| h.abs_diff(g) >= 4) {
                    chosen.insert(g, (kind, a, b));
                }
            }
            let mut glitched = clean.clone();
            let mut injected = Vec::new();
            for (&g, &(kind, a, b)) in &chosen {
                let (left, right) = (clean[g], clean[g + 1]);
                let below = clean[g - 1].value;
                let room = right.ts_ms - left.ts_ms - 1;
                let low = |x: u64| if x % 2 == 0 { 0 } else { (x % 1_000_000_000_000) as i64 % below };
                let values = match kind {
                    0 if below > 0 => vec![low(a)],
                    1 => vec![if a % 2 == 0 {
                        right.value.max(1) * 1000
                    } else {
                        right.value + 1 + (a % 1_000_000_000) as i64
                    }],
                    2 if below > 0 && room >= 2 => vec![low(a), low(b)],
                    _ => vec![],
                };
                // `room` free milliseconds between the neighbours; place the glitches anywhere.
                let free = room - values.len() as i64 + 1;
                let offset = if free > 0 { (b % free as u64) as i64 } else { 0 };
                for (k, &value) in values.iter().enumerate() {
                    injected.push(rd(left.ts_ms + 1 + offset + k as i64, value));
                }
            }
            glitched.extend(&injected);
            normalize(&mut glitched);
            prop_assume!(glitched.len() == n + injected.len());
            let params = Params::default();
            let with = compute(&glitched, NON_RESETTABLE, &params);
            let without = compute(&clean, NON_RESETTABLE, &params);
            prop_assert_eq!(&with.intervals, &without.intervals);
            let mut ts: Vec<i64> = injected.iter().map(|r| r.ts_ms).collect();
            ts.sort_unstable();
            prop_assert_eq!(&with.ignored, &ts);
            prop_assert!(with.events.iter().all(|e| e.kind == EventKind::Glitch));
            prop_assert_eq!(with.events.len(), injected.len());
            prop_assert!(without.events.is_empty());
        }

        /// Arbitrary values, including the extremes of i64, never panic and keep invariants 1
        /// and 2.
        #[test]
        fn prop_arbitrary_values_are_safe(
            resettable in any::<bool>(),
            raw in prop::collection::vec((0i64..50 * QUARTER_MS, any::<i64>()), 0..40),
        ) {
            let mut r: Vec<Reading> = raw.into_iter().map(|(t, v)| rd(T0 + t, v)).collect();
            normalize(&mut r);
            let register = Register { resettable };
            let o = compute(&r, register, &Params::default());
            check_outcome(&r, register, &o);
        }
    }
}
