//! The `headend` binary on its embedded defaults: its own PostgreSQL cluster, one serve per
//! data directory, admin commands beside a running serve.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use headend_e2e::{eventually, headend_binary, http_request};

fn headend(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(headend_binary())
        .args(args)
        .env("HEADEND_DATA_DIR", data)
        .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
        .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
        .env("HEADEND_LOG", "warn")
        .env_remove("HEADEND_DATABASE_URL")
        .output()
        .expect("run headend")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_serve_admin_commands_and_single_serve_per_data_dir() {
    let tmp = tempfile::Builder::new().prefix("hep").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    // The PostgreSQL system user must be able to reach the data directory when we are root.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");

    // An admin command with no serve running starts the embedded cluster for itself.
    let out = headend(
        &data,
        &[
            "site",
            "add",
            "--name",
            "Plant",
            "--time-zone",
            "Europe/Ljubljana",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let mut serve = Command::new(headend_binary())
        .arg("serve")
        .env("HEADEND_DATA_DIR", &data)
        .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
        .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
        .env("HEADEND_LOG", "warn")
        .env_remove("HEADEND_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let runtime = data.join("runtime.json");
    let http: std::net::SocketAddr = eventually(Duration::from_secs(90), || async {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
        v["http_addr"].as_str()?.parse().ok()
    })
    .await
    .expect("serve started on the embedded cluster");

    // Admin commands use the running serve's database.
    let out = headend(
        &data,
        &["gateway", "add", "--serial", "SG000099", "--site", "Plant"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("MQTT password:"), "{}", text(&out));
    let out = headend(
        &data,
        &[
            "user",
            "add",
            "--email",
            "ops@example.com",
            "--role",
            "operator",
            "--password",
            "a long enough password",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let login = http_request(
        http,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(serde_json::json!({"email": "ops@example.com", "password": "a long enough password"})),
    )
    .await
    .unwrap();
    assert_eq!(login.status, 200, "{}", login.body);

    // A second serve on the same data directory refuses, saying why.
    let second = headend(&data, &["serve"]);
    assert!(!second.status.success());
    assert!(
        text(&second).contains("already serving"),
        "{}",
        text(&second)
    );

    let health = Command::new(headend_binary())
        .args(["healthcheck"])
        .env("HEADEND_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(health.status.success(), "{}", text(&health));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = serve.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!runtime.exists(), "runtime file removed at shutdown");
    // The embedded cluster was stopped with it: its pid file is gone.
    assert!(
        !data.join("pg/postmaster.pid").exists(),
        "PostgreSQL stopped with Headend"
    );

    let unhealthy = Command::new(headend_binary())
        .args(["healthcheck", "--url", &format!("http://{http}")])
        .output()
        .unwrap();
    assert!(!unhealthy.status.success());
}

#[test]
fn default_config_prints_and_bad_config_says_how_to_fix() {
    let out = Command::new(headend_binary())
        .arg("default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let config = String::from_utf8(out.stdout).unwrap();
    assert!(
        config.contains("[http]") && config.contains("addr = \"127.0.0.1:8080\""),
        "{config}"
    );
    let out = Command::new(headend_binary())
        .arg("migrate")
        .env("HEADEND_MQTT_ADDR", "nonsense")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("HEADEND_MQTT_ADDR"), "{}", text(&out));
}

/// `headend demo`: the embedded cluster and broker, two sites in two zones with a year of
/// history (meters placed, every month accounted and priced, a PV meter exporting), logins
/// for an admin, an operator and a viewer scoped to their sites, an alarm that fires with
/// its notifications in the outbox, and the companion firmware's simulated gateways online,
/// their meters continuing the backfilled counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_a_working_login_and_its_simulated_gateways_report() {
    use chrono::Datelike;
    use std::io::BufRead;
    let tmp = tempfile::Builder::new().prefix("hed").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    let started = std::time::Instant::now();
    let launched = chrono::Utc::now();
    let mut demo = Command::new(headend_binary())
        .arg("demo")
        .env("HEADEND_DATA_DIR", &data)
        .env_remove("HEADEND_XML_PUSH_ADDR")
        .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
        .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
        .env("HEADEND_LOG", "warn")
        .env_remove("HEADEND_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The demo's own words: the URL, the three logins and the fleet.
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut logins: std::collections::HashMap<String, (String, String)> = Default::default();
    let mut fleet = false;
    let mut mosquitto = false;
    let mut converter = false;
    let mut xml_gateway = false;
    while logins.len() < 3 || !fleet {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("demo prints its logins and fleet");
        for role in ["admin", "operator", "viewer"] {
            if let Some(rest) = line.trim().strip_prefix(&format!("{role}:")) {
                let mut words = rest.split_whitespace();
                let email = words.next().unwrap().to_owned();
                let password = words.nth(1).unwrap().to_owned();
                logins.insert(role.to_owned(), (email, password));
            }
        }
        mosquitto |= line.contains("mosquitto_pub") && line.contains("-u SG000017");
        fleet |= line.starts_with("Simulated gateways SGF000001");
        converter |= line.starts_with("Simulated RS485/IP converter LJ-RS485-1");
        // On a free loopback port the demo opened for it.
        xml_gateway |= line.starts_with("Simulated XML push gateway SGX000006")
            && line.contains("127.0.0.1:")
            && !line.contains("127.0.0.1:0 ");
    }
    assert!(converter, "the demo prints its Modbus converter");
    assert!(xml_gateway, "the demo prints its XML push gateway");
    assert!(mosquitto, "the demo prints a mosquitto_pub line");
    let runtime = data.join("runtime.json");
    let http: std::net::SocketAddr = eventually(Duration::from_secs(30), || async {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
        v["http_addr"].as_str()?.parse().ok()
    })
    .await
    .unwrap();
    let token_of = |role: &str| {
        let (email, password) = logins[role].clone();
        async move {
            let session = http_request(
                http,
                "POST",
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({ "email": email, "password": password })),
            )
            .await
            .unwrap();
            assert_eq!(session.status, 200, "{}", session.body);
            session.json()["token"].as_str().unwrap().to_owned()
        }
    };
    let token = token_of("admin").await;
    let viewer = token_of("viewer").await;
    token_of("operator").await;
    let get = |path: String, token: String| async move {
        let r = http_request(http, "GET", &path, Some(&token), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    };

    // Two sites in two zones; the viewer sees only the one granted.
    let sites = get("/api/v1/sites".into(), token.clone()).await;
    let zone_of = |name: &str| {
        sites
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| {
                (
                    s["id"].as_i64().unwrap(),
                    s["time_zone"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap_or_else(|| panic!("site {name} in {sites}"))
    };
    let ljubljana = zone_of("Ljubljana office");
    let new_york = zone_of("New York store");
    assert_eq!(ljubljana.1, "Europe/Ljubljana");
    assert_eq!(new_york.1, "America/New_York");
    let seen = get("/api/v1/sites".into(), viewer.clone()).await;
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["name"], "New York store");

    // Every demo meter is placed: 5 gateways × 3 meters.
    let devices = get("/api/v1/devices".into(), token.clone()).await;
    let placed = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["kind"] == "meter"
                && d["gateway"].as_str().is_some_and(|g| g.starts_with("SGF"))
                && d["measures"].is_string()
        })
        .count();
    assert_eq!(placed, 15, "{devices}");
    // The converter's three meters and the XML push meter are placed too.
    for serial in ["18230010", "LG000005", "LG000006", "X0000701"] {
        let device = devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["serial"] == serial)
            .unwrap_or_else(|| panic!("meter {serial} in {devices}"));
        assert!(device["measures"].is_string(), "{device}");
    }

    // The twelve whole months before this one, on each site's calendar: every quarter-hour
    // accounted, energy and a non-zero cost in each; the PV makes the Ljubljana site export.
    for (site, zone) in [&ljubljana, &new_york] {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let today = chrono::Utc::now().with_timezone(&tz).date_naive();
        let this_month = today.with_day(1).unwrap();
        let from = this_month - chrono::Months::new(12);
        let path = format!("/api/v1/sites/{site}/consumption?from={from}&to={this_month}&by=month");
        let year = eventually(Duration::from_secs(300), || {
            let path = path.clone();
            let token = token.clone();
            async move {
                let v = http_request(http, "GET", &path, Some(&token), None)
                    .await
                    .ok()?
                    .json();
                let periods = v["periods"].as_array()?.clone();
                let complete = periods.len() == 12
                    && periods.iter().all(|p| {
                        p["total"]["completeness"]["missing"] == 0
                            && p["total"]["completeness"]["measured"].as_u64() > Some(2600)
                            && p["total"]["import_wh"].as_f64() > Some(0.0)
                            && p["total"]["cost"].as_f64() > Some(0.0)
                    });
                complete.then_some(periods)
            }
        })
        .await
        .unwrap_or_else(|| panic!("site {site}: twelve months accounted and priced"));
        let export: f64 = year
            .iter()
            .map(|p| p["total"]["export_wh"].as_f64().unwrap_or(0.0))
            .sum();
        if *site == ljubljana.0 {
            assert!(export > 0.0, "the PV exports: {year:?}");
        }
    }
    eprintln!(
        "demo: twelve months accounted on both sites {:.1} s after start",
        started.elapsed().as_secs_f64()
    );

    // Five simulated gateways come online and their meters continue the backfilled
    // counters (the demo hands the fleet each register's value at the end of the history).
    let start = std::fs::read_to_string(data.join("demo-fleet-1.counters")).unwrap();
    let backfilled: i64 = start
        .lines()
        .find_map(|l| l.strip_prefix("00000101 counter1nr "))
        .expect("the site meter's start value")
        .parse()
        .unwrap();
    let reporting = eventually(Duration::from_secs(90), || async {
        let gateways = http_request(http, "GET", "/api/v1/gateways", Some(&token), None)
            .await
            .ok()?
            .json();
        let online = gateways
            .as_array()?
            .iter()
            .filter(|g| {
                g["online"] == true && g["serial"].as_str().is_some_and(|s| s.starts_with("SGF"))
            })
            .count();
        let counters = http_request(
            http,
            "GET",
            "/api/v1/devices/00000101/counters",
            Some(&token),
            None,
        )
        .await
        .ok()?
        .json();
        let live = counters["counters"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "counter1nr")?["value_milli"]
            .as_i64()?;
        (online == 5 && live > backfilled).then_some(live)
    })
    .await;
    let live = reporting.expect("the demo fleet reports, continuing the history");
    assert!(
        live - backfilled < 100_000_000,
        "the live counter continues the history: {backfilled} then {live}"
    );

    // The converter's meters are polled over Modbus TCP and the XML push gateway's documents
    // arrive, each continuing its backfilled counter: readings from before the start (the
    // history) and after it (live), monotonic, without a jump at the start.
    let from =
        (launched - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to =
        (launched + chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for serial in ["LG000005", "18230010", "X0000701"] {
        let path = format!(
            "/api/v1/export.csv?kind=readings&meter={serial}&register=counter1nr&from={from}&to={to}"
        );
        let readings = eventually(Duration::from_secs(90), || {
            let (path, token) = (path.clone(), token.clone());
            async move {
                let r = http_request(http, "GET", &path, Some(&token), None)
                    .await
                    .ok()?;
                if r.status != 200 {
                    return None;
                }
                // start_utc (3rd column) and value (8th) of each reading.
                let rows: Vec<(chrono::DateTime<chrono::Utc>, f64)> = r
                    .body
                    .lines()
                    .skip(1)
                    .filter_map(|l| {
                        let cols: Vec<&str> = l.split(',').collect();
                        Some((
                            cols.get(2)?.trim_matches('"').parse().ok()?,
                            cols.get(7)?.parse().ok()?,
                        ))
                    })
                    .collect();
                let live = rows.iter().filter(|(ts, _)| *ts > launched).count();
                // The history ends at most two readings after the launch (a quarter-hour
                // boundary and the setup time); more are live.
                (live >= 4 && rows.len() > live).then_some(rows)
            }
        })
        .await
        .unwrap_or_else(|| panic!("{serial}: history and live readings"));
        // Monotonic, and no step above 30 kW (plus the register's 10 Wh resolution)
        // anywhere, the junction of history and live data included.
        for w in readings.windows(2) {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            let hours = (t1 - t0).num_milliseconds() as f64 / 3_600_000.0;
            assert!(
                t0 < t1 && v0 <= v1 && v1 - v0 <= 10.0 + 30_000.0 * hours,
                "{serial} continues its history: {readings:?}"
            );
        }
    }

    // The demo's alarm rule fires on the live data, and its notifications are in the outbox.
    let alarms = eventually(Duration::from_secs(90), || async {
        let v = http_request(http, "GET", "/api/v1/alarms", Some(&token), None)
            .await
            .ok()?
            .json();
        let found = v.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["rule_name"] == "Main supply demand above 10 kW")
        }) || v["alarms"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["rule_name"] == "Main supply demand above 10 kW")
        });
        found.then_some(v)
    })
    .await;
    assert!(alarms.is_some(), "the demo alarm fires");
    let (email, password) = logins["admin"].clone();
    let form = headend_e2e::raw_request(http, "GET", "/login", &[], "")
        .await
        .unwrap();
    let cookie_of = |r: &headend_e2e::HttpResponse| {
        r.set_cookies()
            .iter()
            .map(|c| c.split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let at = form.body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = form.body[at..at + 32].to_owned();
    let body = format!(
        "csrf={csrf}&email={}&password={password}",
        email.replace('@', "%40")
    );
    let cookie = cookie_of(&form);
    let logged_in = headend_e2e::raw_request(
        http,
        "POST",
        "/login",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(logged_in.status, 303, "{}", logged_in.body);
    let cookie = format!("{cookie}; {}", cookie_of(&logged_in));
    let outbox = headend_e2e::raw_request(http, "GET", "/admin/outbox", &[("Cookie", &cookie)], "")
        .await
        .unwrap();
    assert_eq!(outbox.status, 200, "{}", outbox.body);
    assert!(
        outbox.body.contains("demo/alarms") && outbox.body.contains("facility@demo.local"),
        "{}",
        outbox.body
    );
    // The site page's default view (this month by day) totals the cost of the days so far:
    // the days still to come have no data and do not make it unknown.
    let site_page = headend_e2e::raw_request(
        http,
        "GET",
        &format!("/sites/{}", ljubljana.0),
        &[("Cookie", &cookie)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(site_page.status, 200, "{}", site_page.body);
    let cost = site_page
        .body
        .split_once("id=\"total-cost\">")
        .map(|(_, rest)| rest);
    assert!(
        cost.is_some_and(|c| c.starts_with(|ch: char| ch.is_ascii_digit())),
        "{}",
        site_page.body
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(demo.wait().unwrap().success());
}
