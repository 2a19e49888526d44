//! HTTP request metrics, by method, route pattern and status: every label from a bounded set
//! whatever clients send (see [`Metrics::record_http`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::Registry;

use super::{register, Metrics};

/// Buckets of the HTTP request durations (seconds; requests time out at 30 s).
const HTTP_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Labels of `headend_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: String,
}

/// Labels of `headend_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// HTTP metrics by route: labels of bounded cardinality only (see [`Metrics::record_http`]).
#[derive(Debug)]
pub(super) struct Http {
    requests: Family<RequestLabels, PromCounter>,
    durations: Family<RouteLabels, PromHistogram, fn() -> PromHistogram>,
}

impl Http {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let requests = Family::default();
        register(
            registry,
            "headend_http_requests",
            "HTTP requests answered, by method, route and status.",
            requests.clone(),
        );
        let durations: Family<RouteLabels, PromHistogram, fn() -> PromHistogram> =
            Family::new_with_constructor(|| PromHistogram::new(HTTP_BOUNDS.iter().copied()));
        register(
            registry,
            "headend_http_request_duration_seconds",
            "Time from a request to its response headers, by method and route.",
            durations.clone(),
        );
        Self {
            requests,
            durations,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request. Every label must come from a bounded set: `method` one of the
    /// standard methods or "other", `route` the router's pattern (never the raw path) or
    /// "unmatched", `status` the numeric status (None: no answer was given, "cancelled").
    pub fn record_http(
        &self,
        method: &'static str,
        route: &str,
        status: Option<u16>,
        took: Duration,
    ) {
        if status.is_some_and(|s| (500..600).contains(&s)) {
            self.http_errors.inc();
        }
        let status = status.map_or_else(|| "cancelled".to_owned(), |s| s.to_string());
        let route = route.to_owned();
        self.http
            .durations
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.http
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}
