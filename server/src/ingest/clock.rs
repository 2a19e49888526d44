//! Turning a gateway's `local_time` (wall-clock, no zone) into UTC.
//!
//! Policy, documented in ARCHITECTURE.md:
//! - The wall time is read in the gateway's zone (its site's, else its own setting).
//! - A time in the hour a DST change repeats (fall back) has two instants. We take the one
//!   closest to the receive time, which is right for every live push; a backlog message
//!   (received more than an hour after the later instant) takes the earlier one. The rule depends only
//!   on (local_time, received_at), both journaled, so a replay resolves it identically.
//!   The reading is flagged `DST_AMBIGUOUS`.
//! - A time in the hour a DST change skips (spring forward) does not exist; the gateway clock
//!   has not switched yet. It is read with the offset in force before the gap (02:30 in a
//!   Europe/Ljubljana gap is 01:30 UTC) and flagged `DST_GAP`.
//! - A time that is missing, not a date, or ahead of the receive time by more than the
//!   tolerance is a clock fault: the receive time is used and the reading flagged `CLOCK_FAULT`.
//!   Old times are legitimate (backlog after an outage) and are kept.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

pub const CLOCK_FAULT: i16 = 1;
pub const DST_AMBIGUOUS: i16 = 2;
pub const DST_GAP: i16 = 4;
/// On counter readings: dated before the backlog horizon (`energy.backlog_horizon_days` before
/// the receive time). The reading is stored, as the meter's own number, but never turned into
/// intervals, and the message carries a partial reject that says so.
pub const BEYOND_HORIZON: i16 = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub ts: DateTime<Utc>,
    pub flags: i16,
    /// Gateway clock minus receive time, when the gateway gave a readable time.
    pub skew_s: Option<f64>,
    /// Why the receive time was used, for the reject log.
    pub fault: Option<String>,
}

pub fn resolve(
    local_time: Option<&str>,
    zone: Tz,
    received_at: DateTime<Utc>,
    tolerance: Duration,
) -> Resolved {
    let fault = |reason: String| Resolved {
        ts: received_at,
        flags: CLOCK_FAULT,
        skew_s: None,
        fault: Some(reason),
    };
    let Some(raw) = local_time else {
        return fault("local_time is missing".into());
    };
    let naive = match sg_wire::time::parse_local_time(raw) {
        Ok(naive) => naive,
        Err(e) => return fault(format!("local_time {raw:?}: {e}")),
    };
    let (ts, flags) = to_utc(naive, zone, received_at);
    let skew = ts - received_at;
    let skew_s = skew.num_milliseconds() as f64 / 1000.0;
    if skew > tolerance {
        return Resolved {
            ts: received_at,
            flags: flags | CLOCK_FAULT,
            skew_s: Some(skew_s),
            fault: Some(format!(
                "local_time {raw:?} is {skew_s:.0} s ahead of the receive time (tolerance {} s)",
                tolerance.num_seconds()
            )),
        };
    }
    Resolved {
        ts,
        flags,
        skew_s: Some(skew_s),
        fault: None,
    }
}

fn to_utc(naive: NaiveDateTime, zone: Tz, received_at: DateTime<Utc>) -> (DateTime<Utc>, i16) {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => (t.with_timezone(&Utc), 0),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            let (early, late) = if a <= b { (a, b) } else { (b, a) };
            // Live: received within an hour of the later instant; then the nearer one.
            let live = received_at - late < Duration::hours(1);
            let pick = if live && (late - received_at).abs() < (early - received_at).abs() {
                late
            } else {
                early
            };
            (pick, DST_AMBIGUOUS)
        }
        LocalResult::None => {
            // The offset in force shortly before the gap; gaps are at most a few hours.
            let before = naive - Duration::hours(3);
            let offset = match zone.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.offset().fix(),
                LocalResult::None => zone.offset_from_utc_datetime(&before).fix(),
            };
            let utc = naive - Duration::seconds(i64::from(offset.local_minus_utc()));
            (utc.and_utc(), DST_GAP)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    const LJ: Tz = chrono_tz::Europe::Ljubljana;

    /// `local` read in Ljubljana, received at `received`, with a 5-minute tolerance.
    fn in_lj(local: &str, received: &str) -> Resolved {
        resolve(Some(local), LJ, utc(received), Duration::seconds(300))
    }

    #[test]
    fn plain_winter_time() {
        let r = in_lj("25.02.2020 13:18:42", "2020-02-25T12:18:50Z");
        assert_eq!(r.ts, utc("2020-02-25T12:18:42Z"));
        assert_eq!(r.flags, 0);
        assert_eq!(r.skew_s, Some(-8.0));
    }

    #[test]
    fn repeated_hour_picks_the_instant_nearest_reception() {
        // 2026-10-25 02:30 happens at 00:30Z (CEST) and at 01:30Z (CET).
        let first = in_lj("25.10.2026 02:30:00", "2026-10-25T00:30:05Z");
        assert_eq!(first.ts, utc("2026-10-25T00:30:00Z"));
        assert_eq!(first.flags, DST_AMBIGUOUS);
        let second = in_lj("25.10.2026 02:30:00", "2026-10-25T01:30:05Z");
        assert_eq!(second.ts, utc("2026-10-25T01:30:00Z"));
        // A backlog received days later resolves to the earlier instant.
        let backlog = in_lj("25.10.2026 02:30:00", "2026-10-28T09:00:00Z");
        assert_eq!(backlog.ts, utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn skipped_hour_uses_the_offset_before_the_gap() {
        // 2026-03-29 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let r = in_lj("29.03.2026 02:30:00", "2026-03-29T01:30:10Z");
        assert_eq!(r.ts, utc("2026-03-29T01:30:00Z"));
        assert_eq!(r.flags, DST_GAP);
        // Just before the gap is ordinary winter time.
        let r = in_lj("29.03.2026 01:59:50", "2026-03-29T00:59:55Z");
        assert_eq!(r.ts, utc("2026-03-29T00:59:50Z"));
        assert_eq!(r.flags, 0);
    }

    #[test]
    fn future_missing_and_garbage_are_clock_faults() {
        let now = utc("2026-11-21T10:00:00Z");
        for raw in [
            Some("21.11.2031 10:00:00"),
            None,
            Some("99.99.2020 25:61:00"),
        ] {
            let r = resolve(raw, LJ, now, Duration::seconds(300));
            assert_eq!(r.ts, now, "{raw:?}");
            assert_eq!(r.flags & CLOCK_FAULT, CLOCK_FAULT);
            assert!(r.fault.is_some());
        }
    }

    #[test]
    fn old_timestamps_are_kept() {
        let r = in_lj("14.04.2020 17:45:30", "2026-11-21T10:00:00Z");
        assert_eq!(r.ts, utc("2020-04-14T15:45:30Z"));
        assert_eq!(r.flags, 0);
    }

    #[test]
    fn half_hour_zones_work() {
        let r = resolve(
            Some("01.06.2026 12:00:00"),
            chrono_tz::Asia::Kolkata,
            utc("2026-06-01T06:30:00Z"),
            Duration::seconds(300),
        );
        assert_eq!(r.ts, utc("2026-06-01T06:30:00Z"));
    }
}
