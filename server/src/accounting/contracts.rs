//! Supply contracts of a site. A contract applies from its `valid_from` local date until the
//! next one; creating, changing or deleting one queues a rebuild of the site's rollups, so
//! costs always follow the contract in force on each day.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use headend_energy::tariff::Contract;
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::structure::StructureError;
use super::worker::queue_rollups;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ContractRecord)]
pub struct ContractView {
    pub id: i64,
    pub site_id: i64,
    /// Applies from this local date until the next contract's.
    pub valid_from: NaiveDate,
    #[schema(value_type = schema::ContractSchema)]
    pub contract: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The schema of a contract as the API reads and writes it. The contract types live in the
/// pure `headend-energy` crate, which knows nothing of OpenAPI: these mirror their JSON.
pub mod schema {
    use std::collections::BTreeMap;

    /// A supply contract, as an API user writes it. Prices are decimal strings (preferred: what
    /// Headend writes back) or JSON numbers, at most 6 decimals, never negative: currency per
    /// kWh (`import_price`, `export_price`), per kW of monthly peak (`demand_charge`), per
    /// kvarh (`reactive.price`). `schedule` rules are tried in order and the first matching
    /// rule wins (put exceptions first); when none matches, `default_band` applies. A rule
    /// matches an instant by its local wall-clock time in the site's time zone: `months`
    /// (optional, the season: 1..=12), `days` (`mon`..`sun`, `holiday`; a date in `holidays`
    /// only matches rules listing `holiday`), and `[from, to)` as "HH:MM" (or "HH:MM:SS");
    /// `to <= from` runs through midnight, `from == to` is the whole day, `to` may be "24:00".
    /// Day and month apply to the date of the instant itself. `meter_tariff_bands`, when
    /// present, maps the tariff the meter reported (T1..T6) to a band and wins over the
    /// schedule; readings without a mapped tariff fall back to the schedule. `demand_charge`
    /// applies to the highest 15-minute mean power of each month; `reactive` charges reactive
    /// energy above `tan_phi_max` x active energy of the month. Unknown fields are rejected;
    /// errors name the offending field (e.g. `bands[1].import_price`).
    #[derive(utoipa::ToSchema)]
    #[schema(as = Contract, example = example)]
    pub struct ContractSchema {
        /// ISO 4217 code, e.g. EUR.
        pub currency: String,
        pub bands: Vec<BandSchema>,
        /// First match wins; default none.
        #[schema(default = json!([]))]
        pub schedule: Option<Vec<RuleSchema>>,
        /// The band when no rule matches.
        pub default_band: String,
        /// Local dates that count as `holiday` instead of their weekday; default none.
        #[schema(default = json!([]))]
        pub holidays: Option<Vec<chrono::NaiveDate>>,
        /// Meter tariff number (1..6) to band name.
        pub meter_tariff_bands: Option<BTreeMap<String, String>>,
        /// Per kW per month of the month's highest 15-minute mean power.
        pub demand_charge: Option<PriceSchema>,
        pub reactive: Option<ReactiveSchema>,
    }

    /// Exact decimal, at most 6 decimals, not negative; written back as a string. Numbers are
    /// read through their shortest decimal form (0.142 is exactly 0.142).
    #[derive(utoipa::ToSchema)]
    #[schema(as = Price, example = "0.1420")]
    pub struct PriceSchema(pub String);

    /// A time-of-use band and its prices.
    #[derive(utoipa::ToSchema)]
    #[schema(as = TariffBand)]
    pub struct BandSchema {
        /// Unique; referenced by rules, `default_band` and `meter_tariff_bands`.
        pub name: String,
        /// Per kWh imported.
        pub import_price: PriceSchema,
        /// Per kWh exported (credited); absent: export is not paid.
        pub export_price: Option<PriceSchema>,
    }

