//! Quarter-hour rows: every quarter-hour of the export for every register, missing ones
//! included (empty value), with the band and cost of the contract in force.

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use headend_energy::calendar;
use headend_energy::engine::QUARTER_MS;
use sqlx::PgConnection;

use super::{fixed_fields, Sink, Stop};
use crate::accounting::roles::Role;
use crate::export::csv::offset_at;
use crate::export::{Counter, Export};

/// What every register shares about one quarter-hour of the export: the local offset at its
/// start, and the contract and scheduled band in force. Computed once per export (8 bytes a
/// quarter-hour: 280 KiB for a year), not once per row.
#[derive(Clone, Copy)]
struct Slot {
    offset: i32,
    /// Index into the export's contracts; `u16::MAX`: none in force.
    contract: u16,
    band: u16,
}

struct Grid {
    from_ms: i64,
    /// One more than the quarter-hours: the last one's end.
    slots: Vec<Slot>,
}

impl Grid {
    fn new(export: &Export) -> Self {
        let from_ms = export.from.timestamp_millis();
        let quarters = (export.to.timestamp_millis() - from_ms) / QUARTER_MS;
        let slots = (0..=quarters)
            .map(|q| {
                let start = DateTime::from_timestamp_millis(from_ms + q * QUARTER_MS)
                    .unwrap_or(export.from);
                let day = calendar::local_date(start, export.tz);
                let contract = export.contracts.iter().rposition(|(f, _)| *f <= day);
                Slot {
                    offset: offset_at(export.tz, start),
                    contract: contract
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(u16::MAX),
                    band: contract
                        .map(|c| {
                            export.contracts[c]
                                .1
                                .band_at_local(calendar::local_datetime(start, export.tz))
                        })
                        .and_then(|b| u16::try_from(b).ok())
                        .unwrap_or(0),
                }
            })
            .collect();
        Self { from_ms, slots }
    }

    fn quarters(&self) -> usize {
        self.slots.len() - 1
    }

    fn start(&self, q: usize) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.from_ms + q as i64 * QUARTER_MS).unwrap_or_default()
    }

    fn index(&self, start: DateTime<Utc>) -> usize {
        usize::try_from((start.timestamp_millis() - self.from_ms) / QUARTER_MS).unwrap_or(0)
    }
}

const INTERVALS_SQL: &str = "SELECT start, energy_milli, quality, NULL::int2 FROM energy_intervals
     WHERE counter_id = $1 AND start >= $2 AND start < $3 ORDER BY start";

/// With the meter's own tariff (the last one it reported in the quarter-hour), for contracts
/// that pick the band by it, as the daily rollup does.
const INTERVALS_TARIFF_SQL: &str = "SELECT e.start, e.energy_milli, e.quality, t.tariff
     FROM energy_intervals e
     LEFT JOIN LATERAL (
         SELECT m.tariff FROM measurements m
         WHERE m.device_id = $4 AND m.ts >= e.start AND m.ts < e.start + interval '15 minutes'
           AND m.tariff IS NOT NULL
         ORDER BY m.ts DESC LIMIT 1) t ON true
     WHERE e.counter_id = $1 AND e.start >= $2 AND e.start < $3 ORDER BY e.start";

pub(super) async fn intervals(
    export: &Export,
    conn: &mut PgConnection,
    sink: &mut Sink,
) -> Result<(), Stop> {
    let grid = Grid::new(export);
    let by_tariff = export
        .contracts
        .iter()
        .any(|(_, c)| c.meter_tariff_bands.is_some());
    for counter in &export.counters {
        let meter = &export.meters[counter.meter];
        let fixed = fixed_fields(export, meter, Some(&counter.name));
        let priced = matches!(counter.role, Role::Import | Role::Export);
        let mut query =
            sqlx::query_as::<_, (DateTime<Utc>, i64, i16, Option<i16>)>(if priced && by_tariff {
                INTERVALS_TARIFF_SQL
            } else {
                INTERVALS_SQL
            })
            .bind(counter.id)
            .bind(export.from)
            .bind(export.to);
        if priced && by_tariff {
            query = query.bind(meter.id);
        }
        let mut rows = query.fetch(&mut *conn);
        let mut next = 0;
        while let Some((start, energy, quality, tariff)) = rows.try_next().await? {
            let q = grid.index(start);
            while next < q {
                if interval_row(export, &grid, sink, counter, &fixed, next, None) {
                    sink.flush().await?;
                }
                next += 1;
            }
            let found = Some((energy, quality, tariff));
            if interval_row(export, &grid, sink, counter, &fixed, q, found) {
                sink.flush().await?;
            }
            next = q + 1;
        }
        drop(rows);
        while next < grid.quarters() {
            if interval_row(export, &grid, sink, counter, &fixed, next, None) {
                sink.flush().await?;
            }
            next += 1;
        }
    }
    Ok(())
}

/// Writes quarter-hour `q` of a register; `found` is the stored interval (energy, quality,
/// meter tariff), `None` when missing. True when a chunk is full.
fn interval_row(
    export: &Export,
    grid: &Grid,
    sink: &mut Sink,
    counter: &Counter,
    fixed: &[u8],
    q: usize,
    found: Option<(i64, i16, Option<i16>)>,
) -> bool {
    let (slot, next) = (grid.slots[q], grid.slots[q + 1]);
    let start = grid.start(q);
    let csv = &mut sink.csv;
    csv.local(start, slot.offset);
    csv.local(start + Duration::milliseconds(QUARTER_MS), next.offset);
    csv.utc(start);
    csv.fields(fixed);
    match found {
        Some((energy, ..)) => csv.decimal(i128::from(energy), 3),
        None => csv.empty(),
    }
    csv.plain(&counter.unit);
    csv.plain(match found.map(|f| f.1) {
        None => "missing",
        Some(0) => "measured",
        Some(_) => "estimated",
    });
    let contract = export
        .contracts
        .get(usize::from(slot.contract))
        .map(|(_, c)| c)
        .filter(|_| matches!(counter.role, Role::Import | Role::Export));
    match contract {
        Some(contract) => {
            // The meter's tariff wins when the contract maps it (Contract::band_at).
            let band = found
                .and_then(|f| f.2)
                .and_then(|t| u8::try_from(t).ok())
                .and_then(|t| contract.meter_tariff_bands.as_ref()?.get(&t))
                .and_then(|name| contract.band_index(name))
                .unwrap_or(usize::from(slot.band));
            csv.text(&contract.bands[band].name);
            match found {
                Some((energy, ..)) => {
                    let cost = match counter.role {
                        Role::Export => contract.export_credit(band, energy),
                        _ => contract.energy_cost(band, energy),
                    };
                    csv.decimal(cost.0, 12);
                }
                None => csv.empty(),
            }
            csv.plain(&contract.currency);
        }
        None => {
            csv.empty();
            csv.empty();
            csv.empty();
        }
    }
    sink.end_row()
}
