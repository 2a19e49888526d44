//! Device and counter ids: from the cache, else upserted (the attributes a message gives win).

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::IdCache;
use crate::ingest::normalize::{CounterDef, DeviceAttrs, DeviceKey, Rows};

pub(super) async fn resolve_devices(
    tx: &mut Transaction<'_, Postgres>,
    cache: &IdCache,
    rows: &Rows,
) -> Result<HashMap<DeviceKey, i64>, sqlx::Error> {
    let mut ids = HashMap::with_capacity(rows.devices.len());
    let mut missing: Vec<(&DeviceKey, &DeviceAttrs)> = Vec::new();
    for (key, attrs) in &rows.devices {
        match cache.device(key, attrs) {
            Some(id) => {
                ids.insert(key.clone(), id);
            }
            None => missing.push((key, attrs)),
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    // Deterministic order keeps concurrent writers from deadlocking on the same devices.
    missing.sort_by_key(|(k, _)| (k.gateway_id, k.kind.as_str(), k.port, k.slot));
    let gateway: Vec<i64> = missing.iter().map(|(k, _)| k.gateway_id).collect();
    let kind: Vec<&str> = missing.iter().map(|(k, _)| k.kind.as_str()).collect();
    let port: Vec<&str> = missing.iter().map(|(k, _)| k.port).collect();
    let slot: Vec<i16> = missing.iter().map(|(k, _)| k.slot).collect();
    let serial: Vec<&str> = missing.iter().map(|(_, a)| a.serial.as_str()).collect();
    let addr: Vec<Option<i32>> = missing.iter().map(|(_, a)| a.modbus_addr).collect();
    let phases: Vec<Option<i16>> = missing.iter().map(|(_, a)| a.phases).collect();
    let text = |f: fn(&DeviceAttrs) -> &Option<String>| -> Vec<Option<&str>> {
        missing.iter().map(|(_, a)| f(a).as_deref()).collect()
    };
    let description = text(|a| &a.description);
    let location = text(|a| &a.location);
    let sg_description = text(|a| &a.sg_description);
    let model = text(|a| &a.model);
    let found: Vec<(i64, i64, String, String, i16)> = sqlx::query_as(
        "INSERT INTO devices AS d (gateway_id, kind, port, slot, serial, model, modbus_addr, phases,
                                   description, location, sg_description)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int2[], $5::text[],
                              $6::text[], $7::int4[], $8::int2[], $9::text[], $10::text[], $11::text[])
         ON CONFLICT (gateway_id, kind, port, slot) DO UPDATE SET
             serial = EXCLUDED.serial,
             model = COALESCE(EXCLUDED.model, d.model),
             modbus_addr = COALESCE(EXCLUDED.modbus_addr, d.modbus_addr),
             phases = COALESCE(EXCLUDED.phases, d.phases),
             description = COALESCE(EXCLUDED.description, d.description),
             location = COALESCE(EXCLUDED.location, d.location),
             sg_description = COALESCE(EXCLUDED.sg_description, d.sg_description),
             updated_at = now()
         RETURNING id, gateway_id, kind, port, slot",
    )
    .bind(&gateway)
    .bind(&kind)
    .bind(&port)
    .bind(&slot)
    .bind(&serial)
    .bind(&model)
    .bind(&addr)
    .bind(&phases)
    .bind(&description)
    .bind(&location)
    .bind(&sg_description)
    .fetch_all(&mut **tx)
    .await?;
    for (id, gateway_id, kind, port, slot) in found {
        if let Some((key, _)) = missing.iter().find(|(k, _)| {
            k.gateway_id == gateway_id
                && k.kind.as_str() == kind
                && k.port == port
                && k.slot == slot
        }) {
            ids.insert((*key).clone(), id);
        }
    }
    Ok(ids)
}

pub(super) async fn resolve_counters(
    tx: &mut Transaction<'_, Postgres>,
    cache: &IdCache,
    rows: &Rows,
    devices: &HashMap<DeviceKey, i64>,
) -> Result<HashMap<(i64, String), i64>, sqlx::Error> {
    let mut ids = HashMap::with_capacity(rows.counter_defs.len());
    let mut missing: Vec<(i64, &CounterDef)> = Vec::new();
    for ((key, name), def) in &rows.counter_defs {
        let Some(&device_id) = devices.get(key) else {
            continue;
        };
        match cache.counter(device_id, def) {
            Some(id) => {
                ids.insert((device_id, name.clone()), id);
            }
            None => missing.push((device_id, def)),
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    missing.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let device: Vec<i64> = missing.iter().map(|(d, _)| *d).collect();
    let name: Vec<&str> = missing.iter().map(|(_, c)| c.name.as_str()).collect();
    let idx: Vec<i16> = missing.iter().map(|(_, c)| c.idx).collect();
    let resettable: Vec<bool> = missing.iter().map(|(_, c)| c.resettable).collect();
    let unit: Vec<&str> = missing.iter().map(|(_, c)| c.unit).collect();
    let phase: Vec<Option<&str>> = missing.iter().map(|(_, c)| c.phase.as_deref()).collect();
    // Tariff sets travel as text ("1 2 3 4") because UNNEST cannot carry an array of arrays.
    let tariffs: Vec<String> = missing
        .iter()
        .map(|(_, c)| {
            c.tariffs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let found: Vec<(i64, i64, String)> = sqlx::query_as(
        "INSERT INTO counters AS c (device_id, name, idx, resettable, unit, phase, tariffs)
         SELECT u.d, u.n, u.i, u.r, u.un, u.ph,
                COALESCE(string_to_array(NULLIF(u.t, ''), ' ')::int2[], '{}')
         FROM UNNEST($1::int8[], $2::text[], $3::int2[], $4::bool[], $5::text[], $6::text[], $7::text[])
              AS u(d, n, i, r, un, ph, t)
         ON CONFLICT (device_id, name) DO UPDATE SET
             idx = EXCLUDED.idx, resettable = EXCLUDED.resettable, unit = EXCLUDED.unit,
             phase = EXCLUDED.phase, tariffs = EXCLUDED.tariffs
         RETURNING id, device_id, name",
    )
    .bind(&device)
    .bind(&name)
    .bind(&idx)
    .bind(&resettable)
    .bind(&unit)
    .bind(&phase)
    .bind(&tariffs)
    .fetch_all(&mut **tx)
    .await?;
    for (id, device_id, name) in found {
        ids.insert((device_id, name), id);
    }
    Ok(ids)
}
