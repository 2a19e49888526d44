//! Prometheus metrics through `prometheus-client`.
//!
//! Each metric is declared once, in the `metrics!` table below: the field callers count
//! through, the exposed name and the help. Every [`Metrics`] has its own [`Registry`] (several
//! apps run in one test process, so nothing is process-wide); `/metrics` encodes it in the
//! Prometheus text format 0.0.4, which Prometheus and `promtool check metrics` read.
//!
//! Labelled families live apart: `http` (by method, route and status), `modbus` (polls by
//! converter) and `database` (levels read from PostgreSQL at each scrape). `docs/metrics.md`
//! lists them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::{Metric, Registry};

use crate::ingest::normalize::Rows;
use crate::ingest::writer::Written;

mod database;
mod http;
mod modbus;

use database::Database;
use http::Http;
use modbus::Converters;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A monotonic count. `inc` and `add` return nothing, so every call site stays a statement.
#[derive(Debug, Default, Clone)]
pub struct Counter(PromCounter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
    /// Follows a total another component keeps: never goes back, even if two scrapes race.
    fn follow(&self, total: u64) {
        self.0.inner().fetch_max(total, Ordering::Relaxed);
    }
}

/// A latency histogram in seconds.
#[derive(Debug, Clone)]
pub struct Histogram(PromHistogram);

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// Buckets of the ingest and profile worker latencies (seconds).
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets of the ingest lag, receive to commit (seconds): milliseconds when healthy, up to
/// the hour a database outage can hold records in the journal.
const LAG_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Channels of [`Metrics::auth_throttled`], in index order.
pub const THROTTLE_CHANNELS: [&str; 3] = ["login", "mqtt", "xml_push"];

/// Kinds of [`Metrics::ingest_messages`], in index order.
const MESSAGE_KINDS: [&str; 6] = [
    "measurements",
    "counters",
    "bicom",
    "status",
    "log",
    "error",
];

/// prometheus-client adds the final full stop of a help text itself.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

fn register(registry: &mut Registry, name: &str, text: &str, metric: impl Metric) {
    registry.register(name, help(text), metric);
}

/// `name` is the exposed name, `_total` included (so that a grep finds it here);
/// prometheus-client wants it without and appends it when encoding.
fn counter(registry: &mut Registry, name: &str, text: &str) -> Counter {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    let counter = Counter::default();
    register(
        registry,
        name.strip_suffix("_total").unwrap_or(name),
        text,
        counter.0.clone(),
    );
    counter
}

fn histogram(registry: &mut Registry, name: &str, text: &str, bounds: &[f64]) -> Histogram {
    let histogram = Histogram(PromHistogram::new(bounds.iter().copied()));
    register(registry, name, text, histogram.0.clone());
    histogram
}

fn gauge(registry: &mut Registry, name: &str, text: &str) -> Gauge<u64, AtomicU64> {
    let gauge = Gauge::default();
    register(registry, name, text, gauge.clone());
    gauge
}

/// One counter family with a single label, every value created up front (so each series is
/// there from the start, at 0) and handed out by index.
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    text: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<[(&'static str, &'static str); 1], PromCounter>::default();
    register(
        registry,
        name.strip_suffix("_total").unwrap_or(name),
        text,
        family.clone(),
    );
    values.map(|value| Counter(family.get_or_create_owned(&[(label, value)])))
}

