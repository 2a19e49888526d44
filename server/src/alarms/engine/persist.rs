//! Writing the evaluator's work: rule states and the alarms their changes raise or clear, in one
//! transaction, judged against the rows as they are at commit time (several instances share
//! them; see [`super::resolve`]).
//!
//! Locks, always in this order so two writers never deadlock: the rules (`FOR SHARE`, by id,
//! the order a rule edit takes them in before it drops states), then the state rows
//! (`FOR UPDATE`, by rule and subject; missing rows are created first, in the same order, so
//! there is a row to lock), then the alarms of each (rule, subject) in `lifecycle`.

use std::collections::{HashMap, HashSet};

use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::super::lifecycle;
use super::super::rules::{Change, RuleState};
use super::resolve::{step_batch, Cached, Key, Stepped, Stored, Work};

/// The rows of `keys` as they are (absent ones are left out).
async fn rows<'e>(
    db: impl PgExecutor<'e>,
    keys: &[&Key],
    lock: bool,
) -> Result<HashMap<Key, Stored>, sqlx::Error> {
    let (rules, subjects): (Vec<i64>, Vec<&str>) =
        keys.iter().map(|(r, s)| (*r, s.as_str())).unzip();
    let sql = format!(
        "SELECT s.rule_id, s.subject, s.state, s.version FROM alarm_rule_states s
         JOIN UNNEST($1::int8[], $2::text[]) AS u(rule_id, subject)
              ON s.rule_id = u.rule_id AND s.subject = u.subject
         ORDER BY s.rule_id, s.subject {}",
        if lock { "FOR UPDATE OF s" } else { "" }
    );
    let found: Vec<(i64, String, Json<serde_json::Value>, i64)> = sqlx::query_as(&sql)
        .bind(&rules)
        .bind(&subjects)
        .fetch_all(db)
        .await?;
    Ok(found
        .into_iter()
        .map(|(rule, subject, state, version)| {
            let state = decode_state(rule, &subject, state.0);
            ((rule, subject), Stored { state, version })
        })
        .collect())
}

/// A state this build cannot read starts over as normal (the open alarm, if any, stays open
/// and is cleared by the next clear), rather than stopping the evaluator.
pub(super) fn decode_state(rule: i64, subject: &str, state: serde_json::Value) -> RuleState {
    serde_json::from_value(state).unwrap_or_else(|e| {
        tracing::warn!(rule, subject, error = %e, "alarm rule state not readable; starting over");
        RuleState::default()
    })
}

/// Steps `work` against the rows without a lock: enough when nothing is to be written (the
/// batch is then ordered at the instant of that read). `None` when something is to be written.
pub(super) async fn judge_unlocked(
    pool: &PgPool,
    work: &[Work],
    cache: &HashMap<Key, Cached>,
) -> Result<Option<Vec<Stepped>>, sqlx::Error> {
    let keys: Vec<&Key> = work.iter().map(|w| &w.key).collect();
    let found = rows(pool, &keys, false).await?;
    let stepped = judge(work, cache, &found);
    Ok((!stepped.iter().any(Stepped::writes)).then_some(stepped))
}

fn judge<'w>(
    work: impl IntoIterator<Item = &'w Work>,
    cache: &HashMap<Key, Cached>,
    found: &HashMap<Key, Stored>,
) -> Vec<Stepped> {
    work.into_iter()
        .map(|w| {
            let row = found.get(&w.key).copied().unwrap_or_default();
            let c = &w.rule;
            step_batch(
                &c.info.condition,
                c.zone,
                cache.get(&w.key),
                row,
                &w.samples,
            )
        })
        .collect()
}

