//! The OpenAPI 3.1 description of `/api/v1`, written by hand and checked against the router by
//! tests (every routed path is documented, every documented path is routed, and every
//! documented method reaches a handler).

use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::accounting::structure::USAGES;

pub async fn serve() -> impl IntoResponse {
    Json(document())
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn list(name: &str) -> Value {
    json!({ "type": "array", "items": r(name) })
}

fn op(summary: &str, tag: &str, auth: bool, responses: Value) -> Value {
    let mut o = json!({ "summary": summary, "tags": [tag], "responses": responses });
    if !auth {
        o["security"] = json!([]);
    }
    o
}

/// Adds the shared error responses (`400`, `401`, `403`, `404`, `409`) named by `codes`.
fn with(mut responses: Value, codes: &[&str]) -> Value {
    for code in codes {
        let name = match *code {
            "400" => "BadRequest",
            "401" => "Unauthorized",
            "403" => "Forbidden",
            "404" => "NotFound",
            "409" => "Conflict",
            other => unreachable!("no shared response {other}"),
        };
        responses[*code] = json!({ "$ref": format!("#/components/responses/{name}") });
    }
    responses
}

fn ok(schema: Value) -> Value {
    with(
        json!({ "200": { "description": "OK", "content": { "application/json": { "schema": schema } } } }),
        &["401"],
    )
}

/// A read of one resource (or of something under it) that may not exist or not be visible.
fn found(schema: Value) -> Value {
    with(ok(schema), &["404"])
}

fn created(schema: Value) -> Value {
    with(
        json!({ "201": { "description": "Created", "content": { "application/json": { "schema": schema } } } }),
        &["400", "401", "403", "409"],
    )
}

/// The `{"id": …}` answer of a creation.
fn created_id() -> Value {
    created(json!({ "type": "object", "properties": { "id": { "type": "integer" } } }))
}

/// A change answered with `204 No Content`.
fn changed(description: &str, codes: &[&str]) -> Value {
    with(json!({ "204": { "description": description } }), codes)
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn id_param(description: &str) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": description,
        "schema": { "type": "integer", "format": "int64" } })
}

fn query_param(name: &str, required: bool, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": required, "description": description, "schema": schema })
}

/// An operation with a description, path parameters and optionally a request body.
fn described(
    summary: &str,
    tag: &str,
    description: &str,
    parameters: Vec<Value>,
    request: Option<Value>,
    responses: Value,
) -> Value {
    let mut o = json!({ "summary": summary, "tags": [tag], "description": description, "responses": responses });
    if !parameters.is_empty() {
        o["parameters"] = Value::Array(parameters);
    }
    if let Some(schema) = request {
        o["requestBody"] = body(schema);
    }
    o
}

/// The union of several JSON objects (later keys win).
fn merged(parts: impl IntoIterator<Item = Value>) -> Value {
    let mut all = Map::new();
    for part in parts {
        if let Value::Object(fields) = part {
            all.extend(fields);
        }
    }
    Value::Object(all)
}

const ACCESS: &str = "Sites, and everything under them (panels, circuits, contracts, meters, \
    consumption), are read by anyone granted the site and written by admins. A resource the user \
    may not see answers 404, exactly like one that does not exist.";

/// The identity rule of meters (see `devices::Resolved`), for every route that takes a serial.
const METER_IDENTITY: &str = "A meter is addressed by its serial within the caller's scope: \
    meters of sites the caller may not see do not exist for them (404) and are never candidates. \
    A serial is not unique (gateways of two sites, or two slots of one gateway, can report the \
    same one): the optional `device` query parameter (the device `id`) picks one, and must name a \
    meter in scope with that serial (else 404). When several meters in scope report the serial \
    and `device` is not given, the answer is 409 with the `candidates`, never a guess. The path \
    segment is the percent-encoded serial; a serial that cannot be a path segment (empty, `.`, \
    `..`) is written `~` together with `device`.";

/// `?device=`, the device id that picks one of the meters reporting a serial.
fn device_param() -> Value {
    query_param(
        "device",
        false,
        "Device id: which of the meters reporting the serial (see the operation's description)",
        json!({ "type": "integer", "format": "int64" }),
    )
}

/// Adds the 409 of an ambiguous serial.
fn ambiguous(mut responses: Value) -> Value {
    responses["409"] = json!({ "$ref": "#/components/responses/Ambiguous" });
    responses
}

const TIME_PARAM: &str = "An RFC 3339 instant (2026-03-29T00:00:00+01:00), or a local date \
    YYYY-MM-DD meaning local midnight at the start of that date in the site's time zone.";

pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Headend API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Energy supervision head-end. Values are in SI units (V, A, W, var, VA, Hz, Wh, varh, VAh, %, degrees, C); times are UTC (RFC 3339) unless named `*_local`. Non-admin users see only the sites granted to them. {ACCESS} Energy is in the unit of its register (Wh, varh, VAh). Costs are in the contract's currency, rounded to 1e-6 for display; sums are kept exact internally, so a total is the rounded exact sum, not the sum of rounded parts.")
        },
        "servers": [{ "url": "/api/v1" }],
        "security": [{ "bearer": [] }, { "cookie": [] }],
        "tags": [
            { "name": "auth", "description": "Sessions" },
            { "name": "sites", "description": ACCESS },
            { "name": "structure", "description": "Panels (distribution boards) and circuits of a site, and where meters measure. Read by anyone granted the site, written by admins." },
            { "name": "contracts", "description": "Supply contracts of a site: time-of-use bands and prices. A contract applies from its `valid_from` local date until the next one; any change rebuilds the site's costs in the background." },
            { "name": "energy", "description": "Quarter-hour profiles and consumption by day, month or year, computed from the meters' cumulative registers. Energy in the register's unit (Wh, varh, VAh); cost in the contract currency rounded to 1e-6 (exact sums kept internally)." },
            { "name": "users", "description": "User accounts (admin)" },
            { "name": "gateways", "description": "Gateways and their placement on sites" },
            { "name": "devices", "description": format!("Meters and relays behind the gateways. {METER_IDENTITY}") },
            { "name": "ingest", "description": "Rejected gateway messages" },
            { "name": "converters", "description": "Modbus TCP converters (RS485/IP) and the meters and relays polled behind them" },
            { "name": "meta", "description": "This document" }
        ],
        "paths": merged([base_paths(), site_paths(), structure_paths(), contract_paths(), device_paths(), relay_paths(), export_paths(), super::legacy_converters::openapi_paths(), super::legacy_alarms::openapi_paths(), super::quarantine::openapi_paths()]),
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": "headend_session", "description": "Accepted for GET and HEAD only" }
            },
            "responses": {
                "BadRequest": { "description": "The request is invalid; `error` says why", "content": { "application/json": { "schema": r("Error") } } },
                "Unauthorized": { "description": "No valid session", "content": { "application/json": { "schema": r("Error") } } },
                "Forbidden": { "description": "The role does not allow this (writes need the admin role)", "content": { "application/json": { "schema": r("Error") } } },
                "NotFound": { "description": "Not found, or not visible to this user", "content": { "application/json": { "schema": r("Error") } } },
                "Conflict": { "description": "Already exists (a name or date that must be unique is taken)", "content": { "application/json": { "schema": r("Error") } } },
                "Ambiguous": { "description": "Several meters in the caller's scope report this serial: choose one with `device`", "content": { "application/json": { "schema": r("Ambiguous") } } }
            },
            "schemas": merged([base_schemas(), identity_schemas(), structure_schemas(), contract_schemas(), profile_schemas(), consumption_schemas(), relay_schemas(), super::legacy_converters::openapi_schemas(), super::legacy_alarms::openapi_schemas()])
        }
    })
}

