//! The rule state machine, pure: a condition with hysteresis, on- and off-delays and active
//! hours, stepped sample by sample. No I/O and no clock: the sample's time is the only time, so
//! the same samples always give the same raises and clears, and the state serialises for
//! persistence (a restored state behaves exactly like the one that was saved).
//!
//! ```text
//!            violates                 held ≥ on_delay
//!  Normal ─────────────▶ Pending ───────────────────▶ Active (raise)
//!    ▲  ◀── stops violating ──┘                        │  ▲ back above the band
//!    │                                   clears (past  ▼  │
//!    └──────── held ≥ off_delay ────────── hysteresis) Clearing
//!              (clear)
//! ```
//!
//! Outside the rule's active hours nothing new is raised (a pending delay is dropped); an alarm
//! already active still clears normally, so it cannot stay up forever because the value
//! recovered at night.

mod condition;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use condition::{ActiveHours, Compare, Condition};

/// Where a rule stands for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Normal,
    /// Violating since `since`, waiting for the on-delay.
    Pending { since: DateTime<Utc> },
    /// Raised at `since`.
    Active { since: DateTime<Utc> },
    /// Raised at `raised`; clear since `since`, waiting for the off-delay.
    Clearing {
        raised: DateTime<Utc>,
        since: DateTime<Utc>,
    },
}

/// The persisted state: the phase and the newest sample time seen (older or repeated samples,
/// such as a replay after a restart, are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RuleState {
    #[serde(flatten)]
    pub phase: Phase,
    pub last_ts: Option<DateTime<Utc>>,
}

