//! Writing the evaluator's work: rule states and the alarms their changes raise or clear, in one
//! transaction.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;

use super::super::lifecycle::{self, Subject};
use super::super::rules::{Change, RuleState};
use super::Compiled;

pub(super) async fn persist(
    pool: &PgPool,
    dirty: &HashMap<(i64, String), RuleState>,
    changes: &[(Arc<Compiled>, Subject, Change)],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rules = Vec::with_capacity(dirty.len());
    let mut subjects = Vec::with_capacity(dirty.len());
    let mut states = Vec::with_capacity(dirty.len());
    for ((rule, subject), state) in dirty {
        rules.push(*rule);
        subjects.push(subject.clone());
        states.push(serde_json::to_value(state).unwrap_or_default());
    }
    // A rule deleted meanwhile has no state to keep (the join skips it).
    sqlx::query(
        "INSERT INTO alarm_rule_states (rule_id, subject, state)
         SELECT u.rule_id, u.subject, u.state
         FROM UNNEST($1::int8[], $2::text[], $3::jsonb[]) AS u(rule_id, subject, state)
         JOIN alarm_rules r ON r.id = u.rule_id
         ON CONFLICT (rule_id, subject) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
    )
    .bind(&rules)
    .bind(&subjects)
    .bind(&states)
    .execute(&mut *tx)
    .await?;
    for (rule, subject, change) in changes {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM alarm_rules WHERE id = $1 FOR SHARE")
                .bind(rule.info.id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            continue;
        }
        match *change {
            Change::Raise { at, value } => {
                lifecycle::raise(&mut tx, &rule.info, subject, at, value).await?;
            }
            Change::Clear { at, value } => {
                lifecycle::clear(&mut tx, &rule.info, subject, at, value).await?;
            }
        }
    }
    tx.commit().await
}
