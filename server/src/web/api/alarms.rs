//! Alarms and alarm rules.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_alarms;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/alarms",
            get(legacy_alarms::list).post(legacy_alarms::bulk),
        )
        .route("/alarms/history.csv", get(legacy_alarms::history_csv))
        .route("/alarms/{id}", get(legacy_alarms::get))
        .route("/alarms/{id}/acknowledge", post(legacy_alarms::acknowledge))
        .route("/alarms/{id}/shelve", post(legacy_alarms::shelve))
        .route("/alarms/{id}/unshelve", post(legacy_alarms::unshelve))
        .route(
            "/alarm-rules",
            get(legacy_alarms::list_rules).post(legacy_alarms::create_rule),
        )
        .route(
            "/alarm-rules/{id}",
            get(legacy_alarms::get_rule)
                .put(legacy_alarms::put_rule)
                .delete(legacy_alarms::delete_rule),
        )
}
