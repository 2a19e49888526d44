//! Users, roles, per-site access and session tokens.

pub mod password;
pub mod throttle;
pub mod token;
pub mod users;

use serde::{Deserialize, Serialize};

/// What a user may do: read (viewer), also switch relays and handle alarms (operator), also
/// administer (admin).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!(
                "unknown role {other:?}: use admin, operator or viewer"
            )),
        }
    }
}

/// Which sites a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Sites(Vec<i64>),
}

impl Scope {
    /// For SQL: `None` means every site (bind as NULL), else the allowed ids.
    pub fn site_ids(&self) -> Option<&[i64]> {
        match self {
            Self::All => None,
            Self::Sites(ids) => Some(ids),
        }
    }
}

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub scope: Scope,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
