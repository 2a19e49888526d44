//! Who is asking: the `Authorization: Bearer` token, or the session cookie for safe methods.
//!
//! The cookie is accepted only for GET and HEAD on the API: a state-changing API call must carry
//! the token in a header, which a cross-site form cannot, so the API needs no CSRF token.
//!
//! A token is only as good as its session: the principal is loaded together with the check that
//! the token's session (`sid`) is neither revoked nor expired (one query), so a logout, a
//! disabled account or a reset password end it at once.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};

use super::error::ApiError;
use super::WebState;
use crate::auth::{users, Principal, Role};

pub const COOKIE: &str = "headend_session";

/// An authenticated user with at least viewer rights.
pub struct Auth(pub Principal);

/// An authenticated admin.
pub struct Admin(pub Principal);

fn token_from(parts: &Parts) -> Option<&str> {
    if let Some(value) = bearer(&parts.headers) {
        return value;
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    session_cookie(&parts.headers)
}

/// The `Authorization` header's bearer token: `None` without the header, `Some(None)` when it
/// is not a bearer token.
pub fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim),
    )
}

/// The `headend_session` cookie's value.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// A request cookie's value, by name: the one cookie parser of the web layer.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Compares two secrets without an early exit, so the time taken says nothing about them.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The principal of a token: signature, expiry and a live session, then the account's current
/// role and grants. `Ok(None)` for anything that does not authenticate.
pub async fn principal_of(state: &WebState, token: &str) -> Result<Option<Principal>, sqlx::Error> {
    let Some(claims) = state.keys.verify(token) else {
        return Ok(None);
    };
    let Ok(user_id) = claims.sub.parse::<i64>() else {
        return Ok(None);
    };
    // Role and grants come from the database, not the token: revocation is immediate.
    users::session_principal(&state.pool, user_id, &claims.sid).await
}

/// Ends the session of the request's token (bearer or cookie, whatever the method: ending a
/// session is never harmful); whether one was live.
pub async fn revoke(state: &WebState, headers: &HeaderMap) -> Result<bool, sqlx::Error> {
    let token = match bearer(headers) {
        Some(token) => token,
        None => session_cookie(headers),
    };
    let Some(claims) = token.and_then(|t| state.keys.verify(t)) else {
        return Ok(false);
    };
    let revoked = users::revoke_session(&state.pool, &claims.sid).await?;
    if revoked {
        tracing::info!(user = %claims.sub, "session ended by logout");
    }
    Ok(revoked)
}

/// What a password login came to.
pub enum LoginCheck {
    /// The password is right: this user.
    Passed(i64),
    /// Unknown account, wrong password or disabled account (indistinguishable on purpose).
    Refused,
    /// Too many attempts for the account or from the source: wait this many seconds.
    Throttled(u64),
    /// The hashing pool is full: nothing was decided, come back in a second.
    Busy,
}

/// Checks a password login through the brute-force throttle: a throttled attempt is refused
/// before any argon2 work (counted, logged once); a wrong password costs the account one more
/// attempt; a full hashing pool is shed (counted). `channel` names the door in the log.
pub async fn check_login(
    state: &WebState,
    email: &str,
    password: &str,
    source: IpAddr,
    channel: &'static str,
) -> Result<LoginCheck, sqlx::Error> {
    let shown: String = email.chars().take(64).collect();
    if let Err(throttled) = state.login_throttle().attempt(email, source) {
        let secs = throttled.retry_after_secs();
        state.metrics.auth_throttled[0].inc();
        tracing::info!(channel, email = %shown, %source, retry_after_secs = secs, "login throttled");
        return Ok(LoginCheck::Throttled(secs));
    }
    match users::authenticate(&state.pool, email, password).await {
        Ok(Some(user_id)) => Ok(LoginCheck::Passed(user_id)),
        Ok(None) => {
            state.login_throttle().failed(email);
            state.metrics.http_login_failures.inc();
            tracing::info!(channel, email = %shown, %source, "login refused");
            Ok(LoginCheck::Refused)
        }
        Err(users::LoginError::Busy(_)) => {
            state.metrics.password_checks_shed.inc();
            tracing::info!(channel, %source, "login shed: the password hashing pool is full");
            Ok(LoginCheck::Busy)
        }
        Err(users::LoginError::Db(e)) => Err(e),
    }
}

/// A session just opened: its token (bearer or cookie value), expiry and user.
pub struct Started {
    pub token: String,
    pub expires_at: i64,
    pub principal: Principal,
}

/// Opens a session for a user whose password was just checked; `None` when the account was
/// disabled in the meantime.
pub async fn start(state: &WebState, user_id: i64) -> anyhow::Result<Option<Started>> {
    let Some((sid, principal)) =
        users::open_session(&state.pool, user_id, state.keys.ttl_secs()).await?
    else {
        return Ok(None);
    };
    let (token, expires_at) = state.keys.issue(user_id, principal.role, &sid)?;
    Ok(Some(Started {
        token,
        expires_at,
        principal,
    }))
}

/// The `Set-Cookie` value of a session cookie (`Secure` is added by the router when the request
/// came over HTTPS or `http.secure_cookies` is on).
pub fn set_cookie(state: &WebState, token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        state.keys.ttl_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub const CLEAR_COOKIE: &str = "headend_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";

/// The peer's address (the server runs with `ConnectInfo<SocketAddr>`); the unspecified
/// address when unknown (a router driven without connection info, as in unit tests), which
/// then shares one throttle bucket.
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |ConnectInfo(addr)| {
            addr.ip()
        })
}

/// The request's source address, for throttling (see [`peer_ip`]).
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(peer_ip(parts)))
    }
}

/// Where a request came from, for the relay command ledger: the peer address (a reverse
/// proxy's `X-Forwarded-For` is recorded beside it, not instead of it, since it can be forged).
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>());
        Ok(Self(match (peer, forwarded) {
            (Some(p), Some(f)) => Some(format!("{p} (forwarded for {f})")),
            (p, f) => p.or(f),
        }))
    }
}

impl FromRequestParts<WebState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let token = token_from(parts).ok_or(ApiError::Unauthorized)?;
        let principal = principal_of(state, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Self(principal))
    }
}

impl FromRequestParts<WebState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::Forbidden("this needs the admin role"));
        }
        Ok(Self(principal))
    }
}
