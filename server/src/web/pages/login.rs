//! The login and logout pages.

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{CsrfForm, Nav, PageContext, PageError, PageResult};
use crate::web::session::{self, LoginCheck, Peer};
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: &'static str,
    nav: Nav,
    error: Option<String>,
}

async fn login_form(page: PageContext) -> PageResult {
    page.render(&LoginPage {
        title: "Log in",
        nav: page.nav(None),
        error: None,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
}

async fn login(
    State(state): State<WebState>,
    Peer(source): Peer,
    page: PageContext,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> PageResult {
    let refused = |status: StatusCode, message: &str| {
        let login = LoginPage {
            title: "Log in",
            nav: page.nav(None),
            error: Some(message.to_owned()),
        };
        page.render(&login).map(|mut r| {
            *r.status_mut() = status;
            r
        })
    };
    let wrong = || refused(StatusCode::UNAUTHORIZED, "E-mail or password is wrong.");
    let wait = |secs: u64, message: String| {
        refused(StatusCode::TOO_MANY_REQUESTS, &message).map(|mut r| {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        })
    };
    if form.email.len() > 254 || form.password.len() > 1024 {
        return wrong();
    }
    let user_id =
        match session::check_login(&state, &form.email, &form.password, source, "page").await? {
            LoginCheck::Passed(user_id) => user_id,
            LoginCheck::Refused => return wrong(),
            LoginCheck::Throttled(secs) => {
                return wait(
                    secs,
                    format!(
                        "Too many login attempts. Wait {secs} second{} and try again.",
                        if secs == 1 { "" } else { "s" }
                    ),
                )
            }
            LoginCheck::Busy => {
                return wait(
                    1,
                    "The server is busy checking passwords. Try again in a second.".into(),
                )
            }
        };
    let Some(started) = session::start(&state, user_id)
        .await
        .map_err(PageError::Internal)?
    else {
        return wrong();
    };
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&state, &started.token)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    // A new CSRF token with the new session: one planted or read before login is now useless.
    let (_, csrf_cookie) = super::extract::fresh_csrf();
    if let Ok(v) = HeaderValue::from_str(&csrf_cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Ends the session server-side (its token stops working everywhere at once) and clears the
/// cookie.
async fn logout(State(state): State<WebState>, headers: HeaderMap, _: CsrfForm) -> PageResult {
    session::revoke(&state, &headers).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(session::CLEAR_COOKIE),
    );
    Ok(response)
}