fn base_paths() -> Value {
    json!({
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
                "responses": created_id() }
        },
        "/users": {
            "get": op("All users (admin)", "users", true, ok(list("User"))),
            "post": { "summary": "Create a user (admin); a generated password is returned once", "tags": ["users"],
                "requestBody": body(json!({ "type": "object", "required": ["email", "role"],
                    "properties": { "email": { "type": "string" }, "role": { "enum": ["admin", "operator", "viewer"] },
                        "password": { "type": "string", "minLength": 10 }, "sites": { "type": "array", "items": { "type": "integer" } } } })),
                "responses": created(json!({ "type": "object", "properties": { "id": { "type": "integer" }, "password": { "type": ["string", "null"] } } })) }
        },
        "/users/{user_id}": { "patch": {
            "summary": "Disable or enable an account, or reset its password (admin); a new password is returned once", "tags": ["users"],
            "description": "A disabled user's tokens and sessions stop working at once. An admin cannot disable their own account (409).",
            "parameters": [path_param("user_id", "User id")],
            "requestBody": body(json!({ "type": "object", "additionalProperties": false,
                "properties": { "disabled": { "type": "boolean" }, "reset_password": { "type": "boolean" } } })),
            "responses": {
                "200": { "description": "The account", "content": { "application/json": { "schema": { "type": "object",
                    "properties": { "id": { "type": "integer" }, "disabled": { "type": "boolean" },
                        "password": { "type": ["string", "null"], "description": "The new password, when reset" } } } } } },
                "404": { "$ref": "#/components/responses/NotFound" }, "409": { "description": "Own account" } }
        }},
        "/users/{user_id}/sites/{site_id}": {
            "put": {
                "summary": "Grant a user access to a site (admin)", "tags": ["users"],
                "parameters": [path_param("user_id", "User id"), path_param("site_id", "Site id")],
                "responses": { "204": { "description": "Granted" }, "404": { "$ref": "#/components/responses/NotFound" } }
            },
            "delete": {
                "summary": "Take a site away from a user (admin)", "tags": ["users"],
                "parameters": [path_param("user_id", "User id"), path_param("site_id", "Site id")],
                "responses": { "204": { "description": "Revoked" }, "404": { "$ref": "#/components/responses/NotFound" } }
            }
        },
        "/gateways/{serial}/password": { "post": {
            "summary": "Give a gateway a new MQTT password (admin); returned once", "tags": ["gateways"],
            "description": "The next CONNECT needs the new password; sessions already open stay open until they reconnect.",
            "parameters": [path_param("serial", "Gateway serial, e.g. SG000017")],
            "responses": {
                "200": { "description": "The new password", "content": { "application/json": { "schema": { "type": "object",
                    "properties": { "serial": { "type": "string" }, "password": { "type": "string" } } } } } },
                "404": { "$ref": "#/components/responses/NotFound" } }
        }},
        "/gateways": {
            "get": op("Gateways of the user's sites", "gateways", true, ok(list("Gateway"))),
            "post": { "summary": "Register a gateway (admin); its MQTT password is returned once", "tags": ["gateways"],
                "requestBody": body(json!({ "type": "object", "required": ["serial"],
                    "properties": { "serial": { "type": "string" }, "password": { "type": "string" }, "site_id": { "type": "integer" },
                        "time_zone": { "type": "string" }, "topic_root": { "type": "string" }, "topic_pub": { "type": "string" }, "topic_sub": { "type": "string" } } })),
                "responses": created(r("GatewayCredentials")) }
        },
        "/gateways/{serial}": {
            "get": {
                "summary": "One gateway: online state, last hello, firmware, clock skew, rejected messages", "tags": ["gateways"],
                "parameters": [path_param("serial", "Gateway serial, e.g. SG000017")],
                "responses": found(r("Gateway"))
            },
            "patch": described(
                "Move a gateway and its meters to a site, or off any site (admin)", "gateways",
                "`site_id` null (or absent) takes the gateway off any site. The gateway's meters lose their placement (panel, circuit) from the old site; both sites' consumption is rebuilt in the background, and the new site's time zone and contracts apply.",
                vec![path_param("serial", "Gateway serial, e.g. SG000017")],
                Some(r("GatewayPatch")),
                changed("Moved (or already there)", &["400", "401", "403", "404"]),
            )
        },
        "/gateways/{serial}/xml-push": {
            "get": {
                "summary": "A gateway's MiSmart XML push identity: allowed source addresses and meters, with the device slot each meter is stored on", "tags": ["gateways"],
                "parameters": [path_param("serial", "Gateway serial, e.g. SG000017")],
                "responses": found(r("XmlPushSettingsView"))
            },
            "put": described(
                "Set a gateway's MiSmart XML push identity (admin)", "gateways",
                "Replaces the source addresses (a TCP push from any other address is refused) and the meter serials (`controlUnit`) the gateway may push for. A new meter is pinned to the gateway's meter with the same serial if MQTT already reported it, else to the first free `xml` slot; a kept meter keeps its device. The gateway itself pushes to the XML push listener, or with HTTP Basic (its serial and MQTT password) to `POST /api/v1/xml-push`; see docs/xml-push.md.",
                vec![path_param("serial", "Gateway serial, e.g. SG000017")],
                Some(r("XmlPushSettings")),
                with(ok(r("XmlPushSettingsView")), &["400", "403", "404"]),
            )
        },
        "/devices": { "get": op("Meters and relays of the user's sites", "devices", true, ok(list("Device"))) },
        "/devices/{serial}/latest": { "get": {
            "summary": "Latest instantaneous measurements of a meter, SI units", "tags": ["devices"],
            "description": METER_IDENTITY,
            "parameters": [path_param("serial", "Meter serial number, percent-encoded"), device_param()],
            "responses": ambiguous(found(r("Latest")))
        }},
        "/devices/{serial}/counters": { "get": {
            "summary": "Latest reading of each energy counter of a meter", "tags": ["devices"],
            "description": METER_IDENTITY,
            "parameters": [path_param("serial", "Meter serial number, percent-encoded"), device_param()],
            "responses": ambiguous(found(json!({ "type": "object", "properties": { "device": r("Device"), "counters": list("Counter") } })))
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
    })
}

