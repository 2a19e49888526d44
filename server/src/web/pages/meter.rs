//! A meter: counters, measurements, live values and its power graph.
//!
//! Numbers are shown as people read them: counters in kWh or MWh (kvarh or Mvarh), power in
//! kW or MW, voltage in V... ([`measurement_text`], mirrored by `static/live.js`, which must
//! produce the same text for the same number). The API and the CSV keep the exact values.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::{nav, render, supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::dashboard::charts::{self, PowerPoint};
use crate::dashboard::counters::{self as names, Meter, Register};
use crate::dashboard::{self, DashboardError};
use crate::devices;
use crate::profiles::query::{self};
use crate::web::urls::{self, filters};
use crate::web::WebState;

// ---- numbers ---------------------------------------------------------------------------

/// `x` with `decimals` decimals, rounded half up on the magnitude, never `-0`. Written with
/// integer steps so that `static/live.js` (`fixed`) gives the very same text.
fn fixed(x: f64, decimals: usize) -> String {
    const SCALE: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
    if !x.is_finite() {
        return "–".to_owned();
    }
    let decimals = decimals.min(3);
    let n = (x.abs() * SCALE[decimals]).round();
    let mut digits = format!("{n:.0}");
    while digits.len() < decimals + 1 {
        digits.insert(0, '0');
    }
    let (int, frac) = digits.split_at(digits.len() - decimals);
    let sign = if x < 0.0 && n != 0.0 { "-" } else { "" };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Three significant digits (four from 1000 to 9999), as `dashboard::units::digits`.
fn sig(x: f64) -> String {
    let a = x.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 || a == 0.0 {
        2
    } else {
        3
    };
    fixed(x, decimals)
}

/// A value in a base unit given in thousands (kW from W): kilo, or mega from 10 000 kilo.
fn kilo(x: f64, unit: &str) -> String {
    let k = x / 1000.0;
    if k.abs() >= 10_000.0 {
        format!("{} M{unit}", sig(k / 1000.0))
    } else {
        format!("{} k{unit}", sig(k))
    }
}

/// A measurement (`measurements` column `key`, SI value) as the page shows it:
/// `229.5 V`, `5.23 A`, `1.20 kW`, `0.950`, `50.01 Hz`, `41.5 °C`, `2.1 %`.
pub fn measurement_text(key: &str, value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "–".to_owned();
    };
    match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "u" if v.abs() >= 10_000.0 => format!("{} kV", sig(v / 1000.0)),
        "u" => format!("{} V", fixed(v, 1)),
        "i" | "i_n" if v.abs() >= 10_000.0 => format!("{} kA", sig(v / 1000.0)),
        "i" | "i_n" if v.abs() >= 100.0 => format!("{} A", fixed(v, 1)),
        "i" | "i_n" => format!("{} A", fixed(v, 2)),
        "p" => kilo(v, "W"),
        "q" => kilo(v, "var"),
        "s" => kilo(v, "VA"),
        "pf" => fixed(v, 3),
        "pa" => format!("{}°", fixed(v, 1)),
        "frequency" => format!("{} Hz", fixed(v, 2)),
        "temperature" => format!("{} °C", fixed(v, 1)),
        "thd_u" | "thd_i" => format!("{} %", fixed(v, 1)),
        _ => sig(v),
    }
}

fn local(ts: DateTime<Utc>, tz: Tz) -> String {
    ts.with_timezone(&tz).format("%-d %b %Y %H:%M").to_string()
}

/// When the shown measurements were measured, in the site's zone; `static/live.js` writes the
/// same text when it refreshes them.
pub fn measured_text(ts: DateTime<Utc>, tz: Tz) -> String {
    ts.with_timezone(&tz)
        .format("measured %-d %b %Y %H:%M:%S")
        .to_string()
}

fn day(d: NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}

/// `from` to `to` (not included) as people say it: "7 Dec 2026", "1 Dec 2026 – 7 Dec 2026".
fn days_text(from: NaiveDate, to: NaiveDate) -> String {
    let last = to.pred_opt().unwrap_or(to);
    if last <= from {
        day(from)
    } else {
        format!("{} – {}", day(from), day(last))
    }
}

// ---- ranges ----------------------------------------------------------------------------

