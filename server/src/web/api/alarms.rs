//! `/api/v1/alarms` and `/api/v1/alarm-rules`. Every user reads the alarms and rules of the
//! sites in scope; operators and admins acknowledge and shelve; admins edit rules. Objects of
//! other sites are 404.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path, Query};
use crate::alarms::store::{self, AlarmFilter, AlarmView, EventView, RuleInput, RuleView};
use crate::alarms::{lifecycle, AlarmError};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::{Admin, Auth};
use crate::web::WebState;

impl From<AlarmError> for ApiError {
    fn from(e: AlarmError) -> Self {
        match e {
            AlarmError::Invalid(m) => Self::BadRequest(m),
            AlarmError::NotFound(what) => Self::NotFound(what),
            AlarmError::Forbidden(m) => Self::Forbidden(m),
            AlarmError::Conflict(m) => Self::Conflict(m),
            AlarmError::Db(e) => Self::internal(e),
        }
    }
}

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list, bulk))
        .routes(routes!(history_csv))
        .routes(routes!(get))
        .routes(routes!(acknowledge))
        .routes(routes!(shelve))
        .routes(routes!(unshelve))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, put_rule, delete_rule))
}

/// How long a rule edit waits for the engine to apply it before answering anyway.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest history export: 100 000 events per request (narrow the period for more).
const HISTORY_LIMIT: i64 = 100_000;

/// Alarms of the user's sites: active first, then by severity and time
#[utoipa::path(get, path = "/alarms", tag = "alarms", params(AlarmFilter),
    responses((status = 200, description = "Alarms", body = Vec<AlarmView>)))]
async fn list(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(filter): Query<AlarmFilter>,
) -> ApiResult<Json<Vec<AlarmView>>> {
    Ok(Json(
        store::list_alarms(&state.pool, &p.scope, &filter).await?,
    ))
}

/// An alarm with its history.
#[derive(Serialize, utoipa::ToSchema)]
struct AlarmDetail {
    alarm: AlarmView,
    /// Its history events, oldest first.
    events: Vec<EventView>,
}

/// One alarm with its history
#[utoipa::path(get, path = "/alarms/{id}", tag = "alarms",
    params(("id" = i64, Path, description = "Alarm id")),
    responses((status = 200, description = "The alarm and its events", body = AlarmDetail)))]
async fn get(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<AlarmDetail>> {
    let alarm = store::get_alarm(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("alarm"))?;
    let events = store::alarm_events(&state.pool, id).await?;
    Ok(Json(AlarmDetail { alarm, events }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    #[schema(max_length = 2000)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    /// Silenced until then; or `minutes` from now.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    minutes: Option<u32>,
    #[serde(default)]
    comment: Option<String>,
}

/// The end of a shelving: `until`, or `minutes` from now.
fn shelved_until(until: Option<DateTime<Utc>>, minutes: Option<u32>) -> ApiResult<DateTime<Utc>> {
    match (until, minutes) {
        (Some(at), None) => Ok(at),
        (None, Some(m)) => Ok(Utc::now() + Duration::minutes(i64::from(m))),
        _ => Err(ApiError::BadRequest("give until or minutes".into())),
    }
}

/// Acknowledge an alarm (with an optional comment)
///
/// Operators and admins of the alarm's site; viewers get 403, other sites 404. 409 when already
/// acknowledged. A cleared alarm that is acknowledged is closed.
#[utoipa::path(post, path = "/alarms/{id}/acknowledge", tag = "alarms",
    params(("id" = i64, Path, description = "Alarm id")),
    request_body(content = Option<AckBody>, description = "Optional: a comment"),
    responses((status = 204, description = "Done")))]
async fn acknowledge(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    // The body is optional: a request without a content type has none.
    body: Result<Option<axum::Json<AckBody>>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let body = body?.map(|b| b.0).unwrap_or_default();
    lifecycle::acknowledge(&state.pool, &p, id, non_empty(&body.comment)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Shelve an alarm: its notifications (clear, escalation) are silenced until a time
///
/// Operators and admins of the alarm's site; viewers get 403, other sites 404. `until` (RFC
/// 3339) or `minutes`, within 30 days.
#[utoipa::path(post, path = "/alarms/{id}/shelve", tag = "alarms",
    params(("id" = i64, Path, description = "Alarm id")),
    request_body = ShelveBody,
    responses((status = 204, description = "Done")))]
async fn shelve(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(body): Json<ShelveBody>,
) -> ApiResult<StatusCode> {
    let until = shelved_until(body.until, body.minutes)?;
    lifecycle::shelve(&state.pool, &p, id, until, non_empty(&body.comment)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End the shelving of an alarm
///
/// Operators and admins of the alarm's site; viewers get 403, other sites 404.
#[utoipa::path(post, path = "/alarms/{id}/unshelve", tag = "alarms",
    params(("id" = i64, Path, description = "Alarm id")),
    responses((status = 204, description = "Done")))]
async fn unshelve(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    lifecycle::unshelve(&state.pool, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One action on several alarms, each checked on its own.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlarmBulkAction)]
struct BulkBody {
    /// `acknowledge`, `shelve` or `unshelve`.
    action: String,
    #[schema(max_items = 500)]
    ids: Vec<i64>,
    #[serde(default)]
    comment: Option<String>,
    /// For `shelve`: silenced until then; or `minutes` from now.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    minutes: Option<u32>,
}

/// What a bulk action did, per alarm.
#[derive(Serialize, utoipa::ToSchema)]
struct BulkResults {
    results: Vec<BulkResult>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BulkResult {
    id: i64,
    ok: bool,
    /// Why this alarm was not changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One action (acknowledge, shelve, unshelve) on several alarms
///
/// Operators and admins of the alarm's site; viewers get 403, other sites 404. Each alarm is
/// handled on its own; the answer lists the result per id.
#[utoipa::path(post, path = "/alarms", tag = "alarms",
    request_body = BulkBody,
    responses((status = 200, description = "The result per id", body = BulkResults)))]
async fn bulk(
    State(state): State<WebState>,
    Auth(p): Auth,
    Json(body): Json<BulkBody>,
) -> ApiResult<Json<BulkResults>> {
    if body.ids.is_empty() || body.ids.len() > 500 {
        return Err(ApiError::BadRequest("ids holds 1 to 500 alarm ids".into()));
    }
    let mut results = Vec::with_capacity(body.ids.len());
    for &id in &body.ids {
        let done = match body.action.as_str() {
            "acknowledge" => {
                lifecycle::acknowledge(&state.pool, &p, id, non_empty(&body.comment)).await
            }
            "shelve" => {
                let until = shelved_until(body.until, body.minutes)?;
                lifecycle::shelve(&state.pool, &p, id, until, non_empty(&body.comment)).await
            }
            "unshelve" => lifecycle::unshelve(&state.pool, &p, id).await,
            _ => {
                return Err(ApiError::BadRequest(
                    "action is acknowledge, shelve or unshelve".into(),
                ))
            }
        };
        results.push(match done {
            Ok(()) => BulkResult {
                id,
                ok: true,
                error: None,
            },
            Err(AlarmError::Db(e)) => return Err(ApiError::internal(e)),
            Err(e) => BulkResult {
                id,
                ok: false,
                error: Some(e.to_string()),
            },
        });
    }
    Ok(Json(BulkResults { results }))
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only this site.
    site_id: Option<i64>,
    /// From (RFC 3339; default: 31 days before `to`).
    from: Option<DateTime<Utc>>,
    /// Until, exclusive (default: now).
    to: Option<DateTime<Utc>>,
}

/// Alarm history events as CSV (RFC 4180)
#[utoipa::path(get, path = "/alarms/history.csv", tag = "alarms", params(HistoryQuery),
    responses((status = 200, description = "CSV", content_type = "text/csv", body = String)))]
