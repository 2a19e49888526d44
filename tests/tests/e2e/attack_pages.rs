//! Identifiers that come from devices are data, never URL structure.
//!
//! Legacy rows with hostile meter serials, models, counter names and gateway serials are put
//! straight into the database (as data stored before ingest validated them would be), then an
//! admin crawls every page reachable from `/`: every `href`, `src`, `data-src` and form
//! `action` is resolved the way a browser does (URL standard: `\` is `/`, `.`/`..` segments
//! and their `%2e` spellings are removed) and must land on the route its template meant,
//! unchanged by the resolution. No page answers 5xx and no markup from device data appears.
//! The API tests pin the identity rule: a serial is resolved within the caller's scope,
//! `?device=` picks one meter, an ambiguous serial is a 409 with the candidates.

use std::collections::{HashMap, HashSet, VecDeque};

use headend_e2e::{raw_request, HttpResponse, TestApp};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;

/// Hostile meter serials (each one meter of site A).
const HOSTILE: &[&str] = &[
    "../../../../commands/3/approve",
    "x\"><script>alert(1)</script>",
    "a/b?c=d#e",
    "%2e%2e",
    "%2E%2e%2f..%2fadmin",
    "..",
    ".",
    "with  spaces and\ttab",
    "Zähler Ω/\\..\\",
    "?device=1",
    "#top",
    "~",
    "' onmouseover='alert(1)",
];

const SCRIPT: &str = "<script>alert(";

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn dec(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

// ---- a minimal HTML tokenizer ---------------------------------------------------------------

#[derive(Debug, Clone)]
struct Tag {
    name: String,
    closing: bool,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every start and end tag with its attributes (values unescaped), in document order.
fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let closing = j < b.len() && b[j] == b'/';
        if closing {
            j += 1;
        }
        let start = j;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-') {
            j += 1;
        }
        if j == start {
            i += 1;
            continue;
        }
        let name = html[start..j].to_ascii_lowercase();
        let mut attrs = Vec::new();
        loop {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= b.len() || b[j] == b'>' {
                break;
            }
            if b[j] == b'/' {
                j += 1;
                continue;
            }
            let an = j;
            while j < b.len() && !b[j].is_ascii_whitespace() && !b"=>".contains(&b[j]) {
                j += 1;
            }
            let attr = html[an..j].to_ascii_lowercase();
            let mut value = String::new();
            if j < b.len() && b[j] == b'=' {
                j += 1;
                if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
                    let q = b[j];
                    let vs = j + 1;
                    j = vs;
                    while j < b.len() && b[j] != q {
                        j += 1;
                    }
                    value = unescape(&html[vs..j.min(b.len())]);
                    j += 1;
                } else {
                    let vs = j;
                    while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                        j += 1;
                    }
                    value = unescape(&html[vs..j]);
                }
            }
            attrs.push((attr, value));
        }
        out.push(Tag {
            name,
            closing,
            attrs,
        });
        i = j + 1;
    }
    out
}

// ---- URL resolution as the URL standard does it (the parts a same-origin page needs) --------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    path: String,
    query: Option<String>,
}

impl Resolved {
    fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    fn param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (dec(k) == name).then(|| dec(v))
        })
    }
}

fn single_dot(s: &str) -> bool {
    s == "." || s.eq_ignore_ascii_case("%2e")
}

fn double_dot(s: &str) -> bool {
    [
        "..".to_owned(),
        ".%2e".to_owned(),
        "%2e.".to_owned(),
        "%2e%2e".to_owned(),
    ]
    .iter()
    .any(|d| d.eq_ignore_ascii_case(s))
}

