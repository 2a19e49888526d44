//! A site's northbound publishing (Home Assistant MQTT discovery, admin only): which
//! configured broker, discovery prefix and base topic; the link's state comes back with it.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path};
use crate::northbound::settings::{self, SettingsError, SettingsInput, SiteSettings};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::Admin;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(get_northbound, put_northbound))
}

/// A site's northbound settings and the brokers an admin may pick.
#[derive(Serialize, ToSchema)]
struct NorthboundView {
    /// The brokers named in the configuration (`[[northbound.brokers]]`).
    brokers: Vec<String>,
    /// Unset: the site is not published.
    settings: Option<SiteSettings>,
    /// The base topic used when none is given.
    default_base_topic: String,
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Invalid(m) => ApiError::BadRequest(m),
            SettingsError::NoSite => ApiError::NotFound("site"),
            SettingsError::Db(e) => ApiError::from(e),
        }
    }
}

/// A site's Home Assistant publishing (admin)
#[utoipa::path(get, path = "/sites/{id}/northbound", tag = "sites",
    params(("id" = i64, Path, description = "Site id")),
    responses((status = 200, description = "Settings, link state and configured brokers", body = NorthboundView)))]
async fn get_northbound(
    State(state): State<WebState>,
    _admin: Admin,
    Path(site): Path<i64>,
) -> ApiResult<Json<NorthboundView>> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM sites WHERE id = $1")
        .bind(site)
        .fetch_optional(&state.pool)
        .await?;
    let name = name.ok_or(ApiError::NotFound("site"))?;
    Ok(Json(NorthboundView {
        brokers: state
            .northbound
            .brokers
            .iter()
            .map(|b| b.name.clone())
            .collect(),
        settings: settings::get(&state.pool, site).await?,
        default_base_topic: settings::default_base(&name),
    }))
}

/// Publish a site to Home Assistant, or change how (admin)
///
/// The broker must be one named in the configuration. Topics are levels of letters, digits,
/// `_` and `-`; the base topic defaults to `headend/<site name>`, the discovery prefix to
/// `homeassistant`. `enabled: false` stops publishing (the link announces `offline`).
#[utoipa::path(put, path = "/sites/{id}/northbound", tag = "sites",
    params(("id" = i64, Path, description = "Site id")),
    request_body = SettingsInput,
    responses((status = 200, description = "Saved; the publisher applies it within its interval", body = SiteSettings)))]
async fn put_northbound(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(body): Json<SettingsInput>,
) -> ApiResult<Json<SiteSettings>> {
    let saved = settings::put(&state.pool, &state.northbound, site, body, &p.email).await?;
    Ok(Json(saved))
}
