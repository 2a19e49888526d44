//! The overview (`/`): one card per site the user may see, with today's power curve, energy
//! and cost of today and of this month against the same period a year earlier, open alarms
//! and offline gateways.
//!
//! A fixed number of queries whatever the number of sites (one per kind, across all visible
//! sites): the overview of ~50 sites must not cost 50 round trips per figure.
//!
//! **Last year, fairly.** "Today" is compared with the same local date a year earlier up to
//! the same time of day, "this month" with the same month a year earlier up to the same day
//! and time. Energy comes from the site's quarter-hours (`site_intervals`), so the cut is
//! exact; cost is stored per day, so last year's partial day is priced pro rata of its energy.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::PgPool;

use super::{power, spark, DashboardError};
use crate::accounting::roles::{self, Role};
use crate::accounting::topology::{self, Placement};
use crate::auth::Scope;
use crate::sites;
use crate::zone::TimeZone;

/// A figure of this period beside the same period a year earlier.
#[derive(Debug, Clone, Default)]
pub struct Versus {
    pub kwh: f64,
    /// `None`: no accounted energy at all a year earlier (a new site or meter).
    pub last_year_kwh: Option<f64>,
    /// `None`: no price (no contract) or no data.
    pub cost: Option<f64>,
    pub last_year_cost: Option<f64>,
}

impl Versus {
    /// The change against last year in % (`None` without a comparable figure).
    pub fn change_pct(&self) -> Option<f64> {
        change(self.kwh, self.last_year_kwh)
    }

    pub fn cost_change_pct(&self) -> Option<f64> {
        self.cost.and_then(|c| change(c, self.last_year_cost))
    }
}

fn change(now: f64, before: Option<f64>) -> Option<f64> {
    before
        .filter(|b| *b > 0.0 && b.is_finite())
        .map(|b| (now - b) / b * 100.0)
}

/// How a change reads: an arrow and a signed percentage (`▲ +12 %`, `▼ −3.4 %`, `≈ 0 %`).
pub fn trend(pct: f64) -> (&'static str, String) {
    let rounded = if pct.abs() >= 10.0 {
        format!("{:.0}", pct.abs())
    } else {
        format!("{:.1}", pct.abs())
    };
    if pct.abs() < 0.5 {
        ("≈", "±0 %".to_owned())
    } else if pct > 0.0 {
        ("▲", format!("+{rounded} %"))
    } else {
        ("▼", format!("−{rounded} %"))
    }
}

/// A change as the pages show it: the arrow, the signed percentage and the class (`up`, `down`
/// or `same`) that colours it.
pub fn shown_trend(pct: f64) -> (&'static str, String, &'static str) {
    let (arrow, text) = trend(pct);
    let class = match arrow {
        "▲" => "up",
        "▼" => "down",
        _ => "same",
    };
    (arrow, text, class)
}

/// The change of `now` against the period before, as shown; `None` when that had no energy.
pub fn against(now: f64, before: f64) -> Option<(&'static str, String, &'static str)> {
    (before > 0.0).then(|| shown_trend((now - before) / before * 100.0))
}

/// One site's card.
#[derive(Debug)]
pub struct SiteCard {
    pub id: i64,
    pub name: String,
    pub time_zone: TimeZone,
    /// Meters on the site's gateways, and how many of them are placed (site, panel, circuit).
    pub meters: usize,
    pub meters_placed: usize,
    /// Today's local date, as the card shows it.
    pub today: String,
    /// The site's power curve of today (inline SVG).
    pub sparkline: String,
    /// Quarter-hours of today with energy.
    pub quarters_today: usize,
    /// The highest quarter-hour of today, kW.
    pub peak_today_kw: Option<f64>,
    /// Current power (latest sample within 15 minutes), kW.
    pub power_kw: Option<f64>,
    pub day: Versus,
    pub month: Versus,
    pub currency: String,
    /// The site has a supply contract (costs need one).
    pub has_contract: bool,
    /// Open alarms (active or not acknowledged) by severity, most severe first.
    pub alarms: Vec<(String, i64)>,
    pub alarms_open: i64,
    pub gateways: usize,
    pub offline: Vec<String>,
    /// When a gateway of the site last reported (local time), if ever.
    pub last_seen: Option<String>,
    /// It did within the last half hour (no data yet is then only the accounting's delay).
    pub seen_recently: bool,
}

