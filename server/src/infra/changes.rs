//! Change notices between instances: triggers announce on channel `headend_changes` what
//! changed (migration `20261207000010_change_notices.sql`), and every instance reloads the
//! matching cache at once: the gateway directory, the converters, the alarm rules.
//!
//! A notice can be missed while the listening connection is down (PostgreSQL does not queue
//! them for a client that is not connected), so every (re)connection reloads everything; the
//! periodic reloads each cache has stay as the last resort.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;

pub const CHANNEL: &str = "headend_changes";

/// What a notice says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Gateways (credentials, topics, site, zone) or a site's zone: the ingest directory.
    Gateways,
    /// Converters or their polled devices: the Modbus supervisor.
    Converters,
    /// Alarm rules: the evaluator.
    AlarmRules,
}

impl Change {
    pub const ALL: [Change; 3] = [Change::Gateways, Change::Converters, Change::AlarmRules];

    pub fn parse(payload: &str) -> Option<Self> {
        match payload {
            "gateways" => Some(Self::Gateways),
            "converters" => Some(Self::Converters),
            "alarm_rules" => Some(Self::AlarmRules),
            _ => None,
        }
    }
}

/// A LISTEN connection of its own, outside `pool`: a listener holds its connection for as long
/// as it runs, and taken from the application's pool it would starve the work that pool is
/// sized for (ingest writers, the profile worker, the evaluator).
pub async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    PgListener::connect_with(&own).await
}

/// What to do on each kind of change (each call must be cheap: it wakes a task).
pub type OnChange = Arc<dyn Fn(Change) + Send + Sync>;

/// Listens until `shutdown`, reconnecting with backoff; reloads everything after each
/// (re)connection, since notices sent meanwhile are lost.
pub async fn listen(
    pool: PgPool,
    on_change: OnChange,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let connected = async {
            let mut listener = listener(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cannot listen for change notices; retried");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        backoff.reset();
        for change in Change::ALL {
            on_change(change);
        }
        loop {
            // `try_recv` answers `None` when the connection was lost (and listens again on a new
            // one): notices may have been missed meanwhile, so everything is reloaded.
            let received = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notice)) => match Change::parse(notice.payload()) {
                    Some(change) => on_change(change),
                    None => tracing::warn!(payload = notice.payload(), "unknown change notice"),
                },
                Ok(None) => {
                    tracing::warn!("change notices: connection lost and renewed; reloading all");
                    for change in Change::ALL {
                        on_change(change);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change notices: connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_changes() {
        assert_eq!(Change::parse("gateways"), Some(Change::Gateways));
        assert_eq!(Change::parse("converters"), Some(Change::Converters));
        assert_eq!(Change::parse("alarm_rules"), Some(Change::AlarmRules));
        assert_eq!(Change::parse("other"), None);
    }
}
