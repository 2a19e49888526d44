//! One site's link to its broker: a rumqttc client with the site's availability topic as its
//! last will, reconnecting with backoff; every `interval` it reads the site's snapshot and
//! publishes what changed since the last publish on this connection (everything after a
//! reconnect); relay commands arrive on the site's command topics.
//!
//! States are polled rather than pushed from ingest's commit: the publisher then costs three
//! small queries per site per interval whatever the ingest rate, works on whichever instance
//! holds the `northbound` lease (ingest commits on every instance), and leaves the ingest path
//! untouched. A relay's state is re-read at once after a command, so a refused command is
//! answered by the unchanged state without waiting for the tick.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{self, Outcome};
use super::discovery::{self, device_key};
use super::settings::{self, SiteSettings};
use super::snapshot;
use super::topics::SiteTopics;
use crate::config::northbound::BrokerConfig;
use crate::infra::backoff::Backoff;
use crate::relays::Timing;

/// What a site's link needs besides its settings.
#[derive(Clone)]
pub struct LinkContext {
    pub pool: PgPool,
    pub timing: Timing,
    pub commands_wake: Arc<Notify>,
    pub interval: Duration,
}

/// At most this many command messages per minute are handled for one site: an account that
/// floods the command topics can neither fill the ledger (every command is a row) nor the log,
/// nor keep the publisher reading snapshots. Home Assistant sends one per click.
const COMMANDS_PER_MINUTE: usize = 30;

/// The sliding one-minute window of [`COMMANDS_PER_MINUTE`].
#[derive(Default)]
struct CommandBudget {
    admitted: VecDeque<Instant>,
    /// Messages dropped since the last one admitted (logged once per burst).
    dropped: u64,
}

impl CommandBudget {
    const WINDOW: Duration = Duration::from_secs(60);

    /// Whether a command message arriving at `now` is handled.
    fn admit(&mut self, now: Instant) -> bool {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Self::WINDOW)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= COMMANDS_PER_MINUTE {
            self.dropped += 1;
            return false;
        }
        self.admitted.push_back(now);
        self.dropped = 0;
        true
    }
}

/// What the connection task tells the publisher.
enum Link {
    Connected,
    Lost(String),
    Command(rumqttc::Publish),
}

/// Runs one site's link until `stop`.
/// Runs one site's link until `stop`. When `retire` is set by then (the site was disabled),
/// the link removes what it published (Home Assistant's convention: an empty retained config
/// deletes the entity) instead of only saying `offline`.
pub async fn run(
    ctx: LinkContext,
    site: SiteSettings,
    broker: BrokerConfig,
    stop: CancellationToken,
    retire: Arc<AtomicBool>,
) {
    let span = tracing::info_span!("northbound", site = site.site_id, broker = %broker.name);
    async move {
        let topics = SiteTopics {
            discovery_prefix: site.discovery_prefix.clone(),
            base: site.base_topic.clone(),
        };
        let options = match options(&site, &broker, &topics) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "northbound broker unusable");
                status(&ctx.pool, site.site_id, false, Some(&e)).await;
                stop.cancelled().await;
                return;
            }
        };
        let (client, eventloop) = AsyncClient::new(options, 512);
        let (tx, mut rx) = mpsc::channel(64);
        let connection = tokio::spawn(drive(eventloop, tx, stop.clone()).in_current_span());
        let mut publisher = Publisher {
            ctx: ctx.clone(),
            site,
            broker_name: broker.name.clone(),
            topics,
            client,
            published: HashMap::new(),
            connected: false,
            budget: CommandBudget::default(),
        };
        let mut tick = tokio::time::interval(ctx.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                event = rx.recv() => match event {
                    Some(Link::Connected) => publisher.connected().await,
                    Some(Link::Lost(error)) => {
                        publisher.connected = false;
                        status(&ctx.pool, publisher.site.site_id, false, Some(&error)).await;
                    }
                    Some(Link::Command(p)) => publisher.command(p).await,
                    None => break,
                },
                _ = tick.tick(), if publisher.connected => publisher.sync().await,
            }
        }
        publisher.goodbye(retire.load(Ordering::Acquire)).await;
        let _ = connection.await;
    }
    .instrument(span)
    .await
}