    /// A schedule rule: when it matches, the instant is in `band`.
    #[derive(utoipa::ToSchema)]
    #[schema(as = TariffRule)]
    pub struct RuleSchema {
        /// Free text.
        pub name: Option<String>,
        /// Name of a band.
        pub band: String,
        /// Local calendar months 1..12; absent: all year.
        pub months: Option<Vec<u8>>,
        /// mon, tue, wed, thu, fri, sat, sun or holiday; full weekday names (`monday`..) are
        /// accepted too.
        pub days: Vec<String>,
        /// Local start time "HH:MM", inclusive.
        pub from: String,
        /// Local end time "HH:MM", exclusive; "24:00" is midnight.
        pub to: String,
    }

    /// The reactive-energy charge.
    #[derive(utoipa::ToSchema)]
    #[schema(as = ReactiveCharge)]
    pub struct ReactiveSchema {
        /// Free reactive energy as a share of active energy (cos phi 0.95 is tan phi 0.329),
        /// 0 to 100; used to 6 decimals.
        pub tan_phi_max: f64,
        /// Per kvarh above the limit.
        pub price: PriceSchema,
    }

    /// The document's example contract (a unit test checks that it is valid).
    pub fn example() -> serde_json::Value {
        serde_json::json!({
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
        })
    }
}

type Row = (
    i64,
    i64,
    NaiveDate,
    sqlx::types::Json<serde_json::Value>,
    DateTime<Utc>,
);

fn view((id, site_id, valid_from, body, created_at): Row) -> ContractView {
    ContractView {
        id,
        site_id,
        valid_from,
        contract: body.0,
        created_at,
    }
}

/// Parses and validates a contract as an API user sends it; the error says what is wrong.
pub fn parse(body: serde_json::Value) -> Result<Contract, StructureError> {
    let contract: Contract = serde_json::from_value(body)
        .map_err(|e| StructureError::Invalid(format!("contract: {e}")))?;
    contract
        .validate()
        .map_err(|e| StructureError::Invalid(format!("contract: {e}")))?;
    Ok(contract)
}

/// One site's contracts, oldest first: a contract is in force from its `valid_from` until
/// the next one's.
pub type SiteContracts = Vec<(NaiveDate, Contract)>;

/// The contract in force on a local date.
pub fn in_force(contracts: &[(NaiveDate, Contract)], day: NaiveDate) -> Option<&Contract> {
    contracts
        .iter()
        .rev()
        .find(|(from, _)| *from <= day)
        .map(|(_, c)| c)
}

/// A stored contract that no longer reads as a valid contract (edited in the database, or
/// refused by a stricter validation than the one it was stored under). It stays in the table
/// for an admin to fix; whoever loads contracts gets it here, with the reason, to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadContract {
    pub id: i64,
    pub site_id: i64,
    pub valid_from: NaiveDate,
    pub reason: String,
}

impl BadContract {
    /// The one log line a loader writes for it; `during` names what was loading.
    pub fn warn(&self, during: &'static str) {
        tracing::warn!(
            site = self.site_id,
            contract = self.id,
            valid_from = %self.valid_from,
            reason = %self.reason,
            during,
            "stored contract is not valid; left out until it is fixed"
        );
    }
}

impl std::fmt::Display for BadContract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "contract {} of site {} (valid from {}) is not valid: {}",
            self.id, self.site_id, self.valid_from, self.reason
        )
    }
}

/// What [`load`] found: the valid contracts per site, and the stored ones that are not.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sites: HashMap<i64, SiteContracts>,
    pub bad: Vec<BadContract>,
}

impl Loaded {
    /// Sorts rows of `contracts` (`id, site_id, valid_from, body`, ordered by site and
    /// `valid_from`) into valid contracts and bad ones: nothing is dropped.
    pub fn from_rows(
        rows: impl IntoIterator<Item = (i64, i64, NaiveDate, serde_json::Value)>,
    ) -> Self {
        let mut out = Self::default();
        for (id, site_id, valid_from, body) in rows {
            match Contract::from_value(body) {
                Ok(contract) => out
                    .sites
                    .entry(site_id)
                    .or_default()
                    .push((valid_from, contract)),
                Err(e) => out.bad.push(BadContract {
                    id,
                    site_id,
                    valid_from,
                    reason: e.to_string(),
                }),
            }
        }
        out
    }

    /// Logs every bad contract (see [`BadContract::warn`]).
    pub fn warn_bad(&self, during: &'static str) {
        for bad in &self.bad {
            bad.warn(during);
        }
    }

