//! Who may push XML: a gateway's source addresses and its meters (by `controlUnit`), each
//! meter pinned to the device its documents are stored on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::auth::Scope;

/// The device a meter's documents are stored on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub gateway_id: i64,
    pub gateway_serial: String,
    /// `ir`, `rs485` (a meter also seen over MQTT) or `xml`.
    pub port: String,
    pub slot: i16,
}

impl Target {
    /// The journal record's topic: `xml/<port>/<slot>`.
    pub fn topic(&self) -> String {
        format!("xml/{}/{}", self.port, self.slot)
    }
}

/// Why no target was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Unknown,
    Ambiguous,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("gateway not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Most sources and meters one gateway may list.
pub const MAX_ENTRIES: usize = 256;

/// Gateways (id, serial) whose registered sources contain `ip`.
pub async fn gateways_for_source(
    pool: &PgPool,
    ip: IpAddr,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    sqlx::query_as(
        "SELECT DISTINCT g.id, g.serial FROM gateway_xml_sources s
         JOIN gateways g ON g.id = s.gateway_id
         WHERE s.source >>= $1::inet ORDER BY g.id",
    )
    .bind(ip.to_string())
    .fetch_all(pool)
    .await
}

/// The gateway of this serial, for a sender that authenticated as it.
pub async fn gateway_by_serial(
    pool: &PgPool,
    serial: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, serial FROM gateways WHERE serial = $1")
        .bind(serial)
        .fetch_optional(pool)
        .await
}

/// Where the documents of meter `serial` go, among `gateways`: its registration, else a meter
/// of one of those gateways with that serial already known from MQTT (pinned now, so later
/// documents keep going there).
pub async fn identify(
    pool: &PgPool,
    gateways: &[i64],
    serial: &str,
) -> Result<Result<Target, Miss>, sqlx::Error> {
    let registered: Vec<(i64, String, String, i16)> = sqlx::query_as(
        "SELECT m.gateway_id, g.serial, m.port, m.slot FROM xml_meters m
         JOIN gateways g ON g.id = m.gateway_id
         WHERE m.gateway_id = ANY($1) AND m.serial = $2",
    )
    .bind(gateways)
    .bind(serial)
    .fetch_all(pool)
    .await?;
    match registered.as_slice() {
        [(gateway_id, gateway_serial, port, slot)] => {
            return Ok(Ok(Target {
                gateway_id: *gateway_id,
                gateway_serial: gateway_serial.clone(),
                port: port.clone(),
                slot: *slot,
            }))
        }
        [] => {}
        _ => return Ok(Err(Miss::Ambiguous)),
    }
    let learned: Vec<(i64, String, String, i16)> = sqlx::query_as(
        "SELECT d.gateway_id, g.serial, d.port, d.slot FROM devices d
         JOIN gateways g ON g.id = d.gateway_id
         WHERE d.gateway_id = ANY($1) AND d.kind = 'meter' AND d.serial = $2
           AND d.port IN ('ir', 'rs485')",
    )
    .bind(gateways)
    .bind(serial)
    .fetch_all(pool)
    .await?;
    let [(gateway_id, gateway_serial, port, slot)] = learned.as_slice() else {
        return Ok(Err(if learned.is_empty() {
            Miss::Unknown
        } else {
            Miss::Ambiguous
        }));
    };
    // Another connection may pin the same meter at the same time: keep whichever came first.
    let pinned: (String, i16) = sqlx::query_as(
        "WITH ins AS (
             INSERT INTO xml_meters (gateway_id, serial, port, slot) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING RETURNING port, slot)
         SELECT port, slot FROM ins
         UNION ALL SELECT port, slot FROM xml_meters WHERE gateway_id = $1 AND serial = $2
         LIMIT 1",
    )
    .bind(gateway_id)
    .bind(serial)
    .bind(port)
    .bind(slot)
    .fetch_one(pool)
    .await?;
    Ok(Ok(Target {
        gateway_id: *gateway_id,
        gateway_serial: gateway_serial.clone(),
        port: pinned.0,
        slot: pinned.1,
    }))
}

/// A gateway's XML push identity, as the API shows and takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlPushSettings {
    /// Source addresses or networks (`198.51.100.7`, `10.1.0.0/24`, `2001:db8::/64`), at most
    /// 256.
    pub sources: Vec<String>,
    /// Meter serials (`controlUnit`), at most 256.
    pub meters: Vec<String>,
}

/// A meter the gateway may push for, with the device slot it is stored on.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = XmlPushMeter)]
pub struct MeterView {
    pub serial: String,
    /// ir, rs485 or xml.
    pub port: String,
    pub slot: i16,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = XmlPushSettingsView)]
pub struct SettingsView {
    /// Networks, prefix length included.
    pub sources: Vec<String>,
    pub meters: Vec<MeterView>,
}

/// The gateway id, if it exists within `scope`.
async fn gateway_id(pool: &PgPool, scope: &Scope, serial: &str) -> Result<i64, RegistryError> {
    sqlx::query_scalar(
        "SELECT id FROM gateways WHERE serial = $2 AND ($1::int8[] IS NULL OR site_id = ANY($1))",
    )
    .bind(scope.site_ids())
    .bind(serial)
    .fetch_optional(pool)
    .await?
    .ok_or(RegistryError::NotFound)
}

