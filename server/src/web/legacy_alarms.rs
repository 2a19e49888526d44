//! `/api/v1/alarms` and `/api/v1/alarm-rules`. Every user reads the alarms and rules of the
//! sites in scope; operators and admins acknowledge and shelve; admins edit rules. Objects of
//! other sites are 404.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::session::{Admin, Auth};
use super::WebState;
use crate::alarms::store::{self, AlarmFilter, RuleInput};
use crate::alarms::{lifecycle, AlarmError};
use crate::auth::Principal;

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

pub async fn list(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(filter): Query<AlarmFilter>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        store::list_alarms(&state.pool, &p.scope, &filter).await?,
    ))
}

pub async fn get(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let alarm = store::get_alarm(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("alarm"))?;
    let events = store::alarm_events(&state.pool, id).await?;
    Ok(Json(
        serde_json::json!({ "alarm": alarm, "events": events }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelveBody {
    /// Silenced until then; or `minutes` from now.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub minutes: Option<u32>,
    #[serde(default)]
    pub comment: Option<String>,
}

impl ShelveBody {
    pub fn until(&self) -> Result<DateTime<Utc>, ApiError> {
        match (self.until, self.minutes) {
            (Some(at), None) => Ok(at),
            (None, Some(m)) => Ok(Utc::now() + Duration::minutes(i64::from(m))),
            _ => Err(ApiError::BadRequest("give until or minutes".into())),
        }
    }
}

pub async fn acknowledge(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    body: Option<Json<AckBody>>,
) -> ApiResult<impl IntoResponse> {
    let body = body.map(|b| b.0).unwrap_or_default();
    lifecycle::acknowledge(&state.pool, &p, id, non_empty(&body.comment)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn shelve(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(body): Json<ShelveBody>,
) -> ApiResult<impl IntoResponse> {
    let until = body.until()?;
    lifecycle::shelve(&state.pool, &p, id, until, non_empty(&body.comment)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unshelve(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    lifecycle::unshelve(&state.pool, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/alarms`: one action on several alarms, each checked on its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// `acknowledge`, `shelve` or `unshelve`.
    pub action: String,
    pub ids: Vec<i64>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub minutes: Option<u32>,
}

pub async fn bulk(
    State(state): State<WebState>,
    Auth(p): Auth,
    Json(body): Json<BulkBody>,
) -> ApiResult<impl IntoResponse> {
    if body.ids.is_empty() || body.ids.len() > 500 {
        return Err(ApiError::BadRequest("ids holds 1 to 500 alarm ids".into()));
    }
    let shelve_until = || {
        ShelveBody {
            until: body.until,
            minutes: body.minutes,
            comment: None,
        }
        .until()
    };
    let mut results = Vec::with_capacity(body.ids.len());
    for &id in &body.ids {
        let done = match body.action.as_str() {
            "acknowledge" => {
                lifecycle::acknowledge(&state.pool, &p, id, non_empty(&body.comment)).await
            }
            "shelve" => {
                lifecycle::shelve(
                    &state.pool,
                    &p,
                    id,
                    shelve_until()?,
                    non_empty(&body.comment),
                )
                .await
            }
            "unshelve" => lifecycle::unshelve(&state.pool, &p, id).await,
            _ => {
                return Err(ApiError::BadRequest(
                    "action is acknowledge, shelve or unshelve".into(),
                ))
            }
        };
        results.push(match done {
            Ok(()) => serde_json::json!({ "id": id, "ok": true }),
            Err(AlarmError::Db(e)) => return Err(ApiError::internal(e)),
            Err(e) => serde_json::json!({ "id": id, "ok": false, "error": e.to_string() }),
        });
    }
    Ok(Json(serde_json::json!({ "results": results })))
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub site_id: Option<i64>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// How long a rule edit waits for the engine to apply it before answering anyway.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest history export: 100 000 events per request (narrow the period for more).
const HISTORY_LIMIT: i64 = 100_000;

pub async fn history_csv(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<impl IntoResponse> {
    let body = history_body(&state, &p, &q).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"alarm-history.csv\"",
            ),
        ],
        body,
    ))
}

pub async fn history_body(
    state: &WebState,
    p: &Principal,
    q: &HistoryQuery,
) -> Result<String, ApiError> {
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::days(31));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let rows = store::history(&state.pool, &p.scope, q.site_id, from, to, HISTORY_LIMIT).await?;
    Ok(store::history_csv(&rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleQuery {
    pub site_id: Option<i64>,
}

pub async fn list_rules(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<RuleQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        store::list_rules(&state.pool, &p.scope, q.site_id).await?,
    ))
}

pub async fn get_rule(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    store::get_rule(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("alarm rule"))
}

pub async fn create_rule(
    State(state): State<WebState>,
    Admin(p): Admin,
    Json(body): Json<RuleInput>,
) -> ApiResult<impl IntoResponse> {
    let id = store::create_rule(&state.pool, &p.scope, p.user_id, &body).await?;
    state.alarms.rules_changed_and_loaded(RELOAD_WAIT).await;
    let rule = store::get_rule(&state.pool, &p.scope, id).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

pub async fn put_rule(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<RuleInput>,
) -> ApiResult<impl IntoResponse> {
    store::update_rule(&state.pool, &p.scope, id, &body).await?;
    state.alarms.rules_changed_and_loaded(RELOAD_WAIT).await;
    Ok(Json(store::get_rule(&state.pool, &p.scope, id).await?))
}

pub async fn delete_rule(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    store::delete_rule(&state.pool, &p.scope, id).await?;
    state.alarms.rules_changed_and_loaded(RELOAD_WAIT).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI description of the alarm routes (merged into `openapi::document`).
pub fn openapi_paths() -> serde_json::Value {
    use serde_json::json;
    let r = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let e = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    let id = |what: &str| json!({ "name": "id", "in": "path", "required": true, "description": what, "schema": { "type": "integer", "format": "int64" } });
    let q = |name: &str, description: &str, schema: serde_json::Value| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema });
    let with = |mut v: serde_json::Value, codes: &[&str]| {
        for code in codes {
            let name = match *code {
                "400" => "BadRequest",
                "401" => "Unauthorized",
                "403" => "Forbidden",
                "404" => "NotFound",
                _ => "Conflict",
            };
            v[*code] = e(name);
        }
        v
    };
    let json_ok = |status: &str, schema: serde_json::Value| json!({ status: { "description": "OK", "content": { "application/json": { "schema": schema } } } });
    let body = |schema: serde_json::Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let none = |codes: &[&str]| with(json!({ "204": { "description": "Done" } }), codes);
    let operate = "Operators and admins of the alarm's site; viewers get 403, other sites 404.";
    json!({
        "/alarms": {
            "get": { "summary": "Alarms of the user's sites: active first, then by severity and time", "tags": ["alarms"],
                "parameters": [
                    q("site_id", "Only this site", json!({ "type": "integer" })),
                    q("severity", "info, warning or critical", json!({ "type": "string", "enum": ["info", "warning", "critical"] })),
                    q("state", "open (default: active or unacknowledged), active, or all", json!({ "type": "string", "enum": ["open", "active", "all"] })),
                    q("limit", "At most this many (default 500, at most 5000)", json!({ "type": "integer" })),
                ],
                "responses": with(json_ok("200", json!({ "type": "array", "items": r("Alarm") })), &["400", "401"]) },
            "post": { "summary": "One action (acknowledge, shelve, unshelve) on several alarms", "tags": ["alarms"],
                "description": format!("{operate} Each alarm is handled on its own; the answer lists the result per id."),
                "requestBody": body(r("AlarmBulkAction")),
                "responses": with(json_ok("200", json!({ "type": "object" })), &["400", "401"]) }
        },
        "/alarms/history.csv": { "get": { "summary": "Alarm history events as CSV (RFC 4180)", "tags": ["alarms"],
            "parameters": [
                q("site_id", "Only this site", json!({ "type": "integer" })),
                q("from", "From (RFC 3339; default: 31 days before `to`)", json!({ "type": "string", "format": "date-time" })),
                q("to", "Until, exclusive (default: now)", json!({ "type": "string", "format": "date-time" })),
            ],
            "responses": with(json!({ "200": { "description": "CSV", "content": { "text/csv": { "schema": { "type": "string" } } } } }), &["400", "401"]) } },
        "/alarms/{id}": { "get": { "summary": "One alarm with its history", "tags": ["alarms"], "parameters": [id("Alarm id")],
            "responses": with(json_ok("200", json!({ "type": "object", "properties": { "alarm": r("Alarm"), "events": { "type": "array", "items": r("AlarmEvent") } } })), &["401", "404"]) } },
        "/alarms/{id}/acknowledge": { "post": { "summary": "Acknowledge an alarm (with an optional comment)", "tags": ["alarms"],
            "description": format!("{operate} 409 when already acknowledged. A cleared alarm that is acknowledged is closed."),
            "parameters": [id("Alarm id")],
            "requestBody": { "required": false, "content": { "application/json": { "schema": { "type": "object", "properties": { "comment": { "type": "string", "maxLength": 2000 } } } } } },
            "responses": none(&["400", "401", "403", "404", "409"]) } },
        "/alarms/{id}/shelve": { "post": { "summary": "Shelve an alarm: its notifications (clear, escalation) are silenced until a time", "tags": ["alarms"],
            "description": format!("{operate} `until` (RFC 3339) or `minutes`, within 30 days."),
            "parameters": [id("Alarm id")],
            "requestBody": body(json!({ "type": "object", "properties": { "until": { "type": "string", "format": "date-time" }, "minutes": { "type": "integer" }, "comment": { "type": "string" } } })),
            "responses": none(&["400", "401", "403", "404"]) } },
        "/alarms/{id}/unshelve": { "post": { "summary": "End the shelving of an alarm", "tags": ["alarms"], "description": operate,
            "parameters": [id("Alarm id")], "responses": none(&["401", "403", "404", "409"]) } },
        "/alarm-rules": {
            "get": { "summary": "Alarm rules of the user's sites", "tags": ["alarms"],
                "parameters": [q("site_id", "Only this site", json!({ "type": "integer" }))],
                "responses": with(json_ok("200", json!({ "type": "array", "items": r("AlarmRule") })), &["401"]) },
            "post": { "summary": "Create an alarm rule (admin)", "tags": ["alarms"],
                "description": "The target (panel, circuit, meter) and the shed relay must belong to the rule's site (404 otherwise).",
                "requestBody": body(r("AlarmRuleInput")),
                "responses": with(json_ok("201", r("AlarmRule")), &["400", "401", "403", "404"]) }
        },
        "/alarm-rules/{id}": {
            "get": { "summary": "One alarm rule", "tags": ["alarms"], "parameters": [id("Rule id")],
                "responses": with(json_ok("200", r("AlarmRule")), &["401", "404"]) },
            "put": { "summary": "Replace an alarm rule (admin)", "tags": ["alarms"],
                "description": "The evaluation state is kept when what the rule watches is unchanged (a new threshold applies to the next value), else reset; open alarms stay to be acknowledged.",
                "parameters": [id("Rule id")], "requestBody": body(r("AlarmRuleInput")),
                "responses": with(json_ok("200", r("AlarmRule")), &["400", "401", "403", "404"]) },
            "delete": { "summary": "Delete an alarm rule (admin); its alarms and their history stay", "tags": ["alarms"],
                "parameters": [id("Rule id")], "responses": none(&["401", "403", "404"]) }
        }
    })
}

pub fn openapi_schemas() -> serde_json::Value {
    use serde_json::json;
    let s = || json!({ "type": "string" });
    let n = || json!({ "type": "number" });
    let i = || json!({ "type": "integer" });
    let t = || json!({ "type": "string", "format": "date-time" });
    let opt = |v: serde_json::Value| json!({ "oneOf": [v, { "type": "null" }] });
    let watch = json!({ "type": "object", "required": ["kind"], "properties": {
        "kind": { "type": "string", "enum": ["measurement", "gateway_offline", "no_data", "not_answering", "clock_skew", "rejects", "energy_15min", "mean_power_15min", "peak_demand"],
            "description": "measurement: a measurements column as data arrives. Timer kinds, every alarms.timer_period_secs: gateway_offline (seconds offline), no_data (seconds since the meter's newest measurement or counter reading), not_answering (a meter polled over Modbus: seconds since its last good poll while its polls fail, 0 while it answers), clock_skew (|skew| s), rejects (rejected messages in window_s), energy_15min (Wh of the meter's newest quarter-hour), mean_power_15min (W), peak_demand (the site total's mean power over its newest quarter-hour, W; the threshold is the contracted limit)." },
        "quantity": { "type": "string", "description": "For measurement: u1, i1, p, pf, thd_u1, frequency, temperature, ..." },
        "window_s": { "type": "integer", "minimum": 60, "maximum": 86400 } } });
    let condition = json!({ "type": "object", "required": ["op"], "additionalProperties": false, "properties": {
        "op": { "type": "string", "enum": ["above", "below", "outside"] },
        "threshold": n(), "low": n(), "high": n(),
        "hysteresis": { "type": "number", "minimum": 0, "description": "An alarm clears only past the threshold by this much (inside the band by this much)." },
        "on_delay_s": { "type": "integer", "description": "The condition must hold this long before raising." },
        "off_delay_s": { "type": "integer", "description": "The value must stay clear this long before clearing." },
        "active_hours": { "type": "object", "properties": { "from": { "type": "string", "examples": ["08:00:00"] }, "to": s(),
            "days": { "type": "array", "items": { "type": "integer", "minimum": 1, "maximum": 7 } } },
            "description": "Local hours of the site during which the rule may raise; from > to spans midnight." } } });
    let actions = json!({ "type": "object", "additionalProperties": false, "properties": {
        "email": { "type": "array", "items": s() }, "escalate_to": { "type": "array", "items": s() },
        "escalate_after_min": i(), "webhook_url": s(), "mqtt_topic": s(),
        "notify_clear": { "type": "boolean", "default": true },
        "shed_relay": { "type": "integer", "description": "A relay of the site switched off through the command ledger when raised." },
        "restore_on_clear": { "type": "boolean" } } });
    json!({
        "Alarm": { "type": "object", "properties": {
            "id": i(), "rule_id": opt(i()), "rule_name": s(), "site_id": i(), "site": s(), "subject": s(),
            "device_id": opt(i()), "gateway_id": opt(i()),
            "severity": { "type": "string", "enum": ["info", "warning", "critical"] }, "message": s(),
            "state": { "type": "string", "enum": ["active", "active_acknowledged", "cleared_unacknowledged", "closed"] },
            "active": { "type": "boolean" }, "raised_at": t(), "raised_value": opt(n()), "raise_count": i(),
            "cleared_at": opt(t()), "cleared_value": opt(n()), "acked_at": opt(t()), "acked_email": opt(s()),
            "ack_comment": opt(s()), "shelved_until": opt(t()), "shelved": { "type": "boolean" }, "escalated_at": opt(t()) } },
        "AlarmEvent": { "type": "object", "properties": {
            "id": i(), "alarm_id": i(), "at": t(),
            "kind": { "type": "string", "enum": ["raised", "reraised", "cleared", "acknowledged", "shelved", "unshelved", "escalated", "action_failed"] },
            "actor": opt(s()), "comment": opt(s()), "value": opt(n()) } },
        "AlarmBulkAction": { "type": "object", "required": ["action", "ids"], "properties": {
            "action": { "type": "string", "enum": ["acknowledge", "shelve", "unshelve"] },
            "ids": { "type": "array", "items": i(), "maxItems": 500 }, "comment": s(), "until": t(), "minutes": i() } },
        "AlarmRuleInput": { "type": "object", "required": ["site_id", "name", "severity", "target", "watch", "condition"], "additionalProperties": false, "properties": {
            "site_id": i(), "name": s(), "enabled": { "type": "boolean", "default": true },
            "severity": { "type": "string", "enum": ["info", "warning", "critical"] },
            "target": { "type": "string", "enum": ["site", "panel", "circuit", "meter"] },
            "panel_id": i(), "circuit_id": i(), "device_id": i(),
            "watch": watch.clone(), "condition": condition.clone(), "actions": actions.clone() } },
        "AlarmRule": { "type": "object", "properties": {
            "id": i(), "site_id": i(), "name": s(), "enabled": { "type": "boolean" }, "severity": s(), "target": s(),
            "panel_id": opt(i()), "circuit_id": opt(i()), "device_id": opt(i()),
            "watch": watch, "condition": condition, "actions": actions, "created_at": t(), "updated_at": t() } }
    })
}
