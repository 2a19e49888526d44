//! Administration: sites, users, grants, gateways and their secrets.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::form::Submitted;
use super::site_admin::pickers::{zone_groups, ChoiceGroup};
use super::{check_csrf, nav, render, require_admin, Nav, PageError, PageResult, PageUser};
use crate::auth::{users, Role, Scope};
use crate::web::urls::filters;
use crate::web::WebState;
use crate::{fleet::gateways, sites};

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    title: &'static str,
    nav: Nav,
    message: Option<String>,
    error: Option<String>,
    /// A refused form: its values and messages beside its fields.
    s: Submitted,
    /// Id, name, time zone, contracts.
    sites: Vec<(i64, String, String, i64)>,
    /// Id, e-mail, role, sites, disabled.
    users: Vec<(i64, String, String, String, bool)>,
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
        site.and_then(|id| self.sites.iter().find(|s| s.0 == id))
            .map_or("", |s| s.1.as_str())
    }
}

impl AdminPage {
    /// Whether any user is a viewer or operator (admins see every site: nothing to grant).
    fn grantable(&self) -> bool {
        self.users.iter().any(|u| u.2 != "admin")
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
pub struct AdminParams {
    message: Option<String>,
    error: Option<String>,
}

pub async fn admin_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Query(q): Query<AdminParams>,
) -> PageResult {
    require_admin(&p)?;
    admin_view(&state, &p, &headers, q.message, q.error, Submitted::new()).await
}

/// The admin page with a note: from a redirect's query, or (for a secret shown once) rendered
/// straight into the POST's answer, so the secret is never in a URL, history or proxy log.
async fn admin_view(
    state: &WebState,
    p: &crate::auth::Principal,
    headers: &HeaderMap,
    message: Option<String>,
    error: Option<String>,
    s: Submitted,
) -> PageResult {
    let sites: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT s.id, s.name, s.time_zone, (SELECT count(*) FROM contracts c WHERE c.site_id = s.id)
         FROM sites s ORDER BY s.name",
    )
    .fetch_all(&state.pool)
    .await?;
    let users: Vec<(i64, String, String, String, bool)> = sqlx::query_as(
        "SELECT u.id, u.email, u.role, COALESCE(string_agg(s.name, ', ' ORDER BY s.name), ''),
                u.disabled
         FROM users u LEFT JOIN user_sites us ON us.user_id = u.id LEFT JOIN sites s ON s.id = us.site_id
         GROUP BY u.id ORDER BY u.email",
    )
    .fetch_all(&state.pool)
    .await?;
    let mut gateways = gateways::list(&state.pool, &Scope::All).await?;
    gateways.sort_by(|a, b| a.serial.cmp(&b.serial));
    let (nav, set) = nav(p, headers);
    // Shown as text, never as markup.
    render(
        &AdminPage {
            title: "Administration",
            nav,
            message: message.map(|m| m.chars().take(300).collect()),
            error: error.map(|m| m.chars().take(300).collect()),
            zones: zone_groups(s.value("new-site-time_zone", "Europe/Ljubljana")),
            s,
            sites,
            users,
            gateways,
            roles: ROLES,
        },
        set,
    )
}