/// The quick ranges of the power graph: `?range=<key>`.
const RANGES: [(&str, &str); 7] = [
    ("24h", "Last 24 hours"),
    ("today", "Today"),
    ("yesterday", "Yesterday"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("month", "This month"),
    ("year", "This year"),
];

/// The local days of a quick range on `today` (`None`: the rolling last 24 hours).
fn range_days(key: &str, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let tomorrow = today.succ_opt().unwrap_or(today);
    let back = |n: i64| today - Duration::days(n);
    match key {
        "today" => Some((today, tomorrow)),
        "yesterday" => Some((back(1), today)),
        "7d" => Some((back(6), tomorrow)),
        "30d" => Some((back(29), tomorrow)),
        "month" => Some((today.with_day(1).unwrap_or(today), tomorrow)),
        "year" => Some((
            NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today),
            tomorrow,
        )),
        _ => None,
    }
}

/// The longest period the power graph shows (a leap year).
pub const MAX_GRAPH_DAYS: i64 = 366;
/// Up to this many days the graph shows quarter-hours; up to [`query::MAX_PROFILE_DAYS`]
/// hourly means; beyond, daily means.
const QUARTER_DAYS: i64 = 3;

pub struct QuickRange {
    pub label: &'static str,
    pub href: String,
    /// The dates it covers, for its tooltip.
    pub span: String,
    pub current: bool,
}

pub struct CounterRow {
    pub name: String,
    pub wire: String,
    pub value: String,
    /// The exact register, as the meter sent it.
    pub exact: String,
    pub read: String,
}

/// Why a meter is not (fully) in the site's accounting.
pub enum Placement {
    Placed,
    /// Counted as an unplaced meter of the site; admins get the link to place it.
    NotPlaced {
        admin_href: Option<String>,
    },
    /// Its gateway belongs to no site.
    NoSite,
}

