//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! Labels are bounded by the configuration, never by traffic: `route` is the
//! route's index name (`routes[2]`), `host` its configured host pattern,
//! `service` is `namespace/name:port`, `code` an HTTP status, `method` one of a
//! fixed set. No paths, no client addresses.

use crate::affinity::AffinityOutcome;
use arc_swap::ArcSwap;
use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Encoder, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

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
    pub discovery_watches: IntGauge,
    pub dns_lookups: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_info: IntGaugeVec,
    pub config_last_success: IntGauge,
    pub config_last_reload_successful: IntGauge,
    pub rejected_request_ids: IntCounter,
    pub client_connections: IntGauge,
    pub client_connections_max: IntGauge,
    pub client_connections_closed: IntCounterVec,
    pub limited: IntCounterVec,
    pub tls_certificate_expiry: IntGaugeVec,
    pub ingress_synced: IntGauge,
    pub ingress_routes: IntGauge,
    pub ingress_shadowed_routes: IntGauge,
    pub ingress_problems: IntGaugeVec,
    pub ingress_status_leader: IntGauge,
    pub ingress_status_updates: IntCounterVec,
    pub gateway_status_updates: IntCounterVec,
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
    let metrics = Metrics {
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
            "Affinity outcomes on affinity routes: new, pinned, repinned, kept (served elsewhere, cookie kept), rejected.",
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
        discovery_watches: register_int_gauge!(
            "edge_proxy_discovery_watches",
            "EndpointSlice watches open on the API server: one per proxy while it routes to Kubernetes Services."
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
        config_last_reload_successful: register_int_gauge!(
            "edge_proxy_config_last_reload_successful",
            "1 when the last load of the configuration (and its certificates) succeeded, \
             0 while the file on disk is rejected and the previous configuration serves."
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
        client_connections_max: register_int_gauge!(
            "edge_proxy_client_connections_max",
            "The client connection limit (`limits.max_connections`)."
        )
        .expect("register"),
        client_connections_closed: register_int_counter_vec!(
            "edge_proxy_client_connections_closed_total",
            "Client connections the proxy closed on a limit: header_timeout (request head \
             not complete in time) or connection_limit (no free slot in time).",
            &["reason"]
        )
        .expect("register"),
        limited: register_int_counter_vec!(
            "edge_proxy_client_limited_total",
            "Requests and connections turned away by a per-client limit: client_rate and \
             client_connections (limits.per_client), route_rate and route_connections \
             (limit-rps, limit-rpm, limit-connections).",
            &["reason"]
        )
        .expect("register"),
        tls_certificate_expiry: register_int_gauge_vec!(
            "edge_proxy_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the certificate served for a host expires (its notAfter).",
            &["host"]
        )
        .expect("register"),
        ingress_synced: register_int_gauge!(
            "edge_proxy_ingress_synced",
            "1 once the Ingresses (and IngressClasses, TLS Secrets) are listed and served (`ingress:` only)."
        )
        .expect("register"),
        ingress_routes: register_int_gauge!(
            "edge_proxy_ingress_routes",
            "Routes served from Ingresses."
        )
        .expect("register"),
        ingress_shadowed_routes: register_int_gauge!(
            "edge_proxy_ingress_shadowed_routes",
            "Ingress paths not served because a route of the configuration file has the same host, path and path type."
        )
        .expect("register"),
        ingress_problems: register_int_gauge_vec!(
            "edge_proxy_ingress_problems",
            "What of an Ingress is not served as written, now: conflict (an older Ingress has the path), \
             tls_secret, invalid_rule, unsupported_annotation, invalid_annotation, refused_annotation, refused, \
             ingress_class (our IngressClass names another controller).",
            &["ingress", "problem"]
        )
        .expect("register"),
        ingress_status_leader: register_int_gauge!(
            "edge_proxy_ingress_status_leader",
            "1 while this proxy holds the Lease and writes the Ingresses' status."
        )
        .expect("register"),
        ingress_status_updates: register_int_counter_vec!(
            "edge_proxy_ingress_status_updates_total",
            "Writes of an Ingress's status.loadBalancer, by result.",
            &["result"]
        )
        .expect("register"),
        gateway_status_updates: register_int_counter_vec!(
            "edge_proxy_gateway_status_updates_total",
            "Writes of a Gateway API object's status, by result.",
            &["result"]
        )
        .expect("register"),
    };
    for result in ["success", "failure"] {
        metrics.ingress_status_updates.with_label_values(&[result]);
        metrics.gateway_status_updates.with_label_values(&[result]);
    }
    // Counters whose label values are known from the start are exported at 0,
    // so that `increase()` and alerts see the first event, not only the second.
    for result in ["success", "failure"] {
        metrics.config_reloads.with_label_values(&[result]);
    }
    for code in ["400", "404", "413", "429", "431", "502", "503", "504"] {
        metrics.proxy_responses.with_label_values(&[code]);
    }
    metrics
});

/// `edge_proxy_proxy_responses_total{code}` of one status, resolved once:
/// a flood of 429s or 404s does no label lookup per answer.
pub fn proxy_response(status: u16) -> &'static IntCounter {
    const CODES: usize = 500;
    static RESOLVED: LazyLock<Box<[std::sync::OnceLock<IntCounter>]>> =
        LazyLock::new(|| (0..=CODES).map(|_| std::sync::OnceLock::new()).collect());
    // 100-599 each; anything else shares the last slot ("none").
    let index = usize::from(status.saturating_sub(100)).min(CODES);
    RESOLVED[index].get_or_init(|| {
        let label = match status {
            100..=599 => status.to_string(),
            _ => "none".to_string(),
        };
        METRICS.proxy_responses.with_label_values(&[label.as_str()])
    })
}

