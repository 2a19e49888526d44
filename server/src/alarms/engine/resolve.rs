//! Exactly-once evaluation across instances, the pure part: which state a (rule, subject) steps
//! from, and stepping one batch's samples from it.
//!
//! Every instance caches the states it has seen, but the `alarm_rule_states` row is the truth.
//! A cached state is stepped from only while its row is still the one the cache last saw (same
//! `version`, same state); otherwise another instance wrote it meanwhile and the batch is stepped
//! from the row instead (samples not newer than the row's `last_ts` are ignored by
//! [`rules::step`], as for a replay). The writer holds the row's lock while it decides, so two
//! instances never step the same state twice.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::super::lifecycle::Subject;
use super::super::rules::{self, Change, Condition, RuleState};
use super::{Compiled, Observation};

/// A rule and a subject key: one row of `alarm_rule_states`.
pub(super) type Key = (i64, String);

/// A row of `alarm_rule_states`; an absent row is the default state at version 0 (what the
/// row is created as).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stored {
    pub state: RuleState,
    pub version: i64,
}

/// What this instance knows of a (rule, subject).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cached {
    /// The state as stepped here: its `last_ts` may be newer than the row's (a newer sample
    /// alone is not worth a write).
    pub state: RuleState,
    /// The row `state` was stepped from, or written as.
    pub row: Stored,
}

impl Cached {
    pub fn loaded(row: Stored) -> Self {
        Self {
            state: row.state,
            row,
        }
    }
}

/// The state to step from: the cached one while the row is unchanged, else the row's. The
/// state is compared as well as the version, so a row written by a release that did not count
/// versions is seen too.
pub(super) fn start(cached: Option<&Cached>, row: &Stored) -> RuleState {
    match cached {
        Some(c) if c.row == *row => c.state,
        _ => row.state,
    }
}

/// The work of one batch for one (rule, subject): its samples, oldest first as they arrived.
pub(super) struct Work {
    pub key: Key,
    pub rule: Arc<Compiled>,
    pub subject: Subject,
    pub samples: Vec<(DateTime<Utc>, f64)>,
}

/// Groups a batch's observations by (rule, subject), in key order (the order rows are locked
/// in, so two writers never wait on each other in a cycle); observations of a rule that is
/// gone are dropped.
pub(super) fn group(obs: Vec<Observation>, rules: &HashMap<i64, Arc<Compiled>>) -> Vec<Work> {
    let mut by_key: std::collections::BTreeMap<Key, Work> = std::collections::BTreeMap::new();
    for o in obs {
        let Some(rule) = rules.get(&o.rule_id) else {
            continue;
        };
        let key = (o.rule_id, o.subject.key.clone());
        by_key
            .entry(key.clone())
            .or_insert_with(|| Work {
                key,
                rule: rule.clone(),
                subject: o.subject,
                samples: Vec::new(),
            })
            .samples
            .push((o.at, o.value));
    }
    by_key.into_values().collect()
}

/// A batch stepped for one (rule, subject).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stepped {
    pub state: RuleState,
    /// The phase changed at some step: the row must be written.
    pub dirty: bool,
    pub changes: Vec<Change>,
    /// The row the batch was judged against.
    pub row: Stored,
}

impl Stepped {
    pub fn writes(&self) -> bool {
        self.dirty || !self.changes.is_empty()
    }

    /// What the cache holds afterwards; `written` is the row's new version when it was written.
    pub fn cached(&self, written: Option<i64>) -> Cached {
        let row = match written {
            Some(version) => Stored {
                state: self.state,
                version,
            },
            None => self.row,
        };
        Cached {
            state: self.state,
            row,
        }
    }
}