const OPERATE: &str =
    "Operators and admins granted the relay's site; viewers get 403, other sites 404.";

fn relay_paths() -> Value {
    let r = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let relay = || id_param("Relay id (a device of kind relay)");
    let command = || id_param("Command id");
    json!({
        "/relays": { "get": described(
            "Relays of the user's sites", "relays",
            "The state is the last one the relay reported, with its age; a command in flight is shown as such, never as the new state.",
            vec![], None, ok(json!({ "type": "array", "items": r("Relay") })),
        )},
        "/relays/{id}": {
            "get": described("One relay: reported state and age, command in flight, wear", "relays", ACCESS, vec![relay()], None, found(r("Relay"))),
            "patch": described(
                "Relay settings (admin): critical (four-eyes for off), rated operations, anti-chatter interval, name", "relays",
                "Absent fields stay unchanged.", vec![relay()], Some(r("RelaySettings")),
                changed("Changed", &["400", "401", "403", "404"]),
            )
        },
        "/relays/{id}/commands": {
            "get": described(
                "Command history of a relay, newest first, with every transition", "relays", ACCESS,
                vec![relay(), json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } })],
                None, found(json!({ "type": "array", "items": r("Command") })),
            ),
            "post": described(
                "Command a relay: on, off or toggle", "relays",
                "Operators and admins of the relay's site. 201 with the new command; 200 with the earlier one when the idempotency key (body field or `Idempotency-Key` header) was used before on this relay. 409 when refused by a safety rule: another command in flight, or the minimum interval between switchings (anti-chatter). A critical relay's off (or toggle) waits in `awaiting_approval` for a second operator. A newer command cancels older ones not yet sent. The command is tracked until the relay's reported state proves it: queued → sent → confirmed | failed | expired; cancelled before sending.",
                vec![relay()], Some(r("NewCommand")),
                json!({
                    "201": { "description": "Created", "content": { "application/json": { "schema": r("Command") } } },
                    "200": { "description": "Same idempotency key: the existing command", "content": { "application/json": { "schema": r("Command") } } },
                    "400": { "$ref": "#/components/responses/BadRequest" },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Forbidden" },
                    "404": { "$ref": "#/components/responses/NotFound" },
                    "409": { "$ref": "#/components/responses/Conflict" }
                }),
            )
        },
        "/commands/{id}": { "get": described("One command with its transitions", "relays", ACCESS, vec![command()], None, found(r("Command"))) },
        "/commands/{id}/cancel": { "post": described(
            "Cancel a command not yet sent", "relays", OPERATE, vec![command()], None, found(r("Command")),
        )},
        "/commands/{id}/approve": { "post": described(
            "Approve switching a critical relay off (four-eyes)", "relays",
            "Another operator or admin of the site than the requester, before the approval deadline; 409 otherwise.",
            vec![command()], None, found(r("Command")),
        )}
    })
}

fn export_paths() -> Value {
    let q = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "query", "description": description, "schema": schema });
    json!({
        "/export.csv": { "get": described(
            "CSV export for energy audits, streamed", "export",
            "Exactly one of `site`, `meter` or `circuit`, which must be visible to the caller (404 otherwise). Columns: start_local, end_local (site time with offset), start_utc, site, meter, meter_name, register (quantity for measurements), value, unit, quality, band, cost, currency; `kind=completeness` has expected/measured/estimated/missing quarter-hours per meter and register. One header row, RFC 4180 quoting, CRLF. Values are exact decimals of the stored integers. The body is streamed with bounded memory; a failure after the first byte ends the body with an error (a truncated download, never a short file that looks complete).",
            vec![
                q("kind", "What to export", json!({ "enum": ["intervals", "daily", "monthly", "readings", "measurements", "completeness"] })),
                q("site", "Site id", json!({ "type": "integer" })),
                q("meter", "Meter serial", json!({ "type": "string" })),
                q("device", "With `meter`: the device id, when several meters in scope report the serial (409 with the candidates otherwise)", json!({ "type": "integer" })),
                q("circuit", "Circuit id", json!({ "type": "integer" })),
                q("from", "RFC 3339 instant or local date (YYYY-MM-DD)", json!({ "type": "string" })),
                q("to", "RFC 3339 instant or local date, exclusive", json!({ "type": "string" })),
                q("register", "Only this counter register, e.g. counter1nr", json!({ "type": "string" })),
                q("sep", "Field separator", json!({ "enum": ["comma", "semicolon"], "default": "comma" })),
                q("decimal", "Decimal mark", json!({ "enum": ["point", "comma"], "default": "point" })),
                q("bom", "Start with a UTF-8 byte order mark (for Excel)", json!({ "type": "boolean", "default": false }))
            ],
            None,
            json!({
                "200": { "description": "CSV", "content": { "text/csv": { "schema": { "type": "string" } } } },
                "400": { "$ref": "#/components/responses/BadRequest" },
                "401": { "$ref": "#/components/responses/Unauthorized" },
                "404": { "$ref": "#/components/responses/NotFound" },
                "409": { "$ref": "#/components/responses/Ambiguous" }
            }),
        )}
    })
}

fn relay_schemas() -> Value {
    let dt = json!({ "type": ["string", "null"], "format": "date-time" });
    json!({
        "Relay": { "type": "object", "properties": {
            "id": { "type": "integer" }, "gateway": { "type": "string" }, "site_id": { "type": ["integer", "null"] },
            "port": { "enum": ["ir", "rs485"] }, "slot": { "type": "integer" }, "serial": { "type": "string" },
            "name": { "type": ["string", "null"] }, "description": { "type": ["string", "null"] },
            "gateway_online": { "type": "boolean" },
            "state": { "type": ["integer", "null"], "description": "Last reported: 1 on, 0 off, -1 unknown; null never reported" },
            "state_at": dt, "state_age_s": { "type": ["number", "null"] },
            "critical": { "type": "boolean" }, "operations": { "type": "integer", "description": "Confirmed switchings counted by Headend" },
            "rated_operations": { "type": "integer" }, "wear_pct": { "type": "number" },
            "min_switch_interval_s": { "type": "integer" },
            "command_in_flight": { "type": ["integer", "null"] }, "command_status": { "type": ["string", "null"] },
            "command_action": { "type": ["string", "null"] } } },
        "RelaySettings": { "type": "object", "additionalProperties": false, "properties": {
            "critical": { "type": "boolean" }, "rated_operations": { "type": "integer", "minimum": 1 },
            "min_switch_interval_s": { "type": "integer", "minimum": 0, "maximum": 86400 }, "name": { "type": "string" } } },
        "NewCommand": { "type": "object", "additionalProperties": false, "required": ["action"], "properties": {
            "action": { "enum": ["on", "off", "toggle"] },
            "idempotency_key": { "type": "string", "maxLength": 200 },
            "expires_at": { "type": "string", "format": "date-time", "description": "Default: now + commands.default_expiry_secs (300 s)" },
            "expires_in_s": { "type": "integer", "minimum": 1 },
            "reason": { "type": "string", "maxLength": 1000 } } },
        "Command": { "type": "object", "properties": {
            "id": { "type": "integer" }, "relay_id": { "type": "integer" }, "action": { "enum": ["on", "off", "toggle"] },
            "target": { "type": ["integer", "null"], "description": "1 on, 0 off; a toggle's target is known once the state was read" },
            "status": { "enum": ["awaiting_approval", "queued", "sent", "confirmed", "failed", "expired", "cancelled"] },
            "idempotency_key": { "type": ["string", "null"] },
            "requested_by": { "type": ["integer", "null"] }, "requested_email": { "type": "string" },
            "requested_from": { "type": ["string", "null"] }, "reason": { "type": ["string", "null"] },
            "approved_by": { "type": ["integer", "null"] }, "approved_email": { "type": ["string", "null"] },
            "expires_at": { "type": "string", "format": "date-time" }, "approval_deadline": dt, "confirm_deadline": dt,
            "created_at": { "type": "string", "format": "date-time" }, "sent_at": dt, "finished_at": dt,
            "detail": { "type": ["string", "null"] },
            "transitions": { "type": "array", "items": { "type": "object", "properties": {
                "at": { "type": "string", "format": "date-time" }, "status": { "type": "string" }, "detail": { "type": ["string", "null"] } } } } } }
    })
}

