//! Bounded pieces of a queued span: a backfill queues a year per counter (35 040 quarter-hour
//! readings), and loading it whole for 200 counters at once took gigabytes. The worker
//! recomputes each span in pieces of at most `energy.worker_piece_readings` readings and
//! `energy.worker_piece_days` days (the day bound also bounds the quarter-hours interpolated
//! across sparse readings), one piece per counter per round, all in the step's transaction.
//!
//! Pieces may overlap by a reading's worth of context: the engine's results are local (see
//! [`headend_energy::engine::CONTEXT`]), so the exact parts of consecutive pieces agree where
//! they overlap and together cover the whole span, and each round rewrites what it covers.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::drain::Span;
use super::{Step, WorkerError};

/// Default of `energy.worker_piece_readings`: about three weeks of quarter-hour readings.
pub const DEFAULT_PIECE_READINGS: u32 = 2_000;
/// Default of `energy.worker_piece_days`.
pub const DEFAULT_PIECE_DAYS: u32 = 21;

/// How large one piece of a counter's span may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceLimits {
    /// Readings of the span itself (the context readings around it come on top).
    pub readings: u32,
    pub span: chrono::Duration,
}

impl Default for PieceLimits {
    fn default() -> Self {
        Self::new(DEFAULT_PIECE_READINGS, DEFAULT_PIECE_DAYS)
    }
}

impl PieceLimits {
    /// At least two readings (so a piece always moves past its first reading) and one day.
    pub fn new(readings: u32, days: u32) -> Self {
        Self {
            readings: readings.max(2),
            span: chrono::Duration::days(i64::from(days.max(1))),
        }
    }

    /// Where the piece of `span` that starts at `span.from` ends: at the earliest of the span's
    /// end, `span` after its start, and `nth` (the timestamp of the span's
    /// [`readings`](Self::readings)-th reading, when it has that many).
    fn end(&self, span: &Span, nth: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let by_time = span.from.checked_add_signed(self.span).unwrap_or(span.to);
        let mut end = span.to.min(by_time);
        if let Some(nth) = nth.filter(|_| span.readings) {
            end = end.min(nth);
        }
        end
    }

    /// Splits each span into its first piece and what is left of it (`None` once done).
    pub(super) fn split(
        &self,
        spans: &[(i64, Span)],
        nth: &HashMap<i64, DateTime<Utc>>,
    ) -> (Vec<(i64, Span)>, Vec<(i64, Span)>) {
        let mut now = Vec::with_capacity(spans.len());
        let mut rest = Vec::new();
        for (id, span) in spans {
            let end = self.end(span, nth.get(id).copied());
            now.push((*id, Span { to: end, ..*span }));
            if end < span.to {
                // The next piece starts just after this one (microseconds: PostgreSQL's unit).
                let from = end + chrono::Duration::microseconds(1);
                rest.push((*id, Span { from, ..*span }));
            }
        }
        (now, rest)
    }
}

/// For each span with new readings, the timestamp of its `limits.readings`-th reading, when it
/// has that many (one short index range scan per counter).
pub(super) async fn nth_readings(
    tx: &mut Transaction<'_, Postgres>,
    spans: &[(i64, Span)],
    limits: &PieceLimits,
) -> Result<HashMap<i64, DateTime<Utc>>, WorkerError> {
    let spans: Vec<&(i64, Span)> = spans.iter().filter(|(_, s)| s.readings).collect();
    if spans.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = spans.iter().map(|(id, _)| *id).collect();
    let froms: Vec<DateTime<Utc>> = spans.iter().map(|(_, s)| s.from).collect();
    let tos: Vec<DateTime<Utc>> = spans.iter().map(|(_, s)| s.to).collect();
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT q.c, n.ts
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS q(c, f, t)
         CROSS JOIN LATERAL (
             SELECT ts FROM counter_readings
             WHERE counter_id = q.c AND ts >= q.f AND ts <= q.t
             ORDER BY ts OFFSET $4 LIMIT 1) n",
    )
    .bind(&ids)
    .bind(&froms)
    .bind(&tos)
    .bind(i64::from(limits.readings) - 1)
    .fetch_all(&mut **tx)
    .await
    .step("find piece ends")?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64, hour: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + day * 86_400 + hour * 3_600, 0).unwrap()
    }

    fn span(from: DateTime<Utc>, to: DateTime<Utc>, readings: bool) -> Span {
        Span { from, to, readings }
    }

    /// Splits until done; returns the pieces of counter 1.
    fn pieces(
        limits: PieceLimits,
        whole: Span,
        nth: impl Fn(&Span) -> Option<DateTime<Utc>>,
    ) -> Vec<Span> {
        let mut todo = vec![(1, whole)];
        let mut out = Vec::new();
        while !todo.is_empty() {
            let ends: HashMap<i64, DateTime<Utc>> = todo
                .iter()
                .filter_map(|(id, s)| Some((*id, nth(s)?)))
                .collect();
            let (now, rest) = limits.split(&todo, &ends);
            out.extend(now.into_iter().map(|(_, s)| s));
            todo = rest;
            assert!(out.len() < 10_000, "no end");
        }
        out
    }

    #[test]
    fn a_year_is_cut_in_pieces_of_at_most_the_days_that_cover_it_without_gaps() {
        let limits = PieceLimits::new(1_000_000, 21);
        let whole = span(t(0, 0), t(365, 0), true);
        let got = pieces(limits, whole, |_| None);
        assert_eq!(got.len(), 18); // 17 × 21 days + 8 days
        assert_eq!(got[0].from, whole.from);
        assert_eq!(got.last().unwrap().to, whole.to);
        for w in got.windows(2) {
            assert_eq!(w[1].from, w[0].to + chrono::Duration::microseconds(1));
        }
        assert!(got
            .iter()
            .all(|p| p.to - p.from <= chrono::Duration::days(21) && p.readings));
    }

    #[test]
    fn the_nth_reading_ends_a_piece_before_the_days_do() {
        let limits = PieceLimits::new(96, 21);
        // A reading every 15 minutes: the 96th of a piece starting at s is s + 95 quarters.
        let got = pieces(limits, span(t(0, 0), t(10, 0), true), |s| {
            let nth = s.from + chrono::Duration::minutes(15 * 95);
            (nth <= s.to).then_some(nth)
        });
        assert!(got.len() >= 10 && got.len() <= 11, "{}", got.len());
        assert!(got
            .iter()
            .all(|p| p.to - p.from < chrono::Duration::days(1)));
        assert_eq!(got.last().unwrap().to, t(10, 0));
    }

    #[test]
    fn a_small_span_is_one_piece_and_rollup_spans_ignore_reading_counts() {
        let limits = PieceLimits::default();
        let small = span(t(0, 0), t(0, 6), true);
        assert_eq!(pieces(limits, small, |_| None).len(), 1);
        let rollups = span(t(0, 0), t(20, 0), false);
        // A reading bound never applies to a span without new readings.
        assert_eq!(pieces(limits, rollups, |s| Some(s.from)).len(), 1);
    }

    #[test]
    fn limits_below_the_minimum_still_make_progress() {
        let limits = PieceLimits::new(0, 0);
        assert_eq!(limits.readings, 2);
        let got = pieces(limits, span(t(0, 0), t(3, 0), true), |s| {
            Some(s.from + chrono::Duration::hours(1))
        });
        assert_eq!(got.len(), 72);
    }
}
