//! Rule definitions (validated, scoped by site) and the alarm read side.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgPool, Row};

use super::rules::Condition;
use super::{Actions, AlarmError, Severity, Watch};
use crate::auth::Scope;

/// An alarm rule as written. The target (panel, circuit, meter) and the shed relay must belong
/// to the rule's site.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlarmRuleInput)]
pub struct RuleInput {
    pub site_id: i64,
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub severity: Severity,
    /// `site`, `panel`, `circuit` or `meter`, with the matching id.
    pub target: String,
    #[serde(default)]
    pub panel_id: Option<i64>,
    #[serde(default)]
    pub circuit_id: Option<i64>,
    #[serde(default)]
    pub device_id: Option<i64>,
    pub watch: Watch,
    pub condition: Condition,
    #[serde(default)]
    pub actions: Actions,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = AlarmRule)]
pub struct RuleView {
    pub id: i64,
    pub site_id: i64,
    pub name: String,
    pub enabled: bool,
    #[schema(value_type = Severity)]
    pub severity: String,
    /// `site`, `panel`, `circuit` or `meter`.
    pub target: String,
    pub panel_id: Option<i64>,
    pub circuit_id: Option<i64>,
    pub device_id: Option<i64>,
    #[schema(value_type = Watch)]
    pub watch: Json<Watch>,
    #[schema(value_type = Condition)]
    pub condition: Json<Condition>,
    #[schema(value_type = Actions)]
    pub actions: Json<Actions>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const RULE_SQL: &str = "SELECT id, site_id, name, enabled, severity, target, panel_id, circuit_id,
    device_id, watch, condition, actions, created_at, updated_at FROM alarm_rules";

pub async fn list_rules(
    pool: &PgPool,
    scope: &Scope,
    site: Option<i64>,
) -> Result<Vec<RuleView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{RULE_SQL} WHERE ($1::int8[] IS NULL OR site_id = ANY($1))
         AND ($2::int8 IS NULL OR site_id = $2) ORDER BY site_id, name, id"
    ))
    .bind(scope.site_ids())
    .bind(site)
    .fetch_all(pool)
    .await
}

pub async fn get_rule(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
) -> Result<Option<RuleView>, sqlx::Error> {
    let sql = format!("{RULE_SQL} WHERE id = $2 AND ($1::int8[] IS NULL OR site_id = ANY($1))");
    one_in_scope(pool, &sql, scope, id).await
}