/// Local text of an instant in a site's zone.
fn local_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%-d %b %Y %H:%M").to_string()
}

/// The same local date a year earlier (29 February becomes the 28th).
pub fn a_year_before(d: NaiveDate) -> NaiveDate {
    d.with_year(d.year() - 1)
        .or_else(|| NaiveDate::from_ymd_opt(d.year() - 1, d.month(), 28))
        .unwrap_or(d)
}

/// The dates and instants of one site's comparison.
struct Frame {
    tz: Tz,
    today: NaiveDate,
    day_start: DateTime<Utc>,
    day_end: DateTime<Utc>,
    /// The end of the last whole quarter-hour: both years are cut there.
    cut: DateTime<Utc>,
    month_start: DateTime<Utc>,
    ly_date: NaiveDate,
    ly_day_start: DateTime<Utc>,
    ly_day_end: DateTime<Utc>,
    ly_cut: DateTime<Utc>,
    ly_month_start: DateTime<Utc>,
}

impl Frame {
    fn new(tz: Tz, now: DateTime<Utc>) -> Self {
        let today = calendar::local_date(now, tz);
        let (day_start, day_end) = calendar::period_bounds(tz, today, Period::Day);
        let (month_start, _) = calendar::period_bounds(tz, today, Period::Month);
        let cut = calendar::floor_quarter(now).max(day_start);
        let ly_date = a_year_before(today);
        let (ly_day_start, ly_day_end) = calendar::period_bounds(tz, ly_date, Period::Day);
        let (ly_month_start, _) = calendar::period_bounds(tz, ly_date, Period::Month);
        let ly_cut = (ly_day_start + (cut - day_start)).min(ly_day_end);
        Self {
            tz,
            today,
            day_start,
            day_end,
            cut,
            month_start,
            ly_date,
            ly_day_start,
            ly_day_end,
            ly_cut,
            ly_month_start,
        }
    }
}