fn site_paths() -> Value {
    let site = || id_param("Site id");
    json!({
        "/sites/{id}": {
            "get": described("One site", "sites", ACCESS, vec![site()], None, found(r("Site"))),
            "patch": described(
                "Rename a site or change its time zone (admin)", "sites",
                "Absent fields stay unchanged. A new time zone moves every local day, so the site's daily, monthly and yearly consumption is rebuilt in the background (answers may be incomplete until then).",
                vec![site()], Some(r("SitePatch")),
                changed("Changed", &["400", "401", "403", "404", "409"]),
            ),
            "delete": described(
                "Delete a site (admin)", "sites",
                "Deletes the site with its panels, circuits, contracts and user grants. Its gateways and their meters stay registered, without a site.",
                vec![site()], None,
                changed("Deleted", &["401", "403", "404"]),
            )
        },
        "/sites/{id}/consumption": { "get": described(
            "Consumption and cost of a site by day, month or year", "energy",
            "Sums over the site's counted meters (those not below another counted meter, so nothing is counted twice) of their import, export and reactive registers, per local calendar period of the site's time zone (days of 23 or 25 hours at DST changes are whole days). The range covers whole local days, from the date of `from` through the date of the last instant before `to`; the first and last periods are clipped to it (`start_utc`, `end_utc`). Energy is in Wh and varh; costs are in the contract currency (`currency`), rounded to 1e-6 while sums are kept exact internally. Periods not yet ended count only their past quarter-hours as expected in `completeness`. With `group`, each period also lists groups (by circuit, panel or usage they add up to the site total; by meter they list every meter). At most 1100 days with by=day, and 20 years in all.",
            vec![
                site(),
                query_param("from", true, TIME_PARAM, json!({ "type": "string" })),
                query_param("to", true, &format!("{TIME_PARAM} Exclusive: to=2026-04-01 ends with March 31."), json!({ "type": "string" })),
                query_param("by", false, "Period length", json!({ "enum": ["day", "month", "year"], "default": "day" })),
                query_param("group", false, "Also split each period: per meter (serial), per circuit, per panel, or per usage (the meter's, else its circuit's)", json!({ "enum": ["meter", "circuit", "panel", "usage"] }))
            ],
            None,
            with(found(r("Consumption")), &["400"]),
        )},
        "/sites/{id}/panels": {
            "get": described("Panels of a site, by name", "structure", ACCESS, vec![site()], None, found(list("Panel"))),
            "post": described(
                "Add a panel to a site (admin)", "structure",
                "`name` is required (1 to 200 characters, unique in the site); `description` at most 2000 characters.",
                vec![site()], Some(r("PanelInput")),
                with(created_id(), &["404"]),
            )
        },
        "/sites/{id}/circuits": { "get": described(
            "All circuits of a site, by panel name and circuit name", "structure", ACCESS,
            vec![site()], None, found(list("Circuit")),
        )},
        "/sites/{id}/contracts": {
            "get": described("Contracts of a site, oldest first", "contracts", ACCESS, vec![site()], None, found(list("ContractRecord"))),
            "post": described(
                "Add a supply contract to a site (admin)", "contracts",
                "The contract applies from `valid_from` (a local date) until the next contract's date; without `valid_from` it applies to all history (it is stored as 2000-01-01), the usual first contract. The contract is validated; the error names the offending field. Costs are rebuilt in the background. 409 when the site already has a contract from that date.",
                vec![site()], Some(r("ContractInput")),
                with(created_id(), &["404"]),
            )
        }
    })
}

fn structure_paths() -> Value {
    let panel = || id_param("Panel id");
    let circuit = || id_param("Circuit id");
    json!({
        "/panels/{id}": {
            "get": described("One panel", "structure", ACCESS, vec![panel()], None, found(r("Panel"))),
            "patch": described(
                "Rename or describe a panel (admin)", "structure",
                "Absent fields stay unchanged.",
                vec![panel()], Some(r("PanelInput")),
                changed("Changed", &["400", "401", "403", "404", "409"]),
            ),
            "delete": described(
                "Delete a panel and its circuits (admin)", "structure",
                "Meters placed on the panel or its circuits become unplaced; the site's consumption is rebuilt in the background.",
                vec![panel()], None,
                changed("Deleted", &["401", "403", "404"]),
            )
        },
        "/panels/{id}/circuits": {
            "get": described("Circuits of a panel, by name", "structure", ACCESS, vec![panel()], None, found(list("Circuit"))),
            "post": described(
                "Add a circuit to a panel (admin)", "structure",
                "`name` is required (1 to 200 characters, unique in the panel); `usage` defaults to `other`.",
                vec![panel()], Some(r("CircuitInput")),
                with(created_id(), &["404"]),
            )
        },
        "/circuits/{id}": {
            "get": described("One circuit", "structure", ACCESS, vec![circuit()], None, found(r("Circuit"))),
            "patch": described(
                "Rename a circuit or change its usage or description (admin)", "structure",
                "Absent fields stay unchanged.",
                vec![circuit()], Some(r("CircuitInput")),
                changed("Changed", &["400", "401", "403", "404", "409"]),
            ),
            "delete": described(
                "Delete a circuit (admin)", "structure",
                "Meters placed on the circuit become unplaced; the site's consumption is rebuilt in the background.",
                vec![circuit()], None,
                changed("Deleted", &["401", "403", "404"]),
            )
        }
    })
}

