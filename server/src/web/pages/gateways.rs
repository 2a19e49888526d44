//! Gateways: connection state of every gateway the user may see.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;

use super::{nav, render, Nav, PageResult, PageUser};
use crate::gateways;
use crate::web::WebState;

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    title: &'static str,
    nav: Nav,
    gateways: Vec<gateways::GatewayView>,
}

pub async fn gateways_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let gateways = gateways::list(&state.pool, &p.scope).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &GatewaysPage {
            title: "Gateways",
            nav,
            gateways,
        },
        set,
    )
}
