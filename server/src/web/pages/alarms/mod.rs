//! Alarm pages: the alarm list (active first, filter by site and severity) with acknowledge and
//! shelve forms, an alarm's history (`list`), the rule list and the rule editor (`rules`, with
//! pickers for what a rule applies to and the relay it sheds, and errors beside the field).
//! Same conventions as `pages`: session cookie, a CSRF token in every form, askama templates.

mod list;
mod quantities;
mod rules;

use axum::routing::{get, post};
use axum::Router;

use super::PageError;
use crate::alarms::AlarmError;
use crate::sites;
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/alarms", get(list::alarms_page))
        .route("/alarms/{id}", get(list::alarm_page))
        .route("/alarms/{id}/{action}", post(list::alarm_action))
        .merge(rules::routes())
}

impl From<AlarmError> for PageError {
    fn from(e: AlarmError) -> Self {
        match e {
            AlarmError::Invalid(m) | AlarmError::Conflict(m) => Self::Bad(m),
            AlarmError::NotFound(_) => Self::NotFound,
            AlarmError::Forbidden(_) => Self::Forbidden,
            AlarmError::Db(e) => Self::from(e),
        }
    }
}

/// `<option>`s: each value, its label, and whether it is the selected one.
fn options(
    values: &[(&'static str, &'static str)],
    selected: &str,
) -> Vec<(&'static str, &'static str, bool)> {
    values
        .iter()
        .map(|(v, label)| (*v, *label, *v == selected))
        .collect()
}

/// Severities as shown, most urgent first.
const SEVERITIES: [(&str, &str); 3] = [
    ("critical", "Critical"),
    ("warning", "Warning"),
    ("info", "Information"),
];

/// The sites the user may see: (id, name), by name.
async fn site_names(
    state: &WebState,
    user: &crate::auth::Principal,
) -> Result<Vec<(i64, String)>, PageError> {
    Ok(sites::list(&state.pool, &user.scope)
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect())
}