/// The row `sql` selects with the scope's sites as `$1` and an id as `$2`.
async fn one_in_scope<T>(
    pool: &PgPool,
    sql: &str,
    scope: &Scope,
    id: i64,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(scope.site_ids())
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Checks the document and that every object it names belongs to the rule's site.
async fn validate(pool: &PgPool, scope: &Scope, input: &RuleInput) -> Result<(), AlarmError> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AlarmError::Invalid("a name is 1 to 200 characters".into()));
    }
    input.watch.validate().map_err(AlarmError::Invalid)?;
    input.condition.validate().map_err(AlarmError::Invalid)?;
    input.actions.validate().map_err(AlarmError::Invalid)?;
    let in_scope = scope
        .site_ids()
        .is_none_or(|ids| ids.contains(&input.site_id));
    let site: Option<i64> = sqlx::query_scalar("SELECT id FROM sites WHERE id = $1")
        .bind(input.site_id)
        .fetch_optional(pool)
        .await?;
    if site.is_none() || !in_scope {
        return Err(AlarmError::NotFound("site"));
    }
    let ids = (input.panel_id, input.circuit_id, input.device_id);
    let owner: Option<Option<i64>> = match (input.target.as_str(), ids) {
        ("site", (None, None, None)) => None,
        ("panel", (Some(id), None, None)) => Some(
            sqlx::query_scalar("SELECT site_id FROM panels WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?,
        ),
        ("circuit", (None, Some(id), None)) => Some(
            sqlx::query_scalar(
                "SELECT p.site_id FROM circuits c JOIN panels p ON p.id = c.panel_id WHERE c.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?,
        ),
        ("meter", (None, None, Some(id))) => Some(
            sqlx::query_scalar(
                "SELECT g.site_id FROM devices d JOIN gateways g ON g.id = d.gateway_id
                 WHERE d.id = $1 AND d.kind = 'meter'",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            .flatten(),
        ),
        _ => {
            return Err(AlarmError::Invalid(
                "target is site (no id), panel (panel_id), circuit (circuit_id) or meter (device_id)"
                    .into(),
            ))
        }
    };
    if let Some(owner) = owner {
        if owner != Some(input.site_id) {
            return Err(AlarmError::NotFound(
                "target (it must be in the rule's site)",
            ));
        }
    }
    if let Some(relay) = input.actions.shed_relay {
        let site: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT g.site_id FROM devices d JOIN gateways g ON g.id = d.gateway_id
             WHERE d.id = $1 AND d.kind = 'relay'",
        )
        .bind(relay)
        .fetch_optional(pool)
        .await?;
        if site.flatten() != Some(input.site_id) {
            return Err(AlarmError::NotFound(
                "shed_relay (a relay of the rule's site)",
            ));
        }
    }
    Ok(())
}

pub async fn create_rule(
    pool: &PgPool,
    scope: &Scope,
    user: i64,
    input: &RuleInput,
) -> Result<i64, AlarmError> {
    validate(pool, scope, input).await?;
    let insert = sqlx::query(
        "INSERT INTO alarm_rules (site_id, name, enabled, severity, target, panel_id, circuit_id,
             device_id, watch, condition, actions, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    );
    let id: i64 = bind_rule(insert, input)
        .bind(user)
        .fetch_one(pool)
        .await?
        .try_get("id")?;
    tracing::info!(rule = id, site = input.site_id, "alarm rule created");
    Ok(id)
}

/// Binds the rule's columns as `$1` to `$11`: site_id, name, enabled, severity, target,
/// panel_id, circuit_id, device_id, watch, condition, actions.
fn bind_rule<'q>(query: PgQuery<'q>, input: &'q RuleInput) -> PgQuery<'q> {
    query
        .bind(input.site_id)
        .bind(input.name.trim())
        .bind(input.enabled)
        .bind(input.severity.as_str())
        .bind(&input.target)
        .bind(input.panel_id)
        .bind(input.circuit_id)
        .bind(input.device_id)
        .bind(Json(&input.watch))
        .bind(Json(&input.condition))
        .bind(Json(&input.actions))
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Replaces a rule. Its evaluation state is kept when what it watches is unchanged (a new
/// threshold applies to the next sample); otherwise the state is dropped and its open alarms
/// stay as they are, to be acknowledged.
pub async fn update_rule(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    input: &RuleInput,
) -> Result<(), AlarmError> {
    let current = get_rule(pool, scope, id)
        .await?
        .ok_or(AlarmError::NotFound("alarm rule"))?;
    validate(pool, scope, input).await?;
    let mut tx = pool.begin().await?;
    let update = sqlx::query(
        "UPDATE alarm_rules SET site_id = $1, name = $2, enabled = $3, severity = $4, target = $5,
             panel_id = $6, circuit_id = $7, device_id = $8, watch = $9, condition = $10,
             actions = $11, updated_at = now()
         WHERE id = $12",
    );
    bind_rule(update, input).bind(id).execute(&mut *tx).await?;
    let reason = if !input.enabled {
        Some("rule disabled")
    } else if current.watch.0 != input.watch || current.site_id != input.site_id {
        Some("rule changed what it watches")
    } else {
        None
    };
    if let Some(reason) = reason {
        sqlx::query("DELETE FROM alarm_rule_states WHERE rule_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        close_active(&mut tx, id, reason).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn delete_rule(pool: &PgPool, scope: &Scope, id: i64) -> Result<(), AlarmError> {
    let mut tx = pool.begin().await?;
    close_active(&mut tx, id, "rule deleted").await?;
    let deleted = sqlx::query(
        "DELETE FROM alarm_rules WHERE id = $1 AND ($2::int8[] IS NULL OR site_id = ANY($2))",
    )
    .bind(id)
    .bind(scope.site_ids())
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(AlarmError::NotFound("alarm rule"));
    }
    tx.commit().await?;
    Ok(())
}

/// Clears the active alarms of a rule that stops watching them (disabled, deleted, or now
/// watching something else): nothing would ever clear them otherwise. Their history says why;
/// nobody is notified (the value did not recover). Still to be acknowledged.
async fn close_active(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rule: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE alarms SET active = false, cleared_at = now(), updated_at = now()
         WHERE rule_id = $1 AND active RETURNING id",
    )
    .bind(rule)
    .fetch_all(&mut **tx)
    .await?;
    for id in ids {
        sqlx::query(
            "INSERT INTO alarm_events (alarm_id, kind, comment) VALUES ($1, 'cleared', $2)",
        )
        .bind(id)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An alarm as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Alarm)]
pub struct AlarmView {
    pub id: i64,
    pub rule_id: Option<i64>,
    pub rule_name: String,
    pub site_id: i64,
    pub site: String,
    pub subject: String,
    pub device_id: Option<i64>,
    pub gateway_id: Option<i64>,
    #[schema(value_type = Severity)]
    pub severity: String,
    pub message: String,
    /// `active`, `active_acknowledged`, `cleared_unacknowledged` or `closed`.
    pub state: String,
    pub active: bool,
    pub raised_at: DateTime<Utc>,
    pub raised_value: Option<f64>,
    pub raise_count: i32,
    pub cleared_at: Option<DateTime<Utc>>,
    pub cleared_value: Option<f64>,
    pub acked_at: Option<DateTime<Utc>>,
    pub acked_email: Option<String>,
    pub ack_comment: Option<String>,
    pub shelved_until: Option<DateTime<Utc>>,
    pub shelved: bool,
    pub escalated_at: Option<DateTime<Utc>>,
}

const ALARM_SQL: &str = "SELECT a.id, a.rule_id, a.rule_name, a.site_id, s.name AS site,
    a.subject, a.device_id, a.gateway_id, a.severity, a.message,
    CASE WHEN a.active AND a.acked_at IS NULL THEN 'active'
         WHEN a.active THEN 'active_acknowledged'
         WHEN a.acked_at IS NULL THEN 'cleared_unacknowledged'
         ELSE 'closed' END AS state,
    a.active, a.raised_at, a.raised_value, a.raise_count, a.cleared_at, a.cleared_value,
    a.acked_at, a.acked_email, a.ack_comment, a.shelved_until,
    COALESCE(a.shelved_until > now(), false) AS shelved, a.escalated_at
    FROM alarms a JOIN sites s ON s.id = a.site_id";

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlarmFilter {
    /// Only this site.
    pub site_id: Option<i64>,
    /// `info`, `warning` or `critical`.
    #[param(value_type = Option<Severity>)]
    pub severity: Option<String>,
    /// `open` (default: active or unacknowledged), `active`, or `all`.
    pub state: Option<String>,
    /// At most this many (default 500, at most 5000).
    pub limit: Option<i64>,
}

/// Active alarms first, then the most recent; critical before warning before info.
pub async fn list_alarms(
    pool: &PgPool,
    scope: &Scope,
    filter: &AlarmFilter,
) -> Result<Vec<AlarmView>, AlarmError> {
    let state = filter.state.as_deref().unwrap_or("open");
    let state_sql = match state {
        "open" => "(a.active OR a.acked_at IS NULL)",
        "active" => "a.active",
        "all" => "true",
        _ => return Err(AlarmError::Invalid("state is open, active or all".into())),
    };
    if let Some(s) = &filter.severity {
        if Severity::parse(s).is_none() {
            return Err(AlarmError::Invalid(
                "severity is info, warning or critical".into(),
            ));
        }
    }
    let limit = filter.limit.unwrap_or(500).clamp(1, 5000);
    Ok(sqlx::query_as(&format!(
        "{ALARM_SQL} WHERE ($1::int8[] IS NULL OR a.site_id = ANY($1))
         AND ($2::int8 IS NULL OR a.site_id = $2) AND ($3::text IS NULL OR a.severity = $3)
         AND {state_sql}
         ORDER BY a.active DESC,
                  CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                  a.raised_at DESC, a.id DESC
         LIMIT $4"
    ))
    .bind(scope.site_ids())
    .bind(filter.site_id)
    .bind(&filter.severity)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn get_alarm(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
) -> Result<Option<AlarmView>, sqlx::Error> {
    let sql =
        format!("{ALARM_SQL} WHERE a.id = $2 AND ($1::int8[] IS NULL OR a.site_id = ANY($1))");
    one_in_scope(pool, &sql, scope, id).await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = AlarmEvent)]
pub struct EventView {
    pub id: i64,
    pub alarm_id: i64,
    pub at: DateTime<Utc>,
    /// `raised`, `reraised`, `cleared`, `acknowledged`, `shelved`, `unshelved`, `escalated`
    /// or `action_failed`.
    pub kind: String,
    pub actor: Option<String>,
    pub comment: Option<String>,
    pub value: Option<f64>,
}

pub async fn alarm_events(pool: &PgPool, alarm: i64) -> Result<Vec<EventView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, alarm_id, at, kind, actor, comment, value FROM alarm_events
         WHERE alarm_id = $1 ORDER BY id",
    )
    .bind(alarm)
    .fetch_all(pool)
    .await
}

/// One row per history event, for the CSV export.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    pub at: DateTime<Utc>,
    pub alarm_id: i64,
    pub site: String,
    pub rule_name: String,
    pub subject: String,
    pub severity: String,
    pub kind: String,
    pub actor: Option<String>,
    pub comment: Option<String>,
    pub value: Option<f64>,
    pub message: String,
}

/// History events in `[from, to)`, oldest first, at most `limit` rows.
pub async fn history(
    pool: &PgPool,
    scope: &Scope,
    site: Option<i64>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.at, a.id AS alarm_id, s.name AS site, a.rule_name, a.subject, a.severity,
                e.kind, e.actor, e.comment, e.value, a.message
         FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id JOIN sites s ON s.id = a.site_id
         WHERE ($1::int8[] IS NULL OR a.site_id = ANY($1)) AND ($2::int8 IS NULL OR a.site_id = $2)
           AND e.at >= $3 AND e.at < $4
         ORDER BY e.at, e.id LIMIT $5",
    )
    .bind(scope.site_ids())
    .bind(site)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The history as CSV, through the export's writer ([`crate::export::csv::Csv`]): RFC 4180
/// quoting and the same formula defusing (names, comments and messages come from users and
/// gateways); `value` is a number and is never prefixed.
pub fn history_csv(rows: &[HistoryRow]) -> String {
    use crate::export::csv::{Csv, Format};
    let mut csv = Csv::new(Format::default(), 256 * (rows.len() + 1));
    for name in [
        "at", "alarm_id", "site", "rule", "subject", "severity", "event", "actor", "comment",
        "value", "message",
    ] {
        csv.plain(name);
    }
    csv.end_row();
    for r in rows {
        csv.plain(&r.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        csv.integer(r.alarm_id);
        csv.text(&r.site);
        csv.text(&r.rule_name);
        csv.text(&r.subject);
        csv.text(&r.severity);
        csv.text(&r.kind);
        csv.text(r.actor.as_deref().unwrap_or(""));
        csv.text(r.comment.as_deref().unwrap_or(""));
        match r.value {
            Some(v) => csv.float64(v),
            None => csv.empty(),
        }
        csv.text(&r.message);
        csv.end_row();
    }
    // The writer writes UTF-8 only (text fields are `str`, the rest ASCII).
    String::from_utf8(csv.take().to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(comment: &str, value: Option<f64>) -> HistoryRow {
        HistoryRow {
            at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            alarm_id: 7,
            site: "Plant, north".into(),
            rule_name: "=HYPERLINK(\"http://x\")".into(),
            subject: "meter X1".into(),
            severity: "warning".into(),
            kind: "acknowledged".into(),
            actor: Some("op@example.com".into()),
            comment: Some(comment.into()),
            value,
            message: "@SUM(1)".into(),
        }
    }

    /// The alarm history goes through the export's writer: quoting and the defusing rule
    /// (tab and CR included) are the export's, values stay numbers.
    #[test]
    fn history_csv_is_quoted_and_formula_safe() {
        let csv = history_csv(&[row("-checked\tok", Some(-12.5)), row("\tx", None)]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "at,alarm_id,site,rule,subject,severity,event,actor,comment,value,message"
        );
        assert_eq!(
            lines[1],
            "2026-09-21T14:13:20.000Z,7,\"Plant, north\",\"'=HYPERLINK(\"\"http://x\"\")\",\
             meter X1,warning,acknowledged,op@example.com,'-checked\tok,-12.5,'@SUM(1)"
        );
        assert!(lines[2].contains(",'\tx,,'@SUM(1)"), "{}", lines[2]);
        assert_eq!(lines[3], "");
    }
}
