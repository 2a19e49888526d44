//! The registry's encoding, as promtool and Prometheus read it.

use super::*;

fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == series).then_some(value)
    })
}

#[test]
fn every_metric_has_help_and_type_and_counters_end_in_total() {
    let text = Metrics::default().render(&Gauges::default());
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line[7..].split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
        assert!(!text.contains(".. ") && !text.contains("..\n"), "{text}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
        families += 1;
    }
    assert!(families >= 40, "{families} families:\n{text}");
}

#[test]
fn the_fields_count_into_their_series() {
    let metrics = Metrics::default();
    metrics.ingest_rejects.add(2);
    metrics.auth_throttled[1].inc();
    metrics.ingest_messages[0].add(3);
    metrics.db_batch_seconds.observe(Duration::from_millis(3));
    let text = metrics.render(&Gauges {
        journal_checkpoint: 42,
        mqtt_publishes_denied: 7,
        ..Gauges::default()
    });
    assert_eq!(value(&text, "headend_ingest_rejects_total"), Some("2"));
    let mqtt = "headend_auth_throttled_total{channel=\"mqtt\"}";
    assert_eq!(value(&text, mqtt), Some("1"));
    let login = "headend_auth_throttled_total{channel=\"login\"}";
    assert_eq!(value(&text, login), Some("0"));
    let kind = "headend_ingest_messages_total{kind=\"measurements\"}";
    assert_eq!(value(&text, kind), Some("3"));
    let bucket = "headend_db_batch_seconds_bucket{le=\"0.005\"}";
    assert_eq!(value(&text, bucket), Some("1"));
    assert_eq!(value(&text, "headend_journal_checkpoint"), Some("42"));
    assert_eq!(
        value(&text, "headend_mqtt_publishes_denied_total"),
        Some("7")
    );
}

#[test]
fn totals_kept_elsewhere_never_go_back() {
    let metrics = Metrics::default();
    let scrape = |n| {
        let text = metrics.render(&Gauges {
            mqtt_violations_not_journaled: n,
            ..Gauges::default()
        });
        let series = "headend_mqtt_violations_not_journaled_total";
        value(&text, series).map(str::to_owned)
    };
    assert_eq!(scrape(5).as_deref(), Some("5"));
    assert_eq!(scrape(3).as_deref(), Some("5"));
    assert_eq!(scrape(9).as_deref(), Some("9"));
}

#[test]
fn http_requests_are_labelled_by_route_and_status() {
    let metrics = Metrics::default();
    let took = Duration::from_millis(2);
    metrics.record_http("GET", "/api/v1/sites/{id}", Some(200), took);
    metrics.record_http("GET", "/api/v1/sites/{id}", Some(200), took);
    metrics.record_http("POST", "unmatched", Some(503), took);
    metrics.record_http("GET", "/metrics", None, took);
    let text = metrics.render(&Gauges::default());
    let ok =
        "headend_http_requests_total{method=\"GET\",route=\"/api/v1/sites/{id}\",status=\"200\"}";
    assert_eq!(value(&text, ok), Some("2"), "{text}");
    let failed = "headend_http_requests_total{method=\"POST\",route=\"unmatched\",status=\"503\"}";
    assert_eq!(value(&text, failed), Some("1"));
    let cancelled =
        "headend_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"cancelled\"}";
    assert_eq!(value(&text, cancelled), Some("1"));
    assert_eq!(value(&text, "headend_http_server_errors_total"), Some("1"));
    let count =
        "headend_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/sites/{id}\"}";
    assert_eq!(value(&text, count), Some("2"));
}

#[test]
fn two_apps_count_apart() {
    let (a, b) = (Metrics::default(), Metrics::default());
    a.db_errors.inc();
    assert_eq!((a.db_errors.get(), b.db_errors.get()), (1, 0));
    let text = b.render(&Gauges::default());
    assert_eq!(value(&text, "headend_db_errors_total"), Some("0"));
}

#[test]
fn ingest_lag_is_observed_once_per_message() {
    use crate::ingest::normalize::EventRow;
    let metrics = Metrics::default();
    let event = |seq, ago: i64| EventRow {
        gateway_id: 1,
        kind: "log",
        received_at: Utc::now() - chrono::Duration::seconds(ago),
        body: String::new(),
        seq,
    };
    let rows = Rows {
        // Two rows of message 7, one of message 8 received a minute and a half ago.
        events: vec![event(7, 0), event(7, 0), event(8, 90)],
        ..Rows::default()
    };
    let written = Written {
        measurements: 0,
        counter_readings: 0,
        relay_states: 0,
        events: 3,
        rejects: 0,
        refused_measurements: Vec::new(),
    };
    metrics.record_written(&rows, &written, Duration::from_millis(4));
    let text = metrics.render(&Gauges::default());
    assert_eq!(value(&text, "headend_ingest_lag_seconds_count"), Some("2"));
    let fast = "headend_ingest_lag_seconds_bucket{le=\"1\"}";
    assert_eq!(value(&text, fast), Some("1"), "{text}");
    let slow = "headend_ingest_lag_seconds_bucket{le=\"300\"}";
    assert_eq!(value(&text, slow), Some("2"), "{text}");
}

#[test]
fn modbus_polls_are_counted_per_converter_and_in_total() {
    let metrics = Metrics::default();
    metrics.record_modbus_poll("cv-a", true);
    metrics.record_modbus_poll("cv-a", true);
    metrics.record_modbus_poll("cv-b", false);
    let text = metrics.render(&Gauges::default());
    for (series, n) in [
        ("headend_modbus_polls_total", "2"),
        ("headend_modbus_poll_failures_total", "1"),
        (
            "headend_modbus_converter_polls_total{converter=\"cv-a\"}",
            "2",
        ),
        (
            "headend_modbus_converter_poll_failures_total{converter=\"cv-a\"}",
            "0",
        ),
        (
            "headend_modbus_converter_polls_total{converter=\"cv-b\"}",
            "0",
        ),
        (
            "headend_modbus_converter_poll_failures_total{converter=\"cv-b\"}",
            "1",
        ),
    ] {
        assert_eq!(value(&text, series), Some(n), "{series}\n{text}");
    }
}
