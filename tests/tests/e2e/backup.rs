//! `headend backup` and `headend restore` on the embedded cluster: a backup taken while serving
//! restores to exactly the state it was taken at; a tampered, unfinished or misdirected one is
//! refused; an external database is pointed to docs/backup.md.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use headend_e2e::{eventually, headend_binary};
use sqlx::PgPool;

/// The tables compared: registry, users and the readings themselves.
const TABLES: [&str; 7] = [
    "sites",
    "users",
    "gateways",
    "devices",
    "counters",
    "counter_readings",
    "measurements",
];

fn command(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(headend_binary());
    cmd.args(args)
        .env("HEADEND_DATA_DIR", data)
        .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
        .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
        .env("HEADEND_LOG", "warn")
        .env_remove("HEADEND_DATABASE_URL");
    cmd
}

fn run(data: &Path, args: &[&str]) -> (bool, String) {
    let out: Output = command(data, args).output().expect("run headend");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A running `headend serve`, stopped (SIGTERM, so its cluster stops too) when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    async fn start(data: &Path) -> Self {
        let child = command(data, &["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn serve");
        let runtime = data.join("runtime.json");
        let url = eventually(Duration::from_secs(90), || async {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
            Some(v["embedded_database_url"].as_str()?.to_owned())
        })
        .await
        .expect("serve published its database");
        Self { child, url }
    }

    async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.expect("connect")
    }

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Count and an order-independent digest of every main table.
async fn snapshot(pool: &PgPool) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for table in TABLES {
        let (count, digest): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
             FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((table.to_owned(), count, digest));
    }
    out
}

/// Readings of one meter: `n` minutes of counters and measurements from `start`.
async fn write_readings(pool: &PgPool, start: &str, n: i32) {
    sqlx::query(
        "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
         SELECT c.id, $1::timestamptz + make_interval(mins => i), 1000000 + i * 250, now()
         FROM counters c, generate_series(0, $2 - 1) i",
    )
    .bind(start)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO measurements (device_id, ts, received_at, u1, p)
         SELECT d.id, $1::timestamptz + make_interval(mins => i), now(), 230.5 + i, 1200 + i
         FROM devices d, generate_series(0, $2 - 1) i",
    )
    .bind(start)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_restores_that_state_and_bad_backups_are_refused() {
    let tmp = tempfile::Builder::new().prefix("heb").tempdir().unwrap();
    // The PostgreSQL system user must be able to reach the data directories when we are root.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    let (ok, text) = run(
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
    assert!(ok, "{text}");

    let serve = Serve::start(&data).await;
    let (ok, text) = run(
        &data,
        &["gateway", "add", "--serial", "SG000077", "--site", "Plant"],
    );
    assert!(ok, "{text}");
    let pool = serve.pool().await;
    sqlx::query(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial)
         SELECT id, 'meter', 'ir', 1, 'X0000777' FROM gateways WHERE serial = 'SG000077'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO counters (device_id, name, idx, resettable, unit)
         SELECT id, 'A+', 1, false, 'Wh' FROM devices WHERE serial = 'X0000777'",
    )
    .execute(&pool)
    .await
    .unwrap();
    write_readings(&pool, "2026-01-01T00:00:00Z", 2000).await;
    let at_backup = snapshot(&pool).await;
    assert_eq!(at_backup[5].1, 2000, "{at_backup:?}");

    // Backed up while serving: private files, a manifest.
    let backup = tmp.path().join("backup");
    let (ok, text) = run(&data, &["backup", "--to", backup.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("backup written"), "{text}");
    assert_eq!(mode(&backup), 0o700);
    assert_eq!(mode(&backup.join("backup.json")), 0o600);
    assert_eq!(mode(&backup.join("pg/PG_VERSION")), 0o600);
    assert_eq!(mode(&backup.join("journal")), 0o700);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backup.join("backup.json")).unwrap())
            .unwrap();
    assert!(
        manifest["files"].as_array().unwrap().len() > 100,
        "{manifest}"
    );
    assert!(manifest["postgresql_version"].as_str().is_some());

    // Written after the backup: not in the restored state.
    write_readings(&pool, "2026-02-01T00:00:00Z", 500).await;
    sqlx::query("INSERT INTO sites (name, time_zone) VALUES ('Later', 'UTC')")
        .execute(&pool)
        .await
        .unwrap();
    let after = snapshot(&pool).await;
    assert_ne!(after, at_backup);
    pool.close().await;
    serve.stop();

    // Without a serve, the backup starts the cluster for itself.
    let offline = tmp.path().join("offline");
    let (ok, text) = run(&data, &["backup", "--to", offline.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        !data.join("pg/postmaster.pid").exists(),
        "cluster stopped again"
    );

    refusals(tmp.path(), &data, &backup);

    let restored = tmp.path().join("restored");
    let (ok, text) = run(
        &data,
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read(restored.join("journal/epoch")).unwrap(),
        std::fs::read(data.join("journal/epoch")).unwrap(),
        "same journal identity, so its records replay idempotently"
    );
    let serve = Serve::start(&restored).await;
    let pool = serve.pool().await;
    assert_eq!(snapshot(&pool).await, at_backup);
    pool.close().await;
    serve.stop();
}

/// Tampered, unfinished and misdirected restores, and a backup of an external database.
fn refusals(tmp: &Path, data: &Path, backup: &Path) {
    let restore = |from: &Path, to: &Path| {
        run(
            data,
            &[
                "restore",
                "--from",
                from.to_str().unwrap(),
                "--data-dir",
                to.to_str().unwrap(),
            ],
        )
    };
    let target = tmp.join("target");
    let victim = backup.join("pg/PG_VERSION");
    let original = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"99\n").unwrap();
    let (ok, text) = restore(backup, &target);
    assert!(!ok && text.contains("pg/PG_VERSION has changed"), "{text}");
    std::fs::write(&victim, &original).unwrap();
    assert!(!target.exists(), "nothing laid down from a tampered backup");

    let manifest = backup.join("backup.json");
    let aside = tmp.join("backup.json.aside");
    std::fs::rename(&manifest, &aside).unwrap();
    let (ok, text) = restore(backup, &target);
    assert!(!ok && text.contains("did not finish"), "{text}");
    std::fs::rename(&aside, &manifest).unwrap();

    let full = tmp.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), "x").unwrap();
    let (ok, text) = restore(backup, &full);
    assert!(!ok && text.contains("is not empty"), "{text}");

    let external: PathBuf = tmp.join("external");
    let out = command(data, &["backup", "--to", external.to_str().unwrap()])
        .env("HEADEND_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("docs/backup.md"),
        "{text}"
    );
    assert!(!external.exists());
}
