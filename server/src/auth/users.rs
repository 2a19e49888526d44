//! User accounts and site grants in PostgreSQL.

use sqlx::PgPool;

use super::{password, token, Principal, Role, Scope};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user with e-mail {0:?} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    /// admin, operator or viewer.
    pub role: String,
    pub disabled: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub fn validate_email(email: &str) -> Result<String, UserError> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email.chars().all(|c| !c.is_control() && !c.is_whitespace())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if ok {
        Ok(email.to_owned())
    } else {
        Err(UserError::Invalid(format!(
            "{email:?} is not an e-mail address"
        )))
    }
}

pub async fn create(
    pool: &PgPool,
    email: &str,
    role: Role,
    password: &str,
) -> Result<i64, UserError> {
    let email = validate_email(email)?;
    password::check_strength(password).map_err(UserError::Invalid)?;
    let hash = password::hash(password.to_owned()).await?;
    let id = sqlx::query_scalar::<_, i64>(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3)
         ON CONFLICT (lower(email)) DO NOTHING RETURNING id",
    )
    .bind(&email)
    .bind(&hash)
    .bind(role.as_str())
    .fetch_optional(pool)
    .await?;
    id.ok_or(UserError::Exists(email))
}

/// Why a login could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Busy(#[from] password::Busy),
}

/// Checks credentials; `None` for an unknown user, a wrong password or a disabled account
/// (indistinguishable to the caller on purpose).
pub async fn authenticate(
    pool: &PgPool,
    email: &str,
    password: &str,
) -> Result<Option<i64>, LoginError> {
    let row: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, password_hash, disabled FROM users WHERE lower(email) = lower($1)",
    )
    .bind(email.trim())
    .fetch_optional(pool)
    .await?;
    // Hash even for unknown users so response time does not reveal which e-mails exist.
    let (id, hash, disabled) = match row {
        Some(row) => row,
        None => (0, password::dummy_hash().await, true),
    };
    let ok = password::verify(password.as_bytes().to_vec(), hash).await?;
    Ok((ok && !disabled).then_some(id))
}

/// How many expired session rows one login deletes at most: the clean-up is spread over
/// logins, so none of them pays for a backlog.
const EXPIRED_SESSIONS_PER_LOGIN: i64 = 100;

/// Opens a session for a user who just proved their password: a `sessions` row living
/// `ttl_secs`, and the principal it serves. `None` when the account was disabled or removed in
/// the meantime. Deletes a bounded batch of expired sessions first.
pub async fn open_session(
    pool: &PgPool,
    user_id: i64,
    ttl_secs: i64,
) -> Result<Option<(String, Principal)>, sqlx::Error> {
    sqlx::query(
        "DELETE FROM sessions WHERE id IN (
             SELECT id FROM sessions WHERE expires_at < now()
             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(EXPIRED_SESSIONS_PER_LOGIN)
    .execute(pool)
    .await?;
    let sid = token::new_session_id();
    let opened = sqlx::query(
        "INSERT INTO sessions (id, user_id, expires_at)
         SELECT $1, id, now() + make_interval(secs => $3) FROM users
         WHERE id = $2 AND NOT disabled",
    )
    .bind(&sid)
    .bind(user_id)
    .bind(ttl_secs as f64)
    .execute(pool)
    .await?;
    if opened.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(session_principal(pool, user_id, &sid)
        .await?
        .map(|principal| (sid, principal)))
}

/// The principal of a request: the user of a live session (`sid` from the token, neither
/// revoked nor expired) with their current role and grants; `None` when the session is not
/// live or the account is gone or disabled, so logout, disabling and a password reset take
/// effect at once. One query: the session check costs no extra round trip, and the session's
/// `last_used_at` is written in it at most once a minute.
pub async fn session_principal(
    pool: &PgPool,
    user_id: i64,
    sid: &str,
) -> Result<Option<Principal>, sqlx::Error> {
    if !token::is_session_id(sid) {
        return Ok(None);
    }
    let row: Option<(String, String, bool, Vec<i64>)> = sqlx::query_as(
        "WITH touched AS (
             UPDATE sessions SET last_used_at = now()
             WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL AND expires_at > now()
               AND last_used_at < now() - interval '1 minute'
         )
         SELECT u.email, u.role, u.disabled,
                COALESCE(array_agg(us.site_id) FILTER (WHERE us.site_id IS NOT NULL), '{}')
         FROM users u
         JOIN sessions s ON s.id = $2 AND s.user_id = u.id
                        AND s.revoked_at IS NULL AND s.expires_at > now()
         LEFT JOIN user_sites us ON us.user_id = u.id
         WHERE u.id = $1 GROUP BY u.id",
    )
    .bind(user_id)
    .bind(sid)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(email, role, disabled, sites)| {
        let role: Role = role.parse().ok()?;
        (!disabled).then(|| Principal {
            user_id,
            email,
            role,
            scope: if role == Role::Admin {
                Scope::All
            } else {
                Scope::Sites(sites)
            },
        })
    }))
}