/// The admin page again with a refused form's values and messages: 422.
pub(crate) async fn refused(
    state: &WebState,
    p: &crate::auth::Principal,
    headers: &HeaderMap,
    s: Submitted,
) -> PageResult {
    let mut r = admin_view(state, p, headers, None, None, s).await?;
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
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
pub struct NewSiteForm {
    csrf: String,
    name: String,
    time_zone: String,
}

pub async fn admin_create_site(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewSiteForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let result = sites::create(&state.pool, &form.name, form.time_zone.trim()).await;
    let mut s = Submitted::new();
    s.keep("new-site-name", &form.name);
    s.keep("new-site-time_zone", &form.time_zone);
    match result {
        Ok(id) => {
            state.gateways_changed();
            Ok(Redirect::to(&format!(
                "/admin/sites/{id}?section=panels&message={}#panels",
                percent("Site created: add its panels and circuits, then place its meters.")
            ))
            .into_response())
        }
        Err(sites::SiteError::Db(e)) => Err(e.into()),
        Err(e @ sites::SiteError::Invalid(_)) if e.to_string().contains("time zone") => {
            s.add(
                "new-site-time_zone",
                "choose the site's time zone from the list",
            );
            refused(&state, &p, &headers, s).await
        }
        Err(e) => {
            s.add("new-site-name", e.to_string());
            refused(&state, &p, &headers, s).await
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

pub async fn admin_create_user(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    check_csrf(&headers, field("csrf"))?;
    require_admin(&p)?;
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
            let known: i64 = sqlx::query_scalar("SELECT count(*) FROM sites WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_one(&state.pool)
                .await?;
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            if known != unique.len() as i64 {
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
        return refused(&state, &p, &headers, s).await;
    };
    let password = crate::auth::password::generate();
    match users::create(&state.pool, email, role, &password).await {
        Ok(id) => {
            for site in site_ids {
                users::grant_site(&state.pool, id, site).await?;
            }
            // Shown once, like the API does; the admin hands it over.
            secret_shown_once(
                admin_view(
                    &state,
                    &p,
                    &headers,
                    Some(format!(
                        "User {} created; password: {password}",
                        email.trim()
                    )),
                    None,
                    Submitted::new(),
                )
                .await,
            )
        }
        Err(users::UserError::Db(e)) => Err(e.into()),
        Err(users::UserError::Hash(e)) => Err(PageError::Internal(e.into())),
        Err(e) => {
            s.add("new-user-email", e.to_string());
            refused(&state, &p, &headers, s).await
        }
    }
}

#[derive(Deserialize)]
pub struct GrantForm {
    csrf: String,
    user_id: i64,
    site_id: i64,
}

/// The values of a grant or revoke form, kept for a refusal.
fn grant_submitted(form: &str, f: &GrantForm) -> Submitted {
    let mut s = Submitted::new();
    s.keep(&format!("{form}-user_id"), &f.user_id.to_string());
    s.keep(&format!("{form}-site_id"), &f.site_id.to_string());
    s
}

/// Whether the user and the site of a grant form exist; refusals name the field.
async fn grant_targets(
    state: &WebState,
    form: &str,
    f: &GrantForm,
    s: &mut Submitted,
) -> Result<(), PageError> {
    let (user, site): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1), EXISTS (SELECT 1 FROM sites WHERE id = $2)",
    )
    .bind(f.user_id)
    .bind(f.site_id)
    .fetch_one(&state.pool)
    .await?;
    if !user {
        s.add(&format!("{form}-user_id"), "choose a user from the list");
    }
    if !site {
        s.add(&format!("{form}-site_id"), "choose a site from the list");
    }
    Ok(())
}

/// Lets a viewer or operator see one more site.
pub async fn admin_grant_site(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<GrantForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let mut s = grant_submitted("grant", &form);
    grant_targets(&state, "grant", &form, &mut s).await?;
    if s.is_empty() {
        if users::grant_site(&state.pool, form.user_id, form.site_id).await? {
            return Ok(back_to_admin(Ok("Access granted.".into())));
        }
        s.add("grant-site_id", "this user already sees that site");
    }
    refused(&state, &p, &headers, s).await
}

/// Takes a site away from a viewer or operator.
pub async fn admin_revoke_site(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<GrantForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let mut s = grant_submitted("revoke", &form);
    grant_targets(&state, "revoke", &form, &mut s).await?;
    if s.is_empty() {
        if users::revoke_site(&state.pool, form.user_id, form.site_id).await? {
            return Ok(back_to_admin(Ok("Access taken away.".into())));
        }
        s.add("revoke-site_id", "this user does not have that site");
    }
    refused(&state, &p, &headers, s).await
}

#[derive(Deserialize)]
pub struct DisabledForm {
    csrf: String,
    disabled: String,
}

/// Disables or enables an account (not one's own).
pub async fn admin_user_disabled(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<DisabledForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let disabled = form.disabled == "1";
    if disabled && id == p.user_id {
        let mut s = Submitted::new();
        s.add(
            &format!("user-{id}-disabled"),
            "you cannot disable your own account",
        );
        return refused(&state, &p, &headers, s).await;
    }
    match users::set_disabled(&state.pool, id, disabled).await? {
        true if disabled => Ok(back_to_admin(Ok(
            "Account disabled; its sessions ended.".into()
        ))),
        true => Ok(back_to_admin(Ok("Account enabled.".into()))),
        false => Err(PageError::NotFound),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// A new generated password for a user, shown once in the answer.
pub async fn admin_user_password(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    let Some(email) = email else {
        return Err(PageError::NotFound);
    };
    match users::reset_password(&state.pool, id).await {
        Ok(Some(password)) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!("New password for {email}: {password}")),
                None,
                Submitted::new(),
            )
            .await,
        ),
        Ok(None) => Err(PageError::NotFound),
        Err(users::UserError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::Internal(e.into())),
    }
}

/// A new generated MQTT password for a gateway, shown once in the answer.
pub async fn admin_gateway_password(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    match gateways::rotate_password(&state.pool, &serial).await {
        Ok(Some(password)) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!(
                    "New MQTT password for gateway {serial} (shown once): {password}; sessions open now last until they reconnect"
                )),
                None,
                Submitted::new(),
            )
            .await,
        ),
        Ok(None) => Err(PageError::NotFound),
        Err(gateways::GatewayError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
pub struct NewGatewayForm {
    csrf: String,
    serial: String,
    site_id: Option<String>,
}

pub async fn admin_create_gateway(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewGatewayForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
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
                return refused(&state, &p, &headers, s).await;
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
        &state.default_time_zone,
    )
    .await;
    match created {
        Ok(g) => {
            state.gateways_changed();
            secret_shown_once(
                admin_view(
                    &state,
                    &p,
                    &headers,
                    Some(format!(
                        "Gateway {} registered; MQTT password (shown once): {}; publish base {}; command topic {}",
                        g.serial, g.password, g.publish_base, g.command_topic
                    )),
                    None,
                    Submitted::new(),
                )
                .await,
            )
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
            refused(&state, &p, &headers, s).await
        }
    }
}

/// A page carrying a secret: never cached, never stored.
fn secret_shown_once(page: PageResult) -> PageResult {
    let mut page = page?;
    page.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(page)
}
