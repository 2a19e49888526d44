//! The SG's optional login, as its web pages and pyiskra send it: a cookie
//! `Authorization=Basic base64(user:password)`. A request without it, or with other
//! credentials, is refused with 403 (what pyiskra reads as "not authorised", so Home
//! Assistant asks for a user name and password).

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use base64::Engine as _;

/// The user name and password the REST API asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    user: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a login setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("the REST user name is empty or holds a colon")]
    BadUser,
    #[error("the REST password is empty")]
    EmptyPassword,
}

impl Login {
    /// # Errors
    /// An empty user name or one with `:` (Basic credentials could not carry it), an empty
    /// password: a login that anyone could pass is not offered.
    pub fn new(user: &str, password: &str) -> Result<Self, LoginError> {
        if user.is_empty() || user.contains(':') {
            return Err(LoginError::BadUser);
        }
        if password.is_empty() {
            return Err(LoginError::EmptyPassword);
        }
        Ok(Self {
            user: user.into(),
            password: password.into(),
        })
    }

    /// Whether the request's cookies carry these credentials.
    #[must_use]
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|cookie| cookie.trim().split_once('='))
            .filter(|(name, _)| *name == "Authorization")
            .any(|(_, value)| self.matches(value))
    }

    /// `Basic <base64>` (the value may be quoted, as some clients write cookies).
    fn matches(&self, value: &str) -> bool {
        let value = value.trim().trim_matches('"');
        let Some(encoded) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("Basic%20"))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&decoded, expected.as_bytes())
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_cookie_carries_basic_credentials() {
        let login = Login::new("admin", "s3cret").unwrap();
        // base64("admin:s3cret")
        assert!(login.admits(&cookie("Authorization=Basic YWRtaW46czNjcmV0")));
        assert!(login.admits(&cookie("lang=en; Authorization=Basic YWRtaW46czNjcmV0")));
        // base64("admin:wrong")
        assert!(!login.admits(&cookie("Authorization=Basic YWRtaW46d3Jvbmc=")));
        assert!(!login.admits(&cookie("Authorization=Bearer YWRtaW46czNjcmV0")));
        assert!(!login.admits(&cookie("Authorization=Basic !!!")));
        assert!(!login.admits(&HeaderMap::new()));
    }

    #[test]
    fn an_open_login_is_refused_and_the_password_is_not_shown() {
        assert_eq!(Login::new("", "x"), Err(LoginError::BadUser));
        assert_eq!(Login::new("a:b", "x"), Err(LoginError::BadUser));
        assert_eq!(Login::new("admin", ""), Err(LoginError::EmptyPassword));
        let shown = format!("{:?}", Login::new("admin", "s3cret").unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