async fn history_csv(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<([(header::HeaderName, &'static str); 2], String)> {
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::days(31));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let rows = store::history(&state.pool, &p.scope, q.site_id, from, to, HISTORY_LIMIT).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"alarm-history.csv\"",
            ),
        ],
        store::history_csv(&rows),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RuleQuery {
    /// Only this site.
    site_id: Option<i64>,
}

/// Alarm rules of the user's sites
#[utoipa::path(get, path = "/alarm-rules", tag = "alarms", params(RuleQuery),
    responses((status = 200, description = "Alarm rules", body = Vec<RuleView>)))]
async fn list_rules(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<RuleQuery>,
) -> ApiResult<Json<Vec<RuleView>>> {
    Ok(Json(
        store::list_rules(&state.pool, &p.scope, q.site_id).await?,
    ))
}

/// One alarm rule
#[utoipa::path(get, path = "/alarm-rules/{id}", tag = "alarms",
    params(("id" = i64, Path, description = "Rule id")),
    responses((status = 200, description = "The rule", body = RuleView)))]
async fn get_rule(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<RuleView>> {
    store::get_rule(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("alarm rule"))
}

/// Create an alarm rule (admin)
///
/// The target (panel, circuit, meter) and the shed relay must belong to the rule's site (404
/// otherwise).
#[utoipa::path(post, path = "/alarm-rules", tag = "alarms", request_body = RuleInput,
    responses((status = 201, description = "Created", body = RuleView)))]
async fn create_rule(
    State(state): State<WebState>,
    Admin(p): Admin,
    Json(body): Json<RuleInput>,
) -> ApiResult<(StatusCode, Json<Option<RuleView>>)> {
    let id = store::create_rule(&state.pool, &p.scope, p.user_id, &body).await?;
    state.alarms.rules_changed_and_loaded(RELOAD_WAIT).await;
    let rule = store::get_rule(&state.pool, &p.scope, id).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// Replace an alarm rule (admin)
///
/// The evaluation state is kept when what the rule watches is unchanged (a new threshold
/// applies to the next value), else reset; open alarms stay to be acknowledged.
#[utoipa::path(put, path = "/alarm-rules/{id}", tag = "alarms",
    params(("id" = i64, Path, description = "Rule id")),
    request_body = RuleInput,
    responses((status = 200, description = "The rule", body = RuleView)))]
async fn put_rule(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<RuleInput>,
) -> ApiResult<Json<Option<RuleView>>> {
    store::update_rule(&state.pool, &p.scope, id, &body).await?;
    state.alarms.rules_changed_and_loaded(RELOAD_WAIT).await;
    Ok(Json(store::get_rule(&state.pool, &p.scope, id).await?))
}

/// Delete an alarm rule (admin); its alarms and their history stay
#[utoipa::path(delete, path = "/alarm-rules/{id}", tag = "alarms",
    params(("id" = i64, Path, description = "Rule id")),
    responses((status = 204, description = "Done")))]
async fn delete_rule(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    store::delete_rule(&state.pool, &p.scope, id).await?;
    state.alarms.rules_changed_and_loaded(RELOAD_WAIT).await;
    Ok(StatusCode::NO_CONTENT)
}