fn contract_paths() -> Value {
    let contract = || id_param("Contract id");
    json!({
        "/contracts/example": { "get": described(
            "An example contract to start from", "contracts",
            "Any signed-in user.", vec![], None, ok(r("Contract")),
        )},
        "/contracts/{id}": {
            "get": described("One contract", "contracts", ACCESS, vec![contract()], None, found(r("ContractRecord"))),
            "put": described(
                "Replace a contract (admin)", "contracts",
                "Replaces the contract body; `valid_from` absent keeps the current date. Costs are rebuilt in the background. 409 when another contract of the site starts on the new date.",
                vec![contract()], Some(r("ContractInput")),
                changed("Replaced", &["400", "401", "403", "404", "409"]),
            ),
            "delete": described(
                "Delete a contract (admin)", "contracts",
                "The previous contract (if any) then applies until the next one; costs are rebuilt in the background.",
                vec![contract()], None,
                changed("Deleted", &["401", "403", "404"]),
            )
        }
    })
}

fn device_paths() -> Value {
    let serial = || path_param("serial", "Meter serial number, percent-encoded");
    json!({
        "/devices/{serial}": { "patch": described(
            "Name a meter, place it on its site, set its usage and billing registers (admin)", "devices",
            &format!("Every field is optional: an absent field stays unchanged, `null` clears it. `measures` is implied by `circuit_id` or `panel_id` when left out; the panel or circuit must belong to the site of the meter's gateway. A change of placement or registers rebuilds the site's consumption in the background; a change of `commissioned_at` recomputes the meter's intervals from its readings. {METER_IDENTITY}"),
            vec![serial(), device_param()], Some(r("DevicePatch")),
            ambiguous(changed("Changed", &["400", "401", "403", "404"])),
        )},
        "/devices/{serial}/profile": { "get": described(
            "Quarter-hour energy profile of a meter's registers, with power statistics", "energy",
            &format!("Every quarter-hour of the range (snapped outwards to quarter-hours, at most 31 days) for each register: energy in the register's unit (Wh, varh, VAh; `null` when missing) and its quality; resets, glitches and meter exchanges; totals. Import and export intervals of a site with a contract also carry their band and cost (export: the credit) in the contract currency, rounded to 1e-6. `power` has statistics of the instantaneous measurements per quarter-hour that has any. Local times are in the zone of the meter's site (or its gateway when the gateway has no site). {METER_IDENTITY}"),
            vec![
                serial(),
                device_param(),
                query_param("from", true, TIME_PARAM, json!({ "type": "string" })),
                query_param("to", true, &format!("{TIME_PARAM} Exclusive."), json!({ "type": "string" })),
                query_param("register", false, "Only this register (counter name, e.g. counter1nr); default all", json!({ "type": "string" }))
            ],
            None,
            ambiguous(with(found(r("Profile")), &["400"])),
        )}
    })
}

/// The 409 of an ambiguous meter serial.
fn identity_schemas() -> Value {
    json!({
        "Ambiguous": { "type": "object", "properties": { "error": { "type": "string" },
            "candidates": { "type": "array", "items": r("Candidate"), "description": "The meters in the caller's scope reporting the serial (at most 50)" } } },
        "Candidate": { "type": "object", "properties": {
            "id": { "type": "integer", "description": "Pass it as `device`" }, "serial": { "type": "string" },
            "gateway": { "type": "string", "description": "The gateway's serial" },
            "site_id": { "type": ["integer", "null"] }, "site": { "type": ["string", "null"], "description": "The site's name" },
            "port": { "type": "string" }, "slot": { "type": "integer" }, "model": { "type": ["string", "null"] } } },
    })
}

fn base_schemas() -> Value {
    json!({
        "Error": { "type": "object", "properties": { "error": { "type": "string" } } },
        "Session": { "type": "object", "properties": { "token": { "type": "string" }, "token_type": { "const": "Bearer" },
            "expires_at": { "type": "string", "format": "date-time" }, "user": r("Me") } },
        "Me": { "type": "object", "properties": { "id": { "type": "integer" }, "email": { "type": "string" },
            "role": { "enum": ["admin", "operator", "viewer"] }, "sites": { "type": ["array", "null"], "items": { "type": "integer" } } } },
        "Site": { "type": "object", "properties": { "id": { "type": "integer" }, "name": { "type": "string" },
            "time_zone": { "type": "string", "description": "IANA zone of the site's local days" },
            "timezone": { "type": "string", "description": "The same zone, under the name the energy API uses" },
            "created_at": { "type": "string", "format": "date-time" } } },
        "SitePatch": { "type": "object", "additionalProperties": false, "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 200, "description": "Unique" },
            "timezone": { "type": "string", "description": "IANA zone, e.g. Europe/Ljubljana (`time_zone` is accepted too)" } } },
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
        "XmlPushSettings": { "type": "object", "additionalProperties": false, "required": ["sources", "meters"], "properties": {
            "sources": { "type": "array", "maxItems": 256, "items": { "type": "string" }, "description": "Addresses or networks, e.g. `198.51.100.7`, `10.1.0.0/24`, `2001:db8::/64`" },
            "meters": { "type": "array", "maxItems": 256, "items": { "type": "string" }, "description": "Meter serials (`controlUnit`)" } } },
        "XmlPushSettingsView": { "type": "object", "properties": {
            "sources": { "type": "array", "items": { "type": "string" }, "description": "Networks, prefix length included" },
            "meters": { "type": "array", "items": { "type": "object", "properties": {
                "serial": { "type": "string" }, "port": { "enum": ["ir", "rs485", "xml"] }, "slot": { "type": "integer" } } } } } },
        "GatewayPatch": { "type": "object", "additionalProperties": false, "properties": {
            "site_id": { "type": ["integer", "null"], "description": "The site to move to; null (or absent): no site" } } },
        "Device": { "type": "object", "properties": {
            "id": { "type": "integer" }, "gateway": { "type": "string" }, "site_id": { "type": ["integer", "null"] },
            "kind": { "enum": ["meter", "relay"] }, "port": { "enum": ["ir", "rs485"] }, "slot": { "type": "integer" },
            "serial": { "type": "string" }, "model": { "type": ["string", "null"] }, "modbus_addr": { "type": ["integer", "null"] },
            "phases": { "type": ["integer", "null"] }, "description": { "type": ["string", "null"] }, "location": { "type": ["string", "null"] },
            "sg_description": { "type": ["string", "null"] },
            "name": { "type": ["string", "null"], "description": "Name given in Headend" },
            "measures": { "enum": ["site", "panel", "circuit", null], "description": "What the meter measures: the whole site, a panel or a circuit; null: unplaced (not counted in the site's consumption)" },
            "panel_id": { "type": ["integer", "null"] }, "circuit_id": { "type": ["integer", "null"] },
            "usage": { "enum": usage_or_null(), "description": "Overrides the circuit's usage" },
            "import_register": { "type": ["string", "null"], "description": "Counter of active import; null: counter1nr" },
            "export_register": { "type": ["string", "null"], "description": "Counter of active export; null: counter2nr" },
            "reactive_register": { "type": ["string", "null"], "description": "Counter of (inductive) reactive energy; null: counter3nr" },
            "commissioned_at": { "type": ["string", "null"], "format": "date-time", "description": "When the meter was commissioned (set by an admin); counter readings dated before it are kept but not accounted. null: unknown" },
            "first_seen_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" } } },
        "DevicePatch": { "type": "object", "additionalProperties": false,
            "description": "Absent: unchanged; null: cleared.",
            "properties": {
                "name": { "type": ["string", "null"], "minLength": 1, "maxLength": 200 },
                "measures": { "enum": ["site", "panel", "circuit", null], "description": "`panel` needs `panel_id`, `circuit` needs `circuit_id`; when absent, implied by a non-null `circuit_id` or `panel_id`. null (or `site`) clears panel and circuit." },
                "panel_id": { "type": ["integer", "null"], "description": "A panel of the meter's site" },
                "circuit_id": { "type": ["integer", "null"], "description": "A circuit of the meter's site; its panel becomes `panel_id`" },
                "usage": { "enum": usage_or_null() },
                "import_register": register_schema("active import", "counter1nr"),
                "export_register": register_schema("active export", "counter2nr"),
                "reactive_register": register_schema("reactive energy", "counter3nr"),
                "commissioned_at": { "type": ["string", "null"],
                    "description": "When the meter was commissioned: an RFC 3339 instant, or a date (2026-03-01) meaning local midnight in the meter's zone; between 1990-01-01 and a day after now (else 400). Counter readings dated before it are kept and listed as partial rejects but never turned into intervals. Changing it recomputes the meter's intervals, days and months in the background; null: unknown, no bound." } } },
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
    })
}

