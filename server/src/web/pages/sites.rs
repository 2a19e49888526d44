//! The overview: one card per site the user may see (`dashboard::overview`).

use askama::Template;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use chrono::Utc;

use super::{Nav, PageResult, PageUser};
use crate::dashboard::overview::{self, SiteCard, Versus};
use crate::dashboard::units;
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new().route("/", get(sites_page))
}

/// One figure of a card as shown: this period, the same period last year, the change.
pub struct Figure {
    /// `today-energy`, `month-cost`…: the element's id suffix (tests and styles find it).
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
    /// `None`: nothing to compare with.
    pub last_year: Option<String>,
    pub arrow: &'static str,
    pub change: String,
    /// `up`, `down` or `same`: the trend's class.
    pub trend: &'static str,
    /// Why a value is missing (no contract…), shown instead of it.
    pub note: Option<&'static str>,
}

/// The energy figure (`cost` false) or the cost figure of `period`.
fn figure(
    (key, label): (&'static str, &'static str),
    period: &Versus,
    cost: bool,
    show: &dyn Fn(f64) -> String,
    note: &'static str,
) -> Figure {
    let (value, last_year, pct) = if cost {
        (period.cost, period.last_year_cost, period.cost_change_pct())
    } else {
        (Some(period.kwh), period.last_year_kwh, period.change_pct())
    };
    let (arrow, change, trend) = pct.map_or(("", String::new(), "same"), overview::shown_trend);
    Figure {
        key,
        label,
        value: value.map_or_else(|| "–".to_owned(), show),
        last_year: last_year.map(show),
        arrow,
        change,
        trend,
        note: value.is_none().then_some(note),
    }
}

/// A card as the template shows it.
pub struct Card {
    pub site: SiteCard,
    pub figures: Vec<Figure>,
    pub power: Option<String>,
    pub peak: Option<String>,
}

impl Card {
    fn new(site: SiteCard) -> Self {
        let cur = site.currency.clone();
        let money = move |v: f64| units::money(v, &cur);
        let energy = |v: f64| units::energy_kwh(v).to_string();
        let no_cost = if site.has_contract {
            "not priced: a day outside the contract"
        } else {
            "needs a supply contract"
        };
        let figures = vec![
            figure(
                ("today-energy", "Energy today"),
                &site.day,
                false,
                &energy,
                "",
            ),
            figure(
                ("today-cost", "Cost today"),
                &site.day,
                true,
                &money,
                no_cost,
            ),
            figure(
                ("month-energy", "Energy this month"),
                &site.month,
                false,
                &energy,
                "",
            ),
            figure(
                ("month-cost", "Cost this month"),
                &site.month,
                true,
                &money,
                no_cost,
            ),
        ];
        Self {
            power: site.power_kw.map(|p| units::power_kw(p).to_string()),
            peak: site.peak_today_kw.map(|p| units::power_kw(p).to_string()),
            figures,
            site,
        }
    }
}

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    title: &'static str,
    nav: Nav,
    cards: Vec<Card>,
}

async fn sites_page(State(state): State<WebState>, user: PageUser) -> PageResult {
    let cards = overview::overview(&state.read_pool, &user.scope, Utc::now())
        .await?
        .into_iter()
        .map(Card::new)
        .collect();
    user.render(&SitesPage {
        title: "Sites",
        nav: user.nav(),
        cards,
    })
}
