//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! Labels are bounded by the configuration, never by traffic: `route` is the
//! route's index name (`routes[2]`), `host` its configured host pattern,
//! `service` is `namespace/name:port`, `code` an HTTP status, `method` one of a
//! fixed set. No paths, no client addresses.

use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Encoder, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_connect_errors: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub proxy_responses: IntCounterVec,
    pub affinity: IntCounterVec,
    pub endpoints: IntGaugeVec,
    pub discovery_synced: IntGaugeVec,
    pub discovery_errors: IntCounterVec,
    pub dns_lookups: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_info: IntGaugeVec,
    pub config_last_success: IntGauge,
    pub rejected_request_ids: IntCounter,
    pub client_connections: IntGauge,
    pub client_connections_closed: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    // Latency buckets from 1 ms to ~33 s, doubling.
    let buckets = exponential_buckets(0.001, 2.0, 16).expect("static buckets");
    let build_info = register_int_gauge_vec!(
        "edge_proxy_build_info",
        "Build information; the value is always 1.",
        &["version"]
    )
    .expect("register build_info");
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    Metrics {
        requests: register_int_counter_vec!(
            "edge_proxy_requests_total",
            "Requests handled, by route, host pattern, service, method and status code.",
            &["route", "host", "service", "method", "code"]
        )
        .expect("register"),
        request_duration: register_histogram_vec!(
            "edge_proxy_request_duration_seconds",
            "Time from the request head to the end of the response, by route.",
            &["route"],
            buckets.clone()
        )
        .expect("register"),
        upstream_duration: register_histogram_vec!(
            "edge_proxy_upstream_response_seconds",
            "Time from choosing an endpoint to its response head, by service.",
            &["service"],
            buckets
        )
        .expect("register"),
        upstream_connect_errors: register_int_counter_vec!(
            "edge_proxy_upstream_connect_errors_total",
            "Failed connections to endpoints, by service.",
            &["service"]
        )
        .expect("register"),
        upstream_retries: register_int_counter_vec!(
            "edge_proxy_upstream_retries_total",
            "Requests retried on another endpoint after a failed connection, by service.",
            &["service"]
        )
        .expect("register"),
        proxy_responses: register_int_counter_vec!(
            "edge_proxy_proxy_responses_total",
            "Responses the proxy answered itself (no route, bad request, no endpoint), by code.",
            &["code"]
        )
        .expect("register"),
        affinity: register_int_counter_vec!(
            "edge_proxy_affinity_total",
            "Affinity outcomes on affinity routes: new, pinned, repinned, rejected.",
            &["route", "outcome"]
        )
        .expect("register"),
        endpoints: register_int_gauge_vec!(
            "edge_proxy_endpoints",
            "Endpoints per service: ready (new sessions), serving_terminating (pinned sessions only).",
            &["service", "state"]
        )
        .expect("register"),
        discovery_synced: register_int_gauge_vec!(
            "edge_proxy_discovery_synced",
            "1 when discovery for a service has its initial endpoint list.",
            &["service"]
        )
        .expect("register"),
        access_log_dropped: register_int_counter!(
            "edge_proxy_access_log_dropped_total",
            "Access log lines dropped because stdout did not take them (16 MiB were waiting)."
        )
        .expect("register"),
        dns_lookups: register_int_counter_vec!(
            "edge_proxy_dns_lookups_total",
            "DNS discovery lookups, by service and result: ok, no_records (NXDOMAIN or no addresses: no endpoints), error (timeout, SERVFAIL: last endpoints kept).",
            &["service", "result"]
        )
        .expect("register"),
        discovery_errors: register_int_counter_vec!(
            "edge_proxy_discovery_errors_total",
            "Discovery errors (failed lists, watches or lookups), by service.",
            &["service"]
        )
        .expect("register"),
        config_reloads: register_int_counter_vec!(
            "edge_proxy_config_reloads_total",
            "Configuration loads after start-up, by result (success, failure).",
            &["result"]
        )
        .expect("register"),
        config_generation: register_int_gauge!(
            "edge_proxy_config_generation",
            "Generation of the configuration in use: 1 at start-up, +1 per applied reload."
        )
        .expect("register"),
        config_info: register_int_gauge_vec!(
            "edge_proxy_config_info",
            "The configuration in use; `hash` is a SipHash of the file's bytes. Always 1.",
            &["hash"]
        )
        .expect("register"),
        config_last_success: register_int_gauge!(
            "edge_proxy_config_last_success_timestamp_seconds",
            "Unix time of the last successful configuration load."
        )
        .expect("register"),
        rejected_request_ids: register_int_counter!(
            "edge_proxy_request_id_rejected_total",
            "Incoming X-Request-Id values replaced because they were too long or had odd characters."
        )
        .expect("register"),
        client_connections: register_int_gauge!(
            "edge_proxy_client_connections",
            "Client connections open now (HTTP and HTTPS)."
        )
        .expect("register"),
        client_connections_closed: register_int_counter_vec!(
            "edge_proxy_client_connections_closed_total",
            "Client connections the proxy closed on a limit: header_timeout (request head \
             not complete in time) or connection_limit (no free slot in time).",
            &["reason"]
        )
        .expect("register"),
    }
});

/// The method label: the common methods by name, anything else as OTHER.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Everything registered, in the Prometheus text format (version 0.0.4).
pub fn render() -> (String, Vec<u8>) {
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        tracing::error!("encoding metrics: {e}");
    }
    (encoder.format_type().to_string(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_families_and_bounded_method_labels() {
        METRICS
            .requests
            .with_label_values(&["routes[0]", "*", "default/a:80", "GET", "200"])
            .inc();
        let (content_type, body) = render();
        let text = String::from_utf8(body).unwrap();
        assert!(content_type.starts_with("text/plain"));
        assert!(text.contains("edge_proxy_build_info{version=\""), "{text}");
        assert!(text.contains("edge_proxy_requests_total{code=\"200\",host=\"*\",method=\"GET\",route=\"routes[0]\",service=\"default/a:80\"} 1"));
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
    }
}