/// The usages of circuits and meters, and `null`.
fn usage_or_null() -> Value {
    let mut usages = json!(USAGES);
    if let Value::Array(items) = &mut usages {
        items.push(Value::Null);
    }
    usages
}

fn register_schema(role: &str, default: &str) -> Value {
    json!({ "type": ["string", "null"], "pattern": "^[A-Za-z0-9_]{1,32}$",
        "description": format!("Counter name of {role}; null: the SG convention ({default})") })
}

fn structure_schemas() -> Value {
    json!({
        "Panel": { "type": "object", "properties": {
            "id": { "type": "integer" }, "site_id": { "type": "integer" }, "name": { "type": "string" },
            "description": { "type": "string" }, "created_at": { "type": "string", "format": "date-time" } } },
        "PanelInput": { "type": "object", "additionalProperties": false, "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 200, "description": "Required on creation; unique in the site" },
            "description": { "type": "string", "maxLength": 2000 } } },
        "Circuit": { "type": "object", "properties": {
            "id": { "type": "integer" }, "panel_id": { "type": "integer" }, "site_id": { "type": "integer" },
            "name": { "type": "string" }, "usage": { "enum": USAGES }, "description": { "type": "string" },
            "created_at": { "type": "string", "format": "date-time" } } },
        "CircuitInput": { "type": "object", "additionalProperties": false, "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 200, "description": "Required on creation; unique in the panel" },
            "usage": { "enum": USAGES, "description": "Default `other`" },
            "description": { "type": "string", "maxLength": 2000 } } }
    })
}

const CONTRACT_DOC: &str = "A supply contract, as an API user writes it. Prices are decimal \
    strings (preferred: what Headend writes back) or JSON numbers, at most 6 decimals, never \
    negative: currency per kWh (`import_price`, `export_price`), per kW of monthly peak \
    (`demand_charge`), per kvarh (`reactive.price`). `schedule` rules are tried in order and the \
    first matching rule wins (put exceptions first); when none matches, `default_band` applies. \
    A rule matches an instant by its local wall-clock time in the site's time zone: `months` \
    (optional, the season: 1..=12), `days` (`mon`..`sun`, `holiday`; a date in `holidays` only \
    matches rules listing `holiday`), and `[from, to)` as \"HH:MM\" (or \"HH:MM:SS\"); `to <= from` \
    runs through midnight, `from == to` is the whole day, `to` may be \"24:00\". Day and month \
    apply to the date of the instant itself. `meter_tariff_bands`, when present, maps the \
    tariff the meter reported (T1..T6) to a band and wins over the schedule; readings without a \
    mapped tariff fall back to the schedule. `demand_charge` applies to the highest 15-minute \
    mean power of each month; `reactive` charges reactive energy above `tan_phi_max` x active \
    energy of the month. Unknown fields are rejected; errors name the offending field \
    (e.g. `bands[1].import_price`).";

