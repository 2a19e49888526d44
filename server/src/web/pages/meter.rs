//! A meter: counters, measurements, live values and its power graph.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{NaiveDate, Utc};
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::{nav, render, supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::dashboard::charts::{self, PowerPoint};
use crate::dashboard::{self, DashboardError};
use crate::devices;
use crate::profiles::query::{self};
use crate::web::urls::filters;
use crate::web::WebState;

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
    time_zone: String,
    from: NaiveDate,
    to: NaiveDate,
    period_label: String,
    export: ExportForm,
    power_chart: String,
    measured_at: String,
    phase_rows: Vec<(&'static str, Vec<(String, String)>)>,
    other_rows: Vec<(&'static str, &'static str, String)>,
    counters: Vec<(String, String, String, String)>,
}

#[derive(Deserialize)]
pub struct MeterParams {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// Which of the meters reporting the serial (see [`devices::Resolved`]).
    device: Option<i64>,
}

/// A serial that several meters of the user's sites report: the person chooses.
#[derive(Template)]
#[template(path = "meter_choose.html")]
struct MeterChooser {
    title: String,
    nav: Nav,
    serial: String,
    /// Each candidate with the link to its page.
    candidates: Vec<(String, devices::Candidate)>,
}

fn show(v: Option<&serde_json::Value>) -> String {
    match v.and_then(serde_json::Value::as_f64) {
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "–".into(),
    }
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
            let (nav, set) = nav(&p, &headers);
            return render(
                &MeterChooser {
                    title: format!("Which meter {serial}?"),
                    nav,
                    candidates: candidates
                        .into_iter()
                        .map(|c| (crate::web::urls::meter(&c.serial, c.id), c))
                        .collect(),
                    serial,
                },
                set,
            );
        }
    };
    // From here on the serial is the device's own (the path may have been the placeholder).
    let serial = device.serial.clone();
    let (zone_name, gateway): (String, String) = sqlx::query_as(
        "SELECT COALESCE(s.time_zone, g.time_zone), g.serial FROM devices d JOIN gateways g ON g.id = d.gateway_id
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
    let rolling = q.from.is_none() && q.to.is_none();
    let to = supported_date(q.to)?.unwrap_or_else(|| today.succ_opt().unwrap_or(today));
    let from = supported_date(q.from)?.unwrap_or_else(|| {
        if rolling {
            calendar::local_date(now - chrono::Duration::hours(24), tz)
        } else {
            to.pred_opt().unwrap_or(to)
        }
    });
    if to <= from || (to - from).num_days() > query::MAX_PROFILE_DAYS {
        return Err(PageError::Bad(format!(
            "choose a period of 1 to {} days",
            query::MAX_PROFILE_DAYS
        )));
    }
    let (start, end, period_label) = if rolling {
        let quarter = now.timestamp() - now.timestamp().rem_euclid(900);
        let end = chrono::DateTime::from_timestamp(quarter + 900, 0).unwrap_or(now);
        (
            end - chrono::Duration::hours(24),
            end,
            "the last 24 hours".to_owned(),
        )
    } else {
        (
            calendar::period_bounds(tz, from, Period::Day).0,
            calendar::period_bounds(tz, to, Period::Day).0,
            format!("{from} to {to}"),
        )
    };
    let import = device
        .import_register
        .clone()
        .unwrap_or_else(|| crate::profiles::roles::DEFAULT_IMPORT.into());
    let profile = query::profile(
        &state.pool,
        device.site_id,
        device.id,
        &device.serial,
        tz,
        start,
        end,
        Some(&import),
    )
    .await
    .or_else(|e| match e {
        // A meter without that register still shows its live values.
        query::QueryError::Invalid(_) => Ok(query::Profile {
            device: device.serial.clone(),
            time_zone: zone_name.clone(),
            from: start,
            to: end,
            registers: Vec::new(),
            power: Vec::new(),
        }),
        other => Err(other),
    })
    .map_err(DashboardError::from)?;
    let points: Vec<PowerPoint> = match profile.registers.first() {
        Some(r) => r
            .intervals
            .iter()
            .map(|i| PowerPoint {
                label: i.start_local.get(11..16).unwrap_or("").to_owned(),
                power_w: i.energy.map(|wh| wh * 4.0),
                estimated: i.quality == headend_energy::engine::Quality::Estimated,
            })
            .collect(),
        None => Vec::new(),
    };
    let power_chart = charts::power_graph("power-chart", "Power", &points);

    let latest = devices::latest(&state.pool, device.clone()).await?;
    let values = latest.values.clone();
    let cell = |key: &str| (key.to_owned(), show(values.get(key)));
    let phase_rows = vec![
        (
            "U (V)",
            vec![
                cell("u1"),
                cell("u2"),
                cell("u3"),
                (String::new(), String::new()),
            ],
        ),
        (
            "I (A)",
            vec![cell("i1"), cell("i2"), cell("i3"), cell("i_n")],
        ),
        ("P (W)", vec![cell("p1"), cell("p2"), cell("p3"), cell("p")]),
        (
            "Q (var)",
            vec![cell("q1"), cell("q2"), cell("q3"), cell("q")],
        ),
        (
            "S (VA)",
            vec![cell("s1"), cell("s2"), cell("s3"), cell("s")],
        ),
        (
            "PF",
            vec![cell("pf1"), cell("pf2"), cell("pf3"), cell("pf")],
        ),
        (
            "Angle (°)",
            vec![cell("pa1"), cell("pa2"), cell("pa3"), cell("pa")],
        ),
        (
            "THD-U (%)",
            vec![
                cell("thd_u1"),
                cell("thd_u2"),
                cell("thd_u3"),
                (String::new(), String::new()),
            ],
        ),
        (
            "THD-I (%)",
            vec![
                cell("thd_i1"),
                cell("thd_i2"),
                cell("thd_i3"),
                (String::new(), String::new()),
            ],
        ),
    ];
    let other_rows = vec![
        ("Frequency (Hz)", "frequency", show(values.get("frequency"))),
        (
            "Temperature (°C)",
            "temperature",
            show(values.get("temperature")),
        ),
        (
            "Active tariff",
            "tariff",
            latest.tariff.map_or("–".into(), |t| format!("T{t}")),
        ),
    ];
    let counters = devices::counters(&state.pool, device.id)
        .await?
        .iter()
        .map(|c| {
            let v = serde_json::to_value(c).unwrap_or_default();
            (
                v["name"].as_str().unwrap_or("").to_owned(),
                format!(
                    "{} {}",
                    v["value"].as_str().unwrap_or(""),
                    v["unit"].as_str().unwrap_or("")
                ),
                v["tariffs"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .map(|x| format!("T{x}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
                v["ts"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
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
            time_zone: zone_name,
            from,
            to,
            period_label,
            power_chart,
            measured_at: latest
                .ts
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "no measurements yet".into()),
            phase_rows,
            other_rows,
            counters,
        },
        set,
    )
}