/// Options of the site's client: credentials, TLS, and the last will `offline` (retained) on
/// the availability topic, so Home Assistant marks the site unavailable when the link dies.
fn options(
    site: &SiteSettings,
    broker: &BrokerConfig,
    topics: &SiteTopics,
) -> Result<MqttOptions, String> {
    let address = broker.address()?;
    let client_id = format!("{}-site{}", broker.client_id_prefix, site.site_id);
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    options.set_last_will(LastWill::new(
        topics.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &broker.username {
        let password = broker
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    if address.tls {
        let pem = crate::infra::http::ca_pem(broker.ca_file.as_deref())?;
        let tls = crate::infra::http::tls_config(pem.as_deref())?;
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
    }
    Ok(options)
}

/// Room kept in the link's channel for connects and losses when commands pile up.
const LINK_RESERVE: usize = 8;

/// Polls the connection: reports connects, losses (with a clear reason) and commands, and
/// waits with backoff before each reconnect.
async fn drive(mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<Link>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => {
                // Lets the goodbye (offline, disconnect) out before the socket closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while eventloop.poll().await.is_ok() {}
                }).await;
                return;
            }
            event = eventloop.poll() => event,
        };
        let link = match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                backoff.reset();
                Link::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // Never waits for a busy publisher: it may itself be waiting for this loop to
                // take its publishes, so a burst of commands is dropped here instead, keeping
                // room for the link's own news.
                if tx.capacity() <= LINK_RESERVE {
                    tracing::debug!(topic = ?p.topic, "relay command dropped: publisher busy");
                } else if tx.try_send(Link::Command(p)).is_err() {
                    return;
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                let reason = explain(&e);
                let wait = backoff.next_delay();
                tracing::error!(error = %reason, retry_in_ms = wait.as_millis() as u64, "northbound broker connection failed");
                if tx.send(Link::Lost(reason)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        if tx.send(link).await.is_err() {
            return;
        }
    }
}

/// A connection error in words an operator can act on.
fn explain(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => format!("the broker refused the credentials ({code:?}): check username and password of this broker in [[northbound.brokers]]"),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        other => format!("cannot reach the broker: {other}"),
    }
}

async fn status(pool: &PgPool, site: i64, connected: bool, error: Option<&str>) {
    if let Err(e) = settings::set_status(pool, site, connected, error).await {
        tracing::warn!(error = %e, "northbound status not stored");
    }
}

struct Publisher {
    ctx: LinkContext,
    site: SiteSettings,
    broker_name: String,
    topics: SiteTopics,
    client: AsyncClient,
    /// What this connection published, by topic: only changes are published again.
    published: HashMap<String, String>,
    connected: bool,
    budget: CommandBudget,
}

impl Publisher {
    async fn connected(&mut self) {
        tracing::info!("connected to northbound broker");
        self.connected = true;
        // A clean session: everything is published again, the subscription renewed.
        self.published.clear();
        if self.site.commands {
            if let Err(e) = self
                .client
                .subscribe(self.topics.command_filter(), QoS::AtLeastOnce)
                .await
            {
                tracing::warn!(error = %e, "command subscription not sent");
            }
        }
        self.publish(self.topics.availability(), "online".into())
            .await;
        status(&self.ctx.pool, self.site.site_id, true, None).await;
        self.sync().await;
    }