/// Export each service's discovery errors of a new snapshot at 0 (see above;
/// the per-route series are created with the route's [`RouteMetrics`]).
pub fn export_at_zero(services: &[String]) {
    for service in services {
        METRICS.discovery_errors.with_label_values(&[service]);
    }
}

/// The container's memory limit in bytes: the cgroup's own limit (v2
/// `memory.max`, v1 `memory.limit_in_bytes`), else `EDGE_PROXY_MEMORY_LIMIT`
/// (the DaemonSet sets it from `resources.limits.memory` through the downward
/// API). `None` when neither says: no series then, rather than a 0 that would
/// make "memory near the limit" divide by zero.
pub fn memory_limit() -> Option<u64> {
    cgroup_memory_limit().or_else(|| {
        std::env::var("EDGE_PROXY_MEMORY_LIMIT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n: &u64| n > 0)
    })
}

fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit(&own, |file| std::fs::read_to_string(file).ok())
}

/// The limit of the cgroup named in `proc_self_cgroup`, reading its files with `read`.
fn cgroup_limit(proc_self_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    proc_self_cgroup.lines().find_map(|line| {
        // v2: `0::/path`; v1: `N:memory:/path` (the memory controller may share a line).
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_end_matches('/');
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            return None;
        };
        // "max" (v2) or a page-rounded i64::MAX (v1) mean no limit.
        read(&file)?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n < 1 << 62)
    })
}

/// Register `edge_proxy_memory_limit_bytes` when the limit is known.
pub fn publish_memory_limit() {
    let Some(limit) = memory_limit() else {
        return;
    };
    let gauge = IntGauge::new(
        "edge_proxy_memory_limit_bytes",
        "The container's memory limit (cgroup, else EDGE_PROXY_MEMORY_LIMIT).",
    )
    .expect("static metric");
    gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
    if let Err(e) = prometheus::register(Box::new(gauge)) {
        tracing::warn!("edge_proxy_memory_limit_bytes: {e}");
    }
}

/// One route's series, resolved when its snapshot is built, so the request
/// path does not hash label values and take the family's lock for each.
pub struct RouteMetrics {
    route: String,
    host: String,
    service: String,
    pub duration: Histogram,
    pub upstream_duration: Histogram,
    pub connect_errors: IntCounter,
    pub retries: IntCounter,
    /// In the order of `AffinityOutcome::COUNTED`; `None` off affinity routes.
    affinity: Option<[IntCounter; AffinityOutcome::COUNTED.len()]>,
    /// `requests_total` by (method label, status code), filled on first use.
    requests: ArcSwap<HashMap<(&'static str, &'static str), IntCounter>>,
}

impl RouteMetrics {
    pub fn new(route: &str, host: &str, service: &str, affinity: bool) -> Self {
        let m = &*METRICS;
        RouteMetrics {
            route: route.to_string(),
            host: host.to_string(),
            service: service.to_string(),
            duration: m.request_duration.with_label_values(&[route]),
            upstream_duration: m.upstream_duration.with_label_values(&[service]),
            connect_errors: m.upstream_connect_errors.with_label_values(&[service]),
            retries: m.upstream_retries.with_label_values(&[service]),
            affinity: affinity.then(|| {
                AffinityOutcome::COUNTED
                    .map(|outcome| m.affinity.with_label_values(&[route, outcome.as_str()]))
            }),
            requests: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Count a request; a (method, code) pair seen for the first time on this
    /// route is resolved once and kept.
    pub fn request(&self, method: &'static str, code: &'static str) {
        if let Some(counter) = self.requests.load().get(&(method, code)) {
            counter.inc();
            return;
        }
        let counter = METRICS.requests.with_label_values(&[
            &self.route,
            &self.host,
            &self.service,
            method,
            code,
        ]);
        counter.inc();
        self.requests.rcu(|known| {
            let mut known = HashMap::clone(known);
            known.insert((method, code), counter.clone());
            Arc::new(known)
        });
    }

    /// Count an affinity outcome (nothing for `None`, off affinity routes).
    pub fn affinity(&self, outcome: AffinityOutcome) {
        let index = AffinityOutcome::COUNTED.iter().position(|o| *o == outcome);
        if let (Some(counters), Some(i)) = (&self.affinity, index) {
            counters[i].inc();
        }
    }
}

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

    #[test]
    fn reads_the_memory_limit_of_the_own_cgroup_v1_or_v2() {
        let files = |file: &str| match file {
            "/sys/fs/cgroup/memory.max" => Some("536870912\n".to_string()),
            "/sys/fs/cgroup/kubepods/pod1/memory.max" => Some("max\n".to_string()),
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => {
                Some("268435456\n".to_string())
            }
            "/sys/fs/cgroup/memory/memory.limit_in_bytes" => {
                Some("9223372036854771712\n".to_string())
            }
            _ => None,
        };
        assert_eq!(cgroup_limit("0::/\n", files), Some(512 << 20));
        assert_eq!(cgroup_limit("0::/kubepods/pod1\n", files), None);
        let v1 = "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(cgroup_limit(v1, files), Some(256 << 20));
        // An unlimited v1 group, and a v2 path that is not mounted here.
        assert_eq!(cgroup_limit("4:memory:/\n", files), None);
        assert_eq!(cgroup_limit("0::/elsewhere\n", files), None);
    }
}
