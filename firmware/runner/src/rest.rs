//! The SG's local REST API: `GET /get_command?command=…`, answering with the same JSON
//! documents the gateway publishes over MQTT.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// What a REST command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocRequest {
    /// Measurements of command index 0 (left IR) or RS485 slot `n`.
    Measurements(u8),
    /// Counters of command index 0 (left IR) or RS485 slot `n`.
    Counters(u8),
}

impl DocRequest {
    /// `get_measurements` (IR), `get_measurements1`, `get_measurements2`, and the same for
    /// `get_counters`. The real SG offers exactly these six.
    #[must_use]
    pub fn parse(command: &str) -> Option<Self> {
        let index = |suffix: &str| match suffix {
            "" => Some(0),
            "1" => Some(1),
            "2" => Some(2),
            _ => None,
        };
        if let Some(suffix) = command.strip_prefix("get_measurements") {
            index(suffix).map(Self::Measurements)
        } else if let Some(suffix) = command.strip_prefix("get_counters") {
            index(suffix).map(Self::Counters)
        } else {
            None
        }
    }
}

/// Why a document could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocError {
    /// No meter in that position.
    NoDevice,
    /// The meter did not answer; the text is the SG's error line.
    NotResponding(String),
}

/// Produces documents on request (the gateway reads its meter now, as the real SG does).
pub trait Documents: Send + Sync + 'static {
    /// The document as JSON text.
    ///
    /// # Errors
    /// See [`DocError`].
    fn document(&self, request: DocRequest) -> Result<String, DocError>;

    /// Queue lengths and drop counts, for `GET /stats`.
    fn stats(&self) -> serde_json::Value;
}

#[derive(Deserialize)]
struct CommandQuery {
    command: Option<String>,
}

/// The router; serve it with `axum::serve`.
pub fn router(documents: Arc<dyn Documents>) -> Router {
    Router::new()
        .route("/get_command", get(get_command))
        .route("/stats", get(stats))
        .with_state(documents)
}

async fn get_command(
    State(documents): State<Arc<dyn Documents>>,
    Query(query): Query<CommandQuery>,
) -> Response {
    let Some(command) = query.command else {
        return error(StatusCode::BAD_REQUEST, "missing query parameter `command`");
    };
    let Some(request) = DocRequest::parse(&command) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "unknown command `{}`; expected get_measurements, get_measurements1, \
                 get_measurements2, get_counters, get_counters1 or get_counters2",
                command.chars().take(64).collect::<String>()
            ),
        );
    };
    match documents.document(request) {
        Ok(body) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(DocError::NoDevice) => error(StatusCode::NOT_FOUND, "no meter in that position"),
        Err(DocError::NotResponding(line)) => error(StatusCode::GATEWAY_TIMEOUT, &line),
    }
}

/// Not part of the SG's API: the runner's queue counters.
async fn stats(State(documents): State<Arc<dyn Documents>>) -> Json<serde_json::Value> {
    Json(documents.stats())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    struct Fixed;

    impl Documents for Fixed {
        fn document(&self, request: DocRequest) -> Result<String, DocError> {
            match request {
                DocRequest::Measurements(0) => Ok(r#"{"measurements":{}}"#.into()),
                DocRequest::Counters(1) => Ok(r#"{"counters":{}}"#.into()),
                DocRequest::Counters(2) => Err(DocError::NotResponding(
                    "Error: RS485 device:2 Energy meter not responding. Addr:12".into(),
                )),
                _ => Err(DocError::NoDevice),
            }
        }

        fn stats(&self) -> serde_json::Value {
            json!({ "queued": [3, 0], "dropped": [1, 0] })
        }
    }

    async fn get(uri: &str) -> (StatusCode, serde_json::Value) {
        let response = router(Arc::new(Fixed))
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn parses_the_six_commands_only() {
        assert_eq!(
            DocRequest::parse("get_measurements"),
            Some(DocRequest::Measurements(0))
        );
        assert_eq!(
            DocRequest::parse("get_measurements2"),
            Some(DocRequest::Measurements(2))
        );
        assert_eq!(
            DocRequest::parse("get_counters1"),
            Some(DocRequest::Counters(1))
        );
        for bad in [
            "get_measurements3",
            "get_counters0",
            "reboot",
            "",
            "get_counters 1",
        ] {
            assert_eq!(DocRequest::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_documents() {
        let (status, body) = get("/get_command?command=get_measurements").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("measurements").is_some());
        let (status, body) = get("/get_command?command=get_counters1").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("counters").is_some());
        let (status, body) = get("/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["dropped"][0], 1);
    }

    #[tokio::test]
    async fn errors_are_json() {
        let (status, body) = get("/get_command?command=reboot").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("unknown command `reboot`"));
        let (status, _) = get("/get_command").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get("/get_command?command=get_measurements1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get("/get_command?command=get_counters2").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(body["error"].as_str().unwrap().contains("Addr:12"));
    }
}
