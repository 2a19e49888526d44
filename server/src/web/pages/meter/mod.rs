//! A meter: counters, measurements, live values and its power graph.
//!
//! This module owns the handler and the pages (the meter page, and the chooser when several
//! meters report the serial). Parts: `text` (numbers and times as people read them), `range`
//! (the period shown: quick ranges, and the power graph's points aggregated to suit its length).

mod range;
mod text;

pub use range::MAX_GRAPH_DAYS;
pub use text::{measured_text, measurement_text};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use chrono::{Duration, NaiveDate, Utc};
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use self::range::{days_text, graph, range_days, RANGES};
use self::text::local;
use super::{supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::dashboard::charts;
use crate::dashboard::counters::{self as names, Meter, Register};
use crate::fleet::devices;
use crate::web::urls::{self, filters};
use crate::web::WebState;
use crate::zone::TimeZone;

pub fn routes() -> Router<WebState> {
    Router::new().route("/meters/{serial}", get(meter_page))
}

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
    time_zone: TimeZone,
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
struct MeterParams {
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

async fn meter_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(serial): Path<String>,
    Query(q): Query<MeterParams>,
) -> PageResult {
    let device =
        match devices::resolve_meter(&state.read_pool, &user.scope, &serial, q.device).await? {
            devices::Resolved::Found(d) => *d,
            devices::Resolved::NotFound => return Err(PageError::NotFound),
            devices::Resolved::Ambiguous(candidates) => {
                let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
                let about = devices::candidate_details(&state.read_pool, &ids).await?;
                return user.render(&MeterChooser {
                    title: format!("Which meter {serial}?"),
                    nav: user.nav(),
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
                });
            }
        };
    // From here on the serial is the device's own (the path may have been the placeholder).
    let serial = device.serial.clone();
    let devices::DeviceGateway {
        time_zone: zone,
        serial: gateway,
        kind: gateway_kind,
        online: gateway_online,
    } = devices::gateway_of(&state.read_pool, device.id).await?;
    let tz = zone.tz();
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
        .unwrap_or_else(|| crate::accounting::roles::DEFAULT_IMPORT.into());
    let graph = graph(&state, &device, tz, (start, end), (from, to), &import).await?;
    let power_chart = charts::power_graph("power-chart", graph.title, &graph.points);

    let latest = devices::latest(&state.read_pool, device.clone()).await?;
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
    let stored = devices::counters(&state.read_pool, device.id).await?;
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
    let admin = user.is_admin();
    let placement = match (device.site_id, device.measures.as_deref()) {
        (None, _) => Placement::NoSite,
        (Some(site), None) => Placement::NotPlaced {
            admin_href: admin.then(|| format!("/admin/sites/{site}")),
        },
        (Some(_), Some(_)) => Placement::Placed,
    };
    let converter = gateway_kind == "converter";
    user.render(&MeterPage {
        title: device.name.clone().unwrap_or_else(|| serial.clone()),
        nav: user.nav(),
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
                zone,
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
        time_zone: zone,
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
    })
}