/// The locked path: judges `work` against the locked rows, writes the states that changed and
/// applies the raises and clears, all in one transaction. Returns what the cache holds after
/// the commit and the changes made (a rule deleted meanwhile is skipped).
pub(super) async fn persist(
    pool: &PgPool,
    work: &[Work],
    cache: &HashMap<Key, Cached>,
) -> Result<Vec<(Key, Cached, Vec<Change>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut ids: Vec<i64> = work.iter().map(|w| w.key.0).collect();
    ids.dedup();
    let live: HashSet<i64> =
        sqlx::query_scalar("SELECT id FROM alarm_rules WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let work: Vec<&Work> = work.iter().filter(|w| live.contains(&w.key.0)).collect();
    let keys: Vec<&Key> = work.iter().map(|w| &w.key).collect();
    create_missing(&mut tx, &keys).await?;
    let found = rows(&mut *tx, &keys, true).await?;
    let out: Vec<(&Work, Stepped)> = work
        .iter()
        .copied()
        .zip(judge(work.iter().copied(), cache, &found))
        .collect();
    let written: Vec<(Key, RuleState)> = out
        .iter()
        .filter(|(_, s)| s.dirty)
        .map(|(w, s)| (w.key.clone(), s.state))
        .collect();
    let versions = write_states(&mut tx, &written).await?;
    for (w, stepped) in &out {
        for change in &stepped.changes {
            match *change {
                Change::Raise { at, value } => {
                    lifecycle::raise(&mut tx, &w.rule.info, &w.subject, at, value).await?;
                }
                Change::Clear { at, value } => {
                    lifecycle::clear(&mut tx, &w.rule.info, &w.subject, at, value).await?;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(out
        .into_iter()
        .map(|(w, stepped)| {
            let cached = stepped.cached(versions.get(&w.key).copied());
            (w.key.clone(), cached, stepped.changes)
        })
        .collect())
}

/// Creates the rows not there yet (default state, version 0: what an absent row means), so
/// that every (rule, subject) of the batch has a row to lock.
async fn create_missing(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[&Key],
) -> Result<(), sqlx::Error> {
    let (rules, subjects): (Vec<i64>, Vec<&str>) =
        keys.iter().map(|(r, s)| (*r, s.as_str())).unzip();
    let initial = serde_json::to_value(RuleState::default()).unwrap_or_default();
    sqlx::query(
        "INSERT INTO alarm_rule_states (rule_id, subject, state)
         SELECT u.rule_id, u.subject, $3 FROM UNNEST($1::int8[], $2::text[]) AS u(rule_id, subject)
         ORDER BY u.rule_id, u.subject
         ON CONFLICT (rule_id, subject) DO NOTHING",
    )
    .bind(&rules)
    .bind(&subjects)
    .bind(initial)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the changed states (rows already locked), each with its version counted up.
async fn write_states(
    tx: &mut Transaction<'_, Postgres>,
    written: &[(Key, RuleState)],
) -> Result<HashMap<Key, i64>, sqlx::Error> {
    if written.is_empty() {
        return Ok(HashMap::new());
    }
    let mut rules = Vec::with_capacity(written.len());
    let mut subjects = Vec::with_capacity(written.len());
    let mut states = Vec::with_capacity(written.len());
    for ((rule, subject), state) in written {
        rules.push(*rule);
        subjects.push(subject.as_str());
        states.push(serde_json::to_value(state).unwrap_or_default());
    }
    let versions: Vec<(i64, String, i64)> = sqlx::query_as(
        "UPDATE alarm_rule_states s SET state = u.state, version = s.version + 1, updated_at = now()
         FROM UNNEST($1::int8[], $2::text[], $3::jsonb[]) AS u(rule_id, subject, state)
         WHERE s.rule_id = u.rule_id AND s.subject = u.subject
         RETURNING s.rule_id, s.subject, s.version",
    )
    .bind(&rules)
    .bind(&subjects)
    .bind(&states)
    .fetch_all(&mut **tx)
    .await?;
    Ok(versions
        .into_iter()
        .map(|(rule, subject, version)| ((rule, subject), version))
        .collect())
}
