//! The `headend` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::{password, users, Role};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::db::Database;
use crate::{gateways, sites, App};

#[derive(Debug, Parser)]
#[command(
    name = "headend",
    version,
    about = "Energy supervision head-end for SG smart gateways"
)]
struct Cli {
    /// TOML configuration file (default: $HEADEND_CONFIG, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Headend.
    Serve,
    /// Run Headend with a demo admin, site and gateway, and print how to log in and publish.
    Demo,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage gateways.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// Manage sites.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Exit 0 when the running Headend answers /healthz with 200.
    Healthcheck {
        /// Base URL; default: the running serve's address, else the configured one.
        #[arg(long)]
        url: Option<String>,
    },
    /// Print the default configuration file.
    DefaultConfig,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; prints a generated password when none is given.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: Role,
        #[arg(long)]
        password: Option<String>,
        /// Grant access to this site (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Register a gateway; prints its MQTT credentials and topics.
    Add {
        #[arg(long)]
        serial: String,
        /// MQTT password; generated (and printed once) when absent.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        site: Option<String>,
        /// IANA zone of the gateway clock when it belongs to no site.
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long)]
        topic_root: Option<String>,
        #[arg(long)]
        topic_pub: Option<String>,
        #[arg(long)]
        topic_sub: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        time_zone: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DefaultConfig = cli.command {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("headend: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&config.log.filter, config.log.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("headend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("headend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(config, false).await,
        Command::Demo => serve(config, true).await,
        Command::Migrate => {
            with_database(&config, |_| async { Ok(()) }).await?;
            println!("database is migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Add {
                    email,
                    role,
                    password: given,
                    sites: site_names,
                },
        } => {
            with_database(&config, |pool| async move {
                let secret = given.clone().unwrap_or_else(password::generate);
                let id = users::create(&pool, &email, role, &secret).await?;
                for name in &site_names {
                    let site = sites::id_by_name(&pool, name)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("site {name:?} does not exist"))?;
                    users::grant_site(&pool, id, site).await?;
                }
                println!("user {email} created (id {id}, role {})", role.as_str());
                if given.is_none() {
                    println!("password: {secret}");
                }
                Ok(())
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway {
            command:
                GatewayCommand::Add {
                    serial,
                    password: given,
                    site,
                    time_zone,
                    topic_root,
                    topic_pub,
                    topic_sub,
                },
        } => {
            let default_zone = config.ingest.default_time_zone.clone();
            with_database(&config, |pool| async move {
                let site_id = match &site {
                    Some(name) => Some(
                        sites::id_by_name(&pool, name)
                            .await?
                            .ok_or_else(|| anyhow::anyhow!("site {name:?} does not exist"))?,
                    ),
                    None => None,
                };
                let created = gateways::create(
                    &pool,
                    gateways::NewGateway {
                        serial,
                        password: given,
                        site_id,
                        time_zone,
                        topic_root,
                        topic_pub,
                        topic_sub,
                    },
                    &default_zone,
                )
                .await?;
                print_gateway(&created);
                Ok(())
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Site {
            command: SiteCommand::Add { name, time_zone },
        } => {
            with_database(&config, |pool| async move {
                let id = sites::create(&pool, &name, &time_zone).await?;
                println!("site {name:?} created (id {id}, time zone {time_zone})");
                Ok(())
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => healthcheck(&config, url).await,
        Command::DefaultConfig => Ok(ExitCode::SUCCESS),
    }
}

fn print_gateway(created: &gateways::Created) {
    println!("gateway {} registered (id {})", created.serial, created.id);
    println!("  MQTT username: {}", created.serial);
    println!(
        "  MQTT password: {}   (shown once; stored only as a hash)",
        created.password
    );
    println!("  publishes under: {}/...", created.publish_base);
    println!("  commands on:     {}", created.command_topic);
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let app = App::build(config).await?;
    // Dropped (and so killed) when `serve` returns.
    let _fleet = if demo {
        demo_setup(&app).await?;
        demo_fleet(&app, &data_dir).await?
    } else {
        None
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
    app.run().await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Demo admin, site and gateway with fresh passwords on every start (demo data only).
async fn demo_setup(app: &App) -> anyhow::Result<()> {
    const ADMIN: &str = "admin@demo.local";
    const GATEWAY: &str = "SG000017";
    let pool = app.pool();
    let admin_password = password::generate();
    let hash = password::hash(admin_password.clone()).await?;
    sqlx::query(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'admin')
         ON CONFLICT (lower(email)) DO UPDATE SET password_hash = EXCLUDED.password_hash",
    )
    .bind(ADMIN)
    .bind(&hash)
    .execute(&pool)
    .await?;
    let site = match sites::id_by_name(&pool, "Demo site").await? {
        Some(id) => id,
        None => sites::create(&pool, "Demo site", "Europe/Ljubljana").await?,
    };
    let gateway_password = demo_gateway(&pool, GATEWAY, site).await?;
    // A supply contract, so that the demo shows cost as well as energy.
    if crate::profiles::contracts::list(&pool, site)
        .await?
        .is_empty()
    {
        let contract = headend_energy::tariff::Contract::example_eur();
        let from = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
        crate::profiles::contracts::create(&pool, site, from, &contract)
            .await
            .map_err(|e| anyhow::anyhow!("demo contract: {e}"))?;
    }
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Ljubljana)
        .date_naive();
    let tomorrow = today.succ_opt().unwrap_or(today);
    let http = app.http_addr();
    let mqtt = app
        .mqtt_addr()
        .map_or_else(|| "(external broker)".into(), |a| a.to_string());
    let port = app.mqtt_addr().map_or(1883, |a| a.port());
    println!(
        "\nHeadend demo is running.\n\
         \n  Web:      http://{http}/   (log in with the admin below)\
         \n  API:      http://{http}/api/v1   (OpenAPI: http://{http}/api/v1/openapi.json)\
         \n  Login:    {ADMIN} / {admin_password}\
         \n            curl -s -X POST http://{http}/api/v1/auth/login -H 'content-type: application/json' \\\
         \n                 -d '{{\"email\":\"{ADMIN}\",\"password\":\"{admin_password}\"}}'\
         \n  MQTT:     {mqtt}   gateway {GATEWAY} / {gateway_password}\
         \n\nPublish a sample like an SG gateway would (from the repository root):\
         \n  mosquitto_pub -h 127.0.0.1 -p {port} -i {GATEWAY}-1 -u {GATEWAY} -P '{gateway_password}' -q 1 \\\
         \n      -t sg/{GATEWAY}/pub/measurements/ir -f ../shared/spec/sg-mqtt/measurements-ir.json\
         \nthen read it back:\
         \n  curl -s http://{http}/api/v1/devices/X0000124/latest -H 'authorization: Bearer <token from login>'\
         \nEnergy and cost of the demo site today, by meter:\
         \n  curl -s 'http://{http}/api/v1/sites/{site}/consumption?from={today}&to={tomorrow}&by=day&group=meter' \\\
         \n       -H 'authorization: Bearer <token>'\
"
    );
    Ok(())
}

/// Registers a demo gateway on `site`, or gives an existing one a fresh password (demo data
/// only: passwords are printed, so they are new on every start); returns the password.
async fn demo_gateway(pool: &sqlx::PgPool, serial: &str, site: i64) -> anyhow::Result<String> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    let updated = sqlx::query("UPDATE gateways SET password_hash = $2 WHERE serial = $1")
        .bind(serial)
        .bind(&hash)
        .execute(pool)
        .await?
        .rows_affected();
    if updated == 0 {
        gateways::create(
            pool,
            gateways::NewGateway {
                serial: serial.into(),
                password: Some(secret.clone()),
                site_id: Some(site),
                ..Default::default()
            },
            "Europe/Ljubljana",
        )
        .await?;
    }
    Ok(secret)
}

/// Gateways of the simulated demo fleet.
const DEMO_FLEET: u32 = 5;

/// Starts `sg-gateway fleet` (the companion firmware's simulator, built next to this binary)
/// with registered demo gateways, so that the demo shows live data at once.
async fn demo_fleet(
    app: &App,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<tokio::process::Child>> {
    let Some(mqtt) = app.mqtt_addr() else {
        return Ok(None);
    };
    let binary = std::env::current_exe()?.with_file_name("sg-gateway");
    if !binary.exists() {
        println!(
            "No simulated gateways: {} is missing (build it with `cargo build --release -p sg-gateway`).",
            binary.display()
        );
        return Ok(None);
    }
    let pool = app.pool();
    let site = sites::id_by_name(&pool, "Demo site")
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo site missing"))?;
    let mut lines = String::new();
    for n in 1..=DEMO_FLEET {
        let serial = format!("SGF{n:06}");
        let secret = demo_gateway(&pool, &serial, site).await?;
        lines.push_str(&format!("{serial} {secret}\n"));
    }
    let passwords = data_dir.join("demo-fleet.passwords");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&passwords)?;
        file.write_all(lines.as_bytes())?;
    }
    let child = tokio::process::Command::new(&binary)
        .args([
            "fleet",
            "--count",
            &DEMO_FLEET.to_string(),
            "--serial-prefix",
            "SGF",
        ])
        .arg("--password-file")
        .arg(&passwords)
        .args(["--broker", &format!("127.0.0.1:{}", mqtt.port())])
        .args([
            "--push-interval",
            "15",
            "--first-push-delay",
            "5",
            "--receipts",
            "--simulate",
        ])
        .arg("--state-dir")
        .arg(data_dir.join("demo-fleet"))
        .env("RUST_LOG", "warn")
        // The simulated gateways' clocks show the demo site's local time, as an SG's does.
        .env("TZ", "Europe/Ljubljana")
        .kill_on_drop(true)
        .spawn()?;
    println!(
        "Simulated gateways SGF000001..SGF{DEMO_FLEET:06} (companion firmware) push every 15 s: \
         see /api/v1/gateways and /api/v1/devices."
    );
    Ok(Some(child))
}

/// Runs `f` against the database of this data directory: the running serve's, the configured
/// external one, or the embedded cluster started just for this command.
async fn with_database<F, Fut>(config: &Config, f: F) -> anyhow::Result<()>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if let Some(url) = &config.database.url {
        let db = Database::attach(url.expose()).await?;
        let result = f(db.pool.clone()).await;
        db.close().await;
        return result;
    }
    let data = DataDir::prepare(&config.data_dir)?;
    match data.lock() {
        Ok(lock) => {
            // No serve is running: start the embedded cluster for this command only,
            // holding the lock so that no serve starts meanwhile.
            let db = Database::open(config, &data).await?;
            let result = f(db.pool.clone()).await;
            db.close().await;
            drop(lock);
            result
        }
        Err(crate::datadir::DataDirError::Busy { .. }) => {
            let url = wait_for_runtime(&data).await?;
            let db = Database::attach(&url).await?;
            let result = f(db.pool.clone()).await;
            db.close().await;
            result
        }
        Err(e) => Err(e.into()),
    }
}

/// A serve that has just taken the lock publishes its runtime file once its database is up.
async fn wait_for_runtime(data: &DataDir) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(url) = data.running().and_then(|r| r.embedded_database_url) {
            return Ok(url);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "a Headend holds {} but published no database address within 60 s",
                data.root().display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn healthcheck(config: &Config, url: Option<String>) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = match url {
        Some(url) => url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        None => DataDir::prepare(&config.data_dir)
            .ok()
            .and_then(|d| d.running())
            .map_or_else(|| config.http.addr.to_string(), |r| r.http_addr),
    };
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream
            .write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), check).await {
        Ok(Ok(response)) if response.starts_with("HTTP/1.1 200") => {
            println!("healthy ({addr})");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(response)) => {
            println!(
                "unhealthy ({addr}): {}",
                response.lines().next().unwrap_or("no status line")
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => {
            println!("unreachable ({addr}): {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            println!("no answer within 5 s ({addr})");
            Ok(ExitCode::FAILURE)
        }
    }
}
