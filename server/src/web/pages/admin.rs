//! Administration: sites, users, grants, gateways and their secrets.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::form::Submitted;
use super::site_admin::pickers::{zone_groups, ChoiceGroup};
use super::{AdminForm, Nav, PageError, PageResult, PageUser};
use crate::auth::{users, Role, Scope};
use crate::web::urls::filters;
use crate::web::WebState;
use crate::zone::TimeZone;
use crate::{fleet::gateways, sites};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin", get(admin_page))
        .route("/admin/sites", post(create_site))
        .route("/admin/users", post(create_user))
        .route("/admin/grants", post(grant_site))
        .route("/admin/revocations", post(revoke_site))
        .route("/admin/users/{id}/disabled", post(user_disabled))
        .route("/admin/users/{id}/password", post(user_password))
        .route("/admin/gateways/{serial}/password", post(gateway_password))
        .route("/admin/gateways", post(create_gateway))
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    title: &'static str,
    nav: Nav,
    message: Option<String>,
    error: Option<String>,
    /// A refused form: its values and messages beside its fields.
    s: Submitted,
    sites: Vec<sites::SiteSummary>,
    users: Vec<users::UserSummary>,
    gateways: Vec<gateways::GatewayView>,
    zones: Vec<ChoiceGroup>,
    roles: [(&'static str, &'static str); 3],
}

impl AdminPage {
    /// Whether the new-user form has `site` ticked (after a refusal).
    fn site_ticked(&self, site: impl std::fmt::Display) -> bool {
        self.s
            .value("new-user-sites", "")
            .split(',')
            .any(|v| v.trim() == site.to_string())
    }

    fn site_name(&self, site: &Option<i64>) -> &str {
        site.and_then(|id| self.sites.iter().find(|s| s.id == id))
            .map_or("", |s| s.name.as_str())
    }
}

impl AdminPage {
    /// Whether any user is a viewer or operator (admins see every site: nothing to grant).
    fn grantable(&self) -> bool {
        self.users.iter().any(|u| u.role != "admin")
    }

    /// A gateway's site as the picker's value (empty: no site).
    fn site_value(&self, site: &Option<i64>) -> String {
        site.map(|id| id.to_string()).unwrap_or_default()
    }
}

const ROLES: [(&str, &str); 3] = [
    ("viewer", "Viewer: sees the sites granted to them"),
    (
        "operator",
        "Operator: also switches relays and handles alarms",
    ),
    ("admin", "Admin: everything, on every site"),
];

#[derive(Deserialize, Default)]
struct AdminParams {
    message: Option<String>,
    error: Option<String>,
}

async fn admin_page(
    State(state): State<WebState>,
    user: PageUser,
    Query(q): Query<AdminParams>,
) -> PageResult {
    user.require_admin()?;
    admin_view(&state, &user, q.message, q.error, Submitted::new()).await
}

/// The admin page with a note: from a redirect's query, or (for a secret shown once) rendered
/// straight into the POST's answer, so the secret is never in a URL, history or proxy log.
async fn admin_view(
    state: &WebState,
    user: &PageUser,
    message: Option<String>,
    error: Option<String>,
    s: Submitted,
) -> PageResult {
    let sites = sites::summaries(&state.pool).await?;
    let users = users::summaries(&state.pool).await?;
    let mut gateways = gateways::list(&state.pool, &Scope::All).await?;
    gateways.sort_by(|a, b| a.serial.cmp(&b.serial));
    // Shown as text, never as markup.
    user.render(&AdminPage {
        title: "Administration",
        nav: user.nav(),
        message: message.map(|m| m.chars().take(300).collect()),
        error: error.map(|m| m.chars().take(300).collect()),
        zones: zone_groups(s.value("new-site-time_zone", "Europe/Ljubljana")),
        s,
        sites,
        users,
        gateways,
        roles: ROLES,
    })
}