/// `href` resolved against `base` (a same-origin path and query). `Err` for anything that
/// leaves the origin (another host, a scheme-relative URL, `javascript:`).
fn resolve(base: &Resolved, href: &str, origin: &str) -> Result<Resolved, String> {
    // The URL parser drops tabs and newlines and trims C0 controls and spaces.
    let cleaned: String = href
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let mut rest = cleaned.as_str();
    if let Some(colon) = rest.find(':') {
        let scheme = &rest[..colon];
        if !scheme.is_empty()
            && scheme.chars().next().unwrap().is_ascii_alphabetic()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            let lower = cleaned.to_ascii_lowercase();
            let prefix = format!("http://{origin}");
            if lower.starts_with(&prefix.to_ascii_lowercase()) {
                rest = &cleaned[prefix.len()..];
                if !(rest.is_empty() || rest.starts_with(['/', '\\', '?', '#'])) {
                    return Err(format!("another origin: {href}"));
                }
            } else {
                return Err(format!("leaves the origin: {href}"));
            }
        }
    }
    // Special schemes take `\` as `/`, in the path only.
    let (before_fragment, _) = rest.split_once('#').unwrap_or((rest, ""));
    let (raw_path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p.replace('\\', "/"), Some(q.to_owned())),
        None => (before_fragment.replace('\\', "/"), None),
    };
    if raw_path.starts_with("//") {
        return Err(format!("scheme-relative: {href}"));
    }
    let (joined, query) = if raw_path.is_empty() {
        (
            base.path.clone(),
            if before_fragment.contains('?') {
                query
            } else {
                base.query.clone()
            },
        )
    } else if raw_path.starts_with('/') {
        (raw_path, query)
    } else {
        let dir = &base.path[..=base.path.rfind('/').unwrap_or(0)];
        (format!("{dir}{raw_path}"), query)
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = joined[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if double_dot(s) {
            out.pop();
            if last {
                out.push("");
            }
        } else if single_dot(s) {
            if last {
                out.push("");
            }
        } else {
            out.push(s);
        }
    }
    Ok(Resolved {
        path: format!("/{}", out.join("/")),
        query,
    })
}

// ---- the routes the templates mean ------------------------------------------------------------

/// `{n}` a number, `{s}` one path segment as `web::urls` encodes it, `{w}` a word.
const GET_ROUTES: &[&str] = &[
    "/",
    "/sites/{n}",
    "/meters/{s}",
    "/relays",
    "/relays/{n}",
    "/relays/{n}/confirm",
    "/commands/{n}",
    "/alarms",
    "/alarms/{n}",
    "/alarm-rules",
    "/alarm-rules/{n}",
    "/gateways",
    "/converters",
    "/admin",
    "/admin/outbox",
    "/admin/sites/{n}",
    "/admin/sites/{n}/contract",
    "/admin/sites/{n}/home-assistant",
    "/circuits/{n}",
    "/static/app.css",
    "/static/live.js",
    "/static/charts.js",
    "/static/vendor/uplot/uPlot.iife.min.js",
    "/static/vendor/uplot/uPlot.min.css",
    "/api/v1/devices/{s}/latest",
    "/api/v1/alarms/history.csv",
    "/api/v1/export.csv",
];

const POST_ROUTES: &[&str] = &[
    "/logout",
    "/relays/{n}/command",
    "/commands/{n}/{w}",
    "/alarms/{n}/{w}",
    "/alarm-rules",
    "/alarm-rules/{n}",
    "/alarm-rules/{n}/delete",
    "/converters",
    "/converters/{n}/devices",
    "/converters/{n}/devices/{n}/remove",
    "/converters/{n}/enabled",
    "/admin/sites",
    "/admin/users",
    "/admin/grants",
    "/admin/revocations",
    "/admin/users/{n}/disabled",
    "/admin/users/{n}/password",
    "/admin/gateways",
    "/admin/gateways/{s}/password",
    "/admin/gateways/{s}/site",
    "/admin/sites/{n}/settings",
    "/admin/sites/{n}/home-assistant",
    "/admin/sites/{n}/panels",
    "/admin/sites/{n}/panels/{n}",
    "/admin/sites/{n}/panels/{n}/delete",
    "/admin/sites/{n}/circuits",
    "/admin/sites/{n}/circuits/{n}",
    "/admin/sites/{n}/circuits/{n}/delete",
    "/admin/sites/{n}/meters/{s}",
    "/admin/sites/{n}/contract",
    "/admin/sites/{n}/contracts/{n}/delete",
];

