//! The SG's local REST API. Two families, both answering from the documents the gateway
//! pushed: the JSON API that the Iskra client library `pyiskra` (Home Assistant's `iskra`
//! integration) reads, `GET /api`, `/api/devices`, `/api/measurement/{i}` and
//! `/api/counter/{i}` ([`api`]), and the older `GET /get_command?command=…`, answering with
//! the MQTT documents themselves. Beside them, the runner's own routes: `GET /stats` (queue
//! counters) and `POST /faults` (faults on demand, see [`crate::fault`]). With a [`Login`]
//! every route asks for it ([`auth`]).

pub mod api;
pub mod auth;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sg_gateway_core::config::Slot;
use sg_gateway_core::Fault;
use sg_wire::message::{CountersDoc, MeasurementsDoc};

pub use api::{GatewayInfo, Position};
pub use auth::{Login, LoginError};

use crate::fault;
use crate::source::Direction;

/// Request bodies are refused above this size (413): the largest fault is under 100 bytes.
pub const MAX_BODY_BYTES: usize = 4096;

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

    /// Injects a fault now, for `POST /faults`.
    ///
    /// # Errors
    /// Why the fault cannot be applied (e.g. no simulated meter in that slot).
    fn inject(&self, fault: Fault) -> Result<(), String>;

    /// The gateway's identity, for `GET /api`.
    fn gateway_info(&self) -> GatewayInfo;

    /// The configured devices and whether each answers, for `GET /api/devices`.
    fn positions(&self) -> Vec<Position>;

    /// The direction of each counter of the meter in `slot`, by SG name (`counter1nr`).
    fn directions(&self, slot: Slot) -> BTreeMap<String, Direction>;
}

#[derive(Deserialize)]
struct CommandQuery {
    command: Option<String>,
}

/// The router; serve it with `axum::serve`. With `login`, every route asks for it.
pub fn router(documents: Arc<dyn Documents>, login: Option<Login>) -> Router {
    let routes = Router::new()
        .route("/api", get(api_gateway))
        .route("/api/devices", get(api_devices))
        .route("/api/measurement/{index}", get(api_measurement))
        .route("/api/counter/{index}", get(api_counter))
        .route("/get_command", get(get_command))
        .route("/stats", get(stats))
        .route("/faults", post(post_fault))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such resource") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(documents);
    match login {
        Some(login) => routes.layer(middleware::from_fn_with_state(
            Arc::new(login),
            require_login,
        )),
        None => routes,
    }
}

/// 403 unless the request carries the login cookie.
async fn require_login(State(login): State<Arc<Login>>, request: Request, next: Next) -> Response {
    if login.admits(request.headers()) {
        next.run(request).await
    } else {
        error(StatusCode::FORBIDDEN, "not authorised: log in first")
    }
}

async fn api_gateway(State(documents): State<Arc<dyn Documents>>) -> Json<serde_json::Value> {
    Json(api::gateway_json(&documents.gateway_info()))
}

async fn api_devices(State(documents): State<Arc<dyn Documents>>) -> Json<serde_json::Value> {
    Json(api::devices_json(&documents.positions()))
}

/// An answer other than 200: the status and a JSON `{"error": …}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

impl From<DocError> for ApiError {
    fn from(error: DocError) -> Self {
        match error {
            DocError::NoDevice => Self::new(StatusCode::NOT_FOUND, "no meter in that position"),
            DocError::NotResponding(line) => Self::new(StatusCode::GATEWAY_TIMEOUT, line),
        }
    }
}

/// The meter at pyiskra's index `index` and its phase count: 404 for an index that holds no
/// meter, 504 for a meter that does not answer.
fn meter_at(documents: &dyn Documents, index: &str) -> Result<(Slot, u8), ApiError> {
    let shown: String = index.chars().take(16).collect();
    let Some(slot) = api::slot_of_index(index) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no device at index `{shown}`: 0 is the Left IR meter, 1 to 16 the RS485 slots"
            ),
        ));
    };
    let position = documents.positions().into_iter().find(|p| p.slot == slot);
    match position {
        Some(Position {
            phases: Some(phases),
            detected: true,
            ..
        }) => Ok((slot, phases)),
        Some(Position {
            phases: Some(_), ..
        }) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the meter at {} is not responding", api::interface(slot)),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no meter at index {shown} ({})", api::interface(slot)),
        )),
    }
}

/// The pushed document behind an API answer, parsed.
fn pushed<T: serde::de::DeserializeOwned>(
    documents: &dyn Documents,
    request: DocRequest,
) -> Result<T, ApiError> {
    let text = documents.document(request)?;
    serde_json::from_str(&text).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the pushed document does not parse: {e}"),
        )
    })
}