/// Steps `samples` from the state given by the cache and the row as it is now.
pub(super) fn step_batch(
    cond: &Condition,
    zone: Tz,
    cached: Option<&Cached>,
    row: Stored,
    samples: &[(DateTime<Utc>, f64)],
) -> Stepped {
    let mut state = start(cached, &row);
    let mut dirty = false;
    let mut changes = Vec::new();
    for &(at, value) in samples {
        let before = state.phase;
        changes.extend(rules::step(cond, zone, &mut state, at, value));
        dirty |= state.phase != before;
    }
    Stepped {
        state,
        dirty,
        changes,
        row,
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::rules::{Compare, Phase};
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn above() -> Condition {
        Condition {
            compare: Compare::Above { threshold: 250.0 },
            hysteresis: 5.0,
            on_delay_s: 0,
            off_delay_s: 0,
            active_hours: None,
        }
    }

    /// One instance: its cache, and the persist step against the shared row (what the locked
    /// transaction does: judge against the row, write it when dirty).
    fn deliver(
        row: &mut Stored,
        cache: &mut Option<Cached>,
        samples: &[(i64, f64)],
    ) -> Vec<&'static str> {
        let samples: Vec<_> = samples.iter().map(|&(s, v)| (t(s), v)).collect();
        let stepped = step_batch(&above(), Tz::UTC, cache.as_ref(), *row, &samples);
        let written = stepped.dirty.then(|| {
            *row = Stored {
                state: stepped.state,
                version: row.version + 1,
            };
            row.version
        });
        *cache = Some(stepped.cached(written));
        stepped
            .changes
            .iter()
            .map(|c| match c {
                Change::Raise { .. } => "raise",
                Change::Clear { .. } => "clear",
            })
            .collect()
    }

    #[test]
    fn alternating_instances_raise_and_clear_once() {
        let mut row = Stored::default();
        let (mut a, mut b) = (None, None);
        let mut seen = Vec::new();
        seen.extend(deliver(&mut row, &mut a, &[(0, 240.0)]));
        seen.extend(deliver(&mut row, &mut b, &[(10, 240.0)]));
        seen.extend(deliver(&mut row, &mut a, &[(20, 260.0)]));
        // B's cache is Normal, the row Active: B steps from the row and raises nothing.
        seen.extend(deliver(&mut row, &mut b, &[(30, 261.0)]));
        seen.extend(deliver(&mut row, &mut a, &[(40, 262.0)]));
        // A below the band: cleared once; B's stale Active must not clear again.
        seen.extend(deliver(&mut row, &mut b, &[(50, 240.0)]));
        seen.extend(deliver(&mut row, &mut a, &[(60, 240.0)]));
        seen.extend(deliver(&mut row, &mut a, &[(70, 260.0)]));
        seen.extend(deliver(&mut row, &mut b, &[(80, 260.0)]));
        assert_eq!(seen, ["raise", "clear", "raise"]);
        assert_eq!(row.version, 3);
    }

    #[test]
    fn a_stale_cache_still_clears_from_the_row() {
        // A once saw the meter Normal; B raised since. All later samples reach A only: A must
        // clear from the row, not sit on its own Normal forever.
        let mut row = Stored::default();
        let (mut a, mut b) = (None, None);
        assert!(deliver(&mut row, &mut a, &[(0, 240.0)]).is_empty());
        assert_eq!(deliver(&mut row, &mut b, &[(10, 260.0)]), ["raise"]);
        assert_eq!(deliver(&mut row, &mut a, &[(20, 240.0)]), ["clear"]);
        assert_eq!(row.state.phase, Phase::Normal);
    }

    #[test]
    fn samples_older_than_the_row_are_ignored() {
        let mut row = Stored::default();
        let (mut a, mut b) = (None, None);
        assert_eq!(deliver(&mut row, &mut a, &[(100, 260.0)]), ["raise"]);
        // B's batch is older backlog: judged from the row, whose last_ts is newer.
        assert!(deliver(&mut row, &mut b, &[(50, 240.0), (60, 270.0)]).is_empty());
        assert_eq!(row.state.last_ts, Some(t(100)));
    }

    #[test]
    fn the_cache_is_used_while_the_row_is_unchanged() {
        let row = Stored {
            state: RuleState::default(),
            version: 4,
        };
        let newer = RuleState {
            phase: Phase::Normal,
            last_ts: Some(t(500)),
        };
        let cached = Cached { state: newer, row };
        assert_eq!(start(Some(&cached), &row), newer);
        let moved = Stored { version: 5, ..row };
        assert_eq!(start(Some(&cached), &moved), moved.state);
        // Same version, other state: written by a release that does not count versions.
        let other = Stored {
            state: RuleState {
                phase: Phase::Active { since: t(1) },
                last_ts: Some(t(1)),
            },
            version: 4,
        };
        assert_eq!(start(Some(&cached), &other), other.state);
        assert_eq!(start(None, &row), row.state);
    }

    #[test]
    fn a_phase_change_and_back_is_still_written() {
        let cond = Condition {
            on_delay_s: 60,
            ..above()
        };
        let stepped = step_batch(
            &cond,
            Tz::UTC,
            None,
            Stored::default(),
            &[(t(0), 260.0), (t(10), 240.0)],
        );
        assert!(stepped.dirty && stepped.changes.is_empty());
        assert_eq!(stepped.state.phase, Phase::Normal);
    }
}