fn contract_schemas() -> Value {
    let time = |description: &str| json!({ "type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$", "description": description });
    json!({
        "Price": { "type": ["string", "number"], "pattern": "^[0-9]+(\\.[0-9]{1,6}0*)?$", "minimum": 0,
            "description": "Exact decimal, at most 6 decimals, not negative; written back as a string. Numbers are read through their shortest decimal form (0.142 is exactly 0.142).",
            "examples": ["0.1420"] },
        "Band": { "type": "object", "additionalProperties": false, "required": ["name", "import_price"], "properties": {
            "name": { "type": "string", "minLength": 1, "description": "Unique; referenced by rules, `default_band` and `meter_tariff_bands`" },
            "import_price": { "$ref": "#/components/schemas/Price", "description": "Per kWh imported" },
            "export_price": { "$ref": "#/components/schemas/Price", "description": "Per kWh exported (credited); absent: export is not paid" } } },
        "Rule": { "type": "object", "additionalProperties": false, "required": ["band", "days", "from", "to"], "properties": {
            "name": { "type": "string", "description": "Free text" },
            "band": { "type": "string", "description": "Name of a band" },
            "months": { "type": "array", "minItems": 1, "items": { "type": "integer", "minimum": 1, "maximum": 12 },
                "description": "Local calendar months; absent: all year" },
            "days": { "type": "array", "minItems": 1,
                "items": { "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"] },
                "description": "Full weekday names (`monday`..) are accepted too" },
            "from": time("Local start time, inclusive"),
            "to": { "anyOf": [time("Local end time, exclusive"), { "const": "24:00" }] } } },
        "Contract": { "type": "object", "additionalProperties": false,
            "required": ["currency", "bands", "default_band"],
            "description": CONTRACT_DOC,
            "properties": {
                "currency": { "type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code, e.g. EUR" },
                "bands": { "type": "array", "minItems": 1, "items": r("Band") },
                "schedule": { "type": "array", "items": r("Rule"), "default": [], "description": "First match wins" },
                "default_band": { "type": "string", "description": "The band when no rule matches" },
                "holidays": { "type": "array", "items": { "type": "string", "format": "date" }, "default": [],
                    "description": "Local dates that count as `holiday` instead of their weekday" },
                "meter_tariff_bands": { "type": "object", "propertyNames": { "pattern": "^[1-6]$" },
                    "additionalProperties": { "type": "string" },
                    "description": "Meter tariff number (1..6) to band name" },
                "demand_charge": { "$ref": "#/components/schemas/Price", "description": "Per kW per month of the month's highest 15-minute mean power" },
                "reactive": { "type": "object", "additionalProperties": false, "required": ["tan_phi_max", "price"], "properties": {
                    "tan_phi_max": { "type": "number", "minimum": 0, "maximum": 100, "description": "Free reactive energy as a share of active energy (cos phi 0.95 is tan phi 0.329); used to 6 decimals" },
                    "price": { "$ref": "#/components/schemas/Price", "description": "Per kvarh above the limit" } } } },
            "examples": [{
                "currency": "EUR",
                "bands": [
                    { "name": "peak", "import_price": "0.1850" },
                    { "name": "day", "import_price": "0.142", "export_price": "0.06" },
                    { "name": "night", "import_price": "0.0950", "export_price": "0.06" }
                ],
                "schedule": [
                    { "name": "winter peak", "band": "peak", "months": [11, 12, 1, 2],
                      "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "14:00" },
                    { "band": "day", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "06:00", "to": "22:00" }
                ],
                "default_band": "night",
                "holidays": ["2026-01-01", "2026-04-06", "2026-12-25"],
                "meter_tariff_bands": { "1": "day", "2": "night" },
                "demand_charge": "3.75",
                "reactive": { "tan_phi_max": 0.33, "price": "0.015" }
            }] },
        "ContractInput": { "type": "object", "additionalProperties": false, "required": ["contract"], "properties": {
            "valid_from": { "type": "string", "format": "date", "description": "First local date the contract applies to" },
            "contract": r("Contract") } },
        "ContractRecord": { "type": "object", "properties": {
            "id": { "type": "integer" }, "site_id": { "type": "integer" },
            "valid_from": { "type": "string", "format": "date", "description": "Applies from this local date until the next contract's" },
            "contract": r("Contract"),
            "created_at": { "type": "string", "format": "date-time" } } }
    })
}

fn profile_schemas() -> Value {
    let nullable = |unit: &str| json!({ "type": ["number", "null"], "description": unit });
    json!({
        "Profile": { "type": "object", "properties": {
            "device": { "type": "string", "description": "Meter serial" },
            "time_zone": { "type": "string", "description": "Zone of `start_local`" },
            "from": { "type": "string", "format": "date-time", "description": "Requested start, snapped down to a quarter-hour" },
            "to": { "type": "string", "format": "date-time", "description": "Requested end, snapped up to a quarter-hour (exclusive)" },
            "registers": list("RegisterProfile"),
            "power": { "type": "array", "items": r("PowerInterval"), "description": "Quarter-hours with at least one measurement" } } },
        "RegisterProfile": { "type": "object", "properties": {
            "name": { "type": "string", "description": "Counter name, e.g. counter1nr" },
            "unit": { "enum": ["Wh", "varh", "VAh"] },
            "resettable": { "type": "boolean" },
            "role": { "enum": ["import", "export", "reactive", "other"], "description": "What the register means for billing" },
            "intervals": { "type": "array", "items": r("ProfileInterval"), "description": "Every quarter-hour of the range, in order" },
            "events": list("CounterEvent"),
            "totals": { "type": "object", "properties": {
                "energy": { "type": "number", "description": "Sum of the intervals, register unit" },
                "measured": { "type": "integer" }, "estimated": { "type": "integer" }, "missing": { "type": "integer" } } } } },
        "ProfileInterval": { "type": "object", "properties": {
            "start": { "type": "string", "format": "date-time" },
            "start_local": { "type": "string", "description": "The start with the site's offset, e.g. 2026-10-25T02:30:00+01:00" },
            "energy": { "type": ["number", "null"], "description": "In the register's unit (Wh, varh, VAh); null when missing" },
            "quality": { "enum": ["measured", "estimated", "missing"],
                "description": "measured: both boundaries read; estimated: interpolated across a gap or overlapping a meter exchange; missing: no value" },
            "band": { "type": "string", "description": "Contract band (import and export registers, with a contract in force)" },
            "cost": { "type": "number", "description": "Cost at the band's price (export: the credit), contract currency rounded to 1e-6; absent when missing" } } },
        "CounterEvent": { "type": "object", "properties": {
            "ts": { "type": "string", "format": "date-time" },
            "kind": { "enum": ["reset", "glitch", "exchange"],
                "description": "reset: a resettable register restarted; glitch: a reading contradicted by its neighbours, ignored; exchange: a confirmed drop of a non-resettable register (new meter)" },
            "previous": { "type": "number", "description": "Last effective reading before, register unit" },
            "value": { "type": "number", "description": "The reading, register unit" } } },
        "PowerInterval": { "type": "object", "properties": {
            "start": { "type": "string", "format": "date-time" },
            "start_local": { "type": "string" },
            "samples": { "type": "integer" },
            "p_mean": nullable("W"), "p_min": nullable("W"), "p_max": nullable("W"),
            "q_mean": nullable("var"), "s_mean": nullable("VA"),
            "u1_mean": nullable("V"), "u2_mean": nullable("V"), "u3_mean": nullable("V"),
            "i1_mean": nullable("A"), "i2_mean": nullable("A"), "i3_mean": nullable("A"),
            "tariff": { "type": ["integer", "null"], "description": "The meter's own tariff (T1..T6) last reported in the quarter-hour" } } }
    })
}