/// Ends one session (logout); whether it was live.
pub async fn revoke_session(pool: &PgPool, sid: &str) -> Result<bool, sqlx::Error> {
    if !token::is_session_id(sid) {
        return Ok(false);
    }
    let done =
        sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(sid)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends every live session of a user; how many.
pub async fn revoke_sessions(
    conn: &mut sqlx::PgConnection,
    user_id: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub async fn list(pool: &PgPool) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, role, disabled, created_at FROM users ORDER BY id")
        .fetch_all(pool)
        .await
}

pub async fn grant_site(pool: &PgPool, user_id: i64, site_id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO user_sites (user_id, site_id)
         SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1)
                         AND EXISTS (SELECT 1 FROM sites WHERE id = $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(site_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether the user has been granted the site.
pub async fn has_site(pool: &PgPool, user_id: i64, site_id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_sites WHERE user_id = $1 AND site_id = $2)",
    )
    .bind(user_id)
    .bind(site_id)
    .fetch_one(pool)
    .await
}

/// Whether the account is disabled; `None` when there is no such user.
pub async fn is_disabled(pool: &PgPool, user_id: i64) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT disabled FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// Takes a site away from a user; whether the user had it.
pub async fn revoke_site(pool: &PgPool, user_id: i64, site_id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM user_sites WHERE user_id = $1 AND site_id = $2")
        .bind(user_id)
        .bind(site_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Disables or enables an account; disabling also revokes every session of the user, in the
/// same transaction, so their tokens stay dead even once the account is enabled again.
/// Whether the user exists.
pub async fn set_disabled(
    pool: &PgPool,
    user_id: i64,
    disabled: bool,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
        .bind(user_id)
        .bind(disabled)
        .execute(&mut *tx)
        .await?;
    if disabled && done.rows_affected() > 0 {
        revoke_sessions(&mut tx, user_id).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// Gives the user a new generated password and returns it (shown once); `None` when the user
/// does not exist. Every session of the user is revoked in the same transaction: whoever knew
/// the old password is logged out.
pub async fn reset_password(pool: &PgPool, user_id: i64) -> Result<Option<String>, UserError> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    let mut tx = pool.begin().await?;
    let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() > 0 {
        revoke_sessions(&mut tx, user_id).await?;
    }
    tx.commit().await?;
    Ok((done.rows_affected() > 0).then_some(secret))
}

/// A user as the administration page lists it.
#[derive(Debug, sqlx::FromRow)]
pub struct UserSummary {
    pub id: i64,
    pub email: String,
    pub role: String,
    /// The names of the sites granted, comma-separated ("" for none).
    pub sites: String,
    pub disabled: bool,
}

/// Every user with the sites granted to them, by e-mail.
pub async fn summaries(pool: &PgPool) -> Result<Vec<UserSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.role,
                COALESCE(string_agg(s.name, ', ' ORDER BY s.name), '') AS sites, u.disabled
         FROM users u LEFT JOIN user_sites us ON us.user_id = u.id LEFT JOIN sites s ON s.id = us.site_id
         GROUP BY u.id ORDER BY u.email",
    )
    .fetch_all(pool)
    .await
}

/// Whether the user exists.
pub async fn exists(pool: &PgPool, user_id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(pool)
        .await
}

/// The user's e-mail; `None` when there is no such user.
pub async fn email_of(pool: &PgPool, user_id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}