    /// Publishes every message whose payload changed; removes the configs of entities gone.
    async fn sync(&mut self) {
        let snapshot = match snapshot::load(&self.ctx.pool, self.site.site_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "northbound snapshot not read; retried next tick");
                return;
            }
        };
        let messages = discovery::messages(&self.topics, self.site.commands, &snapshot);
        let gone: Vec<String> = self
            .published
            .iter()
            .filter(|(topic, payload)| {
                topic.ends_with("/config")
                    && !payload.is_empty()
                    && !messages.iter().any(|m| &m.topic == *topic)
            })
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in gone {
            self.publish(topic, String::new()).await;
        }
        for m in messages {
            if self.published.get(&m.topic) != Some(&m.payload) {
                self.publish(m.topic, m.payload).await;
            }
        }
    }

    /// Retained, at least once: configs and states are what Home Assistant reads at its start.
    async fn publish(&mut self, topic: String, payload: String) {
        match self
            .client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                true,
                payload.clone().into_bytes(),
            )
            .await
        {
            Ok(()) => {
                self.published.insert(topic, payload);
            }
            Err(e) => tracing::warn!(%topic, error = %e, "northbound publish not queued"),
        }
    }

    async fn command(&mut self, p: rumqttc::Publish) {
        // A read-only site subscribes to nothing; whatever arrives anyway is not a command.
        if !self.site.commands {
            return;
        }
        if !self.budget.admit(Instant::now()) {
            if self.budget.dropped == 1 {
                tracing::warn!(
                    per_minute = COMMANDS_PER_MINUTE,
                    "relay commands from the broker come too fast: dropped until the rate falls"
                );
            }
            return;
        }
        let topic = p.topic.clone();
        // A retained command would switch again at every reconnect: never obeyed. (Topics from
        // the broker are logged quoted, `?`: one may hold a line break.)
        if p.retain {
            tracing::warn!(?topic, "retained relay command ignored");
            return;
        }
        let Some(key) = self.topics.command_key(&topic) else {
            return;
        };
        let relay = match snapshot::load(&self.ctx.pool, self.site.site_id).await {
            Ok(s) => s.relays.into_iter().find(|r| device_key(&r.device) == key),
            Err(e) => {
                tracing::warn!(error = %e, "relay command not handled: snapshot not read");
                return;
            }
        };
        let Some(relay) = relay else {
            tracing::warn!(key, "command for an unknown relay ignored");
            return;
        };
        let Some(action) = commands::parse_action(&p.payload) else {
            tracing::warn!(key, "relay command ignored: payload is not ON or OFF");
            return;
        };
        let outcome = commands::request(
            &self.ctx.pool,
            &self.ctx.timing,
            self.site.site_id,
            &self.broker_name,
            relay.device.id,
            action,
        )
        .await;
        match outcome {
            Ok(Outcome::Created(id)) => {
                tracing::info!(
                    command = id,
                    relay = relay.device.id,
                    ?action,
                    "relay command from Home Assistant"
                );
                self.ctx.commands_wake.notify_one();
            }
            Ok(Outcome::Refused(why)) => {
                tracing::warn!(relay = relay.device.id, ?action, reason = %why, "relay command from Home Assistant refused");
            }
            Ok(Outcome::Ignored(why)) => {
                tracing::warn!(relay = relay.device.id, reason = %why, "relay command ignored")
            }
            Err(e) => {
                tracing::error!(relay = relay.device.id, error = %e, "relay command not stored")
            }
        }
        // The switch shows the reported state: published again, so Home Assistant shows the
        // relay as it is (unchanged after a refusal or while a command waits).
        self.published.remove(
            &self
                .topics
                .state("relay", &device_key(&relay.device), "state"),
        );
        self.sync().await;
    }

    /// `offline` (retained) before a clean disconnect: the last will covers only a broken link.
    /// A retired site first empties every retained config and state it published, configs
    /// first, so Home Assistant deletes its entities rather than keep them unavailable.
    async fn goodbye(&mut self, retire: bool) {
        if self.connected && retire {
            let availability = self.topics.availability();
            let mut topics: Vec<String> = self
                .published
                .iter()
                .filter(|(topic, payload)| !payload.is_empty() && **topic != availability)
                .map(|(topic, _)| topic.clone())
                .collect();
            topics.sort_by_key(|t| !t.ends_with("/config"));
            for topic in topics {
                self.publish(topic, String::new()).await;
            }
            tracing::info!("site no longer published: its entities removed from the broker");
        }
        if self.connected {
            let _ = self
                .client
                .publish(
                    self.topics.availability(),
                    QoS::AtLeastOnce,
                    true,
                    "offline",
                )
                .await;
        }
        let _ = self.client.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_limited_per_minute() {
        let mut budget = CommandBudget::default();
        let start = Instant::now();
        for i in 0..COMMANDS_PER_MINUTE {
            assert!(budget.admit(start + Duration::from_millis(i as u64)), "{i}");
        }
        assert!(!budget.admit(start + Duration::from_secs(1)));
        assert!(!budget.admit(start + Duration::from_secs(59)));
        assert_eq!(budget.dropped, 2);
        // A minute after the first, one more fits.
        assert!(budget.admit(start + Duration::from_secs(60)));
        assert_eq!(budget.dropped, 0);
        assert!(!budget.admit(start + Duration::from_secs(60)));
    }
}
