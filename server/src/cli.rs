//! The `headend` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::{password, users, Role};
use crate::config::Config;
use crate::infra::datadir::DataDir;
use crate::infra::db::Database;
use crate::zone::TimeZone;
use crate::{fleet::gateways, sites, App};

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
    /// Run Headend with two demo sites (a year of history, contracts, logins, an alarm rule)
    /// and a simulated fleet continuing it; print how to log in and publish (docs/demo.md).
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
    /// Work on an ingest journal left by an instance that is gone (docs/operations.md).
    Journal {
        #[command(subcommand)]
        command: crate::ingest::drain::JournalCommand,
    },
    /// Back up the embedded cluster and the journal into a new directory (docs/backup.md).
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
    /// Verify a backup and lay it down as a new data directory, ready for `serve`.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
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
        time_zone: Option<TimeZone>,
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
        /// IANA zone of the site's local days, e.g. Europe/Ljubljana.
        #[arg(long)]
        time_zone: TimeZone,
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
    crate::infra::telemetry::init(&config.log.filter, config.log.json);
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
            let default_zone = config.ingest.default_time_zone;
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
                    default_zone,
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
                let id = sites::create(&pool, &name, time_zone).await?;
                println!("site {name:?} created (id {id}, time zone {time_zone})");
                Ok(())
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => healthcheck(&config, url).await,
        Command::DefaultConfig => Ok(ExitCode::SUCCESS),
        Command::Journal {
            command: crate::ingest::drain::JournalCommand::Drain { dir },
        } => {
            // Opened (and locked) first: a journal a running Headend holds is refused at once.
            let journal = crate::ingest::drain::open(&dir).await?;
            let config = &config;
            with_database(config, |pool| async move {
                println!(
                    "{}",
                    crate::ingest::drain::drain(journal, pool, config).await?
                );
                Ok(())
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { to } => crate::infra::backup::backup_command(&config, &to).await,
        Command::Restore { from, data_dir } => {
            crate::infra::backup::restore_command(&config, &from, &data_dir).await
        }
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

async fn serve(mut config: Config, demo: bool) -> anyhow::Result<ExitCode> {
    if demo && config.xml_push.addr.is_none() {
        // The demo's XML push gateway needs a listener: a free loopback port unless one is set.
        config.xml_push.addr = Some(([127, 0, 0, 1], 0).into());
    }
    let data_dir = config.data_dir.clone();
    let app = App::build(config).await?;
    // Dropped (and so killed) when `serve` returns.
    let _fleet = if demo {
        let demo = demo_setup(&app).await?;
        demo_fleet(&app, &demo, &data_dir)?
    } else {
        Vec::new()
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

/// Builds the demo's sites, history, logins, alarm rule and relays (see [`crate::demo`])
/// and prints how to use them.
async fn demo_setup(app: &App) -> anyhow::Result<crate::demo::Demo> {
    let started = std::time::Instant::now();
    let pool = app.pool();
    let demo = crate::demo::setup(&pool, chrono::Utc::now()).await?;
    tracing::info!(
        readings = demo.readings,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "demo history written"
    );
    let gateway = crate::demo::SAMPLE_GATEWAY;
    let http = app.http_addr();
    let mqtt = app
        .mqtt_addr()
        .map_or_else(|| "(external broker)".into(), |a| a.to_string());
    let port = app.mqtt_addr().map_or(1883, |a| a.port());
    let mut logins = String::new();
    for login in &demo.logins {
        let sites = if login.role == crate::auth::Role::Admin {
            "every site".to_owned()
        } else {
            login.sites.join(", ")
        };
        logins.push_str(&format!(
            "\n  {:<9} {} / {}   ({sites})",
            format!("{}:", login.role.as_str()),
            login.email,
            login.password
        ));
    }
    let sites: Vec<String> = demo
        .sites
        .iter()
        .map(|(name, id)| format!("http://{http}/sites/{id}  ({name})"))
        .collect();
    let admin = &demo.logins[0];
    println!(
        "\nHeadend demo is running: two sites with history since {from} ({readings} counter readings \
         written now; the accounting finishes in the background, about 10 s).\n\
         \n  Web:      http://{http}/   (log in with one of the users below)\
         \n            {sites}\
         \n  Outbox:   http://{http}/admin/outbox   (alarm notifications; admin only)\
         \n  API:      http://{http}/api/v1   (OpenAPI: http://{http}/api/v1/openapi.json){logins}\
         \n  Token:    curl -s -X POST http://{http}/api/v1/auth/login -H 'content-type: application/json' \\\
         \n                 -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}'\
         \n  MQTT:     {mqtt}   gateway {gateway} / {sample}\
         \n\nPublish a sample like an SG gateway would (from the repository root):\
         \n  mosquitto_pub -h 127.0.0.1 -p {port} -i {gateway}-1 -u {gateway} -P '{sample}' -q 1 \\\
         \n      -t sg/{gateway}/pub/measurements/ir -f tests/fixtures/sg-mqtt/measurements-ir.json\
         \nthen read it back:\
         \n  curl -s http://{http}/api/v1/devices/X0000124/latest -H 'authorization: Bearer <token from login>'\
         \n\nTry: the site pages (day, month and year, costs, the previous period beside), the alarm \
         \n\"{rule}\" (raised within a minute of the first push), switching off the critical relay \
         \n\"Server room cooling\" as the operator and approving it as the admin.\
",
        from = demo.history_from,
        readings = demo.readings,
        sites = sites.join("\n            "),
        email = admin.email,
        password = admin.password,
        sample = demo.sample_password,
        rule = crate::demo::ALARM_RULE,
    );
    Ok(demo)
}

/// Starts `sg-gateway fleet` (the companion firmware's simulator, built next to this binary)
/// for the demo's gateways, so that the demo goes on live at once.
fn demo_fleet(
    app: &App,
    demo: &crate::demo::Demo,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<tokio::process::Child>> {
    let Some(mqtt) = app.mqtt_addr() else {
        return Ok(Vec::new());
    };
    let binary = std::env::current_exe()?.with_file_name("sg-gateway");
    if !binary.exists() {
        println!(
            "No simulated gateways: {} is missing (build it with `cargo build --release -p sg-gateway`).",
            binary.display()
        );
        return Ok(Vec::new());
    }
    let children =
        crate::demo::start_fleet(&binary, demo, mqtt.port(), app.xml_push_addr(), data_dir)?;
    println!(
        "Simulated gateways {p}000001..{p}000005 (companion firmware) push every 15 s, their \
         meters continuing the history: see /api/v1/gateways and /api/v1/devices.",
        p = crate::demo::FLEET_PREFIX
    );
    Ok(children)
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
        Err(crate::infra::datadir::DataDirError::Busy { .. }) => {
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
    let client = crate::infra::http::http_client(
        crate::infra::http::tls_config(None).map_err(anyhow::Error::msg)?,
        std::time::Duration::from_secs(5),
    )
    .map_err(anyhow::Error::msg)?;
    match client.get(format!("http://{addr}/healthz")).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => {
            println!("healthy ({addr})");
            Ok(ExitCode::SUCCESS)
        }
        Ok(response) => {
            println!("unhealthy ({addr}): {}", response.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) if e.is_timeout() => {
            println!("no answer within 5 s ({addr})");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!(
                "unreachable ({addr}): {}",
                crate::infra::http::error_chain(&e)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
