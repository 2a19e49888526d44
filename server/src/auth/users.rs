//! User accounts and site grants in PostgreSQL.

use sqlx::PgPool;

use super::{password, Principal, Role, Scope};

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

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
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

/// Checks credentials; `None` for an unknown user, a wrong password or a disabled account
/// (indistinguishable to the caller on purpose).
pub async fn authenticate(
    pool: &PgPool,
    email: &str,
    password: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, password_hash, disabled FROM users WHERE lower(email) = lower($1)",
    )
    .bind(email.trim())
    .fetch_optional(pool)
    .await?;
    // Hash even for unknown users so response time does not reveal which e-mails exist.
    let (id, hash, disabled) = match row {
        Some(row) => row,
        None => (0, dummy_hash().await, true),
    };
    let ok = password::verify(password.as_bytes().to_vec(), hash).await;
    Ok((ok && !disabled).then_some(id))
}

/// A real argon2id hash of a random password, verified against when the user does not exist.
/// Made once, on the blocking pool like every other hash.
async fn dummy_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            password::hash(password::generate())
                .await
                .unwrap_or_default()
        })
        .await
        .clone()
}

/// The principal for a user id from a token, with its current role and grants; `None` when the
/// account is gone or disabled (tokens of removed users stop working at once).
pub async fn principal(pool: &PgPool, user_id: i64) -> Result<Option<Principal>, sqlx::Error> {
    let row: Option<(String, String, bool, Vec<i64>)> = sqlx::query_as(
        "SELECT u.email, u.role, u.disabled,
                COALESCE(array_agg(us.site_id) FILTER (WHERE us.site_id IS NOT NULL), '{}')
         FROM users u LEFT JOIN user_sites us ON us.user_id = u.id
         WHERE u.id = $1 GROUP BY u.id",
    )
    .bind(user_id)
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

/// Takes a site away from a user; whether the user had it.
pub async fn revoke_site(pool: &PgPool, user_id: i64, site_id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM user_sites WHERE user_id = $1 AND site_id = $2")
        .bind(user_id)
        .bind(site_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Disables or enables an account; a disabled user's tokens and sessions stop working at once
/// (every request loads the principal). Whether the user exists.
pub async fn set_disabled(
    pool: &PgPool,
    user_id: i64,
    disabled: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
        .bind(user_id)
        .bind(disabled)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Gives the user a new generated password and returns it (shown once); `None` when the user
/// does not exist.
pub async fn reset_password(pool: &PgPool, user_id: i64) -> Result<Option<String>, UserError> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(pool)
        .await?;
    Ok((done.rows_affected() > 0).then_some(secret))
}
