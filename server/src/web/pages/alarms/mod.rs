//! Alarm pages: the alarm list (active first, filter by site and severity) with acknowledge and
//! shelve forms, an alarm's history (`list`), the rule list and the rule editor (`rules`, with
//! pickers for what a rule applies to and the relay it sheds, and errors beside the field).
//! Same conventions as `pages`: session cookie, a CSRF token in every form, askama templates.

mod list;
mod quantities;
mod rules;

pub use list::{alarm_action, alarm_page, alarms_page, ActionForm, AlarmParams, ListParams};
pub use rules::{create_rule, delete_rule, rule_page, rules_page, update_rule, CsrfOnly, RuleForm};

use super::PageError;
use crate::alarms::AlarmError;
use crate::sites;
use crate::web::WebState;

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
    p: &crate::auth::Principal,
) -> Result<Vec<(i64, String)>, PageError> {
    Ok(sites::list(&state.pool, &p.scope)
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect())
}