pub async fn get(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
) -> Result<SettingsView, RegistryError> {
    let id = gateway_id(pool, scope, serial).await?;
    view(pool, id).await
}

async fn view(pool: &PgPool, id: i64) -> Result<SettingsView, RegistryError> {
    let sources: Vec<String> = sqlx::query_scalar(
        "SELECT source::text FROM gateway_xml_sources WHERE gateway_id = $1 ORDER BY source",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let meters: Vec<MeterView> = sqlx::query_as(
        "SELECT serial, port, slot FROM xml_meters WHERE gateway_id = $1 ORDER BY serial",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(SettingsView { sources, meters })
}

/// Replaces a gateway's sources and meters. A meter kept keeps its device; a new one is
/// pinned to the gateway's meter with that serial if there is one, else to the first free
/// `xml` slot.
pub async fn set(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
    settings: &XmlPushSettings,
) -> Result<SettingsView, RegistryError> {
    if settings.sources.len() > MAX_ENTRIES || settings.meters.len() > MAX_ENTRIES {
        return Err(RegistryError::Invalid(format!(
            "at most {MAX_ENTRIES} sources and {MAX_ENTRIES} meters"
        )));
    }
    let mut sources = Vec::with_capacity(settings.sources.len());
    for source in &settings.sources {
        sources.push(parse_source(source)?);
    }
    for meter in &settings.meters {
        sg_wire::message::validate_serial(meter).map_err(|_| {
            RegistryError::Invalid(format!(
                "meter serial {:?}: {}",
                meter.chars().take(40).collect::<String>(),
                sg_wire::message::SERIAL_RULE
            ))
        })?;
    }
    let id = gateway_id(pool, scope, serial).await?;
    let mut tx = pool.begin().await?;
    // Serialises concurrent edits of one gateway's slots.
    sqlx::query("SELECT 1 FROM gateways WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM gateway_xml_sources WHERE gateway_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO gateway_xml_sources (gateway_id, source)
         SELECT $1, s FROM UNNEST($2::cidr[]) s ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(&sources)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM xml_meters WHERE gateway_id = $1 AND NOT (serial = ANY($2))")
        .bind(id)
        .bind(&settings.meters)
        .execute(&mut *tx)
        .await?;
    for meter in &settings.meters {
        // A meter already known on this gateway (from MQTT, or an earlier XML registration)
        // keeps its device; otherwise the lowest slot no device or registration uses.
        sqlx::query(
            "INSERT INTO xml_meters (gateway_id, serial, port, slot)
             SELECT $1, $2, t.port, t.slot FROM (
                 (SELECT d.port, d.slot FROM devices d
                  WHERE d.gateway_id = $1 AND d.kind = 'meter' AND d.serial = $2
                  ORDER BY (d.port = 'xml') DESC, d.id LIMIT 1)
                 UNION ALL
                 (SELECT 'xml', n::int2 FROM generate_series(0, 255) n
                  WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.gateway_id = $1
                                    AND d.kind = 'meter' AND d.port = 'xml' AND d.slot = n)
                    AND NOT EXISTS (SELECT 1 FROM xml_meters m WHERE m.gateway_id = $1
                                    AND m.port = 'xml' AND m.slot = n)
                  ORDER BY n LIMIT 1)
                 LIMIT 1) t
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(meter)
        .execute(&mut *tx)
        .await?;
    }
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM xml_meters WHERE gateway_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let wanted = settings
        .meters
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if usize::try_from(registered).unwrap_or(0) != wanted {
        return Err(RegistryError::Invalid(
            "no free `xml` device slot (0..=255) left on this gateway".into(),
        ));
    }
    tx.commit().await?;
    view(pool, id).await
}

/// `198.51.100.7` or `10.1.0.0/24`, normalised to the network (host bits must be zero).
fn parse_source(text: &str) -> Result<String, RegistryError> {
    let invalid = |why: &str| {
        RegistryError::Invalid(format!(
            "source {:?}: {why}; expected an address or a network such as 10.1.0.0/24",
            text.chars().take(64).collect::<String>()
        ))
    };
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| invalid("not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        Some(len) => len
            .trim()
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| invalid("bad prefix length"))?,
        None => max,
    };
    let host_bits_zero = match addr {
        IpAddr::V4(a) => u32::from(a).checked_shl(u32::from(len)).unwrap_or(0) == 0,
        IpAddr::V6(a) => u128::from(a).checked_shl(u32::from(len)).unwrap_or(0) == 0,
    };
    if !host_bits_zero {
        return Err(invalid("address bits beyond the prefix length are set"));
    }
    Ok(format!("{addr}/{len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_addresses_or_networks() {
        assert_eq!(parse_source("198.51.100.7").unwrap(), "198.51.100.7/32");
        assert_eq!(parse_source("10.1.0.0/24").unwrap(), "10.1.0.0/24");
        assert_eq!(parse_source("2001:db8::/64").unwrap(), "2001:db8::/64");
        assert_eq!(parse_source("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        for bad in [
            "10.1.0.1/24",
            "10.1.0.0/33",
            "host.example",
            "",
            "1.2.3.4/x",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }
}
