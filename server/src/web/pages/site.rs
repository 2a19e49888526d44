//! A site: its power curve of a day, its energy and cost over quick ranges (today, yesterday,
//! the last 7 or 30 days, this month, this year) or by day, month or year with earlier/later,
//! always beside the period before; by circuit and usage; its tree. The numbers and charts come
//! from `dashboard::site`; this page picks the period and renders them.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use chrono::{NaiveDate, Utc};
use headend_energy::calendar;
use serde::Deserialize;

use super::{supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::dashboard::period::{View, QUICK_RANGES};
use crate::dashboard::site::{site_data, SiteData};
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;
use crate::zone::TimeZone;

pub fn routes() -> Router<WebState> {
    Router::new().route("/sites/{id}", get(site_page))
}

/// A quick-range link.
pub(super) struct Quick {
    pub key: &'static str,
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

impl Quick {
    /// The links of the quick ranges `keys` (key, label) of the page `base` (`/sites/7`), the
    /// one that is `view` marked.
    pub(super) fn links(
        base: &str,
        keys: &[(&'static str, &'static str)],
        view: View,
        today: NaiveDate,
    ) -> Vec<Self> {
        keys.iter()
            .map(|&(key, label)| Self {
                key,
                label,
                href: format!("{base}?range={key}"),
                active: view.quick(today) == Some(key),
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    title: String,
    nav: Nav,
    site_id: i64,
    site_name: String,
    time_zone: TimeZone,
    /// `day`, `month`, `year` for the Days/Months/Years tabs, or empty.
    by: &'static str,
    quick: Vec<Quick>,
    /// The first date shown, for the Days/Months/Years tabs.
    anchor: NaiveDate,
    prev_href: String,
    next_href: String,
    period_label: String,
    previous_name: &'static str,
    /// A quick range is the view (the Days/Months/Years tabs are then not marked).
    quick_active: bool,
    export: ExportForm,
    /// The charts, totals, breakdowns and tree of the period.
    d: SiteData,
}

/// The period of a site or circuit page, from its query.
#[derive(Deserialize)]
pub(super) struct PeriodParams {
    pub(super) range: Option<String>,
    pub(super) by: Option<String>,
    pub(super) date: Option<NaiveDate>,
}

/// `view`, once the period before it is a supported date too (earlier/later near the
/// calendar's ends).
pub(super) fn supported_view(view: View) -> Result<View, PageError> {
    let (_, (_, end), (prev_first, _)) = view.spans();
    for d in [prev_first, end] {
        supported_date(Some(d))?;
    }
    Ok(view)
}

async fn site_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<PeriodParams>,
) -> PageResult {
    let site = sites::get(&state.read_pool, &user.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let tz = site.time_zone.tz();
    let now = Utc::now();
    let today = calendar::local_date(now, tz);
    let (range, by) = (q.range.as_deref(), q.by.as_deref());
    let view = supported_view(View::parse(range, by, supported_date(q.date)?, today)?)?;
    let (_, (anchor, _), _) = view.spans();
    let d = site_data(&state.read_pool, id, tz, view, now).await?;
    let period_label = view.label(today);
    let base = format!("/sites/{id}");
    user.render(&SitePage {
        title: format!("{} · {}", site.name, period_label),
        nav: user.nav(),
        site_id: id,
        by: match view {
            View::Month(_) => "day",
            View::Year(_) => "month",
            View::Years(_) => "year",
            _ => "",
        },
        quick: Quick::links(&base, &QUICK_RANGES, view, today),
        anchor,
        prev_href: format!("{base}?{}", view.shifted(-1).query()),
        next_href: format!("{base}?{}", view.shifted(1).query()),
        previous_name: view.previous_name(),
        period_label,
        quick_active: view.quick(today).is_some(),
        export: ExportForm::new(
            "site",
            id.to_string(),
            format!("all meters of {}", site.name),
            (d.from, d.to.succ_opt().unwrap_or(d.to)),
            site.time_zone,
        ),
        d,
        site_name: site.name,
        time_zone: site.time_zone,
    })
}
