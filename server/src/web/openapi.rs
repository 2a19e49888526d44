//! The OpenAPI 3.1 description of `/api/v1`, written by hand and checked against the router by a
//! test (every routed path is documented, and every documented path is routed).

use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

pub async fn serve() -> impl IntoResponse {
    Json(document())
}

fn op(summary: &str, tag: &str, auth: bool, responses: Value) -> Value {
    let mut o = json!({ "summary": summary, "tags": [tag], "responses": responses });
    if !auth {
        o["security"] = json!([]);
    }
    o
}

fn ok(schema: Value) -> Value {
    json!({
        "200": { "description": "OK", "content": { "application/json": { "schema": schema } } },
        "401": { "$ref": "#/components/responses/Unauthorized" }
    })
}

fn created(schema: Value) -> Value {
    json!({
        "201": { "description": "Created", "content": { "application/json": { "schema": schema } } },
        "400": { "$ref": "#/components/responses/BadRequest" },
        "401": { "$ref": "#/components/responses/Unauthorized" },
        "403": { "$ref": "#/components/responses/Forbidden" },
        "409": { "$ref": "#/components/responses/Conflict" }
    })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

pub fn document() -> Value {
    let r = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let list = |name: &str| json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{name}") } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Headend API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Energy supervision head-end. Values are in SI units (V, A, W, var, VA, Hz, Wh, varh, VAh, %, degrees, C); times are UTC (RFC 3339). Non-admin users see only the sites granted to them."
        },
        "servers": [{ "url": "/api/v1" }],
        "security": [{ "bearer": [] }, { "cookie": [] }],
        "paths": {
            "/auth/login": { "post": {
                "summary": "Exchange e-mail and password for a session token (also set as an HttpOnly cookie)",
                "tags": ["auth"], "security": [],
                "requestBody": body(json!({ "type": "object", "required": ["email", "password"],
                    "properties": { "email": { "type": "string" }, "password": { "type": "string" } } })),
                "responses": ok(r("Session"))
            }},
            "/auth/logout": { "post": op("Clear the session cookie", "auth", false, json!({ "204": { "description": "Cookie cleared" } })) },
            "/me": { "get": op("The current user", "auth", true, ok(r("Me"))) },
            "/sites": {
                "get": op("Sites visible to the user", "sites", true, ok(list("Site"))),
                "post": { "summary": "Create a site (admin)", "tags": ["sites"],
                    "requestBody": body(json!({ "type": "object", "required": ["name", "time_zone"],
                        "properties": { "name": { "type": "string" }, "time_zone": { "type": "string", "description": "IANA zone, e.g. Europe/Ljubljana" } } })),
                    "responses": created(json!({ "type": "object", "properties": { "id": { "type": "integer" } } })) }
            },
            "/users": {
                "get": op("All users (admin)", "users", true, ok(list("User"))),
                "post": { "summary": "Create a user (admin); a generated password is returned once", "tags": ["users"],
                    "requestBody": body(json!({ "type": "object", "required": ["email", "role"],
                        "properties": { "email": { "type": "string" }, "role": { "enum": ["admin", "operator", "viewer"] },
                            "password": { "type": "string", "minLength": 10 }, "sites": { "type": "array", "items": { "type": "integer" } } } })),
                    "responses": created(json!({ "type": "object", "properties": { "id": { "type": "integer" }, "password": { "type": ["string", "null"] } } })) }
            },
            "/users/{user_id}/sites/{site_id}": { "put": {
                "summary": "Grant a user access to a site (admin)", "tags": ["users"],
                "parameters": [path_param("user_id", "User id"), path_param("site_id", "Site id")],
                "responses": { "204": { "description": "Granted" }, "404": { "$ref": "#/components/responses/NotFound" } }
            }},
            "/gateways": {
                "get": op("Gateways of the user's sites", "gateways", true, ok(list("Gateway"))),
                "post": { "summary": "Register a gateway (admin); its MQTT password is returned once", "tags": ["gateways"],
                    "requestBody": body(json!({ "type": "object", "required": ["serial"],
                        "properties": { "serial": { "type": "string" }, "password": { "type": "string" }, "site_id": { "type": "integer" },
                            "time_zone": { "type": "string" }, "topic_root": { "type": "string" }, "topic_pub": { "type": "string" }, "topic_sub": { "type": "string" } } })),
                    "responses": created(r("GatewayCredentials")) }
            },
            "/gateways/{serial}": { "get": {
                "summary": "One gateway: online state, last hello, firmware, clock skew, rejected messages", "tags": ["gateways"],
                "parameters": [path_param("serial", "Gateway serial, e.g. SG000017")],
                "responses": ok(r("Gateway"))
            }},
            "/devices": { "get": op("Meters and relays of the user's sites", "devices", true, ok(list("Device"))) },
            "/devices/{serial}/latest": { "get": {
                "summary": "Latest instantaneous measurements of a meter, SI units", "tags": ["devices"],
                "parameters": [path_param("serial", "Meter serial number")],
                "responses": ok(r("Latest"))
            }},
            "/devices/{serial}/counters": { "get": {
                "summary": "Latest reading of each energy counter of a meter", "tags": ["devices"],
                "parameters": [path_param("serial", "Meter serial number")],
                "responses": ok(json!({ "type": "object", "properties": { "device": r("Device"), "counters": list("Counter") } }))
            }},
            "/ingest/rejects": { "get": {
                "summary": "Rejected (or partly rejected) gateway messages, newest first, kept verbatim with the reason", "tags": ["ingest"],
                "parameters": [
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "before", "in": "query", "description": "Page backwards: only ids below this", "schema": { "type": "integer" } },
                    { "name": "gateway", "in": "query", "description": "Only this gateway serial", "schema": { "type": "string" } }
                ],
                "responses": ok(list("Reject"))
            }},
            "/openapi.json": { "get": op("This document", "meta", false, json!({ "200": { "description": "OpenAPI document" } })) }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": "headend_session", "description": "Accepted for GET and HEAD only" }
            },
            "responses": {
                "BadRequest": { "description": "The request is invalid; `error` says why", "content": { "application/json": { "schema": r("Error") } } },
                "Unauthorized": { "description": "No valid session", "content": { "application/json": { "schema": r("Error") } } },
                "Forbidden": { "description": "The role does not allow this", "content": { "application/json": { "schema": r("Error") } } },
                "NotFound": { "description": "Not found (or not visible to this user)", "content": { "application/json": { "schema": r("Error") } } },
                "Conflict": { "description": "Already exists", "content": { "application/json": { "schema": r("Error") } } }
            },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "string" } } },
                "Session": { "type": "object", "properties": { "token": { "type": "string" }, "token_type": { "const": "Bearer" },
                    "expires_at": { "type": "string", "format": "date-time" }, "user": r("Me") } },
                "Me": { "type": "object", "properties": { "id": { "type": "integer" }, "email": { "type": "string" },
                    "role": { "enum": ["admin", "operator", "viewer"] }, "sites": { "type": ["array", "null"], "items": { "type": "integer" } } } },
                "Site": { "type": "object", "properties": { "id": { "type": "integer" }, "name": { "type": "string" },
                    "time_zone": { "type": "string" }, "created_at": { "type": "string", "format": "date-time" } } },
                "User": { "type": "object", "properties": { "id": { "type": "integer" }, "email": { "type": "string" },
                    "role": { "type": "string" }, "disabled": { "type": "boolean" }, "created_at": { "type": "string", "format": "date-time" } } },
                "GatewayCredentials": { "type": "object", "properties": { "id": { "type": "integer" }, "serial": { "type": "string" },
                    "password": { "type": "string", "description": "MQTT password, shown once" },
                    "publish_base": { "type": "string" }, "command_topic": { "type": "string" } } },
                "Gateway": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "serial": { "type": "string" }, "site_id": { "type": ["integer", "null"] },
                    "time_zone": { "type": "string" }, "publish_base": { "type": "string" }, "command_topic": { "type": "string" },
                    "model": { "type": ["string", "null"] }, "firmware_version": { "type": ["string", "null"] },
                    "hardware_version": { "type": ["string", "null"] }, "online": { "type": "boolean" },
                    "last_hello_at": { "type": ["string", "null"], "format": "date-time" },
                    "last_seen_at": { "type": ["string", "null"], "format": "date-time" },
                    "clock_skew_s": { "type": ["number", "null"], "description": "Gateway clock minus receive time, newest message" },
                    "clock_faults": { "type": "integer" }, "rejected_messages": { "type": "integer" } } },
                "Device": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "gateway": { "type": "string" }, "site_id": { "type": ["integer", "null"] },
                    "kind": { "enum": ["meter", "relay"] }, "port": { "enum": ["ir", "rs485"] }, "slot": { "type": "integer" },
                    "serial": { "type": "string" }, "model": { "type": ["string", "null"] }, "modbus_addr": { "type": ["integer", "null"] },
                    "phases": { "type": ["integer", "null"] }, "description": { "type": ["string", "null"] }, "location": { "type": ["string", "null"] },
                    "sg_description": { "type": ["string", "null"] }, "first_seen_at": { "type": "string", "format": "date-time" },
                    "updated_at": { "type": "string", "format": "date-time" } } },
                "Latest": { "type": "object", "properties": {
                    "device": r("Device"), "ts": { "type": ["string", "null"], "format": "date-time" },
                    "received_at": { "type": ["string", "null"], "format": "date-time" },
                    "clock_fault": { "type": "boolean", "description": "The gateway clock was unusable; ts is the receive time" },
                    "dst_ambiguous": { "type": "boolean" }, "dst_gap": { "type": "boolean" },
                    "tariff": { "type": ["integer", "null"] },
                    "values": { "type": "object", "additionalProperties": { "type": "number" },
                        "description": "frequency, u1..u3, u12, u23, u31, i1..i3, i_n, p, p1..p3, q.., s.., pf.. (inductive +, capacitive -), pa.., temperature, thd_i1..3, thd_u1..3; absent values are omitted" },
                    "units": { "type": "object", "additionalProperties": { "type": "string" } } } },
                "Counter": { "type": "object", "properties": {
                    "name": { "type": "string" }, "index": { "type": "integer" }, "resettable": { "type": "boolean" },
                    "unit": { "enum": ["Wh", "varh", "VAh"] }, "phase": { "type": ["string", "null"] },
                    "tariffs": { "type": "array", "items": { "type": "integer" } },
                    "ts": { "type": "string", "format": "date-time" }, "received_at": { "type": "string", "format": "date-time" },
                    "value_milli": { "type": "integer", "description": "Exact, in milli-units" },
                    "value": { "type": "string", "description": "Exact decimal in base units" },
                    "clock_fault": { "type": "boolean" } } },
                "Reject": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "received_at": { "type": "string", "format": "date-time" },
                    "source": { "type": "string" }, "topic": { "type": "string" }, "client": { "type": "string" },
                    "gateway": { "type": ["string", "null"] }, "reason": { "type": "string" },
                    "partial": { "type": "boolean", "description": "The valid part of the message was stored" },
                    "payload_size": { "type": "integer" }, "payload": { "type": ["string", "null"] },
                    "payload_base64": { "type": ["string", "null"] } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route in `web::router` under /api/v1, as axum spells it.
    const ROUTED: &[&str] = &[
        "/auth/login",
        "/auth/logout",
        "/me",
        "/sites",
        "/users",
        "/users/{user_id}/sites/{site_id}",
        "/gateways",
        "/gateways/{serial}",
        "/devices",
        "/devices/{serial}/latest",
        "/devices/{serial}/counters",
        "/ingest/rejects",
        "/openapi.json",
    ];

    #[test]
    fn documented_paths_are_the_listed_routes() {
        let doc = document();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        let mut routed = ROUTED.to_vec();
        routed.sort_unstable();
        assert_eq!(documented, routed);
    }

    /// Every documented path and method reaches a handler, not the fallback.
    #[tokio::test]
    async fn documented_routes_are_served() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let state = super::super::WebState {
            // Never connected: unauthenticated requests are refused before any query.
            pool: sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(std::time::Duration::from_millis(50))
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .unwrap(),
            keys: crate::auth::token::TokenKeys::new(&[1; 32], 60),
            metrics: std::sync::Arc::default(),
            gauges: std::sync::Arc::new(crate::metrics::Gauges::default),
            default_time_zone: "UTC".into(),
            secure_cookies: false,
            on_gateways_changed: std::sync::Arc::new(|| {}),
        };
        let router = super::super::router(state, 1024);
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let uri = format!(
                    "/api/v1{}",
                    path.replace("{serial}", "x")
                        .replace("{user_id}", "1")
                        .replace("{site_id}", "1")
                );
                let request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                assert!(
                    !(status == 404 && body.as_ref() == br#"{"error":"route not found"}"#)
                        && status != 405,
                    "{method} {uri}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let reference = part.split('"').next().unwrap();
            let (kind, name) = reference.split_once('/').unwrap();
            assert!(
                doc["components"][kind][name].is_object(),
                "dangling reference {reference}"
            );
        }
    }
}
