//! The plumbing every page handler shares, as extractors, so a handler holds only its page's
//! logic: who is asking ([`PageUser`], with what the page header needs: the CSRF token for its
//! forms and the navigation section of the request's path), and a posted form whose CSRF token
//! ([`CsrfForm`]) or token and admin role ([`AdminForm`]) are checked before the handler runs.
//!
//! The checks keep the order the handlers had when they did them by hand: the session first (a
//! visitor without one goes to the login page), then the form's parsing (its own rejection),
//! then the token (403), then the role (403).

use askama::Template;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawForm, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{render, Nav, PageError, PageResult, Section};
use crate::auth::{Principal, Role};
use crate::web::session;
use crate::web::WebState;

const CSRF_COOKIE: &str = "headend_csrf";

/// A new CSRF token and the cookie that sets it (`Secure` is added by the router when due).
/// Login always sets a new one, so a token planted or seen before login is worthless after.
pub(super) fn fresh_csrf() -> (String, String) {
    let token: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let set = format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    (token, set)
}

/// Whether `submitted` is the request's CSRF cookie (double submit), compared in constant time.
fn check_csrf(headers: &HeaderMap, submitted: &str) -> Result<(), PageError> {
    match session::cookie(headers, CSRF_COOKIE) {
        Some(expected)
            if !submitted.is_empty()
                && session::constant_time_eq(expected.as_bytes(), submitted.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(PageError::Csrf),
    }
}

/// What any page needs of its request, logged in or not: the CSRF token its forms carry (the
/// browser's, or a new one with the cookie that sets it) and the navigation section of its path.
#[derive(Clone)]
pub struct PageContext {
    csrf: String,
    set_cookie: Option<String>,
    section: Section,
}

impl PageContext {
    fn of(parts: &Parts) -> Self {
        let valid = session::cookie(&parts.headers, CSRF_COOKIE)
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()));
        let (csrf, set_cookie) = match valid {
            Some(t) => (t.to_owned(), None),
            None => {
                let (token, set) = fresh_csrf();
                (token, Some(set))
            }
        };
        Self {
            csrf,
            set_cookie,
            section: Section::of_path(parts.uri.path()),
        }
    }

    /// The page header of `user` (`None`: nobody is logged in).
    pub fn nav(&self, user: Option<&Principal>) -> Nav {
        Nav {
            email: user.map(|p| p.email.clone()),
            admin: user.is_some_and(|p| p.role == Role::Admin),
            operator: user.is_some_and(|p| matches!(p.role, Role::Admin | Role::Operator)),
            csrf: self.csrf.clone(),
            section: if user.is_some() {
                self.section
            } else {
                Section::None
            },
        }
    }

    /// Renders a page, setting the CSRF cookie when the browser had none.
    pub fn render(&self, page: &impl Template) -> PageResult {
        render(page, self.set_cookie.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// A signed-in user of a page, with the page's context; others are sent to the login page.
/// It dereferences to the [`Principal`]. Kept in the request once found, so that [`AdminForm`]
/// does not look the session up again.
#[derive(Clone)]
pub struct PageUser {
    principal: Principal,
    page: PageContext,
}

impl std::ops::Deref for PageUser {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl PageUser {
    /// The page header: who is logged in, what they may do, the CSRF token, the section.
    pub fn nav(&self) -> Nav {
        self.page.nav(Some(&self.principal))
    }

    /// Renders a page, setting the CSRF cookie when the browser had none.
    pub fn render(&self, page: &impl Template) -> PageResult {
        self.page.render(page)
    }

    /// Admin pages and forms: 403 for any other role.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(PageError::Forbidden)
        }
    }

    /// Pages that act on relays or alarms: 403 for a viewer.
    pub fn require_operator(&self) -> Result<(), PageError> {
        if matches!(self.role, Role::Admin | Role::Operator) {
            Ok(())
        } else {
            Err(PageError::Forbidden)
        }
    }
}

impl FromRequestParts<WebState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        if let Some(found) = parts.extensions.get::<Self>() {
            return Ok(found.clone());
        }
        let to_login = || Redirect::to("/login").into_response();
        let token = session::session_cookie(&parts.headers).ok_or_else(to_login)?;
        // Signature, expiry, a live session and the account's current role, in one query.
        let principal = match session::principal_of(state, token).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(PageError::from(e).into_response()),
        };
        let user = Self {
            principal,
            page: PageContext::of(parts),
        };
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

