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

/// `headend demo`: the embedded cluster and broker, a demo admin who can log in, and the
/// companion firmware's simulated gateways online and pushing readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_a_working_login_and_its_simulated_gateways_report() {
    use std::io::BufRead;
    let tmp = tempfile::Builder::new().prefix("hed").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    let mut demo = Command::new(headend_binary())
        .arg("demo")
        .env("HEADEND_DATA_DIR", &data)
        .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
        .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
        .env("HEADEND_LOG", "warn")
        .env_remove("HEADEND_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The demo's own words: the URL and the admin login.
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
    let mut login = None;
    let mut fleet = false;
    while login.is_none() || !fleet {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("demo prints its login and fleet");
        if let Some(rest) = line.trim().strip_prefix("Login:") {
            let mut words = rest.split_whitespace();
            let email = words.next().unwrap().to_owned();
            let password = words.nth(1).unwrap().to_owned();
            login = Some((email, password));
        }
        fleet |= line.starts_with("Simulated gateways SGF000001");
    }
    let (email, password) = login.unwrap();
    let runtime = data.join("runtime.json");
    let http: std::net::SocketAddr = eventually(Duration::from_secs(30), || async {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
        v["http_addr"].as_str()?.parse().ok()
    })
    .await
    .unwrap();
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
    let token = session.json()["token"].as_str().unwrap().to_owned();

    // Five simulated gateways come online and their meters report.
    let reporting = eventually(Duration::from_secs(60), || async {
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
        let devices = http_request(http, "GET", "/api/v1/devices", Some(&token), None)
            .await
            .ok()?
            .json();
        (online == 5 && devices.as_array()?.len() >= 25).then_some(())
    })
    .await;
    assert!(reporting.is_some(), "the demo fleet reports");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(demo.wait().unwrap().success());
}
