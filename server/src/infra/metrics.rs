//! Prometheus metrics: plain atomics rendered in the text exposition format.
//!
//! A handful of counters does not justify a metrics framework; everything here is lock-free on
//! the hot path and rendered only when `/metrics` is scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ingest::normalize::Rows;
use crate::ingest::writer::Written;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency histogram with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug)]
pub struct Metrics {
    pub journal_appended: Counter,
    pub journal_append_errors: Counter,
    pub journal_unreadable: Counter,
    pub ingest_measurements: Counter,
    pub ingest_counter_readings: Counter,
    pub ingest_relay_states: Counter,
    pub ingest_events: Counter,
    pub ingest_rejects: Counter,
    pub ingest_rejects_partial: Counter,
    pub ingest_messages: [Counter; 6],
    pub db_batches: Counter,
    pub db_errors: Counter,
    pub db_batch_seconds: Histogram,
    pub mqtt_auth_failures: Counter,
    /// Password attempts refused by the brute-force throttle, by channel
    /// ([`THROTTLE_CHANNELS`]: login, mqtt, xml_push).
    pub auth_throttled: [Counter; 3],
    /// Password checks shed because the bounded hashing pool was full.
    pub password_checks_shed: Counter,
    /// Counters the profile worker set aside after a failure it could not get past.
    pub profile_counters_quarantined: Counter,
    /// Modbus polls answered, polls failed (timeout, rejected reply, gateway exception), and
    /// exception replies (01..04) of devices that answered.
    pub modbus_polls: Counter,
    pub modbus_poll_failures: Counter,
    pub modbus_exceptions: Counter,
    pub xml_documents_accepted: Counter,
    pub xml_documents_refused: Counter,
    pub http_requests: Counter,
    pub http_errors: Counter,
    pub http_login_failures: Counter,
    pub profile_counters: Counter,
    pub profile_intervals: Counter,
    pub profile_step_seconds: Histogram,
    pub alarms_raised: Counter,
    pub alarms_cleared: Counter,
    pub alarm_notifications_sent: Counter,
    pub alarm_notification_retries: Counter,
    pub alarm_notifications_failed: Counter,
}

/// Channels of [`Metrics::auth_throttled`], in index order.
pub const THROTTLE_CHANNELS: [&str; 3] = ["login", "mqtt", "xml_push"];

const MESSAGE_KINDS: [&str; 6] = [
    "measurements",
    "counters",
    "bicom",
    "status",
    "log",
    "error",
];

impl Default for Metrics {
    fn default() -> Self {
        Self {
            journal_appended: Counter::default(),
            journal_append_errors: Counter::default(),
            journal_unreadable: Counter::default(),
            modbus_polls: Counter::default(),
            modbus_poll_failures: Counter::default(),
            modbus_exceptions: Counter::default(),
            ingest_measurements: Counter::default(),
            ingest_counter_readings: Counter::default(),
            ingest_relay_states: Counter::default(),
            ingest_events: Counter::default(),
            ingest_rejects: Counter::default(),
            ingest_rejects_partial: Counter::default(),
            ingest_messages: Default::default(),
            db_batches: Counter::default(),
            db_errors: Counter::default(),
            db_batch_seconds: Histogram::new(LATENCY_BOUNDS),
            mqtt_auth_failures: Counter::default(),
            auth_throttled: Default::default(),
            password_checks_shed: Counter::default(),
            profile_counters_quarantined: Counter::default(),
            xml_documents_accepted: Counter::default(),
            xml_documents_refused: Counter::default(),
            http_requests: Counter::default(),
            http_errors: Counter::default(),
            http_login_failures: Counter::default(),
            profile_counters: Counter::default(),
            profile_intervals: Counter::default(),
            profile_step_seconds: Histogram::new(LATENCY_BOUNDS),
            alarms_raised: Counter::default(),
            alarms_cleared: Counter::default(),
            alarm_notifications_sent: Counter::default(),
            alarm_notification_retries: Counter::default(),
            alarm_notifications_failed: Counter::default(),
        }
    }
}

