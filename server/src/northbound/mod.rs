//! Northbound publishing: sites' meters, energy registers and relays on an external MQTT
//! broker as Home Assistant MQTT discovery devices (docs/home-assistant.md).
//!
//! - [`settings`]: per-site settings (`northbound_sites`), set by admins, with the link's state.
//! - [`topics`]: topic layout and the sanitising of hostile identifiers.
//! - [`snapshot`]: what a site has to publish, read from the database.
//! - [`discovery`]: the discovery configs and states (pure).
//! - [`publisher`]: one connection per site: last will, backoff, publishing what changed.
//! - [`commands`]: switch commands into the relay command ledger.
//!
//! [`run`] supervises the links on the instance holding the `northbound` lease, so a site is
//! published by one instance at a time; it re-reads the settings every interval and restarts a
//! site's link when its settings change.

pub mod commands;
pub mod discovery;
pub mod publisher;
pub mod settings;
pub mod snapshot;
pub mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::northbound::NorthboundConfig;
use crate::infra::cluster::Leases;
use crate::relays::Timing;
use publisher::LinkContext;
use settings::SiteSettings;

/// The lease of the instance that publishes.
pub const LEASE: &str = "northbound";

/// The northbound task: returns at shutdown. Idle (no lease taken) without configured brokers.
pub async fn run(
    pool: PgPool,
    config: NorthboundConfig,
    timing: Timing,
    commands_wake: Arc<Notify>,
    leases: Leases,
    shutdown: CancellationToken,
) -> Result<(), String> {
    if config.brokers.is_empty() {
        shutdown.cancelled().await;
        return Ok(());
    }
    let ctx = LinkContext {
        pool,
        timing,
        commands_wake,
        interval: Duration::from_secs(config.interval_secs.max(1)),
    };
    crate::infra::cluster::run_while_held(&leases, LEASE, &shutdown, |lost| {
        supervise(ctx.clone(), config.clone(), lost)
    })
    .await
}

/// What a running link was started with: a change restarts it.
fn identity(s: &SiteSettings) -> (String, String, String, bool) {
    (
        s.broker.clone(),
        s.discovery_prefix.clone(),
        s.base_topic.clone(),
        s.commands,
    )
}

struct Running {
    identity: (String, String, String, bool),
    stop: CancellationToken,
    /// Set before `stop` when the site is no longer published at all (not when its settings
    /// changed: the next link may publish the same topics, and two connections' messages are
    /// not ordered).
    retire: Arc<AtomicBool>,
    task: tokio::task::Id,
}

async fn supervise(
    ctx: LinkContext,
    config: NorthboundConfig,
    lost: CancellationToken,
) -> Result<(), String> {
    let mut running: HashMap<i64, Running> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        match settings::enabled(&ctx.pool).await {
            Ok(sites) => {
                let wanted: HashMap<i64, SiteSettings> =
                    sites.into_iter().map(|s| (s.site_id, s)).collect();
                running.retain(|site, link| {
                    let still = wanted.get(site);
                    let keep = still.is_some_and(|s| identity(s) == link.identity);
                    if !keep {
                        link.retire.store(still.is_none(), Ordering::Release);
                        link.stop.cancel();
                    }
                    keep
                });
                for (site, s) in wanted {
                    if running.contains_key(&site) {
                        continue;
                    }
                    let Some(broker) = config.broker(&s.broker).cloned() else {
                        // Configured once, removed from the file since: said on the page.
                        let error =
                            format!("broker {:?} is no longer in the configuration", s.broker);
                        if let Err(e) =
                            settings::set_status(&ctx.pool, site, false, Some(&error)).await
                        {
                            tracing::warn!(site, error = %e, "northbound status not stored");
                        }
                        continue;
                    };
                    let stop = lost.child_token();
                    let retire = Arc::new(AtomicBool::new(false));
                    let identity = identity(&s);
                    let task = tasks
                        .spawn(publisher::run(
                            ctx.clone(),
                            s,
                            broker,
                            stop.clone(),
                            retire.clone(),
                        ))
                        .id();
                    running.insert(
                        site,
                        Running {
                            identity,
                            stop,
                            retire,
                            task,
                        },
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "northbound settings not read; retried"),
        }
        // Finished links (stopped above) are reaped here. One that ended by itself (a panic)
        // is forgotten, so the next round starts it again.
        while let Some(joined) = tasks.try_join_next_with_id() {
            let id = match joined {
                Ok((id, ())) => id,
                Err(e) => {
                    tracing::error!(error = %e, "northbound link failed; restarted");
                    e.id()
                }
            };
            running.retain(|_, link| link.task != id);
        }
        tokio::select! {
            () = lost.cancelled() => break,
            () = tokio::time::sleep(ctx.interval) => {}
        }
    }
    for link in running.values() {
        link.stop.cancel();
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
