//! The overview: every site the user may see.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;

use super::{nav, render, Nav, PageResult, PageUser};
use crate::dashboard::{self};
use crate::web::WebState;

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    title: &'static str,
    nav: Nav,
    sites: Vec<dashboard::SiteSummary>,
}

pub async fn sites_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let sites = dashboard::sites_overview(&state.pool, &p.scope, Utc::now()).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &SitesPage {
            title: "Sites",
            nav,
            sites,
        },
        set,
    )
}
