//! `GET /api/v1/export.csv`: energy data as a streamed CSV download (see [`crate::export`]).
//! Viewers and up; the caller's site scope applies (other sites are 404). A meter is resolved
//! like everywhere else ([`crate::fleet::devices::Resolved`]): `device=ID` picks one of the
//! meters reporting the serial, and an ambiguous serial is a 409 listing them.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{parse_instant, resolve_meter};
use super::extract::Query;
use crate::export::{
    DecimalMark, Export, ExportError, Format, Kind, Selection, Separator, Spec, Target,
};
use crate::web::error::{ApiError, ApiResult, ErrorBody};
use crate::web::session::Auth;
use crate::web::WebState;

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Invalid(m) => Self::BadRequest(m),
            ExportError::NotFound(what) => Self::NotFound(what),
            e @ ExportError::BadContracts(_) => Self::Conflict(e.to_string()),
            ExportError::Db(e) => Self::internal(e),
            e @ ExportError::Truncated => Self::internal(e),
        }
    }
}

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(csv))
}

/// The query, taken as text and checked here so that each mistake gets its own message.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportParams {
    /// What to export.
    #[param(value_type = Kind, inline, required = true)]
    kind: Option<String>,
    /// Site id.
    #[param(value_type = Option<i64>)]
    site: Option<String>,
    /// Meter serial.
    meter: Option<String>,
    /// With `meter`: the device id, when several meters in scope report the serial (409 with
    /// the candidates otherwise).
    #[param(value_type = Option<i64>)]
    device: Option<String>,
    /// Circuit id.
    #[param(value_type = Option<i64>)]
    circuit: Option<String>,
    /// RFC 3339 instant or local date (YYYY-MM-DD).
    #[param(required = true)]
    from: Option<String>,
    /// RFC 3339 instant or local date, exclusive.
    #[param(required = true)]
    to: Option<String>,
    /// Only this counter register, e.g. counter1nr.
    register: Option<String>,
    /// Field separator: `comma` (default) or `semicolon`.
    sep: Option<String>,
    /// Decimal mark: `point` (default) or `comma`.
    decimal: Option<String>,
    /// Start with a UTF-8 byte order mark (for Excel); default false.
    #[param(value_type = Option<bool>)]
    bom: Option<String>,
}

/// CSV export for energy audits, streamed
///
/// Exactly one of `site`, `meter` or `circuit`, which must be visible to the caller (404
/// otherwise). Columns: start_local, end_local (site time with offset), start_utc, site, meter,
/// meter_name, register (quantity for measurements), value, unit, quality, band, cost,
/// currency; `kind=completeness` has expected/measured/estimated/missing quarter-hours per
/// meter and register. One header row, RFC 4180 quoting, CRLF. Values are exact decimals of the
/// stored integers. The body is streamed with bounded memory; a failure after the first byte
/// ends the body with an error (a truncated download, never a short file that looks complete).
#[utoipa::path(get, path = "/export.csv", tag = "export", params(ExportParams),
    responses((status = 200, description = "CSV", content_type = "text/csv", body = String),
        (status = 409, description = "Several meters in the caller's scope report this serial \
            (choose one with `device`; `candidates` lists them), two meters of one site do, or a \
            contract in force over the period is not valid", body = ErrorBody)))]
async fn csv(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<ExportParams>,
) -> ApiResult<Response> {
    let kind: Kind = required("kind", q.kind.as_deref())?.parse()?;
    let mut target = target(&q)?;
    let mut scope = p.scope.clone();
    if let Target::Meter(serial) = &target {
        let device = match q.device.as_deref().filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => Some(
                d.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest("`device` must be a numeric id".into()))?,
            ),
        };
        let meter = resolve_meter(&state, &p.scope, serial, device).await?;
        // The selection finds the meter by serial: narrowed to the meter's own site (a subset
        // of the caller's scope), the serial names that meter unless the site has two.
        if let Some(site) = meter.site_id {
            scope = crate::auth::Scope::Sites(vec![site]);
        }
        if crate::fleet::devices::candidates(&state.read_pool, &scope, &meter.serial)
            .await?
            .len()
            > 1
        {
            return Err(ApiError::Conflict(format!(
                "several meters of one site report serial {:?}; export its site or circuit",
                meter.serial.chars().take(64).collect::<String>()
            )));
        }
        target = Target::Meter(meter.serial);
    } else if q.device.is_some() {
        return Err(ApiError::BadRequest("`device` goes with `meter`".into()));
    }
    let format = format(&q)?;
    let (from, to) = (
        required("from", q.from.as_deref())?,
        required("to", q.to.as_deref())?,
    );
    let register = q.register.filter(|r| !r.is_empty());

    let selection = Selection::resolve(&state.read_pool, &scope, &target).await?;
    let tz = selection.time_zone();
    let spec = Spec {
        kind,
        from: parse_instant("from", from, tz)?,
        to: parse_instant("to", to, tz)?,
        register,
        format,
    };
    let export = Export::prepare(&state.read_pool, selection, spec, Utc::now()).await?;
    let disposition = format!("attachment; filename=\"{}\"", export.filename());
    let body = Body::from_stream(export.stream(state.read_pool.clone()));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}

fn required<'a>(name: &str, value: Option<&'a str>) -> ApiResult<&'a str> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("`{name}` is required")))
}

fn target(q: &ExportParams) -> ApiResult<Target> {
    let id = |name: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("`{name}` must be a numeric id")))
    };
    match (q.site.as_deref(), q.meter.as_deref(), q.circuit.as_deref()) {
        (Some(s), None, None) => Ok(Target::Site(id("site", s)?)),
        (None, Some(m), None) if !m.is_empty() => Ok(Target::Meter(m.to_owned())),
        (None, None, Some(c)) => Ok(Target::Circuit(id("circuit", c)?)),
        _ => Err(ApiError::BadRequest(
            "give exactly one of `site`, `meter` (a serial) and `circuit`".into(),
        )),
    }
}

fn format(q: &ExportParams) -> ApiResult<Format> {
    let separator = match q.sep.as_deref() {
        None | Some("comma") => Separator::Comma,
        Some("semicolon") => Separator::Semicolon,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "sep {other:?} is not one of comma, semicolon"
            )))
        }
    };
    let decimal = match q.decimal.as_deref() {
        None | Some("point") => DecimalMark::Point,
        Some("comma") => DecimalMark::Comma,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "decimal {other:?} is not one of point, comma"
            )))
        }
    };
    let bom = match q.bom.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "bom {other:?} is not one of true, false"
            )))
        }
    };
    Ok(Format {
        separator,
        decimal,
        bom,
    })
}