/// Values read from other components at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    pub journal_pending_records: u64,
    pub journal_bytes: u64,
    pub journal_last_seq: u64,
    pub journal_checkpoint: u64,
    pub mqtt_connections: u64,
    pub mqtt_publishes_denied: u64,
    pub mqtt_violations_not_journaled: u64,
    pub db_pool_size: u64,
    pub db_pool_idle: u64,
}

impl Metrics {
    pub fn record_written(&self, rows: &Rows, written: &Written, took: Duration) {
        self.db_batches.inc();
        self.db_batch_seconds.observe(took);
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

    pub fn record_profiles(&self, counters: u64, intervals: u64, took: Duration) {
        self.profile_counters.add(counters);
        self.profile_intervals.add(intervals);
        self.profile_step_seconds.observe(took);
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "headend_journal_appended_total",
            "Records made durable in the ingest journal.",
            self.journal_appended.get(),
        );
        counter(
            "headend_journal_append_errors_total",
            "Journal appends that failed (the gateway was not acknowledged).",
            self.journal_append_errors.get(),
        );
        counter(
            "headend_modbus_polls_total",
            "Modbus device polls answered.",
            self.modbus_polls.get(),
        );
        counter(
            "headend_modbus_poll_failures_total",
            "Modbus device polls without a valid answer (timeout, rejected reply, gateway exception).",
            self.modbus_poll_failures.get(),
        );
        counter(
            "headend_modbus_exceptions_total",
            "Modbus exception replies (01..04) of devices that answered.",
            self.modbus_exceptions.get(),
        );
        counter(
            "headend_journal_unreadable_total",
            "Journal records that could not be decoded.",
            self.journal_unreadable.get(),
        );
        counter(
            "headend_ingest_measurement_rows_total",
            "Measurement rows committed.",
            self.ingest_measurements.get(),
        );
        counter(
            "headend_ingest_counter_readings_total",
            "Counter readings committed.",
            self.ingest_counter_readings.get(),
        );
        counter(
            "headend_ingest_relay_states_total",
            "Relay state rows committed.",
            self.ingest_relay_states.get(),
        );
        counter(
            "headend_ingest_events_total",
            "Gateway events (hello, status, log, error) committed.",
            self.ingest_events.get(),
        );
        counter(
            "headend_ingest_rejects_total",
            "Rejected messages kept with their reason (including partly accepted ones).",
            self.ingest_rejects.get(),
        );
        counter(
            "headend_ingest_rejects_partial_total",
            "Messages accepted in part, the rest refused with a reason.",
            self.ingest_rejects_partial.get(),
        );
        counter(
            "headend_db_batches_total",
            "Ingest transactions committed.",
            self.db_batches.get(),
        );
        counter(
            "headend_db_errors_total",
            "Ingest transactions that failed and were retried.",
            self.db_errors.get(),
        );
        counter(
            "headend_mqtt_auth_failures_total",
            "MQTT connections refused for bad credentials or identity.",
            self.mqtt_auth_failures.get(),
        );
        counter(
            "headend_password_checks_shed_total",
            "Password checks shed because the bounded hashing pool was full.",
            self.password_checks_shed.get(),
        );
        counter(
            "headend_profile_counters_quarantined_total",
            "Counters the profile worker set aside after a failure (see energy_quarantine).",
            self.profile_counters_quarantined.get(),
        );
        counter(
            "headend_xml_documents_accepted_total",
            "MiSmart XML documents made durable and acknowledged.",
            self.xml_documents_accepted.get(),
        );
        counter(
            "headend_xml_documents_refused_total",
            "MiSmart XML documents or streams refused (kept in ingest_rejects).",
            self.xml_documents_refused.get(),
        );
        counter(
            "headend_alarms_raised_total",
            "Alarms raised (new, or reopened before acknowledgement).",
            self.alarms_raised.get(),
        );
        counter(
            "headend_alarms_cleared_total",
            "Alarms cleared.",
            self.alarms_cleared.get(),
        );
        counter(
            "headend_alarm_notifications_sent_total",
            "Alarm outbox rows delivered (e-mail, webhook, MQTT, relay command).",
            self.alarm_notifications_sent.get(),
        );
        counter(
            "headend_alarm_notification_retries_total",
            "Alarm outbox deliveries that failed and were rescheduled.",
            self.alarm_notification_retries.get(),
        );
        counter(
            "headend_alarm_notifications_failed_total",
            "Alarm outbox rows given up (recorded in the alarm's history).",
            self.alarm_notifications_failed.get(),
        );
        counter(
            "headend_http_requests_total",
            "HTTP requests served.",
            self.http_requests.get(),
        );
        counter(
            "headend_http_server_errors_total",
            "HTTP requests answered with a 5xx status.",
            self.http_errors.get(),
        );
        counter(
            "headend_http_login_failures_total",
            "Refused logins.",
            self.http_login_failures.get(),
        );
        counter(
            "headend_profile_counters_total",
            "Counter registers whose intervals and rollups the profile worker recomputed.",
            self.profile_counters.get(),
        );
        counter(
            "headend_profile_intervals_total",
            "15-minute intervals written by the profile worker.",
            self.profile_intervals.get(),
        );
        let _ = writeln!(
            out,
            "# HELP headend_ingest_messages_total Gateway messages accepted, by kind.\n# TYPE headend_ingest_messages_total counter"
        );
        for (kind, c) in MESSAGE_KINDS.iter().zip(&self.ingest_messages) {
            let _ = writeln!(
                out,
                "headend_ingest_messages_total{{kind=\"{kind}\"}} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP headend_auth_throttled_total Password attempts refused by the brute-force throttle.\n# TYPE headend_auth_throttled_total counter"
        );
        for (channel, n) in THROTTLE_CHANNELS.iter().zip(&self.auth_throttled) {
            let _ = writeln!(
                out,
                "headend_auth_throttled_total{{channel=\"{channel}\"}} {}",
                n.get()
            );
        }
        self.db_batch_seconds.render(
            &mut out,
            "headend_db_batch_seconds",
            "Time to commit one ingest batch.",
        );
        self.profile_step_seconds.render(
            &mut out,
            "headend_profile_step_seconds",
            "Time of one profile worker step (intervals, rollups, site totals).",
        );
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "headend_journal_pending_records",
            "Records in the journal not yet committed to PostgreSQL.",
            gauges.journal_pending_records,
        );
        gauge(
            "headend_journal_bytes",
            "Bytes of journal segments on disk.",
            gauges.journal_bytes,
        );
        gauge(
            "headend_journal_last_seq",
            "Sequence number of the newest journal record.",
            gauges.journal_last_seq,
        );
        gauge(
            "headend_journal_checkpoint",
            "Every journal record up to this sequence number is committed.",
            gauges.journal_checkpoint,
        );
        gauge(
            "headend_mqtt_connections",
            "Open MQTT client connections.",
            gauges.mqtt_connections,
        );
        gauge(
            "headend_mqtt_publishes_denied",
            "PUBLISH packets refused by the topic ACL since start.",
            gauges.mqtt_publishes_denied,
        );
        gauge(
            "headend_mqtt_violations_not_journaled",
            "MQTT rule violations over the per-client rate limit: logged, not stored.",
            gauges.mqtt_violations_not_journaled,
        );
        gauge(
            "headend_db_pool_connections",
            "Open database connections.",
            gauges.db_pool_size,
        );
        gauge(
            "headend_db_pool_idle",
            "Idle database connections.",
            gauges.db_pool_idle,
        );
        out
    }
}
