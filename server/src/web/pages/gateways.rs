//! Gateways: connection state of every gateway the user may see.

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use super::{Nav, PageResult, PageUser};
use crate::fleet::gateways;
use crate::sites;
use crate::web::WebState;
use crate::zone::TimeZone;

pub fn routes() -> Router<WebState> {
    Router::new().route("/gateways", get(gateways_page))
}

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    title: &'static str,
    nav: Nav,
    rows: Vec<Row>,
    online: usize,
    offline: usize,
    /// Where a new gateway connects, for the empty state.
    mqtt_url: String,
}

/// One gateway, as the page shows it.
struct Row {
    serial: String,
    model: Option<String>,
    firmware: Option<String>,
    site: Option<(i64, String)>,
    online: bool,
    /// A Modbus TCP converter (polled by Headend) rather than an SG gateway (MQTT).
    converter: bool,
    last_seen: Option<When>,
    last_hello: Option<When>,
    publish_base: String,
    clock_skew: Option<String>,
    skew_large: bool,
    clock_faults: i64,
    rejected: String,
}

/// A moment shown as "3 min ago", with the exact time (in the gateway's zone) for a `title`.
struct When {
    ago: String,
    exact: String,
    iso: String,
}

impl When {
    fn new(at: DateTime<Utc>, now: DateTime<Utc>, time_zone: TimeZone) -> Self {
        let exact = at
            .with_timezone(&time_zone.tz())
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string();
        Self {
            ago: ago(now.signed_duration_since(at).num_seconds()),
            exact,
            iso: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// "just now", "40 s ago", "3 min ago", "2 h ago", "5 days ago"; "in the future" for a clock
/// ahead of ours.
fn ago(seconds: i64) -> String {
    match seconds {
        s if s < -5 => "in the future".to_owned(),
        s if s < 5 => "just now".to_owned(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 48 * 3600 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// A clock difference in the unit that reads best: "0.4 s", "12 s", "3 min 5 s", "2.5 h".
fn skew(seconds: f64) -> String {
    let sign = if seconds < 0.0 { "−" } else { "+" };
    let a = seconds.abs();
    let text = if a < 10.0 {
        format!("{a:.1} s")
    } else if a < 60.0 {
        format!("{a:.0} s")
    } else if a < 3600.0 {
        let whole = a.round() as i64;
        format!("{} min {} s", whole / 60, whole % 60)
    } else if a < 86_400.0 {
        format!("{:.1} h", a / 3600.0)
    } else {
        format!("{:.1} days", a / 86_400.0)
    };
    format!("{sign}{text}")
}

/// An integer with thin-space thousands separators: 12 345.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if n < 0 {
        format!("−{out}")
    } else {
        out
    }
}

/// `mqtt://<the host this page was asked from>:1883`.
fn mqtt_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            // Keep an IPv6 literal whole: `[::1]:8080` → `[::1]`.
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        })
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or("this-server");
    format!("mqtt://{host}:1883")
}

async fn gateways_page(
    State(state): State<WebState>,
    user: PageUser,
    headers: HeaderMap,
) -> PageResult {
    let gateways = gateways::list(&state.pool, &user.scope).await?;
    let site_ids: Vec<i64> = gateways.iter().filter_map(|g| g.site_id).collect();
    let sites = sites::names(&state.pool, &site_ids).await?;
    let ids: Vec<i64> = gateways.iter().map(|g| g.id).collect();
    let converters = gateways::converters_among(&state.pool, &ids).await?;
    let now = Utc::now();
    let rows: Vec<Row> = gateways
        .into_iter()
        .map(|g| Row {
            site: g
                .site_id
                .and_then(|id| sites.get(&id).map(|name| (id, name.clone()))),
            online: g.online,
            converter: converters.contains(&g.id),
            last_seen: g.last_seen_at.map(|t| When::new(t, now, g.time_zone)),
            last_hello: g.last_hello_at.map(|t| When::new(t, now, g.time_zone)),
            clock_skew: g.clock_skew_s.map(skew),
            skew_large: g.clock_skew_s.is_some_and(|s| s.abs() >= 60.0),
            clock_faults: g.clock_faults,
            rejected: grouped(g.rejected_messages),
            publish_base: g.publish_base,
            model: g.model.filter(|m| !m.is_empty()),
            firmware: g.firmware_version.filter(|f| !f.is_empty()),
            serial: g.serial,
        })
        .collect();
    let online = rows.iter().filter(|r| r.online).count();
    user.render(&GatewaysPage {
        title: "Gateways",
        nav: user.nav(),
        offline: rows.len() - online,
        online,
        rows,
        mqtt_url: mqtt_url(&headers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(3 * 60 + 20), "3 min ago");
        assert_eq!(ago(5 * 3600), "5 h ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(-600), "in the future");
    }

    #[test]
    fn skews_and_counts_are_scaled() {
        assert_eq!(skew(0.42), "+0.4 s");
        assert_eq!(skew(-12.4), "−12 s");
        assert_eq!(skew(185.0), "+3 min 5 s");
        assert_eq!(skew(9000.0), "+2.5 h");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(12_345), "12\u{202f}345");
        assert_eq!(grouped(1_234_567), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn the_mqtt_address_is_the_host_asked_for() {
        let mut h = HeaderMap::new();
        assert_eq!(mqtt_url(&h), "mqtt://this-server:1883");
        h.insert(header::HOST, "headend.example:8080".parse().unwrap());
        assert_eq!(mqtt_url(&h), "mqtt://headend.example:1883");
        h.insert(header::HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(mqtt_url(&h), "mqtt://[::1]:1883");
    }
}