async fn api_measurement(
    State(documents): State<Arc<dyn Documents>>,
    Path(index): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (slot, phases) = meter_at(&*documents, &index)?;
    let doc: MeasurementsDoc = pushed(&*documents, DocRequest::Measurements(slot.index()))?;
    Ok(Json(api::measurements_json(&doc, phases)))
}

async fn api_counter(
    State(documents): State<Arc<dyn Documents>>,
    Path(index): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (slot, _) = meter_at(&*documents, &index)?;
    let doc: CountersDoc = pushed(&*documents, DocRequest::Counters(slot.index()))?;
    Ok(Json(api::counters_json(&doc, &documents.directions(slot))))
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
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Not part of the SG's API: the runner's queue counters.
async fn stats(State(documents): State<Arc<dyn Documents>>) -> Json<serde_json::Value> {
    Json(documents.stats())
}

/// Not part of the SG's API: injects a fault (the body is its JSON form). 202 once applied;
/// 400 for a body that is not a fault, 413 above [`MAX_BODY_BYTES`], 422 for a fault the
/// gateway cannot apply.
async fn post_fault(
    State(documents): State<Arc<dyn Documents>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text");
    };
    let fault = match fault::parse_fault(text) {
        Ok(fault) => fault,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match documents.inject(fault) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "injected": fault }))).into_response(),
        Err(message) => error(StatusCode::UNPROCESSABLE_ENTITY, &message),
    }
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

    #[derive(Default)]
    struct Fixed {
        injected: std::sync::Mutex<Vec<Fault>>,
    }

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

        fn gateway_info(&self) -> GatewayInfo {
            GatewayInfo {
                model: "SG-W1".into(),
                serial: "SG000017".into(),
                sw_ver: "0.51".into(),
                description: String::new(),
                location: String::new(),
            }
        }

        fn positions(&self) -> Vec<Position> {
            Vec::new()
        }

        fn directions(&self, _slot: Slot) -> BTreeMap<String, Direction> {
            BTreeMap::new()
        }

        fn inject(&self, fault: Fault) -> Result<(), String> {
            if let Fault::CounterReset {
                slot: Slot::Rs485(9),
            } = fault
            {
                return Err("no simulated meter in slot {\"rs485\":9}".into());
            }
            self.injected.lock().unwrap().push(fault);
            Ok(())
        }
    }

    async fn call(
        documents: Arc<Fixed>,
        request: Request<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let response = router(documents, None).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn get(uri: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        call(Arc::default(), request).await
    }

    async fn post_fault(documents: &Arc<Fixed>, body: impl Into<Body>) -> (StatusCode, String) {
        let request = Request::post("/faults")
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let (status, body) = call(documents.clone(), request).await;
        let text = body
            .get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| body.to_string(), str::to_owned);
        (status, text)
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

    #[tokio::test]
    async fn faults_are_injected_on_demand() {
        let documents = Arc::new(Fixed::default());
        let (status, body) =
            post_fault(&documents, r#"{"counter_reset":{"slot":{"rs485":1}}}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(
            body,
            r#"{"injected":{"counter_reset":{"slot":{"rs485":1}}}}"#
        );
        let (status, _) = post_fault(&documents, r#""garble""#).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _) = post_fault(&documents, r#"{"go_offline":{"secs":3}}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(
            *documents.injected.lock().unwrap(),
            [
                Fault::CounterReset {
                    slot: Slot::Rs485(1)
                },
                Fault::Garble,
                Fault::GoOffline { secs: 3 }
            ]
        );
    }

    #[tokio::test]
    async fn bad_fault_bodies_are_refused_with_a_reason() {
        let documents = Arc::new(Fixed::default());
        let (status, message) = post_fault(&documents, r#"{"counter_reset":{}}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("missing field `slot`"), "{message}");
        let (status, message) = post_fault(&documents, "melt down").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("not a fault"), "{message}");
        let (status, _) = post_fault(&documents, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = post_fault(&documents, vec![0xff, 0xfe]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, message) =
            post_fault(&documents, r#"{"counter_reset":{"slot":{"rs485":9}}}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("no simulated meter"), "{message}");
        // Bounded: a large body is refused before it is read in full.
        let huge = format!(
            r#"{{"clock_drift":{{"ppm":1{}}}}}"#,
            " ".repeat(MAX_BODY_BYTES)
        );
        let (status, _) = post_fault(&documents, huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(documents.injected.lock().unwrap().is_empty());
    }
}