/// The overview of every site in `scope`.
pub async fn overview(
    pool: &PgPool,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<Vec<SiteCard>, DashboardError> {
    let sites = sites::list(pool, scope).await?;
    if sites.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = sites.iter().map(|s| s.id).collect();
    let frames: HashMap<i64, Frame> = sites
        .iter()
        .map(|s| (s.id, Frame::new(s.time_zone.tz(), now)))
        .collect();

    // Meters and their registers, for the site totals' meters (topology) and billing counters.
    type MeterRow = (
        i64,
        i64,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
    );
    let meters: Vec<MeterRow> = sqlx::query_as(
        "SELECT g.site_id, d.id, d.measures, d.panel_id, d.circuit_id, c.panel_id,
                d.import_register, d.export_register
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN circuits c ON c.id = d.circuit_id
         WHERE g.site_id = ANY($1) AND d.kind = 'meter'",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let counters: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT c.id, c.device_id, c.name FROM counters c
         JOIN devices d ON d.id = c.device_id JOIN gateways g ON g.id = d.gateway_id
         WHERE g.site_id = ANY($1) AND d.kind = 'meter'",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut placements: HashMap<i64, Vec<Placement>> = HashMap::new();
    for m in &meters {
        placements.entry(m.0).or_default().push(Placement {
            device_id: m.1,
            measures: m.2.clone(),
            panel_id: m.3,
            circuit_id: m.4,
            circuit_panel_id: m.5,
        });
    }
    let top: HashMap<i64, HashSet<i64>> = placements
        .iter()
        .map(|(site, p)| (*site, topology::top_level(p)))
        .collect();
    // Billing counters of the top-level meters: counter → (site, +1 import / −1 export).
    let mut billing: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut top_devices: Vec<i64> = Vec::new();
    for m in &meters {
        if !top.get(&m.0).is_some_and(|t| t.contains(&m.1)) {
            continue;
        }
        top_devices.push(m.1);
        for (c, device, name) in &counters {
            if *device != m.1 {
                continue;
            }
            match roles::role_of(name, m.6.as_deref(), m.7.as_deref(), None) {
                Role::Import => {
                    billing.insert(*c, (m.0, 1));
                }
                Role::Export => {
                    billing.insert(*c, (m.0, -1));
                }
                _ => {}
            }
        }
    }

    // Quarter-hours: today (the sparkline and today's energy), and a year earlier.
    let mut ranges = Vec::new();
    for (site, f) in &frames {
        ranges.push((*site, f.day_start, f.day_end));
    }
    let quarters = power::sites_quarters(pool, &ranges).await?;
    // Energy sums over each site's month and last year's periods, one query.
    let mut sum_sites = Vec::new();
    let mut sum_kinds: Vec<i32> = Vec::new();
    let mut sum_from = Vec::new();
    let mut sum_to = Vec::new();
    for (site, f) in &frames {
        for (kind, from, to) in [
            (0, f.month_start, f.cut),
            (1, f.ly_day_start, f.ly_cut),
            (2, f.ly_day_start, f.ly_day_end),
            (3, f.ly_month_start, f.ly_cut),
        ] {
            sum_sites.push(*site);
            sum_kinds.push(kind);
            sum_from.push(from);
            sum_to.push(to);
        }
    }
    let sums: Vec<(i64, i32, i64, i64)> = sqlx::query_as(
        "SELECT r.site_id, r.kind, COALESCE(sum(i.energy_milli), 0)::int8, count(i.start)
         FROM UNNEST($1::int8[], $2::int4[], $3::timestamptz[], $4::timestamptz[])
              AS r(site_id, kind, f, t)
         LEFT JOIN site_intervals i ON i.site_id = r.site_id AND i.start >= r.f AND i.start < r.t
         GROUP BY 1, 2",
    )
    .bind(&sum_sites)
    .bind(&sum_kinds)
    .bind(&sum_from)
    .bind(&sum_to)
    .fetch_all(pool)
    .await?;
    let sum_of = |site: i64, kind: i32| -> Option<i64> {
        sums.iter()
            .find(|r| r.0 == site && r.1 == kind)
            .and_then(|r| (r.3 > 0).then_some(r.2))
    };

    // Costs per counter and day (stored per day), this month and last year's month.
    let first = frames.values().map(|f| f.today).min().unwrap_or_default();
    let lo = calendar::period_start(first, Period::Month) - Duration::days(1);
    let hi = frames.values().map(|f| f.today).max().unwrap_or_default() + Duration::days(1);
    let (ly_lo, ly_hi) = (a_year_before(lo) - Duration::days(1), a_year_before(hi));
    let billing_ids: Vec<i64> = billing.keys().copied().collect();
    let days: Vec<(i64, NaiveDate, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT counter_id, day, cost_nano, currency FROM energy_days
         WHERE counter_id = ANY($1) AND ((day >= $2 AND day <= $3) OR (day >= $4 AND day <= $5))",
    )
    .bind(&billing_ids)
    .bind(lo)
    .bind(hi)
    .bind(ly_lo)
    .bind(ly_hi)
    .fetch_all(pool)
    .await?;

    // The currency of each site's latest contract (a site without one has no costs).
    let contracts: HashMap<i64, String> = sqlx::query_as::<_, (i64, String)>(
        "SELECT DISTINCT ON (site_id) site_id, COALESCE(body->>'currency', '')
         FROM contracts WHERE site_id = ANY($1) ORDER BY site_id, valid_from DESC",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let alarms: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT site_id, severity, count(*) FROM alarms
         WHERE site_id = ANY($1) AND (active OR acked_at IS NULL)
         GROUP BY 1, 2",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let gateways: Vec<(i64, String, bool, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
        "SELECT g.site_id, g.serial, {}, g.last_seen_at FROM gateways g
             WHERE g.site_id = ANY($1) ORDER BY g.serial",
        crate::fleet::gateways::ONLINE_SQL
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let power_now: Vec<(i64, Option<f32>)> = sqlx::query_as(
        "SELECT DISTINCT ON (device_id) device_id, p FROM measurements
         WHERE device_id = ANY($1) AND ts > $2 - interval '15 minutes' AND ts <= $2
         ORDER BY device_id, ts DESC",
    )
    .bind(&top_devices)
    .bind(now)
    .fetch_all(pool)
    .await?;

    let mut cards = Vec::with_capacity(sites.len());
    for site in sites {
        let f = &frames[&site.id];
        let tz = f.tz;
        let q = quarters.get(&site.id);
        let today_q = power::day_quarters(tz, f.today, q.unwrap_or(&HashMap::new()));
        let values: Vec<Option<f64>> = today_q
            .iter()
            .filter(|x| x.start < f.day_end.min(now.max(f.day_start)))
            .map(|x| x.power_w.map(|w| w / 1000.0))
            .collect();
        let quarters_today = values.iter().flatten().count();
        let peak_today_kw = values.iter().flatten().copied().reduce(f64::max);
        let today_milli: i64 = q.map_or(0, |q| {
            q.iter().filter(|(t, _)| **t < f.cut).map(|(_, e)| *e).sum()
        });
        let kwh = |milli: i64| milli as f64 / 1_000_000.0;
        let ly_today = sum_of(site.id, 1);
        let ly_full = sum_of(site.id, 2);
        let month_milli = sum_of(site.id, 0).unwrap_or(0);
        let ly_month = sum_of(site.id, 3);

        // Cost: a day's billed cost, summed over the site's billing counters; `None` when a
        // day with energy has no price, or no day has energy.
        let has_contract = contracts.contains_key(&site.id);
        let mut currency = contracts.get(&site.id).cloned().unwrap_or_default();
        let cost_between = |from: NaiveDate, to: NaiveDate, currency: &mut String| {
            let mut total: i128 = 0;
            let (mut any, mut priced) = (false, true);
            for (c, day, cost, cur) in &days {
                let Some((s, sign)) = billing.get(c) else {
                    continue;
                };
                if *s != site.id || *day < from || *day > to {
                    continue;
                }
                any = true;
                match cost {
                    Some(n) => total += i128::from(*n) * i128::from(*sign),
                    None if *sign > 0 => priced = false,
                    None => {}
                }
                if let Some(cur) = cur {
                    currency.clone_from(cur);
                }
            }
            // No energy at all costs nothing, once there is a contract to price it.
            if any {
                priced.then(|| total as f64 / 1e9)
            } else {
                has_contract.then_some(0.0)
            }
        };
        let any_between = |from: NaiveDate, to: NaiveDate| {
            days.iter().any(|(c, day, ..)| {
                billing.get(c).is_some_and(|(s, _)| *s == site.id) && *day >= from && *day <= to
            })
        };
        let month_first = calendar::period_start(f.today, Period::Month);
        let ly_month_first = calendar::period_start(f.ly_date, Period::Month);
        let today_cost = cost_between(f.today, f.today, &mut currency);
        let month_cost = cost_between(month_first, f.today, &mut currency);
        // Last year's partial day, pro rata of its energy up to the same time of day.
        let ly_share = match (ly_today, ly_full) {
            (Some(part), Some(full)) if full > 0 => part as f64 / full as f64,
            (Some(_), _) => 1.0,
            _ => 0.0,
        };
        let ly_day_cost = cost_between(f.ly_date, f.ly_date, &mut currency).map(|c| c * ly_share);
        // The whole days before it (none: nothing to add; unpriced: unknown).
        let ly_before = match f.ly_date.pred_opt().filter(|d| *d >= ly_month_first) {
            Some(d) if any_between(ly_month_first, d) => {
                cost_between(ly_month_first, d, &mut currency)
            }
            _ => Some(0.0),
        };
        let ly_month_cost = match (ly_before, ly_day_cost) {
            (Some(a), Some(b)) => Some(a + b),
            (Some(a), None) if ly_today.is_none() && a > 0.0 => Some(a),
            _ => None,
        };

        let mut alarm_rows: Vec<(String, i64)> = alarms
            .iter()
            .filter(|a| a.0 == site.id)
            .map(|a| (a.1.clone(), a.2))
            .collect();
        alarm_rows.sort_by_key(|(s, _)| match s.as_str() {
            "critical" => 0,
            "warning" => 1,
            "info" => 2,
            _ => 3,
        });
        let site_gateways: Vec<_> = gateways.iter().filter(|g| g.0 == site.id).collect();
        let site_top = top.get(&site.id);
        let power: Vec<f64> = power_now
            .iter()
            .filter(|(d, _)| site_top.is_some_and(|t| t.contains(d)))
            .filter_map(|(_, p)| p.map(f64::from))
            .collect();
        let site_meters = placements.get(&site.id);
        cards.push(SiteCard {
            id: site.id,
            meters: site_meters.map_or(0, Vec::len),
            meters_placed: site_meters
                .map_or(0, |m| m.iter().filter(|p| p.measures.is_some()).count()),
            today: f.today.format("%a %-d %b").to_string(),
            sparkline: spark::sparkline(
                &format!("spark-{}", site.id),
                &format!("Power today at {}", site.name),
                &values,
                today_q.len(),
            ),
            quarters_today,
            peak_today_kw,
            power_kw: (!power.is_empty()).then(|| power.iter().sum::<f64>() / 1000.0),
            day: Versus {
                kwh: kwh(today_milli),
                last_year_kwh: ly_today.map(kwh),
                cost: today_cost,
                last_year_cost: ly_day_cost.filter(|_| ly_today.is_some()),
            },
            month: Versus {
                kwh: kwh(month_milli),
                last_year_kwh: ly_month.map(kwh),
                cost: month_cost,
                last_year_cost: ly_month_cost.filter(|_| ly_month.is_some()),
            },
            currency,
            has_contract,
            alarms_open: alarm_rows.iter().map(|a| a.1).sum(),
            alarms: alarm_rows,
            gateways: site_gateways.len(),
            offline: site_gateways
                .iter()
                .filter(|g| !g.2)
                .map(|g| g.1.clone())
                .collect(),
            last_seen: site_gateways
                .iter()
                .filter_map(|g| g.3)
                .max()
                .map(|t| local_text(t, tz)),
            seen_recently: site_gateways
                .iter()
                .filter_map(|g| g.3)
                .any(|t| now - t < Duration::minutes(30)),
            name: site.name,
            time_zone: site.time_zone,
        });
    }
    Ok(cards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_year_is_the_same_local_date_and_time_of_day() {
        let tz: Tz = "Europe/Ljubljana".parse().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-07-15T10:07:00+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let f = Frame::new(tz, now);
        assert_eq!(f.ly_date, NaiveDate::from_ymd_opt(2025, 7, 15).unwrap());
        assert_eq!(f.cut - f.day_start, Duration::minutes(10 * 60));
        assert_eq!(f.ly_cut - f.ly_day_start, Duration::minutes(10 * 60));
        assert_eq!(
            a_year_before(NaiveDate::from_ymd_opt(2028, 2, 29).unwrap()),
            NaiveDate::from_ymd_opt(2027, 2, 28).unwrap()
        );
    }

    #[test]
    fn trends_read_as_arrows() {
        assert_eq!(trend(12.34), ("▲", "+12 %".to_owned()));
        assert_eq!(trend(-3.44), ("▼", "−3.4 %".to_owned()));
        assert_eq!(trend(0.2), ("≈", "±0 %".to_owned()));
        assert_eq!(change(5.0, Some(0.0)), None);
        assert_eq!(change(5.0, Some(4.0)), Some(25.0));
    }
}
