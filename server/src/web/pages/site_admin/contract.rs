//! Supply contracts: the list on the site's page and the contract form. The form is shown
//! again on a refusal with everything typed and each message beside its field (a summary at
//! the top links to them: the form is long).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;

use super::contract_fields::{ContractFields, DAYS};
use super::pickers::{self, Choice};
use super::{back, removed, site};
use crate::accounting::contracts;
use crate::accounting::structure::StructureError;
use crate::sites;
use crate::web::pages::form::FieldErrors;
use crate::web::pages::{AdminForm, Nav, PageError, PageResult, PageUser};
use crate::web::WebState;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Form bodies are bounded by the router's body limit; fields are bounded here.
const MAX_FIELDS: usize = 400;
const MAX_FIELD: usize = 4000;

pub struct ContractRow {
    pub id: i64,
    pub valid_from: NaiveDate,
    pub currency: String,
    pub bands: String,
    pub default_band: String,
}

/// The site's contracts, for the list on its administration page.
pub(super) async fn rows(state: &WebState, site: i64) -> Result<Vec<ContractRow>, PageError> {
    Ok(contracts::list(&state.pool, site)
        .await?
        .into_iter()
        .map(|c| ContractRow {
            id: c.id,
            valid_from: c.valid_from,
            currency: text(&c.contract["currency"]),
            bands: c.contract["bands"]
                .as_array()
                .map(|bands| {
                    bands
                        .iter()
                        .map(|b| format!("{} {}", text(&b["name"]), text(&b["import_price"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            default_band: text(&c.contract["default_band"]),
        })
        .collect())
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "admin_contract.html")]
struct ContractPage {
    title: String,
    nav: Nav,
    site: sites::SiteView,
    errors: FieldErrors,
    /// The messages with their field, for the summary at the top of the long form.
    summary: Vec<(String, String)>,
    band_names: Vec<String>,
    f: ContractFields,
    currencies: Vec<Choice>,
    days: [&'static str; 8],
    months: [&'static str; 12],
}

impl ContractPage {
    /// The message of a row's field (`band`, 2, `import` → `band2_import`).
    fn row_error(&self, row: &str, n: impl std::fmt::Display, field: &str) -> Option<&str> {
        self.errors.get(&format!("{row}{n}_{field}"))
    }

    fn row_has(&self, row: &str, n: impl std::fmt::Display, field: &str) -> bool {
        self.errors.has(&format!("{row}{n}_{field}"))
    }

    fn tariff_error(&self, n: impl std::fmt::Display) -> Option<&str> {
        self.errors.get(&format!("tariff{n}"))
    }
}

#[derive(Deserialize)]
pub(super) struct ContractParams {
    id: Option<i64>,
}

fn contract_page(
    nav: Nav,
    site: sites::SiteView,
    errors: FieldErrors,
    f: ContractFields,
) -> ContractPage {
    let summary = errors
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let band_names = f.band_names().into_iter().map(str::to_owned).collect();
    ContractPage {
        title: format!("Contract of {}", site.name),
        nav,
        site,
        errors,
        summary,
        band_names,
        currencies: pickers::currencies(&f.currency),
        f: f.padded(),
        days: DAYS,
        months: MONTHS,
    }
}

pub(super) async fn contract_form(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<ContractParams>,
) -> PageResult {
    user.require_admin()?;
    let site = site(&state, id).await?;
    let f = match q.id {
        Some(cid) => {
            let c = contracts::get(&state.pool, cid)
                .await?
                .filter(|c| c.site_id == id)
                .ok_or(PageError::NotFound)?;
            ContractFields::of_stored(c.id, c.valid_from, &c.contract)
        }
        None => ContractFields {
            currency: "EUR".into(),
            ..ContractFields::default()
        },
    };
    user.render(&contract_page(user.nav(), site, FieldErrors::new(), f))
}

pub(super) async fn save_contract(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(pairs): AdminForm<Vec<(String, String)>>,
) -> PageResult {
    if pairs.len() > MAX_FIELDS || pairs.iter().any(|(_, v)| v.len() > MAX_FIELD) {
        return Err(PageError::Bad("the form is too large".into()));
    }
    let site = site(&state, id).await?;
    let f = ContractFields::of_form(&pairs);
    if let Some(cid) = f.id {
        contracts::get(&state.pool, cid)
            .await?
            .filter(|c| c.site_id == id)
            .ok_or(PageError::NotFound)?;
    }
    let saved = match f.check() {
        Err(e) => Err(e),
        Ok((valid_from, contract)) => {
            let result = match f.id {
                Some(cid) => contracts::replace(&state.pool, cid, Some(valid_from), &contract)
                    .await
                    .map(|()| cid),
                None => contracts::create(&state.pool, id, valid_from, &contract).await,
            };
            match result {
                Ok(cid) => Ok(cid),
                Err(StructureError::Db(e)) => return Err(e.into()),
                Err(StructureError::NotFound(_)) => return Err(PageError::NotFound),
                Err(e) => {
                    // A second contract from the same date, or a date out of range.
                    let mut errors = FieldErrors::new();
                    errors.add("valid_from", e.to_string());
                    Err(errors)
                }
            }
        }
    };
    match saved {
        Ok(cid) => {
            state.energy_changed();
            Ok(back(
                id,
                "contracts",
                Ok(format!("Contract {cid} saved; costs are being recomputed.")),
            ))
        }
        Err(errors) => {
            let mut r = user.render(&contract_page(user.nav(), site, errors, f))?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
    }
}

pub(super) async fn delete_contract(
    State(state): State<WebState>,
    _user: PageUser,
    Path((id, cid)): Path<(i64, i64)>,
    _: AdminForm,
) -> PageResult {
    contracts::get(&state.pool, cid)
        .await?
        .filter(|c| c.site_id == id)
        .ok_or(PageError::NotFound)?;
    let result = contracts::delete(&state.pool, cid).await;
    state.energy_changed();
    let done = "Contract deleted; costs are being recomputed.";
    removed(id, "contracts", result, done)
}
