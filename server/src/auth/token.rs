//! Session tokens: HS256 JWTs signed with the configured (or generated) secret.
//!
//! A token names a server-side session (`sid`, a row of `sessions`): the signature proves the
//! token was issued here, the row says whether it is still live (logout, a disabled account or
//! a reset password revoke it). A token without `sid` (issued before sessions existed) does
//! not decode, so it is refused.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::Role;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    /// The session (`sessions.id`): 32 lowercase hex digits.
    pub sid: String,
}

/// A new random session id: 128 bits as 32 lowercase hex digits.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `sid` has the shape of a session id (checked before it reaches a query).
pub fn is_session_id(sid: &str) -> bool {
    sid.len() == 32
        && sid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the session key {path}: {source}; check the data directory's permissions or set HEADEND_JWT_SECRET")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "session key file {0} holds fewer than 32 bytes; delete it to have a new one generated"
    )]
    Short(std::path::PathBuf),
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// The key in `path`, generated (64 random bytes, mode 0600) on first use.
    pub fn load_or_generate(path: &Path, ttl_secs: u64) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= 32 => Ok(Self::new(&bytes, ttl_secs)),
            Ok(_) => Err(KeyError::Short(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 64];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                crate::infra::datadir::write_private(path, &secret).map_err(io)?;
                Ok(Self::new(&secret, ttl_secs))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A token for session `sid` of `user_id`, and its expiry (Unix seconds), which the
    /// session row must share.
    pub fn issue(
        &self,
        user_id: i64,
        role: Role,
        sid: &str,
    ) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now,
            exp: now + self.ttl_secs,
            sid: sid.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims.exp))
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
            .filter(|claims| is_session_id(&claims.sid))
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let keys = TokenKeys::new(&[7u8; 64], 60);
        let sid = new_session_id();
        let (token, _) = keys.issue(42, Role::Operator, &sid).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.role, Role::Operator);
        assert_eq!(claims.sid, sid);
        let other = TokenKeys::new(&[8u8; 64], 60);
        assert!(other.verify(&token).is_none());
        assert!(keys.verify("garbage").is_none());
    }

    #[test]
    fn key_file_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.key");
        let a = TokenKeys::load_or_generate(&path, 60).unwrap();
        let (token, _) = a.issue(1, Role::Admin, &new_session_id()).unwrap();
        let b = TokenKeys::load_or_generate(&path, 60).unwrap();
        assert!(b.verify(&token).is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Tokens issued before sessions existed carry no `sid`: they are refused, as is a token
    /// whose `sid` is not a session id.
    #[test]
    fn tokens_without_a_session_are_refused() {
        #[derive(Serialize)]
        struct Old {
            sub: String,
            role: Role,
            iat: i64,
            exp: i64,
        }
        let secret = [7u8; 64];
        let keys = TokenKeys::new(&secret, 60);
        let now = chrono::Utc::now().timestamp();
        let old = Old {
            sub: "42".into(),
            role: Role::Admin,
            iat: now,
            exp: now + 60,
        };
        let encoding = EncodingKey::from_secret(&secret);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &old, &encoding).unwrap();
        assert!(keys.verify(&token).is_none());
        let (bad, _) = keys.issue(42, Role::Admin, "' OR 1=1 --").unwrap();
        assert!(keys.verify(&bad).is_none());
    }

    #[test]
    fn session_ids_are_random_and_well_formed() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert!(is_session_id(&a) && is_session_id(&b));
        assert!(!is_session_id("ABCDEF0123456789ABCDEF0123456789"));
        assert!(!is_session_id(""));
    }
}
