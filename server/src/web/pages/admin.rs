//! Administration: sites, users, grants, gateways and their secrets.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::{check_csrf, nav, render, require_admin, Nav, PageError, PageResult, PageUser};
use crate::auth::{users, Role, Scope};
use crate::web::urls::filters;
use crate::web::WebState;
use crate::{gateways, sites};

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    title: &'static str,
    nav: Nav,
    message: Option<String>,
    error: Option<String>,
    sites: Vec<(i64, String, String, i64)>,
    /// Id, e-mail, role, sites, disabled.
    users: Vec<(i64, String, String, String, bool)>,
    gateways: Vec<gateways::GatewayView>,
}

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
    admin_view(&state, &p, &headers, q.message, q.error).await
}

/// The admin page with a note: from a redirect's query, or (for a secret shown once) rendered
/// straight into the POST's answer, so the secret is never in a URL, history or proxy log.
async fn admin_view(
    state: &WebState,
    p: &crate::auth::Principal,
    headers: &HeaderMap,
    message: Option<String>,
    error: Option<String>,
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
    let gateways = gateways::list(&state.pool, &Scope::All).await?;
    let (nav, set) = nav(p, headers);
    // Shown as text, never as markup.
    render(
        &AdminPage {
            title: "Administration",
            nav,
            message: message.map(|m| m.chars().take(300).collect()),
            error: error.map(|m| m.chars().take(300).collect()),
            sites,
            users,
            gateways,
        },
        set,
    )
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
    let result = sites::create(&state.pool, &form.name, &form.time_zone).await;
    state.gateways_changed();
    Ok(back_to_admin(match result {
        Ok(id) => Ok(format!("Site {id} created.")),
        Err(sites::SiteError::Db(e)) => return Err(e.into()),
        Err(e) => Err(e.to_string()),
    }))
}

#[derive(Deserialize)]
pub struct NewUserForm {
    csrf: String,
    email: String,
    role: String,
    sites: Option<String>,
}

pub async fn admin_create_user(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewUserForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let Ok(role) = form.role.parse::<Role>() else {
        return Ok(back_to_admin(Err(
            "role is admin, operator or viewer".into()
        )));
    };
    let site_ids: Result<Vec<i64>, _> = form
        .sites
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let Ok(site_ids) = site_ids else {
        return Ok(back_to_admin(Err(
            "site ids are numbers separated by commas".into(),
        )));
    };
    let password = crate::auth::password::generate();
    match users::create(&state.pool, &form.email, role, &password).await {
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
                        form.email.trim()
                    )),
                    None,
                )
                .await,
            )
        }
        Err(e) => Ok(back_to_admin(Err(e.to_string()))),
    }
}

#[derive(Deserialize)]
pub struct GrantForm {
    csrf: String,
    user_id: i64,
    site_id: i64,
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
    Ok(back_to_admin(
        match users::grant_site(&state.pool, form.user_id, form.site_id).await? {
            true => Ok("Access granted.".into()),
            false => Err("that user already has that site, or one of them does not exist".into()),
        },
    ))
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
    Ok(back_to_admin(
        match users::revoke_site(&state.pool, form.user_id, form.site_id).await? {
            true => Ok("Access taken away.".into()),
            false => Err("that user does not have that site".into()),
        },
    ))
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
        return Ok(back_to_admin(Err(
            "you cannot disable your own account".into()
        )));
    }
    Ok(back_to_admin(
        match users::set_disabled(&state.pool, id, disabled).await? {
            true if disabled => Ok("Account disabled; its sessions ended.".into()),
            true => Ok("Account enabled.".into()),
            false => Err("no such user".into()),
        },
    ))
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
        return Ok(back_to_admin(Err("no such user".into())));
    };
    match users::reset_password(&state.pool, id).await {
        Ok(Some(password)) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!("New password for {email}: {password}")),
                None,
            )
            .await,
        ),
        Ok(None) => Ok(back_to_admin(Err("no such user".into()))),
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
            )
            .await,
        ),
        Ok(None) => Ok(back_to_admin(Err("no such gateway".into()))),
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
    let site_id = match form
        .site_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => match s.parse() {
            Ok(id) => Some(id),
            Err(_) => return Ok(back_to_admin(Err("the site id is a number".into()))),
        },
        None => None,
    };
    let created = gateways::create(
        &state.pool,
        gateways::NewGateway {
            serial: form.serial,
            site_id,
            ..Default::default()
        },
        &state.default_time_zone,
    )
    .await;
    state.gateways_changed();
    match created {
        Ok(g) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!(
                    "Gateway {} registered; MQTT password (shown once): {}; publish base {}; command topic {}",
                    g.serial, g.password, g.publish_base, g.command_topic
                )),
                None,
            )
            .await,
        ),
        Err(e) => Ok(back_to_admin(Err(e.to_string()))),
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