impl RuleState {
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active { .. } | Phase::Clearing { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Raise { at: DateTime<Utc>, value: f64 },
    Clear { at: DateTime<Utc>, value: f64 },
}

/// Steps `state` with one sample; returns a raise or a clear when one happens.
pub fn step(
    cond: &Condition,
    zone: Tz,
    state: &mut RuleState,
    at: DateTime<Utc>,
    value: f64,
) -> Option<Change> {
    if !value.is_finite() || state.last_ts.is_some_and(|last| at <= last) {
        return None;
    }
    state.last_ts = Some(at);
    let on_delay = chrono::Duration::seconds(i64::from(cond.on_delay_s));
    let off_delay = chrono::Duration::seconds(i64::from(cond.off_delay_s));
    let violates = cond.violates(value);
    let clears = cond.clears(value);
    let raise = |state: &mut RuleState| {
        state.phase = Phase::Active { since: at };
        Some(Change::Raise { at, value })
    };
    let clear = |state: &mut RuleState| {
        state.phase = Phase::Normal;
        Some(Change::Clear { at, value })
    };
    match state.phase {
        Phase::Normal | Phase::Pending { .. } if !violates || !cond.in_active_hours(at, zone) => {
            state.phase = Phase::Normal;
            None
        }
        Phase::Normal if on_delay.is_zero() => raise(state),
        Phase::Normal => {
            state.phase = Phase::Pending { since: at };
            None
        }
        Phase::Pending { since } if at - since >= on_delay => raise(state),
        Phase::Pending { .. } => None,
        Phase::Active { .. } if !clears => None,
        Phase::Active { .. } if off_delay.is_zero() => clear(state),
        Phase::Active { since } => {
            state.phase = Phase::Clearing {
                raised: since,
                since: at,
            };
            None
        }
        Phase::Clearing { raised, .. } if !clears => {
            state.phase = Phase::Active { since: raised };
            None
        }
        Phase::Clearing { since, .. } if at - since >= off_delay => clear(state),
        Phase::Clearing { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::condition::MAX_DELAY_S;
    use super::*;
    use chrono::NaiveTime;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn above(threshold: f64, h: f64, on: u32, off: u32) -> Condition {
        Condition {
            compare: Compare::Above { threshold },
            hysteresis: h,
            on_delay_s: on,
            off_delay_s: off,
            active_hours: None,
        }
    }

    fn run(cond: &Condition, samples: &[(i64, f64)]) -> Vec<(i64, &'static str)> {
        let mut state = RuleState::default();
        samples
            .iter()
            .filter_map(|&(s, v)| {
                step(cond, Tz::UTC, &mut state, t(s), v).map(|c| match c {
                    Change::Raise { .. } => (s, "raise"),
                    Change::Clear { .. } => (s, "clear"),
                })
            })
            .collect()
    }

    #[test]
    fn shorter_than_the_on_delay_raises_nothing() {
        let c = above(250.0, 5.0, 60, 0);
        assert_eq!(
            run(&c, &[(0, 260.0), (30, 261.0), (59, 262.0), (60, 240.0)]),
            []
        );
    }

    #[test]
    fn held_for_the_on_delay_raises_once() {
        let c = above(250.0, 5.0, 60, 0);
        let samples = [
            (0, 260.0),
            (30, 261.0),
            (60, 262.0),
            (90, 263.0),
            (120, 270.0),
        ];
        assert_eq!(run(&c, &samples), [(60, "raise")]);
    }

    #[test]
    fn a_dip_restarts_the_on_delay() {
        let c = above(250.0, 0.0, 60, 0);
        let samples = [
            (0, 260.0),
            (40, 249.0),
            (50, 260.0),
            (100, 260.0),
            (110, 260.0),
        ];
        assert_eq!(run(&c, &samples), [(110, "raise")]);
    }

    #[test]
    fn inside_the_hysteresis_band_does_not_clear() {
        let c = above(250.0, 5.0, 0, 0);
        let samples = [
            (0, 260.0),
            (10, 249.0),
            (20, 245.1),
            (30, 252.0),
            (40, 245.0),
        ];
        assert_eq!(run(&c, &samples), [(0, "raise"), (40, "clear")]);
    }

    #[test]
    fn the_off_delay_needs_the_value_clear_throughout() {
        let c = above(250.0, 0.0, 0, 60);
        let samples = [
            (0, 260.0),
            (10, 240.0),
            (50, 260.0),
            (60, 240.0),
            (100, 240.0),
            (120, 240.0),
        ];
        assert_eq!(run(&c, &samples), [(0, "raise"), (120, "clear")]);
    }

    #[test]
    fn below_and_outside_a_band() {
        let c = Condition {
            compare: Compare::Below { threshold: 49.8 },
            hysteresis: 0.1,
            ..above(0.0, 0.0, 0, 0)
        };
        assert_eq!(
            run(&c, &[(0, 49.9), (1, 49.7), (2, 49.85), (3, 49.9)]),
            [(1, "raise"), (3, "clear")]
        );
        let c = Condition {
            compare: Compare::Outside {
                low: 207.0,
                high: 253.0,
            },
            hysteresis: 2.0,
            ..above(0.0, 0.0, 0, 0)
        };
        assert_eq!(
            run(
                &c,
                &[
                    (0, 230.0),
                    (1, 254.0),
                    (2, 252.0),
                    (3, 251.0),
                    (4, 206.0),
                    (5, 210.0)
                ]
            ),
            [(1, "raise"), (3, "clear"), (4, "raise"), (5, "clear")]
        );
    }

    #[test]
    fn old_repeated_and_non_finite_samples_are_ignored() {
        let c = above(250.0, 0.0, 0, 0);
        let samples = [
            (10, 260.0),
            (10, 200.0),
            (5, 200.0),
            (11, f64::NAN),
            (12, 200.0),
        ];
        assert_eq!(run(&c, &samples), [(10, "raise"), (12, "clear")]);
    }

    #[test]
    fn active_hours_are_local_and_may_span_midnight() {
        let zone: Tz = "Europe/Ljubljana".parse().unwrap();
        let c = Condition {
            active_hours: Some(ActiveHours {
                from: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                to: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
                // Window starting on Friday only.
                days: vec![5],
            }),
            ..above(250.0, 0.0, 0, 0)
        };
        // 2026-11-20 is a Friday; UTC+1 in November.
        let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(c.in_active_hours(utc("2026-11-20T21:30:00Z"), zone)); // 22:30 Fri
        assert!(c.in_active_hours(utc("2026-11-21T04:59:00Z"), zone)); // 05:59 Sat
        assert!(!c.in_active_hours(utc("2026-11-21T05:00:00Z"), zone)); // 06:00 Sat
        assert!(!c.in_active_hours(utc("2026-11-20T20:59:00Z"), zone)); // 21:59 Fri
        assert!(!c.in_active_hours(utc("2026-11-21T21:30:00Z"), zone)); // 22:30 Sat
        assert!(!c.in_active_hours(utc("2026-11-20T02:00:00Z"), zone)); // 03:00 Fri (Thu's)

        // Outside the hours nothing is raised, but an active alarm clears.
        let mut state = RuleState::default();
        assert_eq!(
            step(&c, zone, &mut state, utc("2026-11-20T12:00:00Z"), 300.0),
            None
        );
        assert!(matches!(
            step(&c, zone, &mut state, utc("2026-11-20T22:00:00Z"), 300.0),
            Some(Change::Raise { .. })
        ));
        assert!(matches!(
            step(&c, zone, &mut state, utc("2026-11-21T12:00:00Z"), 100.0),
            Some(Change::Clear { .. })
        ));
    }

    #[test]
    fn validation_refuses_nonsense() {
        assert!(above(250.0, 5.0, 10, 10).validate().is_ok());
        assert!(above(f64::NAN, 0.0, 0, 0).validate().is_err());
        assert!(above(250.0, -1.0, 0, 0).validate().is_err());
        assert!(above(250.0, 0.0, MAX_DELAY_S + 1, 0).validate().is_err());
        let band = |low, high, h| Condition {
            compare: Compare::Outside { low, high },
            hysteresis: h,
            ..above(0.0, 0.0, 0, 0)
        };
        assert!(band(1.0, 0.0, 0.0).validate().is_err());
        assert!(band(0.0, 10.0, 5.0).validate().is_err());
        assert!(band(0.0, 10.0, 4.9).validate().is_ok());
    }

    #[test]
    fn the_condition_document_round_trips() {
        let json = serde_json::json!({
            "op": "outside", "low": 207.0, "high": 253.0, "hysteresis": 2.0,
            "on_delay_s": 60, "active_hours": {"from": "08:00:00", "to": "18:00:00", "days": [1,2,3,4,5]}
        });
        let c: Condition = serde_json::from_value(json).unwrap();
        assert_eq!(
            c.compare,
            Compare::Outside {
                low: 207.0,
                high: 253.0
            }
        );
        let back: Condition = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        let typo = serde_json::json!({"op": "above", "threshold": 1.0, "hysterisis": 2.0});
        assert!(serde_json::from_value::<Condition>(typo).is_err());
        assert_eq!(back, c);
        let state = RuleState {
            phase: Phase::Clearing {
                raised: t(0),
                since: t(5),
            },
            last_ts: Some(t(5)),
        };
        let json = serde_json::to_value(state).unwrap();
        assert_eq!(serde_json::from_value::<RuleState>(json).unwrap(), state);
    }

    fn cond_strategy() -> impl Strategy<Value = Condition> {
        (0u8..3, 0.0f64..20.0, 0u32..120, 0u32..120).prop_map(|(kind, h, on, off)| Condition {
            compare: match kind {
                0 => Compare::Above { threshold: 100.0 },
                1 => Compare::Below { threshold: 100.0 },
                _ => Compare::Outside {
                    low: 50.0,
                    high: 150.0,
                },
            },
            hysteresis: h,
            on_delay_s: on,
            off_delay_s: off,
            active_hours: None,
        })
    }

    fn samples_strategy() -> impl Strategy<Value = Vec<(i64, f64)>> {
        prop::collection::vec((1i64..60, 0.0f64..200.0), 0..80).prop_map(|steps| {
            let mut at = 0;
            steps
                .into_iter()
                .map(|(dt, v)| {
                    at += dt;
                    (at, v)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn raises_and_clears_alternate_and_respect_the_delays(
            cond in cond_strategy(),
            samples in samples_strategy(),
        ) {
            let mut state = RuleState::default();
            let mut active = false;
            for (i, &(s, v)) in samples.iter().enumerate() {
                match step(&cond, Tz::UTC, &mut state, t(s), v) {
                    Some(Change::Raise { .. }) => {
                        prop_assert!(!active, "raised twice");
                        prop_assert!(cond.violates(v));
                        // Every sample within the on-delay before the raise violated.
                        let window = samples[..=i].iter().rev()
                            .take_while(|(s2, _)| s - s2 < i64::from(cond.on_delay_s));
                        for &(_, v2) in window {
                            prop_assert!(cond.violates(v2));
                        }
                        active = true;
                    }
                    Some(Change::Clear { .. }) => {
                        prop_assert!(active, "cleared while not raised");
                        prop_assert!(cond.clears(v), "cleared inside the hysteresis band");
                        let window = samples[..=i].iter().rev()
                            .take_while(|(s2, _)| s - s2 < i64::from(cond.off_delay_s));
                        for &(_, v2) in window {
                            prop_assert!(cond.clears(v2));
                        }
                        active = false;
                    }
                    None => {}
                }
                prop_assert_eq!(state.is_active(), active);
            }
        }

        #[test]
        fn a_restored_state_behaves_like_the_saved_one(
            cond in cond_strategy(),
            samples in samples_strategy(),
            cut in 0usize..80,
        ) {
            let cut = cut.min(samples.len());
            let mut straight = RuleState::default();
            let mut restored = RuleState::default();
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (i, &(s, v)) in samples.iter().enumerate() {
                a.push(step(&cond, Tz::UTC, &mut straight, t(s), v));
                if i == cut {
                    let json = serde_json::to_string(&restored).unwrap();
                    restored = serde_json::from_str(&json).unwrap();
                    // A replay of what came before the restart changes nothing.
                    for &(s2, v2) in &samples[..i] {
                        prop_assert_eq!(step(&cond, Tz::UTC, &mut restored, t(s2), v2), None);
                    }
                }
                b.push(step(&cond, Tz::UTC, &mut restored, t(s), v));
            }
            prop_assert_eq!(a, b);
        }
    }
}