/// The route `path` matches, with the captured segments.
fn route_of(routes: &[&'static str], path: &str) -> Option<(&'static str, Vec<String>)> {
    let got: Vec<&str> = path.split('/').collect();
    'routes: for route in routes {
        let want: Vec<&str> = route.split('/').collect();
        if want.len() != got.len() {
            continue;
        }
        let mut captured = Vec::new();
        for (w, g) in want.iter().zip(&got) {
            let ok = match *w {
                "{n}" => !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()),
                "{w}" => !g.is_empty() && g.bytes().all(|b| b.is_ascii_lowercase()),
                // Exactly what the encoder emits: never `.`, `/`, `?`, `#`, `\`.
                "{s}" => {
                    !g.is_empty()
                        && g.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_~%".contains(&b))
                }
                _ => w == g,
            };
            if !ok {
                continue 'routes;
            }
            if w.starts_with('{') {
                captured.push((*g).to_owned());
            }
        }
        return Some((route, captured));
    }
    None
}

// ---- the hostile world ------------------------------------------------------------------------

struct World {
    site_a: i64,
    site_b: i64,
    /// device id to serial, every meter.
    meters: HashMap<i64, String>,
    /// The hostile meters of site A.
    hostile: Vec<i64>,
    gateways: HashSet<String>,
    command: i64,
    shared_a: i64,
    shared_b: i64,
    dup_1: i64,
    dup_2: i64,
}

async fn meter(app: &TestApp, gateway: &str, slot: i16, serial: &str, model: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial, model, description)
         VALUES ((SELECT id FROM gateways WHERE serial = $1), 'meter', 'rs485', $2, $3, $4,
                 'desc \"><script>alert(5)</script>') RETURNING id",
    )
    .bind(gateway)
    .bind(slot)
    .bind(serial)
    .bind(model)
    .fetch_one(&app.pool)
    .await
    .expect("insert meter")
}

async fn world(app: &TestApp) -> World {
    let site_a = app.site("Site A", "Europe/Ljubljana").await;
    let site_b = app.site("Site B", "UTC").await;
    for (g, site) in [
        ("GWA00001", site_a),
        ("GWA00002", site_a),
        ("GWB00001", site_b),
        ("GWH00001", site_a),
        ("GWH00002", site_a),
        ("GWH00003", site_a),
    ] {
        app.gateway(g, Some(site), None).await;
    }
    // A critical relay with a command waiting for a second operator: the one real approve.
    let relay: i64 = sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial, model, description, critical)
         VALUES ((SELECT id FROM gateways WHERE serial = 'GWA00001'), 'relay', 'ir', 0,
                 '../../commands/1/approve', 'r\"><script>alert(6)</script>', 'relay <b>x</b>', true)
         RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let command: i64 = sqlx::query_scalar(
        "INSERT INTO relay_commands (device_id, action, target, status, requested_email,
                                     reason, expires_at, approval_deadline)
         VALUES ($1, 'off', 0, 'awaiting_approval', 'op@example.com', '../../x',
                 now() + interval '1 day', now() + interval '1 day') RETURNING id",
    )
    .bind(relay)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let approve = format!("../../../../commands/{command}/approve");
    // Gateway serials are at most 32 characters.
    for (from, to) in [
        ("GWH00001", format!("../../../commands/{command}/approve")),
        ("GWH00002", "g\"><script>alert(2)</script>".to_owned()),
        ("GWH00003", "..".to_owned()),
    ] {
        sqlx::query("UPDATE gateways SET serial = $2 WHERE serial = $1")
            .bind(from)
            .bind(&to)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let gateways: HashSet<String> = sqlx::query_scalar("SELECT serial FROM gateways")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let model = "m\"><script>alert(3)</script>/../..";
    let mut meters = HashMap::new();
    let mut hostile = Vec::new();
    let serials: Vec<String> = HOSTILE
        .iter()
        .map(|s| s.to_string())
        .chain([approve])
        .collect();
    for (slot, serial) in (1..).zip(&serials) {
        let id = meter(app, "GWA00001", slot, serial, model).await;
        meters.insert(id, serial.clone());
        hostile.push(id);
    }
    // Meters on the hostile gateways, one of them a second `x"><script>` of site A.
    for (gateway, serial) in [
        (format!("../../../commands/{command}/approve"), "HG1"),
        ("g\"><script>alert(2)</script>".to_owned(), HOSTILE[1]),
        ("..".to_owned(), "HG3"),
    ] {
        let id = meter(app, &gateway, 1, serial, model).await;
        meters.insert(id, serial.to_owned());
        hostile.push(id);
    }
    let shared_a = meter(app, "GWA00001", 100, "SHARED01", "WM3M4C").await;
    let shared_b = meter(app, "GWB00001", 1, "SHARED01", "WM3M4C").await;
    let dup_1 = meter(app, "GWA00001", 101, "DUP00001", "WM3M4C").await;
    let dup_2 = meter(app, "GWA00002", 1, "DUP00001", "WM3M4C").await;
    for (id, s) in [
        (shared_a, "SHARED01"),
        (shared_b, "SHARED01"),
        (dup_1, "DUP00001"),
        (dup_2, "DUP00001"),
    ] {
        meters.insert(id, s.to_owned());
    }
    // Counters with hostile names, with a reading each.
    for (device, name) in [
        (hostile[0], "counter1nr"),
        (hostile[1], "c\"><script>alert(4)</script>/.."),
    ] {
        sqlx::query(
            "WITH c AS (INSERT INTO counters (device_id, name, idx, resettable, unit)
                        VALUES ($1, $2, 1, false, 'Wh') RETURNING id)
             INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
             SELECT id, now() - interval '1 hour', 123456, now() FROM c",
        )
        .bind(device)
        .bind(name)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    World {
        site_a,
        site_b,
        meters,
        hostile,
        gateways,
        command,
        shared_a,
        shared_b,
        dup_1,
        dup_2,
    }
}