/// The fields of a form that has none besides its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

#[derive(Deserialize)]
struct Token {
    csrf: String,
}

/// A posted form (`T`, which need not declare the `csrf` field) whose CSRF token equals the
/// `headend_csrf` cookie; 403 otherwise. A body that is not the form answers as axum's `Form`.
pub struct CsrfForm<T = NoFields>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequest<S> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        // Read once (content type and body limit checked as by `Form`), parsed twice: as the
        // handler's form, then for its token.
        let RawForm(bytes) = RawForm::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let again = || Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        let Form(form) = Form::<T>::from_request(again(), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Form(token) = Form::<Token>::from_request(again(), state)
            .await
            .map_err(IntoResponse::into_response)?;
        check_csrf(&parts.headers, &token.csrf).map_err(IntoResponse::into_response)?;
        Ok(Self(form))
    }
}

/// A [`CsrfForm`] of an admin: after the token, 403 for any other role. The handler names the
/// [`PageUser`] first, as every page does, so a visitor without a session goes to the login page
/// before anything else is looked at.
pub struct AdminForm<T = NoFields>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<WebState> for AdminForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let user = PageUser::from_request_parts(&mut parts, state).await?;
        let CsrfForm(form) =
            CsrfForm::<T>::from_request(Request::from_parts(parts, body), state).await?;
        user.require_admin().map_err(IntoResponse::into_response)?;
        Ok(Self(form))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, StatusCode};

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Panel {
        name: String,
        id: i64,
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    /// A form post with `body`, the CSRF cookie `cookie` and the form content type.
    async fn post(body: &'static str, cookie: Option<&str>) -> Result<Panel, StatusCode> {
        let mut request = Request::post("/admin/sites/1/panels")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(token) = cookie {
            request = request.header(header::COOKIE, format!("a=b; {CSRF_COOKIE}={token}"));
        }
        let request = request.body(Body::from(body)).unwrap();
        CsrfForm::<Panel>::from_request(request, &())
            .await
            .map(|CsrfForm(form)| form)
            .map_err(|r| r.status())
    }

    #[tokio::test]
    async fn the_token_must_equal_the_cookie_before_the_handler_runs() {
        let form = post(
            "csrf=0123456789abcdef0123456789abcdef&name=Main&id=7",
            Some(TOKEN),
        )
        .await
        .unwrap();
        assert_eq!((form.name.as_str(), form.id), ("Main", 7));
        let wrong = "csrf=0123456789abcdef0123456789abcdee&name=Main&id=7";
        assert_eq!(
            post(wrong, Some(TOKEN)).await.unwrap_err(),
            StatusCode::FORBIDDEN
        );
        let empty = "csrf=&name=Main&id=7";
        assert_eq!(
            post(empty, Some("")).await.unwrap_err(),
            StatusCode::FORBIDDEN
        );
        let no_cookie = "csrf=0123456789abcdef0123456789abcdef&name=Main&id=7";
        assert_eq!(
            post(no_cookie, None).await.unwrap_err(),
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_the_form_answers_as_axums_form() {
        // As before the extractor: the form's own fields first, and the token is one of them.
        let bad_id = "csrf=wrong&name=Main&id=seven";
        let status = post(bad_id, Some(TOKEN)).await.unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let no_token = "name=Main&id=7";
        let status = post(no_token, Some(TOKEN)).await.unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let json = Request::post("/admin/sites/1/panels")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let refused = CsrfForm::<Panel>::from_request(json, &()).await;
        assert_eq!(
            refused.err().map(|r| r.status()),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[test]
    fn tokens_compare_in_full() {
        assert!(session::constant_time_eq(b"abc", b"abc"));
        assert!(!session::constant_time_eq(b"abc", b"abd"));
        assert!(!session::constant_time_eq(b"abc", b"abcd"));
    }
}