// ---- meter ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "meter.html")]
struct MeterPage {
    title: String,
    nav: Nav,
    serial: String,
    /// The `devices` id: every link and form of the page carries it.
    device_id: i64,
    name: String,
    model: String,
    gateway: String,
    /// "gateway" or "converter", and the list that shows it.
    gateway_kind: &'static str,
    gateway_list: &'static str,
    gateway_online: bool,
    time_zone: String,
    from: NaiveDate,
    to: NaiveDate,
    period_label: String,
    chart_title: String,
    /// How the points were aggregated, when they are not quarter-hours.
    chart_note: String,
    ranges: Vec<QuickRange>,
    export: ExportForm,
    power_chart: String,
    /// "No readings between ... and ...; the last reading arrived ...".
    no_data: Option<String>,
    never_reported: bool,
    placement: Placement,
    measured_at: String,
    phase_rows: Vec<(&'static str, Vec<(String, String)>)>,
    other_rows: Vec<(&'static str, &'static str, String)>,
    counters: Vec<CounterRow>,
}

#[derive(Deserialize)]
pub struct MeterParams {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// A quick range (see [`RANGES`]); it wins over `from` and `to`.
    range: Option<String>,
    /// Which of the meters reporting the serial (see [`devices::Resolved`]).
    device: Option<i64>,
}

pub struct ChooserRow {
    pub href: String,
    pub name: String,
    pub site: String,
    pub gateway: String,
    /// "infrared port", "RS485 slot 2", "Modbus unit 6".
    pub port: String,
    pub model: String,
    pub last: String,
    pub id: i64,
}

/// A serial that several meters of the user's sites report: the person chooses.
#[derive(Template)]
#[template(path = "meter_choose.html")]
struct MeterChooser {
    title: String,
    nav: Nav,
    serial: String,
    candidates: Vec<ChooserRow>,
}

fn port_text(port: &str, slot: i16) -> String {
    match port {
        "ir" => "infrared port".to_owned(),
        "rs485" => format!("RS485 slot {slot}"),
        "modbus" => format!("Modbus unit {slot}"),
        other => format!("{other} {slot}"),
    }
}

/// The power graph's points over `[start, end)` and how they were made.
struct Graph {
    points: Vec<PowerPoint>,
    title: &'static str,
    note: String,
}

#[allow(clippy::too_many_arguments)]
async fn graph(
    state: &WebState,
    device: &devices::DeviceView,
    zone_name: &str,
    tz: Tz,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    (from, to): (NaiveDate, NaiveDate),
    import: &str,
) -> Result<Graph, PageError> {
    let days = (end - start).num_hours().div_euclid(24);
    if days <= QUARTER_DAYS {
        let profile = query::profile(
            &state.pool,
            device.site_id,
            device.id,
            &device.serial,
            tz,
            start,
            end,
            Some(import),
        )
        .await
        .or_else(|e| match e {
            // A meter without that register still shows its live values.
            query::QueryError::Invalid(_) => Ok(query::Profile {
                device: device.serial.clone(),
                time_zone: zone_name.to_owned(),
                from: start,
                to: end,
                registers: Vec::new(),
                power: Vec::new(),
            }),
            other => Err(other),
        })
        .map_err(DashboardError::from)?;
        let points = match profile.registers.first() {
            Some(r) => r
                .intervals
                .iter()
                .map(|i| PowerPoint {
                    label: i.start_local.get(11..16).unwrap_or("").to_owned(),
                    power_w: i.energy.map(|wh| wh * 4.0),
                    estimated: i.quality == headend_energy::engine::Quality::Estimated,
                    start: Some(i.start),
                    interval: charts::quarter_text(i.start, tz),
                    ..PowerPoint::default()
                })
                .collect(),
            None => Vec::new(),
        };
        return Ok(Graph {
            points,
            title: "Power, 15-minute means",
            note: String::new(),
        });
    }
    let quality = |estimated: bool, complete: bool| {
        Some(if estimated {
            charts::Quality::Estimated
        } else if complete {
            charts::Quality::Measured
        } else {
            charts::Quality::Incomplete
        })
    };
    if days <= query::MAX_PROFILE_DAYS {
        let hours = devices::hourly_energy(&state.pool, device.id, import, start, end).await?;
        let mut by_hour = hours.into_iter().peekable();
        let first = start.timestamp() - start.timestamp().rem_euclid(3600);
        let mut points = Vec::new();
        let mut t = first;
        while t < end.timestamp() {
            let Some(at) = DateTime::from_timestamp(t, 0) else {
                break;
            };
            let mut found = None;
            while let Some(h) = by_hour.peek() {
                if h.start < at {
                    by_hour.next();
                } else {
                    if h.start == at {
                        found = by_hour.next();
                    }
                    break;
                }
            }
            let lt = at.with_timezone(&tz);
            let next = (at + Duration::hours(1)).with_timezone(&tz);
            points.push(PowerPoint {
                label: lt.format("%-d %b %Hh").to_string(),
                power_w: found
                    .as_ref()
                    .filter(|h| h.quarters > 0)
                    .map(|h| h.energy_milli as f64 * 4.0 / 1000.0 / h.quarters as f64),
                estimated: found.as_ref().is_some_and(|h| h.estimated),
                start: Some(at),
                interval: format!(
                    "{}–{} {}",
                    lt.format("%a %-d %b %Y %H:%M"),
                    next.format("%H:%M"),
                    next.format("%Z")
                ),
                quality: found
                    .as_ref()
                    .and_then(|h| quality(h.estimated, h.quarters >= 4)),
            });
            t += 3600;
        }
        return Ok(Graph {
            points,
            title: "Power, hourly means",
            note: format!(
                "hourly means of the 15-minute energy, so that {} days stay readable",
                (to - from).num_days()
            ),
        });
    }
    let days_found = devices::daily_energy(&state.pool, device.id, import, from, to).await?;
    let mut by_day = days_found.into_iter().peekable();
    let mut points = Vec::new();
    let mut d = from;
    while d < to {
        let mut found = None;
        while let Some(x) = by_day.peek() {
            if x.day < d {
                by_day.next();
            } else {
                if x.day == d {
                    found = by_day.next();
                }
                break;
            }
        }
        let covered = found.as_ref().map_or(0, |x| x.measured + x.estimated);
        points.push(PowerPoint {
            label: d.format("%-d %b").to_string(),
            power_w: found
                .as_ref()
                .filter(|_| covered > 0)
                .map(|x| x.energy_milli as f64 * 4.0 / 1000.0 / f64::from(covered)),
            estimated: found.as_ref().is_some_and(|x| x.estimated > 0),
            start: Some(calendar::period_bounds(tz, d, Period::Day).0),
            interval: charts::period_text(d, Period::Day),
            quality: found
                .as_ref()
                .and_then(|x| quality(x.estimated > 0, covered >= x.quarters)),
        });
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    Ok(Graph {
        points,
        title: "Power, daily means",
        note: format!(
            "daily means of the 15-minute energy, so that {} days stay readable",
            (to - from).num_days()
        ),
    })
}

pub async fn meter_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Query(q): Query<MeterParams>,
) -> PageResult {
    let device = match devices::resolve_meter(&state.pool, &p.scope, &serial, q.device).await? {
        devices::Resolved::Found(d) => *d,
        devices::Resolved::NotFound => return Err(PageError::NotFound),
        devices::Resolved::Ambiguous(candidates) => {
            let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
            let about = devices::candidate_details(&state.pool, &ids).await?;
            let (nav, set) = nav(&p, &headers);
            return render(
                &MeterChooser {
                    title: format!("Which meter {serial}?"),
                    nav,
                    candidates: candidates
                        .into_iter()
                        .map(|c| {
                            let detail = about.iter().find(|d| d.id == c.id);
                            ChooserRow {
                                href: urls::meter(&c.serial, c.id),
                                name: detail
                                    .and_then(|d| d.name.clone())
                                    .unwrap_or_else(|| format!("Meter {}", c.serial)),
                                site: c.site.clone().unwrap_or_else(|| "no site".to_owned()),
                                gateway: c.gateway.clone(),
                                port: port_text(&c.port, c.slot),
                                model: c.model.clone().unwrap_or_default(),
                                last: detail
                                    .and_then(|d| d.last_reading)
                                    .map(|t| {
                                        format!("last reading {} UTC", t.format("%-d %b %Y %H:%M"))
                                    })
                                    .unwrap_or_else(|| "no reading yet".to_owned()),
                                id: c.id,
                            }
                        })
                        .collect(),
                    serial,
                },
                set,
            );
        }
    };
    // From here on the serial is the device's own (the path may have been the placeholder).
    let serial = device.serial.clone();
    let (zone_name, gateway, gateway_kind, gateway_online): (String, String, String, bool) =
        sqlx::query_as(
            "SELECT COALESCE(s.time_zone, g.time_zone), g.serial, g.kind, g.online
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN sites s ON s.id = g.site_id WHERE d.id = $1",
        )
        .bind(device.id)
        .fetch_one(&state.pool)
        .await?;
    let tz = dashboard::zone(&zone_name);
    let now = Utc::now();
    let today = calendar::local_date(now, tz);
    // Without a chosen period: the last 24 hours, up to and including the quarter-hour in
    // progress, like the SG's Power graph page. A chosen period is whole local days.
    let chosen = match q.range.as_deref() {
        None | Some("") => None,
        Some(key) => match RANGES.iter().find(|r| r.0 == key) {
            Some(r) => Some(r.0),
            None => {
                return Err(PageError::Bad(format!(
                    "unknown range {key:?}: choose one of {}",
                    RANGES.map(|r| r.0).join(", ")
                )))
            }
        },
    };
    let quick = chosen.map(|key| range_days(key, today));
    let rolling = match quick {
        Some(days) => days.is_none(),
        None => q.from.is_none() && q.to.is_none(),
    };
    let (from, to) = match quick.flatten() {
        Some(days) => days,
        None => {
            let to = supported_date(q.to)?.unwrap_or_else(|| today.succ_opt().unwrap_or(today));
            let from = supported_date(q.from)?.unwrap_or_else(|| {
                if rolling {
                    calendar::local_date(now - Duration::hours(24), tz)
                } else {
                    to.pred_opt().unwrap_or(to)
                }
            });
            (from, to)
        }
    };
    if to <= from || (to - from).num_days() > MAX_GRAPH_DAYS {
        return Err(PageError::Bad(format!(
            "choose a period of 1 to {MAX_GRAPH_DAYS} days"
        )));
    }
    let (start, end, period_label) = if rolling {
        let end = calendar::floor_quarter(now) + Duration::seconds(calendar::QUARTER_SECS);
        (
            end - Duration::hours(24),
            end,
            "the last 24 hours".to_owned(),
        )
    } else {
        (
            calendar::period_bounds(tz, from, Period::Day).0,
            calendar::period_bounds(tz, to, Period::Day).0,
            days_text(from, to),
        )
    };
    let current = if rolling {
        Some("24h")
    } else {
        chosen.or_else(|| {
            RANGES
                .iter()
                .find(|r| range_days(r.0, today) == Some((from, to)))
                .map(|r| r.0)
        })
    };
    let page_href = urls::meter(&serial, device.id);
    let ranges = RANGES
        .iter()
        .map(|(key, label)| QuickRange {
            label,
            href: format!("{page_href}&range={key}"),
            span: match range_days(key, today) {
                Some((a, b)) => days_text(a, b),
                None => "the last 24 hours".to_owned(),
            },
            current: current == Some(*key),
        })
        .collect();
    let import = device
        .import_register
        .clone()
        .unwrap_or_else(|| crate::profiles::roles::DEFAULT_IMPORT.into());
    let graph = graph(
        &state,
        &device,
        &zone_name,
        tz,
        (start, end),
        (from, to),
        &import,
    )
    .await?;
    let power_chart = charts::power_graph("power-chart", graph.title, &graph.points);

    let latest = devices::latest(&state.pool, device.clone()).await?;
    let values = latest.values.clone();
    let cell = |key: &str| {
        (
            key.to_owned(),
            measurement_text(key, values.get(key).and_then(serde_json::Value::as_f64)),
        )
    };
    let none = || (String::new(), String::new());
    let phase_rows = vec![
        ("Voltage", vec![cell("u1"), cell("u2"), cell("u3"), none()]),
        (
            "Current",
            vec![cell("i1"), cell("i2"), cell("i3"), cell("i_n")],
        ),
        (
            "Active power",
            vec![cell("p1"), cell("p2"), cell("p3"), cell("p")],
        ),
        (
            "Reactive power",
            vec![cell("q1"), cell("q2"), cell("q3"), cell("q")],
        ),
        (
            "Apparent power",
            vec![cell("s1"), cell("s2"), cell("s3"), cell("s")],
        ),
        (
            "Power factor",
            vec![cell("pf1"), cell("pf2"), cell("pf3"), cell("pf")],
        ),
        (
            "Phase angle",
            vec![cell("pa1"), cell("pa2"), cell("pa3"), cell("pa")],
        ),
        (
            "Voltage THD",
            vec![cell("thd_u1"), cell("thd_u2"), cell("thd_u3"), none()],
        ),
        (
            "Current THD",
            vec![cell("thd_i1"), cell("thd_i2"), cell("thd_i3"), none()],
        ),
    ];
    let other_rows = vec![
        ("Frequency", "frequency", cell("frequency").1),
        ("Temperature", "temperature", cell("temperature").1),
        (
            "Active tariff",
            "tariff",
            latest.tariff.map_or("–".into(), |t| format!("T{t}")),
        ),
    ];
    let stored = devices::counters(&state.pool, device.id).await?;
    let registers: Vec<Register<'_>> = stored
        .iter()
        .map(|c| Register {
            name: &c.name,
            index: c.index,
            resettable: c.resettable,
            unit: &c.unit,
            phase: c.phase.as_deref(),
            tariffs: &c.tariffs,
        })
        .collect();
    let meter = Meter::new(
        device.import_register.as_deref(),
        device.export_register.as_deref(),
        device.reactive_register.as_deref(),
        &registers,
    );
    let counters: Vec<CounterRow> = stored
        .iter()
        .zip(&registers)
        .map(|(c, r)| CounterRow {
            name: names::human_name(r, &meter),
            wire: c.name.clone(),
            value: names::value_text(&c.unit, c.value_milli),
            exact: names::exact_text(&c.unit, c.value_milli),
            read: local(c.ts, tz),
        })
        .collect();
    let last_arrival = stored
        .iter()
        .map(|c| c.received_at)
        .chain(latest.received_at)
        .max();
    let never_reported = last_arrival.is_none();
    let no_data =
        (!never_reported && graph.points.iter().all(|p| p.power_w.is_none())).then(|| {
            format!(
                "No readings between {} and {}; the last reading arrived {}.",
                local(start, tz),
                local(end, tz),
                last_arrival.map_or_else(String::new, |t| local(t, tz))
            )
        });
    let admin = p.role == crate::auth::Role::Admin;
    let placement = match (device.site_id, device.measures.as_deref()) {
        (None, _) => Placement::NoSite,
        (Some(site), None) => Placement::NotPlaced {
            admin_href: admin.then(|| format!("/admin/sites/{site}")),
        },
        (Some(_), Some(_)) => Placement::Placed,
    };
    let converter = gateway_kind == "converter";
    let (nav, set) = nav(&p, &headers);
    render(
        &MeterPage {
            title: device.name.clone().unwrap_or_else(|| serial.clone()),
            nav,
            name: device
                .name
                .clone()
                .or(device.description.clone())
                .unwrap_or_else(|| serial.clone()),
            model: device.model.clone().unwrap_or_default(),
            export: ExportForm {
                device: Some(device.id),
                ..ExportForm::new(
                    "meter",
                    serial.clone(),
                    format!("meter {serial}"),
                    (from, to),
                    &zone_name,
                )
            },
            serial,
            device_id: device.id,
            gateway,
            gateway_kind: if converter { "converter" } else { "gateway" },
            gateway_list: if converter {
                "/converters"
            } else {
                "/gateways"
            },
            gateway_online,
            time_zone: zone_name,
            from,
            to,
            period_label,
            chart_title: graph.title.to_owned(),
            chart_note: graph.note,
            ranges,
            power_chart,
            no_data,
            never_reported,
            placement,
            measured_at: latest
                .ts
                .map(|t| measured_text(t, tz))
                .unwrap_or_else(|| "no measurements yet".into()),
            phase_rows,
            other_rows,
            counters,
        },
        set,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_read_in_their_units() {
        let t = |k: &str, v: f64| measurement_text(k, Some(v));
        assert_eq!(t("u1", 229.5), "229.5 V");
        assert_eq!(t("u2", 231.25), "231.3 V");
        assert_eq!(t("u1", 20_500.0), "20.5 kV");
        assert_eq!(t("i1", 5.234), "5.23 A");
        assert_eq!(t("i_n", 0.0), "0.00 A");
        assert_eq!(t("i2", 123.45), "123.5 A");
        assert_eq!(t("p", 1200.0), "1.20 kW");
        assert_eq!(t("p1", 800.0), "0.800 kW");
        assert_eq!(t("p", -2815.0), "-2.82 kW");
        assert_eq!(t("p", 12_345_000.0), "12.3 MW");
        assert_eq!(t("p", 9_999_000.0), "9999 kW");
        assert_eq!(t("q", 450.0), "0.450 kvar");
        assert_eq!(t("s3", 3_000.0), "3.00 kVA");
        assert_eq!(t("pf", 0.95), "0.950");
        assert_eq!(t("pf1", -0.0004), "0.000");
        assert_eq!(t("pa1", 12.34), "12.3°");
        assert_eq!(t("frequency", 50.01), "50.01 Hz");
        assert_eq!(t("temperature", 41.5), "41.5 °C");
        assert_eq!(t("thd_u1", 2.1), "2.1 %");
        assert_eq!(measurement_text("u1", None), "–");
        assert_eq!(measurement_text("u1", Some(f64::NAN)), "–");
    }

    #[test]
    fn rounding_is_half_up_on_the_magnitude() {
        assert_eq!(fixed(0.125, 2), "0.13");
        assert_eq!(fixed(-0.125, 2), "-0.13");
        assert_eq!(fixed(2.5, 0), "3");
        assert_eq!(fixed(0.05, 1), "0.1");
        assert_eq!(fixed(-0.04, 1), "0.0");
        assert_eq!(fixed(1234.5678, 3), "1234.568");
        assert_eq!(sig(0.0), "0.00");
    }

    #[test]
    fn quick_ranges_are_local_days() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let today = d("2026-12-07");
        assert_eq!(range_days("24h", today), None);
        assert_eq!(
            range_days("today", today),
            Some((d("2026-12-07"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("yesterday", today),
            Some((d("2026-12-06"), d("2026-12-07")))
        );
        assert_eq!(
            range_days("7d", today),
            Some((d("2026-12-01"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("30d", today),
            Some((d("2026-11-08"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("month", today),
            Some((d("2026-12-01"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("year", today),
            Some((d("2026-01-01"), d("2026-12-08")))
        );
        assert_eq!(days_text(d("2026-12-07"), d("2026-12-08")), "7 Dec 2026");
        assert_eq!(
            days_text(d("2026-12-01"), d("2026-12-08")),
            "1 Dec 2026 – 7 Dec 2026"
        );
    }
}