fn consumption_schemas() -> Value {
    let money = |what: &str| json!({ "type": ["number", "null"], "description": format!("{what}; contract currency, rounded to 1e-6") });
    json!({
        "Consumption": { "type": "object", "properties": {
            "site_id": { "type": "integer" },
            "time_zone": { "type": "string" },
            "by": { "enum": ["day", "month", "year"] },
            "group": { "enum": ["meter", "circuit", "panel", "usage", null] },
            "from": { "type": "string", "format": "date", "description": "First local date covered" },
            "to": { "type": "string", "format": "date", "description": "Last local date covered (inclusive)" },
            "currency": { "type": ["string", "null"], "description": "Currency of the costs; null without a contract" },
            "periods": list("ConsumptionPeriod") } },
        "ConsumptionPeriod": { "type": "object", "properties": {
            "start": { "type": "string", "format": "date", "description": "Local start date of the whole period (first of the month or year)" },
            "start_utc": { "type": "string", "format": "date-time", "description": "Start of the covered span (clipped to the range)" },
            "end_utc": { "type": "string", "format": "date-time", "description": "End of the covered span, exclusive" },
            "total": r("ConsumptionTotal"),
            "groups": { "type": "array", "items": r("ConsumptionGroup"), "description": "Empty without `group`. The circuit, panel and usage rows add up to the total (a metered panel or site contributes its remainder after its submeters); group=meter lists every meter with an import register, submeters included" } } },
        "ConsumptionTotal": { "type": "object", "properties": {
            "import_wh": { "type": "number" },
            "export_wh": { "type": "number" },
            "reactive_varh": { "type": "number" },
            "energy_cost": money("Import at the contract's band prices, net of the export credit; null without a contract or when part of the energy could not be priced"),
            "demand_charge": money("Demand charge on each month's peak (by=month and by=year only, with a contract that has one)"),
            "reactive_charge": money("Reactive energy above the contract's tan phi limit (by=month and by=year only)"),
            "cost": money("energy_cost + demand_charge + reactive_charge, computed from the exact amounts"),
            "peak": { "anyOf": [r("Peak"), { "type": "null" }] },
            "completeness": r("Completeness") } },
        "Peak": { "type": "object", "description": "The site's highest quarter-hour of the period", "properties": {
            "power_w": { "type": "number", "description": "Mean power of the quarter-hour, W" },
            "start": { "type": "string", "format": "date-time" },
            "start_local": { "type": "string" } } },
        "Completeness": { "type": "object",
            "description": "Quarter-hours of the import registers: expected (the part of the period already past, per counted meter), measured, estimated, missing; percentages of expected with two decimals",
            "properties": {
                "expected": { "type": "integer" }, "measured": { "type": "integer" },
                "estimated": { "type": "integer" }, "missing": { "type": "integer" },
                "measured_pct": { "type": "number" }, "estimated_pct": { "type": "number" }, "missing_pct": { "type": "number" } } },
        "ConsumptionGroup": { "type": "object", "properties": {
            "key": { "type": "string", "description": "meter: the serial (`device:{id}` when the serial does not name one meter of the site); usage: the usage; circuit and panel: `circuit:{id}`, `panel:{id}`, `panel:{id}:rest` (a panel meter minus its submeters), `site:rest`, `meter:{serial}` (unplaced; `meter:device:{id}` likewise)" },
            "name": { "type": "string" },
            "import_wh": { "type": "number" },
            "export_wh": { "type": "number" },
            "energy_cost": money("Import cost net of export credit"),
            "peak_w": { "type": "number", "description": "Highest quarter-hour mean power of the meter (group=meter only)" },
            "completeness": { "$ref": "#/components/schemas/Completeness", "description": "group=meter only" } } }
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
        "/sites/{id}",
        "/sites/{id}/consumption",
        "/sites/{id}/panels",
        "/sites/{id}/circuits",
        "/sites/{id}/contracts",
        "/panels/{id}",
        "/panels/{id}/circuits",
        "/circuits/{id}",
        "/contracts/example",
        "/contracts/{id}",
        "/users",
        "/users/{user_id}",
        "/users/{user_id}/sites/{site_id}",
        "/gateways/{serial}/password",
        "/gateways",
        "/gateways/{serial}",
        "/gateways/{serial}/xml-push",
        "/devices",
        "/devices/{serial}",
        "/devices/{serial}/latest",
        "/devices/{serial}/profile",
        "/devices/{serial}/counters",
        "/devices/{serial}/counters/{name}/reset",
        "/converters",
        "/converters/models",
        "/converters/{id}",
        "/converters/{id}/devices",
        "/converters/{id}/devices/{unit}",
        "/ingest/rejects",
        "/energy/quarantine",
        "/energy/quarantine/{counter_id}/retry",
        "/export.csv",
        "/relays",
        "/relays/{id}",
        "/relays/{id}/commands",
        "/commands/{id}",
        "/commands/{id}/cancel",
        "/commands/{id}/approve",
        "/alarms",
        "/alarms/history.csv",
        "/alarms/{id}",
        "/alarms/{id}/acknowledge",
        "/alarms/{id}/shelve",
        "/alarms/{id}/unshelve",
        "/alarm-rules",
        "/alarm-rules/{id}",
        "/openapi.json",
    ];

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

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

    /// Every documented path and method reaches a handler (not the fallback, not 405), and
    /// every other method of a documented path is refused with 405: the router has no
    /// undocumented method.
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
            gauges: std::sync::Arc::new(crate::infra::metrics::Gauges::default),
            default_time_zone: "UTC".into(),
            secure_cookies: false,
            on_gateways_changed: std::sync::Arc::new(|| {}),
            energy_wake: std::sync::Arc::default(),
            commands_wake: std::sync::Arc::default(),
            command_timing: crate::relays::Timing::default(),
            alarms: crate::alarms::AlarmsHandle::default(),
            modbus: crate::modbus::ModbusHandle::detached(),
            metrics_token: None,
            login_throttle: std::sync::Arc::new(crate::auth::throttle::Throttle::new(
                crate::auth::throttle::Limits::LOGIN,
            )),
        };
        let router = super::super::router(state, 1024);
        let doc = document();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let item = item.as_object().unwrap();
            for key in item.keys() {
                assert!(
                    METHODS.contains(&key.as_str()),
                    "{path}: {key} is not a method (parameters belong to the operations)"
                );
            }
            let uri = format!(
                "/api/v1{}",
                path.replace("{serial}", "x")
                    .replace("{user_id}", "1")
                    .replace("{site_id}", "1")
                    .replace("{id}", "1")
                    .replace("{unit}", "1")
                    .replace("{name}", "x")
                    .replace("{counter_id}", "1")
            );
            assert!(!uri.contains('{'), "unreplaced placeholder in {uri}");
            for method in METHODS {
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
                let fallback = status == 404 && body.as_ref() == br#"{"error":"route not found"}"#;
                if item.contains_key(method) {
                    assert!(
                        !fallback && status != 405,
                        "{method} {uri}: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                    checked += 1;
                } else {
                    assert_eq!(
                        status,
                        405,
                        "{method} {uri} is routed but not documented: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        }
        assert!(checked >= 40, "only {checked} operations checked");
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

    /// Path parameters are declared by every operation of a templated path.
    #[test]
    fn path_parameters_are_declared() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let names: Vec<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(name, _)| name))
                .collect();
            for (method, operation) in item.as_object().unwrap() {
                for name in &names {
                    let declared = operation["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["in"] == "path" && p["name"] == *name)
                    });
                    assert!(declared, "{method} {path} does not declare {{{name}}}");
                }
            }
        }
    }

    /// The example contract the API serves is valid against the documented field names.
    #[test]
    fn contract_schema_names_the_example_fields() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["Contract"]["properties"];
        let example =
            serde_json::to_value(headend_energy::tariff::Contract::example_eur()).unwrap();
        for key in example.as_object().unwrap().keys() {
            assert!(schema[key].is_object(), "Contract schema lacks {key}");
        }
        let sample = &doc["components"]["schemas"]["Contract"]["examples"][0];
        headend_energy::tariff::Contract::from_value(sample.clone()).unwrap();
    }
}
