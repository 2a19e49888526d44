//! The parts of the OpenAPI document that are not derived from a handler: the description,
//! the security schemes, the tags, and the error answers every operation may give.
//!
//! Errors: every operation declares, besides its own answers, the statuses any request can
//! meet (a malformed body or parameter, no session, not allowed, not found or not visible, a
//! conflict, too large, throttled, an internal error), all with the one [`ErrorBody`] schema.
//! An operation that declares a status itself (say 409 with `Ambiguous`) keeps its own.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::Modify;

use crate::web::error::ErrorBody;

pub const ACCESS: &str = "Sites, and everything under them (panels, circuits, contracts, meters, \
relays, alarms), are visible to admins and to the users granted the site; to anyone else they do \
not exist (404, never 403).";

pub const METER_IDENTITY: &str = "A meter is addressed by its serial within the caller's scope: \
the sites visible to the caller. Serials are unique per gateway, not globally; when several meters \
in scope report the same serial the answer is 409 with the candidates, and `device=<id>` picks one.";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Headend API",
        description = "Energy supervision head-end. Values are in SI units (V, A, W, var, VA, Hz, Wh, varh, VAh, %, degrees, C); times are UTC (RFC 3339) unless named `*_local`. Non-admin users see only the sites granted to them. Energy is in the unit of its register (Wh, varh, VAh). Costs are in the contract's currency, rounded to 1e-6 for display; sums are kept exact internally, so a total is the rounded exact sum, not the sum of rounded parts."
    ),
    servers((url = "/api/v1")),
    security(("bearer" = []), ("cookie" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "auth", description = "Sessions"),
        (name = "sites", description = ACCESS),
        (name = "structure", description = "Panels (distribution boards) and circuits of a site, and where meters measure. Read by anyone granted the site, written by admins."),
        (name = "contracts", description = "Supply contracts of a site: time-of-use bands and prices. A contract applies from its `valid_from` local date until the next one; any change rebuilds the site's costs in the background."),
        (name = "energy", description = "Quarter-hour profiles and consumption by day, month or year, computed from the meters' cumulative registers. Energy in the register's unit (Wh, varh, VAh); cost in the contract currency rounded to 1e-6 (exact sums kept internally)."),
        (name = "users", description = "User accounts (admin)"),
        (name = "gateways", description = "Gateways and their placement on sites"),
        (name = "devices", description = METER_IDENTITY),
        (name = "ingest", description = "Rejected gateway messages"),
        (name = "converters", description = "Modbus TCP converters (RS485/IP) and the meters and relays polled behind them"),
        (name = "relays", description = "Relays and the command ledger"),
        (name = "alarms", description = "Alarms and alarm rules"),
        (name = "export", description = "CSV exports for audits"),
        (name = "meta", description = "This document")
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::web::session::COOKIE,
                "The page session; accepted for GET and HEAD only",
            ))),
        );
    }
}

/// The statuses any operation may answer, with why.
const ERRORS: [(&str, &str); 9] = [
    ("400", "The request is invalid (a body that is not JSON, a parameter out of range...); `error` says why"),
    ("401", "No valid session"),
    ("403", "The role does not allow this (writes need the admin role)"),
    ("404", "Not found, or not visible to this user"),
    ("409", "In conflict with the current state (a name or date that must be unique is taken...)"),
    ("413", "The body is larger than `http.max_body_bytes`"),
    ("415", "The body is not `application/json`"),
    ("422", "The JSON does not have the documented shape; `error` says where"),
    ("429", "Too many attempts or the password checks are busy; see `Retry-After`"),
];

pub struct Errors;

impl Modify for Errors {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
            ]
            .into_iter()
            .flatten()
            {
                add_errors(op);
            }
        }
    }
}

fn add_errors(op: &mut Operation) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let responses = &mut op.responses.responses;
    let mut statuses: Vec<(&str, &str)> = ERRORS.to_vec();
    statuses.push((
        "500",
        "Internal error; the body says nothing more, the log has it",
    ));
    for (status, description) in statuses {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description).into());
    }
}