/// The admin page again with a refused form's values and messages: 422.
pub(crate) async fn refused(state: &WebState, user: &PageUser, s: Submitted) -> PageResult {
    let mut r = admin_view(state, user, None, None, s).await?;
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

/// The admin page carrying a secret in its note (a generated password): never cached, never
/// stored, never in a URL.
async fn secret_shown_once(state: &WebState, user: &PageUser, message: String) -> PageResult {
    let mut page = admin_view(state, user, Some(message), None, Submitted::new()).await?;
    page.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(page)
}

pub(crate) fn back_to_admin(result: Result<String, String>) -> Response {
    let (key, text) = match result {
        Ok(m) => ("message", m),
        Err(e) => ("error", e),
    };
    Redirect::to(&format!("/admin?{key}={}", percent(&text))).into_response()
}

/// Percent-encodes text for a query string value.
pub(crate) fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct NewSiteForm {
    name: String,
    time_zone: String,
}

async fn create_site(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(form): AdminForm<NewSiteForm>,
) -> PageResult {
    let mut s = Submitted::new();
    s.keep("new-site-name", &form.name);
    s.keep("new-site-time_zone", &form.time_zone);
    let Ok(zone) = form.time_zone.parse::<TimeZone>() else {
        s.add(
            "new-site-time_zone",
            "choose the site's time zone from the list",
        );
        return refused(&state, &user, s).await;
    };
    match sites::create(&state.pool, &form.name, zone).await {
        Ok(id) => {
            state.gateways_changed();
            Ok(Redirect::to(&format!(
                "/admin/sites/{id}?section=panels&message={}#panels",
                percent("Site created: add its panels and circuits, then place its meters.")
            ))
            .into_response())
        }
        Err(sites::SiteError::Db(e)) => Err(e.into()),
        Err(e) => {
            s.add("new-site-name", e.to_string());
            refused(&state, &user, s).await
        }
    }
}

/// Site ids from a form: ticked boxes (`sites` repeated) or a comma-separated list.
fn site_ids(values: &[&str]) -> Result<Vec<i64>, ()> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| ()))
        .collect()
}

async fn create_user(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(pairs): AdminForm<Vec<(String, String)>>,
) -> PageResult {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    if pairs.len() > 1000 || pairs.iter().any(|(_, v)| v.len() > 4000) {
        return Err(PageError::Bad("the form is too large".into()));
    }
    let (email, role) = (field("email"), field("role"));
    let ticked: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "sites")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut s = Submitted::new();
    s.keep("new-user-email", email);
    s.keep("new-user-role", role);
    s.keep("new-user-sites", &ticked.join(","));
    let role = role.parse::<Role>();
    if role.is_err() {
        s.add("new-user-role", "choose a role from the list");
    }
    let site_ids = match site_ids(&ticked) {
        Ok(ids) => {
            let mut unique = ids;
            unique.sort_unstable();
            unique.dedup();
            if sites::count_existing(&state.pool, &unique).await? != unique.len() as i64 {
                s.add(
                    "new-user-sites",
                    "one of the sites no longer exists; tick them again",
                );
            }
            unique
        }
        Err(()) => {
            s.add("new-user-sites", "tick the sites from the list");
            Vec::new()
        }
    };
    if let Err(e) = users::validate_email(email) {
        s.add("new-user-email", e.to_string());
    }
    let Ok(role) = role
        .map_err(|_| ())
        .and_then(|r| if s.is_empty() { Ok(r) } else { Err(()) })
    else {
        return refused(&state, &user, s).await;
    };
    let password = crate::auth::password::generate();
    match users::create(&state.pool, email, role, &password).await {
        Ok(id) => {
            for site in site_ids {
                users::grant_site(&state.pool, id, site).await?;
            }
            // Shown once, like the API does; the admin hands it over.
            let message = format!("User {} created; password: {password}", email.trim());
            secret_shown_once(&state, &user, message).await
        }
        Err(users::UserError::Db(e)) => Err(e.into()),
        Err(users::UserError::Hash(e)) => Err(PageError::Internal(e.into())),
        Err(e) => {
            s.add("new-user-email", e.to_string());
            refused(&state, &user, s).await
        }
    }
}

#[derive(Deserialize)]
struct GrantForm {
    user_id: i64,
    site_id: i64,
}

/// Gives (`grant`) or takes away a site; a user or site that does not exist, or a change that
/// changes nothing, is refused beside its field.
async fn change_access(state: &WebState, user: &PageUser, f: GrantForm, grant: bool) -> PageResult {
    let form = if grant { "grant" } else { "revoke" };
    let key = |field: &str| format!("{form}-{field}");
    let mut s = Submitted::new();
    s.keep(&key("user_id"), &f.user_id.to_string());
    s.keep(&key("site_id"), &f.site_id.to_string());
    if !users::exists(&state.pool, f.user_id).await? {
        s.add(&key("user_id"), "choose a user from the list");
    }
    if !sites::exists(&state.pool, f.site_id).await? {
        s.add(&key("site_id"), "choose a site from the list");
    }
    if s.is_empty() {
        let (changed, done, refusal) = if grant {
            let changed = users::grant_site(&state.pool, f.user_id, f.site_id).await?;
            (
                changed,
                "Access granted.",
                "this user already sees that site",
            )
        } else {
            let changed = users::revoke_site(&state.pool, f.user_id, f.site_id).await?;
            (
                changed,
                "Access taken away.",
                "this user does not have that site",
            )
        };
        if changed {
            return Ok(back_to_admin(Ok(done.into())));
        }
        s.add(&key("site_id"), refusal);
    }
    refused(state, user, s).await
}