    /// The bad contracts of `site` that would be in force on some local date of
    /// `[first, last]` (each from its `valid_from` until the next stored contract's).
    pub fn bad_within(&self, site: i64, first: NaiveDate, last: NaiveDate) -> Vec<&BadContract> {
        let starts = self
            .sites
            .get(&site)
            .into_iter()
            .flatten()
            .map(|(from, _)| *from)
            .chain(
                self.bad
                    .iter()
                    .filter(|b| b.site_id == site)
                    .map(|b| b.valid_from),
            );
        let starts: Vec<NaiveDate> = starts.collect();
        self.bad
            .iter()
            .filter(|b| b.site_id == site && b.valid_from <= last)
            .filter(|b| {
                let until = starts.iter().filter(|d| **d > b.valid_from).min();
                until.is_none_or(|next| *next > first)
            })
            .collect()
    }

    /// One site's valid contracts, oldest first.
    pub fn take_site(&mut self, site: i64) -> SiteContracts {
        self.sites.remove(&site).unwrap_or_default()
    }
}

/// The contracts of `sites`, oldest first per site, each parsed and validated as
/// [`Contract::from_value`] does; the stored rows that fail are returned apart, with why.
/// This is the one way contracts are read for accounting (the profile worker, the profile
/// and consumption queries, the export).
pub async fn load<'e>(db: impl PgExecutor<'e>, sites: &[i64]) -> Result<Loaded, sqlx::Error> {
    let rows: Vec<(i64, i64, NaiveDate, sqlx::types::Json<serde_json::Value>)> = sqlx::query_as(
        "SELECT id, site_id, valid_from, body FROM contracts WHERE site_id = ANY($1)
         ORDER BY site_id, valid_from",
    )
    .bind(sites)
    .fetch_all(db)
    .await?;
    Ok(Loaded::from_rows(
        rows.into_iter()
            .map(|(id, site, from, body)| (id, site, from, body.0)),
    ))
}

pub async fn list(pool: &PgPool, site: i64) -> Result<Vec<ContractView>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, site_id, valid_from, body, created_at FROM contracts WHERE site_id = $1 ORDER BY valid_from",
    )
    .bind(site)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(view).collect())
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<ContractView>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, site_id, valid_from, body, created_at FROM contracts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(view))
}

fn check_valid_from(date: NaiveDate) -> Result<(), StructureError> {
    if headend_energy::calendar::supported(date) {
        Ok(())
    } else {
        Err(StructureError::Invalid(format!(
            "valid_from must lie in the years {} to {}",
            headend_energy::calendar::MIN_YEAR,
            headend_energy::calendar::MAX_YEAR
        )))
    }
}