/// Declares every unlabelled metric once. `scraped` are the values other components keep
/// (journal, gate, pool): [`Gauges`] carries them to [`Metrics::render`], which copies them in.
macro_rules! metrics {
    (
        counters { $($counter:ident: $counter_name:literal, $counter_help:literal;)* }
        histograms { $($histogram:ident[$bounds:expr]: $histogram_name:literal, $histogram_help:literal;)* }
        scraped_gauges { $($gauge:ident: $gauge_name:literal, $gauge_help:literal;)* }
        scraped_totals { $($total:ident: $total_name:literal, $total_help:literal;)* }
    ) => {
        /// Every metric of one app; callers count through the fields.
        #[derive(Debug)]
        pub struct Metrics {
            $(#[doc = $counter_help] pub $counter: Counter,)*
            $(#[doc = $histogram_help] pub $histogram: Histogram,)*
            /// Gateway messages accepted, by kind ([`MESSAGE_KINDS`] order).
            pub ingest_messages: [Counter; MESSAGE_KINDS.len()],
            /// Password attempts refused by the brute-force throttle, by channel
            /// ([`THROTTLE_CHANNELS`] order: login, mqtt, xml_push).
            pub auth_throttled: [Counter; THROTTLE_CHANNELS.len()],
            http: Http,
            converters: Converters,
            database: Database,
            scraped: Scraped,
            registry: Registry,
        }

        /// Values read from other components at scrape time: levels, and totals they keep.
        #[derive(Debug, Default)]
        pub struct Gauges {
            $(#[doc = $gauge_help] pub $gauge: u64,)*
            $(#[doc = $total_help] pub $total: u64,)*
        }

        /// The registered metrics [`Gauges`] are copied into before each encoding.
        #[derive(Debug)]
        struct Scraped {
            $($gauge: Gauge<u64, AtomicU64>,)*
            $($total: Counter,)*
        }

        impl Scraped {
            fn register(registry: &mut Registry) -> Self {
                Self {
                    $($gauge: gauge(registry, $gauge_name, $gauge_help),)*
                    $($total: counter(registry, $total_name, $total_help),)*
                }
            }

            fn set(&self, values: &Gauges) {
                $(self.$gauge.set(values.$gauge);)*
                $(self.$total.follow(values.$total);)*
            }
        }

        impl Default for Metrics {
            fn default() -> Self {
                let mut registry = Registry::default();
                Self {
                    $($counter: counter(&mut registry, $counter_name, $counter_help),)*
                    $($histogram: histogram(
                        &mut registry,
                        $histogram_name,
                        $histogram_help,
                        $bounds,
                    ),)*
                    ingest_messages: labelled(
                        &mut registry,
                        "headend_ingest_messages_total",
                        "Gateway messages accepted, by kind.",
                        "kind",
                        MESSAGE_KINDS,
                    ),
                    auth_throttled: labelled(
                        &mut registry,
                        "headend_auth_throttled_total",
                        "Password attempts refused by the brute-force throttle, by channel.",
                        "channel",
                        THROTTLE_CHANNELS,
                    ),
                    http: Http::register(&mut registry),
                    converters: Converters::register(&mut registry),
                    database: Database::register(&mut registry),
                    scraped: Scraped::register(&mut registry),
                    registry,
                }
            }
        }
    };
}

metrics! {
    counters {
        journal_appended: "headend_journal_appended_total",
            "Records made durable in the ingest journal.";
        journal_append_errors: "headend_journal_append_errors_total",
            "Journal appends that failed (the gateway was not acknowledged).";
        journal_unreadable: "headend_journal_unreadable_total",
            "Journal records that could not be decoded.";
        modbus_polls: "headend_modbus_polls_total",
            "Modbus device polls answered.";
        modbus_poll_failures: "headend_modbus_poll_failures_total",
            "Modbus device polls without a valid answer (timeout, rejected reply, gateway exception).";
        modbus_exceptions: "headend_modbus_exceptions_total",
            "Modbus exception replies (01..04) of devices that answered.";
        ingest_measurements: "headend_ingest_measurement_rows_total",
            "Measurement rows committed.";
        // Was headend_ingest_counter_readings_total: promtool refuses a counter whose name
        // contains `_counter_`.
        ingest_counter_readings: "headend_ingest_register_readings_total",
            "Counter (energy register) readings committed.";
        ingest_relay_states: "headend_ingest_relay_states_total",
            "Relay state rows committed.";
        ingest_events: "headend_ingest_events_total",
            "Gateway events (hello, status, log, error) committed.";
        ingest_rejects: "headend_ingest_rejects_total",
            "Rejected messages kept with their reason (including partly accepted ones).";
        ingest_rejects_partial: "headend_ingest_rejects_partial_total",
            "Messages accepted in part, the rest refused with a reason.";
        db_batches: "headend_db_batches_total",
            "Ingest transactions committed.";
        db_errors: "headend_db_errors_total",
            "Ingest transactions that failed and were retried.";
        ingest_turn_yields: "headend_ingest_turn_yields_total",
            "Ingest transactions rolled back and redone to let an earlier batch commit first.";
        mqtt_auth_failures: "headend_mqtt_auth_failures_total",
            "MQTT connections refused for bad credentials or identity.";
        password_checks_shed: "headend_password_checks_shed_total",
            "Password checks shed because the bounded hashing pool was full.";
        profile_counters_quarantined: "headend_profile_counters_quarantined_total",
            "Counters the profile worker set aside after a failure (see energy_quarantine).";
        xml_documents_accepted: "headend_xml_documents_accepted_total",
            "MiSmart XML documents made durable and acknowledged.";
        xml_documents_refused: "headend_xml_documents_refused_total",
            "MiSmart XML documents or streams refused (kept in ingest_rejects).";
        alarms_raised: "headend_alarms_raised_total",
            "Alarms raised (new, or reopened before acknowledgement).";
        alarms_cleared: "headend_alarms_cleared_total",
            "Alarms cleared.";
        alarm_notifications_sent: "headend_alarm_notifications_sent_total",
            "Alarm outbox rows delivered (e-mail, webhook, MQTT, relay command).";
        alarm_notification_retries: "headend_alarm_notification_retries_total",
            "Alarm outbox deliveries that failed and were rescheduled.";
        alarm_notifications_failed: "headend_alarm_notifications_failed_total",
            "Alarm outbox rows given up (recorded in the alarm's history).";
        http_errors: "headend_http_server_errors_total",
            "HTTP requests answered with a 5xx status.";
        http_login_failures: "headend_http_login_failures_total",
            "Refused logins.";
        profile_counters: "headend_profile_counters_total",
            "Counter registers whose intervals and rollups the profile worker recomputed.";
        profile_intervals: "headend_profile_intervals_total",
            "15-minute intervals written by the profile worker.";
    }
    histograms {
        db_batch_seconds[LATENCY_BOUNDS]: "headend_db_batch_seconds",
            "Time to commit one ingest batch.";
        profile_step_seconds[LATENCY_BOUNDS]: "headend_profile_step_seconds",
            "Time of one profile worker step (intervals, rollups, site totals).";
        ingest_lag_seconds[LAG_BOUNDS]: "headend_ingest_lag_seconds",
            "Time from a gateway message's receipt to the commit of its rows, one observation per message.";
    }
    scraped_gauges {
        journal_pending_records: "headend_journal_pending_records",
            "Records in the journal not yet committed to PostgreSQL.";
        journal_bytes: "headend_journal_bytes",
            "Bytes of journal segments on disk.";
        journal_last_seq: "headend_journal_last_seq",
            "Sequence number of the newest journal record.";
        journal_checkpoint: "headend_journal_checkpoint",
            "Every journal record up to this sequence number is committed.";
        mqtt_connections: "headend_mqtt_connections",
            "Open MQTT client connections.";
        db_pool_size: "headend_db_pool_connections",
            "Open database connections.";
        db_pool_idle: "headend_db_pool_idle",
            "Idle database connections.";
    }
    scraped_totals {
        mqtt_publishes_denied: "headend_mqtt_publishes_denied_total",
            "PUBLISH packets refused by the topic ACL.";
        mqtt_violations_not_journaled: "headend_mqtt_violations_not_journaled_total",
            "MQTT rule violations over the per-client rate limit: logged, not stored.";
    }
}

impl Metrics {
    /// Counts a committed ingest batch; call it right after the commit, since the ingest lag
    /// of each message is measured up to now.
    pub fn record_written(&self, rows: &Rows, written: &Written, took: Duration) {
        self.db_batches.inc();
        self.db_batch_seconds.observe(took);
        let committed = Utc::now();
        for received_at in messages_received(rows) {
            // A receive time after the commit is another clock's (an instance whose clock is
            // ahead wrote the journal record): counted as no lag, not as a negative one.
            let lag = (committed - received_at).to_std().unwrap_or_default();
            self.ingest_lag_seconds.observe(lag);
        }
        self.ingest_measurements.add(written.measurements);
        self.ingest_counter_readings.add(written.counter_readings);
        self.ingest_relay_states.add(written.relay_states);
        self.ingest_events.add(written.events);
        self.ingest_rejects.add(written.rejects);
        self.ingest_rejects_partial
            .add(rows.rejects.iter().filter(|r| r.partial).count() as u64);
        for (kind, n) in &rows.accepted {
            if let Some(i) = MESSAGE_KINDS.iter().position(|k| k == kind) {
                self.ingest_messages[i].add(*n);
            }
        }
    }

    /// Counts one poll of a device behind Modbus converter `converter` (its name), in the
    /// totals and in the converter's own series.
    pub fn record_modbus_poll(&self, converter: &str, answered: bool) {
        if answered {
            self.modbus_polls.inc();
        } else {
            self.modbus_poll_failures.inc();
        }
        self.converters.record(converter, answered);
    }

    pub fn record_profiles(&self, counters: u64, intervals: u64, took: Duration) {
        self.profile_counters.add(counters);
        self.profile_intervals.add(intervals);
        self.profile_step_seconds.observe(took);
    }

    /// The exposition ([`CONTENT_TYPE`]), with `gauges` as the values read at this scrape.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.scraped.set(gauges);
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; the encoder's own errors are none for our types.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The receive time of each message that gave rows to the batch, once per message (journal
/// sequence): a counters document of twenty registers is one message, not twenty.
fn messages_received(rows: &Rows) -> impl Iterator<Item = DateTime<Utc>> {
    let mut seen: Vec<(i64, DateTime<Utc>)> = rows
        .measurements
        .iter()
        .map(|r| (r.seq, r.received_at))
        .chain(rows.counter_readings.iter().map(|r| (r.seq, r.received_at)))
        .chain(rows.relay_states.iter().map(|r| (r.seq, r.received_at)))
        .chain(rows.events.iter().map(|r| (r.seq, r.received_at)))
        .chain(rows.rejects.iter().map(|r| (r.seq, r.received_at)))
        .collect();
    seen.sort_unstable_by_key(|(seq, _)| *seq);
    seen.dedup_by_key(|(seq, _)| *seq);
    seen.into_iter().map(|(_, at)| at)
}

#[cfg(test)]
mod tests;