/// Lets a viewer or operator see one more site.
async fn grant_site(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(form): AdminForm<GrantForm>,
) -> PageResult {
    change_access(&state, &user, form, true).await
}

/// Takes a site away from a viewer or operator.
async fn revoke_site(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(form): AdminForm<GrantForm>,
) -> PageResult {
    change_access(&state, &user, form, false).await
}

#[derive(Deserialize)]
struct DisabledForm {
    disabled: String,
}

/// Disables or enables an account (not one's own).
async fn user_disabled(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<DisabledForm>,
) -> PageResult {
    let disabled = form.disabled == "1";
    if disabled && id == user.user_id {
        let mut s = Submitted::new();
        s.add(
            &format!("user-{id}-disabled"),
            "you cannot disable your own account",
        );
        return refused(&state, &user, s).await;
    }
    match users::set_disabled(&state.pool, id, disabled).await? {
        true if disabled => Ok(back_to_admin(Ok(
            "Account disabled; its sessions ended.".into()
        ))),
        true => Ok(back_to_admin(Ok("Account enabled.".into()))),
        false => Err(PageError::NotFound),
    }
}

/// A new generated password for a user, shown once in the answer.
async fn user_password(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    _: AdminForm,
) -> PageResult {
    let Some(email) = users::email_of(&state.pool, id).await? else {
        return Err(PageError::NotFound);
    };
    match users::reset_password(&state.pool, id).await {
        Ok(Some(password)) => {
            let message = format!("New password for {email}: {password}");
            secret_shown_once(&state, &user, message).await
        }
        Ok(None) => Err(PageError::NotFound),
        Err(users::UserError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::Internal(e.into())),
    }
}

/// A new generated MQTT password for a gateway, shown once in the answer.
async fn gateway_password(
    State(state): State<WebState>,
    user: PageUser,
    Path(serial): Path<String>,
    _: AdminForm,
) -> PageResult {
    match gateways::rotate_password(&state.pool, &serial).await {
        Ok(Some(password)) => {
            let message = format!(
                "New MQTT password for gateway {serial} (shown once): {password}; sessions open now last until they reconnect"
            );
            secret_shown_once(&state, &user, message).await
        }
        Ok(None) => Err(PageError::NotFound),
        Err(gateways::GatewayError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
struct NewGatewayForm {
    serial: String,
    site_id: Option<String>,
}

async fn create_gateway(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(form): AdminForm<NewGatewayForm>,
) -> PageResult {
    let mut s = Submitted::new();
    s.keep("new-gateway-serial", &form.serial);
    s.keep("new-gateway-site_id", form.site_id.as_deref().unwrap_or(""));
    let site_id = match form
        .site_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(text) => match text.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                s.add("new-gateway-site_id", "choose a site from the list");
                return refused(&state, &user, s).await;
            }
        },
        None => None,
    };
    let created = gateways::create(
        &state.pool,
        gateways::NewGateway {
            serial: form.serial.clone(),
            site_id,
            ..Default::default()
        },
        state.default_time_zone,
    )
    .await;
    match created {
        Ok(g) => {
            state.gateways_changed();
            let message = format!(
                "Gateway {} registered; MQTT password (shown once): {}; publish base {}; command topic {}",
                g.serial, g.password, g.publish_base, g.command_topic
            );
            secret_shown_once(&state, &user, message).await
        }
        Err(gateways::GatewayError::Db(e)) => Err(e.into()),
        Err(gateways::GatewayError::Hash(e)) => Err(PageError::Internal(e.into())),
        Err(e) => {
            let message = e.to_string();
            if message.contains("site") {
                s.add("new-gateway-site_id", message);
            } else {
                s.add("new-gateway-serial", message);
            }
            refused(&state, &user, s).await
        }
    }
}