pub async fn create(
    pool: &PgPool,
    site: i64,
    valid_from: NaiveDate,
    contract: &Contract,
) -> Result<i64, StructureError> {
    check_valid_from(valid_from)?;
    let body =
        serde_json::to_value(contract).map_err(|e| StructureError::Invalid(e.to_string()))?;
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO contracts (site_id, valid_from, body) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(site)
    .bind(valid_from)
    .bind(sqlx::types::Json(body))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StructureError::Conflict(format!(
            "the site already has a contract valid from {valid_from}"
        )),
        _ => StructureError::Db(e),
    })?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn replace(
    pool: &PgPool,
    id: i64,
    valid_from: Option<NaiveDate>,
    contract: &Contract,
) -> Result<(), StructureError> {
    if let Some(date) = valid_from {
        check_valid_from(date)?;
    }
    let body =
        serde_json::to_value(contract).map_err(|e| StructureError::Invalid(e.to_string()))?;
    let mut tx = pool.begin().await?;
    let site: Option<i64> = sqlx::query_scalar(
        "UPDATE contracts SET body = $2, valid_from = COALESCE($3, valid_from) WHERE id = $1 RETURNING site_id",
    )
    .bind(id)
    .bind(sqlx::types::Json(body))
    .bind(valid_from)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StructureError::Conflict("the site already has a contract valid from that date".into())
        }
        _ => StructureError::Db(e),
    })?;
    let site = site.ok_or(StructureError::NotFound("contract"))?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn delete(pool: &PgPool, id: i64) -> Result<(), StructureError> {
    let mut tx = pool.begin().await?;
    let site: Option<i64> =
        sqlx::query_scalar("DELETE FROM contracts WHERE id = $1 RETURNING site_id")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let site = site.ok_or(StructureError::NotFound("contract"))?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn contract(currency: &str) -> serde_json::Value {
        json!({
            "currency": currency,
            "bands": [{ "name": "day", "import_price": "0.2" }],
            "default_band": "day",
        })
    }

    /// The example of the API document is a valid contract, and names every field the
    /// document describes.
    #[test]
    fn the_documented_example_is_a_valid_contract() {
        use utoipa::PartialSchema;
        let example = schema::example();
        Contract::from_value(example.clone()).unwrap();
        let schema = serde_json::to_value(schema::ContractSchema::schema()).unwrap();
        let documented = schema["properties"].as_object().unwrap();
        for key in example.as_object().unwrap().keys() {
            assert!(documented.contains_key(key), "Contract schema lacks {key}");
        }
        let served = serde_json::to_value(Contract::example_eur()).unwrap();
        for key in served.as_object().unwrap().keys() {
            assert!(documented.contains_key(key), "Contract schema lacks {key}");
        }
    }

    /// A stored row that no longer parses or validates is reported with its id, site and
    /// reason (the caller logs it, and the export refuses a period it covers); the valid
    /// ones are kept in order.
    #[test]
    fn bad_contracts_are_reported_not_dropped() {
        let mut loaded = Loaded::from_rows([
            (1, 10, day("2025-01-01"), contract("EUR")),
            (2, 10, day("2026-01-01"), contract("euro")),
            (3, 10, day("2026-06-01"), json!({ "currency": "EUR" })),
            (4, 10, day("2027-01-01"), contract("CHF")),
            (5, 11, day("2026-01-01"), contract("EUR")),
        ]);
        assert_eq!(
            loaded
                .bad
                .iter()
                .map(|b| (b.id, b.site_id))
                .collect::<Vec<_>>(),
            [(2, 10), (3, 10)]
        );
        assert_eq!(loaded.bad[0].valid_from, day("2026-01-01"));
        // Contract 2 is in force 2026-01-01..2026-05-31, contract 3 2026-06-01..2026-12-31.
        let within = |a: &str, b: &str| {
            loaded
                .bad_within(10, day(a), day(b))
                .iter()
                .map(|b| b.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(within("2025-01-01", "2025-12-31"), [0i64; 0]);
        assert_eq!(within("2025-12-31", "2026-01-01"), [2]);
        assert_eq!(within("2026-05-31", "2026-06-01"), [2, 3]);
        assert_eq!(within("2026-12-31", "2027-03-01"), [3]);
        assert_eq!(within("2027-01-01", "2027-03-01"), [0i64; 0]);
        assert!(loaded
            .bad_within(11, day("2026-01-01"), day("2026-12-31"))
            .is_empty());
        assert!(
            loaded.bad[0].reason.contains("currency"),
            "{}",
            loaded.bad[0].reason
        );
        assert!(
            loaded.bad[1].reason.contains("contract JSON"),
            "{}",
            loaded.bad[1].reason
        );
        assert!(loaded.bad[0]
            .to_string()
            .starts_with("contract 2 of site 10 (valid from 2026-01-01) is not valid: "));
        let site = loaded.take_site(10);
        assert_eq!(
            site.iter()
                .map(|(d, c)| (*d, c.currency.as_str()))
                .collect::<Vec<_>>(),
            [(day("2025-01-01"), "EUR"), (day("2027-01-01"), "CHF")]
        );
        assert_eq!(in_force(&site, day("2024-12-31")), None);
        assert_eq!(in_force(&site, day("2026-03-01")).unwrap().currency, "EUR");
        assert_eq!(in_force(&site, day("2027-01-01")).unwrap().currency, "CHF");
        assert_eq!(loaded.take_site(11).len(), 1);
        assert!(loaded.take_site(12).is_empty());
    }
}
