//! Daily rollups: `energy_days` of the local days the changed intervals fall in, with their
//! bands and cost under the contract in force.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use headend_energy::calendar::{self, Period};
use headend_energy::tariff::Contract;
use sqlx::{Postgres, Transaction};

use super::drain::CounterInfo;
use super::{Step, WorkerError};
use crate::accounting::contracts::{self, SiteContracts};
use crate::accounting::DayTotals;

/// The contracts of every site involved, oldest first.
pub(super) type Contracts = HashMap<i64, SiteContracts>;

/// The valid contracts of the counters' sites; a stored contract that is not valid is logged
/// (its site's days are then costed with the contract before it, as if it did not exist).
pub(super) async fn load_contracts(
    tx: &mut Transaction<'_, Postgres>,
    counters: &HashMap<i64, CounterInfo>,
) -> Result<Contracts, WorkerError> {
    let sites: Vec<i64> = counters
        .values()
        .filter_map(|c| c.site_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let loaded = contracts::load(&mut **tx, &sites)
        .await
        .step("load contracts")?;
    loaded.warn_bad("profile worker");
    Ok(loaded.sites)
}

/// The contract in force on a local date.
fn contract_on(contracts: &Contracts, site: Option<i64>, day: NaiveDate) -> Option<&Contract> {
    contracts::in_force(contracts.get(&site?)?, day)
}

/// Recomputes `energy_days` for every local day touched by the changed spans.
pub(super) async fn rollup_days(
    tx: &mut Transaction<'_, Postgres>,
    counters: &HashMap<i64, CounterInfo>,
    contracts: &Contracts,
    changed: &HashMap<i64, (DateTime<Utc>, DateTime<Utc>)>,
) -> Result<usize, WorkerError> {
    if changed.is_empty() {
        return Ok(0);
    }
    // Widen each span to whole local days of the counter's site.
    let mut ids = Vec::new();
    let mut los = Vec::new();
    let mut his = Vec::new();
    let mut day_ranges: HashMap<i64, (NaiveDate, NaiveDate)> = HashMap::new();
    for (id, (a, b)) in changed {
        let info = &counters[id];
        let first = calendar::local_date(*a, info.tz);
        let last = calendar::local_date(*b - chrono::Duration::milliseconds(1), info.tz).max(first);
        let lo = calendar::period_bounds(info.tz, first, Period::Day).0;
        let hi = calendar::period_bounds(info.tz, last, Period::Day).1;
        ids.push(*id);
        los.push(lo);
        his.push(hi);
        day_ranges.insert(*id, (first, last));
    }
    let rows: Vec<(i64, DateTime<Utc>, i64, i16)> = sqlx::query_as(
        "SELECT e.counter_id, e.start, e.energy_milli, e.quality
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(c, lo, hi)
         JOIN energy_intervals e ON e.counter_id = r.c AND e.start >= r.lo AND e.start < r.hi
         ORDER BY e.counter_id, e.start",
    )
    .bind(&ids)
    .bind(&los)
    .bind(&his)
    .fetch_all(&mut **tx)
    .await
    .step("load intervals for rollup")?;

    // Meter tariffs, only for counters whose contract picks bands by the meter's tariff.
    let tariff_devices: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = ids
        .iter()
        .zip(los.iter().zip(&his))
        .filter(|(id, _)| {
            let info = &counters[*id];
            contracts
                .get(&info.site_id.unwrap_or(-1))
                .is_some_and(|cs| cs.iter().any(|(_, c)| c.meter_tariff_bands.is_some()))
        })
        .map(|(id, (lo, hi))| (counters[id].device_id, *lo, *hi))
        .collect();
    let meter_tariffs = load_meter_tariffs(tx, &tariff_devices).await?;

    let mut acc: BTreeMap<(i64, NaiveDate), DayTotals> = BTreeMap::new();
    for (id, start, energy, quality) in rows {
        let info = &counters[&id];
        let day = calendar::local_date(start, info.tz);
        let contract = contract_on(contracts, info.site_id, day);
        let tariff = meter_tariffs
            .get(&(info.device_id, start.timestamp_millis()))
            .copied();
        acc.entry((id, day))
            .or_insert_with(|| DayTotals::new(contract.map(|c| c.bands.len()).unwrap_or(0)))
            .add(
                start,
                energy,
                quality,
                contract.map(|c| (c, info.tz, tariff, info.role)),
            );
    }

    let mut c = Vec::new();
    let mut d = Vec::new();
    let mut energy = Vec::new();
    let mut measured = Vec::new();
    let mut estimated = Vec::new();
    let mut quarters = Vec::new();
    let mut peak = Vec::new();
    let mut peak_start = Vec::new();
    let mut bands = Vec::new();
    let mut cost = Vec::new();
    let mut currency = Vec::new();
    for ((id, day), totals) in &acc {
        let info = &counters[id];
        let contract = contract_on(contracts, info.site_id, *day);
        c.push(*id);
        d.push(*day);
        energy.push(totals.energy);
        measured.push(totals.measured);
        estimated.push(totals.estimated);
        quarters.push(
            i32::try_from(calendar::quarter_hours_in(info.tz, *day, Period::Day)).unwrap_or(96),
        );
        peak.push(totals.peak);
        peak_start.push(totals.peak_start);
        // A Postgres array literal keeps the UNNEST of a ragged 2-D array out of the query.
        bands.push(format!(
            "{{{}}}",
            totals
                .bands
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        cost.push(totals.cost_nano(info.role, contract));
        currency.push(contract.map(|c| c.currency.clone()));
    }
    let (del_c, del_from, del_to): (Vec<i64>, Vec<NaiveDate>, Vec<NaiveDate>) =
        day_ranges.iter().map(|(id, (a, b))| (*id, *a, *b)).fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |mut acc, (id, a, b)| {
                acc.0.push(id);
                acc.1.push(a);
                acc.2.push(b);
                acc
            },
        );
    sqlx::query(
        "DELETE FROM energy_days e USING UNNEST($1::int8[], $2::date[], $3::date[]) AS r(c, a, b)
         WHERE e.counter_id = r.c AND e.day >= r.a AND e.day <= r.b",
    )
    .bind(&del_c)
    .bind(&del_from)
    .bind(&del_to)
    .execute(&mut **tx)
    .await
    .step("delete stale days")?;
    sqlx::query(
        "INSERT INTO energy_days (counter_id, day, energy_milli, measured, estimated, quarters,
                                  peak_milli, peak_start, band_milli, cost_nano, currency)
         SELECT c, d, e, m, s, q, p, ps, b::int8[], co, cu
         FROM UNNEST($1::int8[], $2::date[], $3::int8[], $4::int4[], $5::int4[], $6::int4[],
                     $7::int8[], $8::timestamptz[], $9::text[], $10::int8[], $11::text[])
              AS r(c, d, e, m, s, q, p, ps, b, co, cu)",
    )
    .bind(&c)
    .bind(&d)
    .bind(&energy)
    .bind(&measured)
    .bind(&estimated)
    .bind(&quarters)
    .bind(&peak)
    .bind(&peak_start)
    .bind(&bands)
    .bind(&cost)
    .bind(&currency)
    .execute(&mut **tx)
    .await
    .step("insert days")?;
    Ok(acc.len())
}

/// The meter's reported tariff per quarter-hour (the latest measurement in it that had one).
async fn load_meter_tariffs(
    tx: &mut Transaction<'_, Postgres>,
    ranges: &[(i64, DateTime<Utc>, DateTime<Utc>)],
) -> Result<HashMap<(i64, i64), u8>, WorkerError> {
    if ranges.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = ranges.iter().map(|r| r.0).collect();
    let los: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.1).collect();
    let his: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.2).collect();
    let rows: Vec<(i64, DateTime<Utc>, i16)> = sqlx::query_as(
        "SELECT DISTINCT ON (m.device_id, date_bin('15 minutes', m.ts, 'epoch'))
                m.device_id, date_bin('15 minutes', m.ts, 'epoch'), m.tariff
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(dev, lo, hi)
         JOIN measurements m ON m.device_id = r.dev AND m.ts >= r.lo AND m.ts < r.hi
         WHERE m.tariff IS NOT NULL
         ORDER BY m.device_id, date_bin('15 minutes', m.ts, 'epoch'), m.ts DESC",
    )
    .bind(&ids)
    .bind(&los)
    .bind(&his)
    .fetch_all(&mut **tx)
    .await
    .step("load meter tariffs")?;
    Ok(rows
        .into_iter()
        .filter_map(|(dev, q, t)| Some(((dev, q.timestamp_millis()), u8::try_from(t).ok()?)))
        .collect())
}
