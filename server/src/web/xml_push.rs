//! MiSmart XML push over HTTP (`POST /api/v1/xml-push`, the gateway's own credentials). The
//! admin routes that set a gateway's XML push identity are in `api::gateways`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use sg_wire::mismart::DocumentSplitter;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::error::ApiError;
use crate::fleet::gateways::{GatewayAuthError, GatewayAuthenticator};
use crate::infra::metrics::Metrics;
use crate::xml_push::registry;
use crate::xml_push::{Ack, RejectCode, Sender, XmlPush, HTTP_SOURCE};

/// Largest request body: a few documents of the largest size the parser takes.
pub const MAX_BODY_BYTES: usize = 4 * sg_wire::mismart::MAX_DOCUMENT_BYTES;

/// `auth_throttled` channel of the HTTP push ([`crate::infra::metrics::THROTTLE_CHANNELS`]).
const XML_PUSH_CHANNEL: usize = 2;

#[derive(Clone)]
struct PushState {
    push: Arc<XmlPush>,
    auth: Arc<GatewayAuthenticator>,
    /// Where throttled and shed attempts are counted.
    metrics: Arc<Metrics>,
}

/// `POST /api/v1/xml-push`, with its own state (the ingest sink), merged into the app router.
/// Throttled attempts (`auth_throttled{channel="xml_push"}`) and shed password checks are
/// counted in `metrics`.
pub fn router(
    push: Arc<XmlPush>,
    auth: Arc<GatewayAuthenticator>,
    metrics: Arc<Metrics>,
) -> Router {
    routes(PushState {
        push,
        auth,
        metrics,
    })
}

fn routes(state: PushState) -> Router {
    Router::new()
        .route("/api/v1/xml-push", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"headend-xml-push\""),
        )],
        "authentication required\n",
    )
        .into_response()
}

/// `Authorization: Basic base64(serial:password)`, bounded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if value.len() > 1024 {
        return None;
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// One or more documents in the body; the answer is one ack line per document, in order.
/// 200 when every document was handled (accepted or refused for its content), 400 when the
/// body is not a sequence of documents, 503 when the journal cannot take them.
async fn receive(
    State(state): State<PushState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((user, password)) = basic_credentials(&headers) else {
        return unauthorized();
    };
    let grant = match state
        .auth
        .authenticate(&user, password.as_bytes(), peer.ip())
        .await
    {
        Ok(Some(grant)) => grant,
        Ok(None) => {
            tracing::warn!(%peer, user = %user.chars().take(64).collect::<String>(), "XML push over HTTP refused: bad credentials");
            return unauthorized();
        }
        // Nothing was checked: 429 with Retry-After, never 401 (which would be a verdict).
        Err(GatewayAuthError::Throttled(throttled)) => {
            state.metrics.auth_throttled[XML_PUSH_CHANNEL].inc();
            tracing::warn!(%peer, user = %user.chars().take(64).collect::<String>(), retry_after_s = throttled.retry_after_secs(), "XML push over HTTP throttled: too many attempts for this serial or from this address");
            return ApiError::TooManyRequests(throttled.retry_after_secs()).into_response();
        }
        Err(GatewayAuthError::Busy(_)) => {
            state.metrics.password_checks_shed.inc();
            return ApiError::TooManyRequests(1).into_response();
        }
        Err(GatewayAuthError::Db(e)) => return ApiError::internal(e).into_response(),
    };
    let gateway = match registry::gateway_by_serial(state.push.pool(), &grant.serial).await {
        Ok(Some(gateway)) => gateway,
        Ok(None) => return unauthorized(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let mut sender = Sender::new(HTTP_SOURCE, peer.to_string(), vec![gateway]);
    let mut splitter = DocumentSplitter::new();
    splitter.push(&body);
    let mut answer = String::new();
    let mut status = StatusCode::OK;
    let mut documents = 0usize;
    loop {
        let failure = match splitter.next_document() {
            Some(Ok(document)) => {
                documents += 1;
                match state.push.document(&mut sender, document).await {
                    Ok(outcome) => {
                        answer.push_str(&outcome.ack.to_string());
                        if outcome.close.is_none() {
                            continue;
                        }
                        status = StatusCode::BAD_REQUEST;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "XML push over HTTP: journal refused the document");
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the journal cannot take documents now; send them again later\n",
                        )
                            .into_response();
                    }
                }
            }
            Some(Err(e)) => e,
            None => match splitter.finish() {
                Ok(()) if documents > 0 => break,
                Ok(()) => {
                    return (StatusCode::BAD_REQUEST, "the body holds no XML document\n")
                        .into_response()
                }
                Err(e) => e,
            },
        };
        let reason = format!("body refused: {failure}");
        let kept = body.slice(..body.len().min(crate::xml_push::MAX_KEPT_BYTES));
        if let Err(e) = state.push.refuse(&sender, kept, &reason).await {
            tracing::error!(%peer, error = %e, "XML push over HTTP: journal refused a reject record");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        answer.push_str(
            &Ack::Rejected {
                log_id: None,
                reason: RejectCode::Invalid,
            }
            .to_string(),
        );
        status = StatusCode::BAD_REQUEST;
        break;
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        answer,
    )
        .into_response()
}
