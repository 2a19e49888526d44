//! The overview: one card per site the user may see (`dashboard::overview`).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;

use super::{nav, render, Nav, PageResult, PageUser};
use crate::dashboard::overview::{self, SiteCard};
use crate::dashboard::units;
use crate::web::WebState;

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

fn figure(
    key: &'static str,
    label: &'static str,
    value: Option<f64>,
    last_year: Option<f64>,
    pct: Option<f64>,
    show: impl Fn(f64) -> String,
    note: &'static str,
) -> Figure {
    let (arrow, change, trend) = match pct {
        Some(p) => {
            let (arrow, text) = overview::trend(p);
            let class = match arrow {
                "▲" => "up",
                "▼" => "down",
                _ => "same",
            };
            (arrow, text, class)
        }
        None => ("", String::new(), "same"),
    };
    Figure {
        key,
        label,
        value: value.map_or_else(|| "–".to_owned(), &show),
        last_year: last_year.map(&show),
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
                "today-energy",
                "Energy today",
                Some(site.day.kwh),
                site.day.last_year_kwh,
                site.day.change_pct(),
                energy,
                "",
            ),
            figure(
                "today-cost",
                "Cost today",
                site.day.cost,
                site.day.last_year_cost,
                site.day.cost_change_pct(),
                money.clone(),
                no_cost,
            ),
            figure(
                "month-energy",
                "Energy this month",
                Some(site.month.kwh),
                site.month.last_year_kwh,
                site.month.change_pct(),
                energy,
                "",
            ),
            figure(
                "month-cost",
                "Cost this month",
                site.month.cost,
                site.month.last_year_cost,
                site.month.cost_change_pct(),
                money,
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

pub async fn sites_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let cards = overview::overview(&state.pool, &p.scope, Utc::now())
        .await?
        .into_iter()
        .map(Card::new)
        .collect();
    let (nav, set) = nav(&p, &headers);
    render(
        &SitesPage {
            title: "Sites",
            nav,
            cards,
        },
        set,
    )
}
