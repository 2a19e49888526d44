//! `measurements`: one wide row per message, and the conflicts of a replay with other values.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::conflicts::{at, device_name, Conflict};
use crate::ingest::normalize::{DeviceKey, MeasurementRow, Rows, MEASUREMENT_COLUMNS};

pub(super) async fn insert_measurements(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
    devices: &HashMap<DeviceKey, i64>,
    conflicts: &mut Vec<Conflict>,
) -> Result<u64, sqlx::Error> {
    let present: Vec<_> = rows
        .measurements
        .iter()
        .filter_map(|m| devices.get(&m.device).map(|id| (*id, m)))
        .collect();
    if present.is_empty() {
        return Ok(0);
    }
    let value_columns = &MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1];
    let sql = measurement_sql(value_columns);
    let mut query = sqlx::query(&sql)
        .bind(present.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
        .bind(column(&present, |m| m.ts))
        .bind(column(&present, |m| m.received_at))
        .bind(column(&present, |m| m.flags))
        .bind(column(&present, |m| m.tariff));
    for i in 0..value_columns.len() {
        query = query.bind(column(&present, |m| m.values[i]));
    }
    let inserted = query.execute(&mut **tx).await?.rows_affected();
    if inserted < present.len() as u64 {
        measurement_conflicts(tx, &present, value_columns, conflicts).await?;
    }
    Ok(inserted)
}

/// The rows of `present` whose (device, ts) holds other values than theirs.
async fn measurement_conflicts(
    tx: &mut Transaction<'_, Postgres>,
    present: &[(i64, &MeasurementRow)],
    value_columns: &[&str],
    conflicts: &mut Vec<Conflict>,
) -> Result<(), sqlx::Error> {
    let stored: Vec<String> = value_columns.iter().map(|c| format!("m.{c}")).collect();
    let names: Vec<String> = (0..value_columns.len()).map(|i| format!("c{i}")).collect();
    let given: Vec<String> = names.iter().map(|n| format!("u.{n}")).collect();
    let params: Vec<String> = (0..value_columns.len())
        .map(|i| format!("${}::float4[]", i + 4))
        .collect();
    let sql = format!(
        "SELECT u.ord, m.tariff, ARRAY[{stored}]::float4[]
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::int2[], {params})
              WITH ORDINALITY AS u(d, t, tariff, {names}, ord)
         JOIN measurements m ON m.device_id = u.d AND m.ts = u.t
         WHERE (m.tariff, {stored}) IS DISTINCT FROM (u.tariff, {given})",
        stored = stored.join(", "),
        given = given.join(", "),
        names = names.join(", "),
        params = params.join(", "),
    );
    let mut query = sqlx::query_as::<_, (i64, Option<i16>, Vec<Option<f32>>)>(&sql)
        .bind(present.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
        .bind(column(present, |m| m.ts))
        .bind(column(present, |m| m.tariff));
    for i in 0..value_columns.len() {
        query = query.bind(column(present, |m| m.values[i]));
    }
    let show = |v: Option<f32>| v.map_or_else(|| "absent".to_owned(), |v| v.to_string());
    for (ord, tariff, values) in query.fetch_all(&mut **tx).await? {
        let Some((_, m)) = usize::try_from(ord - 1).ok().and_then(|i| present.get(i)) else {
            continue;
        };
        let mut differ: Vec<String> = value_columns
            .iter()
            .zip(values.iter().zip(&m.values))
            .filter(|(_, (old, new))| old != new)
            .map(|(column, (old, new))| {
                format!("{column} stored {}, here {}", show(*old), show(*new))
            })
            .collect();
        if tariff != m.tariff {
            differ.push(format!("tariff stored {tariff:?}, here {:?}", m.tariff));
        }
        conflicts.push(Conflict {
            seq: m.seq,
            gateway_id: m.device.gateway_id,
            measurement: Some((m.seq, m.device.clone(), m.ts)),
            what: format!(
                "the measurements of {} at {} are already stored with other values ({})",
                device_name(&m.device),
                at(m.ts),
                differ.join(", ")
            ),
        });
    }
    Ok(())
}

/// One field of every row of `present`, as an UNNEST parameter.
fn column<T>(present: &[(i64, &MeasurementRow)], field: impl Fn(&MeasurementRow) -> T) -> Vec<T> {
    present.iter().map(|(_, m)| field(m)).collect()
}

fn measurement_sql(value_columns: &[&str]) -> String {
    let columns = value_columns.join(", ");
    let params: Vec<String> = (0..value_columns.len())
        .map(|i| format!("${}::float4[]", i + 6))
        .collect();
    format!(
        "INSERT INTO measurements (device_id, ts, received_at, flags, tariff, {columns})
         SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::int2[],
                              $5::int2[], {})
         ON CONFLICT (device_id, ts) DO NOTHING",
        params.join(", ")
    )
}