async fn page_get(app: &TestApp, token: &str, target: &str) -> HttpResponse {
    let cookie = format!("headend_session={token}; headend_csrf={}", "c".repeat(32));
    raw_request(app.http, "GET", target, &[("Cookie", &cookie)], "")
        .await
        .unwrap()
}

/// Meters placed through the API by serial and `?device=`, so that the site tree, the
/// circuit page and the admin forms all show hostile serials.
async fn place(app: &TestApp, admin: &str, w: &World) {
    let panel = app
        .request(
            "POST",
            &format!("/api/v1/sites/{}/panels", w.site_a),
            Some(admin),
            Some(json!({ "name": "Panel <b>1</b>" })),
        )
        .await;
    assert_eq!(panel.status, 201, "{}", panel.body);
    let panel = panel.json()["id"].as_i64().unwrap();
    let circuit = app
        .request(
            "POST",
            &format!("/api/v1/panels/{panel}/circuits"),
            Some(admin),
            Some(json!({ "name": "Lights", "usage": "lighting" })),
        )
        .await;
    assert_eq!(circuit.status, 201, "{}", circuit.body);
    let circuit = circuit.json()["id"].as_i64().unwrap();
    let placements = [
        (w.hostile[0], json!({ "measures": "site" })),
        (w.hostile[1], json!({ "panel_id": panel })),
        (w.hostile[2], json!({ "circuit_id": circuit })),
        (w.hostile[5], json!({ "circuit_id": circuit })),
    ];
    for (device, body) in placements {
        let serial = &w.meters[&device];
        let segment = if matches!(serial.as_str(), "" | "." | "..") {
            "~".to_owned()
        } else {
            enc(serial)
        };
        let r = app
            .request(
                "PATCH",
                &format!("/api/v1/devices/{segment}?device={device}"),
                Some(admin),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 204, "{serial:?}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_and_form_of_every_page_goes_where_its_template_meant() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    place(&app, &admin, &w).await;
    let origin = app.http.to_string();

    let mut queue: VecDeque<Resolved> = VecDeque::from([Resolved {
        path: "/".into(),
        query: None,
    }]);
    let mut seen: HashSet<String> = HashSet::new();
    let mut per_path: HashMap<String, usize> = HashMap::new();
    let mut meter_pages: HashSet<i64> = HashSet::new();
    let mut approve_forms = 0;
    let mut fetched = 0;
    let mut failures: Vec<String> = Vec::new();
    while let Some(url) = queue.pop_front() {
        if fetched >= 400 {
            break;
        }
        fetched += 1;
        let r = page_get(&app, &admin, &url.target()).await;
        if r.status != 200 {
            failures.push(format!(
                "{} answered {}: {}",
                url.target(),
                r.status,
                r.body
            ));
            continue;
        }
        if let Some(("/meters/{s}", _)) = route_of(GET_ROUTES, &url.path) {
            if let Some(id) = url.param("device").and_then(|d| d.parse().ok()) {
                meter_pages.insert(id);
                let serial = &w.meters[&id];
                // The page is that meter's: its serial is shown (escaped).
                let shown = serial
                    .replace('&', "&#38;")
                    .replace('<', "&#60;")
                    .replace('>', "&#62;")
                    .replace('"', "&#34;")
                    .replace('\'', "&#39;");
                let shown_named = serial
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;");
                if !(r.body.contains(&shown) || r.body.contains(&shown_named)) {
                    failures.push(format!("{}: serial {serial:?} not shown", url.target()));
                }
            }
        }
        if !r
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
        {
            continue;
        }
        // No markup from device data: the only script is the page's own.
        let mut rest = r.body.as_str();
        while let Some(at) = rest.find("<script") {
            let script = &rest[at..];
            const DATA: &str = "<script type=\"application/json\" class=\"chart-data\">";
            if let Some(data) = script.strip_prefix(DATA) {
                // A chart's data block: JSON in which `<` is always escaped, so no device text
                // can end it early and start markup.
                let body = data.split("</script>").next().unwrap_or_default();
                if body.contains('<') || serde_json::from_str::<serde_json::Value>(body).is_err() {
                    failures.push(format!(
                        "{}: a chart data block that is not escaped JSON: {}",
                        url.target(),
                        &body[..body.len().min(120)]
                    ));
                }
            } else if ![
                "<script src=\"/static/live.js\" defer>",
                "<script src=\"/static/charts.js\" defer>",
                "<script src=\"/static/vendor/uplot/uPlot.iife.min.js\" defer>",
            ]
            .iter()
            .any(|own| script.starts_with(own))
            {
                failures.push(format!(
                    "{}: a script element: {}",
                    url.target(),
                    &rest[at..(at + 80).min(rest.len())]
                ));
            }
            rest = &rest[at + 7..];
        }
        if r.body.contains(SCRIPT) || r.body.contains("onmouseover='") {
            failures.push(format!("{}: raw device markup", url.target()));
        }

        let page_tags = tags(&r.body);
        let mut form: Option<(Tag, Vec<(String, String)>)> = None;
        let mut forms: Vec<(Tag, Vec<(String, String)>)> = Vec::new();
        let mut select: Option<String> = None;
        for tag in &page_tags {
            match (tag.name.as_str(), tag.closing) {
                ("form", false) => form = Some((tag.clone(), Vec::new())),
                ("form", true) => forms.extend(form.take()),
                ("input", false) => {
                    if let (Some((_, fields)), Some(name)) = (form.as_mut(), tag.attr("name")) {
                        if !matches!(tag.attr("type"), Some("checkbox" | "submit")) {
                            fields.push((name.to_owned(), tag.attr("value").unwrap_or("").into()));
                        }
                    }
                }
                ("select", false) => select = tag.attr("name").map(str::to_owned),
                ("option", false) => {
                    if let (Some((_, fields)), Some(name), Some(v)) =
                        (form.as_mut(), select.take(), tag.attr("value"))
                    {
                        fields.push((name, v.to_owned()));
                    }
                }
                _ => {}
            }
            for attr in ["href", "src", "data-src", "action"] {
                let Some(raw) = tag.attr(attr) else { continue };
                if tag.closing || (tag.name == "link" && attr == "href" && raw.is_empty()) {
                    continue;
                }
                if raw.starts_with('#') {
                    continue;
                }
                let what = format!("{} <{} {attr}={raw:?}>", url.target(), tag.name);
                let resolved = match resolve(&url, raw, &origin) {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{what}: {e}"));
                        continue;
                    }
                };
                // Nothing a browser would rewrite: the path as written is the path requested.
                if raw.starts_with('/') {
                    let written = raw.split(['?', '#']).next().unwrap_or("");
                    if written != resolved.path {
                        failures.push(format!("{what}: resolves to {}", resolved.path));
                        continue;
                    }
                } else if !raw.is_empty() && !raw.starts_with('?') {
                    failures.push(format!("{what}: not an absolute path"));
                    continue;
                }
                let post = attr == "action"
                    && tag
                        .attr("method")
                        .is_some_and(|m| m.eq_ignore_ascii_case("post"));
                let routes = if post { POST_ROUTES } else { GET_ROUTES };
                let Some((route, captured)) = route_of(routes, &resolved.path) else {
                    failures.push(format!("{what}: no such route {}", resolved.path));
                    continue;
                };
                // Device and gateway identifiers: the segment is the device's serial (or the
                // placeholder) and the link names the device.
                match route {
                    "/meters/{s}"
                    | "/api/v1/devices/{s}/latest"
                    | "/admin/sites/{n}/meters/{s}" => {
                        let segment = dec(captured.last().unwrap());
                        let device: Option<i64> =
                            resolved.param("device").and_then(|d| d.parse().ok());
                        match device.and_then(|d| w.meters.get(&d).map(|s| (d, s))) {
                            Some((_, serial)) if segment == *serial || segment == "~" => {}
                            other => failures
                                .push(format!("{what}: segment {segment:?} with device {other:?}")),
                        }
                    }
                    "/admin/gateways/{s}/password" | "/admin/gateways/{s}/site" => {
                        let segment = dec(&captured[0]);
                        if !w.gateways.contains(&segment) {
                            failures.push(format!("{what}: no gateway {segment:?}"));
                        }
                    }
                    "/commands/{n}/{w}" => {
                        // Only the real buttons of the command page itself.
                        let id: i64 = captured[0].parse().unwrap();
                        let ok = url.path == format!("/commands/{id}")
                            && ["approve", "cancel"].contains(&captured[1].as_str());
                        if !ok {
                            failures.push(format!("{what}: a command action off its page"));
                        }
                        if captured[1] == "approve" {
                            assert_eq!(id, w.command, "{what}");
                            approve_forms += 1;
                        }
                    }
                    _ => {}
                }
                if post || tag.name == "form" {
                    continue;
                }
                // Follow same-origin links, a few variants of each path.
                let key = resolved.target();
                let count = per_path.entry(resolved.path.clone()).or_default();
                if *count < 3 && seen.insert(key) {
                    *count += 1;
                    queue.push_back(resolved);
                }
            }
        }
        // GET forms are submitted with what they carry (period and export forms).
        for (tag, fields) in forms {
            if !tag
                .attr("method")
                .is_some_and(|m| m.eq_ignore_ascii_case("get"))
            {
                continue;
            }
            let Ok(mut target) = resolve(&url, tag.attr("action").unwrap_or(""), &origin) else {
                continue;
            };
            if target.path == "/alarms" {
                continue;
            }
            target.query = Some(
                fields
                    .iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
            if !seen.insert(target.target()) {
                continue;
            }
            let r = page_get(&app, &admin, &target.target()).await;
            let fine = match r.status {
                200 => true,
                // An export of a serial that two meters of one site report is refused.
                409 => target.path == "/api/v1/export.csv",
                _ => false,
            };
            if !fine {
                failures.push(format!(
                    "form {} answered {}: {}",
                    target.target(),
                    r.status,
                    r.body
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every hostile meter of site A was reached by a link, and so was the command.
    for id in &w.hostile {
        assert!(
            meter_pages.contains(id),
            "meter {:?} ({id}) not reached",
            w.meters[id]
        );
    }
    assert!(meter_pages.contains(&w.shared_a) && meter_pages.contains(&w.shared_b));
    assert!(meter_pages.contains(&w.dup_1) && meter_pages.contains(&w.dup_2));
    assert!(approve_forms >= 1, "the real approve button was seen");
    assert!(fetched > 20 && fetched < 400, "{fetched} pages");
    let _ = w.site_b;
    app.stop().await;
}

#[test]
fn the_resolver_follows_the_url_standard() {
    let base = Resolved {
        path: "/meters/x".into(),
        query: Some("device=1".into()),
    };
    let r = |h: &str| resolve(&base, h, "h:1").map(|r| r.target());
    assert_eq!(r("/a/../b").unwrap(), "/b");
    assert_eq!(
        r("/meters/%2e%2e/commands/3/approve").unwrap(),
        "/commands/3/approve"
    );
    assert_eq!(r("/meters/.%2E/x").unwrap(), "/x");
    assert_eq!(r("/meters/..\\..\\admin").unwrap(), "/admin");
    assert_eq!(r("/meters/a/b?c=d#e").unwrap(), "/meters/a/b?c=d");
    assert_eq!(r("?from=1").unwrap(), "/meters/x?from=1");
    assert_eq!(r("").unwrap(), "/meters/x?device=1");
    assert_eq!(r("y").unwrap(), "/meters/y");
    assert_eq!(r("/m/%2E").unwrap(), "/m/");
    assert_eq!(r("http://h:1/z").unwrap(), "/z");
    assert!(r("//evil/x").is_err() && r("\\\\evil").is_err() && r("javascript:x").is_err());
    assert_eq!(
        route_of(GET_ROUTES, "/meters/a%2Fb").map(|r| r.0),
        Some("/meters/{s}")
    );
    assert!(route_of(GET_ROUTES, "/meters/a.b").is_none());
    let t = tags(r#"<a href="/x?a=1&amp;b=&#34;">t</a><form method="post" action='/y'>"#);
    assert_eq!(t[0].attr("href"), Some("/x?a=1&b=\""));
    assert_eq!(t[2].attr("action"), Some("/y"));
}

// ---- the identity rule in the API -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_serial_is_a_409_with_candidates_and_device_picks_one() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    for rest in [
        "/latest",
        "/counters",
        "/profile?from=2026-11-01&to=2026-11-02",
    ] {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let r = app
            .get(&format!("/api/v1/devices/SHARED01{rest}"), &admin)
            .await;
        assert_eq!(r.status, 409, "{rest}: {}", r.body);
        let body = r.json();
        let mut ids: Vec<i64> = body["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, vec![w.shared_a, w.shared_b], "{body}");
        let a = body["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == w.shared_a)
            .unwrap();
        assert_eq!(a["site"], "Site A");
        assert_eq!(a["site_id"], w.site_a);
        assert_eq!(a["gateway"], "GWA00001");
        assert_eq!(a["slot"], 100);
        assert_eq!(a["serial"], "SHARED01");
        for pick in [w.shared_a, w.shared_b] {
            let r = app
                .get(
                    &format!("/api/v1/devices/SHARED01{rest}{sep}device={pick}"),
                    &admin,
                )
                .await;
            assert_eq!(r.status, 200, "{rest}: {}", r.body);
            if rest != "/profile?from=2026-11-01&to=2026-11-02" {
                assert_eq!(r.json()["device"]["id"], pick);
            }
        }
        // A device id of another serial is not this serial's.
        let r = app
            .get(
                &format!("/api/v1/devices/SHARED01{rest}{sep}device={}", w.dup_1),
                &admin,
            )
            .await;
        assert_eq!(r.status, 404, "{rest}: {}", r.body);
    }
    // Two slots of one site: ambiguous as well.
    let r = app.get("/api/v1/devices/DUP00001/latest", &admin).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["candidates"].as_array().unwrap().len(), 2);
    // A hostile serial, percent-encoded, is one path segment and names its meter.
    let hostile = w.hostile[0];
    let r = app
        .get(
            &format!(
                "/api/v1/devices/{}/latest?device={hostile}",
                enc(&w.meters[&hostile])
            ),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["device"]["serial"], w.meters[&hostile]);
    // The placeholder names a device only with `device`.
    let dots = w.hostile[HOSTILE.iter().position(|s| *s == "..").unwrap()];
    let r = app
        .get(&format!("/api/v1/devices/~/latest?device={dots}"), &admin)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["device"]["serial"], "..");
    // PATCH: never a silent pick.
    let body = json!({ "name": "Main" });
    let r = app
        .request(
            "PATCH",
            "/api/v1/devices/SHARED01",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let named: i64 = app
        .count("SELECT count(*) FROM devices WHERE name = 'Main'")
        .await;
    assert_eq!(named, 0);
    let r = app
        .request(
            "PATCH",
            &format!("/api/v1/devices/SHARED01?device={}", w.shared_b),
            Some(&admin),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM devices WHERE id = $1")
        .bind(w.shared_b)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("Main"));
    // The CSV export resolves the same way.
    let csv = |extra: &str| {
        format!("/api/v1/export.csv?kind=daily&from=2026-11-01&to=2026-11-02&meter=SHARED01{extra}")
    };
    assert_eq!(app.get(&csv(""), &admin).await.status, 409);
    let r = app
        .get(&csv(&format!("&device={}", w.shared_a)), &admin)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Consumption by meter never merges two meters reporting one serial.
    for device in [w.dup_1, w.dup_2] {
        sqlx::query(
            "INSERT INTO counters (device_id, name, idx, resettable, unit)
             VALUES ($1, 'counter1nr', 1, false, 'Wh')",
        )
        .bind(device)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let r = app
        .get(
            &format!(
                "/api/v1/sites/{}/consumption?from=2026-11-01&to=2026-11-02&by=day&group=meter",
                w.site_a
            ),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let keys: Vec<String> = r.json()["periods"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["groups"].as_array().cloned().unwrap_or_default())
        .map(|g| g["key"].as_str().unwrap().to_owned())
        .collect();
    for device in [w.dup_1, w.dup_2] {
        assert!(keys.contains(&format!("device:{device}")), "{keys:?}");
    }
    assert!(!keys.iter().any(|k| k == "DUP00001"), "{keys:?}");
    // The meter page without `device` lets the person choose, with links that name it.
    let page = page_get(&app, &admin, "/meters/SHARED01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"meter-candidates\""),
        "{}",
        page.body
    );
    for id in [w.shared_a, w.shared_b] {
        assert!(page
            .body
            .contains(&format!("href=\"/meters/SHARED01?device={id}\"")));
    }
    let page = page_get(
        &app,
        &admin,
        &format!("/meters/SHARED01?device={}", w.shared_b),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("GWB00001"), "the chosen meter's gateway");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_one_site_never_sees_another_sites_meter_with_the_same_serial() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let viewer = app
        .user_token("viewer@example.com", "viewer", &[w.site_a])
        .await;
    // Within site A the serial is unique: site B's meter is not a candidate.
    for rest in ["/latest", "/counters"] {
        let r = app
            .get(&format!("/api/v1/devices/SHARED01{rest}"), &viewer)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["device"]["id"], w.shared_a);
        let r = app
            .get(
                &format!("/api/v1/devices/SHARED01{rest}?device={}", w.shared_b),
                &viewer,
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(!r.body.contains("Site B") && !r.body.contains("GWB00001"));
    }
    let r = app
        .get(
            &format!("/api/v1/devices/~/latest?device={}", w.shared_b),
            &viewer,
        )
        .await;
    assert_eq!(r.status, 404);
    // An ambiguity lists only what the user may see.
    let r = app.get("/api/v1/devices/DUP00001/latest", &viewer).await;
    assert_eq!(r.status, 409);
    assert!(!r.body.contains("Site B"));
    let devices = app.get("/api/v1/devices", &viewer).await.json();
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["id"] != w.shared_b));
    // Pages: the same meter, no chooser, and the other site's meter is not found.
    let page = page_get(&app, &viewer, "/meters/SHARED01").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("meter-candidates") && page.body.contains("GWA00001"));
    let page = page_get(
        &app,
        &viewer,
        &format!("/meters/SHARED01?device={}", w.shared_b),
    )
    .await;
    assert_eq!(page.status, 404);
    let r = app
        .get(
            &format!(
                "/api/v1/export.csv?kind=daily&from=2026-11-01&to=2026-11-02&meter=SHARED01&device={}",
                w.shared_b
            ),
            &viewer,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    app.stop().await;
}
